//! Fan-out: the outbox's one stream of durable messages to several sinks (MQTT and WebSocket),
//! acknowledged to the outbox only once every sink has acknowledged.
//!
//! ```text
//!                          ┌─▶ outgoing 0 ─▶ run_mqtt ──────┐
//! outbox receiver ─▶ pump ─┤                                ├─ acks 0, acks 1
//!                          └─▶ outgoing 1 ─▶ run_websocket ─┘        │
//!                    AckTracker ◀────────────────────────────────────┘
//!                        └─▶ upstream_ack(id): once per id, when every sink acked it
//! ```
//!
//! # What it promises
//!
//! - Every message read from the input goes to every sink, each sink sees them in input
//!   order. [`fanout`] returns one [`SinkPorts`] per sink: its `outgoing` receiver and its
//!   `acks` sender are exactly what [`run_mqtt`](crate::run_mqtt) and
//!   [`run_websocket`](crate::run_websocket) take.
//! - `upstream_ack(id)` (for the outbox: [`AckSender::ack`](crate::outbox::AckSender::ack)) is
//!   called exactly once per id read, and only after every sink acknowledged that id. It runs
//!   on the pump task and must not block. A crash, or an outage of any one sink, therefore
//!   loses nothing: the outbox keeps every id some sink still owes and replays it after a
//!   restart (at-least-once, as the outbox). Note that the outbox persists only its
//!   watermark, so ids completed out of order above the oldest one still owed are replayed
//!   too; the platform drops them by id.
//! - Acknowledgements may come in any order per sink. Acknowledgements of ids that are not
//!   outstanding, and repeated ones, are counted ([`TrackerStats`]) and ignored.
//! - Memory is bounded: at most `window` ids are outstanding (sent to the sinks and not yet
//!   acknowledged by all). While the window is full the pump reads no input. Each sink's
//!   channel holds `window` messages, so at most `sinks × window` copies are in memory.
//!
//! # Back-pressure: the slowest sink sets the pace
//!
//! A sink that is slow, disconnected or stuck keeps its ids outstanding; once `window` ids
//! are outstanding the pump stops reading input, and the other sinks get nothing new either
//! (they cannot run more than `window` messages ahead of the slowest). This is deliberate:
//! the backlog stays on disk in the outbox (bounded by its `max_bytes`; when that is full the
//! edge answers 5.03 + Max-Age), not in memory here. A sink that is gone for good (its ack
//! channel closed) is not dropped from the set either: nothing it had not acknowledged is ever
//! acknowledged upstream, and the outbox fills up. Delivery to one sink must never be
//! bought by losing records for another.
//!
//! # When the pump ends
//!
//! When the input has ended and every id read is acknowledged upstream
//! ([`FanoutEnd::Drained`]; the sinks' `outgoing` channels end as soon as the input has), or
//! when every sink's ack channel is gone ([`FanoutEnd::SinksGone`]; what is outstanding is
//! left to the outbox's replay). A sink whose `outgoing` receiver is dropped gets nothing more
//! but still owes its acknowledgements.
//!
//! An id that arrives again while it is outstanding (e.g. after
//! [`AckSender::redeliver`](crate::outbox::AckSender::redeliver)) is not sent again: every
//! sink already has it and keeps it until it has delivered it. An id that arrives again after
//! it was completed is treated as new.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::task::Poll;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use crate::message::OutboundMessage;

/// Bits per word of a [`SinkSet`].
const WORD_BITS: usize = u64::BITS as usize;

/// The sinks that still owe the acknowledgement of one id (a bitset).
#[derive(Debug, Clone)]
struct SinkSet {
    words: Vec<u64>,
    count: usize,
}

/// What taking a sink out of a [`SinkSet`] found.
enum Take {
    /// It was there.
    Owed,
    /// It had been taken before.
    Already,
    /// No such sink.
    NoSuchSink,
}

impl SinkSet {
    /// All sinks `0..sinks`.
    fn full(sinks: usize) -> SinkSet {
        let mut words = vec![u64::MAX; sinks.div_ceil(WORD_BITS)];
        let rest = sinks % WORD_BITS;
        if rest != 0
            && let Some(last) = words.last_mut()
        {
            *last = (1u64 << rest) - 1;
        }
        SinkSet {
            words,
            count: sinks,
        }
    }

