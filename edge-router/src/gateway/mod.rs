//! The authentication gateway, sans-IO: OSCORE (RFC 8613) between the devices and the
//! [`Ingress`], address binding, and what must be persisted or audited because of them.
//!
//! ```text
//!  datagram ─▶ Gateway::handle_datagram ─ verify (kid → context) ─ binding ─▶ Ingress (inner request + device id)
//!  datagram ◀─ Gateway::poll_transmit ◀─ protect: answers (RequestInfo by peer+token),  ◀─ Ingress answers/commands
//!                                        requests (the target device's context, to its binding)
//!                      │ poll_persist / handle_persisted: sender marks, replay floors (answers held)
//!                      │ poll_audit: bindings, auth failures (aggregated), revocations noticed
//!                      └ poll_security_event: every refusal, for the log
//! ```
//!
//! | file | job |
//! |---|---|
//! | [`keys`] | the keyring: one context per active device by kid, synced with the registry |
//! | `binding` | where each device is bound (its address and the edge's address it reached), both ways; moves only on fresh evidence, confirmed by an Echo round trip; conflicts between devices |
//! | `audit_room` | the room left in the registry's audit lane: what would write rows it cannot take gets 5.03 + Max-Age instead |
//! | `exchanges` | server and client `RequestInfo`s in flight, sent requests for retransmission, deduplication by address, message ID and fingerprint |
//! | [`persist`] | sender sequence marks and replay floors in batches; answers held until durable |
//! | [`peek`] | the header, token and kid of a datagram, read in place before anything is spent on it |
//! | [`failures`] | [`SecurityEvent`], the answer per cause, error answers bounded per source and globally, failure audit rows per interval |
//! | [`limits`] | the three lanes (kid, expected, unauthenticated), token buckets per source network (/64) and per device, quarantine of a kid that keeps failing verification |
//! | [`reports`] | security events counted by cause with samples: one report per interval for `_edge/{edge}/security` |
//!
//! # Rules
//!
//! With `require_oscore` (the default) every request must be OSCORE-protected: a plain one gets
//! 4.01 ("OSCORE required") if Confirmable and nothing if not; failures to verify get the
//! unprotected codes of RFC 8613 §8.2 (4.01 unknown kid or replay, 4.00 decryption failed, 4.02
//! malformed); a revoked device's kid gets 4.01, a quarantined one's 4.03. Per source at most
//! [`FailureLog::MAX_REPLIES`](failures) error answers per window go out; the rest is dropped
//! and counted, so a flood of forgeries cannot make the edge an amplifier. Nothing refused
//! reaches the ingress, so nothing refused reaches the outbox.
//!
//! A verified request from outside the device's allowed prefixes gets a protected 4.03; a
//! registration whose `ep` is not the authenticated device gets a protected 4.03. Otherwise its
//! binding decides (see `binding`): from the device's bound address it is served; its first
//! binding is audited and served; a request not above the device's newest Partial IV from
//! anywhere else is dropped (`stale_elsewhere`); a fresh one from a new address — or from an
//! address another device is bound to, a conflict audited naming both — is answered with a
//! protected 4.01 carrying an Echo option (RFC 9175), and only the device's repeat with that
//! value from that address moves it (audited; the ingress moves the registration; a displaced
//! device is unreachable there until verified again).
//!
//! Commands and observations belong to a device, never to an address: the ingress names the
//! device each request is for, and the gateway protects it with that device's context and sends
//! it where that device is bound, from the edge's address the device last reached. Responses
//! and notifications must be protected and verify with the context of the request their token
//! belongs to, wherever they come from; plain ones are dropped and counted. Answers leave from
//! the edge's address their request arrived at.
//! A response or notification the edge cannot match to a request of its own (a stale one after
//! an edge restart) is answered with an empty Reset, within the error-answer budget, so the
//! device ends the observation (RFC 7641 §3.6).
//!
//! Empty ACK/RST messages are not protected by OSCORE (RFC 8613 §4.2), so anyone can send one.
//! An empty ACK passes to the ingress: it may stop the retransmission of the edge's Confirmable
//! request, which then waits for a separate response (and ends as `timeout` without one). An
//! empty Reset is never trusted to end a protected exchange: with `require_oscore` (every
//! request of the edge protected) and, in lab mode, for a protected request of the edge, it is
//! ignored and counted (`reset_ignored`); the request stays pending and is retransmitted.
//!
//! # Rate limits and quarantine
//!
//! Before any cryptography a datagram is put in one of three lanes ([`limits`]): a request
//! naming an active device's kid goes to that kid's gate (open unless the kid's refusal budget
//! is used up or it is quarantined — either way still open from its device's own address),
//! a response or empty ACK answering the edge's own request goes on, everything else takes a
//! token from its source network's bucket (IPv6 /64, IPv4 address) or is dropped unread and
//! counted (no answer: a flood gets nothing back). A spoofed flood from a plant's /64 thus
//! drains only that /64's unauthenticated budget, never its verified devices'. A verified
//! request must find a token in its device's bucket, else it is answered with a protected 5.03
//! and a Max-Age, which the SDK's reporter honours like a full outbox. No source network is
//! ever quarantined; a kid whose requests keep failing verification is
//! ([`LimitsConfig::failures_to_quarantine`] within the failure window), audited and reported.
//! Every refusal goes into the next security report ([`poll_security_report`](Gateway::poll_security_report)).
//!
//! Without `require_oscore` (lab only) plain messages go to the ingress as before, and OSCORE
//! messages are still verified and answered protected.
//!
//! # Cost
//!
//! `benches/gateway.rs` (a telemetry datagram in, its record stored, the floor batch written,
//! the ACK out, 10,000 devices): the lab path through the gateway costs the same as the bare
//! ingress (≈ 4–7 µs here); the OSCORE path roughly 2–3× that (≈ 10 µs: one AEAD open, one
//! seal, the exchange bookkeeping and a one-row persistence batch per request). Measured on
//! a shared, loaded 2-core machine: rough figures.

pub mod audit_room;
mod binding;
mod exchanges;
pub mod failures;
pub mod keys;
pub mod limits;
pub mod peek;
pub mod persist;
pub mod reports;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use time::OffsetDateTime;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    OscoreError, OscoreOption, RequestInfo, protect_request, protect_response, unprotect_request,
    unprotect_response,
};

