//! Tests of the sans-IO core: examples, then a property test against a model of the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::log::SEGMENT_HEADER_LEN;
use super::state::{
    AckOutcome, Limits, OutboxState, ReadPos, ReadStep, Recovered, Refusal, SegmentSummary,
    next_id_after,
};
use crate::message::OutboundMessage;

const H: u64 = SEGMENT_HEADER_LEN;

fn limits(max_bytes: u64, segment_bytes: u64) -> Limits {
    Limits {
        max_bytes,
        segment_bytes,
        retry_after: Duration::from_secs(7),
        ack_persist_interval: Duration::from_secs(1),
    }
}

fn empty(base: u64) -> SegmentSummary {
    SegmentSummary {
        base,
        ids: None,
        record_bytes: 0,
    }
}

fn fresh(max_bytes: u64, segment_bytes: u64, t0: Instant) -> OutboxState {
    let rec = Recovered {
        segments: vec![empty(1)],
        watermark: 0,
        torn_tails: 0,
        truncated_bytes: 0,
        skipped_regions: 0,
        skipped_bytes: 0,
        min_next_id: 0,
    };
    OutboxState::recover(limits(max_bytes, segment_bytes), &rec, t0)
}

/// Reserves, plans and commits records of `lens` as the writer would; returns their ids.
fn append(core: &mut OutboxState, lens: &[u64]) -> Result<Vec<u64>, Refusal> {
    let total = lens.iter().sum();
    core.try_reserve(total, lens.iter().copied().max().unwrap_or(0))?;
    let plan = core.plan(lens);
    core.commit(&plan, total, 1);
    let first = plan.chunks[0].first_id;
    Ok((first..first + lens.len() as u64).collect())
}

fn msgs(ids: &[u64]) -> Vec<OutboundMessage> {
    ids.iter()
        .map(|&id| OutboundMessage {
            id,
            topic: String::new(),
            payload: Vec::new(),
            retain: false,
        })
        .collect()
}

#[test]
fn bytes_are_reserved_then_stored_then_released() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 1_000, t0);
    core.try_reserve(300, 100).unwrap();
    assert_eq!(core.stats().reserved_bytes, 300);
    core.release(100);
    assert_eq!(core.stats().reserved_bytes, 200);
    let plan = core.plan(&[100, 100]);
    core.commit(&plan, 200, 1);
    let s = core.stats();
    assert_eq!((s.reserved_bytes, s.stored_bytes), (0, 200));
    assert_eq!((s.appended, s.batches, s.fsyncs), (2, 1, 1));
    assert_eq!((s.next_id, s.pending_messages), (3, 2));
}

#[test]
fn full_exactly_at_the_bound_and_too_large_beyond_it() {
    let t0 = Instant::now();
    let mut core = fresh(1_000, 500, t0);
    for _ in 0..10 {
        append(&mut core, &[100]).unwrap();
    }
    assert_eq!(core.stats().stored_bytes, 1_000);
    assert_eq!(
        append(&mut core, &[1]),
        Err(Refusal::Full {
            retry_after: Duration::from_secs(7)
        })
    );
    assert_eq!(core.stats().full_refusals, 1);
    // reservations count too
    let mut core = fresh(1_000, 500, t0);
    core.try_reserve(950, 100).unwrap();
    assert!(core.try_reserve(50, 50).is_ok());
    assert!(matches!(core.try_reserve(1, 1), Err(Refusal::Full { .. })));
    // never fits: one record above a segment, or all of them above the outbox
    assert_eq!(
        core.try_reserve(485, 485),
        Err(Refusal::TooLarge {
            bytes: 485,
            limit: 500 - H
        })
    );
    assert_eq!(
        core.try_reserve(1_001, 100),
        Err(Refusal::TooLarge {
            bytes: 1_001,
            limit: 1_000
        })
    );
    core.fail("disk on fire".to_owned());
    assert_eq!(
        core.try_reserve(1, 1),
        Err(Refusal::Failed("disk on fire".to_owned()))
    );
}

