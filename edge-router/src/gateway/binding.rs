//! Address binding: where each authenticated device is (its address and port, and the edge's
//! address it reached), and the rules for when that changes.
//!
//! The edge sends a device's requests (commands, observations) where the device is bound, and
//! only there. A binding changes only on fresh evidence from the device itself:
//!
//! - a verified request whose Partial IV is **not above** the highest the device sent so far
//!   never binds or moves it (a withheld, older-but-unseen message replayed from elsewhere:
//!   [`Decision::Stale`]); from the bound address it is served as usual;
//! - a device's **first** binding needs nothing more, unless another device is bound at the
//!   address;
//! - a **move** (a fresh request from another address), and a first binding at an address bound
//!   to another device (NAT port reuse, or on-link spoofing by a device with keys of its own),
//!   are first confirmed by an Echo round trip (RFC 9175 §2): the request is answered with a
//!   protected 4.01 carrying an Echo value ([`Decision::Challenge`]); the device repeats it with
//!   the value, and the repeat arriving from the new address — fresh, verified, with the value
//!   this device was given for this address — proves the device is reachable there
//!   ([`Decision::Moved`]). Meanwhile commands still go to the old address.
//!
//! Two devices verified at one address are a conflict, resolved explicitly: the newer device
//! takes the address only once confirmed there, and the device bound there before loses its
//! binding (it is unreachable there: the edge sends it nothing until it is verified again, at
//! a fresh address). Both steps are audited by the gateway, naming both devices.
//!
//! The Echo value is only ever sent inside OSCORE (encrypted, integrity-protected): it needs to
//! be unique, not secret. It is a per-gateway counter mixed with a random seed.
//!
//! Bounds: one binding and at most one open challenge per device with a context (the keyring's
//! size); challenges expire after the exchange lifetime.

use foldhash::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::peer::Peer;

/// What a fresh or stale verified request of a device does to its binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Bound there already: serve it. `local_changed`: the device now reaches another of the
    /// edge's addresses (from the same address and port); commands leave from that one now.
    Stay {
        /// The edge's address changed.
        local_changed: bool,
    },
    /// The device's first binding: serve it.
    Bound,
    /// A confirmed move (or first binding at an address another device held): serve it.
    Moved {
        /// Where it was bound before (`None`: nowhere).
        from: Option<Peer>,
        /// The device that was bound at the new address and no longer is.
        displaced: Option<String>,
    },
    /// Not confirmed yet: answer with a protected 4.01 carrying this Echo value; serve nothing.
    Challenge {
        /// The Echo option's value.
        echo: [u8; 8],
        /// The device bound at the address (a conflict).
        holder: Option<String>,
    },
    /// Not above the device's newest Partial IV, from an address it is not bound to: drop it.
    Stale,
}

/// An Echo value handed to a device for one address.
#[derive(Debug)]
struct Challenge {
    remote: SocketAddr,
    echo: [u8; 8],
    expires: Instant,
}

/// Devices by address and addresses by device, with the open Echo challenges.
#[derive(Debug)]
pub(super) struct Bindings {
    by_device: HashMap<String, Peer>,
    by_address: HashMap<SocketAddr, String>,
    challenges: HashMap<String, Challenge>,
    next_echo: u64,
    lifetime: Duration,
}

impl Bindings {
    /// No bindings; Echo values from `seed`; challenges live `lifetime`.
    pub(super) fn new(seed: u64, lifetime: Duration) -> Bindings {
        Bindings {
            by_device: HashMap::default(),
            by_address: HashMap::default(),
            challenges: HashMap::default(),
            next_echo: seed,
            lifetime,
        }
    }

    /// Decides what a verified request of `device` from `peer` does (see the module docs).
    /// `fresh`: its Partial IV is above every one the device sent before. `echo`: the Echo
    /// option it carried.
    pub(super) fn decide(
        &mut self,
        now: Instant,
        device: &str,
        peer: Peer,
        fresh: bool,
        echo: Option<&[u8]>,
    ) -> Decision {
        let current = self.by_device.get(device).copied();
        if let Some(bound) = current.filter(|b| b.remote == peer.remote) {
            let local_changed = fresh && bound.local != peer.local;
            if local_changed {
                self.by_device.insert(device.to_owned(), peer);
            }
            return Decision::Stay { local_changed };
        }
        if !fresh {
            return Decision::Stale;
        }
        let holder = self
            .by_address
            .get(&peer.remote)
            .filter(|d| *d != device)
            .cloned();
        if current.is_none() && holder.is_none() {
            self.bind(device, peer);
            return Decision::Bound;
        }
        let answered = self.challenges.get(device).is_some_and(|c| {
            c.remote == peer.remote && c.expires > now && echo == Some(&c.echo[..])
        });
        if answered {
            self.challenges.remove(device);
            if let Some(holder) = &holder {
                self.by_device.remove(holder);
            }
            self.bind(device, peer);
            return Decision::Moved {
                from: current,
                displaced: holder,
            };
        }
        self.next_echo = self.next_echo.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let echo = self.next_echo.to_be_bytes();
        self.challenges.insert(
            device.to_owned(),
            Challenge {
                remote: peer.remote,
                echo,
                expires: now + self.lifetime,
            },
        );
        Decision::Challenge { echo, holder }
    }

    /// Binds `device` to `peer`, unbinding its old address.
    fn bind(&mut self, device: &str, peer: Peer) {
        if let Some(old) = self.by_device.insert(device.to_owned(), peer)
            && self
                .by_address
                .get(&old.remote)
                .is_some_and(|d| d == device)
        {
            self.by_address.remove(&old.remote);
        }
        self.by_address.insert(peer.remote, device.to_owned());
    }

