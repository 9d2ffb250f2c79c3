//! What unauthenticated input costs the edge (issue 10, points 3 and 4; `THREATS.md`):
//!
//! - `flood/10k_empty_acks_100k_in_flight`: 10,000 spoofed empty ACKs (a device's address, a
//!   random message ID) against 100,000 commands in flight, matched through the downlink's
//!   (peer, message ID) index; `…_genuine` the same count of ACKs that each find their command.
//! - `flood/source_limited_drop`: a datagram from a /64 whose unauthenticated bucket is empty,
//!   dropped unread.
//! - `flood/plain_request_refused`: a plain request, read and refused (no answer: the budget
//!   is spent).
//! - `flood/forgery_under_active_kid`: a request under an active device's kid with a wrong key:
//!   one AEAD open that fails.
//! - `flood/forgery_under_quarantined_kid`: the same once the kid is quarantined, from
//!   elsewhere: refused without cryptography.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench flood`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::gateway::{Gateway, GatewayConfig, LimitsConfig, Rate};
use v6iot_edge_router::ingress::downlink::{CommandLimits, JournalWritten, Reachability};
use v6iot_edge_router::ingress::{Downlink, DownlinkCommand, Ingress, IngressConfig};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext, protect_request};

mod common;
use common::{addr, kid, load_devices};

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: u32 = 100_000;
const ACKS: usize = 10_000;

/// A command in flight to each of 100,000 devices (device n at `addr(n)`, message ID n), sent
/// once the journal is durable, as the ingress does.
fn downlink_with_commands() -> Downlink {
    let now = Instant::now();
    let reach = |n: u32| {
        Some(Reachability {
            address: addr(n).into(),
            queue_mode: false,
            last_uplink: now,
        })
    };
    let limits = CommandLimits {
        max_total: IN_FLIGHT as usize + 1,
        ..CommandLimits::default()
    };
    let window = Duration::from_secs(20);
    let mut d = Downlink::new([7; 16]).with_limits(limits);
    for n in 0..IN_FLIGHT {
        let cmd = DownlinkCommand {
            device: format!("d{n:06}"),
            req: "r1".into(),
            method: "PUT".into(),
            path: "/valve".into(),
            payload: b"open".to_vec(),
            content_format: Some(0),
            expires_unix_ms: u64::MAX,
            confirmable: true,
            observe: false,
            accept: None,
        };
        d.command(now, 1, cmd, reach(n), window, n as u16);
    }
    while let Some(b) = d.poll_journal() {
        let outcome = JournalWritten::Durable {
            rewritten: b.rewrite.is_some(),
        };
        for device in d.journal_written(b.id, outcome) {
            let n: u32 = device.trim_start_matches('d').parse().unwrap();
            d.try_send(now, 1, &device, reach(n), window, n as u16);
        }
    }
    while d.poll_transmit().is_some() {}
    assert_eq!(d.in_flight(), IN_FLIGHT as usize);
    d
}

fn bench_empty_acks(c: &mut Criterion) {
    let mut group = c.benchmark_group("flood");
    group.throughput(Throughput::Elements(ACKS as u64));
    let mut d = downlink_with_commands();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let spoofed: Vec<(SocketAddr, u16)> = (0..ACKS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (
                addr((state % u64::from(IN_FLIGHT)) as u32),
                (state >> 32) as u16,
            )
        })
        .collect();
    let genuine: Vec<(SocketAddr, u16)> = (0..ACKS as u32)
        .map(|i| {
            let n = i * (IN_FLIGHT / ACKS as u32);
            (addr(n), n as u16)
        })
        .collect();
    let now = Instant::now();
    group.bench_function("10k_empty_acks_100k_in_flight", |b| {
        b.iter(|| {
            for &(peer, mid) in &spoofed {
                black_box(d.handle_empty(now, peer, mid, false));
            }
        });
    });
    group.bench_function("10k_empty_acks_100k_in_flight_genuine", |b| {
        b.iter(|| {
            for &(peer, mid) in &genuine {
                black_box(d.handle_empty(now, peer, mid, false));
            }
        });
    });
    group.finish();
}

