//! Fuzzes the border router's input paths: the first byte picks what the rest is — a ZEP
//! datagram or a raw MAC frame from the radio (into one of two PANs), an IPv6 packet from the
//! host (TUN), a CoAP datagram from the gateway for a device, or time passing. A first frame
//! pair makes a device known and a reassembly start, so later input meets live tables. Nothing
//! may panic; every frame the router sends must parse as a data frame of its PAN; the tables
//! and queues stay within their bounds.

#![no_main]

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use v6iot_edge_router::border::neighbours::NeighbourConfig;
use v6iot_edge_router::border::pan::PanConfig;
use v6iot_edge_router::border::{BorderConfig, BorderRouter};
use v6iot_sdk::addr::Eui64;
use v6iot_sdk::lowpan::frag::{MAX_DATAGRAM_SIZE, ReassemblyConfig};
use v6iot_sdk::radio::mac::{DataHeader, PanId};
use v6iot_sdk::radio::{MacFrame, zep};

const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0);
const PREFIX_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x306, 0, 0, 0, 0);
const MAX_TX: usize = 64;
const MAX_DATAGRAMS: usize = 4;
const MAX_NEIGHBOURS: usize = 8;

fn router(now: Instant) -> BorderRouter {
    let small = |pan, prefix, last| PanConfig {
        neighbours: NeighbourConfig {
            max_entries: MAX_NEIGHBOURS,
            idle: Duration::from_secs(30),
        },
        reassembly: ReassemblyConfig {
            max_datagrams: MAX_DATAGRAMS,
            max_per_source: 2,
            timeout: Duration::from_secs(5),
        },
        ..PanConfig::new(PanId(pan), prefix, Eui64([2, 0, 0, 0, 0, 0, 0, last]))
    };
    let mut config = BorderConfig::new(vec![small(0xabcd, PREFIX, 1), small(0x1234, PREFIX_B, 2)]);
    config.max_tx_frames = MAX_TX;
    config.max_host_queue = 8;
    config.max_local_queue = 8;
    BorderRouter::new(now, config)
}

/// One router for the whole run, so state builds up across inputs (as on a real channel).
static ROUTER: Mutex<Option<(BorderRouter, Instant, Instant)>> = Mutex::new(None);

fn check_outputs(r: &mut BorderRouter) {
    let mut frames = 0;
    while let Some(f) = r.poll_transmit() {
        frames += 1;
        let frame = f.frame().expect("the router's frames are frames");
        let (h, _) = DataHeader::parse(frame).expect("the router's frames parse");
        let pan = if f.pan == 0 { 0xabcd } else { 0x1234 };
        assert_eq!(h.pan, PanId(pan));
    }
    assert!(frames <= MAX_TX);
    while r.poll_host().is_some() {}
    while r.poll_local().is_some() {}
    for s in r.stats().pans {
        assert!(s.reassembly_in_progress <= MAX_DATAGRAMS);
        assert!(s.reassembly_bytes <= MAX_DATAGRAMS * MAX_DATAGRAM_SIZE);
        assert!(s.neighbours <= MAX_NEIGHBOURS);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut guard) = ROUTER.lock() else { return };
    let (r, t0, now) = guard.get_or_insert_with(|| {
        let t0 = Instant::now();
        (router(t0), t0, t0)
    });
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let pan = usize::from(selector >> 7);
    match selector & 0x07 {
        0 => {
            if let Ok(d) = zep::decode(rest) {
                r.handle_frame(*now, pan, d.frame);
            }
        }
        1 | 2 | 3 => {
            if let Ok(f) = MacFrame::new(rest) {
                r.handle_frame(*now, pan, f);
            }
        }
        4 => r.handle_host(*now, rest),
        5 => {
            let (addr, payload) = rest.split_at(rest.len().min(16));
            let mut octets = PREFIX.octets();
            octets[16 - addr.len()..].copy_from_slice(addr);
            let remote = SocketAddrV6::new(Ipv6Addr::from(octets), 5683, 0, 0);
            let _ = r.send_local(None, remote, payload);
        }
        _ => {
            let secs = u64::from(rest.first().copied().unwrap_or(1));
            *now += Duration::from_secs(secs);
            r.handle_timeout(*now);
        }
    }
    check_outputs(r);
    // Start afresh now and then, so a long run does not fill every table for good.
    let old = now.duration_since(*t0) > Duration::from_secs(3600);
    if old {
        *guard = None;
    }
});
