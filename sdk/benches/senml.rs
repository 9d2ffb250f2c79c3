//! SenML on the edge's hot path: a fleet device's report (base name, base time, a temperature
//! and a `seq` record) decoded, resolved and written as the SenML-JSON array the edge publishes
//! (what the edge's `ingress::telemetry::normalise` does per record).
//!
//! `senml_to_resolved_json/*` is the one-pass `resolve_to_json` with the edge's `"rid"` member;
//! `senml_owned_path/*` the path it replaced (`from_cbor`/`from_json`, `resolve`, `to_record`,
//! `to_json_vec`), which was `senml_to_resolved_json/*` before.
//!
//! Run: `cargo bench -p v6iot-sdk --bench senml` (short: add
//! `-- --warm-up-time 1 --measurement-time 3`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use v6iot_sdk::senml::{self, Encoding, PackBuilder, Record};

/// The same allocator as the `v6iot-edge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `simulator/src/fleet.rs` sends.
fn fleet_pack() -> senml::Pack {
    PackBuilder::new()
        .base_name("urn:dev:v6iot:sim00042:")
        .base_time(1_764_150_000.25)
        .record(Record::measurement("temperature", "Cel", 21.37))
        .record(Record {
            n: Some("seq".into()),
            v: Some(1234.0),
            ..Record::default()
        })
        .build()
}

/// The path `normalise` took before the borrowed resolver: owned pack, owned resolved
/// records, owned records again, serde's JSON.
fn reference(pack: &[u8], cbor: bool, now: f64) -> Vec<u8> {
    let pack = if cbor {
        senml::from_cbor(pack)
    } else {
        senml::from_json(pack)
    }
    .unwrap();
    let resolved = senml::resolve(&pack, now).unwrap();
    let records: Vec<Record> = resolved
        .iter()
        .map(senml::ResolvedRecord::to_record)
        .collect();
    senml::to_json_vec(&records).unwrap()
}

/// What the edge does now: one pass into one buffer, the record id first.
fn one_pass(body: &[u8], encoding: Encoding, now: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2 + 64);
    senml::resolve_to_json(
        encoding,
        body,
        now,
        Some(("rid", "1850000000000000001")),
        &mut out,
    )
    .unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let pack = fleet_pack();
    let cbor = senml::to_cbor(&pack).unwrap();
    let json = senml::to_json_vec(&pack).unwrap();
    let now = 1_764_150_001.0;
    assert_eq!(one_pass(&cbor, Encoding::Cbor, now)[0], b'[');
    let mut group = c.benchmark_group("senml_to_resolved_json");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fleet_cbor", |b| {
        b.iter(|| black_box(one_pass(black_box(&cbor), Encoding::Cbor, now)));
    });
    group.bench_function("fleet_json", |b| {
        b.iter(|| black_box(one_pass(black_box(&json), Encoding::Json, now)));
    });
    group.finish();
    let mut group = c.benchmark_group("senml_owned_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fleet_cbor", |b| {
        b.iter(|| black_box(reference(black_box(&cbor), true, now)));
    });
    group.bench_function("fleet_json", |b| {
        b.iter(|| black_box(reference(black_box(&json), false, now)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