use crate::audit::{AuditEvent, AuditKind};
use crate::ingress::{AUDIT_BUSY, AppendResult, AppendTicket, DownlinkCommand, Ingress};
use crate::peer::Peer;
use audit_room::AuditRoom;
use binding::{Bindings, Decision};
use exchanges::{ClientExchange, Exchanges, Seen, ServerExchange};
use failures::FailureLog;
pub use failures::{FailureTables, SecurityCause, SecurityEvent};
use keys::Keyring;
pub use keys::{DeviceKeys, KeyChange, StoredState};
use limits::{Limits, Verdict};
pub use limits::{LimitsConfig, Rate};
use peek::Peek;
use persist::Persistence;
pub use persist::{PersistBatch, StateRow};
use reports::SecurityEvents;
pub use reports::{QuarantineNote, SecurityReport};
use v6iot_credentials::DeviceState;

/// Settings of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Refuse every request that is not OSCORE-protected (default). `false` is for labs only.
    pub require_oscore: bool,
    /// The distance between persisted sender sequence marks (Appendix B.1.1): one write per
    /// this many/2 protected messages to a device, this many numbers skipped per restart.
    pub persist_step: u64,
    /// How long exchanges and duplicates are remembered (EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// Rate limits and quarantine.
    pub limits: LimitsConfig,
    /// This edge's name, in security reports.
    pub edge_id: String,
    /// At most one security report per this interval (none while nothing is refused).
    pub report_interval: Duration,
    /// Seeds the Echo values that confirm a device's new address (RFC 9175); the server
    /// gives a random one.
    pub echo_seed: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            require_oscore: true,
            persist_step: 4096,
            exchange_lifetime: Duration::from_secs(247),
            limits: LimitsConfig::default(),
            edge_id: "edge".to_owned(),
            report_interval: Duration::from_secs(5),
            echo_seed: 0,
        }
    }
}

/// Counters of the gateway. Every refusal is also a [`SecurityEvent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Requests that verified.
    pub authenticated: u64,
    /// Responses and notifications to the edge's requests that verified.
    pub responses_verified: u64,
    /// Messages refused, all causes.
    pub refused: u64,
    /// Plain requests refused.
    pub plain: u64,
    /// Unknown kids.
    pub unknown_kid: u64,
    /// AEAD failures.
    pub decryption_failed: u64,
    /// Replays.
    pub replay: u64,
    /// Malformed OSCORE.
    pub malformed: u64,
    /// Revoked or quarantined devices.
    pub not_active: u64,
    /// Verified requests from outside the allowed prefixes.
    pub address_refused: u64,
    /// Registrations under another name.
    pub endpoint_mismatch: u64,
    /// Plain or unverifiable responses dropped.
    pub bad_responses: u64,
    /// Error answers not sent (the source's window was used up).
    pub replies_suppressed: u64,
    /// Retransmissions answered from memory.
    pub duplicates: u64,
    /// Devices that moved to another address (confirmed by an Echo round trip).
    pub address_changes: u64,
    /// Verified requests from a new address answered with an Echo challenge (RFC 9175)
    /// instead of being served.
    pub echo_challenges: u64,
    /// Verified requests from an address another device is bound to (each audited), and
    /// requests not taken because another device's with the same token from the same
    /// address awaited its answer.
    pub address_conflicts: u64,
    /// Verified requests not above their device's newest Partial IV from an address it is
    /// not bound to: dropped, the binding unchanged.
    pub stale_elsewhere: u64,
    /// Requests to devices bound nowhere (displaced by another device): not sent.
    pub unreachable: u64,
    /// Unauthenticated datagrams dropped by their source network's rate limit.
    pub source_limited: u64,
    /// Requests refused unverified because their kid is quarantined.
    pub kid_quarantined: u64,
    /// Requests dropped unread because their kid's refusal budget was used up.
    pub kid_limited: u64,
    /// Empty Resets ignored rather than trusted to end a protected exchange.
    pub resets_ignored: u64,
    /// Verified requests answered 5.03 by their device's rate limit.
    pub device_limited: u64,
    /// Verified requests that would write audit rows answered 5.03 because the audit lane
    /// had no room for them (see `gateway::audit_room`): nothing about them changed or was
    /// written.
    pub audit_busy: u64,
    /// Kid quarantines begun.
    pub quarantines: u64,
    /// Outgoing messages that could not be protected yet (a sequence mark was being
    /// persisted; the retransmission goes) or at all (no context for the destination).
    pub protect_failures: u64,
}

/// Something to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// The registry reload changed a device's context.
    Keys(KeyChange),
    /// A device was first verified at an address.
    Bound {
        /// Device.
        device: String,
        /// Address.
        address: SocketAddr,
    },
    /// A kid was quarantined after repeated failed verifications.
    Quarantined {
        /// The kid, hex.
        kid: String,
        /// Its device.
        device: String,
        /// Failed verifications that led to it.
        failures: u32,
        /// How long, seconds.
        for_s: u64,
    },
    /// A device was verified at another address than before (and confirmed there).
    Moved {
        /// Device.
        device: String,
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// A device was verified at an address another device is bound to (it was challenged).
    Conflict {
        /// The device verified there.
        device: String,
        /// The device bound there.
        holder: String,
        /// The address.
        address: SocketAddr,
    },
    /// A device lost its address to another that was confirmed there: nothing is sent to it
    /// until it is verified again.
    Displaced {
        /// The device that lost the address.
        device: String,
        /// The device bound there now.
        by: String,
        /// The address.
        address: SocketAddr,
    },
}

const MAX_QUEUED_EVENTS: usize = 4096;
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Sizes of the gateway's tables that unauthenticated input could try to grow, for tests and
/// the stated bounds (`edge-router/THREATS.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayTables {
    /// Source networks with a bucket (at most [`LimitsConfig::max_tracked`]).
    pub sources: u64,
    /// Devices with a bucket (at most [`LimitsConfig::max_tracked`]).
    pub devices: u64,
    /// Kids failing or quarantined (at most the active devices).
    pub kids: u64,
    /// The failure log's error-answer windows and audit rows.
    pub failures: FailureTables,
    /// Audit rows waiting to be taken (at most 4096).
    pub queued_audits: usize,
    /// Refusals waiting to be taken for the log (at most 4096).
    pub queued_refusals: usize,
}

/// The gateway in front of an [`Ingress`]. See the module docs.
pub struct Gateway {
    ingress: Ingress,
    config: GatewayConfig,
    keys: Keyring,
    bindings: Bindings,
    exchanges: Exchanges,
    persistence: Persistence,
    failures: FailureLog,
    limits: Limits,
    reports: SecurityEvents,
    next_limits_sweep: Option<Instant>,
    security: VecDeque<SecurityEvent>,
    events: VecDeque<GatewayEvent>,
    audits: VecDeque<AuditEvent>,
    audit_room: AuditRoom,
    transmits: VecDeque<(Peer, Vec<u8>)>,
    stats: GatewayStats,
    next_sweep: Option<Instant>,
}

