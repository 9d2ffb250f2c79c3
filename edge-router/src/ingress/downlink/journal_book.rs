//! The downlink's side of the command journal (sans-IO): which entries the driver writes next,
//! when the journal is rewritten with only the live commands, and which queued commands are
//! durable.
//!
//! The driver takes one [`JournalBatch`] at a time, writes it off the data path (appends and
//! syncs its entries, then, when it carries a `rewrite`, replaces the file with those
//! commands), and reports a [`JournalWritten`]. A journaled command is sent to its device only
//! once the batch holding its `queued` entry is durable. If a batch fails, its commands are
//! finished with an error result (they were never sent; the writer cuts the failed append off
//! before it appends again, so their lines are not in the file) and its `done` entries of
//! commands queued in earlier batches are written again with the next one. Entries waiting are
//! thus bounded by the live commands even while every write fails.
//!
//! The journal is rewritten (compacted) when the lines it would hold are at least
//! `min_rewrite_lines` and more than twice the live commands: its lines stay below
//! `max(2 × live, min_rewrite_lines)` plus one batch, and each rewrite costs about as many
//! lines as were appended since the last one.

use super::{DownlinkCommand, JournalEntry};

/// Entries for the driver to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalBatch {
    /// Reported back with [`JournalWritten`].
    pub id: u64,
    /// Appended in order, then synced.
    pub entries: Vec<JournalEntry>,
    /// When set, after the entries: the journal is replaced by exactly these commands (the live
    /// ones, in their queue order) — a new file written, synced, renamed over the old one, the
    /// directory synced.
    pub rewrite: Option<Vec<DownlinkCommand>>,
}

/// What became of a [`JournalBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalWritten {
    /// The entries are on disk; `rewritten`: the rewrite was done too (false when it failed or
    /// none was asked: the old file, with the entries, stands).
    Durable {
        /// Whether the journal now holds only the rewrite's commands.
        rewritten: bool,
    },
    /// The entries could not be written and synced.
    Failed,
}

/// The journal's bookkeeping.
#[derive(Debug)]
pub(super) struct JournalBook {
    /// Entries not yet handed out.
    pending: Vec<JournalEntry>,
    /// The number of the last `queued` entry made (numbers start at 1; 0 is "nothing to wait
    /// for").
    last_seq: u64,
    /// Every `queued` entry numbered up to this is durable (or failed and finished).
    durable: u64,
    in_flight: Option<InFlight>,
    next_id: u64,
    /// Lines in the journal file, as far as known.
    lines: u64,
    /// Journaled commands not yet done.
    live: u64,
    min_rewrite_lines: u64,
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    /// The last `queued` number in it.
    upto: u64,
    /// Its `done` entries of commands queued in earlier batches, written again if it fails.
    dones: Vec<JournalEntry>,
    /// Its entries.
    entries: u64,
    /// Lines after its rewrite, if it has one.
    rewrite_lines: Option<u64>,
    /// The devices of its `queued` entries.
    devices: Vec<String>,
}

/// What a failed batch leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FailedBatch {
    /// `queued` numbers above this ...
    pub(super) after: u64,
    /// ... and up to this were in it: their commands were never durable.
    pub(super) upto: u64,
}

impl JournalBook {
    /// An empty book; [`JournalBook::restored`] counts the lines of the journal as opened.
    pub(super) fn new(min_rewrite_lines: u64) -> JournalBook {
        JournalBook {
            pending: Vec::new(),
            last_seq: 0,
            durable: 0,
            in_flight: None,
            next_id: 1,
            lines: 0,
            live: 0,
            min_rewrite_lines,
        }
    }

    /// A command put back from the journal file (one line, live).
    pub(super) fn restored(&mut self) {
        self.lines += 1;
        self.live += 1;
    }

    /// Journals `cmd` as queued; returns the number to wait for.
    pub(super) fn queued(&mut self, cmd: &DownlinkCommand) -> u64 {
        self.last_seq += 1;
        self.live += 1;
        self.pending.push(JournalEntry::Queued(cmd.clone()));
        self.last_seq
    }

