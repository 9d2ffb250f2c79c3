//! Rate limits and quarantine, sans-IO: which budget each datagram draws from, token buckets
//! per source network and per device, and the quarantine of a kid that keeps failing
//! verification.
//!
//! # Three lanes
//!
//! Before any cryptography the gateway looks at a datagram ([`super::peek`]) and puts it in a
//! lane. What an attacker sends without a device's key can only drain the lane it lands in,
//! never another:
//!
//! | lane | what | budget, checked before verification | after verification |
//! |---|---|---|---|
//! | kid | a request naming the kid of an active device | none while the kid is in good standing; its refusals before verification (replays, failed verifications) draw from a bucket of the kid's (`per_device`), and while that is empty its requests from anywhere but the address the device was last verified at are dropped unread (`kid_limited`); while the kid is quarantined, refused unless from that address, and from there at most `per_device` per second ([`Limits::check_kid`]) | the device's bucket `per_device` (over it: protected 5.03 + Max-Age) |
//! | expected | a response whose token is one of the edge's requests in flight, an empty ACK to a Confirmable request the edge sent (tokens are 8 random bytes; see `ingress::downlink`) | none: the edge asked for it | verified against the request's context |
//! | unauthenticated | everything else: plain requests, unknown or revoked kids, stray responses, empty messages, garbage | the source network's bucket `per_source` (IPv6 /64, IPv4 address; [`Limits::check_source`]); over it dropped unread | — |
//!
//! So a spoofed flood from a plant's /64 empties that /64's unauthenticated bucket and nothing
//! else: the verified devices there keep talking through their kids.
//!
//! # Quarantine: only what is attributable
//!
//! A network is never quarantined: a source address proves nothing, and anyone who can spoof a
//! plant's /64 could otherwise silence every device in it. Plain requests, unknown kids,
//! revoked devices, replays, stray or stale responses are rate-limited (above) and their error
//! answers budgeted (`failures`), nothing more.
//!
//! What is quarantined is a kid of an active device whose requests keep failing verification
//! (AEAD failure or malformed OSCORE under that kid: [`SecurityCause::counts_against_kid`]):
//! `failures_to_quarantine` within `failure_window` quarantine it for `quarantine`. Meanwhile
//! its requests from any address but the one the device was last verified at are refused
//! without cryptography (`kid_quarantined`, 4.03 within the reply budget); from that address
//! they are still verified, at most `per_device` per second, so the genuine device keeps
//! reporting unless the forger also sits at its exact address and port. A quarantine ends when
//! its time is up (failures are counted afresh), or at once when the registry gives the kid a
//! new context or drops it (rotation, revocation: [`Limits::forget_kid`]). It is audited,
//! logged and in the security report.
//!
//! Legitimate patterns quarantine nothing: a device's retransmissions after an edge restart are
//! replays (verified MAC, refused by the replay window; not counted against the kid), stale
//! notifications after a restart are stray responses (unauthenticated lane, answered with a
//! Reset so the device ends the observation), a revoked device's retries are unauthenticated.
//!
//! # Bounded memory
//!
//! | table | key | bound |
//! |---|---|---|
//! | source buckets | attacker-chosen source network | `max_tracked` entries (default 100,000, about 48 bytes each); new networks share one overflow bucket of the per-source size while the table is full; entries whose bucket is full again are swept |
//! | device buckets | authenticated device | `max_tracked` (a device must verify to get one) |
//! | kid states | kid of an active device | `max_tracked`, and never more than the active devices: the gateway counts failures only for kids it has a context for |
//!
//! The overflow bucket is shared only by unauthenticated traffic of networks not yet tracked:
//! filling the table from many /64s costs no verified device its own budget.
//!
//! # The I/O boundary
//!
//! Nothing here reads a clock: every call takes `now`. The caller (the gateway) decides what
//! to do with a [`Verdict`]: drop silently (a response would amplify a flood) and count it.

use foldhash::{HashMap, HashMapExt as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::failures::SecurityCause;

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
    /// Unauthenticated datagrams per source network (IPv6 /64, IPv4 address).
    pub per_source: Rate,
    /// Per authenticated device.
    pub per_device: Rate,
    /// Failed verifications under one kid within `failure_window` that quarantine the kid.
    pub failures_to_quarantine: u32,
    /// The window in which failures are counted.
    pub failure_window: Duration,
    /// How long a kid's quarantine lasts.
    pub quarantine: Duration,
    /// Largest number of sources (and of devices, and of kids) tracked at once.
    pub max_tracked: usize,
}

