//! The SDK's monotonic time: an [`Instant`] counts microseconds since a start the driver chooses
//! (a firmware's timer at reset, a test's [`Instant::ZERO`], the process's first reading of
//! `std::time::Instant` under the `std` feature); spans are [`core::time::Duration`].
//!
//! No core reads a clock: every `handle_*` and `poll_*` takes `now: Instant` from its driver and
//! hands deadlines back as `Instant`s. What a driver needs:
//!
//! | driver | now | a deadline from `poll_timeout` |
//! |---|---|---|
//! | a test on virtual time | `Instant::ZERO + d`, [`Instant::from_millis`] | compare, step to it |
//! | firmware | [`Instant::from_micros`] of a free-running timer (extended to 64 bits) | program the timer's compare register with [`Instant::as_micros`] |
//! | Linux (`std`) | `Instant::now()` | `Instant::to_std` for `tokio::time::sleep_until` or a `std` timeout |
//!
//! # Range and rounding
//!
//! 64 bits of microseconds last 584,000 years past the start, so nothing a protocol computes
//! (lifetimes of seconds to days, a Max-Age of at most 136 years) comes near the end. Arithmetic
//! follows `std::time::Instant`: `+` and `-` with a [`Duration`] panic on overflow (the `checked_*`
//! forms return `None` instead), `Instant - Instant` and [`Instant::duration_since`] give zero
//! for a later instant. A [`Duration`] is added in whole microseconds, rounded down (`t +
//! 999 ns == t`): deadlines are never early by more than that, and the std bridge rounds the same
//! way, so a driver that sleeps until `deadline.to_std()` wakes at or after the deadline.
//!
//! # The `std` bridge
//!
//! Under the `std` feature the start is the process's *epoch*: the first call of
//! [`Instant::now`], [`Instant::from_std`] or [`Instant::to_std`] reads `std::time::Instant::now()`
//! once, and every later conversion uses that same reading, so instants from different threads
//! (the simulator's shards) compare correctly. A `std::time::Instant` taken *before* the epoch has
//! no SDK instant: [`Instant::from_std`] says so with `None` rather than pretending it is the
//! epoch. Call `Instant::now()` once at start-up if earlier `std` instants must convert.

use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};
use core::time::Duration;

/// A point in monotonic time: microseconds since an arbitrary start. See the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The start (the driver's choice of zero): what tests on virtual time begin with.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// The last representable instant, 584,000 years after the start.
    pub const MAX: Instant = Instant { micros: u64::MAX };

    /// The instant `micros` microseconds after the start.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// The instant `millis` milliseconds after the start.
    ///
    /// # Panics
    ///
    /// When the result is past [`Instant::MAX`] (`millis` above 1.8 × 10^16).
    #[allow(
        clippy::panic,
        reason = "a constructor from a constant, as std's Duration::new; checked_add is the fallible form"
    )]
    pub const fn from_millis(millis: u64) -> Instant {
        match millis.checked_mul(1_000) {
            Some(micros) => Instant { micros },
            None => panic!("Instant::from_millis: past Instant::MAX"),
        }
    }

    /// The instant `secs` seconds after the start.
    ///
    /// # Panics
    ///
    /// When the result is past [`Instant::MAX`] (`secs` above 1.8 × 10^13).
    #[allow(
        clippy::panic,
        reason = "a constructor from a constant, as std's Duration::new; checked_add is the fallible form"
    )]
    pub const fn from_secs(secs: u64) -> Instant {
        match secs.checked_mul(1_000_000) {
            Some(micros) => Instant { micros },
            None => panic!("Instant::from_secs: past Instant::MAX"),
        }
    }

    /// Microseconds since the start.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Whole milliseconds since the start (rounded down).
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }

    /// The time since the start, as a span.
    pub const fn since_start(self) -> Duration {
        Duration::from_micros(self.micros)
    }

    /// `self + d`, or `None` past [`Instant::MAX`]. `d` counts in whole microseconds.
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let d = u64::try_from(d.as_micros()).ok()?;
        self.micros.checked_add(d).map(Instant::from_micros)
    }

    /// `self - d`, or `None` before the start. `d` counts in whole microseconds.
    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        let d = u64::try_from(d.as_micros()).ok()?;
        self.micros.checked_sub(d).map(Instant::from_micros)
    }

    /// The span from `earlier` to `self`, or `None` when `earlier` is later.
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.micros
            .checked_sub(earlier.micros)
            .map(Duration::from_micros)
    }

    /// The span from `earlier` to `self`; zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.checked_duration_since(earlier).unwrap_or_default()
    }

    /// The span from `earlier` to `self`; zero when `earlier` is later (as
    /// `std::time::Instant::duration_since`).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(feature = "std")]
mod bridge {
    use super::Instant;
    use core::time::Duration;
    use std::sync::OnceLock;

