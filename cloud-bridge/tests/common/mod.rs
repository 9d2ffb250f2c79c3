//! Test helpers: a real mosquitto per test on the listeners a test asks for (the process itself,
//! free ports and temp dirs from `v6iot-testkit`), test certificates from rcgen, an independent
//! receiver (`mosquitto_sub`), and a bridge harness.
// Each test binary uses a part of it (re-exports included).
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use v6iot_cloud_bridge::message::OutboundMessage;
use v6iot_cloud_bridge::{BridgeError, BridgeEvent, Command as BridgeCommand, MqttConfig};

/// Logs of the bridge under test (RUST_LOG=debug cargo test … -- --nocapture).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub use v6iot_testkit::{TempDir, free_tcp_port_on_both as free_port, require_root};

pub const V4: &str = "127.0.0.1";
pub const V6: &str = "::1";

/// TLS settings of a mosquitto listener.
#[derive(Clone)]
pub struct TlsListener {
    pub certs: Certs,
    pub require_certificate: bool,
}

/// What one mosquitto listens on.
#[derive(Clone)]
pub struct BrokerSpec {
    /// Plain MQTT on these addresses, on `port`.
    pub plain: Vec<&'static str>,
    /// MQTT over TLS on these addresses, on `tls_port`.
    pub tls: Option<(Vec<&'static str>, TlsListener)>,
    /// The text of an ACL file (what anonymous clients may use), if any.
    pub acl: Option<&'static str>,
}

impl BrokerSpec {
    pub fn plain(addrs: &[&'static str]) -> Self {
        BrokerSpec {
            plain: addrs.to_vec(),
            tls: None,
            acl: None,
        }
    }
}

/// A mosquitto process on the listeners of a [`BrokerSpec`]; killed (SIGKILL) when dropped.
pub struct Mosquitto {
    broker: v6iot_testkit::Mosquitto,
    pub port: u16,
    pub tls_port: u16,
    spec: BrokerSpec,
}

impl Mosquitto {
    pub fn start(dir: &Path, spec: BrokerSpec) -> Mosquitto {
        let port = free_port();
        let tls_port = free_port();
        let mut text = format!(
            "persistence false\n{}max_inflight_messages 0\n\
             max_queued_messages 0\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\n",
            v6iot_testkit::mosquitto::BASE_CONFIG
        );
        if let Some(acl) = spec.acl {
            let path = dir.join("acl");
            std::fs::write(&path, acl).unwrap();
            writeln!(text, "acl_file {}", path.display()).unwrap();
        }
        for addr in &spec.plain {
            writeln!(text, "listener {port} {addr}").unwrap();
        }
        let mut listeners: Vec<SocketAddr> = spec
            .plain
            .iter()
            .map(|a| SocketAddr::new(a.parse().unwrap(), port))
            .collect();
        if let Some((addrs, tls)) = &spec.tls {
            for addr in addrs {
                writeln!(text, "listener {tls_port} {addr}").unwrap();
                writeln!(text, "cafile {}", tls.certs.ca.display()).unwrap();
                writeln!(text, "certfile {}", tls.certs.server_cert.display()).unwrap();
                writeln!(text, "keyfile {}", tls.certs.server_key.display()).unwrap();
                writeln!(text, "require_certificate {}", tls.require_certificate).unwrap();
                listeners.push(SocketAddr::new(addr.parse().unwrap(), tls_port));
            }
        }
        Mosquitto {
            broker: v6iot_testkit::Mosquitto::start(dir, &text, listeners),
            port,
            tls_port,
            spec,
        }
    }

    /// Starts it again (same ports, same configuration) after [`Mosquitto::kill`].
    pub fn restart(&mut self) {
        self.broker.restart();
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        self.broker.kill();
    }

    pub fn log_text(&self) -> String {
        self.broker.log_text()
    }

