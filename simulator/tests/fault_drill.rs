//! The fault drill, small: `v6iot-sim run` on a scenario whose edge router (the `v6iot-edge`
//! binary, lab mode) and broker (mosquitto, persistence on) the simulator runs itself; the edge
//! is killed with SIGKILL mid-run and started again, then the broker is restarted. Every report
//! made must be delivered: nothing lost, nothing left unsent, nothing refused — and the faults
//! must show in the report (a gap in acknowledgements while the edge is down, retransmissions,
//! the collector reconnecting). All inside a network namespace of the test's own (root).

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

/// The drill's files in `dir`: the edge's configuration, mosquitto's, and the scenario.
fn write_drill(dir: &Path) -> PathBuf {
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
    let scenario = format!(
        r#"
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
"#,
        edge = common::edge_binary().display(),
        mosquitto = common::mosquitto_binary().display(),
        dir = dir.display(),
    );
    let path = dir.join("drill.toml");
    std::fs::write(&path, scenario).unwrap();
    path
}

fn run_drill() -> Report {
    let edge = common::edge_binary();
    let _ = common::mosquitto_binary();
    assert!(edge.exists());
    common::in_private_network(
        "2001:db8:100::/64",
        "for the drill's edge and broker",
        || {
            let dir = tempfile::tempdir().unwrap();
            let scenario = scenario::file::load(&write_drill(dir.path())).unwrap();
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