    fn take(&mut self, sink: usize) -> Take {
        let Some(word) = self.words.get_mut(sink / WORD_BITS) else {
            return Take::NoSuchSink;
        };
        let bit = 1u64 << (sink % WORD_BITS);
        if *word & bit == 0 {
            return Take::Already;
        }
        *word &= !bit;
        self.count -= 1;
        Take::Owed
    }

    fn contains(&self, sink: usize) -> bool {
        self.words
            .get(sink / WORD_BITS)
            .is_some_and(|w| w & (1u64 << (sink % WORD_BITS)) != 0)
    }
}

/// Counters and the gauge of an [`AckTracker`] (counters since it was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackerStats {
    /// Ids outstanding now: tracked and not yet acknowledged by every sink.
    pub outstanding: usize,
    /// Ids that were tracked (sent to the sinks).
    pub tracked: u64,
    /// Ids every sink acknowledged (each acknowledged upstream once).
    pub completed: u64,
    /// Acknowledgements from a sink that had already acknowledged that outstanding id.
    pub duplicate_acks: u64,
    /// Acknowledgements of ids that are not outstanding (never tracked, or already
    /// completed), or from a sink index that does not exist.
    pub unknown_acks: u64,
    /// Ids offered again while outstanding (not sent again).
    pub duplicate_inputs: u64,
    /// Ids refused because the window was full.
    pub window_refusals: u64,
}

/// What [`AckTracker::track`] did with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Now outstanding: send it to every sink.
    Added,
    /// Already outstanding: every sink has it; do not send it again.
    AlreadyOutstanding,
    /// `window` ids are outstanding: not tracked; offer it again once one completes.
    WindowFull,
}

/// The sans-IO core of the fan-out: per outstanding id, which sinks still owe its
/// acknowledgement.
///
/// With one sink it is a pass-through: each acknowledgement of an outstanding id completes it.
#[derive(Debug, Clone)]
pub struct AckTracker {
    sinks: usize,
    window: usize,
    owed: BTreeMap<u64, SinkSet>,
    stats: TrackerStats,
}

impl AckTracker {
    /// A tracker for sinks `0..sinks` with at most `window` ids outstanding.
    pub fn new(sinks: NonZeroUsize, window: NonZeroUsize) -> AckTracker {
        AckTracker {
            sinks: sinks.get(),
            window: window.get(),
            owed: BTreeMap::new(),
            stats: TrackerStats::default(),
        }
    }

    /// The number of sinks.
    pub fn sinks(&self) -> usize {
        self.sinks
    }

    /// The most ids outstanding at a time.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Ids outstanding now.
    pub fn outstanding(&self) -> usize {
        self.owed.len()
    }

    /// Whether another id can be tracked.
    pub fn has_room(&self) -> bool {
        self.owed.len() < self.window
    }

    /// The lowest outstanding id.
    pub fn oldest(&self) -> Option<u64> {
        self.owed.keys().next().copied()
    }

    /// Whether `sink` still owes the acknowledgement of outstanding `id`.
    pub fn owes(&self, sink: usize, id: u64) -> bool {
        self.owed.get(&id).is_some_and(|s| s.contains(sink))
    }

    /// How many outstanding ids `sink` still owes (one pass over the window).
    pub fn owed_by(&self, sink: usize) -> usize {
        self.owed.values().filter(|s| s.contains(sink)).count()
    }

    /// Starts tracking `id`, owed by every sink.
    pub fn track(&mut self, id: u64) -> Track {
        if self.owed.contains_key(&id) {
            self.stats.duplicate_inputs += 1;
            return Track::AlreadyOutstanding;
        }
        if !self.has_room() {
            self.stats.window_refusals += 1;
            return Track::WindowFull;
        }
        self.owed.insert(id, SinkSet::full(self.sinks));
        self.stats.tracked += 1;
        Track::Added
    }

