//! The medium on virtual time: who receives what, losses and latency per link, bounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::time::Instant;

use super::core::{Delivery, Medium, MediumConfig, ParticipantConfig, ParticipantId, Reception};
use super::topology::{LinkModel, Topology};

pub(super) const PAN: PanId = PanId(0xabcd);

pub(super) fn ext(n: u8) -> LinkAddr {
    LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, n])
}

/// A data frame from `src` to `dst` with `payload_len` bytes of payload.
pub(super) fn frame(src: LinkAddr, dst: LinkAddr, ack: bool, payload_len: usize) -> Vec<u8> {
    let h = DataHeader {
        sequence: 7,
        pan: PAN,
        dst,
        src,
        ack_request: ack,
    };
    let mut buf = [0_u8; 127];
    let n = h.emit(&vec![0x41; payload_len], &mut buf).unwrap();
    buf[..n].to_vec()
}

pub(super) fn device(m: &mut Medium, n: u8, channel: u8) -> ParticipantId {
    m.add(ParticipantConfig {
        channel,
        reception: Reception::Filtered {
            pan: PAN,
            addr: ext(n),
        },
    })
}

pub(super) fn deliveries(m: &mut Medium) -> Vec<Delivery> {
    std::iter::from_fn(|| m.poll_delivery()).collect()
}

fn offer(m: &mut Medium, now: Instant, from: ParticipantId, bytes: &[u8]) {
    m.handle_frame(now, from, MacFrame::new(bytes).unwrap())
        .unwrap();
}

#[test]
fn a_frame_reaches_every_other_participant_on_its_channel_that_takes_it() {
    let mut m = Medium::new(MediumConfig::default());
    let router = m.add(ParticipantConfig {
        channel: 26,
        reception: Reception::Promiscuous,
    });
    let sniffer = m.add(ParticipantConfig {
        channel: 26,
        reception: Reception::Promiscuous,
    });
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let other_channel = device(&mut m, 3, 11);
    let other_pan = m.add(ParticipantConfig {
        channel: 26,
        reception: Reception::Filtered {
            pan: PanId(1),
            addr: ext(4),
        },
    });
    let t = Instant::from_millis(5);

    // A broadcast from a: the router, the sniffer and b; not a itself, nor channel 11, nor
    // another PAN.
    offer(&mut m, t, a, &frame(ext(1), LinkAddr::BROADCAST, false, 10));
    let got: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(got, vec![router, sniffer, b]);

    // Unicast from the router to b: the sniffer and b (a's filter drops it).
    offer(&mut m, t, router, &frame(ext(0x10), ext(2), false, 10));
    let got = deliveries(&mut m);
    assert_eq!(
        got.iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![sniffer, b]
    );
    assert_eq!(got[1].from, router);
    assert_eq!(got[1].at, t);
    assert_eq!(got[1].lqi, 255);
    assert_eq!(got[1].frame.as_bytes(), frame(ext(0x10), ext(2), false, 10));
    // The router's address was learned from its frame.
    assert_eq!(m.address_of(router), Some(ext(0x10)));

    // A frame that is not a data frame with addresses (an ACK): promiscuous receivers only.
    offer(&mut m, t, b, &[0x02, 0x00, 0x07]);
    let got: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(got, vec![router, sniffer]);

    // Nobody on channel 11 but its one device: nothing.
    offer(
        &mut m,
        t,
        other_channel,
        &frame(ext(3), LinkAddr::BROADCAST, false, 10),
    );
    assert!(deliveries(&mut m).is_empty());

    let s = m.stats();
    assert_eq!((s.offered, s.transmissions, s.delivered), (4, 4, 7));
    assert_eq!(m.participant_stats(b).unwrap().received, 2);
    assert_eq!(m.participant_stats(other_pan).unwrap().received, 0);

    // A removed participant receives nothing more and cannot send.
    m.remove(sniffer);
    offer(&mut m, t, a, &frame(ext(1), LinkAddr::BROADCAST, false, 10));
    assert_eq!(
        deliveries(&mut m).iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![router, b]
    );
    assert!(
        m.handle_frame(t, sniffer, MacFrame::new(&[1, 2, 3]).unwrap())
            .is_err()
    );
    assert_eq!(m.stats().dropped.unknown_sender, 1);
}

/// The receivers of `n` broadcasts from participant 0 of a medium with `seed` and a lossy link.
fn lossy_run(seed: u64, n: usize) -> (Vec<u32>, u64) {
    let mut topology = Topology::flat(LinkModel::PERFECT);
    topology.set_link(
        ext(1),
        ext(2),
        LinkModel {
            delivery: 0.5,
            latency: Duration::ZERO,
        },
    );
    let mut m = Medium::new(MediumConfig {
        seed,
        topology,
        ..MediumConfig::default()
    });
    let a = device(&mut m, 1, 26);
    let _b = device(&mut m, 2, 26);
    let _c = device(&mut m, 3, 26);
    let mut got = Vec::new();
    for i in 0..n {
        offer(
            &mut m,
            Instant::from_millis(i as u64),
            a,
            &frame(ext(1), LinkAddr::BROADCAST, false, 4),
        );
        got.extend(deliveries(&mut m).iter().map(|d| d.to.0));
    }
    (got, m.stats().dropped.link_loss)
}

