//! Commands to queue-mode devices on virtual time: sent only in the device's listening window,
//! parked (not retransmitted into its sleep) when the window closes unanswered, the same
//! message again in the next window, and never anything after the TTL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet, ResponseType};

use super::*;

const T0: u64 = 1_700_000_000_000;
const WINDOW: Duration = Duration::from_secs(10);

fn old_address() -> SocketAddr {
    "[2001:db8:100::7]:5683".parse().unwrap()
}

fn new_address() -> SocketAddr {
    "[2001:db8:100::1:7]:5683".parse().unwrap()
}

fn command(req: &str, ttl: Duration) -> DownlinkCommand {
    DownlinkCommand {
        device: "m".into(),
        req: req.into(),
        method: "PUT".into(),
        path: "/actuators/valve".into(),
        payload: b"on".to_vec(),
        content_format: Some(0),
        expires_unix_ms: T0 + ttl.as_millis() as u64,
        confirmable: true,
        observe: false,
        accept: None,
    }
}

/// A queue-mode device whose last uplink was at `last_uplink`.
fn uq(address: SocketAddr, last_uplink: Instant) -> Option<Reachability> {
    Some(Reachability {
        address: address.into(),
        queue_mode: true,
        last_uplink,
    })
}

/// The unix time `at` after `start` (virtual clocks move together).
fn unix(start: Instant, at: Instant) -> u64 {
    T0 + at.saturating_duration_since(start).as_millis() as u64
}

fn durable(d: &mut Downlink) {
    while let Some(b) = d.poll_journal() {
        let rewritten = b.rewrite.is_some();
        d.journal_written(b.id, JournalWritten::Durable { rewritten });
    }
}

/// A platform command at `now`, journaled, then tried as the ingress does once it is durable.
fn command_at(
    d: &mut Downlink,
    start: Instant,
    now: Instant,
    cmd: DownlinkCommand,
    reach: Option<Reachability>,
    message_id: u16,
) {
    let unix_ms = unix(start, now);
    d.command(now, unix_ms, cmd, reach, WINDOW, message_id);
    durable(d);
    d.try_send(now, unix_ms, "m", reach, WINDOW, message_id);
}

fn sent(d: &mut Downlink) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| d.poll_transmit())
        .map(|o| (o.to.remote, o.bytes))
        .collect()
}

fn results(d: &mut Downlink) -> Vec<CommandResult> {
    std::iter::from_fn(|| d.poll_result()).collect()
}

/// Runs every deadline up to `until`, returning what went out meanwhile. A deadline that
/// handling does not move (the edge would spin on it) fails the test.
fn run_until(d: &mut Downlink, start: Instant, until: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rounds = 0;
    while let Some(t) = d.poll_timeout().filter(|t| *t <= until) {
        rounds += 1;
        assert!(rounds < 1000, "the deadline {t:?} is never handled");
        d.handle_timeout(t);
        d.expire_queued(unix(start, t));
        out.extend(sent(d));
    }
    out
}

fn answer(request: &[u8]) -> Packet {
    let req = Packet::from_bytes(request).unwrap();
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = req.header.message_id;
    p.header.code = MessageClass::Response(ResponseType::Changed);
    p.set_token(req.get_token().to_vec());
    p
}

/// A command for a sleeping device waits for its uplink; unanswered when the window closes, it
/// is parked (no retransmission while the device sleeps); the next window brings the very same
/// message (ID and token) to the device's new address, and its answer ends it `ok`.
#[test]
fn parked_in_the_sleep_and_the_same_message_again_in_the_next_window() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut d = Downlink::new([9; 16]);
    // Asleep: last uplink 60 s ago.
    command_at(
        &mut d,
        start,
        at(60),
        command("c1", Duration::from_secs(600)),
        uq(old_address(), at(0)),
        100,
    );
    assert!(sent(&mut d).is_empty(), "not sent while it sleeps");
    assert!(d.has_waiting("m"));
    // It wakes at 120 s: the command goes at once, inside the window.
    d.try_send(
        at(120),
        unix(start, at(120)),
        "m",
        uq(old_address(), at(120)),
        WINDOW,
        101,
    );
    let first = sent(&mut d);
    assert_eq!(first.len(), 1);
    // Unanswered: one retransmission at 122 s, then the window (130 s) closes: parked.
    let during = run_until(&mut d, start, at(400));
    assert_eq!(
        during.len(),
        2,
        "retransmissions inside the window only: {during:?}"
    );
    assert!(d.has_waiting("m"));
    assert!(results(&mut d).is_empty());
    // Next wake-up at 420 s from a new address: the same bytes go there.
    d.try_send(
        at(420),
        unix(start, at(420)),
        "m",
        uq(new_address(), at(420)),
        WINDOW,
        102,
    );
    let again = sent(&mut d);
    assert_eq!(again, vec![(new_address(), first[0].1.clone())]);
    let (device, _) = d
        .handle_response(new_address(), &answer(&again[0].1), None)
        .unwrap();
    assert_eq!(device, "m");
    let r = results(&mut d);
    assert_eq!((r.len(), r[0].status), (1, "ok"));
    assert!(!d.has_waiting("m"));
}

