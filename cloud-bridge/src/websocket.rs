//! The WebSocket sink: the same outbox messages as MQTT, to a `ws://` or `wss://` endpoint, one
//! JSON text message per record:
//!
//! ```json
//! {"id":42,"topic":"v6iot/plant-a/s1/telemetry","payload":[{"n":"temperature","v":21.5}]}
//! {"id":43,"topic":"v6iot/plant-a/s2/telemetry","payload":"AAEC","encoding":"base64"}
//! ```
//!
//! A payload that is JSON is embedded as it is; any other payload is a base64 string, marked
//! `"encoding":"base64"`. Ids are acknowledged once the frames are flushed to the socket (the
//! WebSocket protocol has no application acknowledgement); a batch that fails is sent again after
//! the reconnection, so delivery is at-least-once. The connection is the bridge's own: Happy
//! Eyeballs TCP, then rustls with the same [`TlsOptions`] as MQTT for `wss://`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backoff::Backoff;
use crate::endpoint::Endpoint;
use crate::event::{BridgeError, BridgeEvent, BridgeStats, Counter, Events};
use crate::happy_eyeballs::CONNECTION_ATTEMPT_DELAY;
use crate::message::OutboundMessage;
use crate::tls::TlsOptions;
use crate::transport::{ConnectError, Connector};

/// Everything [`run_websocket`] needs to know.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// `ws://host:port/path` or `wss://host:port/path`.
    pub url: String,
    /// For `wss://`: the CA to trust (and only it), a client certificate for mutual TLS, the
    /// name to verify.
    pub tls: TlsOptions,
    /// First reconnection delay (jittered, doubling).
    pub reconnect_min: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// Limit for resolving, TCP, TLS and the WebSocket handshake, each connection.
    pub connect_timeout: Duration,
    /// Happy Eyeballs' Connection Attempt Delay.
    pub attempt_delay: Duration,
    /// At most this many records per flush (at least 1).
    pub max_batch: usize,
    /// A Ping every this often; a connection that sends nothing (not even a Pong) for two
    /// intervals is given up. Zero: no pings.
    pub ping_interval: Duration,
    /// Longest time one batch (or ping) may take to be written and flushed.
    pub send_timeout: Duration,
    /// Counters, shared with the caller.
    pub stats: Arc<BridgeStats>,
}

