//! The gateway's memory of OSCORE exchanges in flight:
//!
//! - server side: the [`RequestInfo`] of each verified request, by peer and token, until the
//!   ingress answers it (which may be after the outbox fsync); an exchange is never replaced by
//!   another device's with the same peer and token (two devices at one address);
//! - client side: the [`RequestInfo`] of each request the edge protected, by token (the edge's
//!   tokens are unique; a device that moved answers from its new address), until its response
//!   or, for an observation, as long as it lives: a response is verified with the context of the
//!   request its token belongs to, never by who sends from the address;
//! - the protected bytes of each Confirmable request the edge sent, by message ID and token
//!   (and its kid), so a retransmission resends the same bytes (same Partial IV) instead of
//!   protecting anew, wherever the device is now; and which address each last went to, by
//!   (address, message ID), so an empty ACK from there is known as expected in O(1);
//! - deduplication of incoming OSCORE messages by peer, message ID and a fingerprint of the
//!   OSCORE option and ciphertext (a retransmission is the same bytes; another device's message
//!   from the same address with the same message ID is not): a retransmitted request cannot be
//!   verified twice (its Partial IV is in the replay window), so the gateway answers it from
//!   here: nothing while the first is pending, the same protected answer once sent; a
//!   retransmitted response is handed to the ingress again as the inner message it verified to,
//!   with the device it verified as.
//!
//! Everything expires after EXCHANGE_LIFETIME (observations after [`OBSERVATION_LIFETIME`]) and
//! is bounded per peer, so memory stays bounded whatever the network sends.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet};
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

/// What tells a retransmission (the same bytes) from another message with the same message ID:
/// FNV-1a over the OSCORE option's value and the ciphertext.
pub(super) fn fingerprint(packet: &Packet) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let option = packet
        .get_first_option(CoapOption::Oscore)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in option.iter().chain([0xff].iter()).chain(&packet.payload) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// A verified request awaiting the ingress's answer.
pub(super) struct ServerExchange {
    pub(super) kid: Vec<u8>,
    pub(super) info: RequestInfo,
    pub(super) since: Instant,
    /// The request's message ID and fingerprint, and its type, to remember the answer for
    /// retransmissions.
    pub(super) message: (u16, u64),
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
    /// A verified response or notification: its inner message and the device it verified as.
    Inner(Box<Packet>, Box<str>),
}

struct Recent {
    message_id: u16,
    fingerprint: u64,
    expires: Instant,
    seen: Seen,
}

/// The protected bytes of a Confirmable request the edge sent, until they expire.
struct Sent {
    kid: Vec<u8>,
    bytes: Box<[u8]>,
    expires: Instant,
    /// Where it went last.
    to: SocketAddr,
}

/// See the module docs.
pub(super) struct Exchanges {
    lifetime: Duration,
    server: HashMap<(SocketAddr, TokenKey), ServerExchange>,
    client: HashMap<TokenKey, ClientExchange>,
    client_order: VecDeque<TokenKey>,
    sent: HashMap<(u16, TokenKey), Sent>,
    /// The request of `sent` that went to an address with a message ID, last.
    sent_to: HashMap<(SocketAddr, u16), TokenKey>,
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
            sent_to: HashMap::new(),
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

    /// Remembers a verified request; `false` (and nothing kept) when a request of another
    /// device from the same peer with the same token awaits its answer.
    pub(super) fn insert_server(
        &mut self,
        peer: SocketAddr,
        token: &[u8],
        x: ServerExchange,
    ) -> bool {
        let key = (peer, token_key(token));
        if self
            .server
            .get(&key)
            .is_some_and(|other| other.kid != x.kid)
        {
            return false;
        }
        self.server.insert(key, x);
        true
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

    /// The protected bytes of `kid`'s request with `message_id` and `token`, if sent already,
    /// to resend to `to` (noted as where it went last).
    pub(super) fn resend(
        &mut self,
        kid: &[u8],
        (message_id, token): (u16, &[u8]),
        to: SocketAddr,
    ) -> Option<&[u8]> {
        let key = token_key(token);
        let s = self
            .sent
            .get_mut(&(message_id, key))
            .filter(|s| s.kid == kid)?;
        if s.to != to {
            if self.sent_to.get(&(s.to, message_id)) == Some(&key) {
                self.sent_to.remove(&(s.to, message_id));
            }
            s.to = to;
            self.sent_to.insert((to, message_id), key);
        }
        Some(&*s.bytes)
    }

    /// Keeps the protected bytes of `kid`'s Confirmable request, sent to `to`, for its
    /// retransmissions.
    pub(super) fn remember_sent(
        &mut self,
        now: Instant,
        kid: &[u8],
        (message_id, token): (u16, &[u8]),
        bytes: &[u8],
        to: SocketAddr,
    ) {
        let key = token_key(token);
        self.sent.insert(
            (message_id, key),
            Sent {
                kid: kid.to_vec(),
                bytes: bytes.into(),
                expires: now + self.lifetime,
                to,
            },
        );
        self.sent_to.insert((to, message_id), key);
    }

    /// True when a protected request of the edge with `message_id` went to `peer` last (an
    /// empty ACK or Reset from there may name it).
    pub(super) fn sent_to(&self, peer: SocketAddr, message_id: u16) -> bool {
        !self.sent_to.is_empty() && self.sent_to.contains_key(&(peer, message_id))
    }

    /// What an earlier message from `peer` with `message_id` and `fingerprint` (the same
    /// bytes: a retransmission) was answered with.
    pub(super) fn seen(
        &self,
        peer: SocketAddr,
        message_id: u16,
        fingerprint: u64,
    ) -> Option<&Seen> {
        self.recent
            .get(&peer)?
            .iter()
            .find(|r| r.message_id == message_id && r.fingerprint == fingerprint)
            .map(|r| &r.seen)
    }

    /// Records (or updates) what the message from `peer` with `message_id` and `fingerprint`
    /// got.
    pub(super) fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        (message_id, fingerprint): (u16, u64),
        seen: Seen,
    ) {
        let list = self.recent.entry(peer).or_default();
        if let Some(r) = list
            .iter_mut()
            .find(|r| r.message_id == message_id && r.fingerprint == fingerprint)
        {
            r.seen = seen;
            return;
        }
        if list.len() >= RECENT_PER_PEER {
            list.pop_front();
        }
        list.push_back(Recent {
            message_id,
            fingerprint,
            expires: now + self.lifetime,
            seen,
        });
    }

    /// Forgets everything about `kid`'s exchanges (its context was dropped or replaced).
    pub(super) fn forget_kid(&mut self, kid: &[u8]) {
        self.server.retain(|_, x| x.kid != kid);
        self.client.retain(|_, x| x.kid != kid);
        self.sent.retain(|_, s| s.kid != kid);
        let sent = &self.sent;
        self.sent_to
            .retain(|(_, message_id), key| sent.contains_key(&(*message_id, *key)));
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
        let sent = &self.sent;
        self.sent_to
            .retain(|(_, message_id), key| sent.contains_key(&(*message_id, *key)));
        self.recent.retain(|_, list| {
            list.retain(|r| r.expires > now);
            !list.is_empty()
        });
    }
}