#[test]
fn loss_is_per_link_and_repeats_under_its_seed() {
    let (got, lost) = lossy_run(42, 1000);
    // c always gets it, b about half the time.
    let to_c = got.iter().filter(|&&to| to == 2).count();
    let to_b = got.iter().filter(|&&to| to == 1).count();
    assert_eq!(to_c, 1000);
    assert!((430..570).contains(&to_b), "{to_b}");
    assert_eq!(lost as usize, 1000 - to_b);
    assert_eq!(
        lossy_run(42, 1000),
        (got.clone(), lost),
        "same seed, same run"
    );
    assert_ne!(lossy_run(43, 1000).0, got, "another seed, another run");
}

/// A medium on `topology` with devices 1, 2 and 3 on channel 26.
fn three_devices(topology: Topology) -> (Medium, [ParticipantId; 3]) {
    let mut m = Medium::new(MediumConfig {
        topology,
        ..MediumConfig::default()
    });
    let ids = [1, 2, 3].map(|n| device(&mut m, n, 26));
    (m, ids)
}

#[test]
fn latency_is_per_link_and_waits_for_its_time() {
    let mut topology = Topology::flat(LinkModel::PERFECT);
    let slow = LinkModel {
        delivery: 1.0,
        latency: Duration::from_millis(30),
    };
    topology.set_link(ext(1), ext(2), slow);
    let (mut m, [a, b, c]) = three_devices(topology);
    let t = Instant::from_millis(100);
    offer(&mut m, t, a, &frame(ext(1), LinkAddr::BROADCAST, false, 4));
    let now: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(now, vec![c], "the fast link at once");
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_millis(30)));
    m.handle_timeout(t + Duration::from_millis(29));
    assert!(deliveries(&mut m).is_empty());
    m.handle_timeout(t + Duration::from_millis(30));
    let later = deliveries(&mut m);
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].to, later[0].at),
        (b, t + Duration::from_millis(30))
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn explicit_topology_delivers_only_over_its_links() {
    let mut topology = Topology::explicit();
    topology.set_symmetric(ext(1), ext(2), LinkModel::PERFECT);
    topology.set_symmetric(ext(2), ext(3), LinkModel::PERFECT);
    let (mut m, [a, b, c]) = three_devices(topology);
    let t = Instant::ZERO;
    offer(&mut m, t, a, &frame(ext(1), LinkAddr::BROADCAST, false, 4));
    assert_eq!(
        deliveries(&mut m).iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![b]
    );
    offer(&mut m, t, b, &frame(ext(2), LinkAddr::BROADCAST, false, 4));
    assert_eq!(
        deliveries(&mut m).iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![a, c]
    );
}

#[test]
fn in_a_star_devices_hear_the_router_and_not_each_other() {
    let mut m = Medium::new(MediumConfig {
        star: true,
        ..MediumConfig::default()
    });
    let router = m.add(ParticipantConfig {
        channel: 26,
        reception: Reception::Promiscuous,
    });
    let a = device(&mut m, 1, 26);
    let b = device(&mut m, 2, 26);
    let t = Instant::ZERO;
    // A device's broadcast reaches the router only.
    offer(&mut m, t, a, &frame(ext(1), LinkAddr::BROADCAST, false, 4));
    let to: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(to, vec![router]);
    // A frame addressed to the other device does not reach it either.
    offer(&mut m, t, a, &frame(ext(1), ext(2), false, 4));
    let to: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(to, vec![router]);
    // The router's broadcast reaches both devices.
    offer(
        &mut m,
        t,
        router,
        &frame(ext(9), LinkAddr::BROADCAST, false, 4),
    );
    let to: Vec<_> = deliveries(&mut m).iter().map(|d| d.to).collect();
    assert_eq!(to, vec![a, b]);
}

#[test]
fn waiting_deliveries_are_bounded() {
    let mut m = Medium::new(MediumConfig {
        topology: Topology::flat(LinkModel {
            delivery: 1.0,
            latency: Duration::from_millis(1),
        }),
        max_pending: 10,
        ..MediumConfig::default()
    });
    let a = device(&mut m, 1, 26);
    let _b = device(&mut m, 2, 26);
    for _ in 0..15 {
        offer(&mut m, Instant::ZERO, a, &frame(ext(1), ext(2), false, 4));
    }
    assert_eq!(m.stats().dropped.backlog, 5);
    m.handle_timeout(Instant::from_millis(1));
    assert_eq!(deliveries(&mut m).len(), 10, "exactly the bound arrives");
    // Room again once delivered.
    offer(
        &mut m,
        Instant::from_millis(1),
        a,
        &frame(ext(1), ext(2), false, 4),
    );
    m.handle_timeout(Instant::from_millis(2));
    assert_eq!(deliveries(&mut m).len(), 1);
}