impl WsConfig {
    /// Defaults: reconnect 0.5 s … 30 s, connect timeout 10 s, batches of 64, a ping every
    /// 20 s, 30 s to send a batch.
    pub fn new(url: &str) -> Self {
        WsConfig {
            url: url.to_owned(),
            tls: TlsOptions::default(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            attempt_delay: CONNECTION_ATTEMPT_DELAY,
            max_batch: 64,
            ping_interval: Duration::from_secs(20),
            send_timeout: Duration::from_secs(30),
            stats: Arc::default(),
        }
    }

    fn validate(&self) -> Result<Endpoint, BridgeError> {
        let endpoint = Endpoint::parse(&self.url)?;
        if !endpoint.scheme.is_websocket() {
            return Err(BridgeError::Config(
                "the WebSocket url must be ws:// or wss://".into(),
            ));
        }
        Ok(endpoint)
    }
}

/// One record as sent: `payload` is the message's JSON text, or base64 with `encoding`.
#[derive(serde::Serialize)]
struct Record<'a, P: serde::Serialize> {
    id: u64,
    topic: &'a str,
    payload: P,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

/// The JSON text of one record.
pub fn record_json(m: &OutboundMessage) -> String {
    use serde_json::value::RawValue;
    let json = match serde_json::from_slice::<&RawValue>(&m.payload) {
        // Embedded exactly as it came, unless it spans lines.
        Ok(raw) if !raw.get().contains(['\n', '\r']) => serde_json::to_string(&Record {
            id: m.id,
            topic: &m.topic,
            payload: raw,
            encoding: None,
        }),
        Ok(_) => serde_json::from_slice::<serde_json::Value>(&m.payload).and_then(|value| {
            serde_json::to_string(&Record {
                id: m.id,
                topic: &m.topic,
                payload: value,
                encoding: None,
            })
        }),
        Err(e) => Err(e),
    };
    json.unwrap_or_else(|_| {
        serde_json::json!({
            "id": m.id,
            "topic": m.topic,
            "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
            "encoding": "base64",
        })
        .to_string()
    })
}

/// Runs the WebSocket sink until `shutdown` completes: connects (Happy Eyeballs, TLS for
/// `wss://`), sends each message from `outgoing` as [`record_json`], acknowledges the ids on
/// `acks` after each flush, and reconnects forever with jittered exponential back-off.
pub async fn run_websocket(
    config: WsConfig,
    mut outgoing: mpsc::Receiver<OutboundMessage>,
    acks: mpsc::UnboundedSender<u64>,
    events: Option<mpsc::UnboundedSender<BridgeEvent>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BridgeError> {
    let endpoint = config.validate()?;
    let connector = Connector::new(
        endpoint,
        &config.tls,
        config.attempt_delay,
        config.connect_timeout,
    )?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut session = Session {
        stats: Arc::clone(&config.stats),
        events: Events::new(events),
        acks,
        max_batch: config.max_batch.max(1),
        pending: VecDeque::new(),
        resend: 0,
        outgoing_closed: false,
    };
    loop {
        let connected = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(()),
            connected = connect(&connector, &config) => connected,
        };
        let delay = match connected {
            Err(e) => session.connect_failed(&e, backoff.next_delay()),
            Ok((ws, addr)) => {
                backoff.reset();
                session.connected(addr, &config.url);
                match session
                    .serve(ws, &config, &mut outgoing, &mut shutdown)
                    .await
                {
                    None => return Ok(()),
                    Some(lost) => session.lost(&lost, backoff.next_delay()),
                }
            }
        };
        if sleep_or_shutdown(delay, &mut shutdown).await {
            return Ok(());
        }
    }
}

/// The sink's state across connections.
struct Session {
    stats: Arc<BridgeStats>,
    events: Events,
    acks: mpsc::UnboundedSender<u64>,
    max_batch: usize,
    /// Received and not yet acknowledged (not sent, or sent on a connection that failed).
    pending: VecDeque<OutboundMessage>,
    /// How many of `pending` were sent on a connection that failed (republished when sent).
    resend: usize,
    /// `outgoing` has ended: nothing more comes.
    outgoing_closed: bool,
}

/// The sending half of a connection.
type WsSink = futures_util::stream::SplitSink<Ws, Message>;

impl Session {
    /// A connection attempt failed: logged, counted, reported; returns `delay`.
    fn connect_failed(&self, e: &WsConnectError, delay: Duration) -> Duration {
        let reason = e.to_string();
        tracing::warn!(%reason, retry_in = ?delay, "WebSocket connection attempt failed");
        self.stats.inc(Counter::ConnectFailures);
        self.events.emit(BridgeEvent::ConnectFailed { reason });
        delay
    }

    /// A connection is up: logged, counted, reported (and what it sends again).
    fn connected(&self, addr: std::net::SocketAddr, url: &str) {
        tracing::info!(%addr, %url, "WebSocket connected");
        self.stats.inc(Counter::Connects);
        self.events.emit(BridgeEvent::Connected { addr });
        if self.resend > 0 {
            self.events
                .emit(BridgeEvent::Republishing { count: self.resend });
        }
    }

    /// A connection was lost: what it had not acknowledged is sent again on the next one;
    /// logged, counted, reported; returns `delay`.
    fn lost(&mut self, lost: &WsLost, delay: Duration) -> Duration {
        self.resend = self.pending.len();
        let reason = lost.to_string();
        tracing::warn!(%reason, retry_in = ?delay, unacked = self.resend, "WebSocket connection lost");
        self.stats.inc(Counter::Disconnects);
        self.events.emit(BridgeEvent::Disconnected { reason });
        delay
    }

