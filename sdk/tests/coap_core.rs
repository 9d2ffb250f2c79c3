//! The CoAP device core driven with virtual time: whole datagrams in, whole datagrams out.
//! No sockets, no sleeping; time is an `Instant` the test moves forward from `Instant::ZERO`.

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

use std::time::Duration;
use v6iot_sdk::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::counting_alloc::{heap_freed_by, live};
use common::{BIG, Thing, big_body, code, config, get, peer, recv, recv_all, request, send, tree};
use proptest::prelude::*;
use v6iot_sdk::coap::wire::{self, Block};
use v6iot_sdk::coap::{
    Changed, Code, Config, Device, Endpoint, Event, ObserveEnd, ResourceId, Response,
};

fn device() -> Device<Thing> {
    Device::new(config(), 7, tree(), Thing::default())
}

/// A device that serves bodies in 256-byte blocks (SZX 4).
fn block_device() -> Device<Thing> {
    let config = Config {
        block_szx: 4,
        ..config()
    };
    Device::new(config, 1, tree(), Thing::default())
}

/// A Block2 option value asking for block `num` of size SZX `szx`.
fn block2(num: u32, szx: u8) -> Vec<u8> {
    Block {
        num,
        more: false,
        szx,
    }
    .encode()
}

fn observe_of(p: &Packet) -> Option<u32> {
    p.get_first_option(CoapOption::Observe)
        .map(|v| wire::read_uint(v, 3).unwrap())
}

fn block_of(p: &Packet, o: CoapOption) -> Option<Block> {
    p.get_first_option(o).map(|v| Block::decode(v).unwrap())
}

fn ack(mid: u16) -> Vec<u8> {
    let [a, b] = mid.to_be_bytes();
    vec![0x60, 0, a, b]
}

fn reset(mid: u16) -> Vec<u8> {
    let [a, b] = mid.to_be_bytes();
    vec![0x70, 0, a, b]
}

// ----- request / response basics -----

#[test]
fn confirmable_request_gets_piggybacked_response() {
    let mut d = device();
    let now = Instant::ZERO;
    send(&mut d, now, &get(0x1234, b"tok", "value"));
    let r = recv(&mut d);
    assert_eq!(r.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(r.header.message_id, 0x1234);
    assert_eq!(r.get_token(), b"tok");
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(
        r.get_first_option(CoapOption::ContentFormat),
        Some(&vec![]),
        "text/plain (0) is an empty uint"
    );
    assert_eq!(r.payload, b"0");
    assert!(d.poll_transmit().is_none());
}

#[test]
fn non_confirmable_request_gets_non_response_with_same_token() {
    let mut d = device();
    let now = Instant::ZERO;
    send(
        &mut d,
        now,
        &request(
            MessageType::NonConfirmable,
            RequestType::Get,
            9,
            b"n1",
            "value",
        ),
    );
    let r = recv(&mut d);
    assert_eq!(r.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(r.get_token(), b"n1");
    assert_eq!(code(&r), ResponseType::Content);
}

#[test]
fn accept_selects_the_format_and_unknown_formats_get_4_06() {
    let mut d = device();
    let now = Instant::ZERO;
    let mut p = get(1, b"a", "value");
    p.add_option(CoapOption::Accept, wire::write_uint(50));
    send(&mut d, now, &p);
    assert_eq!(recv(&mut d).payload, b"{\"v\":0}");
    let mut p = get(2, b"a", "value");
    p.add_option(CoapOption::Accept, wire::write_uint(112));
    send(&mut d, now, &p);
    assert_eq!(code(&recv(&mut d)), ResponseType::NotAcceptable);
}

#[test]
fn error_codes_for_path_method_format_and_options() {
    let mut d = device();
    let now = Instant::ZERO;
    send(&mut d, now, &get(1, b"", "nothing/here"));
    assert_eq!(code(&recv(&mut d)), ResponseType::NotFound);
    send(
        &mut d,
        now,
        &request(
            MessageType::Confirmable,
            RequestType::Delete,
            2,
            b"",
            "value",
        ),
    );
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::MethodNotAllowed);
    assert_eq!(r.payload, b"/value allows GET, PUT");
    let mut put = request(MessageType::Confirmable, RequestType::Put, 3, b"", "value");
    put.add_option(CoapOption::ContentFormat, wire::write_uint(50));
    put.payload = b"{}".to_vec();
    send(&mut d, now, &put);
    assert_eq!(code(&recv(&mut d)), ResponseType::UnsupportedContentFormat);
    let mut crit = get(4, b"", "value");
    crit.add_option(CoapOption::Unknown(2049), b"x".to_vec());
    send(&mut d, now, &crit);
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::BadOption);
    assert_eq!(r.payload, b"unrecognized critical option 2049");
    let mut elective = get(5, b"", "value");
    elective.add_option(CoapOption::Unknown(2048), b"x".to_vec());
    send(&mut d, now, &elective);
    assert_eq!(
        code(&recv(&mut d)),
        ResponseType::Content,
        "unknown elective options are ignored"
    );
    let mut fetch = get(6, b"", "value");
    fetch.header.code = MessageClass::Request(RequestType::Fetch);
    send(&mut d, now, &fetch);
    assert_eq!(code(&recv(&mut d)), ResponseType::MethodNotAllowed);
    let mut proxy = get(7, b"", "value");
    proxy.add_option(CoapOption::ProxyUri, b"coap://x/".to_vec());
    send(&mut d, now, &proxy);
    assert_eq!(code(&recv(&mut d)), ResponseType::ProxyingNotSupported);
    assert_eq!(d.endpoint().stats().error_responses, 6);
}