mod hub {
    use std::net::SocketAddr;
    use std::time::Duration;

    use v6iot_sdk::radio::MacFrame;
    use v6iot_sdk::radio::mac::LinkAddr;
    use v6iot_sdk::radio::zep::{self, NtpTime, ZepHeader};
    use v6iot_sdk::time::Instant;

    use super::{PAN, ext, frame};
    use crate::core::{Medium, MediumConfig, ParticipantConfig, Reception};
    use crate::hub::{Hub, HubConfig, HubError};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
    }

    fn zep_datagram(channel: u8, device_id: u16, mac: &[u8]) -> Vec<u8> {
        let header = ZepHeader {
            channel,
            device_id,
            lqi: 200,
            timestamp: NtpTime(0),
            sequence: 1,
        };
        let mut buf = [0_u8; zep::MAX_DATAGRAM];
        let n = zep::encode(&header, MacFrame::new(mac).unwrap(), &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn hub(max_remote: usize) -> Hub {
        Hub::new(
            Medium::new(MediumConfig::default()),
            HubConfig {
                max_remote,
                idle_timeout: Duration::from_secs(60),
                unix_at_zero: Duration::from_secs(1_700_000_000),
            },
        )
    }

    fn sent(h: &mut Hub) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| h.poll_datagram())
            .map(|(to, d)| (to, d.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn learns_participants_and_relays_between_them_and_local_ones() {
        let mut h = hub(8);
        let t = Instant::from_millis(10);
        let local = h.add_local(ParticipantConfig {
            channel: 26,
            reception: Reception::Filtered {
                pan: PAN,
                addr: ext(9),
            },
        });
        let mac = frame(ext(1), LinkAddr::BROADCAST, false, 20);
        // The first from :1 reaches only the local participant (nobody else is known).
        h.handle_datagram(t, addr(1), &zep_datagram(26, 0x11, &mac));
        assert!(sent(&mut h).is_empty());
        let d = h.poll_local().unwrap();
        assert_eq!((d.to, d.frame.as_bytes()), (local, &mac[..]));
        // :2 joins on the same channel, :3 on another one.
        h.handle_datagram(t, addr(2), &zep_datagram(26, 0x22, &mac));
        h.handle_datagram(t, addr(3), &zep_datagram(11, 0x33, &mac));
        let out = sent(&mut h);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr(1));
        let decoded = zep::decode(&out[0].1).unwrap();
        assert_eq!(decoded.frame.as_bytes(), mac);
        assert_eq!(decoded.header.channel, 26);
        assert_eq!(decoded.header.device_id, 0x22, "the sender's own ZEP id");
        assert!(decoded.fcs_checked);
        assert_eq!(
            decoded.header.timestamp,
            NtpTime::from_unix(Duration::new(1_700_000_000, 10_000_000))
        );
        // The local participant sends: both remotes on channel 26 get it.
        let from_local = frame(ext(9), ext(1), false, 5);
        h.handle_frame(t, local, MacFrame::new(&from_local).unwrap())
            .unwrap();
        let to: Vec<_> = sent(&mut h).into_iter().map(|(a, _)| a).collect();
        assert_eq!(to, vec![addr(1), addr(2)]);
        let s = h.stats();
        assert_eq!(
            (s.datagrams_in, s.learned, s.remote, s.datagrams_out),
            (3, 3, 3, 3)
        );
        // :3 moves to channel 26 and hears the next frame.
        h.handle_datagram(t, addr(3), &zep_datagram(26, 0x33, &mac));
        let to: Vec<_> = sent(&mut h).into_iter().map(|(a, _)| a).collect();
        assert_eq!(to, vec![addr(1), addr(2)]);
        h.handle_datagram(t, addr(1), &zep_datagram(26, 0x11, &mac));
        let to: Vec<_> = sent(&mut h).into_iter().map(|(a, _)| a).collect();
        assert_eq!(to, vec![addr(2), addr(3)]);
    }

    #[test]
    fn bad_datagrams_are_dropped_by_cause_and_good_ones_still_pass() {
        let mut h = hub(8);
        let t = Instant::ZERO;
        let mac = frame(ext(1), LinkAddr::BROADCAST, false, 20);
        let good = zep_datagram(26, 1, &mac);
        h.handle_datagram(t, addr(1), &good);
        let mut bad_fcs = good.clone();
        *bad_fcs.last_mut().unwrap() ^= 1;
        let mut v1 = good.clone();
        v1[2] = 1;
        // A datagram whose frame (with a good FCS) is shorter than a MAC header.
        let mut tiny_frame = good[..32].to_vec();
        tiny_frame[31] = 4;
        tiny_frame.extend_from_slice(&[0x41, 0xd8]);
        tiny_frame.extend_from_slice(&v6iot_sdk::radio::fcs::fcs_bytes(&[0x41, 0xd8]));
        let mut long = good.clone();
        long.extend_from_slice(&[0; 300]);
        let inputs: Vec<Vec<u8>> = vec![
            b"hello, not zep".to_vec(),
            Vec::new(),
            good[..20].to_vec(),
            good[..good.len() - 1].to_vec(),
            long,
            bad_fcs,
            v1,
            b"EX\x02\x02\0\0\0\x05".to_vec(),
            tiny_frame,
        ];
        for (i, bytes) in inputs.iter().enumerate() {
            h.handle_datagram(t, addr(100 + i as u16), bytes);
        }
        let d = h.stats().dropped;
        assert_eq!(
            (d.not_zep, d.malformed, d.bad_fcs, d.version, d.not_data),
            (1, 5, 1, 1, 1),
            "{d:?}"
        );
        assert_eq!(h.stats().remote, 1, "no participant learned from bad input");
        // The good participant is still served.
        h.handle_datagram(t, addr(2), &good);
        assert_eq!(sent(&mut h).len(), 1);
    }

    #[test]
    fn the_participant_table_holds_its_bound() {
        const BOUND: usize = crate::hub::DEFAULT_MAX_REMOTE;
        let mut h = hub(BOUND);
        let mac = frame(ext(1), LinkAddr::BROADCAST, false, 4);
        let datagram = zep_datagram(26, 1, &mac);
        let t0 = Instant::ZERO;
        // Spread over the 16 channels of 2.4 GHz, so each frame is relayed to 63 others, not
        // 1023 (the test stays quick; the bound is the same).
        let on_own_channel = |port: u16| zep_datagram(11 + (port % 16) as u8, 1, &mac);
        for port in 1..=BOUND as u16 {
            h.handle_datagram(t0, addr(port), &on_own_channel(port));
            while h.poll_datagram().is_some() {}
        }
        assert_eq!(h.stats().remote, BOUND as u64);
        assert_eq!(h.stats().dropped.table_full, 0);
        // One more, while everyone is fresh: refused and counted; nothing relayed.
        let t1 = t0 + Duration::from_secs(30);
        h.handle_datagram(t1, addr(60_000), &datagram);
        assert!(h.poll_datagram().is_none());
        assert_eq!(h.stats().dropped.table_full, 1);
        assert!(h.remote_at(addr(60_000)).is_none());
        assert_eq!(
            h.add_peer(t1, addr(60_001), 26),
            Err(HubError::TableFull(BOUND))
        );
        // Everyone but :1 speaks again later; once :1 has been idle 60 s, a newcomer takes
        // its place.
        let t2 = t0 + Duration::from_secs(61);
        for port in 2..=BOUND as u16 {
            h.handle_datagram(t2, addr(port), &on_own_channel(port));
            while h.poll_datagram().is_some() {}
        }
        h.handle_datagram(t2, addr(60_000), &datagram);
        assert!(h.remote_at(addr(60_000)).is_some());
        assert!(h.remote_at(addr(1)).is_none(), "the idle one went");
        let s = h.stats();
        assert_eq!(
            (s.remote, s.expired, s.dropped.table_full),
            (BOUND as u64, 1, 1)
        );
        assert_eq!(
            h.poll_datagram().map(|(_, d)| d.as_bytes().len()),
            Some(datagram.len())
        );
    }

    #[test]
    fn a_peer_added_in_advance_hears_before_it_speaks_and_never_expires() {
        let mut h = hub(2);
        let t = Instant::ZERO;
        let router = addr(7000);
        h.add_peer(t, router, 26).unwrap();
        let mac = frame(ext(1), LinkAddr::BROADCAST, false, 4);
        h.handle_datagram(t, addr(1), &zep_datagram(26, 1, &mac));
        assert_eq!(
            sent(&mut h).into_iter().map(|(a, _)| a).collect::<Vec<_>>(),
            vec![router]
        );
        // Table full (2); long after, a newcomer replaces the idle device, not the peer.
        let later = t + Duration::from_secs(3600);
        h.handle_datagram(later, addr(2), &zep_datagram(26, 2, &mac));
        assert!(h.remote_at(router).is_some());
        assert!(h.remote_at(addr(1)).is_none());
        assert!(h.remote_at(addr(2)).is_some());
    }
}
