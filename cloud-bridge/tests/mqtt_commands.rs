//! Commands down from a real mosquitto, error results for malformed ones, and the edge status
//! with its Last Will.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use v6iot_cloud_bridge::command::{Command, Method};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, MqttConfig};

fn config(port: u16, protocol: u8) -> MqttConfig {
    let mut c = MqttConfig::new(
        &format!("mqtt://127.0.0.1:{port}"),
        "edge-1",
        Topics::new("v6iot", "plant-a").unwrap(),
    );
    c.protocol = protocol;
    c.reconnect_min = Duration::from_millis(100);
    c
}

async fn subscribed(bridge: &mut Bridge) {
    bridge
        .event(Duration::from_secs(10), |e| {
            matches!(e, BridgeEvent::Subscribed { .. })
        })
        .await;
}

async fn result_json(sub: &mut Sub, topic: &str) -> serde_json::Value {
    let (t, payload) = sub
        .recv(Duration::from_secs(10))
        .await
        .expect("an error result");
    assert_eq!(t, topic);
    serde_json::from_slice(&payload).unwrap()
}

async fn commands_round_trip(protocol: u8) {
    init_tracing();
    let dir = TempDir::new("cmd");
    let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V4]));
    let mut results = Sub::start(V4, broker.port, &["v6iot/plant-a/+/cmd/+/result"]).await;
    let mut bridge = Bridge::start(config(broker.port, protocol), 8);
    subscribed(&mut bridge).await;

    // a good command is parsed and forwarded
    let cmd = forwarded(
        &mut bridge,
        broker.port,
        "v6iot/plant-a/valve-7/cmd/r1",
        r#"{"method":"PUT","path":"/actuators/valve","payload":"on","content_format":0,"ttl":30}"#,
    )
    .await;
    assert_eq!((cmd.device.as_str(), cmd.req.as_str()), ("valve-7", "r1"));
    assert_eq!(
        (cmd.method, cmd.path.as_str()),
        (Method::Put, "/actuators/valve")
    );
    assert_eq!(cmd.payload, b"on");
    assert_eq!(
        (cmd.content_format, cmd.ttl),
        (Some(0), Duration::from_secs(30))
    );
    assert!(cmd.confirmable);
    let cmd = forwarded(
        &mut bridge,
        broker.port,
        "v6iot/plant-a/meter-2/cmd/r2",
        r#"{"method":"POST","path":"/config","payload_b64":"AAH/","confirmable":false}"#,
    )
    .await;
    assert_eq!(
        (cmd.method, cmd.payload.as_slice(), cmd.confirmable),
        (Method::Post, &[0u8, 1, 255][..], false)
    );

    // malformed ones are not forwarded: an error result goes to …/cmd/{req}/result
    let bad = [
        (
            "valve-7",
            "r3",
            "this is not json",
            "not a valid command JSON object",
        ),
        (
            "valve-7",
            "r4",
            r#"{"method":"PATCH","path":"/a"}"#,
            "unknown method `PATCH`",
        ),
        ("valve-7", "r5", r#"{"method":"GET"}"#, "missing `path`"),
        (
            "_edge",
            "r6",
            r#"{"method":"GET","path":"/a"}"#,
            "not a valid device id",
        ),
    ];
    for (device, req, payload, reason) in bad {
        publish(
            V4,
            broker.port,
            &format!("v6iot/plant-a/{device}/cmd/{req}"),
            payload,
            false,
        )
        .await;
        let v = result_json(
            &mut results,
            &format!("v6iot/plant-a/{device}/cmd/{req}/result"),
        )
        .await;
        assert_eq!(v["req"], req);
        assert_eq!(v["status"], "rejected");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        let ev = bridge
            .event(Duration::from_secs(5), |e| {
                matches!(e, BridgeEvent::CommandRejected { .. })
            })
            .await;
        assert_eq!(
            ev,
            BridgeEvent::CommandRejected {
                req: req.into(),
                reason: error.into()
            }
        );
    }
    assert!(
        bridge.commands.try_recv().is_err(),
        "nothing malformed was forwarded"
    );
    let s = bridge.stats.snapshot();
    assert_eq!((s.commands_forwarded, s.commands_rejected), (2, 4));
    bridge.stop().await.unwrap();
}

