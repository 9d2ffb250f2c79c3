//! The airtime model on virtual time: timing of one frame, CSMA/CA, collisions (and the hidden
//! terminal), ACKs and retries, channel access failures, the queue bound, determinism.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::time::Instant;

use super::core::{
    Delivery, Medium, MediumConfig, OnAir, ParticipantConfig, ParticipantId, Reception,
};
use super::phy::{self, AirtimeConfig};
use super::stats::MediumStats;
use super::tests::{PAN, deliveries, device, ext, frame};
use super::topology::{LinkModel, Topology};

fn medium(seed: u64, topology: Topology, air: AirtimeConfig) -> Medium {
    Medium::new(MediumConfig {
        seed,
        topology,
        capture: true,
        airtime: Some(air),
        ..MediumConfig::default()
    })
}

/// No random back-off before the first CCA: what happens next is fixed.
fn no_backoff() -> AirtimeConfig {
    AirtimeConfig {
        min_be: 0,
        ..AirtimeConfig::default()
    }
}

fn offer(m: &mut Medium, now: Instant, from: ParticipantId, bytes: &[u8]) {
    m.handle_frame(now, from, MacFrame::new(bytes).unwrap())
        .unwrap();
}

/// Participant `from`, device `n` (extended address `ext(n)`), offers a broadcast frame with a
/// `len`-byte payload at `now`.
fn broadcast(m: &mut Medium, now: Instant, from: ParticipantId, n: u8, len: usize) {
    offer(
        m,
        now,
        from,
        &frame(ext(n), LinkAddr::BROADCAST, false, len),
    );
}

/// Runs the medium to `until`, collecting deliveries and what went on air.
fn run_until(m: &mut Medium, until: Instant) -> (Vec<Delivery>, Vec<OnAir>) {
    let mut got = Vec::new();
    while let Some(t) = m.poll_timeout().filter(|&t| t <= until) {
        m.handle_timeout(t);
        got.extend(deliveries(m));
    }
    m.handle_timeout(until);
    got.extend(deliveries(m));
    (got, std::iter::from_fn(|| m.poll_on_air()).collect())
}

fn to(got: &[Delivery], who: ParticipantId) -> usize {
    got.iter().filter(|d| d.to == who).count()
}

const T0: Instant = Instant::from_millis(1);

#[test]
fn one_frame_backs_off_senses_turns_around_and_takes_32_us_a_byte() {
    let mut m = medium(1, Topology::default(), no_backoff());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let f = frame(ext(1), ext(2), true, 50);
    offer(&mut m, T0, a, &f);
    assert!(deliveries(&mut m).is_empty(), "nothing arrives at once");
    let (got, air) = run_until(&mut m, T0 + Duration::from_millis(20));
    // CCA 128 µs, turnaround 192 µs, then the frame: (6 + len + 2) × 32 µs.
    let start = T0 + phy::CCA_TIME + phy::TURNAROUND;
    let end = start + phy::airtime(f.len() + 2);
    assert_eq!(air[0].at, start);
    assert_eq!(air[0].from, a);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].to, got[0].at), (b, end));
    // B acknowledges after the turnaround; the ACK is on air (and in the capture).
    assert_eq!(air.len(), 2);
    assert_eq!(air[1].at, end + phy::TURNAROUND);
    assert_eq!(air[1].from, b);
    assert_eq!(air[1].frame.as_bytes(), [0x02, 0x00, 7]);
    let s = m.stats();
    assert_eq!(
        (
            s.offered,
            s.transmissions,
            s.acks,
            s.acked,
            s.backoffs,
            s.cca_busy,
            s.retries
        ),
        (1, 1, 1, 1, 1, 0, 0)
    );
    assert_eq!(s.air_bytes, (6 + f.len() + 2 + 6 + 5) as u64);
    let load = m.channel_loads()[0];
    assert_eq!(
        load.busy_us,
        (phy::airtime(f.len() + 2) + phy::airtime(5)).as_micros() as u64
    );
    assert_eq!(load.peak_received_bytes, (f.len() + 2) as u64);
}