    /// `sink` acknowledged `id`. Returns `id` when that was the last acknowledgement it was
    /// waiting for (acknowledge it upstream now; it is no longer outstanding). Unknown and
    /// repeated acknowledgements are counted and ignored.
    pub fn ack(&mut self, sink: usize, id: u64) -> Option<u64> {
        let Some(set) = self.owed.get_mut(&id).filter(|_| sink < self.sinks) else {
            self.stats.unknown_acks += 1;
            return None;
        };
        match set.take(sink) {
            Take::Owed if set.count == 0 => {
                self.owed.remove(&id);
                self.stats.completed += 1;
                Some(id)
            }
            Take::Owed => None,
            Take::Already => {
                self.stats.duplicate_acks += 1;
                None
            }
            Take::NoSuchSink => {
                self.stats.unknown_acks += 1;
                None
            }
        }
    }

    /// Counters and the gauge.
    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            outstanding: self.owed.len(),
            ..self.stats
        }
    }
}

/// One sink's ends of the fan-out: pass them to [`run_mqtt`](crate::run_mqtt) or
/// [`run_websocket`](crate::run_websocket) as `outgoing` and `acks`.
#[derive(Debug)]
pub struct SinkPorts {
    /// The messages for this sink, in input order.
    pub outgoing: mpsc::Receiver<OutboundMessage>,
    /// Where this sink acknowledges ids it delivered.
    pub acks: mpsc::UnboundedSender<u64>,
}

/// Why the pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanoutEnd {
    /// The input ended and every id read was acknowledged upstream.
    Drained,
    /// Every sink's ack channel is gone; `outstanding` ids were never acknowledged upstream
    /// (the outbox replays them after a restart).
    SinksGone {
        /// Ids outstanding at the end.
        outstanding: usize,
    },
}

/// What the pump task returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanoutReport {
    /// Why it ended.
    pub end: FanoutEnd,
    /// The tracker's counters at the end.
    pub stats: TrackerStats,
}

/// Splits one stream of durable messages to `sinks` sinks; acknowledges an id upstream (once)
/// when every sink has acknowledged it. At most `window` ids are outstanding; each sink's
/// channel holds `window` messages. See the [module documentation](self) for the guarantees
/// and for how a slow sink holds back the others.
///
/// Returns one [`SinkPorts`] per sink (index `i` is sink `i`) and the pump task, already
/// spawned on the current tokio runtime (so this must be called inside one).
///
/// ```no_run
/// # async fn demo(mqtt: v6iot_cloud_bridge::MqttConfig, ws: v6iot_cloud_bridge::WsConfig)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroUsize;
/// use v6iot_cloud_bridge::{fanout, outbox, run_mqtt, run_websocket};
///
/// let (_outbox, to_publish, acker) = outbox::open(outbox::OutboxConfig::new("/var/lib/v6iot")).await?;
/// let two = NonZeroUsize::new(2).ok_or("two")?;
/// let window = NonZeroUsize::new(256).ok_or("window")?;
/// let (ports, _pump) = fanout::fanout(to_publish, move |id| acker.ack(id), two, window);
/// let mut ports = ports.into_iter();
/// let (Some(m), Some(w)) = (ports.next(), ports.next()) else { return Ok(()) };
/// let (commands, _) = tokio::sync::mpsc::channel(16);
/// tokio::spawn(run_mqtt(mqtt, m.outgoing, m.acks, commands, None, std::future::pending()));
/// tokio::spawn(run_websocket(ws, w.outgoing, w.acks, None, std::future::pending()));
/// # Ok(()) }
/// ```
pub fn fanout(
    input: mpsc::Receiver<OutboundMessage>,
    upstream_ack: impl Fn(u64) + Send + 'static,
    sinks: NonZeroUsize,
    window: NonZeroUsize,
) -> (Vec<SinkPorts>, JoinHandle<FanoutReport>) {
    let mut ports = Vec::with_capacity(sinks.get());
    let mut outs = Vec::with_capacity(sinks.get());
    let mut acks = Vec::with_capacity(sinks.get());
    for _ in 0..sinks.get() {
        let (out_tx, out_rx) = mpsc::channel(window.get());
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        ports.push(SinkPorts {
            outgoing: out_rx,
            acks: ack_tx,
        });
        outs.push(Some(out_tx));
        acks.push(Some(ack_rx));
    }
    let pump = Pump {
        tracker: AckTracker::new(sinks, window),
        outs,
        acks,
        ack_cursor: 0,
    };
    let task = tokio::spawn(pump.run(input, upstream_ack));
    (ports, task)
}