/// The default of [`LimitsConfig::max_tracked`].
pub const DEFAULT_MAX_TRACKED: usize = 100_000;
/// The default unauthenticated datagrams per second from one source network. Lab mode sends all
/// its traffic through this, and in production a whole production line (one /64) shares it:
/// generous.
pub const DEFAULT_RATE_PER_SOURCE: u32 = 20_000;
/// The default burst of a source network after a quiet spell.
pub const DEFAULT_BURST_PER_SOURCE: u32 = 40_000;
/// The default verified requests per second from one device.
pub const DEFAULT_RATE_PER_DEVICE: u32 = 50;
/// The default burst of a device after a quiet spell.
pub const DEFAULT_BURST_PER_DEVICE: u32 = 200;
/// The default number of failed verifications under a kid within the window that quarantine it.
pub const DEFAULT_FAILURES_TO_QUARANTINE: u32 = 20;
/// The default window in which a kid's failures are counted, seconds.
pub const DEFAULT_FAILURE_WINDOW_S: u64 = 10;
/// The default length of a kid's quarantine, seconds.
pub const DEFAULT_QUARANTINE_S: u64 = 300;

impl Default for LimitsConfig {
    /// The default limits (the configuration's `[security]` defaults are these numbers).
    fn default() -> Self {
        LimitsConfig {
            per_source: Rate {
                per_second: f64::from(DEFAULT_RATE_PER_SOURCE),
                burst: f64::from(DEFAULT_BURST_PER_SOURCE),
            },
            per_device: Rate {
                per_second: f64::from(DEFAULT_RATE_PER_DEVICE),
                burst: f64::from(DEFAULT_BURST_PER_DEVICE),
            },
            failures_to_quarantine: DEFAULT_FAILURES_TO_QUARANTINE,
            failure_window: Duration::from_secs(DEFAULT_FAILURE_WINDOW_S),
            quarantine: Duration::from_secs(DEFAULT_QUARANTINE_S),
            max_tracked: DEFAULT_MAX_TRACKED,
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// The source network is over its rate of unauthenticated datagrams.
    SourceLimited,
    /// The device is over its rate.
    DeviceLimited,
    /// The kid's refusals used up its budget: dropped unread.
    KidLimited,
    /// The kid is quarantined until the given time.
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
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn full(rate: Rate, now: Instant) -> Bucket {
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

    /// Takes a token if there is one.
    pub(super) fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there (none taken).
    fn has_token(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= 1.0
    }

    /// Full again by `now`: it remembers nothing a fresh bucket would not.
    fn is_idle(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// The standing of one kid.
#[derive(Debug, Clone)]
struct KidState {
    /// Failed verifications counted since `window_start`.
    failures: u32,
    window_start: Instant,
    quarantined_until: Option<Instant>,
    /// While quarantined: verifications allowed from the device's own address.
    probe: Bucket,
    /// Refusals before verification (replays too): while empty, requests from elsewhere than
    /// the device's own address are dropped unread.
    refusals: Bucket,
}

impl KidState {
    fn new(now: Instant, rate: Rate) -> KidState {
        KidState {
            failures: 0,
            window_start: now,
            quarantined_until: None,
            probe: Bucket::full(rate, now),
            refusals: Bucket::full(rate, now),
        }
    }
}

/// A kid's quarantine that just began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineStarted {
    /// When it ends.
    pub until: Instant,
    /// Failed verifications that led to it.
    pub failures: u32,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Unauthenticated datagrams dropped by a source bucket (including the overflow bucket).
    pub source_limited: u64,
    /// Requests dropped by a device bucket.
    pub device_limited: u64,
    /// Requests refused unverified because their kid is quarantined.
    pub kid_quarantined: u64,
    /// Requests dropped unread because their kid's refusal budget was used up.
    pub kid_limited: u64,
    /// Kid quarantines begun.
    pub quarantines: u64,
    /// Sources currently tracked.
    pub tracked_sources: u64,
    /// Devices currently tracked.
    pub tracked_devices: u64,
    /// Kids currently tracked (failing or quarantined).
    pub tracked_kids: u64,
    /// Datagrams that went through the overflow bucket because the source table was full.
    pub overflowed: u64,
}

/// Token buckets per source network and per device, and the kids' standing.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    sources: HashMap<SourceNet, Bucket>,
    devices: HashMap<String, Bucket>,
    kids: HashMap<Vec<u8>, KidState>,
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
            kids: HashMap::new(),
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

    /// Counters and table sizes.
    pub fn stats(&self) -> LimitStats {
        LimitStats {
            tracked_sources: self.sources.len() as u64,
            tracked_devices: self.devices.len() as u64,
            tracked_kids: self.kids.len() as u64,
            ..self.stats
        }
    }

    /// Whether `kid` is quarantined at `now`.
    pub fn is_kid_quarantined(&self, now: Instant, kid: &[u8]) -> bool {
        self.kids
            .get(kid)
            .and_then(|k| k.quarantined_until)
            .is_some_and(|until| until > now)
    }

    /// Checks an unauthenticated datagram from `source` before anything else is done with
    /// it: the source network's bucket. Takes a token when allowed.
    pub fn check_source(&mut self, now: Instant, source: IpAddr) -> Verdict {
        let net = SourceNet::of(source);
        let rate = self.config.per_source;
        let full = self.sources.len() >= self.config.max_tracked;
        let bucket = match self.sources.get_mut(&net) {
            Some(bucket) => bucket,
            None if full => {
                self.stats.overflowed += 1;
                self.overflow.get_or_insert_with(|| Bucket::full(rate, now))
            }
            None => self.sources.entry(net).or_insert(Bucket::full(rate, now)),
        };
        if bucket.take(rate, now) {
            Verdict::Allow
        } else {
            self.stats.source_limited += 1;
            Verdict::SourceLimited
        }
    }

    /// Checks a request naming `kid` (of an active device) before it is verified.
    /// `from_bound` says whether it comes from the address the kid's device was last verified
    /// at. From there always allowed (while quarantined: at the device's rate); from elsewhere
    /// unless the kid's refusal budget is used up or the kid is quarantined.
    pub fn check_kid(&mut self, now: Instant, kid: &[u8], from_bound: bool) -> Verdict {
        let Some(state) = self.kids.get_mut(kid) else {
            return Verdict::Allow;
        };
        let Some(until) = state.quarantined_until else {
            if !from_bound && !state.refusals.has_token(self.config.per_device, now) {
                self.stats.kid_limited += 1;
                return Verdict::KidLimited;
            }
            return Verdict::Allow;
        };
        if until <= now {
            // Over: failures are counted afresh.
            state.quarantined_until = None;
            state.failures = 0;
            state.window_start = now;
            return Verdict::Allow;
        }
        if from_bound && state.probe.take(self.config.per_device, now) {
            return Verdict::Allow;
        }
        self.stats.kid_quarantined += 1;
        Verdict::Quarantined { until }
    }

    /// Counts a request under `kid` (which must be an active device's) refused before or by
    /// verification — a replay, or, with `failed`, a failed verification — and returns the
    /// quarantine it starts, if any. A quarantine in force is not extended.
    pub fn kid_refusal(
        &mut self,
        now: Instant,
        kid: &[u8],
        failed: bool,
    ) -> Option<QuarantineStarted> {
        if !self.kids.contains_key(kid) {
            if self.kids.len() >= self.config.max_tracked {
                self.sweep_kids(now);
            }
            if self.kids.len() >= self.config.max_tracked {
                // Nowhere to remember it; cannot happen while the table outnumbers the devices.
                return None;
            }
            let state = KidState::new(now, self.config.per_device);
            self.kids.insert(kid.to_vec(), state);
        }
        let config = &self.config;
        let state = self.kids.get_mut(kid)?;
        state.refusals.take(config.per_device, now);
        if !failed || state.quarantined_until.is_some_and(|until| until > now) {
            return None;
        }
        if now.saturating_duration_since(state.window_start) > config.failure_window {
            state.failures = 0;
            state.window_start = now;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures < config.failures_to_quarantine {
            return None;
        }
        let until = now + config.quarantine;
        state.quarantined_until = Some(until);
        state.probe = Bucket::full(config.per_device, now);
        self.stats.quarantines += 1;
        Some(QuarantineStarted {
            until,
            failures: state.failures,
        })
    }

    /// Forgets `kid`'s standing (its context was replaced or dropped): a quarantine ends.
    pub fn forget_kid(&mut self, kid: &[u8]) {
        self.kids.remove(kid);
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

    /// When [`handle_timeout`](Self::handle_timeout) should next run, asked at `now`: a sweep
    /// every few seconds while anything is tracked.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        (!self.sources.is_empty() || !self.devices.is_empty() || !self.kids.is_empty())
            .then(|| now + Duration::from_secs(5))
    }

    /// Forgets entries that carry no information any more (full buckets, kids neither failing
    /// nor quarantined).
    pub fn handle_timeout(&mut self, now: Instant) {
        let rate = self.config.per_source;
        self.sources.retain(|_, b| !b.is_idle(rate, now));
        self.sweep_devices(now);
        self.sweep_kids(now);
    }

    fn sweep_devices(&mut self, now: Instant) {
        let rate = self.config.per_device;
        self.devices.retain(|_, b| !b.is_idle(rate, now));
    }

    fn sweep_kids(&mut self, now: Instant) {
        let window = self.config.failure_window;
        let rate = self.config.per_device;
        self.kids.retain(|_, k| {
            let quarantined = k.quarantined_until.is_some_and(|until| until > now);
            let failing = now.saturating_duration_since(k.window_start) <= window;
            quarantined || failing || !k.refusals.is_idle(rate, now)
        });
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
    fn a_failing_kid_is_quarantined_except_at_its_own_address_until_time_is_up() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        let kid = [7u8];
        assert_eq!(l.kid_refusal(t0, &kid, true), None);
        assert_eq!(l.kid_refusal(t0, &kid, true), None);
        let q = l.kid_refusal(t0, &kid, true).unwrap();
        assert_eq!(q.until, t0 + Duration::from_secs(60));
        assert_eq!(q.failures, 3);
        assert!(l.is_kid_quarantined(t0, &kid));
        // From elsewhere: refused unverified.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            l.check_kid(t1, &kid, false),
            Verdict::Quarantined { until: q.until }
        );
        // From the device's own address: verified, at most at the device's rate (burst 3).
        let from_home: Vec<_> = (0..5).map(|_| l.check_kid(t1, &kid, true)).collect();
        assert_eq!(
            from_home.iter().filter(|v| **v == Verdict::Allow).count(),
            3
        );
        // Failures during the quarantine do not extend it; other kids are unaffected.
        assert_eq!(l.kid_refusal(t1, &kid, true), None);
        assert_eq!(l.check_kid(t1, &[8], false), Verdict::Allow);
        // Time up: allowed again, failures counted afresh.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.check_kid(later, &kid, false), Verdict::Allow);
        assert_eq!(l.kid_refusal(later, &kid, true), None);
        assert_eq!(l.stats().quarantines, 1);
        assert_eq!(l.stats().kid_quarantined, 3);
    }

    #[test]
    fn a_kids_refusals_are_budgeted_without_quarantine() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        // Three replays (burst 3): the budget is used up, nothing is quarantined.
        for _ in 0..3 {
            assert_eq!(l.kid_refusal(t0, &[5], false), None);
        }
        assert_eq!(l.check_kid(t0, &[5], false), Verdict::KidLimited);
        assert_eq!(l.check_kid(t0, &[5], true), Verdict::Allow, "from home");
        assert!(!l.is_kid_quarantined(t0, &[5]));
        // 2/s: half a second later a token is back.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check_kid(t1, &[5], false), Verdict::Allow);
        assert_eq!(l.stats().kid_limited, 1);
        assert_eq!(l.stats().quarantines, 0);
        // Idle again: forgotten.
        l.handle_timeout(t0 + Duration::from_secs(20));
        assert_eq!(l.stats().tracked_kids, 0);
    }

    #[test]
    fn a_new_context_ends_a_kids_quarantine() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for _ in 0..3 {
            l.kid_refusal(t0, &[7], true);
        }
        assert!(l.is_kid_quarantined(t0, &[7]));
        l.forget_kid(&[7]);
        assert_eq!(l.check_kid(t0, &[7], false), Verdict::Allow);
        assert_eq!(l.stats().tracked_kids, 0);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_quarantine() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for i in 0..10u64 {
            assert_eq!(
                l.kid_refusal(t0 + Duration::from_secs(11 * i), &[1], true),
                None
            );
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
            .map(|i| l.check_source(t0, v6(&format!("2001:db8:f{i:03x}::1"))))
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
    fn the_sweep_keeps_quarantined_and_failing_kids() {
        let t0 = Instant::now();
        let mut l = Limits::new(small());
        for _ in 0..3 {
            l.kid_refusal(t0, &[1], true);
        }
        l.kid_refusal(t0, &[2], true);
        l.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(l.stats().tracked_kids, 2);
        l.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(l.stats().tracked_kids, 1, "the failing one is forgotten");
        assert!(l.is_kid_quarantined(t0 + Duration::from_secs(11), &[1]));
        l.handle_timeout(t0 + Duration::from_secs(61));
        assert_eq!(l.stats().tracked_kids, 0);
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

        /// The tables never grow past `max_tracked`, whatever the sources, devices and kids.
        #[test]
        fn tables_stay_bounded(srcs in proptest::collection::vec(any::<u128>(), 1..200)) {
            let t0 = Instant::now();
            let mut l = Limits::new(small());
            for (i, s) in srcs.iter().enumerate() {
                let a = IpAddr::V6(std::net::Ipv6Addr::from(*s));
                let now = t0 + Duration::from_millis(i as u64);
                l.check_source(now, a);
                l.kid_refusal(now, &s.to_be_bytes()[..2], true);
                l.check_device(now, &format!("d{}", s % 17));
                let stats = l.stats();
                prop_assert!(stats.tracked_sources <= 4);
                prop_assert!(stats.tracked_devices <= 4);
                prop_assert!(stats.tracked_kids <= 4);
            }
        }
    }
}
