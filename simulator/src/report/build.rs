//! From a run's counts to its [`Report`]: every report each device made put in one class
//! ([`classify`]), fleets added up, the simulator's resources and the warnings a reader needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Checks, FaultMark, FleetReport, Report, SCHEMA, ScenarioInfo, ShardsInfo, SimulatorReport,
    code_name,
};
use crate::collector::{Deliveries, Seqs};
use crate::fleet::FleetSensor;
use crate::histogram::LatencyHistogram;
use crate::plan::Plan;
use crate::shard::{ShardResult, ShardStats};
use crate::timeline::Timeline;

/// What became of one device's reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFate {
    /// Made.
    pub made: u64,
    /// Went on the wire at least once.
    pub sent: u64,
    /// Acknowledged (the SDK's count).
    pub acknowledged: u64,
    /// Delivered (made ones seen at the broker).
    pub delivered: u64,
    /// Delivered but still queued at the device.
    pub delivered_unacknowledged: u64,
    /// Queued at the device at the end, not delivered.
    pub unsent_at_end: u64,
    /// Refused and not delivered, by code.
    pub refused: BTreeMap<u8, u64>,
    /// Acknowledged, not delivered by the end of the settle period.
    pub lost_acknowledged: u64,
    /// Dropped by the full queue, never delivered.
    pub lost_dropped: u64,
    /// Deliveries of seqs the device never made.
    pub phantom: u64,
    /// Disagreements between the device's record and the SDK's counters.
    pub problems: Vec<String>,
}

/// What the SDK's reporter says of a device at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReporterView {
    /// Reports queued (including the one on its way).
    pub queued: u64,
    /// Whether the front report is on its way.
    pub in_flight: bool,
    /// Acknowledged.
    pub acked: u64,
    /// Refused for good.
    pub rejected: u64,
    /// Dropped by the full queue.
    pub dropped: u64,
}

/// Puts each report the device made (`1..=made`) in one class: delivered (seen at the broker);
/// else unsent at end (queued at the device: `front..=made` but the dropped); else refused;
/// else lost — dropped by the full queue, or acknowledged (everything before `front` that was
/// neither refused nor dropped) and never delivered. Cross-checks the application's record
/// against the SDK's reporter (`sdk`).
pub fn classify(app: &FleetSensor, sdk: ReporterView, seqs: Option<&Seqs>) -> DeviceFate {
    let empty = Seqs::default();
    let seen = seqs.unwrap_or(&empty);
    let counts = app.counts();
    let made = counts.made;
    let front = app.front();
    let no = crate::fleet::Outcomes::default();
    let outcomes = app.outcomes().unwrap_or(&no);
    let mut fate = DeviceFate {
        made: u64::from(made),
        acknowledged: sdk.acked,
        ..DeviceFate::default()
    };
    fate.delivered = seen.count_in(1, made);
    fate.phantom = seen.len() - fate.delivered;
    // Queued: front..=made without the dropped ones.
    let dropped_queued = outcomes.dropped.iter().filter(|s| **s >= front).count() as u64;
    let queued_span = if front <= made {
        u64::from(made - front) + 1
    } else {
        0
    };
    let queued = queued_span - dropped_queued.min(queued_span);
    let queued_delivered = seen.count_in(front, made)
        - outcomes
            .dropped
            .iter()
            .filter(|s| **s >= front && seen.contains(**s))
            .count() as u64;
    fate.delivered_unacknowledged = queued_delivered;
    fate.unsent_at_end = queued - queued_delivered.min(queued);
    for &(seq, code) in &outcomes.refused {
        if !seen.contains(seq) {
            *fate.refused.entry(code).or_default() += 1;
        }
    }
    fate.lost_dropped = outcomes
        .dropped
        .iter()
        .filter(|s| !seen.contains(**s))
        .count() as u64;
    // Acknowledged: before the front, neither refused nor dropped.
    let before = front.saturating_sub(1).min(made);
    let refused_before = outcomes
        .refused
        .iter()
        .filter(|(s, _)| *s <= before)
        .count() as u64;
    let dropped_before = outcomes.dropped.iter().filter(|s| **s <= before).count() as u64;
    let acked = u64::from(before) - refused_before - dropped_before;
    let acked_delivered = seen.count_in(1, before)
        - outcomes
            .refused
            .iter()
            .filter(|(s, _)| *s <= before && seen.contains(*s))
            .count() as u64
        - outcomes
            .dropped
            .iter()
            .filter(|s| **s <= before && seen.contains(**s))
            .count() as u64;
    fate.lost_acknowledged = acked - acked_delivered.min(acked);
    let tried = u64::from(queued > 0 && (sdk.in_flight || app.front_tried()));
    fate.sent = acked + refused_before + tried;
    // Cross-checks: the application's record against the SDK's reporter.
    let id = app.device_id();
    let mut check = |what: &str, mine: u64, sdk: u64| {
        if mine != sdk {
            fate.problems.push(format!(
                "{id}: {what}: the device's record says {mine}, the SDK's reporter {sdk}"
            ));
        }
    };
    check("acknowledged", acked, sdk.acked);
    check("refused", outcomes.refused.len() as u64, sdk.rejected);
    check("dropped", outcomes.dropped.len() as u64, sdk.dropped);
    check("queued at the end", queued, sdk.queued);
    if fate.phantom > 0 {
        fate.problems.push(format!(
            "{id}: {} deliveries of reports it never made",
            fate.phantom
        ));
    }
    let refused_delivered = outcomes
        .refused
        .iter()
        .filter(|(s, _)| seen.contains(*s))
        .count();
    if refused_delivered > 0 {
        fate.problems.push(format!(
            "{id}: {refused_delivered} refused reports were delivered anyway"
        ));
    }
    fate
}

