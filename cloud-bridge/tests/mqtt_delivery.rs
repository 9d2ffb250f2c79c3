//! End to end through a real mosquitto: every message arrives intact and every id is acked
//! exactly once (MQTT 3.1.1 and 5), and a broker killed mid-stream loses nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::mpsc;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, MqttConfig};

const N: u64 = 500;

fn config(url: &str, protocol: u8) -> MqttConfig {
    let mut c = MqttConfig::new(url, "edge-1", Topics::new("v6iot", "plant-a").unwrap());
    c.protocol = protocol;
    c.max_in_flight = 32;
    c.reconnect_min = Duration::from_millis(100);
    c.reconnect_max = Duration::from_millis(500);
    c
}

/// Adds acknowledged ids to `acked` until it has `n` (each within 10 s).
async fn acks_until(acks: &mut mpsc::UnboundedReceiver<u64>, acked: &mut Vec<u64>, n: usize) {
    while acked.len() < n {
        let id = tokio::time::timeout(Duration::from_secs(10), acks.recv())
            .await
            .expect("an ack within 10 s")
            .expect("the bridge's ack channel is open");
        acked.push(id);
    }
}

/// Feeds ids 1..=N in a task (the channel is bounded: back-pressure is part of the test).
fn feed(bridge: &Bridge, topics: &Topics) -> tokio::task::JoinHandle<()> {
    let tx = bridge.outgoing.clone();
    let topics = topics.clone();
    tokio::spawn(async move {
        for id in 1..=N {
            tx.send(message(&topics, id)).await.unwrap();
        }
    })
}