impl Gateway {
    /// A gateway in front of `ingress`, with no devices yet (see
    /// [`handle_devices`](Self::handle_devices)).
    pub fn new(ingress: Ingress, config: GatewayConfig) -> Gateway {
        Gateway {
            limits: Limits::new(config.limits.clone()),
            reports: SecurityEvents::new(config.edge_id.clone(), config.report_interval, 16),
            next_limits_sweep: None,
            ingress,
            keys: Keyring::new(config.persist_step),
            exchanges: Exchanges::new(config.exchange_lifetime),
            bindings: Bindings::new(config.echo_seed, config.exchange_lifetime),
            audit_room: AuditRoom::new(config.echo_seed.rotate_left(32)),
            config,
            persistence: Persistence::default(),
            failures: FailureLog::new(),
            security: VecDeque::new(),
            events: VecDeque::new(),
            audits: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: GatewayStats::default(),
            next_sweep: None,
        }
    }

    /// The ingress behind the gateway (appends, journal, its events and counters).
    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    /// The ingress behind the gateway, to poll its appends, journal entries and events.
    pub fn ingress_mut(&mut self) -> &mut Ingress {
        &mut self.ingress
    }

    /// The gateway's counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// New rate limits and quarantine settings (SIGHUP); see [`Limits::set_config`].
    pub fn set_limits(&mut self, config: LimitsConfig) {
        self.limits.set_config(config);
    }

    /// Active devices with a context.
    pub fn device_count(&self) -> usize {
        self.keys.len()
    }

    /// Devices bound to an address.
    pub fn bound_count(&self) -> usize {
        self.bindings.len()
    }

    /// Answers waiting for their persistence batch.
    pub fn held_answers(&self) -> usize {
        self.persistence.held()
    }

    /// Replaces the set of devices with the registry's (all of them, any state): new and
    /// reinstated devices get a context, revoked and quarantined ones lose theirs (their
    /// registration ends, their binding goes, the event is audited), unchanged ones keep theirs.
    pub fn handle_devices(&mut self, unix_ms: u64, devices: Vec<DeviceKeys>) {
        for change in self.keys.sync(devices) {
            match &change {
                KeyChange::Loaded { kid, .. } => {
                    self.exchanges.forget_kid(kid);
                    self.limits.forget_kid(kid);
                    self.persistence.dirty(kid);
                }
                KeyChange::Dropped { device, kid, state } => {
                    self.exchanges.forget_kid(kid);
                    self.limits.forget_kid(kid);
                    self.bindings.remove(device);
                    let reason = state.map_or("deleted", DeviceState::as_str);
                    self.ingress.remove_device(unix_ms, device, reason);
                    let kind = match state {
                        Some(DeviceState::Quarantined) => AuditKind::Quarantined,
                        _ => AuditKind::Revoked,
                    };
                    self.audit(
                        AuditEvent::new(kind, device.clone())
                            .at(audit_time(unix_ms))
                            .detail(format!(
                                "noticed by the edge ({reason}): context dropped, session ended"
                            )),
                    );
                }
                KeyChange::Unusable(_) => {}
            }
            push_bounded(&mut self.events, GatewayEvent::Keys(change));
        }
    }

