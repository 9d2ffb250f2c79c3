//! Rate limits and quarantine, sans-IO: token buckets per source network and per device, and a
//! quarantine for sources that keep failing authentication.
//!
//! # What is limited, and when
//!
//! | key | checked | bucket | why |
//! |---|---|---|---|
//! | source network: the /64 of an IPv6 source, the whole address of an IPv4 one | every datagram, **before** any cryptography | `per_source` | one host (or one attacker's /64, which it controls whole) cannot eat the CPU of the OSCORE checks |
//! | device identity | after OSCORE verification | `per_device` | one device, however many addresses it uses, cannot flood the outbox |
//!
//! A source that fails authentication `failures_to_quarantine` times within `failure_window`
//! is quarantined for `quarantine`: everything it sends is dropped before parsing until the time
//! is up. Other sources and devices are unaffected: each has its own bucket.
//!
//! # Bounded memory
//!
//! Source networks are attacker-chosen (an IPv6 attacker has 2^64 /64s), so the tables are
//! bounded: at most `max_tracked` sources and as many devices. Entries whose bucket is full
//! again and which are not quarantined carry no information and are swept out
//! ([`Limits::handle_timeout`]). When the table is full of live entries, new sources share one
//! overflow bucket of the per-source size: a spoofing flood then limits itself, while the sources
//! already tracked keep their own buckets.
//!
//! # The I/O boundary
//!
//! Nothing here reads a clock: every call takes `now`. The caller (the server loop) decides what
//! to do with a [`Verdict`]: drop silently (a response would amplify a flood) and count it.

use foldhash::{HashMap, HashMapExt as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket's size: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Largest number of tokens (the burst allowed after idling).
    pub burst: f64,
}

/// The limits' configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Per source network (IPv6 /64, IPv4 address).
    pub per_source: Rate,
    /// Per authenticated device.
    pub per_device: Rate,
    /// Authentication failures within `failure_window` that quarantine a source.
    pub failures_to_quarantine: u32,
    /// The window in which failures are counted.
    pub failure_window: Duration,
    /// How long a quarantine lasts.
    pub quarantine: Duration,
    /// Largest number of sources (and of devices) tracked at once.
    pub max_tracked: usize,
}

/// The default of [`LimitsConfig::max_tracked`].
pub(crate) const DEFAULT_MAX_TRACKED: usize = 100_000;

impl Default for LimitsConfig {
    /// The limits of the default configuration (`[security]` in
    /// [`crate::config::SecuritySection`], where the numbers and their reasons are).
    fn default() -> Self {
        crate::config::SecuritySection::default().limits()
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// The source network is over its rate.
    SourceLimited,
    /// The device is over its rate.
    DeviceLimited,
    /// The source is quarantined until the given time.
    Quarantined {
        /// When the quarantine ends.
        until: Instant,
    },
}

/// A source network: the /64 of an IPv6 address, or an IPv4 address (IPv4-mapped IPv6 addresses
/// count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceNet {
    /// The upper 64 bits of an IPv6 source.
    V6Slash64(u64),
    /// An IPv4 source.
    V4(u32),
}

impl SourceNet {
    /// The network a source address belongs to.
    pub fn of(addr: IpAddr) -> SourceNet {
        match addr {
            IpAddr::V4(v4) => SourceNet::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceNet::V4(u32::from(v4)),
                None => SourceNet::V6Slash64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for SourceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SourceNet::V4(v4) => write!(f, "{}", std::net::Ipv4Addr::from(v4)),
            SourceNet::V6Slash64(hi) => {
                write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(hi) << 64))
            }
        }
    }
}

/// A token bucket, refilled lazily on use.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Full again by `now`: it remembers nothing a fresh bucket would not.
    fn is_idle(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

#[derive(Debug, Clone)]
struct SourceState {
    bucket: Bucket,
    /// Failures counted since `window_start`.
    failures: u32,
    window_start: Instant,
    quarantined_until: Option<Instant>,
}

/// A quarantine that just began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineStarted {
    /// The quarantined network.
    pub source: SourceNet,
    /// When it ends.
    pub until: Instant,
    /// Failures that led to it.
    pub failures: u32,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Datagrams dropped by a source bucket (including the overflow bucket).
    pub source_limited: u64,
    /// Requests dropped by a device bucket.
    pub device_limited: u64,
    /// Datagrams dropped because their source is quarantined.
    pub quarantined_drops: u64,
    /// Quarantines begun.
    pub quarantines: u64,
    /// Sources currently tracked.
    pub tracked_sources: u64,
    /// Datagrams that went through the overflow bucket because the source table was full.
    pub overflowed: u64,
}

