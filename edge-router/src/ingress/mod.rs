//! The CoAP ingress of the edge router, sans-IO: registrations (RFC 9176 Resource Directory
//! with LwM2M's binding), telemetry (`POST /t`, SenML-CBOR or SenML-JSON), deduplication, and
//! the rule that a telemetry request is acknowledged only once its record is durable.
//!
//! Datagrams come in through [`Ingress::handle_datagram`]; records to store come out through
//! [`Ingress::poll_append`]; the driver reports each store's result with
//! [`Ingress::handle_appended`], and only then does the device get its ACK (2.04, or 5.03 with
//! Max-Age when the outbox is full). Nothing here touches a socket, a file or a clock.
//!
//! The core knows devices by their source address until the authentication gateway (OSCORE)
//! binds them to a cryptographic identity.

mod commands;
mod counts;
mod dedup;
mod directory;
pub mod downlink;
mod notify;
pub mod observe;
pub mod registry;
mod reply;
#[cfg(test)]
mod sleep_tests;
mod sleepers;
mod telemetry;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_cloud_bridge::message::NewMessage;
use v6iot_cloud_bridge::topics::{Topics, valid_level};
use v6iot_sdk::coap::content_format;
use v6iot_sdk::coap::wire::{self, Token};

pub use counts::{PathKind, RequestCounts};
use dedup::PeerRecent;
pub use downlink::{
    CommandLimits, CommandResult, DeviceAllowList, Downlink, DownlinkCommand, DownlinkStats,
    JournalBatch, JournalEntry, JournalWritten,
};
pub use registry::{Binding, Directory, Registration};
use reply::Reply;

/// Settings of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Topic names for the records.
    pub topics: Topics,
    /// Lifetimes outside this range are clamped into it.
    pub min_lifetime: Duration,
    /// Longest lifetime granted.
    pub max_lifetime: Duration,
    /// Lifetime when a registration names none (RFC 9176 says 90000 s).
    pub default_lifetime: Duration,
    /// Largest request body accepted (registration links or telemetry), in bytes.
    pub max_body: usize,
    /// How long duplicates of a message are recognised (EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// LAB ONLY: accept telemetry from unregistered sources, filed under `anon-{address}`.
    /// For load generators that cannot register (benchmarks); never in production.
    pub lab_accept_unregistered: bool,
    /// How long a queue-mode (`b=UQ`) device listens after each uplink.
    pub listen_window: Duration,
    /// Seeds the message IDs and tokens the ingress chooses (see [`downlink`]); `None` (the
    /// default) draws the seed from the OS when the ingress is made, so they cannot be guessed
    /// from the boot time. Tests and fuzzers pass one for repeatable runs.
    pub random_seed: Option<[u8; 18]>,
    /// Bounds and allow-list of platform commands.
    pub commands: CommandLimits,
}

impl IngressConfig {
    /// Defaults for `topics`.
    pub fn new(topics: Topics) -> IngressConfig {
        IngressConfig {
            topics,
            min_lifetime: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(90_000),
            default_lifetime: Duration::from_secs(90_000),
            max_body: 4096,
            exchange_lifetime: Duration::from_secs(247),
            lab_accept_unregistered: false,
            listen_window: Duration::from_secs(20),
            random_seed: None,
            commands: CommandLimits::default(),
        }
    }
}

/// 18 random bytes from the OS: a token key (16) and a first message ID (2). Should the OS
/// refuse (it does not on Linux), a per-process random hash of `base` stands in.
fn os_seed(base: u64) -> [u8; 18] {
    let mut seed = [0u8; 18];
    if getrandom::fill(&mut seed).is_err() {
        use std::hash::BuildHasher as _;
        let state = foldhash::fast::RandomState::default();
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let h = state.hash_one((base, i)).to_be_bytes();
            for (s, h) in chunk.iter_mut().zip(h) {
                *s = h;
            }
        }
    }
    seed
}

/// Identifies a record waiting to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendTicket(u64);

/// A message for the outbox. With a ticket, a device waits for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// `Some` when a device's acknowledgement waits for this store.
    pub ticket: Option<AppendTicket>,
    /// The message.
    pub message: NewMessage,
}

