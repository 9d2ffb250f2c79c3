//! A device with OSCORE credentials, driven with virtual time: the test plays the edge router
//! with a security context of its own built from `v6iot_sdk::oscore` (Sender ID = the empty
//! string, Recipient ID = the device's kid), protects its requests, and verifies what the
//! device sends back. Whole datagrams in and out; no sockets, no sleeping.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::{Thing, big_body, code, get, peer, recv, request, send, tree};
use v6iot_sdk::coap::wire;
use v6iot_sdk::coap::{Changed, Config, Device, Event, ResourceId, Response, content_format as cf};
use v6iot_sdk::oscore::{
    self, ContextConfig, ContextInput, OscoreError, OscoreOption, RequestInfo, SecurityContext,
};
use v6iot_sdk::uplink::UplinkConfig;

const KID: [u8; 1] = [0x2a];

fn input(secret: u8, sender: &[u8], recipient: &[u8]) -> ContextInput {
    ContextInput {
        master_secret: vec![secret; 16],
        master_salt: vec![0x9e, 0x7c, 0x01, 0x02],
        id_context: None,
        sender_id: sender.to_vec(),
        recipient_id: recipient.to_vec(),
    }
}

/// The device's context: fresh, with a small persist step so marks come often.
fn device_ctx(step: u64) -> SecurityContext {
    let config = ContextConfig {
        persist_step: step,
        ..ContextConfig::default()
    };
    SecurityContext::new(&input(0x11, &KID, &[]), config).unwrap()
}

/// The edge's context for this device, ready to send.
fn edge_ctx_with(secret: u8) -> SecurityContext {
    let config = ContextConfig {
        persist_step: 1 << 20,
        ..ContextConfig::default()
    };
    let mut ctx = SecurityContext::new(&input(secret, &[], &KID), config).unwrap();
    let mark = ctx.mark_to_persist().unwrap();
    ctx.persisted(mark);
    ctx
}

fn edge_ctx() -> SecurityContext {
    edge_ctx_with(0x11)
}

/// A device whose first mark is already confirmed.
fn device() -> Device<Thing> {
    let mut d = Device::new(Config::default(), 7, tree(), Thing::default())
        .with_credentials(device_ctx(64));
    let now = Instant::now();
    let mark = d
        .mark_to_persist()
        .expect("a fresh context asks for a mark");
    d.persisted(now, mark);
    d
}

fn recv_bytes(d: &mut Device<Thing>) -> Vec<u8> {
    let t = d.poll_transmit().expect("a datagram");
    assert_eq!(t.destination, peer());
    t.contents
}

fn is_protected(p: &Packet) -> bool {
    p.get_first_option(CoapOption::Oscore).is_some()
}

/// The Partial IV a message carries in its OSCORE option, if any.
fn piv_of(p: &Packet) -> Option<u64> {
    OscoreOption::from_packet(p).unwrap().partial_iv
}

/// Protects `plain` with the edge's context, sends it, and verifies the answer.
fn call(
    d: &mut Device<Thing>,
    edge: &mut SecurityContext,
    now: Instant,
    plain: &Packet,
) -> (Packet, RequestInfo) {
    let (protected, mut info) = oscore::protect_request(edge, plain).unwrap();
    send(d, now, &protected);
    let outer = recv(d);
    assert!(is_protected(&outer), "the answer is protected: {outer:?}");
    assert_eq!(outer.header.message_id, plain.header.message_id);
    assert_eq!(outer.get_token(), plain.get_token());
    let inner = oscore::unprotect_response(edge, &outer, &mut info).unwrap();
    (inner, info)
}

fn value_id(d: &Device<Thing>) -> ResourceId {
    d.tree().find("value").unwrap()
}

#[test]
fn protected_get_and_put_round_trip() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();

    let (r, _) = call(&mut d, &mut edge, now, &get(1, b"a", "value"));
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(r.payload, b"0");

    let mut put = request(MessageType::Confirmable, RequestType::Put, 2, b"b", "value");
    put.add_option(CoapOption::ContentFormat, vec![]);
    put.payload = b"42".to_vec();
    let (protected, mut info) = oscore::protect_request(&mut edge, &put).unwrap();
    // On the wire the method and path are hidden: outer POST, the path only in the ciphertext.
    assert_eq!(
        protected.header.code,
        MessageClass::Request(RequestType::Post)
    );
    assert!(protected.get_option(CoapOption::UriPath).is_none());
    send(&mut d, now, &protected);
    let outer = recv(&mut d);
    assert_eq!(code(&outer), ResponseType::Changed, "outer code of §4.2");
    let r = oscore::unprotect_response(&mut edge, &outer, &mut info).unwrap();
    assert_eq!(code(&r), ResponseType::Changed);
    assert_eq!(d.app().value, 42);

    let (r, _) = call(&mut d, &mut edge, now, &get(3, b"c", "value"));
    assert_eq!(r.payload, b"42");
    let s = d.endpoint().oscore_stats().unwrap();
    assert_eq!(s.requests_verified, 3);
    assert_eq!(s.requests_rejected + s.plain_refused, 0);
}