#[test]
fn segments_roll_over_before_they_pass_the_size() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 500, t0);
    // 16 + 4 * 100 = 416; a fifth record would make 516 > 500
    let plan = core.plan(&[100; 9]);
    let runs: Vec<_> = plan
        .chunks
        .iter()
        .map(|c| (c.base, c.new_segment, c.first_id, c.count, c.bytes))
        .collect();
    assert_eq!(
        runs,
        [
            (1, false, 1, 4, 400),
            (5, true, 5, 4, 400),
            (9, true, 9, 1, 100)
        ]
    );
    core.commit(&plan, 0, 3);
    assert_eq!(core.stats().segments, 3);
    // the active segment (base 9) has 116 bytes: three more fit, the fourth rolls
    let plan = core.plan(&[100; 4]);
    assert_eq!(plan.chunks.len(), 2);
    assert_eq!((plan.chunks[1].base, plan.chunks[1].first_id), (13, 13));
    // an empty active segment takes a record of any allowed size without rolling
    let mut core = fresh(10_000, 500, t0);
    assert_eq!(core.plan(&[484]).chunks.len(), 1);
    append(&mut core, &[484]).unwrap();
    assert_eq!(core.plan(&[1]).chunks[0].base, 2);
}

#[test]
fn the_watermark_follows_out_of_order_acks() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 1_000, t0);
    append(&mut core, &[50; 10]).unwrap();
    assert_eq!(core.ack(3), AckOutcome::Accepted);
    assert_eq!(core.ack(2), AckOutcome::Accepted);
    assert_eq!(core.watermark(), 0);
    assert!(core.is_acked(3) && !core.is_acked(1));
    assert_eq!(core.stats().pending_messages, 8);
    assert_eq!(core.ack(1), AckOutcome::Accepted);
    assert_eq!(core.watermark(), 3);
    assert_eq!(core.ack(3), AckOutcome::Duplicate);
    assert_eq!(core.ack(2), AckOutcome::Duplicate);
    assert_eq!(core.ack(11), AckOutcome::Unknown); // not (yet) durable
    assert_eq!(core.ack(0), AckOutcome::Duplicate);
    for id in (4..=10).rev() {
        core.ack(id);
    }
    assert_eq!(core.watermark(), 10);
    let s = core.stats();
    assert_eq!((s.acked, s.ack_duplicates, s.ack_unknown), (10, 3, 1));
    assert_eq!(s.pending_messages, 0);
}

#[test]
fn the_watermark_steps_over_ids_lost_between_segments() {
    // a torn tail lost ids 6..=9 in segment 1; segment 10 came after a restart
    let rec = Recovered {
        segments: vec![
            SegmentSummary {
                base: 1,
                ids: Some((1, 5)),
                record_bytes: 250,
            },
            SegmentSummary {
                base: 10,
                ids: Some((10, 12)),
                record_bytes: 150,
            },
        ],
        watermark: 0,
        torn_tails: 1,
        truncated_bytes: 20,
        skipped_regions: 0,
        skipped_bytes: 0,
        min_next_id: 0,
    };
    let mut core = OutboxState::recover(limits(10_000, 1_000), &rec, Instant::now());
    assert_eq!(core.stats().next_id, 13);
    assert_eq!(core.stats().recovered_messages, 8);
    assert_eq!(core.ack(7), AckOutcome::Unknown);
    for id in [10, 1, 2, 3, 4, 5] {
        assert_eq!(core.ack(id), AckOutcome::Accepted);
    }
    assert_eq!(core.watermark(), 10);
    assert_eq!(core.reclaimable(), vec![1]);
}

#[test]
fn only_sealed_fully_acked_segments_are_reclaimed() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 500, t0);
    append(&mut core, &[100; 9]).unwrap(); // segments 1 (1..4), 5 (5..8), 9 (9)
    assert!(core.reclaimable().is_empty());
    for id in 1..=3 {
        core.ack(id);
    }
    assert!(core.reclaimable().is_empty());
    core.ack(4);
    assert_eq!(core.reclaimable(), vec![1]);
    core.reclaimed(1);
    assert_eq!(core.stats().stored_bytes, 500);
    assert_eq!(core.stats().segments_deleted, 1);
    for id in 5..=9 {
        core.ack(id);
    }
    // the active segment stays even when everything is acknowledged
    assert_eq!(core.reclaimable(), vec![5]);
    core.reclaimed(5);
    core.reclaimed(9); // not sealed: refused
    let s = core.stats();
    assert_eq!(
        (s.segments, s.stored_bytes, s.pending_messages),
        (1, 100, 0)
    );
    // and the space is usable again: 100 stored + 9900 = the bound
    assert!(core.try_reserve(9_900, 100).is_ok());
}

