//! What the bridge reports: events (for tests and the edge's metrics), counters and errors.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc::UnboundedSender;

use crate::latency::{LatencyHistogram, ROUND_TRIP_BUCKETS};

/// Something that happened on the north side.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// Connected (MQTT: CONNACK received; WebSocket: handshake done) over `addr`.
    Connected {
        /// The address Happy Eyeballs chose.
        addr: SocketAddr,
    },
    /// An established connection was lost.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A connection attempt failed before it was established (TCP, TLS, CONNACK, handshake).
    ConnectFailed {
        /// Why.
        reason: String,
    },
    /// The platform has message `id` (MQTT: PUBACK; WebSocket: flushed); `id` was sent on
    /// the acks channel.
    Published {
        /// The message's record id.
        id: u64,
    },
    /// An MQTT 5 broker answered the PUBLISH of `id` with an error reason code.
    ///
    /// When the refusal is permanent (NotAuthorized, TopicNameInvalid, PayloadFormatInvalid:
    /// the broker will refuse it again whenever it is sent) the message is dropped: `dropped` is
    /// true and `id` is sent on the acks channel, so that one such message cannot hold up the
    /// outbox or, with brokers that also close the connection, block the bridge. Otherwise
    /// (QuotaExceeded, unspecified errors) it is not acknowledged and is published again after
    /// the next reconnection.
    PublishRefused {
        /// The message's record id.
        id: u64,
        /// The broker's reason code (and reason string, if any).
        reason: String,
        /// Whether the message was given up (and its id acknowledged).
        dropped: bool,
    },
    /// After a reconnection, `count` unacknowledged messages are published again.
    Republishing {
        /// How many.
        count: usize,
    },
    /// The broker confirmed the command subscription: commands can arrive.
    Subscribed {
        /// The topic filter.
        filter: String,
    },
    /// A command was parsed and handed to the edge.
    CommandForwarded {
        /// Device named in the topic.
        device: String,
        /// Request id named in the topic.
        req: String,
    },
    /// A command was not forwarded; an error result was published (when the topic allowed).
    CommandRejected {
        /// Request id named in the topic (empty if there was none).
        req: String,
        /// Why.
        reason: String,
    },
}

/// Why the bridge stopped (it only stops for configuration or local errors; the network is
/// retried forever).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The URL is wrong.
    #[error(transparent)]
    Url(#[from] crate::endpoint::UrlError),
    /// The TLS files or names are wrong.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    /// A local resource (a file, a socket) failed.
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of one bridge, shared with whoever exports metrics (`Arc<BridgeStats>`).
#[derive(Debug)]
pub struct BridgeStats {
    /// PUBLISH (its last sending) to PUBACK, for every message the broker took.
    pub publish_latency: LatencyHistogram,
    published: AtomicU64,
    republished: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    commands_forwarded: AtomicU64,
    commands_rejected: AtomicU64,
}

impl Default for BridgeStats {
    fn default() -> Self {
        BridgeStats {
            publish_latency: LatencyHistogram::new(ROUND_TRIP_BUCKETS),
            published: AtomicU64::default(),
            republished: AtomicU64::default(),
            acked: AtomicU64::default(),
            refused: AtomicU64::default(),
            dropped: AtomicU64::default(),
            connects: AtomicU64::default(),
            connect_failures: AtomicU64::default(),
            disconnects: AtomicU64::default(),
            commands_forwarded: AtomicU64::default(),
            commands_rejected: AtomicU64::default(),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages handed to the connection (first sends and re-sends).
    pub published: u64,
    /// Of those, re-sends after a reconnection or refusal.
    pub republished: u64,
    /// Ids acknowledged because the platform has them (PUBACK, or WebSocket flush); ids of
    /// dropped messages also go to the acks channel but are counted in `dropped`.
    pub acked: u64,
    /// PUBLISHes refused by an MQTT 5 broker (dropped or to be retried).
    pub refused: u64,
    /// Of those, messages dropped because the refusal was permanent.
    pub dropped: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Established connections lost.
    pub disconnects: u64,
    /// Commands handed to the edge.
    pub commands_forwarded: u64,
    /// Commands rejected (malformed, or the edge could not take them).
    pub commands_rejected: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Published,
    Republished,
    Acked,
    Refused,
    Dropped,
    Connects,
    ConnectFailures,
    Disconnects,
    CommandsForwarded,
    CommandsRejected,
}

impl BridgeStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            published: r(&self.published),
            republished: r(&self.republished),
            acked: r(&self.acked),
            refused: r(&self.refused),
            dropped: r(&self.dropped),
            connects: r(&self.connects),
            connect_failures: r(&self.connect_failures),
            disconnects: r(&self.disconnects),
            commands_forwarded: r(&self.commands_forwarded),
            commands_rejected: r(&self.commands_rejected),
        }
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let c = match counter {
            Counter::Published => &self.published,
            Counter::Republished => &self.republished,
            Counter::Acked => &self.acked,
            Counter::Refused => &self.refused,
            Counter::Dropped => &self.dropped,
            Counter::Connects => &self.connects,
            Counter::ConnectFailures => &self.connect_failures,
            Counter::Disconnects => &self.disconnects,
            Counter::CommandsForwarded => &self.commands_forwarded,
            Counter::CommandsRejected => &self.commands_rejected,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }
}

/// The optional event channel.
#[derive(Debug, Clone)]
pub(crate) struct Events(Option<UnboundedSender<BridgeEvent>>);

impl Events {
    pub(crate) fn new(tx: Option<UnboundedSender<BridgeEvent>>) -> Self {
        Events(tx)
    }

    /// Sends if someone listens; a closed channel is not an error.
    pub(crate) fn emit(&self, event: BridgeEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
