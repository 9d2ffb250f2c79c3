//! The little of IPv6 the border router reads: the fixed header (RFC 8200 §3), checked once,
//! then read without panics; prefixes of /64 networks.

use std::net::Ipv6Addr;

use v6iot_sdk::lowpan::iphc::IPV6_HEADER_LEN;

/// Why bytes are not an IPv6 packet the router forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpError {
    /// Shorter than the fixed header.
    #[error("shorter than an IPv6 header")]
    Truncated,
    /// The version field is not 6.
    #[error("not IPv6 (version {0})")]
    Version(u8),
    /// The payload length disagrees with the bytes (more is claimed than there is, or there
    /// are bytes after the payload).
    #[error("payload length {claimed} but {have} bytes follow the header")]
    Length {
        /// The header's payload length.
        claimed: usize,
        /// Bytes after the header.
        have: usize,
    },
}

/// The fixed IPv6 header of a packet whose length has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Next header (protocol).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
}

fn addr_at(packet: &[u8], at: usize) -> Ipv6Addr {
    packet
        .get(at..at + 16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map_or(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from)
}

impl Ipv6Header {
    /// The header of `packet`, which must be exactly header + payload length.
    ///
    /// # Errors
    ///
    /// [`IpError`] naming what is wrong.
    pub fn parse(packet: &[u8]) -> Result<Ipv6Header, IpError> {
        let Some(head) = packet.get(..IPV6_HEADER_LEN) else {
            return Err(IpError::Truncated);
        };
        let b = |i: usize| head.get(i).copied().unwrap_or(0);
        let version = b(0) >> 4;
        if version != 6 {
            return Err(IpError::Version(version));
        }
        let claimed = usize::from(u16::from_be_bytes([b(4), b(5)]));
        let have = packet.len() - IPV6_HEADER_LEN;
        if claimed != have {
            return Err(IpError::Length { claimed, have });
        }
        Ok(Ipv6Header {
            next_header: b(6),
            hop_limit: b(7),
            src: addr_at(packet, 8),
            dst: addr_at(packet, 24),
        })
    }
}

/// The payload of a packet whose header [`Ipv6Header::parse`] accepted.
#[must_use]
pub fn payload(packet: &[u8]) -> &[u8] {
    packet.get(IPV6_HEADER_LEN..).unwrap_or_default()
}

/// Sets the hop limit of `packet` (a no-op on anything shorter than a header).
pub fn set_hop_limit(packet: &mut [u8], hop: u8) {
    if let Some(h) = packet.get_mut(7) {
        *h = hop;
    }
}

/// The upper 64 bits of `addr` (its /64).
#[must_use]
pub fn net64(addr: Ipv6Addr) -> u64 {
    (addr.to_bits() >> 64) as u64
}

/// `net64`'s network with `iid` as its interface ID.
#[must_use]
pub fn join(net: u64, iid: [u8; 8]) -> Ipv6Addr {
    Ipv6Addr::from_bits(u128::from(net) << 64 | u128::from(u64::from_be_bytes(iid)))
}

/// The interface ID (lower 64 bits) of `addr`.
#[must_use]
pub fn iid(addr: Ipv6Addr) -> [u8; 8] {
    (addr.to_bits() as u64).to_be_bytes()
}

/// Whether `addr` is link-local unicast (`fe80::/10`).
#[must_use]
pub fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut p = vec![0x60, 0, 0, 0, 0, 2, 17, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[1, 2]);
        let h = Ipv6Header::parse(&p).unwrap();
        assert_eq!((h.next_header, h.hop_limit), (17, 64));
        assert_eq!(payload(&p), [1, 2]);
        assert_eq!(Ipv6Header::parse(&p[..39]), Err(IpError::Truncated));
        assert_eq!(
            Ipv6Header::parse(&p[..41]),
            Err(IpError::Length {
                claimed: 2,
                have: 1
            })
        );
        p[0] = 0x45;
        assert_eq!(Ipv6Header::parse(&p), Err(IpError::Version(4)));
        let a: Ipv6Addr = "2001:db8:1200:305:12:3456:78ab:cdef".parse().unwrap();
        assert_eq!(join(net64(a), iid(a)), a);
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(!is_link_local(a));
    }
}
