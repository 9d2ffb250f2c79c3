//! One MQTT connection as a state machine (sans-IO): CONNECT/CONNACK, QoS 1 PUBLISHes with
//! packet ids of our own and the item behind each until its PUBACK, the command
//! subscription, PUBACKs for what the broker sends, keep-alive pings. No sockets and no clock:
//! bytes come in through [`Session::handle_input`], go out into a buffer the caller owns and
//! writes to the connection, and time is passed in ([`Session::poll_timeout`],
//! [`Session::handle_timeout`]).
//!
//! Each connection is a clean session, so a `Session` lives exactly as long as its
//! connection; [`Session::into_unacked`] gives back what the broker never acknowledged, in
//! hand-over order, to publish again on the next connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::codec::{self, CodecError, ConnectParams, Incoming, Version};

/// What a session needs to know of an item to PUBLISH it.
pub(crate) trait Message {
    fn topic(&self) -> &str;
    fn payload(&self) -> &[u8];
    fn retain(&self) -> bool;
}

/// How one session is set up.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) version: Version,
    pub(crate) connect: ConnectParams,
    /// Zero turns keep-alive pings off.
    pub(crate) keep_alive: Duration,
    /// From the CONNECT to the CONNACK.
    pub(crate) connack_timeout: Duration,
    /// At most this many QoS 1 PUBLISHes wait for their PUBACK (an MQTT 5 broker may ask
    /// for fewer).
    pub(crate) window: usize,
}

/// What the broker told the session that the bridge must act on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output<T> {
    /// CONNACK (a success; a refusal ends the session).
    Connected,
    /// The PUBACK of `item`; `refused` holds an MQTT 5 error reason, and whether it is
    /// permanent.
    Acked {
        item: T,
        refused: Option<(String, bool)>,
        /// From the PUBLISH (its last sending) to its PUBACK.
        waited: Duration,
    },
    /// A PUBLISH from the broker (already acknowledged to it).
    Command { topic: String, payload: Vec<u8> },
    /// The SUBACK of the command subscription.
    Subscribed { refused: Option<String> },
}

/// Why a session ended (the connection must be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Ended {
    /// The broker refused the CONNECT (its return or reason code).
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    /// No CONNACK in time.
    #[error("no CONNACK within {0:?}")]
    ConnAckTimeout(Duration),
    /// No PINGRESP within the keep-alive interval.
    #[error("no PINGRESP within {0:?}")]
    KeepAliveTimeout(Duration),
    /// The broker sent a DISCONNECT (MQTT 5), with its reason.
    #[error("the broker disconnected: {0}")]
    Disconnected(String),
    /// The broker sent something malformed or out of place.
    #[error("MQTT protocol error: {0}")]
    Protocol(#[from] ProtocolError),
}

