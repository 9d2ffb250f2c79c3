//! End to end through real software: SDK devices on UDP → the `v6iot-edge` binary (CoAP ingress,
//! durable outbox) → a real mosquitto → an independent MQTT subscriber. Each test starts and
//! stops its own broker and edge router on free loopback ports.
//!
//! scripts/test installs mosquitto; without it these tests fail, naming the missing tool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use v6iot_sdk::coap::{
    App, Changed, Config, Device, Resource, ResourceTree, Response, content_format as cf,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::{ReportStats, UplinkConfig};

// ----- temp dirs, ports, waiting: v6iot-testkit (the submodules use these names) -----

use v6iot_testkit::{Running, TempDir, free_tcp_port, free_udp_port, wait_for};

// ----- mosquitto -----

/// mosquitto on `[::1]:port`, its persistence in the test's directory (sessions kept across a
/// graceful [`Mosquitto::stop`]), no queue or in-flight limits; its log next to `conf`; killed
/// on drop.
struct Mosquitto {
    child: Option<Running>,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "")
    }

    /// `extra` is appended to the configuration (e.g. a TLS listener).
    fn start_with(dir: &Path, extra: &str) -> Mosquitto {
        let port = free_tcp_port();
        let conf = dir.join("mosquitto.conf");
        let store = dir.join("mosquitto-store");
        std::fs::create_dir_all(&store).unwrap();
        let text = format!(
            "listener {port} ::1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\n",
            store.display()
        );
        std::fs::write(&conf, format!("{text}{extra}")).unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
        };
        m.restart();
        m
    }

    /// Starts it (again) on its configuration; returns once it listens.
    fn restart(&mut self) {
        let listener = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), self.port);
        let log = self.conf.with_extension("log");
        self.child = Some(v6iot_testkit::mosquitto::spawn(
            &self.conf,
            &log,
            &[listener],
        ));
    }

    /// Graceful stop (SIGTERM): mosquitto saves its persistent sessions.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate();
        }
    }
}

// ----- the edge router binary -----

