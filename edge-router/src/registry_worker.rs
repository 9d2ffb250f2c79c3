//! The registry's own thread: every SQLite access of the running edge happens here, off the
//! ingress loop.
//!
//! - **OSCORE state batches** from the gateway ([`PersistBatch`]): one transaction each,
//!   reported back as [`FromRegistry::Persisted`] — the answers they hold go out only then.
//! - **Audit rows**: appended in the order received, each batch in one transaction (the
//!   gateway already aggregates authentication failures, so a flood is a few rows).
//! - **Changes by other processes** (`v6iot-edge devices revoke …`): about once a second
//!   `PRAGMA data_version` is read (a cheap read of the file header, no query); when it moved,
//!   every device is reloaded and sent as [`FromRegistry::Devices`]. The edge's own writes go
//!   through this connection and do not move its `data_version`.
//! - **Audit checkpoints** ([`crate::audit::checkpoint`]): the head of the trail, signed into
//!   its file and sent as [`FromRegistry::Checkpoint`] to be published — at start, after rows
//!   were added (by the edge, or by another process as `data_version` tells) at a bounded rate,
//!   regularly, and into the file once more when the thread ends.

use std::sync::mpsc::{self, RecvTimeoutError};
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

/// Work for the registry thread.
#[derive(Debug)]
pub enum ToRegistry {
    /// Write this batch of OSCORE state.
    Persist(PersistBatch),
    /// Append these audit rows.
    Audit(Vec<AuditEvent>),
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

/// The running thread: send it work; dropping the sender ends it.
#[derive(Debug)]
pub struct RegistryWorker {
    /// Work in.
    pub jobs: mpsc::Sender<ToRegistry>,
    thread: Option<JoinHandle<()>>,
}

impl RegistryWorker {
    /// Starts the thread on `registry`; results go to `out`. `load_devices` is false when the
    /// registry has no seal key (lab mode without credentials): no device reloads then.
    /// `checkpoints` says where and how often audit checkpoints are made.
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn start(
        registry: Registry,
        load_devices: bool,
        checkpoints: CheckpointConfig,
        out: UnboundedSender<FromRegistry>,
    ) -> std::io::Result<RegistryWorker> {
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("v6iot-registry".into())
            .spawn(move || {
                let key = registry.seal_key().cloned();
                let mut checkpointer =
                    Checkpointer::start(checkpoints, key, registry.audit(), Instant::now());
                run(registry, load_devices, &mut checkpointer, &rx, &out);
            })?;
        Ok(RegistryWorker {
            jobs,
            thread: Some(thread),
        })
    }

    /// Ends the thread after the work already sent.
    pub fn stop(mut self) {
        let (jobs, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, jobs));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut registry: Registry,
    load_devices: bool,
    checkpointer: &mut Checkpointer,
    jobs: &mpsc::Receiver<ToRegistry>,
    out: &UnboundedSender<FromRegistry>,
) {
    let mut version = registry.data_version().ok();
    let mut next_poll = Instant::now() + POLL_EVERY;
    loop {
        let wait = next_poll
            .min(checkpointer.poll_timeout())
            .saturating_duration_since(Instant::now());
        match jobs.recv_timeout(wait) {
            Ok(ToRegistry::Persist(batch)) => {
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
            Ok(ToRegistry::Audit(rows)) => {
                let audit = registry.audit();
                if let Err(e) = audit.append_all(&rows) {
                    // One bad row must not cost the others: write them one by one.
                    tracing::warn!(error = %e, rows = rows.len(), "audit batch failed; row by row");
                    for row in &rows {
                        if let Err(e) = audit.append(row) {
                            tracing::error!(error = %e, kind = %row.kind, "audit row not written");
                        }
                    }
                }
                checkpointer.changed(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
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
        match registry.device_keys() {
            Ok((devices, problems)) => {
                for p in problems {
                    tracing::error!(error = %p, "device left out of the reload");
                }
                tracing::info!(
                    devices = devices.len(),
                    "registry changed: devices reloaded"
                );
                if out.send(FromRegistry::Devices(devices)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(error = %e, "registry reload failed"),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