#[test]
fn plain_requests_get_4_01_and_only_discovery_stays_open() {
    let mut d = device();
    let now = Instant::now();
    send(&mut d, now, &get(1, b"a", "value"));
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::Unauthorized);
    assert!(!is_protected(&r));
    let mut put = request(MessageType::Confirmable, RequestType::Put, 2, b"b", "value");
    put.payload = b"7".to_vec();
    send(&mut d, now, &put);
    assert_eq!(code(&recv(&mut d)), ResponseType::Unauthorized);
    assert_eq!((d.app().gets, d.app().value), (0, 0), "no handler ran");
    // A plain Observe registration is refused too and registers nothing.
    let mut obs = get(3, b"o", "value");
    obs.add_option(CoapOption::Observe, vec![]);
    send(&mut d, now, &obs);
    assert_eq!(code(&recv(&mut d)), ResponseType::Unauthorized);
    assert_eq!(d.endpoint().observer_count(), 0);

    send(&mut d, now, &get(4, b"d", ".well-known/core"));
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::Content);
    assert!(!is_protected(&r));
    let links = String::from_utf8(r.payload).unwrap();
    assert!(links.contains("</value>"), "{links}");
    assert_eq!(d.endpoint().oscore_stats().unwrap().plain_refused, 3);
}

#[test]
fn without_credentials_an_oscore_request_gets_4_02() {
    let mut d = Device::new(Config::default(), 7, tree(), Thing::default());
    let mut edge = edge_ctx();
    let (protected, _) = oscore::protect_request(&mut edge, &get(1, b"a", "value")).unwrap();
    send(&mut d, Instant::now(), &protected);
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::BadOption);
    assert_eq!(d.app().gets, 0);
    // And plain CoAP works as ever.
    send(&mut d, Instant::now(), &get(2, b"b", "value"));
    assert_eq!(recv(&mut d).payload, b"0");
}

/// Sends a tampered or foreign protected request; returns the unprotected error answer.
fn rejected(d: &mut Device<Thing>, now: Instant, bytes: &[u8]) -> Packet {
    d.handle_datagram(now, peer(), bytes);
    let r = recv(d);
    assert!(!is_protected(&r), "§8.2 errors are unprotected: {r:?}");
    assert_eq!(
        wire::uint_option(&r, CoapOption::MaxAge, 4).unwrap(),
        Some(0),
        "Outer Max-Age 0"
    );
    r
}

#[test]
fn wrong_key_flipped_bit_replay_and_unknown_kid_are_refused_before_any_handler() {
    let mut d = device();
    let now = Instant::now();

    let mut stranger = edge_ctx_with(0x99);
    let (p, _) = oscore::protect_request(&mut stranger, &get(1, b"a", "value")).unwrap();
    let r = rejected(&mut d, now, &p.to_bytes().unwrap());
    assert_eq!(code(&r), ResponseType::BadRequest);
    assert_eq!(r.payload, b"Decryption failed");

    let mut edge = edge_ctx();
    let (p, _) = oscore::protect_request(&mut edge, &get(2, b"b", "value")).unwrap();
    let mut bytes = p.to_bytes().unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    let r = rejected(&mut d, now, &bytes);
    assert_eq!(code(&r), ResponseType::BadRequest);

    // The same protected request again under a new message ID: a replay.
    let (mut p, _) = oscore::protect_request(&mut edge, &get(3, b"c", "value")).unwrap();
    send(&mut d, now, &p);
    assert!(is_protected(&recv(&mut d)), "the first one is answered");
    assert_eq!(d.app().gets, 1);
    p.header.message_id = 4;
    let r = rejected(&mut d, now, &p.to_bytes().unwrap());
    assert_eq!(code(&r), ResponseType::Unauthorized);
    assert_eq!(r.payload, b"Replay detected");

    let mut other_kid =
        SecurityContext::new(&input(0x11, &[0x07], &[0x08]), ContextConfig::default()).unwrap();
    let m = other_kid.mark_to_persist().unwrap();
    other_kid.persisted(m);
    let (p, _) = oscore::protect_request(&mut other_kid, &get(5, b"d", "value")).unwrap();
    let r = rejected(&mut d, now, &p.to_bytes().unwrap());
    assert_eq!(code(&r), ResponseType::Unauthorized);
    assert_eq!(r.payload, b"Security context not found");

    assert_eq!(
        d.app().gets,
        1,
        "only the genuine request reached the handler"
    );
    assert_eq!(d.endpoint().oscore_stats().unwrap().requests_rejected, 4);
    let events: Vec<Event> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::OscoreRejected {
                peer: peer(),
                error: OscoreError::DecryptionFailed
            },
            Event::OscoreRejected {
                peer: peer(),
                error: OscoreError::DecryptionFailed
            },
            Event::OscoreRejected {
                peer: peer(),
                error: OscoreError::Replay
            },
            Event::OscoreRejected {
                peer: peer(),
                error: OscoreError::UnknownKid
            },
        ]
    );
}

