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

/// Every allocation counted, so the memory test measures what a device holds.
#[global_allocator]
static ALLOC: common::counting_alloc::Counting = common::counting_alloc::Counting;

use std::net::SocketAddr;
use std::time::Duration;
use v6iot_sdk::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::counting_alloc::heap_freed_by;
use common::{Thing, big_body, code, get, paths, peer, recv, request, send, tree};
use v6iot_sdk::coap::wire;
use v6iot_sdk::coap::{Changed, Config, Device, Event, ResourceId, Response, content_format as cf};
use v6iot_sdk::oscore::{
    self, ContextConfig, ContextInput, DurableState, OscoreError, OscoreOption, RequestInfo,
    SecurityContext,
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
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;

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
    let now = Instant::ZERO;
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
    send(&mut d, Instant::ZERO, &protected);
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::BadOption);
    assert_eq!(d.app().gets, 0);
    // And plain CoAP works as ever.
    send(&mut d, Instant::ZERO, &get(2, b"b", "value"));
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
    let now = Instant::ZERO;

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
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;
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

#[test]
fn registration_and_reports_are_protected_and_verified_both_ways() {
    let now = Instant::ZERO;
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
    assert_eq!(s.unprotected_errors, 0, "2.01 is no error answer");
    // An unprotected §8.2 error from the edge: dropped (unauthenticated), but counted and
    // reported with its code and diagnostic, so an operator sees why reports fail.
    while d.poll_event().is_some() {}
    plain.header.code = MessageClass::Response(ResponseType::Unauthorized);
    plain.payload = b"Security context not found".to_vec();
    d.handle_datagram(t, edge_addr(), &plain.to_bytes().unwrap());
    assert!(!d.registration().unwrap().is_registered());
    let s = *d.endpoint().oscore_stats().unwrap();
    assert_eq!((s.unprotected_errors, s.responses_rejected), (1, 3));
    let events: Vec<Event> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        events,
        [Event::UnprotectedError {
            peer: edge_addr(),
            code: 0x81,
            diagnostic: "Security context not found".to_owned(),
        }]
    );
    assert_eq!(d.state_to_persist(), None, "the uplink path writes nothing");

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

/// The edge's piggybacked, protected 4.01 asking for `echo` (RFC 9175 §2.3).
fn edge_challenge(
    edge: &mut SecurityContext,
    to: &Packet,
    info: &mut RequestInfo,
    echo: &[u8],
) -> Vec<u8> {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = to.header.message_id;
    r.header.code = MessageClass::Response(ResponseType::Unauthorized);
    r.set_token(to.get_token().to_vec());
    r.add_option(CoapOption::Unknown(wire::ECHO), echo.to_vec());
    oscore::protect_response(edge, &r, info, false)
        .unwrap()
        .to_bytes()
        .unwrap()
}