#[test]
fn no_response_option_suppresses_success_answers() {
    let mut d = device();
    let now = Instant::ZERO;
    let mut p = request(
        MessageType::NonConfirmable,
        RequestType::Put,
        1,
        b"q",
        "value",
    );
    p.payload = b"5".to_vec();
    p.add_option(CoapOption::NoResponse, vec![0x02]);
    send(&mut d, now, &p);
    assert!(d.poll_transmit().is_none(), "2.xx suppressed on NON");
    assert_eq!(d.app().value, 5);
    let mut p = request(MessageType::Confirmable, RequestType::Put, 2, b"q", "value");
    p.payload = b"6".to_vec();
    p.add_option(CoapOption::NoResponse, vec![0x02]);
    send(&mut d, now, &p);
    let r = recv(&mut d);
    assert_eq!(
        (r.header.get_type(), r.header.code),
        (MessageType::Acknowledgement, MessageClass::Empty),
        "CON still gets an empty ACK"
    );
}

// ----- deduplication -----

#[test]
fn duplicate_confirmable_gets_the_same_reply_without_running_the_handler() {
    let mut d = device();
    let t0 = Instant::ZERO;
    let p = get(77, b"d", "value");
    send(&mut d, t0, &p);
    let first = d.poll_transmit().unwrap();
    send(&mut d, t0 + Duration::from_secs(3), &p);
    let again = d.poll_transmit().unwrap();
    assert_eq!(first, again);
    assert_eq!(d.app().gets, 1);
    assert_eq!(d.endpoint().stats().duplicates, 1);
    // After EXCHANGE_LIFETIME (247 s) the message ID may be reused for a new request.
    let later = t0 + config().exchange_lifetime() + Duration::from_millis(1);
    d.handle_timeout(later);
    send(&mut d, later, &p);
    assert!(d.poll_transmit().is_some());
    assert_eq!(d.app().gets, 2);
}

#[test]
fn duplicate_non_confirmable_is_dropped_silently() {
    let mut d = device();
    let now = Instant::ZERO;
    let p = request(
        MessageType::NonConfirmable,
        RequestType::Get,
        5,
        b"n",
        "value",
    );
    send(&mut d, now, &p);
    assert!(d.poll_transmit().is_some());
    send(&mut d, now, &p);
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.app().gets, 1);
}

#[test]
fn same_message_id_from_another_peer_is_not_a_duplicate() {
    let mut d = device();
    let now = Instant::ZERO;
    let bytes = get(5, b"", "value").to_bytes().unwrap();
    d.handle_datagram(now, peer(), &bytes);
    d.handle_datagram(now, "[2001:db8::2]:5683".parse().unwrap(), &bytes);
    assert_eq!(d.app().gets, 2);
}

// ----- Observe -----

fn register(d: &mut Device<Thing>, now: Instant, mid: u16, token: &[u8]) -> Packet {
    let mut p = get(mid, token, "value");
    p.add_option(CoapOption::Observe, vec![]);
    send(d, now, &p);
    recv(d)
}

