//! The WebSocket sink against a tokio-tungstenite server started by the test: JSON records,
//! `wss://` with the pinned CA, reconnection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use v6iot_cloud_bridge::message::OutboundMessage;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, WsConfig, run_websocket};

/// What the test server saw: one entry per connection, each a list of text frames.
type Frames = mpsc::UnboundedReceiver<(usize, String)>;

/// A WebSocket server: each accepted connection's text frames go to the channel, tagged with
/// the connection's number. Connection `close_after.0` is closed by the server after
/// `close_after.1` frames.
async fn server(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    close_after: Option<(usize, usize)>,
) -> Frames {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for conn in 0.. {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let limit = close_after.filter(|(c, _)| *c == conn).map(|(_, n)| n);
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        serve(stream, conn, limit, tx).await;
                    }
                    None => serve(tcp, conn, limit, tx).await,
                }
            });
        }
    });
    rx
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    conn: usize,
    limit: Option<usize>,
    tx: mpsc::UnboundedSender<(usize, String)>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut count = 0;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(text) = msg {
            let _ = tx.send((conn, text.to_string()));
            count += 1;
            if Some(count) == limit {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

struct Sink {
    outgoing: mpsc::Sender<OutboundMessage>,
    acks: mpsc::UnboundedReceiver<u64>,
    events: mpsc::UnboundedReceiver<BridgeEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), v6iot_cloud_bridge::BridgeError>>,
}

fn start(config: WsConfig) -> Sink {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_websocket(
        config,
        out_rx,
        ack_tx,
        Some(ev_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    Sink {
        outgoing: out_tx,
        acks: ack_rx,
        events: ev_rx,
        stop: Some(stop_tx),
        task,
    }
}

impl Sink {
    async fn event(&mut self, pred: impl Fn(&BridgeEvent) -> bool) -> BridgeEvent {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let ev = self.events.recv().await.expect("sink running");
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("event within 10 s")
    }

    async fn acks(&mut self, n: usize) -> Vec<u64> {
        let mut acked = Vec::new();
        while acked.len() < n {
            let id = tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
                .await
                .expect("acks within 10 s")
                .unwrap();
            acked.push(id);
        }
        acked
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Half the messages carry SenML JSON, half binary bytes.
fn ws_message(topics: &Topics, id: u64) -> OutboundMessage {
    let mut m = message(topics, id);
    if id.is_multiple_of(2) {
        m.payload =
            format!(r#"[{{"bn":"urn:dev:v6iot:d{id}:","n":"temperature","u":"Cel","v":{id}.25}}]"#)
                .into_bytes();
    }
    m
}

fn check_record(text: &str, topics: &Topics) -> u64 {
    assert!(!text.contains('\n'), "one line per record");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let id = v["id"].as_u64().unwrap();
    assert_eq!(v["topic"], topics.telemetry(&format!("dev-{}", id % 7)));
    if id.is_multiple_of(2) {
        assert_eq!(
            v["payload"][0]["v"].as_f64(),
            Some(id as f64 + 0.25),
            "{text}"
        );
        assert!(v.get("encoding").is_none());
    } else {
        use base64::Engine;
        assert_eq!(v["encoding"], "base64");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, payload(id));
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_as_json_text_and_are_acked_once() {
    init_tracing();
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = server(listener, None, None).await;
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let mut sink = start(WsConfig::new(&format!("ws://[::1]:{port}/ingest")));
    let BridgeEvent::Connected { addr } = sink
        .event(|e| matches!(e, BridgeEvent::Connected { .. }))
        .await
    else {
        unreachable!()
    };
    assert!(addr.is_ipv6());
    let tx = sink.outgoing.clone();
    let t = topics.clone();
    tokio::spawn(async move {
        for id in 1..=300 {
            tx.send(ws_message(&t, id)).await.unwrap();
        }
    });
    let mut ids = Vec::new();
    while ids.len() < 300 {
        let (_, text) = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .unwrap()
            .unwrap();
        ids.push(check_record(&text, &topics));
    }
    assert_eq!(ids, (1..=300).collect::<Vec<_>>(), "in order, each once");
    let mut acked = sink.acks(300).await;
    sink.stop().await;
    acked.sort_unstable();
    assert_eq!(acked, (1..=300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_when_the_server_closes() {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = server(listener, None, Some((0, 10))).await;
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let mut config = WsConfig::new(&format!("ws://127.0.0.1:{port}"));
    config.reconnect_min = Duration::from_millis(50);
    let mut sink = start(config);
    for id in 1..=10 {
        sink.outgoing.send(ws_message(&topics, id)).await.unwrap();
    }
    sink.acks(10).await;
    sink.event(|e| matches!(e, BridgeEvent::Disconnected { .. }))
        .await;
    sink.event(|e| matches!(e, BridgeEvent::Connected { .. }))
        .await;
    for id in 11..=20 {
        sink.outgoing.send(ws_message(&topics, id)).await.unwrap();
    }
    sink.acks(10).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 20 {
        let (conn, text) = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .unwrap()
            .unwrap();
        let id = check_record(&text, &topics);
        assert_eq!(
            conn,
            usize::from(id > 10),
            "record {id} on connection {conn}"
        );
        seen.insert(id);
    }
    sink.stop().await;
}

fn tls_acceptor(certs: &Certs) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certs.server_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_pinned_ca() {
    init_tracing();
    let dir = TempDir::new("wss");
    let certs = make_certs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = server(listener, Some(tls_acceptor(&certs)), None).await;
    let topics = Topics::new("v6iot", "plant-a").unwrap();
    let mut config = WsConfig::new(&format!("wss://localhost:{port}/v1/records"));
    config.tls.ca_file = Some(certs.ca.clone());
    let mut sink = start(config);
    sink.event(|e| matches!(e, BridgeEvent::Connected { .. }))
        .await;
    for id in 1..=20 {
        sink.outgoing.send(ws_message(&topics, id)).await.unwrap();
    }
    for id in 1..=20 {
        let (_, text) = frames.recv().await.unwrap();
        assert_eq!(check_record(&text, &topics), id);
    }
    sink.acks(20).await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_wrong_ca_is_refused() {
    init_tracing();
    let dir = TempDir::new("wss-bad");
    let certs = make_certs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = server(listener, Some(tls_acceptor(&certs)), None).await;
    let mut config = WsConfig::new(&format!("wss://localhost:{port}/"));
    config.tls.ca_file = Some(certs.other_ca.clone());
    config.reconnect_min = Duration::from_millis(50);
    let mut sink = start(config);
    sink.outgoing
        .send(ws_message(&Topics::new("v6iot", "plant-a").unwrap(), 1))
        .await
        .unwrap();
    for _ in 0..2 {
        let BridgeEvent::ConnectFailed { reason } = sink
            .event(|e| {
                matches!(
                    e,
                    BridgeEvent::ConnectFailed { .. } | BridgeEvent::Connected { .. }
                )
            })
            .await
        else {
            panic!("connected with the wrong CA")
        };
        assert!(reason.contains("UnknownIssuer"), "{reason}");
    }
    assert!(frames.try_recv().is_err());
    assert!(sink.acks.try_recv().is_err());
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_given_up() {
    init_tracing();
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // a server that completes the handshake and then never reads (so never answers a ping)
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                held.push(ws);
            }
        }
    });
    let mut config = WsConfig::new(&format!("ws://[::1]:{port}"));
    let every = Duration::from_millis(100);
    config.ping_interval = every;
    // before the connection exists: the silence it measures starts after this
    let t0 = std::time::Instant::now();
    let mut sink = start(config);
    sink.event(|e| matches!(e, BridgeEvent::Connected { .. }))
        .await;
    let BridgeEvent::Disconnected { reason } = sink
        .event(|e| matches!(e, BridgeEvent::Disconnected { .. }))
        .await
    else {
        unreachable!()
    };
    let took = t0.elapsed();
    assert!(reason.contains("nothing heard"), "{reason}");
    // Not before two ping intervals of silence (a timer never fires early: holds on any
    // machine). The upper bound is generous because the machine may be busy: about three
    // intervals on a quiet one; what it tells apart is a peer given up by the ping check from
    // one never given up (or only by TCP, minutes later).
    assert!(took > 2 * every, "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    sink.stop().await;
}
