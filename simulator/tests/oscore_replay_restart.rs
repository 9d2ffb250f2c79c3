//! RFC 8613 Appendix B.1.2 under `kill -9`: the test plays the edge (its context built with
//! `v6iot_sdk::oscore`, Sender ID empty, the device's Sender ID = its kid), sends a protected
//! `PUT /actuators/valve` to a `v6iot-sim device --credentials … --seq-file …`, captures the
//! request's bytes, kills the device without warning and restarts it from the same files. The
//! captured command sent again is refused with the unprotected 4.01 "Replay detected" and the
//! valve stays as it was; a fresh command works.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::{OscoreSim, edge_context, provision};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{self, DurableState, SecurityContext};
use v6iot_sdk::store::parse_state;

fn valve_request(method: RequestType, mid: u16, body: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"actuators".to_vec());
    p.add_option(CoapOption::UriPath, b"valve".to_vec());
    if !body.is_empty() {
        p.add_option(CoapOption::ContentFormat, vec![]);
        p.payload = body.as_bytes().to_vec();
    }
    p
}

/// Sends `bytes` to the device and returns its answer (the ACK with the same message ID).
fn send_and_receive(socket: &UdpSocket, device: SocketAddr, bytes: &[u8], mid: u16) -> Packet {
    socket.send_to(bytes, device).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (len, from) = socket.recv_from(&mut buf).expect("an answer within 10 s");
        if from != device {
            continue; // from the device's previous process, before its kill
        }
        let p = wire::parse(&buf[..len]).unwrap();
        if p.header.message_id == mid && p.header.get_type() == MessageType::Acknowledgement {
            return p;
        }
    }
}

/// Protects `plain`, sends it and verifies the answer; returns the request's bytes and the
/// verified response.
fn call(
    socket: &UdpSocket,
    device: SocketAddr,
    edge: &mut SecurityContext,
    plain: &Packet,
) -> (Vec<u8>, Packet) {
    let (protected, mut info) = oscore::protect_request(edge, plain).unwrap();
    let bytes = protected.to_bytes().unwrap();
    let answer = send_and_receive(socket, device, &bytes, plain.header.message_id);
    let verified = oscore::unprotect_response(edge, &answer, &mut info)
        .unwrap_or_else(|e| panic!("the answer did not verify: {e}: {answer:?}"));
    (bytes, verified)
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

fn valve(socket: &UdpSocket, device: SocketAddr, edge: &mut SecurityContext, mid: u16) -> String {
    let (_, r) = call(
        socket,
        device,
        edge,
        &valve_request(RequestType::Get, mid, ""),
    );
    assert_eq!(code(&r), ResponseType::Content);
    String::from_utf8(r.payload).unwrap()
}

fn stored(path: &std::path::Path) -> DurableState {
    parse_state(&std::fs::read_to_string(path).unwrap()).expect("an OSCORE state file")
}

#[test]
fn a_command_captured_before_kill_9_is_refused_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, record) = provision(dir.path());
    let seq_file = dir.path().join("t.seq");
    // A state file as written before replay floors were kept: the mark alone still loads.
    std::fs::write(&seq_file, "300\n").unwrap();
    let mut edge = edge_context(&record);
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let sim = OscoreSim::start(&csv, &seq_file, "1s");
    assert_eq!(valve(&socket, sim.addr, &mut edge, 1), "off");
    let (captured, r) = call(
        &socket,
        sim.addr,
        &mut edge,
        &valve_request(RequestType::Put, 2, "on"),
    );
    assert_eq!(code(&r), ResponseType::Changed);
    assert_eq!(valve(&socket, sim.addr, &mut edge, 3), "on");
    let state = stored(&seq_file);
    assert!(state.sender_mark >= 300, "{state:?}");
    assert_eq!(
        state.replay_floor, 3,
        "three requests (Partial IVs 0, 1, 2) were served: each floor durable before its handler ran"
    );
    sim.kill9();

    let sim = OscoreSim::start(&csv, &seq_file, "1s");
    // The captured command, byte for byte (same message ID: an answer stored for
    // deduplication died with the process).
    let refused = send_and_receive(&socket, sim.addr, &captured, 2);
    assert!(
        refused.get_first_option(CoapOption::Oscore).is_none(),
        "§8.2: the error is unprotected"
    );
    assert_eq!(code(&refused), ResponseType::Unauthorized);
    assert_eq!(refused.payload, b"Replay detected");
    assert_eq!(
        valve(&socket, sim.addr, &mut edge, 4),
        "off",
        "the replayed command did not open the valve"
    );
    let (_, r) = call(
        &socket,
        sim.addr,
        &mut edge,
        &valve_request(RequestType::Put, 5, "on"),
    );
    assert_eq!(code(&r), ResponseType::Changed, "a fresh command works");
    assert_eq!(valve(&socket, sim.addr, &mut edge, 6), "on");
    assert_eq!(stored(&seq_file).replay_floor, 6);
    sim.kill9();
}