    /// Handles one datagram from `peer` (and, when the socket tells, the edge's address it was
    /// sent to: the answers leave from there).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: impl Into<Peer>,
        bytes: &[u8],
    ) {
        let peer = peer.into();
        self.arm_limits_sweep(now);
        if let Some(refusal) = self.admit(now, peer.remote, bytes) {
            if refusal.cause == SecurityCause::KidQuarantined {
                // Refused unverified; answered (4.03) within the reply budget.
                self.refuse_quarantined(now, unix_ms, peer, bytes, refusal);
                return;
            }
            self.count(refusal.cause);
            self.note_security(now, unix_ms, refusal);
            return;
        }
        let Ok(packet) = wire::parse(bytes) else {
            // The ingress counts it and answers a Confirmable one with a Reset.
            self.ingress.handle_datagram(now, unix_ms, peer, bytes);
            self.pump(now);
            return;
        };
        let code = u8::from(packet.header.code);
        let protected = packet
            .get_option(CoapOption::Oscore)
            .is_some_and(|v| !v.is_empty());
        let class = wire::code_class(code);
        if protected && wire::is_request_code(code) {
            self.protected_request(now, unix_ms, peer, &packet);
        } else if protected && (2..=5).contains(&class) {
            self.protected_response(now, unix_ms, peer, &packet);
        } else if code == 0
            && packet.header.get_type() == MessageType::Reset
            && self.untrusted_reset(peer.remote, packet.header.message_id)
        {
            self.refuse(
                now,
                unix_ms,
                peer,
                &packet,
                None,
                SecurityCause::ResetIgnored,
            );
        } else if code == 0 || !self.config.require_oscore {
            self.plain(now, unix_ms, peer, &packet);
        } else {
            let cause = if wire::is_request_code(code) {
                SecurityCause::PlainRequest
            } else {
                SecurityCause::PlainResponse
            };
            self.refuse(now, unix_ms, peer, &packet, None, cause);
        }
        self.pump(now);
        self.arm_sweep(now);
    }

    /// Puts a datagram in its lane before anything is spent on it (see [`limits`]): `None` to
    /// go on, or the refusal of a datagram dropped unread (or, for a quarantined kid, refused
    /// unverified).
    fn admit(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) -> Option<SecurityEvent> {
        let refusal = |cause, kid, device| {
            Some(SecurityEvent {
                peer,
                kid,
                device,
                cause,
            })
        };
        let peek = Peek::of(bytes);
        if let Some(p) = &peek {
            if p.is_request()
                && let Some(kid) = p.kid()
                && let Some(entry) = self.keys.get(&kid)
            {
                let from_bound = self
                    .bindings
                    .get(&entry.id)
                    .is_some_and(|b| b.remote == peer);
                let device = entry.id.clone();
                return match self.limits.check_kid(now, &kid, from_bound) {
                    Verdict::Allow => None,
                    Verdict::KidLimited => {
                        refusal(SecurityCause::KidLimited, Some(kid), Some(device))
                    }
                    _ => refusal(SecurityCause::KidQuarantined, Some(kid), Some(device)),
                };
            }
            let expected = if p.is_response() {
                self.exchanges.has_client(p.token)
            } else {
                p.code == 0
                    && p.kind == MessageType::Acknowledgement
                    && self.exchanges.sent_to(peer, p.message_id)
            };
            if expected {
                return None;
            }
        }
        match self.limits.check_source(now, peer.ip()) {
            Verdict::Allow => None,
            _ => refusal(SecurityCause::SourceLimited, None, None),
        }
    }

    /// An empty Reset must not end a protected exchange (see the module docs): true when it
    /// is ignored — always with `require_oscore`, else when it names a protected request of
    /// the edge.
    fn untrusted_reset(&self, peer: SocketAddr, message_id: u16) -> bool {
        self.config.require_oscore || self.exchanges.sent_to(peer, message_id)
    }

    /// Takes a command from the platform (see [`Ingress::handle_command`]).
    pub fn handle_command(&mut self, now: Instant, unix_ms: u64, command: DownlinkCommand) {
        self.ingress.handle_command(now, unix_ms, command);
        self.pump(now);
        self.arm_sweep(now);
    }

    /// Reports what became of a command journal batch (see [`Ingress::handle_journal_written`]):
    /// the commands it made durable are protected and sent.
    pub fn handle_journal_written(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: u64,
        outcome: crate::ingress::JournalWritten,
    ) {
        self.ingress
            .handle_journal_written(now, unix_ms, id, outcome);
        self.pump(now);
    }

    /// Reports a store's result (see [`Ingress::handle_appended`]); the answer is protected and
    /// held until its device's replay floor is durable.
    pub fn handle_appended(&mut self, now: Instant, ticket: AppendTicket, result: AppendResult) {
        self.ingress.handle_appended(ticket, result);
        self.pump(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ingress.poll_timeout(),
            self.failures.poll_timeout(),
            self.next_sweep,
            self.next_limits_sweep,
            self.reports.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers: the ingress's, failure windows, forgetting old exchanges.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.ingress.handle_timeout(now, unix_ms);
        self.failures.handle_timeout(now, unix_ms);
        while let Some(row) = self.failures.poll_audit() {
            self.audit(row);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.exchanges.sweep(now);
            self.bindings.sweep(now);
            self.next_sweep = None;
            self.arm_sweep(now);
        }
        if self.next_limits_sweep.is_some_and(|t| t <= now) {
            self.limits.handle_timeout(now);
            self.next_limits_sweep = None;
            self.arm_limits_sweep(now);
        }
        self.pump(now);
    }

    /// Next datagram to send: (destination and the edge's address to send it from, bytes).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(Peer, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Next batch of OSCORE state to write durably (one at a time), then report it with
    /// [`handle_persisted`](Self::handle_persisted).
    #[must_use]
    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        self.persistence.poll(&mut self.keys)
    }

    /// The batch `id` was written (`ok`) or failed (it is retried with the next one). The
    /// answers that waited for it go out.
    pub fn handle_persisted(&mut self, now: Instant, id: u64, ok: bool) {
        for r in self.persistence.done(id, ok, &mut self.keys) {
            let seen = if r.confirmable {
                Seen::Answered(r.bytes.clone().into_boxed_slice())
            } else {
                Seen::Silent
            };
            self.exchanges.remember(now, r.peer.remote, r.message, seen);
            self.transmits.push_back((r.peer, r.bytes));
        }
    }

    /// Next audit row to write (bindings, auth failures, revocations noticed).
    #[must_use]
    pub fn poll_audit(&mut self) -> Option<AuditEvent> {
        self.failures
            .poll_audit()
            .or_else(|| self.audits.pop_front())
    }

    /// Next refusal (for logs; limits and reports have seen it already).
    #[must_use]
    pub fn poll_security_event(&mut self) -> Option<SecurityEvent> {
        self.security.pop_front()
    }

    /// The security report, when one is due (see [`reports`]): publish it on
    /// `{prefix}/{site}/_edge/{edge}/security`.
    #[must_use]
    pub fn poll_security_report(&mut self, now: Instant, unix_ms: u64) -> Option<SecurityReport> {
        self.reports.poll_report(now, unix_ms)
    }

    /// The rate limits' counters.
    pub fn limit_stats(&self) -> limits::LimitStats {
        self.limits.stats()
    }

    /// The sizes of the tables unauthenticated input could try to grow.
    pub fn tables(&self) -> GatewayTables {
        let limits = self.limits.stats();
        GatewayTables {
            sources: limits.tracked_sources,
            devices: limits.tracked_devices,
            kids: limits.tracked_kids,
            failures: self.failures.tables(),
            queued_audits: self.audits.len(),
            queued_refusals: self.security.len(),
        }
    }

    /// The driver could not hand `rows` audit rows to the registry (its queue was full): they
    /// are counted in the next security report.
    pub fn note_audit_dropped(&mut self, now: Instant, rows: u64) {
        self.reports.record_audit_dropped(now, rows);
    }

    /// Files a refusal: the queue for logs, the report, and, for a replay or a failed
    /// verification under an active device's kid, the kid's refusal budget and (failures only)
    /// its count towards quarantine.
    fn note_security(&mut self, now: Instant, unix_ms: u64, event: SecurityEvent) {
        self.reports.record(now, unix_ms, &event);
        let cause = event.cause;
        if cause.draws_on_kid()
            && let (Some(kid), Some(device)) = (&event.kid, &event.device)
            && self.keys.get(kid).is_some()
            && let Some(q) = self
                .limits
                .kid_refusal(now, kid, cause.counts_against_kid())
        {
            self.stats.quarantines += 1;
            let note = QuarantineNote {
                kid: hex::encode(kid),
                device: device.clone(),
                failures: q.failures,
                for_s: q.until.saturating_duration_since(now).as_secs(),
                at_ms: unix_ms,
            };
            let mut row = AuditEvent::auth_failure(format!(
                "kid {} quarantined for {} s after {} failed verifications (last: {} from {}); \
                 its requests from other addresses are refused meanwhile",
                note.kid, note.for_s, note.failures, event.cause, event.peer
            ))
            .at(audit_time(unix_ms))
            .address(ipv6(event.peer));
            row.device = Some(device.clone());
            self.audit(row);
            push_bounded(
                &mut self.events,
                GatewayEvent::Quarantined {
                    kid: note.kid.clone(),
                    device: note.device.clone(),
                    failures: note.failures,
                    for_s: note.for_s,
                },
            );
            self.reports.record_quarantine(now, unix_ms, note);
        }
        push_bounded(&mut self.security, event);
    }

    fn arm_limits_sweep(&mut self, now: Instant) {
        if self.next_limits_sweep.is_none() {
            self.next_limits_sweep = self.limits.poll_timeout(now);
        }
    }

    /// Next event to log.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    fn arm_sweep(&mut self, now: Instant) {
        let busy = self.exchanges.is_busy() || self.bindings.challenges() > 0;
        if self.next_sweep.is_none() && busy {
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
    }

    fn audit(&mut self, row: AuditEvent) {
        self.audit_room.charge(1);
        push_bounded(&mut self.audits, row);
    }

    /// The registry's audit lane can take `room` more rows now (the driver tells this after
    /// handing it the rows of [`poll_audit`](Self::poll_audit) and the ingress's events).
    /// Until told, the room is unbounded.
    pub fn handle_audit_room(&mut self, room: usize) {
        self.audit_room.set(room);
    }

    /// The registry thread has taken `taken` audit rows from its lane since start in `cpu` of
    /// its CPU time, and `waiting` rows wait there at `now`: how fast it drains paces the
    /// retry hints of requests the lane has no room for (see [`audit_room`]).
    pub fn handle_audit_drain(&mut self, now: Instant, taken: u64, cpu: Duration, waiting: usize) {
        self.audit_room.drained(now, taken, cpu, waiting);
    }

    /// A verified request whose audit rows (a new binding, a registration) the lane has no
    /// room for is answered 5.03 with a Max-Age paced by the lane's drain (see [`audit_room`]);
    /// true when it was. When it goes on, its registration row is charged. A request that is not `fresh`
    /// binds nothing (see [`binding`]): only a fresh one from elsewhere may cost binding rows.
    fn refused_for_audit(
        &mut self,
        now: Instant,
        peer: Peer,
        device: &str,
        fresh: bool,
        request: &Packet,
    ) -> bool {
        let registration = audit_room::is_registration(request);
        let binds = fresh
            && self
                .bindings
                .get(device)
                .is_none_or(|b| b.remote != peer.remote);
        let rows = usize::from(registration) + if binds { AuditRoom::BINDING_ROWS } else { 0 };
        if self.audit_room.admits(rows) {
            self.audit_room.charge(usize::from(registration));
            return false;
        }
        self.stats.audit_busy += 1;
        let mut answer = error_packet(request, ResponseType::ServiceUnavailable, AUDIT_BUSY);
        // The slot's cost is what serving it will write: a registration row and, for a new
        // binding, its binding row (a conflict row is rare).
        let wait = self
            .audit_room
            .retry_after(now, usize::from(registration) + usize::from(binds));
        answer.add_option(CoapOption::MaxAge, audit_room::max_age(wait));
        self.answer(peer, &answer);
        true
    }

    /// A plain message for the ingress (lab mode, or an empty one). A registration among them
    /// is held back (5.03, see [`Ingress::hold_registrations`]) when the audit lane has no
    /// room for its row.
    fn plain(&mut self, now: Instant, unix_ms: u64, peer: Peer, packet: &Packet) {
        let registration = audit_room::is_registration(packet);
        if registration && !self.audit_room.admits(1) {
            let wait = self.audit_room.retry_after(now, 1);
            self.ingress.hold_registrations(Some(wait));
            self.ingress.handle_packet(now, unix_ms, peer, packet);
            self.ingress.hold_registrations(None);
            return;
        }
        self.audit_room.charge(usize::from(registration));
        self.ingress.handle_packet(now, unix_ms, peer, packet);
    }

    /// An OSCORE request from a device.
    fn protected_request(&mut self, now: Instant, unix_ms: u64, peer: Peer, packet: &Packet) {
        let message = (packet.header.message_id, exchanges::fingerprint(packet));
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        match self.exchanges.seen(peer.remote, message.0, message.1) {
            Some(Seen::Pending | Seen::Silent) => {
                self.stats.duplicates += 1;
                return;
            }
            Some(Seen::Answered(bytes)) => {
                self.stats.duplicates += 1;
                if confirmable {
                    let bytes = bytes.to_vec();
                    self.transmits.push_back((peer, bytes));
                }
                return;
            }
            Some(Seen::Inner(..)) | None => {}
        }
        let Ok(OscoreOption { kid: Some(kid), .. }) = OscoreOption::from_packet(packet) else {
            self.refuse(now, unix_ms, peer, packet, None, SecurityCause::Malformed);
            return;
        };
        let Some(entry) = self.keys.get_mut(&kid) else {
            let (cause, device) = match self.keys.refused(&kid) {
                Some((id, DeviceState::Quarantined)) => {
                    (SecurityCause::DeviceQuarantined, Some(id.clone()))
                }
                Some((id, _)) => (SecurityCause::DeviceRevoked, Some(id.clone())),
                None => (SecurityCause::UnknownKid, None),
            };
            let event = SecurityEvent {
                peer: peer.remote,
                kid: Some(kid),
                device,
                cause,
            };
            self.refuse_as(now, unix_ms, peer, packet, event);
            return;
        };
        // One past the highest Partial IV the device sent so far, before this one.
        let newest = entry.ctx.replay_window().restart_floor();
        let (inner, info) = match unprotect_request(&mut entry.ctx, packet) {
            Ok(verified) => verified,
            Err(e) => {
                let device = Some(entry.id.clone());
                let event = SecurityEvent {
                    peer: peer.remote,
                    kid: Some(kid),
                    device,
                    cause: cause_of(e),
                };
                self.refuse_as(now, unix_ms, peer, packet, event);
                return;
            }
        };
        self.stats.authenticated += 1;
        let verified = Verified {
            fresh: info.sequence_number() >= newest,
            device: entry.id.clone(),
            allowed: entry.allows(ipv6(peer.remote)),
            kid,
            inner,
            info,
            message,
            confirmable,
        };
        self.serve_verified(now, unix_ms, peer, verified);
    }

    /// A verified request: refused (address, name, rate), or challenged, dropped as stale, or
    /// served, as its binding decides (see [`binding`]).
    fn serve_verified(&mut self, now: Instant, unix_ms: u64, peer: Peer, v: Verified) {
        let Verified {
            kid,
            device,
            inner,
            info,
            message,
            confirmable,
            fresh,
            allowed,
        } = v;
        let exchange = ServerExchange {
            kid: kid.clone(),
            info,
            since: now,
            message,
            confirmable,
        };
        if !self
            .exchanges
            .insert_server(peer.remote, inner.get_token(), exchange)
        {
            // Another device's request from this address with this token awaits its answer:
            // this one is not taken (its retransmission may be, once that one is answered).
            self.stats.address_conflicts += 1;
            return;
        }
        self.exchanges
            .remember(now, peer.remote, message, Seen::Pending);
        let refusal = if !allowed {
            Some((
                SecurityCause::AddressNotAllowed,
                "source address not allowed",
            ))
        } else if registers_as_other(&inner, &device) {
            Some((
                SecurityCause::EndpointMismatch,
                "a registration's ep must be the authenticated device",
            ))
        } else {
            None
        };
        if refusal.is_none() && self.limits.check_device(now, &device) != Verdict::Allow {
            let cause = SecurityCause::DeviceLimited;
            self.count(cause);
            let event = security_event(peer, Some(kid), Some(device), cause);
            self.note_security(now, unix_ms, event);
            let mut answer = error_packet(&inner, ResponseType::ServiceUnavailable, "rate limit");
            let wait = (1.0 / self.config.limits.per_device.per_second.max(0.001)).ceil() as u32;
            answer.add_option(CoapOption::MaxAge, wire::write_uint(wait.max(1)));
            self.answer(peer, &answer);
            return;
        }
        if let Some((cause, reason)) = refusal {
            let event = security_event(peer, Some(kid), Some(device), cause);
            self.count(cause);
            let reply = self.failures.record(now, unix_ms, &event);
            self.note_security(now, unix_ms, event);
            if reply {
                let answer = error_packet(&inner, ResponseType::Forbidden, reason);
                self.answer(peer, &answer);
            } else {
                self.stats.replies_suppressed += 1;
                self.exchanges.take_server(peer.remote, inner.get_token());
            }
            return;
        }
        if self.refused_for_audit(now, peer, &device, fresh, &inner) {
            return;
        }
        let echo = inner
            .get_first_option(CoapOption::Unknown(wire::ECHO))
            .map(Vec::as_slice);
        let decision = self.bindings.decide(now, &device, peer, fresh, echo);
        if !self.apply_binding(now, unix_ms, peer, &device, &inner, decision) {
            return;
        }
        let mut inner = inner;
        inner.clear_option(CoapOption::Unknown(wire::ECHO));
        self.ingress
            .handle_authenticated(now, unix_ms, peer, &inner, &device);
    }

    /// Carries out a binding decision for `device`'s verified `request` from `peer`: audit
    /// rows, events, the ingress's registration, the Echo challenge or the drop. `true` when
    /// the request is to be served.
    fn apply_binding(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        device: &str,
        request: &Packet,
        decision: Decision,
    ) -> bool {
        let at = audit_time(unix_ms);
        let address = peer.remote;
        match decision {
            Decision::Stay { .. } => true,
            Decision::Bound => {
                self.audit(
                    AuditEvent::new(AuditKind::AddressBound, device)
                        .at(at)
                        .address(ipv6(address))
                        .detail(format!("verified at {peer}")),
                );
                push_bounded(
                    &mut self.events,
                    GatewayEvent::Bound {
                        device: device.to_owned(),
                        address,
                    },
                );
                true
            }
            Decision::Moved { from, displaced } => {
                self.moved(now, unix_ms, peer, device, from, displaced);
                true
            }
            Decision::Challenge { echo, holder } => {
                self.stats.echo_challenges += 1;
                if let Some(holder) = holder {
                    self.stats.address_conflicts += 1;
                    self.audit(
                        AuditEvent::new(AuditKind::AddressConflict, device)
                            .at(at)
                            .address(ipv6(address))
                            .detail(format!(
                                "verified at {peer}, where {holder} is bound: Echo challenge \
                                 sent; {holder} keeps the address unless {device} answers from it"
                            )),
                    );
                    push_bounded(
                        &mut self.events,
                        GatewayEvent::Conflict {
                            device: device.to_owned(),
                            holder,
                            address,
                        },
                    );
                }
                let mut answer = error_packet(request, ResponseType::Unauthorized, "");
                answer.add_option(CoapOption::Unknown(wire::ECHO), echo.to_vec());
                self.answer(peer, &answer);
                false
            }
            Decision::Stale => {
                let cause = SecurityCause::StaleElsewhere;
                self.count(cause);
                let event = security_event(peer, None, Some(device.to_owned()), cause);
                self.note_security(now, unix_ms, event);
                if let Some(x) = self.exchanges.take_server(peer.remote, request.get_token()) {
                    self.exchanges
                        .remember(now, peer.remote, x.message, Seen::Silent);
                }
                false
            }
        }
    }

    /// A confirmed move (or a first binding at an address another device held): audited, the
    /// registration follows, the displaced device is unreachable there.
    fn moved(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        device: &str,
        from: Option<Peer>,
        displaced: Option<String>,
    ) {
        let at = audit_time(unix_ms);
        let address = peer.remote;
        let (kind, mut detail) = match from {
            Some(from) => {
                self.stats.address_changes += 1;
                let _ = self.ingress.rebind(now, unix_ms, device, peer);
                push_bounded(
                    &mut self.events,
                    GatewayEvent::Moved {
                        device: device.to_owned(),
                        from: from.remote,
                        to: address,
                    },
                );
                (
                    AuditKind::AddressChanged,
                    format!("verified at {peer}, was {from}; confirmed by Echo"),
                )
            }
            None => {
                let _ = self.ingress.rebind(now, unix_ms, device, peer);
                push_bounded(
                    &mut self.events,
                    GatewayEvent::Bound {
                        device: device.to_owned(),
                        address,
                    },
                );
                (
                    AuditKind::AddressBound,
                    format!("verified at {peer}; confirmed by Echo"),
                )
            }
        };
        if let Some(holder) = &displaced {
            detail.push_str(&format!("; {holder} is no longer bound there"));
        }
        self.audit(
            AuditEvent::new(kind, device)
                .at(at)
                .address(ipv6(address))
                .detail(detail),
        );
        if let Some(holder) = displaced {
            self.audit(
                AuditEvent::new(AuditKind::AddressConflict, holder.clone())
                    .at(at)
                    .address(ipv6(address))
                    .detail(format!(
                        "unreachable at {peer}: {device} answered an Echo challenge there; \
                         nothing is sent to {holder} until it is verified again"
                    )),
            );
            push_bounded(
                &mut self.events,
                GatewayEvent::Displaced {
                    device: holder,
                    by: device.to_owned(),
                    address,
                },
            );
        }
    }

    /// An OSCORE response or notification to one of the edge's requests: verified with the
    /// context of the request its token belongs to, wherever it comes from.
    fn protected_response(&mut self, now: Instant, unix_ms: u64, peer: Peer, packet: &Packet) {
        let message = (packet.header.message_id, exchanges::fingerprint(packet));
        if let Some(Seen::Inner(inner, device)) =
            self.exchanges.seen(peer.remote, message.0, message.1)
        {
            // A retransmission: the ingress recognises it and repeats its ACK.
            let (inner, device) = (inner.clone(), device.clone());
            self.stats.duplicates += 1;
            self.ingress
                .handle_authenticated(now, unix_ms, peer, &inner, &device);
            return;
        }
        let token = packet.get_token();
        let verified = self.exchanges.client_mut(token).and_then(|x| {
            let entry = self.keys.get_mut(&x.kid)?;
            let inner = unprotect_response(&mut entry.ctx, packet, &mut x.info).ok()?;
            Some((inner, x.observe, entry.id.clone()))
        });
        let Some((inner, observe, device)) = verified else {
            self.refuse(now, unix_ms, peer, packet, None, SecurityCause::BadResponse);
            return;
        };
        self.stats.responses_verified += 1;
        if !observe {
            self.exchanges.end_client(token);
        }
        let seen = Seen::Inner(Box::new(inner.clone()), device.as_str().into());
        self.exchanges.remember(now, peer.remote, message, seen);
        self.ingress
            .handle_authenticated(now, unix_ms, peer, &inner, &device);
    }

    /// Refuses a message of no known device.
    fn refuse(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        packet: &Packet,
        kid: Option<Vec<u8>>,
        cause: SecurityCause,
    ) {
        let event = SecurityEvent {
            peer: peer.remote,
            kid,
            device: None,
            cause,
        };
        self.refuse_as(now, unix_ms, peer, packet, event);
    }

    /// Refuses `packet` before (or instead of) verification for `event`'s cause: counted, an
    /// event, the failure audit, and, while the reply budget lasts, an unprotected answer to a
    /// Confirmable request or a Reset to a response the edge cannot match (a stale one).
    fn refuse_as(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        packet: &Packet,
        event: SecurityEvent,
    ) {
        let cause = event.cause;
        let may_reply = self.file_refusal(now, unix_ms, event);
        self.answer_refusal(peer, packet, cause, may_reply);
    }

    /// Refuses a request under a quarantined kid without verifying it: parsed only when the
    /// reply budget allows an answer.
    fn refuse_quarantined(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        bytes: &[u8],
        event: SecurityEvent,
    ) {
        let cause = event.cause;
        if self.file_refusal(now, unix_ms, event) {
            if let Ok(packet) = wire::parse(bytes) {
                self.answer_refusal(peer, &packet, cause, true);
            }
        } else if wire::raw_header(bytes).is_ok_and(|h| h.kind == MessageType::Confirmable) {
            self.stats.replies_suppressed += 1;
        }
    }

    /// Counts a refusal, files it (failure audit, report, kid standing); true when the reply
    /// budget allows an answer.
    fn file_refusal(&mut self, now: Instant, unix_ms: u64, event: SecurityEvent) -> bool {
        self.count(event.cause);
        let may_reply = self.failures.record(now, unix_ms, &event);
        self.note_security(now, unix_ms, event);
        may_reply
    }

    /// The unprotected answer to a refused `packet`, if it gets one (see
    /// [`refuse_as`](Self::refuse_as)).
    fn answer_refusal(
        &mut self,
        peer: Peer,
        packet: &Packet,
        cause: SecurityCause,
        may_reply: bool,
    ) {
        let kind = packet.header.get_type();
        if matches!(
            cause,
            SecurityCause::PlainResponse | SecurityCause::BadResponse
        ) && matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable)
            && !self.exchanges.has_client(packet.get_token())
        {
            // Its request is forgotten (the edge restarted, or it never asked): a Reset makes
            // the device end the observation (RFC 7641 §3.6) instead of notifying forever.
            if may_reply {
                let reset = wire::empty_message(MessageType::Reset, packet.header.message_id);
                self.transmits.push_back((peer, reset));
            } else {
                self.stats.replies_suppressed += 1;
            }
            return;
        }
        let confirmable = kind == MessageType::Confirmable;
        let is_request = wire::is_request_code(u8::from(packet.header.code));
        if !(confirmable && is_request) {
            return;
        }
        let Some((code, diagnostic)) = cause.plain_answer() else {
            return;
        };
        if !may_reply {
            self.stats.replies_suppressed += 1;
            return;
        }
        let mut answer = error_packet(packet, code, diagnostic);
        answer.header.set_type(MessageType::Acknowledgement);
        answer.header.message_id = packet.header.message_id;
        answer.add_option(CoapOption::MaxAge, Vec::new());
        if let Some(bytes) = wire::encode(&answer) {
            self.transmits.push_back((peer, bytes));
        }
    }

    fn count(&mut self, cause: SecurityCause) {
        let s = &mut self.stats;
        s.refused += 1;
        let counter = match cause {
            SecurityCause::PlainRequest => &mut s.plain,
            SecurityCause::PlainResponse | SecurityCause::BadResponse => &mut s.bad_responses,
            SecurityCause::UnknownKid => &mut s.unknown_kid,
            SecurityCause::DecryptionFailed => &mut s.decryption_failed,
            SecurityCause::Replay => &mut s.replay,
            SecurityCause::Malformed => &mut s.malformed,
            SecurityCause::DeviceRevoked | SecurityCause::DeviceQuarantined => &mut s.not_active,
            SecurityCause::AddressNotAllowed => &mut s.address_refused,
            SecurityCause::EndpointMismatch => &mut s.endpoint_mismatch,
            SecurityCause::SourceLimited => &mut s.source_limited,
            SecurityCause::KidQuarantined => &mut s.kid_quarantined,
            SecurityCause::KidLimited => &mut s.kid_limited,
            SecurityCause::ResetIgnored => &mut s.resets_ignored,
            SecurityCause::DeviceLimited => &mut s.device_limited,
            SecurityCause::StaleElsewhere => &mut s.stale_elsewhere,
        };
        *counter += 1;
    }

    /// Moves the ingress's datagrams out: answers to verified requests protected with their
    /// request's context, requests to a device protected with that device's own context and
    /// sent where it is bound.
    fn pump(&mut self, now: Instant) {
        while let Some(t) = self.ingress.poll_outgoing() {
            // The fixed header decides; only what needs protection is parsed.
            let code = t.bytes.get(1).copied().unwrap_or(0);
            let plain_ok = !self.config.require_oscore;
            if code == 0 {
                self.transmits.push_back((t.to, t.bytes));
            } else if wire::is_request_code(code) {
                let device = t.device.as_deref().unwrap_or_default();
                if self.keys.device_mut(device).is_some() {
                    if let Ok(packet) = wire::parse(&t.bytes) {
                        self.request_out(now, device, &packet);
                    }
                } else if plain_ok {
                    self.transmits.push_back((t.to, t.bytes));
                } else {
                    // A device with no context: never sent plain when OSCORE is required.
                    self.stats.protect_failures += 1;
                }
            } else if self.exchanges.has_server(t.to.remote, raw_token(&t.bytes)) {
                if let Ok(packet) = wire::parse(&t.bytes) {
                    self.answer(t.to, &packet);
                }
            } else if plain_ok {
                self.transmits.push_back((t.to, t.bytes));
            } else {
                // An answer to nothing verified: never sent plain when OSCORE is required.
                self.stats.protect_failures += 1;
            }
        }
    }

    /// Protects the answer to a verified request and holds it until the device's replay floor
    /// is durable.
    fn answer(&mut self, peer: Peer, packet: &Packet) {
        let Some(mut x) = self.exchanges.take_server(peer.remote, packet.get_token()) else {
            return;
        };
        let Some(entry) = self.keys.get_mut(&x.kid) else {
            // The device lost its context meanwhile: nothing goes out.
            self.stats.protect_failures += 1;
            return;
        };
        let protected = protect_response(&mut entry.ctx, packet, &mut x.info, false)
            .ok()
            .and_then(|p| wire::encode(&p));
        let Some(bytes) = protected else {
            self.stats.protect_failures += 1;
            return;
        };
        entry.floor_wanted = entry
            .floor_wanted
            .max(x.info.sequence_number().saturating_add(1));
        self.persistence.dirty(&x.kid);
        self.persistence.hold(peer, bytes, x.message, x.confirmable);
    }

    /// A request of the edge to `device` (a command, an observation): protected with the
    /// device's own context and sent where the device is bound — whoever else sends from
    /// the address the ingress knows, and wherever the device moved since. A retransmission
    /// resends the bytes protected the first time. Not sent (counted) while the device is
    /// bound nowhere (displaced from its address by another device).
    fn request_out(&mut self, now: Instant, device: &str, packet: &Packet) {
        let message_id = packet.header.message_id;
        let token = packet.get_token();
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let Some(to) = self.bindings.get(device) else {
            self.stats.unreachable += 1;
            return;
        };
        let Some(entry) = self.keys.device_mut(device) else {
            self.stats.protect_failures += 1;
            return;
        };
        let kid = entry.kid.clone();
        if let Some(bytes) = self.exchanges.resend(&kid, (message_id, token), to.remote) {
            let bytes = bytes.to_vec();
            self.transmits.push_back((to, bytes));
            return;
        }
        let result = protect_request(&mut entry.ctx, packet);
        if entry.ctx.mark_to_persist().is_some() {
            self.persistence.dirty(&kid);
        }
        let Ok((protected, info)) = result else {
            // PersistPending: the mark is being written; the retransmission will go.
            self.stats.protect_failures += 1;
            return;
        };
        let Some(bytes) = wire::encode(&protected) else {
            self.stats.protect_failures += 1;
            return;
        };
        let observe = info.is_observe_registration();
        if confirmable {
            self.exchanges
                .remember_sent(now, &kid, (message_id, token), &bytes, to.remote);
        }
        self.exchanges.insert_client(
            token,
            ClientExchange {
                kid,
                info,
                observe,
                since: now,
            },
        );
        self.transmits.push_back((to, bytes));
    }
}

