//! Operating the edge through the real binary: `/metrics` scraped and parsed with a
//! Prometheus text-format parser (`prometheus-parse`) during a run, its counters equal to what
//! the test sent and what was refused; bad HTTP and WebSocket input closed and counted; a
//! listener that cannot bind fails the start naming the address; SIGTERM with the broker up
//! (everything acknowledged is at the broker, exit 0) and down (kept in the outbox, published
//! after the next start); SIGHUP applies new limits and names what needs a restart.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// A parsed scrape.
pub(crate) struct Scraped(prometheus_parse::Scrape);

impl Scraped {
    /// The sample of `name` (or `name_total`) with these labels; 0 when absent.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let total = format!("{name}_total");
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name || s.metric == total)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .sum()
    }
}

/// One HTTP exchange with the listener: (status line, headers and body).
fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// Scrapes `/metrics` and parses it as Prometheus does.
pub(crate) fn scrape(addr: SocketAddr) -> Scraped {
    let (head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: edge\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Scraped(prometheus_parse::Scrape::parse(lines).unwrap())
}

fn coap_get(path: &str, mid: u16) -> Vec<u8> {
    let mut p = coap_lite::Packet::new();
    p.header.set_type(coap_lite::MessageType::Confirmable);
    p.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Get);
    p.header.message_id = mid;
    p.add_option(coap_lite::CoapOption::UriPath, path.as_bytes().to_vec());
    p.to_bytes().unwrap()
}

const TOKEN: &str = "metrics-test-token-42";
const MQTT_PASSWORD: &str = "mqtt-password-never-logged";

