//! The `nbiot_meter` example against `v6iot-sim modem` (the modem emulator on a pty, the
//! example's serial port), the real `v6iot-edge` binary (OSCORE required, queue mode) and
//! mosquitto, with the `platform` example on the MQTT side — all inside a network namespace
//! this test creates (root), where the carrier prefix 2001:db8:100::/64 is routed to loopback.
//!
//! The meter brings its modem up over AT commands (PDP context `IPV6`, PSM asked for), attaches
//! at its carrier address, registers with `b=UQ` and OSCORE, reports SenML, sleeps in PSM
//! between its reports; the platform sees its telemetry and its valve command is delivered in
//! one of the meter's listening windows (2.04, the meter says the valve is open); the emulated
//! modem slept and nothing was sent to it while it slept.
//!
//! The binaries come from the workspace's build: `cargo test -p v6iot-examples` builds this
//! package's examples; `v6iot-edge` and `v6iot-sim` are built when their crates' tests are
//! (`cargo test --workspace`, as scripts/test runs it); alone, run
//! `cargo build -p v6iot-edge-router -p v6iot-simulator` first. scripts/test installs mosquitto
//! and iproute2; without them this test fails, naming the missing tool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// The carrier's prefix: the emulated modem's addresses come from it.
const CARRIER: &str = "2001:db8:100::/64";
/// The meter's address: the emulator's first (interface identifier 7).
const METER_ADDRESS: &str = "2001:db8:100::7";
/// The meter's credentials (its kid is `6d31`, "m1"), allowed on the carrier's prefix.
const CREDENTIALS: &str = "id,kid_hex,secret_hex,salt_hex,class,prefixes\n\
     meter-1,6d31,0f1e2d3c4b5a69788796a5b4c3d2e1f0,,1,2001:db8:100::/64\n";

fn sim_bin() -> PathBuf {
    binary("v6iot-sim", "run `cargo build -p v6iot-simulator`")
}

/// Enters a network namespace of its own (this thread and the processes it starts) with
/// loopback up and the carrier's prefix routed to it.
fn enter_private_network() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): this test needs root, as the CI runs");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["-6", "route", "add", "local", CARRIER, "dev", "lo"],
    ] {
        let status = Command::new("ip")
            .args(&args)
            .status()
            .expect("`ip` is not installed: run scripts/test (it installs Debian's iproute2)");
        assert!(status.success(), "ip {}: {status}", args.join(" "));
    }
}

/// `v6iot-sim modem` on a pty linked at `link`: attaches after 1 s, 100 ms each way.
fn modem(link: &Path) -> (Running, mpsc::Receiver<String>) {
    let mut cmd = Command::new(sim_bin());
    cmd.arg("modem")
        .arg("--link")
        .arg(link)
        .args(["--carrier-prefix", CARRIER, "--iid", "7"])
        .args(["--attach-delay", "1s", "--latency", "100ms"]);
    let (running, lines) = spawn_lines(cmd);
    let mut seen = Vec::new();
    await_line(&lines, "AT commands on", Duration::from_secs(10), &mut seen);
    (running, lines)
}

