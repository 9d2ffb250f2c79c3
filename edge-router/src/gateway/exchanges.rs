//! The gateway's memory of OSCORE exchanges in flight:
//!
//! - server side: the [`RequestInfo`] of each verified request, by peer and token, until the
//!   ingress answers it (which may be after the outbox fsync);
//! - client side: the [`RequestInfo`] of each request the edge protected, by token (the edge's
//!   tokens are unique; a device that moved answers from its new address), until its response
//!   or, for an observation, as long as it lives;
//! - the protected bytes of each Confirmable request the edge sent, by peer and message ID, so
//!   a retransmission resends the same bytes (same Partial IV) instead of protecting anew;
//! - deduplication of incoming OSCORE messages by peer and message ID: a retransmitted request
//!   cannot be verified twice (its Partial IV is in the replay window), so the gateway answers it
//!   from here: nothing while the first is pending, the same protected answer once sent; a
//!   retransmitted response is handed to the ingress again as the inner message it verified to.
//!
//! Everything expires after EXCHANGE_LIFETIME (observations after [`OBSERVATION_LIFETIME`]) and
//! is bounded per peer, so memory stays bounded whatever the network sends.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::Packet;
use v6iot_sdk::oscore::RequestInfo;

/// How long the edge keeps the context of an observation it made (its notifications carry the
/// request's binding); devices re-register at least daily, which makes new observations.
pub(super) const OBSERVATION_LIFETIME: Duration = Duration::from_secs(26 * 3600);

/// Messages remembered per peer for deduplication.
const RECENT_PER_PEER: usize = 8;
/// Client exchanges at most (the oldest go first).
const MAX_CLIENT: usize = 1 << 16;

/// A token (0 to 8 bytes) as a fixed-size key: its length, then its bytes.
pub(super) type TokenKey = [u8; 9];

/// The key of `token` (longer tokens cannot come from the codec; they are cut to 8 bytes).
pub(super) fn token_key(token: &[u8]) -> TokenKey {
    let mut key = [0u8; 9];
    let len = token.len().min(8);
    key[0] = len as u8;
    for (k, t) in key.iter_mut().skip(1).zip(token) {
        *k = *t;
    }
    key
}

/// A verified request awaiting the ingress's answer.
pub(super) struct ServerExchange {
    pub(super) kid: Vec<u8>,
    pub(super) info: RequestInfo,
    pub(super) since: Instant,
    /// The request's message ID and type, to remember the answer for retransmissions.
    pub(super) message_id: u16,
    pub(super) confirmable: bool,
}

/// A request the edge protected, awaiting its response (or notifications).
pub(super) struct ClientExchange {
    pub(super) kid: Vec<u8>,
    pub(super) info: RequestInfo,
    pub(super) observe: bool,
    pub(super) since: Instant,
}

/// What an incoming OSCORE message was answered with.
#[derive(Debug, Clone)]
pub(super) enum Seen {
    /// A verified request whose answer is not out yet.
    Pending,
    /// A request answered with these bytes (resent to a Confirmable retransmission).
    Answered(Box<[u8]>),
    /// A request answered without anything to repeat (non-confirmable).
    Silent,
    /// A verified response or notification: its inner message.
    Inner(Box<Packet>),
}

struct Recent {
    message_id: u16,
    expires: Instant,
    seen: Seen,
}

/// The protected bytes of a Confirmable request the edge sent, until they expire.
struct Sent {
    bytes: Box<[u8]>,
    expires: Instant,
}

/// See the module docs.
pub(super) struct Exchanges {
    lifetime: Duration,
    server: HashMap<(SocketAddr, TokenKey), ServerExchange>,
    client: HashMap<TokenKey, ClientExchange>,
    client_order: VecDeque<TokenKey>,
    sent: HashMap<(SocketAddr, u16), Sent>,
    recent: HashMap<SocketAddr, VecDeque<Recent>>,
}

impl Exchanges {
    pub(super) fn new(lifetime: Duration) -> Exchanges {
        Exchanges {
            lifetime,
            server: HashMap::new(),
            client: HashMap::new(),
            client_order: VecDeque::new(),
            sent: HashMap::new(),
            recent: HashMap::new(),
        }
    }

