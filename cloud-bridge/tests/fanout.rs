//! The fan-out pump: on plain channels (pass-through, window, ends), then wired to a real
//! outbox with two fake sinks that acknowledge with random delays, one of which stops
//! acknowledging for a while: both get everything, the outbox's watermark waits for both, and a
//! restart replays exactly what not every sink acknowledged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use v6iot_cloud_bridge::fanout::{FanoutEnd, FanoutReport, SinkPorts, fanout};
use v6iot_cloud_bridge::message::{NewMessage, OutboundMessage};
use v6iot_cloud_bridge::outbox::{self, AckSender, OutboxConfig};

const WAIT: Duration = Duration::from_secs(20);

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn message(id: u64) -> OutboundMessage {
    OutboundMessage {
        id,
        topic: format!("v6iot/site/dev-{id}/telemetry"),
        payload: format!("{{\"seq\":{id}}}").into_bytes(),
        retain: false,
    }
}

fn new_message(n: u64) -> NewMessage {
    NewMessage {
        topic: format!("v6iot/site/dev-{n}/telemetry"),
        payload: format!("{{\"seq\":{n}}}").into_bytes(),
        retain: false,
    }
}

async fn recv(rx: &mut mpsc::Receiver<OutboundMessage>) -> OutboundMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message within the timeout")
        .expect("the channel is open")
}

async fn recv_ack(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    timeout(WAIT, rx.recv())
        .await
        .expect("an ack within the timeout")
        .expect("the channel is open")
}

async fn finished(pump: JoinHandle<FanoutReport>) -> FanoutReport {
    timeout(WAIT, pump)
        .await
        .expect("the pump ends within the timeout")
        .expect("the pump does not fail")
}

fn two(ports: Vec<SinkPorts>) -> (SinkPorts, SinkPorts) {
    let mut it = ports.into_iter();
    let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
        panic!("two sinks expected");
    };
    (a, b)
}

// ---------------------------------------------------------------------------------------------
// the pump on plain channels

/// The pump from `input` to `sinks` sinks with `window` ids in flight; what it acknowledges
/// upstream comes out of the returned receiver.
fn plain_pump(
    input: mpsc::Receiver<OutboundMessage>,
    sinks: usize,
    window: usize,
) -> (
    Vec<SinkPorts>,
    JoinHandle<FanoutReport>,
    mpsc::UnboundedReceiver<u64>,
) {
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (ports, pump) = fanout(
        input,
        move |id| {
            let _ = up_tx.send(id);
        },
        nz(sinks),
        nz(window),
    );
    (ports, pump, up_rx)
}

#[tokio::test]
async fn one_sink_is_a_pass_through_and_the_pump_ends_with_the_input() {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (ports, pump, mut up_rx) = plain_pump(in_rx, 1, 4);
    let mut sink = ports.into_iter().next().unwrap();
    for id in 1..=10 {
        in_tx.send(message(id)).await.unwrap();
        let m = recv(&mut sink.outgoing).await;
        assert_eq!(m, message(id), "passed through unchanged");
        sink.acks.send(id).unwrap();
        assert_eq!(recv_ack(&mut up_rx).await, id);
    }
    drop(in_tx);
    // the sink's input ends with the pump's
    assert!(timeout(WAIT, sink.outgoing.recv()).await.unwrap().is_none());
    let report = finished(pump).await;
    assert_eq!(report.end, FanoutEnd::Drained);
    assert_eq!((report.stats.tracked, report.stats.completed), (10, 10));
}

