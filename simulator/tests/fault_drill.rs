//! The fault drill, small: `v6iot-sim run` on a scenario whose edge router (the `v6iot-edge`
//! binary, lab mode) and broker (mosquitto, persistence on) the simulator runs itself; the edge
//! is killed with SIGKILL mid-run and started again, then the broker is restarted. Every report
//! made must be delivered: nothing lost, nothing left unsent, nothing refused — and the faults
//! must show in the report (a gap in acknowledgements while the edge is down, retransmissions,
//! the collector reconnecting). All inside a network namespace of the test's own (root).
//!
//! The settle drill: the broker is down over the end of the run (its outage begins before the
//! end of `duration` and outlasts the whole `drain`). The edge acknowledges the reports meanwhile
//! (they are durable in its outbox) and publishes them when the broker is back, after the
//! devices stopped: the collector's settle period must wait for them, and nothing is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

mod common;

use v6iot_simulator::load::{self, RunOptions};
use v6iot_simulator::report::Report;
use v6iot_simulator::scenario;

/// The fault drill: an edge kill mid-run, then a broker restart.
const DRILL: &str = r#"
name = "drill"
seed = 3
duration = "14s"
drain = "30s"

[edge]
address = "[::1]:5683"
command = ["{edge}", "run", "--config", "{dir}/edge.toml"]
ready_within = "20s"

[broker]
url = "mqtt://[::1]:18830"
site = "drill"
command = ["{mosquitto}", "-c", "{dir}/mosquitto.conf"]

[[fleet]]
name = "meters"
devices = 30
rate = "60/s"
ramp = "2s"

[[fault]]
at = "4s"
kind = "edge_kill"
down = "2s"

[[fault]]
at = "10s"
kind = "broker_restart"
"#;

/// The settle drill: the broker goes down at 4 s and is started again at 14 s, after the
/// reporting period (6 s) and the drain (2 s) ended; the collector waits up to `settle`.
const SETTLE_DRILL: &str = r#"
name = "settle-drill"
seed = 5
duration = "6s"
drain = "2s"
settle = "{settle}"

[edge]
address = "[::1]:5683"
command = ["{edge}", "run", "--config", "{dir}/edge.toml"]
ready_within = "20s"

[broker]
url = "mqtt://[::1]:18830"
site = "drill"
command = ["{mosquitto}", "-c", "{dir}/mosquitto.conf"]

[[fleet]]
name = "meters"
devices = 10
rate = "20/s"
ramp = "1s"

[[fault]]
at = "4s"
kind = "broker_outage"
down = "10s"
"#;

/// The settle period the settle drill gives the collector.
const SETTLE: &str = "45s";

/// `scenario` (with `{edge}`, `{mosquitto}`, `{dir}` filled in) and the edge's and mosquitto's
/// configurations, written to `dir`; returns the scenario's path.
fn write_scenario(dir: &Path, scenario: &str) -> PathBuf {
    let data = dir.join("edge");
    let persist = dir.join("broker");
    std::fs::create_dir_all(&persist).unwrap();
    std::fs::write(
        dir.join("edge.toml"),
        format!(
            "site = \"drill\"\nedge_id = \"drill-edge\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:5683\"\n[mqtt]\nurl = \"mqtt://[::1]:18830\"\n[security]\nrequire_oscore = false\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "listener 18830 ::1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nuser root\n",
            persist.display()
        ),
    )
    .unwrap();
    let scenario = scenario
        .replace("{edge}", &common::edge_binary().display().to_string())
        .replace(
            "{mosquitto}",
            &common::mosquitto_binary().display().to_string(),
        )
        .replace("{dir}", &dir.display().to_string())
        .replace("{settle}", SETTLE);
    let path = dir.join("drill.toml");
    std::fs::write(&path, scenario).unwrap();
    path
}

fn run_drill() -> Report {
    run_scenario(DRILL)
}

