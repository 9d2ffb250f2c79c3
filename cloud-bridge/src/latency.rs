//! Latency histograms the bridge fills where a duration is measured (an outbox group commit,
//! a PUBLISH until its PUBACK) and whoever exports metrics reads: fixed bucket bounds,
//! lock-free counts. Observing costs a short scan of the bounds and two atomic additions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) for storage syncs: 50 µs (a write-back cache) to 1 s (a worn card).
pub const SYNC_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Upper bounds (seconds) for a broker's round trip: 250 µs (a broker on the host) to 10 s.
pub const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// A histogram with fixed bounds; every observation lands in exactly one bucket (the last
/// one, past every bound, is `+Inf`).
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds: &'static [f64],
    /// One per bound, then `+Inf` (not cumulative).
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A copy of a histogram at one moment, cumulative as Prometheus wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or below it), ascending; `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// An empty histogram with these ascending upper bounds (seconds).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> LatencyHistogram {
        LatencyHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far (cumulative per bound).
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut total = 0u64;
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        for (bound, c) in bounds.zip(self.counts.iter()) {
            total += c.load(Ordering::Relaxed);
            buckets.push((bound, total));
        }
        HistogramSnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_cumulatively() {
        let h = LatencyHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500)); // <= 1 ms
        h.observe(Duration::from_millis(1)); // on the bound: <= 1 ms
        h.observe(Duration::from_millis(5)); // <= 10 ms
        h.observe(Duration::from_secs(3)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 2), (0.01, 3), (f64::INFINITY, 4)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 3.0065).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
