//! The neighbour-discovery messages of a 6LoWPAN node (RFC 4861, RFC 4944 §8, RFC 6775 §4.2):
//! Router Solicitation and Advertisement (with Prefix Information, MTU and the 6LoWPAN Context
//! Option that smoltcp ignores), Neighbour Solicitation and Advertisement, and ICMPv6 echo.
//!
//! [`Icmpv6::parse`] reads an ICMPv6 message (its checksum checked by the caller with the IPv6
//! addresses, [`packet`] does both) and [`Icmpv6::emit`] writes one; [`packet`] wraps a message
//! in an IPv6 header with its checksum. Link-layer address options carry 802.15.4 addresses:
//! 8 bytes (option length 2) or a short address (length 1), most significant byte first.

use alloc::vec::Vec;
use core::net::Ipv6Addr;

use super::iphc::{IPV6_HEADER_LEN, upper_layer_checksum};
use crate::radio::mac::LinkAddr;

/// The ICMPv6 next-header value.
pub const PROTO_ICMPV6: u8 = 58;
/// All nodes on the link, `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All routers on the link, `ff02::2`.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

const OPT_SLLAO: u8 = 1;
const OPT_TLLAO: u8 = 2;
const OPT_PIO: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_6CO: u8 = 34;

/// Why an ICMPv6 message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NdError {
    /// Shorter than its type requires, or an option runs past the end.
    #[error("ICMPv6 message truncated")]
    Truncated,
    /// An option of length 0, or a code other than 0.
    #[error("malformed ICMPv6 message")]
    Malformed,
    /// A type this node does not handle.
    #[error("ICMPv6 type {0} not handled")]
    Unhandled(u8),
    /// The checksum is wrong.
    #[error("ICMPv6 checksum wrong")]
    Checksum,
    /// Not an ICMPv6 packet, or a neighbour-discovery message with a hop limit other than 255
    /// (RFC 4861 §6.1: it came from off-link).
    #[error("not a valid ICMPv6 packet")]
    NotIcmpv6,
}

/// A Prefix Information option (RFC 4861 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    /// The prefix.
    pub prefix: Ipv6Addr,
    /// Its length in bits.
    pub len: u8,
    /// L: on-link.
    pub on_link: bool,
    /// A: usable for address autoconfiguration.
    pub autonomous: bool,
    /// Valid lifetime, seconds.
    pub valid_lifetime: u32,
    /// Preferred lifetime, seconds.
    pub preferred_lifetime: u32,
}

/// A 6LoWPAN Context Option (RFC 6775 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextOption {
    /// The context ID (4 bits).
    pub cid: u8,
    /// C: valid for compression.
    pub compress: bool,
    /// The prefix.
    pub prefix: Ipv6Addr,
    /// Its length in bits.
    pub len: u8,
    /// Valid lifetime, in units of 60 seconds.
    pub lifetime_minutes: u16,
}

/// A Router Advertisement (RFC 4861 §4.2) with the options a 6LoWPAN host reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterAdvert {
    /// Cur Hop Limit (0: unspecified).
    pub hop_limit: u8,
    /// Router lifetime, seconds (0: not a default router).
    pub router_lifetime: u16,
    /// Reachable time, milliseconds.
    pub reachable_time: u32,
    /// Retransmission timer, milliseconds.
    pub retrans_timer: u32,
    /// The router's link-layer address.
    pub source_ll: Option<LinkAddr>,
    /// The link MTU.
    pub mtu: Option<u32>,
    /// Prefixes.
    pub prefixes: Vec<PrefixInfo>,
    /// 6LoWPAN contexts.
    pub contexts: Vec<ContextOption>,
}

