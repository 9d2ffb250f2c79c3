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

/// A downlink on virtual time, the times in seconds since `start` (Unix time `T0`); the
/// device is `m`.
struct Harness {
    d: Downlink,
    start: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            d: Downlink::new([9; 16]),
            start: Instant::now(),
        }
    }

    fn at(&self, s: u64) -> Instant {
        self.start + Duration::from_secs(s)
    }

    /// The Unix time at `at` (virtual clocks move together).
    fn unix(&self, at: Instant) -> u64 {
        T0 + at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// A queue-mode device whose last uplink was at `last_uplink_s`.
    fn queue_mode(&self, address: SocketAddr, last_uplink_s: u64) -> Option<Reachability> {
        Some(Reachability {
            address: address.into(),
            queue_mode: true,
            last_uplink: self.at(last_uplink_s),
        })
    }

    /// A platform command `req` at `s`, expiring at `expires_s`, journaled, then tried as the
    /// ingress does once it is durable.
    fn command(
        &mut self,
        s: u64,
        req: &str,
        expires_s: u64,
        reach: Option<Reachability>,
        message_id: u16,
    ) {
        let (now, unix_ms) = (self.at(s), self.unix(self.at(s)));
        let cmd = DownlinkCommand {
            device: "m".into(),
            req: req.into(),
            method: "PUT".into(),
            path: "/actuators/valve".into(),
            payload: b"on".to_vec(),
            content_format: Some(0),
            expires_unix_ms: T0 + expires_s * 1000,
            confirmable: true,
            observe: false,
            accept: None,
        };
        self.d.command(now, unix_ms, cmd, reach, WINDOW, message_id);
        while let Some(b) = self.d.poll_journal() {
            let rewritten = b.rewrite.is_some();
            self.d
                .journal_written(b.id, JournalWritten::Durable { rewritten });
        }
        self.d
            .try_send(now, unix_ms, "m", reach, WINDOW, message_id);
    }

    /// The queue-mode device's uplink at `s` from `address`: what waits for it may go.
    fn wakes(&mut self, s: u64, address: SocketAddr, message_id: u16) {
        let reach = self.queue_mode(address, s);
        let (now, unix_ms) = (self.at(s), self.unix(self.at(s)));
        self.d
            .try_send(now, unix_ms, "m", reach, WINDOW, message_id);
    }

    fn sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| self.d.poll_transmit())
            .map(|o| (o.to.remote, o.bytes))
            .collect()
    }

    fn results(&mut self) -> Vec<CommandResult> {
        std::iter::from_fn(|| self.d.poll_result()).collect()
    }

    /// Runs every deadline up to `until_s`, returning what went out meanwhile. A deadline that
    /// handling does not move (the edge would spin on it) fails the test.
    fn run_until(&mut self, until_s: u64) -> Vec<(SocketAddr, Vec<u8>)> {
        let until = self.at(until_s);
        let mut out = Vec::new();
        let mut rounds = 0;
        while let Some(t) = self.d.poll_timeout().filter(|t| *t <= until) {
            rounds += 1;
            assert!(rounds < 1000, "the deadline {t:?} is never handled");
            self.d.handle_timeout(t);
            self.d.expire_queued(self.unix(t));
            out.extend(self.sent());
        }
        out
    }
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
    let mut h = Harness::new();
    // Asleep: last uplink 60 s ago.
    let asleep = h.queue_mode(old_address(), 0);
    h.command(60, "c1", 600, asleep, 100);
    assert!(h.sent().is_empty(), "not sent while it sleeps");
    assert!(h.d.has_waiting("m"));
    // It wakes at 120 s: the command goes at once, inside the window.
    h.wakes(120, old_address(), 101);
    let first = h.sent();
    assert_eq!(first.len(), 1);
    // Unanswered: one retransmission at 122 s, then the window (130 s) closes: parked.
    let during = h.run_until(400);
    assert_eq!(
        during.len(),
        2,
        "retransmissions inside the window only: {during:?}"
    );
    assert!(h.d.has_waiting("m"));
    assert!(h.results().is_empty());
    // Next wake-up at 420 s from a new address: the same bytes go there.
    h.wakes(420, new_address(), 102);
    let again = h.sent();
    assert_eq!(again, vec![(new_address(), first[0].1.clone())]);
    let (device, _) =
        h.d.handle_response(new_address(), &answer(&again[0].1), None)
            .unwrap();
    assert_eq!(device, "m");
    let r = h.results();
    assert_eq!((r.len(), r[0].status), (1, "ok"));
    assert!(!h.d.has_waiting("m"));
}

