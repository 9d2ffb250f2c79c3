//! The gateway on virtual time, with devices built from `v6iot_sdk::oscore` directly: what is
//! accepted, what is refused with which code, that nothing refused reaches the outbox, that
//! answers wait for their replay floor, address moves, the edge's own requests, restarts, and
//! no panic on any input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use proptest::prelude::*;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_sdk::oscore::{
    self, ContextConfig, ContextInput, RequestInfo, SecurityContext, protect_request,
    unprotect_response,
};

mod addresses;
mod rotation;

use super::*;
use crate::ingress::{AppendResult, IngressConfig};
use v6iot_credentials::{Ipv6Prefix, MasterSecret};

pub(crate) const T0: u64 = 1_800_000_000_000;
pub(crate) const SECRET: [u8; 16] = [7; 16];

pub(crate) fn peer() -> SocketAddr {
    "[2001:db8::7]:4000".parse().unwrap()
}

pub(crate) fn keys(id: &str, kid: &[u8], state: DeviceState, stored: StoredState) -> DeviceKeys {
    DeviceKeys {
        id: id.to_owned(),
        kid: kid.to_vec(),
        master_secret: MasterSecret::new(SECRET.to_vec()),
        master_salt: Vec::new(),
        prefixes: vec!["2001:db8::/64".parse::<Ipv6Prefix>().unwrap()],
        state,
        stored,
    }
}

pub(crate) fn gateway_with(devices: Vec<DeviceKeys>) -> Gateway {
    limited_gateway(LimitsConfig::default(), devices)
}

/// dev-1 (kid 1, `SECRET`), active, nothing stored yet.
fn dev1_keys() -> DeviceKeys {
    keys("dev-1", &[1], DeviceState::Active, StoredState::default())
}

pub(crate) fn gateway() -> Gateway {
    gateway_with(vec![dev1_keys()])
}

/// A gateway with `limits` that knows only dev-1.
fn dev1_gateway(limits: LimitsConfig) -> Gateway {
    limited_gateway(limits, vec![dev1_keys()])
}

/// Limits where one source may send `per_second` datagrams a second, in bursts of as many.
fn per_source(per_second: f64) -> LimitsConfig {
    LimitsConfig {
        per_source: Rate {
            per_second,
            burst: per_second,
        },
        ..LimitsConfig::default()
    }
}

/// Every audit row so far.
fn audits(g: &mut Gateway) -> Vec<AuditEvent> {
    std::iter::from_fn(|| g.poll_audit()).collect()
}

/// Writes every pending batch (as the registry thread would) and returns the rows.
pub(crate) fn persist_all(g: &mut Gateway, now: Instant) -> Vec<StateRow> {
    let mut rows = Vec::new();
    while let Some(b) = g.poll_persist() {
        rows.extend(b.rows.clone());
        g.handle_persisted(now, b.id, true);
    }
    rows
}

/// The device's side of the context.
pub(crate) fn device(kid: &[u8], secret: &[u8]) -> SecurityContext {
    let input = ContextInput {
        master_secret: secret.to_vec(),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: kid.to_vec(),
        recipient_id: Vec::new(),
    };
    let mut c = SecurityContext::new(&input, ContextConfig::default()).unwrap();
    let m = c.mark_to_persist().unwrap();
    c.persisted(m);
    c
}

fn request(method: RequestType, path: &str, query: &[&str], mid: u16, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    if path == "t" {
        p.add_option(CoapOption::ContentFormat, vec![110]);
    }
    p.payload = body.to_vec();
    p
}

pub(crate) fn protect(ctx: &mut SecurityContext, p: &Packet) -> (Vec<u8>, RequestInfo) {
    let (protected, info) = protect_request(ctx, p).unwrap();
    (protected.to_bytes_unlimited().unwrap(), info)
}

/// dev-1's kid under a wrong key, past the Partial IVs the real device used (so the replay
/// check passes and only verification can refuse it).
fn forger() -> SecurityContext {
    let mut forger = device(&[1], &[8; 16]);
    for mid in 0..10 {
        let _ = protect(&mut forger, &telemetry(mid));
    }
    forger
}

/// Protects `p` however many messages the context sent (writing its sequence marks as needed).
fn forge(ctx: &mut SecurityContext, p: &Packet) -> Vec<u8> {
    loop {
        if let Ok((protected, _)) = protect_request(ctx, p) {
            return protected.to_bytes_unlimited().unwrap();
        }
        let mark = ctx.mark_to_persist().unwrap();
        ctx.persisted(mark);
    }
}

pub(crate) fn registration(mid: u16, ep: &str) -> Packet {
    let q = format!("ep={ep}");
    request(RequestType::Post, "rd", &[&q, "lt=600"], mid, b"</x>")
}

pub(crate) fn telemetry(mid: u16) -> Packet {
    request(
        RequestType::Post,
        "t",
        &[],
        mid,
        br#"[{"n":"urn:dev:x:t","v":21.5}]"#,
    )
}

/// Everything sent so far.
pub(crate) fn sent(g: &mut Gateway) -> Vec<(SocketAddr, Vec<u8>)> {
    sent_via(g)
        .into_iter()
        .map(|(to, b)| (to.remote, b))
        .collect()
}

/// Everything sent so far, with the edge's address each leaves from.
fn sent_via(g: &mut Gateway) -> Vec<(Peer, Vec<u8>)> {
    std::iter::from_fn(|| g.poll_transmit()).collect()
}

/// Reports every command journal batch durable, as the driver does once it is synced: the
/// commands in them go out (a command is never sent before its batch is durable).
fn journal_durable(g: &mut Gateway, now: Instant, unix_ms: u64) {
    while let Some(b) = g.ingress_mut().poll_journal() {
        let rewritten = b.rewrite.is_some();
        g.handle_journal_written(
            now,
            unix_ms,
            b.id,
            crate::ingress::JournalWritten::Durable { rewritten },
        );
    }
}

/// The outbox appends so far.
fn appends(g: &mut Gateway) -> Vec<crate::ingress::Append> {
    std::iter::from_fn(|| g.ingress_mut().poll_append()).collect()
}

pub(crate) fn code_of(bytes: &[u8]) -> ResponseType {
    response_code(&Packet::from_bytes(bytes).unwrap())
}

pub(crate) fn response_code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(c) => c,
        other => panic!("not a response: {other:?}"),
    }
}