#[test]
fn observe_registers_notifies_in_sequence_and_deregisters() {
    let mut d = device();
    let now = Instant::ZERO;
    let r = register(&mut d, now, 1, b"ob");
    let first = observe_of(&r).expect("registration response carries Observe");
    assert_eq!(d.endpoint().observer_count(), 1);
    assert_eq!(
        d.poll_event(),
        Some(Event::ObserveStarted {
            peer: peer(),
            resource: value_id(&d)
        })
    );

    let mut seqs = vec![first];
    for v in 1..=3u32 {
        d.app_mut().value = v;
        d.notify(
            now + Duration::from_secs(u64::from(v)),
            Changed::NONE.with(value_id(&d)),
        );
        let n = recv(&mut d);
        assert_eq!(n.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(n.get_token(), b"ob");
        assert_eq!(n.payload, v.to_string().as_bytes());
        seqs.push(observe_of(&n).unwrap());
    }
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "increasing sequence numbers: {seqs:?}"
    );

    // GET with Observe = 1 deregisters and is answered like a plain GET.
    let mut p = get(2, b"ob", "value");
    p.add_option(CoapOption::Observe, vec![1]);
    send(&mut d, now, &p);
    let r = recv(&mut d);
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(observe_of(&r), None);
    assert_eq!(d.endpoint().observer_count(), 0);
    d.notify(now, Changed::NONE.with(value_id(&d)));
    assert!(d.poll_transmit().is_none());
}

fn value_id(d: &Device<Thing>) -> ResourceId {
    d.tree().find("value").unwrap()
}

#[test]
fn put_notifies_observers_after_its_response() {
    let mut d = device();
    let now = Instant::ZERO;
    register(&mut d, now, 1, b"ob");
    let mut put = request(
        MessageType::Confirmable,
        RequestType::Put,
        2,
        b"pt",
        "value",
    );
    put.payload = b"42".to_vec();
    send(&mut d, now, &put);
    let out = recv_all(&mut d);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].header.message_id, code(&out[0])),
        (2, ResponseType::Changed)
    );
    assert_eq!(out[1].get_token(), b"ob");
    assert_eq!(out[1].payload, b"42");
}

#[test]
fn reset_to_a_notification_ends_the_observation() {
    let mut d = device();
    let now = Instant::ZERO;
    register(&mut d, now, 1, b"ob");
    d.notify(now, Changed::NONE.with(value_id(&d)));
    let n = recv(&mut d);
    d.handle_datagram(now, peer(), &reset(n.header.message_id));
    assert_eq!(d.endpoint().observer_count(), 0);
    let _ = d.poll_event();
    assert_eq!(
        d.poll_event(),
        Some(Event::ObserveEnded {
            peer: peer(),
            resource: value_id(&d),
            reason: ObserveEnd::Reset
        })
    );
}

#[test]
fn a_notification_is_confirmable_at_least_once_a_day_and_retransmitted_with_backoff() {
    let mut d = device();
    let t0 = Instant::ZERO;
    register(&mut d, t0, 1, b"ob");
    let day = t0 + Duration::from_secs(24 * 3600);
    d.handle_timeout(day); // the registration's dedup entry expired long ago
    d.notify(day, Changed::NONE.with(value_id(&d)));
    let n = recv(&mut d);
    assert_eq!(
        n.header.get_type(),
        MessageType::Confirmable,
        "24 h after the last CON"
    );
    let first_wait = d.poll_timeout().unwrap() - day;
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(3)).contains(&first_wait),
        "ACK_TIMEOUT × [1, 1.5]: {first_wait:?}"
    );

    // RFC 7252 §4.2: retransmit at T, 3T, 7T, 15T, give up at 31T.
    let mut now = day;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let next = d.poll_timeout().unwrap();
        waits.push(next - now);
        now = next;
        d.handle_timeout(now);
        let again = recv(&mut d);
        assert_eq!(
            again.header.message_id, n.header.message_id,
            "a retransmission repeats the message"
        );
    }
    let last = d.poll_timeout().unwrap();
    waits.push(last - now);
    assert_eq!(
        waits,
        vec![
            first_wait,
            first_wait * 2,
            first_wait * 4,
            first_wait * 8,
            first_wait * 16
        ]
    );
    d.handle_timeout(last);
    assert!(d.poll_transmit().is_none(), "gives up after MAX_RETRANSMIT");
    assert_eq!(
        d.endpoint().observer_count(),
        0,
        "an unacknowledged observer is dropped"
    );
    assert_eq!(d.endpoint().stats().retransmissions, 4);
    assert_eq!(d.endpoint().stats().timeouts, 1);
}

