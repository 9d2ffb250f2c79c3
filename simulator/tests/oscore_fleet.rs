//! `v6iot-sim run --credentials`: a fleet whose every request is OSCORE-protected with its own
//! row of the credentials CSV, against a stand-in edge in this test that verifies each request
//! with the edge's side of that device's context and answers protected (the MQTT side is the
//! simulator's embedded broker; nothing is published to it, so only the CoAP counts matter).
//! The fleet's marks live in one state file, written once per run; a second run continues above
//! the first one's Partial IVs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::edge_context;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{self, OscoreOption, SecurityContext};
use v6iot_simulator::credentials::Credentials;

const DEVICES: usize = 3;

/// What the stand-in edge saw: per kid, the Partial IVs of verified requests and the paths.
#[derive(Debug, Default)]
struct Seen {
    pivs: HashMap<Vec<u8>, Vec<u64>>,
    registrations: usize,
    reports: usize,
    rejected: usize,
}

/// The edge's contexts for every device of the CSV (Sender ID empty, Recipient ID = kid).
fn edge_contexts(csv: &Path) -> HashMap<Vec<u8>, SecurityContext> {
    let creds = Credentials::load(csv).unwrap();
    (0..DEVICES)
        .map(|n| {
            let r = creds.get(&format!("sim{n:06}")).unwrap();
            (r.kid.clone(), edge_context(r))
        })
        .collect()
}

/// Answers one protected request; `None` when it does not verify.
fn answer(ctx: &mut SecurityContext, outer: &Packet, seen: &mut Seen) -> Option<Vec<u8>> {
    let (inner, mut info) = match oscore::unprotect_request(ctx, outer) {
        Ok(v) => v,
        Err(_) => {
            seen.rejected += 1;
            return None;
        }
    };
    seen.pivs
        .entry(info.kid().to_vec())
        .or_default()
        .push(info.sequence_number());
    let path: Vec<Vec<u8>> = inner
        .get_option(CoapOption::UriPath)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = outer.header.message_id;
    r.set_token(outer.get_token().to_vec());
    let code = match (inner.header.code, path.as_slice()) {
        (MessageClass::Request(RequestType::Post), [rd]) if rd == b"rd" => {
            seen.registrations += 1;
            r.add_option(CoapOption::LocationPath, b"rd".to_vec());
            r.add_option(CoapOption::LocationPath, info.kid().to_vec());
            ResponseType::Created
        }
        (MessageClass::Request(RequestType::Post), [t]) if t == b"t" => {
            seen.reports += 1;
            ResponseType::Changed
        }
        (MessageClass::Request(RequestType::Post), [rd, _]) if rd == b"rd" => ResponseType::Changed,
        _ => ResponseType::NotFound,
    };
    r.header.code = MessageClass::Response(code);
    let protected = oscore::protect_response(ctx, &r, &mut info, false).ok()?;
    wire::encode(&protected)
}

/// The stand-in edge: serves until `stop`, then returns what it saw.
fn edge(
    socket: UdpSocket,
    mut contexts: HashMap<Vec<u8>, SecurityContext>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut seen = Seen::default();
        // Replies by (peer, message ID), for retransmitted requests.
        let mut replies: HashMap<(SocketAddr, u16), Vec<u8>> = HashMap::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(p) = wire::parse(&buf[..len]) else {
                continue;
            };
            if let Some(reply) = replies.get(&(peer, p.header.message_id)) {
                socket.send_to(reply, peer).unwrap();
                continue;
            }
            let kid = OscoreOption::from_packet(&p)
                .ok()
                .and_then(|o| o.kid)
                .unwrap_or_default();
            let Some(ctx) = contexts.get_mut(&kid) else {
                seen.rejected += 1;
                continue;
            };
            if let Some(reply) = answer(ctx, &p, &mut seen) {
                socket.send_to(&reply, peer).unwrap();
                replies.insert((peer, p.header.message_id), reply);
            }
        }
        seen
    })
}

/// One `v6iot-sim run --credentials`; returns its JSON report's totals.
fn run_fleet(csv: &Path, edge: SocketAddr, broker: SocketAddr) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args(["run", "--quiet", "--devices", &DEVICES.to_string()])
        .args(["--rate", "30/s", "--duration", "1500ms", "--drain", "500ms"])
        .args(["--edge", &edge.to_string()])
        .args(["--mqtt-url", &format!("mqtt://{broker}")])
        .arg("--credentials")
        .arg(csv)
        .output()
        .expect("run v6iot-sim run");
    assert!(
        out.status.success(),
        "v6iot-sim run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
    report["total"].clone()
}

fn marks(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
        .collect()
}

#[test]
fn a_fleet_speaks_oscore_and_its_marks_live_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("creds.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args(["provision", "--devices", &DEVICES.to_string()])
        .arg("--out")
        .arg(&csv)
        .status()
        .unwrap();
    assert!(status.success());
    let broker = v6iot_simulator::broker::start("::1".parse().unwrap()).unwrap();
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    let edge_addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let edge = edge(socket, edge_contexts(&csv), stop.clone());

    let first = run_fleet(&csv, edge_addr, broker);
    assert_eq!(first["registered"], DEVICES, "{first}");
    assert!(first["sent"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["acknowledged"], first["sent"], "{first}");
    assert_eq!(first["oscore"]["responses_rejected"], 0, "{first}");
    assert_eq!(first["oscore"]["state_writes"], 1, "{first}");
    let state = dir.path().join("creds.csv.seq");
    assert_eq!(marks(&state), vec![1 << 16; DEVICES]);

    let second = run_fleet(&csv, edge_addr, broker);
    assert_eq!(second["registered"], DEVICES, "{second}");
    assert_eq!(second["oscore"]["state_writes"], 1, "{second}");
    assert_eq!(marks(&state), vec![2 << 16; DEVICES]);

    stop.store(true, Ordering::Relaxed);
    let seen = edge.join().unwrap();
    assert_eq!(seen.rejected, 0, "{seen:?}");
    assert_eq!(seen.registrations, 2 * DEVICES);
    let acked = first["acknowledged"].as_u64().unwrap() + second["acknowledged"].as_u64().unwrap();
    assert_eq!(seen.reports as u64, acked);
    assert_eq!(seen.pivs.len(), DEVICES);
    for (kid, pivs) in &seen.pivs {
        let unique: HashSet<_> = pivs.iter().collect();
        assert_eq!(
            unique.len(),
            pivs.len(),
            "kid {kid:?}: a Partial IV repeated"
        );
        let (run1, run2): (Vec<u64>, Vec<u64>) = pivs.iter().partition(|p| **p < 1 << 16);
        assert!(
            !run1.is_empty() && !run2.is_empty(),
            "kid {kid:?}: {pivs:?}"
        );
        assert!(run2.iter().all(|p| *p >= 1 << 16 && *p < 2 << 16));
    }
}
