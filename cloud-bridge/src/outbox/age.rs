//! How old the oldest unacknowledged record is (a metric for operators: "how far behind is
//! the platform"). Sans-IO: the writer reports each group commit's last id and time, the
//! caller passes the watermark and the time in.
//!
//! Bounded: at most [`MAX_MARKS`] groups are remembered; past that the newest mark is moved
//! forward instead of adding one, so an age is never under-reported (a record may be
//! reported as old as the group before it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Group commits remembered at most.
pub const MAX_MARKS: usize = 4096;

/// (last id of a group, when it became durable), oldest first.
#[derive(Debug, Default)]
pub struct AgeTracker {
    marks: VecDeque<(u64, Instant)>,
}

impl AgeTracker {
    /// Records up to `last_id` became durable at `at` (ids only grow).
    pub fn durable(&mut self, last_id: u64, at: Instant) {
        if self.marks.len() >= MAX_MARKS {
            if let Some(newest) = self.marks.back_mut() {
                newest.0 = newest.0.max(last_id);
            }
            return;
        }
        self.marks.push_back((last_id, at));
    }

    /// The age of the oldest record above `watermark` (every id up to it acknowledged), or
    /// `None` when every remembered record is acknowledged. Forgets acknowledged groups.
    pub fn oldest(&mut self, watermark: u64, now: Instant) -> Option<Duration> {
        while self
            .marks
            .front()
            .is_some_and(|&(last, _)| last <= watermark)
        {
            self.marks.pop_front();
        }
        self.marks
            .front()
            .map(|&(_, at)| now.saturating_duration_since(at))
    }

    /// Groups remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_oldest_unacknowledged_group_sets_the_age() {
        let t0 = Instant::now();
        let mut a = AgeTracker::default();
        assert_eq!(a.oldest(0, t0), None);
        a.durable(10, t0);
        a.durable(20, t0 + Duration::from_secs(5));
        let now = t0 + Duration::from_secs(7);
        assert_eq!(a.oldest(0, now), Some(Duration::from_secs(7)));
        // part of the first group acknowledged: it is still the oldest
        assert_eq!(a.oldest(9, now), Some(Duration::from_secs(7)));
        assert_eq!(a.oldest(10, now), Some(Duration::from_secs(2)));
        assert_eq!(a.oldest(20, now), None);
        assert!(a.is_empty());
    }

    #[test]
    fn at_the_bound_ages_are_over_not_under_reported() {
        let t0 = Instant::now();
        let mut a = AgeTracker::default();
        for i in 0..MAX_MARKS as u64 + 10 {
            a.durable(i + 1, t0 + Duration::from_secs(i));
        }
        assert_eq!(a.len(), MAX_MARKS);
        let now = t0 + Duration::from_secs(100_000);
        // everything up to the last remembered mark's first id acknowledged: the newest mark
        // took the ten later groups, so the age is that mark's (older) time
        let last_mark = MAX_MARKS as u64 - 1;
        assert_eq!(
            a.oldest(last_mark, now),
            Some(now - (t0 + Duration::from_secs(last_mark)))
        );
        assert_eq!(
            a.oldest(MAX_MARKS as u64 + 9, now),
            Some(Duration::from_secs(100_000 - last_mark))
        );
        assert_eq!(a.oldest(MAX_MARKS as u64 + 10, now), None);
    }
}
