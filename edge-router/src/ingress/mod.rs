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
//!
//! This file holds the [`Ingress`] type, its construction, its sans-IO interface and the
//! routing (a message by its kind, a request by its method and path to its handler). Each
//! concern is a file of its own, an `impl Ingress` over this state where it needs one:
//! `directory` (`/rd`), `telemetry` (`/t`, answered once durable), `commands` and `downlink`
//! (the platform's commands), `notify` and `observe` (the edge's own observations), `status`
//! (status messages, queue-mode listening windows), `dedup` (per-peer deduplication and the
//! reply kept for duplicates), `request` (a message's parts checked), `events` (events and
//! counters), `config`.

mod commands;
mod config;
mod counts;
mod dedup;
mod directory;
pub mod downlink;
mod events;
mod notify;
pub mod observe;
pub mod registry;
mod reply;
mod request;
#[cfg(test)]
mod sleep_tests;
mod sleepers;
mod status;
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

pub use config::IngressConfig;
pub use counts::{PathKind, RequestCounts};
use dedup::{Answering, PeerRecent, SWEEP_EVERY};
pub use downlink::{
    CommandLimits, CommandResult, DeviceAllowList, Downlink, DownlinkCommand, DownlinkStats,
    JournalBatch, JournalEntry, JournalWritten,
};
pub use events::{IngressEvent, IngressStats};
pub use registry::{Binding, Directory, Registration};
use reply::{Reply, Response};
use request::{Incoming, Origin, Outcome, Request, header_of, query_value};
use status::Status;
use telemetry::Waiting;
pub use telemetry::{Append, AppendResult, AppendTicket};

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

/// The ingress state machine. See the module docs.
pub struct Ingress {
    config: IngressConfig,
    directory: Directory,
    recent: HashMap<SocketAddr, PeerRecent>,
    /// Lab mode: `anon-{peer}` names (bounded by [`telemetry::LAB_NAMES`]).
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
    /// The audit lane is full: a new plain registration gets 5.03 with this Max-Age (seconds).
    registrations_held: Option<u32>,
}

