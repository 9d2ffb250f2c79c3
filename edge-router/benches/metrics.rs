//! What the metrics cost the data path: the same lab-mode telemetry path through the gateway
//! (100,000 registered devices, datagram in, record stored, ACK out; plain CoAP, cheaper than
//! OSCORE, so the share measured is an upper bound) without and with what
//! the server loop does for `/metrics` — the datagram counts (`Live::received`/`sent`), the
//! publish-latency histogram's observation per record, and the stats tick's copy
//! (`Live::tick`, which walks the registrations) once per 250 ms worth of datagrams at the
//! rate just measured. Paired rounds, the order alternating; the medians are printed.
//! (The ingress's own request table, one addition per answer, is in both: it cannot be
//! switched off.)
//!
//! Run: `cargo bench -p v6iot-edge-router --bench metrics`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use v6iot_cloud_bridge::latency::{LatencyHistogram, ROUND_TRIP_BUCKETS};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::gateway::{Gateway, GatewayConfig};
use v6iot_edge_router::ingress::{Ingress, IngressConfig};
use v6iot_edge_router::ops::live::Live;

mod common;
use common::{addr, post, round};

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u32 = 100_000;
const PER_ROUND: u32 = 100_000;
const ROUNDS: usize = 15;
/// The server loop's stats tick.
const STATS_EVERY: Duration = Duration::from_millis(250);

struct Path {
    g: Gateway,
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    start: Instant,
    tick: u64,
}

impl Path {
    fn new() -> Path {
        let ingress = Ingress::new(
            IngressConfig::new(Topics::new("v6iot", "bench").unwrap()),
            1,
        );
        let mut config = GatewayConfig {
            require_oscore: false,
            ..GatewayConfig::default()
        };
        // every device sits in one /64: no source limit here (what is measured is the path)
        config.limits.per_source.per_second = 1e12;
        config.limits.per_source.burst = 1e12;
        let mut g = Gateway::new(ingress, config);
        let start = Instant::now();
        for n in 0..DEVICES {
            let q = vec![format!("ep=d{n:06}"), "lt=86400".to_owned()];
            let reg = post("rd", &q, 40, b"</t>;ct=0", 1);
            g.handle_datagram(start, 1, addr(n), &reg.to_bytes_unlimited().unwrap());
            while g.poll_transmit().is_some() {}
            while g.ingress_mut().poll_append().is_some() {}
        }
        let body = br#"[{"bn":"urn:dev:b:","n":"t","u":"Cel","v":21.5}]"#;
        // every device once a round (its message id new each round)
        let datagrams = (0..PER_ROUND)
            .map(|i| {
                let n = i.wrapping_mul(7919) % DEVICES;
                let p = post("t", &[], 110, body, 2);
                (addr(n), p.to_bytes_unlimited().unwrap())
            })
            .collect();
        Path {
            g,
            datagrams,
            start,
            tick: 0,
        }
    }

    /// Re-marks the prepared datagrams with fresh message ids (not timed).
    fn next_ids(&mut self) {
        self.tick += 1;
        let mid = 100u16.wrapping_add(self.tick as u16);
        for (_, d) in &mut self.datagrams {
            d[2..4].copy_from_slice(&mid.to_be_bytes());
        }
    }

    /// The path alone; nanoseconds per datagram.
    fn without(&mut self) -> f64 {
        self.next_ids();
        let now = self.start + Duration::from_secs(self.tick);
        let t = Instant::now();
        for (peer, bytes) in &self.datagrams {
            round(&mut self.g, now, *peer, bytes);
        }
        t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
    }

    /// The path with the metrics' work; a tick every `tick_every` datagrams.
    fn with(&mut self, live: &mut Live, histogram: &LatencyHistogram, tick_every: usize) -> f64 {
        self.next_ids();
        let now = self.start + Duration::from_secs(self.tick);
        let t = Instant::now();
        for (i, (peer, bytes)) in self.datagrams.iter().enumerate() {
            live.received(1);
            round(&mut self.g, now, *peer, bytes);
            live.sent(1);
            histogram.observe(Duration::from_micros(300 + (i as u64 & 511)));
            if i % tick_every == tick_every - 1 {
                live.tick(&self.g);
            }
        }
        t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
    }
}

/// The metrics' work alone, as [`Path::with`] does it per datagram; nanoseconds per datagram.
fn alone(g: &Gateway, live: &mut Live, histogram: &LatencyHistogram, tick_every: usize) -> f64 {
    let t = Instant::now();
    for i in 0..PER_ROUND as usize {
        live.received(black_box(1));
        live.sent(black_box(1));
        histogram.observe(Duration::from_micros(300 + (i as u64 & 511)));
        if i % tick_every == tick_every - 1 {
            live.tick(g);
        }
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("metrics_cost: bench");
        return;
    }
    let t0 = Instant::now();
    let mut path = Path::new();
    println!("registered {DEVICES} devices in {:?}", t0.elapsed());
    let mut live = Live::new("v6iot/bench/".into(), None);
    let histogram = LatencyHistogram::new(ROUND_TRIP_BUCKETS);
    // warm up, and the first rate
    let mut per = path.without();
    let (mut off, mut on, mut ratio, mut ticks, mut only) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in 0..ROUNDS {
        let tick_every = ((STATS_EVERY.as_nanos() as f64 / per) as usize).max(1);
        let (a, b) = if r % 2 == 0 {
            let a = path.without();
            (a, path.with(&mut live, &histogram, tick_every))
        } else {
            let b = path.with(&mut live, &histogram, tick_every);
            (path.without(), b)
        };
        only.push(alone(&path.g, &mut live, &histogram, tick_every));
        let t = Instant::now();
        live.tick(&path.g);
        ticks.push(t.elapsed().as_nanos() as f64 / 1e3);
        println!(
            "round {r}: without {a:.0} ns, with {b:.0} ns per datagram ({:+.1} %), a tick every {tick_every}",
            (b / a - 1.0) * 100.0
        );
        per = a;
        off.push(a);
        on.push(b);
        ratio.push(b / a);
    }
    let tick_us = median(ticks);
    let only = median(only);
    println!(
        "metrics_alone: {only:.1} ns per datagram ({:.2} % of the path without them)",
        only / median(off.clone()) * 100.0
    );
    println!(
        "metrics_cost: without {:.0} ns, with {:.0} ns per datagram; median paired difference {:+.1} % ({ROUNDS} rounds of {PER_ROUND}); one stats tick at {DEVICES} registrations {tick_us:.0} µs ({:.2} % of the loop at 4 ticks a second)",
        median(off),
        median(on),
        (median(ratio) - 1.0) * 100.0,
        tick_us * 4.0 / 1e4,
    );
}