/// OSCORE counters over a fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OscoreCounts {
    /// Responses that verified.
    pub responses_verified: u64,
    /// Responses that failed verification (dropped; the request retried).
    pub responses_rejected: u64,
    /// Requests from the edge that failed verification.
    pub requests_rejected: u64,
    /// Messages held because no sequence number was left below the durable mark.
    pub held: u64,
    /// Writes of the fleet's OSCORE state file during the run (one at start; more only when
    /// devices use up their reserved sequence numbers).
    #[serde(default)]
    pub state_writes: u64,
}

impl OscoreCounts {
    /// Adds `o`.
    pub fn add(&mut self, o: &OscoreCounts) {
        self.responses_verified += o.responses_verified;
        self.responses_rejected += o.responses_rejected;
        self.requests_rejected += o.requests_rejected;
        self.held += o.held;
        self.state_writes += o.state_writes;
    }
}

/// Everything besides the shards and the deliveries that goes into a report.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Unix time of the start.
    pub started_unix: f64,
    /// Seconds from the start to the end.
    pub ended_s: f64,
    /// Seconds the collector waited after the devices stopped for acknowledged reports to be
    /// delivered (the settle period, as long as it took).
    pub settled_s: f64,
    /// The faults, as injected.
    pub faults: Vec<FaultMark>,
    /// Process CPU and memory over time (`cpu_s`, `rss_bytes` of each bucket).
    pub resources: Timeline,
    /// Process CPU, seconds.
    pub cpu_s: f64,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: u64,
    /// Resident memory once every device was registered, bytes.
    pub rss_registered_bytes: u64,
    /// Device threads.
    pub threads: u16,
}

/// The largest number of problems listed (the count says how many more there were).
const MAX_PROBLEMS: usize = 50;

