//! Shared by the tests of `v6iot-sim`: the edge and mosquitto binaries, a network namespace of
//! the test's own (with the root check first), provisioning through the real `provision`
//! command, a `v6iot-sim device --credentials` child process, the edge's side of the security
//! context built from the same CSV row (the OSCORE tests). What every crate's tests share comes
//! from `v6iot-testkit`.

// Each test binary uses a part of it (re-exports included).
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use v6iot_credentials::DeviceRecord;
use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext};
use v6iot_simulator::credentials::Credentials;

pub(crate) use v6iot_testkit::{
    Mosquitto, Running, free_tcp_port, free_udp_port, require_root, system_binary,
    system_binary_named,
};

/// The `v6iot-edge` binary of this build, next to `v6iot-sim` (`cargo test --workspace` builds
/// it; alone: `cargo build -p v6iot-edge-router --bin v6iot-edge`).
pub(crate) fn edge_binary() -> PathBuf {
    v6iot_testkit::built_binary(
        "v6iot-edge",
        "run `cargo build -p v6iot-edge-router --bin v6iot-edge` first",
    )
}

/// The installed mosquitto (Debian puts it in /usr/sbin, not always on the PATH).
pub(crate) fn mosquitto_binary() -> PathBuf {
    system_binary("mosquitto", "mosquitto")
}

/// Runs `body` on a thread of its own inside a fresh network namespace with `prefix` routed to
/// loopback (`link::enter_private_network`); calls [`require_root`] first, naming `why`.
pub(crate) fn in_private_network<T: Send + 'static>(
    prefix: &str,
    why: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    require_root(&format!("a network namespace {why}"));
    let prefix = prefix.parse().unwrap();
    std::thread::spawn(move || {
        v6iot_simulator::link::enter_private_network(prefix).expect("a private network namespace");
        body()
    })
    .join()
    .unwrap()
}

/// A tokio runtime with 2 worker threads (made inside a namespace, its threads are in it).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts `v6iot-sim device --bind [::1]:0` with `args`, logging at `log` (`RUST_LOG`) to
/// `stderr`; returns it (killed on drop), its first line and the address that line
/// names (`… serving … on [::1]:PORT …`). The rest of its stdout is read and dropped.
pub(crate) fn sim_device(args: &[&str], log: &str, stderr: Stdio) -> (Running, String, SocketAddr) {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
            .args(["device", "--bind", "[::1]:0"])
            .args(args)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start v6iot-sim device"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout
        .read_line(&mut first)
        .expect("the device's first line");
    let addr = first
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    (child, first, addr)
}

/// Provisions `devices` devices (`{id_prefix}{n}` from 0, class 1, allowed on `prefix`) into
/// the registry of the edge `config` describes, its files in `data_dir` (a fresh seal key);
/// returns the fleet's OSCORE settings.
#[cfg(feature = "demo")]
pub(crate) fn provision_fleet(
    data_dir: &Path,
    config: &mut v6iot_edge_router::config::EdgeConfig,
    devices: u64,
    id_prefix: &str,
    prefix: &str,
) -> v6iot_simulator::scenario::OscoreSpec {
    let plan = v6iot_simulator::provision::ProvisionPlan {
        devices,
        first: 0,
        id_prefix: id_prefix.into(),
        class: 1,
        prefix: prefix.parse().unwrap(),
    };
    v6iot_simulator::provision::provision_edge(data_dir, config, &plan).unwrap()
}

/// The id `provision --devices 1 --first 42 --id-prefix t` gives its device (kid 0x2a).
pub(crate) const DEVICE_ID: &str = "t000042";

/// Writes fresh credentials for one device into `dir` with `v6iot-sim provision`; returns the
/// CSV's path and the device's row.
pub(crate) fn provision(dir: &Path) -> (PathBuf, DeviceRecord) {
    let csv = dir.join("creds.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args([
            "provision",
            "--devices",
            "1",
            "--first",
            "42",
            "--id-prefix",
            "t",
        ])
        .arg("--out")
        .arg(&csv)
        .stderr(Stdio::null())
        .status()
        .expect("run v6iot-sim provision");
    assert!(status.success(), "provision failed");
    let creds = Credentials::load(&csv).expect("the CSV provision wrote");
    let record = creds
        .get(DEVICE_ID)
        .expect("the provisioned device")
        .clone();
    assert_eq!(record.kid, vec![0x2a]);
    (csv, record)
}

/// The edge's context for `record`: Sender ID empty, Recipient ID = the kid; ready to send.
pub(crate) fn edge_context(record: &DeviceRecord) -> SecurityContext {
    let input = ContextInput {
        master_secret: record.master_secret.as_bytes().to_vec(),
        master_salt: record.master_salt.clone().unwrap_or_default(),
        id_context: None,
        sender_id: Vec::new(),
        recipient_id: record.kid.clone(),
    };
    let config = ContextConfig {
        persist_step: 1 << 20,
        ..ContextConfig::default()
    };
    let mut ctx = SecurityContext::new(&input, config).expect("a valid context");
    let mark = ctx
        .mark_to_persist()
        .expect("a fresh context asks for a mark");
    ctx.persisted(mark);
    ctx
}

/// A running `v6iot-sim device --credentials`, killed (SIGKILL) on drop.
pub(crate) struct OscoreSim {
    child: Running,
    /// Where it serves.
    pub(crate) addr: SocketAddr,
}

impl OscoreSim {
    /// Starts the device of `csv` on a free port of `[::1]`, its marks in `seq_file`.
    pub(crate) fn start(csv: &Path, seq_file: &Path, interval: &str) -> OscoreSim {
        let (csv, seq_file) = (csv.to_str().unwrap(), seq_file.to_str().unwrap());
        let (child, first, addr) = sim_device(
            &[
                "--id",
                DEVICE_ID,
                "--interval",
                interval,
                "--credentials",
                csv,
                "--seq-file",
                seq_file,
            ],
            "warn",
            Stdio::inherit(),
        );
        // "v6iot-sim device ID serving OSCORE-protected CoAP on [::1]:PORT (kid 2a; …)"
        assert!(first.contains("OSCORE-protected"), "{first}");
        OscoreSim { child, addr }
    }

    /// `kill -9`: no chance to write anything on the way out.
    pub(crate) fn kill9(mut self) {
        self.child.kill();
    }
}
