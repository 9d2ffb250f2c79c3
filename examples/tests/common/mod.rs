//! What the examples' end-to-end tests share: the examples and the `v6iot-edge` binary of this
//! build, mosquitto, the edge with imported credentials, the `platform` example subscribed.
//! Free ports, child processes read line by line and mosquitto itself come from
//! `v6iot-testkit`. Each test binary uses a part of it.

// Each test binary uses a part of it (re-exports included).
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) use v6iot_testkit::{
    Mosquitto, Running, await_line, built_binary as binary, drain_until_closed, free_udp_port,
    spawn_lines,
};

pub(crate) fn edge_bin() -> PathBuf {
    binary("v6iot-edge", "run `cargo build -p v6iot-edge-router`")
}

pub(crate) fn example(name: &str) -> PathBuf {
    binary(
        &format!("examples/{name}"),
        "run `cargo build -p v6iot-examples --examples`",
    )
}

/// mosquitto on a free port of `[::1]`; killed on drop.
pub(crate) fn mosquitto(dir: &Path) -> (Mosquitto, u16) {
    let broker = Mosquitto::on_loopback(dir, "");
    let port = broker.port();
    (broker, port)
}

/// The `platform` example for `device` on the broker at `[::1]:broker_port`, sending valve
/// command 1 after the first telemetry and exiting after `count` messages; returned once its
/// subscriptions are acknowledged (before any device can publish).
pub(crate) fn platform(
    broker_port: u16,
    device: &str,
    count: u32,
) -> (Running, mpsc::Receiver<String>) {
    let mut platform = Command::new(example("platform"));
    platform
        .args(["--broker", &format!("[::1]:{broker_port}")])
        .args(["--site", "plant1", "--device", device, "--valve", "1"])
        .args(["--count", &count.to_string()]);
    let (running, lines) = spawn_lines(platform);
    await_line(
        &lines,
        "subscribed",
        Duration::from_secs(10),
        &mut Vec::new(),
    );
    (running, lines)
}

/// Everything the `platform` example printed, once it has printed its command result (within
/// `limit`) and exited successfully; read until its output has ended, since its last lines may
/// still be in the reader threads when it exits.
pub(crate) fn platform_output(
    mut platform: Running,
    lines: &mpsc::Receiver<String>,
    limit: Duration,
) -> Vec<String> {
    let mut seen = Vec::new();
    await_line(lines, "command result:", limit, &mut seen);
    let status = platform.0.wait().unwrap();
    drain_until_closed(lines, Duration::from_secs(10), &mut seen);
    assert!(status.success(), "platform: {status:?} {seen:#?}");
    seen
}

/// Ctrl-C to `process` (it stops and says what it did).
pub(crate) fn interrupt(process: &Running) {
    let status = Command::new("kill")
        .args(["-INT", &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT {}", process.0.id());
}

/// The platform's `command result: {…}` line among `seen`, checked to be 2.04 `ok`.
pub(crate) fn assert_command_ok(seen: &[String]) {
    let result = seen
        .iter()
        .find_map(|l| l.strip_prefix("command result: "))
        .unwrap_or_else(|| panic!("no command result: {seen:#?}"));
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["code"], "2.04", "{result}");
}

pub(crate) fn edge_cli(args: &[&str], data: &Path, key_hex: &str) -> Output {
    Command::new(edge_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("V6IOT_SEAL_KEY", key_hex)
        .output()
        .unwrap()
}

/// An edge requiring OSCORE on `[::1]:port` with the demo devices imported.
pub(crate) fn edge(
    dir: &Path,
    broker: u16,
    credentials: &Path,
    coap_extra: &str,
) -> (Running, u16) {
    let key_file = dir.join("seal.key");
    let key_hex = v6iot_testkit::edge::seal_key(&edge_bin(), &key_file);
    let data = dir.join("data");
    let out = edge_cli(
        &["devices", "import", credentials.to_str().unwrap()],
        &data,
        &key_hex,
    );
    assert!(
        out.status.success(),
        "import of {}: {out:?}",
        credentials.display()
    );
    let port = free_udp_port();
    let conf = dir.join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"plant1\"\nedge_id = \"e1\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:{port}\"\n{coap_extra}\
             [mqtt]\nurl = \"mqtt://[::1]:{broker}\"\n[registry]\nseal_key_file = \"{}\"\n\
             [security]\nrequire_oscore = true\n",
            data.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(edge_bin());
    cmd.args(["run", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "info");
    let (running, lines) = spawn_lines(cmd);
    let mut seen = Vec::new();
    await_line(
        &lines,
        "edge router running",
        Duration::from_secs(20),
        &mut seen,
    );
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (running, port)
}
