//! The replay window of a Recipient Context (RFC 8613 §7.4, §3.2.2).
//!
//! The anti-replay sliding window of RFC 6347 §4.1.2.6: the highest Partial IV accepted so far,
//! and one bit for each of the `size − 1` values below it. A Partial IV is fresh when it is above
//! the highest, or inside the window and not yet seen. [`ReplayWindow::check`] runs before
//! decryption, [`ReplayWindow::accept`] only after the message verified, so forged messages
//! never move the window.

use super::OscoreError;

/// The default window size of RFC 8613 §3.2.2.
pub const DEFAULT_WINDOW: u32 = 32;
/// The largest supported window size.
pub const MAX_WINDOW: u32 = 128;

/// An anti-replay sliding window over received Partial IVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Window size in 1..=128.
    size: u32,
    /// The highest accepted Partial IV.
    highest: Option<u64>,
    /// Bit `i` set: `highest − i` was accepted.
    seen: u128,
    /// Partial IVs below this are rejected (after a restart, Appendix B.1.2).
    floor: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new(DEFAULT_WINDOW)
    }
}

impl ReplayWindow {
    /// An empty window of `size` values, clamped to 1..=128.
    pub fn new(size: u32) -> ReplayWindow {
        ReplayWindow {
            size: size.clamp(1, MAX_WINDOW),
            highest: None,
            seen: 0,
            floor: 0,
        }
    }

    /// The window size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The highest accepted Partial IV, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// The lowest Partial IV still acceptable after a restart of this window: one past the
    /// highest accepted value, or the floor when nothing above it was accepted. Persisting it
    /// and restoring it with [`set_floor`](Self::set_floor) makes every accepted Partial IV a
    /// replay after a restart (Appendix B.1.2).
    pub fn restart_floor(&self) -> u64 {
        self.highest
            .map_or(self.floor, |h| self.floor.max(h.saturating_add(1)))
    }

    /// The floor set with [`set_floor`](Self::set_floor) (0 if none).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Rejects every Partial IV below `floor` from now on, e.g. after a restart that lost the
    /// window: the lower limit of Appendix B.1.2, or one past a persisted highest value.
    pub fn set_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// Whether `piv` is fresh: `Err(OscoreError::Replay)` when it was accepted before, lies left
    /// of the window or below the floor.
    pub fn check(&self, piv: u64) -> Result<(), OscoreError> {
        if piv < self.floor {
            return Err(OscoreError::Replay);
        }
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if piv > highest {
            return Ok(());
        }
        let behind = highest - piv;
        if behind >= u64::from(self.size) {
            return Err(OscoreError::Replay);
        }
        if self.seen & (1u128 << behind) != 0 {
            return Err(OscoreError::Replay);
        }
        Ok(())
    }

    /// Records `piv` as received. Call only after the message verified.
    pub fn accept(&mut self, piv: u64) {
        match self.highest {
            Some(highest) if piv <= highest => {
                let behind = highest - piv;
                if behind < u64::from(self.size) {
                    self.seen |= 1u128 << behind;
                }
            }
            Some(highest) => {
                let shift = piv - highest;
                self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(piv);
            }
            None => {
                self.seen = 1;
                self.highest = Some(piv);
            }
        }
        if self.size < MAX_WINDOW {
            self.seen &= (1u128 << self.size) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_values_are_rejected() {
        let mut w = ReplayWindow::new(32);
        assert!(w.check(5).is_ok());
        w.accept(5);
        assert_eq!(w.check(5), Err(OscoreError::Replay));
        assert!(w.check(3).is_ok(), "inside the window, unseen");
        w.accept(40);
        assert_eq!(
            w.check(8),
            Err(OscoreError::Replay),
            "40 - 8 = 32 is outside"
        );
        assert!(w.check(9).is_ok());
        w.accept(9);
        assert_eq!(w.check(9), Err(OscoreError::Replay));
        assert_eq!(w.check(40), Err(OscoreError::Replay));
        w.accept(1000);
        assert_eq!(w.check(40), Err(OscoreError::Replay));
        assert!(w.check(999).is_ok());
    }

    #[test]
    fn floor_rejects_below() {
        let mut w = ReplayWindow::default();
        w.set_floor(100);
        assert_eq!(w.check(99), Err(OscoreError::Replay));
        assert!(w.check(100).is_ok());
    }

    #[test]
    fn restart_floor_is_one_past_the_highest() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.restart_floor(), 0);
        w.set_floor(7);
        assert_eq!(w.restart_floor(), 7);
        w.accept(9);
        w.accept(8);
        assert_eq!(w.restart_floor(), 10);
        let mut restarted = ReplayWindow::default();
        restarted.set_floor(w.restart_floor());
        assert_eq!(restarted.check(9), Err(OscoreError::Replay));
        assert_eq!(restarted.check(8), Err(OscoreError::Replay));
        assert!(restarted.check(10).is_ok());
    }

    #[test]
    fn largest_window() {
        let mut w = ReplayWindow::new(1000);
        assert_eq!(w.size(), 128);
        w.accept(200);
        w.accept(73);
        assert_eq!(w.check(73), Err(OscoreError::Replay));
        assert!(w.check(74).is_ok());
        assert_eq!(w.check(72), Err(OscoreError::Replay));
        w.accept(500);
        assert_eq!(w.check(200), Err(OscoreError::Replay));
    }
}
