//! The CoAP server state machine of one device: reliability, deduplication, Observe, Block-wise.
//!
//! [`Endpoint`] owns no socket and no clock. Feed it with [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], drain it with [`Endpoint::poll_transmit`] and
//! [`Endpoint::poll_event`], and wake it at [`Endpoint::poll_timeout`]. Resource handlers and
//! the device's state are passed into each call, so one [`ResourceTree`] serves many endpoints.
//!
//! Every input path answers bad input with a CoAP error code or a counted drop (see [`Stats`]);
//! none panics.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::string::ToString;
use alloc::vec::Vec;

use alloc::collections::VecDeque;
use core::net::SocketAddr;
use core::time::Duration;

use crate::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::config::Config;
use super::resource::{
    Code, Method, Reply, Request, ResourceId, ResourceTree, Response, Ticket, WELL_KNOWN_CORE,
    content_format,
};
use super::wire::{self, Block, Token, empty_message};
use crate::oscore::{OscoreError, RequestInfo};
use secure::{Admit, Gate};

mod client;
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

/// A message ID seen recently, with the reply to repeat if it comes again.
#[derive(Debug)]
struct Seen {
    peer: SocketAddr,
    message_id: u16,
    expires: Instant,
    reply: Option<Box<[u8]>>,
}

#[derive(Debug)]
struct Observer {
    peer: SocketAddr,
    token: Token,
    resource: ResourceId,
    accept: Option<u16>,
    last_confirmable: Instant,
    last_message_id: u16,
    /// With OSCORE: the registration's binding, which every notification is protected with.
    oscore: Option<Box<RequestInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Notification(Token),
    Separate,
    Request(RequestId),
}

/// A Confirmable message awaiting its ACK.
#[derive(Debug)]
struct InFlight {
    peer: SocketAddr,
    message_id: u16,
    contents: Box<[u8]>,
    next_at: Instant,
    timeout: Duration,
    retransmits: u8,
    purpose: Purpose,
}

/// A Block1 upload being put together (RFC 7959 §2.5).
#[derive(Debug)]
struct Upload {
    peer: SocketAddr,
    resource: ResourceId,
    body: Vec<u8>,
    content_format: Option<u16>,
    expires: Instant,
}

/// A request whose handler chose to answer later.
#[derive(Debug)]
struct Deferred {
    ticket: Ticket,
    peer: SocketAddr,
    token: Token,
    confirmable: bool,
    expires: Instant,
    /// With OSCORE: the request's binding for the separate response.
    oscore: Option<Box<RequestInfo>>,
}

/// The answer to a request, before it becomes a message.
#[derive(Debug)]
struct Answer {
    response: Response,
    observe: Option<u32>,
    block1: Option<Block>,
    block2: Option<Block>,
    size1: Option<u32>,
    size2: Option<u32>,
    etag: Option<[u8; 4]>,
}

impl Answer {
    fn of(response: Response) -> Answer {
        Answer {
            response,
            observe: None,
            block1: None,
            block2: None,
            size1: None,
            size2: None,
            etag: None,
        }
    }

    fn error(code: Code, diagnostic: impl Into<String>) -> Answer {
        Answer::of(Response::error(code, diagnostic))
    }
}

/// A reassembled Block1 body and its content format.
type WholeBody = (Vec<u8>, Option<u16>);

enum Outcome {
    Answer(Answer),
    Deferred,
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
        let max_retransmit = self.config.max_retransmit;
        let mut gave_up = Vec::new();
        for f in &mut self.in_flight {
            if f.next_at > now {
                continue;
            }
            if f.retransmits >= max_retransmit {
                gave_up.push((f.peer, f.message_id, f.purpose));
                continue;
            }
            f.retransmits += 1;
            f.timeout = f.timeout.saturating_mul(2);
            f.next_at = now + f.timeout;
            self.stats.retransmissions += 1;
            self.transmits.push_back(Transmit {
                destination: f.peer,
                contents: f.contents.to_vec(),
            });
        }
        for (peer, message_id, purpose) in gave_up {
            self.in_flight
                .retain(|f| !(f.peer == peer && f.message_id == message_id));
            self.stats.timeouts += 1;
            self.end_for(peer, purpose, ObserveEnd::Timeout);
        }
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