#[tokio::test]
async fn a_sink_that_does_not_ack_holds_the_window_and_the_pump_stops_reading() {
    const WINDOW: usize = 8;
    let (in_tx, in_rx) = mpsc::channel(100);
    for id in 1..=50 {
        in_tx.send(message(id)).await.unwrap();
    }
    let (ports, pump, mut up_rx) = plain_pump(in_rx, 2, WINDOW);
    let (mut fast, mut slow) = two(ports);
    // the fast sink gets and acks the whole window, the slow one gets it and acks nothing
    for id in 1..=WINDOW as u64 {
        assert_eq!(recv(&mut fast.outgoing).await.id, id);
        fast.acks.send(id).unwrap();
        assert_eq!(recv(&mut slow.outgoing).await.id, id);
    }
    // the pump took exactly the window from the input: 42 of 50 are still queued there
    assert_eq!(in_tx.capacity(), 100 - (50 - WINDOW));
    assert!(fast.outgoing.try_recv().is_err(), "no more than the window");
    // the slow sink acks out of order; each id goes upstream once both have acked it
    for id in [3, 1, 2] {
        slow.acks.send(id).unwrap();
        assert_eq!(recv_ack(&mut up_rx).await, id);
    }
    // three slots freed: the next three come to both sinks
    for id in 9..=11 {
        assert_eq!(recv(&mut fast.outgoing).await.id, id);
        assert_eq!(recv(&mut slow.outgoing).await.id, id);
    }
    assert_eq!(in_tx.capacity(), 100 - (50 - WINDOW - 3));
    assert!(up_rx.try_recv().is_err(), "nothing else is complete");
    drop((fast, slow));
    let report = finished(pump).await;
    assert_eq!(
        report.end,
        FanoutEnd::SinksGone {
            outstanding: WINDOW
        }
    );
    assert_eq!(report.stats.completed, 3);
}

#[tokio::test]
async fn unknown_and_duplicate_acks_are_ignored_and_the_pump_ends_when_the_sinks_are_gone() {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (ports, pump, mut up_rx) = plain_pump(in_rx, 3, 16);
    let mut ports: Vec<SinkPorts> = ports;
    in_tx.send(message(7)).await.unwrap();
    for p in &mut ports {
        assert_eq!(recv(&mut p.outgoing).await.id, 7);
    }
    ports[0].acks.send(7).unwrap();
    ports[0].acks.send(7).unwrap(); // duplicate
    ports[1].acks.send(99).unwrap(); // unknown
    ports[1].acks.send(7).unwrap();
    ports[2].acks.send(7).unwrap();
    assert_eq!(recv_ack(&mut up_rx).await, 7);
    ports[2].acks.send(7).unwrap(); // after completion: unknown
    // the input stays open, but without sinks nothing can be acknowledged any more
    drop(ports);
    let report = finished(pump).await;
    assert_eq!(report.end, FanoutEnd::SinksGone { outstanding: 0 });
    assert_eq!(report.stats.completed, 1);
    // 99 and the late 7 are unknown; sink 0's second 7 is a duplicate if the pump saw it
    // before sink 2's 7 completed the id, else unknown (the channels are read in turn)
    assert!(report.stats.unknown_acks >= 2);
    assert_eq!(report.stats.duplicate_acks + report.stats.unknown_acks, 3);
    assert!(up_rx.try_recv().is_err(), "7 went upstream once");
    drop(in_tx);
}

#[tokio::test]
async fn a_sink_whose_receiver_is_gone_still_owes_its_acks() {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (ports, pump, mut up_rx) = plain_pump(in_rx, 2, 4);
    let (mut alive, gone) = two(ports);
    drop(gone.outgoing);
    for id in 1..=3 {
        in_tx.send(message(id)).await.unwrap();
        assert_eq!(recv(&mut alive.outgoing).await.id, id);
        alive.acks.send(id).unwrap();
    }
    drop(in_tx);
    assert!(
        timeout(WAIT, alive.outgoing.recv())
            .await
            .unwrap()
            .is_none()
    );
    drop((alive, gone.acks));
    let report = finished(pump).await;
    assert_eq!(report.end, FanoutEnd::SinksGone { outstanding: 3 });
    assert!(up_rx.try_recv().is_err(), "nothing acknowledged upstream");
}

// ---------------------------------------------------------------------------------------------
// a real outbox → fanout → two fake sinks