#[test]
fn the_nbiot_meter_attaches_registers_reports_sleeps_and_takes_a_command_in_its_window() {
    v6iot_testkit::require_root("a network namespace with the carrier's /64 routed to loopback");
    let out = std::thread::spawn(|| {
        enter_private_network();
        let dir = tempfile::tempdir().unwrap();
        let (_broker, broker_port) = mosquitto(dir.path());
        // The meter asks for 4 s of active time; the edge listens 3 s after each uplink (the
        // active time less the radio path's round trip, so nothing it sends meets a sleeping
        // modem).
        let (_edge, edge_port) = {
            let csv = dir.path().join("meters.csv");
            std::fs::write(&csv, CREDENTIALS).unwrap();
            edge(dir.path(), broker_port, &csv, "queue_listen_window_s = 3\n")
        };
        let link = dir.path().join("modem");
        let (modem, modem_lines) = modem(&link);

        // The platform first, so it is subscribed before the first report; it sends the valve
        // command after the first telemetry message.
        let (platform, platform_lines) = platform(broker_port, "meter-1", 3);

        let mut meter = Command::new(example("nbiot_meter"));
        meter
            .arg("--serial")
            .arg(&link)
            .args(["--edge", &format!("[::1]:{edge_port}")])
            .arg("--credentials")
            .arg(dir.path().join("meters.csv"))
            .args(["--id", "meter-1", "--apn", "iot.test"])
            .args(["--every", "8", "--active-time", "4", "--tau", "3600"])
            .arg("--state")
            .arg(dir.path().join("meter-1.state"));
        let (meter, meter_lines) = spawn_lines(meter);

        let platform_seen = platform_output(platform, &platform_lines, Duration::from_secs(60));

        let mut meter_seen = Vec::new();
        await_line(
            &meter_lines,
            "valve command: open",
            Duration::from_secs(30),
            &mut meter_seen,
        );
        // It sleeps again after the command's window.
        let slept_before = meter_seen
            .iter()
            .filter(|l| l.starts_with("sleeping"))
            .count();
        let deadline = Instant::now() + Duration::from_secs(30);
        while meter_seen
            .iter()
            .filter(|l| l.starts_with("sleeping"))
            .count()
            == slept_before
        {
            assert!(
                Instant::now() < deadline,
                "no sleep after the command: {meter_seen:#?}"
            );
            if let Ok(line) = meter_lines.recv_timeout(Duration::from_millis(200)) {
                meter_seen.push(line);
            }
        }

        // Ctrl-C: the meter and the modem stop and say what they did.
        interrupt(&meter);
        interrupt(&modem);
        await_line(
            &meter_lines,
            "stopped:",
            Duration::from_secs(10),
            &mut meter_seen,
        );
        let mut modem_seen = Vec::new();
        await_line(
            &modem_lines,
            "\"unreachable\"",
            Duration::from_secs(10),
            &mut modem_seen,
        );
        modem_seen.extend(modem_lines.recv_timeout(Duration::from_secs(2)));
        drop((meter, modem));
        (platform_seen, meter_seen, modem_seen)
    })
    .join()
    .unwrap();
    let (platform_seen, meter_seen, modem_seen) = out;

    // The meter: attached at its carrier address, network timers, registered, reports
    // acknowledged, asleep between them, the valve opened by the platform's command.
    let has = |needle: &str| meter_seen.iter().any(|l| l.contains(needle));
    assert!(
        has(&format!("attached: {METER_ADDRESS}")),
        "{meter_seen:#?}"
    );
    assert!(
        has("network granted: active time Some(4s)"),
        "{meter_seen:#?}"
    );
    assert!(has("registered (b=UQ)"), "{meter_seen:#?}");
    assert!(has("reports acknowledged: 2"), "{meter_seen:#?}");
    assert!(
        meter_seen
            .iter()
            .filter(|l| l.starts_with("sleeping"))
            .count()
            >= 2,
        "{meter_seen:#?}"
    );
    let stopped = meter_seen
        .iter()
        .find(|l| l.starts_with("stopped:"))
        .unwrap();
    assert!(
        stopped.contains("1 valve commands, valve open"),
        "ran once: {meter_seen:#?}"
    );

    // The platform: the meter's SenML telemetry, and its command answered 2.04.
    let telemetry: Vec<&String> = platform_seen
        .iter()
        .filter(|l| l.starts_with("telemetry: "))
        .collect();
    assert!(telemetry.len() >= 3, "{platform_seen:#?}");
    let first: serde_json::Value =
        serde_json::from_str(telemetry[0].trim_start_matches("telemetry: ")).unwrap();
    assert_eq!(
        first[0]["n"], "urn:dev:v6iot:meter-1:temperature",
        "{platform_seen:#?}"
    );
    assert_command_ok(&platform_seen);

    // The emulated modem: slept (PSM) between the reports, and nothing reached it asleep.
    let json = modem_seen
        .iter()
        .skip_while(|l| !l.starts_with('{'))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let summary: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the modem's summary: {e}: {modem_seen:#?}"));
    assert!(summary["sleeps"].as_u64().unwrap() >= 2, "{summary}");
    assert!(summary["uplinks"].as_u64().unwrap() >= 4, "{summary}");
    assert!(summary["downlinks"].as_u64().unwrap() >= 4, "{summary}");
    assert_eq!(summary["unreachable"], 0, "{summary}");
    assert_eq!(summary["address"], METER_ADDRESS, "{summary}");
}