#[test]
fn csma_defers_to_a_transmission_it_hears() {
    // A sends a long frame; C is offered one while A is on air: it senses A, backs off and goes
    // after it. B gets both; nothing collides.
    let mut m = medium(3, Topology::default(), no_backoff());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let c = device(&mut m, 3, 26);
    broadcast(&mut m, T0, a, 1, 100);
    broadcast(&mut m, T0 + Duration::from_millis(1), c, 3, 100);
    let (got, air) = run_until(&mut m, T0 + Duration::from_millis(50));
    assert_eq!(to(&got, b), 2);
    assert_eq!(air.len(), 2);
    assert!(
        air[1].at >= air[0].at + phy::airtime(111),
        "C waited for A's end"
    );
    let s = m.stats();
    assert_eq!(s.collided, 0);
    assert!(s.cca_busy >= 1, "{s:?}");
}

#[test]
fn two_transmitters_overlapping_collide_at_a_receiver_in_range_of_both() {
    // With no back-off both sense an idle channel at the same time and send together.
    let mut m = medium(1, Topology::default(), no_backoff());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let c = device(&mut m, 3, 26);
    broadcast(&mut m, T0, a, 1, 60);
    broadcast(&mut m, T0, c, 3, 60);
    let (got, air) = run_until(&mut m, T0 + Duration::from_millis(20));
    assert_eq!(air.len(), 2);
    assert_eq!(air[0].at, air[1].at, "on air together");
    assert_eq!(to(&got, b), 0, "B hears both: neither survives");
    // A and C are sending: each misses the other's frame (half duplex).
    assert!(got.is_empty());
    let s = m.stats();
    assert_eq!(
        (s.transmissions, s.collided, s.dropped.receiver_busy),
        (2, 2, 2)
    );
    // The channel was busy once, not twice: the union of the two.
    let psdu = frame(ext(1), LinkAddr::BROADCAST, false, 60).len() + 2;
    assert_eq!(
        m.channel_loads()[0].busy_us,
        phy::airtime(psdu).as_micros() as u64
    );
}

/// A sends a frame (1.4 ms on air), C is offered one 0.7 ms later; B hears both, D hears A only.
/// `hidden`: A and C do not hear each other.
fn hidden_terminal(hidden: bool) -> (Vec<Delivery>, MediumStats, [ParticipantId; 4]) {
    let mut topology = Topology::explicit();
    topology.set_symmetric(ext(1), ext(2), LinkModel::PERFECT);
    topology.set_symmetric(ext(3), ext(2), LinkModel::PERFECT);
    topology.set_symmetric(ext(1), ext(4), LinkModel::PERFECT);
    if !hidden {
        topology.set_symmetric(ext(1), ext(3), LinkModel::PERFECT);
    }
    let mut m = medium(5, topology, no_backoff());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let c = device(&mut m, 3, 26);
    let d = device(&mut m, 4, 26);
    broadcast(&mut m, T0, a, 1, 20);
    broadcast(&mut m, T0 + Duration::from_micros(700), c, 3, 20);
    let (got, _) = run_until(&mut m, T0 + Duration::from_millis(50));
    (got, m.stats(), [a, b, c, d])
}

#[test]
fn a_hidden_terminal_collides_at_the_receiver_between() {
    let (got, s, [_, b, _, d]) = hidden_terminal(false);
    assert_eq!((to(&got, b), to(&got, d), s.collided), (2, 1, 0));
    let (got, s, [_, b, _, d]) = hidden_terminal(true);
    // C cannot sense A, sends over it; at B both are lost. D, out of C's range, gets A's.
    assert_eq!(to(&got, b), 0);
    assert_eq!(to(&got, d), 1);
    assert_eq!((s.collided, s.cca_busy), (2, 0));
}