/// Publishes `json` on `topic` and returns the command the bridge forwarded (within 10 s).
async fn forwarded(bridge: &mut Bridge, port: u16, topic: &str, json: &str) -> Command {
    publish(V4, port, topic, json, false).await;
    tokio::time::timeout(Duration::from_secs(10), bridge.commands.recv())
        .await
        .expect("a command forwarded within 10 s")
        .expect("the commands channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_parsed_or_rejected_with_a_result_mqtt_3_1_1() {
    commands_round_trip(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_parsed_or_rejected_with_a_result_mqtt_5() {
    commands_round_trip(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_edge_queue_rejects_instead_of_blocking() {
    init_tracing();
    let dir = TempDir::new("cmdfull");
    let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V4]));
    let mut results = Sub::start(V4, broker.port, &["v6iot/plant-a/+/cmd/+/result"]).await;
    let mut bridge = Bridge::start(config(broker.port, 4), 1);
    subscribed(&mut bridge).await;
    let good = r#"{"method":"GET","path":"/sensors/temperature"}"#;
    publish(V4, broker.port, "v6iot/plant-a/d1/cmd/a", good, false).await;
    publish(V4, broker.port, "v6iot/plant-a/d1/cmd/b", good, false).await;
    let v = result_json(&mut results, "v6iot/plant-a/d1/cmd/b/result").await;
    assert!(
        v["error"].as_str().unwrap().contains("queue is full"),
        "{v}"
    );
    assert_eq!(bridge.commands.recv().await.unwrap().req, "a");
    // messages still flow while commands are refused
    bridge
        .outgoing
        .send(message(&Topics::new("v6iot", "plant-a").unwrap(), 1))
        .await
        .unwrap();
    assert_eq!(bridge.acks.recv().await, Some(1));
    bridge.stop().await.unwrap();
}

/// `text` is edge-1's status `state`.
/// edge-1's retained status topic.
const STATUS: &str = "v6iot/plant-a/_edge/edge-1/status";

/// A mosquitto in `dir` and a bridge (MQTT `protocol`) connected to it, once the bridge's
/// retained status there says online.
async fn online(dir: &std::path::Path, protocol: u8) -> (Mosquitto, Bridge) {
    init_tracing();
    let broker = Mosquitto::start(dir, BrokerSpec::plain(&[V4]));
    let mut bridge = Bridge::start(config(broker.port, protocol), 8);
    bridge.connected().await;
    let online = await_retained(V4, broker.port, STATUS, "online", Duration::from_secs(10)).await;
    assert_status(&online, "online");
    (broker, bridge)
}

fn assert_status(text: &str, state: &str) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["edge"].as_str()),
        (Some(state), Some("edge-1")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_online_and_the_last_will_says_offline_when_the_bridge_dies() {
    let dir = TempDir::new("will");
    let (broker, mut bridge) = online(dir.path(), 4).await;

    // abrupt end: the task is aborted, its TCP connection closes without DISCONNECT
    let task = bridge.task.take().unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let offline = await_retained(V4, broker.port, STATUS, "offline", Duration::from_secs(10)).await;
    assert_status(&offline, "offline");
    // the broker saw the connection drop without DISCONNECT (so it published the Will)
    let log = broker.log_text();
    assert!(
        log.contains("Client v6iot-edge-edge-1 closed its connection."),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_also_leaves_offline_mqtt_5() {
    let dir = TempDir::new("bye");
    let (broker, mut bridge) = online(dir.path(), 5).await;
    bridge.stop().await.unwrap();
    let text = retained(V4, broker.port, STATUS).await.unwrap();
    assert_status(&text, "offline");
    // a clean DISCONNECT (the broker drops the Will); the offline status is the bridge's own
    let log = broker.log_text();
    assert!(
        log.contains("Client v6iot-edge-edge-1 disconnected."),
        "{log}"
    );
}
