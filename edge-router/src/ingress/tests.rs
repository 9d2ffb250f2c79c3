//! Bad input at the ingress: every refusal has its code, nothing refused reaches the outbox,
//! and no input panics. And what a request's answer waits for: deduplication, lab mode, the
//! drain at a stop; the edge's observations ending with the registration.

use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use proptest::prelude::*;
use v6iot_cloud_bridge::topics::Topics;

use super::{Append, AppendResult, Ingress, IngressConfig};

/// The wall-clock time the tests pass (Unix milliseconds).
const UNIX: u64 = 1_700_000_000_000;

fn ingress() -> Ingress {
    Ingress::new(IngressConfig::new(Topics::new("v6iot", "s").unwrap()), UNIX)
}

fn peer() -> SocketAddr {
    "[2001:db8::7]:4000".parse().unwrap()
}

fn request(
    method: RequestType,
    path: &str,
    query: &[&str],
    cf: Option<u8>,
    body: &[u8],
) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = 0x4242;
    p.set_token(vec![9]);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if let Some(cf) = cf {
        p.add_option(CoapOption::ContentFormat, vec![cf]);
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = body.to_vec();
    p.to_bytes_unlimited().unwrap()
}

/// Sends one datagram to a fresh ingress and returns the answer's code and diagnostic.
fn answer(bytes: &[u8]) -> (ResponseType, String, Ingress) {
    let mut i = ingress();
    i.handle_datagram(Instant::now(), UNIX, peer(), bytes);
    let (_, reply) = i.poll_transmit().expect("an answer");
    let p = Packet::from_bytes(&reply).unwrap();
    let MessageClass::Response(code) = p.header.code else {
        panic!("not a response: {:?}", p.header.code)
    };
    (code, String::from_utf8_lossy(&p.payload).into_owned(), i)
}

/// Query, content format, body, expected code, expected words in the diagnostic.
type Case = (
    &'static [&'static str],
    Option<u8>,
    &'static [u8],
    ResponseType,
    &'static str,
);

#[test]
fn malformed_registrations_are_refused_with_reasons() {
    let cases: [Case; 8] = [
        (&[], None, b"", ResponseType::BadRequest, "ep=NAME"),
        (
            &["ep=a/b"],
            None,
            b"",
            ResponseType::BadRequest,
            "not usable",
        ),
        (
            &["ep=_edge"],
            None,
            b"",
            ResponseType::BadRequest,
            "not usable",
        ),
        (
            &["ep=d1", "lt=soon"],
            None,
            b"",
            ResponseType::BadRequest,
            "lt must be",
        ),
        (
            &["ep=d1", "b=X"],
            None,
            b"",
            ResponseType::BadRequest,
            "b must be U or UQ",
        ),
        (
            &["ep=d1"],
            Some(50),
            b"{}",
            ResponseType::UnsupportedContentFormat,
            "link-format",
        ),
        (
            &["ep=d1"],
            Some(40),
            &[0xff, 0xfe],
            ResponseType::BadRequest,
            "not UTF-8",
        ),
        (
            &["ep=d1"],
            Some(40),
            &[b'x'; 5000],
            ResponseType::RequestEntityTooLarge,
            "limited to 4096 bytes",
        ),
    ];
    for (query, cf, body, code, reason) in cases {
        let (got, why, mut i) = answer(&request(RequestType::Post, "rd", query, cf, body));
        assert_eq!(got, code, "{query:?}");
        assert!(why.contains(reason), "{query:?}: {why}");
        assert!(i.directory().is_empty());
        assert!(i.poll_append().is_none(), "nothing reaches the outbox");
    }
}

#[test]
fn unknown_endpoints_paths_and_methods_get_their_codes() {
    let (code, why, _) = answer(&request(
        RequestType::Post,
        "t",
        &[],
        Some(110),
        b"[{\"n\":\"x\",\"v\":1}]",
    ));
    assert_eq!(code, ResponseType::Forbidden);
    assert!(why.contains("register"), "{why}");
    for (method, path, expected) in [
        (RequestType::Post, "rd/77", ResponseType::NotFound),
        (RequestType::Delete, "rd/zz", ResponseType::NotFound),
        (RequestType::Get, "rd", ResponseType::MethodNotAllowed),
        (RequestType::Get, "nothing", ResponseType::NotFound),
    ] {
        let (code, why, _) = answer(&request(method, path, &[], None, b""));
        assert_eq!(code, expected, "{method:?} /{path}: {why}");
    }
    let mut p = Packet::from_bytes(&request(RequestType::Post, "t", &[], None, b"x")).unwrap();
    p.add_option(CoapOption::Unknown(2049), b"z".to_vec());
    assert_eq!(
        answer(&p.to_bytes_unlimited().unwrap()).0,
        ResponseType::BadOption
    );
}

