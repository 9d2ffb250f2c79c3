//! The durable outbox (shared/DESIGN.md §8): records that the edge router has acknowledged to
//! a device stay on disk until the broker has confirmed them.
//!
//! # What it promises
//!
//! - [`OutboxHandle::append`] resolves only once its messages are on disk and synced
//!   (`fdatasync`). Appends that arrive while a sync runs are written together and share the
//!   next one (group commit): one sync for many records.
//! - The outbox is bounded: record bytes on disk plus appends on their way there never exceed
//!   [`OutboxConfig::max_bytes`]. Beyond that an append is refused with
//!   [`AppendError::Full`], whose `retry_after` the edge turns into 5.03 + Max-Age. Nothing is
//!   dropped silently.
//! - Publishing is at-least-once. The receiver that [`open`] returns yields every durable,
//!   unacknowledged message in id order, the backlog of an earlier run first. The bridge
//!   acknowledges ids through [`AckSender::ack`] once the broker confirmed them; segments whose
//!   every message is acknowledged are deleted.
//! - `kill -9` at any moment loses nothing that was reported durable: on the next open every
//!   such message is delivered again unless its acknowledgement had been persisted. A torn or
//!   corrupt record is never delivered: each record has a CRC, and a torn tail is cut off on
//!   open. A damaged stretch in the middle of a segment costs only the records in it: the
//!   valid ones after it are found again and kept (see below). Ids increase across restarts: an id is never given twice, not even one of a record
//!   cut off as torn (only ids of records that never reached the file can come again, and
//!   nobody saw those).
//! - Memory is bounded: the publish channel holds [`OutboxConfig::publish_window`] messages;
//!   a backlog (slow bridge, broker down) stays on disk and is read back in order as the
//!   channel drains.
//!
//! Duplicates are possible (that is at-least-once): acknowledgements are persisted every
//! [`OutboxConfig::ack_persist_interval`] as a watermark (every id up to it acknowledged), so
//! after a crash the messages acknowledged since, and those acknowledged out of order above the
//! watermark, come again. The platform drops them by id.
//!
//! # Layers
//!
//! | file | job |
//! |---|---|
//! | `log.rs` | the on-disk format below, as pure encode/decode functions |
//! | `state.rs` | sans-IO bookkeeping: ids, byte accounting, the watermark, which segments go, what the publisher reads next, when to persist |
//! | `disk.rs` | blocking file I/O (through `v6iot_durable::Fs`): recovery, group-commit writes, the acknowledgement file |
//! | `task.rs` | the tokio writer task (gathers appends, one sync per group, on the blocking pool) and the reader task (disk → publish channel) |
//!
//! # On-disk format (version 1)
//!
//! A directory holds segment files named by the first id they may hold, as 20 decimal digits
//! (`00000000000000000001.seg`), one acknowledgement file, `acked`, and an empty file `lock`
//! that an open outbox holds an exclusive `flock` on. All integers are little-endian.
//!
//! A segment starts with a 16-byte header, then records back to back:
//!
//! ```text
//! header:  magic "V6OB" (4) | version 1 (1) | reserved, zero (3) | base id (8)
//! record:  len (4) | crc (4) | id (8) | flags (1) | topic len (2) | topic (UTF-8) | payload
//! ```
//!
//! `len` counts the bytes after itself (19 + topic + payload bytes in all). `crc` is the
//! CRC-32 (IEEE, as zlib) of the `len` field followed by everything after the `crc` field.
//! `flags` bit 0 is the MQTT retain flag; the other bits are zero. Ids in a segment are
//! consecutive and at least its base; segments do not overlap and ids grow from one to the next.
//! A segment is sealed before it would grow past [`OutboxConfig::segment_bytes`] (a single
//! record may be up to that size less the header); only the last segment is appended to.
//!
//! On open each segment is read record by record. At a record that is short (torn), has a wrong
//! CRC, reserved flags, a bad topic, or an id out of sequence, recovery resynchronises: it looks
//! for the next offset where a record's length, id and CRC check out and whose id is above every
//! id before it (below the next segment's base, and no further above the last good id than the
//! damaged bytes could have held records, one per 19 bytes). The damaged stretch is skipped,
//! logged with the ids lost and counted ([`OutboxStats::skipped_regions`]); the valid records
//! after it are copied to a segment of their own, named by their first id (written to
//! `….seg.split`, synced, renamed), and only then is the damaged file cut after its last good
//! record. When no valid record follows, the rest of the file is a torn or corrupt tail: it is
//! cut (truncated and synced), logged and counted ([`OutboxStats::torn_tails`]). A crash during
//! recovery leaves either the damaged file (recovered again the same way) or the split segment
//! complete (the damaged file then ends in a tail that is cut). A last segment whose header is
//! incomplete or all zeros (a crash while creating it) is removed. Segment files are synced
//! with `fdatasync`; the directory is synced after a segment is created. A header of another
//! magic or version makes [`open`] fail rather than lose data.
//!
//! `acked` holds two 32-byte slots, written alternately and synced:
//!
//! ```text
//! slot:    magic "V6OBACK1" (8) | seq (8) | watermark (8) | crc (4) | zero (4)
//! ```
//!
//! `crc` is the CRC-32 of the first 24 bytes. The valid slot with the higher `seq` wins, so a
//! torn write of one slot leaves the other. Every id up to `watermark` is acknowledged.
//!
//! The next id after open is above the last record of every segment, the base of every segment
//! and the watermark, and above the ids the bytes cut off could have held (one per 19 bytes).
//! Appends then continue the last segment if their ids follow on from its records, else start
//! a new one. The active (last) segment is never deleted, so its base or records keep all this
//! true even when everything else is acknowledged and reclaimed.
//!
//! # Space
//!
//! [`OutboxConfig::max_bytes`] counts record bytes in live segments (headers aside), including
//! acknowledged records in segments not yet deleted. With acknowledgements in id order at most
//! about one segment of acknowledged records is held back, so configure `max_bytes` to at least
//! two segments (checked by [`open`]).