/// What the fake sinks and the upstream acknowledger saw, shared through a watch channel so
/// that the test can await conditions on it.
#[derive(Debug, Default)]
struct Model {
    /// Per sink, the ids it received, in order.
    received: [Vec<u64>; 2],
    /// Per sink, the ids it acknowledged (recorded before the ack is sent).
    acked: [BTreeSet<u64>; 2],
    /// Ids acknowledged to the outbox, in order.
    upstream: Vec<u64>,
    /// Ids at or below this were acknowledged in an earlier run.
    floor: u64,
    /// Broken promises (checked at the end; a panic in the pump would hide them).
    violations: Vec<String>,
}

type Shared = Arc<watch::Sender<Model>>;

fn model(floor: u64) -> Shared {
    Arc::new(watch::Sender::new(Model {
        floor,
        ..Model::default()
    }))
}

async fn until(model: &Shared, what: &str, cond: impl FnMut(&Model) -> bool) {
    let mut rx = model.subscribe();
    timeout(WAIT, rx.wait_for(cond))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *model.borrow()))
        .unwrap();
}

/// Acknowledges to the outbox and checks, at each call, that both sinks had acknowledged the
/// id, that it was not acknowledged upstream before, and that the outbox's watermark covers
/// only ids both sinks acknowledged.
fn upstream(acker: AckSender, model: Shared) -> impl Fn(u64) + Send + 'static {
    move |id| {
        model.send_modify(|m| {
            if !(m.acked[0].contains(&id) && m.acked[1].contains(&id)) {
                m.violations
                    .push(format!("{id} acknowledged upstream before both sinks did"));
            }
            if m.upstream.contains(&id) {
                m.violations
                    .push(format!("{id} acknowledged upstream twice"));
            }
            m.upstream.push(id);
        });
        acker.ack(id);
        let watermark = acker.stats().ack_watermark;
        model.send_modify(|m| {
            let done: BTreeSet<u64> = m.upstream.iter().copied().collect();
            if let Some(id) = (m.floor + 1..=watermark).find(|i| !done.contains(i)) {
                m.violations.push(format!(
                    "watermark {watermark} is past {id}, which not both sinks acknowledged"
                ));
            }
        });
    }
}

/// xorshift64*: the fake sinks' delays.
struct Rng(u64);

impl Rng {
    fn delay(&mut self) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Duration::from_micros(r % 3_000)
    }
}

/// A fake sink: records each message, acknowledges it after a random delay (so out of order);
/// ids from `hold.0` on wait until `hold.1` is true (and are never acknowledged if its sender
/// is dropped first). Aborting the task aborts its pending acknowledgements.
fn spawn_sink(
    index: usize,
    ports: SinkPorts,
    model: Shared,
    seed: u64,
    hold: Option<(u64, watch::Receiver<bool>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let SinkPorts { mut outgoing, acks } = ports;
        let mut rng = Rng(seed);
        let mut pending = JoinSet::new();
        while let Some(m) = outgoing.recv().await {
            let id = m.id;
            model.send_modify(|s| s.received[index].push(id));
            let gate = hold
                .as_ref()
                .filter(|(from, _)| id >= *from)
                .map(|(_, gate)| gate.clone());
            let delay = rng.delay();
            let (acks, model) = (acks.clone(), model.clone());
            pending.spawn(async move {
                if let Some(mut gate) = gate
                    && gate.wait_for(|open| *open).await.is_err()
                {
                    return;
                }
                tokio::time::sleep(delay).await; // the sink's own latency, not a wait
                model.send_modify(|s| {
                    s.acked[index].insert(id);
                });
                let _ = acks.send(id);
            });
            while pending.try_join_next().is_some() {}
        }
        while pending.join_next().await.is_some() {}
    })
}

fn config(dir: &Path) -> OutboxConfig {
    let mut c = OutboxConfig::new(dir);
    c.max_bytes = 1 << 20;
    c.segment_bytes = 4 << 10;
    c.publish_window = 32;
    c
}

