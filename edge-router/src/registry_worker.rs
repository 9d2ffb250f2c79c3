//! The registry's own thread: every SQLite access of the running edge happens here, off the
//! ingress loop.
//!
//! - **OSCORE state batches** from the gateway ([`PersistBatch`]): one transaction each,
//!   reported back as [`FromRegistry::Persisted`] — the answers they hold go out only then.
//! - **Audit rows**: appended in the order received, one transaction per chunk; the chunk grows
//!   with the backlog ([`Jobs::audit_chunk`]: [`Jobs::AUDIT_CHUNK`] rows when few wait, up to
//!   [`Jobs::MAX_AUDIT_CHUNK`] under a registration storm) so the lane drains faster than a
//!   million-device fleet fills it (the gateway already aggregates authentication failures, so
//!   a flood of those is a few rows).
//! - **Changes by other processes** (`v6iot-edge devices revoke …`): about once a second
//!   `PRAGMA data_version` is read (a cheap read of the file header, no query); when it moved,
//!   every device is reloaded and sent as [`FromRegistry::Devices`]. The edge's own writes go
//!   through this connection and do not move its `data_version`.
//! - **Audit checkpoints** ([`crate::audit::checkpoint`]): the head of the trail, signed into
//!   its file and sent as [`FromRegistry::Checkpoint`] to be published — at start, after rows
//!   were added (by the edge, or by another process as `data_version` tells) at a bounded rate,
//!   regularly, and into the file once more when the thread ends.
//!
//! # State before audit
//!
//! Answers to verified devices wait for their state batch, so audit rows must never hold one
//! up. The work comes in two lanes ([`Jobs`]): a state batch is always taken before any audit
//! rows waiting, and audit rows go in chunks, so a state batch waits for at most one chunk's
//! transaction (at most [`Jobs::MAX_AUDIT_CHUNK`] rows), never for a backlog. The audit lane is
//! bounded ([`Jobs::MAX_AUDIT_ROWS`]). The gateway is told the room left
//! ([`RegistryWorker::audit_room`]) and answers 5.03 with Max-Age to new bindings and
//! registrations it could not audit (`gateway::audit_room`), so a registration storm waits for
//! the trail instead of leaving gaps in it. Rows that cannot be refused and still find the lane
//! full (a slow or full disk) are dropped and counted
//! ([`RegistryWorker::audit`] returns how many), the driver logs them and puts the count in the
//! next security report (`audit_rows_dropped`); nothing blocks. SQLite has one writer per file,
//! so a chunk's transaction that hangs on a stuck disk still holds the state batch behind it
//! (which then fails and is retried; its answers stay held): the same disk holds both.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use crate::audit::AuditEvent;
use crate::audit::checkpoint::CheckpointMessage;
use crate::audit::checkpointer::{CheckpointConfig, Checkpointer};
use crate::gateway::{DeviceKeys, PersistBatch};
use crate::registry_db::Registry;

/// How often the registry file is checked for changes by other processes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// One piece of work for the registry thread.
#[derive(Debug)]
pub enum Job {
    /// Write this batch of OSCORE state.
    Persist(PersistBatch),
    /// Append these audit rows (one chunk).
    Audit(Vec<AuditEvent>),
}

/// The registry thread's work in two lanes, sans-IO: state batches first, audit rows bounded
/// and in chunks (see the module docs).
#[derive(Debug)]
pub struct Jobs {
    persist: VecDeque<PersistBatch>,
    audit: VecDeque<AuditEvent>,
    /// Audit rows waiting at most.
    bound: usize,
    /// Audit rows taken for writing since start.
    taken: u64,
    /// The thread's CPU time since start, as it last told.
    cpu: Duration,
    /// Audit rows dropped since start because the lane was full.
    dropped: u64,
    closed: bool,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs::new(Self::MAX_AUDIT_ROWS)
    }
}

