//! The sans-IO core of one socket's load: which confirmable requests are outstanding, when they
//! were sent, what an answer completes, when a request expires, and how many new requests a
//! wake-up may send (slow start up to the window W).
//!
//! No sockets and no clock: time comes in as a [`Tick`] (read once per wake-up by the driver),
//! answers come in as bytes, and the requests to send go out as byte buffers the window owns
//! (its send slots, patched in place with message ID and token), which the driver hands to one
//! `sendmmsg` call.
//!
//! Message IDs are the socket's own counter; the token is the socket number (2 bytes) and the
//! message ID (2 bytes), so every request of a run is distinct on the wire. The send time of the
//! request outstanding under each of the 65,536 message IDs is kept in a flat table (4 bytes an
//! entry), plus a queue in send order from which expired requests are taken.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::tally::{HIST_MAX_US, Tally};

/// New requests one wake-up may write into a window's send slots: two per completion of a full
/// receive batch (slow start), so a batch's refill never needs a second `sendmmsg`.
pub(crate) const SEND_SLOTS: usize = 128;

/// Message IDs a socket cycles through.
const MESSAGE_IDS: usize = 1 << 16;

/// A point of the run: microseconds since its start. A run is at most an hour (3.6·10⁹ µs),
/// which fits in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u32);

impl Tick {
    /// The tick of `now` in a run that began at `epoch` (saturates after 71 minutes).
    pub(crate) fn since(epoch: Instant, now: Instant) -> Tick {
        Tick::after(now.saturating_duration_since(epoch))
    }

    /// The tick `elapsed` after the start (saturates after 71 minutes).
    pub(crate) fn after(elapsed: Duration) -> Tick {
        Tick(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX))
    }

    /// The tick `us` microseconds after the start.
    #[cfg(test)]
    pub(crate) const fn from_micros(us: u32) -> Tick {
        Tick(us)
    }

    /// Microseconds from `earlier` to `self` (0 when `earlier` is later).
    fn micros_since(self, earlier: Tick) -> u32 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The rules every window of a run follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// W: requests outstanding at most per socket.
    pub(crate) window: usize,
    /// A request unanswered for this long is counted as a timeout and forgotten.
    pub(crate) timeout_us: u32,
    /// Answers and timeouts before this tick (the warm-up) are not counted.
    pub(crate) measure_from: Tick,
    /// Any answer counts as accepted (for a server that does not speak CoAP).
    pub(crate) any_answer: bool,
}

/// One socket's outstanding requests and the requests it is about to send.
pub(crate) struct Window {
    /// Per message ID: 0 when nothing is outstanding under it, else its send tick + 1.
    sent_at: Box<[u32]>,
    /// (message ID, send tick) in send order; answered entries are dropped lazily.
    order: VecDeque<(u16, Tick)>,
    /// Requests sent and neither answered nor expired.
    outstanding: usize,
    /// New requests the next [`Window::fill`] may send (two per completion, one to reopen).
    credit: usize,
    next_mid: u16,
    token_hi: [u8; 2],
    /// OSCORE mode: the protected requests still to send, in sequence-number order.
    presigned: Option<std::vec::IntoIter<Vec<u8>>>,
    /// Send slots: each a copy of the request template (or the next presigned request).
    out: Vec<Vec<u8>>,
}

impl Window {
    /// The window of socket `socket`: requests are `template` with message ID and token patched
    /// in, or, in OSCORE mode, the `presigned` requests in their order.
    pub(crate) fn new(
        socket: usize,
        template: &[u8],
        presigned: Option<Vec<Vec<u8>>>,
        rules: &Rules,
    ) -> Window {
        // the socket number is only a seed: wrapping is intended
        let n = socket as u16;
        Window {
            sent_at: vec![0; MESSAGE_IDS].into_boxed_slice(),
            order: VecDeque::with_capacity(rules.window * 4),
            outstanding: 0,
            credit: 0,
            next_mid: n.wrapping_mul(7919),
            token_hi: n.to_be_bytes(),
            presigned: presigned.map(Vec::into_iter),
            out: vec![template.to_vec(); SEND_SLOTS],
        }
    }

