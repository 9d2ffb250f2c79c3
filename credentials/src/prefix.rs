//! IPv6 prefixes a device may use as its source address: `2001:db8:1200:305::/64`.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 prefix `address/length` with no bits set beyond `length`.
///
/// `Display` writes the canonical form (`2001:db8:1200:305::/64`); `FromStr` accepts any
/// textual IPv6 address, a `/` and a decimal length `0..=128`, and refuses host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    network: Ipv6Addr,
    len: u8,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an IPv6 prefix like 2001:db8:1200:305::/64: {reason}")]
pub struct PrefixError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Ipv6Prefix {
    /// The prefix `network/len`.
    ///
    /// # Errors
    ///
    /// When `len` is above 128 or `network` has bits set beyond the first `len`.
    pub fn new(network: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        let error = |reason| PrefixError {
            input: format!("{network}/{len}"),
            reason,
        };
        if len > 128 {
            return Err(error("the length is above 128"));
        }
        if network.to_bits() & !Self::mask(len) != 0 {
            return Err(error("bits are set beyond the prefix length"));
        }
        Ok(Self { network, len })
    }

    /// The prefix's first address (the host bits are zero).
    #[must_use]
    pub const fn network(self) -> Ipv6Addr {
        self.network
    }

    /// The prefix length, `0..=128`.
    #[must_use]
    pub const fn prefix_len(self) -> u8 {
        self.len
    }

    /// Whether `addr` is inside the prefix.
    #[must_use]
    pub fn contains(self, addr: Ipv6Addr) -> bool {
        addr.to_bits() & Self::mask(self.len) == self.network.to_bits()
    }

    fn mask(len: u8) -> u128 {
        match len {
            0 => 0,
            n => u128::MAX << (128 - u32::from(n.min(128))),
        }
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let error = |reason| PrefixError {
            input: s.to_owned(),
            reason,
        };
        let (addr, len) = s.split_once('/').ok_or_else(|| error("no `/length`"))?;
        let network: Ipv6Addr = addr
            .parse()
            .map_err(|_| error("not an IPv6 address before the `/`"))?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error("the length is not a number 0..=128"));
        }
        let len: u8 = len
            .parse()
            .map_err(|_| error("the length is not a number 0..=128"))?;
        Self::new(network, len).map_err(|e| PrefixError {
            input: s.to_owned(),
            reason: e.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_contains() {
        let p: Ipv6Prefix = "2001:db8:1200:305::/64".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8:1200:305::/64");
        assert_eq!(p.prefix_len(), 64);
        assert!(p.contains("2001:db8:1200:305::1".parse().unwrap()));
        assert!(!p.contains("2001:db8:1200:306::1".parse().unwrap()));
        let all: Ipv6Prefix = "::/0".parse().unwrap();
        assert!(all.contains(Ipv6Addr::LOCALHOST));
        let host: Ipv6Prefix = "2001:db8::1/128".parse().unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        assert_eq!(
            "2001:DB8:0:0::/32"
                .parse::<Ipv6Prefix>()
                .unwrap()
                .to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn refuses_bad_text() {
        for bad in [
            "2001:db8::",
            "2001:db8::/",
            "2001:db8::/129",
            "2001:db8::/-1",
            "2001:db8::/0064",
            "2001:db8::1/64",
            "10.0.0.0/8",
            "2001:db8::/6 4",
        ] {
            let e = bad.parse::<Ipv6Prefix>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
