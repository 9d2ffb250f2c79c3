//! Counts what reaches the broker: the subscriber's deliveries matched to the reports that
//! caused them by (device, `seq`), with end-to-end latency from the report's SenML time (when it
//! was scheduled) to its arrival, per fleet and over time.
//!
//! Devices are found by their id in the topic (`…/{device}/telemetry`) through the run's
//! [`Plan`]: each of this shard's devices has a slot in one vector (no map keyed by what the
//! broker sends). A delivery for a device that is not this shard's — another shard's, or
//! nobody's — is counted as `foreign` and otherwise ignored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::time::Instant;

use crate::histogram::LatencyHistogram;
use crate::plan::Plan;
use crate::timeline::Timeline;

/// What the subscriber saw.
#[derive(Debug)]
pub struct Deliveries {
    plan: Arc<Plan>,
    /// Per device of this shard (its plan index), the `seq`s seen.
    seen: Vec<Seqs>,
    delivered: u64,
    /// Deliveries of a (device, seq) already seen.
    pub duplicates: u64,
    /// Deliveries for devices that are not this shard's (or no fleet's).
    pub foreign: u64,
    /// Messages on the topic that did not parse as a fleet report.
    pub malformed: u64,
    /// Per fleet: latency of first deliveries.
    latency: Vec<LatencyHistogram>,
    /// Per fleet: deliveries of a report already seen.
    fleet_duplicates: Vec<u64>,
    /// Deliveries and their latency over time.
    timeline: Timeline,
    /// The run's start, as an instant and as Unix time.
    start: Instant,
    unix_start: f64,
}

impl Deliveries {
    /// Nothing seen yet, for the devices of `plan`; the run started at `start`, which was
    /// `unix_start` in Unix time; counts over time in intervals of `bucket`.
    pub fn new(plan: Arc<Plan>, start: Instant, unix_start: f64, bucket: Duration) -> Deliveries {
        let fleets = plan.scenario().fleets.len();
        let devices = usize::try_from(plan.len()).unwrap_or(usize::MAX);
        Deliveries {
            seen: (0..devices).map(|_| Seqs::default()).collect(),
            plan,
            delivered: 0,
            duplicates: 0,
            foreign: 0,
            malformed: 0,
            latency: (0..fleets).map(|_| LatencyHistogram::new()).collect(),
            fleet_duplicates: vec![0; fleets],
            timeline: Timeline::new(start, bucket),
            start,
            unix_start,
        }
    }

    /// Distinct reports delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The `seq`s seen of device `local` (its index in the plan).
    pub fn seqs(&self, local: u64) -> Option<&Seqs> {
        self.seen.get(usize::try_from(local).ok()?)
    }

    /// Latency of fleet `fleet`'s first deliveries.
    pub fn latency(&self, fleet: usize) -> Option<&LatencyHistogram> {
        self.latency.get(fleet)
    }

    /// Duplicate deliveries of fleet `fleet`.
    pub fn fleet_duplicates(&self, fleet: usize) -> u64 {
        self.fleet_duplicates.get(fleet).copied().unwrap_or(0)
    }

    /// Deliveries over time.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Takes one message from `{…}/{device}/telemetry`, arriving at `unix_now` seconds.
    pub fn record(&mut self, topic: &str, payload: &[u8], unix_now: f64) {
        let device = topic.rsplit('/').nth(1).unwrap_or_default();
        let Some(d) = self.plan.find_id(device) else {
            self.foreign += 1;
            return;
        };
        let Some(local) = self.plan.local(d) else {
            self.foreign += 1;
            return;
        };
        let Some((seq, t)) = seq_of(payload) else {
            self.malformed += 1;
            return;
        };
        let Some(seqs) = usize::try_from(local)
            .ok()
            .and_then(|l| self.seen.get_mut(l))
        else {
            self.foreign += 1;
            return;
        };
        let at = self.start + Duration::from_secs_f64((unix_now - self.unix_start).max(0.0));
        if !seqs.insert(seq) {
            self.duplicates += 1;
            if let Some(n) = self.fleet_duplicates.get_mut(d.fleet) {
                *n += 1;
            }
            self.timeline.counts(at).duplicates += 1;
            return;
        }
        self.delivered += 1;
        let latency = unix_now - t;
        if let Some(h) = self.latency.get_mut(d.fleet) {
            h.record_secs(latency);
        }
        let bucket = self.timeline.at(at);
        bucket.counts.delivered += 1;
        bucket.latency.record_secs(latency);
    }
}

