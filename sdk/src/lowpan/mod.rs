//! 6LoWPAN (RFC 4944, RFC 6282, RFC 6775): IPv6 over IEEE 802.15.4, sans-IO.
//!
//! # Layers
//!
//! | module | job |
//! |---|---|
//! | [`context`] | compression contexts (the 6CO's prefixes), a fixed table of 16 |
//! | [`iphc`] | stateful IPHC and NHC-UDP compression and decompression |
//! | [`frag`] | RFC 4944 fragmentation, and a bounded reassembly table keyed by (source, destination, tag, size) |
//! | [`nd`] | the neighbour-discovery messages a 6LoWPAN node needs: RS, RA with PIO, MTU and 6CO, NS, NA |
//! | [`Adaptation`] | the adaptation layer as one unit: frame payload in → IPv6 packet out, IPv6 packet in → frame payloads out; used by the device and the border router |
//! | [`device`] | a 6LoWPAN device: router discovery, SLAAC from its extended address, contexts from 6CO, the CoAP device core over UDP |
//! | `driver` | a blocking driver: one device on one [`Radio`](crate::radio::Radio), OSCORE state written to a store (feature `std`) |
//!
//! Nothing here but `driver` owns a radio, a socket or a clock: frames come in through
//! `handle_*` and go out through `poll_*`, time is a parameter.

pub mod context;
pub mod device;
#[cfg(feature = "std")]
pub mod driver;
pub mod frag;
pub mod iphc;
pub mod nd;

use alloc::vec::Vec;
use core::net::SocketAddrV6;
use core::ops::Add;
use core::time::Duration;

use context::ContextTable;
use frag::{Datagram, FragDrop, FragHeader, FragKey, FragmentError, Reassembly, ReassemblyConfig};
use iphc::{
    CompressError, CompressOptions, DecompressError, IPV6_HEADER_LEN, LinkAddrs,
    MAX_COMPRESSED_HEADER, UDP_HEADER_LEN,
};

/// The dispatch of an uncompressed IPv6 packet (RFC 4944 §5.1).
pub const DISPATCH_IPV6: u8 = 0x41;

/// The IPv6 MTU over 6LoWPAN (RFC 4944 §4): the datagrams we send and take are at most this.
pub const IPV6_MTU: usize = 1280;