    /// The process's epoch: `std::time::Instant::now()` at the first use of the bridge.
    fn epoch() -> std::time::Instant {
        static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    impl Instant {
        /// Now, by `std`'s monotonic clock (feature `std`; for drivers, never called by a core).
        pub fn now() -> Instant {
            // Saturates only after 584,000 years of uptime.
            Instant::ZERO
                .checked_add(epoch().elapsed())
                .unwrap_or(Instant::MAX)
        }

        /// The span from this instant to now (zero for an instant in the future).
        pub fn elapsed(self) -> Duration {
            Instant::now().saturating_duration_since(self)
        }

        /// The SDK instant of a `std` one, rounded down to the microsecond; `None` for one taken
        /// before the process's epoch (see the [module docs](super)).
        pub fn from_std(t: std::time::Instant) -> Option<Instant> {
            Instant::ZERO.checked_add(t.checked_duration_since(epoch())?)
        }

        /// The `std` instant of this one, for `sleep_until` and timeouts; `None` when `std` cannot
        /// represent it (on a platform with a narrower clock than Linux's, near [`Instant::MAX`]:
        /// a deadline that never comes).
        pub fn to_std(self) -> Option<std::time::Instant> {
            epoch().checked_add(self.since_start())
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// # Panics
    ///
    /// Past [`Instant::MAX`], as `std::time::Instant` does; [`Instant::checked_add`] does not.
    #[allow(
        clippy::expect_used,
        reason = "std::time::Instant's contract; 584,000 years of range"
    )]
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d)
            .expect("overflow when adding a duration to an instant")
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    /// # Panics
    ///
    /// Before the start, as `std::time::Instant` does; [`Instant::checked_sub`] does not.
    #[allow(clippy::expect_used, reason = "std::time::Instant's contract")]
    fn sub(self, d: Duration) -> Instant {
        self.checked_sub(d)
            .expect("overflow when subtracting a duration from an instant")
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    /// The span between two instants; zero when `earlier` is later (as `std`).
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Instant({}.{:06}s)",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_in_whole_microseconds() {
        let t = Instant::ZERO + Duration::from_millis(1500);
        assert_eq!(t, Instant::from_millis(1500));
        assert_eq!(t.as_micros(), 1_500_000);
        assert_eq!(t.as_millis(), 1500);
        assert_eq!(Instant::from_secs(2) - t, Duration::from_millis(500));
        assert_eq!(t - Instant::from_secs(2), Duration::ZERO);
        assert_eq!(t + Duration::from_nanos(999), t);
        assert_eq!(t - Duration::from_millis(500), Instant::from_secs(1));
        assert_eq!(format!("{t:?}"), "Instant(1.500000s)");
    }

    #[test]
    fn overflow_is_none_from_the_checked_forms() {
        assert_eq!(Instant::MAX.checked_add(Duration::from_micros(1)), None);
        assert_eq!(Instant::ZERO.checked_add(Duration::MAX), None);
        assert_eq!(Instant::ZERO.checked_sub(Duration::from_micros(1)), None);
        assert_eq!(
            Instant::ZERO.checked_duration_since(Instant::from_micros(1)),
            None
        );
        assert_eq!(
            Instant::MAX.checked_sub(Duration::from_micros(u64::MAX)),
            Some(Instant::ZERO)
        );
    }

    #[test]
    #[should_panic(expected = "overflow when adding")]
    fn adding_past_the_end_panics_as_std_does() {
        let _ = Instant::MAX + Duration::from_micros(1);
    }

    #[test]
    #[should_panic(expected = "overflow when subtracting")]
    fn subtracting_before_the_start_panics_as_std_does() {
        let _ = Instant::ZERO - Duration::from_micros(1);
    }

    #[cfg(feature = "std")]
    #[test]
    fn the_std_bridge_round_trips_and_refuses_instants_before_the_epoch() {
        let before = std::time::Instant::now();
        let now = Instant::now();
        let std_now = std::time::Instant::now();
        let back = Instant::from_std(std_now).unwrap();
        assert!(back >= now);
        // Converting back lands at or before the std instant, by less than a microsecond.
        let there = back.to_std().unwrap();
        assert!(there <= std_now && std_now - there < Duration::from_micros(1));
        // A deadline slept until by std is reached by the SDK's clock when the sleep ends.
        let deadline = now + Duration::from_millis(2);
        std::thread::sleep(deadline.to_std().unwrap() - std::time::Instant::now());
        assert!(Instant::now() >= deadline);
        // Never silently the epoch: an instant from before it has no SDK instant (unless the
        // epoch was set earlier by another test in this process, then it converts exactly).
        match Instant::from_std(before) {
            None => {}
            Some(t) => assert!(t.to_std().unwrap() <= before),
        }
        let long_before = std_now.checked_sub(Duration::from_secs(3600 * 24 * 365));
        if let Some(long_before) = long_before {
            assert_eq!(Instant::from_std(long_before), None);
        }
    }
}
