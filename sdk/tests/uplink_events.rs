//! A device's uplink on virtual time against a scripted edge: every answer to a report reaches
//! the application as a [`ReportEvent`] (acknowledged, refused with its code, 5.03, 4.03,
//! timeout, dropped by a full queue), in the order the reports were made; and a device that went
//! quiet after its reports holds no buffers for them (measured with a counting allocator).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

#[global_allocator]
static ALLOC: common::counting_alloc::Counting = common::counting_alloc::Counting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use common::Meter;
use common::counting_alloc::heap_freed_by;
use v6iot_sdk::coap::{Config, Device, ResourceTree};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::{ReportEvent, UplinkConfig};

fn edge() -> SocketAddr {
    "[2001:db8::e]:5683".parse().unwrap()
}

/// A device with an uplink of at most `queue` reports, registered at t = 0.
fn registered(queue: usize) -> Device<Meter> {
    let tree: Arc<ResourceTree<Meter>> = Arc::new(ResourceTree::new());
    let config = UplinkConfig {
        max_queued_reports: queue,
        ..UplinkConfig::new(edge(), "d1")
    };
    let mut d = Device::new(Config::default(), 3, tree, Meter::default())
        .with_uplink(Instant::ZERO, config);
    let reg = take(&mut d);
    let mut created = answer(&reg, ResponseType::Created);
    created.add_option(CoapOption::LocationPath, b"rd".to_vec());
    created.add_option(CoapOption::LocationPath, b"7".to_vec());
    d.handle_datagram(Instant::ZERO, edge(), &created.to_bytes().unwrap());
    assert!(d.registration().unwrap().is_registered());
    d
}

/// The one datagram the device has to send.
fn take(d: &mut Device<Meter>) -> Packet {
    let t = d.poll_transmit().expect("a datagram");
    assert!(d.poll_transmit().is_none(), "one at a time");
    Packet::from_bytes(&t.contents).unwrap()
}

/// A piggybacked answer to `request` with `code`.
fn answer(request: &Packet, code: ResponseType) -> Packet {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = request.header.message_id;
    r.header.code = MessageClass::Response(code);
    r.set_token(request.get_token().to_vec());
    r
}

/// Makes a report at `now` and returns the request it sent (if one went out).
fn report(d: &mut Device<Meter>, now: Instant) -> Option<Packet> {
    d.app_mut().due = Some(now);
    d.handle_timeout(now);
    d.poll_transmit()
        .map(|t| Packet::from_bytes(&t.contents).unwrap())
}

fn reply(d: &mut Device<Meter>, now: Instant, request: &Packet, code: ResponseType) {
    let mut a = answer(request, code);
    if code == ResponseType::ServiceUnavailable {
        a.add_option(CoapOption::MaxAge, vec![1]);
    }
    d.handle_datagram(now, edge(), &a.to_bytes().unwrap());
}

#[test]
fn every_answer_to_a_report_reaches_the_application_in_order() {
    let mut d = registered(8);
    let t = |s: u64| Instant::ZERO + Duration::from_secs(s);
    // r1: acknowledged.
    let r1 = report(&mut d, t(1)).unwrap();
    assert_eq!(r1.payload, b"r1");
    reply(&mut d, t(1), &r1, ResponseType::Changed);
    // r2: 5.03 (kept; sent again after the Max-Age of 1 s), then refused with 4.00.
    let r2 = report(&mut d, t(2)).unwrap();
    reply(&mut d, t(2), &r2, ResponseType::ServiceUnavailable);
    assert!(d.poll_transmit().is_none(), "held for the Max-Age");
    d.handle_timeout(t(3));
    let r2again = take(&mut d);
    assert_eq!(r2again.payload, b"r2", "the same report again");
    reply(&mut d, t(3), &r2again, ResponseType::BadRequest);
    // r3: 4.03 (the edge forgot the device): kept, and the device registers again.
    let r3 = report(&mut d, t(4)).unwrap();
    reply(&mut d, t(4), &r3, ResponseType::Forbidden);
    let again = take(&mut d);
    assert_eq!(
        again
            .get_option(CoapOption::UriPath)
            .unwrap()
            .front()
            .unwrap(),
        b"rd"
    );
    assert_eq!(d.reporter().unwrap().queued(), 1);
    assert_eq!(
        d.app().events,
        [
            ReportEvent::Acked,
            ReportEvent::Busy,
            ReportEvent::Refused(ResponseType::BadRequest),
            ReportEvent::Forbidden,
        ]
    );
    assert!(
        ReportEvent::Acked.is_final() && ReportEvent::Refused(ResponseType::BadRequest).is_final()
    );
    assert!(!ReportEvent::Busy.is_final() && !ReportEvent::Forbidden.is_final());
}