    /// Serves one connection: sends what is pending in batches, takes new messages, answers
    /// the peer's silence with pings. `None` at the shutdown (the connection closed), else why
    /// the connection was lost.
    async fn serve<F: Future<Output = ()>>(
        &mut self,
        ws: Ws,
        config: &WsConfig,
        outgoing: &mut mpsc::Receiver<OutboundMessage>,
        shutdown: &mut Pin<&mut F>,
    ) -> Option<WsLost> {
        let (mut sink, mut source) = ws.split();
        let send_timeout = config.send_timeout.max(Duration::from_millis(100));
        let ping_every = (!config.ping_interval.is_zero()).then_some(config.ping_interval);
        let mut ping = tokio::time::interval(config.ping_interval.max(Duration::from_millis(10)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut last_heard = tokio::time::Instant::now();
        loop {
            if !self.pending.is_empty() {
                if let Err(lost) = self.send_batch(&mut sink, send_timeout).await {
                    return Some(lost);
                }
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    tracing::info!("WebSocket sink stopped");
                    return None;
                }
                frame = source.next() => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        None => return Some(WsLost::Eof),
                        Some(Err(e)) => return Some(WsLost::Receive(Box::new(e))),
                        Some(Ok(Message::Close(frame))) => return Some(WsLost::Closed(frame)),
                        // pings are answered by tungstenite; data is ignored
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick(), if ping_every.is_some() => {
                    if last_heard.elapsed() > config.ping_interval * 2 {
                        return Some(WsLost::Silent(last_heard.elapsed()));
                    }
                    let ping = sink.send(Message::Ping(Vec::new().into()));
                    if !matches!(tokio::time::timeout(send_timeout, ping).await, Ok(Ok(()))) {
                        return Some(WsLost::Ping);
                    }
                }
                m = outgoing.recv(), if !self.outgoing_closed => self.take(m, outgoing),
            }
        }
    }

    /// A message from `outgoing` (`None`: it has ended), and whatever else is ready, up to a
    /// batch.
    fn take(&mut self, m: Option<OutboundMessage>, outgoing: &mut mpsc::Receiver<OutboundMessage>) {
        let Some(m) = m else {
            self.outgoing_closed = true;
            return;
        };
        self.pending.push_back(m);
        while self.pending.len() < self.max_batch {
            let Ok(m) = outgoing.try_recv() else { break };
            self.pending.push_back(m);
        }
    }

    /// Sends up to a batch of pending messages in one flush within `send_timeout`, then
    /// acknowledges them.
    async fn send_batch(
        &mut self,
        sink: &mut WsSink,
        send_timeout: Duration,
    ) -> Result<(), WsLost> {
        let n = self.pending.len().min(self.max_batch);
        let pending = &self.pending;
        let sent = tokio::time::timeout(send_timeout, async {
            for m in pending.iter().take(n) {
                sink.feed(Message::Text(record_json(m).into())).await?;
            }
            sink.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(WsLost::Send(Box::new(e))),
            Err(_) => return Err(WsLost::SendTimeout(send_timeout)),
        }
        for m in self.pending.drain(..n) {
            self.stats.inc(Counter::Published);
            if self.resend > 0 {
                self.resend -= 1;
                self.stats.inc(Counter::Republished);
            }
            // The fan-out gone means the edge is stopping: nothing is left to acknowledge to.
            let _ = self.acks.send(m.id);
            self.stats.inc(Counter::Acked);
            self.events.emit(BridgeEvent::Published { id: m.id });
        }
        Ok(())
    }
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn crate::transport::Io>>;

/// Why a WebSocket connection ended before the shutdown (its text is the log's and the
/// event's reason).
#[derive(Debug, thiserror::Error)]
enum WsLost {
    /// Sending a batch failed.
    #[error("sending: {0}")]
    Send(Box<tungstenite::Error>),
    /// Sending a batch took longer than the send timeout.
    #[error("sending took longer than {0:?}")]
    SendTimeout(Duration),
    /// The peer closed the TCP stream.
    #[error("closed by the peer")]
    Eof,
    /// Receiving failed.
    #[error("receiving: {0}")]
    Receive(Box<tungstenite::Error>),
    /// The peer sent a Close frame.
    #[error("closed by the peer: {0:?}")]
    Closed(Option<CloseFrame>),
    /// Nothing came from the peer for two ping intervals.
    #[error("nothing heard from the peer for {0:?}")]
    Silent(Duration),
    /// A ping could not be sent in time.
    #[error("sending a ping failed")]
    Ping,
}

/// Why a WebSocket connection could not be made (each names where, for logs and events).
#[derive(Debug, thiserror::Error)]
enum WsConnectError {
    /// TCP or TLS failed.
    #[error(transparent)]
    Transport(#[from] ConnectError),
    /// The URL does not make a WebSocket request.
    #[error("WebSocket request for {url}: {error}")]
    Request {
        url: String,
        error: Box<tungstenite::Error>,
    },
    /// The server refused the upgrade, or the handshake broke off.
    #[error("WebSocket handshake with {authority} at {addr}: {error}")]
    Handshake {
        authority: String,
        addr: std::net::SocketAddr,
        error: Box<tungstenite::Error>,
    },
    /// No answer to the upgrade within the connect timeout.
    #[error("WebSocket handshake at {addr} timed out")]
    HandshakeTimeout { addr: std::net::SocketAddr },
}

async fn connect(
    connector: &Connector,
    config: &WsConfig,
) -> Result<(Ws, std::net::SocketAddr), WsConnectError> {
    let (stream, addr) = connector.connect().await?;
    let request =
        config
            .url
            .as_str()
            .into_client_request()
            .map_err(|error| WsConnectError::Request {
                url: config.url.clone(),
                error: Box::new(error),
            })?;
    let handshake = tokio_tungstenite::client_async(request, stream);
    match tokio::time::timeout(config.connect_timeout, handshake).await {
        Ok(Ok((ws, _response))) => Ok((ws, addr)),
        Ok(Err(error)) => Err(WsConnectError::Handshake {
            authority: connector.endpoint().authority(),
            addr,
            error: Box::new(error),
        }),
        Err(_) => Err(WsConnectError::HandshakeTimeout { addr }),
    }
}

async fn sleep_or_shutdown<F: Future<Output = ()>>(
    delay: Duration,
    shutdown: &mut Pin<&mut F>,
) -> bool {
    tokio::select! {
        biased;
        () = shutdown.as_mut() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &[u8]) -> OutboundMessage {
        OutboundMessage {
            id: 7,
            topic: "t/x".into(),
            payload: payload.to_vec(),
            retain: false,
        }
    }

    #[test]
    fn json_payloads_are_embedded_verbatim() {
        let line = record_json(&msg(br#"[{"n":"temperature","v":21.50}]"#));
        assert_eq!(
            line,
            r#"{"id":7,"topic":"t/x","payload":[{"n":"temperature","v":21.50}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"][0]["v"], 21.5);
        let line = record_json(&msg(b"  \"text\" "));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"], "text");
        assert!(v.get("encoding").is_none());
    }

    #[test]
    fn multi_line_json_becomes_one_line() {
        let line = record_json(&msg(b"{\n  \"a\": 1\n}\n"));
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"]["a"], 1);
    }

    #[test]
    fn other_payloads_are_base64() {
        for payload in [&b"\x00\x01\xff"[..], b"not json", b""] {
            let line = record_json(&msg(payload));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["encoding"], "base64");
            let back = base64::engine::general_purpose::STANDARD
                .decode(v["payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(back, payload);
            assert_eq!(v["id"], 7);
            assert_eq!(v["topic"], "t/x");
        }
    }

    #[test]
    fn only_websocket_urls() {
        assert!(WsConfig::new("mqtt://h").validate().is_err());
        assert!(WsConfig::new("ws://[::1]:9/x").validate().is_ok());
    }

    /// The reasons in `Disconnected` events and logs read as they did when they were strings.
    #[test]
    fn loss_reasons_name_their_cause() {
        let texts = [
            (
                WsLost::SendTimeout(Duration::from_secs(5)),
                "sending took longer than 5s",
            ),
            (WsLost::Eof, "closed by the peer"),
            (WsLost::Closed(None), "closed by the peer: None"),
            (
                WsLost::Silent(Duration::from_millis(250)),
                "nothing heard from the peer for 250ms",
            ),
            (WsLost::Ping, "sending a ping failed"),
            (
                WsLost::Receive(Box::new(tungstenite::Error::ConnectionClosed)),
                "receiving: Connection closed normally",
            ),
        ];
        for (lost, text) in texts {
            assert_eq!(lost.to_string(), text);
        }
    }
}
