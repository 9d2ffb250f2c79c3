//! Security events, sans-IO: what the authentication gateway and the rate limits refused, counted
//! by cause, with a few samples, gathered into one report per interval for the platform
//! (`{prefix}/{site}/_edge/{edge}/security`).
//!
//! A flood of a million bad datagrams becomes one message per interval with a count of a million
//! and at most `max_samples` examples: the report never amplifies what it reports. Nothing is
//! published while nothing happens.
//!
//! Report (JSON):
//!
//! ```json
//! {"kind":"security_report","edge":"edge-1","at_ms":1764150000000,"interval_s":2,
//!  "counts":{"replay":3,"source_limited":12000},
//!  "totals":{"replay":5,"source_limited":12000,"unknown_kid":1},
//!  "samples":[{"cause":"replay","source":"[2001:db8::7]:5683","device":"dev-7","kid":"07","at_ms":1764149999100}],
//!  "quarantined":[{"kid":"07","device":"dev-7","failures":20,"for_s":300,"at_ms":1764149999900}]}
//! ```
//!
//! `counts` are this interval's, `totals` since the edge started. Besides the refusals by cause
//! ([`SecurityCause::as_str`]) they may hold `audit_rows_dropped`: audit rows the registry
//! thread could not take in time (its queue was full; see `registry_worker`). The same topic
//! carries the audit trail's checkpoints (`"kind":"audit_checkpoint"`, see
//! [`crate::audit::checkpoint`]). Nothing here reads a clock or
//! writes anywhere: the gateway passes times in, the server publishes [`SecurityReport::to_json`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::failures::{SecurityCause, SecurityEvent};

/// The report's count of audit rows dropped.
pub const AUDIT_DROPPED: &str = "audit_rows_dropped";

/// The `kind` of a security report.
pub const REPORT_KIND: &str = "security_report";

/// A sample in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Why ([`SecurityCause::as_str`]).
    pub cause: &'static str,
    /// Source address and port.
    pub source: String,
    /// The device, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The kid, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// A kid's quarantine begun in the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineNote {
    /// The quarantined kid, hex.
    pub kid: String,
    /// Its device.
    pub device: String,
    /// Failed verifications that led to it.
    pub failures: u32,
    /// Its length, seconds.
    pub for_s: u64,
    /// When it began, Unix milliseconds.
    pub at_ms: u64,
}

/// One interval's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityReport {
    /// Always [`REPORT_KIND`]: tells it from the other messages on the security topic.
    pub kind: &'static str,
    /// The edge router's name.
    pub edge: String,
    /// When the report was made, Unix milliseconds.
    pub at_ms: u64,
    /// The reporting interval, seconds.
    pub interval_s: u64,
    /// Refusals in this interval, by cause.
    pub counts: BTreeMap<&'static str, u64>,
    /// Refusals since start, by cause.
    pub totals: BTreeMap<&'static str, u64>,
    /// A few examples from this interval (the first of each cause, then others up to the limit).
    pub samples: Vec<Sample>,
    /// Quarantines begun in this interval.
    pub quarantined: Vec<QuarantineNote>,
}

impl SecurityReport {
    /// The report as the JSON payload of the security topic.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising maps of enums and strings cannot fail; an empty payload would be noticed.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Gathers events into reports.
#[derive(Debug)]
pub struct SecurityEvents {
    edge: String,
    interval: Duration,
    max_samples: usize,
    counts: BTreeMap<&'static str, u64>,
    totals: BTreeMap<&'static str, u64>,
    samples: Vec<Sample>,
    quarantined: Vec<QuarantineNote>,
    due: Option<Instant>,
}

impl SecurityEvents {
    /// Reports for edge `edge`, at most one per `interval`, each with at most `max_samples`
    /// samples.
    pub fn new(edge: impl Into<String>, interval: Duration, max_samples: usize) -> SecurityEvents {
        SecurityEvents {
            edge: edge.into(),
            interval,
            max_samples,
            counts: BTreeMap::new(),
            totals: BTreeMap::new(),
            samples: Vec::new(),
            quarantined: Vec::new(),
            due: None,
        }
    }

    /// Counts an event; keeps it as a sample while there is room (the first of each cause
    /// first).
    pub fn record(&mut self, now: Instant, unix_ms: u64, event: &SecurityEvent) {
        let cause = event.cause.as_str();
        let count = self.counts.entry(cause).or_insert(0);
        *count += 1;
        let first_of_cause = *count == 1;
        *self.totals.entry(cause).or_insert(0) += 1;
        let room = self.samples.len() < self.max_samples;
        // Keep half the room for causes not seen yet, so one flood cannot hide the others.
        let half = self.samples.len() < self.max_samples.div_ceil(2);
        if room && (first_of_cause || half) {
            self.samples.push(Sample {
                cause,
                source: event.peer.to_string(),
                device: event.device.clone(),
                kid: event.kid.as_deref().map(hex::encode),
                at_ms: unix_ms,
            });
        }
        self.schedule(now);
    }

