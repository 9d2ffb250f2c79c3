//! The shard's link for 6LoWPAN members: the medium in this process and one ZEP socket shared
//! by the whole fleet. Each member is a filtered participant of a [`Hub`] (what its
//! transceiver's frame filter passes: frames to its extended address or broadcast, on its PAN);
//! the hub's ZEP peer is the border router (in-process mode) or a `v6iot-sim medium` process
//! (remote mode). A frame a member sends goes through the medium (loss, the airtime model) to
//! the peer as ZEP; ZEP from the peer goes through the medium to the members it reaches. The
//! decisions are the hub's and the devices' (both sans-IO); this moves bytes, reads the clock
//! and writes the capture.

use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use v6iot_medium::core::{MediumConfig, ParticipantConfig, ParticipantId, Reception};
use v6iot_medium::driver::{Capture, unix_at_zero};
use v6iot_medium::hub::{Hub, HubConfig};
use v6iot_medium::phy::AirtimeConfig;
use v6iot_medium::topology::Topology;
use v6iot_medium::{Medium, link_model};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::time::Instant;

use super::report::AirReport;
use super::{LowpanPlan, MediumAt};
use crate::link::{Arrival, Link};

/// Datagrams taken in one go after a wait returned, before the hub's deadlines are looked at
/// again.
const BATCH: usize = 256;

/// A receive buffer larger than any ZEP datagram (an oversized one is seen whole and refused).
const RECV_BUF: usize = 2048;

/// What the link counted (the medium and hub count the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Frames the members sent.
    pub frames_up: u64,
    /// Of those, 6LoWPAN fragments (FRAG1 and FRAGN).
    pub fragments_up: u64,
    /// Frames handed to members.
    pub frames_down: u64,
    /// Of those, fragments.
    pub fragments_down: u64,
    /// Frames from members the medium refused (not a MAC frame, no participant).
    pub refused: u64,
    /// ZEP datagrams received.
    pub zep_in: u64,
    /// ZEP datagrams sent.
    pub zep_out: u64,
    /// ZEP datagrams the kernel refused to send.
    pub send_errors: u64,
}

/// The medium and its socket (see the module doc).
#[derive(Debug)]
pub struct MediumLink {
    socket: UdpSocket,
    hub: Hub,
    /// Member → its participant.
    participants: Vec<ParticipantId>,
    /// Participant number → member.
    members: Vec<Option<usize>>,
    capture: Option<Capture<BufWriter<File>>>,
    buf: Vec<u8>,
    counts: LinkCounts,
}

impl MediumLink {
    /// The medium of `plan` with one participant per member (`addrs`: each member's extended
    /// address, in member order), on `socket`; draws from `seed`.
    pub fn new(
        plan: &LowpanPlan,
        addrs: &[LinkAddr],
        socket: UdpSocket,
        seed: u64,
    ) -> io::Result<MediumLink> {
        let unix_at_zero = unix_at_zero();
        let medium = Medium::new(MediumConfig {
            seed,
            topology: Topology::flat(link_model(plan.loss, Duration::ZERO)),
            capture: plan.pcap.is_some(),
            airtime: plan.airtime.then(AirtimeConfig::default),
            star: !plan.flat,
            ..MediumConfig::default()
        });
        let mut hub = Hub::new(
            medium,
            HubConfig {
                unix_at_zero,
                ..HubConfig::default()
            },
        );
        let peer = match plan.medium {
            MediumAt::InProcess { router } => router,
            MediumAt::Remote(medium) => medium,
        };
        hub.add_peer(Instant::now(), peer, plan.channel)
            .map_err(io::Error::other)?;
        let mut participants = Vec::with_capacity(addrs.len());
        let mut members = Vec::new();
        for (member, &addr) in addrs.iter().enumerate() {
            let id = hub.add_local(ParticipantConfig {
                channel: plan.channel,
                reception: Reception::Filtered {
                    pan: PanId(plan.pan),
                    addr,
                },
            });
            participants.push(id);
            let slot = id.0 as usize;
            if members.len() <= slot {
                members.resize(slot + 1, None);
            }
            if let Some(m) = members.get_mut(slot) {
                *m = Some(member);
            }
        }
        let capture = match &plan.pcap {
            Some(path) => Some(Capture::new(
                BufWriter::new(File::create(path)?),
                unix_at_zero,
            )?),
            None => None,
        };
        socket.set_nonblocking(true)?;
        Ok(MediumLink {
            socket,
            hub,
            participants,
            members,
            capture,
            buf: vec![0; RECV_BUF],
            counts: LinkCounts::default(),
        })
    }

