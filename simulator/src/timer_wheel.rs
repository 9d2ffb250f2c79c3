//! A hierarchical timer wheel (sans-IO): the deadlines of a shard's devices — a million of
//! them — in O(1) per insertion and per expiry, instead of a binary heap's O(log n).
//!
//! Time is cut into ticks of [`TICK`] from an origin. Level 0 has 64 slots of one tick each,
//! level 1 64 slots of 64 ticks, and so on up to [`LEVELS`] levels (64^4 ticks of 1 ms: about
//! 4.7 hours); later deadlines wait in an overflow list. An entry sits at the lowest level whose
//! slot range still separates it from the present; when the present enters a slot of a higher
//! level, that slot's entries move down (cascade), so each entry moves at most `LEVELS` times.
//!
//! A deadline is rounded *up* to its tick, so an entry never comes due early (at most one tick
//! late). Entries are `(tick, key)` pairs; the wheel does not deduplicate keys — its owner
//! decides whether an entry that comes due is still current (the shard keeps each member's
//! earliest queued deadline and skips stale entries).

use std::time::Duration;

use v6iot_sdk::time::Instant;

/// The wheel's resolution.
pub const TICK: Duration = Duration::from_millis(1);

/// Slots per level (a power of two).
const SLOTS: usize = 64;
/// Bits of a tick number per level.
const BITS: u32 = 6;
/// Levels of the wheel; deadlines further out than `64^LEVELS` ticks wait in the overflow.
pub const LEVELS: usize = 4;

/// Deadlines of many keys (a shard's members); see the module docs.
#[derive(Debug)]
pub struct TimerWheel {
    origin: Instant,
    /// The tick the wheel has expired up to (exclusive): every entry at a tick below it was
    /// handed out.
    now: u64,
    levels: Vec<Vec<Vec<(u64, u32)>>>,
    overflow: Vec<(u64, u32)>,
    len: usize,
}

impl TimerWheel {
    /// An empty wheel whose tick 0 starts at `origin`.
    pub fn new(origin: Instant) -> TimerWheel {
        TimerWheel {
            origin,
            now: 0,
            levels: (0..LEVELS)
                .map(|_| (0..SLOTS).map(|_| Vec::new()).collect())
                .collect(),
            overflow: Vec::new(),
            len: 0,
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick of `at`, rounded up (a deadline is never early).
    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        let tick = TICK.as_micros() as u64;
        (since.as_micros() as u64).div_ceil(tick)
    }

    /// The start of `tick`.
    fn instant_of(&self, tick: u64) -> Instant {
        self.origin
            .checked_add(TICK.saturating_mul(u32::try_from(tick).unwrap_or(u32::MAX)))
            .unwrap_or(self.origin)
    }

    /// Queues `key` to come due at `at` (at once, at the next [`TimerWheel::expire`], if `at`
    /// has passed).
    pub fn insert(&mut self, at: Instant, key: u32) {
        let tick = self.tick_of(at).max(self.now);
        self.place(tick, key);
        self.len += 1;
    }

    /// Puts an entry where it belongs relative to the present (`tick >= self.now`).
    fn place(&mut self, tick: u64, key: u32) {
        let differ = tick ^ self.now;
        let level = if differ == 0 {
            0
        } else {
            ((63 - differ.leading_zeros()) / BITS) as usize
        };
        if level >= LEVELS {
            self.overflow.push((tick, key));
            return;
        }
        let slot = ((tick >> (BITS * level as u32)) as usize) & (SLOTS - 1);
        if let Some(s) = self.levels.get_mut(level).and_then(|l| l.get_mut(slot)) {
            s.push((tick, key));
        }
    }

    /// When the wheel next has something to hand out or to move down a level: a time at or
    /// before the earliest deadline queued (a wake-up then may find nothing due).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_event_tick().map(|t| self.instant_of(t))
    }

    /// The next tick (at or after the present) at which an entry comes due at level 0 or a
    /// slot of a higher level (or the overflow) has to be moved down.
    fn next_event_tick(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let mut best: Option<u64> = None;
        for (level, slots) in self.levels.iter().enumerate() {
            let shift = BITS * level as u32;
            let current = ((self.now >> shift) as usize) & (SLOTS - 1);
            // At level 0 an entry's slot is its tick, so the current slot counts; at a higher
            // level the current slot counts only while the present sits on its start (it
            // still waits to be moved down).
            let aligned = self.now & ((1u64 << shift) - 1) == 0;
            let first = if level == 0 || aligned {
                current
            } else {
                current + 1
            };
            let base = (self.now >> (shift + BITS)) << (shift + BITS);
            if let Some(slot) =
                (first..SLOTS).find(|&i| slots.get(i).is_some_and(|s| !s.is_empty()))
            {
                let tick = (base + ((slot as u64) << shift)).max(self.now);
                best = Some(best.map_or(tick, |b| b.min(tick)));
            }
        }
        if !self.overflow.is_empty() {
            let span = BITS * LEVELS as u32;
            let tick = if self.now & ((1u64 << span) - 1) == 0 {
                self.now
            } else {
                ((self.now >> span) + 1) << span
            };
            best = Some(best.map_or(tick, |b| b.min(tick)));
        }
        best
    }