const N: u64 = 300;
const WINDOW: usize = 16;
/// Sink 1 acknowledges nothing from this id on until it is let go.
const HOLD_FROM: u64 = 100;

/// The fan-out from the outbox's `to_publish` to two fake sinks (seeded with `seeds`, sink 1
/// holding as `hold` says), acknowledging to `acker` and recording in `shared`.
fn wire(
    to_publish: mpsc::Receiver<OutboundMessage>,
    acker: &AckSender,
    shared: &Shared,
    seeds: [u64; 2],
    hold: Option<(u64, watch::Receiver<bool>)>,
) -> ([JoinHandle<()>; 2], JoinHandle<FanoutReport>) {
    let (ports, pump) = fanout(
        to_publish,
        upstream(acker.clone(), shared.clone()),
        nz(2),
        nz(WINDOW),
    );
    let (a, b) = two(ports);
    let sinks = [
        spawn_sink(0, a, shared.clone(), seeds[0], None),
        spawn_sink(1, b, shared.clone(), seeds[1], hold),
    ];
    (sinks, pump)
}

/// Opens the outbox in `dir`, appends messages 1..=N, and starts the fan-out to two fake sinks,
/// sink 1 holding its acks from [`HOLD_FROM`] on until the returned gate opens.
async fn start(
    dir: &Path,
    seed: u64,
) -> (
    outbox::OutboxHandle,
    AckSender,
    Shared,
    watch::Sender<bool>,
    [JoinHandle<()>; 2],
    JoinHandle<FanoutReport>,
) {
    let (outbox, to_publish, acker) = outbox::open(config(dir)).await.unwrap();
    let ids = outbox
        .append((1..=N).map(new_message).collect())
        .await
        .unwrap();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
    let shared = model(0);
    let (gate, gate_rx) = watch::channel(false);
    let (sinks, pump) = wire(
        to_publish,
        &acker,
        &shared,
        [seed, seed ^ 0x9e37_79b9],
        Some((HOLD_FROM, gate_rx)),
    );
    (outbox, acker, shared, gate, sinks, pump)
}

/// While sink 1 holds its acks: the window is full, both sinks have exactly ids
/// 1..HOLD_FROM+WINDOW, sink 0 has acknowledged all of them, and the outbox's watermark has
/// not moved past HOLD_FROM - 1.
async fn check_held(shared: &Shared, acker: &AckSender) {
    let reached = (HOLD_FROM - 1) as usize + WINDOW;
    until(shared, "the window to fill while sink 1 holds", |m| {
        m.received[0].len() >= reached
            && m.received[1].len() >= reached
            && m.acked[0].len() >= reached
            && m.upstream.len() >= (HOLD_FROM - 1) as usize
    })
    .await;
    let m = shared.borrow();
    let expect: Vec<u64> = (1..=reached as u64).collect();
    assert_eq!(m.received[0], expect, "sink 0 got no more than the window");
    assert_eq!(m.received[1], expect);
    assert_eq!(m.acked[1], (1..HOLD_FROM).collect());
    let mut up = m.upstream.clone();
    up.sort_unstable();
    assert_eq!(up, (1..HOLD_FROM).collect::<Vec<_>>());
    assert_eq!(acker.stats().ack_watermark, HOLD_FROM - 1);
    assert!(m.violations.is_empty(), "{:?}", m.violations);
}

