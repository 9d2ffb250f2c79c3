//! The CoAP protocol state machine of one device: reliability, deduplication, Observe,
//! Block-wise, and the client role.
//!
//! [`Endpoint`] owns no socket and no clock. Feed it with [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], drain it with [`Endpoint::poll_transmit`] and
//! [`Endpoint::poll_event`], and wake it at [`Endpoint::poll_timeout`]. Resource handlers and
//! the device's state are passed into each call, so one [`ResourceTree`] serves many endpoints.
//!
//! Every input path answers bad input with a CoAP error code or a counted drop (see [`Stats`]);
//! none panics.
//!
//! One file per concern, all `impl Endpoint` blocks over this module's state:
//!
//! | file | concern |
//! |---|---|
//! | this one | the state, the public types, dispatch of datagrams and timeouts, expiry, events |
//! | `exchange.rs` | message-layer exchanges (RFC 7252 §4): deduplication of message IDs, Confirmable messages in flight and their retransmission, ACK and Reset matching, pings |
//! | `request.rs` | the request check and answer (§5): options, discovery, resource and method, content formats, the handler, separate responses, No-Response (RFC 7967), the answer's packet |
//! | `block.rs` | Block-wise transfers (RFC 7959): Block1 reassembly, Block2 slicing with ETag and Size2 |
//! | `observe.rs` | Observe (RFC 7641): registrations, notifications, their end |
//! | `client.rs` | the client role: this device's requests and their responses |
//! | `secure.rs` | OSCORE (RFC 8613) inside the endpoint |

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::collections::VecDeque;
use core::net::SocketAddr;

use crate::time::Instant;

use coap_lite::MessageType;

use super::config::Config;
use super::resource::{ResourceId, ResourceTree, Ticket};
use super::wire::{self, Token, empty_message};
use crate::oscore::{OscoreError, RequestInfo};
use block::Upload;
use exchange::{InFlight, Purpose, Seen};
use observe::Observer;
use request::Deferred;

mod block;
mod client;
mod exchange;
mod observe;
mod request;
mod secure;

pub use client::{ClientRequest, ClientResponse, RequestId, RequestOutcome};
pub use secure::OscoreStats;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The CoAP message.
    pub contents: Vec<u8>,
}

/// Why an observation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserveEnd {
    /// The client sent GET with Observe = 1.
    Deregistered,
    /// The client answered a notification with Reset.
    Reset,
    /// A Confirmable notification was never acknowledged.
    Timeout,
    /// The resource answered with an error, which ends the observation (RFC 7641 §3.2).
    Error,
    /// A newer registration from the same client and token replaced it.
    Replaced,
}

/// Something the application may want to know. The queue keeps the newest 32.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client began observing a resource.
    ObserveStarted {
        /// The observer.
        peer: SocketAddr,
        /// The resource.
        resource: ResourceId,
    },
    /// An observation ended.
    ObserveEnded {
        /// The observer.
        peer: SocketAddr,
        /// The resource.
        resource: ResourceId,
        /// Why.
        reason: ObserveEnd,
    },
    /// A separate response was never acknowledged, or its request was never answered.
    SeparateResponseFailed {
        /// The client.
        peer: SocketAddr,
    },
    /// An OSCORE message failed verification: a request (answered with the §8.2 error
    /// response, its handler never ran) or a response to this device's request (dropped).
    OscoreRejected {
        /// Who sent it.
        peer: SocketAddr,
        /// Why it failed.
        error: OscoreError,
    },
    /// An unprotected error response (4.xx/5.xx) to one of this device's protected requests,
    /// e.g. the edge's 4.01 "Security context not found" or "Replay detected" (RFC 8613 §8.2).
    /// It is unauthenticated, so it was dropped (the request retries or times out), but it
    /// tells an operator why reports fail; counted in [`OscoreStats::unprotected_errors`].
    UnprotectedError {
        /// Who sent it.
        peer: SocketAddr,
        /// Its response code as on the wire: class · 32 + detail (0x81 is 4.01).
        code: u8,
        /// Its diagnostic payload (lossy UTF-8, at most 64 bytes).
        diagnostic: String,
    },
}