/// The outcome of storing a record, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// Durable.
    Stored,
    /// The outbox is full; the device should retry after this long.
    Full {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// Storing failed (I/O error); the device gets 5.00 and may retry.
    Failed,
}

/// A datagram the ingress sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where to (and from which of the edge's addresses).
    pub to: Peer,
    /// The message.
    pub bytes: Vec<u8>,
    /// For a request to a device (a command, an observation): the device it is for. The
    /// gateway protects it with that device's own context and sends it where that device is
    /// bound, whoever else the address might belong to now.
    pub device: Option<String>,
}

impl Outgoing {
    /// An answer, an ACK or a Reset to `to`.
    pub(crate) fn answer(to: Peer, bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            to,
            bytes,
            device: None,
        }
    }
}

/// Something worth logging or counting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngressEvent {
    /// A device registered.
    Registered {
        /// Endpoint name.
        endpoint: String,
        /// Its address.
        address: SocketAddr,
    },
    /// A registered device now sends from another address.
    AddressChanged {
        /// Endpoint name.
        endpoint: String,
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// A device deregistered.
    Deregistered {
        /// Endpoint name.
        endpoint: String,
    },
    /// A registration ran out.
    Expired {
        /// Endpoint name.
        endpoint: String,
    },
    /// A command from the platform ended (not the edge's own observation requests).
    CommandDone {
        /// Device.
        endpoint: String,
        /// The platform's request id.
        req: String,
        /// `ok`, `expired`, `timeout`, `reset`, `rejected`.
        status: &'static str,
        /// The device's response code, when it answered.
        code: Option<String>,
    },
    /// A request was refused.
    Refused {
        /// Who sent it.
        peer: SocketAddr,
        /// The code sent.
        code: String,
        /// Why.
        reason: String,
    },
}

/// Counters. Every datagram lands in exactly one of the first group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Not CoAP.
    pub malformed: u64,
    /// Retransmissions recognised.
    pub duplicates: u64,
    /// ACK, RST or responses nobody waited for.
    pub unexpected: u64,
    /// Requests answered or pending.
    pub requests: u64,
    /// Registrations (new or replacing).
    pub registrations: u64,
    /// Registration updates.
    pub updates: u64,
    /// Deregistrations.
    pub deregistrations: u64,
    /// Registrations that expired.
    pub expirations: u64,
    /// Telemetry records stored and acknowledged.
    pub telemetry_stored: u64,
    /// Telemetry refused with 5.03 because the outbox was full.
    pub telemetry_busy: u64,
    /// Requests refused with 4.xx.
    pub refused: u64,
    /// Records that could not be stored (5.00).
    pub store_failures: u64,
}

struct Waiting {
    peer: Peer,
    message_id: u16,
    token: Token,
    confirmable: bool,
    /// An Observe notification (answered with an empty ACK), not a request.
    notification: bool,
}

/// Lab mode: names of unregistered senders kept at most (then the table starts over).
const LAB_NAMES: usize = 4096;

/// Lab mode: the name an unregistered sender's telemetry is filed under, `anon-{peer}`,
/// formatted once per peer (an IPv6 address is slow to format).
fn lab_name(names: &mut HashMap<SocketAddr, String>, peer: SocketAddr) -> &str {
    if names.len() >= LAB_NAMES && !names.contains_key(&peer) {
        names.clear();
    }
    names.entry(peer).or_insert_with(|| format!("anon-{peer}"))
}
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The ingress state machine. See the module docs.
pub struct Ingress {
    config: IngressConfig,
    directory: Directory,
    recent: HashMap<SocketAddr, PeerRecent>,
    /// Lab mode: `anon-{peer}` names (bounded by [`LAB_NAMES`]).
    lab_names: HashMap<SocketAddr, String>,
    waiting: HashMap<AppendTicket, Waiting>,
    appends: VecDeque<Append>,
    transmits: VecDeque<Outgoing>,
    events: VecDeque<IngressEvent>,
    stats: IngressStats,
    next_ticket: u64,
    record_ids: telemetry::RecordIds,
    next_sweep: Option<Instant>,
    next_message_id: u16,
    downlink: Downlink,
    observations: observe::Observations,
    next_observation: u64,
    /// Queue-mode devices: awake in their listening window, asleep after it.
    sleepers: sleepers::Sleepers,
    /// Answered requests by resource and code (a fixed table).
    requests: RequestCounts,
    /// Stopping: new requests get 5.03 with this Max-Age (seconds).
    draining: Option<u32>,
}