#[test]
fn a_retransmitted_request_gets_the_same_protected_bytes_and_runs_once() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();
    let (p, _) = oscore::protect_request(&mut edge, &get(9, b"r", "value")).unwrap();
    send(&mut d, now, &p);
    let first = recv_bytes(&mut d);
    send(&mut d, now + Duration::from_secs(2), &p);
    assert_eq!(recv_bytes(&mut d), first);
    assert_eq!(d.app().gets, 1);
}

#[test]
fn observe_notifications_are_protected_with_fresh_partial_ivs() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();
    let mut reg = get(1, b"ob", "value");
    reg.add_option(CoapOption::Observe, vec![]);
    let (first, mut info) = call(&mut d, &mut edge, now, &reg);
    assert_eq!(code(&first), ResponseType::Content);
    assert!(first.get_first_option(CoapOption::Observe).is_some());
    assert_eq!(d.endpoint().observer_count(), 1);

    let mut pivs = Vec::new();
    for v in 1..=5u32 {
        d.app_mut().value = v;
        let t = now + Duration::from_secs(u64::from(v));
        d.notify(t, Changed::NONE.with(value_id(&d)));
        let outer = recv(&mut d);
        assert_eq!(outer.get_token(), b"ob");
        assert!(
            outer.get_first_option(CoapOption::Observe).is_some(),
            "outer Observe"
        );
        pivs.push(piv_of(&outer).expect("notifications carry their own Partial IV"));
        let n = oscore::unprotect_response(&mut edge, &outer, &mut info).unwrap();
        assert_eq!(n.payload, v.to_string().as_bytes());
    }
    assert!(pivs.windows(2).all(|w| w[1] > w[0]), "{pivs:?}");
    // A replayed notification is refused by the edge.
    d.notify(now, Changed::NONE.with(value_id(&d)));
    let outer = recv(&mut d);
    oscore::unprotect_response(&mut edge, &outer, &mut info).unwrap();
    assert_eq!(
        oscore::unprotect_response(&mut edge, &outer, &mut info),
        Err(OscoreError::Replay)
    );
}

#[test]
fn block2_over_oscore_reassembles_the_body() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();
    let mut body = Vec::new();
    for num in 0..100u16 {
        let mut p = get(100 + num, b"bk", "big");
        p.add_option(
            CoapOption::Block2,
            wire::Block {
                num: u32::from(num),
                more: false,
                szx: 6,
            }
            .encode(),
        );
        let (r, _) = call(&mut d, &mut edge, now, &p);
        assert_eq!(code(&r), ResponseType::Content);
        let b = wire::block_option(&r, CoapOption::Block2).unwrap().unwrap();
        body.extend_from_slice(&r.payload);
        if !b.more {
            break;
        }
    }
    assert_eq!(body, big_body());
}

#[test]
fn separate_responses_are_protected_with_the_request_binding() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();
    let post = request(
        MessageType::Confirmable,
        RequestType::Post,
        5,
        b"sl",
        "slow",
    );
    let (protected, mut info) = oscore::protect_request(&mut edge, &post).unwrap();
    send(&mut d, now, &protected);
    let ack = recv(&mut d);
    assert_eq!(ack.header.code, MessageClass::Empty);
    let ticket = d.app().deferred[0];
    d.respond_separately(now, ticket, Response::content(0, b"done".to_vec()))
        .unwrap();
    let outer = recv(&mut d);
    assert_eq!(outer.header.get_type(), MessageType::Confirmable);
    let r = oscore::unprotect_response(&mut edge, &outer, &mut info).unwrap();
    assert_eq!(r.payload, b"done");
    // Its retransmission is the same message.
    let t = d.poll_timeout().unwrap();
    d.handle_timeout(t);
    assert_eq!(recv(&mut d), outer);
}