struct Edge {
    child: Option<Child>,
    coap: SocketAddr,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Edge {
    /// `coap_extra` goes into the `[coap]` table, `extra_toml` after the other tables.
    fn start(dir: &Path, mqtt_port: u16, coap_extra: &str, extra_toml: &str) -> Edge {
        Edge::configured(
            dir,
            &format!("mqtt://[::1]:{mqtt_port}"),
            coap_extra,
            "",
            extra_toml,
        )
    }

    /// An edge router whose broker URL and extra `[mqtt]` keys are given in full.
    fn start_url(dir: &Path, url: &str, mqtt_extra: &str) -> Edge {
        Edge::configured(dir, url, "", mqtt_extra, "")
    }

    fn configured(
        dir: &Path,
        url: &str,
        coap_extra: &str,
        mqtt_extra: &str,
        extra_toml: &str,
    ) -> Edge {
        // `coap_extra` may name the listening address itself (`listen = "127.0.0.1:port"`).
        let given = coap_extra
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = "))
            .map(|v| v.trim_matches('"').parse::<SocketAddr>().unwrap());
        let coap = given.unwrap_or_else(|| format!("[::1]:{}", free_udp_port()).parse().unwrap());
        let listen = if given.is_some() {
            String::new()
        } else {
            format!("listen = \"{coap}\"\n")
        };
        let conf = dir.join("edge.toml");
        // These devices speak plain CoAP: lab mode, unless the test configures security itself.
        let security = if extra_toml.contains("[security]") {
            ""
        } else {
            "\n[security]\nrequire_oscore = false\n"
        };
        let text = format!(
            "site = \"t\"\nedge_id = \"e1\"\ndata_dir = \"{}\"\n[coap]\n{listen}{coap_extra}\n[mqtt]\nurl = \"{url}\"\n{mqtt_extra}\n{extra_toml}{security}",
            dir.join("data").display()
        );
        std::fs::write(&conf, text).unwrap();
        let args = vec!["run".into(), "--config".into(), conf.display().to_string()];
        let mut e = Edge {
            child: None,
            coap,
            args,
            log: Arc::default(),
        };
        e.restart();
        e
    }

    fn restart(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("edge router did not start within 20 s");
            let line = rx
                .recv_timeout(left)
                .expect("edge router exited before it was running");
            // kept too: the tests grep the whole log (e.g. for secrets)
            self.log.lock().unwrap().push(line.clone());
            if line.contains("edge router running") {
                break;
            }
        }
        let log = self.log.clone();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// Waits (bounded) for a log line containing `needle`.
    fn await_log(&self, needle: &str, limit: Duration) {
        let log = self.log.clone();
        wait_for(&format!("edge log `{needle}`"), limit, || {
            log.lock().unwrap().iter().any(|l| l.contains(needle))
        });
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ----- the subscriber -----

/// What reached the broker: (device, seq) → payload, with duplicate count.
#[derive(Default)]
struct Seen {
    records: HashMap<(String, u64), serde_json::Value>,
    duplicates: u64,
    status: HashMap<String, String>,
    /// The edge's security reports (`{prefix}/{site}/_edge/{edge}/security`).
    security: Vec<serde_json::Value>,
    /// The edge's audit checkpoints (same topic, `"kind":"audit_checkpoint"`).
    checkpoints: Vec<serde_json::Value>,
}

fn parse_delivery(topic: &str, payload: &[u8], seen: &mut Seen) {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels[2] == "_edge" {
        if levels.get(4) == Some(&"security") {
            let message: serde_json::Value = serde_json::from_slice(payload).unwrap();
            if message["kind"] == "audit_checkpoint" {
                seen.checkpoints.push(message);
            } else {
                seen.security.push(message);
            }
        }
        return; // the edge router's own status
    }
    if levels.get(3) == Some(&"cmd") {
        return; // command results
    }
    let device = levels[2].to_owned();
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
    if levels[3] == "status" {
        seen.status.insert(
            device,
            value["state"].as_str().unwrap_or_default().to_owned(),
        );
        return;
    }
    let seq = value
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["n"].as_str().unwrap().ends_with(":seq"))
        .unwrap()["v"]
        .as_f64()
        .unwrap() as u64;
    if seen.records.insert((device, seq), value).is_some() {
        seen.duplicates += 1;
    }
}

/// Subscribes to `filter` at the broker on `port` and hands every PUBLISH to `on_publish`;
/// returns once the subscription is acknowledged. A persistent session (`clean_session` false)
/// keeps its subscription across a broker restart.
fn spawn_subscriber(
    rt: &tokio::runtime::Runtime,
    port: u16,
    name: &str,
    filter: &'static str,
    clean_session: bool,
    on_publish: impl FnMut(&str, &[u8]) + Send + 'static,
) {
    spawn_subscriber_as(rt, port, name, None, filter, clean_session, on_publish);
}

/// [`spawn_subscriber`] logging in with `credentials` (user name, password).
fn spawn_subscriber_as(
    rt: &tokio::runtime::Runtime,
    port: u16,
    name: &str,
    credentials: Option<(&str, &str)>,
    filter: &'static str,
    clean_session: bool,
    mut on_publish: impl FnMut(&str, &[u8]) + Send + 'static,
) {
    let mut options = MqttOptions::new(
        format!("e2e-{name}-{}-{port}", std::process::id()),
        "::1",
        port,
    );
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    options
        .set_clean_session(clean_session)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let _keep = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p.topic, &p.payload),
                Ok(_) => {}
                // rumqttc reconnects on the next poll; wait a little between attempts
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscription acknowledged");
}

/// A persistent-session subscriber to everything of site `t`.
fn subscribe(rt: &tokio::runtime::Runtime, port: u16) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    spawn_subscriber(
        rt,
        port,
        "sub",
        "v6iot/t/#",
        false,
        move |topic, payload| {
            parse_delivery(topic, payload, &mut s.lock().unwrap());
        },
    );
    seen
}

// ----- devices -----

struct Meter {
    next: Instant,
    every: Duration,
    stop_after: u64,
    seq: u64,
    id: String,
    pending: Option<Vec<u8>>,
}

