//! The simulator's own machinery on virtual time: shard cores (the real SDK device cores, the
//! timer wheel, the link model), a stand-in edge and the collector wired by
//! `standin::VirtualNet` — no sockets, no sleeping, fully deterministic. What it shows:
//!
//! - every report a fleet makes ends in exactly one class of the report (delivered, unsent at
//!   end, lost with its cause, refused with its code), the counts agree with the stand-in
//!   edge's, and no latency is negative;
//! - the same seed gives the same run, byte for byte; another seed another;
//! - the shards of a partition, merged, are the unsharded run — histograms included;
//! - an idle device costs at most 2 KiB of the simulator's memory (3 KiB with OSCORE),
//!   measured with a counting allocator.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../sdk/tests/common/counting_alloc.rs"]
#[allow(dead_code, unreachable_pub)]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::time::Instant;
use v6iot_simulator::collector::Deliveries;
use v6iot_simulator::credentials;
use v6iot_simulator::fleet::WallClock;
use v6iot_simulator::load;
use v6iot_simulator::plan::Plan;
use v6iot_simulator::provision::{self, ProvisionPlan};
use v6iot_simulator::report::build::{self, RunFacts};
use v6iot_simulator::report::{Report, merge};
use v6iot_simulator::scenario::{Fault, FaultKind, FleetSpec, Partition, Scenario};
use v6iot_simulator::shard::{MemberStore, NoStore, ShardCore};
use v6iot_simulator::standin::{
    REGISTRATION_MAX_AGE, Script, StandInEdge, StandInStats, VirtualNet,
};
use v6iot_simulator::timeline::Timeline;

const UNIX_START: f64 = 1_800_000_000.0;

fn start() -> Instant {
    Instant::ZERO + Duration::from_secs(1)
}

