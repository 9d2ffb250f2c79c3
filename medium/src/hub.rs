//! [`Hub`]: the medium reached over ZEP v2 on UDP (Wireshark's encapsulation of 802.15.4, port
//! 17754), sans-IO. A driver hands it datagrams with their source address and sends what it
//! hands out; in-process participants (a simulated fleet) join the same medium directly.
//!
//! Remote participants are learned from the source address of the datagrams they send, as
//! RIOT's `zep_dispatch` learns them: the first good ZEP data datagram from an address adds a
//! promiscuous participant on the datagram's channel (a router, a device on the SDK's ZEP radio,
//! a sniffer that sends a frame once); it moves with the channel of its later datagrams and
//! takes every frame of others on its channel. Peers can also be added in advance
//! ([`Hub::add_peer`]: a router that should hear devices before it has sent anything).
//!
//! # Bounds
//!
//! At most [`HubConfig::max_remote`] remote participants ([`DEFAULT_MAX_REMOTE`] unless told
//! otherwise). A datagram from a new address while the table is full takes the place of the
//! participant idle the longest if that one has sent nothing for [`HubConfig::idle_timeout`];
//! otherwise it is dropped and counted ([`HubDrops::table_full`]). Peers added with
//! [`Hub::add_peer`] count against the bound and never expire. Every datagram that is not a good
//! ZEP v2 data message is dropped and counted by cause ([`HubDrops`]); nothing from the network
//! can make the hub panic (the `medium_hub_input` fuzz target).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use v6iot_sdk::radio::zep::{self, NtpTime, ZepError, ZepHeader};
use v6iot_sdk::radio::{FrameError, MacFrame};
use v6iot_sdk::time::Instant;

use super::core::{
    Delivery, Medium, OfferError, OnAir, ParticipantConfig, ParticipantId, Reception,
};

/// Remote participants a hub keeps unless told otherwise.
pub const DEFAULT_MAX_REMOTE: usize = 1024;

/// Datagrams waiting to be sent, and frames waiting for in-process participants, at most (each
/// queue); a driver drains both after every input.
pub const MAX_QUEUED: usize = 65_536;

/// How a hub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// The most remote participants at once (learned and added).
    pub max_remote: usize,
    /// A learned participant silent this long may give its place to a new one.
    pub idle_timeout: Duration,
    /// The Unix time of the medium's `Instant::ZERO`: ZEP timestamps are this plus the
    /// medium's time.
    pub unix_at_zero: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_remote: DEFAULT_MAX_REMOTE,
            idle_timeout: Duration::from_secs(600),
            unix_at_zero: Duration::ZERO,
        }
    }
}

/// Datagrams the hub dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HubDrops {
    /// Not ZEP: no `EX` preamble.
    pub not_zep: u64,
    /// A ZEP version other than 2.
    pub version: u64,
    /// ZEP acknowledgements and other messages without a frame.
    pub not_data: u64,
    /// Shorter than the header or than its length field says, longer than a ZEP datagram can
    /// be, or a frame shorter than a MAC header.
    pub malformed: u64,
    /// A frame whose FCS is wrong (CRC mode).
    pub bad_fcs: u64,
    /// From a new address while the participant table was full.
    pub table_full: u64,
    /// Datagrams to send dropped because [`MAX_QUEUED`] were waiting to be sent.
    pub backlog: u64,
}

/// What a hub counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HubStats {
    /// Datagrams taken in.
    pub datagrams_in: u64,
    /// Datagrams handed out.
    pub datagrams_out: u64,
    /// Remote participants learned from their datagrams.
    pub learned: u64,
    /// Remote participants that gave their place to a new one after being idle.
    pub expired: u64,
    /// Remote participants now.
    pub remote: u64,
    /// Drops by cause.
    pub dropped: HubDrops,
}

/// One ZEP datagram to send.
#[derive(Clone)]
pub struct ZepDatagram {
    buf: [u8; zep::MAX_DATAGRAM],
    len: usize,
}

impl std::fmt::Debug for ZepDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZepDatagram")
            .field("len", &self.len)
            .finish()
    }
}

impl ZepDatagram {
    /// The datagram's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
struct Remote {
    addr: SocketAddr,
    last_heard: Instant,
    pinned: bool,
    device_id: u16,
}

/// Why a peer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The participant table is at its bound.
    #[error("the hub's table of remote participants is full ({0})")]
    TableFull(usize),
}

/// The medium over ZEP (see the module doc).
#[derive(Debug)]
pub struct Hub {
    medium: Medium,
    config: HubConfig,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    remote: HashMap<ParticipantId, Remote>,
    zep_out: VecDeque<(SocketAddr, ZepDatagram)>,
    local_out: VecDeque<Delivery>,
    sequence: u32,
    stats: HubStats,
}

impl Hub {
    /// A hub over `medium`.
    #[must_use]
    pub fn new(medium: Medium, config: HubConfig) -> Hub {
        Hub {
            medium,
            config,
            by_addr: HashMap::new(),
            remote: HashMap::new(),
            zep_out: VecDeque::new(),
            local_out: VecDeque::new(),
            sequence: 0,
            stats: HubStats::default(),
        }
    }

    /// The medium.
    #[must_use]
    pub fn medium(&self) -> &Medium {
        &self.medium
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        HubStats {
            remote: self.remote.len() as u64,
            ..self.stats
        }
    }

    /// The remote participant at `addr`, if there is one.
    #[must_use]
    pub fn remote_at(&self, addr: SocketAddr) -> Option<ParticipantId> {
        self.by_addr.get(&addr).copied()
    }

