//! The sender sequence number and its persisted mark (RFC 8613 §7.2, Appendix B.1.1).
//!
//! An AEAD nonce must never repeat under one key, so a Sender Sequence Number must never be used
//! twice — also not across a reboot that loses RAM. The approach of Appendix B.1.1, in a form
//! that needs no "F" guess:
//!
//! * the *mark* `M` is a value written to non-volatile memory, meaning "no sequence number
//!   `>= M` has been used";
//! * the sequence hands out numbers only below the last mark the caller confirmed as durable
//!   ([`SenderSequence::persisted`]); at the mark it stops with
//!   [`OscoreError::PersistPending`];
//! * well before that (when fewer than `K/2` numbers are left), [`SenderSequence::mark_to_persist`]
//!   asks for the next mark, `K` beyond the current one, so writes happen every `K` messages and
//!   in the background of normal sending;
//! * after a restart, [`SenderSequence::restore`] starts at the stored mark.
//!
//! Every number handed out before a crash is below the mark that was durable at that time, and
//! the restored sequence starts at or above it: no number repeats, however late a write lands or
//! whether it lands at all. At most about `1.5·K` numbers are skipped per restart, out of 2^40.
//!
//! This is sans-IO: the caller owns the storage; nothing here touches a file.

use super::OscoreError;

/// The largest Sender Sequence Number (§7.2.1, §12.6): 2^40 − 1.
pub const MAX_SEQUENCE_NUMBER: u64 = (1 << 40) - 1;

/// One past [`MAX_SEQUENCE_NUMBER`]: the largest meaningful mark.
const END: u64 = MAX_SEQUENCE_NUMBER + 1;

/// A sender sequence number with a persisted high-water mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSequence {
    /// The next number to hand out.
    next: u64,
    /// Numbers below this were confirmed persisted as unusable after a restart.
    durable: u64,
    /// `K`: how far each new mark reaches beyond the previous one.
    step: u64,
}

impl SenderSequence {
    /// A fresh sequence starting at 0 (§3.2.2). No number can be used until a first mark is
    /// persisted: call [`mark_to_persist`](Self::mark_to_persist).
    ///
    /// `step` is `K`, the distance between persisted marks (at least 1; larger means fewer writes
    /// and more numbers skipped per restart).
    pub fn new(step: u64) -> SenderSequence {
        SenderSequence::restore(0, step)
    }

    /// A sequence after a restart: it continues at `persisted_mark`, the last mark the caller
    /// stored. A new mark must be persisted before the first number is used.
    pub fn restore(persisted_mark: u64, step: u64) -> SenderSequence {
        let mark = persisted_mark.min(END);
        SenderSequence {
            next: mark,
            durable: mark,
            step: step.max(1),
        }
    }

    /// The next number [`take`](Self::take) would hand out.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// The mark last confirmed with [`persisted`](Self::persisted) (or restored).
    pub fn durable_mark(&self) -> u64 {
        self.durable
    }

    /// The mark the caller should persist now, if one is due: `Some(m)` while fewer than `K/2`
    /// numbers are left below the durable mark. The value stays the same until
    /// [`persisted`](Self::persisted) is called, so a caller with a write in flight can compare
    /// and skip. `None` once the marks reach 2^40.
    #[must_use]
    pub fn mark_to_persist(&self) -> Option<u64> {
        let left = self.durable.saturating_sub(self.next);
        if left > self.step / 2 {
            return None;
        }
        let mark = self
            .durable
            .max(self.next)
            .saturating_add(self.step)
            .min(END);
        (mark > self.durable).then_some(mark)
    }

    /// Reports that `mark` is durable. Lower marks than the current one change nothing.
    pub fn persisted(&mut self, mark: u64) {
        self.durable = self.durable.max(mark.min(END));
    }

    /// Hands out the next sequence number.
    ///
    /// Errors: [`OscoreError::PersistPending`] when the number is not below the durable mark,
    /// [`OscoreError::SequenceExhausted`] past 2^40 − 1.
    pub fn take(&mut self) -> Result<u64, OscoreError> {
        if self.next > MAX_SEQUENCE_NUMBER {
            return Err(OscoreError::SequenceExhausted);
        }
        if self.next >= self.durable {
            return Err(OscoreError::PersistPending);
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_sequence_needs_a_mark_first() {
        let mut s = SenderSequence::new(10);
        assert_eq!(s.take(), Err(OscoreError::PersistPending));
        assert_eq!(s.mark_to_persist(), Some(10));
        s.persisted(10);
        assert_eq!(s.mark_to_persist(), None);
        for i in 0..5 {
            assert_eq!(s.take(), Ok(i));
        }
        // Five left = K/2: the next mark is due, the same value until confirmed.
        assert_eq!(s.mark_to_persist(), Some(20));
        assert_eq!(s.take(), Ok(5));
        assert_eq!(s.mark_to_persist(), Some(20));
        for i in 6..10 {
            assert_eq!(s.take(), Ok(i));
        }
        assert_eq!(s.take(), Err(OscoreError::PersistPending));
        s.persisted(20);
        assert_eq!(s.take(), Ok(10));
    }

    #[test]
    fn stale_confirmations_do_not_lower_the_mark() {
        let mut s = SenderSequence::restore(100, 10);
        s.persisted(110);
        s.persisted(50);
        assert_eq!(s.durable_mark(), 110);
    }

    #[test]
    fn exhaustion_at_2_pow_40() {
        let mut s = SenderSequence::restore(MAX_SEQUENCE_NUMBER, 10);
        assert_eq!(s.mark_to_persist(), Some(END));
        s.persisted(u64::MAX);
        assert_eq!(s.durable_mark(), END);
        assert_eq!(s.take(), Ok(MAX_SEQUENCE_NUMBER));
        assert_eq!(s.take(), Err(OscoreError::SequenceExhausted));
        assert_eq!(s.mark_to_persist(), None);
    }
}
