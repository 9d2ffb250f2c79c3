//! The MQTT publisher: at-least-once delivery of the outbox's messages, the edge's status with
//! its Last Will, and commands down to the edge.
//!
//! | file | job |
//! |---|---|
//! | `config.rs` | [`MqttConfig`] and its checks |
//! | `inflight.rs` | packet id ↔ message bookkeeping, the in-flight window (sans-IO) |
//! | `client.rs` | rumqttc 3.1.1 / 5 behind one face; the event-loop task of one connection |
//! | `handoff.rs` | gives rumqttc the connection the bridge made (Happy Eyeballs + rustls) through a one-shot private Unix socket |
//! | this file | [`run_mqtt`]: connect, publish, acknowledge, reconnect, commands |
//!
//! Each connection is a new clean session: rumqttc never resends on its own; the bridge
//! publishes every unacknowledged message again after a reconnection (same id, so the platform
//! can drop duplicates).

mod client;
mod config;
mod handoff;
mod inflight;

pub use config::MqttConfig;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::command::{Command, CommandError, Rejection, parse_command, rejection_payload};
use crate::event::{BridgeError, BridgeEvent, BridgeStats, Counter, Events};
use crate::message::OutboundMessage;
use crate::transport::Connector;
use client::{Client, Ev, status_payload};
use inflight::InFlight;