/// Token buckets per source network and per device, and the quarantine.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    sources: HashMap<SourceNet, SourceState>,
    devices: HashMap<String, Bucket>,
    /// Shared by new sources while the table is full; made on first use.
    overflow: Option<Bucket>,
    stats: LimitStats,
}

impl Limits {
    /// Empty tables.
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            sources: HashMap::new(),
            devices: HashMap::new(),
            overflow: None,
            stats: LimitStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Takes new rates, bursts and quarantine settings (a reload); the buckets and
    /// quarantines in force keep their state, the new rates apply from the next check.
    pub fn set_config(&mut self, config: LimitsConfig) {
        self.config = config;
    }

    /// Counters.
    pub fn stats(&self) -> LimitStats {
        LimitStats {
            tracked_sources: self.sources.len() as u64,
            ..self.stats
        }
    }

    /// Whether a source is quarantined at `now`.
    pub fn is_quarantined(&self, now: Instant, source: IpAddr) -> bool {
        self.sources
            .get(&SourceNet::of(source))
            .and_then(|s| s.quarantined_until)
            .is_some_and(|until| until > now)
    }

    /// Checks a datagram from `source` before anything else is done with it: quarantine, then
    /// the source network's bucket. Takes a token when allowed.
    pub fn check_source(&mut self, now: Instant, source: IpAddr) -> Verdict {
        let net = SourceNet::of(source);
        let rate = self.config.per_source;
        let full = self.sources.len() >= self.config.max_tracked;
        let state = match self.sources.get_mut(&net) {
            Some(state) => state,
            None if full => {
                self.stats.overflowed += 1;
                let overflow = self.overflow.get_or_insert_with(|| Bucket::full(rate, now));
                return if overflow.take(rate, now) {
                    Verdict::Allow
                } else {
                    self.stats.source_limited += 1;
                    Verdict::SourceLimited
                };
            }
            None => self.sources.entry(net).or_insert_with(|| SourceState {
                bucket: Bucket::full(rate, now),
                failures: 0,
                window_start: now,
                quarantined_until: None,
            }),
        };
        if let Some(until) = state.quarantined_until {
            if until > now {
                self.stats.quarantined_drops += 1;
                return Verdict::Quarantined { until };
            }
            state.quarantined_until = None;
            state.failures = 0;
            state.window_start = now;
        }
        if state.bucket.take(rate, now) {
            Verdict::Allow
        } else {
            self.stats.source_limited += 1;
            Verdict::SourceLimited
        }
    }

    /// Checks a request from an authenticated device. Takes a token when allowed.
    pub fn check_device(&mut self, now: Instant, device: &str) -> Verdict {
        let rate = self.config.per_device;
        if let Some(bucket) = self.devices.get_mut(device) {
            return if bucket.take(rate, now) {
                Verdict::Allow
            } else {
                self.stats.device_limited += 1;
                Verdict::DeviceLimited
            };
        }
        if self.devices.len() >= self.config.max_tracked {
            self.sweep_devices(now);
        }
        let mut bucket = Bucket::full(rate, now);
        let allowed = bucket.take(rate, now);
        if self.devices.len() < self.config.max_tracked {
            self.devices.insert(device.to_owned(), bucket);
        }
        if allowed {
            Verdict::Allow
        } else {
            self.stats.device_limited += 1;
            Verdict::DeviceLimited
        }
    }

