//! Sharding through the command line: `v6iot-sim run --shard 0/2` and `--shard 1/2` on a
//! scenario, their JSON reports combined by `v6iot-sim merge`, equal one unsharded `run` of the
//! same scenario and seed — devices (their digest), the scenario's fingerprint, registrations,
//! every report count — against the real edge router (the `v6iot-edge` binary, lab mode) and
//! mosquitto on free ports of `[::1]`: the two shards at once against one edge and broker (as
//! two machines would load one platform), the whole run against a fresh pair.
//!
//! Wall-clock runs: the latency histograms differ from run to run, so only their sample counts
//! are compared (virtual_fleet.rs compares whole histograms on virtual time). The reports made
//! are a function of the plan alone (fleet.rs), so they must match exactly. Stderr is a pipe
//! here, so the run's live line comes as plain `live: …` lines once a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use v6iot_simulator::report::{FleetReport, Report};

mod common;

use common::{Mosquitto, Running, edge_binary, free_udp_port};

/// An edge router (lab mode) and a mosquitto of their own, on free ports of `[::1]`, with
/// their files in `dir`; both killed on drop.
struct Platform {
    _edge: Running,
    _broker: Mosquitto,
    coap: u16,
    mqtt: u16,
}

impl Platform {
    fn start(dir: &Path) -> Platform {
        std::fs::create_dir_all(dir).unwrap();
        let coap = free_udp_port();
        let broker = Mosquitto::on_loopback(dir, "");
        let mqtt = broker.port();
        std::fs::write(
            dir.join("edge.toml"),
            format!(
                "site = \"shards\"\nedge_id = \"shards-edge\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:{coap}\"\n[mqtt]\nurl = \"mqtt://[::1]:{mqtt}\"\n[security]\nrequire_oscore = false\n",
                dir.join("edge").display()
            ),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let edge = Running(
            Command::new(edge_binary())
                .args(["run", "--config"])
                .arg(dir.join("edge.toml"))
                .stdout(log("edge.out"))
                .stderr(log("edge.log"))
                .spawn()
                .expect("start v6iot-edge"),
        );
        // Ready when it answers a CoAP ping with a Reset.
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        socket.connect(("::1", coap)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            socket.send(&[0x40, 0, 0x12, 0x34]).unwrap();
            let mut buf = [0u8; 16];
            if let Ok(4) = socket.recv(&mut buf) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the edge did not answer a ping:\n{}",
                logs(dir)
            );
        }
        Platform {
            _edge: edge,
            _broker: broker,
            coap,
            mqtt,
        }
    }

    /// The scenario (two fleets, one ramped) against this platform, written into `dir`.
    fn scenario(&self, dir: &Path) -> PathBuf {
        let scenario = format!(
            r#"
name = "shards"
seed = 11
duration = "3s"
drain = "15s"
threads = 1

[edge]
address = "[::1]:{coap}"

[broker]
url = "mqtt://[::1]:{mqtt}"
site = "shards"

[[fleet]]
name = "meters"
devices = 21
rate = "30/s"
ramp = "1s"

[[fleet]]
name = "valves"
id_prefix = "valve"
devices = 8
interval = "700ms"
"#,
            coap = self.coap,
            mqtt = self.mqtt,
        );
        let path = dir.join("shards.toml");
        std::fs::write(&path, scenario).unwrap();
        path
    }
}

/// The logs of the processes a run started (`--workdir`'s `*.log`).
fn logs(workdir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(workdir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log" || e == "out") {
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("--- {}\n{body}\n", path.display()));
        }
    }
    text
}

/// `v6iot-sim ARGS`; its stdout; fails the test (with its stderr and the logs in `workdir`)
/// if it fails.
fn sim(args: &[&str], workdir: Option<&Path>) -> String {
    sim_output(args, workdir).0
}

