//! The dashboard on a board of 100,000 devices: its query (the default window by id, a
//! filter, a sort by last uplink), which runs on the board's own thread; and what a record
//! costs the data path: `update/before_*` as it was (lock the board, read the SenML, update
//! the row; also while a feed's filtered query holds the lock), `update/after_*` now (queue
//! the change for the board's thread, which is busy with a query all along).
//!
//! Run: `cargo bench -p v6iot-edge-router --bench dashboard`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use v6iot_edge_router::ops::dashboard::board::{Board, Query, SortKey, Update, senml_value};
use v6iot_edge_router::ops::dashboard::handle::{BoardHandle, UPDATE_QUEUE};

/// A device's stored record, as the outbox gets it.
const PAYLOAD: &[u8] =
    br#"[{"bn":"urn:dev:dev-012345/","n":"temperature","u":"Cel","v":21.5,"t":1765000000}]"#;

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

fn filter_query() -> Query {
    Query {
        filter: "DEV-0999".into(),
        limit: 50,
        ..Query::default()
    }
}

/// The old data path: the record read as SenML and the row updated under the board's lock.
fn before(board: &Mutex<Board>, unix_ms: u64) {
    let mut b = board.lock().unwrap();
    if let Some((text, value)) = senml_value(black_box(PAYLOAD)) {
        b.telemetry("dev-012345", unix_ms, text, value);
    }
}

/// The data path now: the change handed to the board's thread.
fn after(board: &BoardHandle, unix_ms: u64) -> bool {
    board.update(Update::Record {
        id: "dev-012345".to_owned(),
        unix_ms,
        payload: black_box(PAYLOAD).to_vec(),
    })
}

fn updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("dashboard_100k_update");
    let locked = Arc::new(Mutex::new(board()));
    g.bench_function("before_lock", |bench| {
        bench.iter(|| before(&locked, 3_000));
    });
    // a feed's filtered query, again and again, under the lock (a session a second at 20 ms
    // a query is 2 % of the time; here it is most of it, to show the wait)
    let stop = Arc::new(AtomicBool::new(false));
    let querier = {
        let (locked, stop) = (locked.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(locked.lock().unwrap().query(&filter_query()));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    g.bench_function("before_lock_while_queries_run", |bench| {
        bench.iter(|| before(&locked, 3_000));
    });
    stop.store(true, Ordering::Relaxed);
    querier.join().unwrap();
    drop(locked);

    let handle = BoardHandle::spawn(board(), UPDATE_QUEUE).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Timed in chunks that fit the queue, each while the board's thread is held by a read
    // (a query in progress); untimed, the chunk is then applied before the next.
    g.bench_function("after_queue_while_a_query_runs", |bench| {
        bench.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(UPDATE_QUEUE as u64 / 2);
                let (release, held) = mpsc::channel::<()>();
                let (started, running) = mpsc::channel::<()>();
                let reading = handle.read(move |b| {
                    started.send(()).unwrap();
                    held.recv().unwrap();
                    b.len()
                });
                let waiter = std::thread::scope(|s| {
                    let w = s.spawn(|| rt.block_on(reading));
                    running.recv().unwrap();
                    let t = Instant::now();
                    for i in 0..chunk {
                        assert!(after(&handle, 3_000 + i));
                    }
                    spent += t.elapsed();
                    release.send(()).unwrap();
                    w.join().unwrap()
                });
                assert_eq!(waiter, Some(DEVICES as usize));
                rt.block_on(handle.read(|_| ())).unwrap();
                left -= chunk;
            }
            spent
        });
    });
    g.bench_function("query_filter_on_the_boards_thread", |bench| {
        bench.iter(|| rt.block_on(handle.read(|b| black_box(b.query(&filter_query())).total)));
    });
    assert_eq!(handle.stats().dropped(), 0);
    g.finish();
}

criterion_group!(benches, queries, updates);
criterion_main!(benches);
