//! Append throughput of the outbox with group commit: N tasks append one message each at a
//! time (every append waits for its sync), while a consumer acknowledges everything so that
//! segments are reclaimed. The directory is under cargo's target dir (a real file system, not
//! tmpfs), or `V6IOT_BENCH_DIR`.
//!
//! ```text
//! cargo bench -p v6iot-cloud-bridge --bench outbox
//! ```
//!
//! Besides criterion's time per append, each case prints appends/s and appends per fsync.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use v6iot_cloud_bridge::message::NewMessage;
use v6iot_cloud_bridge::outbox::{self, OutboxConfig, OutboxHandle};

fn bench_dir() -> PathBuf {
    std::env::var_os("V6IOT_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from)
}

fn telemetry(n: u64) -> NewMessage {
    NewMessage {
        topic: format!("v6iot/plant-a/sensor-{}/telemetry", n % 1000),
        // about the size of one SenML JSON reading
        payload: format!(
            "[{{\"bn\":\"urn:dev:mac:0024befffe80{:04x}:\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":{}.5}}]",
            n % 0xffff,
            n % 40
        )
        .into_bytes(),
        retain: false,
    }
}

/// `appenders` tasks append `total` messages in all, one per append; returns the time taken.
async fn run(outbox: &OutboxHandle, appenders: u64, total: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let o = outbox.clone();
            let n = total / appenders + u64::from(a < total % appenders);
            tokio::spawn(async move {
                for k in 0..n {
                    o.append_one(telemetry(k * appenders + a)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("outbox_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for appenders in [1_u64, 16, 256, 1024] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let (outbox, mut rx, acks) = rt.block_on(async {
            let mut c = OutboxConfig::new(dir.path());
            c.max_bytes = 1 << 30;
            c.segment_bytes = 64 << 20;
            outbox::open(c).await.unwrap()
        });
        rt.spawn(async move {
            while let Some(m) = rx.recv().await {
                acks.ack(m.id);
            }
        });
        group.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &appenders| {
                b.iter_custom(|iters| rt.block_on(run(&outbox, appenders, iters.max(appenders))));
            },
        );
        // one plain measurement for the figures criterion does not show
        let before = outbox.stats();
        let total = (appenders * 200).clamp(2_000, 100_000);
        let took = rt.block_on(run(&outbox, appenders, total));
        let after = outbox.stats();
        let fsyncs = after.fsyncs - before.fsyncs;
        eprintln!(
            "outbox_append/{appenders}: {total} appends in {took:.2?}: {:.0} appends/s, \
             {fsyncs} fsyncs ({:.1} appends per fsync), {} batches",
            total as f64 / took.as_secs_f64(),
            total as f64 / fsyncs.max(1) as f64,
            after.batches - before.batches,
        );
        rt.block_on(outbox.close());
    }
    group.finish();
}

/// criterion's generated entry points (undocumented by design).
#[allow(missing_docs, unreachable_pub)]
mod entry {
    super::criterion_group!(benches, super::appends);
}
criterion_main!(entry::benches);