/// Two fleets: 120 meters (2 s ramp, 120/s) and 30 valves (one report every 2 s each, a queue
/// of 3 reports, a 10 s loss burst that fills it).
fn scenario(seed: u64) -> Scenario {
    let mut meters = FleetSpec::new("meters", 120, 120.0);
    meters.ramp = Duration::from_secs(2);
    let mut valves = FleetSpec::new("valves", 30, 15.0);
    valves.id_prefix = "valve".into();
    valves.queue = 3;
    let mut s = Scenario::single(meters, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
    s.fleets.push(valves);
    s.seed = seed;
    s.duration = Duration::from_secs(30);
    s.drain = Duration::from_secs(60);
    s.threads = 2;
    s.faults.push(Fault {
        at: Duration::from_secs(5),
        kind: FaultKind::LinkLoss {
            length: Duration::from_secs(10),
            loss: 1.0,
            fleet: Some("valves".into()),
        },
    });
    s
}

/// A run of `partition` of `scenario` on virtual time against a stand-in edge per `script`;
/// its report and what the edge did.
fn run(scenario: Scenario, partition: Partition, script: Script) -> (Report, StandInStats) {
    let plan = Arc::new(Plan::new(scenario, partition));
    let s = plan.scenario().clone();
    let bucket = Timeline::width_for(s.duration + s.drain);
    let clock = WallClock::at(start(), UNIX_START);
    let contexts = (0..plan.len()).map(|_| None).collect();
    let cores = load::build_cores(&plan, contexts, start(), clock, bucket, |_| NoStore).unwrap();
    let deliveries = Deliveries::new(plan.clone(), start(), UNIX_START, bucket);
    let mut net = VirtualNet::new(
        cores,
        StandInEdge::new(script),
        deliveries,
        clock,
        start(),
        Duration::from_millis(2),
        Duration::from_millis(5),
    );
    let end = start() + s.duration + s.drain;
    net.run_until(end);
    report_of(&plan, net, end)
}

fn report_of<St: MemberStore>(
    plan: &Plan,
    net: VirtualNet<St>,
    end: Instant,
) -> (Report, StandInStats) {
    let VirtualNet {
        cores,
        edge,
        deliveries,
        ..
    } = net;
    let results: Vec<_> = cores
        .into_iter()
        .map(|c: ShardCore<St>| c.finish(0.0))
        .collect();
    let s = plan.scenario();
    let facts = RunFacts {
        started_unix: UNIX_START,
        ended_s: (end - start()).as_secs_f64(),
        settled_s: 0.0,
        faults: Vec::new(),
        resources: Timeline::new(start(), Timeline::width_for(s.duration + s.drain)),
        cpu_s: 0.0,
        peak_rss_bytes: 0,
        rss_registered_bytes: 0,
        threads: s.threads,
    };
    (
        build::report(plan, &results, &deliveries, facts),
        edge.stats,
    )
}

#[test]
fn every_report_ends_in_one_class_and_the_counts_agree_with_the_edge() {
    let script = Script {
        refuse_every: 50,
        busy_every: 7,
        lose_every: 97,
        ..Script::default()
    };
    let (r, edge) = run(scenario(1), Partition::WHOLE, script);
    let t = &r.total;
    assert!(r.checks.consistent, "{:#?}", r.checks);
    assert!(t.adds_up(), "{t:#?}");
    for f in &r.fleets {
        assert!(f.adds_up(), "{f:#?}");
    }
    // Made: exactly what the plan schedules.
    let plan = Plan::new(scenario(1), Partition::WHOLE);
    let scheduled: u64 = (0..plan.len())
        .map(|j| plan.scheduled_reports(plan.device(j).unwrap()))
        .sum();
    assert_eq!(t.made, scheduled);
    assert!(t.made > 3000, "{t:#?}");
    // Every device registered, each registration timed.
    assert_eq!((t.devices, t.registered), (150, 150));
    assert_eq!(t.registration.count, 150);
    // The edge's counts are the report's.
    assert_eq!(t.acknowledged, edge.reports);
    assert_eq!(t.refused, edge.refused);
    assert_eq!(t.refused_by_code.get("4.00").copied(), Some(edge.refused));
    assert_eq!(t.busy_503, edge.busy);
    assert_eq!(t.lost_by_cause.acknowledged_not_delivered, edge.unpublished);
    assert!(edge.unpublished > 0);
    assert!(edge.refused > 0 && edge.busy > 0);
    // The valves' loss burst: reports beyond the queue of 3 dropped at the devices, named.
    let valves = &r.fleets[1];
    assert!(valves.lost_by_cause.device_queue_full > 0, "{valves:#?}");
    // A 10 s burst is shorter than a confirmable's retransmission span (about 45 s): the
    // retransmissions carry the reports in flight across it, none times out.
    assert!(valves.retransmissions > 0, "{valves:#?}");
    assert_eq!(valves.timeouts, 0, "{valves:#?}");
    assert_eq!(
        t.lost,
        t.lost_by_cause.acknowledged_not_delivered + t.lost_by_cause.device_queue_full
    );
    // Nothing left queued after a minute's drain; every delivery matched a report.
    assert_eq!((t.unsent_at_end, t.phantom, t.duplicates), (0, 0, 0));
    assert_eq!(
        t.delivered,
        t.acknowledged - t.lost_by_cause.acknowledged_not_delivered
    );
    assert_eq!(t.latency.count, t.delivered);
    assert_eq!(t.latency.negative, 0);
    assert!(
        t.latency.min_ms >= 6.5,
        "a 2 ms hop and 5 ms to publish: {:?}",
        t.latency
    );
    // The timeline adds up to the totals.
    let made: u64 = r.timeline.buckets.iter().map(|b| b.counts.made).sum();
    let delivered: u64 = r.timeline.buckets.iter().map(|b| b.counts.delivered).sum();
    let registered: u64 = r.timeline.buckets.iter().map(|b| b.counts.registered).sum();
    assert_eq!(
        (made, delivered, registered),
        (t.made, t.delivered, t.registered)
    );
}

#[test]
fn reports_cut_off_by_the_end_are_unsent_not_lost() {
    let mut s = scenario(3);
    s.drain = Duration::ZERO;
    s.faults.clear();
    let script = Script {
        busy_every: 3,
        ..Script::default()
    };
    let (r, _) = run(s, Partition::WHOLE, script);
    let t = &r.total;
    assert!(r.checks.consistent, "{:#?}", r.checks);
    assert!(t.adds_up(), "{t:#?}");
    assert!(
        t.unsent_at_end > 0,
        "5.03s hold reports for a second: some are queued at the end"
    );
    assert_eq!(t.lost, 0, "{t:#?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("unsent_at_end")),
        "{:?}",
        r.warnings
    );
}

/// An edge that refuses registrations with 5.03 + Max-Age (its audit lane full, in a storm):
/// the report counts exactly the 5.03s it gave, per fleet, in total and over time, apart from
/// the reports' `busy_503`, and every device still registers, after Max-Age.
#[test]
fn registrations_answered_503_are_counted_and_every_device_registers() {
    let mut s = scenario(11);
    s.faults.clear();
    let script = Script {
        registration_busy_every: 3,
        ..Script::default()
    };
    let (r, edge) = run(s, Partition::WHOLE, script);
    let t = &r.total;
    assert!(r.checks.consistent, "{:#?}", r.checks);
    assert!(t.adds_up(), "{t:#?}");
    // The first registration of every third of the 150 devices got a 5.03.
    assert_eq!(edge.registration_busy, 50);
    assert_eq!(t.registration_busy_503, edge.registration_busy, "{t:#?}");
    assert_eq!(
        r.fleets
            .iter()
            .map(|f| f.registration_busy_503)
            .sum::<u64>(),
        t.registration_busy_503
    );
    assert!(
        r.fleets.iter().all(|f| f.registration_busy_503 > 0),
        "{:#?}",
        r.fleets
    );
    // Nothing else went wrong; the reports' 5.03s are apart.
    assert_eq!(
        (
            t.registration_refused,
            t.registration_unanswered,
            t.busy_503
        ),
        (0, 0, 0),
        "{t:#?}"
    );
    // Every request is an attempt: the 2.01s, the 5.03s and the updates.
    assert_eq!(
        t.registration_attempts,
        edge.registrations + edge.registration_busy + edge.updates,
        "{t:#?} {edge:#?}"
    );
    // Every device registered once, the refused ones after Max-Age.
    assert_eq!((t.devices, t.registered, t.reregistered), (150, 150, 0));
    assert_eq!(edge.registrations, 150);
    assert_eq!(t.registration.count, 150);
    assert!(
        t.registration.max_ms >= f64::from(REGISTRATION_MAX_AGE) * 1000.0,
        "{:?}",
        t.registration
    );
    // The timeline adds up to the totals.
    let sum = |f: fn(&v6iot_simulator::timeline::Counts) -> u64| -> u64 {
        r.timeline.buckets.iter().map(|b| f(&b.counts)).sum()
    };
    assert_eq!(sum(|c| c.registration_busy_503), t.registration_busy_503);
    assert_eq!(sum(|c| c.registration_attempts), t.registration_attempts);
    assert_eq!(sum(|c| c.registration_refused), 0);
    assert_eq!(sum(|c| c.registration_unanswered), 0);
    // In the JSON, the HTML table and the summary.
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["total"]["registration_busy_503"], 50);
    assert_eq!(json["total"]["busy_503"], 0);
    let html = v6iot_simulator::report::html::render(&r);
    assert!(html.contains("<th>registration 5.03</th>"));
    assert!(r.summary().contains("answered 5.03 50,"), "{}", r.summary());
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let script = Script {
        refuse_every: 40,
        busy_every: 9,
        lose_every: 0,
        ..Script::default()
    };
    let (a, _) = run(scenario(7), Partition::WHOLE, script);
    let (b, _) = run(scenario(7), Partition::WHOLE, script);
    assert_eq!(a.to_json(), b.to_json(), "byte for byte");
    let (c, _) = run(scenario(8), Partition::WHOLE, script);
    assert_ne!(a.shards.devices_digest, c.shards.devices_digest);
    assert_ne!(a.scenario.fingerprint, c.scenario.fingerprint);
    assert_ne!(
        a.total.latency, c.total.latency,
        "another schedule, other latencies"
    );
}

