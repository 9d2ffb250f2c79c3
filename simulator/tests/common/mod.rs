//! Shared by the tests of `v6iot-sim`: provisioning through the real `provision` command, a
//! `v6iot-sim device --credentials` child process, the edge's side of the security context
//! built from the same CSV row (the OSCORE tests), and the root check of the namespace tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use v6iot_credentials::DeviceRecord;
use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext};
use v6iot_simulator::credentials::Credentials;

/// Fails the calling test at once, with one message naming `what` needs root, unless the
/// process runs as root (effective uid 0). Tests that make namespaces call it first, so that a
/// plain `cargo test` by another user fails there, early and plainly, not halfway through.
pub(crate) fn require_root(what: &str) {
    // proc(5): /proc/PID is owned by the process's effective user id.
    let euid = std::fs::metadata("/proc/self")
        .map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m));
    assert!(
        euid == 0,
        "this test needs root for {what}; run the tests as root (`sudo -E cargo test`, or \
         scripts/test as CI does) — running as uid {euid}"
    );
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
    child: Child,
    /// Where it serves.
    pub(crate) addr: SocketAddr,
}

impl OscoreSim {
    /// Starts the device of `csv` on a free port of `[::1]`, its marks in `seq_file`.
    pub(crate) fn start(csv: &Path, seq_file: &Path, interval: &str) -> OscoreSim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
            .args(["device", "--bind", "[::1]:0", "--id", DEVICE_ID])
            .args(["--interval", interval])
            .arg("--credentials")
            .arg(csv)
            .arg("--seq-file")
            .arg(seq_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start v6iot-sim device");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the device's first line");
        // "v6iot-sim device ID serving OSCORE-protected CoAP on [::1]:PORT (kid 2a; …)"
        assert!(first.contains("OSCORE-protected"), "{first}");
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
        OscoreSim { child, addr }
    }

    /// `kill -9`: no chance to write anything on the way out.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the device");
        self.child.wait().expect("reap the device");
    }
}

impl Drop for OscoreSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