    /// True when anything is kept (the sweep timer runs).
    pub(super) fn is_busy(&self) -> bool {
        !(self.server.is_empty()
            && self.client.is_empty()
            && self.sent.is_empty()
            && self.recent.is_empty())
    }

    pub(super) fn insert_server(&mut self, peer: SocketAddr, token: &[u8], x: ServerExchange) {
        self.server.insert((peer, token_key(token)), x);
    }

    /// True when a verified request from `peer` with `token` awaits its answer.
    pub(super) fn has_server(&self, peer: SocketAddr, token: &[u8]) -> bool {
        !self.server.is_empty() && self.server.contains_key(&(peer, token_key(token)))
    }

    pub(super) fn take_server(&mut self, peer: SocketAddr, token: &[u8]) -> Option<ServerExchange> {
        self.server.remove(&(peer, token_key(token)))
    }

    pub(super) fn insert_client(&mut self, token: &[u8], x: ClientExchange) {
        let key = token_key(token);
        if self.client.len() >= MAX_CLIENT
            && let Some(oldest) = self.client_order.pop_front()
        {
            self.client.remove(&oldest);
        }
        self.client_order.push_back(key);
        self.client.insert(key, x);
    }

    /// True when `token` is one of the edge's requests awaiting a response or notifications.
    pub(super) fn has_client(&self, token: &[u8]) -> bool {
        self.client.contains_key(&token_key(token))
    }

    pub(super) fn client_mut(&mut self, token: &[u8]) -> Option<&mut ClientExchange> {
        self.client.get_mut(&token_key(token))
    }

    /// Ends a (non-observe) client exchange after its response.
    pub(super) fn end_client(&mut self, token: &[u8]) {
        self.client.remove(&token_key(token));
    }

    /// The protected bytes already sent to `peer` with `message_id`.
    pub(super) fn sent(&self, peer: SocketAddr, message_id: u16) -> Option<&[u8]> {
        self.sent.get(&(peer, message_id)).map(|s| &*s.bytes)
    }

    pub(super) fn remember_sent(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        bytes: &[u8],
    ) {
        self.sent.insert(
            (peer, message_id),
            Sent {
                bytes: bytes.into(),
                expires: now + self.lifetime,
            },
        );
    }

    /// What an earlier message from `peer` with `message_id` was answered with.
    pub(super) fn seen(&self, peer: SocketAddr, message_id: u16) -> Option<&Seen> {
        self.recent
            .get(&peer)?
            .iter()
            .find(|r| r.message_id == message_id)
            .map(|r| &r.seen)
    }

    /// Records (or updates) what the message from `peer` with `message_id` got.
    pub(super) fn remember(&mut self, now: Instant, peer: SocketAddr, message_id: u16, seen: Seen) {
        let list = self.recent.entry(peer).or_default();
        if let Some(r) = list.iter_mut().find(|r| r.message_id == message_id) {
            r.seen = seen;
            return;
        }
        if list.len() >= RECENT_PER_PEER {
            list.pop_front();
        }
        list.push_back(Recent {
            message_id,
            expires: now + self.lifetime,
            seen,
        });
    }

    /// Forgets everything about `kid`'s exchanges (its context was dropped or replaced).
    pub(super) fn forget_kid(&mut self, kid: &[u8]) {
        self.server.retain(|_, x| x.kid != kid);
        self.client.retain(|_, x| x.kid != kid);
    }

    /// Drops what expired.
    pub(super) fn sweep(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.server.retain(|_, x| x.since + lifetime > now);
        self.client.retain(|_, x| {
            let limit = if x.observe {
                OBSERVATION_LIFETIME
            } else {
                lifetime
            };
            x.since + limit > now
        });
        let client = &self.client;
        self.client_order.retain(|t| client.contains_key(t));
        self.sent.retain(|_, s| s.expires > now);
        self.recent.retain(|_, list| {
            list.retain(|r| r.expires > now);
            !list.is_empty()
        });
    }
}