const MAX_EVENTS: usize = 1024;

impl Ingress {
    /// A fresh ingress. `record_id_base` makes record ids unique across restarts: pass the
    /// boot time in Unix milliseconds (ids are `base × 2^20 + n`). Message IDs and tokens are
    /// seeded from [`IngressConfig::random_seed`], not from it.
    pub fn new(config: IngressConfig, record_id_base: u64) -> Ingress {
        let seed = config
            .random_seed
            .unwrap_or_else(|| os_seed(record_id_base));
        let [key @ .., m0, m1] = seed;
        let downlink = Downlink::new(key).with_limits(config.commands.clone());
        Ingress {
            config,
            directory: Directory::new(),
            recent: HashMap::new(),
            lab_names: HashMap::new(),
            waiting: HashMap::new(),
            appends: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: IngressStats::default(),
            next_ticket: 0,
            record_ids: telemetry::RecordIds::new(record_id_base),
            next_sweep: None,
            next_message_id: u16::from_be_bytes([m0, m1]),
            downlink,
            observations: observe::Observations::default(),
            next_observation: 0,
            sleepers: sleepers::Sleepers::default(),
            requests: RequestCounts::default(),
            draining: None,
        }
    }

    /// Answered requests by resource and response code.
    pub fn request_counts(&self) -> &RequestCounts {
        &self.requests
    }

    /// From now on (the edge is stopping) every new request is answered 5.03 Service
    /// Unavailable with Max-Age `retry_after_s`; requests already taken (a record being
    /// stored) finish, and retransmissions still get their answer.
    pub fn start_draining(&mut self, retry_after_s: u32) {
        self.draining = Some(retry_after_s);
    }

    /// Whether [`start_draining`](Self::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    fn take_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }

    /// Counters.
    pub fn stats(&self) -> &IngressStats {
        &self.stats
    }