/// The pump's state (the tracker and the sinks' channels).
struct Pump {
    tracker: AckTracker,
    /// Per sink; `None` once its receiver is gone (or the input ended).
    outs: Vec<Option<mpsc::Sender<OutboundMessage>>>,
    /// Per sink; `None` once every sender of it is gone.
    acks: Vec<Option<mpsc::UnboundedReceiver<u64>>>,
    /// The sink whose ack channel is polled first next time (fairness).
    ack_cursor: usize,
}

/// A message being handed to the sinks: the next sink to get it.
struct Delivery {
    msg: OutboundMessage,
    next: usize,
}

impl Pump {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<OutboundMessage>,
        upstream_ack: impl Fn(u64),
    ) -> FanoutReport {
        let mut input_open = true;
        let mut current: Option<Delivery> = None;
        loop {
            if let Some(d) = current.take() {
                current = self.push(d);
            }
            if !input_open && current.is_none() {
                // nothing more will come: let the sinks see the end of their input
                self.outs.iter_mut().for_each(|o| *o = None);
                if self.tracker.outstanding() == 0 {
                    return self.report(FanoutEnd::Drained);
                }
            }
            if self.acks.iter().all(Option::is_none) {
                let outstanding = self.tracker.outstanding();
                if outstanding > 0 {
                    tracing::warn!(
                        outstanding,
                        oldest = self.tracker.oldest(),
                        "fan-out: every sink is gone; the outbox keeps what they did not acknowledge"
                    );
                }
                return self.report(FanoutEnd::SinksGone { outstanding });
            }
            let blocked = current
                .as_ref()
                .and_then(|d| self.outs.get(d.next).cloned().flatten());
            let can_read = input_open && current.is_none() && self.tracker.has_room();
            tokio::select! {
                biased;
                ack = next_ack(&mut self.acks, &mut self.ack_cursor) => match ack {
                    Some(AckEvent::Ack(sink, id)) => {
                        if let Some(done) = self.tracker.ack(sink, id) {
                            upstream_ack(done);
                        }
                    }
                    Some(AckEvent::Closed(sink)) => self.sink_finished(sink),
                    None => {}
                },
                () = room(blocked.as_ref()), if blocked.is_some() => {}
                m = input.recv(), if can_read => match m {
                    None => input_open = false,
                    Some(msg) => match self.tracker.track(msg.id) {
                        Track::Added => current = Some(Delivery { msg, next: 0 }),
                        Track::AlreadyOutstanding => {
                            tracing::debug!(id = msg.id, "fan-out: id already outstanding, not sent again");
                        }
                        // not reached: input is read only with room in the window
                        Track::WindowFull => {
                            tracing::error!(id = msg.id, "fan-out: window full; message dropped (the outbox replays it after a restart)");
                        }
                    },
                },
            }
        }
    }

    /// Hands `d` to as many sinks as take it without waiting; returns it if a sink's channel
    /// is full.
    fn push(&mut self, mut d: Delivery) -> Option<Delivery> {
        let n = self.outs.len();
        while d.next < n {
            let i = d.next;
            let slot = self.outs.get_mut(i)?;
            let mut closed = false;
            if let Some(tx) = slot.as_ref() {
                match tx.try_reserve() {
                    Ok(permit) if i + 1 == n => {
                        permit.send(d.msg);
                        return None;
                    }
                    Ok(permit) => permit.send(d.msg.clone()),
                    Err(TrySendError::Full(())) => return Some(d),
                    Err(TrySendError::Closed(())) => closed = true,
                }
            }
            if closed {
                tracing::warn!(
                    sink = i,
                    "fan-out: a sink's receiver is gone; it gets nothing more, and what it \
                     does not acknowledge is not acknowledged upstream"
                );
                *slot = None;
            }
            d.next += 1;
        }
        None
    }

    /// A sink's ack channel closed: a warning if it still owes acknowledgements (they stay
    /// unacknowledged upstream), else it simply finished (a stop, after it acknowledged all
    /// it was given).
    fn sink_finished(&self, sink: usize) {
        let owed = self.tracker.owed_by(sink);
        if owed > 0 {
            tracing::warn!(
                sink,
                owed,
                "fan-out: a sink's ack channel is gone; ids it owes stay unacknowledged"
            );
        } else {
            tracing::debug!(sink, "fan-out: a sink finished, owing nothing");
        }
    }

    fn report(&self, end: FanoutEnd) -> FanoutReport {
        let stats = self.tracker.stats();
        tracing::debug!(?end, ?stats, "fan-out pump ended");
        FanoutReport { end, stats }
    }
}