#[test]
fn acks_wake_the_writer_only_for_a_first_watermark_or_a_reclaimable_segment() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 500, t0);
    append(&mut core, &[100; 9]).unwrap(); // segments 1 (1..4), 5 (5..8), 9 (9)
    let ack = |core: &mut OutboxState, id| {
        let before = core.watermark();
        core.ack(id);
        core.ack_wakes_writer(before)
    };
    assert!(!ack(&mut core, 2), "the watermark did not move");
    assert!(
        ack(&mut core, 1),
        "first watermark to persist: the writer had no deadline"
    );
    assert!(!ack(&mut core, 3), "the writer already waits to persist");
    assert!(ack(&mut core, 4), "segment 1 can go");
    core.persisted(4, t0);
    assert!(ack(&mut core, 5), "first watermark since the last persist");
    assert!(!ack(&mut core, 9), "the watermark did not move");
    for id in 6..=7 {
        assert!(!ack(&mut core, id));
    }
    assert!(
        ack(&mut core, 8),
        "segment 5 can go (9 is the active segment)"
    );
}

#[test]
fn next_id_is_above_everything_ever_stored_or_acknowledged() {
    assert_eq!(next_id_after(&[], 0), 1);
    assert_eq!(next_id_after(&[], 41), 42);
    assert_eq!(next_id_after(&[empty(7)], 0), 7);
    let seg = SegmentSummary {
        base: 3,
        ids: Some((3, 9)),
        record_bytes: 70,
    };
    assert_eq!(next_id_after(&[seg, empty(8)], 2), 10);
    assert_eq!(next_id_after(&[seg], 20), 21);
}

#[test]
fn the_watermark_is_persisted_at_most_once_per_interval() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 1_000, t0);
    assert_eq!(core.poll_timeout(), None);
    append(&mut core, &[10; 3]).unwrap();
    core.ack(1);
    assert_eq!(core.poll_persist(t0, false), None);
    assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert_eq!(core.poll_persist(t0, true), Some(1));
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(core.poll_persist(t1, false), Some(1));
    core.persisted(1, t1);
    assert_eq!(core.poll_timeout(), None);
    core.ack(2);
    assert_eq!(
        core.poll_persist(t1 + Duration::from_millis(999), false),
        None
    );
    assert_eq!(
        core.poll_persist(t1 + Duration::from_secs(1), false),
        Some(2)
    );
    assert_eq!(core.stats().ack_fsyncs, 1);
}

#[test]
fn the_reader_walks_durable_records_across_segments() {
    let t0 = Instant::now();
    let mut core = fresh(10_000, 500, t0);
    let mut pos = ReadPos::default();
    assert_eq!(core.poll_read(&mut pos), ReadStep::Wait);
    append(&mut core, &[100; 5]).unwrap(); // segment 1: 1..4, segment 5: 5
    assert_eq!(
        core.poll_read(&mut pos),
        ReadStep::Read {
            base: 1,
            offset: H,
            end: H + 400
        }
    );
    // read half of it
    let mut got = msgs(&[1, 2]);
    core.read_done(&mut pos, 1, H + 200, &mut got);
    assert_eq!(got.len(), 2);
    core.ack(3); // acknowledged before it was read: skipped
    assert_eq!(
        core.poll_read(&mut pos),
        ReadStep::Read {
            base: 1,
            offset: H + 200,
            end: H + 400
        }
    );
    let mut got = msgs(&[3, 4]);
    core.read_done(&mut pos, 1, H + 400, &mut got);
    assert_eq!(got, msgs(&[4]));
    assert_eq!(
        core.poll_read(&mut pos),
        ReadStep::Read {
            base: 5,
            offset: H,
            end: H + 100
        }
    );
    core.read_done(&mut pos, 5, H + 100, &mut msgs(&[5]));
    assert_eq!(core.poll_read(&mut pos), ReadStep::Wait);
    assert_eq!(core.stats().delivered, 4);
    // a rewind starts again at the oldest live segment
    core.rewind();
    assert!(matches!(
        core.poll_read(&mut pos),
        ReadStep::Read { base: 1, .. }
    ));
    // segment 1 reclaimed under the reader: it goes on with the next one
    for id in 1..=4 {
        core.ack(id);
    }
    core.reclaimed(1);
    assert!(!core.read_failed(&mut pos, 1));
    assert!(matches!(
        core.poll_read(&mut pos),
        ReadStep::Read { base: 5, .. }
    ));
    // corrupt durable bytes: skipped to the durable end, counted
    assert!(core.read_failed(&mut pos, 5));
    assert_eq!(core.stats().read_errors, 1);
    assert_eq!(core.poll_read(&mut pos), ReadStep::Wait);
    core.close();
    assert_eq!(core.poll_read(&mut pos), ReadStep::Done);
    assert_eq!(core.try_reserve(1, 1), Err(Refusal::Closed));
}