impl App for Meter {
    fn poll_timeout(&self) -> Option<Instant> {
        (self.seq < self.stop_after).then_some(self.next)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.seq += 1;
        self.next = now + self.every;
        let pack = PackBuilder::new()
            .base_name(format!("urn:dev:e2e:{}:", self.id))
            .base_time(1_800_000_000.0 + self.seq as f64)
            .record(Record::measurement("flow", "m3/s", self.seq as f64 * 0.5))
            .record(Record {
                n: Some("seq".into()),
                v: Some(self.seq as f64),
                ..Record::default()
            })
            .build();
        self.pending = Some(senml::to_cbor(&pack).unwrap());
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|b| (cf::SENML_CBOR, b))
    }
}

/// Devices that each send `reports` reports, one every `every`; returns per-device stats when
/// `stop` fires (and the exchange in flight then, if any, has ended).
fn start_devices(
    rt: &tokio::runtime::Runtime,
    edge: SocketAddr,
    count: usize,
    reports: u64,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<(String, ReportStats, usize)>> {
    let mut tree = ResourceTree::new();
    tree.add(
        Resource::new("flow")
            .get(|m: &mut Meter, _| Response::content(0, m.seq.to_string().into_bytes()).into()),
    )
    .unwrap();
    let tree = Arc::new(tree);
    (0..count)
        .map(|n| {
            let id = format!("dev{n:03}");
            let tree = tree.clone();
            let mut stop = stop.clone();
            rt.spawn(async move {
                let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
                let now = Instant::now();
                let app = Meter {
                    next: now + Duration::from_millis(100 + 7 * n as u64),
                    every,
                    stop_after: reports,
                    seq: 0,
                    id: id.clone(),
                    pending: None,
                };
                let uplink = UplinkConfig {
                    max_queued_reports: 100_000,
                    ..UplinkConfig::new(edge, id.clone())
                };
                let mut device =
                    Device::new(Config::default(), n as u64, tree, app).with_uplink(now, uplink);
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                v6iot_sdk::driver::run(&socket, &mut device, |_| {}, shutdown)
                    .await
                    .unwrap();
                // Stopped, perhaps with a report on its way: its answer may still be in flight
                // (the edge publishes a record and acknowledges it at the same time), so the
                // device runs on until that exchange has ended, at most 5 s.
                let give_up = Instant::now() + Duration::from_secs(5);
                while in_flight(device.reporter().unwrap().stats()) && Instant::now() < give_up {
                    let tick = tokio::time::sleep(Duration::from_millis(20));
                    v6iot_sdk::driver::run(&socket, &mut device, |_| {}, tick)
                        .await
                        .unwrap();
                }
                let stats = *device.reporter().unwrap().stats();
                (id, stats, device.reporter().unwrap().queued())
            })
        })
        .collect()
}

/// Whether a report request is still waiting for its answer (each request sent ends as
/// acknowledged, rejected, busy or timed out).
fn in_flight(s: &ReportStats) -> bool {
    s.sent > s.acked + s.rejected + s.busy + s.timeouts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Stops the devices and returns (device, acked count, queued) for each.
fn stop_devices(
    rt: &tokio::runtime::Runtime,
    stop: &tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<(String, ReportStats, usize)>>,
) -> Vec<(String, ReportStats, usize)> {
    stop.send(true).unwrap();
    tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect()
}

/// Every acknowledged (device, seq): a reporter sends in order, one at a time, so the first
/// `acked` reports of each device are the acknowledged ones.
fn acknowledged(results: &[(String, ReportStats, usize)]) -> HashSet<(String, u64)> {
    results
        .iter()
        .flat_map(|(id, s, _)| (1..=s.acked).map(move |q| (id.clone(), q)))
        .collect()
}

/// OSCORE devices and attacks against the authentication gateway, on this harness.
#[path = "e2e_mosquitto/oscore.rs"]
mod oscore;

/// Who may command which device: the broker's ACL and the edge's allow-list and bounds.
#[path = "e2e_mosquitto/commands.rs"]
mod commands;

/// Metrics, bad HTTP and feed input, stop and reload through the binary.
#[path = "e2e_mosquitto/ops.rs"]
mod ops;

/// Headless chromium over the DevTools protocol (the dashboard test).
#[path = "e2e_mosquitto/cdp.rs"]
mod cdp;

/// Spoofed traffic from a plant's own network, in a network namespace of the test's own.
#[path = "e2e_mosquitto/spoofing.rs"]
mod spoofing;

#[path = "e2e_mosquitto/addresses.rs"]
mod addresses;

/// The edge answers from the first datagram that finds its port open, many devices loaded.
#[path = "e2e_mosquitto/startup.rs"]
mod startup;

/// The border router: 6LoWPAN devices over ZEP, the TUN, libcoap and tshark, in network
/// namespaces of the tests' own.
#[path = "e2e_mosquitto/lowpan.rs"]
mod lowpan;

// ----- the tests -----

#[test]
fn every_record_arrives_intact() {
    let dir = TempDir::new("plain");
    let broker = Mosquitto::start(dir.path());
    let _edge = Edge::start(dir.path(), broker.port, "", "");
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, _edge.coap, 20, 25, Duration::from_millis(20), stop_rx);
    wait_for("500 deliveries", Duration::from_secs(30), || {
        seen.lock().unwrap().records.len() >= 500
    });
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    assert_eq!(
        acked.len(),
        500,
        "every report acknowledged: {:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.records.keys().cloned().collect::<HashSet<_>>(), acked);
    // Content intact: names resolved, values and times as the device sent them, an id each.
    let r = &seen.records[&("dev007".to_owned(), 12)];
    assert_eq!(r[0]["n"], "urn:dev:e2e:dev007:flow");
    assert_eq!(r[0]["v"], 6.0);
    assert_eq!(r[0]["u"], "m3/s");
    assert_eq!(r[0]["t"], 1_800_000_012.0);
    let ids: HashSet<&str> = seen
        .records
        .values()
        .map(|r| r[0]["rid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 500, "distinct record ids");
    assert!(seen.status.values().all(|s| s == "registered"));
    assert_eq!(seen.status.len(), 20, "a retained status per device");
}

#[test]
fn broker_outage_loses_nothing() {
    let dir = TempDir::new("outage");
    let mut broker = Mosquitto::start(dir.path());
    let edge = Edge::start(dir.path(), broker.port, "", "");
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 10, 100, Duration::from_millis(20), stop_rx);
    wait_for("first deliveries", Duration::from_secs(20), || {
        seen.lock().unwrap().records.len() >= 100
    });
    broker.stop();
    let during = seen.lock().unwrap().records.len();
    // Devices keep reporting into the outbox while the bridge fails to reconnect.
    edge.await_log("ConnectFailed", Duration::from_secs(15));
    broker.restart();
    wait_for(
        "all 1000 deliveries after the outage",
        Duration::from_secs(60),
        || seen.lock().unwrap().records.len() >= 1000,
    );
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    // A device stopped between the store and its ACK still has that report delivered.
    assert!(acked.len() >= 1000 - 10, "{}", acked.len());
    assert_eq!(seen.lock().unwrap().records.len(), 1000);
    let seen = seen.lock().unwrap();
    let missing: Vec<_> = acked
        .difference(&seen.records.keys().cloned().collect())
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} records, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        during < 1000,
        "the outage happened mid-stream ({during} delivered before it)"
    );
}

#[test]
fn kill_9_of_the_edge_loses_no_acknowledged_record() {
    let dir = TempDir::new("kill9");
    let broker = Mosquitto::start(dir.path());
    let mut edge = Edge::start(dir.path(), broker.port, "", "");
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 10, 150, Duration::from_millis(10), stop_rx);
    wait_for(
        "deliveries before the crash",
        Duration::from_secs(20),
        || seen.lock().unwrap().records.len() >= 200,
    );
    edge.kill9();
    edge.restart();
    wait_for(
        "all 1500 deliveries after the restart",
        Duration::from_secs(90),
        || seen.lock().unwrap().records.len() >= 1500,
    );
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    let seen = seen.lock().unwrap();
    let missing: Vec<_> = acked
        .difference(&seen.records.keys().cloned().collect())
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} acknowledged records, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        acked.len() >= 1500 - 10,
        "devices re-registered and finished: {}",
        acked.len()
    );
}