    /// Counts `n` audit rows that were dropped (the registry thread's queue was full).
    pub fn record_audit_dropped(&mut self, now: Instant, n: u64) {
        if n == 0 {
            return;
        }
        *self.counts.entry(AUDIT_DROPPED).or_insert(0) += n;
        *self.totals.entry(AUDIT_DROPPED).or_insert(0) += n;
        self.schedule(now);
    }

    /// Notes a quarantine that began.
    pub fn record_quarantine(&mut self, now: Instant, unix_ms: u64, note: QuarantineNote) {
        let note = QuarantineNote {
            at_ms: unix_ms,
            ..note
        };
        if self.quarantined.len() < self.max_samples {
            self.quarantined.push(note);
        }
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) {
        if self.due.is_none() {
            self.due = Some(now + self.interval);
        }
    }

    /// The total of one cause since start.
    pub fn total(&self, cause: SecurityCause) -> u64 {
        self.totals.get(cause.as_str()).copied().unwrap_or(0)
    }

    /// When a report is due, if anything happened.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// The report, once it is due.
    pub fn poll_report(&mut self, now: Instant, unix_ms: u64) -> Option<SecurityReport> {
        if self.due.is_none_or(|due| due > now) {
            return None;
        }
        self.due = None;
        Some(SecurityReport {
            kind: REPORT_KIND,
            edge: self.edge.clone(),
            at_ms: unix_ms,
            interval_s: self.interval.as_secs(),
            counts: std::mem::take(&mut self.counts),
            totals: self.totals.clone(),
            samples: std::mem::take(&mut self.samples),
            quarantined: std::mem::take(&mut self.quarantined),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn event(cause: SecurityCause, port: u16) -> SecurityEvent {
        SecurityEvent {
            cause,
            peer: SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            device: Some("dev-1".into()),
            kid: Some(vec![0x01, 0xab]),
        }
    }

    #[test]
    fn quiet_means_no_report() {
        let mut e = SecurityEvents::new("edge-1", Duration::from_secs(2), 8);
        let t0 = Instant::now();
        assert_eq!(e.poll_timeout(), None);
        assert_eq!(e.poll_report(t0 + Duration::from_secs(100), 0), None);
    }

    #[test]
    fn a_flood_becomes_one_report_with_counts_and_bounded_samples() {
        let mut e = SecurityEvents::new("edge-1", Duration::from_secs(2), 4);
        let t0 = Instant::now();
        for i in 0..10_000u16 {
            e.record(t0, 1000, &event(SecurityCause::SourceLimited, i));
        }
        e.record(t0, 1001, &event(SecurityCause::Replay, 9));
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(e.poll_report(t0 + Duration::from_secs(1), 0), None);
        let r = e.poll_report(t0 + Duration::from_secs(2), 5000).unwrap();
        assert_eq!(r.counts["source_limited"], 10_000);
        assert_eq!(r.counts["replay"], 1);
        assert_eq!(r.samples.len(), 3, "two of the flood, the first replay");
        assert!(r.samples.iter().any(|s| s.cause == "replay"));
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(json["kind"], "security_report");
        assert_eq!(json["edge"], "edge-1");
        assert_eq!(json["counts"]["source_limited"], 10_000);
        assert_eq!(json["samples"][2]["kid"], "01ab");
        assert_eq!(json["samples"][2]["source"], "[::1]:9");
        // The next interval starts empty; totals carry on.
        e.record(t0, 6000, &event(SecurityCause::Replay, 9));
        let r2 = e.poll_report(t0 + Duration::from_secs(5), 7000).unwrap();
        assert_eq!(r2.counts.len(), 1);
        assert_eq!(r2.totals["replay"], 2);
        assert_eq!(e.total(SecurityCause::SourceLimited), 10_000);
    }

    #[test]
    fn quarantines_are_reported() {
        let mut e = SecurityEvents::new("edge-1", Duration::from_secs(1), 4);
        let t0 = Instant::now();
        e.record_quarantine(
            t0,
            42,
            QuarantineNote {
                kid: "07".into(),
                device: "dev-7".into(),
                failures: 20,
                for_s: 300,
                at_ms: 0,
            },
        );
        let r = e.poll_report(t0 + Duration::from_secs(1), 43).unwrap();
        assert_eq!(r.quarantined[0].at_ms, 42);
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(json["quarantined"][0]["kid"], "07");
        assert_eq!(json["quarantined"][0]["device"], "dev-7");
    }

    #[test]
    fn dropped_audit_rows_are_reported() {
        let mut e = SecurityEvents::new("edge-1", Duration::from_secs(1), 4);
        let t0 = Instant::now();
        e.record_audit_dropped(t0, 0);
        assert_eq!(e.poll_timeout(), None, "nothing dropped, nothing due");
        e.record_audit_dropped(t0, 1200);
        let r = e.poll_report(t0 + Duration::from_secs(1), 43).unwrap();
        assert_eq!(r.counts[AUDIT_DROPPED], 1200);
        assert_eq!(r.totals[AUDIT_DROPPED], 1200);
    }
}
