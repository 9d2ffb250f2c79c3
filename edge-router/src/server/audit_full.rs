//! The edge does nothing it cannot audit (issue 14, the storm's audit gaps): with the registry's
//! audit lane at its bound a registration gets a protected 5.03 with a short Max-Age and
//! changes nothing; no audit row is dropped; once the lane drained the device registers and its
//! rows are in the trail; telemetry from a bound device never waits for the lane. The driver's
//! hand-over (`drain_side_effects`) is played by [`hand_over`] on a real [`Jobs`] lane.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet, ResponseType};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_credentials::DeviceState;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::SecurityContext;

use crate::audit::{AuditEvent, AuditKind};
use crate::gateway::audit_room::{AuditRoom, DrainRate};
use crate::gateway::tests::{
    SECRET, T0, answer, code_of, device, exchange, gateway, gateway_with, in_victim_net, keys,
    peer, persist_all, protect, registered, registration, response_code, sent, telemetry, verified,
};
use crate::gateway::{Gateway, GatewayConfig, StoredState};
use crate::ingress::{Ingress, IngressConfig};
use crate::registry_worker::{Job, Jobs};

/// What the driver does after each datagram batch: the gateway's rows and the ingress's
/// events' rows into the lane, then the room left back to the gateway. Returns the rows
/// dropped.
fn hand_over(g: &mut Gateway, lane: &mut Jobs) -> u64 {
    let mut rows: Vec<AuditEvent> = std::iter::from_fn(|| g.ingress_mut().poll_event())
        .filter_map(|e| super::audit_row(&e))
        .collect();
    rows.extend(std::iter::from_fn(|| g.poll_audit()));
    let dropped = lane.push_audit(rows);
    let state = lane.audit_lane();
    g.handle_audit_room(state.room);
    g.handle_audit_drain(Instant::now(), state.taken, state.cpu, state.waiting);
    dropped
}

/// A lane with `room` rows left before its bound.
fn lane_with_room(room: usize) -> Jobs {
    let mut lane = Jobs::default();
    let filler = (0..Jobs::MAX_AUDIT_ROWS - room)
        .map(|i| AuditEvent::auth_failure(format!("earlier row {i}")))
        .collect();
    assert_eq!(lane.push_audit(filler), 0);
    lane
}

/// Everything in the lane, as the registry thread would write it.
fn drain(lane: &mut Jobs) -> Vec<AuditEvent> {
    let mut written = Vec::new();
    while let Some(job) = lane.take() {
        if let Job::Audit(rows) = job {
            written.extend(rows);
        }
    }
    written
}

/// Sends `request` from `from` and returns the verified answer and its Max-Age.
fn answered(
    g: &mut Gateway,
    dev: &mut SecurityContext,
    from: SocketAddr,
    request: &Packet,
) -> (ResponseType, Option<u32>) {
    let inner = exchange(g, dev, (from, Instant::now()), request);
    let max_age = max_age_of(&inner);
    (response_code(&inner), max_age)
}

/// Rows of `kind` for `device` among `rows`.
fn rows_of(rows: &[AuditEvent], kind: AuditKind, device: &str) -> usize {
    rows.iter()
        .filter(|r| r.kind == kind && r.device.as_deref() == Some(device))
        .count()
}

/// The Max-Age of an answer, if it has one.
fn max_age_of(answer: &Packet) -> Option<u32> {
    wire::uint_option(answer, CoapOption::MaxAge, 4).unwrap()
}

/// A hint for one of the first refusals: the lane's drain rate is not measured in these
/// tests, so slots are paced at the assumed rate and the first few are at the shortest hint
/// (or a second later, rounded up).
fn retry_hint_is_short(max_age: Option<u32>) -> bool {
    let first = AuditRoom::RETRY_MIN_S;
    max_age.is_some_and(|s| (first..=first + 1).contains(&s))
}