/// A request that verified, on its way through [`Gateway::serve_verified`].
struct Verified {
    kid: Vec<u8>,
    device: String,
    inner: Packet,
    info: RequestInfo,
    /// Message ID and fingerprint (deduplication).
    message: (u16, u64),
    confirmable: bool,
    /// Its Partial IV is above every one its device sent before.
    fresh: bool,
    /// Its source lies in the device's allowed prefixes.
    allowed: bool,
}

/// A refusal of a message from `peer`.
fn security_event(
    peer: Peer,
    kid: Option<Vec<u8>>,
    device: Option<String>,
    cause: SecurityCause,
) -> SecurityEvent {
    SecurityEvent {
        peer: peer.remote,
        kid,
        device,
        cause,
    }
}

/// The token of an encoded message (empty when the length is reserved or cut short).
fn raw_token(bytes: &[u8]) -> &[u8] {
    let len = usize::from(bytes.first().map_or(0, |b| b & 0x0f));
    bytes.get(4..4 + len).unwrap_or_default()
}

/// The cause of a failed verification.
fn cause_of(e: OscoreError) -> SecurityCause {
    match e {
        OscoreError::Replay => SecurityCause::Replay,
        OscoreError::DecryptionFailed => SecurityCause::DecryptionFailed,
        OscoreError::UnknownKid => SecurityCause::UnknownKid,
        _ => SecurityCause::Malformed,
    }
}

