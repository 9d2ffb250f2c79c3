//! Reopening an outbox directory: replay of what was not acknowledged, ids that go on
//! increasing, and torn or corrupt tails cut off on open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use v6iot_cloud_bridge::message::{NewMessage, OutboundMessage};
use v6iot_cloud_bridge::outbox::{self, OutboxConfig, OutboxError};

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> OutboxConfig {
    let mut c = OutboxConfig::new(dir);
    c.max_bytes = 1 << 20;
    c.segment_bytes = 4 << 10;
    c
}

fn msg(n: u64) -> NewMessage {
    NewMessage {
        topic: format!("v6iot/site/dev-{n}/telemetry"),
        payload: format!("payload {n}").into_bytes(),
        retain: false,
    }
}

async fn recv(rx: &mut mpsc::Receiver<OutboundMessage>) -> OutboundMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message within the timeout")
        .expect("the channel is open")
}

/// Nothing more arrives for a while.
async fn quiet(rx: &mut mpsc::Receiver<OutboundMessage>) {
    if let Ok(Some(m)) = timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected message {}", m.id);
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Writes messages 1..=n in one run and closes it; returns their ids.
async fn write_run(dir: &Path, n: u64) -> Vec<u64> {
    let (outbox, _rx, _acks) = outbox::open(config(dir)).await.unwrap();
    let ids = outbox.append((1..=n).map(msg).collect()).await.unwrap();
    outbox.close().await;
    ids
}

#[tokio::test]
async fn a_restart_replays_exactly_the_unacknowledged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
        let ids = outbox.append((1..=100).map(msg).collect()).await.unwrap();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        for id in 1..=60 {
            assert_eq!(recv(&mut rx).await.id, id);
            acks.ack(id);
        }
        outbox.close().await;
    }
    let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!((s.recovered_messages, s.ack_watermark), (40, 60));
    for id in 61..=100 {
        assert_eq!(recv(&mut rx).await, msg(id).with_id(id));
    }
    quiet(&mut rx).await;
    // ids go on from where they were
    assert_eq!(outbox.append_one(msg(1)).await.unwrap(), 101);
    assert_eq!(recv(&mut rx).await.id, 101);
    for id in 61..=101 {
        acks.ack(id);
    }
    outbox.close().await;
    drop(outbox);

    // everything acknowledged: nothing comes back, ids still go on
    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert_eq!(outbox.stats().recovered_messages, 0);
    quiet(&mut rx).await;
    assert_eq!(outbox.append_one(msg(2)).await.unwrap(), 102);
    outbox.close().await;
}

#[tokio::test]
async fn ids_continue_after_every_segment_was_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3_u64 {
        let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
        let ids = outbox.append((1..=200).map(msg).collect()).await.unwrap();
        assert_eq!(ids[0], round * 200 + 1);
        for _ in 0..200 {
            acks.ack(recv(&mut rx).await.id);
        }
        outbox.close().await;
    }
    assert_eq!(segments(dir.path()).len(), 1);
}

#[tokio::test]
async fn acknowledgements_above_the_watermark_may_come_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
        outbox.append((1..=5).map(msg).collect()).await.unwrap();
        for _ in 1..=5 {
            recv(&mut rx).await;
        }
        for id in [1, 2, 4, 5] {
            acks.ack(id);
        }
        outbox.close().await;
    }
    let (_outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    // 3 was never acknowledged; 4 and 5 were, out of order: at-least-once sends them again
    for id in 3..=5 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_record_torn_mid_way_is_cut_off_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!((s.torn_tails, s.recovered_messages), (1, 9));
    assert_eq!(s.truncated_bytes, outbox::record_len(&msg(10)).unwrap() - 5);
    for id in 1..=9 {
        assert_eq!(recv(&mut rx).await, msg(id).with_id(id));
    }
    quiet(&mut rx).await;
    // the lost record's id is not given again
    assert!(outbox.append_one(msg(11)).await.unwrap() > 10);
    assert_eq!(recv(&mut rx).await.payload, b"payload 11");
    outbox.close().await;
    drop(outbox);
    // the cut is permanent: a second open finds nothing to cut
    let (outbox, _rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert_eq!(outbox.stats().torn_tails, 0);
    assert_eq!(outbox.stats().recovered_messages, 10);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x5a; 37]).unwrap();
    drop(f);

    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!(
        (s.torn_tails, s.truncated_bytes, s.recovered_messages),
        (1, 37, 10)
    );
    for id in 1..=10 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_record_with_a_bad_crc_is_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 1; // the last payload byte of record 10
    bytes[last] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();

    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert_eq!(outbox.stats().recovered_messages, 9);
    for id in 1..=9 {
        assert_eq!(recv(&mut rx).await, msg(id).with_id(id));
    }
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_segment_torn_while_being_created_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 3).await;
    let torn = dir.path().join("00000000000000000004.seg");
    std::fs::write(&torn, b"V6OB\x01").unwrap();
    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert!(!torn.exists());
    assert_eq!(outbox.stats().recovered_messages, 3);
    for id in 1..=3 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
    assert_eq!(outbox.append_one(msg(4)).await.unwrap(), 4);
}

