//! Counts over time (sans-IO): what happened in each interval of a run — reports made,
//! acknowledged, refused, delivered; registrations; retransmissions; datagrams — so the report
//! can plot a run and mark its faults. Each shard thread keeps its own [`Timeline`], the
//! collector another; they add up bucket by bucket ([`Timeline::merge`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use v6iot_sdk::time::Instant;

use crate::histogram::{HistogramReport, LatencyHistogram};

/// What happened in one interval (or a whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Reports made by the devices.
    pub made: u64,
    /// Reports acknowledged (2.xx).
    pub acknowledged: u64,
    /// Reports refused for good (4.xx, 5.xx but 5.03 and 4.03).
    pub refused: u64,
    /// Reports dropped by a device's full queue.
    pub dropped: u64,
    /// 5.03 answers to reports (back-pressure; the report retried). Registrations' 5.03s are
    /// `registration_busy_503`.
    pub busy_503: u64,
    /// Report requests that timed out (retried).
    pub timeouts: u64,
    /// 4.03 answers to reports (the device registered again).
    pub forbidden: u64,
    /// First registrations.
    pub registered: u64,
    /// Registrations after the first (after the edge forgot a device).
    pub reregistered: u64,
    /// Registration requests sent (`POST /rd`) and updates (`POST /rd/{location}`), each once
    /// however often CoAP retransmitted it; counted when sent.
    #[serde(default)]
    pub registration_attempts: u64,
    /// Registration requests and updates answered 5.03 (the directory busy, e.g. its audit
    /// lane full; the device tried again after Max-Age); counted when the answer arrived.
    #[serde(default)]
    pub registration_busy_503: u64,
    /// Registration requests and updates answered with another error (4.xx, 5.xx but 5.03, a
    /// 2.01 without a location; an update's 4.04); counted when the answer arrived.
    #[serde(default)]
    pub registration_refused: u64,
    /// Registration requests and updates that got no answer (timed out or reset); counted
    /// when given up.
    #[serde(default)]
    pub registration_unanswered: u64,
    /// CoAP retransmissions of Confirmable messages.
    pub retransmissions: u64,
    /// Datagrams the devices sent (after the link model).
    pub datagrams_sent: u64,
    /// Datagrams the devices received (after the link model).
    pub datagrams_received: u64,
    /// Datagrams the link model lost, both ways.
    pub link_lost: u64,
    /// Reports delivered at the broker (first delivery of each).
    pub delivered: u64,
    /// Deliveries of a report already delivered.
    pub duplicates: u64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, o: &Counts) {
        self.made += o.made;
        self.acknowledged += o.acknowledged;
        self.refused += o.refused;
        self.dropped += o.dropped;
        self.busy_503 += o.busy_503;
        self.timeouts += o.timeouts;
        self.forbidden += o.forbidden;
        self.registered += o.registered;
        self.reregistered += o.reregistered;
        self.registration_attempts += o.registration_attempts;
        self.registration_busy_503 += o.registration_busy_503;
        self.registration_refused += o.registration_refused;
        self.registration_unanswered += o.registration_unanswered;
        self.retransmissions += o.retransmissions;
        self.datagrams_sent += o.datagrams_sent;
        self.datagrams_received += o.datagrams_received;
        self.link_lost += o.link_lost;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
    }
}

/// One interval of a timeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// The counts.
    pub counts: Counts,
    /// Latency of the reports delivered in it.
    pub latency: LatencyHistogram,
    /// Simulator CPU used in it (seconds over all threads).
    pub cpu_s: f64,
    /// Simulator resident memory at its end (bytes; the highest when merged).
    pub rss_bytes: u64,
}

/// Counts per interval from a run's start.
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: Instant,
    width: Duration,
    buckets: Vec<Bucket>,
}

/// Intervals a timeline keeps at most (later events go to the last one).
pub const MAX_BUCKETS: usize = 4096;

impl Timeline {
    /// An empty timeline of `width` intervals from `origin`.
    pub fn new(origin: Instant, width: Duration) -> Timeline {
        Timeline {
            origin,
            width: width.max(Duration::from_millis(1)),
            buckets: Vec::new(),
        }
    }

    /// The interval width a run of `length` uses: 1 s, or coarser so that a long run has at
    /// most about 600 intervals.
    pub fn width_for(length: Duration) -> Duration {
        let secs = length.as_secs().div_ceil(600).max(1);
        Duration::from_secs(secs)
    }

    /// The interval width.
    pub fn width(&self) -> Duration {
        self.width
    }