#[test]
fn full_outbox_answers_5_03_and_drops_nothing_acknowledged() {
    let dir = TempDir::new("full");
    let mut broker = Mosquitto::start(dir.path());
    let rt = runtime();
    // Subscribe first (persistent session), then take the broker down: it keeps the session.
    let seen = subscribe(&rt, broker.port);
    broker.stop();
    // 1 MiB outbox and no broker: it fills up, then devices are told to wait (5.03 + Max-Age).
    let edge = Edge::start(
        dir.path(),
        broker.port,
        "",
        "[outbox]\nmax_bytes = 1048576\nsegment_bytes = 262144\nretry_after_s = 1\n",
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 20, 400, Duration::from_millis(1), stop_rx);
    edge.await_log("outbox full", Duration::from_secs(30));
    broker.restart();
    wait_for(
        "all 8000 deliveries after the broker came back",
        Duration::from_secs(90),
        || seen.lock().unwrap().records.len() >= 8000,
    );
    let results = stop_devices(&rt, &stop_tx, tasks);
    let busy: u64 = results.iter().map(|r| r.1.busy).sum();
    assert!(busy > 0, "the full outbox answered 5.03");
    assert_eq!(
        results.iter().map(|r| r.1.rejected).sum::<u64>(),
        0,
        "nothing refused for good"
    );
    let acked = acknowledged(&results);
    assert!(acked.len() >= 8000 - 20, "{}", acked.len());
    let s = seen.lock().unwrap();
    let missing = acked.iter().filter(|k| !s.records.contains_key(*k)).count();
    assert_eq!(missing, 0, "acknowledged records not delivered");
}

