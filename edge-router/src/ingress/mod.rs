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

mod counts;
pub mod downlink;
pub mod observe;
pub mod registry;
mod reply;
#[cfg(test)]
mod sleep_tests;
mod sleepers;
mod telemetry;
/// A duplicate request (RFC 7252 §4.5): counted; a Confirmable one gets the reply remembered
/// for it again, if it has one yet.
fn answer_duplicate(
    stats: &mut IngressStats,
    transmits: &mut VecDeque<Outgoing>,
    peer: Peer,
    r: &Recent,
    confirmable: bool,
) {
    stats.duplicates += 1;
    if let (Reply::Sent(bytes), true) = (&r.reply, confirmable) {
        transmits.push_back(Outgoing::answer(peer, bytes.to_vec()));
    }
}

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

#[derive(Debug)]
struct Recent {
    expires: Instant,
    reply: Reply,
}

struct Waiting {
    peer: Peer,
    message_id: u16,
    token: Token,
    confirmable: bool,
    /// An Observe notification (answered with an empty ACK), not a request.
    notification: bool,
}

/// Message IDs remembered per peer; a device with NSTART = 1 has far fewer in flight.
const RECENT_PER_PEER: usize = 8;

/// The message IDs one peer sent last, oldest first: at most [`RECENT_PER_PEER`], the oldest
/// dropped for a new one when full. A ring inline in the peer's table entry, so a new peer
/// costs no allocation of its own; the IDs sit together next to the key, so telling a new
/// message from a duplicate reads one cache line.
#[derive(Debug, Default)]
struct PeerRecent {
    ids: [u16; RECENT_PER_PEER],
    /// Where the oldest is.
    head: u8,
    len: u8,
    /// Expiry and reply of `ids[i]` (`None` when the slot is free).
    entries: [Option<Recent>; RECENT_PER_PEER],
}