#[test]
fn a_silent_edge_gives_a_timeout_and_a_full_queue_drops_the_newest() {
    let mut d = registered(2);
    let t = |s: u64| Instant::ZERO + Duration::from_secs(s);
    let r1 = report(&mut d, t(1)).unwrap();
    assert_eq!(r1.payload, b"r1");
    assert!(d.reporter().unwrap().in_flight());
    // r2 queues behind r1; r3 finds the queue full (2) and is dropped.
    assert!(report(&mut d, t(2)).is_none());
    assert!(report(&mut d, t(3)).is_none());
    assert_eq!(d.app().events, [ReportEvent::Dropped]);
    assert_eq!(d.reporter().unwrap().queued(), 2);
    // No answer to r1 through all retransmissions: a timeout, r1 kept.
    while d.app().events.len() < 2 {
        let now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
        while d.poll_transmit().is_some() {}
        assert!(
            now < t(120),
            "the exchange times out within MAX_TRANSMIT_WAIT"
        );
    }
    assert_eq!(
        d.app().events,
        [ReportEvent::Dropped, ReportEvent::TimedOut]
    );
    assert!(!d.reporter().unwrap().in_flight());
    assert_eq!(d.reporter().unwrap().queued(), 2);
    assert_eq!(d.reporter().unwrap().stats().refused, 1);
}

/// After its reports are acknowledged a device gives the buffers they needed back: the heap it
/// holds then is what it held registered and idle before it reported at all, and that is its
/// registration's state alone.
#[test]
fn a_device_that_went_quiet_holds_nothing_for_its_reports() {
    let t = |s: u64| Instant::ZERO + Duration::from_secs(s);
    let quiet = registered(8);
    let before = heap_freed_by(|| drop(quiet));
    let mut d = registered(8);
    for s in 1..=5 {
        let r = report(&mut d, t(s)).unwrap();
        reply(&mut d, t(s), &r, ResponseType::Changed);
    }
    assert_eq!(d.app().events.len(), 5);
    d.app_mut().events = Vec::new();
    let after = heap_freed_by(|| drop(d));
    assert_eq!(
        after, before,
        "five reports later the device holds what it held before reporting"
    );
    // Registered and idle, a device's heap is its uplink (registration and reporter, boxed),
    // its endpoint name and registration location: 326 bytes here. Buffers kept at the size of
    // the busiest moment (exchanges, messages in flight, outcomes, the report queue) would add
    // over a kilobyte.
    assert!(before > 0, "the registration's state is on the heap");
    assert!(
        before <= 512,
        "an idle registered device holds {before} bytes of heap"
    );
}

/// A report made where it cannot go is never thrown away unheard: with no uplink it is
/// refused (`Dropped`); held for an uplink to come (`hold_reports`) it waits, bounded, and is
/// sent once the uplink starts and the device is registered.
#[test]
fn reports_before_the_uplink_are_held_or_refused_never_lost_silently() {
    let t = |s: u64| Instant::ZERO + Duration::from_secs(s);
    let tree: Arc<ResourceTree<Meter>> = Arc::new(ResourceTree::new());
    let mut bare = Device::new(Config::default(), 3, tree.clone(), Meter::default());
    bare.app_mut().due = Some(t(1));
    bare.handle_timeout(t(1));
    assert_eq!(bare.app().events, [ReportEvent::Dropped]);

    let mut d = Device::new(Config::default(), 3, tree, Meter::default());
    d.hold_reports(1);
    for s in [1, 2] {
        d.app_mut().due = Some(t(s));
        d.handle_timeout(t(s));
    }
    assert_eq!(d.app().made, 2);
    assert_eq!(d.app().events, [ReportEvent::Dropped], "room for one only");
    assert!(d.poll_transmit().is_none(), "nowhere to send yet");
    assert!(d.registration().is_none());
    d.start_uplink(t(3), UplinkConfig::new(edge(), "d1"));
    let reg = take(&mut d);
    let mut created = answer(&reg, ResponseType::Created);
    created.add_option(CoapOption::LocationPath, b"rd".to_vec());
    created.add_option(CoapOption::LocationPath, b"7".to_vec());
    d.handle_datagram(t(3), edge(), &created.to_bytes().unwrap());
    let report = take(&mut d);
    assert_eq!(report.payload, b"r1");
    d.handle_datagram(
        t(3),
        edge(),
        &answer(&report, ResponseType::Changed).to_bytes().unwrap(),
    );
    assert_eq!(
        d.app().events,
        [ReportEvent::Dropped, ReportEvent::Acked],
        "the held report acknowledged"
    );
}
