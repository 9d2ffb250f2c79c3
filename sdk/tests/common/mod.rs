//! Shared by the device-core tests: a test application and its resource tree, and whole
//! datagrams in and out of a `Device` from one peer.

#![allow(dead_code, unreachable_pub)]

pub mod counting_alloc;

use std::net::SocketAddr;
use std::sync::Arc;
use v6iot_sdk::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::coap::{
    App, Changed, Code, Config, Device, Reply, Request, Resource, ResourceTree, Response, Ticket,
    content_format as cf,
};
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::uplink::ReportEvent;

/// Test application: counts handler calls, holds a value, a big body, and deferred tickets.
#[derive(Debug, Default)]
pub struct Thing {
    pub gets: u32,
    pub value: u32,
    pub uploaded: Vec<u8>,
    pub deferred: Vec<Ticket>,
}

impl App for Thing {}

/// Test application of the uplink tests: makes one report (SenML JSON, body `r1`, `r2`, …)
/// when `due` comes; records what became of each.
#[derive(Debug, Default)]
pub struct Meter {
    pub due: Option<Instant>,
    pub made: u32,
    pub pending: Option<Vec<u8>>,
    pub events: Vec<ReportEvent>,
}

impl App for Meter {
    fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    fn handle_timeout(&mut self, _now: Instant) -> Changed {
        self.due = None;
        self.made += 1;
        self.pending = Some(format!("r{}", self.made).into_bytes());
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|body| (cf::SENML_JSON, body))
    }

    fn report_event(&mut self, _now: Instant, event: ReportEvent) {
        self.events.push(event);
    }
}

pub const BIG: usize = 3000;

pub fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

pub fn tree() -> Arc<ResourceTree<Thing>> {
    let mut t = ResourceTree::new();
    t.add(
        Resource::new("value")
            .content_formats(&[cf::TEXT_PLAIN, cf::JSON])
            .accepts(&[cf::TEXT_PLAIN])
            .observable()
            .get(|s: &mut Thing, r| {
                s.gets += 1;
                let body = match r.accept {
                    Some(cf::JSON) => format!("{{\"v\":{}}}", s.value),
                    _ => s.value.to_string(),
                };
                Response::content(r.accept.unwrap_or(0), body.into_bytes()).into()
            })
            .put(
                |s: &mut Thing, r| match r.text().and_then(|t| t.parse().ok()) {
                    Some(v) => {
                        s.value = v;
                        Response::code(Code::Changed).into()
                    }
                    None => Response::error(Code::BadRequest, "not a number").into(),
                },
            ),
    )
    .unwrap();
    t.add(
        Resource::new("big")
            .content_formats(&[cf::OCTET_STREAM])
            .get(|_, _| Response::content(cf::OCTET_STREAM, big_body()).into()),
    )
    .unwrap();
    t.add(Resource::new("upload").post(|s: &mut Thing, r| {
        s.uploaded = r.payload.to_vec();
        Response::code(Code::Changed).into()
    }))
    .unwrap();
    t.add(
        Resource::new("slow").post(|s: &mut Thing, r: &Request<'_>| {
            s.deferred.push(r.ticket);
            Reply::Separate
        }),
    )
    .unwrap();
    Arc::new(t)
}

pub fn config() -> Config {
    Config {
        max_body: 8192,
        ..Config::default()
    }
}

pub fn peer() -> SocketAddr {
    "[2001:db8::1]:5683".parse().unwrap()
}

pub fn request(
    kind: MessageType,
    method: RequestType,
    mid: u16,
    token: &[u8],
    path: &str,
) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

pub fn get(mid: u16, token: &[u8], path: &str) -> Packet {
    request(MessageType::Confirmable, RequestType::Get, mid, token, path)
}

/// Hands a datagram in as a driver with a store does for protected requests: a replay floor
/// the device asks for is written and confirmed at once. Sender marks are left to the test
/// (the confirmed state keeps the durable mark), so tests of held messages still see them held.
pub fn send<S: App>(d: &mut Device<S>, now: Instant, p: &Packet) {
    d.handle_datagram(now, peer(), &p.to_bytes().unwrap());
    confirm_replay_floor(d, now);
}

/// Confirms the replay floor the device asks to persist, if any, without a new sender mark.
pub fn confirm_replay_floor<S: App>(d: &mut Device<S>, now: Instant) {
    if let Some(state) = d.state_to_persist() {
        let mark = d
            .endpoint()
            .security_context()
            .map_or(0, |c| c.sequence().durable_mark());
        d.state_persisted(
            now,
            DurableState {
                sender_mark: mark,
                ..state
            },
        );
    }
}

pub fn recv<S: App>(d: &mut Device<S>) -> Packet {
    let t = d.poll_transmit().expect("a datagram");
    assert_eq!(t.destination, peer());
    Packet::from_bytes(&t.contents).unwrap()
}

pub fn recv_all<S: App>(d: &mut Device<S>) -> Vec<Packet> {
    std::iter::from_fn(|| d.poll_transmit())
        .map(|t| Packet::from_bytes(&t.contents).unwrap())
        .collect()
}

/// The Uri-Path segments of `p`.
pub fn paths(p: &Packet) -> Vec<String> {
    p.get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8(s.clone()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

pub fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}