/// Counters of what the endpoint saw and did. Every dropped datagram is counted under its cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed in.
    pub received: u64,
    /// Dropped: not a CoAP message (bad header, version, token length, options).
    pub malformed: u64,
    /// Dropped or re-answered: a message ID seen within EXCHANGE_LIFETIME.
    pub duplicates: u64,
    /// Dropped: an ACK or Reset that matched nothing, a stray response, or an empty NON.
    pub unexpected: u64,
    /// Requests answered (any code).
    pub requests: u64,
    /// Error responses (4.xx, 5.xx) sent.
    pub error_responses: u64,
    /// Resets sent (pings, malformed or unexpected Confirmable messages).
    pub resets_sent: u64,
    /// Notifications sent.
    pub notifications: u64,
    /// Confirmable retransmissions.
    pub retransmissions: u64,
    /// Confirmable messages given up after MAX_RETRANSMIT.
    pub timeouts: u64,
    /// Remembered message IDs forgotten early because the cache was full.
    pub dedup_evictions: u64,
    /// Events dropped because the application did not poll them.
    pub events_dropped: u64,
}

/// Why [`Endpoint::respond_separately`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeparateError {
    /// The ticket names no deferred request (answered already, or expired).
    #[error("no deferred request with this ticket (answered or expired)")]
    UnknownTicket,
}

const MAX_EVENTS: usize = 32;

/// The sans-IO CoAP server state of one device. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    rng: u64,
    next_message_id: u16,
    next_ticket: u32,
    observe_seq: u32,
    seen: VecDeque<Seen>,
    observers: Vec<Observer>,
    in_flight: Vec<InFlight>,
    uploads: Vec<Upload>,
    deferred: Vec<Deferred>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    notify_after: Option<ResourceId>,
    exchanges: Vec<client::Exchange>,
    outcomes: VecDeque<(RequestId, RequestOutcome)>,
    next_request: u32,
    stats: Stats,
    /// OSCORE credentials and state; `None` serves plain CoAP.
    secure: Option<Box<secure::Secure>>,
}

impl Endpoint {
    /// A fresh endpoint. `seed` feeds the message-ID start and retransmission jitter; give each
    /// device a different one (any value, e.g. from its serial number).
    pub fn new(config: Config, seed: u64) -> Endpoint {
        let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        let first = splitmix64(&mut rng);
        Endpoint {
            config,
            rng,
            next_message_id: first as u16,
            next_ticket: 0,
            observe_seq: (first >> 16) as u32 & 0xff,
            seen: VecDeque::new(),
            observers: Vec::new(),
            in_flight: Vec::new(),
            uploads: Vec::new(),
            deferred: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            notify_after: None,
            exchanges: Vec::new(),
            outcomes: VecDeque::new(),
            next_request: 0,
            stats: Stats::default(),
            secure: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of active observations.
    pub fn observer_count(&self) -> usize {
        self.observers.len()
    }

    /// Bytes this endpoint holds: the struct and everything it owns on the heap.
    pub fn memory_footprint(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.seen.capacity() * core::mem::size_of::<Seen>()
            + self
                .seen
                .iter()
                .map(|s| s.reply.as_ref().map_or(0, |r| r.len()))
                .sum::<usize>()
            + self.observers.capacity() * core::mem::size_of::<Observer>()
            + self.in_flight.capacity() * core::mem::size_of::<InFlight>()
            + self
                .in_flight
                .iter()
                .map(|f| f.contents.len())
                .sum::<usize>()
            + self.uploads.capacity() * core::mem::size_of::<Upload>()
            + self
                .uploads
                .iter()
                .map(|u| u.body.capacity())
                .sum::<usize>()
            + self.deferred.capacity() * core::mem::size_of::<Deferred>()
            + self.transmits.capacity() * core::mem::size_of::<Transmit>()
            + self
                .transmits
                .iter()
                .map(|t| t.contents.capacity())
                .sum::<usize>()
            + self.events.capacity() * core::mem::size_of::<Event>()
            + self.exchanges.capacity() * core::mem::size_of::<client::Exchange>()
            + self.outcomes.capacity() * core::mem::size_of::<(RequestId, RequestOutcome)>()
            + self.secure.as_ref().map_or(0, |s| s.memory_footprint())
            + self.bindings() * core::mem::size_of::<RequestInfo>()
    }

    /// OSCORE request bindings held for observers, deferred answers and pending requests.
    fn bindings(&self) -> usize {
        self.observers.iter().filter(|o| o.oscore.is_some()).count()
            + self.deferred.iter().filter(|d| d.oscore.is_some()).count()
            + self.exchanges.iter().filter(|x| x.has_binding()).count()
    }

    /// The next datagram to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next application event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called, if anything is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.in_flight.iter().map(|f| f.next_at);
        let seen = self.seen.iter().map(|s| s.expires);
        let uploads = self.uploads.iter().map(|u| u.expires);
        let deferred = self.deferred.iter().map(|d| d.expires);
        retransmit
            .chain(seen)
            .chain(uploads)
            .chain(deferred)
            .chain(self.request_deadline())
            .min()
    }

    /// Lets time pass: retransmits, gives up, and forgets what has expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.retransmit_due(now);
    }

