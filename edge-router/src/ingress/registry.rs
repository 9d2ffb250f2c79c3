//! The device directory (RFC 9176 registrations) in memory: who is registered, at which
//! address, until when. Lookups by endpoint name, by location and by source address are O(1);
//! expiry is ordered by deadline.

use std::collections::BTreeSet;

use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use v6iot_sdk::uplink::Binding;

use crate::peer::Peer;

/// One registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Endpoint name.
    pub endpoint: String,
    /// Location id: the registration resource is `/rd/{location}`.
    pub location: u32,
    /// Current source address.
    pub address: SocketAddr,
    /// The edge's address it last reached (the source of commands to it), if known.
    pub local: Option<IpAddr>,
    /// Lifetime granted.
    pub lifetime: Duration,
    /// When it runs out.
    pub expires: Instant,
    /// Binding.
    pub binding: Binding,
    /// The device's resources in link format, as registered.
    pub links: String,
    /// When it last sent anything (for queue-mode listening windows).
    pub last_uplink: Instant,
}

impl Registration {
    /// Where the device is: its address and the edge's address it reached.
    pub fn peer(&self) -> Peer {
        Peer {
            remote: self.address,
            local: self.local,
        }
    }
}

/// What `register` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new registration.
    New,
    /// The endpoint was registered already; the old registration was replaced. The address it
    /// had, if different.
    Replaced {
        /// The previous address, when it changed.
        moved_from: Option<SocketAddr>,
    },
}

