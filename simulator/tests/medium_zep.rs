//! The medium over real ZEP v2 on loopback, with the SDK's ZEP radio as participants: the hub
//! learns them from their datagrams and relays every frame to every other participant on the
//! channel (none back to its sender, none across channels); its pcap decodes with tshark as
//! 802.15.4 with good FCS; `v6iot-sim medium` does the same as a process and prints its counts.
//!
//! `scripts/test` installs Debian's `tshark`; without it the capture test fails, naming it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../sdk/tests/tshark/mod.rs"]
mod tshark;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tshark::{Tshark, temp_dir};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::zep_udp::{ZepConfig, ZepRadio};
use v6iot_sdk::radio::{MacFrame, Radio};
use v6iot_simulator::medium::topology::LinkModel;
use v6iot_simulator::medium::{self, MediumOptions, MediumSummary};

fn ext(n: u8) -> LinkAddr {
    LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, n])
}

/// A data frame from radio `n`, broadcast, carrying an uncompressed IPv6 header (dispatch 0x41,
/// next header 59) so tshark decodes it down to IPv6.
fn frame(n: u8, seq: u8) -> Vec<u8> {
    let mut payload = vec![0x41, 0x60, 0, 0, 0, 0, 0, 59, 64];
    payload.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
    payload.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let h = DataHeader {
        sequence: seq,
        pan: PanId(0xabcd),
        dst: LinkAddr::BROADCAST,
        src: ext(n),
        ack_request: false,
    };
    let mut buf = [0; 127];
    let len = h.emit(&payload, &mut buf).unwrap();
    buf[..len].to_vec()
}

fn radio(hub: SocketAddr, channel: u8, id: u16) -> ZepRadio {
    ZepRadio::bind(
        "[::1]:0".parse().unwrap(),
        ZepConfig {
            remote: hub,
            channel,
            device_id: id,
        },
    )
    .unwrap()
}

/// Every frame `r` receives within `wait`, as (sender's radio number, sequence).
fn drain(r: &mut ZepRadio, wait: Duration) -> Vec<(u8, u8)> {
    let mut buf = [0; 127];
    let mut got = Vec::new();
    while let Some(rx) = r.receive(&mut buf, wait).unwrap() {
        let (h, _) = DataHeader::parse(rx.frame).unwrap();
        let LinkAddr::Extended(src) = h.src else {
            panic!("{h:?}")
        };
        got.push((src[7], h.sequence));
    }
    got
}

/// A medium served by the library on a thread of its own, until dropped.
struct Served {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<MediumSummary>>,
}

