//! The run report: its schema (documented field by field in `simulator/REPORT.md`), how a run's
//! counts become one ([`build`]), how shards' reports merge ([`merge`]), and the HTML page with
//! its plots ([`html`]).
//!
//! Every report the devices made ends in exactly one class:
//!
//! ```text
//! made = delivered + unsent_at_end + lost + refused
//! ```
//!
//! `delivered` — seen at the broker (at least once); `unsent_at_end` — still queued at its
//! device when the run ended, not delivered; `refused` — refused for good by the edge (4.xx,
//! 5.xx other than 5.03 and 4.03), never delivered; `lost` — everything else: acknowledged by the
//! edge but not delivered by the end of the settle period (the collector's wait after the
//! devices stopped), or dropped by the device's full queue (each cause counted). The
//! classes are computed per report from the devices' own records and the deliveries, and
//! cross-checked against the SDK's counters; any disagreement is listed under `checks`.

pub mod build;
pub mod html;
pub mod merge;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::histogram::HistogramReport;
use crate::shard::ShardStats;
use crate::timeline::TimelineReport;
pub use build::OscoreCounts;

/// The schema's name and version, the report's first field.
pub const SCHEMA: &str = "v6iot-sim/report/1";

/// A run's report (one shard's, or shards merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// What ran.
    pub scenario: ScenarioInfo,
    /// Which shards this report covers.
    pub shards: ShardsInfo,
    /// Unix time of the run's start.
    pub started_unix: f64,
    /// Seconds from the start to the end of the run: the devices stopped (at the end of the
    /// drain, or once every report was resolved), then the settle period.
    pub ended_s: f64,
    /// Seconds the collector waited after the devices stopped for the reports the edge had
    /// acknowledged to be delivered (0 when all were already; at most `scenario.settle_s`;
    /// merged: the longest of the shards').
    #[serde(default)]
    pub settled_s: f64,
    /// Per fleet.
    pub fleets: Vec<FleetReport>,
    /// Every fleet added up.
    pub total: FleetReport,
    /// What happened second by second (every fleet).
    pub timeline: TimelineReport,
    /// The faults injected, when, and whether they worked.
    pub faults: Vec<FaultMark>,
    /// The simulator's own resources, one entry per shard.
    pub simulators: Vec<SimulatorReport>,
    /// Consistency of the counts.
    pub checks: Checks,
    /// Things a reader should know (the simulator was the bottleneck, reports unsent, …).
    pub warnings: Vec<String>,
}

/// The scenario of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Its name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Fingerprint of the settings that shape the run (shards of one run share it).
    pub fingerprint: String,
    /// The reporting period, seconds.
    pub duration_s: f64,
    /// The longest drain, seconds.
    pub drain_s: f64,
    /// The longest settle period, seconds: after the devices stopped, how long the collector
    /// would wait for acknowledged reports to be delivered.
    #[serde(default)]
    pub settle_s: f64,
    /// Devices in the whole scenario (every shard).
    pub devices: u64,
}

/// Which shards a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsInfo {
    /// Shards the scenario was split into.
    pub count: u32,
    /// The ones in this report.
    pub included: Vec<u32>,
    /// XOR of the devices' digests (id, address, schedule): a merge of all shards has the
    /// unsharded run's.
    pub devices_digest: String,
}