#[tokio::test]
async fn both_sinks_get_every_message_and_the_watermark_waits_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, acker, shared, gate, sinks, pump) = start(dir.path(), 0x5eed_0001).await;
    check_held(&shared, &acker).await;

    gate.send(true).unwrap();
    until(&shared, "every id acknowledged upstream", |m| {
        m.upstream.len() >= N as usize
    })
    .await;
    {
        let m = shared.borrow();
        let all: Vec<u64> = (1..=N).collect();
        assert_eq!(
            m.received[0], all,
            "sink 0 got every message once, in order"
        );
        assert_eq!(
            m.received[1], all,
            "sink 1 got every message once, in order"
        );
        let mut up = m.upstream.clone();
        up.sort_unstable();
        assert_eq!(up, all, "each id acknowledged upstream once");
        assert!(m.violations.is_empty(), "{:?}", m.violations);
    }
    let stats = acker.stats();
    assert_eq!((stats.ack_watermark, stats.pending_messages), (N, 0));
    assert_eq!((stats.ack_duplicates, stats.ack_unknown), (0, 0));

    // closing the outbox ends the input: the pump drains, the sinks' inputs end
    outbox.close().await;
    let report = finished(pump).await;
    assert_eq!(report.end, FanoutEnd::Drained);
    assert_eq!(report.stats.completed, N);
    assert_eq!(
        (report.stats.duplicate_acks, report.stats.unknown_acks),
        (0, 0)
    );
    for s in sinks {
        timeout(WAIT, s).await.unwrap().unwrap();
    }

    // nothing is replayed
    let (outbox, _rx, acker) = outbox::open(config(dir.path())).await.unwrap();
    let stats = acker.stats();
    assert_eq!((stats.recovered_messages, stats.pending_messages), (0, 0));
    outbox.close().await;
}

/// Sink 1 acknowledges a prefix of the ids, so the ids not both sinks acknowledged are
/// exactly those above the outbox's watermark (it persists only the watermark: an id
/// completed out of order above it would be replayed as well).
#[tokio::test]
async fn a_restart_replays_exactly_the_ids_not_every_sink_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, acker, shared, gate, sinks, pump) = start(dir.path(), 0x5eed_0002).await;
    check_held(&shared, &acker).await;
    let owed: Vec<u64> = {
        let m = shared.borrow();
        (1..=N).filter(|id| !m.upstream.contains(id)).collect()
    };
    assert_eq!(owed, (HOLD_FROM..=N).collect::<Vec<_>>());

    // the edge goes down with sink 1 still holding: outbox closed, sinks gone unacknowledged
    outbox.close().await;
    for s in &sinks {
        s.abort();
    }
    drop(gate);
    let report = finished(pump).await;
    assert_eq!(
        report.end,
        FanoutEnd::SinksGone {
            outstanding: WINDOW
        }
    );
    assert_eq!(report.stats.completed, HOLD_FROM - 1);
    {
        let m = shared.borrow();
        assert_eq!(
            m.upstream.len() as u64,
            HOLD_FROM - 1,
            "no ack after the stop"
        );
        assert!(m.violations.is_empty(), "{:?}", m.violations);
    }

    // the next run replays exactly what not both sinks acknowledged, to both of them
    let (outbox, to_publish, acker) = outbox::open(config(dir.path())).await.unwrap();
    let stats = acker.stats();
    assert_eq!(stats.ack_watermark, HOLD_FROM - 1);
    assert_eq!(stats.recovered_messages, owed.len() as u64);
    let shared = model(HOLD_FROM - 1);
    let (sinks, pump) = wire(
        to_publish,
        &acker,
        &shared,
        [0x5eed_0003, 0x5eed_0004],
        None,
    );
    until(&shared, "the replay acknowledged upstream", |m| {
        m.upstream.len() >= owed.len()
    })
    .await;
    {
        let m = shared.borrow();
        assert_eq!(m.received[0], owed, "sink 0 got exactly the replay");
        assert_eq!(m.received[1], owed, "sink 1 got exactly the replay");
        assert!(m.violations.is_empty(), "{:?}", m.violations);
    }
    assert_eq!(acker.stats().ack_watermark, N);
    outbox.close().await;
    let report = finished(pump).await;
    assert_eq!(report.end, FanoutEnd::Drained);
    assert_eq!(report.stats.completed, owed.len() as u64);
    for s in sinks {
        timeout(WAIT, s).await.unwrap().unwrap();
    }
}