#[test]
fn an_echo_challenge_is_answered_by_repeating_the_request_once() {
    let now = Instant::now();
    let mut d = uplink_device(64, now);
    let mut edge = edge_ctx();
    let mark = d.mark_to_persist().unwrap();
    d.persisted(now, mark);
    register_at_edge(&mut d, &mut edge, now);

    d.report(now, cf::SENML_JSON, br#"[{"n":"t","v":1}]"#.to_vec())
        .unwrap();
    let (outer, inner, mut info, _) = edge_recv(&mut d, &mut edge);
    assert!(
        inner
            .get_first_option(CoapOption::Unknown(wire::ECHO))
            .is_none()
    );
    let challenge = edge_challenge(&mut edge, &outer, &mut info, b"echo-one");
    d.handle_datagram(now, edge_addr(), &challenge);
    // Not an outcome: the same request again, with the value, as a new message.
    assert_eq!(d.reporter().unwrap().stats().acked, 0);
    let (again, inner2, mut info2, _) = edge_recv(&mut d, &mut edge);
    assert_eq!(
        inner2.get_first_option(CoapOption::Unknown(wire::ECHO)),
        Some(&b"echo-one".to_vec())
    );
    assert_eq!(paths(&inner2), ["t"]);
    assert_eq!(inner2.payload, inner.payload);
    assert!(piv_of(&again) > piv_of(&outer), "a fresh Partial IV");
    assert_ne!(again.header.message_id, outer.header.message_id);
    assert_ne!(again.get_token(), outer.get_token());
    // The old request is not retransmitted any more; the new one is.
    let t = d.poll_timeout().unwrap();
    d.handle_timeout(t);
    let (retransmitted, ..) = edge_verify_again(&mut d, &again);
    assert_eq!(retransmitted.header.message_id, again.header.message_id);
    let ok = edge_answer(&mut edge, &again, &mut info2, ResponseType::Changed, &[]);
    d.handle_datagram(t, edge_addr(), &ok);
    assert_eq!(d.reporter().unwrap().stats().acked, 1);
    assert_eq!(d.endpoint().oscore_stats().unwrap().echo_repeats, 1);

    // Asked again after the repeat: once is all; the 4.01 is the outcome.
    d.report(t, cf::SENML_JSON, br#"[{"n":"t","v":2}]"#.to_vec())
        .unwrap();
    let (outer, _, mut info, _) = edge_recv(&mut d, &mut edge);
    let challenge = edge_challenge(&mut edge, &outer, &mut info, b"echo-two");
    d.handle_datagram(t, edge_addr(), &challenge);
    let (again, _, mut info2, _) = edge_recv(&mut d, &mut edge);
    let challenge = edge_challenge(&mut edge, &again, &mut info2, b"echo-three");
    d.handle_datagram(t, edge_addr(), &challenge);
    assert!(d.poll_transmit().is_none(), "no second repeat");
    assert_eq!(d.reporter().unwrap().stats().rejected, 1);
    assert_eq!(d.endpoint().oscore_stats().unwrap().echo_repeats, 2);
    // An Echo in an unprotected 4.01 is not taken: nothing to verify it came from the edge.
    d.report(t, cf::SENML_JSON, br#"[{"n":"t","v":3}]"#.to_vec())
        .unwrap();
    let (outer, ..) = edge_recv(&mut d, &mut edge);
    let mut plain = Packet::new();
    plain.header.set_type(MessageType::Acknowledgement);
    plain.header.message_id = outer.header.message_id;
    plain.header.code = MessageClass::Response(ResponseType::Unauthorized);
    plain.set_token(outer.get_token().to_vec());
    plain.add_option(CoapOption::Unknown(wire::ECHO), b"forged".to_vec());
    d.handle_datagram(t, edge_addr(), &plain.to_bytes().unwrap());
    assert!(
        d.poll_transmit().is_none(),
        "no repeat for a forged challenge"
    );
    assert_eq!(d.endpoint().oscore_stats().unwrap().echo_repeats, 2);
}

/// The next datagram to the edge, which must be the same bytes as `sent` (a retransmission).
fn edge_verify_again(d: &mut Device<Thing>, sent: &Packet) -> (Packet, Vec<u8>) {
    let t = d.poll_transmit().expect("a retransmission");
    let p = wire::parse(&t.contents).unwrap();
    assert_eq!(p, *sent, "the same protected message");
    (p, t.contents)
}

#[test]
fn nothing_is_sent_at_or_above_an_unconfirmed_mark() {
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;
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
    let now = Instant::ZERO;
    let mut reg = get(1, b"ob", "value");
    reg.add_option(CoapOption::Observe, vec![]);
    call(&mut d, &mut edge, now, &reg);
    let idle = now + Config::default().exchange_lifetime() + Duration::from_secs(1);
    d.handle_timeout(idle);
    assert_eq!(d.endpoint().observer_count(), 1);
    // Measured: the heap the device frees when dropped (tree kept alive) plus the device.
    let tree = d.tree().clone();
    let size = std::mem::size_of::<Device<Thing>>();
    let heap = heap_freed_by(|| drop(d));
    let footprint = size + heap;
    eprintln!(
        "idle device with OSCORE and an observer: {size} bytes + {heap} bytes of heap = {footprint}"
    );
    // The security context (keys, IDs, replay window) and the observer's binding are on the heap.
    assert!(heap > 200, "only {heap} bytes of heap");
    assert!(
        footprint <= 2048,
        "idle device with OSCORE holds {footprint} bytes"
    );
    drop(tree);
}

/// A driver's store on virtual time: writes every state the device asks for, confirms it, and
/// returns what a file would hold.
fn store_all(d: &mut Device<Thing>, stored: &mut DurableState, now: Instant) -> u32 {
    let mut writes = 0;
    while let Some(state) = d.state_to_persist() {
        *stored = state;
        writes += 1;
        d.state_persisted(now, state);
    }
    writes
}

/// A device built from what a store holds, as after a reboot.
fn restarted(stored: DurableState) -> Device<Thing> {
    let config = ContextConfig {
        persist_step: 64,
        ..ContextConfig::default()
    };
    let ctx = SecurityContext::restore_state(&input(0x11, &KID, &[]), config, stored).unwrap();
    Device::new(Config::default(), 8, tree(), Thing::default()).with_credentials(ctx)
}

fn put_value(mid: u16, token: &[u8], value: &str) -> Packet {
    let mut put = request(
        MessageType::Confirmable,
        RequestType::Put,
        mid,
        token,
        "value",
    );
    put.add_option(CoapOption::ContentFormat, vec![]);
    put.payload = value.as_bytes().to_vec();
    put
}

#[test]
fn a_command_replayed_after_a_restart_is_refused_and_its_handler_does_not_run() {
    let now = Instant::ZERO;
    let mut stored = DurableState::default();
    let mut d = restarted(stored);
    assert_eq!(store_all(&mut d, &mut stored, now), 1, "the first mark");
    assert_eq!(stored.replay_floor, 0);
    let mut edge = edge_ctx();

    // A protected PUT verifies, but its handler waits until the new floor is durable.
    let (protected, mut info) =
        oscore::protect_request(&mut edge, &put_value(1, b"a", "42")).unwrap();
    let captured = protected.to_bytes().unwrap();
    assert_eq!(piv_of(&protected), Some(0));
    d.handle_datagram(now, peer(), &captured);
    assert!(
        d.poll_transmit().is_none(),
        "no answer before the floor is durable"
    );
    assert_eq!(d.app().value, 0, "the handler has not run");
    assert_eq!(d.endpoint().oscore_stats().unwrap().requests_held, 1);
    let want = d.state_to_persist().unwrap();
    assert_eq!(want.replay_floor, 1, "one past the request's Partial IV");
    assert_eq!(
        want.sender_mark, stored.sender_mark,
        "one write carries both"
    );
    // A retransmission meanwhile is a duplicate, not a replay, and is not answered yet.
    d.handle_datagram(now, peer(), &captured);
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.endpoint().oscore_stats().unwrap().requests_rejected, 0);

    assert_eq!(
        store_all(&mut d, &mut stored, now),
        1,
        "one write per command"
    );
    assert_eq!(stored.replay_floor, 1);
    let answer = recv(&mut d);
    assert_eq!(answer.header.message_id, 1);
    let inner = oscore::unprotect_response(&mut edge, &answer, &mut info).unwrap();
    assert_eq!(code(&inner), ResponseType::Changed);
    assert_eq!(d.app().value, 42);
    // A retransmission now gets the stored answer, the same bytes, and runs nothing.
    d.handle_datagram(now, peer(), &captured);
    assert_eq!(recv(&mut d).to_bytes().unwrap(), answer.to_bytes().unwrap());

    // Reboot: a new device from the stored state. The captured command is a replay.
    let mut d = restarted(stored);
    assert_eq!(
        d.endpoint()
            .security_context()
            .unwrap()
            .replay_window()
            .floor(),
        1
    );
    store_all(&mut d, &mut stored, now);
    d.handle_datagram(now, peer(), &captured);
    let refused = recv(&mut d);
    assert!(!is_protected(&refused), "§8.2 errors are unprotected");
    assert_eq!(code(&refused), ResponseType::Unauthorized);
    assert_eq!(refused.payload, b"Replay detected");
    assert_eq!(d.app().value, 0, "the handler did not run again");
    assert_eq!(
        d.state_to_persist(),
        None,
        "a refused request writes nothing"
    );

    // A fresh command from the edge (higher Partial IV) works.
    let (fresh, mut info) = oscore::protect_request(&mut edge, &put_value(2, b"b", "43")).unwrap();
    assert_eq!(piv_of(&fresh), Some(1));
    send(&mut d, now, &fresh);
    let answer = recv(&mut d);
    let inner = oscore::unprotect_response(&mut edge, &answer, &mut info).unwrap();
    assert_eq!(code(&inner), ResponseType::Changed);
    assert_eq!(d.app().value, 43);
}

#[test]
fn a_crash_before_the_floor_is_durable_loses_the_command_not_its_protection() {
    let now = Instant::ZERO;
    let mut stored = DurableState::default();
    let mut d = restarted(stored);
    store_all(&mut d, &mut stored, now);
    let mut edge = edge_ctx();
    let (protected, mut info) =
        oscore::protect_request(&mut edge, &put_value(1, b"a", "42")).unwrap();
    let captured = protected.to_bytes().unwrap();
    d.handle_datagram(now, peer(), &captured);
    assert_eq!(d.app().value, 0);
    // The device dies before the write lands: the handler never ran, so the edge's
    // retransmission after the reboot is served once.
    drop(d);
    let mut d = restarted(stored);
    store_all(&mut d, &mut stored, now);
    d.handle_datagram(now, peer(), &captured);
    store_all(&mut d, &mut stored, now);
    let inner = oscore::unprotect_response(&mut edge, &recv(&mut d), &mut info).unwrap();
    assert_eq!(code(&inner), ResponseType::Changed);
    assert_eq!(d.app().value, 42);
    assert_eq!(stored.replay_floor, 1);
}

#[test]
fn verified_requests_queue_in_order_behind_a_failing_store_and_are_bounded() {
    let now = Instant::ZERO;
    let mut stored = DurableState::default();
    let mut d = restarted(stored);
    store_all(&mut d, &mut stored, now);
    let mut edge = edge_ctx();
    let mut infos = Vec::new();
    for n in 0..6u16 {
        let (p, info) =
            oscore::protect_request(&mut edge, &put_value(n, &[n as u8], &n.to_string())).unwrap();
        d.handle_datagram(now, peer(), &p.to_bytes().unwrap());
        infos.push(info);
    }
    // The store "fails": nothing is confirmed, nothing runs, nothing is answered.
    assert!(d.poll_transmit().is_none());
    let s = *d.endpoint().oscore_stats().unwrap();
    assert_eq!((s.requests_held, s.requests_dropped_unpersisted), (4, 2));
    assert_eq!(d.app().value, 0);
    // Once it works, the four held requests run in their order.
    store_all(&mut d, &mut stored, now);
    let answers = common::recv_all(&mut d);
    assert_eq!(answers.len(), 4);
    for (answer, info) in answers.iter().zip(&mut infos) {
        let inner = oscore::unprotect_response(&mut edge, answer, info).unwrap();
        assert_eq!(code(&inner), ResponseType::Changed);
    }
    assert_eq!(d.app().value, 3);
    assert_eq!(
        stored.replay_floor, 6,
        "the dropped ones count as seen: they are replays now"
    );
}

#[test]
fn a_device_without_credentials_never_asks_for_a_write() {
    let mut d = Device::new(Config::default(), 7, tree(), Thing::default());
    send(&mut d, Instant::ZERO, &put_value(1, b"a", "5"));
    assert_eq!(code(&recv(&mut d)), ResponseType::Changed);
    assert_eq!(d.state_to_persist(), None);
}