/// What became of one fleet's reports (or of every fleet's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// The fleet's name (`total` for the sum).
    pub name: String,
    /// Its transport.
    pub transport: String,
    /// Devices simulated (in the shards covered).
    pub devices: u64,
    /// Devices that powered on.
    pub powered_on: u64,
    /// Devices that registered at least once.
    pub registered: u64,
    /// Registrations after a device's first (after the edge forgot it).
    pub reregistered: u64,
    /// Reports the devices made.
    pub made: u64,
    /// Made reports that went on the wire at least once.
    pub sent: u64,
    /// Reports the edge acknowledged (2.xx).
    pub acknowledged: u64,
    /// Reports refused for good and not delivered.
    pub refused: u64,
    /// Refusals by response code (`"4.00"`: count).
    pub refused_by_code: BTreeMap<String, u64>,
    /// Made reports seen at the broker.
    pub delivered: u64,
    /// Delivered reports whose acknowledgement never reached the device (still queued there
    /// at the end; counted in `delivered`).
    pub delivered_unacknowledged: u64,
    /// Deliveries of a report already delivered.
    pub duplicates: u64,
    /// Reports still queued at their device at the end, not delivered.
    pub unsent_at_end: u64,
    /// Reports neither delivered, refused nor unsent: `lost_by_cause` says why.
    pub lost: u64,
    /// Why reports were lost.
    pub lost_by_cause: LostByCause,
    /// Deliveries of reports never made (must be 0).
    pub phantom: u64,
    /// 5.03 answers to reports (back-pressure; each report retried after Max-Age). Not the
    /// registrations' 5.03s: those are `registration_busy_503`.
    pub busy_503: u64,
    /// Report requests that timed out (retried).
    pub timeouts: u64,
    /// 4.03 answers to reports (the device registered again, the report kept).
    pub forbidden: u64,
    /// Registration requests (`POST /rd`) and updates (`POST /rd/{location}`) the devices sent,
    /// each once however often CoAP retransmitted it.
    #[serde(default)]
    pub registration_attempts: u64,
    /// Of those, answered 5.03 (the directory busy; the device tried again after Max-Age).
    #[serde(default)]
    pub registration_busy_503: u64,
    /// Of those, answered with another error (4.xx, 5.xx but 5.03; a 2.01 without a location;
    /// an update's 4.04, after which the device registered afresh).
    #[serde(default)]
    pub registration_refused: u64,
    /// Of those, never answered (timed out or reset).
    #[serde(default)]
    pub registration_unanswered: u64,
    /// CoAP retransmissions of Confirmable messages (registrations and reports).
    pub retransmissions: u64,
    /// Delivered reports per second of the reporting period.
    pub throughput_per_s: f64,
    /// End-to-end latency: report scheduled at the device → delivered to the subscriber.
    pub latency: HistogramReport,
    /// Power-on → first registration acknowledged.
    pub registration: HistogramReport,
    /// OSCORE counters of the fleet's devices (all 0 for plain fleets).
    #[serde(default)]
    pub oscore: OscoreCounts,
    /// An NB-IoT fleet's sleeps, wake-ups, moves, carrier and commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbiot: Option<crate::nbiot::fleet::NbiotReport>,
    /// A 6LoWPAN fleet's frames and drops (the total also the medium's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowpan: Option<crate::lowpan::report::LowpanReport>,
}

/// Why reports were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostByCause {
    /// Acknowledged by the edge, not seen at the broker by the end of the settle period.
    pub acknowledged_not_delivered: u64,
    /// Dropped by the device's full queue, never sent.
    pub device_queue_full: u64,
}

/// A fault on the time axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultMark {
    /// When it began, seconds from the start.
    pub at_s: f64,
    /// What (`edge_kill`, `broker_outage`, `link_loss`, …).
    pub kind: String,
    /// How long the target was down or lossy, seconds.
    pub length_s: f64,
    /// What was done.
    pub detail: String,
    /// Whether it was carried out (a process that would not restart is `false`).
    pub ok: bool,
}

/// The simulator's own resources in one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulatorReport {
    /// The shard.
    pub shard: u32,
    /// Device threads.
    pub threads: u16,
    /// Devices in this shard.
    pub devices: u64,
    /// CPU the whole process used, seconds.
    pub cpu_s: f64,
    /// CPU of the device threads, seconds each.
    pub thread_cpu_s: Vec<f64>,
    /// The process's peak resident memory, bytes.
    pub peak_rss_bytes: u64,
    /// Resident memory once every device was registered (or at the end), bytes.
    pub rss_registered_bytes: u64,
    /// That, per device.
    pub rss_per_device_bytes: f64,
    /// How late device deadlines were handled (a busy simulator shows here).
    pub timer_lag: HistogramReport,
    /// Datagram counts of the device threads.
    pub datagrams: ShardStats,
    /// Whether the simulator itself limited the run (its threads saturated, or deadlines late).
    pub bottleneck: bool,
}