pub mod age;
mod disk;
mod log;
mod state;
mod task;

#[cfg(test)]
mod state_tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use v6iot_durable::{Fs, StdFs};

use crate::latency::{HistogramSnapshot, LatencyHistogram};
use crate::message::{NewMessage, OutboundMessage};
use state::{Limits, OutboxState, Refusal};
use task::{AppendRequest, Request, Reservation, Shared, WriterConfig};

/// How an outbox is kept. [`OutboxConfig::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// Directory of the segment files (created if missing). One open outbox per directory at a
    /// time ([`OutboxError::Locked`] otherwise; [`OutboxHandle::close`] releases it).
    pub dir: PathBuf,
    /// Bound on record bytes on disk plus appends on their way (default 256 MiB).
    pub max_bytes: u64,
    /// Size at which a segment is sealed and a new one started (default 16 MiB).
    pub segment_bytes: u64,
    /// Most messages written under one sync (default 4096).
    pub max_batch: usize,
    /// How long the writer waits for more appends before writing a group that is not full
    /// (default zero: a group is what arrived while the previous sync ran).
    pub max_batch_delay: Duration,
    /// The shortest time from the start of one sync to the start of the next (default zero).
    /// Under a steady stream of appends a fast disk would otherwise sync as often as it can,
    /// a few records each time, and every `fdatasync` costs CPU (the journal commit); with an
    /// interval the appends that arrive meanwhile share one. While appends are sparse (the
    /// last sync started longer ago than this) it adds no wait. A full group (`max_batch`) or
    /// a close does not wait for it; nor does it add to `max_batch_delay` (the writer waits
    /// for whichever ends later).
    pub min_sync_interval: Duration,
    /// Capacity of the publish channel, in messages (default 256).
    pub publish_window: usize,
    /// How often at most the acknowledgement watermark is synced to disk (default 1 s); it is
    /// also synced on close.
    pub ack_persist_interval: Duration,
    /// What [`AppendError::Full`] tells clients to wait (default 10 s).
    pub retry_after: Duration,
}