/// The ICMPv6 messages a 6LoWPAN node handles.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Icmpv6 {
    /// Type 133.
    RouterSolicit {
        /// The sender's link-layer address.
        source_ll: Option<LinkAddr>,
    },
    /// Type 134.
    RouterAdvert(RouterAdvert),
    /// Type 135.
    NeighborSolicit {
        /// The address asked about.
        target: Ipv6Addr,
        /// The sender's link-layer address.
        source_ll: Option<LinkAddr>,
    },
    /// Type 136.
    NeighborAdvert {
        /// R: the sender is a router.
        router: bool,
        /// S: an answer to a solicitation.
        solicited: bool,
        /// O: override cached link-layer addresses.
        override_: bool,
        /// The address advertised.
        target: Ipv6Addr,
        /// Its link-layer address.
        target_ll: Option<LinkAddr>,
    },
    /// Type 128.
    EchoRequest {
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
        /// Data.
        data: Vec<u8>,
    },
    /// Type 129.
    EchoReply {
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
        /// Data.
        data: Vec<u8>,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn addr_at(b: &[u8], at: usize) -> Result<Ipv6Addr, NdError> {
    let octets: [u8; 16] = b
        .get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(NdError::Truncated)?;
    Ok(Ipv6Addr::from(octets))
}

/// A prefix of `len` bits from `bytes` (8 or 16 of them), the rest zero.
fn prefix_from(bytes: &[u8], len: u8) -> Ipv6Addr {
    let mut octets = [0_u8; 16];
    let n = bytes.len().min(16);
    if let (Some(dst), Some(src)) = (octets.get_mut(..n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    let mask = match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    };
    Ipv6Addr::from(u128::from_be_bytes(octets) & mask)
}

fn link_addr(data: &[u8]) -> Option<LinkAddr> {
    match data {
        [a, b, c, d, e, f, g, h, ..] => Some(LinkAddr::Extended([*a, *b, *c, *d, *e, *f, *g, *h])),
        [a, b, ..] => Some(LinkAddr::Short([*a, *b])),
        _ => None,
    }
}

/// Options: (type, data after the two-byte type/length), in order.
fn options(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>, NdError> {
    let mut out = Vec::new();
    while let [kind, len, ..] = *b {
        let total = usize::from(len) * 8;
        if total == 0 {
            return Err(NdError::Malformed);
        }
        let (opt, rest) = b.split_at_checked(total).ok_or(NdError::Truncated)?;
        out.push((kind, opt.get(2..).unwrap_or_default()));
        b = rest;
    }
    if b.is_empty() {
        Ok(out)
    } else {
        Err(NdError::Truncated)
    }
}

fn parse_ra(body: &[u8]) -> Result<RouterAdvert, NdError> {
    let mut ra = RouterAdvert {
        hop_limit: body.get(4).copied().ok_or(NdError::Truncated)?,
        router_lifetime: be16(body, 6),
        reachable_time: be32(body, 8),
        retrans_timer: be32(body, 12),
        ..RouterAdvert::default()
    };
    for (kind, data) in options(body.get(16..).ok_or(NdError::Truncated)?)? {
        match kind {
            OPT_SLLAO => ra.source_ll = link_addr(data),
            OPT_MTU => ra.mtu = Some(be32(data, 2)),
            OPT_PIO if data.len() >= 30 => {
                let len = data.first().copied().unwrap_or(0).min(128);
                let flags = data.get(1).copied().unwrap_or(0);
                ra.prefixes.push(PrefixInfo {
                    prefix: prefix_from(data.get(14..30).unwrap_or_default(), len),
                    len,
                    on_link: flags & 0x80 != 0,
                    autonomous: flags & 0x40 != 0,
                    valid_lifetime: be32(data, 2),
                    preferred_lifetime: be32(data, 6),
                });
            }
            OPT_6CO if data.len() >= 6 => {
                let len = data.first().copied().unwrap_or(0).min(128);
                let bits = data.get(1).copied().unwrap_or(0);
                let prefix_bytes = data.get(6..).unwrap_or_default();
                if prefix_bytes.len() * 8 < usize::from(len) {
                    return Err(NdError::Malformed);
                }
                ra.contexts.push(ContextOption {
                    cid: bits & 0x0f,
                    compress: bits & 0x10 != 0,
                    prefix: prefix_from(prefix_bytes, len),
                    len,
                    lifetime_minutes: be16(data, 4),
                });
            }
            OPT_PIO | OPT_6CO => return Err(NdError::Malformed),
            _ => {}
        }
    }
    Ok(ra)
}

fn ll_option(b: &[u8], at: usize, wanted: u8) -> Result<Option<LinkAddr>, NdError> {
    let opts = options(b.get(at..).ok_or(NdError::Truncated)?)?;
    Ok(opts
        .into_iter()
        .find(|(k, _)| *k == wanted)
        .and_then(|(_, d)| link_addr(d)))
}

impl Icmpv6 {
    /// Parses an ICMPv6 message (type, code, checksum, body); the checksum is not checked here.
    pub fn parse(msg: &[u8]) -> Result<Icmpv6, NdError> {
        let (&kind, &code) = (
            msg.first().ok_or(NdError::Truncated)?,
            msg.get(1).ok_or(NdError::Truncated)?,
        );
        if code != 0 {
            return Err(NdError::Malformed);
        }
        let need = |n: usize| {
            if msg.len() < n {
                Err(NdError::Truncated)
            } else {
                Ok(())
            }
        };
        match kind {
            128 | 129 => {
                need(8)?;
                let (id, seq) = (be16(msg, 4), be16(msg, 6));
                let data = msg.get(8..).unwrap_or_default().to_vec();
                Ok(if kind == 128 {
                    Icmpv6::EchoRequest { id, seq, data }
                } else {
                    Icmpv6::EchoReply { id, seq, data }
                })
            }
            133 => {
                need(8)?;
                Ok(Icmpv6::RouterSolicit {
                    source_ll: ll_option(msg, 8, OPT_SLLAO)?,
                })
            }
            134 => {
                need(16)?;
                Ok(Icmpv6::RouterAdvert(parse_ra(msg)?))
            }
            135 => {
                need(24)?;
                Ok(Icmpv6::NeighborSolicit {
                    target: addr_at(msg, 8)?,
                    source_ll: ll_option(msg, 24, OPT_SLLAO)?,
                })
            }
            136 => {
                need(24)?;
                let flags = msg.get(4).copied().unwrap_or(0);
                Ok(Icmpv6::NeighborAdvert {
                    router: flags & 0x80 != 0,
                    solicited: flags & 0x40 != 0,
                    override_: flags & 0x20 != 0,
                    target: addr_at(msg, 8)?,
                    target_ll: ll_option(msg, 24, OPT_TLLAO)?,
                })
            }
            k => Err(NdError::Unhandled(k)),
        }
    }

    /// The message's bytes, checksum field zero ([`packet`] fills it in).
    #[must_use]
    pub fn emit(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        match self {
            Icmpv6::EchoRequest { id, seq, data } | Icmpv6::EchoReply { id, seq, data } => {
                let kind = if matches!(self, Icmpv6::EchoRequest { .. }) {
                    128
                } else {
                    129
                };
                m.extend_from_slice(&[kind, 0, 0, 0]);
                m.extend_from_slice(&id.to_be_bytes());
                m.extend_from_slice(&seq.to_be_bytes());
                m.extend_from_slice(data);
            }
            Icmpv6::RouterSolicit { source_ll } => {
                m.extend_from_slice(&[133, 0, 0, 0, 0, 0, 0, 0]);
                push_ll(&mut m, OPT_SLLAO, *source_ll);
            }
            Icmpv6::RouterAdvert(ra) => emit_ra(&mut m, ra),
            Icmpv6::NeighborSolicit { target, source_ll } => {
                m.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
                m.extend_from_slice(&target.octets());
                push_ll(&mut m, OPT_SLLAO, *source_ll);
            }
            Icmpv6::NeighborAdvert {
                router,
                solicited,
                override_,
                target,
                target_ll,
            } => {
                let flags =
                    u8::from(*router) << 7 | u8::from(*solicited) << 6 | u8::from(*override_) << 5;
                m.extend_from_slice(&[136, 0, 0, 0, flags, 0, 0, 0]);
                m.extend_from_slice(&target.octets());
                push_ll(&mut m, OPT_TLLAO, *target_ll);
            }
        }
        m
    }
}

fn push_ll(m: &mut Vec<u8>, kind: u8, ll: Option<LinkAddr>) {
    match ll {
        Some(LinkAddr::Extended(e)) => {
            m.extend_from_slice(&[kind, 2]);
            m.extend_from_slice(&e);
            m.extend_from_slice(&[0; 6]);
        }
        Some(LinkAddr::Short(s)) => {
            m.extend_from_slice(&[kind, 1]);
            m.extend_from_slice(&s);
            m.extend_from_slice(&[0; 4]);
        }
        Some(LinkAddr::Absent) | None => {}
    }
}

fn emit_ra(m: &mut Vec<u8>, ra: &RouterAdvert) {
    m.extend_from_slice(&[134, 0, 0, 0, ra.hop_limit, 0]);
    m.extend_from_slice(&ra.router_lifetime.to_be_bytes());
    m.extend_from_slice(&ra.reachable_time.to_be_bytes());
    m.extend_from_slice(&ra.retrans_timer.to_be_bytes());
    push_ll(m, OPT_SLLAO, ra.source_ll);
    if let Some(mtu) = ra.mtu {
        m.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
        m.extend_from_slice(&mtu.to_be_bytes());
    }
    for p in &ra.prefixes {
        let flags = u8::from(p.on_link) << 7 | u8::from(p.autonomous) << 6;
        m.extend_from_slice(&[OPT_PIO, 4, p.len, flags]);
        m.extend_from_slice(&p.valid_lifetime.to_be_bytes());
        m.extend_from_slice(&p.preferred_lifetime.to_be_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&p.prefix.octets());
    }
    for c in &ra.contexts {
        // 8 bytes of prefix for contexts up to /64, 16 beyond (option length 2 or 3).
        let (units, bytes) = if c.len <= 64 { (2, 8) } else { (3, 16) };
        m.extend_from_slice(&[
            OPT_6CO,
            units,
            c.len,
            u8::from(c.compress) << 4 | (c.cid & 0x0f),
            0,
            0,
        ]);
        m.extend_from_slice(&c.lifetime_minutes.to_be_bytes());
        m.extend_from_slice(c.prefix.octets().get(..bytes).unwrap_or_default());
    }
}

/// An IPv6 packet from `src` to `dst` carrying `message` (hop limit 255, as neighbour discovery
/// requires), its checksum filled in.
#[must_use]
pub fn packet(src: Ipv6Addr, dst: Ipv6Addr, message: &Icmpv6) -> Vec<u8> {
    let mut body = message.emit();
    let sum = upper_layer_checksum(src, dst, PROTO_ICMPV6, &body);
    if let Some(dst) = body.get_mut(2..4) {
        dst.copy_from_slice(&sum.to_be_bytes());
    }
    let mut p = Vec::with_capacity(IPV6_HEADER_LEN + body.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    // ICMPv6 messages here are far below 64 KiB.
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[PROTO_ICMPV6, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&body);
    p
}

/// Parses the ICMPv6 message of the IPv6 `packet` from `src` to `dst` with hop limit `hop`,
/// checking its checksum, and (for neighbour discovery, types 133–137) that `hop` is 255.
pub fn parse_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    message: &[u8],
) -> Result<Icmpv6, NdError> {
    if upper_layer_checksum(src, dst, PROTO_ICMPV6, message) != 0 {
        return Err(NdError::Checksum);
    }
    let kind = message.first().copied().unwrap_or(0);
    if (133..=137).contains(&kind) && hop != 255 {
        return Err(NdError::NotIcmpv6);
    }
    Icmpv6::parse(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra() -> RouterAdvert {
        RouterAdvert {
            hop_limit: 64,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_timer: 0,
            source_ll: Some(LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 1])),
            mtu: Some(1280),
            prefixes: alloc::vec![PrefixInfo {
                prefix: "2001:db8:1200:305::".parse().unwrap(),
                len: 64,
                on_link: false,
                autonomous: true,
                valid_lifetime: 86_400,
                preferred_lifetime: 14_400,
            }],
            contexts: alloc::vec![ContextOption {
                cid: 0,
                compress: true,
                prefix: "2001:db8:1200:305::".parse().unwrap(),
                len: 64,
                lifetime_minutes: 60,
            }],
        }
    }

    #[test]
    fn router_advert_round_trip_and_6co_bytes() {
        let msg = Icmpv6::RouterAdvert(ra());
        let bytes = msg.emit();
        // header 16, SLLAO 16, MTU 8, PIO 32, 6CO 16
        assert_eq!(bytes.len(), 88);
        assert_eq!(
            &bytes[72..],
            &[
                34, 2, 64, 0x10, 0, 0, 0, 60, 0x20, 0x01, 0x0d, 0xb8, 0x12, 0x00, 0x03, 0x05
            ]
        );
        assert_eq!(Icmpv6::parse(&bytes), Ok(msg));
    }

    #[test]
    fn packets_carry_a_checksum_that_parse_checks() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let p = packet(src, ALL_NODES, &Icmpv6::RouterAdvert(ra()));
        assert_eq!(p[6], PROTO_ICMPV6);
        assert_eq!(p[7], 255);
        let msg = &p[40..];
        assert!(parse_packet(src, ALL_NODES, 255, msg).is_ok());
        assert_eq!(
            parse_packet(src, ALL_NODES, 64, msg),
            Err(NdError::NotIcmpv6)
        );
        let mut bad = msg.to_vec();
        bad[20] ^= 1;
        assert_eq!(
            parse_packet(src, ALL_NODES, 255, &bad),
            Err(NdError::Checksum)
        );
    }

    #[test]
    fn solicitations_and_advertisements_round_trip() {
        let me = LinkAddr::Extended([2, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]);
        for m in [
            Icmpv6::RouterSolicit {
                source_ll: Some(me),
            },
            Icmpv6::NeighborSolicit {
                target: "2001:db8::1".parse().unwrap(),
                source_ll: Some(LinkAddr::Short([0x12, 0x34])),
            },
            Icmpv6::NeighborAdvert {
                router: false,
                solicited: true,
                override_: true,
                target: "2001:db8::1".parse().unwrap(),
                target_ll: Some(me),
            },
            Icmpv6::EchoRequest {
                id: 1,
                seq: 2,
                data: alloc::vec![1, 2, 3],
            },
        ] {
            assert_eq!(Icmpv6::parse(&m.emit()), Ok(m));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(Icmpv6::parse(&[134, 0, 0]), Err(NdError::Truncated));
        assert_eq!(Icmpv6::parse(&[134, 1, 0, 0]), Err(NdError::Malformed));
        assert_eq!(Icmpv6::parse(&[1, 0, 0, 0]), Err(NdError::Unhandled(1)));
        let mut ra_bytes = Icmpv6::RouterAdvert(ra()).emit();
        ra_bytes[17] = 0; // the SLLAO's length
        assert_eq!(Icmpv6::parse(&ra_bytes), Err(NdError::Malformed));
        let mut ra_bytes = Icmpv6::RouterAdvert(ra()).emit();
        ra_bytes.truncate(80);
        assert_eq!(Icmpv6::parse(&ra_bytes), Err(NdError::Truncated));
    }
}