#[test]
fn at_the_bound_a_registration_gets_5_03_and_registers_once_the_lane_drained() {
    let mut g = gateway();
    // Room for two rows, less than a first registration's three and the reserve.
    let mut lane = lane_with_room(AuditRoom::RESERVE + 2);
    g.handle_audit_room(lane.audit_room());
    let mut dev = device(&[1], &SECRET);
    let (bytes, mut info) = protect(&mut dev, &registration(1, "dev-1"));
    g.handle_datagram(Instant::now(), T0, peer(), &bytes);
    let refused = answer(&mut g, &mut dev, (peer(), Instant::now()), &mut info);
    assert_eq!(response_code(&refused), ResponseType::ServiceUnavailable);
    let max_age = max_age_of(&refused);
    assert!(retry_hint_is_short(max_age), "{max_age:?}");
    assert_eq!(g.stats().audit_busy, 1);
    assert!(
        g.ingress().directory().get("dev-1").is_none(),
        "not registered"
    );
    assert_eq!(hand_over(&mut g, &mut lane), 0, "no audit row dropped");
    assert_eq!(
        lane.audit_len(),
        Jobs::MAX_AUDIT_ROWS - AuditRoom::RESERVE - 2
    );
    // Its retransmission gets the same answer from memory, and costs nothing.
    g.handle_datagram(Instant::now(), T0, peer(), &bytes);
    assert_eq!(sent(&mut g).len(), 1);
    assert_eq!(g.stats().audit_busy, 1);
    assert_eq!(hand_over(&mut g, &mut lane), 0);

    // The registry thread writes the backlog; the device retries and registers.
    let backlog = drain(&mut lane);
    assert_eq!(rows_of(&backlog, AuditKind::Registration, "dev-1"), 0);
    g.handle_audit_room(lane.audit_room());
    let (bytes, mut info) = protect(&mut dev, &registration(2, "dev-1"));
    g.handle_datagram(Instant::now(), T0, peer(), &bytes);
    let created = answer(&mut g, &mut dev, (peer(), Instant::now()), &mut info);
    assert_eq!(response_code(&created), ResponseType::Created);
    assert!(g.ingress().directory().get("dev-1").is_some());
    assert_eq!(hand_over(&mut g, &mut lane), 0);
    // A retransmission (its ACK lost in the storm) is answered from memory: no second row.
    g.handle_datagram(Instant::now(), T0, peer(), &bytes);
    assert_eq!(sent(&mut g).len(), 1);
    assert_eq!(hand_over(&mut g, &mut lane), 0);
    assert_eq!(lane.audit_len(), 2, "one registration row, one binding row");
    let trail = drain(&mut lane);
    assert_eq!(rows_of(&trail, AuditKind::Registration, "dev-1"), 1);
    assert_eq!(rows_of(&trail, AuditKind::AddressBound, "dev-1"), 1);
    assert_eq!(lane.dropped(), 0);
}

#[test]
fn the_room_a_first_registration_needs_is_three_rows_above_the_reserve() {
    for (room, expected) in [
        (AuditRoom::RESERVE + 2, ResponseType::ServiceUnavailable),
        (AuditRoom::RESERVE + 3, ResponseType::Created),
    ] {
        let mut g = gateway();
        let mut lane = lane_with_room(room);
        g.handle_audit_room(lane.audit_room());
        let mut dev = device(&[1], &SECRET);
        let (code, _) = answered(&mut g, &mut dev, peer(), &registration(1, "dev-1"));
        assert_eq!(code, expected, "room {room}");
        assert_eq!(
            hand_over(&mut g, &mut lane),
            0,
            "room {room}: nothing dropped"
        );
    }
}

#[test]
fn a_bound_device_reports_with_the_lane_full_but_does_not_register_again() {
    let mut g = gateway();
    let mut dev = registered(&mut g, Instant::now());
    let mut lane = lane_with_room(0);
    assert_eq!(hand_over(&mut g, &mut lane), 2, "the lane really is full");
    for mid in 2..5 {
        let (code, _) = answered(&mut g, &mut dev, peer(), &telemetry(mid));
        assert_eq!(code, ResponseType::Changed, "report {mid}");
    }
    // A registration would write a row: refused, the device stays registered.
    let (code, max_age) = answered(&mut g, &mut dev, peer(), &registration(5, "dev-1"));
    assert_eq!(code, ResponseType::ServiceUnavailable);
    assert!(retry_hint_is_short(max_age), "{max_age:?}");
    assert!(g.ingress().directory().get("dev-1").is_some());
    assert_eq!(g.stats().audit_busy, 1);
    assert_eq!(hand_over(&mut g, &mut lane), 0);
}

/// dev-`i`, kid `i`, `SECRET`, in dev-1's /64.
fn fleet(n: u32) -> (Gateway, Vec<SecurityContext>) {
    let kid = |i: u32| i.to_be_bytes().to_vec();
    let keys = (0..n)
        .map(|i| {
            keys(
                &format!("dev-{i}"),
                &kid(i),
                DeviceState::Active,
                StoredState::default(),
            )
        })
        .collect();
    let devices = (0..n).map(|i| device(&kid(i), &SECRET)).collect();
    (gateway_with(keys), devices)
}