#[test]
fn shards_merged_equal_the_whole_run() {
    let mut s = scenario(5);
    s.faults.clear();
    let (whole, _) = run(s.clone(), Partition::WHOLE, Script::default());
    let shards: Vec<Report> = (0..3)
        .map(|index| run(s.clone(), Partition { index, count: 3 }, Script::default()).0)
        .collect();
    let merged = merge::merge(&shards).unwrap();
    assert!(merged.checks.consistent, "{:#?}", merged.checks);
    assert_eq!(merged.shards.included, [0, 1, 2]);
    assert_eq!(merged.shards.devices_digest, whole.shards.devices_digest);
    assert_eq!(merged.fleets, whole.fleets, "counts and histograms alike");
    assert_eq!(merged.total, whole.total);
    let counts = |r: &Report| {
        r.timeline
            .buckets
            .iter()
            .map(|b| b.counts)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&merged), counts(&whole));
    assert!(whole.total.delivered > 3000 && whole.total.lost == 0);
    // A shard given twice, or a report of another scenario, is refused.
    assert!(merge::merge(&[shards[0].clone(), shards[0].clone()]).is_err());
    let (other, _) = run(
        scenario(6),
        Partition { index: 1, count: 3 },
        Script::default(),
    );
    assert!(merge::merge(&[shards[0].clone(), other]).is_err());
    // Two of three shards: a warning says so.
    let partial = merge::merge(&shards[..2]).unwrap();
    assert!(
        partial.warnings.iter().any(|w| w.contains("only shards")),
        "{:?}",
        partial.warnings
    );
}

