//! The running edge's checkpoints (see [`super::checkpoint`] for what and why): made on the
//! registry thread, which owns the database connection; the file written there (blocking I/O
//! off the data path), the message handed to the server loop to publish. When they are due is
//! decided by the sans-IO [`Schedule`]; this file only reads the head, checks, writes and logs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::AuditLog;
use super::checkpoint::{self, Checkpoint, CheckpointMessage, Schedule};
use crate::seal::SealKey;

/// Where and how often (from `[audit]`, see [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// The signed checkpoint file (none: publish only).
    pub file: Option<PathBuf>,
    /// A checkpoint at least this often, changed or not.
    pub every: Duration,
    /// After rows were added, a checkpoint no sooner than this after the last one.
    pub min_gap: Duration,
    /// The edge's name, in the published message.
    pub edge: String,
}

/// Makes the checkpoints of a running edge.
#[derive(Debug)]
pub struct Checkpointer {
    config: CheckpointConfig,
    key: Option<SealKey>,
    schedule: Schedule,
    /// The checkpoint in the file: every later one must extend it.
    anchor: Option<Checkpoint>,
    /// Why the trail does not extend the file's checkpoint, once found (kept until restart).
    broken: Option<String>,
}

impl Checkpointer {
    /// Reads the file's checkpoint (authenticated with `key`) and checks that the trail still
    /// reaches it; the first checkpoint is due at once.
    pub fn start(
        config: CheckpointConfig,
        key: Option<SealKey>,
        log: AuditLog<'_>,
        now: Instant,
    ) -> Checkpointer {
        let mut c = Checkpointer {
            schedule: Schedule::new(now, config.every, config.min_gap),
            config,
            key,
            anchor: None,
            broken: None,
        };
        match (&c.config.file, &c.key) {
            (Some(path), Some(key)) => {
                let loaded =
                    checkpoint::read(path).and_then(|f| f.map(|f| f.authenticate(key)).transpose());
                match loaded {
                    Ok(Some(cp)) => {
                        c.anchor = Some(cp);
                        c.check(log);
                    }
                    Ok(None) => {}
                    Err(e) => c.break_anchor(format!("{}: {e}", path.display())),
                }
            }
            (Some(_), None) => tracing::warn!(
                "no seal key: audit checkpoints are published but not kept in a signed file"
            ),
            (None, _) => {}
        }
        c
    }

    /// Rows were added to the trail (by this edge or another process) at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.schedule.changed(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.schedule.poll_timeout()
    }

    /// When a checkpoint is due: reads the head, writes the file when the head moved (unless
    /// the anchor is broken) and returns the message to publish.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        unix_ms: u64,
        log: AuditLog<'_>,
    ) -> Option<CheckpointMessage> {
        if !self.schedule.is_due(now) {
            return None;
        }
        self.schedule.done(now);
        let cp = self.make(unix_ms, log)?;
        Some(cp.message(&self.config.edge, self.broken.as_deref()))
    }

    /// A last checkpoint into the file at shutdown (nothing is published any more).
    pub fn finish(&mut self, unix_ms: u64, log: AuditLog<'_>) {
        let _ = self.make(unix_ms, log);
    }

    fn make(&mut self, unix_ms: u64, log: AuditLog<'_>) -> Option<Checkpoint> {
        let (rows, head) = match log.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoint: cannot read the head");
                return None;
            }
        };
        let cp = Checkpoint {
            rows,
            head,
            at_ms: unix_ms,
        };
        self.check(log);
        self.write(&cp);
        Some(cp)
    }

    /// Does the trail still reach the file's checkpoint?
    fn check(&mut self, log: AuditLog<'_>) {
        let Some(anchor) = self.anchor.filter(|_| self.broken.is_none()) else {
            return;
        };
        let source = self
            .config
            .file
            .as_ref()
            .map_or_else(|| "checkpoint".to_owned(), |p| p.display().to_string());
        if let Err(e) = log.check_anchor(&anchor.anchor(source)) {
            self.break_anchor(e.to_string());
        }
    }

    fn break_anchor(&mut self, why: String) {
        tracing::error!(
            reason = %why,
            "the audit trail does not extend the edge's checkpoint: the file is kept as evidence \
             and not replaced; check the trail (`v6iot-edge audit verify`), then move the file aside"
        );
        self.broken = Some(why);
    }

    fn write(&mut self, cp: &Checkpoint) {
        let (Some(path), Some(key)) = (&self.config.file, &self.key) else {
            return;
        };
        let unchanged = self
            .anchor
            .is_some_and(|a| (a.rows, a.head) == (cp.rows, cp.head));
        if self.broken.is_some() || unchanged {
            return;
        }
        match checkpoint::write(path, cp, key) {
            Ok(()) => self.anchor = Some(*cp),
            Err(e) => tracing::error!(error = %e, "audit checkpoint not written"),
        }
    }
}
