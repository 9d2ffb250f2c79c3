//! `v6iot-flood` against a tiny UDP responder on `::1`: a bounded number of requests, and the
//! generator's counts must equal what the responder did (answers, resets, errors, drops).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the responder did, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Done {
    /// 2.04 ACKs.
    ok: u64,
    /// RSTs.
    resets: u64,
    /// 4.04 ACKs.
    not_found: u64,
    /// Requests left unanswered.
    dropped: u64,
    /// Requests from how many source ports.
    peers: usize,
}

/// How the responder treats the i-th request it receives.
type Policy = fn(u64) -> Reply;

#[derive(Clone, Copy)]
enum Reply {
    Ack(u8),
    Reset,
    Drop,
}

/// A CoAP responder on `::1` that answers each request as `policy` says, until `stop`.
fn responder(policy: Policy) -> (SocketAddr, Arc<AtomicBool>, JoinHandle<Done>) {
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut done = Done::default();
        let mut peers = std::collections::HashSet::new();
        let mut buf = [0u8; 2048];
        let mut i = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let req = &buf[..len];
            assert_eq!(req[0] >> 4, 0x4, "a confirmable CoAP request");
            assert_eq!(req[1], 0x02, "POST");
            peers.insert(peer);
            let tkl = usize::from(req[0] & 0x0f);
            let reply = policy(i);
            i += 1;
            let answer = match reply {
                Reply::Ack(code) => {
                    let mut a = vec![0x60 | (req[0] & 0x0f), code, req[2], req[3]];
                    a.extend_from_slice(&req[4..4 + tkl]);
                    a
                }
                Reply::Reset => vec![0x70, 0, req[2], req[3]],
                Reply::Drop => {
                    done.dropped += 1;
                    continue;
                }
            };
            socket.send_to(&answer, peer).unwrap();
            match reply {
                Reply::Ack(0x44) => done.ok += 1,
                Reply::Ack(_) => done.not_found += 1,
                Reply::Reset => done.resets += 1,
                Reply::Drop => {}
            }
        }
        done.peers = peers.len();
        done
    });
    (addr, stop, handle)
}

/// Runs `v6iot-flood` with `args` against `target`; returns its JSON result.
fn flood(target: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-flood"))
        .arg("--target")
        .arg(target.to_string())
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "v6iot-flood failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let line = lines.next().expect("the result line");
    for key in [
        "responses_per_s=",
        " ok=",
        " timeouts=",
        " p99_us=",
        " codes=",
    ] {
        assert!(line.contains(key), "`{key}` in the result line: {line}");
    }
    serde_json::from_str(lines.next().expect("the JSON line")).unwrap()
}

/// Every request answered with 2.04: ok equals the answers sent, no timeouts, nothing late,
/// the request budget exactly spent, every socket used.
#[test]
fn counts_match_a_responder_that_answers_everything() {
    let (addr, stop, handle) = responder(|_| Reply::Ack(0x44));
    let r = flood(
        addr,
        &[
            "--sockets",
            "3",
            "--window",
            "16",
            "--threads",
            "2",
            "--secs",
            "60",
            "--warmup",
            "0",
            "--max-requests",
            "5000",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let done = handle.join().unwrap();
    assert_eq!(done.ok, 5000);
    assert_eq!(done.peers, 3);
    assert_eq!(r["ok"], 5000, "{r}");
    assert_eq!(r["sent"], 5000, "{r}");
    assert_eq!(r["timeouts"], 0, "{r}");
    assert_eq!(r["late"], 0, "{r}");
    assert_eq!(r["other"], 0, "{r}");
    assert_eq!(r["resets"], 0, "{r}");
    assert_eq!(r["threads"], 2, "{r}");
    assert_eq!(r["codes"], serde_json::json!(["2.04:5000"]), "{r}");
    assert!(
        r["secs"].as_f64().unwrap() < 60.0,
        "ended with its budget: {r}"
    );
    assert!(r["p50_us"].as_u64().unwrap() >= 1, "{r}");
}

/// Resets, error codes and drops are each counted as what they are: drops time out (and the
/// window recovers from them), resets and 4.04 complete their requests without counting as ok.
#[test]
fn resets_errors_and_drops_are_counted_apart() {
    let (addr, stop, handle) = responder(|i| match i % 10 {
        3 => Reply::Reset,
        6 => Reply::Ack(0x84),
        9 => Reply::Drop,
        _ => Reply::Ack(0x44),
    });
    let r = flood(
        addr,
        &[
            "--sockets",
            "2",
            "--window",
            "8",
            "--secs",
            "60",
            "--warmup",
            "0",
            "--max-requests",
            "1000",
            "--timeout-ms",
            "100",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let done = handle.join().unwrap();
    assert_eq!(
        (done.ok, done.resets, done.not_found, done.dropped),
        (700, 100, 100, 100)
    );
    assert_eq!(r["ok"], done.ok, "{r}");
    assert_eq!(r["resets"], done.resets, "{r}");
    assert_eq!(r["other"], done.not_found, "{r}");
    assert_eq!(r["timeouts"], done.dropped, "{r}");
    assert_eq!(r["late"], 0, "{r}");
    assert_eq!(r["sent"], 1000, "{r}");
    assert_eq!(r["threads"], 2, "default: min(sockets, 2)");
    assert_eq!(
        r["codes"],
        serde_json::json!(["0.00:100", "2.04:700", "4.04:100"]),
        "{r}"
    );
}

/// Nobody listening: every request times out (the ICMP errors count as nothing), and the run
/// ends at `--secs`.
#[test]
fn a_silent_target_gives_timeouts_only() {
    let port = UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap();
    let started = std::time::Instant::now();
    let r = flood(
        port,
        &[
            "--sockets",
            "2",
            "--window",
            "4",
            "--secs",
            "0.5",
            "--warmup",
            "0",
            "--timeout-ms",
            "100",
        ],
    );
    assert_eq!(r["ok"], 0, "{r}");
    assert!(r["timeouts"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["sent"].as_u64().unwrap() >= r["timeouts"].as_u64().unwrap(),
        "{r}"
    );
    for nothing in ["other", "late", "resets"] {
        assert_eq!(r[nothing], 0, "no `{nothing}`: {r}");
    }
    assert_eq!(r["codes"], serde_json::json!([]), "{r}");
    // The measured period is --secs exactly when the run went on until then (the report caps
    // it at --secs; a run that stopped early reports less).
    assert_eq!(r["secs"].as_f64(), Some(0.5), "{r}");
    // Wall clock, process start and exit included. The lower bound holds on any machine; the
    // upper one is generous because this machine may be busy: it tells a run that ends at
    // --secs from one that does not end by itself (the test would hang without it).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