#[test]
fn metrics_count_what_was_sent_and_refused() {
    let dir = TempDir::new("metrics");
    let broker = Mosquitto::start(dir.path());
    let ops_port = free_tcp_port();
    let ops: SocketAddr = format!("[::1]:{ops_port}").parse().unwrap();
    let edge = Edge::configured(
        dir.path(),
        &format!("mqtt://[::1]:{}", broker.port),
        "",
        &format!(
            "username = \"edge\"\npassword = \"{MQTT_PASSWORD}\"\nallow_plain_password = true\n"
        ),
        &format!("[ops]\nlisten = \"{ops}\"\ndashboard_token = \"{TOKEN}\"\n"),
    );
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 4, 10, Duration::from_millis(20), stop_rx);
    wait_for("40 deliveries", Duration::from_secs(30), || {
        seen.lock().unwrap().records.len() >= 40
    });
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results).len() as f64;
    assert_eq!(acked, 40.0);
    // refused: three requests for a resource that does not exist, two datagrams that are not CoAP
    let sock = StdUdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    for mid in 1..=3 {
        sock.send_to(&coap_get("nope", mid), edge.coap).unwrap();
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(buf[1], 0x84, "4.04 ({n} bytes)");
    }
    sock.send_to(b"\x00", edge.coap).unwrap();
    sock.send_to(b"\xff\xff", edge.coap).unwrap();

    let mut m = scrape(ops);
    wait_for("the counters", Duration::from_secs(10), || {
        m = scrape(ops);
        m.value("v6iot_coap_ingress_datagrams", &[("outcome", "malformed")]) == 2.0
            && m.value(
                "v6iot_coap_requests",
                &[("path", "other"), ("code", "4.04")],
            ) == 3.0
            && m.value("v6iot_outbox_records", &[]) == 0.0
    });
    assert_eq!(
        m.value("v6iot_telemetry_records", &[("outcome", "stored")]),
        acked
    );
    assert_eq!(
        m.value("v6iot_coap_requests", &[("path", "t"), ("code", "2.04")]),
        acked
    );
    assert_eq!(
        m.value("v6iot_coap_requests", &[("path", "rd"), ("code", "2.01")]),
        4.0
    );
    assert_eq!(m.value("v6iot_registrations", &[("binding", "U")]), 4.0);
    assert_eq!(m.value("v6iot_registrations", &[("binding", "UQ")]), 0.0);
    assert_eq!(m.value("v6iot_mqtt_connected", &[]), 1.0);
    // every record and each device's status message, acknowledged by the broker
    assert!(m.value("v6iot_mqtt_acks", &[]) >= acked + 4.0);
    assert!(m.value("v6iot_mqtt_publish_duration_seconds", &[]) >= acked);
    assert!(m.value("v6iot_outbox_sync_duration_seconds", &[]) >= 1.0);
    let received = m.value("v6iot_coap_datagrams_received", &[("transport", "udp")]);
    assert!(received >= acked + 4.0 + 5.0, "{received}");
    assert_eq!(m.value("v6iot_auth_refusals", &[("cause", "plain")]), 0.0);
    assert_eq!(m.value("v6iot_edge_stopping", &[]), 0.0);
    for s in &m.0.samples {
        for v in s.labels.values() {
            assert!(
                !v.contains("dev0"),
                "a device id as a label: {} {v}",
                s.metric
            );
        }
    }
    // OpenMetrics on request
    let (head, body) = http(
        ops,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));

    // bad HTTP: closed with an answer, counted
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    let (h431, _) = http(ops, big.as_bytes());
    assert!(h431.starts_with("HTTP/1.1 431"), "{h431:?}");
    assert!(
        http(ops, b"\x16\x03\x01\x02\x00junk\r\n\r\n")
            .0
            .starts_with("HTTP/1.1 400")
    );
    assert!(
        http(
            ops,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        )
        .0
        .starts_with("HTTP/1.1 413")
    );
    assert!(
        http(ops, b"GET /nothing HTTP/1.1\r\n\r\n")
            .0
            .starts_with("HTTP/1.1 404")
    );
    // the page is served with its security headers, without the token
    let (head, body) = http(ops, b"GET / HTTP/1.1\r\n\r\n");
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains("/app.js"));

    // the feed: a wrong token, a binary frame, an oversized message: each closed and counted
    rt.block_on(async {
        let wrong = feed(ops, "wrong-token-wrong-token").await;
        assert_eq!(wrong, vec![r#"{"type":"refused"}"#.to_owned()]);
        let mut ws = open_feed(ops).await;
        ws.send(Message::text(format!(
            r#"{{"type":"auth","token":"{TOKEN}"}}"#
        )))
        .await
        .unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert!(first.to_text().unwrap().contains(r#""type":"update""#));
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert!(closed(&mut ws).await, "a binary frame closes the feed");
        let mut ws = open_feed(ops).await;
        ws.send(Message::text(format!(
            r#"{{"type":"auth","token":"{TOKEN}"}}"#
        )))
        .await
        .unwrap();
        ws.send(Message::text("x".repeat(10_000))).await.unwrap();
        assert!(
            closed(&mut ws).await,
            "an oversized message closes the feed"
        );
    });
    let m = scrape(ops);
    assert_eq!(
        m.value("v6iot_http_requests", &[("outcome", "oversized")]),
        1.0
    );
    assert_eq!(
        m.value("v6iot_http_requests", &[("outcome", "malformed")]),
        2.0
    );
    assert_eq!(
        m.value("v6iot_http_requests", &[("outcome", "not_found")]),
        1.0
    );
    assert_eq!(
        m.value("v6iot_dashboard_feed_refusals", &[("cause", "token")]),
        1.0
    );
    assert_eq!(
        m.value("v6iot_dashboard_feed_refusals", &[("cause", "bad_frame")]),
        2.0
    );
    // the edge is still serving
    assert!(m.value("v6iot_http_requests", &[("outcome", "metrics")]) >= 3.0);
    let log = edge.log.lock().unwrap().join("\n");
    assert!(log.contains("metrics on http://"), "the log was kept");
    assert!(
        !log.contains(MQTT_PASSWORD) && !log.contains(TOKEN),
        "a secret in the log"
    );
}

async fn open_feed(ops: SocketAddr) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(ops).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{ops}/ws"), stream)
        .await
        .unwrap();
    ws
}

/// Opens the feed with `token`; the text messages until it closes.
async fn feed(ops: SocketAddr, token: &str) -> Vec<String> {
    let mut ws = open_feed(ops).await;
    ws.send(Message::text(format!(
        r#"{{"type":"auth","token":"{token}"}}"#
    )))
    .await
    .unwrap();
    // bounded: at most 10 s and 20 messages (a feed that wrongly accepts sends one a second)
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while texts.len() < 20 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
    texts
}

/// Whether the server closes the feed within 10 s (updates before the close are skipped).
async fn closed(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[test]
fn a_listener_that_cannot_bind_fails_the_start_naming_the_address() {
    let dir = TempDir::new("ops-bind");
    let taken = TcpListener::bind("[::1]:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let conf = dir.path().join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"t\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:0\"\n[security]\nrequire_oscore = false\n[ops]\nlisten = \"{addr}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .args(["run", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot bind the metrics/dashboard listener on {addr}"
        )),
        "{err}"
    );
}

/// Sends `signal` to the edge's process.
fn signal(edge: &Edge, signal: &str) {
    let pid = edge.child.as_ref().unwrap().id();
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits (bounded) for the edge to exit; its status.
fn exit_status(edge: &mut Edge, limit: Duration) -> std::process::ExitStatus {
    let child = edge.child.as_mut().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            edge.child = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the edge did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_the_broker_up_flushes_everything_and_exits_0() {
    let dir = TempDir::new("stop-up");
    let broker = Mosquitto::start(dir.path());
    let mut edge = Edge::start(dir.path(), broker.port, "", "[ops]\nstop_flush_s = 10\n");
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 8, 1_000, Duration::from_millis(5), stop_rx);
    wait_for("deliveries under way", Duration::from_secs(30), || {
        seen.lock().unwrap().records.len() >= 200
    });
    signal(&edge, "TERM");
    let status = exit_status(&mut edge, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    assert!(acked.len() >= 200, "{}", acked.len());
    // while stopping, new reports were answered 5.03 (busy), not lost
    wait_for(
        "every acknowledged record at the broker",
        Duration::from_secs(10),
        || {
            let seen = seen.lock().unwrap();
            acked.iter().all(|k| seen.records.contains_key(k))
        },
    );
    edge.await_log("the outbox is flushed", Duration::from_secs(1));
    edge.await_log("stopping: new requests get 5.03", Duration::from_secs(1));
}

#[test]
fn sigterm_with_the_broker_down_keeps_the_records_for_the_next_start() {
    let dir = TempDir::new("stop-down");
    let mut broker = Mosquitto::start(dir.path());
    let ops: SocketAddr = format!("[::1]:{}", free_tcp_port()).parse().unwrap();
    let mut edge = Edge::start(
        dir.path(),
        broker.port,
        "",
        &format!("[ops]\nstop_flush_s = 2\nlisten = \"{ops}\"\n"),
    );
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    broker.stop();
    edge.await_log("ConnectFailed", Duration::from_secs(15));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_devices(&rt, edge.coap, 5, 10, Duration::from_millis(20), stop_rx);
    // the devices stop reporting after 10 each; the edge stores them all in the outbox
    wait_for("50 records stored", Duration::from_secs(30), || {
        scrape(ops).value("v6iot_telemetry_records", &[("outcome", "stored")]) == 50.0
    });
    let results = stop_devices(&rt, &stop_tx, tasks);
    let acked = acknowledged(&results);
    assert_eq!(
        acked.len(),
        50,
        "stored in the outbox while the broker is down"
    );
    let started = Instant::now();
    signal(&edge, "TERM");
    let status = exit_status(&mut edge, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the flush deadline bounds the stop"
    );
    edge.await_log("they stay in the outbox", Duration::from_secs(1));
    assert!(seen.lock().unwrap().records.is_empty());
    broker.restart();
    edge.restart();
    wait_for(
        "every stored record after the next start",
        Duration::from_secs(30),
        || {
            let seen = seen.lock().unwrap();
            acked.iter().all(|k| seen.records.contains_key(k))
        },
    );
}

#[test]
fn sighup_applies_new_limits_and_names_what_needs_a_restart() {
    let dir = TempDir::new("reload");
    let broker = Mosquitto::start(dir.path());
    let edge = Edge::start(dir.path(), broker.port, "", "");
    let conf = dir.path().join("edge.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replace(
        "require_oscore = false",
        "require_oscore = false\nrate_per_device = 7",
    );
    let text = text.replace("[coap]\n", "[coap]\nmax_body = 1000\n");
    std::fs::write(&conf, format!("{text}\n[log]\nlevel = \"debug\"\n")).unwrap();
    signal(&edge, "HUP");
    edge.await_log("reload: new rate limits", Duration::from_secs(10));
    edge.await_log("take effect only after a restart", Duration::from_secs(10));
    let log = edge.log.lock().unwrap().join("\n");
    let line = log
        .lines()
        .find(|l| l.contains("only after a restart"))
        .unwrap();
    assert!(
        line.contains("coap") && !line.contains("security"),
        "{line}"
    );
    // RUST_LOG is set by the harness: the levels stay as it says
    assert!(log.contains("log levels come from RUST_LOG"), "{log}");
    // a file that no longer parses is refused; the edge goes on
    std::fs::write(&conf, "site = \n").unwrap();
    signal(&edge, "HUP");
    edge.await_log("reload refused", Duration::from_secs(10));
}

/// `--log-format json`: every line the edge writes is a JSON object; `[log]` levels per module
/// hold (`warn` overall, `info` for the ops module only; no `RUST_LOG`).
#[test]
fn json_logs_with_levels_per_module() {
    let dir = TempDir::new("json-log");
    let ops: SocketAddr = format!("[::1]:{}", free_tcp_port()).parse().unwrap();
    let conf = dir.path().join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"t\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:0\"\n[mqtt]\nurl = \"mqtt://[::1]:{}\"\n\
             [security]\nrequire_oscore = false\n[ops]\nlisten = \"{ops}\"\nstop_flush_s = 1\n\
             [log]\nlevel = \"warn\"\n[log.modules]\n\"v6iot_edge_router::server::ops\" = \"info\"\n",
            dir.path().join("data").display(),
            free_tcp_port()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the metrics listener", Duration::from_secs(20), || {
        TcpStream::connect(ops).is_ok()
    });
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let by = |target: &str, level: &str| {
        lines
            .iter()
            .filter(|l| l["target"] == target && l["level"] == level)
            .count()
    };
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "v6iot_edge_router::server::ops"
                && l["level"] == "INFO"
                && l["message"]
                    .as_str()
                    .unwrap()
                    .contains("metrics on http://")),
        "{text}"
    );
    assert!(
        by("v6iot_edge_router::server", "WARN") >= 1,
        "warnings still show: {text}"
    );
    assert_eq!(by("v6iot_edge_router::server", "INFO"), 0, "{text}");
    assert!(!text.contains("edge router running"), "{text}");
}