#[test]
fn invalid_senml_from_a_registered_device_is_refused_and_not_stored() {
    let mut i = ingress();
    let now = Instant::now();
    i.handle_datagram(
        now,
        1,
        peer(),
        &request(RequestType::Post, "rd", &["ep=d1"], Some(40), b"</x>"),
    );
    let _ = i.poll_transmit();
    while i.poll_append().is_some() {}
    for (n, (cf, body, code)) in [
        (
            Some(110u8),
            &b"[{\"v\":\"text\"}]"[..],
            ResponseType::BadRequest,
        ),
        (Some(112), &b"\xa1\x02\x63abc"[..], ResponseType::BadRequest),
        (Some(50), &b"{}"[..], ResponseType::UnsupportedContentFormat),
        (None, &b""[..], ResponseType::BadRequest),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes = request(RequestType::Post, "t", &[], cf, body);
        bytes[3] = n as u8; // a fresh message ID each time
        i.handle_datagram(now, 1, peer(), &bytes);
        let (_, reply) = i.poll_transmit().unwrap();
        let p = Packet::from_bytes(&reply).unwrap();
        assert_eq!(p.header.code, MessageClass::Response(code), "{body:?}");
        assert!(
            i.poll_append().is_none(),
            "refused telemetry never reaches the outbox"
        );
    }
    assert_eq!(i.stats().refused, 4);
}

#[test]
fn malformed_datagrams_are_counted_and_confirmable_ones_reset() {
    let mut i = ingress();
    i.handle_datagram(Instant::now(), 1, peer(), &[0x4f, 0x01, 0x12, 0x34]); // TKL 15
    let (_, rst) = i.poll_transmit().unwrap();
    assert_eq!(rst, vec![0x70, 0, 0x12, 0x34]);
    i.handle_datagram(Instant::now(), 1, peer(), &[0x50]);
    assert!(i.poll_transmit().is_none());
    assert_eq!(i.stats().malformed, 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any datagram from an unregistered source: no panic, no record, at most one answer.
    #[test]
    fn arbitrary_datagrams_store_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut i = ingress();
        i.handle_datagram(Instant::now(), 1, peer(), &bytes);
        let mut n = 0;
        while i.poll_transmit().is_some() { n += 1; }
        prop_assert!(n <= 1);
        while let Some(a) = i.poll_append() {
            // Only a registration's status message may come out, never telemetry.
            prop_assert!(a.ticket.is_none());
            prop_assert!(a.message.topic.ends_with("/status"));
        }
    }
}

/// Lab mode files an unregistered sender's telemetry under `anon-{peer}`, one name per peer.
#[test]
fn lab_mode_files_unregistered_senders_by_address() {
    let mut i = lab();
    let other: SocketAddr = "192.0.2.9:5683".parse().unwrap();
    for (mid, from) in (1..).zip([peer(), other, peer()]) {
        i.handle_datagram(Instant::now(), UNIX, from, &report(mid, true));
    }
    let topics: Vec<String> = std::iter::from_fn(|| i.poll_append())
        .map(|a| a.message.topic)
        .collect();
    assert_eq!(
        topics,
        [
            "v6iot/s/anon-[2001:db8::7]:4000/telemetry",
            "v6iot/s/anon-192.0.2.9:5683/telemetry",
            "v6iot/s/anon-[2001:db8::7]:4000/telemetry",
        ]
    );
}

/// A lab-mode ingress.
fn lab() -> Ingress {
    let mut config = IngressConfig::new(Topics::new("v6iot", "s").unwrap());
    config.lab_accept_unregistered = true;
    Ingress::new(config, UNIX)
}

