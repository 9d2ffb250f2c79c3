//! The MQTT publisher: at-least-once delivery of the outbox's messages, the edge's status with
//! its Last Will, and commands down to the edge.
//!
//! | file | job |
//! |---|---|
//! | `config.rs` | [`MqttConfig`] and its checks |
//! | `codec.rs` | the MQTT 3.1.1 / 5 packets the bridge sends and receives, on rumqttc's `mqttbytes` codecs (pure) |
//! | `session.rs` | one connection as a state machine (sans-IO): CONNECT/CONNACK (MQTT 5 limits), QoS 1 PUBLISHes with our own packet ids and the in-flight window, PUBACKs, the command subscription, keep-alive |
//! | `conn.rs` | the byte pump of one connection: writes what the session produced, reads what the broker sent |
//! | this file | [`run_mqtt`]: connect, publish, acknowledge, reconnect, commands |
//!
//! One task drives a connection: it takes messages from `outgoing` as long as the window has
//! room, encodes every PUBLISH it can into one buffer and writes that buffer with one call,
//! and reads the broker's PUBACKs in batches. The stream is the one the bridge made itself
//! (Happy Eyeballs TCP, then rustls with the real host name): rumqttc provides only the
//! packet codecs, not the connection.
//!
//! Each connection is a new clean session: the bridge publishes every unacknowledged message
//! again after a reconnection (same id, so the platform can drop duplicates).

mod codec;
mod config;
mod conn;
mod session;

pub use config::MqttConfig;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use crate::backoff::Backoff;
use crate::command::{Command, CommandError, Rejection, parse_command, rejection_payload};
use crate::event::{BridgeError, BridgeEvent, BridgeStats, Counter, Events};
use crate::message::OutboundMessage;
use crate::transport::{Connector, Io};
use codec::{CodecError, ConnectParams, Version};
use conn::{Conn, Turn};
use session::{Ended, NotSent, Output, Session, SessionConfig};