// ----- commands -----

/// A device with a valve; it notes when it reported and when the valve was switched.
struct Valve {
    next: Instant,
    every: Duration,
    log: Arc<Mutex<Vec<(&'static str, Instant)>>>,
    open: bool,
    pending: Option<Vec<u8>>,
}

impl App for Valve {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.next = now + self.every;
        let pack = PackBuilder::new()
            .record(Record::measurement(
                "urn:dev:e2e:v:open",
                "",
                f64::from(u8::from(self.open)),
            ))
            .build();
        self.pending = Some(senml::to_cbor(&pack).unwrap());
        self.log.lock().unwrap().push(("report", now));
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|b| (cf::SENML_CBOR, b))
    }
}

fn start_valve(
    rt: &tokio::runtime::Runtime,
    edge: SocketAddr,
    id: &str,
    binding: v6iot_sdk::uplink::Binding,
    every: Duration,
) -> Arc<Mutex<Vec<(&'static str, Instant)>>> {
    let log: Arc<Mutex<Vec<(&'static str, Instant)>>> = Arc::default();
    let mut tree = ResourceTree::new();
    tree.add(
        Resource::new("valve")
            .content_formats(&[cf::TEXT_PLAIN])
            .accepts(&[cf::TEXT_PLAIN])
            .get(|v: &mut Valve, _| {
                Response::content(
                    0,
                    if v.open {
                        b"on".to_vec()
                    } else {
                        b"off".to_vec()
                    },
                )
                .into()
            })
            .put(|v: &mut Valve, r| {
                v.open = r.payload == b"on";
                v.log.lock().unwrap().push(("put", r.now));
                Response::code(v6iot_sdk::coap::Code::Changed).into()
            }),
    )
    .unwrap();
    let id = id.to_owned();
    let app_log = log.clone();
    rt.spawn(async move {
        let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let now = Instant::now();
        let app = Valve {
            next: now + Duration::from_millis(100),
            every,
            log: app_log,
            open: false,
            pending: None,
        };
        let uplink = UplinkConfig {
            binding,
            ..UplinkConfig::new(edge, id)
        };
        let mut device =
            Device::new(Config::default(), 9, Arc::new(tree), app).with_uplink(now, uplink);
        v6iot_sdk::driver::run(&socket, &mut device, |_| {}, std::future::pending())
            .await
            .unwrap();
    });
    log
}

/// Publishes with mosquitto_pub, an independent MQTT client.
fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let status = v6iot_testkit::mosquitto::pub_command("::1", port, topic)
        .args(["-m", payload])
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub to {topic}");
}