#[test]
fn a_storm_between_two_hand_overs_drops_no_row_and_every_refusal_gets_a_slot_at_the_drain_rate() {
    // More first registrations in one batch than the room left (two rows each): before the
    // gateway counted the room, the excess rows were dropped.
    let n: u32 = 2_100;
    let room = AuditRoom::RESERVE + 100;
    assert!(2 * n as usize > room);
    let (mut g, mut devices) = fleet(n);
    let mut lane = lane_with_room(room);
    g.handle_audit_room(lane.audit_room());
    // The registry thread was seen taking 1,000 rows in a second of work with a backlog.
    let now = Instant::now();
    let backlog = DrainRate::BACKLOG;
    g.handle_audit_drain(now - Duration::from_secs(1), 0, Duration::ZERO, backlog);
    g.handle_audit_drain(now, 1_000, Duration::from_secs(1), backlog);
    let mut infos = Vec::new();
    for (i, dev) in (0u32..).zip(devices.iter_mut()) {
        let (bytes, info) = protect(dev, &registration(1, &format!("dev-{i}")));
        g.handle_datagram(now, T0, in_victim_net(i), &bytes);
        infos.push(info);
    }
    persist_all(&mut g, now);
    let out = sent(&mut g);
    assert_eq!(out.len(), n as usize, "every registration answered");
    let (mut created, mut busy, mut hints) = (0, 0, Vec::new());
    for ((to, bytes), (dev, info)) in out.iter().zip(devices.iter_mut().zip(infos.iter_mut())) {
        assert_eq!(*to, in_victim_net(created + busy));
        let inner = verified(dev, bytes, info);
        match response_code(&inner) {
            ResponseType::Created => created += 1,
            ResponseType::ServiceUnavailable => {
                hints.push(max_age_of(&inner).expect("a refusal says when"));
                busy += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(created > 0 && busy > 0, "{created} created, {busy} refused");
    assert_eq!(created + busy, n);
    assert_eq!(u64::from(busy), g.stats().audit_busy);
    // Each refusal's slot: 2 s, then 2 rows (registration, binding) at 1,000 rows/s each, so
    // the retries come back at the pace the lane drains; a hint is its slot rounded.
    for (k, &hint) in hints.iter().enumerate() {
        let slot = f64::from(AuditRoom::RETRY_MIN_S) + 2.0 * k as f64 / 1_000.0;
        assert!(
            (f64::from(hint) - slot).abs() <= 1.0,
            "refusal {k}: {hint} s for its slot at {slot} s"
        );
    }
    let last = f64::from(AuditRoom::RETRY_MIN_S) + 2.0 * f64::from(busy) / 1_000.0;
    assert!(
        f64::from(*hints.iter().max().unwrap()) >= last - 1.0,
        "slots spread over {last} s: {hints:?}"
    );
    assert_eq!(hand_over(&mut g, &mut lane), 0, "no audit row dropped");
    assert_eq!(lane.dropped(), 0);
    let trail = drain(&mut lane);
    let registered = (0..n)
        .filter(|i| rows_of(&trail, AuditKind::Registration, &format!("dev-{i}")) == 1)
        .count();
    assert_eq!(
        registered, created as usize,
        "each accepted registration in the trail"
    );
}

#[test]
fn in_lab_mode_a_plain_registration_waits_for_the_lane_and_its_retransmission_is_not_refused() {
    let ingress = Ingress::new(IngressConfig::new(Topics::new("v6iot", "s").unwrap()), T0);
    let config = GatewayConfig {
        require_oscore: false,
        ..GatewayConfig::default()
    };
    let mut g = Gateway::new(ingress, config);
    let plain = |p: &Packet| p.to_bytes().unwrap();
    let mut lane = lane_with_room(AuditRoom::RESERVE);
    g.handle_audit_room(lane.audit_room());
    g.handle_datagram(
        Instant::now(),
        T0,
        peer(),
        &plain(&registration(1, "lab-1")),
    );
    let out = sent(&mut g);
    assert_eq!(out.len(), 1);
    let refused = Packet::from_bytes(&out[0].1).unwrap();
    assert_eq!(response_code(&refused), ResponseType::ServiceUnavailable);
    assert!(retry_hint_is_short(max_age_of(&refused)));
    assert!(g.ingress().directory().get("lab-1").is_none());
    assert_eq!(hand_over(&mut g, &mut lane), 0, "no audit row dropped");

    drain(&mut lane);
    g.handle_audit_room(lane.audit_room());
    let accepted = plain(&registration(2, "lab-1"));
    g.handle_datagram(Instant::now(), T0, peer(), &accepted);
    assert_eq!(code_of(&sent(&mut g)[0].1), ResponseType::Created);
    assert_eq!(hand_over(&mut g, &mut lane), 0);
    assert_eq!(
        rows_of(&drain(&mut lane), AuditKind::Registration, "lab-1"),
        1
    );
    // With the lane full again its retransmission still gets its 2.01 (from the ingress's
    // memory), not a 5.03, and writes nothing.
    g.handle_audit_room(0);
    g.handle_datagram(Instant::now(), T0, peer(), &accepted);
    assert_eq!(code_of(&sent(&mut g)[0].1), ResponseType::Created);
    assert_eq!(hand_over(&mut g, &mut lane), 0);
    assert_eq!(lane.audit_len(), 0);
}

#[test]
fn with_the_lane_full_a_stale_request_from_elsewhere_is_still_dropped_not_answered() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);
    g.handle_audit_room(0);
    // Partial IV n is held back; n + 1 arrives from home; n from elsewhere binds nothing, so
    // the lane's room does not concern it: dropped as stale, as with room.
    let (withheld, _) = protect(&mut dev, &telemetry(20));
    let (code, _) = answered(&mut g, &mut dev, peer(), &telemetry(21));
    assert_eq!(code, ResponseType::Changed);
    let elsewhere: SocketAddr = "[2001:db8::b]:4000".parse().unwrap();
    g.handle_datagram(now, T0, elsewhere, &withheld);
    persist_all(&mut g, now);
    assert!(sent(&mut g).is_empty());
    assert_eq!(g.stats().stale_elsewhere, 1);
    assert_eq!(g.stats().audit_busy, 0);
}