/// At most this many error results wait to be published; more are dropped (and logged).
const MAX_QUEUED_RESULTS: usize = 1024;
/// How long a clean shutdown waits for the broker to acknowledge the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs the MQTT publisher until `shutdown` completes.
///
/// - Every message from `outgoing` is published at QoS 1 (retained as flagged); its `id` goes
///   to `acks` once the broker's PUBACK for it arrived, exactly once per message received.
///   At most `max_in_flight` wait for their PUBACK; when the connection is lost, all of them
///   are published again after the reconnection.
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
        &config.tls(),
        config.attempt_delay,
        config.connect_timeout,
    )?;
    handoff::sweep_stale();
    let mut bridge = Bridge {
        links: Links {
            acks,
            commands,
            events: Events::new(events),
            stats: Arc::clone(&config.stats),
        },
        state: State::new(usize::from(config.max_in_flight)),
        config,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(bridge.config.reconnect_min, bridge.config.reconnect_max);
    let capacity = usize::from(bridge.config.max_in_flight) + 16;
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
            Err(reason) => {
                bridge.connect_failed(reason, &mut backoff);
                if wait(&mut backoff, &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        tracing::debug!(%addr, "transport up, starting the MQTT session");
        let (socket, pipe) = handoff::splice(stream)?;
        let pipe = AbortOnDrop(pipe);
        let (client, events_rx, poll) = Client::start(&bridge.config, &socket, capacity);
        let poll = AbortOnDrop(poll);
        let end = bridge
            .session(
                &client,
                events_rx,
                &mut outgoing,
                &mut shutdown,
                addr,
                &mut backoff,
            )
            .await;
        drop(client);
        let transport_error = pipe.error_within(Duration::from_millis(200)).await;
        drop(poll);
        bridge.connection_lost();
        match end {
            End::Shutdown => return Ok(()),
            End::Lost {
                reason,
                was_connected,
            } => {
                let reason = match transport_error {
                    Some(e) => format!("{reason} (transport: {e})"),
                    None => reason,
                };
                if was_connected {
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
                } else {
                    bridge.connect_failed(reason, &mut backoff);
                    if wait(&mut backoff, &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }
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

/// Aborts the task when dropped, so that dropping `run_mqtt` closes its connection.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AbortOnDrop<std::io::Result<()>> {
    /// The splice's error, if it ends (or has ended) with one within `within`.
    async fn error_within(mut self, within: Duration) -> Option<std::io::Error> {
        match tokio::time::timeout(within, &mut self.0).await {
            Ok(Ok(Err(e))) => Some(e),
            _ => None,
        }
    }
}

enum End {
    Shutdown,
    Lost { reason: String, was_connected: bool },
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

struct Links {
    acks: mpsc::UnboundedSender<u64>,
    commands: mpsc::Sender<Command>,
    events: Events,
    stats: Arc<BridgeStats>,
}

struct State {
    inflight: InFlight<Item>,
    /// Messages to publish again, before new ones, in id order.
    retry: VecDeque<OutboundMessage>,
    /// Refused by the broker: published again after the next reconnection.
    deferred: Vec<OutboundMessage>,
    internal: VecDeque<Internal>,
    outgoing_closed: bool,
    offline_acked: bool,
}

impl State {
    fn new(window: usize) -> Self {
        State {
            inflight: InFlight::new(window),
            retry: VecDeque::new(),
            deferred: Vec::new(),
            internal: VecDeque::new(),
            outgoing_closed: false,
            offline_acked: false,
        }
    }

    /// Hands queued PUBLISHes to rumqttc while the window has room. Err when rumqttc's queue
    /// refused one (it stays queued).
    fn pump(&mut self, client: &Client, stats: &BridgeStats) -> Result<(), String> {
        while self.inflight.has_room() {
            if let Some(i) = self.internal.pop_front() {
                if let Err(e) = client.try_publish(&i.topic, i.payload.clone(), i.retain) {
                    self.internal.push_front(i);
                    return Err(e);
                }
                self.inflight.push(Item::Internal(i));
            } else if let Some(m) = self.retry.pop_front() {
                if let Err(e) = client.try_publish(&m.topic, m.payload.clone(), m.retain) {
                    self.retry.push_front(m);
                    return Err(e);
                }
                stats.inc(Counter::Published);
                stats.inc(Counter::Republished);
                self.inflight.push(Item::Message(m));
            } else {
                break;
            }
        }
        Ok(())
    }

    fn has_backlog(&self) -> bool {
        !self.internal.is_empty() || !self.retry.is_empty()
    }
}

struct Bridge {
    config: MqttConfig,
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

    /// One connection, from the CONNECT to its end.
    async fn session<F: Future<Output = ()>>(
        &mut self,
        client: &Client,
        mut events_rx: mpsc::Receiver<Result<Ev, String>>,
        outgoing: &mut mpsc::Receiver<OutboundMessage>,
        shutdown: &mut Pin<&mut F>,
        addr: SocketAddr,
        backoff: &mut Backoff,
    ) -> End {
        let mut connected = false;
        // rumqttc's request queue refused a request: wait for its next event before retrying.
        let mut blocked = false;
        loop {
            if connected
                && !blocked
                && let Err(e) = self.state.pump(client, &self.links.stats)
            {
                tracing::debug!(error = %e, "rumqttc's request queue is full");
                blocked = true;
            }
            let take_new = connected
                && !blocked
                && !self.state.outgoing_closed
                && !self.state.has_backlog()
                && self.state.inflight.has_room();
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    if connected {
                        self.graceful_end(client, &mut events_rx).await;
                    }
                    return End::Shutdown;
                }
                ev = events_rx.recv() => {
                    blocked = false;
                    match ev {
                        None => return End::Lost {
                            reason: "the MQTT event loop ended".into(),
                            was_connected: connected,
                        },
                        Some(Err(reason)) => return End::Lost { reason, was_connected: connected },
                        Some(Ok(Ev::ConnAck)) => {
                            connected = true;
                            backoff.reset();
                            self.connected(client, addr);
                        }
                        Some(Ok(ev)) => self.handle(ev),
                    }
                }
                m = outgoing.recv(), if take_new => match m {
                    None => {
                        tracing::info!("the outgoing channel closed; serving commands only");
                        self.state.outgoing_closed = true;
                    }
                    Some(m) => {
                        if let Err(e) = self.publish_new(client, m) {
                            tracing::debug!(error = %e, "rumqttc's request queue is full");
                            blocked = true;
                        }
                        while !blocked && self.state.inflight.has_room() {
                            let Ok(m) = outgoing.try_recv() else { break };
                            if self.publish_new(client, m).is_err() {
                                blocked = true;
                            }
                        }
                    }
                },
            }
        }
    }

    fn publish_new(&mut self, client: &Client, m: OutboundMessage) -> Result<(), String> {
        match client.try_publish(&m.topic, m.payload.clone(), m.retain) {
            Ok(()) => {
                self.links.stats.inc(Counter::Published);
                self.state.inflight.push(Item::Message(m));
                Ok(())
            }
            Err(e) => {
                self.state.retry.push_back(m);
                Err(e)
            }
        }
    }

    fn connected(&mut self, client: &Client, addr: SocketAddr) {
        tracing::info!(%addr, url = %self.config.url, "MQTT connected");
        self.links.stats.inc(Counter::Connects);
        self.links.events.emit(BridgeEvent::Connected { addr });
        let filter = self.config.topics.command_filter();
        if let Err(e) = client.try_subscribe(&filter) {
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

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ConnAck => {}
            Ev::OutgoingPublish(pkid) => {
                if let Err(anomaly) = self.state.inflight.announced(pkid) {
                    tracing::warn!(
                        ?anomaly,
                        "rumqttc announced a PUBLISH the bridge did not expect"
                    );
                }
            }
            Ev::PubAck { pkid, refused } => match (self.state.inflight.acked(pkid), refused) {
                (Some(Item::Message(m)), None) => {
                    let _ = self.links.acks.send(m.id);
                    self.links.stats.inc(Counter::Acked);
                    self.links.events.emit(BridgeEvent::Published { id: m.id });
                }
                (Some(Item::Message(m)), Some((reason, true))) => {
                    tracing::error!(id = m.id, topic = %m.topic, %reason,
                        "the broker refused a PUBLISH for good; the message is dropped");
                    self.links.stats.inc(Counter::Refused);
                    self.links.stats.inc(Counter::Dropped);
                    let _ = self.links.acks.send(m.id);
                    self.links.events.emit(BridgeEvent::PublishRefused {
                        id: m.id,
                        reason,
                        dropped: true,
                    });
                }
                (Some(Item::Message(m)), Some((reason, false))) => {
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
                (Some(Item::Internal(i)), refused) => {
                    if let Some((reason, _)) = refused {
                        tracing::warn!(topic = %i.topic, %reason, "the broker refused a PUBLISH");
                    }
                    if i.kind == Kind::Offline {
                        self.state.offline_acked = true;
                    }
                }
                (None, _) => tracing::debug!(pkid, "PUBACK for an unknown packet id"),
            },
            Ev::Publish { topic, payload } => self.command(&topic, &payload),
            Ev::SubAck { refused: None } => {
                let filter = self.config.topics.command_filter();
                tracing::debug!(%filter, "subscribed to commands");
                self.links.events.emit(BridgeEvent::Subscribed { filter });
            }
            Ev::SubAck {
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

    /// Clean end: the offline status (acknowledged, or after a grace period), then DISCONNECT.
    async fn graceful_end(
        &mut self,
        client: &Client,
        events_rx: &mut mpsc::Receiver<Result<Ev, String>>,
    ) {
        self.state.offline_acked = false;
        self.state.internal.push_front(Internal {
            topic: self.config.topics.edge_status(&self.config.edge_id),
            payload: status_payload("offline", &self.config.edge_id),
            retain: true,
            kind: Kind::Offline,
        });
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.state.offline_acked {
            let _ = self.state.pump(client, &self.links.stats);
            tokio::select! {
                ev = events_rx.recv() => match ev {
                    Some(Ok(ev)) => self.handle(ev),
                    _ => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if client.try_disconnect().is_ok() {
            // rumqttc ends its event loop once the broker has closed the connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(ev)) = events_rx.recv().await {
                    self.handle(ev);
                }
            })
            .await;
        }
        tracing::info!("MQTT publisher stopped");
    }

    /// The connection is gone: everything unacknowledged is published again after the next
    /// CONNACK, in id order.
    fn connection_lost(&mut self) {
        tracing::debug!(
            in_flight = self.state.inflight.len(),
            queued = self.state.retry.len(),
            "connection gone; unacknowledged messages will be published again"
        );
        let mut again = Vec::new();
        let mut results = Vec::new();
        for item in self.state.inflight.reset() {
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
