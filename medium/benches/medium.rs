//! The ZEP medium hub relaying frames, as `v6iot-sim medium` does per datagram without the
//! socket: eight ZEP participants on one channel, a 60-byte data frame from one of them in turn,
//! decoded, put through the medium (ideal, or with the airtime model on virtual time) and
//! re-encoded as ZEP for each of the seven others. Throughput is in frames relayed (datagrams
//! out) per second per core.
//!
//! Run: `cargo bench -p v6iot-simulator --bench medium` (short: add
//! `-- --warm-up-time 1 --measurement-time 3`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_medium::phy::AirtimeConfig;
use v6iot_medium::{Hub, HubConfig, Medium, MediumConfig};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::zep::{self, NtpTime, ZepHeader};
use v6iot_sdk::time::Instant;

const PEERS: u16 = 8;

fn datagram(n: u16) -> Vec<u8> {
    let h = DataHeader {
        sequence: 1,
        pan: PanId(0xabcd),
        dst: LinkAddr::BROADCAST,
        src: LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, n as u8]),
        ack_request: false,
    };
    let mut mac = [0_u8; 127];
    let len = h.emit(&[0x41; 60], &mut mac).unwrap();
    let header = ZepHeader {
        channel: 26,
        device_id: n,
        lqi: 255,
        timestamp: NtpTime::default(),
        sequence: 0,
    };
    let mut out = [0_u8; zep::MAX_DATAGRAM];
    let len = zep::encode(&header, MacFrame::new(&mac[..len]).unwrap(), &mut out).unwrap();
    out[..len].to_vec()
}

fn relay(c: &mut Criterion, name: &str, airtime: Option<AirtimeConfig>) {
    let mut hub = Hub::new(
        Medium::new(MediumConfig {
            airtime,
            ..MediumConfig::default()
        }),
        HubConfig::default(),
    );
    let peers: Vec<_> = (1..=PEERS)
        .map(|n| {
            let addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 17_000 + n);
            (addr, datagram(n))
        })
        .collect();
    let mut now = Instant::ZERO;
    for (addr, _) in &peers {
        hub.add_peer(now, *addr, 26).unwrap();
    }
    let mut k = 0;
    let mut g = c.benchmark_group("medium hub");
    g.throughput(Throughput::Elements(u64::from(PEERS - 1)));
    g.bench_function(name, |b| {
        b.iter(|| {
            let (from, bytes) = &peers[k % peers.len()];
            k += 1;
            // 5 ms apart: with airtime on, each frame has the channel to itself.
            now += Duration::from_millis(5);
            hub.handle_timeout(now);
            hub.handle_datagram(now, *from, black_box(bytes));
            if let Some(t) = hub.poll_timeout() {
                now = now.max(t);
                hub.handle_timeout(now + Duration::from_millis(5));
            }
            let mut out = 0;
            while let Some(d) = hub.poll_datagram() {
                out += black_box(d).1.as_bytes().len();
            }
            out
        });
    });
    g.finish();
    hub.handle_timeout(now + Duration::from_secs(1));
    while hub.poll_datagram().is_some() {}
    let s = hub.medium().stats();
    assert_eq!(s.delivered, s.offered * u64::from(PEERS - 1), "{s:?}");
}

fn hub_relay(c: &mut Criterion) {
    relay(c, "ideal: one frame to 7 peers", None);
    relay(
        c,
        "airtime: one frame to 7 peers",
        Some(AirtimeConfig::default()),
    );
}

criterion_group!(benches, hub_relay);
criterion_main!(benches);