/// At most this many error results wait to be published; more are dropped (and logged).
const MAX_QUEUED_RESULTS: usize = 1024;
/// How long a clean shutdown waits for the broker to acknowledge the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// No more PUBLISHes are encoded while this many bytes wait to be written.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// Runs the MQTT publisher until `shutdown` completes.
///
/// - Every message from `outgoing` is published at QoS 1 (retained as flagged); its `id` goes
///   to `acks` once the broker's PUBACK for it arrived, exactly once per message received.
///   At most `max_in_flight` wait for their PUBACK (fewer if an MQTT 5 broker's Receive
///   Maximum says so); when the connection is lost, all of them are published again after
///   the reconnection.
/// - Reconnects forever with jittered exponential back-off (`reconnect_min` … `reconnect_max`);
///   each failure is logged and reported as [`BridgeEvent::ConnectFailed`] or
///   [`BridgeEvent::Disconnected`].
/// - Publishes the retained status `{"state":"online","edge":…}` on
///   `topics.edge_status(edge_id)` at each connection; the Last Will (retained) says
///   `{"state":"offline",…}`, and so does a clean shutdown.
/// - Subscribes to `topics.command_filter()` and hands parsed [`Command`]s to `commands`;
///   malformed ones get `{"req":…,"status":"rejected","error":…}` on `…/cmd/{req}/result`.
///
/// When `outgoing` closes, the publisher keeps serving commands until `shutdown`. It returns an
/// error only for a configuration that cannot work or a local failure, never for the network.
pub async fn run_mqtt(
    config: MqttConfig,
    mut outgoing: mpsc::Receiver<OutboundMessage>,
    acks: mpsc::UnboundedSender<u64>,
    commands: mpsc::Sender<Command>,
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
    let mut bridge = Bridge {
        links: Links {
            acks,
            commands,
            events: Events::new(events),
            stats: Arc::clone(&config.stats),
        },
        state: State::default(),
        session: session_config(&config),
        config,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(bridge.config.reconnect_min, bridge.config.reconnect_max);
    tracing::info!(url = %bridge.config.url, client_id = %bridge.config.client_id,
        protocol = bridge.config.protocol, "MQTT publisher starting");
    loop {
        let connected = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(()),
            connected = connector.connect() => connected,
        };
        let (stream, addr) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                bridge.connect_failed(e.to_string(), &mut backoff);
                if wait(&mut backoff, &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        tracing::debug!(%addr, "transport up, starting the MQTT session");
        match bridge
            .connection(stream, &mut outgoing, &mut shutdown, addr, &mut backoff)
            .await
        {
            End::Shutdown => return Ok(()),
            End::Lost {
                reason,
                was_connected: true,
            } => {
                let reason = reason.to_string();
                let delay = backoff.next_delay();
                tracing::warn!(%reason, retry_in = ?delay, "MQTT connection lost");
                bridge.links.stats.inc(Counter::Disconnects);
                bridge
                    .links
                    .events
                    .emit(BridgeEvent::Disconnected { reason });
                if wait_for(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
            End::Lost {
                reason,
                was_connected: false,
            } => {
                bridge.connect_failed(reason.to_string(), &mut backoff);
                if wait(&mut backoff, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

fn session_config(config: &MqttConfig) -> SessionConfig {
    SessionConfig {
        version: if config.protocol == 5 {
            Version::V5
        } else {
            Version::V4
        },
        connect: ConnectParams {
            client_id: config.client_id.clone(),
            keep_alive_s: u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX),
            will_topic: config.topics.edge_status(&config.edge_id),
            will_payload: status_payload("offline", &config.edge_id),
            login: config
                .username
                .as_ref()
                .map(|user| (user.clone(), config.password.clone().unwrap_or_default())),
            max_packet: config.max_packet_size,
        },
        keep_alive: config.keep_alive,
        connack_timeout: config.connect_timeout.max(Duration::from_secs(1)),
        window: usize::from(config.max_in_flight),
    }
}

/// Statuses are JSON: `{"state":"online","edge":"…"}`.
fn status_payload(state: &str, edge: &str) -> Vec<u8> {
    serde_json::json!({ "state": state, "edge": edge })
        .to_string()
        .into_bytes()
}

/// Sleeps for the back-off delay computed last (see `connect_failed`); true on shutdown.
async fn wait<F: Future<Output = ()>>(backoff: &mut Backoff, shutdown: &mut Pin<&mut F>) -> bool {
    let delay = backoff.last_delay();
    wait_for(delay, shutdown).await
}

async fn wait_for<F: Future<Output = ()>>(delay: Duration, shutdown: &mut Pin<&mut F>) -> bool {
    tokio::select! {
        biased;
        () = shutdown.as_mut() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

enum End {
    Shutdown,
    Lost { reason: Lost, was_connected: bool },
}

/// Why a connection ended before the shutdown (its text is the log's and the event's reason).
#[derive(Debug, thiserror::Error)]
enum Lost {
    /// The CONNECT could not be encoded.
    #[error(transparent)]
    Connect(#[from] CodecError),
    /// Reading or writing the transport failed.
    #[error("connection to {addr}: {source}")]
    Io {
        /// The broker's address.
        addr: SocketAddr,
        /// What the transport reported.
        source: std::io::Error,
    },
    /// The broker closed the transport.
    #[error("the broker closed the connection")]
    Eof,
    /// The session ended (refused, timed out, disconnected by the broker, protocol error).
    #[error(transparent)]
    Session(#[from] Ended),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Online,
    Offline,
    Result,
}

/// A PUBLISH of the bridge's own: a status or a command's error result.
#[derive(Debug)]
struct Internal {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Item {
    Message(OutboundMessage),
    Internal(Internal),
}

impl session::Message for Item {
    fn topic(&self) -> &str {
        match self {
            Item::Message(m) => &m.topic,
            Item::Internal(i) => &i.topic,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Item::Message(m) => &m.payload,
            Item::Internal(i) => &i.payload,
        }
    }

    fn retain(&self) -> bool {
        match self {
            Item::Message(m) => m.retain,
            Item::Internal(i) => i.retain,
        }
    }
}

struct Links {
    acks: mpsc::UnboundedSender<u64>,
    commands: mpsc::Sender<Command>,
    events: Events,
    stats: Arc<BridgeStats>,
}

/// What outlives a connection.
#[derive(Default)]
struct State {
    /// Messages to publish again, before new ones, in id order.
    retry: VecDeque<OutboundMessage>,
    /// Refused by the broker: published again after the next reconnection.
    deferred: Vec<OutboundMessage>,
    internal: VecDeque<Internal>,
    outgoing_closed: bool,
    offline_acked: bool,
}

impl State {
    fn has_backlog(&self) -> bool {
        !self.internal.is_empty() || !self.retry.is_empty()
    }
}

/// Where the next PUBLISH comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Internal,
    Retry,
    New,
}

struct Bridge {
    config: MqttConfig,
    session: SessionConfig,
    links: Links,
    state: State,
}

impl Bridge {
    fn connect_failed(&self, reason: String, backoff: &mut Backoff) {
        let delay = backoff.next_delay();
        tracing::warn!(%reason, retry_in = ?delay, "MQTT connection attempt failed");
        self.links.stats.inc(Counter::ConnectFailures);
        self.links
            .events
            .emit(BridgeEvent::ConnectFailed { reason });
    }

    /// One connection, from the CONNECT to its end; what it left unacknowledged is queued to
    /// be published again.
    async fn connection<F: Future<Output = ()>>(
        &mut self,
        stream: Box<dyn Io>,
        outgoing: &mut mpsc::Receiver<OutboundMessage>,
        shutdown: &mut Pin<&mut F>,
        addr: SocketAddr,
        backoff: &mut Backoff,
    ) -> End {
        let mut conn = Conn::new(stream);
        let mut session = match Session::start(&self.session, Instant::now(), conn.out()) {
            Ok(s) => s,
            Err(e) => {
                return End::Lost {
                    reason: e.into(),
                    was_connected: false,
                };
            }
        };
        let end = self
            .drive(&mut session, &mut conn, outgoing, shutdown, addr, backoff)
            .await;
        self.connection_lost(session.into_unacked());
        end
    }

    /// The loop of one connection: encode what the window allows, then wait for the first of
    /// shutdown, bytes in (or the output written), a new message, or the session's timer.
    async fn drive<F: Future<Output = ()>>(
        &mut self,
        session: &mut Session<Item>,
        conn: &mut Conn,
        outgoing: &mut mpsc::Receiver<OutboundMessage>,
        shutdown: &mut Pin<&mut F>,
        addr: SocketAddr,
        backoff: &mut Backoff,
    ) -> End {
        let mut connected = false;
        let lost = |reason: Lost, was_connected: bool| End::Lost {
            reason,
            was_connected,
        };
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let timer = tokio::time::sleep_until(
            session
                .poll_timeout()
                .map_or_else(far, tokio::time::Instant::from_std),
        );
        let mut timer = std::pin::pin!(timer);
        loop {
            self.fill(session, Some(&mut *outgoing), conn.out());
            let take_new = session.has_room()
                && !self.state.outgoing_closed
                && !self.state.has_backlog()
                && conn.pending() < OUT_HIGH_WATER;
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    if connected {
                        self.graceful_end(session, conn).await;
                    }
                    return End::Shutdown;
                }
                turn = conn.turn() => match turn {
                    Err(source) => return lost(Lost::Io { addr, source }, connected),
                    Ok(Turn::Eof) => {
                        return lost(Lost::Eof, connected);
                    }
                    Ok(Turn::Wrote) => {}
                    Ok(Turn::Read) => {
                        let now = Instant::now();
                        loop {
                            let (input, out) = conn.buffers();
                            match session.handle_input(input, now, out) {
                                Ok(None) => break,
                                Ok(Some(Output::Connected)) => {
                                    connected = true;
                                    backoff.reset();
                                    self.connected(session, conn, addr, now);
                                }
                                Ok(Some(output)) => self.handle(output),
                                Err(e) => return lost(e.into(), connected),
                            }
                        }
                    }
                },
                m = outgoing.recv(), if take_new => match m {
                    None => {
                        tracing::info!("the outgoing channel closed; serving commands only");
                        self.state.outgoing_closed = true;
                    }
                    Some(m) => self.publish(session, Item::Message(m), Source::New, Instant::now(), conn.out()),
                },
                () = timer.as_mut() => {
                    if let Err(e) = session.handle_timeout(Instant::now(), conn.out()) {
                        return lost(e.into(), connected);
                    }
                    let next = session.poll_timeout().map_or_else(far, tokio::time::Instant::from_std);
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Encodes PUBLISHes while the window has room: the bridge's own first, then messages to
    /// publish again, then new ones from `outgoing` (when given) as far as they are there.
    fn fill(
        &mut self,
        session: &mut Session<Item>,
        mut outgoing: Option<&mut mpsc::Receiver<OutboundMessage>>,
        out: &mut BytesMut,
    ) {
        let now = Instant::now();
        while session.has_room() && out.len() < OUT_HIGH_WATER {
            let (item, source) = if let Some(i) = self.state.internal.pop_front() {
                (Item::Internal(i), Source::Internal)
            } else if let Some(m) = self.state.retry.pop_front() {
                (Item::Message(m), Source::Retry)
            } else if let Some(rx) = outgoing.as_deref_mut()
                && !self.state.outgoing_closed
            {
                match rx.try_recv() {
                    Ok(m) => (Item::Message(m), Source::New),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        tracing::info!("the outgoing channel closed; serving commands only");
                        self.state.outgoing_closed = true;
                        break;
                    }
                }
            } else {
                break;
            };
            self.publish(session, item, source, now, out);
        }
    }

    fn publish(
        &mut self,
        session: &mut Session<Item>,
        item: Item,
        source: Source,
        now: Instant,
        out: &mut BytesMut,
    ) {
        match session.publish(item, now, out) {
            Ok(()) => match source {
                Source::Internal => {}
                Source::Retry => {
                    self.links.stats.inc(Counter::Published);
                    self.links.stats.inc(Counter::Republished);
                }
                Source::New => self.links.stats.inc(Counter::Published),
            },
            // not reached: called only with room in the window
            Err(NotSent::NoRoom(item)) => match item {
                Item::Internal(i) => self.state.internal.push_front(i),
                Item::Message(m) => self.state.retry.push_front(m),
            },
            Err(NotSent::TooLarge(Item::Message(m), e)) => self.give_up(
                m,
                e.to_string(),
                "a message larger than the MQTT packet limit can never be published; it is dropped",
            ),
            Err(NotSent::TooLarge(Item::Internal(i), e)) => {
                tracing::error!(topic = %i.topic, reason = %e, "cannot publish a status or result");
            }
        }
    }

    /// A message that can never be published: dropped loudly, counted, and acknowledged so
    /// that it cannot hold up the outbox.
    fn give_up(&self, m: OutboundMessage, reason: String, what: &str) {
        tracing::error!(id = m.id, topic = %m.topic, %reason, "{what}");
        self.links.stats.inc(Counter::Refused);
        self.links.stats.inc(Counter::Dropped);
        let _ = self.links.acks.send(m.id);
        self.links.events.emit(BridgeEvent::PublishRefused {
            id: m.id,
            reason,
            dropped: true,
        });
    }

    fn connected(
        &mut self,
        session: &mut Session<Item>,
        conn: &mut Conn,
        addr: SocketAddr,
        now: Instant,
    ) {
        tracing::info!(%addr, url = %self.config.url, window = session.window(), "MQTT connected");
        self.links.stats.inc(Counter::Connects);
        self.links.events.emit(BridgeEvent::Connected { addr });
        let filter = self.config.topics.command_filter();
        if let Err(e) = session.subscribe(&filter, now, conn.out()) {
            tracing::error!(%filter, error = %e, "cannot subscribe to commands");
        }
        self.state.internal.push_front(Internal {
            topic: self.config.topics.edge_status(&self.config.edge_id),
            payload: status_payload("online", &self.config.edge_id),
            retain: true,
            kind: Kind::Online,
        });
        if !self.state.retry.is_empty() {
            let count = self.state.retry.len();
            tracing::info!(count, "publishing unacknowledged messages again");
            self.links.events.emit(BridgeEvent::Republishing { count });
        }
    }

    fn handle(&mut self, output: Output<Item>) {
        match output {
            Output::Connected => {}
            Output::Acked {
                item,
                refused,
                waited,
            } => match (item, refused) {
                (Item::Message(m), None) => {
                    let _ = self.links.acks.send(m.id);
                    self.links.stats.inc(Counter::Acked);
                    self.links.stats.publish_latency.observe(waited);
                    if self.config.report_published {
                        self.links.events.emit(BridgeEvent::Published { id: m.id });
                    }
                }
                (Item::Message(m), Some((reason, true))) => self.give_up(
                    m,
                    reason,
                    "the broker refused a PUBLISH for good; the message is dropped",
                ),
                (Item::Message(m), Some((reason, false))) => {
                    tracing::warn!(id = m.id, topic = %m.topic, %reason,
                        "the broker refused a PUBLISH; it is retried after the next reconnection");
                    self.links.stats.inc(Counter::Refused);
                    self.links.events.emit(BridgeEvent::PublishRefused {
                        id: m.id,
                        reason,
                        dropped: false,
                    });
                    self.state.deferred.push(m);
                }
                (Item::Internal(i), refused) => {
                    if let Some((reason, _)) = refused {
                        tracing::warn!(topic = %i.topic, %reason, "the broker refused a PUBLISH");
                    }
                    if i.kind == Kind::Offline {
                        self.state.offline_acked = true;
                    }
                }
            },
            Output::Command { topic, payload } => self.command(&topic, &payload),
            Output::Subscribed { refused: None } => {
                let filter = self.config.topics.command_filter();
                tracing::debug!(%filter, "subscribed to commands");
                self.links.events.emit(BridgeEvent::Subscribed { filter });
            }
            Output::Subscribed {
                refused: Some(reason),
            } => tracing::error!(filter = %self.config.topics.command_filter(), %reason,
                "the broker refused the command subscription: no command will arrive"),
        }
    }

    fn command(&mut self, topic: &str, payload: &[u8]) {
        let command = match parse_command(&self.config.topics, topic, payload, Instant::now()) {
            Ok(command) => command,
            Err(rejection) => return self.reject(topic, rejection),
        };
        let (device, req) = (command.device.clone(), command.req.clone());
        let refused = match self.links.commands.try_send(command) {
            Ok(()) => {
                tracing::debug!(%device, %req, "command forwarded");
                self.links.stats.inc(Counter::CommandsForwarded);
                self.links
                    .events
                    .emit(BridgeEvent::CommandForwarded { device, req });
                return;
            }
            Err(TrySendError::Full(_)) => "the edge's command queue is full; try again later",
            Err(TrySendError::Closed(_)) => "the edge is not taking commands",
        };
        self.reject(
            topic,
            Rejection {
                levels: Some((device, req)),
                error: CommandError::NotAccepted(refused),
            },
        );
    }

    fn reject(&mut self, topic: &str, rejection: Rejection) {
        let reason = rejection.error.to_string();
        tracing::warn!(%topic, %reason, "command rejected");
        self.links.stats.inc(Counter::CommandsRejected);
        self.links.events.emit(BridgeEvent::CommandRejected {
            req: rejection.req().to_owned(),
            reason: reason.clone(),
        });
        let Some((device, req)) = rejection.levels else {
            return;
        };
        if self.state.internal.len() >= MAX_QUEUED_RESULTS {
            tracing::warn!(%topic, "too many error results waiting; this one is dropped");
            return;
        }
        self.state.internal.push_back(Internal {
            topic: self.config.topics.command_result(&device, &req),
            payload: rejection_payload(&req, &reason),
            retain: false,
            kind: Kind::Result,
        });
    }

    /// Clean end: the offline status (acknowledged, or after a grace period), then
    /// DISCONNECT, written out before the stream is shut down.
    async fn graceful_end(&mut self, session: &mut Session<Item>, conn: &mut Conn) {
        self.state.offline_acked = false;
        self.state.internal.push_front(Internal {
            topic: self.config.topics.edge_status(&self.config.edge_id),
            payload: status_payload("offline", &self.config.edge_id),
            retain: true,
            kind: Kind::Offline,
        });
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.state.offline_acked {
            self.fill(session, None, conn.out());
            tokio::select! {
                turn = conn.turn() => match turn {
                    Ok(Turn::Read) => {
                        let now = Instant::now();
                        loop {
                            let (input, out) = conn.buffers();
                            match session.handle_input(input, now, out) {
                                Ok(Some(output)) => self.handle(output),
                                Ok(None) => break,
                                Err(_) => return,
                            }
                        }
                    }
                    Ok(Turn::Wrote) => {}
                    Ok(Turn::Eof) | Err(_) => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        session.disconnect(conn.out());
        if let Err(e) = conn.finish(Duration::from_secs(1)).await {
            tracing::debug!(error = %e, "closing the MQTT connection");
        }
        tracing::info!("MQTT publisher stopped");
    }

    /// The connection is gone: everything unacknowledged is published again after the next
    /// CONNACK, in id order.
    fn connection_lost(&mut self, unacked: Vec<Item>) {
        tracing::debug!(
            in_flight = unacked.len(),
            queued = self.state.retry.len(),
            "connection gone; unacknowledged messages will be published again"
        );
        let mut again = Vec::new();
        let mut results = Vec::new();
        for item in unacked {
            match item {
                Item::Message(m) => again.push(m),
                Item::Internal(i) if i.kind == Kind::Result => results.push(i),
                Item::Internal(_) => {}
            }
        }
        self.state.internal.retain(|i| i.kind == Kind::Result);
        for i in results.into_iter().rev() {
            self.state.internal.push_front(i);
        }
        again.extend(self.state.retry.drain(..));
        again.append(&mut self.state.deferred);
        again.sort_by_key(|m| m.id);
        self.state.retry = again.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons in `Disconnected` / `ConnectFailed` events and logs read as they did when
    /// they were strings: the transport's names the broker's address, the session's is its own.
    #[test]
    fn loss_reasons_name_their_cause() {
        let addr: SocketAddr = "[::1]:1883".parse().unwrap();
        let io = Lost::Io {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert_eq!(io.to_string(), "connection to [::1]:1883: connection reset");
        assert_eq!(Lost::Eof.to_string(), "the broker closed the connection");
        let session = Lost::from(Ended::KeepAliveTimeout(Duration::from_secs(30)));
        assert_eq!(session.to_string(), "no PINGRESP within 30s");
    }
}