/// `devices` idle devices (registered, not reporting) on one shard core against a stand-in
/// edge, OSCORE when `oscore`; returns the heap their core holds per device, measured by
/// dropping it (counting allocator), and how many registered.
fn idle_bytes_per_device(devices: u64, oscore: bool) -> (usize, u64) {
    let mut fleet = FleetSpec::new("idle", devices, 0.0);
    fleet.ramp = Duration::from_secs(1);
    let mut s = Scenario::single(fleet, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
    s.duration = Duration::from_secs(20);
    s.threads = 1;
    let plan = Arc::new(Plan::new(s, Partition::WHOLE));
    let mut edge = StandInEdge::new(Script::default());
    let contexts: Vec<_> = if oscore {
        let mut csv = Vec::new();
        let plan_csv = ProvisionPlan {
            devices,
            first: 0,
            id_prefix: "sim".into(),
            class: 1,
            prefix: "2001:db8::/64".parse().unwrap(),
        };
        provision::write_csv(&plan_csv, &mut csv).unwrap();
        let mut contexts = Vec::new();
        credentials::for_each_record(csv.as_slice(), |_, record| {
            edge.add_device(&record).unwrap();
            let ctx = credentials::device_context(&record, DurableState::default(), 1 << 16)?;
            contexts.push(Some(Box::new(ctx)));
            Ok(())
        })
        .unwrap();
        contexts
    } else {
        (0..plan.len()).map(|_| None).collect()
    };
    let bucket = Timeline::width_for(Duration::from_secs(20));
    let clock = WallClock::at(start(), UNIX_START);
    let cores = load::build_cores(&plan, contexts, start(), clock, bucket, |_| NoStore).unwrap();
    let deliveries = Deliveries::new(plan.clone(), start(), UNIX_START, bucket);
    let mut net = VirtualNet::new(
        cores,
        edge,
        deliveries,
        clock,
        start(),
        Duration::from_millis(2),
        Duration::from_millis(5),
    );
    net.run_until(start() + Duration::from_secs(20));
    let VirtualNet { cores, .. } = net;
    let registered = cores
        .iter()
        .flat_map(|c| c.members())
        .filter_map(|m| m.device())
        .filter(|d| d.registration().is_some_and(|r| r.registrations() > 0))
        .count() as u64;
    let freed = counting_alloc::heap_freed_by(|| drop(cores));
    (freed / devices as usize, registered)
}

/// What an idle device costs the simulator, measured (not estimated): the heap its shard core
/// holds for it once registered. A million devices must fit one machine: at most 2 KiB each
/// (3 KiB with OSCORE) besides the kernel's socket.
#[test]
fn an_idle_device_costs_at_most_2_kib() {
    let (plain, registered) = idle_bytes_per_device(2000, false);
    assert_eq!(registered, 2000);
    let (secure, registered) = idle_bytes_per_device(2000, true);
    assert_eq!(registered, 2000);
    println!("idle device: {plain} B plain, {secure} B with OSCORE");
    assert!(plain > 200, "{plain} B: the measurement sees the devices");
    assert!(plain <= 2048, "{plain} B per idle plain device");
    assert!(secure > plain, "{secure} B: the OSCORE context is counted");
    assert!(secure <= 3072, "{secure} B per idle OSCORE device");
}

/// A fleet of 20 plain devices (one report per second each for 2 s, `ramp`) against the
/// stand-in edge, its cores woken first at `first_wake` (as the wall-clock driver's first turn
/// does) and the virtual clock starting there; run to the end of the drain.
fn small_fleet(ramp: Duration, first_wake: Instant) -> Report {
    let mut fleet = FleetSpec::new("small", 20, 20.0);
    fleet.ramp = ramp;
    let mut s = Scenario::single(fleet, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
    s.duration = Duration::from_secs(2);
    s.drain = Duration::from_secs(5);
    let plan = Arc::new(Plan::new(s.clone(), Partition::WHOLE));
    let bucket = Timeline::width_for(s.duration + s.drain);
    let clock = WallClock::at(start(), UNIX_START);
    let contexts = (0..plan.len()).map(|_| None).collect();
    let mut cores =
        load::build_cores(&plan, contexts, start(), clock, bucket, |_| NoStore).unwrap();
    let deliveries = Deliveries::new(plan.clone(), start(), UNIX_START, bucket);
    for core in &mut cores {
        core.handle_timeout(first_wake);
    }
    let mut net = VirtualNet::new(
        cores,
        StandInEdge::new(Script::default()),
        deliveries,
        clock,
        first_wake,
        Duration::from_millis(2),
        Duration::from_millis(5),
    );
    let end = start() + s.duration + s.drain;
    net.run_until(end);
    report_of(&plan, net, end).0
}

/// The simulator starts its shards' clocks a moment ahead of the first power-on (load.rs): a
/// device planned at the start must not power on earlier while its thread waits, or its
/// registration time (counted from the planned power-on) comes out as 0 — the demo's
/// `registration p50 0 ms`. Here the virtual clock starts 200 ms before the plan's start and
/// the cores are woken then, as `shard::run_with` wakes them on its first turn.
#[test]
fn registration_time_counts_from_the_planned_power_on_even_when_the_clock_starts_early() {
    let r = small_fleet(Duration::ZERO, start() - Duration::from_millis(200));
    let reg = &r.total.registration;
    assert_eq!((r.total.registered, reg.count), (20, 20), "{reg:?}");
    // A registration is one 2 ms hop there and one back, at the least.
    assert!(reg.min_ms >= 3.9, "registered before powering on? {reg:?}");
}

/// The warning that the simulator itself was the bottleneck: a shard whose first wake-up
/// comes 900 ms late (a thread that did not get the CPU) handles the power-ons planned over
/// the 1 s ramp up to 900 ms late; the report says so, and still counts every report. The
/// same fleet woken on time gets no such warning.
#[test]
fn a_late_shard_is_reported_as_the_bottleneck() {
    let on_time = small_fleet(Duration::from_secs(1), start());
    let sim = &on_time.simulators[0];
    assert!(!sim.bottleneck, "{:?}", sim.timer_lag);
    assert!(sim.timer_lag.max_ms <= 1.0, "{:?}", sim.timer_lag);
    assert!(on_time.warnings.is_empty(), "{:?}", on_time.warnings);

    let late = small_fleet(Duration::from_secs(1), start() + Duration::from_millis(900));
    let sim = &late.simulators[0];
    assert!(sim.bottleneck, "{:?}", sim.timer_lag);
    assert!(sim.timer_lag.max_ms >= 850.0, "{:?}", sim.timer_lag);
    let warning = late
        .warnings
        .iter()
        .find(|w| w.contains("the simulator was the bottleneck"))
        .unwrap_or_else(|| panic!("no bottleneck warning: {:?}", late.warnings));
    assert!(warning.contains("ms late"), "{warning}");
    // Late, not lossy: every report made is still delivered.
    let t = &late.total;
    assert_eq!((t.registered, t.delivered, t.lost), (20, t.made, 0));
    assert_eq!(t.made, on_time.total.made);
}

/// Pixels of `png` within 10 of `colour` in each channel.
fn pixels_of(png: &[u8], colour: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert!(step >= 3, "an RGB screenshot");
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 10))
        .count()
}