    /// Sends the answer to a request whose handler returned [`Reply::Separate`].
    pub fn respond_separately(
        &mut self,
        now: Instant,
        ticket: Ticket,
        response: Response,
    ) -> Result<(), SeparateError> {
        let pos = self
            .deferred
            .iter()
            .position(|d| d.ticket == ticket)
            .ok_or(SeparateError::UnknownTicket)?;
        let d = self.deferred.swap_remove(pos);
        let answer = self.finish_block2(Answer::of(response), None);
        let kind = if d.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let message_id = self.take_message_id();
        let mut info = d.oscore;
        let packet = build_packet(kind, message_id, d.token, &answer);
        let Some(contents) = self.seal_answer(d.peer, &packet, info.as_deref_mut()) else {
            return Ok(());
        };
        self.count_answer(&answer);
        if d.confirmable {
            self.send_confirmable(now, d.peer, message_id, contents, Purpose::Separate);
        } else {
            self.transmits.push_back(Transmit {
                destination: d.peer,
                contents,
            });
        }
        Ok(())
    }

    /// Sends notifications of `resource`'s current state to its observers (RFC 7641 §4.2).
    pub fn notify<S>(
        &mut self,
        now: Instant,
        resource: ResourceId,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let Some(res) = tree.get(resource) else {
            return;
        };
        let Some(get) = res.handler(Method::Get) else {
            return;
        };
        let mut i = 0;
        while let Some(obs) = self.observers.get(i) {
            if obs.resource != resource {
                i += 1;
                continue;
            }
            let (peer, token, accept, last_confirmable) =
                (obs.peer, obs.token, obs.accept, obs.last_confirmable);
            if self.secure.is_some() && obs.oscore.is_none() {
                // Registered before the credentials: nothing to protect its notifications with.
                i += 1;
                continue;
            }
            let ticket = self.take_ticket();
            let request = Request {
                method: Method::Get,
                path: res.path(),
                query: &[],
                content_format: None,
                accept,
                payload: &[],
                peer,
                now,
                ticket,
            };
            let Reply::Now(response) = get(state, &request) else {
                i += 1;
                continue;
            };
            let success = response.is_success();
            let mut answer = self.finish_block2(Answer::of(response), None);
            if success {
                answer.observe = Some(self.take_observe_seq());
            }
            let pending = self
                .in_flight
                .iter()
                .position(|f| f.peer == peer && f.purpose == Purpose::Notification(token));
            let confirmable = pending.is_some()
                || now.saturating_duration_since(last_confirmable)
                    >= self.config.con_notification_interval;
            let kind = if confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let message_id = self.take_message_id();
            let packet = build_packet(kind, message_id, token, &answer);
            let contents = match (self.secure.as_deref_mut(), self.observers.get_mut(i)) {
                (Some(secure), Some(obs)) => match obs.oscore.as_deref_mut() {
                    Some(info) => match secure.seal_response(&packet, info, true) {
                        Ok(Some(p)) => wire::encode(&p),
                        Ok(None) => {
                            // No sequence number below the durable mark: notify once it is.
                            secure.hold_notification(resource);
                            None
                        }
                        Err(_) => None,
                    },
                    None => None,
                },
                _ => wire::encode(&packet),
            };
            let Some(contents) = contents else {
                i += 1;
                continue;
            };
            self.stats.notifications += 1;
            if let Some(obs) = self.observers.get_mut(i) {
                obs.last_message_id = message_id;
                if confirmable {
                    obs.last_confirmable = now;
                }
            }
            match pending.and_then(|p| self.in_flight.get_mut(p)) {
                // RFC 7641 §4.5.2: a newer notification replaces the one still in flight and
                // inherits its retransmission state.
                Some(f) => {
                    f.message_id = message_id;
                    f.contents = contents.clone().into_boxed_slice();
                    self.transmits.push_back(Transmit {
                        destination: peer,
                        contents,
                    });
                }
                None if confirmable => self.send_confirmable(
                    now,
                    peer,
                    message_id,
                    contents,
                    Purpose::Notification(token),
                ),
                None => self.transmits.push_back(Transmit {
                    destination: peer,
                    contents,
                }),
            }
            if success {
                i += 1;
            } else {
                self.observers.remove(i);
                self.push_event(Event::ObserveEnded {
                    peer,
                    resource,
                    reason: ObserveEnd::Error,
                });
            }
        }
    }