    /// Binds the fleet's ZEP socket of `plan`.
    pub fn bind(plan: &LowpanPlan) -> io::Result<UdpSocket> {
        UdpSocket::bind(plan.listen)
    }

    /// Flushes the capture; what the link, its hub and its medium counted.
    pub fn finish(mut self) -> AirReport {
        let mut capture_errors = 0;
        let mut captured = 0;
        if let Some(c) = self.capture.as_mut() {
            if let Err(e) = c.flush() {
                tracing::error!(error = %e, "cannot write the capture");
                capture_errors += 1;
            }
            captured = c.frames();
            capture_errors += c.errors();
        }
        AirReport::new(&self.hub, self.counts, captured, capture_errors)
    }

    /// Sends what the hub has for the peer and records what went on air.
    fn flush(&mut self) {
        while let Some(on_air) = self.hub.poll_on_air() {
            if let Some(c) = self.capture.as_mut() {
                c.record(&on_air);
            }
        }
        while let Some((to, d)) = self.hub.poll_datagram() {
            match self.socket.send_to(d.as_bytes(), to) {
                Ok(_) => self.counts.zep_out += 1,
                Err(e) => {
                    self.counts.send_errors += 1;
                    tracing::debug!(%to, error = %e, "ZEP datagram not sent");
                }
            }
        }
    }

    /// Hands what the medium delivered to the members.
    fn hand_out(&mut self, deliver: &mut dyn FnMut(Arrival<'_>)) -> usize {
        let mut n = 0;
        while let Some(d) = self.hub.poll_local() {
            let Some(member) = self.members.get(d.to.0 as usize).copied().flatten() else {
                continue;
            };
            self.counts.frames_down += 1;
            self.counts.fragments_down += u64::from(is_fragment(d.frame.as_bytes()));
            deliver(Arrival::Datagram {
                member,
                peer: SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
                bytes: d.frame.as_bytes(),
            });
            n += 1;
        }
        n
    }

    /// One datagram from the socket into the hub; `false` when none was waiting.
    fn take_one(&mut self) -> io::Result<bool> {
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                self.counts.zep_in += 1;
                let now = Instant::now();
                self.hub
                    .handle_datagram(now, from, self.buf.get(..n).unwrap_or_default());
                Ok(true)
            }
            Err(e) if v6iot_sdk::net::is_transient(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits at most `wait` for the socket to be readable.
    fn wait_readable(&self, wait: Duration) -> io::Result<()> {
        use std::os::fd::AsFd;
        let ms = wait.as_micros().div_ceil(1000).min(1000) as u16;
        let mut fds = [nix::poll::PollFd::new(
            self.socket.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a MAC frame carries a 6LoWPAN fragment (FRAG1 `11000`, FRAGN `11100`).
fn is_fragment(frame: &[u8]) -> bool {
    let Ok(frame) = MacFrame::new(frame) else {
        return false;
    };
    DataHeader::parse(frame)
        .ok()
        .and_then(|(_, payload)| payload.first().copied())
        .is_some_and(|d| d & 0xd8 == 0xc0)
}

impl Link for MediumLink {
    fn receive(
        &mut self,
        timeout: Duration,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> io::Result<usize> {
        let now = Instant::now();
        self.hub.handle_timeout(now);
        self.flush();
        let mut n = self.hand_out(deliver);
        if n == 0 {
            let wait = self
                .hub
                .poll_timeout()
                .map_or(timeout, |t| t.saturating_duration_since(now).min(timeout));
            if !wait.is_zero() {
                self.wait_readable(wait)?;
            }
        }
        for _ in 0..BATCH {
            if !self.take_one()? {
                break;
            }
        }
        self.hub.handle_timeout(Instant::now());
        self.flush();
        n += self.hand_out(deliver);
        Ok(n)
    }

    fn send(&mut self, member: usize, _destination: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let Some(&id) = self.participants.get(member) else {
            self.counts.refused += 1;
            return Ok(());
        };
        let Ok(frame) = MacFrame::new(bytes) else {
            self.counts.refused += 1;
            return Ok(());
        };
        self.counts.frames_up += 1;
        self.counts.fragments_up += u64::from(is_fragment(bytes));
        if self.hub.handle_frame(Instant::now(), id, frame).is_err() {
            self.counts.refused += 1;
        }
        self.flush();
        Ok(())
    }
}