    /// Requests sent and neither answered nor expired.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// (Re)opens an empty window with one request (slow start begins again); nothing when
    /// requests are outstanding.
    pub(crate) fn open(&mut self) {
        if self.outstanding == 0 {
            self.credit = self.credit.max(1);
        }
    }

    /// How many new requests the next [`Window::fill`] will send if the run's budget allows:
    /// two per completion since the last fill (one to reopen), never more than W outstanding,
    /// nor (OSCORE mode) more than the presigned requests left.
    pub(crate) fn wanted(&self, rules: &Rules) -> usize {
        let demand = self.demand(rules);
        self.presigned
            .as_ref()
            .map_or(demand, |pool| demand.min(pool.len()))
    }

    /// [`Window::wanted`] with an endless pool of presigned requests.
    fn demand(&self, rules: &Rules) -> usize {
        self.credit
            .min(rules.window.saturating_sub(self.outstanding))
            .min(SEND_SLOTS)
    }

    /// Writes up to `allowed` new requests (at most [`Window::wanted`]) sent at `now` into the
    /// send slots and returns them, to be sent in this order; the credit is used up. A request
    /// the driver fails to send is lost like any other loss: it times out. In OSCORE mode a
    /// window that wants more than its presigned requests left (and is allowed them all) sets
    /// `tally.exhausted`.
    pub(crate) fn fill(
        &mut self,
        rules: &Rules,
        now: Tick,
        allowed: usize,
        tally: &mut Tally,
    ) -> &[Vec<u8>] {
        if let Some(pool) = &self.presigned
            && pool.len() < self.demand(rules)
            && allowed >= pool.len()
        {
            tally.exhausted = true;
        }
        self.credit = 0;
        let mut n = 0;
        for slot in self.out.iter_mut().take(allowed) {
            if let Some(pool) = self.presigned.as_mut() {
                match pool.next() {
                    Some(next) => *slot = next,
                    None => {
                        tally.exhausted = true;
                        break;
                    }
                }
            }
            self.next_mid = self.next_mid.wrapping_add(1);
            let mid = self.next_mid.to_be_bytes();
            if let Some(b) = slot.get_mut(2..4) {
                b.copy_from_slice(&mid);
            }
            if let Some(b) = slot.get_mut(4..6) {
                b.copy_from_slice(&self.token_hi);
            }
            if let Some(b) = slot.get_mut(6..8) {
                b.copy_from_slice(&mid);
            }
            if let Some(at) = self.sent_at.get_mut(usize::from(self.next_mid)) {
                if *at != 0 {
                    // the message ID came round while its request was still unanswered
                    tally.timeouts += 1;
                    self.outstanding = self.outstanding.saturating_sub(1);
                }
                *at = now.0.saturating_add(1);
            }
            self.outstanding += 1;
            self.order.push_back((self.next_mid, now));
            tally.sent += 1;
            n += 1;
        }
        self.out.get(..n).unwrap_or_default()
    }

    /// Takes an answer received at `now` and counts it: a completion of an outstanding
    /// request (counted by kind once the warm-up is over), `late` when it matches none
    /// (answered or expired before), `other` when it is no completion (too short, an empty
    /// ACK, a CON/NON message).
    pub(crate) fn on_answer(&mut self, rules: &Rules, now: Tick, bytes: &[u8], tally: &mut Tally) {
        let Some(&[b0, code, m0, m1]) = bytes.get(..4) else {
            tally.other += 1;
            return;
        };
        let kind = (b0 >> 4) & 3;
        // an empty ACK (separate response to follow) or a CON/NON response: not a completion
        if (kind != 2 && kind != 3) || (kind == 2 && code == 0 && !rules.any_answer) {
            tally.other += 1;
            return;
        }
        let sent = match self
            .sent_at
            .get_mut(usize::from(u16::from_be_bytes([m0, m1])))
        {
            Some(at) if *at != 0 => Tick(std::mem::take(at) - 1),
            _ => {
                tally.late += 1;
                return;
            }
        };
        self.outstanding = self.outstanding.saturating_sub(1);
        self.credit += 2;
        if now < rules.measure_from {
            return;
        }
        if kind == 3 {
            tally.resets += 1;
        } else if rules.any_answer || code >> 5 == 2 {
            tally.ok += 1;
            let us = u64::from(now.micros_since(sent)).clamp(1, HIST_MAX_US);
            let _ = tally.latency_us.record(us);
        } else {
            tally.other += 1;
        }
        if let Some(c) = tally.codes.get_mut(usize::from(code)) {
            *c += 1;
        }
    }