// ----- the device as a client: registration and telemetry -----

fn edge_addr() -> SocketAddr {
    "[2001:db8::e]:5683".parse().unwrap()
}

fn uplink_device(step: u64, now: Instant) -> Device<Thing> {
    Device::new(Config::default(), 11, tree(), Thing::default())
        .with_credentials(device_ctx(step))
        .with_uplink(now, UplinkConfig::new(edge_addr(), "dev-42"))
}

/// What the edge receives: the datagram, verified with the edge's context.
fn edge_recv(
    d: &mut Device<Thing>,
    edge: &mut SecurityContext,
) -> (Packet, Packet, RequestInfo, Vec<u8>) {
    let t = d.poll_transmit().expect("a request to the edge");
    edge_verify(edge, t)
}

/// Verifies one datagram to the edge.
fn edge_verify(
    edge: &mut SecurityContext,
    t: v6iot_sdk::coap::Transmit,
) -> (Packet, Packet, RequestInfo, Vec<u8>) {
    assert_eq!(t.destination, edge_addr());
    let outer = wire::parse(&t.contents).unwrap();
    assert!(is_protected(&outer), "uplink requests are protected");
    let opt = OscoreOption::from_packet(&outer).unwrap();
    assert_eq!(
        opt.kid.as_deref(),
        Some(&KID[..]),
        "kid = the device's Sender ID"
    );
    let (inner, info) = oscore::unprotect_request(edge, &outer).unwrap();
    (outer, inner, info, t.contents)
}

