//! The border router's forwarding, without sockets: an IPv6/UDP packet from the host (TUN) to
//! one of 10,000 devices, compressed into its frame; a device's frame from the radio,
//! decompressed into the packet for the host; and a 600-byte datagram each way in fragments.
//! One iteration is one packet; frames per second follow from the frames per packet.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench border`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_edge_router::border::pan::PanConfig;
use v6iot_edge_router::border::{BorderConfig, BorderRouter};
use v6iot_sdk::addr::{DeviceAddress, Eui64, SitePrefix};
use v6iot_sdk::lowpan::context::Context;
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{CompressOptions, LinkAddrs};
use v6iot_sdk::lowpan::{Adaptation, udp_packet};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u64 = 10_000;
const PAN: PanId = PanId(0xabcd);
const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0);
const HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const ROUTER: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 1]);

fn device(n: u64) -> DeviceAddress {
    let site: SitePrefix = "2001:db8:1200::/48".parse().unwrap();
    DeviceAddress::new(site, 3, 5, 0x12, 0x10_0000 + n).unwrap()
}

fn router() -> BorderRouter {
    let pan = PanConfig::new(PAN, PREFIX, Eui64([2, 0, 0, 0, 0, 0, 0, 1]));
    BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan]))
}

/// The frames device `n` sends for `packet`.
fn device_frames(n: u64, packet: &[u8]) -> Vec<Vec<u8>> {
    let src = LinkAddr::Extended(device(n).eui64().0);
    let mut a: Adaptation<Instant> = Adaptation::new(
        ReassemblyConfig::DEVICE,
        CompressOptions::default(),
        n as u16,
    );
    a.contexts.set(0, Context::new(PREFIX, 64));
    let header = DataHeader {
        sequence: 0,
        pan: PAN,
        dst: ROUTER,
        src,
        ack_request: false,
    };
    let mut out = Vec::new();
    a.send(
        packet,
        LinkAddrs { src, dst: ROUTER },
        header.max_payload(),
        |p| {
            let mut f = [0; 127];
            let len = header.emit(p, &mut f).unwrap();
            out.push(f[..len].to_vec());
        },
    )
    .unwrap();
    out
}

fn host_to(n: u64, payload: &[u8]) -> Vec<u8> {
    udp_packet(
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        SocketAddrV6::new(device(n).to_ipv6(), 5683, 0, 0),
        64,
        payload,
    )
}

fn from_device(n: u64, payload: &[u8]) -> Vec<u8> {
    udp_packet(
        SocketAddrV6::new(device(n).to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        64,
        payload,
    )
}

fn forwarding(c: &mut Criterion) {
    let mut g = c.benchmark_group("border");
    // A CoAP request of 40 bytes: one frame each way.
    let coap = [0x42_u8; 40];
    let to_devices: Vec<Vec<u8>> = (0..DEVICES).map(|n| host_to(n, &coap)).collect();
    let from_devices: Vec<Vec<u8>> = (0..DEVICES)
        .map(|n| device_frames(n, &from_device(n, &coap)).remove(0))
        .collect();
    g.throughput(Throughput::Elements(1));
    let mut r = router();
    let mut i = 0;
    g.bench_function("host_to_radio_1_frame", |b| {
        b.iter(|| {
            i = (i + 1) % to_devices.len();
            r.handle_host(Instant::now(), black_box(&to_devices[i]));
            black_box(r.poll_transmit().unwrap());
        });
    });
    let mut r = router();
    g.bench_function("radio_to_host_1_frame", |b| {
        b.iter(|| {
            i = (i + 1) % from_devices.len();
            let f = MacFrame::new(&from_devices[i]).unwrap();
            r.handle_frame(Instant::now(), 0, black_box(f));
            black_box(r.poll_host().unwrap());
        });
    });
    // 600 bytes: 7 frames each way, reassembled at the router on the way in.
    let big = [0x17_u8; 600];
    let to_devices: Vec<Vec<u8>> = (0..100).map(|n| host_to(n, &big)).collect();
    let from_devices: Vec<Vec<Vec<u8>>> = (0..100)
        .map(|n| device_frames(n, &from_device(n, &big)))
        .collect();
    let frames = from_devices[0].len() as u64;
    g.throughput(Throughput::Elements(frames));
    let mut r = router();
    g.bench_function("host_to_radio_600_bytes", |b| {
        b.iter(|| {
            i = (i + 1) % to_devices.len();
            r.handle_host(Instant::now(), black_box(&to_devices[i]));
            while let Some(f) = r.poll_transmit() {
                black_box(f);
            }
        });
    });
    let mut r = router();
    g.bench_function("radio_to_host_600_bytes", |b| {
        b.iter(|| {
            i = (i + 1) % from_devices.len();
            for f in &from_devices[i] {
                r.handle_frame(Instant::now(), 0, MacFrame::new(f).unwrap());
            }
            black_box(r.poll_host().unwrap());
        });
    });
    g.finish();
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