/// The HTML report, opened in headless Chromium: no console errors, and each plot drawn with
/// its data (pixels of each plot's own line colour on the screenshot).
#[test]
fn the_html_report_renders_its_plots_in_chromium() {
    let script = Script {
        refuse_every: 50,
        busy_every: 7,
        lose_every: 97,
        ..Script::default()
    };
    let (mut r, _) = run(scenario(1), Partition::WHOLE, script);
    r.faults.push(v6iot_simulator::report::FaultMark {
        at_s: 5.0,
        kind: "link_loss".into(),
        length_s: 10.0,
        detail: "every datagram of fleet valves lost <both ways>".into(),
        ok: true,
    });
    for b in &mut r.timeline.buckets {
        b.cpu_s = 0.5;
        b.rss_bytes = 300 << 20;
    }
    let html = v6iot_simulator::report::html::render(&r);
    // Self-contained: no scripts, nothing fetched (an SVG's xmlns is a name, not a fetch).
    for external in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(html.contains("&lt;both ways&gt;"), "text is escaped");
    assert_eq!(html.matches("<svg").count(), 4);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let shot = dir.path().join("shot.png");
    let out = v6iot_testkit::chromium_headless(&dir.path().join("profile"))
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,2000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    // Delivered and registrations (plot 1, green and brown), p99 latency (plot 2, red), the
    // latency histogram's bars (plot 3, cyan), CPU (plot 4, orange).
    let bars = v6iot_simulator::report::html::HISTOGRAM_COLOUR;
    for (what, colour) in [
        ("delivered", [44, 160, 44]),
        ("registrations", [140, 86, 75]),
        ("p99", [214, 39, 40]),
        ("histogram", [bars.0, bars.1, bars.2]),
        ("CPU", [255, 127, 14]),
    ] {
        let n = pixels_of(&png, colour);
        assert!(n > 200, "{what}: {n} pixels of its colour");
    }
}