    /// Forgets requests unanswered for longer than the timeout (counted in the measured
    /// period).
    pub(crate) fn expire(&mut self, rules: &Rules, now: Tick, tally: &mut Tally) {
        while let Some(&(mid, at)) = self.order.front() {
            if let Some(slot) = self.sent_at.get_mut(usize::from(mid))
                && *slot == at.0.saturating_add(1)
            {
                if now.micros_since(at) < rules.timeout_us {
                    break;
                }
                *slot = 0;
                if now >= rules.measure_from {
                    tally.timeouts += 1;
                }
                self.outstanding = self.outstanding.saturating_sub(1);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const TEMPLATE: [u8; 10] = [0x44, 0x02, 0, 0, 0, 0, 0, 0, 0xb1, b't'];

    fn rules(window: usize) -> Rules {
        Rules {
            window,
            timeout_us: 1_000,
            measure_from: Tick::from_micros(0),
            any_answer: false,
        }
    }

    /// The piggybacked answer to `request` with `code`.
    fn ack(request: &[u8], code: u8) -> Vec<u8> {
        let mut a = request[..8].to_vec();
        a[0] = 0x64; // ACK, token length 4
        a[1] = code;
        a
    }

    fn sends(w: &mut Window, r: &Rules, now: u32, t: &mut Tally) -> Vec<Vec<u8>> {
        let n = w.wanted(r);
        w.fill(r, Tick::from_micros(now), n, t).to_vec()
    }

    #[test]
    fn slow_start_opens_to_the_window_and_holds_it() {
        let r = rules(8);
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(3, &TEMPLATE, None, &r);
        assert_eq!(w.wanted(&r), 0, "nothing before the window opens");
        w.open();
        let mut flight = sends(&mut w, &r, 0, &mut t);
        let mut sizes = vec![flight.len()];
        for step in 1..6u32 {
            for req in std::mem::take(&mut flight) {
                let (ok, outstanding) = (t.ok, w.outstanding());
                w.on_answer(&r, Tick::from_micros(step * 10), &ack(&req, 0x44), &mut t);
                assert_eq!(
                    (t.ok, w.outstanding()),
                    (ok + 1, outstanding - 1),
                    "completed"
                );
            }
            flight = sends(&mut w, &r, step * 10, &mut t);
            sizes.push(flight.len());
            assert_eq!(w.outstanding(), flight.len());
        }
        // one, then one more per answer, until W are outstanding; then one for one
        assert_eq!(sizes, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(t.sent, 31);
        assert_eq!(t.ok, 23);
        assert_eq!(t.codes[0x44], 23);
        assert_eq!(t.latency_us.max(), 10);
        // open() adds nothing while requests are outstanding
        w.open();
        assert_eq!(w.wanted(&r), 0);
    }

    #[test]
    fn requests_carry_distinct_message_ids_and_the_socket_token() {
        let r = rules(4);
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0x0102, &TEMPLATE, None, &r);
        w.open();
        let first = sends(&mut w, &r, 0, &mut t);
        w.on_answer(&r, Tick::from_micros(1), &ack(&first[0], 0x44), &mut t);
        let next = sends(&mut w, &r, 1, &mut t);
        let all: Vec<_> = first.iter().chain(&next).collect();
        assert_eq!(all.len(), 3);
        for req in &all {
            assert_eq!(&req[4..6], &[1, 2], "token starts with the socket number");
            assert_eq!(&req[2..4], &req[6..8], "token ends with the message ID");
            assert_eq!(&req[8..], &TEMPLATE[8..], "the rest is the template");
        }
        let mids: std::collections::HashSet<_> = all.iter().map(|q| q[2..4].to_vec()).collect();
        assert_eq!(mids.len(), 3);
    }

    #[test]
    fn answers_are_counted_by_kind() {
        let r = rules(8);
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, None, &r);
        w.credit = 8;
        let q = sends(&mut w, &r, 0, &mut t);
        assert_eq!(q.len(), 8);
        let now = Tick::from_micros(5);
        let mut rst = ack(&q[1], 0);
        rst[0] = 0x70;
        let mut con = ack(&q[4], 0x45);
        con[0] = 0x44;
        // (ok, resets, other, late, outstanding) after each answer
        let counts = |w: &mut Window, answer: &[u8], t: &mut Tally| {
            w.on_answer(&r, now, answer, t);
            (t.ok, t.resets, t.other, t.late, w.outstanding())
        };
        // completions: an ok, a reset, an error code
        assert_eq!(counts(&mut w, &ack(&q[0], 0x44), &mut t), (1, 0, 0, 0, 7));
        assert_eq!(counts(&mut w, &rst, &mut t), (1, 1, 0, 0, 6));
        assert_eq!(counts(&mut w, &ack(&q[2], 0x84), &mut t), (1, 1, 1, 0, 5));
        // an empty ACK announces a separate response: the request stays outstanding
        assert_eq!(counts(&mut w, &ack(&q[3], 0), &mut t), (1, 1, 2, 0, 5));
        // a CON response and a short datagram complete nothing
        assert_eq!(counts(&mut w, &con, &mut t), (1, 1, 3, 0, 5));
        assert_eq!(counts(&mut w, &[0x60, 0x44], &mut t), (1, 1, 4, 0, 5));
        // the same answer twice: the second is late
        assert_eq!(counts(&mut w, &ack(&q[0], 0x44), &mut t), (1, 1, 4, 1, 5));
        assert_eq!((t.ok, t.resets, t.other, t.late), (1, 1, 4, 1));
        assert_eq!(t.code_list(), vec!["0.00:1", "2.04:1", "4.04:1"]);
        assert_eq!(w.outstanding(), 5);
        assert_eq!(w.wanted(&r), 3, "two per completion, at most W outstanding");
    }

    #[test]
    fn any_answer_counts_an_empty_ack() {
        let r = Rules {
            any_answer: true,
            ..rules(2)
        };
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, None, &r);
        w.open();
        let q = sends(&mut w, &r, 0, &mut t);
        w.on_answer(&r, Tick::from_micros(3), &ack(&q[0], 0), &mut t);
        assert_eq!((t.ok, t.other, w.outstanding()), (1, 0, 0), "completed");
    }

    #[test]
    fn expiry_counts_timeouts_and_makes_later_answers_late() {
        let r = rules(4);
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, None, &r);
        w.credit = 2;
        let early = sends(&mut w, &r, 0, &mut t);
        w.credit = 2;
        let later = sends(&mut w, &r, 600, &mut t);
        // one early request answered: its queue entry goes without a timeout
        w.on_answer(&r, Tick::from_micros(700), &ack(&early[0], 0x44), &mut t);
        w.expire(&r, Tick::from_micros(999), &mut t);
        assert_eq!((t.timeouts, w.outstanding()), (0, 3), "not yet");
        w.expire(&r, Tick::from_micros(1_000), &mut t);
        assert_eq!((t.timeouts, w.outstanding()), (1, 2));
        w.expire(&r, Tick::from_micros(1_600), &mut t);
        assert_eq!((t.timeouts, w.outstanding()), (3, 0));
        w.on_answer(&r, Tick::from_micros(1_700), &ack(&later[1], 0x44), &mut t);
        assert_eq!((t.ok, t.late, w.outstanding()), (1, 1, 0), "late");
        // credit is not carried past a fill (here one the budget allowed nothing)
        assert_eq!(w.wanted(&r), 2);
        assert!(w.fill(&r, Tick::from_micros(1_700), 0, &mut t).is_empty());
        assert_eq!(w.wanted(&r), 0);
        // an empty window reopens with one request
        w.open();
        assert_eq!(w.wanted(&r), 1);
    }