/// Runs `scenario` (see [`write_scenario`]) with the edge and mosquitto in a network namespace
/// of its own; its report.
fn run_scenario(scenario: &'static str) -> Report {
    let edge = common::edge_binary();
    let _ = common::mosquitto_binary();
    assert!(edge.exists());
    common::in_private_network(
        "2001:db8:100::/64",
        "for the drill's edge and broker",
        || {
            let dir = tempfile::tempdir().unwrap();
            let scenario = scenario::file::load(&write_scenario(dir.path(), scenario)).unwrap();
            let rt = common::runtime();
            let options = RunOptions {
                workdir: Some(dir.path().join("work")),
                ..RunOptions::default()
            };
            let report = rt.block_on(load::run(scenario, options));
            let logs = ["edge.log", "broker.log"].map(|f| {
                std::fs::read_to_string(dir.path().join("work").join(f)).unwrap_or_default()
            });
            match report {
                Ok(r) => r,
                Err(e) => panic!("{e:#}\nedge log:\n{}\nbroker log:\n{}", logs[0], logs[1]),
            }
        },
    )
}

#[test]
fn an_edge_killed_and_a_broker_restarted_lose_nothing() {
    let r = run_drill();
    let t = &r.total;
    let json = r.to_json();
    assert!(r.checks.consistent, "{json}");
    // Both faults were carried out, at their times.
    let kinds: Vec<(&str, bool)> = r.faults.iter().map(|f| (f.kind.as_str(), f.ok)).collect();
    assert_eq!(
        kinds,
        [("edge_kill", true), ("broker_restart", true)],
        "{json}"
    );
    // Every report made was delivered: nothing lost, unsent or refused.
    assert_eq!(t.registered, 30, "{json}");
    assert!(t.made >= 700, "60/s for 14 s: {json}");
    assert_eq!(t.delivered, t.made, "{json}");
    assert_eq!(
        (t.lost, t.unsent_at_end, t.refused, t.phantom),
        (0, 0, 0, 0),
        "{json}"
    );
    // The kill showed: reports waited and were retransmitted while the edge was down.
    assert!(t.retransmissions > 0, "{json}");
    let down = r
        .timeline
        .buckets
        .iter()
        .filter(|b| b.t_s >= 4.5 && b.t_s < 6.0)
        .map(|b| b.counts.acknowledged)
        .sum::<u64>();
    assert_eq!(
        down, 0,
        "nothing acknowledged while the edge was down: {json}"
    );
}

/// The broker is down over the end of the run: from 4 s (the reporting period ends at 6 s, the
/// drain at 8 s) to 14 s. The edge acknowledges every report meanwhile (its outbox holds them)
/// and publishes them once the broker is back, after the devices stopped. The settle period
/// waits for them: every report made is delivered, none counted lost, and the report says the
/// collector waited. (Before the settle period the collector gave up at the drain's end, 8 s,
/// and the report counted the edge's outbox as `acknowledged_not_delivered`.)
#[test]
fn reports_the_edge_publishes_after_the_devices_stopped_are_not_lost() {
    let r = run_scenario(SETTLE_DRILL);
    let t = &r.total;
    let json = r.to_json();
    assert!(r.checks.consistent, "{json}");
    let kinds: Vec<(&str, bool)> = r.faults.iter().map(|f| (f.kind.as_str(), f.ok)).collect();
    assert_eq!(kinds, [("broker_outage", true)], "{json}");
    assert_eq!(t.registered, 10, "{json}");
    assert!(t.made >= 80, "20/s for 6 s: {json}");
    // The edge acknowledged every report although the broker was down.
    assert_eq!(t.acknowledged, t.made, "{json}");
    assert_eq!(
        (
            t.lost,
            t.lost_by_cause.acknowledged_not_delivered,
            t.unsent_at_end,
            t.refused,
            t.phantom
        ),
        (0, 0, 0, 0, 0),
        "{json}"
    );
    assert_eq!(t.delivered, t.made, "{json}");
    // The collector waited after the devices stopped: the broker came back at 14 s, and the
    // devices (every report acknowledged) stopped at the end of the reporting period, 6 s.
    assert_eq!(r.scenario.settle_s, 45.0, "{json}");
    assert!(
        r.settled_s > 0.0 && r.settled_s < r.scenario.settle_s,
        "settled_s {}: {json}",
        r.settled_s
    );
    assert!(r.ended_s > 14.0, "the run outlasted the outage: {json}");
    // Reports made during the outage were delivered only after it, past the drain's end.
    let late = r
        .timeline
        .buckets
        .iter()
        .filter(|b| b.t_s >= 8.0)
        .map(|b| b.counts.delivered)
        .sum::<u64>();
    assert!(late > 0, "deliveries after the drain: {json}");
}