impl PeerRecent {
    /// Slot indexes, oldest first.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let head = usize::from(self.head);
        (0..usize::from(self.len)).map(move |i| (head + i) % RECENT_PER_PEER)
    }

    fn slot_of(&self, message_id: u16) -> Option<usize> {
        self.order().find(|&i| self.ids.get(i) == Some(&message_id))
    }

    fn find(&self, message_id: u16) -> Option<&Recent> {
        let i = self.slot_of(message_id)?;
        self.entries.get(i).and_then(Option::as_ref)
    }

    fn find_mut(&mut self, message_id: u16) -> Option<&mut Recent> {
        let i = self.slot_of(message_id)?;
        self.entries.get_mut(i).and_then(Option::as_mut)
    }

    fn push(&mut self, message_id: u16, recent: Recent) {
        if usize::from(self.len) >= RECENT_PER_PEER {
            if let Some(oldest) = self.entries.get_mut(usize::from(self.head)) {
                *oldest = None;
            }
            self.head = ((usize::from(self.head) + 1) % RECENT_PER_PEER) as u8;
            self.len -= 1;
        }
        let i = (usize::from(self.head) + usize::from(self.len)) % RECENT_PER_PEER;
        if let (Some(id), Some(entry)) = (self.ids.get_mut(i), self.entries.get_mut(i)) {
            *id = message_id;
            *entry = Some(recent);
            self.len += 1;
        }
    }

    /// Keeps the entries `keep(message_id, entry)` says yes to, in their order.
    fn retain(&mut self, mut keep: impl FnMut(u16, &Recent) -> bool) {
        let order: [Option<usize>; RECENT_PER_PEER] = {
            let mut order = [None; RECENT_PER_PEER];
            for (o, i) in order.iter_mut().zip(self.order()) {
                *o = Some(i);
            }
            order
        };
        let ids = self.ids;
        let mut entries = std::mem::take(&mut self.entries);
        self.head = 0;
        self.len = 0;
        for i in order.into_iter().flatten() {
            if let (Some(&id), Some(r)) = (ids.get(i), entries.get_mut(i).and_then(Option::take))
                && keep(id, &r)
            {
                self.push(id, r);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
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

    /// A response-class message: the end of a command or observe request of the edge, a
    /// retransmission of one, or a notification. `identity`: the device it verified as.
    fn response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        header: wire::RawHeader,
        packet: &Packet,
        identity: Option<&str>,
    ) {
        let confirmable = header.kind == MessageType::Confirmable;
        match self.downlink.handle_response(peer.remote, packet, identity) {
            Some((device, needs_ack)) => {
                if needs_ack {
                    let ack = reply::empty(MessageType::Acknowledgement, header.message_id);
                    self.send(peer, ack.clone());
                    self.remember(
                        now,
                        peer,
                        header.message_id,
                        Reply::Sent(ack.into_boxed_slice()),
                    );
                }
                self.send_next(now, unix_ms, &device);
            }
            None if self.repeat(peer, header.message_id, confirmable) => {}
            None if self.notification(now, unix_ms, peer, packet, identity) => {}
            None => {
                self.stats.unexpected += 1;
                if confirmable {
                    self.send(peer, reply::empty(MessageType::Reset, header.message_id));
                }
            }
        }
    }

    /// The answer to the edge's own observe request: keep the observation and store the
    /// current value it carried.
    fn observation_started(&mut self, unix_ms: u64, req_rest: &str, result: CommandResult) {
        let path = req_rest
            .split_once(':')
            .map_or(req_rest, |(_, p)| p)
            .to_owned();
        let (true, Some("2.05"), Some(token), Some(reach)) = (
            result.observing,
            result.code.as_deref(),
            result.token,
            self.reachability(&result.device),
        ) else {
            self.event(IngressEvent::Refused {
                peer: self
                    .reachability(&result.device)
                    .map_or_else(|| SocketAddr::from(([0u16; 8], 0)), |r| r.address.remote),
                code: result.code.unwrap_or_else(|| result.status.to_owned()),
                reason: format!("observing {path} failed"),
            });
            return;
        };
        self.observations.insert(
            token,
            observe::Observed {
                device: result.device.clone(),
                path,
                peer: reach.address.remote,
            },
        );
        let id = self.record_ids.next();
        let format = result.content_format.map(u32::from);
        if let Ok(payload) = telemetry::normalise(format, &result.payload, unix_ms, id) {
            let topic = self.config.topics.telemetry(&result.device);
            self.appends.push_back(Append {
                ticket: None,
                message: NewMessage {
                    topic,
                    payload,
                    retain: false,
                },
            });
        }
    }

    /// Takes a command from the platform for one device.
    pub fn handle_command(&mut self, now: Instant, unix_ms: u64, command: DownlinkCommand) {
        let reach = self.reachability(&command.device);
        let message_id = self.take_message_id();
        self.downlink.command(
            now,
            unix_ms,
            command,
            reach,
            self.config.listen_window,
            message_id,
        );
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        self.pump_downlink(unix_ms);
    }

    /// Puts back a queued command from the journal after a restart.
    pub fn restore_command(&mut self, command: DownlinkCommand) {
        self.downlink.restore(command);
    }

    /// The next batch of the command journal to persist (see [`downlink::JournalBatch`]); one
    /// at a time, until [`Ingress::handle_journal_written`] reports it.
    #[must_use]
    pub fn poll_journal(&mut self) -> Option<JournalBatch> {
        self.downlink.poll_journal()
    }

    /// What became of journal batch `id`: commands it made durable may go out now; those of a
    /// failed batch get an error result.
    pub fn handle_journal_written(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: u64,
        outcome: JournalWritten,
    ) {
        for device in self.downlink.journal_written(id, outcome) {
            self.send_next(now, unix_ms, &device);
        }
        self.pump_downlink(unix_ms);
    }

    /// The downlink's counters (commands accepted and refused by cause, journal batches).
    pub fn command_stats(&self) -> &DownlinkStats {
        self.downlink.stats()
    }

    /// Lines the command journal holds, and the journaled commands not yet done.
    pub fn journal_sizes(&self) -> (u64, u64) {
        self.downlink.journal_sizes()
    }

    /// Commands queued or in flight.
    pub fn pending_commands(&self) -> usize {
        self.downlink.pending()
    }

    fn reachability(&self, device: &str) -> Option<downlink::Reachability> {
        self.directory.get(device).map(|r| downlink::Reachability {
            address: r.peer(),
            queue_mode: r.binding == Binding::UQ,
            last_uplink: r.last_uplink,
        })
    }

    fn send_next(&mut self, now: Instant, unix_ms: u64, device: &str) {
        let reach = self.reachability(device);
        let message_id = self.take_message_id();
        let window = self.config.listen_window;
        self.downlink
            .try_send(now, unix_ms, device, reach, window, message_id);
    }

    /// Moves the downlink's datagrams out and its results into the outbox.
    fn pump_downlink(&mut self, unix_ms: u64) {
        while let Some(t) = self.downlink.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(result) = self.downlink.poll_result() {
            if let Some(rest) = result.req.strip_prefix(observe::OBSERVE_REQ) {
                let rest = rest.to_owned();
                self.observation_started(unix_ms, &rest, result);
                continue;
            }
            self.event(IngressEvent::CommandDone {
                endpoint: result.device.clone(),
                req: result.req.clone(),
                status: result.status,
                code: result.code.clone(),
            });
            let rid = self.record_ids.next();
            let topic = self
                .config
                .topics
                .command_result(&result.device, &result.req);
            self.appends.push_back(Append {
                ticket: None,
                message: NewMessage {
                    topic,
                    payload: result.to_json(rid),
                    retain: false,
                },
            });
        }
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

    /// A notification's record was stored (ACK it) or not (stay silent and forget its message ID,
    /// so the device's retransmission is taken afresh).
    fn notification_stored(&mut self, w: Waiting, result: AppendResult) {
        let list = self.recent.get_mut(&w.peer.remote);
        if result == AppendResult::Stored {
            self.stats.telemetry_stored += 1;
            let ack = reply::empty(MessageType::Acknowledgement, w.message_id);
            if w.confirmable {
                self.transmits
                    .push_back(Outgoing::answer(w.peer, ack.clone()));
            }
            if let Some(r) = list.and_then(|l| l.find_mut(w.message_id)) {
                r.reply = if w.confirmable {
                    Reply::Sent(ack.into_boxed_slice())
                } else {
                    Reply::Silent
                };
            }
        } else {
            self.stats.telemetry_busy += 1;
            if let Some(l) = list {
                l.retain(|id, _| id != w.message_id);
            }
        }
    }

    /// A notification of a resource the edge observes: store it as telemetry. Known by its
    /// token, and by the device it verified as (`identity`), or else by its address.
    fn notification(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        packet: &Packet,
        identity: Option<&str>,
    ) -> bool {
        let Some(obs) = self
            .observations
            .get(packet.get_token(), peer.remote, identity)
        else {
            return false;
        };
        let device = obs.device.clone();
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let format = wire::uint_option(packet, CoapOption::ContentFormat, 2)
            .ok()
            .flatten();
        let id = self.record_ids.next();
        match telemetry::normalise(format, &packet.payload, unix_ms, id) {
            Ok(payload) => {
                let ticket = self.store_telemetry(&device, payload);
                let message_id = packet.header.message_id;
                let token = Token::from_slice(packet.get_token());
                self.waiting.insert(
                    ticket,
                    Waiting {
                        peer,
                        message_id,
                        token,
                        confirmable,
                        notification: true,
                    },
                );
                self.remember(now, peer, message_id, Reply::Pending);
            }
            Err(refusal) => {
                // Unusable data: a Reset ends the observation (RFC 7641 §3.6).
                self.stats.refused += 1;
                self.event(IngressEvent::Refused {
                    peer: peer.remote,
                    code: "RST".into(),
                    reason: refusal.reason,
                });
                if confirmable {
                    self.send(
                        peer,
                        reply::empty(MessageType::Reset, packet.header.message_id),
                    );
                }
            }
        }
        true
    }

    /// Starts observing the observable SenML resources in `links` (always-on devices only).
    fn observe_resources(
        &mut self,
        now: Instant,
        unix_ms: u64,
        endpoint: &str,
        links: &str,
        binding: Binding,
    ) {
        self.observations.forget(endpoint);
        if binding != Binding::U {
            return;
        }
        for (path, accept) in observe::observable_senml(links) {
            self.next_observation += 1;
            let cmd = DownlinkCommand {
                device: endpoint.to_owned(),
                req: format!("{}{}:{path}", observe::OBSERVE_REQ, self.next_observation),
                method: "GET".into(),
                path,
                payload: Vec::new(),
                content_format: None,
                expires_unix_ms: unix_ms + 60_000,
                confirmable: true,
                observe: true,
                accept: Some(accept),
            };
            let reach = self.reachability(endpoint);
            let message_id = self.take_message_id();
            self.downlink.command(
                now,
                unix_ms,
                cmd,
                reach,
                self.config.listen_window,
                message_id,
            );
        }
    }

    /// Observations the edge holds.
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }

    /// Requests waiting for their record to be stored.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn repeat(&mut self, peer: Peer, message_id: u16, confirmable: bool) -> bool {
        let Some(r) = self
            .recent
            .get(&peer.remote)
            .and_then(|l| l.find(message_id))
        else {
            return false;
        };
        answer_duplicate(&mut self.stats, &mut self.transmits, peer, r, confirmable);
        true
    }

    fn remember(&mut self, now: Instant, peer: Peer, message_id: u16, reply: Reply) {
        let expires = now + self.config.exchange_lifetime;
        self.recent
            .entry(peer.remote)
            .or_default()
            .push(message_id, Recent { expires, reply });
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
    }

    /// A request's deduplication in one table lookup (RFC 7252 §4.5): a message ID this peer
    /// sent within EXCHANGE_LIFETIME is a duplicate (its reply sent again if it was Confirmable
    /// and has one; `false`); a new one is remembered as pending (`true`), its reply set later
    /// with [`Ingress::set_reply`].
    fn first_time(&mut self, now: Instant, peer: Peer, message_id: u16, confirmable: bool) -> bool {
        let list = self.recent.entry(peer.remote).or_default();
        if let Some(r) = list.find(message_id) {
            answer_duplicate(&mut self.stats, &mut self.transmits, peer, r, confirmable);
            return false;
        }
        let expires = now + self.config.exchange_lifetime;
        list.push(
            message_id,
            Recent {
                expires,
                reply: Reply::Pending,
            },
        );
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        true
    }

    /// The reply to a remembered message ID, to repeat for its duplicates.
    fn set_reply(&mut self, peer: Peer, message_id: u16, reply: Reply) {
        if let Some(r) = self
            .recent
            .get_mut(&peer.remote)
            .and_then(|l| l.find_mut(message_id))
        {
            r.reply = reply;
        }
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

    /// Why an authenticated device may not do this: register under another name, or touch
    /// another device's registration. `None` when it may.
    fn foreign(
        &self,
        path: &[&str],
        query: &[&str],
        identity: Option<&str>,
    ) -> Option<&'static str> {
        let device = identity?;
        match path {
            ["rd"] => query_value(query, "ep")
                .is_some_and(|ep| ep != device)
                .then_some("a registration's ep must be the authenticated device"),
            ["rd", loc] => loc
                .parse::<u32>()
                .ok()
                .and_then(|l| self.directory.endpoint_of_location(l))
                .is_some_and(|ep| ep != device)
                .then_some("this is another device's registration"),
            _ => None,
        }
    }

    fn register(
        &mut self,
        now: Instant,
        unix_ms: u64,
        origin: Origin<'_>,
        query: &[&str],
        format: Option<u32>,
        body: &[u8],
    ) -> Outcome {
        let peer = origin.peer;
        let Some(ep) = query_value(query, "ep") else {
            return Outcome::error(ResponseType::BadRequest, "registration needs ep=NAME");
        };
        if !valid_level(ep) || ep.len() > 64 {
            return Outcome::error(
                ResponseType::BadRequest,
                format!(
                    "endpoint name `{ep}` is not usable (1-64 chars, no / + # NUL, not starting with _)"
                ),
            );
        }
        let lifetime = match query_value(query, "lt").map(str::parse::<u64>) {
            None => self.config.default_lifetime,
            Some(Ok(s)) => {
                Duration::from_secs(s).clamp(self.config.min_lifetime, self.config.max_lifetime)
            }
            Some(Err(_)) => {
                return Outcome::error(ResponseType::BadRequest, "lt must be a number of seconds");
            }
        };
        let binding = match query_value(query, "b").map(Binding::parse) {
            None => Binding::U,
            Some(Some(b)) => b,
            Some(None) => return Outcome::error(ResponseType::BadRequest, "b must be U or UQ"),
        };
        if format.is_some_and(|f| f != u32::from(content_format::LINK_FORMAT)) {
            return Outcome::error(
                ResponseType::UnsupportedContentFormat,
                "registrations carry application/link-format (40)",
            );
        }
        let Ok(links) = String::from_utf8(body.to_vec()) else {
            return Outcome::error(ResponseType::BadRequest, "link-format payload is not UTF-8");
        };
        if origin.identity.is_none() {
            // Known by its address only: the device registering takes the address over. (An
            // authenticated device never takes another's registration: the gateway resolves
            // two devices at one address.)
            if let Some(other) = self.directory.evict_address(peer.remote, ep) {
                self.observations.forget(&other.endpoint);
            }
        }
        let (location, how) =
            self.directory
                .register(now, ep, peer, lifetime, binding, links.clone());
        self.stats.registrations += 1;
        // A registration starts the device's sleep bookkeeping afresh (its own status follows).
        if binding == Binding::UQ {
            self.sleepers.registered(now, ep);
        } else {
            self.sleepers.remove(ep);
        }
        self.observe_resources(now, unix_ms, ep, &links, binding);
        if let registry::Registered::Replaced {
            moved_from: Some(from),
        } = how
        {
            self.event(IngressEvent::AddressChanged {
                endpoint: ep.to_owned(),
                from,
                to: peer.remote,
            });
        }
        self.status(
            unix_ms,
            ep,
            "registered",
            Some(peer.remote),
            Some(binding.as_str()),
        );
        self.event(IngressEvent::Registered {
            endpoint: ep.to_owned(),
            address: peer.remote,
        });
        let mut r = reply::Response::code(ResponseType::Created);
        r.location = vec!["rd".to_owned(), location.to_string()];
        Outcome::Now(r)
    }

    fn update(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        loc: &str,
        query: &[&str],
    ) -> Outcome {
        let lifetime = match query_value(query, "lt").map(str::parse::<u64>) {
            None => None,
            Some(Ok(s)) => Some(
                Duration::from_secs(s).clamp(self.config.min_lifetime, self.config.max_lifetime),
            ),
            Some(Err(_)) => {
                return Outcome::error(ResponseType::BadRequest, "lt must be a number of seconds");
            }
        };
        let Some(location) = loc.parse::<u32>().ok() else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        let Some((reg, moved)) = self.directory.update(now, location, peer, lifetime) else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        let endpoint = reg.endpoint.clone();
        self.stats.updates += 1;
        if let Some(from) = moved {
            self.status(unix_ms, &endpoint, "registered", Some(peer.remote), None);
            self.event(IngressEvent::AddressChanged {
                endpoint,
                from,
                to: peer.remote,
            });
        }
        Outcome::Now(reply::Response::code(ResponseType::Changed))
    }

    fn deregister(&mut self, unix_ms: u64, loc: &str) -> Outcome {
        let Some(reg) = loc
            .parse::<u32>()
            .ok()
            .and_then(|l| self.directory.remove_location(l))
        else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        self.stats.deregistrations += 1;
        self.observations.forget(&reg.endpoint);
        self.sleepers.remove(&reg.endpoint);
        self.status(
            unix_ms,
            &reg.endpoint,
            "gone",
            Some(reg.address),
            Some("deregistered"),
        );
        self.event(IngressEvent::Deregistered {
            endpoint: reg.endpoint,
        });
        Outcome::Now(reply::Response::code(ResponseType::Deleted))
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

#[cfg(test)]
mod recent_tests {
    use super::*;

    fn recent() -> Recent {
        Recent {
            expires: Instant::now(),
            reply: Reply::Silent,
        }
    }

    fn ids(list: &PeerRecent) -> Vec<u16> {
        let ids: Vec<u16> = list.order().map(|i| list.ids[i]).collect();
        assert!(ids.iter().all(|&id| list.find(id).is_some()));
        let used = list.entries.iter().filter(|e| e.is_some()).count();
        assert_eq!(used, ids.len(), "an entry per remembered ID");
        ids
    }

    #[test]
    fn the_ring_keeps_the_newest_in_order() {
        let mut list = PeerRecent::default();
        assert!(list.is_empty() && list.find(1).is_none());
        for id in 1..=11 {
            list.push(id, recent());
        }
        assert_eq!(ids(&list), (4..=11).collect::<Vec<_>>());
        assert!(list.find(3).is_none());
        assert!(list.find(4).is_some());
        list.find_mut(5).unwrap().reply = Reply::Pending;
        assert!(matches!(list.find(5).unwrap().reply, Reply::Pending));

        list.retain(|id, _| id % 2 == 0);
        assert_eq!(ids(&list), [4, 6, 8, 10]);
        for id in 20..=25 {
            list.push(id, recent());
        }
        // Four more than room for: 4 and 6 go.
        assert_eq!(ids(&list), [8, 10, 20, 21, 22, 23, 24, 25]);
        list.retain(|_, _| false);
        assert!(list.is_empty());
        assert!(ids(&list).is_empty());
    }
}