    /// Counts an authentication failure from `source`; returns the quarantine it starts, if any.
    pub fn auth_failure(&mut self, now: Instant, source: IpAddr) -> Option<QuarantineStarted> {
        let net = SourceNet::of(source);
        let full = self.sources.len() >= self.config.max_tracked;
        let state = match self.sources.get_mut(&net) {
            Some(state) => state,
            // Nowhere to remember it: the overflow bucket already limits such sources.
            None if full => return None,
            None => self.sources.entry(net).or_insert_with(|| SourceState {
                bucket: Bucket::full(self.config.per_source, now),
                failures: 0,
                window_start: now,
                quarantined_until: None,
            }),
        };
        if state.quarantined_until.is_some_and(|until| until > now) {
            return None;
        }
        if now.saturating_duration_since(state.window_start) > self.config.failure_window {
            state.failures = 0;
            state.window_start = now;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures < self.config.failures_to_quarantine {
            return None;
        }
        let until = now + self.config.quarantine;
        state.quarantined_until = Some(until);
        let failures = state.failures;
        self.stats.quarantines += 1;
        Some(QuarantineStarted {
            source: net,
            until,
            failures,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run, asked at `now`: a sweep
    /// every few seconds while anything is tracked.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        (!self.sources.is_empty() || !self.devices.is_empty()).then(|| now + Duration::from_secs(5))
    }

    /// Forgets entries that carry no information any more (full buckets, no quarantine, no
    /// recent failures).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sweep_sources(now);
        self.sweep_devices(now);
    }

    fn sweep_sources(&mut self, now: Instant) {
        let config = &self.config;
        self.sources.retain(|_, s| {
            let quarantined = s.quarantined_until.is_some_and(|until| until > now);
            let failing = s.failures > 0
                && now.saturating_duration_since(s.window_start) <= config.failure_window;
            quarantined || failing || !s.bucket.is_idle(config.per_source, now)
        });
    }

    fn sweep_devices(&mut self, now: Instant) {
        let rate = self.config.per_device;
        self.devices.retain(|_, b| !b.is_idle(rate, now));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> LimitsConfig {
        LimitsConfig {
            per_source: Rate {
                per_second: 10.0,
                burst: 5.0,
            },
            per_device: Rate {
                per_second: 2.0,
                burst: 3.0,
            },
            failures_to_quarantine: 3,
            failure_window: Duration::from_secs(10),
            quarantine: Duration::from_secs(60),
            max_tracked: 4,
        }
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        let a = v6("2001:db8:1::1");
        for _ in 0..5 {
            assert_eq!(l.check_source(t0, a), Verdict::Allow);
        }
        assert_eq!(l.check_source(t0, a), Verdict::SourceLimited);
        // 10/s: after 100 ms one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check_source(t1, a), Verdict::Allow);
        assert_eq!(l.check_source(t1, a), Verdict::SourceLimited);
        assert_eq!(l.stats().source_limited, 2);
    }

    #[test]
    fn one_slash64_shares_a_bucket_other_networks_do_not() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for i in 0..5 {
            let a = v6(&format!("2001:db8:1::{:x}", i + 1));
            assert_eq!(l.check_source(t0, a), Verdict::Allow);
        }
        // Another host of the same /64: same bucket, empty.
        assert_eq!(
            l.check_source(t0, v6("2001:db8:1::ffff")),
            Verdict::SourceLimited
        );
        // Another /64 and an IPv4 host are unaffected.
        assert_eq!(l.check_source(t0, v6("2001:db8:2::1")), Verdict::Allow);
        assert_eq!(l.check_source(t0, v6("192.0.2.1")), Verdict::Allow);
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        assert_eq!(
            SourceNet::of(v6("::ffff:192.0.2.7")),
            SourceNet::of(v6("192.0.2.7"))
        );
        assert_ne!(
            SourceNet::of(v6("192.0.2.7")),
            SourceNet::of(v6("192.0.2.8"))
        );
        assert_eq!(
            SourceNet::of(v6("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn device_bucket_is_per_identity() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for _ in 0..3 {
            assert_eq!(l.check_device(t0, "dev-1"), Verdict::Allow);
        }
        assert_eq!(l.check_device(t0, "dev-1"), Verdict::DeviceLimited);
        assert_eq!(l.check_device(t0, "dev-2"), Verdict::Allow);
        assert_eq!(
            l.check_device(t0 + Duration::from_millis(500), "dev-1"),
            Verdict::Allow
        );
        assert_eq!(l.stats().device_limited, 1);
    }

    #[test]
    fn repeated_failures_quarantine_the_source_until_time_is_up() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        let bad = v6("2001:db8:bad::1");
        let good = v6("2001:db8:600d::1");
        assert_eq!(l.auth_failure(t0, bad), None);
        assert_eq!(l.auth_failure(t0, bad), None);
        let q = l.auth_failure(t0, bad).unwrap();
        assert_eq!(q.until, t0 + Duration::from_secs(60));
        assert_eq!(q.failures, 3);
        assert!(matches!(
            l.check_source(t0 + Duration::from_secs(1), bad),
            Verdict::Quarantined { .. }
        ));
        // Another host of the same /64 is quarantined too; another network is not.
        assert!(l.is_quarantined(t0, v6("2001:db8:bad::2")));
        assert_eq!(l.check_source(t0, good), Verdict::Allow);
        // Time up: allowed again, failures forgotten.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.check_source(later, bad), Verdict::Allow);
        assert_eq!(l.auth_failure(later, bad), None);
        assert_eq!(l.stats().quarantines, 1);
        assert_eq!(l.stats().quarantined_drops, 1);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_quarantine() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        let a = v6("2001:db8:1::1");
        for i in 0..10u64 {
            assert_eq!(l.auth_failure(t0 + Duration::from_secs(6 * i), a), None);
        }
    }

    #[test]
    fn full_table_sends_new_sources_to_the_overflow_bucket_and_sweeps_idle_ones() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for i in 0..4 {
            let a = v6(&format!("2001:db8:{:x}::1", i + 1));
            assert_eq!(l.check_source(t0, a), Verdict::Allow);
        }
        assert_eq!(l.stats().tracked_sources, 4);
        // The spoofing flood: new /64s share one bucket of burst 5.
        let verdicts: Vec<_> = (0..8)
            .map(|i| l.check_source(t0, v6(&format!("2001:db8:f{:03x}::1", i))))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Allow).count(), 5);
        assert_eq!(l.stats().overflowed, 8);
        assert_eq!(l.stats().tracked_sources, 4);
        // The tracked sources kept their own buckets.
        assert_eq!(l.check_source(t0, v6("2001:db8:1::1")), Verdict::Allow);
        // One second later every bucket is full again: the sweep forgets them all.
        l.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(l.stats().tracked_sources, 0);
    }

