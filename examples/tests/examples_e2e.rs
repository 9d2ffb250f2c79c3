//! The examples against the real `v6iot-edge` binary (requiring OSCORE) and mosquitto:
//!
//! 1. `oscore_sensor` (tokio driver) with the demo credentials the edge imported registers and
//!    reports; `platform` (MQTT) sees its telemetry (reports, and the notifications of the
//!    temperature the edge observes), sends `PUT /actuators/valve 1` and gets the device's 2.04;
//!    the sensor, stopped with Ctrl-C (SIGINT), says its valve is open.
//! 2. `sans_io_sensor` (the hand-driven loop) continues from the same OSCORE state file and
//!    gets 2 reports acknowledged (a reused sequence number would be refused as a replay).
//!
//! The binaries come from the workspace's build: `cargo test -p v6iot-examples` builds this
//! package's examples (`--test examples_e2e` alone does not: it would run stale ones), and
//! `v6iot-edge` is built when the edge router's tests are (`cargo test --workspace`, as
//! scripts/test runs it); alone, run `cargo build -p v6iot-edge-router` first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn demo_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("credentials/demo.csv")
}

fn sensor_args(cmd: &mut Command, edge_port: u16, state: &Path) {
    cmd.arg("--edge")
        .arg(format!("[::1]:{edge_port}"))
        .arg("--credentials")
        .arg(demo_csv())
        .args(["--id", "sensor-1", "--every", "0.5", "--state"])
        .arg(state);
}

#[test]
fn the_oscore_sensor_reports_through_the_edge_and_takes_a_valve_command() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_port) = mosquitto(dir.path());
    let (_edge, edge_port) = edge(dir.path(), broker_port, &demo_csv(), "");
    let state = dir.path().join("sensor-1.state");

    // The platform first, so it is subscribed before the first report.
    let (platform, platform_lines) = platform(broker_port, "sensor-1", 2);

    let mut sensor = Command::new(example("oscore_sensor"));
    sensor_args(&mut sensor, edge_port, &state);
    let (sensor, sensor_lines) = spawn_lines(sensor);

    let seen = platform_output(platform, &platform_lines, Duration::from_secs(30));
    let telemetry: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("telemetry: "))
        .collect();
    assert!(telemetry.len() >= 2, "{seen:#?}");
    // Reports (temperature and valve) and, as the edge observes the SenML resource
    // `sensors/temperature`, its notifications (temperature alone).
    let mut reports = 0;
    for t in &telemetry {
        let json: serde_json::Value =
            serde_json::from_str(t.trim_start_matches("telemetry: ")).unwrap();
        let records = json.as_array().unwrap();
        assert_eq!(records[0]["n"], "urn:dev:v6iot:sensor-1:temperature", "{t}");
        assert_eq!(records[0]["v"], 21.5, "{t}");
        assert!(
            records[0]["t"].as_f64().unwrap() > 1.6e9,
            "stamped by the edge: {t}"
        );
        if records.len() == 2 {
            assert_eq!(records[1]["n"], "urn:dev:v6iot:sensor-1:valve", "{t}");
            assert!(records[1]["vb"].is_boolean(), "{t}");
            reports += 1;
        }
    }
    assert!(reports >= 1, "a report among {seen:#?}");
    assert_command_ok(&seen);

    // Ctrl-C: the sensor stops and reports what it did.
    interrupt(&sensor);
    let mut out = Vec::new();
    await_line(&sensor_lines, "stopped:", Duration::from_secs(10), &mut out);
    let stopped = out.iter().find(|l| l.starts_with("stopped:")).unwrap();
    assert!(stopped.ends_with("valve open"), "{out:#?}");
    drop(sensor);

    // The hand-driven loop continues from the same OSCORE state and is accepted.
    let mut sans_io = Command::new(example("sans_io_sensor"));
    sensor_args(&mut sans_io, edge_port, &state);
    sans_io.args(["--reports", "2"]).stdout(Stdio::piped());
    let child = Running(sans_io.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sans_io_sensor did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(
        text.contains("done: 2 reports made and acknowledged"),
        "{text}"
    );
}
