//! Who is where (issue 10, points 0–2), on virtual time: answers and requests leave from the
//! edge's address the device reached; commands and their responses belong to a device, never
//! to an address; a device moves only on fresh evidence, confirmed by an Echo round trip.

use std::net::IpAddr;

use super::*;

const SECRET_2: [u8; 16] = [9; 16];

/// `id` with its own `secret`, allowed in 2001:db8::/32.
fn keys_with(id: &str, kid: &[u8], secret: &[u8]) -> DeviceKeys {
    DeviceKeys {
        master_secret: MasterSecret::new(secret.to_vec()),
        prefixes: vec!["2001:db8::/32".parse::<Ipv6Prefix>().unwrap()],
        ..keys(id, kid, DeviceState::Active, StoredState::default())
    }
}

/// dev-1 (kid 1, `SECRET`) and dev-2 (kid 2, `SECRET_2`).
fn two_devices() -> Gateway {
    gateway_with(vec![
        keys_with("dev-1", &[1], &SECRET),
        keys_with("dev-2", &[2], &SECRET_2),
    ])
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Takes a command from the platform; its journal batch is durable at once.
fn commanded(g: &mut Gateway, now: Instant, command: DownlinkCommand) {
    g.handle_command(now, T0, command);
    journal_durable(g, now, T0);
}

/// The requests the edge sent (to whom, and the packet).
fn requests(out: &[(Peer, Vec<u8>)]) -> Vec<(Peer, Packet)> {
    out.iter()
        .map(|(to, b)| (*to, Packet::from_bytes(b).unwrap()))
        .filter(|(_, p)| matches!(p.header.code, MessageClass::Request(_)))
        .collect()
}

/// `dev`'s protected answer (2.04, `body`) to the edge's request `request`.
fn answer_to(dev: &mut SecurityContext, request: &Packet, body: &[u8]) -> Vec<u8> {
    let (_, mut info) = oscore::unprotect_request(dev, request).unwrap();
    let mut response = changed(
        request,
        MessageType::Acknowledgement,
        request.header.message_id,
    );
    response.payload = body.to_vec();
    protect_answer(dev, &response, &mut info, false)
}

/// A response under `dev`'s own key to a request of the edge it cannot read (it builds the
/// binding from a request of its own making, with the same token and message ID): what a
/// device that is not the command's target can answer at best.
fn forged_answer(
    dev: &mut SecurityContext,
    kid: &[u8],
    secret: &[u8],
    request: &Packet,
) -> Vec<u8> {
    let mine = own_request(kid, secret, request);
    answer_to(dev, &mine, b"forged by dev-2")
}

/// A request with `request`'s token and message ID protected by the edge's side of the
/// context of (`kid`, `secret`): what that device can decrypt and answer in place of
/// `request`, which it cannot.
fn own_request(kid: &[u8], secret: &[u8], request: &Packet) -> Packet {
    let input = ContextInput {
        master_secret: secret.to_vec(),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: Vec::new(),
        recipient_id: kid.to_vec(),
    };
    let mut own_edge = SecurityContext::new(&input, ContextConfig::default()).unwrap();
    let m = own_edge.mark_to_persist().unwrap();
    own_edge.persisted(m);
    let mut plain = Packet::new();
    plain.header.set_type(MessageType::Confirmable);
    plain.header.code = MessageClass::Request(RequestType::Put);
    plain.header.message_id = request.header.message_id;
    plain.set_token(request.get_token().to_vec());
    let (mine, _) = oscore::protect_request(&mut own_edge, &plain).unwrap();
    mine
}

fn results(appended: &[crate::ingress::Append]) -> Vec<(String, serde_json::Value)> {
    appended
        .iter()
        .filter(|a| a.message.topic.contains("/cmd/"))
        .map(|a| {
            let json = serde_json::from_slice(&a.message.payload).unwrap();
            (a.message.topic.clone(), json)
        })
        .collect()
}

#[test]
fn answers_commands_and_retransmissions_leave_from_the_address_the_device_reached() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = device(&[1], &SECRET);
    let l1: IpAddr = "2001:db8:ffff::1".parse().unwrap();
    let l2: IpAddr = "fd00::1".parse().unwrap();
    let (bytes, _) = protect(&mut dev, &registration(1, "dev-1"));
    g.handle_datagram(now, T0, Peer::via(peer(), l1), &bytes);
    persist_all(&mut g, now);
    let out = sent_via(&mut g);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Peer::via(peer(), l1), "the answer leaves from l1");

    commanded(&mut g, now, valve_command("dev-1", "r1"));
    let cmd = requests(&sent_via(&mut g));
    assert_eq!(cmd.len(), 1);
    assert_eq!(
        cmd[0].0,
        Peer::via(peer(), l1),
        "the command leaves from l1"
    );
    g.handle_timeout(now + Duration::from_secs(5), T0 + 5000);
    let again = requests(&sent_via(&mut g));
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].0,
        Peer::via(peer(), l1),
        "so does its retransmission"
    );
    assert_eq!(again[0].1, cmd[0].1, "the same protected bytes");

    // The device reaches another of the edge's addresses, from the same address and port.
    let (bytes, _) = protect(&mut dev, &telemetry(2));
    g.handle_datagram(now, T0, Peer::via(peer(), l2), &bytes);
    for t in appends(&mut g).into_iter().filter_map(|a| a.ticket) {
        g.handle_appended(now, t, AppendResult::Stored);
    }
    persist_all(&mut g, now);
    let out = sent_via(&mut g);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Peer::via(peer(), l2), "the answer leaves from l2");
    g.handle_timeout(now + Duration::from_secs(12), T0 + 12_000);
    let again = requests(&sent_via(&mut g));
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].0,
        Peer::via(peer(), l2),
        "the retransmission follows the device to l2"
    );
    assert_eq!(
        g.stats().address_changes,
        0,
        "same address and port: no move"
    );
}

