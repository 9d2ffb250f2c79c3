//! What the edge router's benches share (not every bench uses every item).

#![allow(dead_code)]

use std::hint::black_box;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use v6iot_edge_router::gateway::{DeviceKeys, Gateway, StoredState};
use v6iot_edge_router::ingress::AppendResult;
use v6iot_edge_router::registry_db::{DeviceState, MasterSecret};

/// The address of simulated device `n`: one per device in the plan's plant 12·line 305 subnet.
pub(crate) fn addr(n: u32) -> SocketAddr {
    let [a, b, c, d] = n.to_be_bytes();
    SocketAddr::new(
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x1200,
            0x305,
            0,
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
            1,
        )
        .into(),
        5683,
    )
}

/// A confirmable POST to `path` with this content format, query and body; the token is the
/// message id.
pub(crate) fn post(path: &str, query: &[String], cf: u8, body: &[u8], mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.add_option(CoapOption::ContentFormat, vec![cf]);
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = body.to_vec();
    p
}

/// One telemetry datagram through the gateway: in, record stored, replay-floor batches
/// written, answer out.
pub(crate) fn round(g: &mut Gateway, now: Instant, peer: SocketAddr, bytes: &[u8]) {
    g.handle_datagram(now, 1_700_000_000_000, peer, bytes);
    let Some(a) = g.ingress_mut().poll_append() else {
        panic!("no record: {:?}", g.poll_transmit());
    };
    g.handle_appended(now, a.ticket.unwrap(), AppendResult::Stored);
    while let Some(b) = g.poll_persist() {
        g.handle_persisted(now, b.id, true);
    }
    black_box(g.poll_transmit().unwrap());
}

/// The OSCORE Recipient ID of bench device `n`.
pub(crate) fn kid(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// The master secret of bench device `n`.
pub(crate) fn secret(n: u32) -> Vec<u8> {
    let mut s = vec![0x5a; 16];
    s[..4].copy_from_slice(&n.to_be_bytes());
    s
}

/// Loads `count` active bench devices (`d000000`, …) into `g` and completes their persistence.
pub(crate) fn load_devices(g: &mut Gateway, count: u32) {
    let devices = (0..count)
        .map(|n| DeviceKeys {
            id: format!("d{n:06}"),
            kid: kid(n),
            master_secret: MasterSecret::new(secret(n)),
            master_salt: Vec::new(),
            prefixes: Vec::new(),
            state: DeviceState::Active,
            stored: StoredState::default(),
        })
        .collect();
    g.handle_devices(1, devices);
    while let Some(b) = g.poll_persist() {
        g.handle_persisted(Instant::now(), b.id, true);
    }
}
