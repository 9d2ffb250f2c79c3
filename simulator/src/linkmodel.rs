//! The link model (sans-IO): what the network between a device and the edge does to each
//! datagram, both ways — lose it, or deliver it after a delay — per fleet ([`LinkSpec`]), plus
//! the scenario's loss bursts (`link_loss` faults). Seeded: the same seed and the same order of
//! datagrams give the same fate to each.

use std::time::Duration;

use v6iot_sdk::time::Instant;

use crate::scenario::{Fault, FaultKind, LinkSpec, Scenario};

/// What becomes of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered now.
    Now,
    /// Delivered at this time.
    At(Instant),
    /// Lost.
    Lost,
}

/// A loss burst: from `from` until `until`, datagrams of `fleet` (every fleet: `None`) are lost
/// with probability `loss`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Burst {
    from: Instant,
    until: Instant,
    loss: f64,
    fleet: Option<usize>,
}

/// The link model of a shard's devices.
#[derive(Debug, Clone)]
pub struct LinkModel {
    fleets: Vec<LinkSpec>,
    bursts: Vec<Burst>,
    rng: u64,
    /// Whether any fleet or burst does anything (an ideal link skips the model).
    active: bool,
}

impl LinkModel {
    /// The model of `scenario`'s fleets and loss bursts, for a run that starts at `start`;
    /// `seed` feeds its random choices.
    pub fn new(scenario: &Scenario, start: Instant, seed: u64) -> LinkModel {
        let fleets: Vec<LinkSpec> = scenario.fleets.iter().map(|f| f.link).collect();
        let bursts: Vec<Burst> = scenario
            .faults
            .iter()
            .filter_map(|Fault { at, kind }| match kind {
                FaultKind::LinkLoss {
                    length,
                    loss,
                    fleet,
                } => Some(Burst {
                    from: start + *at,
                    until: start + *at + *length,
                    loss: *loss,
                    fleet: fleet.as_ref().and_then(|n| scenario.fleet_index(n)),
                }),
                _ => None,
            })
            .collect();
        let active = !bursts.is_empty() || fleets.iter().any(|l| !l.is_ideal());
        LinkModel {
            fleets,
            bursts,
            rng: seed ^ 0x5851_f42d_4c95_7f2d,
            active,
        }
    }

    /// True when the model never loses or delays anything.
    pub fn is_ideal(&self) -> bool {
        !self.active
    }

    /// The fate of a datagram of `len` bytes to or from a device of fleet `fleet` at `now`.
    pub fn judge(&mut self, now: Instant, fleet: usize, len: usize) -> Verdict {
        if !self.active {
            return Verdict::Now;
        }
        let spec = self.fleets.get(fleet).copied().unwrap_or_default();
        let mut loss = spec.loss;
        for b in &self.bursts {
            if now >= b.from && now < b.until && b.fleet.is_none_or(|f| f == fleet) {
                loss = loss.max(b.loss);
            }
        }
        if loss > 0.0 && self.uniform() < loss {
            return Verdict::Lost;
        }
        let mut delay = spec.latency;
        if !spec.jitter.is_zero() {
            delay += spec.jitter.mul_f64(self.uniform());
        }
        if spec.bandwidth_bps > 0 {
            delay += Duration::from_secs_f64(len as f64 * 8.0 / spec.bandwidth_bps as f64);
        }
        if delay.is_zero() {
            Verdict::Now
        } else {
            Verdict::At(now + delay)
        }
    }

    /// A uniform value in [0, 1) (xorshift64*).
    fn uniform(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FleetSpec;

    fn scenario() -> Scenario {
        let mut a = FleetSpec::new("a", 10, 1.0);
        a.link.loss = 0.25;
        let mut b = FleetSpec::new("b", 10, 1.0);
        b.link.latency = Duration::from_millis(20);
        b.link.jitter = Duration::from_millis(10);
        b.link.bandwidth_bps = 8000;
        let mut s = Scenario::single(a, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
        s.fleets.push(b);
        s.faults.push(Fault {
            at: Duration::from_secs(5),
            kind: FaultKind::LinkLoss {
                length: Duration::from_secs(2),
                loss: 1.0,
                fleet: Some("b".into()),
            },
        });
        s
    }

    #[test]
    fn losses_delays_and_bursts_as_configured_and_seeded() {
        let t0 = Instant::ZERO;
        let mut m = LinkModel::new(&scenario(), t0, 3);
        let lost = (0..10_000)
            .filter(|_| m.judge(t0, 0, 100) == Verdict::Lost)
            .count();
        assert!((2300..2700).contains(&lost), "about a quarter: {lost}");
        // Fleet b: 20 ms + up to 10 ms + 100 bytes at 8 kbit/s (100 ms), never lost outside
        // the burst.
        for _ in 0..1000 {
            let Verdict::At(at) = m.judge(t0, 1, 100) else {
                panic!("fleet b delays")
            };
            let d = at - t0;
            assert!(
                d >= Duration::from_millis(120) && d < Duration::from_millis(130),
                "{d:?}"
            );
        }
        // The burst: everything of fleet b lost from 5 s to 7 s, fleet a as usual.
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!((0..100).all(|_| m.judge(at(5), 1, 10) == Verdict::Lost));
        assert!((0..100).all(|_| m.judge(at(6), 1, 10) == Verdict::Lost));
        assert!((0..100).all(|_| m.judge(at(7), 1, 10) != Verdict::Lost));
        assert!((0..100).any(|_| m.judge(at(6), 0, 10) != Verdict::Lost));
        // The same seed, the same fates.
        let mut x = LinkModel::new(&scenario(), t0, 3);
        let mut y = LinkModel::new(&scenario(), t0, 3);
        let fx: Vec<Verdict> = (0..200).map(|_| x.judge(t0, 0, 10)).collect();
        let fy: Vec<Verdict> = (0..200).map(|_| y.judge(t0, 0, 10)).collect();
        assert_eq!(fx, fy);
    }

    #[test]
    fn an_ideal_link_is_skipped() {
        let s = Scenario::single(
            FleetSpec::new("a", 1, 1.0),
            "[::1]:5683".parse().unwrap(),
            "mqtt://[::1]:1883",
        );
        let mut m = LinkModel::new(&s, Instant::ZERO, 1);
        assert!(m.is_ideal());
        assert_eq!(m.judge(Instant::ZERO, 0, 1000), Verdict::Now);
    }
}
