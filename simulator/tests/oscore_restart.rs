//! RFC 8613 Appendix B.1.1 under `kill -9`: a `v6iot-sim device --credentials` streams Observe
//! notifications to this test, is killed mid-stream without warning, and restarts from its
//! sequence-number file; the Partial IVs it sends, read from the OSCORE option of every datagram
//! captured at the test's UDP socket, never repeat.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use common::{OscoreSim, edge_context, provision};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{self, OscoreOption, SecurityContext};

/// Registers an observation of `/sensors/temperature` over OSCORE and collects the Partial IVs
/// of `count` notifications, each verified with the edge's context.
fn observe_pivs(
    socket: &UdpSocket,
    device: SocketAddr,
    edge: &mut SecurityContext,
    run: u8,
    count: usize,
) -> Vec<u64> {
    let mut reg = Packet::new();
    reg.header.set_type(MessageType::Confirmable);
    reg.header.code = MessageClass::Request(RequestType::Get);
    reg.header.message_id = 1000 * u16::from(run);
    reg.set_token(vec![0x0b, run]);
    reg.add_option(CoapOption::Observe, vec![]);
    reg.add_option(CoapOption::UriPath, b"sensors".to_vec());
    reg.add_option(CoapOption::UriPath, b"temperature".to_vec());
    let (protected, mut info) = oscore::protect_request(edge, &reg).unwrap();
    socket
        .send_to(&protected.to_bytes().unwrap(), device)
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pivs = Vec::new();
    let mut buf = [0u8; 2048];
    while pivs.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} notifications in 60 s",
            pivs.len()
        );
        let (len, from) = socket.recv_from(&mut buf).expect("a datagram within 10 s");
        if from != device {
            // Sent by the previous run's device before its kill, read only now.
            assert_eq!(from.ip(), device.ip());
            continue;
        }
        let p = wire::parse(&buf[..len]).unwrap();
        if p.get_token() != [0x0b, run] {
            continue; // a late notification of the previous run's observation
        }
        if p.header.get_type() == MessageType::Confirmable {
            let ack = wire::empty_message(MessageType::Acknowledgement, p.header.message_id);
            socket.send_to(&ack, device).unwrap();
        }
        let option = OscoreOption::from_packet(&p).expect("every answer is OSCORE");
        let verified = oscore::unprotect_response(edge, &p, &mut info)
            .unwrap_or_else(|e| panic!("notification did not verify: {e}"));
        assert!(!verified.payload.is_empty());
        if let Some(piv) = option.partial_iv {
            pivs.push(piv);
        }
    }
    pivs
}

fn stored_mark(path: &std::path::Path) -> u64 {
    v6iot_sdk::store::parse_state(&std::fs::read_to_string(path).unwrap())
        .expect("an OSCORE state file")
        .sender_mark
}

#[test]
fn partial_ivs_never_repeat_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, record) = provision(dir.path());
    let seq_file = dir.path().join("t.seq");
    let mut edge = edge_context(&record);
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut seen = HashSet::new();
    let mut previous_max: Option<u64> = None;
    // The first two runs cross marks (the device's step is 256) before they are killed.
    for (run, count) in [(1u8, 600usize), (2, 600), (3, 50)] {
        let mark_before = std::fs::read_to_string(&seq_file)
            .ok()
            .map(|_| stored_mark(&seq_file));
        let sim = OscoreSim::start(&csv, &seq_file, "2ms");
        let pivs = observe_pivs(&socket, sim.addr, &mut edge, run, count);
        sim.kill9();

        assert!(
            pivs.windows(2).all(|w| w[1] > w[0]),
            "run {run}: increasing"
        );
        let first = pivs[0];
        if let (Some(max), Some(mark)) = (previous_max, mark_before) {
            assert!(
                first >= mark && mark > max,
                "run {run} starts at {first}; stored mark {mark}; previous run's largest {max}"
            );
        }
        for piv in &pivs {
            assert!(seen.insert(*piv), "Partial IV {piv} repeated in run {run}");
        }
        let last = *pivs.last().unwrap();
        assert!(
            stored_mark(&seq_file) > last,
            "the durable mark is above every number used"
        );
        previous_max = Some(last);
    }
    assert_eq!(seen.len(), 1250);
}
