//! The tokio side: the writer task (group commit, acknowledgement persistence, reclaiming) and
//! the reader task (feeds the publish channel from disk).
//!
//! Both are thin: they ask the [state core](super::state) what to do, run the blocking
//! [file I/O](super::disk) on tokio's blocking pool, and tell the core what happened.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, warn};

use super::AppendError;
use super::age::AgeTracker;
use super::disk::{self, Disk, ReadError};
use super::state::{OutboxState, ReadPos, ReadStep};
use crate::latency::LatencyHistogram;
use crate::message::{NewMessage, OutboundMessage};
use v6iot_durable::Fs;

/// Bytes the reader reads from a segment at a time: about what a publish window of records
/// takes (256 records of ~250 bytes), so that little is read twice (a record larger than
/// this is read whole on its own).
const READ_CHUNK: u64 = 64 * 1024;
/// Ranges up to this size are read on the reader's own task: they were just written (the
/// reader keeps up), so they are in the page cache and the read takes microseconds, less
/// than the two thread hops to the blocking pool and back. Larger ones (a backlog) go to
/// the blocking pool.
const INLINE_READ: u64 = 64 * 1024;

/// What the handles, the acknowledger and the tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The bookkeeping; locked briefly, never across an `.await` or I/O.
    pub(crate) core: Mutex<OutboxState>,
    /// New durable records, a rewind, or close.
    pub(crate) wake_reader: Notify,
    /// The watermark moved (something to persist or reclaim).
    pub(crate) wake_writer: Notify,
    /// When the unacknowledged groups became durable (the oldest record's age).
    pub(crate) ages: Mutex<AgeTracker>,
    /// How long each group's write and sync took.
    pub(crate) sync_latency: LatencyHistogram,
}

impl Shared {
    /// Locks the core (a panic elsewhere cannot leave it half-changed: nothing in it panics).
    pub(crate) fn core(&self) -> MutexGuard<'_, OutboxState> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the age marks (briefly; nothing in them panics).
    pub(crate) fn ages(&self) -> MutexGuard<'_, AgeTracker> {
        self.ages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bytes reserved in the core for an append on its way to the writer; given back on drop
/// unless the writer committed them.
#[derive(Debug)]
pub(crate) struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Reservation {
    /// Wraps bytes that [`OutboxState::try_reserve`] granted.
    pub(crate) fn new(shared: Arc<Shared>, bytes: u64) -> Reservation {
        Reservation { shared, bytes }
    }

    /// Takes the bytes out: the caller accounts for them (in [`OutboxState::commit`]).
    fn disarm(&mut self) -> u64 {
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.shared.core().release(self.bytes);
        }
    }
}

/// One `append` call on its way to the writer.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) msgs: Vec<NewMessage>,
    pub(crate) lens: Vec<u64>,
    pub(crate) reservation: Reservation,
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>, AppendError>>,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Request {
    /// Make these messages durable.
    Append(AppendRequest),
    /// Finish what came before, persist the watermark, stop; answer when done.
    Close(oneshot::Sender<()>),
}

/// How the writer gathers groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterConfig {
    pub(crate) max_batch: usize,
    pub(crate) max_batch_delay: Duration,
    pub(crate) min_sync_interval: Duration,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The writer: gathers appends into groups, writes and syncs each group once, persists the
