//! Commands from the platform to devices (sans-IO): one CoAP request at a time per device,
//! sent at once to always-on devices (`b=U`) and held for queue-mode devices (`b=UQ`) until
//! their next uplink opens a listening window. Every command ends in exactly one result:
//! the device's response, `expired` (TTL passed while queued, or while its exchange waited for
//! the device), `timeout` (no answer), `reset`, or `rejected` (unknown device; refused by
//! admission ([`CommandLimits`]); its journal entry not stored).
//!
//! Queue-mode devices hear only in their window: a Confirmable command unanswered when the
//! window closes is *parked* — no retransmission goes into the device's sleep — and its same
//! message (message ID, token) goes again in the device's next window, so a device that ran it
//! but whose answer was lost answers from its deduplication cache instead of running it twice.
//! Nothing is sent or resent after a command's TTL: a parked or unanswered exchange whose TTL
//! passes ends `expired`.
//!
//! Platform commands are bounded and may be limited to some devices ([`CommandLimits`], in
//! `admission`): over a cap, too large for the device's path, or for a device not on the
//! allow-list, a command gets an error result at once and is never queued.
//!
//! The queue is made durable by the driver (the bookkeeping in `journal_book`): it writes each
//! [`JournalBatch`] off the data path and reports it with [`Downlink::journal_written`]; a
//! journaled command is sent only once its `queued` entry is durable. After a restart the driver feeds the pending
//! commands back through [`Downlink::restore`].
//!
//! # What a spoofer can do to a command in flight
//!
//! Tokens are 8 bytes that cannot be predicted, not even from earlier ones: SHA-256 of a
//! random key (drawn from the OS when the ingress is made) and a counter, truncated. Message IDs
//! count up from a random start (RFC 7252 §4.4), so neither depends on the boot time. An empty
//! ACK or RST is matched to the exchange it names through an index by (peer, message ID): one
//! lookup, whatever the number of commands in flight ([`Downlink::exchanges_examined`] counts
//! the exchanges looked at). Whether a Reset may end an exchange is the gateway's decision:
//! it never passes one on for a protected request (see `gateway`).

mod admission;
mod journal_book;
mod queues;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;

pub use admission::{BadPattern, CommandLimits, DeviceAllowList, OSCORE_REQUEST_OVERHEAD, Refusal};
pub use journal_book::{JournalBatch, JournalWritten};

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use serde::{Deserialize, Serialize};
use v6iot_sdk::coap::wire;

use admission::Waiting;
use journal_book::{FailedBatch, JournalBook};
use queues::Queues;

use super::Outgoing;
use crate::peer::Peer;

/// A command for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownlinkCommand {
    /// Endpoint name.
    pub device: String,
    /// Request id chosen by the platform (the result topic's level).
    pub req: String,
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    /// Path, with an optional `?query`.
    pub path: String,
    /// Body.
    pub payload: Vec<u8>,
    /// Content-Format of the body.
    pub content_format: Option<u16>,
    /// When it expires, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// Send as Confirmable.
    pub confirmable: bool,
    /// Register as an observer (Observe = 0); the edge's own telemetry observations.
    #[serde(default)]
    pub observe: bool,
    /// Accept option.
    #[serde(default)]
    pub accept: Option<u16>,
}

/// What the driver writes down so queued commands survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum JournalEntry {
    /// Accepted and waiting.
    Queued(DownlinkCommand),
    /// Finished (a result was produced).
    Done {
        /// Device.
        device: String,
        /// Request id.
        req: String,
    },
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// Device.
    pub device: String,
    /// Request id.
    pub req: String,
    /// `ok` (any response from the device), `expired`, `timeout`, `reset`, `rejected`.
    pub status: &'static str,
    /// The response code (`2.05`…) when the device answered.
    pub code: Option<String>,
    /// Response Content-Format.
    pub content_format: Option<u16>,
    /// Response body.
    pub payload: Vec<u8>,
    /// Why, for non-`ok` results.
    pub error: Option<String>,
    /// The token of the exchange (for observations the notifications carry it too).
    pub token: Option<[u8; 8]>,
    /// The response carried an Observe option: the device accepted the observation.
    pub observing: bool,
}

