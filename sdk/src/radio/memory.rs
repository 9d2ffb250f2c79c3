//! In-memory radios on one shared channel, for tests and single-threaded simulations.
//!
//! Every frame one radio transmits is queued, with its FCS, for every other radio on the same
//! [`Medium`] (a broadcast channel; the receiving 6LoWPAN layer filters by address). Each
//! radio's queue holds at most [`Medium::QUEUE_LIMIT`] frames; a frame for a full queue is
//! dropped and counted ([`Medium::overflows`]). No time passes: frames arrive at once.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::convert::Infallible;
use core::time::Duration;

use super::{FcsFrame, MacFrame, Radio, RadioStats, Reception};

#[derive(Debug, Default)]
struct Channel {
    queues: Vec<VecDeque<Vec<u8>>>,
    overflows: u64,
}

/// A shared channel that [`MemoryRadio`]s attach to.
#[derive(Debug, Clone, Default)]
pub struct Medium {
    channel: Rc<RefCell<Channel>>,
}

impl Medium {
    /// The most frames waiting for one radio.
    pub const QUEUE_LIMIT: usize = 1024;

    /// An empty channel.
    #[must_use]
    pub fn new() -> Medium {
        Medium::default()
    }

    /// A new radio on this channel.
    #[must_use]
    pub fn attach(&self) -> MemoryRadio {
        let mut channel = self.channel.borrow_mut();
        channel.queues.push(VecDeque::new());
        MemoryRadio {
            channel: Rc::clone(&self.channel),
            index: channel.queues.len() - 1,
            stats: RadioStats::default(),
        }
    }

    /// Frames dropped because a receiver's queue was full.
    #[must_use]
    pub fn overflows(&self) -> u64 {
        self.channel.borrow().overflows
    }
}

/// One radio on a [`Medium`]. Its [`Radio::receive`] never waits.
#[derive(Debug)]
pub struct MemoryRadio {
    channel: Rc<RefCell<Channel>>,
    index: usize,
    stats: RadioStats,
}

impl MemoryRadio {
    /// Queues raw bytes for this radio as if they came over the air with an FCS: for tests
    /// of what a receiver does with bad frames.
    pub fn inject_on_air(&mut self, with_fcs: &[u8]) {
        if let Some(q) = self.channel.borrow_mut().queues.get_mut(self.index) {
            q.push_back(with_fcs.to_vec());
        }
    }
}

impl Radio for MemoryRadio {
    type Error = Infallible;

    fn transmit(&mut self, frame: MacFrame<'_>) -> Result<(), Infallible> {
        let mut on_air = alloc::vec![0; frame.len() + super::FCS_LEN];
        if frame.write_with_fcs(&mut on_air).is_none() {
            return Ok(());
        }
        let mut channel = self.channel.borrow_mut();
        let mut overflows = 0;
        for (i, q) in channel.queues.iter_mut().enumerate() {
            if i == self.index {
                continue;
            }
            if q.len() >= Medium::QUEUE_LIMIT {
                overflows += 1;
            } else {
                q.push_back(on_air.clone());
            }
        }
        channel.overflows += overflows;
        self.stats.sent += 1;
        Ok(())
    }

    fn receive<'b>(
        &mut self,
        buf: &'b mut [u8],
        _wait: Duration,
    ) -> Result<Option<Reception<'b>>, Infallible> {
        let frame = loop {
            let next = self
                .channel
                .borrow_mut()
                .queues
                .get_mut(self.index)
                .and_then(VecDeque::pop_front);
            let Some(on_air) = next else {
                return Ok(None);
            };
            match FcsFrame::check(&on_air) {
                Ok(f) if f.mac_frame().len() > buf.len() => self.stats.truncated += 1,
                Ok(f) => break f.mac_frame().as_bytes().to_vec(),
                Err(super::FrameError::BadFcs { .. }) => self.stats.bad_fcs += 1,
                Err(_) => self.stats.malformed += 1,
            }
        };
        let Some(dst) = buf.get_mut(..frame.len()) else {
            return Ok(None);
        };
        dst.copy_from_slice(&frame);
        self.stats.received += 1;
        Ok(MacFrame::new(dst)
            .ok()
            .map(|frame| Reception { frame, lqi: None }))
    }

    fn stats(&self) -> RadioStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_every_other_radio_once() {
        let medium = Medium::new();
        let mut a = medium.attach();
        let mut b = medium.attach();
        let mut c = medium.attach();
        a.transmit(MacFrame::new(&[1, 2, 3, 4]).unwrap()).unwrap();
        let mut buf = [0; 127];
        for r in [&mut b, &mut c] {
            let got = r.receive(&mut buf, Duration::ZERO).unwrap().unwrap();
            assert_eq!(got.frame.as_bytes(), [1, 2, 3, 4]);
            assert!(r.receive(&mut buf, Duration::ZERO).unwrap().is_none());
        }
        assert!(a.receive(&mut buf, Duration::ZERO).unwrap().is_none());
        assert_eq!(a.stats().sent, 1);
        assert_eq!(b.stats().received, 1);
    }

    #[test]
    fn bad_fcs_is_dropped_and_counted() {
        let medium = Medium::new();
        let mut a = medium.attach();
        a.inject_on_air(&[1, 2, 3, 0, 0]);
        a.inject_on_air(&[1]);
        let mut buf = [0; 127];
        assert!(a.receive(&mut buf, Duration::ZERO).unwrap().is_none());
        assert_eq!(a.stats().bad_fcs, 1);
        assert_eq!(a.stats().malformed, 1);
        assert_eq!(a.stats().received, 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let medium = Medium::new();
        let mut a = medium.attach();
        let mut b = medium.attach();
        for _ in 0..Medium::QUEUE_LIMIT + 3 {
            a.transmit(MacFrame::new(&[1, 2, 3]).unwrap()).unwrap();
        }
        assert_eq!(medium.overflows(), 3);
        let mut buf = [0; 127];
        let mut n = 0;
        while b.receive(&mut buf, Duration::ZERO).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, Medium::QUEUE_LIMIT);
    }
}