    #[test]
    fn the_sweep_keeps_quarantined_and_failing_sources() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        let q = v6("2001:db8:1::1");
        let f = v6("2001:db8:2::1");
        for _ in 0..3 {
            l.auth_failure(t0, q);
        }
        l.auth_failure(t0, f);
        l.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(l.stats().tracked_sources, 2);
        assert!(l.is_quarantined(t0 + Duration::from_secs(5), q));
        l.handle_timeout(t0 + Duration::from_secs(61));
        assert_eq!(l.stats().tracked_sources, 0);
    }

    proptest! {
        /// Over any schedule, a source gets at most burst + rate × elapsed datagrams through.
        #[test]
        fn never_more_than_burst_plus_rate(gaps in proptest::collection::vec(0u64..50, 1..400)) {
            let t0 = Instant::now();
            let mut l = Limits::new(small());
            let a = v6("2001:db8:1::1");
            let mut now = t0;
            let mut allowed = 0u32;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if l.check_source(now, a) == Verdict::Allow {
                    allowed += 1;
                }
            }
            let bound = 5.0 + 10.0 * now.duration_since(t0).as_secs_f64();
            prop_assert!(f64::from(allowed) <= bound + 1e-9, "{allowed} > {bound}");
        }

        /// The tables never grow past `max_tracked`, whatever the sources.
        #[test]
        fn tables_stay_bounded(srcs in proptest::collection::vec(any::<u128>(), 1..200)) {
            let t0 = Instant::now();
            let mut l = Limits::new(small());
            for (i, s) in srcs.iter().enumerate() {
                let a = IpAddr::V6(std::net::Ipv6Addr::from(*s));
                let now = t0 + Duration::from_millis(i as u64);
                l.check_source(now, a);
                l.auth_failure(now, a);
                l.check_device(now, &format!("d{}", s % 17));
                prop_assert!(l.stats().tracked_sources <= 4);
                prop_assert!(l.devices.len() <= 4);
            }
        }
    }
}