impl crate::subscriber::Sink for Deliveries {
    fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.record(topic, payload, crate::fleet::unix_now());
    }
}

/// The `seq`s of one device seen so far: a device numbers its reports 1, 2, 3, … and they
/// mostly arrive in order, so the run from 1 is kept as one number and only the others in a
/// set (held only by a device that has any).
#[derive(Debug, Default)]
pub struct Seqs {
    /// Every seq in `1..=upto` was seen.
    upto: u32,
    /// Seen seqs outside that run (early ones, 0).
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not a set's 48 bytes, in each of a million devices' entries"
    )]
    others: Option<Box<HashSet<u32>>>,
}

impl Seqs {
    /// Adds `seq`; false if it was seen already.
    pub fn insert(&mut self, seq: u32) -> bool {
        if seq >= 1 && seq <= self.upto {
            return false;
        }
        if seq != self.upto.wrapping_add(1) || seq == 0 {
            return self.others.get_or_insert_with(Box::default).insert(seq);
        }
        self.upto = seq;
        while let Some(others) = self.others.as_mut()
            && let Some(next) = self.upto.checked_add(1)
            && others.remove(&next)
        {
            self.upto = next;
        }
        if self.others.as_ref().is_some_and(|o| o.is_empty()) {
            self.others = None;
        }
        true
    }

    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u32) -> bool {
        (1..=self.upto).contains(&seq) || self.others.as_ref().is_some_and(|o| o.contains(&seq))
    }

    /// How many seqs in `from..=to` were seen.
    pub fn count_in(&self, from: u32, to: u32) -> u64 {
        if from > to {
            return 0;
        }
        let run = if self.upto >= from.max(1) {
            u64::from(self.upto.min(to)) - u64::from(from.max(1)) + 1
        } else {
            0
        };
        let others = self.others.as_ref().map_or(0, |o| {
            o.iter().filter(|s| (from..=to).contains(s)).count() as u64
        });
        run + others
    }

    /// How many seqs were seen in all.
    pub fn len(&self) -> u64 {
        u64::from(self.upto) + self.others.as_ref().map_or(0, |o| o.len() as u64)
    }

    /// True when none was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fields of one resolved SenML-JSON record the collector reads; the others (`rid`, `u`,
/// `vs`, …) are skipped without being built.
#[derive(serde::Deserialize)]
struct SeqRecord<'a> {
    #[serde(borrow, default)]
    n: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    v: Option<f64>,
    #[serde(default)]
    t: Option<f64>,
}