impl OutboxConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> OutboxConfig {
        OutboxConfig {
            dir: dir.into(),
            max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            max_batch: 4096,
            max_batch_delay: Duration::ZERO,
            min_sync_interval: Duration::ZERO,
            publish_window: 256,
            ack_persist_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(10),
        }
    }

    fn check(&self) -> Result<(), OutboxError> {
        let min_segment = log::SEGMENT_HEADER_LEN + log::RECORD_OVERHEAD + 1;
        let bad = if self.segment_bytes < min_segment {
            format!("segment_bytes must be at least {min_segment}")
        } else if self.max_bytes < 2 * self.segment_bytes {
            "max_bytes must be at least twice segment_bytes".to_owned()
        } else if self.max_batch == 0 || self.publish_window == 0 {
            "max_batch and publish_window must be at least 1".to_owned()
        } else {
            return Ok(());
        };
        Err(OutboxError::Config(bad))
    }
}

/// Why an outbox could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The configuration is inconsistent.
    #[error("outbox configuration: {0}")]
    Config(String),
    /// A file or the directory could not be read, written or synced.
    #[error("outbox I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A segment file with another magic or format version: left alone rather than lost.
    #[error("{path} is not a v6iot outbox segment of format version 1")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Another open outbox (in this process or another) holds the directory.
    #[error("the outbox in {path} is already open")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The blocking task that opens the outbox did not finish.
    #[error("the outbox open task failed: {0}")]
    Task(String),
}

/// Why an append was not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The outbox is full: nothing was written. Try again after `retry_after` (CoAP 5.03 with
    /// Max-Age).
    #[error("outbox full; retry after {retry_after:?}")]
    Full {
        /// Hint for the client.
        retry_after: Duration,
    },
    /// Can never fit: a topic over 65535 bytes, a record larger than a segment, or an append
    /// larger than the whole outbox. Nothing was written.
    #[error("{bytes} bytes cannot be stored (limit {limit})")]
    TooLarge {
        /// The size that is too large.
        bytes: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The outbox was closed.
    #[error("outbox closed")]
    Closed,
    /// Writing or syncing failed; the outbox refuses appends until it is reopened. The
    /// messages may or may not be on disk (if they are, they will be published).
    #[error("outbox I/O: {0}")]
    Io(String),
}

impl From<Refusal> for AppendError {
    fn from(r: Refusal) -> AppendError {
        match r {
            Refusal::Full { retry_after } => AppendError::Full { retry_after },
            Refusal::TooLarge { bytes, limit } => AppendError::TooLarge { bytes, limit },
            Refusal::Closed => AppendError::Closed,
            Refusal::Failed(why) => AppendError::Io(why),
        }
    }
}

