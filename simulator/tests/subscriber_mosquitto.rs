//! The collector's MQTT subscriber (`v6iot_simulator::subscriber`) against a real mosquitto
//! with its default limit of 20 QoS 1 messages in flight per client: thousands of QoS 1
//! messages arrive exactly once and in order (so every one was acknowledged: without PUBACKs
//! the broker would stop after 20), and after the broker restarts the subscriber reconnects,
//! subscribes again and receives what is published then.
//!
//! scripts/test installs mosquitto and mosquitto-clients; without them this test fails, naming
//! the missing tool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::process::Stdio;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use v6iot_simulator::subscriber::{Sink, Subscription};
use v6iot_testkit::Mosquitto;
use v6iot_testkit::mosquitto::pub_command;

/// Forwards every delivery to the test thread.
struct Forward(Sender<(String, String)>);

impl Sink for Forward {
    fn publish(&mut self, topic: &str, payload: &[u8]) {
        let _ = self.0.send((
            topic.to_owned(),
            String::from_utf8_lossy(payload).into_owned(),
        ));
    }
}

/// Publishes every line of `lines` as one QoS 1 message to `topic`.
fn publish(port: u16, topic: &str, lines: &[String]) {
    let mut child = pub_command("::1", port, topic)
        .arg("-l")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

fn next(rx: &Receiver<(String, String)>) -> (String, String) {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a delivery within 10 s")
}

#[test]
fn every_qos1_message_arrives_once_in_order_and_the_subscriber_survives_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    // mosquitto's default in-flight limit (20), its log in `mosquitto.log` across the restart.
    let mut broker = Mosquitto::on_loopback(dir.path(), "persistence false\n");
    let port = broker.port();
    let (tx, rx) = channel();
    let sub = Subscription::start(
        "::1",
        port,
        "v6iot/t/+/telemetry",
        Arc::new(Mutex::new(Forward(tx))),
    )
    .unwrap();

    const N: usize = 3000;
    let lines: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    publish(port, "v6iot/t/d1/telemetry", &lines);
    publish(port, "v6iot/elsewhere/d1/telemetry", &lines[..1]);
    publish(port, "v6iot/t/end/telemetry", &["end".to_owned()]);
    for want in &lines {
        assert_eq!(next(&rx), ("v6iot/t/d1/telemetry".to_owned(), want.clone()));
    }
    // Nothing more before the sentinel: no duplicate, nothing from outside the filter.
    assert_eq!(
        next(&rx),
        ("v6iot/t/end/telemetry".to_owned(), "end".to_owned())
    );

    // The broker goes away and comes back on the same port: the subscriber reconnects and
    // subscribes again (a probe is published until one arrives).
    broker.kill();
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no delivery after the restart");
        publish(port, "v6iot/t/d2/telemetry", &["probe".to_owned()]);
        if let Ok(got) = rx.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(got, ("v6iot/t/d2/telemetry".to_owned(), "probe".to_owned()));
            break;
        }
    }
    publish(port, "v6iot/t/d3/telemetry", &lines[..100]);
    for want in &lines[..100] {
        // later probes may still arrive: skipped
        let got = loop {
            let got = next(&rx);
            if got.0 != "v6iot/t/d2/telemetry" {
                break got;
            }
            assert_eq!(got.1, "probe");
        };
        assert_eq!(got, ("v6iot/t/d3/telemetry".to_owned(), want.clone()));
    }
    let stopping = Instant::now();
    sub.stop();
    assert!(stopping.elapsed() < Duration::from_secs(2));
}