    // ----- input paths -----

    /// A Confirmable or Non-confirmable message ID seen within EXCHANGE_LIFETIME: repeat the
    /// reply to a Confirmable one, drop either (RFC 7252 §4.5). True when it was a duplicate.
    fn repeat_reply(&mut self, peer: SocketAddr, message_id: u16, kind: MessageType) -> bool {
        let Some(seen) = self
            .seen
            .iter()
            .find(|s| s.peer == peer && s.message_id == message_id)
        else {
            return false;
        };
        self.stats.duplicates += 1;
        if let Some(reply) = seen
            .reply
            .as_ref()
            .filter(|_| kind == MessageType::Confirmable)
        {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: reply.to_vec(),
            });
        }
        true
    }

    fn handle_empty(&mut self, now: Instant, peer: SocketAddr, message_id: u16, kind: MessageType) {
        match kind {
            // CoAP ping (RFC 7252 §4.3): answer with Reset.
            MessageType::Confirmable => self.send_reset(peer, message_id),
            MessageType::Acknowledgement => {
                if let Some(pos) = self
                    .in_flight
                    .iter()
                    .position(|f| f.peer == peer && f.message_id == message_id)
                {
                    let f = self.in_flight.swap_remove(pos);
                    if let Purpose::Request(id) = f.purpose {
                        self.request_acknowledged(now, id);
                    }
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::Reset => {
                if let Some(pos) = self
                    .in_flight
                    .iter()
                    .position(|f| f.peer == peer && f.message_id == message_id)
                {
                    let f = self.in_flight.swap_remove(pos);
                    self.end_for(peer, f.purpose, ObserveEnd::Reset);
                } else if let Some(pos) = self
                    .observers
                    .iter()
                    .position(|o| o.peer == peer && o.last_message_id == message_id)
                {
                    // Reset of a Non-confirmable notification (RFC 7641 §3.6).
                    let o = self.observers.remove(pos);
                    self.push_event(Event::ObserveEnded {
                        peer,
                        resource: o.resource,
                        reason: ObserveEnd::Reset,
                    });
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::NonConfirmable => self.stats.unexpected += 1,
        }
    }

    fn handle_request<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let token = Token::from_slice(packet.get_token());
        let (packet, info) = match self.secure.as_deref_mut().map(|s| s.gate(packet)) {
            None | Some(Gate::Open) => (alloc::borrow::Cow::Borrowed(packet), None),
            Some(Gate::Verified(request, binding)) => {
                match self.admit(peer, message_id, confirmable, token, request, binding) {
                    Admit::Serve(request, binding) => {
                        (alloc::borrow::Cow::Owned(request), Some(binding))
                    }
                    Admit::Held | Admit::Dropped => {
                        // Its retransmissions are duplicates until the answer exists.
                        self.remember(now, peer, message_id, None);
                        return;
                    }
                }
            }
            Some(Gate::Refused {
                code,
                diagnostic,
                cause,
            }) => {
                if let Some(error) = cause {
                    self.push_event(Event::OscoreRejected { peer, error });
                }
                let answer = Answer::error(code, diagnostic).map_max_age(0);
                self.answer_unprotected(now, peer, packet, token, &answer);
                return;
            }
        };
        self.serve_request(
            now,
            peer,
            message_id,
            confirmable,
            token,
            &packet,
            info,
            tree,
            state,
        );
    }

    /// Serves a request that passed the OSCORE gate (`info`: its binding when it was
    /// protected), answers it and remembers the answer for duplicates.
    #[allow(clippy::too_many_arguments)]
    fn serve_request<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        confirmable: bool,
        token: Token,
        packet: &Packet,
        mut info: Option<Box<RequestInfo>>,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let outcome = self.process(
            now,
            peer,
            packet,
            token,
            confirmable,
            &mut info,
            tree,
            state,
        );
        let reply = match outcome {
            Outcome::Deferred => {
                confirmable.then(|| empty_message(MessageType::Acknowledgement, message_id))
            }
            Outcome::Answer(answer) => {
                self.count_answer(&answer);
                let suppressed = no_response_suppresses(packet, answer.response.code);
                let message = match (confirmable, suppressed) {
                    (true, true) => None,
                    (true, false) => Some(build_packet(
                        MessageType::Acknowledgement,
                        message_id,
                        token,
                        &answer,
                    )),
                    (false, true) => None,
                    (false, false) => {
                        let id = self.take_message_id();
                        Some(build_packet(
                            MessageType::NonConfirmable,
                            id,
                            token,
                            &answer,
                        ))
                    }
                };
                let sealed = message.and_then(|m| self.seal_answer(peer, &m, info.as_deref_mut()));
                if info.is_some() && answer.observe.is_some() {
                    // A registration: its notifications are protected with its binding.
                    if let Some(o) = self
                        .observers
                        .iter_mut()
                        .find(|o| o.peer == peer && o.token == token)
                    {
                        o.oscore = info.take();
                    }
                }
                match sealed {
                    None if confirmable => {
                        Some(empty_message(MessageType::Acknowledgement, message_id))
                    }
                    other => other,
                }
            }
        };
        if let Some(contents) = &reply {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: contents.clone(),
            });
        }
        self.record_reply(now, peer, message_id, reply.filter(|_| confirmable));
        if let Some(id) = self.notify_after.take() {
            self.notify(now, id, tree, state);
        }
    }

    /// Answers a request the OSCORE gate refused, unprotected (§8.2).
    fn answer_unprotected(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        token: Token,
        answer: &Answer,
    ) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        self.count_answer(answer);
        let (kind, id) = if confirmable {
            (MessageType::Acknowledgement, message_id)
        } else {
            (MessageType::NonConfirmable, self.take_message_id())
        };
        let reply = wire::encode(&build_packet(kind, id, token, answer));
        if let Some(contents) = &reply {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: contents.clone(),
            });
        }
        self.remember(now, peer, message_id, reply.filter(|_| confirmable));
    }

    /// The bytes of an answer: protected with the request's binding when there is one (and the
    /// endpoint has credentials), else plain. `None` when it cannot be protected or encoded.
    fn seal_answer(
        &mut self,
        peer: SocketAddr,
        packet: &Packet,
        info: Option<&mut RequestInfo>,
    ) -> Option<Vec<u8>> {
        let (Some(secure), Some(info)) = (self.secure.as_deref_mut(), info) else {
            return wire::encode(packet);
        };
        match secure.seal_response(packet, info, false) {
            Ok(p) => p.and_then(|p| wire::encode(&p)),
            Err(error) => {
                self.push_event(Event::OscoreRejected { peer, error });
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        token: Token,
        confirmable: bool,
        info: &mut Option<Box<RequestInfo>>,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) -> Outcome {
        match self.check_request(now, peer, packet, token, confirmable, info, tree, state) {
            Ok(outcome) => outcome,
            Err(answer) => Outcome::Answer(answer),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_request<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        token: Token,
        confirmable: bool,
        info: &mut Option<Box<RequestInfo>>,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) -> Result<Outcome, Answer> {
        let method = match packet.header.code {
            MessageClass::Request(
                m @ (Method::Get | Method::Put | Method::Post | Method::Delete),
            ) => m,
            other => {
                return Err(Answer::error(
                    Code::MethodNotAllowed,
                    format!("method {other} is not supported"),
                ));
            }
        };
        if packet.get_first_option(CoapOption::Oscore).is_some() {
            // Only an endpoint without credentials sees the option here (RFC 8613 §2).
            return Err(Answer::error(
                Code::BadOption,
                "OSCORE is not configured on this device",
            ));
        }
        if let Some(n) = wire::unknown_critical_option(packet) {
            return Err(Answer::error(
                Code::BadOption,
                format!("unrecognized critical option {n}"),
            ));
        }
        if packet.get_first_option(CoapOption::ProxyUri).is_some()
            || packet.get_first_option(CoapOption::ProxyScheme).is_some()
        {
            return Err(Answer::error(
                Code::ProxyingNotSupported,
                "this device is not a proxy",
            ));
        }
        let path = text_options(packet, CoapOption::UriPath)
            .ok_or_else(|| Answer::error(Code::BadRequest, "Uri-Path is not UTF-8"))?
            .join("/");
        let query = text_options(packet, CoapOption::UriQuery)
            .ok_or_else(|| Answer::error(Code::BadRequest, "Uri-Query is not UTF-8"))?;
        let bad = |name: &str| Answer::error(Code::BadRequest, format!("malformed {name} option"));
        let content_format = wire::uint_option(packet, CoapOption::ContentFormat, 2)
            .map_err(|_| bad("Content-Format"))?
            .map(|v| v as u16);
        let accept = wire::uint_option(packet, CoapOption::Accept, 2)
            .map_err(|_| bad("Accept"))?
            .map(|v| v as u16);
        let observe =
            wire::uint_option(packet, CoapOption::Observe, 3).map_err(|_| bad("Observe"))?;
        let block1 = wire::block_option(packet, CoapOption::Block1).map_err(|_| bad("Block1"))?;
        let block2 = wire::block_option(packet, CoapOption::Block2).map_err(|_| bad("Block2"))?;
        let size1 = wire::uint_option(packet, CoapOption::Size1, 4).map_err(|_| bad("Size1"))?;

        if path == WELL_KNOWN_CORE {
            if method != Method::Get {
                return Err(Answer::error(
                    Code::MethodNotAllowed,
                    "discovery allows GET only",
                ));
            }
            if accept.is_some_and(|a| a != content_format::LINK_FORMAT) {
                return Err(Answer::error(
                    Code::NotAcceptable,
                    "discovery is served as application/link-format (40)",
                ));
            }
            let body = tree.link_format(&query).into_bytes();
            let answer = Answer::of(Response::content(content_format::LINK_FORMAT, body));
            return Ok(Outcome::Answer(self.finish_block2(answer, block2)));
        }

        let id = tree
            .find(&path)
            .ok_or_else(|| Answer::error(Code::NotFound, format!("no resource /{path}")))?;
        let resource = tree
            .get(id)
            .ok_or_else(|| Answer::error(Code::NotFound, format!("no resource /{path}")))?;
        let handler = resource.handler(method).ok_or_else(|| {
            Answer::error(
                Code::MethodNotAllowed,
                format!("/{path} allows {}", resource.methods()),
            )
        })?;

        let formats = &resource.link_attrs().ct;
        let accept = match (method, accept) {
            (Method::Get, Some(a)) if !formats.is_empty() && !formats.contains(&a) => {
                let list: Vec<String> = formats.iter().map(u16::to_string).collect();
                return Err(Answer::error(
                    Code::NotAcceptable,
                    format!("/{path} is served as {}", list.join(", ")),
                ));
            }
            (_, Some(a)) => Some(a),
            (_, None) => formats.first().copied(),
        };

        let mut content_format = content_format;
        let mut body: Option<Vec<u8>> = None;
        let mut block1_reply = None;
        if matches!(method, Method::Put | Method::Post) {
            let accepted = resource.accepted_formats();
            if let Some(cf) = content_format
                && !accepted.is_empty()
                && !accepted.contains(&cf)
            {
                let list: Vec<String> = accepted.iter().map(u16::to_string).collect();
                return Err(Answer::error(
                    Code::UnsupportedContentFormat,
                    format!("/{path} accepts content formats {}", list.join(", ")),
                ));
            }
            content_format = content_format.or_else(|| accepted.first().copied());
            let max_body = self.config.max_body;
            if size1.is_some_and(|s| s as usize > max_body) || packet.payload.len() > max_body {
                let mut answer = Answer::error(
                    Code::RequestEntityTooLarge,
                    format!("bodies are limited to {max_body} bytes"),
                );
                answer.size1 = Some(max_body as u32);
                return Err(answer);
            }
            if let Some(b) = block1 {
                match self.upload(now, peer, id, b, content_format, &packet.payload)? {
                    None => {
                        let mut answer = Answer::of(Response::code(Code::Continue));
                        answer.block1 = Some(Block {
                            num: b.num,
                            more: true,
                            szx: b.szx.min(self.config.block_szx),
                        });
                        return Ok(Outcome::Answer(answer));
                    }
                    Some((whole, cf)) => {
                        body = Some(whole);
                        content_format = cf;
                        block1_reply = Some(Block {
                            num: b.num,
                            more: false,
                            szx: b.szx.min(self.config.block_szx),
                        });
                    }
                }
            }
        }

        // Observe (RFC 7641 §2): 0 registers, 1 deregisters; only on the first block.
        let observable = resource.link_attrs().observable && method == Method::Get;
        let first_block = block2.is_none_or(|b| b.num == 0);
        if observe == Some(1) {
            self.deregister(peer, token);
        }
        let register = observable && observe == Some(0) && first_block;

        let ticket = self.take_ticket();
        let payload = body.as_deref().unwrap_or(&packet.payload);
        let request = Request {
            method,
            path: resource.path(),
            query: &query,
            content_format,
            accept,
            payload,
            peer,
            now,
            ticket,
        };
        let response = match handler(state, &request) {
            Reply::Now(r) => r,
            Reply::Separate => {
                if self.deferred.len() >= usize::from(self.config.max_deferred) {
                    return Err(Answer::error(
                        Code::ServiceUnavailable,
                        "too many requests in progress",
                    )
                    .map_max_age(2));
                }
                let expires = now + self.config.exchange_lifetime();
                self.deferred.push(Deferred {
                    ticket,
                    peer,
                    token,
                    confirmable,
                    expires,
                    oscore: info.take(),
                });
                return Ok(Outcome::Deferred);
            }
        };
        let success = response.is_success();
        let mut answer = Answer::of(response);
        answer.block1 = block1_reply;
        let mut answer = if method == Method::Get {
            self.finish_block2(answer, block2)
        } else {
            answer
        };
        if register && success && answer.response.code == Code::Content {
            if self.register(now, peer, token, id, accept) {
                answer.observe = Some(self.take_observe_seq());
            }
        } else if register {
            self.deregister(peer, token);
        }
        if success && method != Method::Get && resource.link_attrs().observable {
            // The state changed: tell the observers once this response is queued.
            self.notify_after = Some(id);
        }
        Ok(Outcome::Answer(answer))
    }

    /// Adds one Block1 piece; the whole body once the last piece is in.
    fn upload(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        resource: ResourceId,
        b: Block,
        content_format: Option<u16>,
        piece: &[u8],
    ) -> Result<Option<WholeBody>, Answer> {
        if b.more && piece.len() != b.size() {
            return Err(Answer::error(
                Code::BadRequest,
                format!(
                    "Block1 #{} carries {} bytes, not {}",
                    b.num,
                    piece.len(),
                    b.size()
                ),
            ));
        }
        let expires = now + self.config.exchange_lifetime();
        let pos = self
            .uploads
            .iter()
            .position(|u| u.peer == peer && u.resource == resource);
        let pos = match (b.num, pos) {
            (0, Some(p)) => {
                if let Some(u) = self.uploads.get_mut(p) {
                    u.body.clear();
                    u.content_format = content_format;
                }
                p
            }
            (0, None) => {
                if self.uploads.len() >= usize::from(self.config.max_uploads.max(1)) {
                    self.uploads.remove(0);
                }
                self.uploads.push(Upload {
                    peer,
                    resource,
                    body: Vec::new(),
                    content_format,
                    expires,
                });
                self.uploads.len() - 1
            }
            (_, Some(p)) => p,
            (n, None) => {
                return Err(Answer::error(
                    Code::RequestEntityIncomplete,
                    format!("Block1 #{n} without the blocks before it"),
                ));
            }
        };
        let max_body = self.config.max_body;
        let Some(u) = self.uploads.get_mut(pos) else {
            return Err(Answer::error(
                Code::InternalServerError,
                "upload state lost",
            ));
        };
        if b.offset() != u.body.len() {
            let have = u.body.len();
            self.uploads.remove(pos);
            return Err(Answer::error(
                Code::RequestEntityIncomplete,
                format!(
                    "Block1 #{} starts at byte {}, expected {have}",
                    b.num,
                    b.offset()
                ),
            ));
        }
        if u.body.len() + piece.len() > max_body {
            self.uploads.remove(pos);
            let mut answer = Answer::error(
                Code::RequestEntityTooLarge,
                format!("bodies are limited to {max_body} bytes"),
            );
            answer.size1 = Some(max_body as u32);
            return Err(answer);
        }
        u.body.extend_from_slice(piece);
        u.expires = expires;
        if b.more {
            return Ok(None);
        }
        let u = self.uploads.remove(pos);
        Ok(Some((u.body, u.content_format)))
    }

    /// Cuts a GET body into the requested (or first) Block2 piece when it needs cutting.
    fn finish_block2(&self, mut answer: Answer, requested: Option<Block>) -> Answer {
        let ours = self.config.block_szx.min(6);
        let len = answer.response.payload.len();
        let szx = requested.map_or(ours, |b| b.szx.min(ours));
        let size = 1usize << (u32::from(szx) + 4);
        if requested.is_none() && len <= size {
            return answer;
        }
        if !answer.response.is_success() {
            return answer;
        }
        // A larger requested block size maps onto ours at the same byte offset (RFC 7959 §2.4).
        let num = requested.map_or(0, |b| {
            if b.szx > szx {
                b.num << (b.szx - szx)
            } else {
                b.num
            }
        });
        let offset = (num as usize).saturating_mul(size);
        if offset > len || (offset == len && len > 0) {
            return Answer::error(
                Code::BadOption,
                format!("Block2 #{num} is past the end of a {len}-byte body"),
            );
        }
        let end = (offset + size).min(len);
        let etag = (wire::fnv1a(&answer.response.payload) as u32).to_be_bytes();
        answer.response.payload = answer
            .response
            .payload
            .get(offset..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        answer.block2 = Some(Block {
            num,
            more: end < len,
            szx,
        });
        answer.size2 = Some(len as u32);
        answer.etag = Some(etag);
        answer
    }

    // ----- observers -----

    fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        resource: ResourceId,
        accept: Option<u16>,
    ) -> bool {
        if let Some(o) = self
            .observers
            .iter_mut()
            .find(|o| o.peer == peer && o.token == token)
        {
            let old = o.resource;
            o.resource = resource;
            o.accept = accept;
            if old != resource {
                self.push_event(Event::ObserveEnded {
                    peer,
                    resource: old,
                    reason: ObserveEnd::Replaced,
                });
                self.push_event(Event::ObserveStarted { peer, resource });
            }
            return true;
        }
        if self.observers.len() >= usize::from(self.config.max_observers) {
            return false;
        }
        self.observers.push(Observer {
            peer,
            token,
            resource,
            accept,
            last_confirmable: now,
            last_message_id: 0,
            oscore: None,
        });
        self.push_event(Event::ObserveStarted { peer, resource });
        true
    }

    fn deregister(&mut self, peer: SocketAddr, token: Token) {
        if let Some(pos) = self
            .observers
            .iter()
            .position(|o| o.peer == peer && o.token == token)
        {
            let o = self.observers.remove(pos);
            self.in_flight
                .retain(|f| !(f.peer == peer && f.purpose == Purpose::Notification(token)));
            self.push_event(Event::ObserveEnded {
                peer,
                resource: o.resource,
                reason: ObserveEnd::Deregistered,
            });
        }
    }

    fn end_for(&mut self, peer: SocketAddr, purpose: Purpose, reason: ObserveEnd) {
        match purpose {
            Purpose::Notification(token) => {
                if let Some(pos) = self
                    .observers
                    .iter()
                    .position(|o| o.peer == peer && o.token == token)
                {
                    let o = self.observers.remove(pos);
                    self.push_event(Event::ObserveEnded {
                        peer,
                        resource: o.resource,
                        reason,
                    });
                }
            }
            Purpose::Separate => {
                if reason == ObserveEnd::Timeout {
                    self.push_event(Event::SeparateResponseFailed { peer });
                }
            }
            Purpose::Request(id) => {
                let outcome = if reason == ObserveEnd::Reset {
                    RequestOutcome::Reset
                } else {
                    RequestOutcome::Timeout
                };
                self.finish_request(id, outcome);
            }
        }
    }

    // ----- output helpers -----

    fn send_confirmable(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        contents: Vec<u8>,
        purpose: Purpose,
    ) {
        let timeout = self.initial_timeout();
        self.in_flight.push(InFlight {
            peer,
            message_id,
            contents: contents.clone().into_boxed_slice(),
            next_at: now + timeout,
            timeout,
            retransmits: 0,
            purpose,
        });
        self.transmits.push_back(Transmit {
            destination: peer,
            contents,
        });
    }

    /// A random duration between ACK_TIMEOUT and ACK_TIMEOUT × ACK_RANDOM_FACTOR (§4.2).
    fn initial_timeout(&mut self) -> Duration {
        let base = self.config.ack_timeout;
        let extra_percent = u64::from(self.config.ack_random_factor_percent.saturating_sub(100));
        let span_ms = (base.as_millis() as u64).saturating_mul(extra_percent) / 100;
        let jitter = if span_ms == 0 {
            0
        } else {
            splitmix64(&mut self.rng) % (span_ms + 1)
        };
        base + Duration::from_millis(jitter)
    }

    fn send_reset(&mut self, peer: SocketAddr, message_id: u16) {
        self.stats.resets_sent += 1;
        self.transmits.push_back(Transmit {
            destination: peer,
            contents: empty_message(MessageType::Reset, message_id),
        });
    }

    fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        reply: Option<Vec<u8>>,
    ) {
        if self.seen.len() >= usize::from(self.config.max_dedup.max(1)) {
            self.seen.pop_front();
            self.stats.dedup_evictions += 1;
        }
        let expires = now + self.config.exchange_lifetime();
        self.seen.push_back(Seen {
            peer,
            message_id,
            expires,
            reply: reply.map(Vec::into_boxed_slice),
        });
    }

    /// Remembers the reply to a request: fills in the entry of a request that was held
    /// (remembered without a reply), or adds one.
    fn record_reply(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        reply: Option<Vec<u8>>,
    ) {
        match self
            .seen
            .iter_mut()
            .find(|s| s.peer == peer && s.message_id == message_id)
        {
            Some(seen) => seen.reply = reply.map(Vec::into_boxed_slice),
            None => self.remember(now, peer, message_id, reply),
        }
    }

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

    fn count_answer(&mut self, answer: &Answer) {
        self.stats.requests += 1;
        if answer.response.code.is_error() {
            self.stats.error_responses += 1;
        }
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

impl Answer {
    fn map_max_age(mut self, seconds: u32) -> Answer {
        self.response.max_age = Some(seconds);
        self
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn text_options(packet: &Packet, option: CoapOption) -> Option<Vec<String>> {
    match packet.get_option(option) {
        None => Some(Vec::new()),
        Some(list) => list
            .iter()
            .map(|v| String::from_utf8(v.clone()).ok())
            .collect(),
    }
}

/// RFC 7967: the No-Response option suppresses classes of answers.
fn no_response_suppresses(packet: &Packet, code: Code) -> bool {
    let Ok(Some(mask)) = wire::uint_option(packet, CoapOption::NoResponse, 1) else {
        return false;
    };
    let class = wire::code_class(u8::from(MessageClass::Response(code)));
    let bit = match class {
        2 => 0x02,
        4 => 0x08,
        5 => 0x10,
        _ => 0,
    };
    mask & bit != 0
}

fn build_packet(kind: MessageType, message_id: u16, token: Token, answer: &Answer) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = message_id;
    p.header.code = MessageClass::Response(answer.response.code);
    p.set_token(token.as_slice().to_vec());
    let r = &answer.response;
    if let Some(etag) = answer.etag {
        p.add_option(CoapOption::ETag, etag.to_vec());
    }
    if let Some(seq) = answer.observe {
        p.add_option(CoapOption::Observe, wire::write_uint(seq));
    }
    for seg in &r.location {
        p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
    }
    if let Some(cf) = r.content_format {
        p.add_option(CoapOption::ContentFormat, wire::write_uint(u32::from(cf)));
    }
    if let Some(age) = r.max_age {
        p.add_option(CoapOption::MaxAge, wire::write_uint(age));
    }
    if let Some(b) = answer.block2 {
        p.add_option(CoapOption::Block2, b.encode());
    }
    if let Some(b) = answer.block1 {
        p.add_option(CoapOption::Block1, b.encode());
    }
    if let Some(s) = answer.size2 {
        p.add_option(CoapOption::Size2, wire::write_uint(s));
    }
    if let Some(s) = answer.size1 {
        p.add_option(CoapOption::Size1, wire::write_uint(s));
    }
    p.payload = r.payload.clone();
    p
}