/// The edge's piggybacked, protected answer.
fn edge_answer(
    edge: &mut SecurityContext,
    to: &Packet,
    info: &mut RequestInfo,
    code: ResponseType,
    location: &[&str],
) -> Vec<u8> {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = to.header.message_id;
    r.header.code = MessageClass::Response(code);
    r.set_token(to.get_token().to_vec());
    for seg in location {
        r.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
    }
    oscore::protect_response(edge, &r, info, false)
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// The edge's side of a registration: verifies `POST /rd` and answers 2.01; returns the
/// request's Partial IV.
fn register_at_edge(d: &mut Device<Thing>, edge: &mut SecurityContext, now: Instant) -> u64 {
    let (outer, inner, mut info, _) = edge_recv(d, edge);
    assert_eq!(paths(&inner), ["rd"]);
    let ok = edge_answer(edge, &outer, &mut info, ResponseType::Created, &["rd", "1"]);
    d.handle_datagram(now, edge_addr(), &ok);
    assert!(d.registration().unwrap().is_registered());
    piv_of(&outer).unwrap()
}

fn paths(p: &Packet) -> Vec<String> {
    p.get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8(s.clone()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn registration_and_reports_are_protected_and_verified_both_ways() {
    let now = Instant::now();
    let mut d = uplink_device(64, now);
    let mut edge = edge_ctx();
    // A fresh context: the registration waits for the first mark.
    assert!(d.poll_transmit().is_none(), "nothing before the first mark");
    let mark = d.mark_to_persist().unwrap();
    d.persisted(now, mark);

    let (outer, inner, mut info, first_bytes) = edge_recv(&mut d, &mut edge);
    assert_eq!(inner.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(paths(&inner), ["rd"]);
    let query: Vec<Vec<u8>> = inner
        .get_option(CoapOption::UriQuery)
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert!(query.contains(&b"ep=dev-42".to_vec()), "{query:?}");

    // The retransmission is the same protected message (same Partial IV).
    let t = d.poll_timeout().unwrap();
    d.handle_timeout(t);
    let again = d.poll_transmit().unwrap();
    assert_eq!(again.contents, first_bytes);

    // A tampered answer is dropped; the registration keeps waiting.
    let mut bad = edge_answer(
        &mut edge,
        &outer,
        &mut info,
        ResponseType::Created,
        &["rd", "1"],
    );
    let good = bad.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    d.handle_datagram(t, edge_addr(), &bad);
    assert!(!d.registration().unwrap().is_registered());
    // So is an unprotected one.
    let mut plain = Packet::new();
    plain.header.set_type(MessageType::Acknowledgement);
    plain.header.message_id = outer.header.message_id;
    plain.header.code = MessageClass::Response(ResponseType::Created);
    plain.set_token(outer.get_token().to_vec());
    d.handle_datagram(t, edge_addr(), &plain.to_bytes().unwrap());
    assert!(!d.registration().unwrap().is_registered());
    let s = *d.endpoint().oscore_stats().unwrap();
    assert_eq!(s.responses_rejected, 2);

    d.handle_datagram(t, edge_addr(), &good);
    assert!(d.registration().unwrap().is_registered());

    d.report(t, cf::SENML_JSON, br#"[{"n":"t","v":21.5}]"#.to_vec())
        .unwrap();
    let (outer, inner, mut info, _) = edge_recv(&mut d, &mut edge);
    assert_eq!(paths(&inner), ["t"]);
    assert_eq!(inner.payload, br#"[{"n":"t","v":21.5}]"#);
    let ok = edge_answer(&mut edge, &outer, &mut info, ResponseType::Changed, &[]);
    d.handle_datagram(t, edge_addr(), &ok);
    assert_eq!(d.reporter().unwrap().stats().acked, 1);
    assert_eq!(d.endpoint().oscore_stats().unwrap().responses_verified, 2);
}

#[test]
fn nothing_is_sent_at_or_above_an_unconfirmed_mark() {
    let now = Instant::now();
    let mut d = uplink_device(4, now);
    let mut edge = edge_ctx();
    let mark = d.mark_to_persist().unwrap();
    assert_eq!(mark, 4);
    d.persisted(now, mark);
    let mut confirmed = mark;
    let mut seen = Vec::new();
    // Registration, then reports: each request takes one sequence number.
    seen.push(register_at_edge(&mut d, &mut edge, now));
    let mut held = 0;
    for i in 0..20u32 {
        d.report(now, cf::SENML_JSON, format!("[{{\"v\":{i}}}]").into_bytes())
            .unwrap();
        let t = match d.poll_transmit() {
            Some(t) => t,
            None => {
                // Held: the mark asked for is not confirmed yet.
                held += 1;
                let want = d
                    .mark_to_persist()
                    .expect("a held message means a mark is due");
                assert!(want > confirmed);
                d.persisted(now, want);
                confirmed = want;
                d.poll_transmit()
                    .expect("released once the mark is durable")
            }
        };
        let (outer, _, mut info, _) = edge_verify(&mut edge, t);
        let piv = piv_of(&outer).unwrap();
        assert!(
            piv < confirmed,
            "Partial IV {piv} at or above the mark {confirmed}"
        );
        seen.push(piv);
        let ok = edge_answer(&mut edge, &outer, &mut info, ResponseType::Changed, &[]);
        d.handle_datagram(now, edge_addr(), &ok);
    }
    assert!(held > 0, "with a step of 4 some requests must have waited");
    let expected: Vec<u64> = (0..21).collect();
    assert_eq!(seen, expected, "numbers used once each, in order");
    assert_eq!(d.reporter().unwrap().stats().acked, 20);
}

#[test]
fn a_notification_waits_for_its_mark_and_then_carries_the_current_state() {
    let now = Instant::now();
    let mut d = Device::new(Config::default(), 7, tree(), Thing::default())
        .with_credentials(device_ctx(64));
    let mut edge = edge_ctx();
    // The registration's response needs no sequence number: it goes out before any mark.
    let mut reg = get(1, b"ob", "value");
    reg.add_option(CoapOption::Observe, vec![]);
    let (_, mut info) = call(&mut d, &mut edge, now, &reg);
    d.app_mut().value = 5;
    d.notify(now, Changed::NONE.with(value_id(&d)));
    assert!(d.poll_transmit().is_none(), "held until a mark is durable");
    assert_eq!(d.endpoint().oscore_stats().unwrap().held, 1);
    d.app_mut().value = 6;
    let mark = d.mark_to_persist().unwrap();
    d.persisted(now, mark);
    let outer = recv(&mut d);
    assert_eq!(piv_of(&outer), Some(0));
    let n = oscore::unprotect_response(&mut edge, &outer, &mut info).unwrap();
    assert_eq!(n.payload, b"6");
    assert!(d.poll_transmit().is_none());
}

#[test]
fn an_idle_device_with_credentials_and_an_observer_fits_in_two_kib() {
    let mut d = device();
    let mut edge = edge_ctx();
    let now = Instant::now();
    let mut reg = get(1, b"ob", "value");
    reg.add_option(CoapOption::Observe, vec![]);
    call(&mut d, &mut edge, now, &reg);
    let idle = now + Config::default().exchange_lifetime() + Duration::from_secs(1);
    d.handle_timeout(idle);
    let footprint = d.endpoint().memory_footprint();
    assert!(
        footprint <= 2048,
        "idle endpoint with OSCORE holds {footprint} bytes"
    );
}