/// Resolves once `tx` has room for a message (or its receiver is gone). Only the pump sends on
/// it, so the room is still there when the pump gets to use it.
async fn room(tx: Option<&mpsc::Sender<OutboundMessage>>) {
    match tx {
        Some(tx) => drop(tx.reserve().await),
        None => std::future::pending().await,
    }
}

/// What [`next_ack`] found.
enum AckEvent {
    /// Sink `.0` acknowledged id `.1`.
    Ack(usize, u64),
    /// Sink `.0`'s ack channel closed (its slot is now `None`).
    Closed(usize),
}

/// The next acknowledgement from any sink, or the closing of a sink's ack channel, polling the
/// sinks in turn from `cursor`; `None` once every ack channel is gone (closed ones are set to
/// `None`).
async fn next_ack(
    acks: &mut [Option<mpsc::UnboundedReceiver<u64>>],
    cursor: &mut usize,
) -> Option<AckEvent> {
    std::future::poll_fn(|cx| {
        let n = acks.len();
        let mut open = false;
        for k in 0..n {
            let i = (*cursor + k) % n;
            let Some(slot) = acks.get_mut(i) else {
                continue;
            };
            let Some(rx) = slot.as_mut() else {
                continue;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(id)) => {
                    *cursor = (i + 1) % n;
                    return Poll::Ready(Some(AckEvent::Ack(i, id)));
                }
                Poll::Ready(None) => {
                    *slot = None;
                    *cursor = (i + 1) % n;
                    return Poll::Ready(Some(AckEvent::Closed(i)));
                }
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn tracker(sinks: usize, window: usize) -> AckTracker {
        AckTracker::new(nz(sinks), nz(window))
    }

    #[test]
    fn one_sink_is_a_pass_through() {
        let mut t = tracker(1, 4);
        for id in 1..=3 {
            assert_eq!(t.track(id), Track::Added);
        }
        assert_eq!(t.ack(0, 2), Some(2));
        assert_eq!(t.ack(0, 1), Some(1));
        assert_eq!(t.ack(0, 3), Some(3));
        assert_eq!(t.outstanding(), 0);
        let s = t.stats();
        assert_eq!((s.tracked, s.completed, s.unknown_acks), (3, 3, 0));
    }

    #[test]
    fn an_id_completes_only_when_every_sink_acked_it_in_any_order() {
        let mut t = tracker(2, 8);
        for id in 10..=13 {
            assert_eq!(t.track(id), Track::Added);
        }
        // sink 0 acks out of order, sink 1 in another order
        assert_eq!(t.ack(0, 12), None);
        assert_eq!(t.ack(0, 10), None);
        assert_eq!(t.ack(1, 11), None);
        assert!(t.owes(1, 12) && !t.owes(0, 12));
        assert_eq!(t.ack(1, 12), Some(12));
        assert_eq!(t.ack(0, 11), Some(11));
        assert_eq!(t.ack(1, 10), Some(10));
        assert_eq!(t.oldest(), Some(13));
        assert_eq!(t.ack(1, 13), None);
        assert_eq!(t.ack(0, 13), Some(13));
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.stats().completed, 4);
    }

    #[test]
    fn owed_by_counts_what_each_sink_still_owes() {
        let mut t = tracker(2, 8);
        for id in 1..=3 {
            t.track(id);
        }
        t.ack(0, 1);
        t.ack(0, 2);
        t.ack(1, 2);
        assert_eq!((t.owed_by(0), t.owed_by(1)), (1, 2));
        t.ack(0, 3);
        assert_eq!((t.owed_by(0), t.owed_by(1)), (0, 2));
        assert_eq!(t.owed_by(5), 0);
    }

    #[test]
    fn three_sinks_all_owe_each_id() {
        let mut t = tracker(3, 8);
        assert_eq!(t.track(1), Track::Added);
        assert_eq!(t.track(2), Track::Added);
        assert_eq!(t.ack(2, 1), None);
        assert_eq!(t.ack(0, 1), None);
        assert!(t.owes(1, 1));
        assert_eq!(t.ack(1, 2), None);
        assert_eq!(t.ack(1, 1), Some(1));
        assert_eq!(t.ack(0, 2), None);
        assert_eq!(t.ack(2, 2), Some(2));
        assert_eq!(t.stats().completed, 2);
    }

    #[test]
    fn duplicate_and_unknown_acks_are_counted_and_ignored() {
        let mut t = tracker(2, 8);
        assert_eq!(t.track(5), Track::Added);
        assert_eq!(t.ack(0, 5), None);
        assert_eq!(t.ack(0, 5), None); // duplicate from the same sink
        assert_eq!(t.ack(1, 99), None); // never tracked
        assert_eq!(t.ack(7, 5), None); // no such sink
        assert!(t.owes(1, 5));
        assert_eq!(t.ack(1, 5), Some(5));
        assert_eq!(t.ack(1, 5), None); // completed already
        assert_eq!(t.ack(0, 5), None);
        let s = t.stats();
        assert_eq!(s.duplicate_acks, 1);
        assert_eq!(s.unknown_acks, 4);
        assert_eq!(s.completed, 1);
    }

    #[test]
    fn an_id_offered_again_while_outstanding_is_not_tracked_twice() {
        let mut t = tracker(2, 8);
        assert_eq!(t.track(1), Track::Added);
        assert_eq!(t.track(1), Track::AlreadyOutstanding);
        assert_eq!(t.outstanding(), 1);
        assert_eq!(t.ack(0, 1), None);
        assert_eq!(t.ack(1, 1), Some(1));
        // completed: offered again, it is new (at-least-once)
        assert_eq!(t.track(1), Track::Added);
        assert_eq!(t.stats().duplicate_inputs, 1);
    }

    #[test]
    fn the_window_bounds_what_is_outstanding() {
        let mut t = tracker(2, 3);
        for id in 1..=3 {
            assert_eq!(t.track(id), Track::Added);
        }
        assert!(!t.has_room());
        assert_eq!(t.track(4), Track::WindowFull);
        // one sink acking everything does not free the window
        for id in 1..=3 {
            assert_eq!(t.ack(0, id), None);
        }
        assert!(!t.has_room());
        assert_eq!(t.ack(1, 2), Some(2));
        assert!(t.has_room());
        assert_eq!(t.track(4), Track::Added);
        assert_eq!(t.track(5), Track::WindowFull);
        let s = t.stats();
        assert_eq!((s.outstanding, s.window_refusals), (3, 2));
    }

    #[test]
    fn sink_sets_over_one_word() {
        for sinks in [1, 63, 64, 65, 130] {
            let mut s = SinkSet::full(sinks);
            assert_eq!(s.count, sinks);
            for i in 0..sinks {
                assert!(s.contains(i), "{sinks}: {i}");
            }
            assert!(!s.contains(sinks));
            assert!(matches!(s.take(sinks), Take::NoSuchSink | Take::Already));
            for i in (0..sinks).rev() {
                assert!(matches!(s.take(i), Take::Owed));
                assert!(matches!(s.take(i), Take::Already));
            }
            assert_eq!(s.count, 0);
        }
    }

    /// One step of a random run: the pump offers the next id, or a sink acknowledges.
    #[derive(Debug, Clone)]
    enum Step {
        Offer,
        /// sink, which of the ids it received and has not acked (index mod their number)
        Ack(usize, usize),
        /// sink, an id it acks again or never got
        Junk(usize, u64),
    }

    fn step(sinks: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Offer),
            6 => (0..sinks, any::<usize>()).prop_map(|(s, k)| Step::Ack(s, k)),
            1 => (0..sinks + 1, 0u64..40).prop_map(|(s, id)| Step::Junk(s, id)),
        ]
    }

    fn run() -> impl Strategy<Value = (usize, usize, Vec<Step>)> {
        (1usize..5, 1usize..6).prop_flat_map(|(sinks, window)| {
            (
                Just(sinks),
                Just(window),
                prop::collection::vec(step(sinks), 0..200),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Random interleavings: each id is completed (acked upstream) exactly once, only
        /// after every sink acked it, never more than `window` outstanding; at the end, with
        /// every sink acking what it still owes, everything offered completes.
        #[test]
        fn each_id_is_acked_upstream_once_and_only_after_every_sink((sinks, window, steps) in run()) {
            let mut t = tracker(sinks, window);
            let mut next_id = 1u64;
            // per sink: ids received and not yet acked by it
            let mut owed: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); sinks];
            // per id: the sinks that acked it
            let mut acked_by: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
            let mut upstream: Vec<u64> = Vec::new();
            let check = |t: &mut AckTracker, sink: usize, id: u64,
                             owed: &mut Vec<BTreeSet<u64>>,
                             acked_by: &mut BTreeMap<u64, BTreeSet<usize>>,
                             upstream: &mut Vec<u64>| -> Result<(), TestCaseError> {
                let legit = owed.get_mut(sink).is_some_and(|o| o.remove(&id));
                if legit {
                    acked_by.entry(id).or_default().insert(sink);
                }
                if let Some(done) = t.ack(sink, id) {
                    prop_assert_eq!(done, id);
                    prop_assert!(legit, "completed {} on a junk ack", id);
                    let by = acked_by.get(&id).map_or(0, BTreeSet::len);
                    prop_assert_eq!(by, sinks, "id {} completed before every sink acked", id);
                    prop_assert!(!upstream.contains(&id), "id {} completed twice", id);
                    upstream.push(id);
                } else {
                    prop_assert!(!legit || acked_by.get(&id).map_or(0, BTreeSet::len) < sinks);
                }
                Ok(())
            };
            for s in steps {
                match s {
                    Step::Offer => {
                        let room = t.has_room();
                        let r = t.track(next_id);
                        if room {
                            prop_assert_eq!(r, Track::Added);
                            owed.iter_mut().for_each(|o| { o.insert(next_id); });
                            next_id += 1;
                        } else {
                            prop_assert_eq!(r, Track::WindowFull);
                        }
                    }
                    Step::Ack(sink, k) => {
                        let Some(id) = owed[sink].iter().copied().nth(k % owed[sink].len().max(1)) else {
                            continue;
                        };
                        check(&mut t, sink, id, &mut owed, &mut acked_by, &mut upstream)?;
                    }
                    Step::Junk(sink, id) => {
                        if owed.get(sink).is_some_and(|o| o.contains(&id)) {
                            continue; // that would be a real ack
                        }
                        let before = t.stats();
                        prop_assert_eq!(t.ack(sink, id), None);
                        let after = t.stats();
                        prop_assert_eq!(
                            after.unknown_acks + after.duplicate_acks,
                            before.unknown_acks + before.duplicate_acks + 1
                        );
                    }
                }
                prop_assert!(t.outstanding() <= window);
                let still_owed: BTreeSet<u64> = owed.iter().flatten().copied().collect();
                prop_assert_eq!(t.outstanding(), still_owed.len());
            }
            // every sink acks what it still owes, in reverse order
            for sink in 0..sinks {
                let ids: Vec<u64> = owed[sink].iter().rev().copied().collect();
                for id in ids {
                    check(&mut t, sink, id, &mut owed, &mut acked_by, &mut upstream)?;
                }
            }
            prop_assert_eq!(t.outstanding(), 0);
            upstream.sort_unstable();
            prop_assert_eq!(upstream, (1..next_id).collect::<Vec<_>>());
            prop_assert_eq!(t.stats().completed, next_id - 1);
        }
    }
}
