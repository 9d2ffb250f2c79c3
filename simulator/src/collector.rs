//! Counts what reaches the broker: subscribes to the fleet's telemetry topics and matches each
//! delivery to the report that caused it by (device, `seq`), measuring end-to-end latency from
//! the report's SenML time to its arrival.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// What the subscriber saw.
#[derive(Debug)]
pub struct Deliveries {
    seen: HashSet<(String, u64)>,
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
            seen: HashSet::new(),
            duplicates: 0,
            foreign: 0,
            latency_us,
        })
    }

    /// Distinct reports delivered.
    pub fn delivered(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Whether `device`'s report `seq` arrived.
    pub fn contains(&self, device: &str, seq: u64) -> bool {
        self.seen.contains(&(device.to_owned(), seq))
    }

    /// Takes one message from `{…}/{device}/telemetry`, arriving at `unix_now` seconds.
    pub fn record(&mut self, topic: &str, payload: &[u8], unix_now: f64) {
        let device = topic.rsplit('/').nth(1).unwrap_or_default();
        let Some((seq, t)) = seq_of(payload) else {
            self.foreign += 1;
            return;
        };
        if !self.seen.insert((device.to_owned(), seq)) {
            self.duplicates += 1;
            return;
        }
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

/// The `seq` value and its time from a resolved SenML-JSON array as the edge publishes it.
fn seq_of(payload: &[u8]) -> Option<(u64, f64)> {
    let records: Vec<serde_json::Value> = serde_json::from_slice(payload).ok()?;
    records.iter().find_map(|r| {
        let name = r.get("n")?.as_str()?;
        name.ends_with(":seq").then_some(())?;
        Some((r.get("v")?.as_f64()? as u64, r.get("t")?.as_f64()?))
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
}
