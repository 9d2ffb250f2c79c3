//! Latency histograms that survive a JSON report and merge exactly: an HDR histogram
//! (`hdrhistogram`, microseconds, three significant digits) written as its non-empty buckets.
//!
//! A report keeps each histogram as `[[value_us, count], …]` — every bucket's highest
//! equivalent value and its count — plus a summary for people (count, mean, percentiles, min,
//! max, in milliseconds). Reading the buckets back records each value with its count, which
//! lands in the same bucket, so merging the histograms of several shards gives exactly the
//! histogram one run over all their samples would have had (percentiles of the merge are not
//! averages of percentiles).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The longest latency kept: one hour, in microseconds (longer values are clamped to it).
pub const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    h: Histogram<u64>,
    /// Values that were negative (a clock went backwards, or a report was stamped after it
    /// arrived): recorded as 0 µs and counted here.
    negative: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &Self) -> bool {
        self.negative == other.negative && self.buckets() == other.buckets()
    }
}

impl LatencyHistogram {
    /// An empty histogram (1 µs to one hour, three significant digits).
    #[allow(clippy::expect_used)] // constant bounds that `new_with_bounds` accepts (tested)
    pub fn new() -> LatencyHistogram {
        let h = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid constant bounds");
        LatencyHistogram { h, negative: 0 }
    }

    /// Records one latency in seconds (negative ones as 0, counted apart).
    pub fn record_secs(&mut self, seconds: f64) {
        if seconds < 0.0 {
            self.negative += 1;
        }
        let us = (seconds.max(0.0) * 1e6).round() as u64;
        self.record_us(us, 1);
    }

    /// Records `count` samples of `us` microseconds (clamped to 0..=[`MAX_US`]).
    pub fn record_us(&mut self, us: u64, count: u64) {
        let _ = self.h.record_n(us.min(MAX_US), count);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Samples that were negative.
    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (value, count) in other.buckets() {
            self.record_us(value, count);
        }
        self.negative += other.negative;
    }

    /// The non-empty buckets: (highest equivalent value in µs, count), ascending.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.h
            .iter_recorded()
            .map(|v| {
                (
                    self.h.highest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect()
    }

    /// The value at quantile `q` (0..=1), milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The summary and buckets for the report.
    pub fn to_report(&self) -> HistogramReport {
        let empty = self.h.is_empty();
        let ms = |us: u64| us as f64 / 1000.0;
        HistogramReport {
            count: self.count(),
            negative: self.negative,
            mean_ms: if empty { 0.0 } else { self.h.mean() / 1000.0 },
            min_ms: if empty { 0.0 } else { ms(self.h.min()) },
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if empty { 0.0 } else { ms(self.h.max()) },
            buckets_us: self.buckets(),
        }
    }

    /// The histogram a report holds (from its buckets; the summary is recomputed).
    pub fn from_report(report: &HistogramReport) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for &(value, count) in &report.buckets_us {
            h.record_us(value, count);
        }
        h.negative = report.negative;
        h
    }
}

/// A histogram in the JSON report: a summary in milliseconds and the buckets to merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramReport {
    /// Samples.
    pub count: u64,
    /// Samples that were negative (recorded as 0); must be 0.
    pub negative: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Smallest, ms.
    pub min_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Non-empty buckets: `[highest equivalent value in µs, count]`, ascending.
    pub buckets_us: Vec<(u64, u64)>,
}

impl Default for HistogramReport {
    fn default() -> Self {
        LatencyHistogram::new().to_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_halves_equal_the_whole() {
        let mut whole = LatencyHistogram::new();
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for i in 0..10_000u64 {
            let us = (i * 7919) % 2_000_000 + 1;
            whole.record_us(us, 1);
            if i % 3 == 0 { &mut a } else { &mut b }.record_us(us, 1);
        }
        let mut merged = LatencyHistogram::from_report(&a.to_report());
        merged.merge(&LatencyHistogram::from_report(&b.to_report()));
        assert_eq!(merged, whole);
        assert_eq!(merged.to_report(), whole.to_report());
        assert_eq!(merged.count(), 10_000);
        // An average of the halves' medians would not do: the merge's is the whole's.
        assert_eq!(merged.quantile_ms(0.5), whole.quantile_ms(0.5));
    }

    #[test]
    fn negative_and_huge_values_are_kept_in_range_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record_secs(-0.5);
        h.record_secs(0.25);
        h.record_secs(1e9);
        let r = h.to_report();
        assert_eq!((r.count, r.negative), (3, 1));
        assert_eq!(r.min_ms, 0.0);
        assert!((r.p50_ms - 250.0).abs() < 0.5, "{r:?}");
        assert!(r.max_ms <= MAX_US as f64 / 1000.0 * 1.001, "{r:?}");
        let json = serde_json::to_string(&r).unwrap();
        let back: HistogramReport = serde_json::from_str(&json).unwrap();
        assert_eq!(LatencyHistogram::from_report(&back), h);
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let r = LatencyHistogram::new().to_report();
        assert_eq!((r.count, r.p99_ms, r.max_ms), (0, 0.0, 0.0));
        assert!(r.buckets_us.is_empty());
    }
}
