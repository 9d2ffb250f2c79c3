//! A [`Radio`] on a Linux IEEE 802.15.4 interface (`wpan0`, from `iwpan`/`wpan-tools`) through
//! an `AF_PACKET` raw socket.
//!
//! The socket is bound to the interface (its link address from `getifaddrs`) and takes every
//! frame on it (`ETH_P_ALL`), keeping only incoming 802.15.4 frames (`ETH_P_IEEE802154`, not
//! our own outgoing copies). Frames cross the socket as whole MAC frames **without FCS**: the
//! kernel (or the transceiver) appends the FCS on transmission and checks and strips it on
//! reception, so a frame with a bad FCS never reaches us. The interface must be up and in node
//! mode with the PAN ID and channel set (`iwpan dev wpan0 set pan_id 0xabcd`).
//!
//! Needs `CAP_NET_RAW`. The frame filter ([`classify`]) is a pure function with unit tests; the
//! socket itself needs a `wpan` interface, which this project's CI does not have.

use alloc::borrow::ToOwned;
use alloc::string::String;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, bind, recvfrom, send,
    socket,
};

use super::{MAX_MAC_FRAME, MacFrame, Radio, RadioStats, Reception};

/// `ARPHRD_IEEE802154`: the hardware type of a Linux 802.15.4 interface in node mode.
pub const ARPHRD_IEEE802154: u16 = 804;

/// `ETH_P_IEEE802154`, the protocol of 802.15.4 frames on such an interface.
pub const ETH_P_IEEE802154: u16 = 0x00f6;

/// `PACKET_OUTGOING`: a copy of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

/// What the raw socket radio does with one frame it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// An incoming 802.15.4 frame of this length: hand it out.
    Frame(usize),
    /// Our own transmission, looped back by the packet socket: skip.
    Outgoing,
    /// Another protocol on the interface: skip, count as not data.
    OtherProtocol,
    /// Shorter than a MAC header or longer than 125 bytes: skip, count as malformed.
    BadLength,
}

/// Classifies a frame read from the packet socket by its `sockaddr_ll` fields (`pkttype`,
/// `protocol` in host order) and length.
#[must_use]
pub fn classify(pkttype: u8, protocol: u16, len: usize) -> Classified {
    if pkttype == PACKET_OUTGOING {
        Classified::Outgoing
    } else if protocol != ETH_P_IEEE802154 {
        Classified::OtherProtocol
    } else if !(3..=MAX_MAC_FRAME).contains(&len) {
        Classified::BadLength
    } else {
        Classified::Frame(len)
    }
}

/// Why an interface cannot be opened as a radio.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No interface of that name has a link address.
    #[error("no network interface named {0:?}")]
    NoSuchInterface(String),
    /// The interface is not an IEEE 802.15.4 interface in node mode.
    #[error(
        "interface {name:?} has hardware type {hatype}, not IEEE 802.15.4 ({ARPHRD_IEEE802154})"
    )]
    NotIeee802154 {
        /// The interface's name.
        name: String,
        /// Its ARP hardware type.
        hatype: u16,
    },
    /// A system call failed (socket, bind: `CAP_NET_RAW` is needed).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(nix::Error) -> OpenError {
    move |e| OpenError::Io {
        op,
        source: io::Error::from(e),
    }
}

/// An 802.15.4 interface's link address, as `getifaddrs` lists it.
fn interface_link_addr(name: &str) -> Result<LinkAddr, OpenError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io_err("getifaddrs"))?;
    for ifa in addrs {
        if ifa.interface_name != name {
            continue;
        }
        if let Some(link) = ifa.address.as_ref().and_then(|a| a.as_link_addr()) {
            return Ok(*link);
        }
    }
    Err(OpenError::NoSuchInterface(name.to_owned()))
}

/// An IEEE 802.15.4 interface through an `AF_PACKET` raw socket.
#[derive(Debug)]
pub struct LinuxRadio {
    fd: OwnedFd,
    stats: RadioStats,
    buf: [u8; 256],
}