#[test]
fn a_command_goes_under_its_devices_own_context_whoever_else_verifies_at_its_address() {
    let now = Instant::now();
    let p = peer();
    let mut g = two_devices();
    let mut dev1 = registered(&mut g, now);
    let _ = audits(&mut g);

    // dev-2 verifies at dev-1's address, with the very message ID dev-1 used: not a
    // duplicate of dev-1's message, and not served: it is asked to confirm the address.
    let mut dev2 = device(&[2], &SECRET_2);
    let echo = challenged(&mut g, &mut dev2, (p, now), &registration(1, "dev-2"));
    assert!(!echo.is_empty());
    assert!(g.ingress().directory().get("dev-2").is_none());
    assert_eq!(g.stats().address_conflicts, 1);
    assert_eq!(g.stats().duplicates, 0);
    let rows = audits(&mut g);
    let conflict = rows
        .iter()
        .find(|r| r.kind == AuditKind::AddressConflict)
        .expect("the conflict is audited");
    assert_eq!(conflict.device.as_deref(), Some("dev-2"));
    assert!(conflict.detail.contains("dev-1"), "{conflict:?}");
    assert_eq!(conflict.address, Some(audit_address(p)));

    // A command for dev-1 goes to dev-1, under dev-1's context: dev-2 cannot read it.
    commanded(&mut g, now, valve_command("dev-1", "r1"));
    let cmd = requests(&sent_via(&mut g));
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0].0.remote, p);
    let request = &cmd[0].1;
    assert!(oscore::unprotect_request(&mut dev2, request).is_err());
    // dev-2's answer under its own key does not become dev-1's result.
    let forged = forged_answer(&mut dev2, &[2], &SECRET_2, request);
    g.handle_datagram(now, T0, p, &forged);
    assert!(
        results(&appends(&mut g)).is_empty(),
        "dev-2's answer is no result"
    );
    assert_eq!(g.stats().bad_responses, 1);
    assert_eq!(g.stats().responses_verified, 0);
    // dev-1's answer is.
    let answer = answer_to(&mut dev1, request, b"done");
    g.handle_datagram(now, T0, p, &answer);
    let r = results(&appends(&mut g));
    assert_eq!(r.len(), 1);
    assert!(r[0].0.ends_with("/dev-1/cmd/r1/result"), "{}", r[0].0);
    assert_eq!(r[0].1["payload"], "done");
    assert_eq!(g.stats().responses_verified, 1);
}