impl Served {
    fn start(options: MediumOptions) -> Served {
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || medium::serve(&options, &socket, &flag).unwrap());
        Served {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> MediumSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn options(pcap: Option<std::path::PathBuf>) -> MediumOptions {
    MediumOptions {
        pcap,
        peers: Vec::new(),
        peer_channel: 26,
        link: LinkModel::PERFECT,
        seed: 1,
        max_participants: 16,
        airtime: None,
    }
}

#[test]
fn the_hub_relays_between_zep_radios_on_loopback_and_tshark_reads_its_capture() {
    let tshark = Tshark::find();
    let dir = temp_dir("medium-zep");
    let pcap = dir.join("medium.pcap");
    let served = Served::start(options(Some(pcap.clone())));
    let mut a = radio(served.addr, 26, 1);
    let mut b = radio(served.addr, 26, 2);
    let mut c = radio(served.addr, 26, 3);
    let mut elsewhere = radio(served.addr, 11, 4);
    let short = Duration::from_millis(300);

    // Each speaks once so the hub knows it; a frame reaches only those known when it is sent
    // (a's first reaches nobody).
    a.transmit(MacFrame::new(&frame(1, 0)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    b.transmit(MacFrame::new(&frame(2, 0)).unwrap()).unwrap();
    elsewhere
        .transmit(MacFrame::new(&frame(4, 0)).unwrap())
        .unwrap();
    assert_eq!(drain(&mut a, short), vec![(2, 0)]);
    c.transmit(MacFrame::new(&frame(3, 0)).unwrap()).unwrap();
    assert_eq!(drain(&mut a, short), vec![(3, 0)]);
    assert_eq!(drain(&mut b, short), vec![(3, 0)]);

    // Now ten frames each from a and c: everyone else on channel 26 gets all of them, in order;
    // the radio on channel 11 gets none, and nobody gets its own.
    for seq in 1..=10 {
        a.transmit(MacFrame::new(&frame(1, seq)).unwrap()).unwrap();
        c.transmit(MacFrame::new(&frame(3, seq)).unwrap()).unwrap();
    }
    let at_b = drain(&mut b, short);
    let from = |who: u8, got: &[(u8, u8)]| -> Vec<u8> {
        got.iter()
            .filter(|(s, _)| *s == who)
            .map(|(_, q)| *q)
            .collect()
    };
    assert_eq!(from(1, &at_b), (1..=10).collect::<Vec<_>>());
    assert_eq!(from(3, &at_b), (1..=10).collect::<Vec<_>>());
    assert_eq!(at_b.len(), 20);
    let at_a = drain(&mut a, short);
    assert_eq!(at_a, (1..=10).map(|q| (3, q)).collect::<Vec<_>>());
    assert_eq!(drain(&mut c, short).len(), 10);
    assert!(drain(&mut elsewhere, short).is_empty());
    assert_eq!(b.stats().bad_fcs + b.stats().malformed, 0);

    let summary = served.finish();
    assert_eq!(summary.hub.learned, 4);
    assert_eq!(summary.hub.datagrams_in, 24);
    assert_eq!(summary.medium.offered, 24);
    // 2 + 2 (b's first), 20 × 2 (a's and c's ten to the two others).
    assert_eq!(summary.medium.delivered, 1 + 2 + 40);
    assert_eq!(summary.hub.datagrams_out, summary.medium.delivered);
    assert_eq!(summary.driver.captured, 24);

    // The capture: one record per frame on air, every one 802.15.4 with a good FCS.
    let rows = tshark.fields(
        &pcap,
        &[],
        &[
            "frame.protocols",
            "wpan.fcs_ok",
            "wpan.src64",
            "wpan.seq_no",
        ],
    );
    assert_eq!(rows.len(), 24, "{rows:?}");
    for row in &rows {
        assert_eq!(row[0], "wpan:6lowpan:ipv6", "{row:?}");
        assert_eq!(row[1], "1", "bad FCS: {row:?}");
    }
    assert_eq!(
        tshark.count(&pcap, &[], "_ws.malformed || _ws.expert.severity >= error"),
        0
    );
}

#[test]
fn with_airtime_on_zep_peers_are_acknowledged_and_tshark_reads_the_acks() {
    let tshark = Tshark::find();
    let dir = temp_dir("medium-zep-airtime");
    let pcap = dir.join("airtime.pcap");
    let served = Served::start(MediumOptions {
        airtime: Some(medium::phy::AirtimeConfig::default()),
        ..options(Some(pcap.clone()))
    });
    let mut a = radio(served.addr, 26, 1);
    let mut b = radio(served.addr, 26, 2);
    let short = Duration::from_millis(300);
    // b speaks first: the hub learns its address, so it can acknowledge frames to it.
    b.transmit(MacFrame::new(&frame(2, 0)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for seq in 1..=5 {
        let h = DataHeader {
            sequence: seq,
            pan: PanId(0xabcd),
            dst: ext(2),
            src: ext(1),
            ack_request: true,
        };
        let mut buf = [0; 127];
        let broadcast = frame(1, seq);
        let (_, payload) = DataHeader::parse(MacFrame::new(&broadcast).unwrap()).unwrap();
        let n = h.emit(payload, &mut buf).unwrap();
        a.transmit(MacFrame::new(&buf[..n]).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_b = drain(&mut b, short);
    assert_eq!(at_b, (1..=5).map(|q| (1, q)).collect::<Vec<_>>());
    let summary = served.finish();
    assert_eq!(summary.medium.transmissions, 6);
    assert_eq!((summary.medium.acks, summary.medium.acked), (5, 5));
    assert_eq!(summary.medium.retries, 0);
    // The capture holds the six frames and the five ACKs, each with a good FCS.
    let rows = tshark.fields(
        &pcap,
        &[],
        &["wpan.frame_type", "wpan.fcs_ok", "wpan.seq_no"],
    );
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert!(rows.iter().all(|r| r[1] == "1"), "{rows:?}");
    let acks: Vec<&str> = rows
        .iter()
        .filter(|r| r[0] == "0x0002")
        .map(|r| r[2].as_str())
        .collect();
    assert_eq!(acks, ["1", "2", "3", "4", "5"], "{rows:?}");
    assert_eq!(
        tshark.count(&pcap, &[], "_ws.malformed || _ws.expert.severity >= error"),
        0
    );
}

#[test]
fn v6iot_sim_medium_serves_as_a_process_and_prints_its_counts() {
    let port = {
        let probe = UdpSocket::bind("[::1]:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args([
            "medium",
            "--listen",
            &listen.to_string(),
            "--duration",
            "3s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is listening: it says so on stderr.
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).unwrap();
    assert!(line.contains(&listen.to_string()), "{line}");
    let mut a = radio(listen, 26, 1);
    let mut b = radio(listen, 26, 2);
    a.transmit(MacFrame::new(&frame(1, 0)).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    b.transmit(MacFrame::new(&frame(2, 0)).unwrap()).unwrap();
    assert_eq!(drain(&mut a, Duration::from_millis(500)), vec![(2, 0)]);
    // Garbage to the hub is counted, and nothing comes of it.
    let junk = UdpSocket::bind("[::1]:0").unwrap();
    junk.send_to(b"not zep", listen).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["hub"]["learned"], 2, "{summary}");
    assert_eq!(summary["hub"]["dropped"]["not_zep"], 1, "{summary}");
    assert_eq!(summary["medium"]["delivered"], 1, "{summary}");
}