#[test]
fn a_missing_ack_brings_retries_then_the_frame_is_dropped() {
    // B hears A but A does not hear B: every ACK is lost.
    let mut topology = Topology::explicit();
    topology.set_link(ext(1), ext(2), LinkModel::PERFECT);
    let mut m = medium(9, topology, AirtimeConfig::default());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    offer(&mut m, T0, a, &frame(ext(1), ext(2), true, 30));
    let (got, air) = run_until(&mut m, T0 + Duration::from_secs(1));
    let s = m.stats();
    // The first transmission and macMaxFrameRetries (3) more; B got each one (duplicates) and
    // acknowledged each.
    assert_eq!((s.transmissions, s.retries, s.dropped.no_ack), (4, 3, 1));
    assert_eq!((s.acks, s.acked), (4, 0));
    assert_eq!(to(&got, b), 4);
    assert_eq!(air.iter().filter(|o| o.from == a).count(), 4);
    // A retransmission only after the ACK wait: 864 µs after the end of the previous one.
    let ends: Vec<Instant> = air
        .iter()
        .filter(|o| o.from == a)
        .map(|o| o.at + phy::airtime(30 + 23 + 2))
        .collect();
    let starts: Vec<Instant> = air.iter().filter(|o| o.from == a).map(|o| o.at).collect();
    for i in 1..4 {
        assert!(starts[i] >= ends[i - 1] + phy::ACK_WAIT + phy::CCA_TIME + phy::TURNAROUND);
    }

    // Both ways in range: acknowledged at once, no retry. Without the AR bit: no ACK at all.
    let mut m = medium(9, Topology::default(), AirtimeConfig::default());
    let a = device(&mut m, 1, 26);
    let _b = device(&mut m, 2, 26);
    offer(&mut m, T0, a, &frame(ext(1), ext(2), true, 30));
    offer(&mut m, T0, a, &frame(ext(1), ext(2), false, 30));
    run_until(&mut m, T0 + Duration::from_secs(1));
    let s = m.stats();
    assert_eq!((s.transmissions, s.acks, s.acked, s.retries), (2, 1, 1, 0));
}

#[test]
fn a_busy_channel_makes_the_channel_access_fail_after_four_back_offs() {
    // No back-off at all: C's five CCAs (640 µs) all fall inside A's 3.6 ms frame.
    let air = AirtimeConfig {
        min_be: 0,
        max_be: 0,
        ..AirtimeConfig::default()
    };
    let mut m = medium(1, Topology::default(), air);
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let c = device(&mut m, 3, 26);
    broadcast(&mut m, T0, a, 1, 100);
    broadcast(&mut m, T0 + Duration::from_millis(1), c, 3, 100);
    let (got, _) = run_until(&mut m, T0 + Duration::from_millis(50));
    let s = m.stats();
    assert_eq!((s.cca_busy, s.dropped.channel_access), (5, 1));
    assert_eq!(s.backoffs, 1 + 5);
    assert_eq!(to(&got, b), 1, "only A's");
}

#[test]
fn a_radio_queue_holds_its_bound() {
    let air = AirtimeConfig {
        max_queue: 4,
        ..AirtimeConfig::default()
    };
    let mut m = medium(1, Topology::default(), air);
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    for _ in 0..10 {
        offer(&mut m, T0, a, &frame(ext(1), ext(2), true, 30));
    }
    let (got, _) = run_until(&mut m, T0 + Duration::from_secs(1));
    let s = m.stats();
    assert_eq!((s.offered, s.dropped.queue_full, s.acked), (10, 6, 4));
    assert_eq!(to(&got, b), 4, "exactly the bound gets through");
}

