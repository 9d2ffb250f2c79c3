//! The neighbour table of one PAN: which link-layer address a device's global address is
//! reached at, how it was learnt, and until when it is kept.
//!
//! # Bound
//!
//! At most [`NeighbourConfig::max_entries`] entries (default 16,384 per PAN). An entry not seen
//! for [`NeighbourConfig::idle`] is dropped by the next sweep (the router sweeps once a
//! minute). When the table is full a new address is refused and counted
//! ([`NeighbourStats::table_full`]); live entries are never evicted, so frames from many
//! invented addresses cannot push out the devices already known. Nothing is lost by a refusal:
//! a planned address's link-layer address is its interface ID with the U/L bit flipped, which
//! the router derives when the table has no entry (see [`super::pan`]).
//!
//! # How entries are made, and what plugs in later
//!
//! Today an entry is made from a device's own traffic only ([`Origin::Gleaned`]: a packet whose
//! source address's interface ID is the one derived from the frame's link-layer source). So a
//! node can claim addresses of its own link-layer address and no others: unauthenticated
//! neighbour solicitations naming someone else's address never redirect that address's traffic.
//! Each entry is keyed by one IPv6 address, as RFC 6775/8505 neighbour cache entries are, and
//! names the link-layer next hop (`ll`), not the device:
//!
//! - **RFC 8505 registration** (an NS with an EARO): [`NeighbourTable::learn`] with a new
//!   `Origin::Registered { rovr, lifetime }` variant; the registration's lifetime replaces the
//!   idle timer for that entry, the ROVR decides who owns an address already registered, and the
//!   NA's status (0 success, 2 full) comes from `learn`'s result.
//! - **RPL non-storing mode** (DAOs at the root): an entry whose `ll` is the first hop of the
//!   source route rather than the target itself — an `Origin::Routed { parent }` variant — so
//!   the forwarding code that asks [`NeighbourTable::next_hop`] does not change.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use foldhash::HashMap;
use v6iot_sdk::radio::mac::LinkAddr;

/// Bounds of a [`NeighbourTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Entries at most.
    pub max_entries: usize,
    /// An entry not seen for this long is dropped.
    pub idle: Duration,
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            max_entries: 16_384,
            idle: Duration::from_secs(2 * 3600),
        }
    }
}

/// How an entry was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// From a packet the device sent from this address, its IID derived from the frame's
    /// link-layer source.
    Gleaned,
}

/// One neighbour cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The link-layer next hop.
    pub ll: LinkAddr,
    /// How it was learnt.
    pub origin: Origin,
    /// When the device was last heard from this address.
    pub last_seen: Instant,
}

/// What a [`NeighbourTable`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighbourStats {
    /// Entries made.
    pub added: u64,
    /// Entries whose link-layer address changed (not possible for gleaned entries, whose
    /// address derives from it; kept for registrations and routes to come).
    pub changed: u64,
    /// Addresses refused because the table was full.
    pub table_full: u64,
    /// Entries dropped after being idle.
    pub expired: u64,
}

/// The table was full: the address was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("neighbour table full")]
pub struct TableFull;

/// The neighbour table of one PAN (see the module doc).
#[derive(Debug)]
pub struct NeighbourTable {
    config: NeighbourConfig,
    entries: HashMap<Ipv6Addr, Neighbour>,
    stats: NeighbourStats,
}

impl NeighbourTable {
    /// An empty table with these bounds.
    #[must_use]
    pub fn new(config: NeighbourConfig) -> NeighbourTable {
        NeighbourTable {
            config,
            entries: HashMap::default(),
            stats: NeighbourStats::default(),
        }
    }

    /// Records that `addr` is reached at `ll` (learnt at `now`, by `origin`).
    ///
    /// # Errors
    ///
    /// [`TableFull`] when `addr` is new and the table holds its maximum.
    pub fn learn(
        &mut self,
        now: Instant,
        addr: Ipv6Addr,
        ll: LinkAddr,
        origin: Origin,
    ) -> Result<(), TableFull> {
        if let Some(n) = self.entries.get_mut(&addr) {
            if n.ll != ll {
                self.stats.changed += 1;
                n.ll = ll;
                n.origin = origin;
            }
            n.last_seen = now;
            return Ok(());
        }
        if self.entries.len() >= self.config.max_entries {
            self.stats.table_full += 1;
            return Err(TableFull);
        }
        self.entries.insert(
            addr,
            Neighbour {
                ll,
                origin,
                last_seen: now,
            },
        );
        self.stats.added += 1;
        Ok(())
    }

    /// The entry for `addr`.
    #[must_use]
    pub fn get(&self, addr: &Ipv6Addr) -> Option<&Neighbour> {
        self.entries.get(addr)
    }

    /// The link-layer next hop for `addr`, if known.
    #[must_use]
    pub fn next_hop(&self, addr: &Ipv6Addr) -> Option<LinkAddr> {
        self.entries.get(addr).map(|n| n.ll)
    }

    /// Drops the entries idle since before `now − idle`.
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.config.idle;
        let before = self.entries.len();
        self.entries
            .retain(|_, n| now.saturating_duration_since(n.last_seen) < idle);
        self.stats.expired += (before - self.entries.len()) as u64;
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> NeighbourStats {
        self.stats
    }

    /// The bounds.
    #[must_use]
    pub fn config(&self) -> NeighbourConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> Ipv6Addr {
        Ipv6Addr::from_bits(0x2001_0db8_1200_0305_0000_0000_0000_0000 | u128::from(i))
    }

    fn ll(i: u32) -> LinkAddr {
        let [a, b, c, d] = i.to_be_bytes();
        LinkAddr::Extended([2, 0, 0, 0, a, b, c, d])
    }

    #[test]
    fn bounded_at_max_entries_and_live_entries_stay() {
        let t0 = Instant::now();
        let config = NeighbourConfig {
            max_entries: 100,
            idle: Duration::from_secs(60),
        };
        let mut t = NeighbourTable::new(config);
        for i in 0..100 {
            t.learn(t0, addr(i), ll(i), Origin::Gleaned).unwrap();
        }
        assert_eq!(t.len(), 100);
        // At the bound: a new address is refused and counted, the known ones stay.
        assert_eq!(
            t.learn(t0, addr(100), ll(100), Origin::Gleaned),
            Err(TableFull)
        );
        assert_eq!(t.stats().table_full, 1);
        assert_eq!(t.next_hop(&addr(7)), Some(ll(7)));
        assert_eq!(t.next_hop(&addr(100)), None);
        // A known address is refreshed even when full.
        let t1 = t0 + Duration::from_secs(50);
        t.learn(t1, addr(7), ll(7), Origin::Gleaned).unwrap();
        // After the idle time only the refreshed entry is left; room again.
        t.sweep(t0 + Duration::from_secs(61));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().expired, 99);
        assert!(t.learn(t1, addr(100), ll(100), Origin::Gleaned).is_ok());
        assert_eq!(t.stats().added, 101);
    }
}
