//! The outbox's bookkeeping, sans-IO: ids, byte accounting, the acknowledgement watermark,
//! which segments may go, when to persist the watermark, and what the publisher reads next.
//!
//! No files, tasks or clocks here: the I/O layer ([`super::disk`], [`super::task`]) tells this
//! core what it found on disk and what it wrote, and asks it what to do. Time comes in as an
//! argument.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::OutboxStats;
use super::log::SEGMENT_HEADER_LEN;

/// The limits the core enforces, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Record bytes in live segments plus reserved bytes never exceed this.
    pub(crate) max_bytes: u64,
    /// A segment file is sealed before it would grow past this.
    pub(crate) segment_bytes: u64,
    /// What a refused append is told to wait.
    pub(crate) retry_after: Duration,
    /// The watermark is persisted at most this often (and on close).
    pub(crate) ack_persist_interval: Duration,
}

impl Limits {
    /// The largest record a segment holds.
    pub(crate) fn max_record(&self) -> u64 {
        self.segment_bytes.saturating_sub(SEGMENT_HEADER_LEN)
    }
}

/// What the I/O layer found in one segment file on open (after truncating any torn tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    /// The base id in the file name and header.
    pub(crate) base: u64,
    /// First and last id of its valid records (consecutive), if it has any.
    pub(crate) ids: Option<(u64, u64)>,
    /// Bytes of its valid records (the file is this plus the header).
    pub(crate) record_bytes: u64,
}

/// The id the next record gets, given the segments on disk and the persisted watermark: above
/// every id ever stored or acknowledged and at least every segment's base, so never reused.
pub(crate) fn next_id_after(segments: &[SegmentSummary], watermark: u64) -> u64 {
    segments
        .iter()
        .map(|s| match s.ids {
            Some((_, last)) => last.saturating_add(1).max(s.base),
            None => s.base,
        })
        .chain([watermark.saturating_add(1), 1])
        .max()
        .unwrap_or(1)
}

/// What the I/O layer recovered: every segment in base order, the last one being the active
/// segment that appends go to, and the persisted watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Segments in base order; the last is the active one. Must not be empty.
    pub(crate) segments: Vec<SegmentSummary>,
    /// The persisted acknowledgement watermark (0: none).
    pub(crate) watermark: u64,
    /// Segments whose torn or corrupt tail was cut off.
    pub(crate) torn_tails: u64,
    /// Bytes cut off.
    pub(crate) truncated_bytes: u64,
    /// Damaged stretches skipped in the middle of segments (valid records followed).
    pub(crate) skipped_regions: u64,
    /// Their bytes.
    pub(crate) skipped_bytes: u64,
    /// The next id is at least this: above the ids the cut-off records may have had, so that
    /// not even an id of a record lost to a damaged disk is given twice.
    pub(crate) min_next_id: u64,
}

impl Recovered {
    /// The id the next record gets.
    pub(crate) fn next_id(&self) -> u64 {
        next_id_after(&self.segments, self.watermark).max(self.min_next_id)
    }
}

/// Why an append is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No room until acknowledged messages are reclaimed.
    Full {
        /// Hint for the client (CoAP Max-Age).
        retry_after: Duration,
    },
    /// Can never fit: one record is larger than a segment, or all together larger than the
    /// outbox.
    TooLarge {
        /// Bytes asked for (the largest record, or the total).
        bytes: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The outbox was closed.
    Closed,
    /// Writing failed earlier; the outbox accepts nothing until it is reopened.
    Failed(String),
}

/// One live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    base: u64,
    /// First and last durable id.
    ids: Option<(u64, u64)>,
    /// Durable record bytes.
    record_bytes: u64,
    /// No more appends go here (every segment but the last).
    sealed: bool,
}

impl Segment {
    /// Durable length of the file.
    fn len(&self) -> u64 {
        SEGMENT_HEADER_LEN + self.record_bytes
    }
}

/// Where one group commit puts its records: consecutive runs, one per segment touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Runs in order; the records of the batch are split over them in order.
    pub(crate) chunks: Vec<Chunk>,
}

/// A run of consecutive records in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The segment they go to.
    pub(crate) base: u64,
    /// The segment must be created first (the previous one is then sealed).
    pub(crate) new_segment: bool,
    /// Id of the first record; the others follow one by one.
    pub(crate) first_id: u64,
    /// How many records.
    pub(crate) count: usize,
    /// Their bytes.
    pub(crate) bytes: u64,
}

/// The publisher's position in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadPos {
    /// Segment being read (0: not started).
    base: u64,
    /// Byte offset of the next record in it.
    offset: u64,
    /// The rewind generation this position belongs to.
    generation: u64,
}