#[test]
fn recovery_counts_what_is_pending_above_the_watermark() {
    let rec = Recovered {
        segments: vec![
            SegmentSummary {
                base: 1,
                ids: Some((1, 10)),
                record_bytes: 1_000,
            },
            empty(11),
        ],
        watermark: 6,
        torn_tails: 0,
        truncated_bytes: 0,
        skipped_regions: 0,
        skipped_bytes: 0,
        min_next_id: 0,
    };
    let mut core = OutboxState::recover(limits(10_000, 2_000), &rec, Instant::now());
    let s = core.stats();
    assert_eq!(
        (
            s.pending_messages,
            s.recovered_messages,
            s.stored_bytes,
            s.next_id
        ),
        (4, 4, 1_000, 11)
    );
    let mut pos = ReadPos::default();
    assert!(matches!(
        core.poll_read(&mut pos),
        ReadStep::Read { base: 1, .. }
    ));
    let mut got = msgs(&(1..=10).collect::<Vec<_>>());
    core.read_done(&mut pos, 1, 1_000 + H, &mut got);
    assert_eq!(got, msgs(&[7, 8, 9, 10]));
    // the recovered last segment is the active one: appends continue it
    assert_eq!(append(&mut core, &[10]).unwrap(), vec![11]);
}

// ---- property test against a model of the disk ------------------------------------------------

/// The disk as the I/O layer would leave it: segments of (id, record length), and the
/// persisted watermark.
#[derive(Debug, Default, Clone)]
struct FakeDisk {
    segments: BTreeMap<u64, Vec<(u64, u64)>>,
    watermark: u64,
}

impl FakeDisk {
    fn apply(&mut self, plan: &super::state::Plan, lens: &[u64], upto: usize) {
        let mut i = 0;
        for c in &plan.chunks {
            let seg = self.segments.entry(c.base).or_default();
            for k in 0..c.count {
                if i >= upto {
                    return;
                }
                seg.push((c.first_id + k as u64, lens[i]));
                i += 1;
            }
        }
    }

    fn recovered(&mut self) -> Recovered {
        let mut segments: Vec<SegmentSummary> = self
            .segments
            .iter()
            .map(|(&base, recs)| SegmentSummary {
                base,
                ids: recs
                    .first()
                    .map(|f| (f.0, recs.last().map_or(f.0, |l| l.0))),
                record_bytes: recs.iter().map(|r| r.1).sum(),
            })
            .collect();
        if segments.is_empty() {
            let base = next_id_after(&[], self.watermark);
            self.segments.insert(base, Vec::new());
            segments.push(empty(base));
        }
        Recovered {
            segments,
            watermark: self.watermark,
            torn_tails: 0,
            truncated_bytes: 0,
            skipped_regions: 0,
            skipped_bytes: 0,
            min_next_id: 0,
        }
    }

    fn ids(&self) -> BTreeSet<u64> {
        self.segments.values().flatten().map(|r| r.0).collect()
    }

    fn bytes(&self) -> u64 {
        self.segments.values().flatten().map(|r| r.1).sum()
    }