/// Why a frame payload did not yield an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Empty, or a dispatch we do not handle (mesh and broadcast headers, NALP, ...).
    #[error("unsupported 6LoWPAN dispatch {0:#04x}")]
    Dispatch(u8),
    /// The IPHC header was refused.
    #[error("IPHC: {0}")]
    Iphc(#[from] DecompressError),
    /// The fragment was refused by reassembly.
    #[error("fragment: {0}")]
    Fragment(#[from] FragDrop),
    /// A fragment header cut short.
    #[error("truncated fragment header")]
    FragmentHeader,
}

/// Why an IPv6 packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The packet could not be compressed.
    #[error("IPHC: {0}")]
    Compress(#[from] CompressError),
    /// The packet could not be fragmented.
    #[error("fragmentation: {0}")]
    Fragment(#[from] FragmentError),
}

/// Counters of the adaptation layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdaptationStats {
    /// IPv6 packets delivered up (whole, or reassembled).
    pub packets_in: u64,
    /// IPv6 packets sent down.
    pub packets_out: u64,
    /// Frame payloads handed out (more than `packets_out` when fragmenting).
    pub frames_out: u64,
    /// Payloads dropped for an unsupported dispatch.
    pub bad_dispatch: u64,
    /// Payloads dropped because their IPHC header was refused.
    pub bad_iphc: u64,
    /// Fragments refused (the reassembly's own counters say why).
    pub bad_fragments: u64,
}

/// The 6LoWPAN adaptation layer of one node: its contexts, its reassembly table and its
/// datagram tags. Sans-IO; `T` is the caller's instant type.
#[derive(Debug)]
pub struct Adaptation<T> {
    /// The compression contexts in force.
    pub contexts: ContextTable,
    reassembly: Reassembly<T>,
    options: CompressOptions,
    next_tag: u16,
    stats: AdaptationStats,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Adaptation<T> {
    /// A layer with no contexts, the given reassembly bounds and compression options; datagram
    /// tags start at `first_tag`.
    #[must_use]
    pub fn new(reassembly: ReassemblyConfig, options: CompressOptions, first_tag: u16) -> Self {
        Adaptation {
            contexts: ContextTable::new(),
            reassembly: Reassembly::new(reassembly),
            options,
            next_tag: first_tag,
            stats: AdaptationStats::default(),
        }
    }

    /// Counters of this layer.
    #[must_use]
    pub fn stats(&self) -> AdaptationStats {
        self.stats
    }

    /// The reassembly table (its counters, what it holds).
    #[must_use]
    pub fn reassembly(&self) -> &Reassembly<T> {
        &self.reassembly
    }

    /// Takes the payload of a data frame from `ll.src` to `ll.dst`; returns the IPv6 packet
    /// once one is whole (at once, or with the last fragment).
    pub fn receive(
        &mut self,
        now: T,
        ll: LinkAddrs,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, InputError> {
        let result = self.receive_inner(now, ll, payload);
        match &result {
            Ok(Some(_)) => self.stats.packets_in += 1,
            Ok(None) => {}
            Err(InputError::Dispatch(_)) => self.stats.bad_dispatch += 1,
            Err(InputError::Iphc(_)) => self.stats.bad_iphc += 1,
            Err(InputError::Fragment(_) | InputError::FragmentHeader) => {
                self.stats.bad_fragments += 1;
            }
        }
        result
    }

    fn receive_inner(
        &mut self,
        now: T,
        ll: LinkAddrs,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, InputError> {
        let dispatch = payload.first().copied().ok_or(InputError::Dispatch(0))?;
        match dispatch {
            DISPATCH_IPV6 => Ok(Some(payload.get(1..).unwrap_or_default().to_vec())),
            d if d >> 5 == 0b011 => {
                let mut out = alloc::vec![0; MAX_COMPRESSED_HEADER + payload.len()];
                let n = iphc::decompress_packet(payload, &ll, &self.contexts, &mut out)?;
                out.truncate(n);
                Ok(Some(out))
            }
            d if d & 0xd8 == 0xc0 => self.receive_fragment(now, ll, payload),
            d => Err(InputError::Dispatch(d)),
        }
    }

    fn receive_fragment(
        &mut self,
        now: T,
        ll: LinkAddrs,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, InputError> {
        let (h, data) = FragHeader::parse(payload).ok_or(InputError::FragmentHeader)?;
        let key = FragKey {
            src: ll.src,
            dst: ll.dst,
            tag: h.tag,
            size: h.size,
        };
        let done = if h.first {
            let mut first = alloc::vec![0; MAX_COMPRESSED_HEADER + data.len()];
            let d = iphc::decompress(
                data,
                &ll,
                &self.contexts,
                Some(usize::from(h.size)),
                &mut first,
            )?;
            let rest = data.get(d.consumed..).unwrap_or_default();
            let n = d.header_len + rest.len();
            if let Some(dst) = first.get_mut(d.header_len..n) {
                dst.copy_from_slice(rest);
            }
            first.truncate(n);
            self.reassembly.insert(now, key, 0, &first)?
        } else {
            self.reassembly.insert(now, key, h.offset, data)?
        };
        Ok(done.map(|mut packet| {
            // An elided UDP checksum decompresses to 0, which IPv6 never sends (RFC 8200 §8.1).
            if packet.get(6) == Some(&17) && packet.get(46..48) == Some(&[0, 0][..]) {
                iphc::fill_udp_checksum(&mut packet);
            }
            packet
        }))
    }

    /// Compresses (and if need be fragments) the IPv6 `packet` for a frame from `ll.src` to
    /// `ll.dst` whose payload holds at most `max_payload` bytes; hands each frame payload to
    /// `emit`. Returns the number of frames.
    pub fn send(
        &mut self,
        packet: &[u8],
        ll: LinkAddrs,
        max_payload: usize,
        emit: impl FnMut(&[u8]),
    ) -> Result<usize, OutputError> {
        let mut header = [0_u8; MAX_COMPRESSED_HEADER];
        let c = iphc::compress(packet, &ll, &self.contexts, self.options, &mut header)?;
        let datagram = Datagram {
            header: header.get(..c.header_len).unwrap_or_default(),
            consumed: c.consumed,
            rest: packet.get(c.consumed..).unwrap_or_default(),
        };
        let tag = self.next_tag;
        let frames = frag::fragment(datagram, tag, max_payload, emit)?;
        if frames > 1 {
            self.next_tag = self.next_tag.wrapping_add(1);
        }
        self.stats.packets_out += 1;
        self.stats.frames_out += frames as u64;
        Ok(frames)
    }

    /// When the next reassembly times out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<T> {
        self.reassembly.poll_timeout()
    }

    /// Drops reassemblies whose time ran out.
    pub fn handle_timeout(&mut self, now: T) {
        self.reassembly.handle_timeout(now);
    }
}

/// The IPv6 next-header value of UDP.
pub const PROTO_UDP: u8 = 17;

/// An IPv6/UDP packet from `from` to `to` with `hop_limit`, carrying `payload`, its UDP checksum
/// filled in (0 sent as `0xffff`, RFC 8200 §8.1). `payload` must leave the UDP length below
/// 64 KiB (6LoWPAN datagrams are at most [`IPV6_MTU`]).
#[must_use]
pub fn udp_packet(from: SocketAddrV6, to: SocketAddrV6, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let mut p = Vec::with_capacity(IPV6_HEADER_LEN + udp_len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[PROTO_UDP, hop_limit]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    iphc::fill_udp_checksum(&mut p);
    p
}