impl CommandResult {
    fn failed(
        cmd: &DownlinkCommand,
        status: &'static str,
        error: impl Into<String>,
    ) -> CommandResult {
        CommandResult {
            device: cmd.device.clone(),
            req: cmd.req.clone(),
            status,
            code: None,
            content_format: None,
            payload: Vec::new(),
            error: Some(error.into()),
            token: None,
            observing: false,
        }
    }

    /// The JSON published on `…/cmd/{req}/result`.
    pub fn to_json(&self, rid: u64) -> Vec<u8> {
        let mut v = serde_json::Map::new();
        v.insert("rid".into(), rid.to_string().into());
        v.insert("req".into(), self.req.clone().into());
        v.insert("status".into(), self.status.into());
        if let Some(c) = &self.code {
            v.insert("code".into(), c.clone().into());
        }
        if let Some(cf) = self.content_format {
            v.insert("content_format".into(), cf.into());
        }
        if !self.payload.is_empty() {
            match std::str::from_utf8(&self.payload) {
                Ok(text) => v.insert("payload".into(), text.into()),
                Err(_) => v.insert("payload_hex".into(), hex::encode(&self.payload).into()),
            };
        }
        if let Some(e) = &self.error {
            v.insert("error".into(), e.clone().into());
        }
        serde_json::Value::Object(v).to_string().into_bytes()
    }
}

/// Transmission settings (RFC 7252 §4.8).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u8 = 4;
/// How long to wait for a separate response after an empty ACK.
const SEPARATE_WAIT: Duration = Duration::from_secs(60);
/// How many finished (device, req) pairs are remembered to drop duplicate commands.
const RECENT_REQS: usize = 65_536;

#[derive(Debug)]
struct Exchange {
    cmd: DownlinkCommand,
    peer: Peer,
    message_id: u16,
    token: [u8; 8],
    bytes: Vec<u8>,
    next_at: Option<Instant>,
    timeout: Duration,
    retransmits: u8,
    separate_until: Option<Instant>,
    /// Queue mode: the end of the device's listening window it was (re)sent in.
    window_end: Option<Instant>,
    /// The command's TTL on this clock: nothing is (re)sent after it.
    expires_at: Instant,
    /// Waiting, unanswered, for the device's next window.
    parked: bool,
}

/// The tokens of the edge's requests: the first 8 bytes of SHA-256(key ‖ counter), so that
/// seeing some tokens tells nothing about the next (see the module docs).
#[derive(Default)]
struct Tokens {
    key: [u8; 16],
    counter: u64,
}

