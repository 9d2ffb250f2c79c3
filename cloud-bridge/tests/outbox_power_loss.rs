//! The outbox against crashes at every step, on `v6iot_durable::SimFs` (a disk that loses
//! what was not synced; a `kill -9` test cannot see a missing fsync, the page cache survives
//! it): after a restart every append that was reported durable and not acknowledged before a
//! completed close is published again, in id order, once; nothing that was never appended
//! appears; the acknowledgements a close persisted hold; and a second crash while the
//! outbox recovers changes none of it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;
use v6iot_cloud_bridge::message::NewMessage;
use v6iot_cloud_bridge::outbox::{self, OutboxConfig};
use v6iot_durable::{Crash, SimFs};

const DIR: &str = "/var/lib/v6iot/outbox";
/// Messages appended, one group each.
const APPENDS: u64 = 12;
/// Acknowledged once every append is durable, then persisted by the close.
const ACKED: u64 = 5;
const WAIT: Duration = Duration::from_secs(20);

fn config() -> OutboxConfig {
    let mut c = OutboxConfig::new(Path::new(DIR));
    c.max_bytes = 1 << 20;
    // a new segment every few messages: segment creation and its directory sync are crash
    // points too
    c.segment_bytes = 200;
    // the watermark is written by the close only (not when a timer happens to fire)
    c.ack_persist_interval = Duration::from_secs(3600);
    c
}

fn msg(n: u64) -> NewMessage {
    NewMessage {
        topic: format!("v6iot/site/dev-{n}/telemetry"),
        payload: format!("payload {n}").into_bytes(),
        retain: false,
    }
}

/// What a run did before the crash.
struct Run {
    /// Ids of the appends reported durable.
    confirmed: Vec<u64>,
    /// Ids acknowledged (1..=this); a crash may bring them back or not.
    acked: u64,
    /// Whether the close (which persists the acknowledgements) completed.
    closed: bool,
}

/// Opens the outbox, lets `steps` more steps happen, appends [`APPENDS`] messages (each
/// awaited), receives and acknowledges the first [`ACKED`] and closes.
async fn run_until_crash(fs: &SimFs, steps: u64) -> Run {
    let (outbox, mut rx, acks) = outbox::open_in(fs.clone(), config()).await.unwrap();
    fs.stop_after(Some(steps));
    let mut run = Run {
        confirmed: Vec::new(),
        acked: 0,
        closed: false,
    };
    for n in 1..=APPENDS {
        match outbox.append_one(msg(n)).await {
            Ok(id) => run.confirmed.push(id),
            Err(_) => return run,
        }
    }
    for _ in 0..ACKED {
        let m = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        acks.ack(m.id);
        run.acked = m.id;
    }
    outbox.close().await;
    run.closed = fs.down_at().is_none();
    run
}

/// Reopens after the crash and returns the ids published again (all of them: the outbox is
/// closed after the backlog, which ends the channel).
async fn replayed(fs: SimFs) -> Vec<u64> {
    let (outbox, mut rx, _acks) = outbox::open_in(fs, config()).await.unwrap();
    outbox.close().await;
    let mut ids = Vec::new();
    while let Some(m) = timeout(WAIT, rx.recv()).await.unwrap() {
        assert_eq!(m.topic, msg(m.id).topic, "message {} changed", m.id);
        ids.push(m.id);
    }
    ids
}

/// The replay after `crash`, checked to be the same when the restart itself crashes at any
/// step of the recovery (cutting a torn tail off, creating a segment, …).
/// Returns the replay and the number of those second crashes.
async fn replayed_across_a_second_crash(
    fs: &SimFs,
    crash: Crash,
    at: Option<&str>,
) -> (Vec<u64>, u64) {
    let after = fs.fork();
    after.restart(crash);
    let ids = replayed(after.fork()).await;
    for steps in 0.. {
        let again = after.fork();
        again.stop_after(Some(steps));
        let opened = outbox::open_in(again.clone(), config()).await;
        if opened.is_ok() && again.down_at().is_none() {
            // each smaller budget crashed the recovery
            return (ids, steps);
        }
        drop(opened);
        let second = again.down_at();
        let restarted = again.fork();
        restarted.restart(crash);
        assert_eq!(
            replayed(restarted).await,
            ids,
            "crash at {at:?}, then at {second:?} while recovering ({crash:?})"
        );
    }
    unreachable!()
}

/// Crashes at every step; returns the number of runs (crash points + the run that completes)
/// and of second crashes (while recovering).
async fn every_crash_point(crash: Crash) -> (u64, u64) {
    let base = SimFs::new();
    let mut second_crashes = 0;
    for steps in 0.. {
        let fs = base.fork();
        let run = run_until_crash(&fs, steps).await;
        let at = fs.down_at();
        // the disk is down (or the run is over): nothing the old tasks do changes a copy
        let (ids, seconds) = replayed_across_a_second_crash(&fs, crash, at.as_deref()).await;
        second_crashes += seconds;
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, ids, "crash at {at:?}: replay out of order or twice");
        for id in run.confirmed.iter().filter(|&&id| id > run.acked) {
            assert!(
                ids.contains(id),
                "crash at {at:?} ({crash:?}): durable message {id} lost; replayed {ids:?}"
            );
        }
        let last_possible = run.confirmed.len() as u64 + 1;
        assert!(
            ids.iter().all(|&id| id <= last_possible.min(APPENDS)),
            "crash at {at:?}: replayed {ids:?}, appended {:?}",
            run.confirmed
        );
        if at.is_none() {
            // the close persisted the acknowledgements
            assert!(run.closed);
            assert_eq!(ids, (ACKED + 1..=APPENDS).collect::<Vec<_>>());
            return (steps + 1, second_crashes);
        }
    }
    unreachable!()
}

#[tokio::test]
async fn durable_appends_survive_a_power_loss_at_every_step() {
    let (runs, second_crashes) = every_crash_point(Crash::PowerLoss).await;
    // at least a write and a sync per append, and the close's watermark write and sync
    assert!(runs > APPENDS * 2 + 2, "{runs} runs");
    // nothing unsynced survives a power loss, so the recovery finds no torn tail to cut and
    // changes nothing (takes no step that could crash)
    assert_eq!(second_crashes, 0);
}

#[tokio::test]
async fn durable_appends_survive_a_process_kill_at_every_step() {
    let (runs, second_crashes) = every_crash_point(Crash::ProcessKill).await;
    assert!(runs > APPENDS * 2 + 2, "{runs} runs");
    // a torn write survives a kill: most restarts cut a tail off (truncate, fsync), or
    // recreate a segment whose header was torn
    assert!(
        second_crashes >= runs,
        "{second_crashes} crashes while recovering"
    );
}