/// The (peer, message ID) index follows a parked exchange to the device's new address: an
/// empty ACK or RST from the old address no longer names it, one from the new address does;
/// when the exchange ends, the index is empty.
#[test]
fn a_resumed_exchange_is_found_by_its_new_address_only() {
    let mut h = Harness::new();
    let awake = h.queue_mode(old_address(), 0);
    h.command(0, "c1", 600, awake, 100);
    let first = h.sent();
    assert_eq!(first.len(), 1);
    // Unanswered in its window: parked.
    h.run_until(300);
    assert!(h.d.has_waiting("m"));
    h.wakes(420, new_address(), 101);
    assert_eq!(h.sent(), vec![(new_address(), first[0].1.clone())]);
    let later = h.at(421);
    assert_eq!(h.d.handle_empty(later, old_address(), 100, true), None);
    assert_eq!(
        h.d.in_flight(),
        1,
        "a Reset from the old address ends nothing"
    );
    assert_eq!(
        h.d.handle_empty(later, new_address(), 100, true),
        Some("m".into())
    );
    let r = h.results();
    assert_eq!((r.len(), r[0].status), (1, "reset"));
    assert_eq!(h.d.in_flight(), 0);
    assert!(h.d.by_message_id.is_empty() && h.d.by_token.is_empty());
}

/// A command whose TTL passes while its device sleeps is reported `expired`; the device never
/// gets it, neither in its next window nor from a retransmission.
#[test]
fn a_ttl_that_passes_in_the_sleep_is_reported_expired_and_nothing_is_sent_late() {
    let mut h = Harness::new();
    // Queued at 15 s while asleep (its window closed at 10 s), expiring at 35 s: the device
    // wakes only at 120 s.
    let asleep = h.queue_mode(old_address(), 0);
    h.command(15, "late", 35, asleep, 1);
    h.d.expire_queued(h.unix(h.at(36)));
    let r = h.results();
    assert_eq!(
        (r.len(), r[0].status, r[0].req.as_str()),
        (1, "expired", "late")
    );
    h.wakes(120, old_address(), 2);
    assert!(h.sent().is_empty(), "never delivered late");

    // Sent in a window, unanswered, parked; its TTL passes before the next window.
    let awake = h.queue_mode(old_address(), 200);
    h.command(200, "parked", 260, awake, 3);
    assert_eq!(h.sent().len(), 1);
    assert!(h.run_until(259).len() <= 3);
    assert!(h.results().is_empty());
    assert_eq!(
        h.d.poll_timeout(),
        Some(h.at(260)),
        "the TTL is its deadline while parked"
    );
    assert!(h.run_until(260).is_empty());
    let r = h.results();
    assert_eq!((r.len(), r[0].status), (1, "expired"));
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("never after the TTL")
    );
    h.wakes(400, old_address(), 4);
    assert!(h.sent().is_empty());
}

/// An always-on device's command is retransmitted as before (parking is for queue mode) and
/// ends `timeout`; no retransmission goes out after the TTL.
#[test]
fn always_on_devices_keep_the_retransmission_schedule_within_the_ttl() {
    let mut h = Harness::new();
    let always_on = Some(Reachability {
        address: old_address().into(),
        queue_mode: false,
        last_uplink: h.at(0),
    });
    h.command(0, "u", 3600, always_on, 1);
    assert_eq!(h.sent().len(), 1);
    assert_eq!(h.run_until(120).len(), 4, "MAX_RETRANSMIT");
    assert_eq!(h.results()[0].status, "timeout");
    // With a TTL of 5 s, the retransmissions stop at the TTL.
    h.command(200, "short", 205, always_on, 2);
    assert_eq!(h.sent().len(), 1);
    let later = h.run_until(400);
    assert_eq!(later.len(), 1, "2 s: resent; 6 s: past the TTL, nothing");
    assert_eq!(h.results()[0].status, "expired");
}
