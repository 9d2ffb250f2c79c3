//! The deterministic layout of a run (sans-IO): which devices this shard runs, and for each its
//! id, source address, start time, report schedule and the seed of its CoAP endpoint — all
//! functions of the scenario, its seed and the device's number, so two runs with the same seed
//! are the same run, and the shards of a partition together are exactly the unsharded run.
//!
//! A shard's devices are numbered `0..len()` fleet by fleet ([`Plan::device`]); the collector
//! and the report use that number, the shard threads take every `threads`-th.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::scenario::{FleetSpec, Partition, Scenario, Sources};

/// One device of the scenario: its fleet and its number in that fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRef {
    /// Index of its fleet in the scenario.
    pub fleet: usize,
    /// Its number in the fleet (0-based; its serial is the fleet's `first` + this).
    pub n: u64,
}

/// How long after its start a device makes its first report at the earliest (time to
/// register first).
pub const REGISTER_GRACE: Duration = Duration::from_millis(200);

/// Which devices a shard runs and how each behaves.
#[derive(Debug, Clone)]
pub struct Plan {
    scenario: Scenario,
    partition: Partition,
    /// Per fleet: the index of its first device among this shard's.
    starts: Vec<u64>,
    len: u64,
}

impl Plan {
    /// The plan of `partition` of `scenario`.
    pub fn new(scenario: Scenario, partition: Partition) -> Plan {
        let mut starts = Vec::with_capacity(scenario.fleets.len());
        let mut len = 0;
        for f in &scenario.fleets {
            starts.push(len);
            len += partition.share(f.devices);
        }
        Plan {
            scenario,
            partition,
            starts,
            len,
        }
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The shard this plan is of.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// Devices this shard runs.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when this shard runs no device.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fleet of `d`.
    pub fn fleet(&self, d: DeviceRef) -> Option<&FleetSpec> {
        self.scenario.fleets.get(d.fleet)
    }

    /// This shard's `j`-th device.
    pub fn device(&self, j: u64) -> Option<DeviceRef> {
        let fleet = self.starts.partition_point(|&s| s <= j).checked_sub(1)?;
        let start = *self.starts.get(fleet)?;
        let f = self.scenario.fleets.get(fleet)?;
        let k = j - start;
        (k < self.partition.share(f.devices)).then(|| DeviceRef {
            fleet,
            n: self.partition.device(k),
        })
    }

    /// The number among this shard's devices of device `n` of fleet `fleet` (`None` when it
    /// is another shard's).
    pub fn local(&self, d: DeviceRef) -> Option<u64> {
        let f = self.scenario.fleets.get(d.fleet)?;
        if d.n >= f.devices || !self.partition.contains(d.n) {
            return None;
        }
        let k = d.n / u64::from(self.partition.count.max(1));
        Some(self.starts.get(d.fleet)? + k)
    }

    /// The device whose id is `id` (`{id_prefix}{serial:06}` of one of the fleets), if any.
    pub fn find_id(&self, id: &str) -> Option<DeviceRef> {
        for (fleet, f) in self.scenario.fleets.iter().enumerate() {
            let Some(digits) = id.strip_prefix(f.id_prefix.as_str()) else {
                continue;
            };
            if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(serial) = digits.parse::<u64>() else {
                continue;
            };
            if let Some(n) = serial.checked_sub(f.first)
                && n < f.devices
            {
                return Some(DeviceRef { fleet, n });
            }
        }
        None
    }

    /// The id of `d`.
    pub fn device_id(&self, d: DeviceRef) -> String {
        self.fleet(d).map(|f| f.device_id(d.n)).unwrap_or_default()
    }

    /// The source address of `d`, when its fleet sends from a pool.
    pub fn address(&self, d: DeviceRef) -> Option<Ipv6Addr> {
        let f = self.fleet(d)?;
        match f.sources {
            Sources::Sockets => None,
            Sources::Pool { prefix, offset } => {
                let iid = offset.checked_add(d.n)?.checked_add(1)?;
                Some(Ipv6Addr::from(
                    (u128::from(prefix.network()) & !u128::from(u64::MAX)) | u128::from(iid),
                ))
            }
        }
    }

    /// When `d` powers on and starts to register, from the start of the run: spread over the
    /// fleet's ramp in order of device number, each jittered within its share.
    pub fn start_offset(&self, d: DeviceRef) -> Duration {
        let Some(f) = self.fleet(d) else {
            return Duration::ZERO;
        };
        if f.ramp.is_zero() || f.devices == 0 {
            return Duration::ZERO;
        }
        let u = unit(mix(self.scenario.seed, d, Purpose::Ramp));
        f.ramp.mul_f64((d.n as f64 + u) / f.devices as f64)
    }

    /// When `d` makes its first report, from the start of the run (`None`: it never reports).
    /// The fleet's reports are spread evenly over one interval (golden-ratio phases, shifted by
    /// the seed), after the device's start and a moment to register.
    pub fn first_report(&self, d: DeviceRef) -> Option<Duration> {
        let f = self.fleet(d)?;
        let interval = f.interval()?;
        let shift = unit(mix(
            self.scenario.seed,
            DeviceRef {
                fleet: d.fleet,
                n: 0,
            },
            Purpose::Phase,
        ));
        let phase = interval.mul_f64((d.n as f64 * 0.618_033_988_75 + shift).fract());
        Some(self.start_offset(d) + REGISTER_GRACE + phase)
    }

    /// The seed of `d`'s CoAP endpoint (its message IDs, tokens, retransmission jitter).
    pub fn endpoint_seed(&self, d: DeviceRef) -> u64 {
        mix(self.scenario.seed, d, Purpose::Endpoint)
    }

    /// Reports `d` makes in the reporting period, by its schedule.
    pub fn scheduled_reports(&self, d: DeviceRef) -> u64 {
        let (Some(first), Some(interval)) = (
            self.first_report(d),
            self.fleet(d).and_then(|f| f.interval()),
        ) else {
            return 0;
        };
        let end = self.scenario.duration;
        if first >= end {
            return 0;
        }
        let span = (end - first).as_nanos();
        let step = interval.as_nanos().max(1);
        (span.div_ceil(step)) as u64
    }

    /// A fingerprint of the scenario's settings that shape the run (not file paths or
    /// addresses of the edge and broker): shards of one scenario share it, so `merge` can tell
    /// reports of different runs apart.
    pub fn scenario_fingerprint(&self) -> String {
        let s = &self.scenario;
        let mut text = format!(
            "seed={} duration={:?} drain={:?}",
            s.seed, s.duration, s.drain
        );
        for f in &s.fleets {
            text.push_str(&format!(
                "|fleet {} {} {} {} {} {:?} {:?} {} {:?} {:?} {} {:?} {:?}",
                f.name,
                f.devices,
                f.transport.name(),
                f.id_prefix,
                f.first,
                f.load,
                f.payload,
                f.oscore.is_some(),
                f.ramp,
                f.binding,
                f.queue,
                f.link,
                f.sources.network().map(|n| n.to_string())
            ));
        }
        for fault in &s.faults {
            text.push_str(&format!("|fault {:?} {:?}", fault.at, fault.kind));
        }
        format!("{:016x}", fnv1a(text.as_bytes()))
    }

    /// An order-independent digest of every device this shard runs (id, address, start, first
    /// report, interval): the XOR of the shards' digests is the unsharded run's.
    pub fn devices_digest(&self) -> u64 {
        let mut digest = 0u64;
        for j in 0..self.len {
            if let Some(d) = self.device(j) {
                digest ^= self.device_hash(d);
            }
        }
        digest
    }

    fn device_hash(&self, d: DeviceRef) -> u64 {
        let text = format!(
            "{} {:?} {:?} {:?} {:?}",
            self.device_id(d),
            self.address(d),
            self.start_offset(d),
            self.first_report(d),
            self.fleet(d).and_then(|f| f.interval())
        );
        fnv1a(text.as_bytes())
    }
}

/// What a random number is for (each draws from its own stream).
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Ramp = 1,
    Phase = 2,
    Endpoint = 3,
}