    /// Where `device` is bound.
    pub(super) fn get(&self, device: &str) -> Option<Peer> {
        self.by_device.get(device).copied()
    }

    /// Forgets `device`'s binding and challenge.
    pub(super) fn remove(&mut self, device: &str) {
        self.challenges.remove(device);
        if let Some(a) = self.by_device.remove(device)
            && self.by_address.get(&a.remote).is_some_and(|d| d == device)
        {
            self.by_address.remove(&a.remote);
        }
    }

    /// Devices bound.
    pub(super) fn len(&self) -> usize {
        self.by_device.len()
    }

    /// Open challenges.
    pub(super) fn challenges(&self) -> usize {
        self.challenges.len()
    }

    /// Drops expired challenges.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.challenges.retain(|_, c| c.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Peer {
        Peer::from(s.parse::<SocketAddr>().unwrap())
    }

    fn echo_of(d: &Decision) -> [u8; 8] {
        match d {
            Decision::Challenge { echo, .. } => *echo,
            other => panic!("not a challenge: {other:?}"),
        }
    }

    #[test]
    fn binds_then_moves_only_after_the_echo_from_the_new_address() {
        let now = Instant::now();
        let (a, b, c) = (at("[::1]:1000"), at("127.0.0.1:2000"), at("[::1]:3000"));
        let mut s = Bindings::new(7, Duration::from_secs(247));
        assert_eq!(s.decide(now, "d1", a, true, None), Decision::Bound);
        assert_eq!(
            s.decide(now, "d1", a, false, None),
            Decision::Stay {
                local_changed: false
            }
        );
        // Older than the newest, from elsewhere: nothing moves, nothing is asked.
        assert_eq!(s.decide(now, "d1", b, false, None), Decision::Stale);
        assert_eq!(s.challenges(), 0);
        // Fresh from b: challenged; still bound at a.
        let echo = echo_of(&s.decide(now, "d1", b, true, None));
        assert_eq!(s.get("d1"), Some(a));
        // The value for b does not move it to c; c gets a value of its own, b's is gone.
        let echo_c = echo_of(&s.decide(now, "d1", c, true, Some(&echo)));
        assert_ne!(echo, echo_c);
        assert!(matches!(
            s.decide(now, "d1", b, true, Some(&echo)),
            Decision::Challenge { .. }
        ));
        let echo = echo_of(&s.decide(now, "d1", b, true, None));
        // A stale request with the right value moves nothing either.
        assert_eq!(s.decide(now, "d1", b, false, Some(&echo)), Decision::Stale);
        assert_eq!(
            s.decide(now, "d1", b, true, Some(&echo)),
            Decision::Moved {
                from: Some(a),
                displaced: None
            }
        );
        assert_eq!(s.get("d1"), Some(b));
        assert_eq!(s.challenges(), 0);
        // A used value is no use again.
        let back = s.decide(now, "d1", a, true, Some(&echo));
        assert!(matches!(back, Decision::Challenge { holder: None, .. }));
        // An expired one neither.
        let echo = echo_of(&back);
        let later = now + Duration::from_secs(248);
        assert!(matches!(
            s.decide(later, "d1", a, true, Some(&echo)),
            Decision::Challenge { .. }
        ));
        s.sweep(later + Duration::from_secs(248));
        assert_eq!(s.challenges(), 0);
    }

    #[test]
    fn another_device_at_a_bound_address_is_a_conflict_resolved_by_the_echo() {
        let now = Instant::now();
        let p = at("[2001:db8::7]:4000");
        let mut s = Bindings::new(0, Duration::from_secs(247));
        assert_eq!(s.decide(now, "d1", p, true, None), Decision::Bound);
        let d = s.decide(now, "d2", p, true, None);
        let Decision::Challenge { echo, holder } = d else {
            panic!("{d:?}")
        };
        assert_eq!(holder.as_deref(), Some("d1"));
        assert_eq!(s.get("d1"), Some(p), "d1 keeps the address meanwhile");
        assert_eq!(s.get("d2"), None);
        assert_eq!(
            s.decide(now, "d2", p, true, Some(&echo)),
            Decision::Moved {
                from: None,
                displaced: Some("d1".into())
            }
        );
        assert_eq!(s.get("d2"), Some(p));
        assert_eq!(s.get("d1"), None, "d1 is unreachable there");
        assert_eq!(s.len(), 1);
        // d1, verified again at a fresh address, is bound there at once.
        let q = at("[2001:db8::8]:4000");
        assert_eq!(s.decide(now, "d1", q, true, None), Decision::Bound);
        // but a stale request of d1 binds it nowhere
        s.remove("d1");
        assert_eq!(s.decide(now, "d1", q, false, None), Decision::Stale);
    }

    #[test]
    fn a_new_local_address_from_the_same_source_follows_fresh_requests_only() {
        let now = Instant::now();
        let remote: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let via = |l: &str| Peer::via(remote, l.parse().unwrap());
        let mut s = Bindings::new(0, Duration::from_secs(247));
        assert_eq!(
            s.decide(now, "d1", via("fd00::1"), true, None),
            Decision::Bound
        );
        assert_eq!(
            s.decide(now, "d1", via("2001:db8:1::1"), false, None),
            Decision::Stay {
                local_changed: false
            }
        );
        assert_eq!(s.get("d1"), Some(via("fd00::1")));
        assert_eq!(
            s.decide(now, "d1", via("2001:db8:1::1"), true, None),
            Decision::Stay {
                local_changed: true
            }
        );
        assert_eq!(s.get("d1"), Some(via("2001:db8:1::1")));
    }
}
