//! The device registry on a real SQLite file (in release, with a file in the temporary
//! directory): the CSV import of a fleet's credentials, the lookup by kid the gateway's
//! keyring does (which unseals the secret), a listing of every device, and the audit trail's
//! verification — on a registry of 100,000 devices. Figures in BENCHMARKS.md.
//!
//! Run: `cargo bench -p v6iot-edge-router --bench registry`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use v6iot_edge_router::registry_db::{
    DeviceFilter, DeviceRecord, DeviceState, MasterSecret, Registry, SealKey, csv,
};

/// The registry the lookups, the listing and the verification run on.
const DEVICES: u32 = 100_000;

/// Rows per timed import (a fresh registry each time).
const IMPORT_ROWS: u32 = 10_000;

fn key() -> SealKey {
    SealKey::from_bytes(&[0x42; 32]).unwrap()
}

/// A credentials CSV of devices `0..n` (kid = the number, big-endian; secrets made from it),
/// in the format `v6iot-sim provision` writes.
fn credentials_csv(n: u32) -> String {
    let mut text = format!("{}\n", csv::HEADER);
    for i in 0..n {
        let record = DeviceRecord {
            id: format!("sim{i:06}"),
            kid: i.to_be_bytes().to_vec(),
            master_secret: MasterSecret::new(
                i.to_le_bytes().iter().cycle().take(16).copied().collect(),
            ),
            master_salt: None,
            class: 1,
            prefixes: vec!["2001:db8:1200:305::/64".parse().unwrap()],
            state: DeviceState::Active,
        };
        text.push_str(&csv::format_line(&record));
        text.push('\n');
    }
    text
}

fn import(c: &mut Criterion) {
    let text = credentials_csv(IMPORT_ROWS);
    let mut g = c.benchmark_group("registry");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(u64::from(IMPORT_ROWS)));
    g.bench_function("import_csv_10k_rows", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let reg = Registry::open(&dir.path().join("registry.db"), Some(key())).unwrap();
                (dir, reg)
            },
            |(dir, mut reg)| {
                let report = reg.import_csv(Cursor::new(text.as_bytes())).unwrap();
                assert_eq!(report.imported, IMPORT_ROWS as usize);
                (dir, reg)
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn on_a_full_registry(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&dir.path().join("registry.db"), Some(key())).unwrap();
    let report = reg
        .import_csv(Cursor::new(credentials_csv(DEVICES).as_bytes()))
        .unwrap();
    assert_eq!(report.imported, DEVICES as usize);

    let mut g = c.benchmark_group("registry_100k");
    g.throughput(Throughput::Elements(1));
    let mut n = 0_u32;
    g.bench_function("get_by_kid", |b| {
        b.iter(|| {
            n = (n + 7919) % DEVICES;
            let found = reg.get_by_kid(&n.to_be_bytes()).unwrap();
            black_box(found.unwrap())
        });
    });
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(u64::from(DEVICES)));
    g.bench_function("list_all", |b| {
        b.iter(|| {
            let all = reg.list(&DeviceFilter::default()).unwrap();
            assert_eq!(all.len(), DEVICES as usize);
            all
        });
    });
    g.bench_function("audit_verify", |b| {
        b.iter(|| {
            let report = reg.audit().verify().unwrap();
            assert!(report.rows >= u64::from(DEVICES));
            report
        });
    });
    g.finish();
}

criterion_group!(benches, import, on_a_full_registry);
criterion_main!(benches);
