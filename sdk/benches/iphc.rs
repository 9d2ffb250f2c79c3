//! IPHC on a planned device's telemetry datagram (IPv6 + UDP + a 55-byte CoAP `POST /t`, both
//! addresses under the PAN's context): compress the headers into a frame's payload and
//! decompress them back, as a device and a border router do per frame. One iteration = one
//! compress + one decompress of the whole datagram; frames/s per core = 1 / time.
//!
//! Run: `cargo bench -p v6iot-sdk --bench iphc` (short: add
//! `-- --warm-up-time 1 --measurement-time 3`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_sdk::lowpan::context::{Context, ContextTable};
use v6iot_sdk::lowpan::iphc::{self, CompressOptions, LinkAddrs, fill_udp_checksum};
use v6iot_sdk::radio::mac::LinkAddr;

fn datagram() -> Vec<u8> {
    let src: Ipv6Addr = "2001:db8:1200:305:12:3456:78ab:cdef".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8:1200:305::1".parse().unwrap();
    let coap = [0x42_u8; 55];
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(8 + coap.len() as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x16, 0x33, 0x16, 0x33]);
    p.extend_from_slice(&(8 + coap.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&coap);
    fill_udp_checksum(&mut p);
    p
}

/// The frame payload of `packet`: IPHC headers, then the rest of the datagram as it is; its
/// length.
fn compress_into(
    packet: &[u8],
    ll: &LinkAddrs,
    contexts: &ContextTable,
    frame: &mut [u8; 127],
) -> usize {
    let comp = iphc::compress(packet, ll, contexts, CompressOptions::default(), frame).unwrap();
    let rest = &packet[comp.consumed..];
    frame[comp.header_len..comp.header_len + rest.len()].copy_from_slice(rest);
    comp.header_len + rest.len()
}

fn bench(c: &mut Criterion) {
    let packet = datagram();
    let ll = LinkAddrs {
        src: LinkAddr::Extended([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]),
        dst: LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]),
    };
    let mut contexts = ContextTable::new();
    contexts.set(0, Context::new("2001:db8:1200:305::".parse().unwrap(), 64));
    let mut frame = [0_u8; 127];
    let mut out = [0_u8; 1280];

    let mut g = c.benchmark_group("iphc");
    g.throughput(Throughput::Elements(1));
    g.bench_function("compress+decompress telemetry", |b| {
        b.iter(|| {
            let n = compress_into(black_box(&packet), &ll, &contexts, &mut frame);
            let len =
                iphc::decompress_packet(black_box(&frame[..n]), &ll, &contexts, &mut out).unwrap();
            black_box(len)
        });
    });
    g.bench_function("compress telemetry", |b| {
        b.iter(|| {
            iphc::compress(
                black_box(&packet),
                &ll,
                &contexts,
                CompressOptions::default(),
                &mut frame,
            )
            .unwrap()
        });
    });
    let n = compress_into(&packet, &ll, &contexts, &mut frame);
    let compressed = frame[..n].to_vec();
    g.bench_function("decompress telemetry", |b| {
        b.iter(|| {
            iphc::decompress_packet(black_box(&compressed), &ll, &contexts, &mut out).unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
