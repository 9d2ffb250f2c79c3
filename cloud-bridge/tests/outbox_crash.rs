//! `kill -9` of a process that appends to and publishes from the outbox, at an arbitrary
//! moment, several times over: every message whose append was reported durable comes out after
//! the restart (unless it may have been acknowledged), intact, in id order, and ids go on
//! increasing from run to run.
//!
//! The child process is this test binary again, running the same test with
//! `V6IOT_OUTBOX_CRASH_DIR` set, which makes it [`crash_child`] instead (so a normal run has one
//! test, not a child entry point that passes by doing nothing). The child prints
//! `D <id> <payload>` once an append resolved and `A <id>` before it acknowledges a message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use v6iot_cloud_bridge::message::NewMessage;
use v6iot_cloud_bridge::outbox::{self, OutboxConfig};

const CHILD_ENV: &str = "V6IOT_OUTBOX_CRASH_DIR";
const APPENDERS: u64 = 8;

fn config(dir: &Path) -> OutboxConfig {
    let mut c = OutboxConfig::new(dir);
    c.max_bytes = 64 << 20;
    c.segment_bytes = 16 << 10; // many segments: rollover and reclaiming happen mid-stream
    c.ack_persist_interval = Duration::from_millis(20);
    c.publish_window = 64;
    c
}

/// The child process of [`kill_9_loses_nothing_reported_durable`]: appends and acknowledges in
/// `dir` until it is killed.
fn crash_child(dir: std::ffi::OsString) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    say(""); // ends the harness's "test kill_9_loses_nothing_reported_durable ... " line
    rt.block_on(async move {
        let (outbox, mut rx, acks) = outbox::open(config(Path::new(&dir))).await.unwrap();
        // the bridge: acknowledges what it receives, 20 messages behind (as if waiting for
        // the broker), so that some are always in flight
        tokio::spawn(async move {
            let mut in_flight = std::collections::VecDeque::new();
            while let Some(m) = rx.recv().await {
                in_flight.push_back(m.id);
                if in_flight.len() > 20 {
                    let id = in_flight.pop_front().unwrap();
                    say(&format!("A {id}"));
                    acks.ack(id);
                }
            }
        });
        let pid = std::process::id();
        let mut tasks = Vec::new();
        for a in 0..APPENDERS {
            let outbox = outbox.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0_u64.. {
                    let payload = format!("{pid}-{a}-{k}");
                    let msg = NewMessage {
                        topic: format!("v6iot/crash/dev-{a}/telemetry"),
                        payload: payload.clone().into_bytes(),
                        retain: false,
                    };
                    let id = outbox.append_one(msg).await.unwrap();
                    say(&format!("D {id} {payload}"));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// One line on stdout, whole (a pipe write under 4 KiB is atomic).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

/// What one child printed before it was killed.
#[derive(Default)]
struct Run {
    durable: BTreeMap<u64, String>,
    acked: BTreeSet<u64>,
}

fn run_child_until_killed(dir: &Path, after_durable: usize) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_9_loses_nothing_reported_durable",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std_mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = Run::default();
    let started = Instant::now();
    let record = |run: &mut Run, line: String| {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("D"), Some(id), Some(payload)) => {
                run.durable.insert(id.parse().unwrap(), payload.to_owned());
            }
            (Some("A"), Some(id), None) => {
                run.acked.insert(id.parse().unwrap());
            }
            _ => {} // the test harness's own lines
        }
    };
    while run.durable.len() < after_durable {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child reported only {} durable appends in 60 s",
            run.durable.len()
        );
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => record(&mut run, line),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the child ended by itself: {:?}", child.wait())
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    // what was printed before the kill is still in the pipe
    for line in lines.iter() {
        record(&mut run, line);
    }
    reader.join().unwrap();
    run
}

#[test]
fn kill_9_loses_nothing_reported_durable() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return crash_child(dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut durable: BTreeMap<u64, String> = BTreeMap::new();
    let mut maybe_acked: BTreeSet<u64> = BTreeSet::new();
    for (round, after) in [300, 1_000, 170, 2_000, 40, 700].into_iter().enumerate() {
        let run = run_child_until_killed(dir.path(), after);
        let (first, last) = (
            *run.durable.keys().next().unwrap(),
            *run.durable.keys().next_back().unwrap(),
        );
        let before = durable.keys().next_back().copied().unwrap_or(0);
        assert!(
            first > before,
            "round {round}: id {first} after id {before} of an earlier run"
        );
        eprintln!(
            "round {round}: {} durable (ids {first}..={last}), {} acknowledged",
            run.durable.len(),
            run.acked.len()
        );
        durable.extend(run.durable);
        maybe_acked.extend(run.acked);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
        let stats = outbox.stats();
        let mut got = Vec::new();
        for _ in 0..stats.recovered_messages {
            let m = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap();
            got.push(m);
        }
        assert!(
            got.windows(2).all(|w| w[0].id < w[1].id),
            "delivered out of order"
        );
        let by_id: BTreeMap<u64, Vec<u8>> = got.into_iter().map(|m| (m.id, m.payload)).collect();
        let mut missing = Vec::new();
        for (id, payload) in &durable {
            match by_id.get(id) {
                Some(p) => assert_eq!(p, payload.as_bytes(), "message {id} changed"),
                None if maybe_acked.contains(id) => {}
                None => missing.push(*id),
            }
        }
        assert!(
            missing.is_empty(),
            "{} durable, unacknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        eprintln!(
            "after the last kill: {} recovered, {} segments, {} torn tails cut ({} bytes)",
            stats.recovered_messages, stats.segments, stats.torn_tails, stats.truncated_bytes
        );
        // and ids still go on
        let next = outbox
            .append_one(NewMessage {
                topic: "t".to_owned(),
                payload: Vec::new(),
                retain: false,
            })
            .await
            .unwrap();
        assert!(next > *durable.keys().next_back().unwrap());
    });
}