/// `dev`'s reading of the edge's protected answer `bytes` to the request behind `info`.
pub(crate) fn verified(dev: &mut SecurityContext, bytes: &[u8], info: &mut RequestInfo) -> Packet {
    let answer = Packet::from_bytes(bytes).unwrap();
    unprotect_response(dev, &answer, info).expect("a protected answer")
}

/// Sends `request` protected from `from` at `now`, stores whatever it appended (as the
/// outbox would), writes the state batches, and returns the one answer, verified.
pub(crate) fn exchange(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    (from, now): (SocketAddr, Instant),
    request: &Packet,
) -> Packet {
    let (bytes, mut info) = protect(dev, request);
    g.handle_datagram(now, T0, from, &bytes);
    for t in appends(g).into_iter().filter_map(|a| a.ticket) {
        g.handle_appended(now, t, AppendResult::Stored);
    }
    answer(g, dev, (from, now), &mut info)
}

/// Writes the state batches and returns the one answer (to `from`), verified.
pub(crate) fn answer(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    (from, now): (SocketAddr, Instant),
    info: &mut RequestInfo,
) -> Packet {
    persist_all(g, now);
    let out = sent(g);
    assert_eq!(out.len(), 1, "one answer: {out:?}");
    assert_eq!(
        out[0].0, from,
        "the answer goes where the request came from"
    );
    verified(dev, &out[0].1, info)
}

/// [`exchange`] now: the code of the verified answer.
fn call(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    from: SocketAddr,
    request: &Packet,
) -> ResponseType {
    response_code(&exchange(g, dev, (from, Instant::now()), request))
}

/// Sends `request` protected from `from` and returns the Echo value of the protected 4.01
/// that answers it (RFC 9175): the edge wants the address confirmed first.
fn challenged(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    (from, now): (SocketAddr, Instant),
    request: &Packet,
) -> Vec<u8> {
    let (bytes, mut info) = protect(dev, request);
    g.handle_datagram(now, T0, from, &bytes);
    let inner = answer(g, dev, (from, now), &mut info);
    assert_eq!(
        inner.header.code,
        MessageClass::Response(ResponseType::Unauthorized)
    );
    inner
        .get_first_option(CoapOption::Unknown(wire::ECHO))
        .expect("an Echo option")
        .clone()
}

/// The platform's `PUT /valve` "open" for `device`, request id `req`.
fn valve_command(device: &str, req: &str) -> DownlinkCommand {
    DownlinkCommand {
        device: device.into(),
        req: req.into(),
        method: "PUT".into(),
        path: "/valve".into(),
        payload: b"open".to_vec(),
        content_format: Some(0),
        expires_unix_ms: T0 + 600_000,
        confirmable: true,
        observe: false,
        accept: None,
    }
}

/// `request` with an Echo option.
fn with_echo(mut request: Packet, echo: &[u8]) -> Packet {
    request.add_option(CoapOption::Unknown(wire::ECHO), echo.to_vec());
    request
}

/// Sends report `mid` from `peer()` and stores its record (as the outbox would); its answer
/// waits for the state batch. Returns the protected report.
fn stored_report(g: &mut Gateway, dev: &mut SecurityContext, now: Instant, mid: u16) -> Vec<u8> {
    let (bytes, _) = protect(dev, &telemetry(mid));
    g.handle_datagram(now, T0, peer(), &bytes);
    let a = appends(g);
    assert_eq!(a.len(), 1, "{a:?}");
    g.handle_appended(now, a[0].ticket.unwrap(), AppendResult::Stored);
    bytes
}

/// Registers `dev-1` from `peer()`; returns the device context.
pub(crate) fn registered(g: &mut Gateway, now: Instant) -> SecurityContext {
    let mut dev = device(&[1], &SECRET);
    let (bytes, mut info) = protect(&mut dev, &registration(1, "dev-1"));
    g.handle_datagram(now, T0, peer(), &bytes);
    assert!(sent(g).is_empty(), "the answer waits for the replay floor");
    let rows = persist_all(g, now);
    assert!(rows.iter().any(|r| r.state.replay_floor == 1), "{rows:?}");
    let out = sent(g);
    assert_eq!(out.len(), 1);
    let inner = verified(&mut dev, &out[0].1, &mut info);
    assert_eq!(response_code(&inner), ResponseType::Created);
    let _ = appends(g);
    dev
}

#[test]
fn a_protected_device_registers_and_reports() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    assert!(g.ingress().directory().get("dev-1").is_some());
    let audits = audits(&mut g);
    assert!(
        audits
            .iter()
            .any(|a| a.kind == AuditKind::AddressBound && a.device.as_deref() == Some("dev-1")),
        "{audits:?}"
    );

    let (bytes, mut info) = protect(&mut dev, &telemetry(2));
    g.handle_datagram(now, T0, peer(), &bytes);
    let a = appends(&mut g);
    assert_eq!(a.len(), 1);
    assert!(
        a[0].message.topic.contains("/dev-1/"),
        "{}",
        a[0].message.topic
    );
    g.handle_appended(now, a[0].ticket.unwrap(), AppendResult::Stored);
    assert!(sent(&mut g).is_empty(), "held until the floor is durable");
    persist_all(&mut g, now);
    let out = sent(&mut g);
    assert_eq!(out.len(), 1);
    let inner = verified(&mut dev, &out[0].1, &mut info);
    assert_eq!(response_code(&inner), ResponseType::Changed);

    // The device's retransmission gets the same protected answer, and is stored only once.
    g.handle_datagram(now, T0, peer(), &bytes);
    assert_eq!(sent(&mut g), out);
    assert!(appends(&mut g).is_empty());
    assert_eq!(g.stats().duplicates, 1);
    assert_eq!(g.stats().refused, 0);
}