async fn delivers_everything(protocol: u8) {
    init_tracing();
    let dir = TempDir::new("e2e");
    let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V6, V4]));
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let mut sub = Sub::start(V4, broker.port, &["v6iot/plant-a/+/telemetry"]).await;
    let started = Instant::now();
    let mut bridge = Bridge::start(
        config(&format!("mqtt://[::1]:{}", broker.port), protocol),
        8,
    );
    let addr = bridge.connected().await;
    assert!(addr.is_ipv6(), "{addr}");
    let feeder = feed(&bridge, &topics);

    let mut received = BTreeMap::new();
    while received.len() < N as usize {
        let (topic, payload) = sub
            .recv(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of {N} arrived", received.len()));
        let id = u64::from_be_bytes(payload[..8].try_into().unwrap());
        assert_eq!(payload, common::payload(id), "payload of {id} intact");
        assert_eq!(topic, topics.telemetry(&format!("dev-{}", id % 7)));
        *received.entry(id).or_insert(0) += 1;
    }
    let mut acked = Vec::new();
    acks_until(&mut bridge.acks, &mut acked, N as usize).await;
    feeder.await.unwrap();
    let elapsed = started.elapsed();
    bridge.stop().await.unwrap();
    acked.extend(std::iter::from_fn(|| bridge.acks.try_recv().ok()));
    let distinct: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked.len(), N as usize, "every id acked exactly once");
    assert_eq!(distinct, (1..=N).collect(), "every id acked");
    assert_eq!(received.keys().copied().collect::<BTreeSet<_>>(), distinct);
    let s = bridge.stats.snapshot();
    assert_eq!((s.acked, s.republished, s.connects), (N, 0, 1));
    eprintln!("MQTT {protocol}: {N} messages published and acked in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_500_messages_each_acked_once_mqtt_3_1_1() {
    delivers_everything(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_500_messages_each_acked_once_mqtt_5() {
    delivers_everything(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_nothing() {
    init_tracing();
    let dir = TempDir::new("outage");
    let mut broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V6, V4]));
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let filters = ["v6iot/plant-a/+/telemetry"];
    let mut sub = Sub::start(V4, broker.port, &filters).await;
    // A long back-off: the test restarts the broker and its receiver well before the bridge
    // tries again, so the receiver sees every republished message.
    let mut c = config(&format!("mqtt://[::1]:{}", broker.port), 4);
    c.reconnect_min = Duration::from_secs(3);
    c.reconnect_max = Duration::from_secs(3);
    let mut bridge = Bridge::start(c, 8);
    bridge.connected().await;
    let feeder = feed(&bridge, &topics);

    let mut received: BTreeMap<u64, u32> = BTreeMap::new();
    let record = |payload: Vec<u8>, received: &mut BTreeMap<u64, u32>| {
        let id = u64::from_be_bytes(payload[..8].try_into().unwrap());
        assert_eq!(payload, common::payload(id));
        *received.entry(id).or_insert(0) += 1;
    };
    let mut acked = Vec::new();
    acks_until(&mut bridge.acks, &mut acked, 150).await;
    broker.kill();
    bridge
        .event(Duration::from_secs(10), |e| {
            matches!(e, BridgeEvent::Disconnected { .. })
        })
        .await;
    // Acks that arrived before the kill: the broker had those messages.
    acked.extend(std::iter::from_fn(|| bridge.acks.try_recv().ok()));
    // Whatever reached the receiver before the kill.
    while let Some((_, payload)) = sub.recv(Duration::from_millis(300)).await {
        record(payload, &mut received);
    }
    // A killed broker without persistence loses what it had acknowledged but not yet passed
    // on: that loss is the broker's, and the bridge rightly does not resend acknowledged
    // messages. Everything else is the bridge's to deliver.
    let broker_lost: BTreeSet<u64> = acked
        .iter()
        .copied()
        .filter(|id| !received.contains_key(id))
        .collect();
    eprintln!(
        "acknowledged by the broker and lost with it: {}",
        broker_lost.len()
    );
    sub.stop().await;
    let ev = bridge
        .event(Duration::from_secs(10), |e| {
            matches!(e, BridgeEvent::ConnectFailed { .. })
        })
        .await;
    eprintln!("while the broker is down: {ev:?}");
    broker.restart();
    let mut sub = Sub::start(V4, broker.port, &filters).await;
    let republishing = bridge
        .event(Duration::from_secs(10), |e| {
            matches!(e, BridgeEvent::Republishing { .. })
        })
        .await;
    let BridgeEvent::Republishing { count } = republishing else {
        unreachable!()
    };
    assert!(count > 0, "messages were in flight when the broker died");

    while received.len() + broker_lost.len() < N as usize {
        let (_, payload) = sub
            .recv(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("lost: only {} of {N} arrived", received.len()));
        record(payload, &mut received);
    }
    acks_until(&mut bridge.acks, &mut acked, N as usize).await;
    feeder.await.unwrap();
    bridge.stop().await.unwrap();
    acked.extend(std::iter::from_fn(|| bridge.acks.try_recv().ok()));
    let distinct: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(distinct, (1..=N).collect(), "every id acked");
    assert_eq!(acked.len(), N as usize, "and acked once");
    let delivered: BTreeSet<u64> = received
        .keys()
        .copied()
        .chain(broker_lost.iter().copied())
        .collect();
    assert_eq!(delivered, (1..=N).collect(), "nothing lost by the bridge");
    let duplicates: u32 = received.values().map(|n| n - 1).sum();
    let s = bridge.stats.snapshot();
    assert_eq!(s.republished, count as u64);
    assert!(
        s.connects >= 2 && s.disconnects >= 1 && s.connect_failures >= 1,
        "{s:?}"
    );
    eprintln!(
        "outage: {count} republished after the reconnection, {duplicates} duplicates at the \
         receiver, stats {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_for_good_by_an_mqtt_5_broker_is_dropped_loudly() {
    init_tracing();
    let dir = TempDir::new("acl");
    let mut spec = BrokerSpec::plain(&[V6, V4]);
    spec.acl = Some(
        "topic readwrite probe/#\ntopic readwrite v6iot/plant-a/+/telemetry\n\
         topic readwrite v6iot/plant-a/_edge/#\ntopic read v6iot/plant-a/+/cmd/+\n",
    );
    let broker = Mosquitto::start(dir.path(), spec);
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let mut sub = Sub::start(V4, broker.port, &["v6iot/plant-a/+/telemetry"]).await;
    let mut bridge = Bridge::start(config(&format!("mqtt://[::1]:{}", broker.port), 5), 8);
    bridge.connected().await;
    // mosquitto 2.0 answers PUBACK "not authorized" and then closes the connection
    let mut forbidden = message(&topics, 1);
    forbidden.topic = "v6iot/plant-a/dev-1/forbidden".into();
    bridge.outgoing.send(forbidden).await.unwrap();
    let refused = bridge
        .event(Duration::from_secs(10), |e| {
            matches!(e, BridgeEvent::PublishRefused { .. })
        })
        .await;
    let BridgeEvent::PublishRefused {
        id,
        reason,
        dropped,
    } = refused
    else {
        unreachable!()
    };
    assert_eq!((id, dropped), (1, true));
    assert!(reason.contains("NotAuthorized"), "{reason}");
    assert_eq!(
        bridge.acks.recv().await,
        Some(1),
        "given up: acknowledged to the outbox"
    );
    // the bridge goes on (reconnecting if the broker closed the connection)
    for id in 2..=4 {
        bridge.outgoing.send(message(&topics, id)).await.unwrap();
    }
    let mut acked = Vec::new();
    acks_until(&mut bridge.acks, &mut acked, 3).await;
    acked.sort_unstable();
    assert_eq!(acked, [2, 3, 4]);
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        let (_, p) = sub.recv(Duration::from_secs(10)).await.expect("delivered");
        got.insert(u64::from_be_bytes(p[..8].try_into().unwrap()));
    }
    assert_eq!(got, BTreeSet::from([2, 3, 4]));
    bridge.stop().await.unwrap();
    let s = bridge.stats.snapshot();
    assert_eq!((s.refused, s.dropped, s.acked), (1, 1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_it_retries_with_back_off_not_in_a_spin() {
    init_tracing();
    let port = free_port(); // nothing listens there
    let mut c = config(&format!("mqtt://localhost:{port}"), 4);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(200);
    let mut bridge = Bridge::start(c, 8);
    let window = Duration::from_millis(1500);
    let t0 = Instant::now();
    let mut failures = 0;
    while t0.elapsed() < window {
        let left = window.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, bridge.events.recv()).await {
            Ok(Some(BridgeEvent::ConnectFailed { reason })) => {
                assert!(reason.contains("refused"), "{reason}");
                failures += 1;
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("the bridge stopped"),
            Err(_) => break,
        }
    }
    bridge.stop().await.unwrap();
    // delays 25-50, 50-100, 100-200, then 100-200 ms: about 10 attempts in 1.5 s
    assert!(
        (4..=20).contains(&failures),
        "{failures} attempts in {window:?}"
    );
    assert_eq!(bridge.stats.snapshot().connect_failures, failures);
}
