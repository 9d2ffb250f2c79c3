//! Jittered exponential back-off between reconnection attempts (sans-IO).

use std::time::Duration;

/// The floor of every back-off delay, whatever the configuration says: never busy-spin.
pub(crate) const FLOOR: Duration = Duration::from_millis(10);

/// Delays that double from `min` up to `max`, each drawn uniformly from the upper half of the
/// current step ("equal jitter"), so that many edges do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: u32,
    rng: u64,
    last: Duration,
}

impl Backoff {
    /// Back-off between `min` and `max` (both raised to [`FLOOR`]; `max` to at least `min`).
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(FLOOR);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            min,
            max: max.max(min),
            step: 0,
            rng: seed | 1,
            last: min,
        }
    }

    /// The delay before the next attempt; each call doubles the step up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .checked_mul(1u32 << self.step.min(20))
            .unwrap_or(self.max)
            .min(self.max);
        self.step = self.step.saturating_add(1);
        let half = base / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            self.next_random() % (jitter_nanos + 1)
        };
        self.last = (base - half + Duration::from_nanos(jitter)).max(FLOOR);
        self.last
    }

    /// The delay [`Backoff::next_delay`] returned last.
    pub(crate) fn last_delay(&self) -> Duration {
        self.last
    }

    /// Back to `min` (after a connection that worked).
    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for jitter.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_max() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::new(min, max);
        let mut base = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} not in [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(max);
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= min / 2 && d <= min);
    }

    #[test]
    fn never_below_the_floor_and_never_overflows() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= FLOOR && d <= FLOOR * 2);
        }
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(1 << 20));
        }
    }

    #[test]
    fn jitter_varies() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let first = b.next_delay();
        assert!((0..20).any(|_| b.next_delay() != first));
    }
}