    /// The address for test clients (plain listener).
    pub fn host(&self) -> &'static str {
        self.spec.plain[0]
    }
}

pub use v6iot_testkit::certs::{Certs, make_certs};

/// `mosquitto_sub` as an independent receiver: every message as (topic, payload bytes).
pub struct Sub {
    child: tokio::process::Child,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Sub {
    /// Subscribes (QoS 1) to `filters` and returns once the subscription demonstrably works
    /// (a probe message published with mosquitto_pub came back).
    pub async fn start(host: &str, port: u16, filters: &[&str]) -> Sub {
        static N: AtomicU64 = AtomicU64::new(0);
        let probe = format!(
            "probe/{}/{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = tokio::process::Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-F",
            "%t %x",
        ]);
        for f in filters.iter().copied().chain([probe.as_str()]) {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub must be installed (Debian package mosquitto-clients)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let (topic, hex) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                if tx.send((topic.to_owned(), from_hex(hex))).is_err() {
                    return;
                }
            }
        });
        let mut sub = Sub { child, rx };
        for attempt in 0..50 {
            publish(host, port, &probe, &attempt.to_string(), false).await;
            let got = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some((topic, _)) = sub.rx.recv().await {
                    if topic == probe {
                        return true;
                    }
                }
                false
            })
            .await;
            if got == Ok(true) {
                // late copies of earlier probes are dropped by recv()
                return sub;
            }
        }
        panic!("mosquitto_sub never received its probe on {host}:{port}");
    }

    /// The next message that is not a probe, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(timeout, async {
            loop {
                let (topic, payload) = self.rx.recv().await?;
                if !topic.starts_with("probe/") {
                    return Some((topic, payload));
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// `mosquitto_pub` at QoS 1.
pub async fn publish(host: &str, port: u16, topic: &str, payload: &str, retain: bool) {
    let mut cmd = v6iot_testkit::mosquitto::pub_command(host, port, topic);
    cmd.args(["-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    let status = tokio::process::Command::from(cmd)
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub to {host}:{port} failed");
}

/// The retained message on `topic`, if any (mosquitto_sub -C 1 with a short timeout).
pub async fn retained(host: &str, port: u16, topic: &str) -> Option<String> {
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "1",
            "-F",
            "%p",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Polls the retained message on `topic` until it contains `needle` (at most `within`).
pub async fn await_retained(
    host: &str,
    port: u16,
    topic: &str,
    needle: &str,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = retained(host, port, topic).await;
        if let Some(text) = &got
            && text.contains(needle)
        {
            return text.clone();
        }
        assert!(
            Instant::now() < deadline,
            "retained {topic} never contained {needle}: last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A deterministic, partly binary payload for message `id`.
pub fn payload(id: u64) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend((0..(id % 97)).map(|i| (i * 31 + id) as u8));
    p
}

pub fn message(topics: &v6iot_cloud_bridge::topics::Topics, id: u64) -> OutboundMessage {
    OutboundMessage {
        id,
        topic: topics.telemetry(&format!("dev-{}", id % 7)),
        payload: payload(id),
        retain: false,
    }
}

/// A running `run_mqtt` with its channels.
pub struct Bridge {
    pub outgoing: mpsc::Sender<OutboundMessage>,
    pub acks: mpsc::UnboundedReceiver<u64>,
    pub commands: mpsc::Receiver<BridgeCommand>,
    pub events: mpsc::UnboundedReceiver<BridgeEvent>,
    pub stats: std::sync::Arc<v6iot_cloud_bridge::BridgeStats>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), BridgeError>>>,
}

impl Bridge {
    pub fn start(config: MqttConfig, command_capacity: usize) -> Bridge {
        let (out_tx, out_rx) = mpsc::channel(256);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::channel(command_capacity);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stats = config.stats.clone();
        let task = tokio::spawn(v6iot_cloud_bridge::run_mqtt(
            config,
            out_rx,
            ack_tx,
            cmd_tx,
            Some(ev_tx),
            async move {
                let _ = stop_rx.await;
            },
        ));
        Bridge {
            outgoing: out_tx,
            acks: ack_rx,
            commands: cmd_rx,
            events: ev_rx,
            stats,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The next event matching `pred` (others are dropped), within `within`.
    pub async fn event(
        &mut self,
        within: Duration,
        pred: impl Fn(&BridgeEvent) -> bool,
    ) -> BridgeEvent {
        let found = tokio::time::timeout(within, async {
            while let Some(ev) = self.events.recv().await {
                if pred(&ev) {
                    return Some(ev);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("the bridge stopped"),
            Err(_) => panic!("no matching event within {within:?}"),
        }
    }

    pub async fn connected(&mut self) -> SocketAddr {
        match self
            .event(Duration::from_secs(10), |e| {
                matches!(e, BridgeEvent::Connected { .. })
            })
            .await
        {
            BridgeEvent::Connected { addr } => addr,
            _ => unreachable!(),
        }
    }

    /// Clean shutdown; the task's result.
    pub async fn stop(&mut self) -> Result<(), BridgeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the bridge stops within 10 s")
            .unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