    /// A journaled command that ends without a `done` entry: its `queued` entry never became
    /// durable (its batch failed).
    pub(super) fn dropped(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Journals the end of a journaled command.
    pub(super) fn done(&mut self, device: &str, req: &str) {
        self.live = self.live.saturating_sub(1);
        self.pending.push(JournalEntry::Done {
            device: device.to_owned(),
            req: req.to_owned(),
        });
    }

    /// Whether the `queued` entry numbered `seq` is durable (0: nothing to wait for).
    pub(super) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.durable
    }

    /// Lines the journal holds as far as known, and journaled commands not yet done.
    pub(super) fn sizes(&self) -> (u64, u64) {
        (self.lines, self.live)
    }

    /// The next batch, unless one is being written or nothing waits. `live` gives the live
    /// commands when the journal is due for a rewrite.
    pub(super) fn poll_batch(
        &mut self,
        live: impl FnOnce() -> Vec<DownlinkCommand>,
    ) -> Option<JournalBatch> {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return None;
        }
        let entries = std::mem::take(&mut self.pending);
        let after = self.lines + entries.len() as u64;
        let rewrite = (after >= self.min_rewrite_lines && after > 2 * self.live).then(live);
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some(InFlight {
            id,
            upto: self.last_seq,
            dones: earlier_dones(&entries),
            entries: entries.len() as u64,
            rewrite_lines: rewrite.as_ref().map(|r| r.len() as u64),
            devices: queued_devices(&entries),
        });
        Some(JournalBatch {
            id,
            entries,
            rewrite,
        })
    }

    /// Records what became of batch `id`: `Ok` with the devices of its `queued` entries when
    /// they are durable (every `queued` number up to the batch's last now is), `Err` with what
    /// failed. `None` for an unknown id.
    pub(super) fn written(
        &mut self,
        id: u64,
        outcome: JournalWritten,
    ) -> Option<Result<Vec<String>, FailedBatch>> {
        let batch = self.in_flight.take_if(|b| b.id == id)?;
        let after = self.durable;
        self.durable = batch.upto;
        match outcome {
            JournalWritten::Durable { rewritten } => {
                self.lines = match (rewritten, batch.rewrite_lines) {
                    (true, Some(lines)) => lines,
                    _ => self.lines + batch.entries,
                };
                Some(Ok(batch.devices))
            }
            JournalWritten::Failed => {
                // Its `done` entries go first in the next batch: without them a restart would
                // bring those commands back.
                let mut again = batch.dones;
                again.append(&mut self.pending);
                self.pending = again;
                Some(Err(FailedBatch {
                    after,
                    upto: batch.upto,
                }))
            }
        }
    }
}

/// The devices named by the `queued` entries of `entries`, each once.
fn queued_devices(entries: &[JournalEntry]) -> Vec<String> {
    let mut devices: Vec<String> = entries
        .iter()
        .filter_map(|e| match e {
            JournalEntry::Queued(c) => Some(c.device.clone()),
            JournalEntry::Done { .. } => None,
        })
        .collect();
    devices.sort_unstable();
    devices.dedup();
    devices
}

/// The `done` entries of `entries` whose command was not queued in `entries` too: if the batch
/// fails, only those still have a durable `queued` line to cancel.
fn earlier_dones(entries: &[JournalEntry]) -> Vec<JournalEntry> {
    let queued: std::collections::HashSet<(&str, &str)> = entries
        .iter()
        .filter_map(|e| match e {
            JournalEntry::Queued(c) => Some((c.device.as_str(), c.req.as_str())),
            JournalEntry::Done { .. } => None,
        })
        .collect();
    entries
        .iter()
        .filter(|e| match e {
            JournalEntry::Done { device, req } => {
                !queued.contains(&(device.as_str(), req.as_str()))
            }
            JournalEntry::Queued(_) => false,
        })
        .cloned()
        .collect()
}