/// The diagnostic of a 5.03 to a request whose audit rows the trail has no room for now.
pub(crate) const AUDIT_BUSY: &str = "audit trail busy, retry later";

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
            registrations_held: None,
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

    /// While `Some(seconds)`, a new unauthenticated registration (`POST /rd`, lab mode) is
    /// answered 5.03 with that Max-Age: the audit trail has no room for its row (the gateway
    /// sets this around the one datagram it concerns; retransmissions still get the answer
    /// they had).
    pub fn hold_registrations(&mut self, retry_after_s: Option<u32>) {
        self.registrations_held = retry_after_s;
    }

    /// Whether [`start_draining`](Self::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    fn take_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
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

    /// Sends commands due again, expires commands, registrations and listening windows, and
    /// forgets old message IDs.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        for device in self.downlink.handle_timeout(now) {
            self.send_next(now, unix_ms, &device);
        }
        self.downlink.expire_queued(unix_ms);
        self.pump_downlink(unix_ms);
        self.publish_sleepers(now, unix_ms);
        self.expire_registrations(now, unix_ms);
        self.sweep(now);
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
        let msg = Incoming {
            peer,
            header,
            packet: &packet,
            identity: None,
        };
        self.handle_parsed(now, unix_ms, msg);
    }

    /// Handles a message already parsed by the caller (the gateway's lab path), from a sender
    /// known by its address only.
    pub fn handle_packet(&mut self, now: Instant, unix_ms: u64, peer: Peer, packet: &Packet) {
        self.stats.datagrams += 1;
        let msg = Incoming {
            peer,
            header: header_of(packet),
            packet,
            identity: None,
        };
        self.handle_parsed(now, unix_ms, msg);
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
        let msg = Incoming {
            peer,
            header: header_of(packet),
            packet,
            identity: Some(device),
        };
        self.handle_parsed(now, unix_ms, msg);
    }

    /// A parsed message, by its kind: a ping, the end of a command's exchange, a response or
    /// notification, a request; anything else is unexpected.
    fn handle_parsed(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) {
        match (msg.header.code, msg.header.kind) {
            (0, MessageType::Confirmable) => {
                let reset = reply::empty(MessageType::Reset, msg.header.message_id);
                self.send(msg.peer, reset);
            }
            (0, MessageType::Acknowledgement | MessageType::Reset) => {
                self.empty_reply(now, unix_ms, msg);
            }
            (code, _) if (2..=5).contains(&wire::code_class(code)) => {
                self.response(now, unix_ms, msg);
            }
            (code, MessageType::Confirmable | MessageType::NonConfirmable)
                if wire::is_request_code(code) =>
            {
                self.request(now, unix_ms, msg);
            }
            _ => self.unexpected(msg),
        }
    }

    /// Nobody waited for this message: counted; a Confirmable one gets a Reset.
    fn unexpected(&mut self, msg: Incoming<'_>) {
        self.stats.unexpected += 1;
        if msg.confirmable() {
            let reset = reply::empty(MessageType::Reset, msg.header.message_id);
            self.send(msg.peer, reset);
        }
    }

    /// A request: deduplicated (unless the gateway verified it, and deduplicated it), routed
    /// (or refused with 5.03 while draining), answered now or once its record is stored; then
    /// the uplink's effect on the device's listening window and commands.
    fn request(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) {
        let (peer, message_id) = (msg.peer, msg.header.message_id);
        if msg.identity.is_none() && !self.first_time(now, peer, message_id, msg.confirmable()) {
            return;
        }
        self.stats.requests += 1;
        let outcome = match self.draining {
            Some(secs) => Outcome::Now(
                Response::error(ResponseType::ServiceUnavailable, "stopping, retry later")
                    .max_age(secs),
            ),
            None => self.route(now, unix_ms, msg),
        };
        match outcome {
            Outcome::Now(response) => {
                self.requests.count(PathKind::of(msg.packet), response.code);
                if response.code.is_error() {
                    self.stats.refused += 1;
                    self.event(IngressEvent::Refused {
                        peer: peer.remote,
                        code: MessageClass::Response(response.code).to_string(),
                        reason: String::from_utf8_lossy(&response.payload).into_owned(),
                    });
                }
                self.answer(msg.answering(), &response);
            }
            // Remembered as pending already; `handle_appended` sets the reply.
            Outcome::Waiting(ticket) => {
                self.waiting.insert(ticket, Waiting::of(msg, false));
            }
        }
        self.uplink_seen(now, unix_ms, peer, msg.identity);
        self.pump_downlink(unix_ms);
    }

    /// The resource a request is for, and its handler. An authenticated device may touch only
    /// its own registration (4.03).
    fn route(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) -> Outcome {
        let (peer, identity) = (msg.peer, msg.identity);
        let origin = Origin { peer, identity };
        let request = match Request::parse(msg.packet, self.config.max_body) {
            Ok(r) => r,
            Err(response) => return Outcome::Now(response),
        };
        let Request {
            method,
            path,
            query,
            format,
            body,
        } = request;
        if let (Some(device), Some(refusal)) = (identity, self.foreign(&path, &query, identity)) {
            return Outcome::error(
                ResponseType::Forbidden,
                format!("authenticated as {device}: {refusal}"),
            );
        }
        match (method, path.as_slice()) {
            (RequestType::Post, ["rd"]) => match self.registrations_held {
                Some(secs) if identity.is_none() => Outcome::Now(
                    Response::error(ResponseType::ServiceUnavailable, AUDIT_BUSY).max_age(secs),
                ),
                _ => self.register(now, unix_ms, origin, &query, format, body),
            },
            (RequestType::Post, ["rd", loc]) => self.update(now, unix_ms, peer, loc, &query),
            (RequestType::Delete, ["rd", loc]) => self.deregister(unix_ms, loc),
            (RequestType::Post, ["t"]) => self.telemetry(now, unix_ms, origin, format, body),
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
}
