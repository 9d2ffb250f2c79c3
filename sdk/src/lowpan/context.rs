//! 6LoWPAN compression contexts (RFC 6282 §3.1.2, RFC 6775 §4.2): up to 16 prefixes, each
//! known by a 4-bit context ID, that header compression may elide from addresses.

use core::net::Ipv6Addr;

/// The number of context IDs (4 bits).
pub const CONTEXT_IDS: usize = 16;

/// One compression context: a prefix and whether it may be used to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    prefix: [u8; 16],
    len: u8,
    /// The 6CO's C flag: the context may be used for compression (else only to decompress
    /// what others still send with it).
    pub compress: bool,
}

impl Context {
    /// The context for `prefix`/`len` (`len` up to 128; bits beyond `len` are cleared).
    #[must_use]
    pub fn new(prefix: Ipv6Addr, len: u8) -> Context {
        let len = len.min(128);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Context {
            prefix: (prefix.to_bits() & mask).to_be_bytes(),
            len,
            compress: true,
        }
    }

    /// The prefix (bits beyond [`Context::len`] zero).
    #[must_use]
    pub fn prefix(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.prefix)
    }

    /// The prefix length in bits.
    #[must_use]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    fn mask(&self) -> u128 {
        if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len))
        }
    }

    /// `low` with its first [`Context::len`] bits replaced by the prefix's: "bits covered by
    /// context information are always used" (RFC 6282 §3.1.1).
    #[must_use]
    pub fn overlay(&self, low: [u8; 16]) -> [u8; 16] {
        let mask = self.mask();
        let bits = (u128::from_be_bytes(self.prefix) & mask) | (u128::from_be_bytes(low) & !mask);
        bits.to_be_bytes()
    }

    /// Whether `addr` starts with this prefix.
    #[must_use]
    pub fn matches(&self, addr: &[u8; 16]) -> bool {
        u128::from_be_bytes(*addr) & self.mask() == u128::from_be_bytes(self.prefix)
    }
}

/// The contexts of a PAN, by ID; at most [`CONTEXT_IDS`], so its size is fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextTable {
    slots: [Option<Context>; CONTEXT_IDS],
}

impl ContextTable {
    /// No contexts.
    #[must_use]
    pub fn new() -> ContextTable {
        ContextTable::default()
    }

    /// Sets context `id` (only the low 4 bits count).
    pub fn set(&mut self, id: u8, context: Context) {
        if let Some(slot) = self.slots.get_mut(usize::from(id & 0x0f)) {
            *slot = Some(context);
        }
    }

    /// Removes context `id`.
    pub fn remove(&mut self, id: u8) {
        if let Some(slot) = self.slots.get_mut(usize::from(id & 0x0f)) {
            *slot = None;
        }
    }

    /// Context `id`, if set.
    #[must_use]
    pub fn get(&self, id: u8) -> Option<&Context> {
        self.slots
            .get(usize::from(id & 0x0f))
            .and_then(Option::as_ref)
    }

    /// The contexts that may compress, with their IDs.
    pub fn for_compression(&self) -> impl Iterator<Item = (u8, &Context)> {
        (0_u8..)
            .zip(self.slots.iter())
            .filter_map(|(id, c)| c.as_ref().filter(|c| c.compress).map(|c| (id, c)))
    }

    /// Whether no context is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_match() {
        let c = Context::new("2001:db8:1200:305:ffff::".parse().unwrap(), 64);
        assert_eq!(
            c.prefix(),
            "2001:db8:1200:305::".parse::<Ipv6Addr>().unwrap()
        );
        let low = Ipv6Addr::new(0, 0, 0, 0, 0x12, 0x3456, 0x78ab, 0xcdef).octets();
        assert_eq!(
            Ipv6Addr::from(c.overlay(low)),
            "2001:db8:1200:305:12:3456:78ab:cdef"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert!(c.matches(&c.overlay(low)));
        assert!(!c.matches(&Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x306, 0, 0, 0, 1).octets()));
        // A /48 context leaves bits 48..64 to the address.
        let site = Context::new("2001:db8:1200::".parse().unwrap(), 48);
        assert!(site.matches(&Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x306, 0, 0, 0, 1).octets()));
        assert_eq!(Context::new(Ipv6Addr::UNSPECIFIED, 0).overlay(low), low);
    }

    #[test]
    fn table_ids_are_four_bits() {
        let mut t = ContextTable::new();
        assert!(t.is_empty());
        let c = Context::new("2001:db8::".parse().unwrap(), 64);
        t.set(0x13, c);
        assert_eq!(t.get(3), Some(&c));
        let mut off = c;
        off.compress = false;
        t.set(5, off);
        assert_eq!(
            t.for_compression()
                .map(|(id, _)| id)
                .collect::<alloc::vec::Vec<_>>(),
            [3]
        );
        t.remove(3);
        assert!(t.get(3).is_none());
    }
}