/// Builds the report of one shard's run.
pub fn report(
    plan: &Plan,
    shards: &[ShardResult],
    deliveries: &Deliveries,
    facts: RunFacts,
) -> Report {
    let s = plan.scenario();
    let mut fleets: Vec<FleetReport> = s
        .fleets
        .iter()
        .map(|f| FleetReport {
            name: f.name.clone(),
            transport: f.transport.name().to_owned(),
            nbiot: matches!(f.transport, crate::scenario::Transport::Nbiot(_))
                .then(crate::nbiot::fleet::NbiotReport::default),
            lowpan: matches!(f.transport, crate::scenario::Transport::Lowpan(_))
                .then(crate::lowpan::report::LowpanReport::default),
            ..FleetReport::default()
        })
        .collect();
    let mut registration: Vec<LatencyHistogram> =
        s.fleets.iter().map(|_| LatencyHistogram::new()).collect();
    let mut problems = Vec::new();
    let mut problem_count = 0usize;
    let mut timeline = facts.resources.clone();
    let mut datagrams = ShardStats::default();
    let mut timer_lag = LatencyHistogram::new();
    for shard in shards {
        timeline.merge(&shard.timeline);
        timer_lag.merge(&shard.timer_lag);
        add_stats(&mut datagrams, &shard.stats);
        for (f, h) in shard.registration.iter().enumerate() {
            if let Some(r) = registration.get_mut(f) {
                r.merge(h);
            }
        }
        for (i, m) in shard.members.iter().enumerate() {
            let Some(d) = shard.roster.device_ref(i) else {
                continue;
            };
            let Some(fr) = fleets.get_mut(d.fleet) else {
                continue;
            };
            fr.devices += 1;
            let Some(device) = m.device() else {
                continue;
            };
            fr.powered_on += u64::from(m.powered());
            if let (Some(n), Some(figures)) = (
                m.node().and_then(crate::shard::Node::nbiot),
                fr.nbiot.as_mut(),
            ) {
                figures.add_node(n);
            }
            if let (Some(n), Some(figures)) = (
                m.node().and_then(crate::shard::Node::lowpan),
                fr.lowpan.as_mut(),
            ) {
                figures.add_node(n);
            }
            let regs = device.registration().map_or(0, |r| r.registrations());
            fr.registered += u64::from(regs > 0);
            fr.reregistered += u64::from(regs.saturating_sub(1));
            if let Some(c) = device.registration().map(|r| r.counts()) {
                fr.registration_attempts += u64::from(c.attempts);
                fr.registration_busy_503 += u64::from(c.busy);
                fr.registration_refused += u64::from(c.refused);
                fr.registration_unanswered += u64::from(c.unanswered);
            }
            fr.retransmissions += device.endpoint().stats().retransmissions;
            if let Some(o) = device.endpoint().oscore_stats() {
                fr.oscore.add(&OscoreCounts {
                    responses_verified: o.responses_verified,
                    responses_rejected: o.responses_rejected,
                    requests_rejected: o.requests_rejected,
                    held: o.held,
                    state_writes: 0,
                });
            }
            let view = device
                .reporter()
                .map_or(ReporterView::default(), |r| ReporterView {
                    queued: r.queued() as u64,
                    in_flight: r.in_flight(),
                    acked: r.stats().acked,
                    rejected: r.stats().rejected,
                    dropped: r.stats().refused,
                });
            let c = device.app().counts();
            fr.busy_503 += u64::from(c.busy);
            fr.timeouts += u64::from(c.timeouts);
            fr.forbidden += u64::from(c.forbidden);
            let local = shard.roster.local(i);
            let fate = classify(device.app(), view, deliveries.seqs(local));
            add_fate(fr, &fate);
            problem_count += fate.problems.len();
            for p in fate.problems {
                if problems.len() < MAX_PROBLEMS {
                    problems.push(p);
                }
            }
        }
    }
    let duration_s = s.duration.as_secs_f64();
    for (f, fr) in fleets.iter_mut().enumerate() {
        fr.duplicates = deliveries.fleet_duplicates(f);
        fr.latency = deliveries
            .latency(f)
            .map(|h| h.to_report())
            .unwrap_or_default();
        fr.registration = registration
            .get(f)
            .map(|h| h.to_report())
            .unwrap_or_default();
        fr.throughput_per_s = if duration_s > 0.0 {
            fr.delivered as f64 / duration_s
        } else {
            0.0
        };
    }
    timeline.merge(deliveries.timeline());
    let mut total = total_of(&fleets, duration_s);
    for air in shards.iter().filter_map(|s| s.air.as_ref()) {
        let lowpan = total.lowpan.get_or_insert_default();
        lowpan.air.get_or_insert_default().add(air);
    }
    for fr in fleets.iter().chain(std::iter::once(&total)) {
        if !fr.adds_up() {
            problems.push(format!(
                "fleet {}: made {} ≠ delivered {} + unsent {} + lost {} + refused {}",
                fr.name, fr.made, fr.delivered, fr.unsent_at_end, fr.lost, fr.refused
            ));
            problem_count += 1;
        }
        if fr.latency.negative > 0 {
            problems.push(format!(
                "fleet {}: {} negative latencies (a clock went backwards?)",
                fr.name, fr.latency.negative
            ));
            problem_count += 1;
        }
    }
    if problem_count > problems.len() {
        problems.push(format!(
            "… and {} more problems",
            problem_count - problems.len()
        ));
    }
    let timer = timer_lag.to_report();
    let busy_thread = shards
        .iter()
        .map(|s| busiest_share(&s.cpu))
        .fold(0.0, f64::max);
    let bottleneck = timer.p99_ms > 100.0 || busy_thread > 0.95;
    let mut warnings = Vec::new();
    if bottleneck {
        warnings.push(format!(
            "the simulator was the bottleneck: device deadlines handled up to {:.0} ms late (p99 {:.0} ms), its threads {:.0}% busy in the busiest second — the edge may be faster than this run shows; use more --threads, or shard the fleet over machines",
            timer.max_ms, timer.p99_ms, busy_thread * 100.0
        ));
    }
    if total.unsent_at_end > 0 {
        warnings.push(format!("{} reports were still queued at their devices when the drain ended (unsent_at_end): lengthen `drain` to see whether they arrive", total.unsent_at_end));
    }
    if total.lost > 0 {
        warnings.push(format!("{} reports were lost ({} acknowledged by the edge but not delivered by the end of the settle period, {:.1} s after the devices stopped (`settle` {:.0} s); {} dropped by full device queues)", total.lost, total.lost_by_cause.acknowledged_not_delivered, facts.settled_s, s.settle.as_secs_f64(), total.lost_by_cause.device_queue_full));
    }
    if total.registered < total.devices {
        warnings.push(format!(
            "{} of {} devices never registered",
            total.devices - total.registered,
            total.devices
        ));
    }
    if deliveries.malformed > 0 {
        warnings.push(format!(
            "{} messages on the telemetry topic were not fleet reports",
            deliveries.malformed
        ));
    }
    let devices = plan.len();
    let partition = plan.partition();
    let rss = facts.rss_registered_bytes;
    Report {
        schema: SCHEMA.to_owned(),
        scenario: ScenarioInfo {
            name: s.name.clone(),
            seed: s.seed,
            fingerprint: plan.scenario_fingerprint(),
            duration_s,
            drain_s: s.drain.as_secs_f64(),
            settle_s: s.settle.as_secs_f64(),
            devices: s.devices(),
        },
        shards: ShardsInfo {
            count: partition.count,
            included: vec![partition.index],
            devices_digest: format!("{:016x}", plan.devices_digest()),
        },
        started_unix: facts.started_unix,
        ended_s: facts.ended_s,
        settled_s: facts.settled_s,
        fleets,
        total,
        timeline: timeline.to_report(),
        faults: facts.faults,
        simulators: vec![SimulatorReport {
            shard: partition.index,
            threads: facts.threads,
            devices,
            cpu_s: facts.cpu_s,
            thread_cpu_s: shards.iter().map(|s| s.cpu_s).collect(),
            peak_rss_bytes: facts.peak_rss_bytes,
            rss_registered_bytes: rss,
            rss_per_device_bytes: if devices > 0 {
                rss as f64 / devices as f64
            } else {
                0.0
            },
            timer_lag: timer,
            datagrams,
            bottleneck,
        }],
        checks: Checks {
            consistent: problem_count == 0,
            problems,
        },
        warnings,
    }
}