/// What the broker sent that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// Bytes that are not a packet.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The first packet was not the CONNACK.
    #[error("expected a CONNACK, got a {0}")]
    ExpectedConnAck(&'static str),
    /// A CONNACK on a connected session.
    #[error("a second CONNACK")]
    SecondConnAck,
    /// A packet a client never gets from a broker, or one the bridge does not use.
    #[error("a {0} from the broker")]
    Unexpected(&'static str),
}

/// Why [`Session::subscribe`] wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscribeError {
    /// Every packet id is in use.
    #[error("no free packet id for the SUBSCRIBE")]
    NoPacketId,
    /// The SUBSCRIBE could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Why [`Session::publish`] did not take an item (it is handed back).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotSent<T> {
    /// Not connected yet, or the window is full: offer it again later.
    NoRoom(T),
    /// Larger than the broker's or our packet limit: it can never be sent.
    TooLarge(T, CodecError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// CONNECT written; waiting for the CONNACK until the deadline.
    Connecting {
        deadline: Instant,
        timeout: Duration,
    },
    Connected,
    /// DISCONNECT written: nothing more goes out.
    Closed,
}

/// One connection's MQTT state. `T` is what the caller keeps per PUBLISH.
#[derive(Debug)]
pub(crate) struct Session<T> {
    version: Version,
    /// Largest packet accepted from the broker.
    max_in: u32,
    /// Largest packet sent (ours, or the broker's if smaller).
    max_out: u32,
    keep_alive: Duration,
    phase: Phase,
    window: usize,
    /// Packet id → (hand-over sequence, when sent, item).
    in_flight: HashMap<u16, (u64, Instant, T)>,
    next_seq: u64,
    next_pkid: u16,
    /// The SUBSCRIBE waiting for its SUBACK.
    subscription: Option<u16>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl<T: Message> Session<T> {
    /// A new session; its CONNECT goes into `out`.
    pub(crate) fn start(
        config: &SessionConfig,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Self, CodecError> {
        codec::encode_connect(config.version, &config.connect, out)?;
        Ok(Session {
            version: config.version,
            max_in: config.connect.max_packet,
            max_out: config.connect.max_packet,
            keep_alive: config.keep_alive,
            phase: Phase::Connecting {
                deadline: now + config.connack_timeout,
                timeout: config.connack_timeout,
            },
            // one packet id stays free for the SUBSCRIBE: with room in the window there is
            // always a free id
            window: config.window.clamp(1, usize::from(u16::MAX) - 1),
            in_flight: HashMap::with_capacity(config.window.min(4096)),
            next_seq: 0,
            next_pkid: 1,
            subscription: None,
            last_sent: now,
            ping_sent: None,
        })
    }

    /// Whether the CONNACK has come (and no DISCONNECT was sent).
    pub(crate) fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// PUBLISHes waiting for their PUBACK.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The window in force (the configured one, or the broker's Receive Maximum if smaller).
    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// Whether [`publish`](Self::publish) would take another item now.
    pub(crate) fn has_room(&self) -> bool {
        self.is_connected() && self.in_flight.len() < self.window
    }

    /// Writes a QoS 1 PUBLISH into `out` and keeps `item` until its PUBACK.
    pub(crate) fn publish(
        &mut self,
        item: T,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<(), NotSent<T>> {
        if !self.has_room() {
            return Err(NotSent::NoRoom(item));
        }
        let Some(pkid) = self.free_pkid() else {
            return Err(NotSent::NoRoom(item));
        };
        if let Err(e) = codec::encode_publish(
            self.version,
            item.topic(),
            item.payload(),
            item.retain(),
            pkid,
            self.max_out,
            out,
        ) {
            return Err(NotSent::TooLarge(item, e));
        }
        self.next_pkid = pkid.checked_add(1).unwrap_or(1);
        self.in_flight.insert(pkid, (self.next_seq, now, item));
        self.next_seq += 1;
        self.last_sent = now;
        Ok(())
    }

    /// Writes a SUBSCRIBE of `filter` at QoS 1 into `out`; its SUBACK comes out as
    /// [`Output::Subscribed`].
    pub(crate) fn subscribe(
        &mut self,
        filter: &str,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<(), SubscribeError> {
        let pkid = self.free_pkid().ok_or(SubscribeError::NoPacketId)?;
        codec::encode_subscribe(self.version, pkid, filter, out)?;
        self.next_pkid = pkid.checked_add(1).unwrap_or(1);
        self.subscription = Some(pkid);
        self.last_sent = now;
        Ok(())
    }

    /// Writes a DISCONNECT into `out`; nothing more is sent.
    pub(crate) fn disconnect(&mut self, out: &mut BytesMut) {
        if self.phase != Phase::Closed {
            codec::encode_disconnect(self.version, out);
            self.phase = Phase::Closed;
        }
    }

    /// A packet id used by nothing in flight (ids run 1…65535 and wrap).
    fn free_pkid(&self) -> Option<u16> {
        let mut pkid = self.next_pkid.max(1);
        for _ in 0..u16::MAX {
            if !self.in_flight.contains_key(&pkid) && self.subscription != Some(pkid) {
                return Some(pkid);
            }
            pkid = pkid.checked_add(1).unwrap_or(1);
        }
        None
    }

    /// Takes the broker's packets off the front of `input` until one needs the caller
    /// (`Ok(Some)`) or the rest is an incomplete packet (`Ok(None)`: read more). Answers the
    /// broker needs (PUBACK, PUBREC, PUBCOMP) go into `out`.
    pub(crate) fn handle_input(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Option<Output<T>>, Ended> {
        while let Some(packet) =
            codec::decode(self.version, input, self.max_in).map_err(ProtocolError::from)?
        {
            if let Some(output) = self.handle_packet(packet, now, out)? {
                return Ok(Some(output));
            }
        }
        Ok(None)
    }

    fn handle_packet(
        &mut self,
        packet: Incoming,
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Option<Output<T>>, Ended> {
        if let Phase::Connecting { .. } = self.phase {
            return match packet {
                Incoming::ConnAck {
                    refused: Some(code),
                    ..
                } => Err(Ended::Refused(code)),
                Incoming::ConnAck {
                    refused: None,
                    receive_max,
                    max_packet,
                    keep_alive,
                } => {
                    self.phase = Phase::Connected;
                    if let Some(max) = receive_max {
                        self.window = self.window.min(usize::from(max.max(1)));
                    }
                    if let Some(max) = max_packet {
                        self.max_out = self.max_out.min(max);
                    }
                    if let Some(secs) = keep_alive {
                        // MQTT 5 §3.2.2.3.14: the server's keep-alive replaces ours
                        self.keep_alive = Duration::from_secs(u64::from(secs));
                    }
                    Ok(Some(Output::Connected))
                }
                other => Err(ProtocolError::ExpectedConnAck(other.name()).into()),
            };
        }
        match packet {
            Incoming::ConnAck { .. } => Err(ProtocolError::SecondConnAck.into()),
            Incoming::PubAck { pkid, refused } => match self.in_flight.remove(&pkid) {
                Some((_, sent, item)) => Ok(Some(Output::Acked {
                    item,
                    refused,
                    waited: now.saturating_duration_since(sent),
                })),
                None => {
                    tracing::debug!(pkid, "PUBACK for a packet id not in flight; ignored");
                    Ok(None)
                }
            },
            Incoming::Publish {
                topic,
                payload,
                qos,
                pkid,
            } => {
                match qos {
                    1 => codec::encode_puback(self.version, pkid, out),
                    2 => codec::encode_pubrec(self.version, pkid, out),
                    _ => {}
                }
                if qos > 0 {
                    self.last_sent = now;
                }
                Ok(Some(Output::Command { topic, payload }))
            }
            Incoming::PubRel { pkid } => {
                codec::encode_pubcomp(self.version, pkid, out);
                self.last_sent = now;
                Ok(None)
            }
            Incoming::SubAck { pkid, refused } if self.subscription == Some(pkid) => {
                self.subscription = None;
                Ok(Some(Output::Subscribed { refused }))
            }
            Incoming::SubAck { pkid, .. } => {
                tracing::debug!(pkid, "SUBACK for a packet id not subscribed; ignored");
                Ok(None)
            }
            Incoming::PingResp => {
                self.ping_sent = None;
                Ok(None)
            }
            Incoming::Disconnect { reason } => Err(Ended::Disconnected(reason)),
            Incoming::Unexpected(what) => Err(ProtocolError::Unexpected(what).into()),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next: the CONNACK deadline, the
    /// next ping, or the PINGRESP deadline.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline, .. } => Some(deadline),
            Phase::Closed => None,
            Phase::Connected if self.keep_alive.is_zero() => None,
            Phase::Connected => Some(self.ping_sent.unwrap_or(self.last_sent) + self.keep_alive),
        }
    }

    /// Time has passed: a PINGREQ into `out` when nothing was sent for the keep-alive
    /// interval, or the end when a CONNACK or PINGRESP is overdue. Early calls do nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut BytesMut) -> Result<(), Ended> {
        match self.phase {
            Phase::Connecting { deadline, timeout } if now >= deadline => {
                Err(Ended::ConnAckTimeout(timeout))
            }
            Phase::Connected if !self.keep_alive.is_zero() => {
                match self.ping_sent {
                    Some(sent) if now >= sent + self.keep_alive => {
                        return Err(Ended::KeepAliveTimeout(self.keep_alive));
                    }
                    None if now >= self.last_sent + self.keep_alive => {
                        codec::encode_pingreq(self.version, out);
                        self.ping_sent = Some(now);
                        self.last_sent = now;
                    }
                    _ => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Ends the session: every item not acknowledged, in hand-over order.
    pub(crate) fn into_unacked(self) -> Vec<T> {
        let mut items: Vec<(u64, Instant, T)> = self.in_flight.into_values().collect();
        items.sort_by_key(|(seq, _, _)| *seq);
        items.into_iter().map(|(_, _, item)| item).collect()
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