/// A well-mixed 64-bit value of (seed, device, purpose) (splitmix64 finalizer).
fn mix(seed: u64, d: DeviceRef, purpose: Purpose) -> u64 {
    let mut z = seed
        ^ (d.fleet as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ d.n.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ (purpose as u64).wrapping_mul(0x1656_67b1_9e37_79f9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in [0, 1) from `bits`.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, 64 bits: a stable hash for fingerprints (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FleetSpec;

    fn scenario() -> Scenario {
        let mut a = FleetSpec::new("a", 10, 5.0);
        a.ramp = Duration::from_secs(10);
        a.sources = Sources::Pool {
            prefix: "2001:db8:100::/64".parse().unwrap(),
            offset: 0,
        };
        let mut b = FleetSpec::new("b", 7, 7.0);
        b.id_prefix = "v".into();
        b.first = 100;
        let mut s = Scenario::single(a, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
        s.fleets.push(b);
        s.seed = 9;
        s
    }

    #[test]
    fn shards_partition_the_devices_and_their_digests_add_up() {
        let whole = Plan::new(scenario(), Partition::WHOLE);
        assert_eq!(whole.len(), 17);
        let all: Vec<DeviceRef> = (0..17).map(|j| whole.device(j).unwrap()).collect();
        assert_eq!(whole.device(17), None);
        let mut from_shards = Vec::new();
        let mut digest = 0;
        for index in 0..3 {
            let p = Plan::new(scenario(), Partition { index, count: 3 });
            for j in 0..p.len() {
                let d = p.device(j).unwrap();
                assert_eq!(p.local(d), Some(j));
                assert_eq!(whole.device_id(d), p.device_id(d));
                assert_eq!(whole.start_offset(d), p.start_offset(d));
                assert_eq!(whole.first_report(d), p.first_report(d));
                from_shards.push(d);
            }
            digest ^= p.devices_digest();
            assert_eq!(p.scenario_fingerprint(), whole.scenario_fingerprint());
        }
        from_shards.sort_by_key(|d| (d.fleet, d.n));
        assert_eq!(from_shards, all, "every device in exactly one shard");
        assert_eq!(digest, whole.devices_digest());
    }

    #[test]
    fn ids_addresses_and_times_follow_the_scenario_and_the_seed() {
        let p = Plan::new(scenario(), Partition::WHOLE);
        let d = DeviceRef { fleet: 1, n: 3 };
        assert_eq!(p.device_id(d), "v000103");
        assert_eq!(p.find_id("v000103"), Some(d));
        assert_eq!(p.find_id("v000099"), None, "below the fleet's first serial");
        assert_eq!(p.find_id("v000107"), None, "past its last");
        assert_eq!(p.find_id("sim000004"), Some(DeviceRef { fleet: 0, n: 4 }));
        assert_eq!(
            p.address(DeviceRef { fleet: 0, n: 4 }),
            Some("2001:db8:100::5".parse().unwrap())
        );
        assert_eq!(p.address(d), None, "fleet b has a socket per device");
        // Starts spread over the 10 s ramp in order, one per second's share.
        for n in 0..10 {
            let t = p.start_offset(DeviceRef { fleet: 0, n });
            assert!(
                t >= Duration::from_secs(n) && t < Duration::from_secs(n + 1),
                "{n}: {t:?}"
            );
        }
        assert_eq!(p.start_offset(d), Duration::ZERO, "no ramp in fleet b");
        // 7 devices at 7/s: one report a second each, first within 200 ms + 1 s.
        let first = p.first_report(d).unwrap();
        assert!(first >= REGISTER_GRACE && first < REGISTER_GRACE + Duration::from_secs(1));
        let expected = (0..)
            .take_while(|k| first + Duration::from_secs(*k) < Duration::from_secs(10))
            .count() as u64;
        assert_eq!(p.scheduled_reports(d), expected);
        assert!(expected >= 9);
        // Another seed, another run.
        let mut other = scenario();
        other.seed = 10;
        let q = Plan::new(other, Partition::WHOLE);
        assert_ne!(q.devices_digest(), p.devices_digest());
        assert_ne!(q.scenario_fingerprint(), p.scenario_fingerprint());
        assert_ne!(q.endpoint_seed(d), p.endpoint_seed(d));
        assert_eq!(
            Plan::new(scenario(), Partition::WHOLE).devices_digest(),
            p.devices_digest()
        );
    }
}
