//! The dashboard's query on a board of 100,000 devices, which runs under the board's lock
//! (the server loop waits for it to record a registration or a value): the default window
//! (by id, no filter), a filter, and a sort by last uplink.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench dashboard`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use v6iot_edge_router::ops::dashboard::board::{Board, Query, SortKey};

const DEVICES: u32 = 100_000;

fn board() -> Board {
    let mut b = Board::new(DEVICES as usize);
    for i in 0..DEVICES {
        let addr = SocketAddr::from((
            [0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16],
            5683,
        ));
        b.registered(
            &format!("dev-{i:06}"),
            addr,
            1_000 + u64::from(i * 7 % 1_000),
        );
        b.telemetry(
            &format!("dev-{i:06}"),
            2_000,
            "temperature=21.5 Cel".into(),
            Some(21.5),
        );
    }
    b
}

fn queries(c: &mut Criterion) {
    let b = board();
    let mut g = c.benchmark_group("dashboard_100k");
    let cases = [
        (
            "window_by_id",
            Query {
                offset: 50_000,
                limit: 50,
                ..Query::default()
            },
        ),
        (
            "filter",
            Query {
                filter: "DEV-0999".into(),
                limit: 50,
                ..Query::default()
            },
        ),
        (
            "sort_last_seen",
            Query {
                sort: SortKey::LastSeen,
                desc: true,
                offset: 1_000,
                limit: 50,
                ..Query::default()
            },
        ),
    ];
    for (name, q) in cases {
        g.bench_function(name, |bench| {
            bench.iter(|| black_box(b.query(black_box(&q))))
        });
    }
    g.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