/// Ten devices offering a frame every 2 ms each for 200 ms, with `seed`: the deliveries (time,
/// receiver, sender) and the counters.
fn crowded(seed: u64) -> (Vec<(Instant, u32, u32)>, MediumStats) {
    let mut m = medium(seed, Topology::default(), AirtimeConfig::default());
    let ids: Vec<_> = (1..=10).map(|n| device(&mut m, n, 26)).collect();
    let mut got = Vec::new();
    for k in 0..100_u64 {
        let now = T0 + Duration::from_millis(2 * k);
        let (d, _) = run_until(&mut m, now);
        got.extend(d);
        for (i, &id) in ids.iter().enumerate() {
            let dst = ext(((i + 1) % 10 + 1) as u8);
            offer(&mut m, now, id, &frame(ext(i as u8 + 1), dst, true, 60));
        }
    }
    let (d, _) = run_until(&mut m, T0 + Duration::from_secs(2));
    got.extend(d);
    let got = got.iter().map(|d| (d.at, d.to.0, d.from.0)).collect();
    (got, m.stats())
}

#[test]
fn a_run_repeats_exactly_under_its_seed() {
    let (got, stats) = crowded(11);
    assert!(
        stats.cca_busy > 0 && stats.collided > 0 && stats.retries > 0,
        "{stats:?}"
    );
    assert!(!got.is_empty());
    assert_eq!(crowded(11), (got.clone(), stats));
    let (other, other_stats) = crowded(12);
    assert_ne!((other, other_stats), (got, stats));
}

/// The CI test "Airtime": twenty radios on one channel each offer a 100-byte acknowledged frame
/// every 4 ms for two seconds (about 5 Mbit/s offered, twenty times what 250 kbit/s carries),
/// with a sniffer taking every frame. The overload shows up in the medium's report as back-offs,
/// busy CCAs, collisions, retries and drops, and never as more than 250 kbit/s on air: not in the
/// channel's busiest window, not at the sniffer, not in what got through.
#[test]
fn airtime_load_beyond_capacity_backs_off_retries_and_drops_never_above_250_kbit_s() {
    const WINDOW: Duration = Duration::from_millis(100);
    const RUN: Duration = Duration::from_secs(2);
    let mut m = Medium::new(MediumConfig {
        seed: 14,
        window: WINDOW,
        airtime: Some(AirtimeConfig::default()),
        ..MediumConfig::default()
    });
    let ids: Vec<_> = (1..=20).map(|n| device(&mut m, n, 26)).collect();
    let sniffer = m.add(ParticipantConfig {
        channel: 26,
        reception: Reception::Promiscuous,
    });
    let data = |i: usize| frame(ext(i as u8 + 1), ext(((i + 1) % 20 + 1) as u8), true, 100);
    let psdu = data(0).len() + 2;
    let mut heard = 0;
    for k in 0..(RUN.as_millis() as u64 / 4) {
        let now = T0 + Duration::from_millis(4 * k);
        let (got, _) = run_until(&mut m, now);
        heard += to(&got, sniffer);
        for (i, &id) in ids.iter().enumerate() {
            offer(&mut m, now, id, &data(i));
        }
    }
    let (got, _) = run_until(&mut m, T0 + RUN + Duration::from_secs(1));
    heard += to(&got, sniffer);

    let s = m.stats();
    let offered_bps = (s.offered * 8 * (psdu + phy::PHY_HEADER_LEN) as u64) as f64 / 2.0;
    assert!(
        offered_bps > 20.0 * 250_000.0,
        "offered {offered_bps} bit/s"
    );
    // The overload in the report: contention, losses and every kind of drop the MAC makes.
    assert!(s.backoffs > s.transmissions, "{s:?}");
    assert!(s.cca_busy > s.offered, "{s:?}");
    assert!(s.collided > 0 && s.retries > 0, "{s:?}");
    assert!(
        s.dropped.channel_access > 0 && s.dropped.queue_full > 0 && s.dropped.no_ack > 0,
        "{s:?}"
    );
    // And yet frames get through: the channel is used, not jammed.
    assert!(s.acked > 100 && heard > 100, "{s:?}, sniffer heard {heard}");
    assert!(s.offered > s.acked + s.dropped.queue_full, "{s:?}");

    let [load] = m.channel_loads()[..] else {
        panic!("one channel: {:?}", m.channel_loads())
    };
    assert_eq!(load.window_us, 100_000);
    // The busiest window is nearly all busy, never more than all: at most 250 kbit/s on air.
    assert!(load.peak_on_air_bps() <= 250_000.0, "{load:?}");
    assert!(load.peak_on_air_bps() > 0.8 * 250_000.0, "{load:?}");
    // The sniffer, hearing everything that survives, never takes in more than the channel carries.
    assert!(load.peak_received_bps() <= 250_000.0, "{load:?}");
    assert!(load.peak_received_bps() > 0.3 * 250_000.0, "{load:?}");
    // Receptions that survived never overlapped (everyone hears everyone here): the frames and
    // their ACKs fit in the time the run took.
    let ack = phy::airtime(phy::ACK_PSDU_LEN);
    let clean = (phy::airtime(psdu) * heard as u32).saturating_add(ack * s.acked as u32);
    assert!(clean <= RUN + Duration::from_secs(1), "{clean:?}");
    assert!(load.busy_us <= (RUN + Duration::from_secs(1)).as_micros() as u64);
}