#[test]
fn attacks_are_refused_with_their_codes_and_reach_nothing() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let cases: Vec<(&str, Vec<u8>, ResponseType)> = vec![
        (
            "plain",
            telemetry(10).to_bytes_unlimited().unwrap(),
            ResponseType::Unauthorized,
        ),
        (
            "unknown kid",
            protect(&mut device(&[9], &SECRET), &telemetry(11)).0,
            ResponseType::Unauthorized,
        ),
        (
            "wrong key",
            protect(&mut forger(), &telemetry(12)).0,
            ResponseType::BadRequest,
        ),
        (
            "flipped bit",
            {
                let mut b = protect(&mut dev, &telemetry(13)).0;
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
            ResponseType::BadRequest,
        ),
    ];
    for (what, bytes, code) in cases {
        // Each from its own source, so the reply budget does not interfere.
        let from: SocketAddr = format!("[2001:db8::{}]:5000", what.len()).parse().unwrap();
        g.handle_datagram(now, T0, from, &bytes);
        let out = sent(&mut g);
        assert_eq!(out.len(), 1, "{what}");
        assert_eq!(code_of(&out[0].1), code, "{what}");
        assert!(appends(&mut g).is_empty(), "{what} reached the outbox");
    }
    // A replay: an accepted message again under a new message ID.
    let (bytes, _) = protect(&mut dev, &telemetry(14));
    g.handle_datagram(now, T0, peer(), &bytes);
    let a = appends(&mut g);
    assert_eq!(a.len(), 1);
    let mut replay = Packet::from_bytes(&bytes).unwrap();
    replay.header.message_id = 999;
    g.handle_datagram(now, T0, peer(), &replay.to_bytes_unlimited().unwrap());
    let out = sent(&mut g);
    assert_eq!(code_of(&out[0].1), ResponseType::Unauthorized);
    assert!(appends(&mut g).is_empty());
    let s = *g.stats();
    assert_eq!(
        (s.plain, s.unknown_kid, s.decryption_failed, s.replay),
        (1, 1, 2, 1),
        "{s:?}"
    );
    let events: Vec<_> = std::iter::from_fn(|| g.poll_security_event()).collect();
    assert_eq!(events.len(), 5);
    assert_eq!(events[1].kid.as_deref(), Some(&[9u8][..]));
    // A NON plain request is dropped silently, but counted.
    let mut non = telemetry(20);
    non.header.set_type(MessageType::NonConfirmable);
    g.handle_datagram(now, T0, peer(), &non.to_bytes_unlimited().unwrap());
    assert!(sent(&mut g).is_empty());
    assert_eq!(g.stats().plain, 2);
}

#[test]
fn a_flood_from_one_source_gets_few_answers_few_audit_rows_and_quarantines_nothing() {
    let now = Instant::now();
    let mut g = gateway();
    let _ = audits(&mut g);
    // 100 plain requests from dev-1's own address (a spoofer on its link could do this).
    for mid in 0..100 {
        let bytes = telemetry(mid).to_bytes_unlimited().unwrap();
        g.handle_datagram(now, T0, peer(), &bytes);
    }
    assert_eq!(
        sent(&mut g).len(),
        failures::FailureLog::MAX_REPLIES as usize
    );
    // Every one read and counted; nothing quarantined.
    assert_eq!(g.stats().plain, 100);
    assert_eq!(g.stats().quarantines, 0);
    assert_eq!(g.limit_stats().quarantines, 0);
    assert_eq!(
        g.stats().replies_suppressed,
        100 - u64::from(failures::FailureLog::MAX_REPLIES)
    );
    let rows = audits(&mut g);
    assert_eq!(rows.len(), 1, "the first failure: {rows:?}");
    assert!(
        rows[0]
            .detail
            .starts_with("plain_request from [2001:db8::7]:4000"),
        "{rows:?}"
    );
    let later = now + failures::FailureLog::AUDIT_INTERVAL;
    g.handle_timeout(later, T0 + 10_000);
    let rows = audits(&mut g);
    assert_eq!(rows.len(), 1, "one summary row per interval: {rows:?}");
    assert!(
        rows[0]
            .detail
            .starts_with("99 more failures within 10 s (plain_request 99)"),
        "{rows:?}"
    );
    // The device at that very address is served.
    let mut dev = registered(&mut g, later);
    assert_eq!(
        report(&mut g, &mut dev, peer(), later, 2),
        ResponseType::Changed
    );
    let report = g
        .poll_security_report(later + Duration::from_secs(5), T0 + 15_000)
        .expect("a report is due");
    let json: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap();
    assert_eq!(json["counts"]["plain_request"], 100);
    assert_eq!(json["quarantined"].as_array().map(Vec::len), Some(0));
    assert!(
        g.poll_security_report(later + Duration::from_secs(60), T0)
            .is_none()
    );
}

/// A datagram source in dev-1's /64 (2001:db8::/64), by number.
pub(crate) fn in_victim_net(i: u32) -> SocketAddr {
    source((0x2001_0db8_u128 << 96) | 0x1_0000 | u128::from(i))
}

/// A datagram source in 2001:db8:0:`i`::/64, a network of its own.
fn in_net(i: u32) -> SocketAddr {
    source((0x2001_0db8_u128 << 96) | (u128::from(i) << 64) | 1)
}

fn source(address: u128) -> SocketAddr {
    SocketAddr::new(std::net::Ipv6Addr::from(address).into(), 5683)
}

#[test]
fn spoofed_requests_drain_only_the_victim_networks_unauthenticated_budget() {
    let mut g = dev1_gateway(per_source(10.0));
    let now = Instant::now();
    let mut dev = registered(&mut g, now);
    // 1000 plain requests and unknown kids from 1000 addresses of the device's /64.
    let mut stranger = device(&[9], &SECRET);
    for i in 0..1000u32 {
        let bytes = if i % 2 == 0 {
            telemetry(i as u16).to_bytes_unlimited().unwrap()
        } else {
            forge(&mut stranger, &telemetry(i as u16))
        };
        g.handle_datagram(now, T0, in_victim_net(i), &bytes);
    }
    assert_eq!(g.stats().source_limited, 990);
    assert_eq!(g.stats().plain + g.stats().unknown_kid, 10);
    let _ = sent(&mut g);
    // The verified device in that /64 reports as if nothing happened, many times over the
    // unauthenticated budget.
    for mid in 2..40 {
        assert_eq!(
            report(&mut g, &mut dev, peer(), now, mid),
            ResponseType::Changed
        );
    }
    assert_eq!(
        g.stats().source_limited,
        990,
        "verified traffic is not counted"
    );
    assert_eq!(g.stats().quarantines, 0);
}

