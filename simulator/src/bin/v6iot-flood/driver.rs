//! The I/O of one generator thread: its sockets (non-blocking, connected to the target) in one
//! level-triggered `epoll` set; per ready socket one `recvmmsg` (up to [`RECV_SLOTS`] answers)
//! and one `sendmmsg` with the refill those answers allow. The clock is read once per wake-up;
//! every decision is the sans-IO [`Window`]'s.
//!
//! Every [`SCAN`] the windows drop their expired requests and an empty window reopens. Once the
//! run's request budget is spent nothing more is sent, and the thread ends when its requests are
//! all answered or expired; in any case at the end of the measured period.
//!
//! The sockets are opened (and in OSCORE mode registered) by [`open`] before the run's clock
//! starts, so that neither eats into the warm-up or the measured period.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, recvmmsg, sendmmsg};

use crate::oscore_mode::{self, Prepared};
use crate::tally::Tally;
use crate::window::{Rules, SEND_SLOTS, Tick, Window};

/// Answers taken from a socket per `recvmmsg` call (and per wake-up: level-triggered `epoll`
/// reports the socket again if more are queued).
pub(crate) const RECV_SLOTS: usize = 64;
/// A receive slot; larger datagrams are truncated (only the first 4 bytes are read).
const SLOT_BYTES: usize = 2048;
/// How often the windows look for expired requests.
pub(crate) const SCAN: Duration = Duration::from_millis(20);
/// Ready sockets taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// The run's bound on requests, shared by all threads.
pub(crate) struct Budget {
    max: u64,
    taken: AtomicU64,
}