impl Tokens {
    fn next(&mut self) -> [u8; 8] {
        self.counter = self.counter.wrapping_add(1);
        let digest = Sha256::new()
            .chain_update(self.key)
            .chain_update(self.counter.to_be_bytes())
            .finalize();
        let mut token = [0u8; 8];
        for (t, d) in token.iter_mut().zip(digest) {
            *t = d;
        }
        token
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Lines below which the journal is never rewritten while running.
const MIN_REWRITE_LINES: u64 = 1024;

/// What the downlink counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownlinkStats {
    /// Platform commands accepted (queued).
    pub accepted: u64,
    /// Refused with `queue full` (per device or in all).
    pub queue_full: u64,
    /// Refused as too large for the device's path.
    pub too_large: u64,
    /// Refused: the device is not on the allow-list.
    pub not_allowed: u64,
    /// Refused: the request could not be encoded.
    pub unencodable: u64,
    /// Journal batches that could not be written (their commands were refused).
    pub journal_failures: u64,
    /// Journal rewrites done while running.
    pub journal_rewrites: u64,
}

/// The downlink state of one edge router.
#[derive(Debug)]
pub struct Downlink {
    queues: Queues,
    in_flight: HashMap<String, Exchange>,
    by_token: HashMap<[u8; 8], String>,
    /// The exchange in flight for each (peer, message ID), for empty ACKs and Resets.
    by_message_id: HashMap<(SocketAddr, u16), String>,
    known: HashSet<(String, String)>,
    recent: VecDeque<(String, String)>,
    tokens: Tokens,
    results: VecDeque<CommandResult>,
    journal: JournalBook,
    transmits: VecDeque<Outgoing>,
    limits: CommandLimits,
    /// No queued command expires before this (Unix ms): the queues are not walked until then.
    next_expiry_ms: u64,
    stats: DownlinkStats,
    /// Commands dropped as duplicates of one already accepted.
    pub duplicates: u64,
    /// Exchanges in flight looked at to match empty ACKs and Resets (at most one per message).
    pub exchanges_examined: u64,
}

impl Default for Downlink {
    fn default() -> Self {
        Downlink {
            queues: Queues::default(),
            in_flight: HashMap::default(),
            by_token: HashMap::default(),
            by_message_id: HashMap::default(),
            known: HashSet::default(),
            recent: VecDeque::new(),
            tokens: Tokens::default(),
            results: VecDeque::new(),
            journal: JournalBook::new(MIN_REWRITE_LINES),
            transmits: VecDeque::new(),
            limits: CommandLimits::default(),
            next_expiry_ms: u64::MAX,
            stats: DownlinkStats::default(),
            duplicates: 0,
            exchanges_examined: 0,
        }
    }
}

/// What the downlink needs to know about a device to send to it.
#[derive(Debug, Clone, Copy)]
pub struct Reachability {
    /// Where it is (and the edge's address it reached).
    pub address: Peer,
    /// Always reachable (`U`), or only within `window` after `last_uplink` (`UQ`).
    pub queue_mode: bool,
    /// Its last uplink.
    pub last_uplink: Instant,
}

impl Downlink {
    /// Empty; the tokens of its requests are derived from `token_key` (keep it secret: pass
    /// random bytes).
    pub fn new(token_key: [u8; 16]) -> Downlink {
        Downlink {
            tokens: Tokens {
                key: token_key,
                counter: 0,
            },
            ..Downlink::default()
        }
    }

    /// Commands in flight (sent, awaiting their answer).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The same with `limits` on platform commands.
    #[must_use]
    pub fn with_limits(mut self, limits: CommandLimits) -> Downlink {
        self.limits = limits;
        self
    }

    /// Commands waiting or in flight.
    pub fn pending(&self) -> usize {
        self.queues.len() + self.in_flight.len()
    }

    /// Counters.
    pub fn stats(&self) -> &DownlinkStats {
        &self.stats
    }

    /// Lines the command journal holds (as far as the batches written say), and the journaled
    /// commands not yet done.
    pub fn journal_sizes(&self) -> (u64, u64) {
        self.journal.sizes()
    }

    /// Next finished command.
    pub fn poll_result(&mut self) -> Option<CommandResult> {
        self.results.pop_front()
    }

    /// The next journal batch to persist, unless one is being written (one at a time).
    #[must_use]
    pub fn poll_journal(&mut self) -> Option<JournalBatch> {
        let (queues, in_flight) = (&self.queues, &self.in_flight);
        self.journal.poll_batch(|| live_commands(queues, in_flight))
    }

    /// What became of journal batch `id`. Returns the devices that may have a command ready to
    /// send now (the caller tries them); the commands of a failed batch are finished with an
    /// error result instead (they were never sent).
    pub fn journal_written(&mut self, id: u64, outcome: JournalWritten) -> Vec<String> {
        match self.journal.written(id, outcome) {
            None => Vec::new(),
            Some(Ok(devices)) => {
                if outcome == (JournalWritten::Durable { rewritten: true }) {
                    self.stats.journal_rewrites += 1;
                }
                devices
            }
            Some(Err(FailedBatch { after, upto })) => {
                self.stats.journal_failures += 1;
                // Their `queued` lines are not in the file (the writer cuts a failed append
                // off before the next): no `done` entry is needed.
                let lost = self.queues.take_where(|q| q.seq > after && q.seq <= upto);
                for cmd in lost {
                    self.journal.dropped();
                    self.finish(
                        CommandResult::failed(
                            &cmd,
                            "rejected",
                            "not stored: the command journal could not be written",
                        ),
                        false,
                    );
                }
                Vec::new()
            }
        }
    }