    /// Adds a remote participant at `addr` on `channel` before it sends anything; it never
    /// expires.
    pub fn add_peer(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        channel: u8,
    ) -> Result<ParticipantId, HubError> {
        if let Some(&id) = self.by_addr.get(&addr) {
            self.medium.set_channel(id, channel);
            if let Some(r) = self.remote.get_mut(&id) {
                r.pinned = true;
            }
            return Ok(id);
        }
        let id = self
            .admit(now, addr, channel)
            .ok_or(HubError::TableFull(self.config.max_remote))?;
        if let Some(r) = self.remote.get_mut(&id) {
            r.pinned = true;
        }
        Ok(id)
    }

    /// Adds an in-process participant; what it receives comes out of [`Hub::poll_local`].
    pub fn add_local(&mut self, config: ParticipantConfig) -> ParticipantId {
        self.medium.add(config)
    }

    /// A frame from an in-process participant.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: ParticipantId,
        frame: MacFrame<'_>,
    ) -> Result<(), OfferError> {
        let r = self.medium.handle_frame(now, from, frame);
        self.route();
        r
    }

    /// A datagram from `from`: a frame to send if it is good ZEP v2 data (see the module doc).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        let data = match zep::decode(datagram) {
            Ok(d) => d,
            Err(e) => {
                self.count(e);
                return;
            }
        };
        let channel = data.header.channel;
        let id = match self.by_addr.get(&from) {
            Some(&id) => {
                if self.medium.channel_of(id) != Some(channel) {
                    self.medium.set_channel(id, channel);
                }
                id
            }
            None => match self.admit(now, from, channel) {
                Some(id) => {
                    self.stats.learned += 1;
                    id
                }
                None => {
                    self.stats.dropped.table_full += 1;
                    return;
                }
            },
        };
        if let Some(r) = self.remote.get_mut(&id) {
            r.last_heard = now;
            r.device_id = data.header.device_id;
        }
        // The sender was just found or added, so the medium knows it.
        let _ = self.medium.handle_frame(now, id, data.frame);
        self.route();
    }

    fn count(&mut self, e: ZepError) {
        let d = &mut self.stats.dropped;
        match e {
            ZepError::Preamble => d.not_zep += 1,
            ZepError::Version(_) => d.version += 1,
            ZepError::NotData(_) => d.not_data += 1,
            ZepError::Frame(FrameError::BadFcs { .. }) => d.bad_fcs += 1,
            _ => d.malformed += 1,
        }
    }

    /// A place in the table for `addr`: a free one, or the longest-idle learned participant's
    /// if it has been idle for the configured time.
    fn admit(&mut self, now: Instant, addr: SocketAddr, channel: u8) -> Option<ParticipantId> {
        if self.remote.len() >= self.config.max_remote {
            let idle = self
                .remote
                .iter()
                .filter(|(_, r)| !r.pinned)
                .min_by_key(|(id, r)| (r.last_heard, **id))
                .filter(|(_, r)| {
                    now.saturating_duration_since(r.last_heard) >= self.config.idle_timeout
                })
                .map(|(&id, r)| (id, r.addr))?;
            self.forget(idle.0, idle.1);
            self.stats.expired += 1;
        }
        let id = self.medium.add(ParticipantConfig {
            channel,
            reception: Reception::Promiscuous,
        });
        self.by_addr.insert(addr, id);
        self.remote.insert(
            id,
            Remote {
                addr,
                last_heard: now,
                pinned: false,
                device_id: 0,
            },
        );
        Some(id)
    }

    fn forget(&mut self, id: ParticipantId, addr: SocketAddr) {
        self.remote.remove(&id);
        self.by_addr.remove(&addr);
        self.medium.remove(id);
    }

    /// Lets time pass (see [`Medium::handle_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.medium.handle_timeout(now);
        self.route();
    }

    /// When to call [`Hub::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.medium.poll_timeout()
    }

    /// The next datagram to send, and where to.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, ZepDatagram)> {
        let out = self.zep_out.pop_front();
        if out.is_some() {
            self.stats.datagrams_out += 1;
        }
        out
    }

    /// The next frame for an in-process participant.
    pub fn poll_local(&mut self) -> Option<Delivery> {
        self.local_out.pop_front()
    }

    /// The next frame that went on air (with the medium's capture on).
    pub fn poll_on_air(&mut self) -> Option<OnAir> {
        self.medium.poll_on_air()
    }

    /// Moves the medium's deliveries to the remote (as ZEP) and local queues.
    fn route(&mut self) {
        while let Some(d) = self.medium.poll_delivery() {
            let Some(remote) = self.remote.get(&d.to) else {
                if self.local_out.len() < MAX_QUEUED {
                    self.local_out.push_back(d);
                } else {
                    self.stats.dropped.backlog += 1;
                }
                continue;
            };
            if self.zep_out.len() >= MAX_QUEUED {
                self.stats.dropped.backlog += 1;
                continue;
            }
            let to = remote.addr;
            let device_id = match self.remote.get(&d.from) {
                Some(r) => r.device_id,
                // In-process senders: their participant number.
                None => (d.from.0 as u16).wrapping_add(1),
            };
            let header = ZepHeader {
                channel: d.channel,
                device_id,
                lqi: d.lqi,
                timestamp: NtpTime::from_unix(self.config.unix_at_zero + d.at.since_start()),
                sequence: self.sequence,
            };
            self.sequence = self.sequence.wrapping_add(1);
            let mut out = ZepDatagram {
                buf: [0; zep::MAX_DATAGRAM],
                len: 0,
            };
            let Some(frame) = d.frame.mac() else {
                continue;
            };
            // A MAC frame of at most 125 bytes always fits a ZEP datagram.
            if let Ok(n) = zep::encode(&header, frame, &mut out.buf) {
                out.len = n;
                self.zep_out.push_back((to, out));
            }
        }
    }
}