/// The (peer, message ID) index follows a parked exchange to the device's new address: an
/// empty ACK or RST from the old address no longer names it, one from the new address does;
/// when the exchange ends, the index is empty.
#[test]
fn a_resumed_exchange_is_found_by_its_new_address_only() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut d = Downlink::new([9; 16]);
    command_at(
        &mut d,
        start,
        at(0),
        command("c1", Duration::from_secs(600)),
        uq(old_address(), at(0)),
        100,
    );
    let first = sent(&mut d);
    assert_eq!(first.len(), 1);
    // Unanswered in its window: parked.
    run_until(&mut d, start, at(300));
    assert!(d.has_waiting("m"));
    d.try_send(
        at(420),
        unix(start, at(420)),
        "m",
        uq(new_address(), at(420)),
        WINDOW,
        101,
    );
    assert_eq!(sent(&mut d), vec![(new_address(), first[0].1.clone())]);
    assert_eq!(d.handle_empty(at(421), old_address(), 100, true), None);
    assert_eq!(
        d.in_flight(),
        1,
        "a Reset from the old address ends nothing"
    );
    assert_eq!(
        d.handle_empty(at(421), new_address(), 100, true),
        Some("m".into())
    );
    let r = results(&mut d);
    assert_eq!((r.len(), r[0].status), (1, "reset"));
    assert_eq!(d.in_flight(), 0);
    assert!(d.by_message_id.is_empty() && d.by_token.is_empty());
}

/// A command whose TTL passes while its device sleeps is reported `expired`; the device never
/// gets it, neither in its next window nor from a retransmission.
#[test]
fn a_ttl_that_passes_in_the_sleep_is_reported_expired_and_nothing_is_sent_late() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut d = Downlink::new([9; 16]);
    // Queued at 15 s while asleep (its window closed at 10 s), TTL 35 s: the device wakes
    // only at 120 s.
    command_at(
        &mut d,
        start,
        at(15),
        command("late", Duration::from_secs(35)),
        uq(old_address(), at(0)),
        1,
    );
    d.expire_queued(unix(start, at(36)));
    let r = results(&mut d);
    assert_eq!(
        (r.len(), r[0].status, r[0].req.as_str()),
        (1, "expired", "late")
    );
    d.try_send(
        at(120),
        unix(start, at(120)),
        "m",
        uq(old_address(), at(120)),
        WINDOW,
        2,
    );
    assert!(sent(&mut d).is_empty(), "never delivered late");

    // Sent in a window, unanswered, parked; its TTL passes before the next window.
    command_at(
        &mut d,
        start,
        at(200),
        command("parked", Duration::from_secs(260)),
        uq(old_address(), at(200)),
        3,
    );
    assert_eq!(sent(&mut d).len(), 1);
    assert!(run_until(&mut d, start, at(259)).len() <= 3);
    assert!(results(&mut d).is_empty());
    assert_eq!(
        d.poll_timeout(),
        Some(at(260)),
        "the TTL is its deadline while parked"
    );
    assert!(run_until(&mut d, start, at(260)).is_empty());
    let r = results(&mut d);
    assert_eq!((r.len(), r[0].status), (1, "expired"));
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("never after the TTL")
    );
    d.try_send(
        at(400),
        unix(start, at(400)),
        "m",
        uq(old_address(), at(400)),
        WINDOW,
        4,
    );
    assert!(sent(&mut d).is_empty());
}

/// An always-on device's command is retransmitted as before (parking is for queue mode) and
/// ends `timeout`; no retransmission goes out after the TTL.
#[test]
fn always_on_devices_keep_the_retransmission_schedule_within_the_ttl() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let always_on = Some(Reachability {
        address: old_address().into(),
        queue_mode: false,
        last_uplink: at(0),
    });
    let mut d = Downlink::new([9; 16]);
    command_at(
        &mut d,
        start,
        at(0),
        command("u", Duration::from_secs(3600)),
        always_on,
        1,
    );
    assert_eq!(sent(&mut d).len(), 1);
    assert_eq!(run_until(&mut d, start, at(120)).len(), 4, "MAX_RETRANSMIT");
    assert_eq!(results(&mut d)[0].status, "timeout");
    // With a TTL of 5 s, the retransmissions stop at the TTL.
    command_at(
        &mut d,
        start,
        at(200),
        command("short", Duration::from_secs(205)),
        always_on,
        2,
    );
    assert_eq!(sent(&mut d).len(), 1);
    let later = run_until(&mut d, start, at(400));
    assert_eq!(later.len(), 1, "2 s: resent; 6 s: past the TTL, nothing");
    assert_eq!(results(&mut d)[0].status, "expired");
}