#[test]
fn a_notification_belongs_to_the_observed_device_whoever_else_verifies_at_its_address() {
    let now = Instant::now();
    let p = peer();
    let mut g = two_devices();
    let (mut dev1, observe, mut info1) = observed(&mut g, now);
    let telemetry_of = |a: &[crate::ingress::Append]| -> Vec<String> {
        a.iter()
            .map(|a| a.message.topic.clone())
            .filter(|t| t.ends_with("/telemetry"))
            .collect()
    };
    let first = notification(
        &observe,
        observe.header.message_id,
        MessageType::Acknowledgement,
        1,
    );
    let bytes = protect_answer(&mut dev1, &first, &mut info1, false);
    g.handle_datagram(now, T0, p, &bytes);
    assert_eq!(telemetry_of(&appends(&mut g)).len(), 1);
    assert_eq!(g.ingress().observation_count(), 1);

    // dev-2 verifies at dev-1's address (challenged), then sends a notification with the
    // observation's token under its own key: refused, stored nowhere.
    let mut dev2 = device(&[2], &SECRET_2);
    let _ = challenged(&mut g, &mut dev2, (p, now), &registration(2, "dev-2"));
    let mine = own_request(&[2], &SECRET_2, &observe);
    let (_, mut info2) = oscore::unprotect_request(&mut dev2, &mine).unwrap();
    let forged = notification(&observe, 0x7001, MessageType::NonConfirmable, 2);
    let forged = protect_answer(&mut dev2, &forged, &mut info2, true);
    g.handle_datagram(now, T0, p, &forged);
    assert!(telemetry_of(&appends(&mut g)).is_empty());
    assert_eq!(g.stats().bad_responses, 1);
    assert_eq!(g.ingress().observation_count(), 1, "the observation stays");

    // dev-1's next notification is dev-1's telemetry.
    let next = notification(&observe, 0x7002, MessageType::NonConfirmable, 3);
    let next = protect_answer(&mut dev1, &next, &mut info1, true);
    g.handle_datagram(now, T0, p, &next);
    let stored = telemetry_of(&appends(&mut g));
    assert_eq!(stored.len(), 1);
    assert!(stored[0].contains("/dev-1/"), "{stored:?}");
    assert_eq!(g.stats().responses_verified, 2);
}

#[test]
fn a_device_confirmed_at_another_devices_address_takes_it_and_the_other_is_unreachable() {
    let now = Instant::now();
    let p = peer();
    let mut g = two_devices();
    let mut dev1 = registered(&mut g, now);
    let mut dev2 = device(&[2], &SECRET_2);
    let echo = challenged(&mut g, &mut dev2, (p, now), &registration(2, "dev-2"));
    let _ = audits(&mut g);
    // dev-2 answers the challenge from the address: it is there, dev-1 is not.
    assert_eq!(
        call(
            &mut g,
            &mut dev2,
            p,
            &with_echo(registration(3, "dev-2"), &echo)
        ),
        ResponseType::Created
    );
    let rows = audits(&mut g);
    let bound = rows
        .iter()
        .find(|r| r.kind == AuditKind::AddressBound)
        .expect("dev-2 bound");
    assert_eq!(bound.device.as_deref(), Some("dev-2"));
    assert!(bound.detail.contains("dev-1"), "{bound:?}");
    let lost = rows
        .iter()
        .find(|r| r.kind == AuditKind::AddressConflict)
        .expect("dev-1's loss is audited");
    assert_eq!(lost.device.as_deref(), Some("dev-1"));
    assert!(lost.detail.contains("dev-2"), "{lost:?}");
    let events: Vec<_> = std::iter::from_fn(|| g.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, GatewayEvent::Displaced { device, by, .. }
            if device == "dev-1" && by == "dev-2")),
        "{events:?}"
    );

    // Nothing goes to dev-1 now; dev-2's commands go to the address, under dev-2's context.
    commanded(&mut g, now, valve_command("dev-1", "r1"));
    assert!(requests(&sent_via(&mut g)).is_empty());
    assert_eq!(g.stats().unreachable, 1);
    commanded(&mut g, now, valve_command("dev-2", "r2"));
    let cmd = requests(&sent_via(&mut g));
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0].0.remote, p);
    assert!(oscore::unprotect_request(&mut dev2, &cmd[0].1).is_ok());

    // dev-1, verified again at an address of its own, is reachable there at once; its
    // command's retransmission goes there.
    let q = at("[2001:db8:0:2::7]:4000");
    assert_eq!(report(&mut g, &mut dev1, q, now, 10), ResponseType::Changed);
    g.handle_timeout(now + Duration::from_secs(5), T0 + 5000);
    let retransmitted = requests(&sent_via(&mut g));
    let to_dev1: Vec<_> = retransmitted
        .iter()
        .filter(|(to, _)| to.remote == q)
        .collect();
    assert_eq!(to_dev1.len(), 1, "{retransmitted:?}");
    assert!(oscore::unprotect_request(&mut dev1, &to_dev1[0].1).is_ok());
}