#[test]
fn ack_stops_retransmission_and_resets_the_daily_clock() {
    let mut d = device();
    let t0 = Instant::ZERO;
    register(&mut d, t0, 1, b"ob");
    let day = t0 + Duration::from_secs(24 * 3600 + 1);
    d.notify(day, Changed::NONE.with(value_id(&d)));
    let n = recv(&mut d);
    d.handle_datagram(day, peer(), &ack(n.header.message_id));
    // Nothing left to retransmit; only the dedup entry of the registration may remain.
    assert!(
        d.poll_timeout()
            .is_none_or(|t| t > day + Duration::from_secs(60))
    );
    d.notify(
        day + Duration::from_secs(10),
        Changed::NONE.with(value_id(&d)),
    );
    assert_eq!(recv(&mut d).header.get_type(), MessageType::NonConfirmable);
    assert_eq!(d.endpoint().observer_count(), 1);
}

// ----- Block2 -----

#[test]
fn block2_serves_large_bodies_in_pieces() {
    let mut d = block_device();
    let now = Instant::ZERO;
    send(&mut d, now, &get(1, b"b", "big"));
    let r = recv(&mut d);
    assert_eq!(
        block_of(&r, CoapOption::Block2),
        Some(Block {
            num: 0,
            more: true,
            szx: 4
        })
    );
    assert_eq!(
        r.get_first_option(CoapOption::Size2)
            .map(|v| wire::read_uint(v, 4).unwrap()),
        Some(BIG as u32)
    );
    let etag = r.get_first_option(CoapOption::ETag).cloned().expect("ETag");
    let mut body = r.payload.clone();
    let mut num = 1;
    loop {
        let mut p = get(1 + num as u16, b"b", "big");
        p.add_option(CoapOption::Block2, block2(num, 4));
        send(&mut d, now, &p);
        let r = recv(&mut d);
        assert_eq!(r.get_first_option(CoapOption::ETag), Some(&etag));
        body.extend_from_slice(&r.payload);
        let b = block_of(&r, CoapOption::Block2).unwrap();
        assert_eq!(b.num, num);
        if !b.more {
            break;
        }
        num += 1;
    }
    assert_eq!(body, big_body());
    // Past the end: 4.02.
    let mut p = get(900, b"b", "big");
    p.add_option(CoapOption::Block2, block2(1000, 4));
    send(&mut d, now, &p);
    assert_eq!(code(&recv(&mut d)), ResponseType::BadOption);
}

#[test]
fn block2_larger_request_size_maps_to_our_smaller_blocks() {
    let mut d = block_device();
    let now = Instant::ZERO;
    let mut p = get(1, b"b", "big");
    p.add_option(CoapOption::Block2, block2(1, 6));
    send(&mut d, now, &p);
    let r = recv(&mut d);
    assert_eq!(
        block_of(&r, CoapOption::Block2),
        Some(Block {
            num: 4,
            more: true,
            szx: 4
        }),
        "offset 1024 in 256-byte blocks"
    );
    assert_eq!(r.payload, big_body()[1024..1280]);
}

// ----- Block1 -----

fn post_block(mid: u16, num: u32, more: bool, szx: u8, data: &[u8]) -> Packet {
    let mut p = request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        b"u",
        "upload",
    );
    p.add_option(CoapOption::Block1, Block { num, more, szx }.encode());
    p.payload = data.to_vec();
    p
}

#[test]
fn block1_reassembles_an_upload() {
    let mut d = device();
    let now = Instant::ZERO;
    let body: Vec<u8> = (0..200u8).collect();
    let chunks: Vec<&[u8]> = body.chunks(64).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = i == chunks.len() - 1;
        send(
            &mut d,
            now,
            &post_block(10 + i as u16, i as u32, !last, 2, c),
        );
        let r = recv(&mut d);
        let b = block_of(&r, CoapOption::Block1).unwrap();
        assert_eq!(b.num, i as u32);
        if last {
            assert_eq!(code(&r), ResponseType::Changed);
            assert!(!b.more);
        } else {
            assert_eq!(code(&r), ResponseType::Continue);
            assert!(b.more);
        }
    }
    assert_eq!(d.app().uploaded, body);
}