    #[test]
    fn the_warm_up_completes_requests_without_counting_them() {
        let r = Rules {
            measure_from: Tick::from_micros(100),
            ..rules(4)
        };
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, None, &r);
        w.credit = 3;
        let q = sends(&mut w, &r, 0, &mut t);
        w.on_answer(&r, Tick::from_micros(50), &ack(&q[0], 0x44), &mut t);
        w.expire(&r, Tick::from_micros(99), &mut t);
        w.on_answer(&r, Tick::from_micros(100), &ack(&q[1], 0x44), &mut t);
        assert_eq!((t.ok, t.sent, w.outstanding()), (1, 3, 1));
        assert_eq!(t.latency_us.len(), 1);
        w.expire(&r, Tick::from_micros(1_000), &mut t);
        assert_eq!(t.timeouts, 1);
    }

    #[test]
    fn a_message_id_that_comes_round_unanswered_counts_as_a_timeout() {
        let r = Rules {
            timeout_us: u32::MAX,
            ..rules(SEND_SLOTS)
        };
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, None, &r);
        w.credit = 1;
        let first = sends(&mut w, &r, 0, &mut t)[0].clone();
        // answer everything else: 65,535 more requests go round the message IDs
        let mut now = 1;
        while t.sent < MESSAGE_IDS as u64 {
            w.credit = 1;
            let q = sends(&mut w, &r, now, &mut t)[0].clone();
            if t.sent < MESSAGE_IDS as u64 {
                w.on_answer(&r, Tick::from_micros(now), &ack(&q, 0x44), &mut t);
            }
            now += 1;
        }
        assert_eq!((t.timeouts, w.outstanding()), (0, 2));
        w.credit = 1;
        let again = sends(&mut w, &r, now, &mut t)[0].clone();
        assert_eq!(again[2..4], first[2..4]);
        assert_eq!((t.timeouts, w.outstanding()), (1, 2));
    }

    #[test]
    fn presigned_requests_go_in_order_until_they_run_out() {
        let r = rules(8);
        let mut t = Tally::new().unwrap();
        let pool: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut p = TEMPLATE.to_vec();
                p.push(i);
                p
            })
            .collect();
        let mut w = Window::new(0, &TEMPLATE, Some(pool.clone()), &r);
        w.credit = 3;
        let a = sends(&mut w, &r, 0, &mut t);
        assert!(!t.exhausted);
        w.credit = 3;
        assert_eq!(w.wanted(&r), 2, "at most what is left of the pool");
        let b = sends(&mut w, &r, 1, &mut t);
        let order: Vec<u8> = a.iter().chain(&b).map(|p| *p.last().unwrap()).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert!(t.exhausted);
        assert_eq!((t.sent, w.outstanding()), (5, 5));
        // an empty pool wants nothing (so takes nothing from the run's budget)
        w.credit = 1;
        assert_eq!(w.wanted(&r), 0);

        // a pool used up exactly is exhausted only once more is wanted
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, Some(pool.clone()), &r);
        w.credit = 5;
        assert_eq!(sends(&mut w, &r, 0, &mut t).len(), 5);
        assert!(!t.exhausted);
        w.credit = 1;
        assert!(sends(&mut w, &r, 1, &mut t).is_empty());
        assert!(t.exhausted);
        assert_eq!(t.sent, 5);

        // fewer sent because the budget allowed fewer: not the pool's fault
        let mut t = Tally::new().unwrap();
        let mut w = Window::new(0, &TEMPLATE, Some(pool), &r);
        w.credit = 3;
        assert_eq!(sends(&mut w, &r, 0, &mut t).len(), 3);
        w.credit = 3;
        assert_eq!(w.fill(&r, Tick::from_micros(1), 1, &mut t).len(), 1);
        assert!(!t.exhausted);
    }

    #[test]
    fn ticks_are_microseconds_since_the_start() {
        let epoch = Instant::now();
        let later = epoch + Duration::from_millis(1500);
        assert_eq!(Tick::since(epoch, later), Tick::from_micros(1_500_000));
        assert_eq!(Tick::since(later, epoch), Tick::from_micros(0));
        let far = epoch + Duration::from_secs(5_000);
        assert_eq!(Tick::since(epoch, far), Tick::from_micros(u32::MAX));
        assert_eq!(
            Tick::after(Duration::from_millis(7)),
            Tick::from_micros(7_000)
        );
    }
}