    /// Next datagram to send: a request for a device.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    /// Earliest retransmission or deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .filter_map(|x| {
                if x.parked {
                    Some(x.expires_at)
                } else {
                    x.next_at.or(x.separate_until)
                }
            })
            .min()
    }

    /// Puts back a command from the journal after a restart (no journal entry is written; the
    /// caps do not apply: the journal held it).
    pub fn restore(&mut self, cmd: DownlinkCommand) {
        if self.known.insert((cmd.device.clone(), cmd.req.clone())) {
            self.journal.restored();
            self.next_expiry_ms = self.next_expiry_ms.min(cmd.expires_unix_ms);
            self.queues.push(cmd, 0);
        }
    }

    /// Takes a new command. `device` says where the device is, if it is registered.
    pub fn command(
        &mut self,
        now: Instant,
        unix_ms: u64,
        cmd: DownlinkCommand,
        device: Option<Reachability>,
        listen_window: Duration,
        message_id: u16,
    ) {
        let key = (cmd.device.clone(), cmd.req.clone());
        if self.known.contains(&key) {
            self.duplicates += 1;
            return;
        }
        // The allow-list and the bounds first: a device the platform may not command gets
        // "not allowed" whether or not it is registered.
        let internal = cmd.req.starts_with('_');
        let waiting = Waiting {
            device: self.queues.len_for(&cmd.device)
                + usize::from(self.in_flight.contains_key(&cmd.device)),
            total: self.pending(),
        };
        let encoded = encode_request(&cmd, 0, &[0; 8]).map(|b| b.len());
        if let Err(refusal) = self.limits.admit(&cmd, encoded, internal, waiting) {
            self.refuse(&cmd, &refusal);
            return;
        }
        if device.is_none() {
            self.finish(
                CommandResult::failed(
                    &cmd,
                    "rejected",
                    format!("device `{}` is not registered", cmd.device),
                ),
                false,
            );
            self.remember(key);
            return;
        }
        self.known.insert(key);
        let seq = if internal {
            0
        } else {
            self.stats.accepted += 1;
            self.journal.queued(&cmd)
        };
        let name = cmd.device.clone();
        self.next_expiry_ms = self.next_expiry_ms.min(cmd.expires_unix_ms);
        self.queues.push(cmd, seq);
        self.try_send(now, unix_ms, &name, device, listen_window, message_id);
    }

    /// An error result for a command that is not taken: counted, not journaled, not remembered
    /// (the same request id may come again).
    fn refuse(&mut self, cmd: &DownlinkCommand, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::NotAllowed { .. } => &mut self.stats.not_allowed,
            Refusal::Unencodable(_) => &mut self.stats.unencodable,
            Refusal::MessageTooLarge { .. } | Refusal::PayloadTooLarge { .. } => {
                &mut self.stats.too_large
            }
            Refusal::DeviceQueueFull { .. } | Refusal::TotalQueueFull { .. } => {
                &mut self.stats.queue_full
            }
        };
        *counter += 1;
        self.results
            .push_back(CommandResult::failed(cmd, "rejected", refusal.to_string()));
    }

    /// Sends the next queued command to `device` if it can hear one now.
    pub fn try_send(
        &mut self,
        now: Instant,
        unix_ms: u64,
        device: &str,
        reach: Option<Reachability>,
        listen_window: Duration,
        message_id: u16,
    ) {
        let Some(reach) = reach else { return };
        let window_end = reach.queue_mode.then(|| reach.last_uplink + listen_window);
        if window_end.is_some_and(|end| now > end) {
            return;
        }
        if self.in_flight.contains_key(device) {
            self.resume(now, device, reach.address, window_end);
            return;
        }
        let Some(next) = self.next_unexpired(device, unix_ms) else {
            return;
        };
        let token = self.fresh_token();
        let Some(bytes) = encode_request(&next, message_id, &token) else {
            self.finish(
                CommandResult::failed(&next, "rejected", "the request could not be encoded"),
                true,
            );
            return;
        };
        self.transmits.push_back(Outgoing {
            to: reach.address,
            bytes: bytes.clone(),
            device: Some(device.to_owned()),
        });
        let (next_at, separate_until) = if next.confirmable {
            (Some(now + ACK_TIMEOUT), None)
        } else {
            (None, Some(now + SEPARATE_WAIT))
        };
        self.by_token.insert(token, device.to_owned());
        self.by_message_id
            .insert((reach.address.remote, message_id), device.to_owned());
        let ttl = Duration::from_millis(next.expires_unix_ms.saturating_sub(unix_ms));
        self.in_flight.insert(
            device.to_owned(),
            Exchange {
                cmd: next,
                peer: reach.address,
                message_id,
                token,
                bytes,
                next_at,
                timeout: ACK_TIMEOUT,
                retransmits: 0,
                separate_until,
                window_end,
                expires_at: now + ttl,
                parked: false,
            },
        );
    }

    /// A token no exchange in flight has.
    fn fresh_token(&mut self) -> [u8; 8] {
        loop {
            let token = self.tokens.next();
            if !self.by_token.contains_key(&token) {
                return token;
            }
        }
    }

    /// `device`'s next durable queued command whose TTL has not passed; those whose TTL passed
    /// on the way end `expired`.
    fn next_unexpired(&mut self, device: &str, unix_ms: u64) -> Option<DownlinkCommand> {
        loop {
            let journal = &self.journal;
            let cmd = self
                .queues
                .pop_ready(device, |seq| journal.is_durable(seq))?;
            if cmd.expires_unix_ms > unix_ms {
                return Some(cmd);
            }
            self.finish(
                CommandResult::failed(
                    &cmd,
                    "expired",
                    "TTL passed before the device could be reached",
                ),
                true,
            );
        }
    }

    /// A parked exchange goes again in the device's new window (at the address it uses now;
    /// the (peer, message ID) index follows the address).
    fn resume(&mut self, now: Instant, device: &str, peer: Peer, window_end: Option<Instant>) {
        let Some(x) = self.in_flight.get_mut(device) else {
            return;
        };
        if !x.parked || x.expires_at <= now {
            return;
        }
        x.parked = false;
        let old_key = (x.peer.remote, x.message_id);
        let new_key = (peer.remote, x.message_id);
        x.peer = peer;
        x.window_end = window_end;
        x.timeout = ACK_TIMEOUT;
        x.next_at = Some(now + ACK_TIMEOUT);
        let bytes = x.bytes.clone();
        if old_key != new_key {
            if self
                .by_message_id
                .get(&old_key)
                .is_some_and(|d| d == device)
            {
                self.by_message_id.remove(&old_key);
            }
            self.by_message_id.insert(new_key, device.to_owned());
        }
        self.transmits.push_back(Outgoing {
            to: peer,
            bytes,
            device: Some(device.to_owned()),
        });
    }

    /// Removes `device`'s exchange in flight from every index.
    fn take_in_flight(&mut self, device: &str) -> Option<Exchange> {
        let x = self.in_flight.remove(device)?;
        self.by_token.remove(&x.token);
        let key = (x.peer.remote, x.message_id);
        if self.by_message_id.get(&key).is_some_and(|d| d == device) {
            self.by_message_id.remove(&key);
        }
        Some(x)
    }

    /// An empty ACK or RST from `peer`: one index lookup, whatever the number of commands in
    /// flight. An ACK stops the retransmission (a separate response may follow); a Reset ends
    /// the exchange. Returns the device whose exchange it ended or advanced.
    pub fn handle_empty(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        reset: bool,
    ) -> Option<String> {
        let device = self.by_message_id.get(&(peer, message_id))?.clone();
        self.exchanges_examined += 1;
        if reset {
            let x = self.take_in_flight(&device)?;
            self.finish(
                CommandResult::failed(&x.cmd, "reset", "the device answered with Reset"),
                true,
            );
        } else if let Some(x) = self.in_flight.get_mut(&device) {
            x.next_at = None;
            x.separate_until = Some(now + SEPARATE_WAIT);
        }
        Some(device)
    }

    /// A response-class message from `peer`, verified as `identity`'s when the gateway
    /// authenticated it. Returns the device whose command it finished, and whether it needs an
    /// empty ACK (a Confirmable separate response). It must come from the device the command
    /// is for: the authenticated one (wherever it sends from), or, for a device known by its
    /// address only, from the address the command went to.
    pub fn handle_response(
        &mut self,
        peer: SocketAddr,
        packet: &Packet,
        identity: Option<&str>,
    ) -> Option<(String, bool)> {
        let token: [u8; 8] = packet.get_token().try_into().ok()?;
        let device = self.by_token.get(&token)?.clone();
        let x = self.in_flight.get(&device)?;
        let kind = packet.header.get_type();
        let sender = match identity {
            Some(id) => x.cmd.device == id,
            None => x.peer.remote == peer,
        };
        if !sender
            || (kind == MessageType::Acknowledgement && x.message_id != packet.header.message_id)
        {
            return None;
        }
        let x = self.take_in_flight(&device)?;
        let code = match packet.header.code {
            MessageClass::Response(_) => packet.header.code.to_string(),
            other => other.to_string(),
        };
        let result = CommandResult {
            device: x.cmd.device.clone(),
            req: x.cmd.req.clone(),
            status: "ok",
            code: Some(code),
            content_format: wire::uint_option(packet, CoapOption::ContentFormat, 2)
                .ok()
                .flatten()
                .map(|v| v as u16),
            payload: packet.payload.clone(),
            error: None,
            token: Some(token),
            observing: packet.get_first_option(CoapOption::Observe).is_some(),
        };
        self.finish(result, true);
        Some((device, kind == MessageType::Confirmable))
    }

    /// Retransmits, gives up, expires. Returns devices whose exchange ended (to send their next).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<String> {
        let (mut ended, expired) = self.retransmit_due(now);
        for device in &ended {
            if let Some(x) = self.take_in_flight(device) {
                self.finish(
                    CommandResult::failed(&x.cmd, "timeout", "the device did not answer"),
                    true,
                );
            }
        }
        for device in expired {
            if let Some(x) = self.take_in_flight(&device) {
                let sent = u32::from(x.retransmits) + 1;
                self.finish(
                    CommandResult::failed(
                        &x.cmd,
                        "expired",
                        format!(
                            "TTL passed before the device answered (sent {sent} time(s) in its listening windows, never after the TTL)"
                        ),
                    ),
                    true,
                );
                ended.push(device);
            }
        }
        ended
    }

    /// The exchanges in flight at `now`: retransmits those due (parks them instead when the
    /// device's window closed); returns the devices whose exchange gave up (no answer after
    /// MAX_RETRANSMIT, or no separate response in time) and those whose TTL passed.
    fn retransmit_due(&mut self, now: Instant) -> (Vec<String>, Vec<String>) {
        let mut ended = Vec::new();
        let mut expired = Vec::new();
        for (device, x) in &mut self.in_flight {
            let due = x.next_at.is_some_and(|t| t <= now);
            if x.expires_at <= now && (x.parked || due) {
                // Nothing goes out after the TTL.
                expired.push(device.clone());
                continue;
            }
            if due && x.window_end.is_some_and(|end| now >= end) {
                // The device sleeps: its next window brings the same message again.
                x.parked = true;
                x.next_at = None;
                continue;
            }
            if due {
                if x.retransmits >= MAX_RETRANSMIT {
                    ended.push(device.clone());
                    continue;
                }
                x.retransmits += 1;
                x.timeout = x.timeout.saturating_mul(2);
                x.next_at = Some(now + x.timeout);
                self.transmits.push_back(Outgoing {
                    to: x.peer,
                    bytes: x.bytes.clone(),
                    device: Some(device.clone()),
                });
            } else if x.separate_until.is_some_and(|t| t <= now) {
                ended.push(device.clone());
            }
        }
        (ended, expired)
    }

    /// Devices with queued commands (to try after their uplinks).
    pub fn has_queued(&self, device: &str) -> bool {
        self.queues.has(device)
    }

    /// Devices with something for their next window: queued commands, or a parked exchange.
    pub fn has_waiting(&self, device: &str) -> bool {
        self.has_queued(device) || self.in_flight.get(device).is_some_and(|x| x.parked)
    }

    /// Expires queued commands whose TTL passed (walks the queues only once one is due).
    pub fn expire_queued(&mut self, unix_ms: u64) {
        if unix_ms < self.next_expiry_ms {
            return;
        }
        let expired = self.queues.take_where(|q| q.cmd.expires_unix_ms <= unix_ms);
        self.next_expiry_ms = self.queues.earliest_expiry().unwrap_or(u64::MAX);
        for c in expired {
            self.finish(
                CommandResult::failed(
                    &c,
                    "expired",
                    "TTL passed before the device could be reached",
                ),
                true,
            );
        }
    }

    fn finish(&mut self, result: CommandResult, journaled: bool) {
        if journaled && !result.req.starts_with('_') {
            self.journal.done(&result.device, &result.req);
        }
        self.remember((result.device.clone(), result.req.clone()));
        self.results.push_back(result);
    }

    /// Keeps finished pairs for a while so a re-delivered command is not run twice.
    fn remember(&mut self, key: (String, String)) {
        self.known.insert(key.clone());
        self.recent.push_back(key);
        if self.recent.len() > RECENT_REQS
            && let Some(old) = self.recent.pop_front()
        {
            self.known.remove(&old);
        }
    }
}