#[test]
fn block1_out_of_order_gets_4_08_and_oversize_gets_4_13() {
    let mut d = device();
    let now = Instant::ZERO;
    send(&mut d, now, &post_block(1, 3, true, 2, &[0; 64]));
    assert_eq!(code(&recv(&mut d)), ResponseType::RequestEntityIncomplete);
    send(&mut d, now, &post_block(2, 0, true, 2, &[0; 64]));
    assert_eq!(code(&recv(&mut d)), ResponseType::Continue);
    send(&mut d, now, &post_block(3, 2, true, 2, &[0; 64]));
    assert_eq!(
        code(&recv(&mut d)),
        ResponseType::RequestEntityIncomplete,
        "block 1 skipped"
    );
    // A block whose size does not match its szx while more follow: 4.00.
    send(&mut d, now, &post_block(4, 0, true, 2, &[0; 10]));
    assert_eq!(code(&recv(&mut d)), ResponseType::BadRequest);
    // Over max_body (8192): 4.13 with Size1.
    let mut n = 0;
    let r = loop {
        send(
            &mut d,
            now,
            &post_block(100 + n as u16, n, true, 6, &[1; 1024]),
        );
        let r = recv(&mut d);
        if code(&r) != ResponseType::Continue {
            break r;
        }
        n += 1;
    };
    assert_eq!(code(&r), ResponseType::RequestEntityTooLarge);
    assert_eq!(
        r.get_first_option(CoapOption::Size1)
            .map(|v| wire::read_uint(v, 4).unwrap()),
        Some(8192)
    );
    assert_eq!(n, 8, "the 9th KiB overflows");
    // An announced Size1 over the limit is refused at once.
    let mut p = post_block(300, 0, true, 6, &[1; 1024]);
    p.add_option(CoapOption::Size1, wire::write_uint(1 << 20));
    send(&mut d, now, &p);
    assert_eq!(code(&recv(&mut d)), ResponseType::RequestEntityTooLarge);
}

#[test]
fn abandoned_uploads_expire() {
    let mut d = device();
    let now = Instant::ZERO;
    send(&mut d, now, &post_block(1, 0, true, 6, &[0; 1024]));
    let _ = recv(&mut d);
    let later = now + config().exchange_lifetime() + Duration::from_secs(1);
    d.handle_timeout(later);
    send(&mut d, later, &post_block(2, 1, false, 6, &[0; 10]));
    assert_eq!(code(&recv(&mut d)), ResponseType::RequestEntityIncomplete);
}

// ----- separate responses -----

#[test]
fn separate_response_is_acked_at_once_then_sent_confirmable_until_acked() {
    let mut d = device();
    let now = Instant::ZERO;
    let p = request(
        MessageType::Confirmable,
        RequestType::Post,
        50,
        b"sl",
        "slow",
    );
    send(&mut d, now, &p);
    let empty = recv(&mut d);
    assert_eq!(
        (
            empty.header.get_type(),
            empty.header.code,
            empty.header.message_id
        ),
        (MessageType::Acknowledgement, MessageClass::Empty, 50)
    );
    // A retransmitted request meanwhile gets the same empty ACK.
    send(&mut d, now, &p);
    assert_eq!(recv(&mut d).header.code, MessageClass::Empty);

    let ticket = d.app().deferred[0];
    let later = now + Duration::from_millis(1500);
    d.respond_separately(later, ticket, Response::content(0, b"done".to_vec()))
        .unwrap();
    let r = recv(&mut d);
    assert_eq!(r.header.get_type(), MessageType::Confirmable);
    assert_eq!(r.get_token(), b"sl");
    assert_eq!(r.payload, b"done");
    let t = d.poll_timeout().unwrap();
    d.handle_timeout(t);
    assert_eq!(
        recv(&mut d).header.message_id,
        r.header.message_id,
        "retransmitted"
    );
    d.handle_datagram(t, peer(), &ack(r.header.message_id));
    assert!(
        d.respond_separately(t, ticket, Response::code(Code::Changed))
            .is_err(),
        "a ticket answers once"
    );
}