impl Budget {
    /// At most `max` requests in all.
    pub(crate) fn new(max: u64) -> Budget {
        Budget {
            max,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes up to `n` requests from the budget; how many were granted.
    pub(crate) fn take(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let prev = self.taken.fetch_add(n as u64, Ordering::Relaxed);
        let left = self.max.saturating_sub(prev);
        usize::try_from(left).map_or(n, |l| l.min(n))
    }

    /// Every request of the budget has been handed out.
    pub(crate) fn spent(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.max
    }
}

/// What every thread of a run shares.
pub(crate) struct Run {
    /// The windows' rules.
    pub(crate) rules: Rules,
    /// Tick 0.
    pub(crate) epoch: Instant,
    /// The end of the measured period: every thread stops then.
    pub(crate) until: Instant,
    /// The bound on requests.
    pub(crate) budget: Budget,
}

/// One socket of a thread and its window, made by [`open`].
pub(crate) struct Member {
    socket: UdpSocket,
    window: Window,
}

/// Runs the sockets `members` until the run ends; returns what they counted.
pub(crate) fn run_thread(run: &Run, mut members: Vec<Member>) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    for (i, m) in members.iter().enumerate() {
        epoll
            .add(
                m.socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
            )
            .context("epoll_ctl")?;
    }
    let mut events = vec![EpollEvent::empty(); members.len().clamp(1, EVENTS_PER_WAIT)];
    let mut rx = Receiver::new();
    let mut tx = Sender::new();
    let rules = run.rules;

    let mut now = Instant::now();
    let mut tick = Tick::since(run.epoch, now);
    // Slow start: one request per socket, then up to two more per answer until W are
    // outstanding, so that the window does not arrive as one burst larger than the server's
    // receive buffer.
    for m in &mut members {
        m.window.open();
        refill(run, m, &mut tx, tick, &mut tally)?;
    }
    let mut next_scan = now + SCAN;
    loop {
        if now >= run.until {
            break;
        }
        let spent = run.budget.spent();
        if spent && members.iter().all(|m| m.window.outstanding() == 0) {
            break;
        }
        if now >= next_scan {
            next_scan = now + SCAN;
            for m in &mut members {
                m.window.expire(&rules, tick, &mut tally);
                if !spent {
                    m.window.open();
                    refill(run, m, &mut tx, tick, &mut tally)?;
                }
            }
        }
        let wait = next_scan.min(run.until).saturating_duration_since(now);
        // whole milliseconds, rounded up: a deadline is never polled for early in a loop
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let ready = match epoll.wait(&mut events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        now = Instant::now();
        tick = Tick::since(run.epoch, now);
        for ev in events.get(..ready).unwrap_or_default() {
            let Some(m) = usize::try_from(ev.data())
                .ok()
                .and_then(|i| members.get_mut(i))
            else {
                continue;
            };
            match rx.recv(&m.socket) {
                Ok(_) => {}
                // nothing queued after all, or an ICMP error from an earlier datagram (nobody
                // listening): counts as nothing, the requests time out
                Err(Errno::EAGAIN | Errno::ECONNREFUSED | Errno::EINTR) => continue,
                Err(e) => return Err(e).context("receive"),
            }
            for bytes in rx.datagrams() {
                m.window.on_answer(&rules, tick, bytes, &mut tally);
            }
            refill(run, m, &mut tx, tick, &mut tally)?;
        }
    }
    Ok(tally)
}

/// Socket number `n`, connected to `target`, with its window (sending `template`, or in
/// OSCORE mode its `device`'s protected requests, by `rules`); in OSCORE mode its device has
/// registered (blocking, before the socket turns non-blocking). Called before the run starts.
pub(crate) fn open(
    target: SocketAddr,
    template: &[u8],
    rules: &Rules,
    n: usize,
    device: Option<Prepared>,
) -> anyhow::Result<Member> {
    let bind: SocketAddr = if target.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    };
    let socket = UdpSocket::bind(bind).context("bind")?;
    socket.connect(target).context("connect")?;
    let presigned = match device {
        Some(p) => {
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            oscore_mode::register(&socket, &p)?;
            Some(p.requests)
        }
        None => None,
    };
    socket.set_nonblocking(true)?;
    let window = Window::new(n, template, presigned, rules);
    Ok(Member { socket, window })
}

/// Sends what the member's window wants and the budget allows, in one `sendmmsg`.
fn refill(
    run: &Run,
    m: &mut Member,
    tx: &mut Sender,
    now: Tick,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    // called also when nothing is wanted: the window then notes a presigned pool run dry
    let wanted = m.window.wanted(&run.rules);
    let granted = run.budget.take(wanted);
    let requests = m.window.fill(&run.rules, now, granted, tally);
    tx.send(&m.socket, requests)
}

/// Receive slots and headers for `recvmmsg`, reused for every call of a thread.
struct Receiver {
    slots: Vec<[u8; SLOT_BYTES]>,
    /// Lengths of the datagrams of the last call, in slot order.
    lens: Vec<usize>,
    headers: MultiHeaders<()>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            slots: vec![[0; SLOT_BYTES]; RECV_SLOTS],
            lens: Vec::with_capacity(RECV_SLOTS),
            headers: MultiHeaders::preallocate(RECV_SLOTS, None),
        }
    }

    /// Takes up to [`RECV_SLOTS`] queued datagrams without waiting; how many.
    fn recv(&mut self, socket: &UdpSocket) -> nix::Result<usize> {
        let Receiver {
            slots,
            lens,
            headers,
        } = self;
        lens.clear();
        let mut iovs: [[IoSliceMut<'_>; 1]; RECV_SLOTS] =
            std::array::from_fn(|_| [IoSliceMut::new(&mut [])]);
        for (iov, slot) in iovs.iter_mut().zip(slots.iter_mut()) {
            *iov = [IoSliceMut::new(slot)];
        }
        let results = recvmmsg(
            socket.as_raw_fd(),
            headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        lens.extend(results.map(|r| r.bytes));
        Ok(lens.len())
    }

    /// The datagrams of the last call.
    fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.lens
            .iter()
            .zip(&self.slots)
            .map(|(&len, slot)| slot.get(..len).unwrap_or(slot))
    }
}

/// Headers for `sendmmsg`, reused for every call of a thread (connected sockets: no addresses).
struct Sender {
    headers: MultiHeaders<()>,
    no_addrs: [Option<()>; SEND_SLOTS],
}

impl Sender {
    fn new() -> Sender {
        Sender {
            headers: MultiHeaders::preallocate(SEND_SLOTS, None),
            no_addrs: [None; SEND_SLOTS],
        }
    }

    /// Sends `datagrams` in one `sendmmsg` call (more only if the kernel takes part of them). A
    /// datagram the kernel refuses (full buffer, an ICMP error from an earlier datagram) is lost
    /// like any other loss: its request times out.
    fn send(&mut self, socket: &UdpSocket, datagrams: &[Vec<u8>]) -> anyhow::Result<()> {
        let mut done = 0;
        while let Some(rest) = datagrams.get(done..).filter(|r| !r.is_empty()) {
            let mut iovs = [[IoSlice::new(&[])]; SEND_SLOTS];
            for (iov, d) in iovs.iter_mut().zip(rest) {
                *iov = [IoSlice::new(d)];
            }
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                iovs.iter().take(rest.len()),
                self.no_addrs,
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            );
            match sent.map(Iterator::count) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => done += n,
                // the call fails when its first datagram does: that one is lost
                Err(Errno::ECONNREFUSED | Errno::EINTR) => done += 1,
                Err(e) => return Err(e).context("send"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn the_budget_grants_exactly_its_bound() {
        let b = Budget::new(10);
        assert_eq!(b.take(0), 0);
        assert_eq!(b.take(4), 4);
        assert!(!b.spent());
        assert_eq!(b.take(6), 6);
        assert!(b.spent(), "spent once all is handed out");
        assert_eq!(b.take(3), 0);
        let c = Budget::new(5);
        assert_eq!(c.take(8), 5);
        assert!(c.spent());
    }

    /// Batched sends and receives between two connected loopback sockets keep every datagram.
    #[test]
    fn batches_go_out_and_come_in_whole() {
        let a = UdpSocket::bind("[::1]:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let out: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        Sender::new().send(&a, &out).unwrap();
        let mut rx = Receiver::new();
        let mut seen = Vec::new();
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        epoll
            .add(b.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let mut events = [EpollEvent::empty()];
        while seen.len() < out.len() {
            assert_eq!(epoll.wait(&mut events, 10_000u16).unwrap(), 1);
            let got = rx.recv(&b).unwrap();
            assert!((1..=RECV_SLOTS).contains(&got));
            seen.extend(rx.datagrams().map(<[u8]>::to_vec));
        }
        assert_eq!(seen, out);
        assert_eq!(rx.recv(&b), Err(Errno::EAGAIN));
    }
}