#[tokio::test]
async fn a_foreign_segment_stops_the_open_instead_of_being_lost() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 3).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4] = 9; // format version 9
    std::fs::write(&seg, bytes).unwrap();
    let err = outbox::open(config(dir.path())).await.err().unwrap();
    assert!(matches!(err, OutboxError::Foreign { .. }), "{err}");
}

#[tokio::test]
async fn a_damaged_acknowledgement_file_means_replay_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
        outbox.append((1..=4).map(msg).collect()).await.unwrap();
        for _ in 0..2 {
            acks.ack(recv(&mut rx).await.id);
        }
        outbox.close().await;
    }
    std::fs::write(dir.path().join("acked"), [0xff; 64]).unwrap();
    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert_eq!(outbox.stats().ack_watermark, 0);
    for id in 1..=4 {
        assert_eq!(recv(&mut rx).await.id, id);
    }
}

#[tokio::test]
async fn one_open_outbox_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    let err = outbox::open(config(dir.path())).await.err().unwrap();
    assert!(matches!(err, OutboxError::Locked { .. }), "{err}");
    outbox.close().await;
    let (again, _rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    again.close().await;
}

/// Byte offsets of records 1..=n as `write_run` lays them out in one segment.
fn record_offsets(n: u64) -> Vec<u64> {
    let mut at = 16; // the segment header
    (1..=n)
        .map(|i| {
            let o = at;
            at += outbox::record_len(&msg(i)).unwrap();
            o
        })
        .collect()
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(10);
    bytes[offsets[4] as usize + 30] ^= 0x10; // inside record 5: its CRC no longer matches
    std::fs::write(&seg, bytes).unwrap();

    let (outbox, mut rx, acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!((s.skipped_regions, s.torn_tails), (1, 0));
    assert_eq!(s.skipped_bytes, outbox::record_len(&msg(5)).unwrap());
    assert_eq!(s.recovered_messages, 9);
    for id in (1..=4).chain(6..=10) {
        let m = recv(&mut rx).await;
        assert_eq!(m, msg(id).with_id(id));
        acks.ack(id);
    }
    quiet(&mut rx).await;
    // the records after the damage live in a segment of their own, named by the first of them
    let names: Vec<String> = segments(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"00000000000000000006.seg".to_owned()),
        "{names:?}"
    );
    assert!(outbox.append_one(msg(11)).await.unwrap() > 10);
    assert_eq!(recv(&mut rx).await.payload, b"payload 11");
    outbox.close().await;
    drop(outbox);
    // repaired for good: the next open skips nothing and still has the unacknowledged one
    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!(
        (s.skipped_regions, s.torn_tails, s.recovered_messages),
        (0, 0, 1)
    );
    assert_eq!(recv(&mut rx).await.payload, b"payload 11");
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_zeroed_block_across_records_keeps_every_record_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 12).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(12);
    // from the middle of record 3 to the middle of record 6, as a lost disk block leaves it
    let (from, to) = (offsets[2] as usize + 10, offsets[5] as usize + 7);
    bytes[from..to].fill(0);
    std::fs::write(&seg, bytes).unwrap();

    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    let s = outbox.stats();
    assert_eq!((s.skipped_regions, s.torn_tails), (1, 0));
    assert_eq!(s.skipped_bytes, offsets[6] - offsets[2]);
    assert_eq!(s.recovered_messages, 8);
    for id in (1..=2).chain(7..=12) {
        assert_eq!(recv(&mut rx).await, msg(id).with_id(id));
    }
    quiet(&mut rx).await;
}

#[tokio::test]
async fn a_recovery_cut_short_by_a_crash_delivers_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets = record_offsets(10);
    bytes[offsets[3] as usize + 20] ^= 0x01; // record 4
    std::fs::write(&seg, &bytes).unwrap();
    // What a recovery leaves when it dies after writing the split-off segment (records 5..=10)
    // and before cutting the damaged file; and a half-written split of another attempt.
    let mut split = std::fs::read(&seg).unwrap()[..16].to_vec();
    split[8..16].copy_from_slice(&5_u64.to_le_bytes());
    split.extend_from_slice(&bytes[offsets[4] as usize..]);
    std::fs::write(dir.path().join("00000000000000000005.seg"), &split).unwrap();
    std::fs::write(
        dir.path().join("00000000000000000005.seg.split"),
        &split[..40],
    )
    .unwrap();

    let (outbox, mut rx, _acks) = outbox::open(config(dir.path())).await.unwrap();
    assert_eq!(outbox.stats().recovered_messages, 9);
    for id in (1..=3).chain(5..=10) {
        assert_eq!(recv(&mut rx).await, msg(id).with_id(id));
    }
    quiet(&mut rx).await;
    assert!(!dir.path().join("00000000000000000005.seg.split").exists());
}