impl LinuxRadio {
    /// Opens interface `name` (e.g. `wpan0`).
    pub fn open(name: &str) -> Result<LinuxRadio, OpenError> {
        let link = interface_link_addr(name)?;
        if link.hatype() != ARPHRD_IEEE802154 {
            return Err(OpenError::NotIeee802154 {
                name: name.to_owned(),
                hatype: link.hatype(),
            });
        }
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .map_err(io_err("socket(AF_PACKET, SOCK_RAW)"))?;
        // The link address from getifaddrs has protocol 0, so the socket keeps ETH_P_ALL.
        bind(fd.as_raw_fd(), &link).map_err(io_err("bind"))?;
        Ok(LinuxRadio {
            fd,
            stats: RadioStats::default(),
            buf: [0; 256],
        })
    }

    fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) => Ok(n > 0),
            Err(nix::Error::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Radio for LinuxRadio {
    type Error = io::Error;

    fn transmit(&mut self, frame: MacFrame<'_>) -> io::Result<()> {
        send(self.fd.as_raw_fd(), frame.as_bytes(), MsgFlags::empty())?;
        self.stats.sent += 1;
        Ok(())
    }

    fn receive<'b>(
        &mut self,
        buf: &'b mut [u8],
        wait: Duration,
    ) -> io::Result<Option<Reception<'b>>> {
        let mut wait = wait;
        let len = loop {
            if !self.wait_readable(wait)? {
                return Ok(None);
            }
            // Later reads in this call only take what is already there.
            wait = Duration::ZERO;
            let (n, from) = match recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut self.buf) {
                Ok(got) => got,
                Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let (pkttype, protocol) =
                from.map_or((0, 0), |a| (a.pkttype(), u16::from_be(a.protocol())));
            match classify(pkttype, protocol, n) {
                Classified::Frame(n) if n > buf.len() => self.stats.truncated += 1,
                Classified::Frame(n) => break n,
                Classified::Outgoing => {}
                Classified::OtherProtocol => self.stats.not_data += 1,
                Classified::BadLength => self.stats.malformed += 1,
            }
        };
        let (Some(dst), Some(src)) = (buf.get_mut(..len), self.buf.get(..len)) else {
            return Ok(None);
        };
        dst.copy_from_slice(src);
        self.stats.received += 1;
        let frame =
            MacFrame::new(dst).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(Reception { frame, lqi: None }))
    }

    fn stats(&self) -> RadioStats {
        self.stats
    }
}

// `libc` agrees with the constants above.
const _: () = assert!(libc::ARPHRD_IEEE802154 == ARPHRD_IEEE802154);
const _: () = assert!(libc::ETH_P_IEEE802154 as u16 == ETH_P_IEEE802154);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified() {
        assert_eq!(classify(0, ETH_P_IEEE802154, 30), Classified::Frame(30));
        // PACKET_BROADCAST (1) and PACKET_OTHERHOST (3) are incoming too.
        assert_eq!(classify(1, ETH_P_IEEE802154, 3), Classified::Frame(3));
        assert_eq!(classify(3, ETH_P_IEEE802154, 125), Classified::Frame(125));
        assert_eq!(
            classify(PACKET_OUTGOING, ETH_P_IEEE802154, 30),
            Classified::Outgoing
        );
        assert_eq!(classify(0, 0x86dd, 30), Classified::OtherProtocol);
        assert_eq!(classify(0, ETH_P_IEEE802154, 2), Classified::BadLength);
        assert_eq!(classify(0, ETH_P_IEEE802154, 126), Classified::BadLength);
    }

    #[test]
    fn opening_names_what_is_wrong() {
        match LinuxRadio::open("nowpan9") {
            Err(OpenError::NoSuchInterface(name)) => assert_eq!(name, "nowpan9"),
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
        // The loopback interface exists but is not 802.15.4 (ARPHRD_LOOPBACK = 772).
        match LinuxRadio::open("lo") {
            Err(OpenError::NotIeee802154 { hatype, .. }) => assert_eq!(hatype, 772),
            other => panic!("expected NotIeee802154, got {other:?}"),
        }
    }
}