impl Jobs {
    /// The default bound of audit rows waiting (about 250 bytes each in memory): room for every
    /// device of a large plant binding and registering at once (`[registry] audit_lane_rows`
    /// sets it: an edge for a million devices that must take their registration storm without
    /// a 5.03 gives it two rows per device).
    pub const MAX_AUDIT_ROWS: usize = 262_144;
    /// Audit rows per transaction when the backlog is small.
    pub const AUDIT_CHUNK: usize = 256;
    /// Audit rows per transaction at most, with a backlog: what a state batch may have to wait
    /// for. Each commit costs a WAL fsync (`synchronous=FULL`, about 2.5 ms on the bench
    /// machine), which at 256 rows a transaction was most of the work and let a million-device
    /// registration storm overflow [`Self::MAX_AUDIT_ROWS`]; SQLite alone wrote ~63,000 rows/s
    /// in 256-row transactions and ~215,000 in 2,048-row ones (about 10 ms each), gaining
    /// little beyond.
    pub const MAX_AUDIT_CHUNK: usize = 2048;
    /// A chunk takes this share of the backlog (1/4): the lane empties in a few transactions,
    /// each no larger than it needs to be.
    const AUDIT_BACKLOG_SHARE: usize = 4;

    /// Rows the next audit transaction takes when `backlog` rows wait: a quarter of the
    /// backlog, at least [`Self::AUDIT_CHUNK`], at most [`Self::MAX_AUDIT_CHUNK`], never more
    /// than wait.
    pub fn audit_chunk(backlog: usize) -> usize {
        (backlog / Self::AUDIT_BACKLOG_SHARE)
            .clamp(Self::AUDIT_CHUNK, Self::MAX_AUDIT_CHUNK)
            .min(backlog)
    }

    /// Lanes holding at most `bound` audit rows waiting.
    pub fn new(bound: usize) -> Jobs {
        Jobs {
            persist: VecDeque::new(),
            audit: VecDeque::new(),
            bound,
            taken: 0,
            cpu: Duration::ZERO,
            dropped: 0,
            closed: false,
        }
    }

    /// Queues a state batch.
    pub fn push_persist(&mut self, batch: PersistBatch) {
        self.persist.push_back(batch);
    }

    /// Queues audit rows while there is room; returns how many were dropped.
    pub fn push_audit(&mut self, rows: Vec<AuditEvent>) -> u64 {
        let room = self.audit_room();
        let dropped = rows.len().saturating_sub(room) as u64;
        self.audit.extend(rows.into_iter().take(room));
        self.dropped += dropped;
        dropped
    }

    /// Takes the next job: a state batch if one waits, else the next chunk of audit rows.
    pub fn take(&mut self) -> Option<Job> {
        if let Some(batch) = self.persist.pop_front() {
            return Some(Job::Persist(batch));
        }
        if self.audit.is_empty() {
            return None;
        }
        let n = Self::audit_chunk(self.audit.len());
        self.taken += n as u64;
        Some(Job::Audit(self.audit.drain(..n).collect()))
    }

    /// Audit rows waiting.
    pub fn audit_len(&self) -> usize {
        self.audit.len()
    }

    /// Audit rows the lane can still take before it drops.
    pub fn audit_room(&self) -> usize {
        self.bound.saturating_sub(self.audit.len())
    }

    /// Audit rows dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The thread has used `cpu` of CPU time since start.
    pub fn note_cpu(&mut self, cpu: Duration) {
        self.cpu = self.cpu.max(cpu);
    }

    /// The lane as the gateway needs to know it.
    pub fn audit_lane(&self) -> AuditLane {
        AuditLane {
            room: self.audit_room(),
            waiting: self.audit.len(),
            taken: self.taken,
            cpu: self.cpu,
        }
    }
}

/// The audit lane seen from the ingress loop: what it can take, what waits, and how much the
/// registry thread took so far in how much CPU time (its pace sets the gateway's retry hints,
/// see [`crate::gateway::Gateway::handle_audit_drain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLane {
    /// Rows the lane can still take before it drops.
    pub room: usize,
    /// Rows waiting.
    pub waiting: usize,
    /// Rows taken for writing since start.
    pub taken: u64,
    /// The registry thread's CPU time since start (state batches too: they take its time
    /// from the audit rows).
    pub cpu: Duration,
}

/// What the registry thread reports.
#[derive(Debug)]
pub enum FromRegistry {
    /// Batch `id` was written (`ok`) or not.
    Persisted {
        /// The batch.
        id: u64,
        /// Durable.
        ok: bool,
    },
    /// The registry changed: the whole device list.
    Devices(Vec<DeviceKeys>),
    /// An audit checkpoint to publish on the security topic.
    Checkpoint(CheckpointMessage),
}