    /// Drives a fresh reader over the whole log, as the reader task would.
    fn read_all(&self, core: &mut OutboxState) -> Vec<u64> {
        let mut pos = ReadPos::default();
        let mut out = Vec::new();
        while let ReadStep::Read { base, offset, end } = core.poll_read(&mut pos) {
            let mut at = H;
            let mut got = Vec::new();
            for &(id, len) in &self.segments[&base] {
                if at >= offset && at + len <= end {
                    got.push(id);
                }
                at += len;
            }
            let mut m = msgs(&got);
            core.read_done(&mut pos, base, end, &mut m);
            out.extend(m.iter().map(|m| m.id));
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u64>),
    /// Ack the n-th pending id (modulo).
    Ack(usize),
    /// Ack any id, maybe unknown.
    AckAny(u64),
    Persist,
    Reclaim,
    /// Restart as after `kill -9`.
    Restart,
    /// Crash in the middle of writing a batch: only the first records reach the disk.
    CrashMidWrite(Vec<u64>, usize),
    ReadAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(20_u64..300, 1..6).prop_map(Op::Append),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => (0_u64..200).prop_map(Op::AckAny),
        1 => Just(Op::Persist),
        2 => Just(Op::Reclaim),
        1 => Just(Op::Restart),
        1 => (prop::collection::vec(20_u64..300, 1..6), 0_usize..6)
            .prop_map(|(l, k)| Op::CrashMidWrite(l, k)),
        1 => Just(Op::ReadAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn appends_acks_and_restarts_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let lim = limits(2_000, 700);
        let t0 = Instant::now();
        let mut disk = FakeDisk::default();
        let mut core = OutboxState::recover(lim, &disk.recovered(), t0);
        // what the core considers acknowledged, as the model sees it
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        // ids whose append was reported durable and that were never acknowledged
        let mut must_deliver: BTreeSet<u64> = BTreeSet::new();
        let mut highest_id = 0_u64;

        for op in ops {
            match op {
                Op::Append(lens) => {
                    let total: u64 = lens.iter().sum();
                    let before = core.stats();
                    match append_to(&mut core, &mut disk, &lens) {
                        Ok(ids) => {
                            prop_assert!(before.stored_bytes + total <= lim.max_bytes);
                            for &id in &ids {
                                prop_assert!(id > highest_id, "id {id} reused");
                                highest_id = id;
                                must_deliver.insert(id);
                            }
                        }
                        Err(Refusal::Full { .. }) => {
                            prop_assert!(before.stored_bytes + total > lim.max_bytes);
                        }
                        Err(other) => prop_assert!(false, "refused: {other:?}"),
                    }
                }
                Op::Ack(n) => {
                    let pending: Vec<u64> =
                        disk.ids().difference(&acked).copied().collect();
                    if !pending.is_empty() {
                        let id = pending[n % pending.len()];
                        prop_assert_eq!(core.ack(id), AckOutcome::Accepted);
                        acked.insert(id);
                        must_deliver.remove(&id);
                    }
                }
                Op::AckAny(id) => {
                    let outcome = core.ack(id);
                    let pending = disk.ids().contains(&id) && !acked.contains(&id);
                    prop_assert_eq!(outcome == AckOutcome::Accepted, pending);
                    if pending {
                        acked.insert(id);
                        must_deliver.remove(&id);
                    }
                }
                Op::Persist => {
                    if let Some(w) = core.poll_persist(t0, true) {
                        disk.watermark = w;
                        core.persisted(w, t0);
                    }
                }
                Op::Reclaim => {
                    let last = disk.segments.keys().next_back().copied();
                    for base in core.reclaimable() {
                        prop_assert_ne!(Some(base), last, "the active segment reclaimed");
                        for (id, _) in &disk.segments[&base] {
                            prop_assert!(acked.contains(id), "unacked {} reclaimed", id);
                        }
                        disk.segments.remove(&base);
                        core.reclaimed(base);
                    }
                }
                Op::Restart => {
                    core = OutboxState::recover(lim, &disk.recovered(), t0);
                    acked.retain(|&id| id <= disk.watermark);
                }
                Op::CrashMidWrite(lens, k) => {
                    let total: u64 = lens.iter().sum();
                    let largest = lens.iter().copied().max().unwrap_or(0);
                    if core.try_reserve(total, largest).is_ok() {
                        let plan = core.plan(&lens);
                        disk.apply(&plan, &lens, k);
                        for id in disk.ids() {
                            highest_id = highest_id.max(id);
                        }
                    }
                    core = OutboxState::recover(lim, &disk.recovered(), t0);
                    acked.retain(|&id| id <= disk.watermark);
                }
                Op::ReadAll => {
                    let got = disk.read_all(&mut core);
                    prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
                    let got: BTreeSet<u64> = got.into_iter().collect();
                    prop_assert!(must_deliver.is_subset(&got), "lost: {:?}",
                        must_deliver.difference(&got).collect::<Vec<_>>());
                    prop_assert!(got.is_disjoint(&acked));
                }
            }
            // invariants after every step
            let s = core.stats();
            prop_assert_eq!(s.stored_bytes, disk.bytes());
            prop_assert!(s.stored_bytes + s.reserved_bytes <= lim.max_bytes
                || s.reserved_bytes == 0);
            prop_assert!(must_deliver.is_subset(&disk.ids()), "an unacked message left the disk");
            let pending = disk.ids().difference(&acked).count() as u64;
            prop_assert_eq!(s.pending_messages, pending);
            prop_assert!(s.next_id > highest_id);
        }
        // after a last restart, everything unacknowledged comes out, in order
        core = OutboxState::recover(lim, &disk.recovered(), t0);
        let got = disk.read_all(&mut core);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
        let got: BTreeSet<u64> = got.into_iter().collect();
        prop_assert!(must_deliver.is_subset(&got));
    }
}

fn append_to(
    core: &mut OutboxState,
    disk: &mut FakeDisk,
    lens: &[u64],
) -> Result<Vec<u64>, Refusal> {
    let total = lens.iter().sum();
    core.try_reserve(total, lens.iter().copied().max().unwrap_or(0))?;
    let plan = core.plan(lens);
    disk.apply(&plan, lens, lens.len());
    core.commit(&plan, total, 1);
    let first = plan.chunks[0].first_id;
    Ok((first..first + lens.len() as u64).collect())
}