#[test]
fn a_kid_that_keeps_failing_is_quarantined_while_its_device_reports_from_home() {
    let limits = LimitsConfig {
        failures_to_quarantine: 5,
        quarantine: Duration::from_secs(60),
        ..LimitsConfig::default()
    };
    let mut g = dev1_gateway(limits);
    let now = Instant::now();
    let mut dev = registered(&mut g, now);
    let _ = audits(&mut g);
    // A forger using dev-1's kid with a wrong key, from other addresses of its /64.
    let mut forger = forger();
    for i in 0..30u32 {
        let (bytes, _) = protect(&mut forger, &telemetry(100 + i as u16));
        g.handle_datagram(now, T0, in_victim_net(i), &bytes);
    }
    // Five failed verifications, then the kid is quarantined: the rest refused unverified.
    assert_eq!(g.stats().decryption_failed, 5);
    assert_eq!(g.stats().kid_quarantined, 25);
    assert_eq!(g.stats().quarantines, 1);
    let answers = sent(&mut g);
    assert_eq!(answers.len(), 30, "one answer per source (budget 4 each)");
    assert_eq!(code_of(&answers[29].1), ResponseType::Forbidden);
    let events: Vec<_> = std::iter::from_fn(|| g.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e,
            GatewayEvent::Quarantined { kid, device, failures: 5, for_s: 60 }
                if kid == "01" && device == "dev-1")),
        "{events:?}"
    );
    let rows = audits(&mut g);
    assert!(
        rows.iter().any(|r| r.device.as_deref() == Some("dev-1")
            && r.detail
                .starts_with("kid 01 quarantined for 60 s after 5 failed verifications")),
        "{rows:?}"
    );
    // The device, from the address it was verified at, is served.
    for mid in 2..6 {
        assert_eq!(
            report(&mut g, &mut dev, peer(), now, mid),
            ResponseType::Changed
        );
    }
    // From a new address it is refused until the quarantine ends (the price of the rule).
    let moved: SocketAddr = "[2001:db8::99]:6000".parse().unwrap();
    let (bytes, _) = protect(&mut dev, &telemetry(7));
    g.handle_datagram(now, T0, moved, &bytes);
    assert_eq!(code_of(&sent(&mut g)[0].1), ResponseType::Forbidden);
    assert!(appends(&mut g).is_empty());
    // The report names the kid.
    let r = g
        .poll_security_report(now + Duration::from_secs(5), T0 + 5000)
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(json["quarantined"][0]["kid"], "01");
    assert_eq!(json["quarantined"][0]["device"], "dev-1");
    assert_eq!(json["counts"]["kid_quarantined"], 26);
    // Time up: the move goes through (confirmed by an Echo round trip first).
    let later = now + Duration::from_secs(61);
    let echo = challenged(&mut g, &mut dev, (moved, later), &telemetry(8));
    let answer = exchange(
        &mut g,
        &mut dev,
        (moved, later),
        &with_echo(telemetry(9), &echo),
    );
    assert_eq!(response_code(&answer), ResponseType::Changed);
    assert_eq!(g.stats().address_changes, 1);
}

#[test]
fn a_rotated_key_ends_the_kids_quarantine() {
    let limits = LimitsConfig {
        failures_to_quarantine: 2,
        ..LimitsConfig::default()
    };
    let mut g = dev1_gateway(limits);
    let now = Instant::now();
    let mut forger = device(&[1], &[8; 16]);
    for i in 0..3u32 {
        let (bytes, _) = protect(&mut forger, &telemetry(i as u16));
        g.handle_datagram(now, T0, in_victim_net(i), &bytes);
    }
    assert_eq!(g.stats().kid_quarantined, 1);
    // The operator rotates dev-1's secret: a fresh context, no quarantine.
    let mut rotated = dev1_keys();
    rotated.master_secret = MasterSecret::new(vec![6; 16]);
    rotated.stored.fingerprint = [1; 8];
    g.handle_devices(T0, vec![rotated]);
    persist_all(&mut g, now);
    let _ = sent(&mut g);
    let mut dev = device(&[1], &[6; 16]);
    let elsewhere: SocketAddr = "[2001:db8::42]:4000".parse().unwrap();
    assert_eq!(
        call(&mut g, &mut dev, elsewhere, &registration(1, "dev-1")),
        ResponseType::Created
    );
}

#[test]
fn a_retransmission_refused_as_a_replay_after_a_crash_quarantines_nothing() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let bytes = stored_report(&mut g, &mut dev, now, 50);
    let stored = persist_all(&mut g, now).last().unwrap().state;
    // "kill -9" before the answer reached the device: it retransmits, again and again.
    let mut g2 = gateway_with(vec![keys("dev-1", &[1], DeviceState::Active, stored)]);
    for i in 0..50u64 {
        g2.handle_datagram(now + Duration::from_secs(i), T0, peer(), &bytes);
    }
    assert_eq!(g2.stats().replay, 50);
    assert_eq!(g2.stats().quarantines, 0);
    assert_eq!(g2.stats().kid_limited, 0, "50 is within the kid's budget");
    assert!(
        !g2.limits
            .is_kid_quarantined(now + Duration::from_secs(50), &[1])
    );
    let answers = sent(&mut g2);
    assert!(!answers.is_empty());
    assert!(
        answers
            .iter()
            .all(|(_, b)| code_of(b) == ResponseType::Unauthorized)
    );
    // The device's next request is served.
    assert_eq!(
        call(&mut g2, &mut dev, peer(), &registration(51, "dev-1")),
        ResponseType::Created
    );
}

#[test]
fn replays_of_a_captured_message_are_bounded_per_kid_and_quarantine_nothing() {
    let limits = LimitsConfig {
        per_device: Rate {
            per_second: 1.0,
            burst: 5.0,
        },
        ..LimitsConfig::default()
    };
    let mut g = dev1_gateway(limits);
    let now = Instant::now();
    let mut dev = registered(&mut g, now);
    // A genuine report, captured on its way.
    let captured = stored_report(&mut g, &mut dev, now, 2);
    persist_all(&mut g, now);
    let _ = sent(&mut g);
    // Replayed 100 times from 100 other networks (new message IDs, so not retransmissions).
    for i in 0..100u32 {
        let replay = with_mid(&captured, 0x8000 + i as u16);
        g.handle_datagram(now, T0, in_net(i + 1), &replay);
    }
    // The kid's budget (5) is spent on the first replays; the rest is dropped unread.
    assert_eq!(g.stats().replay, 5);
    assert_eq!(g.stats().kid_limited, 95);
    assert_eq!(g.stats().quarantines, 0);
    assert_eq!(sent(&mut g).len(), 5, "4.01 to the first five");
    // The device, from where it was verified, is served.
    assert_eq!(
        report(&mut g, &mut dev, peer(), now, 3),
        ResponseType::Changed
    );
    // A second later the kid has a token again: the next replay is read (and refused).
    let later = now + Duration::from_secs(1);
    g.handle_datagram(
        later,
        T0,
        "[2001:db9::1]:9".parse::<SocketAddr>().unwrap(),
        &with_mid(&captured, 1),
    );
    assert_eq!(g.stats().replay, 6);
}