/// The lanes shared with the thread.
#[derive(Debug)]
struct Shared {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // A panic on the registry thread poisons the lock; the queue itself is still sound.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running thread: hand it work; [`stop`](Self::stop) ends it after the work queued.
#[derive(Debug)]
pub struct RegistryWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RegistryWorker {
    /// Starts the thread on `registry`; results go to `out`. `load_devices` is false when the
    /// registry has no seal key (lab mode without credentials): no device reloads then.
    /// `checkpoints` says where and how often audit checkpoints are made; `audit_rows` bounds
    /// the audit lane ([`Jobs::new`]).
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn start(
        registry: Registry,
        load_devices: bool,
        checkpoints: CheckpointConfig,
        audit_rows: usize,
        out: UnboundedSender<FromRegistry>,
    ) -> std::io::Result<RegistryWorker> {
        let shared = Arc::new(Shared {
            jobs: Mutex::new(Jobs::new(audit_rows)),
            ready: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("v6iot-registry".into())
            .spawn(move || {
                let key = registry.seal_key().cloned();
                let mut checkpointer =
                    Checkpointer::start(checkpoints, key, registry.audit(), Instant::now());
                run(registry, load_devices, &mut checkpointer, &theirs, &out);
            })?;
        Ok(RegistryWorker {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a state batch (taken before any audit rows waiting). False when the thread is
    /// gone.
    pub fn persist(&self, batch: PersistBatch) -> bool {
        if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
            return false;
        }
        self.shared.lock().push_persist(batch);
        self.shared.ready.notify_one();
        true
    }

    /// Queues audit rows; returns how many were dropped because the audit lane is full.
    pub fn audit(&self, rows: Vec<AuditEvent>) -> u64 {
        let dropped = self.shared.lock().push_audit(rows);
        self.shared.ready.notify_one();
        dropped
    }

    /// The audit lane now: the room it has (the gateway refuses what it could not audit:
    /// [`crate::gateway::Gateway::handle_audit_room`]) and how fast it drains.
    pub fn audit_lane(&self) -> AuditLane {
        self.shared.lock().audit_lane()
    }

    /// Ends the thread after the work already queued.
    pub fn stop(mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the registry thread panicked");
        }
    }
}

/// What the thread does next.
enum Step {
    Work(Job),
    Poll,
    Stop,
}

/// Waits until there is work, a timer is due (`until`), or the worker is stopped with nothing
/// left to do.
fn wait(shared: &Shared, until: Instant) -> Step {
    let cpu = thread_cpu();
    let mut jobs = shared.lock();
    jobs.note_cpu(cpu);
    loop {
        if let Some(job) = jobs.take() {
            return Step::Work(job);
        }
        if jobs.closed {
            return Step::Stop;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Step::Poll;
        }
        jobs = match shared.ready.wait_timeout(jobs, left) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

fn run(
    mut registry: Registry,
    load_devices: bool,
    checkpointer: &mut Checkpointer,
    shared: &Shared,
    out: &UnboundedSender<FromRegistry>,
) {
    let mut version = registry.data_version().ok();
    let mut next_poll = Instant::now() + POLL_EVERY;
    loop {
        match wait(shared, next_poll.min(checkpointer.poll_timeout())) {
            Step::Work(Job::Persist(batch)) => {
                let ok = match registry.store_oscore_state(&batch.rows) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, rows = batch.rows.len(), "OSCORE state not persisted (answers held, retried)");
                        false
                    }
                };
                if out
                    .send(FromRegistry::Persisted { id: batch.id, ok })
                    .is_err()
                {
                    return;
                }
            }
            Step::Work(Job::Audit(rows)) => {
                append_audit(&mut registry, &rows);
                checkpointer.changed(Instant::now());
            }
            Step::Poll => {}
            Step::Stop => {
                checkpointer.finish(unix_ms(), registry.audit());
                return;
            }
        }
        if let Some(m) = checkpointer.handle_timeout(Instant::now(), unix_ms(), registry.audit())
            && out.send(FromRegistry::Checkpoint(m)).is_err()
        {
            return;
        }
        if Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + POLL_EVERY;
        let now_version = registry.data_version().ok();
        if now_version != version {
            // Another process wrote (maybe audit rows: `devices add`, `revoke` …).
            checkpointer.changed(Instant::now());
        }
        if now_version == version || !load_devices {
            version = now_version;
            continue;
        }
        version = now_version;
        if !reload(&registry, out) {
            return;
        }
    }
}

/// Appends one chunk of audit rows in one transaction (row by row if that fails).
fn append_audit(registry: &mut Registry, rows: &[AuditEvent]) {
    let audit = registry.audit();
    if let Err(e) = audit.append_all(rows) {
        // One bad row must not cost the others: write them one by one.
        tracing::warn!(error = %e, rows = rows.len(), "audit batch failed; row by row");
        for row in rows {
            if let Err(e) = audit.append(row) {
                tracing::error!(error = %e, kind = %row.kind, "audit row not written");
            }
        }
    }
}

/// Sends every device after a change by another process; false when nobody listens any more.
fn reload(registry: &Registry, out: &UnboundedSender<FromRegistry>) -> bool {
    match registry.device_keys() {
        Ok((devices, problems)) => {
            for p in problems {
                tracing::error!(error = %p, "device left out of the reload");
            }
            tracing::info!(
                devices = devices.len(),
                "registry changed: devices reloaded"
            );
            out.send(FromRegistry::Devices(devices)).is_ok()
        }
        Err(e) => {
            tracing::error!(error = %e, "registry reload failed");
            true
        }
    }
}

/// The CPU time the calling thread has used (zero where the clock cannot be read).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| AuditEvent::auth_failure(format!("row {i}")))
            .collect()
    }