/// As [`sim`]: stdout and stderr.
fn sim_output(args: &[&str], workdir: Option<&Path>) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args(args)
        .output()
        .expect("run v6iot-sim");
    assert!(
        out.status.success(),
        "v6iot-sim {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        workdir.map(logs).unwrap_or_default()
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn read(path: &Path) -> Report {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Everything of a fleet's figures that a wall-clock run fixes.
fn counts(f: &FleetReport) -> Vec<(&'static str, u64)> {
    vec![
        ("devices", f.devices),
        ("powered_on", f.powered_on),
        ("registered", f.registered),
        ("made", f.made),
        ("sent", f.sent),
        ("acknowledged", f.acknowledged),
        ("refused", f.refused),
        ("delivered", f.delivered),
        ("duplicates", f.duplicates),
        ("unsent_at_end", f.unsent_at_end),
        ("lost", f.lost),
        ("phantom", f.phantom),
        ("latency samples", f.latency.count),
        ("registration samples", f.registration.count),
    ]
}

#[test]
fn two_shards_merged_through_the_cli_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let p = |name: &str| path(name).to_str().unwrap().to_owned();
    let run = |scenario: &Path, shard: &str, name: &str| {
        let args: Vec<String> = [
            "run",
            "--scenario",
            scenario.to_str().unwrap(),
            "--shard",
            shard,
            "--report",
            &p(&format!("{name}.json")),
        ]
        .map(str::to_owned)
        .to_vec();
        let platform = scenario.parent().unwrap().to_owned();
        // Stderr is a pipe: the live line comes as plain lines, once a second.
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sim_output(&args, Some(&platform)).1
        })
    };
    {
        // The two shards at once against one platform, as two machines would load it.
        let platform = Platform::start(&path("sharded"));
        let scenario = platform.scenario(&path("sharded"));
        let a = run(&scenario, "0/2", "a");
        let b = run(&scenario, "1/2", "b");
        a.join().unwrap();
        b.join().unwrap();
    }
    {
        // The whole run against a fresh platform.
        let platform = Platform::start(&path("whole"));
        let scenario = platform.scenario(&path("whole"));
        let stderr = run(&scenario, "0/1", "whole").join().unwrap();
        let live: Vec<&str> = stderr.lines().filter(|l| l.starts_with("live: ")).collect();
        assert!(live.len() >= 2, "a live line a second: {stderr}");
        assert!(
            live.iter().any(|l| l.contains("registered 29/29")),
            "{live:#?}"
        );
    }
    let printed = sim(
        &[
            "merge",
            &p("a.json"),
            &p("b.json"),
            "--report",
            &p("merged.json"),
            "--html",
            &p("merged.html"),
        ],
        None,
    );
    let (a, b, merged, whole) = (
        read(&path("a.json")),
        read(&path("b.json")),
        read(&path("merged.json")),
        read(&path("whole.json")),
    );
    assert_eq!(serde_json::from_str::<Report>(&printed).unwrap(), merged);
    let json = whole.to_json();
    // The shards are two different halves of the fleets, together all of them.
    assert_eq!(
        (a.shards.included.clone(), b.shards.included.clone()),
        (vec![0], vec![1])
    );
    assert_eq!(a.total.devices + b.total.devices, 29);
    assert!(a.total.devices > 0 && b.total.devices > 0);
    assert_ne!(a.shards.devices_digest, b.shards.devices_digest);
    // The merge is the unsharded run: same devices, same scenario, same counts per fleet.
    assert_eq!(merged.shards.included, vec![0, 1]);
    assert_eq!(merged.shards.devices_digest, whole.shards.devices_digest);
    assert_eq!(merged.scenario, whole.scenario);
    assert_eq!(merged.fleets.len(), 2);
    for (m, w) in merged
        .fleets
        .iter()
        .chain([&merged.total])
        .zip(whole.fleets.iter().chain([&whole.total]))
    {
        assert_eq!(m.name, w.name);
        assert_eq!(counts(m), counts(w), "{}: {json}", m.name);
    }
    // And a healthy run: everything registered, every report made delivered.
    let t = &whole.total;
    assert_eq!(t.registered, 29, "{json}");
    assert!(t.made >= 29 * 3, "{json}");
    assert_eq!(
        (t.delivered, t.lost, t.unsent_at_end),
        (t.made, 0, 0),
        "{json}"
    );
    for r in [&a, &b, &whole, &merged] {
        assert!(
            r.checks.consistent,
            "shards {:?}: {:?}\n{:?}",
            r.shards.included, r.checks.problems, r.total.latency
        );
    }
    let html = std::fs::read_to_string(path("merged.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
}
