//! The authentication gateway's hot path, without sockets or disk: a telemetry datagram from
//! one of 10,000 devices in, verified (or, in lab mode, passed plain), the record out, the
//! outbox's "stored" back, the replay-floor batch "written", the protected ACK out. Compare
//! with `ingress/telemetry_datagram_to_ack` (benches/ingress.rs) for the gateway's own cost.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench gateway`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::gateway::{Gateway, GatewayConfig};
use v6iot_edge_router::ingress::{Ingress, IngressConfig};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext, protect_request};

mod common;
use common::{addr, kid, load_devices, post, round, secret};

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u32 = 10_000;

fn gateway(require_oscore: bool) -> Gateway {
    let ingress = Ingress::new(
        IngressConfig::new(Topics::new("v6iot", "bench").unwrap()),
        1,
    );
    let config = GatewayConfig {
        require_oscore,
        ..GatewayConfig::default()
    };
    let mut g = Gateway::new(ingress, config);
    load_devices(&mut g, DEVICES);
    g
}

fn bench(c: &mut Criterion) {
    let body = br#"[{"bn":"urn:dev:b:","n":"t","u":"Cel","v":21.5}]"#;
    let start = Instant::now();
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Elements(1));

    // OSCORE required: every device registers (protected), then reports (protected).
    let mut g = gateway(true);
    let mut ctxs: Vec<SecurityContext> = (0..DEVICES)
        .map(|n| {
            let input = ContextInput {
                master_secret: secret(n),
                master_salt: Vec::new(),
                id_context: None,
                sender_id: kid(n),
                recipient_id: Vec::new(),
            };
            let config = ContextConfig {
                persist_step: 1 << 30,
                ..ContextConfig::default()
            };
            let mut c = SecurityContext::new(&input, config).unwrap();
            let m = c.mark_to_persist().unwrap();
            c.persisted(m);
            c
        })
        .collect();
    for n in 0..DEVICES {
        let q = vec![format!("ep=d{n:06}"), "lt=86400".to_owned()];
        let reg = post("rd", &q, 40, b"</t>;ct=0", 1);
        let (p, _) = protect_request(&mut ctxs[n as usize], &reg).unwrap();
        g.handle_datagram(start, 1, addr(n), &p.to_bytes_unlimited().unwrap());
        while let Some(b) = g.poll_persist() {
            g.handle_persisted(start, b.id, true);
        }
        while g.poll_transmit().is_some() {}
        while g.ingress_mut().poll_append().is_some() {}
    }
    let mut n = 0u32;
    let mut mid = 2u16;
    let mut tick = 0u64;
    group.bench_function("oscore_telemetry_datagram_to_ack", |b| {
        b.iter_batched(
            || {
                n = (n + 7919) % DEVICES;
                mid = mid.wrapping_add(1).max(2);
                let (p, _) =
                    protect_request(&mut ctxs[n as usize], &post("t", &[], 110, body, mid))
                        .unwrap();
                (addr(n), p.to_bytes_unlimited().unwrap())
            },
            |(peer, bytes)| {
                tick += 1;
                round(&mut g, start + Duration::from_millis(tick), peer, &bytes);
            },
            BatchSize::SmallInput,
        );
    });

    // Lab mode: plain CoAP through the gateway (what it adds to the unauthenticated path).
    let mut g = gateway(false);
    for n in 0..DEVICES {
        let q = vec![format!("ep=d{n:06}"), "lt=86400".to_owned()];
        let reg = post("rd", &q, 40, b"</t>;ct=0", 1)
            .to_bytes_unlimited()
            .unwrap();
        g.handle_datagram(start, 1, addr(n), &reg);
        while g.poll_transmit().is_some() {}
        while g.ingress_mut().poll_append().is_some() {}
    }
    group.bench_function("lab_plain_telemetry_datagram_to_ack", |b| {
        b.iter_batched(
            || {
                n = (n + 7919) % DEVICES;
                mid = mid.wrapping_add(1).max(2);
                (
                    addr(n),
                    post("t", &[], 110, body, mid).to_bytes_unlimited().unwrap(),
                )
            },
            |(peer, bytes)| {
                tick += 1;
                round(&mut g, start + Duration::from_millis(tick), peer, &bytes);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
