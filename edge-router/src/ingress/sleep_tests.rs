//! A queue-mode device's status at the ingress, on virtual time: `registered` on registration,
//! `sleeping` once its listening window closes (with the next expected wake-up once it is
//! known), `registered` again when it wakes, `gone` when its registration ends (and nothing
//! after); a command for it waits for the wake-up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use v6iot_cloud_bridge::topics::Topics;

use super::downlink::DownlinkCommand;
use super::{Append, Ingress, IngressConfig};

const T0: u64 = 1_700_000_000_000;

fn peer() -> SocketAddr {
    "[2001:db8:100::7]:5683".parse().unwrap()
}

fn ingress() -> Ingress {
    let mut config = IngressConfig::new(Topics::new("v6iot", "s").unwrap());
    config.listen_window = Duration::from_secs(10);
    config.min_lifetime = Duration::from_secs(1);
    Ingress::new(config, T0)
}

fn request(id: u16, path: &str, query: &[&str]) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = id;
    p.set_token(id.to_be_bytes().to_vec());
    for seg in path.split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.to_bytes().unwrap()
}

/// The status messages queued for the outbox, as (state, next_wake).
fn statuses(i: &mut Ingress) -> Vec<(String, serde_json::Value)> {
    std::iter::from_fn(|| i.poll_append())
        .filter(|Append { message, .. }| message.topic.ends_with("/status"))
        .map(|Append { message, .. }| {
            let v: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let state = v["state"].as_str().unwrap().to_owned();
            (state, v.get("next_wake").cloned().unwrap_or_default())
        })
        .collect()
}

/// Lets time run to `until`, handling every deadline on the way.
fn run_until(i: &mut Ingress, start: Instant, until: Instant) {
    let mut rounds = 0;
    while let Some(t) = i.poll_timeout().filter(|t| *t <= until) {
        rounds += 1;
        assert!(rounds < 1000, "the deadline {t:?} is never handled");
        i.handle_timeout(t, T0 + (t - start).as_millis() as u64);
    }
}

/// An update (`POST /rd/1`): an uplink.
fn uplink(i: &mut Ingress, start: Instant, at: Instant, id: u16) {
    let ms = T0 + (at - start).as_millis() as u64;
    i.handle_datagram(at, ms, peer(), &request(id, "rd/1", &[]));
    while i.poll_transmit().is_some() {}
}

#[test]
fn registered_sleeping_with_its_next_wake_up_then_registered_again() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut i = ingress();
    i.handle_datagram(
        at(0),
        T0,
        peer(),
        &request(1, "rd", &["ep=m", "b=UQ", "lt=3600"]),
    );
    assert_eq!(statuses(&mut i)[0].0, "registered");
    // The window (10 s) closes: sleeping, the next wake-up not yet known.
    run_until(&mut i, start, at(11));
    assert_eq!(
        statuses(&mut i),
        [("sleeping".into(), serde_json::Value::Null)]
    );
    assert!(i.is_asleep("m"));
    // It wakes at 300 s (its report): registered; asleep again at 310 s, expected at 600 s.
    uplink(&mut i, start, at(300), 2);
    assert_eq!(statuses(&mut i)[0].0, "registered");
    assert!(!i.is_asleep("m"));
    run_until(&mut i, start, at(311));
    let s = statuses(&mut i);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, "sleeping");
    assert_eq!(s[0].1.as_f64(), Some((T0 + 600_000) as f64 / 1000.0));
    // Uplinks inside the window publish nothing more.
    uplink(&mut i, start, at(600), 3);
    uplink(&mut i, start, at(601), 4);
    assert_eq!(statuses(&mut i).len(), 1);
}

/// A platform command for the sleeping device waits; its wake-up (an uplink) sends it.
#[test]
fn a_command_for_a_sleeping_device_goes_out_when_it_wakes() {
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut i = ingress();
    i.handle_datagram(at(0), T0, peer(), &request(1, "rd", &["ep=m", "b=UQ"]));
    while i.poll_transmit().is_some() {}
    run_until(&mut i, start, at(11));
    let cmd = DownlinkCommand {
        device: "m".into(),
        req: "r1".into(),
        method: "PUT".into(),
        path: "/actuators/valve".into(),
        payload: b"on".to_vec(),
        content_format: Some(0),
        expires_unix_ms: T0 + 3_600_000,
        confirmable: true,
        observe: false,
        accept: None,
    };
    i.handle_command(at(20), T0 + 20_000, cmd);
    while let Some(batch) = i.poll_journal() {
        let rewritten = batch.rewrite.is_some();
        i.handle_journal_written(
            at(20),
            T0 + 20_000,
            batch.id,
            super::downlink::JournalWritten::Durable { rewritten },
        );
    }
    assert!(i.poll_transmit().is_none(), "not while it sleeps");
    // Its report at 300 s wakes it (the report's own ACK goes too).
    i.handle_datagram(at(300), T0 + 300_000, peer(), &request(2, "rd/1", &[]));
    let commands: Vec<_> = std::iter::from_fn(|| i.poll_transmit())
        .filter(|(_, bytes)| bytes.get(1) == Some(&0x03)) // PUT
        .collect();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].0.remote, peer());
}

/// A queue-mode device whose registration ends inside its listening window — deregistered,
/// removed by the registry, or expired — is `gone`, no longer counted, and never published
/// `sleeping` afterwards.
#[test]
fn a_registration_that_ends_leaves_the_sleep_bookkeeping() {
    for end in ["deregistered", "revoked", "expired"] {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut i = ingress();
        let register = request(1, "rd", &["ep=m", "b=UQ", "lt=5"]);
        i.handle_datagram(at(0), T0, peer(), &register);
        assert_eq!(
            i.queue_mode_states(),
            (1, 0),
            "{end}: awake once registered"
        );
        match end {
            "deregistered" => {
                let mut delete = request(2, "rd/1", &[]);
                delete[1] = 0x04; // DELETE
                i.handle_datagram(at(2), T0 + 2_000, peer(), &delete);
            }
            "revoked" => i.remove_device(T0 + 2_000, "m", "revoked"),
            // Its lifetime (5 s) ends inside its window (10 s).
            _ => {}
        }
        run_until(&mut i, start, at(60));
        let states: Vec<_> = statuses(&mut i).into_iter().map(|(s, _)| s).collect();
        assert_eq!(states, ["registered", "gone"], "{end}");
        assert_eq!(i.queue_mode_states(), (0, 0), "{end}: no longer counted");
        assert!(i.directory().is_empty(), "{end}");
    }
}