/// watermark and deletes reclaimable segments. Ends on close or when every handle is gone.
pub(crate) async fn run_writer<F: Fs>(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    disk: Disk<F>,
    config: WriterConfig,
) {
    let mut disk = Some(disk);
    let mut closing = None;
    // when the last group's write and sync began
    let mut last_sync: Option<Instant> = None;
    loop {
        disk = maintain(&shared, disk, false).await;
        let deadline = shared.core().poll_timeout().map(Instant::from_std);
        let first = tokio::select! {
            r = rx.recv() => r,
            () = shared.wake_writer.notified() => continue,
            () = sleep_until(deadline) => continue,
        };
        let mut group = Group::default();
        if !group.take(first, &mut closing) {
            break;
        }
        // one deadline for the group: `max_batch_delay` from now, or (pacing) no sooner than
        // `min_sync_interval` after the last sync began; a full group or a close ends it early
        let mut gather_until = Instant::now() + config.max_batch_delay;
        if let Some(paced) = last_sync.map(|t| t + config.min_sync_interval) {
            gather_until = gather_until.max(paced);
        }
        while group.count < config.max_batch {
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < gather_until => {
                    tokio::time::timeout_at(gather_until, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            if !group.take(next, &mut closing) {
                break;
            }
        }
        last_sync = Some(Instant::now());
        disk = write_batch(&shared, disk, group.batch).await;
        if closing.is_some() {
            break;
        }
    }
    shared.core().close();
    rx.close();
    let mut closers: Vec<oneshot::Sender<()>> = closing.into_iter().collect();
    while let Ok(r) = rx.try_recv() {
        match r {
            Request::Append(a) => {
                let _ = a.reply.send(Err(AppendError::Closed));
            }
            Request::Close(done) => closers.push(done),
        }
    }
    // persists the watermark, then drops the files (and the directory lock)
    drop(maintain(&shared, disk, true).await);
    shared.wake_reader.notify_one();
    for done in closers {
        let _ = done.send(());
    }
}

/// The appends gathered for one write and sync, and how many messages they hold.
#[derive(Default)]
struct Group {
    batch: Vec<AppendRequest>,
    count: usize,
}

impl Group {
    /// Takes the writer's next request into the group: `false` when the group ends there (the
    /// channel is closed or empty by the deadline, or a close was asked for: noted in
    /// `closing`).
    fn take(
        &mut self,
        request: Option<Request>,
        closing: &mut Option<oneshot::Sender<()>>,
    ) -> bool {
        match request {
            None => false,
            Some(Request::Close(done)) => {
                *closing = Some(done);
                false
            }
            Some(Request::Append(a)) => {
                self.count += a.msgs.len();
                self.batch.push(a);
                true
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes one group and answers every append in it.
async fn write_batch<F: Fs>(
    shared: &Arc<Shared>,
    disk: Option<Disk<F>>,
    mut batch: Vec<AppendRequest>,
) -> Option<Disk<F>> {
    let lens: Vec<u64> = batch.iter().flat_map(|a| a.lens.iter().copied()).collect();
    let plan = shared.core().plan(&lens);
    let msgs: Vec<NewMessage> = batch
        .iter_mut()
        .flat_map(|a| std::mem::take(&mut a.msgs))
        .collect();
    let Some(mut d) = disk else {
        fail_all(batch, "the outbox writer failed earlier");
        return None;
    };
    let result = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let r = d.write(&plan, &msgs);
        (d, plan, r, started.elapsed())
    })
    .await;
    match result {
        Ok((d, plan, Ok(fsyncs), took)) => {
            let reserved: u64 = batch.iter_mut().map(|a| a.reservation.disarm()).sum();
            shared.sync_latency.observe(took);
            shared.core().commit(&plan, reserved, fsyncs);
            if let Some(last) = plan.chunks.last().map(|c| c.first_id + c.count as u64) {
                shared.ages().durable(last.saturating_sub(1), now());
            }
            shared.wake_reader.notify_one();
            let mut id = plan.chunks.first().map_or(0, |c| c.first_id);
            for a in batch {
                let n = a.lens.len() as u64;
                let _ = a.reply.send(Ok((id..id + n).collect()));
                id += n;
            }
            Some(d)
        }
        Ok((d, _, Err(e), _)) => {
            let why = format!("writing the outbox failed: {e}");
            error!("{why}; no more appends until the outbox is reopened");
            shared.core().fail(why.clone());
            shared.wake_reader.notify_one();
            fail_all(batch, &why);
            Some(d)
        }
        Err(e) => {
            let why = format!("the outbox write task failed: {e}");
            error!("{why}");
            shared.core().fail(why.clone());
            fail_all(batch, &why);
            None
        }
    }
}

fn fail_all(batch: Vec<AppendRequest>, why: &str) {
    for a in batch {
        let _ = a.reply.send(Err(AppendError::Io(why.to_owned())));
    }
}

/// Persists the watermark when due (or `force`) and deletes reclaimable segments.
async fn maintain<F: Fs>(
    shared: &Arc<Shared>,
    disk: Option<Disk<F>>,
    force: bool,
) -> Option<Disk<F>> {
    let (persist, reclaim) = {
        let core = shared.core();
        (core.poll_persist(now(), force), core.reclaimable())
    };
    if persist.is_none() && reclaim.is_empty() {
        return disk;
    }
    let mut d = disk?;
    let result = tokio::task::spawn_blocking(move || {
        let persisted = persist.map(|w| d.persist_watermark(w).map(|()| w));
        let deleted: Vec<u64> = reclaim
            .into_iter()
            .filter(|&base| match d.delete_segment(base) {
                Ok(()) => true,
                Err(e) => {
                    warn!(base, "cannot delete an acknowledged outbox segment: {e}");
                    false
                }
            })
            .collect();
        (d, persisted, deleted)
    })
    .await;
    match result {
        Ok((d, persisted, deleted)) => {
            let mut core = shared.core();
            match persisted {
                Some(Ok(w)) => core.persisted(w, now()),
                Some(Err(e)) => {
                    warn!("cannot persist the acknowledgement watermark: {e}");
                    core.persist_failed(now());
                }
                None => {}
            }
            for base in deleted {
                core.reclaimed(base);
            }
            Some(d)
        }
        Err(e) => {
            let why = format!("the outbox maintenance task failed: {e}");
            error!("{why}");
            shared.core().fail(why);
            None
        }
    }
}

/// The reader: hands every durable, unacknowledged message to the publish channel in id
/// order, reading from disk as the channel drains (the backlog stays on disk).
pub(crate) async fn run_reader<F: Fs>(
    shared: Arc<Shared>,
    fs: F,
    dir: PathBuf,
    tx: mpsc::Sender<OutboundMessage>,
    window: usize,
) {
    let mut pos = ReadPos::default();
    loop {
        let step = shared.core().poll_read(&mut pos);
        match step {
            ReadStep::Done => return,
            ReadStep::Wait => {
                tokio::select! {
                    () = shared.wake_reader.notified() => {}
                    () = tx.closed() => return,
                }
            }
            ReadStep::Read { base, offset, end } => {
                let read = if end.saturating_sub(offset) <= INLINE_READ {
                    Ok(disk::read_records(
                        &fs, &dir, base, offset, end, READ_CHUNK, window,
                    ))
                } else {
                    let (f, d) = (fs.clone(), dir.clone());
                    tokio::task::spawn_blocking(move || {
                        disk::read_records(&f, &d, base, offset, end, READ_CHUNK, window)
                    })
                    .await
                };
                match read {
                    Ok(Ok((mut msgs, next))) => {
                        shared.core().read_done(&mut pos, base, next, &mut msgs);
                        for m in msgs {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        let live = shared.core().read_failed(&mut pos, base);
                        if live {
                            match e {
                                ReadError::Io(e) => {
                                    error!(base, offset, "cannot read an outbox segment: {e}");
                                }
                                ReadError::Corrupt(e) => {
                                    error!(base, offset, "corrupt durable outbox record: {e:?}");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        error!("the outbox read task failed: {e}");
                        return;
                    }
                }
            }
        }
    }
}
