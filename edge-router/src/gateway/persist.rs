//! What must be durable before the gateway may act: the edge's sender sequence marks and the
//! devices' replay floors, persisted in batches, and the answers held until their batch is.
//!
//! # Sender sequence numbers (RFC 8613 Appendix B.1.1)
//!
//! Each device context numbers the edge's own Partial IVs (requests to the device, fresh
//! notification IVs). A number is used only below the last mark confirmed durable; when fewer
//! than half a step are left, the context asks for the next mark, which goes into the next batch.
//! After a `kill -9` the context restarts at the stored mark, above every number used. The step
//! is generous (see [`super::GatewayConfig::persist_step`]): one write per few thousand
//! messages, a few thousand numbers skipped per restart (of 2^40).
//!
//! # Replay floors ("a message accepted before a restart is refused after it")
//!
//! The replay window lives in memory. To refuse after a restart what was accepted before it,
//! each device's *floor* — one past the highest Partial IV the edge answered — is stored, and a
//! restored context refuses anything below it (`set_replay_floor`). The order is what keeps data:
//!
//! 1. a request is verified (the window moves in memory only);
//! 2. the ingress stores its record (outbox append, fsync) and answers;
//! 3. the gateway protects the answer and **holds** it; the device's floor goes into the next
//!    batch; the batch is written (one SQLite transaction, `synchronous=FULL`);
//! 4. only then is the answer sent.
//!
//! Crash windows: before (2) completes, nothing is durable and the floor is old, so the device's
//! retransmission (same bytes, same Partial IV) is accepted after the restart — no data lost.
//! Between (2) and (3), the record is durable but the floor is not: the retransmission is
//! accepted again and the record stored twice (at-least-once, like any lost acknowledgement).
//! Between (3) and (4), the record and the floor are durable: the retransmission is refused as a
//! replay (4.01) although its record is safe; the device reports a failure for data that was
//! kept. No window accepts a message after a restart whose answer the device saw before it.
//!
//! The floor is one past the *highest* answered Partial IV: a device with several requests in
//! flight (NSTART > 1) whose lower one was still unanswered at the crash would see that one
//! refused after the restart. The SDK's devices keep one request in flight (NSTART = 1).
//!
//! # Rotation while a batch is being written
//!
//! Each row carries the fingerprint of the secret and salt its context was made from
//! ([`StoredState::fingerprint`]). When the batch is reported written, a row counts only for a
//! context with the same fingerprint and device: a context made from a rotated secret while
//! the batch was on its way (the keyring drops the old one, see [`super::keys`]) starts from
//! zero and waits for a row of its own, so its first sequence numbers are durable before use.
//!
//! Requests are answered in batches, so the extra cost is one SQLite commit per batch, not per
//! request. RFC 8613 Appendix B.1.2 (refuse everything until an Echo round trip) was not chosen:
//! it would cost every device a round trip after each restart of the edge. (The SDK does answer
//! Echo challenges; the edge asks for one only to confirm a device's new address, see
//! `binding`.)

use std::collections::VecDeque;

use foldhash::HashSet;

use super::keys::{Keyring, StoredState};
use crate::peer::Peer;

/// The OSCORE state of one device context to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// The device id.
    pub device: String,
    /// Its kid.
    pub kid: Vec<u8>,
    /// Marks, floor and fingerprint.
    pub state: StoredState,
}

/// A group of rows to write in one transaction, then report with
/// [`Gateway::handle_persisted`](super::Gateway::handle_persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistBatch {
    /// Identifies the batch.
    pub id: u64,
    /// The rows.
    pub rows: Vec<StateRow>,
}

struct Held {
    batch: u64,
    peer: Peer,
    bytes: Vec<u8>,
    /// The request's message ID and fingerprint, to note the answer for deduplication.
    message: (u16, u64),
    confirmable: bool,
}

/// A released answer: send it and remember it for retransmissions.
pub(super) struct Released {
    pub(super) peer: Peer,
    pub(super) bytes: Vec<u8>,
    /// The request's message ID and fingerprint.
    pub(super) message: (u16, u64),
    pub(super) confirmable: bool,
}

/// Batches and held answers (see the module docs).
#[derive(Default)]
pub(super) struct Persistence {
    next_batch: u64,
    in_flight: Option<PersistBatch>,
    dirty: HashSet<Vec<u8>>,
    held: VecDeque<Held>,
}

impl Persistence {
    /// `kid`'s context has something to persist (a mark is due, or its floor moved).
    pub(super) fn dirty(&mut self, kid: &[u8]) {
        if !self.dirty.contains(kid) {
            self.dirty.insert(kid.to_vec());
        }
    }

    /// Holds an answer until the next batch is durable.
    pub(super) fn hold(
        &mut self,
        peer: Peer,
        bytes: Vec<u8>,
        message: (u16, u64),
        confirmable: bool,
    ) {
        self.held.push_back(Held {
            batch: self.next_batch,
            peer,
            bytes,
            message,
            confirmable,
        });
    }

    /// Answers held.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// The next batch to write, if something is dirty and no batch is being written.
    pub(super) fn poll(&mut self, keys: &mut Keyring) -> Option<PersistBatch> {
        if self.in_flight.is_some() || self.dirty.is_empty() {
            return None;
        }
        let mut rows = Vec::with_capacity(self.dirty.len());
        for kid in self.dirty.drain() {
            let Some(e) = keys.get_mut(&kid) else {
                continue;
            };
            let sender_mark = e
                .ctx
                .mark_to_persist()
                .unwrap_or_else(|| e.ctx.sequence().durable_mark());
            rows.push(StateRow {
                device: e.id.clone(),
                kid,
                state: StoredState {
                    sender_mark,
                    replay_floor: e.floor_wanted,
                    fingerprint: e.fingerprint,
                },
            });
        }
        let batch = PersistBatch {
            id: self.next_batch,
            rows,
        };
        self.next_batch += 1;
        self.in_flight = Some(batch.clone());
        Some(batch)
    }

    /// The batch `id` was written (`ok`) or not; returns the answers now free to go.
    pub(super) fn done(&mut self, id: u64, ok: bool, keys: &mut Keyring) -> Vec<Released> {
        let Some(batch) = self.in_flight.take_if(|b| b.id == id) else {
            return Vec::new();
        };
        if !ok {
            // Try again with the next batch; the held answers wait for it.
            for row in batch.rows {
                self.dirty(&row.kid);
            }
            for h in &mut self.held {
                if h.batch == id {
                    h.batch = self.next_batch;
                }
            }
            return Vec::new();
        }
        for row in &batch.rows {
            // A row written for a context that was replaced meanwhile (a rotation: another
            // secret, so another fingerprint; or another device with the kid) says nothing
            // about the new context: raising its mark from it would let it use sequence numbers
            // that are durable for nobody, and repeat them after a crash.
            if let Some(e) = keys
                .get_mut(&row.kid)
                .filter(|e| e.fingerprint == row.state.fingerprint && e.id == row.device)
            {
                e.ctx.persisted(row.state.sender_mark);
                e.floor_durable = e.floor_durable.max(row.state.replay_floor);
                if e.ctx.mark_to_persist().is_some() || e.floor_wanted > e.floor_durable {
                    self.dirty(&row.kid);
                }
            }
        }
        let mut out = Vec::new();
        while self.held.front().is_some_and(|h| h.batch <= id) {
            if let Some(h) = self.held.pop_front() {
                out.push(Released {
                    peer: h.peer,
                    bytes: h.bytes,
                    message: h.message,
                    confirmable: h.confirmable,
                });
            }
        }
        out
    }
}