/// Gauges and counters of an open outbox (counters since open).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// The id the next message will get.
    pub next_id: u64,
    /// Every id up to this one is acknowledged.
    pub ack_watermark: u64,
    /// Durable messages not yet acknowledged.
    pub pending_messages: u64,
    /// Record bytes in live segments (what counts against `max_bytes`).
    pub stored_bytes: u64,
    /// Bytes of appends accepted and not yet written.
    pub reserved_bytes: u64,
    /// The configured bound.
    pub max_bytes: u64,
    /// Live segment files.
    pub segments: u64,
    /// Messages made durable.
    pub appended: u64,
    /// Group commits (one write of one or more messages).
    pub batches: u64,
    /// Syncs of segment files and the directory for group commits.
    pub fsyncs: u64,
    /// Syncs of the acknowledgement file.
    pub ack_fsyncs: u64,
    /// Acknowledgements that acknowledged a pending message.
    pub acked: u64,
    /// Acknowledgements of messages already acknowledged.
    pub ack_duplicates: u64,
    /// Acknowledgements of ids that are not durable messages.
    pub ack_unknown: u64,
    /// Messages handed to the publish channel.
    pub delivered: u64,
    /// Appends refused with [`AppendError::Full`].
    pub full_refusals: u64,
    /// Unacknowledged messages found on open.
    pub recovered_messages: u64,
    /// Segments whose torn or corrupt tail was cut off on open (or a torn new segment removed).
    pub torn_tails: u64,
    /// Bytes cut off on open.
    pub truncated_bytes: u64,
    /// Damaged stretches in the middle of a segment skipped on open: the valid records after
    /// each were kept (moved to a segment of their own).
    pub skipped_regions: u64,
    /// Their bytes.
    pub skipped_bytes: u64,
    /// Durable records that could not be read back (disk trouble); they were skipped.
    pub read_errors: u64,
    /// Segment files deleted because every message in them was acknowledged.
    pub segments_deleted: u64,
}

/// Appends to the outbox. Cheap to clone; the outbox runs until [`close`](Self::close) or
/// until every handle is dropped.
#[derive(Debug, Clone)]
pub struct OutboxHandle {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

/// Acknowledges published messages (the bridge's side). Cheap to clone.
#[derive(Debug, Clone)]
pub struct AckSender {
    shared: Arc<Shared>,
}

/// Opens the outbox in `config.dir` (recovering what a previous run left) and starts its tasks
/// on the current tokio runtime.
///
/// Returns the handle to append with, the channel of messages to publish (the backlog first,
/// then new messages as they become durable, each once, in id order; it ends after
/// [`OutboxHandle::close`]), and the acknowledger. Messages go on being stored while the
/// receiver is not read or is dropped; a dropped receiver is not replaced until the next open.
pub async fn open(
    config: OutboxConfig,
) -> Result<(OutboxHandle, mpsc::Receiver<OutboundMessage>, AckSender), OutboxError> {
    open_in(StdFs, config).await
}

/// [`open`] on the file system `fs` (the crash tests' [`v6iot_durable::SimFs`]).
///
/// # Errors
///
/// As [`open`]: a bad configuration, another open holding the directory's lock, or an I/O
/// error or foreign file met while recovering.
pub async fn open_in<F: Fs>(
    fs: F,
    config: OutboxConfig,
) -> Result<(OutboxHandle, mpsc::Receiver<OutboundMessage>, AckSender), OutboxError> {
    config.check()?;
    let dir = config.dir.clone();
    let disk_fs = fs.clone();
    let (disk, recovered) = tokio::task::spawn_blocking(move || disk::Disk::open(disk_fs, &dir))
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))??;
    let limits = Limits {
        max_bytes: config.max_bytes,
        segment_bytes: config.segment_bytes,
        retry_after: config.retry_after,
        ack_persist_interval: config.ack_persist_interval,
    };
    let opened = tokio::time::Instant::now().into_std();
    let core = OutboxState::recover(limits, &recovered, opened);
    // what a previous run left is at least as old as this start
    let mut ages = age::AgeTracker::default();
    let stats = core.stats();
    if stats.pending_messages > 0 {
        ages.durable(stats.next_id.saturating_sub(1), opened);
    }
    let shared = Arc::new(Shared {
        core: std::sync::Mutex::new(core),
        wake_reader: Notify::new(),
        wake_writer: Notify::new(),
        ages: std::sync::Mutex::new(ages),
        sync_latency: LatencyHistogram::new(crate::latency::SYNC_BUCKETS),
    });
    let (req_tx, req_rx) = mpsc::channel(config.max_batch);
    let (pub_tx, pub_rx) = mpsc::channel(config.publish_window);
    let writer = WriterConfig {
        max_batch: config.max_batch,
        max_batch_delay: config.max_batch_delay,
        min_sync_interval: config.min_sync_interval,
    };
    tokio::spawn(task::run_writer(shared.clone(), req_rx, disk, writer));
    tokio::spawn(task::run_reader(
        shared.clone(),
        fs,
        config.dir,
        pub_tx,
        config.publish_window,
    ));
    Ok((
        OutboxHandle {
            tx: req_tx,
            shared: shared.clone(),
        },
        pub_rx,
        AckSender { shared },
    ))
}