/// The `seq` value and its time from a resolved SenML-JSON array as the edge publishes it
/// (parsed into borrowed records, no JSON tree).
fn seq_of(payload: &[u8]) -> Option<(u32, f64)> {
    let records: Vec<SeqRecord<'_>> = serde_json::from_slice(payload).ok()?;
    records.iter().find_map(|r| {
        r.n.as_deref()?.ends_with(":seq").then_some(())?;
        let v = r.v?;
        (v >= 0.0 && v <= f64::from(u32::MAX)).then_some(())?;
        Some((v as u32, r.t?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{FleetSpec, Partition, Scenario};

    fn plan(partition: Partition) -> Arc<Plan> {
        let mut f = FleetSpec::new("f", 4, 4.0);
        f.id_prefix = "f".into();
        f.first = 1;
        let s = Scenario::single(f, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
        Arc::new(Plan::new(s, partition))
    }

    fn deliveries(partition: Partition) -> Deliveries {
        Deliveries::new(
            plan(partition),
            Instant::ZERO,
            100.0,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn counts_distinct_deliveries_duplicates_and_strangers() {
        let mut d = deliveries(Partition::WHOLE);
        let msg = br#"[{"rid":"9","n":"urn:dev:v6iot:f000001:temperature","v":20.4,"t":100.0},{"n":"urn:dev:v6iot:f000001:seq","v":3,"t":100.0}]"#;
        d.record("v6iot/s/f000001/telemetry", msg, 100.25);
        d.record("v6iot/s/f000001/telemetry", msg, 100.5);
        d.record("v6iot/s/f000001/telemetry", b"nonsense", 100.5);
        d.record("v6iot/s/f000009/telemetry", msg, 100.5);
        d.record("v6iot/s/other/telemetry", msg, 100.5);
        assert_eq!(
            (d.delivered(), d.duplicates, d.malformed, d.foreign),
            (1, 1, 1, 2)
        );
        assert!(d.seqs(0).unwrap().contains(3));
        let h = d.latency(0).unwrap();
        assert!(
            (h.quantile_ms(0.5) - 250.0).abs() < 1.0,
            "{}",
            h.quantile_ms(0.5)
        );
        assert_eq!(d.timeline().total().delivered, 1);
        assert_eq!(d.fleet_duplicates(0), 1);
    }

    #[test]
    fn another_shards_devices_are_foreign() {
        let mut d = deliveries(Partition { index: 1, count: 2 });
        let msg = |dev: &str| format!(r#"[{{"n":"urn:dev:v6iot:{dev}:seq","v":1,"t":100.0}}]"#);
        d.record(
            "v6iot/s/f000001/telemetry",
            msg("f000001").as_bytes(),
            101.0,
        ); // device 0: shard 0
        d.record(
            "v6iot/s/f000002/telemetry",
            msg("f000002").as_bytes(),
            101.0,
        ); // device 1: ours
        assert_eq!((d.delivered(), d.foreign), (1, 1));
        assert!(
            d.seqs(0).unwrap().contains(1),
            "device 1 is this shard's first"
        );
    }

    #[test]
    fn seqs_in_any_order_are_each_counted_once() {
        let mut s = Seqs::default();
        assert!(!s.contains(0) && !s.contains(1));
        for seq in [1, 2, 5, 3, 0, 7, 4, 6, 9] {
            assert!(s.insert(seq), "{seq}");
        }
        assert_eq!(s.upto, 7, "the run from 1 absorbed the early ones");
        assert_eq!(s.others.as_deref(), Some(&HashSet::from([0, 9])));
        for seq in [0, 1, 4, 7, 9] {
            assert!(!s.insert(seq), "{seq} again");
            assert!(s.contains(seq));
        }
        assert!(!s.contains(8) && !s.contains(10) && !s.contains(u32::MAX));
        assert_eq!(
            (
                s.count_in(1, 9),
                s.count_in(0, 100),
                s.count_in(3, 5),
                s.count_in(8, 8)
            ),
            (8, 9, 3, 0)
        );
        assert!(s.insert(u32::MAX) && s.insert(8) && s.contains(8));
        assert_eq!(s.upto, 9);
        assert_eq!(s.len(), 11);
        let mut top = Seqs {
            upto: u32::MAX - 1,
            others: None,
        };
        assert!(top.insert(u32::MAX) && !top.insert(u32::MAX) && top.contains(u32::MAX));
        let mut clean = Seqs::default();
        assert!(clean.insert(2) && clean.insert(1));
        assert!(
            clean.others.is_none(),
            "no set kept once deliveries are in order again"
        );
    }

    #[test]
    fn reads_seq_among_other_fields_and_escaped_names() {
        let mut d = deliveries(Partition::WHOLE);
        let msg = br#"[{"bn":"x","n":"urn:dev:v6iot:f000002:temperature","u":"Cel","v":20.4,"t":100.0,"rid":"7"},{"n":"urn:dev:v6iot:f000002:s\u0065q","vs":"ignored","v":9,"t":100.5}]"#;
        d.record("v6iot/s/f000002/telemetry", msg, 101.0);
        assert_eq!((d.delivered(), d.malformed), (1, 0));
        assert!(d.seqs(1).unwrap().contains(9));
        d.record(
            "v6iot/s/f000002/telemetry",
            br#"[{"n":"urn:dev:v6iot:f2:temperature","v":1,"t":1}]"#,
            2.0,
        );
        assert_eq!(d.malformed, 1);
    }
}