/// The share of its time a device thread was busy in its busiest interval (the last, partial
/// one left out).
fn busiest_share(cpu: &Timeline) -> f64 {
    let width = cpu.width().as_secs_f64();
    let n = cpu.buckets().len();
    cpu.buckets()
        .iter()
        .take(n.saturating_sub(1))
        .map(|b| b.cpu_s / width)
        .fold(0.0, f64::max)
}

fn add_stats(t: &mut ShardStats, s: &ShardStats) {
    t.waits += s.waits;
    t.pauses += s.pauses;
    t.received += s.received;
    t.sent += s.sent;
    t.send_failures += s.send_failures;
    t.unroutable += s.unroutable;
    t.link_lost_up += s.link_lost_up;
    t.link_lost_down += s.link_lost_down;
    t.delay_overflow += s.delay_overflow;
    t.dead += s.dead;
    t.store_failures += s.store_failures;
    t.addresses += s.addresses;
}

fn add_fate(fr: &mut FleetReport, fate: &DeviceFate) {
    fr.made += fate.made;
    fr.sent += fate.sent;
    fr.acknowledged += fate.acknowledged;
    fr.delivered += fate.delivered;
    fr.delivered_unacknowledged += fate.delivered_unacknowledged;
    fr.unsent_at_end += fate.unsent_at_end;
    for (code, n) in &fate.refused {
        fr.refused += n;
        *fr.refused_by_code.entry(code_name(*code)).or_default() += n;
    }
    fr.lost_by_cause.acknowledged_not_delivered += fate.lost_acknowledged;
    fr.lost_by_cause.device_queue_full += fate.lost_dropped;
    fr.lost += fate.lost_acknowledged + fate.lost_dropped;
    fr.phantom += fate.phantom;
}

/// Every fleet added up, histograms merged; the throughput over a reporting period of
/// `duration_s`.
pub fn total_of(fleets: &[FleetReport], duration_s: f64) -> FleetReport {
    let mut total = FleetReport {
        name: "total".into(),
        transport: {
            let mut t: Vec<&str> = fleets.iter().map(|f| f.transport.as_str()).collect();
            t.sort_unstable();
            t.dedup();
            t.join("+")
        },
        ..FleetReport::default()
    };
    let mut latency = LatencyHistogram::new();
    let mut registration = LatencyHistogram::new();
    for f in fleets {
        total.add_counts(f);
        latency.merge(&LatencyHistogram::from_report(&f.latency));
        registration.merge(&LatencyHistogram::from_report(&f.registration));
    }
    total.latency = latency.to_report();
    total.registration = registration.to_report();
    total.throughput_per_s = throughput(total.delivered, duration_s);
    total
}