#[test]
fn a_withheld_older_request_replayed_from_elsewhere_moves_nothing() {
    let now = Instant::now();
    let a = peer();
    let b = at("[2001:db8:0:b::7]:4000");
    let mut g = two_devices();
    let mut dev = registered(&mut g, now);
    let _ = audits(&mut g);
    // Partial IV n is held back; n + 1 arrives from A.
    let (withheld, _) = protect(&mut dev, &telemetry(20));
    assert_eq!(report(&mut g, &mut dev, a, now, 21), ResponseType::Changed);
    // n from B: verified (never seen), but older than the newest: no move, no answer, nothing
    // stored.
    g.handle_datagram(now, T0, b, &withheld);
    persist_all(&mut g, now);
    assert!(sent(&mut g).is_empty());
    assert!(appends(&mut g).is_empty());
    assert_eq!(g.stats().stale_elsewhere, 1);
    assert_eq!(g.stats().authenticated, 3);
    assert_eq!(g.ingress().directory().get("dev-1").unwrap().address, a);
    assert!(std::iter::from_fn(|| g.poll_audit()).all(|r| !r.kind.is_binding()));
    let events: Vec<_> = std::iter::from_fn(|| g.poll_security_event()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].cause, SecurityCause::StaleElsewhere);
    assert_eq!(events[0].device.as_deref(), Some("dev-1"));
    // Its retransmission is a duplicate, silently dropped.
    g.handle_datagram(now, T0, b, &withheld);
    assert!(sent(&mut g).is_empty());
    assert_eq!(g.stats().duplicates, 1);
    // Commands still go to A.
    commanded(&mut g, now, valve_command("dev-1", "r1"));
    let cmd = requests(&sent_via(&mut g));
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0].0.remote, a);
    let answer = answer_to(&mut dev, &cmd[0].1, b"");
    g.handle_datagram(now, T0, a, &answer);
    let _ = appends(&mut g);

    // A real move: fresh from B, challenged, repeated with the Echo value from B.
    let echo = challenged(&mut g, &mut dev, (b, now), &telemetry(22));
    assert!(
        appends(&mut g).is_empty(),
        "not stored before the confirmation"
    );
    assert_eq!(g.ingress().directory().get("dev-1").unwrap().address, a);
    let answer = exchange(&mut g, &mut dev, (b, now), &with_echo(telemetry(23), &echo));
    assert_eq!(response_code(&answer), ResponseType::Changed);
    assert_eq!(g.ingress().directory().get("dev-1").unwrap().address, b);
    assert_eq!(g.stats().address_changes, 1);
    assert_eq!(g.stats().echo_challenges, 1);
    let rows = audits(&mut g);
    let moved = rows
        .iter()
        .find(|r| r.kind == AuditKind::AddressChanged)
        .expect("the move is audited");
    assert_eq!(moved.address, Some(audit_address(b)));
    commanded(&mut g, now, valve_command("dev-1", "r2"));
    let cmd = requests(&sent_via(&mut g));
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0].0.remote, b, "commands follow the confirmed move");
}