/// A broadcast frame on `pan` from `src`.
fn on_pan(pan: PanId, src: LinkAddr) -> Vec<u8> {
    let h = DataHeader {
        sequence: 1,
        pan,
        dst: LinkAddr::BROADCAST,
        src,
        ack_request: false,
    };
    let mut buf = [0_u8; 127];
    let n = h.emit(&[0x41; 100], &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn pans_on_one_channel_share_its_airtime_and_keep_their_frames() {
    // PAN X (A, B) and PAN Y (C, D) on channel 26, E on PAN X on channel 11. C is offered a
    // frame while A's is on air: it hears A (another PAN, the same air), defers, and goes after.
    // Each PAN's frame reaches its own PAN only; E, alone on its channel, never waits.
    let other = PanId(0x1234);
    let mut m = medium(5, Topology::default(), no_backoff());
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let [c, d] = [3, 4].map(|n| {
        m.add(ParticipantConfig {
            channel: 26,
            reception: Reception::Filtered {
                pan: other,
                addr: ext(n),
            },
        })
    });
    let e = device(&mut m, 5, 11);
    let t1 = T0 + Duration::from_millis(1);
    offer(&mut m, T0, a, &on_pan(PAN, ext(1)));
    offer(&mut m, t1, c, &on_pan(other, ext(3)));
    offer(&mut m, t1, e, &on_pan(PAN, ext(5)));
    let (got, air) = run_until(&mut m, T0 + Duration::from_millis(50));
    let from = |who| {
        got.iter()
            .filter(|d| d.from == who)
            .map(|d| d.to)
            .collect::<Vec<_>>()
    };
    assert_eq!(from(a), [b], "PAN X's frame to PAN X only");
    assert_eq!(from(c), [d], "PAN Y's frame to PAN Y only");
    assert_eq!(from(e), [], "nobody else on channel 11");
    let at = |who| air.iter().find(|f| f.from == who).unwrap().at;
    assert!(at(c) >= at(a) + phy::airtime(on_pan(PAN, ext(1)).len() + 2));
    assert_eq!(
        at(e),
        t1 + phy::CCA_TIME + phy::TURNAROUND,
        "no wait on channel 11"
    );
    let s = m.stats();
    assert_eq!((s.transmissions, s.collided, s.delivered), (3, 0, 2));
    assert!(s.cca_busy >= 1, "C senses A's frame: {s:?}");
    let loads = m.channel_loads();
    assert_eq!(
        loads.iter().map(|l| l.channel).collect::<Vec<_>>(),
        [11, 26]
    );
}