/// `bytes` with another message ID.
fn with_mid(bytes: &[u8], mid: u16) -> Vec<u8> {
    let mut p = Packet::from_bytes(bytes).unwrap();
    p.header.message_id = mid;
    p.to_bytes_unlimited().unwrap()
}

#[test]
fn a_revoked_device_retrying_quarantines_nothing_and_its_neighbours_go_on() {
    let now = Instant::now();
    let mut g = gateway_with(vec![
        keys("dev-1", &[1], DeviceState::Revoked, StoredState::default()),
        keys("dev-2", &[2], DeviceState::Active, StoredState::default()),
    ]);
    let mut revoked = device(&[1], &SECRET);
    for mid in 0..200u16 {
        let (bytes, _) = protect(&mut revoked, &telemetry(mid));
        g.handle_datagram(now, T0, peer(), &bytes);
    }
    assert_eq!(g.stats().not_active, 200);
    assert_eq!(g.stats().quarantines, 0);
    let _ = sent(&mut g);
    // dev-2, at the very same address (behind the same NAT), registers.
    let mut dev2 = device(&[2], &SECRET);
    assert_eq!(
        call(&mut g, &mut dev2, peer(), &registration(1, "dev-2")),
        ResponseType::Created
    );
}

/// Registers dev-1 with an observable resource and returns its context, the edge's observe
/// request and the device's side of that exchange.
fn observed(g: &mut Gateway, now: Instant) -> (SecurityContext, Packet, RequestInfo) {
    let mut dev = device(&[1], &SECRET);
    let q = "ep=dev-1".to_owned();
    let reg = request(
        RequestType::Post,
        "rd",
        &[&q, "lt=600"],
        1,
        b"</temp>;obs;ct=110",
    );
    let (bytes, _) = protect(&mut dev, &reg);
    g.handle_datagram(now, T0, peer(), &bytes);
    persist_all(g, now);
    let out = sent(g);
    let (_, observe_bytes) = out
        .iter()
        .find(|(_, b)| {
            matches!(
                Packet::from_bytes(b).unwrap().header.code,
                MessageClass::Request(_)
            )
        })
        .expect("the edge observes /temp");
    let observe = Packet::from_bytes(observe_bytes).unwrap();
    let (inner, info) = oscore::unprotect_request(&mut dev, &observe).unwrap();
    assert!(info.is_observe_registration());
    assert_eq!(
        inner
            .get_option(CoapOption::UriPath)
            .and_then(|p| p.front()),
        Some(&b"temp".to_vec())
    );
    (dev, observe, info)
}

/// `dev`'s `response` to the request behind `info`, protected; a `notification` carries a
/// Partial IV of its own.
fn protect_answer(
    dev: &mut SecurityContext,
    response: &Packet,
    info: &mut RequestInfo,
    notification: bool,
) -> Vec<u8> {
    oscore::protect_response(dev, response, info, notification)
        .unwrap()
        .to_bytes_unlimited()
        .unwrap()
}

/// A 2.04 to the edge's `request`: an ACK with its message ID (piggybacked), or a separate
/// response of type `kind` with message ID `mid`.
fn changed(request: &Packet, kind: MessageType, mid: u16) -> Packet {
    let mut response = Packet::new();
    response.header.set_type(kind);
    response.header.message_id = mid;
    response.header.code = MessageClass::Response(ResponseType::Changed);
    response.set_token(request.get_token().to_vec());
    response
}

/// A notification of `observe` with sequence `seq`.
fn notification(observe: &Packet, mid: u16, kind: MessageType, seq: u32) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = mid;
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.set_token(observe.get_token().to_vec());
    p.add_option(CoapOption::Observe, wire::write_uint(seq));
    p.add_option(CoapOption::ContentFormat, vec![110]);
    p.payload = br#"[{"n":"urn:dev:x:temp","v":20}]"#.to_vec();
    p
}