    fn batch(id: u64) -> PersistBatch {
        PersistBatch {
            id,
            rows: Vec::new(),
        }
    }

    #[test]
    fn a_state_batch_never_waits_behind_the_audit_backlog() {
        let mut jobs = Jobs::default();
        assert_eq!(jobs.push_audit(rows(10_000)), 0);
        jobs.push_persist(batch(1));
        // The batch queued after 10,000 rows is the very next job.
        assert!(matches!(jobs.take(), Some(Job::Persist(b)) if b.id == 1));
        // Audit rows then go in chunks, in order; a batch arriving meanwhile goes first again.
        let Some(Job::Audit(first)) = jobs.take() else {
            panic!("audit chunk expected");
        };
        assert_eq!(first.len(), Jobs::audit_chunk(10_000));
        assert_eq!(first[0].detail, "row 0");
        jobs.push_persist(batch(2));
        assert!(matches!(jobs.take(), Some(Job::Persist(b)) if b.id == 2));
        let Some(Job::Audit(second)) = jobs.take() else {
            panic!("audit chunk expected");
        };
        assert_eq!(second[0].detail, format!("row {}", first.len()));
        let mut taken = first.len() + second.len();
        while let Some(job) = jobs.take() {
            match job {
                Job::Audit(chunk) => taken += chunk.len(),
                Job::Persist(_) => panic!("no batch queued"),
            }
        }
        assert_eq!(taken, 10_000);
    }

    #[test]
    fn the_audit_chunk_grows_with_the_backlog_up_to_its_bound() {
        // Few rows: all of them, or the small chunk.
        assert_eq!(Jobs::audit_chunk(0), 0);
        assert_eq!(Jobs::audit_chunk(1), 1);
        assert_eq!(Jobs::audit_chunk(Jobs::AUDIT_CHUNK), Jobs::AUDIT_CHUNK);
        assert_eq!(Jobs::audit_chunk(4 * Jobs::AUDIT_CHUNK), Jobs::AUDIT_CHUNK);
        // A backlog: a quarter of it per transaction …
        assert_eq!(Jobs::audit_chunk(4_000), 1_000);
        assert_eq!(
            Jobs::audit_chunk(4 * Jobs::MAX_AUDIT_CHUNK),
            Jobs::MAX_AUDIT_CHUNK
        );
        // … never more than the bound, even with the lane full.
        assert_eq!(
            Jobs::audit_chunk(Jobs::MAX_AUDIT_ROWS),
            Jobs::MAX_AUDIT_CHUNK
        );
        let mut last = 0;
        for backlog in (0..=Jobs::MAX_AUDIT_ROWS).step_by(97) {
            let chunk = Jobs::audit_chunk(backlog);
            assert!(chunk >= last, "monotonic at {backlog}");
            assert!(chunk <= backlog.min(Jobs::MAX_AUDIT_CHUNK));
            assert!(backlog == 0 || chunk > 0);
            last = chunk;
        }
    }