    /// The device directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Next datagram to send: (destination, bytes).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(Peer, Vec<u8>)> {
        self.transmits.pop_front().map(|t| (t.to, t.bytes))
    }

    /// Next datagram to send, with the device a request is for (what the gateway reads).
    #[must_use]
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    fn send(&mut self, to: Peer, bytes: Vec<u8>) {
        self.transmits.push_back(Outgoing::answer(to, bytes));
    }

    /// Next message to store in the outbox.
    #[must_use]
    pub fn poll_append(&mut self) -> Option<Append> {
        self.appends.pop_front()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IngressEvent> {
        self.events.pop_front()
    }

    /// When [`Ingress::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.directory.next_expiry(),
            self.next_sweep,
            self.downlink.poll_timeout(),
            self.sleepers.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expires registrations and forgets old message IDs.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        for device in self.downlink.handle_timeout(now) {
            self.send_next(now, unix_ms, &device);
        }
        self.downlink.expire_queued(unix_ms);
        self.pump_downlink(unix_ms);
        self.publish_sleepers(now, unix_ms);
        for reg in self.directory.expire(now) {
            self.stats.expirations += 1;
            self.observations.forget(&reg.endpoint);
            self.sleepers.remove(&reg.endpoint);
            self.status(
                unix_ms,
                &reg.endpoint,
                "gone",
                Some(reg.address),
                Some("expired"),
            );
            self.event(IngressEvent::Expired {
                endpoint: reg.endpoint,
            });
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.recent.retain(|_, list| {
                list.retain(|_, r| r.expires > now);
                !list.is_empty()
            });
            let busy = !self.recent.is_empty() || self.downlink.pending() > 0;
            self.next_sweep = busy.then(|| now + SWEEP_EVERY);
        }
    }

    /// Handles one datagram. `unix_ms` is the wall-clock time, for record times. The sender is
    /// known by its address only (no authentication gateway in front, or lab mode).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: impl Into<Peer>,
        bytes: &[u8],
    ) {
        let peer = peer.into();
        self.stats.datagrams += 1;
        let Ok(header) = wire::raw_header(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let Ok(packet) = wire::parse(bytes) else {
            self.stats.malformed += 1;
            if header.kind == MessageType::Confirmable {
                self.send(peer, reply::empty(MessageType::Reset, header.message_id));
            }
            return;
        };
        self.handle_parsed(now, unix_ms, peer, header, &packet, None);
    }

    /// Handles a message already parsed by the caller (the gateway's lab path), from a sender
    /// known by its address only.
    pub fn handle_packet(&mut self, now: Instant, unix_ms: u64, peer: Peer, packet: &Packet) {
        self.stats.datagrams += 1;
        self.handle_parsed(now, unix_ms, peer, header_of(packet), packet, None);
    }

    /// Ends `device`'s registration because it may no longer talk (revoked or quarantined in
    /// the registry); its status becomes `gone` with `reason`.
    pub fn remove_device(&mut self, unix_ms: u64, device: &str, reason: &str) {
        let Some(reg) = self.directory.remove(device) else {
            return;
        };
        self.observations.forget(device);
        self.sleepers.remove(device);
        self.status(unix_ms, device, "gone", Some(reg.address), Some(reason));
        self.event(IngressEvent::Deregistered {
            endpoint: reg.endpoint,
        });
    }

    /// Handles a message the authentication gateway verified (the inner, decrypted message of an
    /// OSCORE request or response) from `device`, the authenticated identity (the registry's
    /// device id). A registration must name `device` as its `ep`, updates and deletions must be
    /// of `device`'s registration, and telemetry is filed under `device` whatever the address;
    /// otherwise 4.03. A response or notification ends or feeds `device`'s own exchange,
    /// matched by its token (the gateway verified it with the context of the request the token
    /// belongs to), wherever it came from; nothing is looked up by address. The gateway
    /// deduplicates verified requests itself (by address, message ID and OSCORE option), so
    /// they are not deduplicated again here by address, where two devices could meet.
    pub fn handle_authenticated(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        packet: &Packet,
        device: &str,
    ) {
        self.stats.datagrams += 1;
        self.handle_parsed(now, unix_ms, peer, header_of(packet), packet, Some(device));
    }

    /// Moves `device`'s registration (and the observations of it) to `peer`, after the gateway
    /// confirmed it there (e.g. an NB-IoT re-attach). Returns the old address, or `None` when
    /// the device is not registered or already there.
    pub fn rebind(
        &mut self,
        now: Instant,
        unix_ms: u64,
        device: &str,
        peer: Peer,
    ) -> Option<SocketAddr> {
        let from = self.directory.move_to(now, device, peer)?;
        self.observations.moved(device, peer.remote);
        self.status(unix_ms, device, "registered", Some(peer.remote), None);
        self.event(IngressEvent::AddressChanged {
            endpoint: device.to_owned(),
            from,
            to: peer.remote,
        });
        Some(from)
    }

    fn handle_parsed(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        header: wire::RawHeader,
        packet: &Packet,
        identity: Option<&str>,
    ) {
        let confirmable = header.kind == MessageType::Confirmable;
        match (header.code, header.kind) {
            (0, MessageType::Confirmable) => {
                self.send(peer, reply::empty(MessageType::Reset, header.message_id));
                return;
            }
            (0, kind @ (MessageType::Acknowledgement | MessageType::Reset)) => {
                let reset = kind == MessageType::Reset;
                match self
                    .downlink
                    .handle_empty(now, peer.remote, header.message_id, reset)
                {
                    Some(device) if reset => self.send_next(now, unix_ms, &device),
                    Some(_) => {}
                    None => self.stats.unexpected += 1,
                }
                self.pump_downlink(unix_ms);
                return;
            }
            (code, _) if (2..=5).contains(&wire::code_class(code)) => {
                self.response(now, unix_ms, peer, header, packet, identity);
                self.pump_downlink(unix_ms);
                return;
            }
            (code, MessageType::Confirmable | MessageType::NonConfirmable)
                if wire::is_request_code(code) => {}
            _ => {
                self.stats.unexpected += 1;
                if confirmable {
                    self.send(peer, reply::empty(MessageType::Reset, header.message_id));
                }
                return;
            }
        }
        if identity.is_none() && !self.first_time(now, peer, header.message_id, confirmable) {
            return;
        }
        self.stats.requests += 1;
        let outcome = match self.draining {
            Some(secs) => Outcome::Now(
                reply::Response::error(ResponseType::ServiceUnavailable, "stopping, retry later")
                    .max_age(secs),
            ),
            None => self.route(now, unix_ms, peer, packet, identity),
        };
        match outcome {
            Outcome::Now(response) => {
                self.requests.count(PathKind::of(packet), response.code);
                if response.code.is_error() {
                    self.stats.refused += 1;
                    self.event(IngressEvent::Refused {
                        peer: peer.remote,
                        code: MessageClass::Response(response.code).to_string(),
                        reason: String::from_utf8_lossy(&response.payload).into_owned(),
                    });
                }
                let bytes = reply::response(
                    header.message_id,
                    packet.get_token(),
                    confirmable,
                    self.take_message_id(),
                    &response,
                );
                self.send(peer, bytes.clone());
                let reply = if confirmable {
                    Reply::Sent(bytes.into_boxed_slice())
                } else {
                    Reply::Silent
                };
                self.set_reply(peer, header.message_id, reply);
            }
            // Remembered as pending already; `handle_appended` sets the reply.
            Outcome::Waiting(ticket) => {
                self.waiting.insert(
                    ticket,
                    Waiting {
                        peer,
                        message_id: header.message_id,
                        token: Token::from_slice(packet.get_token()),
                        confirmable,
                        notification: false,
                    },
                );
            }
        }
        self.uplink_seen(now, unix_ms, peer, identity);
        self.pump_downlink(unix_ms);
    }

    /// An uplink: it opens a queue-mode device's listening window (waking it if it slept), and
    /// a command waiting for the device goes out. The device is the authenticated one
    /// (`identity`), or, for a device known by its address only, the one registered at the
    /// address. (The name is copied only for queue-mode devices and when a command waits: this
    /// runs for every request.)
    fn uplink_seen(&mut self, now: Instant, unix_ms: u64, peer: Peer, identity: Option<&str>) {
        let sender = match identity {
            Some(device) => Some(device),
            None => self.directory.endpoint_at(peer.remote),
        };
        let Some(reg) = sender.and_then(|e| self.directory.get(e)) else {
            return;
        };
        let queue_mode = reg.binding == Binding::UQ;
        if !queue_mode && !self.downlink.has_waiting(&reg.endpoint) {
            return;
        }
        let (device, address) = (reg.endpoint.clone(), reg.address);
        if queue_mode
            && self
                .sleepers
                .uplink(now, &device, self.config.listen_window)
        {
            self.status(unix_ms, &device, "registered", Some(address), Some("awake"));
        }
        if self.downlink.has_waiting(&device) {
            self.send_next(now, unix_ms, &device);
        }
    }

    /// Publishes `sleeping` for every queue-mode device whose listening window has closed,
    /// with its next expected wake-up (Unix seconds) when known.
    /// Queue-mode devices as the edge last saw them: (awake, sleeping).
    #[must_use]
    pub fn queue_mode_states(&self) -> (usize, usize) {
        self.sleepers.states()
    }

    fn publish_sleepers(&mut self, now: Instant, unix_ms: u64) {
        while let Some((device, next)) = self.sleepers.poll_asleep(now) {
            let address = self.directory.get(&device).map(|r| r.address);
            let next_wake_ms = next.map(|t| {
                let ahead =
                    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
                unix_ms.saturating_add(ahead)
            });
            self.status_with(unix_ms, &device, "sleeping", address, None, next_wake_ms);
        }
    }

    /// Whether queue-mode `device` is asleep (its listening window closed).
    pub fn is_asleep(&self, device: &str) -> bool {
        self.sleepers.is_asleep(device)
    }

    /// Reports the outcome of storing the record with `ticket`; the device gets its answer.
    pub fn handle_appended(&mut self, ticket: AppendTicket, result: AppendResult) {
        let Some(w) = self.waiting.remove(&ticket) else {
            return;
        };
        if w.notification {
            self.notification_stored(w, result);
            return;
        }
        let response = match result {
            AppendResult::Stored => {
                self.stats.telemetry_stored += 1;
                self.requests
                    .count(PathKind::Telemetry, ResponseType::Changed);
                reply::Response::code(ResponseType::Changed)
            }
            AppendResult::Full { retry_after } => {
                self.stats.telemetry_busy += 1;
                self.requests
                    .count(PathKind::Telemetry, ResponseType::ServiceUnavailable);
                let secs = u32::try_from(retry_after.as_secs().max(1)).unwrap_or(u32::MAX);
                reply::Response::error(ResponseType::ServiceUnavailable, "outbox full, retry later")
                    .max_age(secs)
            }
            AppendResult::Failed => {
                self.stats.store_failures += 1;
                self.requests
                    .count(PathKind::Telemetry, ResponseType::InternalServerError);
                reply::Response::error(
                    ResponseType::InternalServerError,
                    "record could not be stored",
                )
            }
        };
        let bytes = reply::response(
            w.message_id,
            w.token.as_slice(),
            w.confirmable,
            self.take_message_id(),
            &response,
        );
        self.send(w.peer, bytes.clone());
        let reply = if w.confirmable {
            Reply::Sent(bytes.into_boxed_slice())
        } else {
            Reply::Silent
        };
        self.set_reply(w.peer, w.message_id, reply);
    }

    /// Requests waiting for their record to be stored.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn route(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        packet: &Packet,
        identity: Option<&str>,
    ) -> Outcome {
        let origin = Origin { peer, identity };
        if let Some(n) = wire::unknown_critical_option(packet) {
            return Outcome::error(
                ResponseType::BadOption,
                format!("unrecognized critical option {n}"),
            );
        }
        let Some(path) = strings(packet, CoapOption::UriPath) else {
            return Outcome::error(ResponseType::BadRequest, "Uri-Path is not UTF-8");
        };
        let Some(query) = strings(packet, CoapOption::UriQuery) else {
            return Outcome::error(ResponseType::BadRequest, "Uri-Query is not UTF-8");
        };
        let Ok(format) = wire::uint_option(packet, CoapOption::ContentFormat, 2) else {
            return Outcome::error(ResponseType::BadRequest, "malformed Content-Format");
        };
        if packet.payload.len() > self.config.max_body {
            return Outcome::error(
                ResponseType::RequestEntityTooLarge,
                format!("bodies are limited to {} bytes", self.config.max_body),
            );
        }
        let method = match packet.header.code {
            MessageClass::Request(m) => m,
            _ => RequestType::UnKnown,
        };
        if let (Some(device), Some(refusal)) = (identity, self.foreign(&path, &query, identity)) {
            return Outcome::error(
                ResponseType::Forbidden,
                format!("authenticated as {device}: {refusal}"),
            );
        }
        match (method, path.as_slice()) {
            (RequestType::Post, ["rd"]) => {
                self.register(now, unix_ms, origin, &query, format, &packet.payload)
            }
            (RequestType::Post, ["rd", loc]) => self.update(now, unix_ms, peer, loc, &query),
            (RequestType::Delete, ["rd", loc]) => self.deregister(unix_ms, loc),
            (RequestType::Post, ["t"]) => {
                self.telemetry(now, unix_ms, origin, format, &packet.payload)
            }
            (_, ["rd"] | ["rd", _] | ["t"]) => Outcome::error(
                ResponseType::MethodNotAllowed,
                "use POST (DELETE for /rd/{location})",
            ),
            _ => Outcome::error(
                ResponseType::NotFound,
                format!("no resource /{}", path.join("/")),
            ),
        }
    }

    fn telemetry(
        &mut self,
        now: Instant,
        unix_ms: u64,
        origin: Origin<'_>,
        format: Option<u32>,
        body: &[u8],
    ) -> Outcome {
        let found = match origin.identity {
            Some(device) => self.directory.touch(now, device),
            None => self.directory.touch_by_address(now, origin.peer.remote),
        };
        let topic = match found {
            Some(reg) => self.config.topics.telemetry(&reg.endpoint),
            None if self.config.lab_accept_unregistered => {
                let name = lab_name(&mut self.lab_names, origin.peer.remote);
                self.config.topics.telemetry(name)
            }
            None => {
                return Outcome::error(
                    ResponseType::Forbidden,
                    "unknown device: register at /rd first",
                );
            }
        };
        let id = self.record_ids.next();
        let payload = match telemetry::normalise(format, body, unix_ms, id) {
            Ok(p) => p,
            Err(telemetry::Refusal { code, reason }) => return Outcome::error(code, reason),
        };
        Outcome::Waiting(self.queue_telemetry(topic, payload))
    }

    /// Queues a telemetry record for `device`'s topic; the ticket comes back with the result.
    fn store_telemetry(&mut self, device: &str, payload: Vec<u8>) -> AppendTicket {
        let topic = self.config.topics.telemetry(device);
        self.queue_telemetry(topic, payload)
    }

    /// Queues a telemetry record for the outbox; the ticket comes back with the result.
    fn queue_telemetry(&mut self, topic: String, payload: Vec<u8>) -> AppendTicket {
        let ticket = AppendTicket(self.next_ticket);
        self.next_ticket += 1;
        let message = NewMessage {
            topic,
            payload,
            retain: false,
        };
        self.appends.push_back(Append {
            ticket: Some(ticket),
            message,
        });
        ticket
    }

    /// Queues a retained status message for `endpoint` (not awaited by anyone).
    fn status(
        &mut self,
        unix_ms: u64,
        endpoint: &str,
        state: &str,
        address: Option<SocketAddr>,
        detail: Option<&str>,
    ) {
        self.status_with(unix_ms, endpoint, state, address, detail, None);
    }

    /// [`Ingress::status`] with a sleeping device's next expected wake-up (`next_wake`, Unix
    /// seconds; only in `sleeping` messages).
    fn status_with(
        &mut self,
        unix_ms: u64,
        endpoint: &str,
        state: &str,
        address: Option<SocketAddr>,
        detail: Option<&str>,
        next_wake_ms: Option<u64>,
    ) {
        let mut body = serde_json::json!({
            "rid": self.record_ids.next().to_string(),
            "state": state,
            "address": address.map(|a| a.to_string()),
            "detail": detail,
            "t": unix_ms as f64 / 1000.0,
        });
        if state == "sleeping"
            && let Some(map) = body.as_object_mut()
        {
            let next = next_wake_ms.map(|ms| serde_json::Value::from(ms as f64 / 1000.0));
            map.insert("next_wake".into(), next.unwrap_or(serde_json::Value::Null));
        }
        let topic = self.config.topics.status(endpoint);
        self.appends.push_back(Append {
            ticket: None,
            message: NewMessage {
                topic,
                payload: body.to_string().into_bytes(),
                retain: true,
            },
        });
    }

    fn event(&mut self, e: IngressEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

enum Outcome {
    Now(reply::Response),
    Waiting(AppendTicket),
}

/// Who sent a request: from where, and as which device if the gateway verified it.
#[derive(Clone, Copy)]
struct Origin<'a> {
    peer: Peer,
    identity: Option<&'a str>,
}

impl Outcome {
    fn error(code: ResponseType, reason: impl Into<String>) -> Outcome {
        Outcome::Now(reply::Response::error(code, reason))
    }
}

/// The fixed header of a parsed packet.
fn header_of(packet: &Packet) -> wire::RawHeader {
    wire::RawHeader {
        kind: packet.header.get_type(),
        message_id: packet.header.message_id,
        code: u8::from(packet.header.code),
    }
}

/// The values of a repeatable text option (Uri-Path, Uri-Query), borrowed from the packet;
/// `None` if one is not UTF-8.
fn strings(packet: &Packet, option: CoapOption) -> Option<Vec<&str>> {
    match packet.get_option(option) {
        None => Some(Vec::new()),
        Some(list) => list.iter().map(|v| std::str::from_utf8(v).ok()).collect(),
    }
}

fn query_value<'q>(query: &[&'q str], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find_map(|q| q.strip_prefix(key)?.strip_prefix('='))
}
