//! The outbox on a real directory within one process: append → publish → ack cycles, group
//! commit, the byte bound, reclaiming, redelivery and close.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use v6iot_cloud_bridge::message::{NewMessage, OutboundMessage};
use v6iot_cloud_bridge::outbox::{
    self, AckSender, AppendError, OutboxConfig, OutboxHandle, OutboxStats,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> OutboxConfig {
    let mut c = OutboxConfig::new(dir);
    c.max_bytes = 1 << 20;
    c.segment_bytes = 64 << 10;
    c
}

fn msg(n: u64) -> NewMessage {
    NewMessage {
        topic: format!("v6iot/site/dev-{}/telemetry", n % 7),
        payload: format!("[{{\"n\":\"t\",\"v\":{n}}}]").into_bytes(),
        retain: n.is_multiple_of(5),
    }
}

async fn recv(rx: &mut mpsc::Receiver<OutboundMessage>) -> OutboundMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message within the timeout")
        .expect("the channel is open")
}

/// Waits until `pred` holds for the stats (the writer works in the background).
async fn until(handle: &OutboxHandle, pred: impl Fn(&OutboxStats) -> bool) -> OutboxStats {
    timeout(WAIT, async {
        loop {
            let s = handle.stats();
            if pred(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stats never matched: {:?}", handle.stats()))
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

#[tokio::test]
async fn append_receive_ack_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
    for round in 0..3_u64 {
        let ids = outbox.append(vec![msg(1), msg(2), msg(3)]).await.unwrap();
        let one = outbox.append_one(msg(4)).await.unwrap();
        assert_eq!(ids, [1, 2, 3].map(|i| i + 4 * round));
        assert_eq!(one, 4 + 4 * round);
        for (k, id) in ids.iter().chain([&one]).enumerate() {
            let m = recv(&mut rx).await;
            assert_eq!(m, msg(k as u64 + 1).with_id(*id));
            acks.ack(m.id);
        }
        let s = until(&outbox, |s| s.pending_messages == 0).await;
        assert_eq!(s.ack_watermark, 4 + 4 * round);
    }
    let s = outbox.stats();
    assert_eq!(
        (s.appended, s.acked, s.delivered, s.next_id),
        (12, 12, 12, 13)
    );
    assert_eq!(outbox.append(Vec::new()).await, Ok(Vec::new()));
    // acknowledging twice or an id never stored is harmless
    acks.ack(3);
    acks.ack(999);
    let s = acks.stats();
    assert_eq!((s.ack_duplicates, s.ack_unknown), (1, 1));
    outbox.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_appends_share_few_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_batch_delay = Duration::from_millis(5);
    c.publish_window = 2000;
    let (outbox, mut rx, _acks) = outbox::open(c).await.unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|n| {
            let o = outbox.clone();
            tokio::spawn(async move { o.append_one(msg(n)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    let s = outbox.stats();
    eprintln!(
        "1000 concurrent appends: {} batches, {} fsyncs",
        s.batches, s.fsyncs
    );
    assert_eq!(s.appended, 1000);
    assert!(s.fsyncs <= 50, "group commit did not batch: {s:?}");
    assert!(s.batches <= 50);
    for id in 1..=1000 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
}

/// Sends `n` appends one at a time, `gap` apart (each from its own task, so it does not wait
/// for the one before), and waits for all of them; returns the time from the first send to
/// the last answer and how many groups the writer wrote meanwhile.
async fn spread_appends(outbox: &OutboxHandle, n: u64, gap: Duration) -> (Duration, u64) {
    let batches = outbox.stats().batches;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let o = outbox.clone();
        tasks.push(tokio::spawn(async move { o.append_one(msg(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    (start.elapsed(), outbox.stats().batches - batches)
}

/// With `min_sync_interval`, syncs start at least that far apart: appends one after another
/// wait for the interval, and what arrives meanwhile shares the next sync. Virtual time: the
/// writer's file I/O runs on the blocking pool, and while a blocking task runs tokio does
/// not advance the paused clock, so a sync takes no virtual time and the timings are exact.
#[tokio::test(start_paused = true)]
async fn syncs_are_paced_by_the_minimum_interval() {
    let interval = Duration::from_millis(200);
    // ten appends spread over 180 ms, inside one interval
    let (spread, gap) = (10, Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.min_sync_interval = interval;
    c.publish_window = 1000;
    let (outbox, _rx, _acks) = outbox::open(c).await.unwrap();
    let start = tokio::time::Instant::now();
    for n in 0..3 {
        outbox.append_one(msg(n)).await.unwrap();
    }
    // the first sync starts at once, the next two each an interval after the one before
    assert_eq!(
        start.elapsed(),
        2 * interval,
        "three appends in a row, {:?}",
        outbox.stats()
    );
    assert_eq!(outbox.stats().batches, 3);
    // right after a sync, appends arriving one by one within the interval share one sync,
    // which starts an interval after the last
    let (took, groups) = spread_appends(&outbox, spread, gap).await;
    assert_eq!((took, groups), (interval, 1), "{:?}", outbox.stats());
    let s = outbox.stats();
    assert_eq!((s.appended, s.batches), (3 + spread, 4), "{s:?}");
    outbox.close().await;

    // without pacing the same spread appends are synced one by one, as they arrive
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.publish_window = 1000;
    let (outbox, _rx, _acks) = outbox::open(c).await.unwrap();
    let (took, groups) = spread_appends(&outbox, spread, gap).await;
    assert_eq!((took, groups), ((spread as u32 - 1) * gap, spread));
    outbox.close().await;
}

/// Pacing only ever gathers: a group that reaches `max_batch` is written at once, and so is
/// what is pending when a close arrives, however recent the last sync.
#[tokio::test(start_paused = true)]
async fn a_full_group_or_a_close_ends_the_paced_wait() {
    let interval = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.min_sync_interval = interval;
    c.max_batch = 4;
    c.publish_window = 1000;
    let (outbox, _rx, _acks) = outbox::open(c).await.unwrap();
    outbox.append_one(msg(0)).await.unwrap();
    // ten appends 20 ms apart right after that sync: the first two groups fill up (at 60 and
    // 140 ms) and are synced at once; the last two wait for the interval after the second
    let (took, groups) = spread_appends(&outbox, 10, Duration::from_millis(20)).await;
    assert_eq!(
        (took, groups),
        (Duration::from_millis(340), 3),
        "{:?}",
        outbox.stats()
    );
    // an append just after a sync, then a close: written and closed without waiting
    let start = tokio::time::Instant::now();
    let (appended, ()) = tokio::join!(outbox.append_one(msg(11)), outbox.close());
    assert_eq!(appended, Ok(12));
    assert_eq!(start.elapsed(), Duration::ZERO);
    let s = outbox.stats();
    assert_eq!((s.appended, s.batches), (12, 5), "{s:?}");
}

#[tokio::test]
async fn full_is_refused_then_accepted_once_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_bytes = 2048;
    c.max_bytes = 4096;
    c.retry_after = Duration::from_secs(3);
    let (outbox, mut rx, acks) = outbox::open(c).await.unwrap();
    let big = |n: u64| NewMessage {
        topic: "t/x".to_owned(),
        payload: vec![n as u8; 200],
        retain: false,
    };
    assert_eq!(outbox::record_len(&big(0)).unwrap(), 222);
    let mut stored = 0;
    while outbox.append_one(big(stored)).await.is_ok() {
        stored += 1;
    }
    assert_eq!(stored, 18); // 18 * 222 = 3996 <= 4096 < 19 * 222
    assert_eq!(
        outbox.append_one(big(0)).await,
        Err(AppendError::Full {
            retry_after: Duration::from_secs(3)
        })
    );
    let s = outbox.stats();
    assert_eq!((s.full_refusals, s.stored_bytes), (2, 3996));
    // the refused messages were not stored: exactly the 18 come out
    for id in 1..=18 {
        let m = recv(&mut rx).await;
        assert_eq!(m.id, id);
        acks.ack(id);
    }
    let s = until(&outbox, |s| s.stored_bytes + 222 <= 4096).await;
    assert!(s.segments_deleted >= 1);
    let id = outbox.append_one(big(7)).await.unwrap();
    assert_eq!(id, 19);
    assert_eq!(recv(&mut rx).await, big(7).with_id(19));
}

#[tokio::test]
async fn what_can_never_fit_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_bytes = 1024;
    c.max_bytes = 2048;
    let (outbox, _rx, _acks) = outbox::open(c).await.unwrap();
    let huge = NewMessage {
        topic: "t".to_owned(),
        payload: vec![0; 1024],
        retain: false,
    };
    assert!(matches!(
        outbox.append_one(huge).await,
        Err(AppendError::TooLarge { limit: 1008, .. })
    ));
    let long_topic = NewMessage {
        topic: "t".repeat(70_000),
        payload: Vec::new(),
        retain: false,
    };
    assert!(matches!(
        outbox.append_one(long_topic).await,
        Err(AppendError::TooLarge { limit: 65535, .. })
    ));
    // together larger than the whole outbox, each one fine
    let many = (0..20).map(|_| NewMessage {
        topic: "t".to_owned(),
        payload: vec![0; 200],
        retain: false,
    });
    assert!(matches!(
        outbox.append(many.collect()).await,
        Err(AppendError::TooLarge { limit: 2048, .. })
    ));
    assert_eq!(outbox.stats().stored_bytes, 0);
}

#[tokio::test]
async fn a_backlog_stays_on_disk_while_the_bridge_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.publish_window = 4;
    c.segment_bytes = 8 << 10;
    let (outbox, mut rx, acks) = outbox::open(c).await.unwrap();
    for k in 0..20 {
        outbox
            .append((0..100).map(|n| msg(k * 100 + n)).collect())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = outbox.stats();
    assert!(s.segments > 5, "{s:?}");
    // the channel (4) and one read (4) at most: the rest waits on disk
    assert!(s.delivered <= 8, "{s:?}");
    for id in 1..=2000 {
        let m = recv(&mut rx).await;
        assert_eq!(m, msg(id - 1).with_id(id));
        acks.ack(id);
    }
    let s = until(&outbox, |s| s.segments == 1).await;
    assert_eq!(s.pending_messages, 0);
    assert_eq!(segment_files(dir.path()), 1);
}

#[tokio::test]
async fn acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_bytes = 1024;
    c.max_bytes = 1 << 20;
    let (outbox, mut rx, acks) = outbox::open(c).await.unwrap();
    for n in 0..100 {
        outbox.append_one(msg(n)).await.unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files >= 5, "{files} segments");
    assert_eq!(outbox.stats().segments, files as u64);
    // acknowledging the first half deletes about half of the segments
    for _ in 0..50 {
        acks.ack(recv(&mut rx).await.id);
    }
    let s = until(&outbox, |s| s.segments_deleted > 0).await;
    assert!(s.segments < files as u64);
    for _ in 50..100 {
        acks.ack(recv(&mut rx).await.id);
    }
    until(&outbox, |s| s.segments == 1).await;
    assert_eq!(segment_files(dir.path()), 1);
}

#[tokio::test]
async fn redeliver_hands_out_the_unacknowledged_again() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
    outbox.append((1..=5).map(msg).collect()).await.unwrap();
    for id in 1..=5 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
    acks.ack(1);
    acks.ack(2);
    acks.ack(4);
    acks.redeliver();
    assert_eq!(recv(&mut rx).await.id, 3);
    assert_eq!(recv(&mut rx).await.id, 5);
    outbox.append_one(msg(6)).await.unwrap();
    assert_eq!(recv(&mut rx).await.id, 6);
}

#[tokio::test]
async fn close_finishes_writing_and_ends_the_publish_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, mut rx, acks): (OutboxHandle, _, AckSender) =
        outbox::open(config(dir.path())).await.unwrap();
    outbox.append((1..=3).map(msg).collect()).await.unwrap();
    outbox.close().await;
    assert_eq!(outbox.append_one(msg(9)).await, Err(AppendError::Closed));
    outbox.close().await; // twice is fine
    for id in 1..=3 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
    assert_eq!(timeout(WAIT, rx.recv()).await.unwrap(), None);
    acks.ack(1); // after close: ignored by the files, harmless
}