// ----- bad input -----

#[test]
fn malformed_confirmable_gets_reset_and_garbage_is_counted() {
    let mut d = device();
    let now = Instant::ZERO;
    // CON, token length 9 (reserved): format error → RST with the same message ID.
    d.handle_datagram(
        now,
        peer(),
        &[0x49, 0x01, 0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    let r = recv(&mut d);
    assert_eq!(
        (r.header.get_type(), r.header.message_id),
        (MessageType::Reset, 0xabcd)
    );
    d.handle_datagram(now, peer(), &[1, 2]);
    d.handle_datagram(now, peer(), &[0x80, 1, 0, 0]);
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.endpoint().stats().malformed, 3);
    // CoAP ping: empty CON → RST.
    d.handle_datagram(now, peer(), &[0x40, 0, 0x12, 0x34]);
    assert_eq!(recv(&mut d).header.get_type(), MessageType::Reset);
    // The endpoint still works.
    send(&mut d, now, &get(1, b"", "value"));
    assert_eq!(code(&recv(&mut d)), ResponseType::Content);
}

#[test]
fn unexpected_responses_are_rejected() {
    let mut d = device();
    let now = Instant::ZERO;
    let mut p = get(5, b"", "value");
    p.header.code = MessageClass::Response(ResponseType::Content);
    send(&mut d, now, &p);
    assert_eq!(recv(&mut d).header.get_type(), MessageType::Reset);
    d.handle_datagram(now, peer(), &ack(999));
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.endpoint().stats().unexpected, 2);
}

// ----- memory -----

#[test]
fn an_idle_device_fits_in_two_kib() {
    let mut d = device();
    let t0 = Instant::ZERO;
    register(&mut d, t0, 1, b"ob");
    for i in 0..20 {
        send(&mut d, t0, &get(100 + i, b"x", "big"));
        let _ = recv_all(&mut d);
    }
    send(&mut d, t0, &post_block(500, 0, true, 6, &[0; 1024]));
    let _ = recv_all(&mut d);
    let busy = live();
    let idle = t0 + config().exchange_lifetime() + Duration::from_secs(1);
    d.handle_timeout(idle);
    let released = busy - live();
    assert!(
        released > 1024,
        "going idle gives back the dedup cache and the upload: {released} bytes"
    );
    assert_eq!(d.endpoint().observer_count(), 1, "the observer stays");
    // Measured, not estimated: the heap the device frees when dropped (its shared tree kept
    // alive here), plus the device itself.
    let tree = d.tree().clone();
    let size = std::mem::size_of::<Device<Thing>>();
    let estimate = d.endpoint().memory_footprint();
    let heap = heap_freed_by(|| drop(d));
    // The endpoint's own estimate (its struct and its heap) agrees: the app here holds no heap.
    assert_eq!(estimate, std::mem::size_of::<Endpoint>() + heap);
    let footprint = size + heap;
    eprintln!("idle device with an observer: {size} bytes + {heap} bytes of heap = {footprint}");
    assert!(heap > 0, "the observer lives on the heap");
    assert!(footprint <= 2048, "idle device holds {footprint} bytes");
    assert!(size <= 1024);
    drop(tree);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any datagram: no panic, at most one immediate answer, and the endpoint still answers.
    #[test]
    fn arbitrary_datagrams_never_break_the_endpoint(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut d = device();
        let now = Instant::ZERO;
        d.handle_datagram(now, peer(), &bytes);
        let out = recv_all(&mut d);
        prop_assert!(out.len() <= 2);
        send(&mut d, now, &get(0xfff0, b"z", "value"));
        let r = recv(&mut d);
        prop_assert_eq!(r.header.message_id, 0xfff0);
    }

    /// Mutated valid requests: no panic, and any answer is a well-formed CoAP message.
    #[test]
    fn mutated_requests_get_well_formed_answers(flip in 0usize..64, bit in 0u8..8, path in "[a-z]{1,8}(/[a-z]{1,8}){0,2}") {
        let mut d = device();
        let now = Instant::ZERO;
        let mut bytes = get(1, b"t", &path).to_bytes().unwrap();
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        d.handle_datagram(now, peer(), &bytes);
        for t in std::iter::from_fn(|| d.poll_transmit()) {
            prop_assert!(wire::parse(&t.contents).is_ok());
        }
    }
}