    /// Handles one datagram from `peer`.
    pub fn handle_datagram<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        bytes: &[u8],
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        self.expire(now);
        self.stats.received += 1;
        let Ok(header) = wire::raw_header(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let packet = match wire::parse(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed += 1;
                if header.kind == MessageType::Confirmable {
                    self.send_reset(peer, header.message_id);
                }
                return;
            }
        };
        let class = wire::code_class(header.code);
        match (header.code, header.kind) {
            (0, kind) => self.handle_empty(now, peer, header.message_id, kind),
            (_, MessageType::Reset) => self.stats.unexpected += 1,
            (_, MessageType::Confirmable | MessageType::NonConfirmable)
                if self.repeat_reply(peer, header.message_id, header.kind) => {}
            (_, MessageType::Confirmable | MessageType::NonConfirmable) if class == 0 => {
                self.handle_request(now, peer, &packet, tree, state);
            }
            (_, kind) if (2..=5).contains(&class) => {
                if !self.handle_response(now, peer, &packet) {
                    // A response we did not ask for (RFC 7252 §4.2: reject a Confirmable one).
                    self.stats.unexpected += 1;
                    if kind == MessageType::Confirmable {
                        self.send_reset(peer, header.message_id);
                    }
                }
            }
            (_, MessageType::Confirmable) => {
                // A reserved code class (RFC 7252 §4.2: reject).
                self.stats.unexpected += 1;
                self.send_reset(peer, header.message_id);
            }
            _ => self.stats.unexpected += 1,
        }
    }

    // ----- bookkeeping -----

    fn expire(&mut self, now: Instant) {
        while self.seen.front().is_some_and(|s| s.expires <= now) {
            self.seen.pop_front();
        }
        self.uploads.retain(|u| u.expires > now);
        self.expire_requests(now);
        let mut failed = Vec::new();
        self.deferred.retain(|d| {
            let keep = d.expires > now;
            if !keep {
                failed.push(d.peer);
            }
            keep
        });
        for peer in failed {
            self.push_event(Event::SeparateResponseFailed { peer });
        }
        if self.seen.is_empty() && self.seen.capacity() > 0 {
            self.seen = VecDeque::new();
        }
        if self.transmits.is_empty() && self.transmits.capacity() > 8 {
            self.transmits = VecDeque::new();
        }
    }

    /// Gives back the buffers of the collections that are empty now (exchanges, messages in
    /// flight, outcomes, uploads, deferred requests, events, datagrams to send): an idle
    /// endpoint holds no heap but what it remembers (observers, message IDs seen, OSCORE). The
    /// device calls it after each input, so a device that reports now and then is idle, not
    /// sized for its busiest moment, in between.
    pub(crate) fn release_idle_buffers(&mut self) {
        fn release<T>(v: &mut Vec<T>) {
            if v.is_empty() && v.capacity() > 0 {
                *v = Vec::new();
            }
        }
        fn release_deque<T>(v: &mut VecDeque<T>) {
            if v.is_empty() && v.capacity() > 0 {
                *v = VecDeque::new();
            }
        }
        release(&mut self.in_flight);
        release(&mut self.exchanges);
        release(&mut self.uploads);
        release(&mut self.deferred);
        release_deque(&mut self.outcomes);
        release_deque(&mut self.events);
        release_deque(&mut self.transmits);
        release_deque(&mut self.seen);
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn take_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = id.wrapping_add(1);
        id
    }

    fn take_ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket = self.next_ticket.wrapping_add(1);
        t
    }

    fn take_observe_seq(&mut self) -> u32 {
        self.observe_seq = (self.observe_seq + 1) & 0x00ff_ffff;
        self.observe_seq
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