/// Reports `append`'s record stored: the device gets 2.04 (returned).
fn stored(i: &mut Ingress, append: Append) -> Vec<u8> {
    i.handle_appended(append.ticket.expect("a device waits"), AppendResult::Stored);
    let (_, ack) = i.poll_transmit().expect("the answer");
    assert_eq!(
        Packet::from_bytes(&ack).unwrap().header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    ack
}

/// The CON report `mid` from `peer()`, retransmitted: it gets `ack` again and is not stored
/// again.
fn retransmission_gets(i: &mut Ingress, mid: u16, ack: &[u8]) {
    i.handle_datagram(Instant::now(), UNIX, peer(), &report(mid, true));
    assert_eq!(
        i.poll_transmit().map(|(_, b)| b).as_deref(),
        Some(ack),
        "the same ACK again"
    );
    assert!(i.poll_append().is_none(), "not stored again");
}

/// A telemetry request with message ID `mid`, CON or NON.
fn report(mid: u16, confirmable: bool) -> Vec<u8> {
    let mut bytes = request(
        RequestType::Post,
        "t",
        &[],
        Some(110),
        br#"[{"n":"t","v":1}]"#,
    );
    let kind = if confirmable { 0x40 } else { 0x50 };
    bytes[0] = (bytes[0] & 0x0f) | kind;
    bytes[2..4].copy_from_slice(&mid.to_be_bytes());
    bytes
}

/// RFC 7252 §4.5 at the ingress: a retransmitted CON report is not stored again; while its
/// record is being stored nothing is sent, afterwards the same ACK is sent again; a duplicate
/// NON is dropped silently.
#[test]
fn duplicates_get_the_same_reply_and_are_not_stored_twice() {
    let mut i = lab();
    let t0 = Instant::now();
    i.handle_datagram(t0, UNIX, peer(), &report(7, true));
    let append = i.poll_append().expect("the record");
    i.handle_datagram(t0, UNIX, peer(), &report(7, true));
    assert!(i.poll_append().is_none(), "stored once");
    assert!(
        i.poll_transmit().is_none(),
        "no answer while the record is stored"
    );
    let ack = stored(&mut i, append);
    retransmission_gets(&mut i, 7, &ack);
    // The same message ID from another peer is another message.
    let other: SocketAddr = "192.0.2.9:5683".parse().unwrap();
    i.handle_datagram(t0, UNIX, other, &report(7, true));
    assert!(i.poll_append().is_some());

    i.handle_datagram(t0, UNIX, peer(), &report(8, false));
    let append = i.poll_append().expect("the NON's record");
    stored(&mut i, append);
    i.handle_datagram(t0, UNIX, peer(), &report(8, false));
    assert!(
        i.poll_append().is_none() && i.poll_transmit().is_none(),
        "NON duplicate dropped"
    );
    assert_eq!(i.stats().duplicates, 3);
}

/// A peer's last `RECENT_PER_PEER` (8) message IDs are remembered; a ninth pushes out the
/// oldest, and all are forgotten after EXCHANGE_LIFETIME (swept).
#[test]
fn remembered_message_ids_are_bounded_per_peer_and_expire() {
    let mut i = lab();
    let t0 = Instant::now();
    for mid in 1..=9 {
        i.handle_datagram(t0, UNIX, peer(), &report(mid, false));
    }
    assert_eq!(std::iter::from_fn(|| i.poll_append()).count(), 9);
    i.handle_datagram(t0, UNIX, peer(), &report(2, false));
    assert!(i.poll_append().is_none(), "2 is still remembered");
    i.handle_datagram(t0, UNIX, peer(), &report(1, false));
    assert!(i.poll_append().is_some(), "1 was pushed out by 9");
    // 1 came back as the newest and pushed out 2.
    i.handle_datagram(t0, UNIX, peer(), &report(2, false));
    assert!(i.poll_append().is_some());
    i.handle_datagram(t0, UNIX, peer(), &report(9, false));
    assert!(i.poll_append().is_none(), "9 is still remembered");

    let later = t0 + IngressConfig::new(Topics::new("v6iot", "s").unwrap()).exchange_lifetime;
    let sweep = i.poll_timeout().expect("a sweep is due");
    i.handle_timeout(sweep.max(later + std::time::Duration::from_secs(5)), UNIX);
    i.handle_datagram(
        later + std::time::Duration::from_secs(6),
        UNIX,
        peer(),
        &report(9, false),
    );
    assert!(
        i.poll_append().is_some(),
        "forgotten after EXCHANGE_LIFETIME"
    );
}

/// The stop: once draining, a new request gets 5.03 with the configured Max-Age and nothing is
/// stored; a request taken before finishes (its ACK after the store), and its retransmission
/// still gets that ACK, not a 5.03. Requests are counted by resource and code.
#[test]
fn a_draining_ingress_answers_new_requests_503_and_finishes_the_rest() {
    let mut i = lab();
    let t0 = Instant::now();
    i.handle_datagram(t0, UNIX, peer(), &report(1, true));
    let taken = i.poll_append().expect("the record taken before the stop");
    i.start_draining(30);
    assert!(i.is_draining());
    i.handle_datagram(t0, UNIX, peer(), &report(2, true));
    assert!(
        i.poll_append().is_none(),
        "nothing new stored while stopping"
    );
    let (_, busy) = i.poll_transmit().expect("an answer to the new request");
    let busy = Packet::from_bytes(&busy).unwrap();
    assert_eq!(
        busy.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(busy.header.message_id, 2);
    let max_age = busy
        .get_option(CoapOption::MaxAge)
        .and_then(|v| v.front().cloned())
        .expect("Max-Age");
    assert_eq!(max_age, vec![30]);
    // the request taken before the stop finishes
    let ack = stored(&mut i, taken);
    retransmission_gets(&mut i, 1, &ack);
    let counts: Vec<_> = i
        .request_counts()
        .iter()
        .map(|(k, code, n)| (k.label(), code, n))
        .collect();
    assert_eq!(
        counts,
        vec![("t", "2.04".to_owned(), 1), ("t", "5.03".to_owned(), 1)]
    );
}

/// The edge's observation of a device's resource ends with the device's registration, however
/// it ends: deregistered, removed by the registry (revoked), expired.
#[test]
fn the_edges_observations_end_with_the_registration() {
    for end in ["deregistered", "revoked", "expired"] {
        let mut i = ingress();
        let t0 = Instant::now();
        let links = b"</temp>;obs;ct=110";
        let register = request(
            RequestType::Post,
            "rd",
            &["ep=d1", "lt=60"],
            Some(40),
            links,
        );
        i.handle_datagram(t0, UNIX, peer(), &register);
        while let Some(batch) = i.poll_journal() {
            let rewritten = batch.rewrite.is_some();
            let durable = super::JournalWritten::Durable { rewritten };
            i.handle_journal_written(t0, UNIX, batch.id, durable);
        }
        let observe = std::iter::from_fn(|| i.poll_transmit())
            .map(|(_, bytes)| Packet::from_bytes(&bytes).unwrap())
            .find(|p| matches!(p.header.code, MessageClass::Request(RequestType::Get)))
            .unwrap_or_else(|| panic!("{end}: the edge observes /temp"));
        let mut first = Packet::new();
        first.header.set_type(MessageType::Acknowledgement);
        first.header.message_id = observe.header.message_id;
        first.header.code = MessageClass::Response(ResponseType::Content);
        first.set_token(observe.get_token().to_vec());
        first.add_option(CoapOption::Observe, vec![1]);
        first.add_option(CoapOption::ContentFormat, vec![110]);
        first.payload = br#"[{"n":"temp","v":20}]"#.to_vec();
        i.handle_datagram(t0, UNIX, peer(), &first.to_bytes_unlimited().unwrap());
        assert_eq!(i.observation_count(), 1, "{end}: observing");
        match end {
            "deregistered" => {
                let location = i.directory().get("d1").unwrap().location;
                let path = format!("rd/{location}");
                let mut delete = request(RequestType::Delete, &path, &[], None, b"");
                delete[3] = 0x43; // a message ID of its own
                i.handle_datagram(t0, UNIX, peer(), &delete);
            }
            "revoked" => i.remove_device(UNIX, "d1", "revoked"),
            _ => i.handle_timeout(t0 + std::time::Duration::from_secs(61), UNIX),
        }
        assert!(i.directory().is_empty(), "{end}: the registration ended");
        assert_eq!(i.observation_count(), 0, "{end}: the observation too");
    }
}
