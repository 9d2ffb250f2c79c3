//! The ingress core's hot path, without sockets or disk: a telemetry datagram from one of
//! 100,000 registered devices in, the record out, the outbox's "stored" back, the ACK out.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench ingress`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::ingress::{AppendResult, Ingress, IngressConfig};
use v6iot_sdk::senml::{self, PackBuilder, Record};

mod common;
use common::addr;

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u32 = 100_000;

fn post(path: &str, query: &[String], cf: Option<u8>, body: Vec<u8>, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(vec![1, 2, 3, 4]);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    if let Some(cf) = cf {
        p.add_option(CoapOption::ContentFormat, vec![cf]);
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = body;
    p.to_bytes_unlimited().unwrap()
}

fn bench(c: &mut Criterion) {
    let mut ingress = Ingress::new(
        IngressConfig::new(Topics::new("v6iot", "bench").unwrap()),
        1,
    );
    let start = Instant::now();
    let t0 = Instant::now();
    for n in 0..DEVICES {
        let q = vec![format!("ep=d{n:06}"), "lt=86400".to_owned()];
        ingress.handle_datagram(
            start,
            1,
            addr(n),
            &post("rd", &q, Some(40), b"</t>;obs;ct=0".to_vec(), 0),
        );
        while ingress.poll_transmit().is_some() {}
        while ingress.poll_append().is_some() {}
    }
    eprintln!("registered {DEVICES} devices in {:?}", t0.elapsed());
    let body = senml::to_cbor(
        &PackBuilder::new()
            .base_name("urn:dev:b:")
            .record(Record::measurement("t", "Cel", 21.5))
            .build(),
    )
    .unwrap();
    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    let mut mid = 2u16;
    let mut tick = 0u64;
    group.bench_function("telemetry_datagram_to_ack", |b| {
        b.iter(|| {
            n = (n + 7919) % DEVICES;
            mid = mid.wrapping_add(1).max(1); // 0 was the registration's
            tick += 1;
            let now = start + Duration::from_millis(tick);
            ingress.handle_datagram(
                now,
                1_700_000_000_000,
                addr(n),
                &post("t", &[], Some(112), body.clone(), mid),
            );
            let Some(a) = ingress.poll_append() else {
                let t = ingress
                    .poll_transmit()
                    .map(|(_, b)| Packet::from_bytes(&b).unwrap());
                panic!("no record for device {n}: {t:?}");
            };
            ingress.handle_appended(a.ticket.unwrap(), AppendResult::Stored);
            black_box(ingress.poll_transmit().unwrap());
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