/// A registration storm on virtual time: 3,000 devices power on at once and all their
/// registration timers come due together. A turn wakes at most the bound it is given and
/// leaves the rest due (the wall-clock driver reads the link in between), so answers that
/// arrive between turns reach their devices before the devices' retransmission timers do: of
/// 3,000 devices whose timers are all due, only the 1,024 woken in the first turn
/// retransmit. (Waking every due device at once, the old turn, made all 3,000 retransmit.)
#[test]
fn answers_between_bounded_turns_come_before_the_retransmission_timers() {
    const DEVICES: u64 = 3000;
    let mut fleet = FleetSpec::new("storm", DEVICES, 1.0);
    fleet.ramp = Duration::ZERO;
    let mut s = Scenario::single(fleet, "[::1]:5683".parse().unwrap(), "mqtt://[::1]:1883");
    s.duration = Duration::from_secs(60);
    let plan = Arc::new(Plan::new(s, Partition::WHOLE));
    let clock = WallClock::at(start(), UNIX_START);
    let contexts = (0..plan.len()).map(|_| None).collect();
    let bucket = Duration::from_secs(1);
    let mut core = load::build_cores(&plan, contexts, start(), clock, bucket, |_| NoStore)
        .unwrap()
        .pop()
        .unwrap();
    let turn = |core: &mut ShardCore<NoStore>, now: Instant, max: usize| {
        let left = core.handle_timeout_at_most(now, max);
        (
            left,
            std::iter::from_fn(|| core.poll_transmit()).collect::<Vec<_>>(),
        )
    };

    // Power-on: 1,024 per turn, the rest stay due.
    let mut requests = Vec::new();
    for (i, expected) in [(1024, true), (1024, true), (952, false)]
        .into_iter()
        .enumerate()
    {
        let (left, sent) = turn(&mut core, start(), 1024);
        assert_eq!((sent.len(), left), expected, "power-on turn {i}");
        if left {
            assert_eq!(
                core.poll_timeout(),
                Some(start()),
                "turn {i}: the rest are due now"
            );
        }
        requests.extend(sent);
    }
    assert_eq!(requests.len() as u64, DEVICES);

    // The stand-in edge answers every registration; the answers arrive after every device's
    // retransmission timer (2–3 s) came due, and after the first turn of that moment.
    let mut edge = StandInEdge::new(Script::default());
    let answers: Vec<_> = requests
        .iter()
        .map(|o| {
            let from = format!("[2001:db8::{:x}]:5683", o.member + 1)
                .parse()
                .unwrap();
            (o.member, edge.handle_datagram(from, &o.bytes).unwrap())
        })
        .collect();
    let late = start() + Duration::from_millis(3500);
    let (left, retransmitted) = turn(&mut core, late, 1024);
    assert_eq!((retransmitted.len(), left), (1024, true));
    let peer = core.roster().edge;
    for (member, answer) in &answers {
        core.handle_datagram(late, *member, peer, answer);
    }
    // The rest of the due timers: the answered devices send nothing (a few send a report).
    let (left, _) = turn(&mut core, late, usize::MAX);
    assert!(!left);
    let total = core.finish(0.0).timeline.total();
    assert_eq!(
        (total.registered, total.retransmissions),
        (DEVICES, 1024),
        "every device registered; only the first turn's retransmitted"
    );
}