/// What the publisher should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum ReadStep {
    /// Read the records of segment `base` in `offset..end` (all durable), then call
    /// [`OutboxState::read_done`].
    Read {
        /// Segment.
        base: u64,
        /// First byte to read.
        offset: u64,
        /// Durable end.
        end: u64,
    },
    /// Everything durable has been handed out: wait for more.
    Wait,
    /// Closed and everything handed out.
    Done,
}

/// What became of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// A pending message is now acknowledged.
    Accepted,
    /// Already acknowledged.
    Duplicate,
    /// No such durable message (never stored, already reclaimed, or not yet durable).
    Unknown,
}

/// The bookkeeping of one open outbox.
#[derive(Debug)]
pub(crate) struct OutboxState {
    limits: Limits,
    /// In base order; the last one is the active segment.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Every durable id up to this one is acknowledged.
    watermark: u64,
    /// Acknowledged ids above the watermark (acknowledged out of order).
    acked_above: BTreeSet<u64>,
    persisted_watermark: u64,
    last_persist: Instant,
    /// Record bytes in live segments.
    stored: u64,
    /// Bytes of appends accepted but not yet written.
    reserved: u64,
    closed: bool,
    failed: Option<String>,
    rewind_generation: u64,
    counters: OutboxStats,
}

impl OutboxState {
    /// The state after opening: `recovered` from disk, at time `now`.
    pub(crate) fn recover(limits: Limits, recovered: &Recovered, now: Instant) -> OutboxState {
        let next_id = recovered.next_id();
        let mut segments: VecDeque<Segment> = recovered
            .segments
            .iter()
            .map(|s| Segment {
                base: s.base,
                ids: s.ids,
                record_bytes: s.record_bytes,
                sealed: true,
            })
            .collect();
        if let Some(active) = segments.back_mut() {
            active.sealed = false;
        }
        let stored = segments.iter().map(|s| s.record_bytes).sum();
        let mut state = OutboxState {
            limits,
            segments,
            next_id,
            watermark: recovered.watermark,
            acked_above: BTreeSet::new(),
            persisted_watermark: recovered.watermark,
            last_persist: now,
            stored,
            reserved: 0,
            closed: false,
            failed: None,
            rewind_generation: 0,
            counters: OutboxStats {
                torn_tails: recovered.torn_tails,
                truncated_bytes: recovered.truncated_bytes,
                skipped_regions: recovered.skipped_regions,
                skipped_bytes: recovered.skipped_bytes,
                ..OutboxStats::default()
            },
        };
        state.counters.recovered_messages = state.pending_messages();
        state
    }

    /// Reserves `total` bytes for an append whose largest record has `largest` bytes, or says
    /// why not. The reservation is released by [`commit`](Self::commit) or
    /// [`release`](Self::release).
    pub(crate) fn try_reserve(&mut self, total: u64, largest: u64) -> Result<(), Refusal> {
        if let Some(why) = &self.failed {
            return Err(Refusal::Failed(why.clone()));
        }
        if self.closed {
            return Err(Refusal::Closed);
        }
        if largest > self.limits.max_record() {
            return Err(Refusal::TooLarge {
                bytes: largest,
                limit: self.limits.max_record(),
            });
        }
        if total > self.limits.max_bytes {
            return Err(Refusal::TooLarge {
                bytes: total,
                limit: self.limits.max_bytes,
            });
        }
        if self.stored + self.reserved + total > self.limits.max_bytes {
            self.counters.full_refusals += 1;
            return Err(Refusal::Full {
                retry_after: self.limits.retry_after,
            });
        }
        self.reserved += total;
        Ok(())
    }