#[test]
fn stale_notifications_after_an_edge_restart_get_a_reset_and_quarantine_nothing() {
    let now = Instant::now();
    let mut g = gateway();
    let (mut dev, observe, mut info) = observed(&mut g, now);
    let stored = persist_all(&mut g, now)
        .last()
        .map(|r| r.state)
        .unwrap_or_default();
    // The edge restarts: it no longer knows the observation's token.
    let mut g2 = gateway_with(vec![keys("dev-1", &[1], DeviceState::Active, stored)]);
    for seq in 0..40u32 {
        let kind = if seq % 2 == 0 {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let n = notification(&observe, 0x6000 + seq as u16, kind, seq + 2);
        g2.handle_datagram(
            now,
            T0,
            peer(),
            &protect_answer(&mut dev, &n, &mut info, true),
        );
    }
    assert_eq!(g2.stats().bad_responses, 40);
    assert_eq!(g2.stats().quarantines, 0);
    assert!(appends(&mut g2).is_empty());
    // Resets (the first few, within the reply budget) tell the device to end the observation.
    let resets = sent(&mut g2);
    assert_eq!(resets.len(), failures::FailureLog::MAX_REPLIES as usize);
    for (i, (to, bytes)) in resets.iter().enumerate() {
        let p = Packet::from_bytes(bytes).unwrap();
        assert_eq!(*to, peer());
        assert_eq!(p.header.get_type(), MessageType::Reset);
        assert_eq!(p.header.code, MessageClass::Empty);
        assert_eq!(p.header.message_id, 0x6000 + i as u16);
    }
    // The device registers again and is served.
    assert_eq!(
        call(&mut g2, &mut dev, peer(), &registration(2, "dev-1")),
        ResponseType::Created
    );
}

#[test]
fn ten_thousand_sources_with_one_forgery_each_stay_under_the_caps() {
    let limits = LimitsConfig {
        max_tracked: 1000,
        ..LimitsConfig::default()
    };
    let mut g = dev1_gateway(limits);
    let now = Instant::now();
    let mut dev = registered(&mut g, now);
    let _ = audits(&mut g);
    let mut stranger = device(&[9], &SECRET);
    let mut forger = forger();
    let mut answers = 0;
    for i in 0..10_000u32 {
        // Each from a /64 of its own: half unknown kids, half dev-1's kid with a wrong key.
        let bytes = if i % 2 == 0 {
            forge(&mut stranger, &telemetry(i as u16))
        } else {
            forge(&mut forger, &telemetry(i as u16))
        };
        g.handle_datagram(now, T0, in_net(i), &bytes);
        answers += sent(&mut g).len();
        let t = g.tables();
        assert!(t.sources <= 1000, "{t:?}");
        assert!(t.kids <= 1, "{t:?}");
        assert!(t.failures.reply_windows <= failures::FailureLog::MAX_SOURCES);
        assert!(t.queued_refusals <= 4096);
    }
    let s = *g.stats();
    assert_eq!(s.unknown_kid, 5000);
    let quarantine_after = u64::from(LimitsConfig::default().failures_to_quarantine);
    assert_eq!(s.decryption_failed, quarantine_after, "AEAD work bounded");
    assert_eq!(s.kid_quarantined, 5000 - quarantine_after);
    assert_eq!(g.limit_stats().overflowed, 4000);
    assert_eq!(
        answers,
        failures::FailureLog::REPLIES_PER_SECOND as usize,
        "error answers bounded globally"
    );
    // Audit: the first sources' rows, the kid's quarantine, one summary when the interval ends.
    g.handle_timeout(now + failures::FailureLog::AUDIT_INTERVAL, T0 + 10_000);
    let rows = audits(&mut g);
    assert_eq!(
        rows.len(),
        failures::FailureLog::MAX_DETAIL_ROWS + 2,
        "{rows:?}"
    );
    assert_eq!(g.tables().failures.reply_windows, 0);
    // The verified device is still served from its address.
    let later = now + failures::FailureLog::AUDIT_INTERVAL;
    assert_eq!(
        report(&mut g, &mut dev, peer(), later, 2),
        ResponseType::Changed
    );
    let after_sweep = later + Duration::from_secs(5);
    g.handle_timeout(after_sweep, T0 + 15_000);
    assert!(g.tables().sources <= 1000);
}

/// The edge's Confirmable command "open" to dev-1 (at `to`), protected under the edge's
/// (empty) Sender ID: the protected packet and the device's side of the exchange, after it
/// verified it.
fn command_to_device(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    (to, now): (SocketAddr, Instant),
) -> (Packet, RequestInfo) {
    g.handle_command(now, T0 + 1000, valve_command("dev-1", "r1"));
    journal_durable(g, now, T0 + 1000);
    let out = sent(g);
    let cmd = out.iter().find(|(at, _)| *at == to).expect("the command");
    let cmd = Packet::from_bytes(&cmd.1).unwrap();
    let option = oscore::OscoreOption::from_packet(&cmd).unwrap();
    assert_eq!(
        option.kid.as_deref(),
        Some(&[][..]),
        "the edge's kid is empty"
    );
    let (inner, info) = oscore::unprotect_request(dev, &cmd).unwrap();
    assert_eq!(inner.payload, b"open");
    (cmd, info)
}

#[test]
fn a_spoofed_reset_leaves_a_protected_command_pending_and_it_is_delivered() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let (cmd, mut info) = command_to_device(&mut g, &mut dev, (peer(), now));
    // A Reset naming the command, from the device's address: ignored, counted.
    let reset = wire::empty_message(MessageType::Reset, cmd.header.message_id);
    g.handle_datagram(now, T0, peer(), &reset);
    assert_eq!(g.stats().resets_ignored, 1);
    assert!(
        !appends(&mut g)
            .iter()
            .any(|a| a.message.topic.contains("/cmd/r1/result")),
        "no result from a Reset"
    );
    // The command is still retransmitted, the same protected bytes.
    g.handle_timeout(now + Duration::from_secs(10), T0 + 12_000);
    let again = sent(&mut g);
    assert!(
        again
            .iter()
            .any(|(to, b)| *to == peer() && *b == cmd.to_bytes_unlimited().unwrap()),
        "{again:?}"
    );
    // The device answers; the result is the device's.
    let response = changed(&cmd, MessageType::Acknowledgement, cmd.header.message_id);
    let protected = protect_answer(&mut dev, &response, &mut info, false);
    g.handle_datagram(now, T0, peer(), &protected);
    let results: Vec<_> = appends(&mut g)
        .into_iter()
        .filter(|a| a.message.topic.contains("/cmd/r1/result"))
        .collect();
    assert_eq!(results.len(), 1);
    let json: serde_json::Value = serde_json::from_slice(&results[0].message.payload).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["code"], "2.04");
    // The Reset is in the security report.
    let r = g
        .poll_security_report(now + Duration::from_secs(10), T0 + 10_000)
        .unwrap();
    assert_eq!(r.counts["reset_ignored"], 1);
}

#[test]
fn a_spoofed_empty_ack_only_stops_retransmission() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let (cmd, mut info) = command_to_device(&mut g, &mut dev, (peer(), now));
    let ack = wire::empty_message(MessageType::Acknowledgement, cmd.header.message_id);
    g.handle_datagram(now, T0, peer(), &ack);
    // No retransmission any more; the command waits for a separate response.
    g.handle_timeout(now + Duration::from_secs(10), T0 + 12_000);
    assert!(sent(&mut g).is_empty());
    assert_eq!(g.ingress().pending_commands(), 1);
    // The device's separate response completes it.
    let response = changed(&cmd, MessageType::Confirmable, 0x4242);
    let protected = protect_answer(&mut dev, &response, &mut info, false);
    g.handle_datagram(now, T0, peer(), &protected);
    assert_eq!(g.ingress().pending_commands(), 0);
    assert!(
        appends(&mut g)
            .iter()
            .any(|a| a.message.topic.contains("/cmd/r1/result"))
    );
}

/// A gateway with `limits` and `devices`; the first sequence marks are written at load.
fn limited_gateway(limits: LimitsConfig, devices: Vec<DeviceKeys>) -> Gateway {
    let ingress = Ingress::new(IngressConfig::new(Topics::new("v6iot", "s").unwrap()), T0);
    let config = GatewayConfig {
        limits,
        ..GatewayConfig::default()
    };
    let mut g = Gateway::new(ingress, config);
    g.handle_devices(T0, devices);
    persist_all(&mut g, Instant::now());
    g
}