    /// The bucket `now` falls in (created as needed; at most [`MAX_BUCKETS`]).
    #[allow(clippy::indexing_slicing)] // `i` < len: the vector was just grown past it
    pub fn at(&mut self, now: Instant) -> &mut Bucket {
        let i = self.index(now);
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    /// Adds `seconds` of CPU used from `from` to `to` to the intervals that span covers, each
    /// its share by overlap (all of it to `to`'s interval when the span is empty): CPU sampled
    /// seldom, over a turn of many seconds, is not booked to one interval as if used there.
    pub fn spread_cpu(&mut self, from: Instant, to: Instant, seconds: f64) {
        let span = to.saturating_duration_since(from).as_secs_f64();
        if span <= 0.0 {
            self.at(to).cpu_s += seconds;
            return;
        }
        let (first, last) = (self.index(from), self.index(to));
        for i in first..=last {
            let start = self.origin + self.width * u32::try_from(i).unwrap_or(u32::MAX);
            let end = start + self.width;
            let lo = if from > start { from } else { start };
            let hi = if to < end { to } else { end };
            let overlap = hi.saturating_duration_since(lo).as_secs_f64();
            if overlap > 0.0 {
                self.at(lo).cpu_s += seconds * overlap / span;
            }
        }
    }

    fn index(&self, now: Instant) -> usize {
        let since = now.saturating_duration_since(self.origin);
        ((since.as_nanos() / self.width.as_nanos().max(1)) as usize).min(MAX_BUCKETS - 1)
    }

    /// The counts of `now`'s interval.
    pub fn counts(&mut self, now: Instant) -> &mut Counts {
        &mut self.at(now).counts
    }

    /// The buckets so far.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Every bucket's counts added up.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for b in &self.buckets {
            t.add(&b.counts);
        }
        t
    }

    /// Adds `other` (same origin and width) bucket by bucket.
    pub fn merge(&mut self, other: &Timeline) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets
                .resize_with(other.buckets.len(), Bucket::default);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.merge(theirs);
        }
    }

    /// The timeline as the report writes it.
    pub fn to_report(&self) -> TimelineReport {
        TimelineReport {
            bucket_s: self.width.as_secs_f64(),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| BucketReport {
                    t_s: i as f64 * self.width.as_secs_f64(),
                    counts: b.counts,
                    latency: b.latency.to_report(),
                    cpu_s: b.cpu_s,
                    rss_bytes: b.rss_bytes,
                })
                .collect(),
        }
    }
}

impl Bucket {
    /// Adds `other`.
    pub fn merge(&mut self, other: &Bucket) {
        self.counts.add(&other.counts);
        self.latency.merge(&other.latency);
        self.cpu_s += other.cpu_s;
        self.rss_bytes = self.rss_bytes.max(other.rss_bytes);
    }
}

/// A timeline in the JSON report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// Interval width, seconds.
    pub bucket_s: f64,
    /// The intervals from the run's start.
    pub buckets: Vec<BucketReport>,
}

/// One interval in the JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketReport {
    /// Its start, seconds from the run's start.
    pub t_s: f64,
    /// What happened in it.
    #[serde(flatten)]
    pub counts: Counts,
    /// Latency of the reports delivered in it.
    pub latency: HistogramReport,
    /// Simulator CPU in it, seconds over all its threads.
    pub cpu_s: f64,
    /// Simulator resident memory at its end, bytes (the highest of merged shards).
    pub rss_bytes: u64,
}

impl TimelineReport {
    /// Adds `other` bucket by bucket (shards of one run share the bucket width).
    pub fn merge(&mut self, other: &TimelineReport) {
        if self.buckets.is_empty() {
            self.bucket_s = other.bucket_s;
        }
        for (i, theirs) in other.buckets.iter().enumerate() {
            match self.buckets.get_mut(i) {
                Some(mine) => {
                    mine.counts.add(&theirs.counts);
                    let mut h = LatencyHistogram::from_report(&mine.latency);
                    h.merge(&LatencyHistogram::from_report(&theirs.latency));
                    mine.latency = h.to_report();
                    mine.cpu_s += theirs.cpu_s;
                    mine.rss_bytes = mine.rss_bytes.max(theirs.rss_bytes);
                }
                None => self.buckets.push(theirs.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_over_a_long_span_is_spread_by_overlap() {
        let o = Instant::ZERO;
        let s = |ms: u64| o + Duration::from_millis(ms);
        let mut t = Timeline::new(o, Duration::from_secs(1));
        // 3 s of CPU in 3 s from 0.5 s: half, whole, whole, half; never above one core.
        t.spread_cpu(s(500), s(3500), 3.0);
        let cpu: Vec<f64> = t.buckets().iter().map(|b| b.cpu_s).collect();
        assert_eq!(cpu.len(), 4);
        for (got, want) in cpu.iter().zip([0.5, 1.0, 1.0, 0.5]) {
            assert!((got - want).abs() < 1e-9, "{cpu:?}");
        }
        // an empty span books everything at its end
        t.spread_cpu(s(3600), s(3600), 0.25);
        assert!((t.buckets()[3].cpu_s - 0.75).abs() < 1e-9);
    }

    #[test]
    fn events_land_in_their_interval_and_timelines_add_up() {
        let o = Instant::ZERO;
        let s = |ms: u64| o + Duration::from_millis(ms);
        let mut a = Timeline::new(o, Duration::from_secs(1));
        a.counts(s(10)).made += 1;
        a.counts(s(999)).made += 1;
        a.counts(s(2500)).acknowledged += 2;
        let mut b = Timeline::new(o, Duration::from_secs(1));
        b.counts(s(1500)).made += 5;
        b.at(s(2000)).latency.record_secs(0.01);
        a.merge(&b);
        let made: Vec<u64> = a.buckets().iter().map(|b| b.counts.made).collect();
        assert_eq!(made, [2, 5, 0]);
        assert_eq!(a.total().acknowledged, 2);
        assert_eq!(a.buckets()[2].latency.count(), 1);
        let mut r = a.to_report();
        r.merge(&b.to_report());
        assert_eq!(r.buckets[1].counts.made, 10);
        assert_eq!(r.buckets[2].latency.count, 2);
        assert_eq!(r.buckets[2].t_s, 2.0);
        // Far past the end: the last interval kept.
        let mut far = Timeline::new(o, Duration::from_secs(1));
        far.counts(s(1_000_000_000)).made += 1;
        assert_eq!(far.buckets().len(), MAX_BUCKETS);
        assert_eq!(
            Timeline::width_for(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            Timeline::width_for(Duration::from_secs(3600)),
            Duration::from_secs(6)
        );
    }
}