/// All registrations of one edge router.
///
/// The registrations sit in slots; the three indexes map endpoint, location and address to a
/// slot, so each lookup is one hash probe (the per-datagram `touch_by_address` included).
#[derive(Debug, Default)]
pub struct Directory {
    slots: Vec<Option<Registration>>,
    /// Empty slots, reused before the vector grows.
    free: Vec<usize>,
    by_endpoint: HashMap<String, usize>,
    by_location: HashMap<u32, usize>,
    by_address: HashMap<SocketAddr, usize>,
    expiry: BTreeSet<(Instant, u32)>,
    next_location: u32,
    /// Registrations in queue mode (`b=UQ`), kept at every change: the metrics read it each
    /// tick, and a scan of a million registrations there would stall the data path.
    queue_mode: usize,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.by_endpoint.len()
    }

    /// True when no device is registered.
    pub fn is_empty(&self) -> bool {
        self.by_endpoint.is_empty()
    }

    /// Registrations by binding: (always on `U`, queue mode `UQ`). O(1), no scan.
    pub fn count_by_binding(&self) -> (usize, usize) {
        let uq = self.queue_mode.min(self.len());
        (self.len() - uq, uq)
    }

    /// Every registration, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.slots.iter().flatten()
    }

    fn slot(&self, slot: usize) -> Option<&Registration> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, slot: usize) -> Option<&mut Registration> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Registers (or re-registers) `endpoint` at `peer`. Another registration at the same
    /// address keeps its entry but is no longer found by address (see
    /// [`evict_address`](Self::evict_address) for devices known by their address only).
    pub fn register(
        &mut self,
        now: Instant,
        endpoint: &str,
        peer: impl Into<Peer>,
        lifetime: Duration,
        binding: Binding,
        links: String,
    ) -> (u32, Registered) {
        let Peer {
            remote: address,
            local,
        } = peer.into();
        let previous = self.remove(endpoint);
        self.next_location = self.next_location.wrapping_add(1);
        while self.by_location.contains_key(&self.next_location) {
            self.next_location = self.next_location.wrapping_add(1);
        }
        let location = self.next_location;
        let expires = now + lifetime;
        let registration = Registration {
            endpoint: endpoint.to_owned(),
            location,
            address,
            local,
            lifetime,
            expires,
            binding,
            links,
            last_uplink: now,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(empty) = self.slots.get_mut(slot) {
                    *empty = Some(registration);
                }
                slot
            }
            None => {
                self.slots.push(Some(registration));
                self.slots.len() - 1
            }
        };
        self.expiry.insert((expires, location));
        if binding == Binding::UQ {
            self.queue_mode += 1;
        }
        self.by_location.insert(location, slot);
        self.by_address.insert(address, slot);
        self.by_endpoint.insert(endpoint.to_owned(), slot);
        let outcome = match previous {
            None => Registered::New,
            Some(p) => Registered::Replaced {
                moved_from: (p.address != address).then_some(p.address),
            },
        };
        (location, outcome)
    }

    /// Refreshes registration `location` (RFC 9176 §5.3.1): new lifetime if given, and the
    /// address it came from. Returns the registration, or `None` if unknown.
    pub fn update(
        &mut self,
        now: Instant,
        location: u32,
        peer: impl Into<Peer>,
        lifetime: Option<Duration>,
    ) -> Option<(&Registration, Option<SocketAddr>)> {
        let Peer {
            remote: address,
            local,
        } = peer.into();
        let slot = *self.by_location.get(&location)?;
        let reg = self.slots.get_mut(slot).and_then(Option::as_mut)?;
        reg.local = local;
        self.expiry.remove(&(reg.expires, location));
        if let Some(lt) = lifetime {
            reg.lifetime = lt;
        }
        reg.expires = now + reg.lifetime;
        reg.last_uplink = now;
        self.expiry.insert((reg.expires, location));
        let moved_from = (reg.address != address).then_some(reg.address);
        if let Some(old) = moved_from {
            self.by_address.remove(&old);
            reg.address = address;
            self.by_address.insert(address, slot);
        }
        Some((reg, moved_from))
    }

    /// Removes the registration at `location`.
    pub fn remove_location(&mut self, location: u32) -> Option<Registration> {
        let endpoint = self.endpoint_of_location(location)?.to_owned();
        self.remove(&endpoint)
    }

    /// The registration found at `address`, removed unless it is `endpoint`'s: a device known
    /// by its address only that registers from there takes the address over.
    pub fn evict_address(&mut self, address: SocketAddr, endpoint: &str) -> Option<Registration> {
        let other = self.endpoint_at(address).filter(|e| *e != endpoint)?;
        let other = other.to_owned();
        self.remove(&other)
    }

    /// Removes `endpoint`'s registration.
    pub fn remove(&mut self, endpoint: &str) -> Option<Registration> {
        let slot = self.by_endpoint.remove(endpoint)?;
        let reg = self.slots.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        if reg.binding == Binding::UQ {
            self.queue_mode = self.queue_mode.saturating_sub(1);
        }
        self.by_location.remove(&reg.location);
        if self.by_address.get(&reg.address) == Some(&slot) {
            self.by_address.remove(&reg.address);
        }
        self.expiry.remove(&(reg.expires, reg.location));
        Some(reg)
    }

    /// `endpoint`'s registration, noting the uplink time.
    pub fn touch(&mut self, now: Instant, endpoint: &str) -> Option<&Registration> {
        let slot = *self.by_endpoint.get(endpoint)?;
        let reg = self.slot_mut(slot)?;
        reg.last_uplink = now;
        Some(reg)
    }

    /// The endpoint registered at `location`.
    pub fn endpoint_of_location(&self, location: u32) -> Option<&str> {
        let slot = *self.by_location.get(&location)?;
        self.slot(slot).map(|r| r.endpoint.as_str())
    }

    /// Moves `endpoint`'s registration to `peer` (the device was authenticated there),
    /// noting the uplink time. Returns the old address, or `None` when the endpoint is not
    /// registered or already there. Another registration at the address keeps its entry but is
    /// no longer found by address.
    pub fn move_to(
        &mut self,
        now: Instant,
        endpoint: &str,
        peer: impl Into<Peer>,
    ) -> Option<SocketAddr> {
        let Peer {
            remote: address,
            local,
        } = peer.into();
        let slot = *self.by_endpoint.get(endpoint)?;
        let reg = self.slots.get_mut(slot).and_then(Option::as_mut)?;
        reg.last_uplink = now;
        reg.local = local;
        if reg.address == address {
            return None;
        }
        let old = std::mem::replace(&mut reg.address, address);
        if self.by_address.get(&old) == Some(&slot) {
            self.by_address.remove(&old);
        }
        self.by_address.insert(address, slot);
        Some(old)
    }

    /// The registration of the device sending from `address`, noting the uplink time. One
    /// hash probe: this runs for every datagram of a device known by its address.
    pub fn touch_by_address(&mut self, now: Instant, address: SocketAddr) -> Option<&Registration> {
        let slot = *self.by_address.get(&address)?;
        let reg = self.slot_mut(slot)?;
        reg.last_uplink = now;
        Some(reg)
    }

    /// The endpoint registered at `address`, if any.
    pub fn endpoint_at(&self, address: SocketAddr) -> Option<&str> {
        let slot = *self.by_address.get(&address)?;
        self.slot(slot).map(|r| r.endpoint.as_str())
    }

    /// The registration of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Registration> {
        let slot = *self.by_endpoint.get(endpoint)?;
        self.slot(slot)
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Removes and returns every registration whose lifetime ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Registration> {
        let mut gone = Vec::new();
        while let Some(&(t, location)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(reg) = self.remove_location(location) {
                gone.push(reg);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
    }

    /// Registers `ep` at `[::1]:port` at `now` for 60 s, with no links.
    fn register(
        d: &mut Directory,
        now: Instant,
        ep: &str,
        port: u16,
        binding: Binding,
    ) -> (u32, Registered) {
        d.register(
            now,
            ep,
            addr(port),
            Duration::from_secs(60),
            binding,
            String::new(),
        )
    }

    #[test]
    fn register_update_move_and_expire() {
        let mut d = Directory::new();
        let t0 = Instant::now();
        let (loc, how) = register(&mut d, t0, "a", 1, Binding::U);
        assert_eq!(how, Registered::New);
        assert_eq!(
            d.touch_by_address(t0, addr(1)).map(|r| r.endpoint.as_str()),
            Some("a")
        );
        let (_, moved) = d
            .update(t0 + Duration::from_secs(30), loc, addr(2), None)
            .unwrap();
        assert_eq!(moved, Some(addr(1)));
        assert!(d.touch_by_address(t0, addr(1)).is_none());
        assert!(
            d.expire(t0 + Duration::from_secs(60)).is_empty(),
            "update extended the lifetime"
        );
        assert_eq!(d.expire(t0 + Duration::from_secs(90)).len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn re_registration_replaces_and_address_takeover_evicts() {
        let mut d = Directory::new();
        let t0 = Instant::now();
        let (l1, _) = register(&mut d, t0, "a", 1, Binding::U);
        let (l2, how) = register(&mut d, t0, "a", 3, Binding::UQ);
        assert_ne!(l1, l2);
        assert_eq!(
            how,
            Registered::Replaced {
                moved_from: Some(addr(1))
            }
        );
        assert!(d.remove_location(l1).is_none());
        // Known by its address only, b takes a's address over.
        assert!(d.evict_address(addr(3), "a").is_none(), "a's own address");
        assert_eq!(d.evict_address(addr(3), "b").map(|r| r.location), Some(l2));
        register(&mut d, t0, "b", 3, Binding::U);
        assert!(d.get("a").is_none(), "b took over a's address");
        assert_eq!(d.len(), 1);
    }

    /// Slots are reused after a removal; every index finds the registration in its slot.
    #[test]
    fn slots_are_reused_and_every_index_stays_right() {
        let mut d = Directory::new();
        let t0 = Instant::now();
        let reg = |d: &mut Directory, ep: &str, port: u16| register(d, t0, ep, port, Binding::U).0;
        let la = reg(&mut d, "a", 1);
        let lb = reg(&mut d, "b", 2);
        assert_eq!(d.remove("a").map(|r| r.location), Some(la));
        assert!(d.touch_by_address(t0, addr(1)).is_none());
        let lc = reg(&mut d, "c", 3);
        assert_eq!(d.slots.len(), 2, "c took a's slot");
        assert_eq!(d.endpoint_at(addr(3)), Some("c"));
        assert_eq!(d.endpoint_of_location(lc), Some("c"));
        assert_eq!(d.endpoint_of_location(lb), Some("b"));
        assert!(d.endpoint_of_location(la).is_none());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(d.touch(t1, "c").map(|r| r.last_uplink), Some(t1));
        assert_eq!(
            d.touch_by_address(t1, addr(2)).map(|r| r.last_uplink),
            Some(t1)
        );

        // b moves onto c's address: the address finds b; c keeps its registration.
        assert_eq!(d.move_to(t1, "b", addr(3)), Some(addr(2)));
        assert_eq!(d.endpoint_at(addr(3)), Some("b"));
        assert!(d.endpoint_at(addr(2)).is_none());
        assert_eq!(d.remove("c").map(|r| r.address), Some(addr(3)));
        assert_eq!(
            d.endpoint_at(addr(3)),
            Some("b"),
            "c's removal left b's address"
        );
        assert_eq!(d.get("b").map(|r| r.address), Some(addr(3)));
        assert_eq!(d.expire(t0 + Duration::from_secs(60)).len(), 1);
        assert!(d.is_empty() && d.endpoint_at(addr(3)).is_none());
    }

    /// The binding counts the metrics read each tick agree with a scan of every registration
    /// after any sequence of registrations, re-registrations with the other binding, moves,
    /// removals and expiries.
    #[test]
    fn binding_counts_follow_every_change() {
        use proptest::prelude::*;
        let op = (0u8..5, 0u16..40, any::<bool>(), 1u64..100);
        proptest!(|(ops in proptest::collection::vec(op, 1..200))| {
            let mut d = Directory::new();
            let t0 = Instant::now();
            for (i, (kind, n, queue, secs)) in ops.into_iter().enumerate() {
                let now = t0 + Duration::from_secs(i as u64);
                let ep = format!("d{n}");
                match kind {
                    0 | 1 => {
                        let b = if queue { Binding::UQ } else { Binding::U };
                        d.register(now, &ep, addr(n), Duration::from_secs(secs), b, String::new());
                    }
                    2 => { d.remove(&ep); }
                    3 => { d.move_to(now, &ep, addr(n + 1000)); }
                    _ => { d.expire(now); }
                }
                let scan = d.iter().fold((0, 0), |(u, q), r| match r.binding {
                    Binding::U => (u + 1, q),
                    Binding::UQ => (u, q + 1),
                });
                prop_assert_eq!(d.count_by_binding(), scan);
            }
        });
        let mut d = Directory::new();
        let t0 = Instant::now();
        for (n, b) in [
            (1, Binding::UQ),
            (2, Binding::U),
            (3, Binding::UQ),
            (1, Binding::U),
        ] {
            register(&mut d, t0, &format!("d{n}"), n, b);
        }
        assert_eq!(d.count_by_binding(), (2, 1), "d1 re-registered always on");
        d.remove("d3");
        assert_eq!(d.count_by_binding(), (2, 0));
    }
}