/// [`exchange`] for report `mid`: the code of the verified answer.
fn report(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    from: SocketAddr,
    now: Instant,
    mid: u16,
) -> ResponseType {
    response_code(&exchange(g, dev, (from, now), &telemetry(mid)))
}

#[test]
fn a_source_over_its_rate_is_dropped_unread_and_others_go_on() {
    let mut g = dev1_gateway(per_source(10.0));
    let now = Instant::now();
    let flooder: SocketAddr = "[2001:db8:bad::1]:9".parse().unwrap();
    // Empty CoAP pings: nothing to authenticate, so only the rate limit can stop them.
    for mid in 0..1000u16 {
        let mut ping = Packet::new();
        ping.header.set_type(MessageType::Confirmable);
        ping.header.code = MessageClass::Empty;
        ping.header.message_id = mid;
        g.handle_datagram(now, T0, flooder, &ping.to_bytes_unlimited().unwrap());
    }
    assert_eq!(g.stats().source_limited, 990);
    assert_eq!(g.limit_stats().source_limited, 990);
    let resets = sent(&mut g);
    assert_eq!(
        resets.len(),
        10,
        "only the burst got its Reset: {resets:?} {:?}",
        g.ingress().stats()
    );
    // The device, from its own /64, registers as if nothing happened.
    let mut dev = registered(&mut g, now);
    assert_eq!(
        report(&mut g, &mut dev, peer(), now, 2),
        ResponseType::Changed
    );
}

#[test]
fn a_device_over_its_rate_gets_a_protected_5_03_with_max_age() {
    let limits = LimitsConfig {
        per_device: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        ..LimitsConfig::default()
    };
    let mut g = limited_gateway(
        limits,
        vec![
            keys("dev-1", &[1], DeviceState::Active, StoredState::default()),
            keys("dev-2", &[2], DeviceState::Active, StoredState::default()),
        ],
    );
    let now = Instant::now();
    let mut dev = registered(&mut g, now);
    // registration + 2 reports use the burst of 3
    for mid in 2..4 {
        assert_eq!(
            report(&mut g, &mut dev, peer(), now, mid),
            ResponseType::Changed
        );
    }
    let (bytes, mut info) = protect(&mut dev, &telemetry(4));
    g.handle_datagram(now, T0, peer(), &bytes);
    assert!(
        appends(&mut g).is_empty(),
        "nothing over the rate is stored"
    );
    persist_all(&mut g, now);
    let out = sent(&mut g);
    let inner = verified(&mut dev, &out[0].1, &mut info);
    assert_eq!(response_code(&inner), ResponseType::ServiceUnavailable);
    let max_age = inner
        .get_option(CoapOption::MaxAge)
        .and_then(|v| v.front().cloned());
    assert_eq!(max_age, Some(vec![1]));
    assert_eq!(g.stats().device_limited, 1);
    // Its retransmission gets the same answer, not a replay refusal.
    g.handle_datagram(now, T0, peer(), &bytes);
    assert_eq!(sent(&mut g), out);
    // Another device from the same /64 is not limited.
    let mut dev2 = device(&[2], &SECRET);
    let other: SocketAddr = "[2001:db8::8]:4000".parse().unwrap();
    assert_eq!(
        call(&mut g, &mut dev2, other, &registration(1, "dev-2")),
        ResponseType::Created
    );
    // A second later the device has a token again.
    let later = now + Duration::from_millis(1100);
    assert_eq!(
        report(&mut g, &mut dev, peer(), later, 5),
        ResponseType::Changed
    );
}

#[test]
fn revoked_devices_and_foreign_addresses_are_refused() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    // From outside 2001:db8::/64: verified, but refused with a protected 4.03.
    let outside: SocketAddr = "[2001:db9::7]:4000".parse().unwrap();
    assert_eq!(
        call(&mut g, &mut dev, outside, &telemetry(30)),
        ResponseType::Forbidden
    );
    assert!(appends(&mut g).is_empty());
    assert_eq!(g.stats().address_refused, 1);
    // A registration under another name: 4.03.
    assert_eq!(
        call(&mut g, &mut dev, peer(), &registration(31, "dev-2")),
        ResponseType::Forbidden
    );
    assert_eq!(g.stats().endpoint_mismatch, 1);

    // Revoked while running: the registration ends and the device gets 4.01.
    g.handle_devices(
        T0,
        vec![keys(
            "dev-1",
            &[1],
            DeviceState::Revoked,
            StoredState::default(),
        )],
    );
    assert!(g.ingress().directory().get("dev-1").is_none());
    let audits = audits(&mut g);
    assert!(
        audits.iter().any(|a| a.kind == AuditKind::Revoked),
        "{audits:?}"
    );
    let _ = appends(&mut g);
    let (bytes, _) = protect(&mut dev, &telemetry(32));
    g.handle_datagram(now, T0, peer(), &bytes);
    let out = sent(&mut g);
    assert_eq!(code_of(&out[0].1), ResponseType::Unauthorized);
    assert!(appends(&mut g).is_empty());
    assert_eq!(g.stats().not_active, 1);
}

#[test]
fn quarantined_devices_get_4_03_and_reinstated_ones_get_a_fresh_start() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let quarantined = keys(
        "dev-1",
        &[1],
        DeviceState::Quarantined,
        StoredState::default(),
    );
    g.handle_devices(T0, vec![quarantined]);
    let (bytes, _) = protect(&mut dev, &telemetry(60));
    g.handle_datagram(now, T0, peer(), &bytes);
    let out = sent(&mut g);
    assert_eq!(code_of(&out[0].1), ResponseType::Forbidden);
    let events: Vec<_> = std::iter::from_fn(|| g.poll_security_event()).collect();
    assert_eq!(events[0].cause, SecurityCause::DeviceQuarantined);
    assert_eq!(events[0].device.as_deref(), Some("dev-1"));
    // Reinstated (the registry still has the floor the edge stored): it registers again.
    let floor = StoredState {
        replay_floor: 1,
        fingerprint: [0; 8],
        sender_mark: 4096,
    };
    g.handle_devices(T0, vec![keys("dev-1", &[1], DeviceState::Active, floor)]);
    persist_all(&mut g, now);
    let _ = sent(&mut g);
    assert_eq!(
        call(&mut g, &mut dev, peer(), &registration(61, "dev-1")),
        ResponseType::Created
    );
}