/// Bytes `msg` takes on disk, as counted against [`OutboxConfig::max_bytes`], or why it cannot
/// be stored.
pub fn record_len(msg: &NewMessage) -> Result<u64, AppendError> {
    log::record_len(msg).map_err(|e| match e {
        log::EncodeError::TopicTooLong => AppendError::TooLarge {
            bytes: msg.topic.len() as u64,
            limit: u64::from(u16::MAX),
        },
        log::EncodeError::RecordTooLong => AppendError::TooLarge {
            bytes: msg.payload.len() as u64,
            limit: u64::from(u32::MAX),
        },
    })
}

impl OutboxHandle {
    /// Stores `msgs` and resolves with their ids once they are durable. All or nothing: a
    /// refused append wrote nothing. A full outbox is refused at once, without waiting.
    ///
    /// If the future is dropped after the messages were handed to the writer, they may still
    /// become durable and be published.
    pub async fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<u64>, AppendError> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let lens = msgs.iter().map(record_len).collect::<Result<Vec<_>, _>>()?;
        let total = lens.iter().sum();
        let largest = lens.iter().copied().max().unwrap_or(0);
        self.shared.core().try_reserve(total, largest)?;
        let reservation = Reservation::new(self.shared.clone(), total);
        let (reply, answer) = oneshot::channel();
        let request = Request::Append(AppendRequest {
            msgs,
            lens,
            reservation,
            reply,
        });
        self.tx
            .send(request)
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.unwrap_or(Err(AppendError::Closed))
    }

    /// Stores one message; resolves with its id once it is durable.
    pub async fn append_one(&self, msg: NewMessage) -> Result<u64, AppendError> {
        let ids = self.append(vec![msg]).await?;
        ids.first().copied().ok_or(AppendError::Closed)
    }

    /// Gauges and counters.
    pub fn stats(&self) -> OutboxStats {
        self.shared.core().stats()
    }

    /// How long the oldest unacknowledged record has been durable (records a previous run
    /// left count from this open); `None` when every record is acknowledged.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        let watermark = self.shared.core().watermark();
        self.shared
            .ages()
            .oldest(watermark, tokio::time::Instant::now().into_std())
    }

    /// How long group commits (the write and its `fdatasync`) took.
    pub fn sync_latency(&self) -> HistogramSnapshot {
        self.shared.sync_latency.snapshot()
    }

    /// Stops the outbox: appends sent before are written, later ones fail with
    /// [`AppendError::Closed`], the watermark is persisted, and the publish channel ends once
    /// what is durable has been handed out. Resolves when the files are closed, so the directory
    /// can be opened again.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

impl AckSender {
    /// The broker confirmed message `id`. Unknown and repeated ids are counted and ignored.
    pub fn ack(&self, id: u64) {
        let wake = {
            let mut core = self.shared.core();
            let before = core.watermark();
            core.ack(id);
            core.ack_wakes_writer(before)
        };
        if wake {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Hands out every unacknowledged message again, from the oldest (for a bridge that lost
    /// its broker session with messages in flight). Messages already in the publish channel
    /// still come first, so some arrive twice.
    pub fn redeliver(&self) {
        self.shared.core().rewind();
        self.shared.wake_reader.notify_one();
    }

    /// Gauges and counters.
    pub fn stats(&self) -> OutboxStats {
        self.shared.core().stats()
    }
}