/// Collects command results: req → JSON.
fn subscribe_results(
    rt: &tokio::runtime::Runtime,
    port: u16,
) -> Arc<Mutex<HashMap<String, serde_json::Value>>> {
    let results: Arc<Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
    let r = results.clone();
    spawn_subscriber(
        rt,
        port,
        "results",
        "v6iot/t/+/cmd/+/result",
        true,
        move |_, payload| {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let req = v["req"].as_str().unwrap().to_owned();
            r.lock().unwrap().insert(req, v);
        },
    );
    results
}

#[test]
fn commands_round_trip_to_always_on_and_queue_mode_devices() {
    let dir = TempDir::new("cmd");
    let broker = Mosquitto::start(dir.path());
    let edge = Edge::start(dir.path(), broker.port, "queue_listen_window_s = 1", "");
    let rt = runtime();
    let results = subscribe_results(&rt, broker.port);
    let always = start_valve(
        &rt,
        edge.coap,
        "v-always",
        v6iot_sdk::uplink::Binding::U,
        Duration::from_millis(500),
    );
    let sleepy = start_valve(
        &rt,
        edge.coap,
        "v-sleepy",
        v6iot_sdk::uplink::Binding::UQ,
        Duration::from_millis(2500),
    );
    edge.await_log("endpoint: \"v-always\"", Duration::from_secs(10));
    edge.await_log("endpoint: \"v-sleepy\"", Duration::from_secs(10));

    // Always-on: the command runs at once.
    mosquitto_pub(
        broker.port,
        "v6iot/t/v-always/cmd/c1",
        r#"{"method":"PUT","path":"/valve","payload":"on","content_format":0}"#,
    );
    wait_for("result of c1", Duration::from_secs(10), || {
        results.lock().unwrap().contains_key("c1")
    });
    let r = results.lock().unwrap()["c1"].clone();
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str()),
        (Some("ok"), Some("2.04")),
        "{r}"
    );
    assert!(
        always
            .lock()
            .unwrap()
            .iter()
            .any(|(what, _)| *what == "put")
    );

    // Queue mode: the command waits for the device's next uplink, then runs in its window.
    // Publish when the device's 1 s listening window after its last report has closed and its
    // next report (every 2.5 s) is still ahead.
    wait_for(
        "the sleepy device's window to close",
        Duration::from_secs(10),
        || {
            let last = sleepy
                .lock()
                .unwrap()
                .iter()
                .filter(|(w, _)| *w == "report")
                .map(|(_, t)| *t)
                .max();
            last.is_some_and(|t| {
                (Duration::from_millis(1200)..Duration::from_millis(1900)).contains(&t.elapsed())
            })
        },
    );
    let sent = Instant::now();
    mosquitto_pub(
        broker.port,
        "v6iot/t/v-sleepy/cmd/c2",
        r#"{"method":"PUT","path":"/valve","payload":"on","ttl":30}"#,
    );
    wait_for("result of c2", Duration::from_secs(15), || {
        results.lock().unwrap().contains_key("c2")
    });
    let r = results.lock().unwrap()["c2"].clone();
    assert_eq!(r["status"], "ok", "{r}");
    let log = sleepy.lock().unwrap().clone();
    let put = log
        .iter()
        .find(|(what, _)| *what == "put")
        .expect("the valve was switched")
        .1;
    let report_before = log
        .iter()
        .filter(|(what, t)| *what == "report" && *t <= put)
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    assert!(
        report_before >= sent,
        "the command went out only after an uplink that followed it"
    );
    assert!(
        put - report_before < Duration::from_secs(1),
        "inside the listening window"
    );

    // Unknown device and malformed command: clear error results, nothing else happens.
    mosquitto_pub(
        broker.port,
        "v6iot/t/nobody/cmd/c3",
        r#"{"method":"GET","path":"/valve"}"#,
    );
    mosquitto_pub(broker.port, "v6iot/t/v-always/cmd/c4", "{not json");
    wait_for("results of c3 and c4", Duration::from_secs(10), || {
        let r = results.lock().unwrap();
        r.contains_key("c3") && r.contains_key("c4")
    });
    let r = results.lock().unwrap();
    assert_eq!(r["c3"]["status"], "rejected");
    assert_eq!(r["c4"]["status"], "rejected");
}

// ----- TLS to the broker -----