fn gateway(limits: LimitsConfig) -> Gateway {
    let mut config = IngressConfig::new(Topics::new("v6iot", "bench").unwrap());
    config.random_seed = Some([1; 18]);
    let ingress = Ingress::new(config, 1);
    let mut g = Gateway::new(
        ingress,
        GatewayConfig {
            limits,
            ..GatewayConfig::default()
        },
    );
    load_devices(&mut g, 16);
    g
}

fn report(mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"t".to_vec());
    p.add_option(CoapOption::ContentFormat, vec![110]);
    p.payload = br#"[{"n":"urn:dev:x:t","v":21.5}]"#.to_vec();
    p
}

/// A request under device 0's kid with a wrong key (past its Partial IVs).
fn forgery() -> Vec<u8> {
    let input = ContextInput {
        master_secret: vec![0x11; 16],
        master_salt: Vec::new(),
        id_context: None,
        sender_id: kid(0),
        recipient_id: Vec::new(),
    };
    let mut ctx = SecurityContext::new(&input, ContextConfig::default()).unwrap();
    let m = ctx.mark_to_persist().unwrap();
    ctx.persisted(m);
    let (p, _) = protect_request(&mut ctx, &report(9)).unwrap();
    p.to_bytes_unlimited().unwrap()
}

/// Drains what the gateway queued for the driver, as the server loop does.
fn drain(g: &mut Gateway) {
    while g.poll_transmit().is_some() {}
    while g.poll_security_event().is_some() {}
    while g.poll_audit().is_some() {}
}

fn bench_gateway_refusals(c: &mut Criterion) {
    let mut group = c.benchmark_group("flood");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let plain = report(1).to_bytes_unlimited().unwrap();
    let forged = forgery();
    let spoofer = addr(77);

    // An empty unauthenticated bucket: dropped unread.
    let mut g = gateway(LimitsConfig {
        per_source: Rate {
            per_second: 1e-9,
            burst: 1.0,
        },
        ..LimitsConfig::default()
    });
    g.handle_datagram(now, 1, spoofer, &plain);
    drain(&mut g);
    group.bench_function("source_limited_drop", |b| {
        b.iter(|| g.handle_datagram(now, 1, spoofer, black_box(&plain)));
        drain(&mut g);
    });

    // Plain requests, read and refused (their answers spent after the first four).
    let mut g = gateway(LimitsConfig {
        per_source: Rate {
            per_second: 1e12,
            burst: 1e12,
        },
        ..LimitsConfig::default()
    });
    group.bench_function("plain_request_refused", |b| {
        b.iter(|| g.handle_datagram(now, 1, spoofer, black_box(&plain)));
        drain(&mut g);
    });

    // Forgeries under an active kid, never quarantined: one failed AEAD open each.
    let mut g = gateway(LimitsConfig {
        failures_to_quarantine: u32::MAX,
        ..LimitsConfig::default()
    });
    group.bench_function("forgery_under_active_kid", |b| {
        b.iter(|| g.handle_datagram(now, 1, spoofer, black_box(&forged)));
        drain(&mut g);
    });
    assert_eq!(g.stats().quarantines, 0);

    // The same kid quarantined: refused unverified.
    let mut g = gateway(LimitsConfig {
        failures_to_quarantine: 1,
        quarantine: Duration::from_secs(1_000_000),
        ..LimitsConfig::default()
    });
    g.handle_datagram(now, 1, spoofer, &forged);
    drain(&mut g);
    assert_eq!(g.stats().quarantines, 1);
    group.bench_function("forgery_under_quarantined_kid", |b| {
        b.iter(|| g.handle_datagram(now, 1, spoofer, black_box(&forged)));
        drain(&mut g);
    });
    group.finish();
}

criterion_group!(benches, bench_empty_acks, bench_gateway_refusals);
criterion_main!(benches);