/// Consistency of the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// No problem found.
    pub consistent: bool,
    /// Each problem, in words.
    pub problems: Vec<String>,
}

impl FleetReport {
    /// Whether `made = delivered + unsent_at_end + lost + refused` holds and `lost` is its
    /// causes added up.
    pub fn adds_up(&self) -> bool {
        self.made == self.delivered + self.unsent_at_end + self.lost + self.refused
            && self.lost
                == self.lost_by_cause.acknowledged_not_delivered
                    + self.lost_by_cause.device_queue_full
    }

    /// Adds `o`'s counts (not the histograms, see [`merge`], nor the throughput, which is
    /// `delivered` over the reporting period).
    pub fn add_counts(&mut self, o: &FleetReport) {
        self.devices += o.devices;
        self.powered_on += o.powered_on;
        self.registered += o.registered;
        self.reregistered += o.reregistered;
        self.made += o.made;
        self.sent += o.sent;
        self.acknowledged += o.acknowledged;
        self.refused += o.refused;
        for (code, n) in &o.refused_by_code {
            *self.refused_by_code.entry(code.clone()).or_default() += n;
        }
        self.delivered += o.delivered;
        self.delivered_unacknowledged += o.delivered_unacknowledged;
        self.duplicates += o.duplicates;
        self.unsent_at_end += o.unsent_at_end;
        self.lost += o.lost;
        self.lost_by_cause.acknowledged_not_delivered += o.lost_by_cause.acknowledged_not_delivered;
        self.lost_by_cause.device_queue_full += o.lost_by_cause.device_queue_full;
        self.phantom += o.phantom;
        self.busy_503 += o.busy_503;
        self.timeouts += o.timeouts;
        self.forbidden += o.forbidden;
        self.registration_attempts += o.registration_attempts;
        self.registration_busy_503 += o.registration_busy_503;
        self.registration_refused += o.registration_refused;
        self.registration_unanswered += o.registration_unanswered;
        self.retransmissions += o.retransmissions;
        self.oscore.add(&o.oscore);
        if let Some(n) = &o.nbiot {
            self.nbiot.get_or_insert_default().add(n);
        }
        if let Some(n) = &o.lowpan {
            self.lowpan.get_or_insert_default().add(n);
        }
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A short human summary (what the progress line ends with).
    pub fn summary(&self) -> String {
        let t = &self.total;
        let mut s = format!(
            "devices {} (registered {}), made {}, sent {}, acknowledged {}, delivered {}, unsent at end {}, lost {}, refused {}, duplicates {}\nlatency p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms max {:.1} ms; registration p50 {:.1} ms p99 {:.1} ms; {:.0} delivered/s",
            t.devices,
            t.registered,
            t.made,
            t.sent,
            t.acknowledged,
            t.delivered,
            t.unsent_at_end,
            t.lost,
            t.refused,
            t.duplicates,
            t.latency.p50_ms,
            t.latency.p99_ms,
            t.latency.p999_ms,
            t.latency.max_ms,
            t.registration.p50_ms,
            t.registration.p99_ms,
            t.throughput_per_s,
        );
        let _ = write!(
            s,
            "\nreports answered 5.03: {}; registration requests {}: answered 5.03 {}, refused {}, unanswered {}",
            t.busy_503,
            t.registration_attempts,
            t.registration_busy_503,
            t.registration_refused,
            t.registration_unanswered,
        );
        for w in &self.warnings {
            s.push_str("\nwarning: ");
            s.push_str(w);
        }
        if !self.checks.consistent {
            for p in &self.checks.problems {
                s.push_str("\ninconsistent: ");
                s.push_str(p);
            }
        }
        s
    }
}

/// A response code as the report names it: `4.00` from the byte on the wire (class × 32 +
/// detail).
pub fn code_name(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1f)
}