use v6iot_testkit::certs::make_certs;

/// The edge router reaches the broker over mutual TLS with a pinned CA; with the wrong CA it
/// publishes nothing (and says why), while devices are still acknowledged into the outbox.
#[test]
fn mutual_tls_to_the_broker_and_a_wrong_ca_is_refused() {
    let dir = TempDir::new("tls");
    let certs = make_certs(dir.path());
    let tls_port = free_tcp_port();
    let extra = format!(
        "listener {tls_port} ::1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let broker = Mosquitto::start_with(dir.path(), &extra);
    let rt = runtime();
    let seen = subscribe(&rt, broker.port); // the test's own subscriber uses the plain listener
    let tls = |ca: &Path| {
        format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nserver_name = \"localhost\"\n",
            ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        )
    };
    // Wrong CA first: the handshake fails, nothing reaches the broker.
    let bad_dir = TempDir::new("tls-bad");
    let bad = Edge::start_url(
        bad_dir.path(),
        &format!("mqtts://[::1]:{tls_port}"),
        &tls(&certs.other_ca),
    );
    bad.await_log("UnknownIssuer", Duration::from_secs(15));
    drop(bad);
    assert!(
        seen.lock().unwrap().status.is_empty(),
        "nothing was published with the wrong CA"
    );

    let edge = Edge::start_url(
        dir.path(),
        &format!("mqtts://[::1]:{tls_port}"),
        &tls(&certs.ca),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 5, 20, Duration::from_millis(10), stop_rx);
    wait_for(
        "100 deliveries over mutual TLS",
        Duration::from_secs(30),
        || seen.lock().unwrap().records.len() >= 100,
    );
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    let seen = seen.lock().unwrap();
    assert!(acked.iter().all(|k| seen.records.contains_key(k)));
}

// ----- WebSocket sink -----

/// A WebSocket server (tokio-tungstenite) that keeps every text message it receives.
fn websocket_server(rt: &tokio::runtime::Runtime) -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    use futures_util::StreamExt;
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("[::1]:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let g = got.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                        for line in text.lines() {
                            g.lock().unwrap().push(serde_json::from_str(line).unwrap());
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

#[test]
fn records_also_reach_a_websocket_server_as_json_lines() {
    let dir = TempDir::new("ws");
    let broker = Mosquitto::start(dir.path());
    let rt = runtime();
    let (ws_port, got) = websocket_server(&rt);
    let edge = Edge::start(
        dir.path(),
        broker.port,
        "",
        &format!("[websocket]\nurl = \"ws://[::1]:{ws_port}/ingest\"\n"),
    );
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 10, 20, Duration::from_millis(10), stop_rx);
    wait_for("200 records at the broker", Duration::from_secs(30), || {
        seen.lock().unwrap().records.len() >= 200
    });
    let telemetry = |got: &Vec<serde_json::Value>| {
        got.iter()
            .filter(|r| r["topic"].as_str().unwrap().ends_with("/telemetry"))
            .count()
    };
    wait_for(
        "200 records at the WebSocket server",
        Duration::from_secs(30),
        || telemetry(&got.lock().unwrap()) >= 200,
    );
    let results = stop_devices(&rt, &stop_tx, tasks);
    assert!(acknowledged(&results).len() >= 190);
    let got = got.lock().unwrap();
    let r = got
        .iter()
        .find(|r| r["topic"] == "v6iot/t/dev003/telemetry")
        .unwrap();
    assert!(
        r["id"].as_u64().is_some(),
        "each line carries the outbox id: {r}"
    );
    assert_eq!(
        r["payload"][0]["n"], "urn:dev:e2e:dev003:flow",
        "the same resolved SenML as on MQTT: {r}"
    );
    let mut keys: Vec<(String, u64)> = got
        .iter()
        .filter(|r| r["topic"].as_str().unwrap().ends_with("/telemetry"))
        .map(|r| {
            let dev = r["topic"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(2)
                .unwrap()
                .to_owned();
            let seq = r["payload"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["n"].as_str().unwrap().ends_with(":seq"))
                .unwrap()["v"]
                .as_f64()
                .unwrap() as u64;
            (dev, seq)
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 200, "every record once at the WebSocket server");
}