/// The journaled (platform) commands still to do, each device's in its order: the one in
/// flight first, then its queue.
fn live_commands(queues: &Queues, in_flight: &HashMap<String, Exchange>) -> Vec<DownlinkCommand> {
    let mut live = Vec::with_capacity(queues.len() + in_flight.len());
    let mut devices: Vec<&str> = queues.devices().collect();
    devices.extend(
        in_flight
            .keys()
            .map(String::as_str)
            .filter(|d| !queues.has(d)),
    );
    for device in devices {
        let first = in_flight.get(device).map(|x| &x.cmd);
        live.extend(
            first
                .into_iter()
                .chain(queues.of(device))
                .filter(|c| !c.req.starts_with('_'))
                .cloned(),
        );
    }
    live
}

fn encode_request(cmd: &DownlinkCommand, message_id: u16, token: &[u8; 8]) -> Option<Vec<u8>> {
    let method = match cmd.method.as_str() {
        "GET" => RequestType::Get,
        "PUT" => RequestType::Put,
        "POST" => RequestType::Post,
        "DELETE" => RequestType::Delete,
        _ => return None,
    };
    let mut p = Packet::new();
    p.header.set_type(if cmd.confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    });
    p.header.code = MessageClass::Request(method);
    p.header.message_id = message_id;
    p.set_token(token.to_vec());
    let (path, query) = cmd.path.split_once('?').unwrap_or((&cmd.path, ""));
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if cmd.observe {
        p.add_option(CoapOption::Observe, Vec::new());
    }
    if let Some(cf) = cmd.content_format {
        p.add_option(CoapOption::ContentFormat, wire::write_uint(u32::from(cf)));
    }
    if let Some(a) = cmd.accept {
        p.add_option(CoapOption::Accept, wire::write_uint(u32::from(a)));
    }
    for q in query.split('&').filter(|q| !q.is_empty()) {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = cmd.payload.clone();
    wire::encode(&p)
}