    #[test]
    fn a_full_audit_lane_drains_in_few_transactions() {
        // A registration storm filled the lane: it drains in about 140 transactions (128 of
        // the largest chunk at least), where 256-row chunks took 1,024 commits.
        let mut jobs = Jobs::default();
        assert_eq!(jobs.push_audit(rows(Jobs::MAX_AUDIT_ROWS)), 0);
        let mut transactions = 0;
        let mut written = 0;
        while let Some(Job::Audit(chunk)) = jobs.take() {
            transactions += 1;
            written += chunk.len();
        }
        assert_eq!(written, Jobs::MAX_AUDIT_ROWS);
        assert!(
            (Jobs::MAX_AUDIT_ROWS / Jobs::MAX_AUDIT_CHUNK..=160).contains(&transactions),
            "{transactions} transactions"
        );
        assert_eq!(jobs.dropped(), 0);
    }

    #[test]
    fn the_gateway_measures_the_drain_only_under_a_backlog_of_the_largest_chunks() {
        use crate::gateway::audit_room::DrainRate;
        assert_eq!(Jobs::audit_chunk(DrainRate::BACKLOG), Jobs::MAX_AUDIT_CHUNK);
        assert!(Jobs::audit_chunk(DrainRate::BACKLOG - 4) < Jobs::MAX_AUDIT_CHUNK);
    }

    #[test]
    fn a_lane_with_a_larger_bound_takes_that_many_rows_then_drops() {
        let mut jobs = Jobs::new(2 * Jobs::MAX_AUDIT_ROWS);
        assert_eq!(jobs.push_audit(rows(2 * Jobs::MAX_AUDIT_ROWS - 1)), 0);
        assert_eq!(jobs.audit_room(), 1);
        assert_eq!(jobs.push_audit(rows(3)), 2, "the rest dropped and counted");
        assert_eq!(jobs.dropped(), 2);
        assert_eq!(jobs.audit_lane().waiting, 2 * Jobs::MAX_AUDIT_ROWS);
    }

    #[test]
    fn a_full_audit_lane_drops_and_counts_instead_of_blocking() {
        let mut jobs = Jobs::default();
        assert_eq!(jobs.push_audit(rows(Jobs::MAX_AUDIT_ROWS - 5)), 0);
        assert_eq!(jobs.push_audit(rows(12)), 7);
        assert_eq!(jobs.push_audit(rows(3)), 3);
        assert_eq!(jobs.audit_len(), Jobs::MAX_AUDIT_ROWS);
        assert_eq!(jobs.dropped(), 10);
        // State batches are never dropped.
        jobs.push_persist(batch(9));
        assert!(matches!(jobs.take(), Some(Job::Persist(b)) if b.id == 9));
        // Once a chunk is written there is room again.
        assert!(matches!(jobs.take(), Some(Job::Audit(_))));
        assert_eq!(jobs.push_audit(rows(3)), 0);
    }

    #[test]
    fn the_thread_writes_everything_queued_before_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("r.db"), None).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let checkpoints = CheckpointConfig {
            file: None,
            every: Duration::from_secs(3600),
            min_gap: Duration::from_secs(3600),
            edge: "e1".into(),
        };
        let worker =
            RegistryWorker::start(registry, false, checkpoints, Jobs::MAX_AUDIT_ROWS, tx).unwrap();
        // A burst far larger than the small chunk, all in one go.
        let burst = 20 * Jobs::AUDIT_CHUNK + 7;
        assert_eq!(worker.audit(rows(burst)), 0);
        assert!(worker.persist(batch(5)));
        worker.stop();
        let persisted = std::iter::from_fn(|| rx.try_recv().ok())
            .any(|m| matches!(m, FromRegistry::Persisted { id: 5, ok: true }));
        assert!(persisted);
        let registry = Registry::open(&dir.path().join("r.db"), None).unwrap();
        let verified = registry.audit().verify().unwrap();
        assert_eq!(verified.rows as usize, burst, "every row written");
    }
}