/// Delivered reports per second of the reporting period.
pub fn throughput(delivered: u64, duration_s: f64) -> f64 {
    if duration_s > 0.0 {
        delivered as f64 / duration_s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{FleetShared, WallClock};
    use crate::scenario::Payload;
    use std::sync::Arc;
    use std::time::Duration;
    use v6iot_sdk::coap::{App, Code};
    use v6iot_sdk::time::Instant;
    use v6iot_sdk::uplink::ReportEvent;

    /// A device that made 10 reports (1..=10) with these events.
    fn device(events: &[ReportEvent]) -> FleetSensor {
        let shared = Arc::new(FleetShared {
            id_prefix: "d".into(),
            first: 0,
            interval: Some(Duration::from_millis(10)),
            stop_at: Instant::ZERO + Duration::from_secs(1),
            payload: Payload::default(),
            clock: WallClock::at(Instant::ZERO, 0.0),
        });
        let mut s = FleetSensor::new(shared, 0, Instant::ZERO);
        let _ = s.handle_timeout(Instant::ZERO + Duration::from_millis(95));
        while s.poll_report().is_some() {}
        for e in events {
            s.report_event(Instant::ZERO, *e);
        }
        s
    }

    fn seen(seqs: &[u32]) -> Seqs {
        let mut s = Seqs::default();
        for q in seqs {
            s.insert(*q);
        }
        s
    }

    use ReportEvent::{Acked, Dropped, Refused};

    #[test]
    fn every_report_in_exactly_one_class() {
        // 1..=4 acknowledged, 5 refused, 6 acknowledged; 10 dropped by a full queue; 7..=9
        // queued (7 on its way).
        let app = device(&[
            Acked,
            Acked,
            Acked,
            Acked,
            Refused(Code::BadRequest),
            Acked,
            Dropped,
        ]);
        assert_eq!(app.front(), 7);
        let sdk = ReporterView {
            queued: 3,
            in_flight: true,
            acked: 5,
            rejected: 1,
            dropped: 1,
        };
        // Delivered: 1, 2, 4, 6 and 8 (whose ACK never came back).
        let fate = classify(&app, sdk, Some(&seen(&[1, 2, 4, 6, 8])));
        assert_eq!(fate.made, 10);
        assert_eq!(fate.delivered, 5);
        assert_eq!(fate.delivered_unacknowledged, 1);
        assert_eq!(fate.unsent_at_end, 2, "7 and 9");
        assert_eq!(fate.refused, BTreeMap::from([(0x80, 1)]));
        assert_eq!(fate.lost_acknowledged, 1, "3");
        assert_eq!(fate.lost_dropped, 1, "10");
        assert_eq!(
            fate.sent,
            5 + 1 + 1,
            "the acknowledged, the refused, 7 on its way"
        );
        assert!(fate.problems.is_empty(), "{:?}", fate.problems);
        let classes = fate.delivered
            + fate.unsent_at_end
            + fate.lost_acknowledged
            + fate.lost_dropped
            + fate.refused.values().sum::<u64>();
        assert_eq!(classes, fate.made);
    }

    #[test]
    fn disagreements_with_the_sdk_and_phantoms_are_problems() {
        let app = device(&[Acked, Acked]);
        let sdk = ReporterView {
            queued: 7,
            in_flight: false,
            acked: 3,
            rejected: 0,
            dropped: 0,
        };
        let fate = classify(&app, sdk, Some(&seen(&[1, 2, 11])));
        assert_eq!(fate.phantom, 1);
        assert_eq!(fate.problems.len(), 3, "{:?}", fate.problems);
        assert!(fate.problems[0].contains("acknowledged"));
        assert!(
            fate.problems[1].contains("queued at the end"),
            "{:?}",
            fate.problems
        );
    }

    #[test]
    fn nothing_delivered_means_the_acknowledged_are_lost() {
        let app = device(&[Acked, Acked, Acked]);
        let sdk = ReporterView {
            queued: 7,
            in_flight: false,
            acked: 3,
            rejected: 0,
            dropped: 0,
        };
        let fate = classify(&app, sdk, None);
        assert_eq!(
            (
                fate.delivered,
                fate.lost_acknowledged,
                fate.unsent_at_end,
                fate.sent
            ),
            (0, 3, 7, 3)
        );
    }
}
