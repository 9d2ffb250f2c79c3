//! Counts what reaches the broker: subscribes to the fleet's telemetry topics and matches each
//! delivery to the report that caused it by (device, `seq`), measuring end-to-end latency from
//! the report's SenML time to its arrival.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// What the subscriber saw.
#[derive(Debug)]
pub struct Deliveries {
    /// Per device, the `seq`s seen (looked up by `&str`, so a delivery allocates only for a
    /// device's first one).
    seen: HashMap<String, Seqs>,
    delivered: u64,
    /// Deliveries of a (device, seq) already seen.
    pub duplicates: u64,
    /// Messages on the topic that did not parse as a fleet report.
    pub foreign: u64,
    latency_us: Histogram<u64>,
}

impl Deliveries {
    /// Nothing seen yet.
    pub fn new() -> Result<Deliveries, hdrhistogram::CreationError> {
        // 1 µs to 1 hour, 3 significant digits.
        let latency_us = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
        Ok(Deliveries {
            seen: HashMap::new(),
            delivered: 0,
            duplicates: 0,
            foreign: 0,
            latency_us,
        })
    }

    /// Distinct reports delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Whether `device`'s report `seq` arrived.
    pub fn contains(&self, device: &str, seq: u64) -> bool {
        self.seen.get(device).is_some_and(|s| s.contains(seq))
    }

    /// Takes one message from `{…}/{device}/telemetry`, arriving at `unix_now` seconds.
    pub fn record(&mut self, topic: &str, payload: &[u8], unix_now: f64) {
        let device = topic.rsplit('/').nth(1).unwrap_or_default();
        let Some((seq, t)) = seq_of(payload) else {
            self.foreign += 1;
            return;
        };
        let fresh = match self.seen.get_mut(device) {
            Some(seqs) => seqs.insert(seq),
            None => {
                let mut seqs = Seqs::default();
                seqs.insert(seq);
                self.seen.insert(device.to_owned(), seqs);
                true
            }
        };
        if !fresh {
            self.duplicates += 1;
            return;
        }
        self.delivered += 1;
        let us = ((unix_now - t).max(0.0) * 1e6) as u64;
        let _ = self.latency_us.record(us.max(1));
    }

    /// Latency percentile `q` (0..=1) in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Largest latency, milliseconds.
    pub fn latency_max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

impl crate::subscriber::Sink for Deliveries {
    fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.record(topic, payload, unix_now());
    }
}

/// The `seq`s of one device seen so far: a device numbers its reports 1, 2, 3, … and they
/// mostly arrive in order, so the run from 1 is kept as one number and only the others in a
/// set (no hashing per delivery while deliveries come in order).
#[derive(Debug, Default)]
struct Seqs {
    /// Every seq in `1..=upto` was seen.
    upto: u64,
    /// Seen seqs outside that run (early ones, 0).
    others: HashSet<u64>,
}

impl Seqs {
    /// Adds `seq`; false if it was seen already.
    fn insert(&mut self, seq: u64) -> bool {
        if seq >= 1 && seq <= self.upto {
            return false;
        }
        if seq != self.upto.wrapping_add(1) || seq == 0 {
            return self.others.insert(seq);
        }
        self.upto = seq;
        while let Some(next) = self.upto.checked_add(1)
            && !self.others.is_empty()
            && self.others.remove(&next)
        {
            self.upto = next;
        }
        true
    }

    fn contains(&self, seq: u64) -> bool {
        (1..=self.upto).contains(&seq) || self.others.contains(&seq)
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
fn seq_of(payload: &[u8]) -> Option<(u64, f64)> {
    let records: Vec<SeqRecord<'_>> = serde_json::from_slice(payload).ok()?;
    records.iter().find_map(|r| {
        r.n.as_deref()?.ends_with(":seq").then_some(())?;
        Some((r.v? as u64, r.t?))
    })
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long after the last report the collector keeps listening.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_deliveries_and_duplicates() {
        let mut d = Deliveries::new().unwrap();
        let msg = br#"[{"rid":"9","n":"urn:dev:v6iot:f000001:temperature","v":20.4,"t":100.0},{"n":"urn:dev:v6iot:f000001:seq","v":3,"t":100.0}]"#;
        d.record("v6iot/s/f000001/telemetry", msg, 100.25);
        d.record("v6iot/s/f000001/telemetry", msg, 100.5);
        d.record("v6iot/s/f000001/telemetry", b"nonsense", 100.5);
        assert_eq!((d.delivered(), d.duplicates, d.foreign), (1, 1, 1));
        assert!(d.contains("f000001", 3));
        assert!(
            (d.latency_ms(0.5) - 250.0).abs() < 1.0,
            "{}",
            d.latency_ms(0.5)
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
        assert_eq!(s.others, HashSet::from([0, 9]));
        for seq in [0, 1, 4, 7, 9] {
            assert!(!s.insert(seq), "{seq} again");
            assert!(s.contains(seq));
        }
        assert!(!s.contains(8) && !s.contains(10) && !s.contains(u64::MAX));
        assert!(s.insert(u64::MAX) && s.insert(8) && s.contains(8));
        assert_eq!(s.upto, 9);
        let mut top = Seqs {
            upto: u64::MAX - 1,
            others: HashSet::new(),
        };
        assert!(top.insert(u64::MAX) && !top.insert(u64::MAX) && top.contains(u64::MAX));
    }

    #[test]
    fn reads_seq_among_other_fields_and_escaped_names() {
        let mut d = Deliveries::new().unwrap();
        let msg = br#"[{"bn":"x","n":"urn:dev:v6iot:f2:temperature","u":"Cel","v":20.4,"t":100.0,"rid":"7"},{"n":"urn:dev:v6iot:f2:s\u0065q","vs":"ignored","v":9,"t":100.5}]"#;
        d.record("v6iot/s/f2/telemetry", msg, 101.0);
        assert_eq!((d.delivered(), d.foreign), (1, 0));
        assert!(d.contains("f2", 9));
        assert!(!d.contains("f2", 8) && !d.contains("f3", 9));
        d.record(
            "v6iot/s/f2/telemetry",
            br#"[{"n":"urn:dev:v6iot:f2:temperature","v":1,"t":1}]"#,
            2.0,
        );
        assert_eq!(d.foreign, 1);
    }
}