#[test]
fn a_device_that_moves_keeps_its_session_and_commands_follow() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let _ = audits(&mut g);
    let moved: SocketAddr = "[2001:db8::99]:6000".parse().unwrap();
    // From the new address the report is answered with an Echo challenge, not stored.
    let echo = challenged(&mut g, &mut dev, (moved, now), &telemetry(40));
    assert!(appends(&mut g).is_empty());
    assert_eq!(
        g.ingress().directory().get("dev-1").unwrap().address,
        peer()
    );
    // The repeat with the Echo value, from the new address, moves the device.
    let (bytes, _) = protect(&mut dev, &with_echo(telemetry(41), &echo));
    g.handle_datagram(now, T0 + 1000, moved, &bytes);
    let a = appends(&mut g);
    assert!(
        a.iter()
            .any(|a| a.message.topic.ends_with("/dev-1/telemetry")),
        "{a:?}"
    );
    assert_eq!(g.ingress().directory().get("dev-1").unwrap().address, moved);
    let audits = audits(&mut g);
    assert!(
        audits.iter().any(|a| a.kind == AuditKind::AddressChanged
            && a.address == Some(audit_address(moved))),
        "{audits:?}"
    );
    assert_eq!(g.stats().address_changes, 1);

    // A command goes to the new address, protected with the edge's (empty) Sender ID.
    let (cmd, mut info) = command_to_device(&mut g, &mut dev, (moved, now));
    // A retransmission resends the same protected bytes.
    g.handle_timeout(now + Duration::from_secs(10), T0 + 12_000);
    let again = sent(&mut g);
    let bytes = cmd.to_bytes_unlimited().unwrap();
    assert!(
        again.iter().any(|(to, b)| *to == moved && *b == bytes),
        "same bytes, same Partial IV: {again:?}"
    );
    // The device answers (piggybacked, protected); the result goes to the outbox.
    let response = changed(&cmd, MessageType::Acknowledgement, cmd.header.message_id);
    let protected = protect_answer(&mut dev, &response, &mut info, false);
    g.handle_datagram(now, T0 + 3000, moved, &protected);
    let a = appends(&mut g);
    assert!(
        a.iter().any(|a| a.message.topic.contains("/cmd/r1/result")),
        "{a:?}"
    );
    assert_eq!(g.stats().responses_verified, 1);
}

#[test]
fn after_a_restart_accepted_messages_are_replays_and_sequence_numbers_go_on() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    let bytes = stored_report(&mut g, &mut dev, now, 50);
    let rows = persist_all(&mut g, now);
    let stored = rows.last().unwrap().state;
    assert_eq!(stored.replay_floor, 2);
    assert!(stored.sender_mark > 0);

    // "kill -9": a new gateway from what was stored.
    let mut g2 = gateway_with(vec![keys("dev-1", &[1], DeviceState::Active, stored)]);
    g2.handle_datagram(now, T0, peer(), &bytes);
    let out = sent(&mut g2);
    assert_eq!(code_of(&out[0].1), ResponseType::Unauthorized);
    assert!(appends(&mut g2).is_empty());
    assert_eq!(g2.stats().replay, 1);
    // Fresh messages pass.
    let (bytes, _) = protect(&mut dev, &registration(51, "dev-1"));
    g2.handle_datagram(now, T0, peer(), &bytes);
    assert_eq!(g2.stats().authenticated, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_input_panics_or_reaches_the_outbox(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..20),
        flip in 0usize..200,
    ) {
        let now = Instant::now();
        let mut g = gateway();
        let mut dev = device(&[1], &SECRET);
        for d in &datagrams {
            g.handle_datagram(now, T0, peer(), d);
        }
        // A tampered protected message, too.
        let (mut bytes, _) = protect(&mut dev, &telemetry(7));
        let i = flip % bytes.len();
        bytes[i] ^= 0x40;
        g.handle_datagram(now, T0, peer(), &bytes);
        let _ = sent(&mut g);
        g.handle_timeout(now + Duration::from_secs(30), T0 + 30_000);
        persist_all(&mut g, now);
        let _ = sent(&mut g);
        let appended = appends(&mut g);
        prop_assert!(appended.iter().all(|a| a.ticket.is_none()), "{appended:?}");
    }
}

#[test]
fn observations_of_a_protected_device_are_protected_and_verified() {
    let now = Instant::now();
    let mut g = gateway();
    let (mut dev, observe, mut info) = observed(&mut g, now);
    // The first answer (piggybacked) starts the observation and stores the current value.
    let first = notification(
        &observe,
        observe.header.message_id,
        MessageType::Acknowledgement,
        1,
    );
    let protected = protect_answer(&mut dev, &first, &mut info, false);
    g.handle_datagram(now, T0, peer(), &protected);
    assert_eq!(g.ingress().observation_count(), 1);
    assert_eq!(
        appends(&mut g)
            .iter()
            .filter(|a| a.message.topic.ends_with("/telemetry"))
            .count(),
        1
    );
    // A later notification (its own Partial IV) is stored and acknowledged.
    let next = notification(&observe, 0x5151, MessageType::Confirmable, 2);
    let bytes = protect_answer(&mut dev, &next, &mut info, true);
    g.handle_datagram(now, T0, peer(), &bytes);
    let a = appends(&mut g);
    assert_eq!(a.len(), 1);
    g.handle_appended(now, a[0].ticket.unwrap(), AppendResult::Stored);
    let out = sent(&mut g);
    assert_eq!(out.len(), 1, "an empty ACK");
    assert_eq!(
        Packet::from_bytes(&out[0].1).unwrap().header.code,
        MessageClass::Empty
    );
    // Its retransmission is recognised (ACKed again, not stored again); a forged one is not.
    g.handle_datagram(now, T0, peer(), &bytes);
    assert!(appends(&mut g).is_empty());
    assert_eq!(sent(&mut g).len(), 1);
    let mut forged = Packet::from_bytes(&bytes).unwrap();
    forged.header.message_id = 0x5252;
    forged.payload[0] ^= 1;
    g.handle_datagram(now, T0, peer(), &forged.to_bytes_unlimited().unwrap());
    assert!(appends(&mut g).is_empty());
    assert_eq!(g.stats().bad_responses, 1);
    assert_eq!(g.stats().responses_verified, 2);
}