    /// Gives back a reservation that will not be written.
    pub(crate) fn release(&mut self, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    /// Where a batch of records of these lengths goes, and their ids. Changes nothing: the
    /// batch is applied by [`commit`](Self::commit) once it is durable.
    pub(crate) fn plan(&self, record_lens: &[u64]) -> Plan {
        let mut chunks: Vec<Chunk> = Vec::new();
        let (mut base, mut len, mut has_records) = match self.segments.back() {
            Some(s) => (s.base, s.len(), s.ids.is_some()),
            None => (self.next_id, SEGMENT_HEADER_LEN, false),
        };
        let mut new_segment = self.segments.is_empty();
        for (id, &rec) in (self.next_id..).zip(record_lens) {
            let roll = has_records && len + rec > self.limits.segment_bytes;
            if roll {
                base = id;
                len = SEGMENT_HEADER_LEN;
                new_segment = true;
            }
            match chunks.last_mut() {
                Some(c) if !roll && c.base == base => {
                    c.count += 1;
                    c.bytes += rec;
                }
                _ => chunks.push(Chunk {
                    base,
                    new_segment,
                    first_id: id,
                    count: 1,
                    bytes: rec,
                }),
            }
            new_segment = false;
            len += rec;
            has_records = true;
        }
        Plan { chunks }
    }

    /// Applies a plan whose records are now durable: `reserved` bytes of reservations become
    /// stored bytes; `fsyncs` syncs were needed.
    pub(crate) fn commit(&mut self, plan: &Plan, reserved: u64, fsyncs: u64) {
        for c in &plan.chunks {
            if c.count == 0 {
                continue;
            }
            if c.new_segment || self.segments.back().is_none_or(|s| s.base != c.base) {
                if let Some(old) = self.segments.back_mut() {
                    old.sealed = true;
                }
                self.segments.push_back(Segment {
                    base: c.base,
                    ids: None,
                    record_bytes: 0,
                    sealed: false,
                });
            }
            let last = c.first_id + c.count as u64 - 1;
            if let Some(s) = self.segments.back_mut() {
                s.ids = Some((s.ids.map_or(c.first_id, |(f, _)| f), last));
                s.record_bytes += c.bytes;
            }
            self.stored += c.bytes;
            self.next_id = last + 1;
            self.counters.appended += c.count as u64;
        }
        self.release(reserved);
        self.counters.batches += 1;
        self.counters.fsyncs += fsyncs;
    }

    /// Writing failed: nothing more is accepted (the state of the file is unknown after a
    /// failed write or sync).
    pub(crate) fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    /// No more appends; the publisher stops once it has handed out what is durable.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// The broker confirmed message `id`.
    pub(crate) fn ack(&mut self, id: u64) -> AckOutcome {
        let outcome = if id <= self.watermark || self.acked_above.contains(&id) {
            AckOutcome::Duplicate
        } else if !self.is_durable(id) {
            AckOutcome::Unknown
        } else {
            self.acked_above.insert(id);
            self.advance_watermark();
            AckOutcome::Accepted
        };
        match outcome {
            AckOutcome::Accepted => self.counters.acked += 1,
            AckOutcome::Duplicate => self.counters.ack_duplicates += 1,
            AckOutcome::Unknown => self.counters.ack_unknown += 1,
        }
        outcome
    }

    /// Whether `id` is a durable message in a live segment.
    fn is_durable(&self, id: u64) -> bool {
        let after = self.segments.partition_point(|s| s.base <= id);
        after
            .checked_sub(1)
            .and_then(|i| self.segments.get(i))
            .and_then(|s| s.ids)
            .is_some_and(|(first, last)| first <= id && id <= last)
    }

    /// The smallest durable id above `id`.
    fn next_live_after(&self, id: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter_map(|s| s.ids)
            .find(|&(_, last)| last > id)
            .map(|(first, _)| first.max(id + 1))
    }

    fn advance_watermark(&mut self) {
        while let Some(next) = self.next_live_after(self.watermark) {
            if !self.acked_above.remove(&next) {
                break;
            }
            self.watermark = next;
        }
    }

    /// Every durable id up to this one is acknowledged.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Whether `id` has been acknowledged (or is below every live message).
    pub(crate) fn is_acked(&self, id: u64) -> bool {
        id <= self.watermark || self.acked_above.contains(&id)
    }

    /// Whether the watermark's move from `before` to where it is now gives the writer something
    /// it is not already waiting for: a first watermark to persist (until now it had no
    /// [`poll_timeout`](Self::poll_timeout)), or a sealed segment that became reclaimable.
    /// Other moves need no wake-up: the writer looks at the watermark again when its timer
    /// fires and after every batch.
    pub(crate) fn ack_wakes_writer(&self, before: u64) -> bool {
        let first_to_persist =
            before <= self.persisted_watermark && self.watermark > self.persisted_watermark;
        first_to_persist
            || self.segments.iter().any(|s| {
                s.sealed
                    && s.ids
                        .is_some_and(|(_, last)| last > before && last <= self.watermark)
            })
    }

    /// Segments that may be deleted: sealed, and every message in them acknowledged. The
    /// active segment is never among them, so its base keeps ids from being reused.
    pub(crate) fn reclaimable(&self) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|s| s.sealed && s.ids.is_none_or(|(_, last)| last <= self.watermark))
            .map(|s| s.base)
            .collect()
    }

    /// Segment `base` was deleted.
    pub(crate) fn reclaimed(&mut self, base: u64) {
        let i = self
            .segments
            .iter()
            .position(|s| s.base == base && s.sealed);
        if let Some(s) = i.and_then(|i| self.segments.remove(i)) {
            self.stored = self.stored.saturating_sub(s.record_bytes);
            self.counters.segments_deleted += 1;
        }
    }

    /// The watermark to persist now, if it moved and the last write is old enough (or `force`,
    /// on close).
    pub(crate) fn poll_persist(&self, now: Instant, force: bool) -> Option<u64> {
        let due = force || now >= self.last_persist + self.limits.ack_persist_interval;
        (self.watermark > self.persisted_watermark && due).then_some(self.watermark)
    }

    /// When [`poll_persist`](Self::poll_persist) will have something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (self.watermark > self.persisted_watermark)
            .then(|| self.last_persist + self.limits.ack_persist_interval)
    }

    /// `watermark` is durable (one sync of the acknowledgement file).
    pub(crate) fn persisted(&mut self, watermark: u64, now: Instant) {
        self.persisted_watermark = self.persisted_watermark.max(watermark);
        self.last_persist = now;
        self.counters.ack_fsyncs += 1;
    }

    /// Persisting failed: try again after the interval.
    pub(crate) fn persist_failed(&mut self, now: Instant) {
        self.last_persist = now;
    }

    /// Starts handing out again from the oldest unacknowledged message (after the bridge lost
    /// its session). Messages already in the publish channel still come first.
    pub(crate) fn rewind(&mut self) {
        self.rewind_generation += 1;
    }

    /// What the publisher at `pos` reads next.
    pub(crate) fn poll_read(&self, pos: &mut ReadPos) -> ReadStep {
        if pos.generation != self.rewind_generation {
            *pos = ReadPos {
                generation: self.rewind_generation,
                ..ReadPos::default()
            };
        }
        let mut i = self.segments.partition_point(|s| s.base < pos.base);
        while let Some(seg) = self.segments.get(i) {
            if seg.base != pos.base {
                // not started, or the segment was reclaimed under the reader: next one
                pos.base = seg.base;
                pos.offset = SEGMENT_HEADER_LEN;
            }
            if pos.offset < seg.len() {
                return ReadStep::Read {
                    base: seg.base,
                    offset: pos.offset,
                    end: seg.len(),
                };
            }
            if !seg.sealed {
                break;
            }
            i += 1;
        }
        if self.closed {
            ReadStep::Done
        } else {
            ReadStep::Wait
        }
    }

    /// The publisher read segment `base` up to `offset`; drops the acknowledged messages from
    /// `msgs` (kept in order) and counts the rest as delivered.
    pub(crate) fn read_done(
        &mut self,
        pos: &mut ReadPos,
        base: u64,
        offset: u64,
        msgs: &mut Vec<crate::message::OutboundMessage>,
    ) {
        if pos.base == base && pos.generation == self.rewind_generation {
            pos.offset = pos.offset.max(offset);
        }
        msgs.retain(|m| !self.is_acked(m.id));
        self.counters.delivered += msgs.len() as u64;
    }

    /// The publisher could not read segment `base` at its position. If the segment is still
    /// live (its durable bytes are unreadable or corrupt), skips to its durable end, counts a
    /// read error and returns true; a reclaimed segment is simply passed over.
    pub(crate) fn read_failed(&mut self, pos: &mut ReadPos, base: u64) -> bool {
        let Some(len) = self
            .segments
            .iter()
            .find(|s| s.base == base)
            .map(Segment::len)
        else {
            return false;
        };
        self.counters.read_errors += 1;
        if pos.base == base {
            pos.offset = pos.offset.max(len);
        }
        true
    }

    /// Durable messages not yet acknowledged.
    pub(crate) fn pending_messages(&self) -> u64 {
        let above: u64 = self
            .segments
            .iter()
            .filter_map(|s| s.ids)
            .filter(|&(_, last)| last > self.watermark)
            .map(|(first, last)| last - first.max(self.watermark + 1) + 1)
            .sum();
        above.saturating_sub(self.acked_above.len() as u64)
    }

    /// Counters and gauges.
    pub(crate) fn stats(&self) -> OutboxStats {
        OutboxStats {
            next_id: self.next_id,
            ack_watermark: self.watermark,
            pending_messages: self.pending_messages(),
            stored_bytes: self.stored,
            reserved_bytes: self.reserved,
            max_bytes: self.limits.max_bytes,
            segments: self.segments.len() as u64,
            ..self.counters.clone()
        }
    }
}