/// True when `request` is a registration (`POST /rd`) whose `ep` is not `device`.
fn registers_as_other(request: &Packet, device: &str) -> bool {
    audit_room::is_registration(request)
        && request
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
            .filter_map(|q| q.strip_prefix(b"ep="))
            .any(|ep| ep != device.as_bytes())
}

/// An error response to `request` (same type rules as the ingress: piggybacked on the ACK of a
/// Confirmable request), with a diagnostic payload.
fn error_packet(request: &Packet, code: ResponseType, diagnostic: &str) -> Packet {
    let mut p = Packet::new();
    if request.header.get_type() == MessageType::Confirmable {
        p.header.set_type(MessageType::Acknowledgement);
    } else {
        p.header.set_type(MessageType::NonConfirmable);
    }
    p.header.message_id = request.header.message_id;
    p.header.code = MessageClass::Response(code);
    p.set_token(request.get_token().to_vec());
    p.payload = diagnostic.as_bytes().to_vec();
    p
}

/// The address as the audit trail and the prefixes see it (IPv4 as IPv4-mapped IPv6).
pub fn audit_address(peer: SocketAddr) -> Ipv6Addr {
    ipv6(peer)
}

fn ipv6(peer: SocketAddr) -> Ipv6Addr {
    match peer {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    }
}

/// A Unix time in milliseconds as an audit time.
pub fn audit_time(unix_ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= MAX_QUEUED_EVENTS {
        queue.pop_front();
    }
    queue.push_back(item);
}