    /// Hands every key whose deadline is at or before `now` to `out` (in deadline order, up to
    /// a tick).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<u32>) {
        // Before the origin nothing is due, not even tick 0 (entries at the origin itself).
        if now < self.origin {
            return;
        }
        // Every tick up to and including the one that `now` is in (rounded down) is due.
        let since = now.saturating_duration_since(self.origin).as_micros() as u64;
        let target = since / TICK.as_micros() as u64;
        while self.now <= target {
            let Some(next) = self.next_event_tick() else {
                self.now = target + 1;
                return;
            };
            if next > target {
                self.now = target + 1;
                return;
            }
            self.now = next;
            self.cascade();
            // A level-0 slot holds only entries of its own tick in the current round.
            let slot = (self.now as usize) & (SLOTS - 1);
            if let Some(entries) = self.levels.get_mut(0).and_then(|l| l.get_mut(slot)) {
                self.len -= entries.len();
                out.extend(entries.drain(..).map(|(_, key)| key));
            }
            self.now += 1;
        }
    }

    /// At the start of a slot of a higher level, moves that slot's entries down.
    fn cascade(&mut self) {
        for level in 1..=LEVELS {
            let shift = BITS * level as u32;
            if self.now & ((1u64 << shift) - 1) != 0 {
                return;
            }
            if level == LEVELS {
                let overflow = std::mem::take(&mut self.overflow);
                for (tick, key) in overflow {
                    self.place(tick, key);
                }
                return;
            }
            let slot = ((self.now >> shift) as usize) & (SLOTS - 1);
            let entries = self
                .levels
                .get_mut(level)
                .and_then(|l| l.get_mut(slot))
                .map(std::mem::take)
                .unwrap_or_default();
            for (tick, key) in entries {
                self.place(tick, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn nothing_is_due_before_the_origin() {
        // The simulator's shards start their clocks a moment ahead (load.rs): a device planned
        // at the origin must not power on while the threads wait for it.
        let o = Instant::ZERO + Duration::from_millis(200);
        let mut w = TimerWheel::new(o);
        w.insert(o, 1);
        w.insert(at(o, 1), 2);
        let mut out = Vec::new();
        w.expire(Instant::ZERO, &mut out);
        w.expire(o - Duration::from_micros(1), &mut out);
        assert!(out.is_empty(), "{out:?} due before the origin");
        w.expire(o, &mut out);
        assert_eq!(out, [1]);
        w.expire(at(o, 1), &mut out);
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn hands_out_each_entry_once_when_due_never_early() {
        let o = Instant::ZERO;
        let mut w = TimerWheel::new(o);
        w.insert(at(o, 5), 1);
        w.insert(o + Duration::from_micros(5_500), 2); // rounds up to tick 6
        w.insert(at(o, 0), 3);
        assert_eq!(w.len(), 3);
        let mut out = Vec::new();
        w.expire(at(o, 0), &mut out);
        assert_eq!(out, [3]);
        out.clear();
        w.expire(o + Duration::from_micros(4_999), &mut out);
        assert!(out.is_empty());
        w.expire(at(o, 5), &mut out);
        assert_eq!(out, [1]);
        out.clear();
        w.expire(at(o, 6), &mut out);
        assert_eq!(out, [2]);
        assert!(w.is_empty());
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn a_deadline_in_the_past_is_due_at_once() {
        let o = Instant::ZERO;
        let mut w = TimerWheel::new(o);
        let mut out = Vec::new();
        w.expire(at(o, 1000), &mut out);
        w.insert(at(o, 10), 7);
        assert_eq!(w.poll_timeout(), Some(at(o, 1001)));
        w.expire(at(o, 1001), &mut out);
        assert_eq!(out, [7]);
    }

    #[test]
    fn far_deadlines_cascade_down_and_overflow_comes_back() {
        let o = Instant::ZERO;
        let mut w = TimerWheel::new(o);
        let five_hours = 5 * 3600 * 1000;
        let deadlines = [
            63, 64, 65, 4095, 4096, 262_143, 262_144, 300_000, five_hours,
        ];
        for (k, ms) in deadlines.iter().enumerate() {
            w.insert(at(o, *ms), k as u32);
        }
        let mut seen = Vec::new();
        let mut now = o;
        // Each wake-up hands out an entry or moves a slot down: a few hundred at most.
        for _ in 0..1000 {
            let Some(next) = w.poll_timeout() else {
                break;
            };
            assert!(next >= now, "time goes forward");
            now = next;
            let mut out = Vec::new();
            w.expire(now, &mut out);
            for k in out {
                let due = at(o, deadlines[k as usize]);
                assert!(now >= due, "key {k} early: {now:?} < {due:?}");
                assert!(now < due + TICK, "key {k} late: {now:?}");
                seen.push(k);
            }
        }
        assert!(w.is_empty(), "{} entries never came out", w.len());
        assert_eq!(seen, (0..deadlines.len() as u32).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any deadlines, expired at any steps: every key comes out exactly once, never before
        /// its deadline, and by the first expiry at or after its tick.
        #[test]
        fn every_key_once_in_time(
            deadlines in proptest::collection::vec(0u64..20_000_000, 1..200),
            steps in proptest::collection::vec(1u64..3_000_000, 1..40),
        ) {
            let o = Instant::ZERO;
            let mut w = TimerWheel::new(o);
            for (k, ms) in deadlines.iter().enumerate() {
                w.insert(at(o, *ms), k as u32);
            }
            let mut got = BTreeMap::new();
            let mut now_ms = 0;
            for step in steps.iter().chain(std::iter::repeat_n(&3_000_000, 10)) {
                now_ms += step;
                let mut out = Vec::new();
                w.expire(at(o, now_ms), &mut out);
                for k in out {
                    let due = deadlines[k as usize];
                    proptest::prop_assert!(due <= now_ms, "key {} due {} out at {}", k, due, now_ms);
                    proptest::prop_assert!(got.insert(k, now_ms).is_none(), "key {} twice", k);
                }
            }
            proptest::prop_assert_eq!(got.len(), deadlines.len());
            proptest::prop_assert!(w.is_empty());
            // A key came out at the first expiry at or after its deadline.
            let mut at_ms = 0;
            let times: Vec<u64> = steps.iter().chain(std::iter::repeat_n(&3_000_000, 10)).map(|s| { at_ms += s; at_ms }).collect();
            for (k, due) in deadlines.iter().enumerate() {
                let first = times.iter().find(|t| **t >= *due).copied();
                proptest::prop_assert_eq!(got.get(&(k as u32)).copied(), first);
            }
        }

        /// Entries inserted between expiries (as a shard does, at any time): each comes out
        /// once, never early, and no later than the first expiry at or after its deadline.
        #[test]
        fn inserts_between_expiries_are_never_lost(
            steps in proptest::collection::vec((1u64..300, proptest::collection::vec(0u64..500, 0..4)), 1..300),
            far in proptest::collection::vec(0u64..300_000, 0..50),
        ) {
            let o = Instant::ZERO;
            let mut w = TimerWheel::new(o);
            let mut deadlines: Vec<u64> = Vec::new();
            for d in &far {
                w.insert(at(o, *d), deadlines.len() as u32);
                deadlines.push(*d);
            }
            let mut got = BTreeMap::new();
            let mut now_ms = 0;
            for (step, inserts) in &steps {
                for d in inserts {
                    w.insert(at(o, now_ms + d), deadlines.len() as u32);
                    deadlines.push(now_ms + d);
                }
                now_ms += step;
                let mut out = Vec::new();
                w.expire(at(o, now_ms), &mut out);
                for k in out {
                    proptest::prop_assert!(deadlines[k as usize] <= now_ms);
                    proptest::prop_assert!(got.insert(k, now_ms).is_none());
                }
                // Everything due by now is out.
                for (k, d) in deadlines.iter().enumerate() {
                    if *d <= now_ms {
                        proptest::prop_assert!(got.contains_key(&(k as u32)), "key {} due {} missing at {}", k, d, now_ms);
                    }
                }
            }
        }

        /// `poll_timeout` never sleeps past a deadline.
        #[test]
        fn poll_timeout_is_never_after_the_earliest_deadline(
            deadlines in proptest::collection::vec(0u64..20_000_000, 1..100),
            start in 0u64..1_000_000,
        ) {
            let o = Instant::ZERO;
            let mut w = TimerWheel::new(o);
            let mut out = Vec::new();
            w.expire(at(o, start), &mut out);
            for (k, ms) in deadlines.iter().enumerate() {
                w.insert(at(o, start + ms), k as u32);
            }
            let earliest = at(o, start + deadlines.iter().min().copied().unwrap_or(0));
            let wake = w.poll_timeout().unwrap();
            proptest::prop_assert!(wake <= earliest.max(at(o, start + 1)));
        }
    }
}
