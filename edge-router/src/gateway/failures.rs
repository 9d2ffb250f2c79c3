//! Authentication failures: the [`SecurityEvent`]s the rate limiter consumes, the CoAP answer
//! each cause gets, and the per-source aggregation that keeps a flood from becoming a reply
//! storm or a database write per packet.
//!
//! Per source address, a window of [`FailureLog::WINDOW`] opens with the first failure: that
//! failure is audited at once; the window allows [`FailureLog::MAX_REPLIES`] error replies, and
//! later failures in it are only counted (dropped silently, no amplification). When the window
//! ends, one audit row carries the count of the failures it did not report. At most
//! [`FailureLog::MAX_SOURCES`] windows are open; failures from further sources are counted
//! together, never answered, and reported in one row per window.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use coap_lite::ResponseType;

use crate::audit::AuditEvent;

use super::{audit_address, audit_time};

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityCause {
    /// A request without OSCORE while authentication is required.
    PlainRequest,
    /// A response or notification without OSCORE to a protected request of the edge.
    PlainResponse,
    /// The OSCORE option's kid names no active device (and no known one).
    UnknownKid,
    /// The AEAD tag did not verify: wrong key or a tampered message.
    DecryptionFailed,
    /// The Partial IV was seen before (or lies below the persisted floor).
    Replay,
    /// The OSCORE option or the decrypted plaintext is malformed.
    Malformed,
    /// The kid belongs to a revoked device.
    DeviceRevoked,
    /// The kid belongs to a quarantined device.
    DeviceQuarantined,
    /// An authenticated device sent from outside its allowed prefixes.
    AddressNotAllowed,
    /// An authenticated device registered under another device's name.
    EndpointMismatch,
    /// A protected response that does not verify, or answers nothing the edge asked.
    BadResponse,
    /// The source network (IPv6 /64, IPv4 address) was over its rate: dropped unread.
    SourceLimited,
    /// The source network is quarantined after repeated failures: dropped unread.
    SourceQuarantined,
    /// An authenticated device was over its rate: answered 5.03 with Max-Age.
    DeviceLimited,
    /// A verified request whose Partial IV is not above the highest its device sent, from an
    /// address the device is not bound to (a withheld message replayed elsewhere): dropped
    /// unanswered, the binding stays.
    StaleElsewhere,
}

impl SecurityCause {
    /// A short name for logs and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityCause::PlainRequest => "plain_request",
            SecurityCause::PlainResponse => "plain_response",
            SecurityCause::UnknownKid => "unknown_kid",
            SecurityCause::DecryptionFailed => "decryption_failed",
            SecurityCause::Replay => "replay",
            SecurityCause::Malformed => "malformed_oscore",
            SecurityCause::DeviceRevoked => "device_revoked",
            SecurityCause::DeviceQuarantined => "device_quarantined",
            SecurityCause::AddressNotAllowed => "address_not_allowed",
            SecurityCause::EndpointMismatch => "endpoint_mismatch",
            SecurityCause::BadResponse => "bad_response",
            SecurityCause::SourceLimited => "source_limited",
            SecurityCause::SourceQuarantined => "source_quarantined",
            SecurityCause::DeviceLimited => "device_limited",
            SecurityCause::StaleElsewhere => "stale_elsewhere",
        }
    }

    /// Whether the cause is a failed authentication, which counts towards quarantining the
    /// source (rate limits are not).
    pub fn is_auth_failure(self) -> bool {
        !matches!(
            self,
            SecurityCause::SourceLimited
                | SecurityCause::SourceQuarantined
                | SecurityCause::DeviceLimited
                | SecurityCause::StaleElsewhere
        )
    }

    /// The unprotected error answer to a refused request (RFC 8613 §8.2 codes where they
    /// apply); `None` for causes found after verification, which get a protected answer.
    pub(super) fn plain_answer(self) -> Option<(ResponseType, &'static str)> {
        Some(match self {
            SecurityCause::PlainRequest => (ResponseType::Unauthorized, "OSCORE required"),
            SecurityCause::UnknownKid => (ResponseType::Unauthorized, "Security context not found"),
            SecurityCause::DecryptionFailed => (ResponseType::BadRequest, "Decryption failed"),
            SecurityCause::Replay => (ResponseType::Unauthorized, "Replay detected"),
            SecurityCause::Malformed => (ResponseType::BadOption, "Failed to decode COSE"),
            SecurityCause::DeviceRevoked => (ResponseType::Unauthorized, "device revoked"),
            SecurityCause::DeviceQuarantined => (ResponseType::Forbidden, "device quarantined"),
            _ => return None,
        })
    }
}

impl std::fmt::Display for SecurityCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused message, for rate limiting and quarantine decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Where it came from.
    pub peer: SocketAddr,
    /// The kid it claimed, if it carried one.
    pub kid: Option<Vec<u8>>,
    /// The device, when the kid (or the authenticated request) names one.
    pub device: Option<String>,
    /// Why it was refused.
    pub cause: SecurityCause,
}

struct Window {
    /// Failures not yet in an audit row.
    unreported: u64,
    replies: u32,
    last: SecurityCause,
    device: Option<String>,
}

/// Per-source failure windows (see the module docs).
pub(super) struct FailureLog {
    windows: HashMap<IpAddr, Window>,
    order: VecDeque<(Instant, IpAddr)>,
    overflow: u64,
    overflow_until: Option<Instant>,
    audits: VecDeque<AuditEvent>,
}

impl FailureLog {
    /// How long a source's window lasts.
    pub(super) const WINDOW: Duration = Duration::from_secs(5);
    /// Error replies per source and window; further failures are dropped silently.
    pub(super) const MAX_REPLIES: u32 = 4;
    /// Open windows at most.
    pub(super) const MAX_SOURCES: usize = 4096;

    pub(super) fn new() -> FailureLog {
        FailureLog {
            windows: HashMap::new(),
            order: VecDeque::new(),
            overflow: 0,
            overflow_until: None,
            audits: VecDeque::new(),
        }
    }

    /// Records a failure; true when it may be answered.
    pub(super) fn record(&mut self, now: Instant, unix_ms: u64, event: &SecurityEvent) -> bool {
        let ip = event.peer.ip();
        if let Some(w) = self.windows.get_mut(&ip) {
            w.unreported += 1;
            w.last = event.cause;
            if event.device.is_some() {
                w.device.clone_from(&event.device);
            }
            if w.replies < Self::MAX_REPLIES {
                w.replies += 1;
                return true;
            }
            return false;
        }
        if self.windows.len() >= Self::MAX_SOURCES {
            self.overflow += 1;
            self.overflow_until.get_or_insert(now + Self::WINDOW);
            return false;
        }
        let row = failure_row(unix_ms, event.device.clone(), event.peer).detail(format!(
            "{} from {}{}",
            event.cause,
            event.peer,
            event
                .kid
                .as_ref()
                .map(|k| format!(" kid {}", crate::registry_db::hex::encode(k)))
                .unwrap_or_default()
        ));
        self.audits.push_back(row);
        let until = now + Self::WINDOW;
        self.windows.insert(
            ip,
            Window {
                unreported: 0,
                replies: 1,
                last: event.cause,
                device: event.device.clone(),
            },
        );
        self.order.push_back((until, ip));
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let first = self.order.front().map(|(t, _)| *t);
        [first, self.overflow_until].into_iter().flatten().min()
    }

    /// Closes the windows that ended, with one audit row each for their unreported failures.
    pub(super) fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        while let Some(&(until, ip)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            let Some(w) = self.windows.remove(&ip) else {
                continue;
            };
            if w.unreported > 0 {
                let row = failure_row(unix_ms, w.device, SocketAddr::new(ip, 0)).detail(format!(
                    "{} more failures from {ip} within {} s (last: {})",
                    w.unreported,
                    Self::WINDOW.as_secs(),
                    w.last
                ));
                self.audits.push_back(row);
            }
        }
        if self.overflow_until.is_some_and(|t| t <= now) {
            self.overflow_until = None;
            if self.overflow > 0 {
                self.audits.push_back(
                    AuditEvent::auth_failure(format!(
                        "{} failures from further sources (more than {} sources failing)",
                        self.overflow,
                        Self::MAX_SOURCES
                    ))
                    .at(audit_time(unix_ms)),
                );
                self.overflow = 0;
            }
        }
    }

    /// The next audit row to write.
    pub(super) fn poll_audit(&mut self) -> Option<AuditEvent> {
        self.audits.pop_front()
    }
}

/// An `auth_failure` row at `unix_ms`, about `device` if known, with the source address.
fn failure_row(unix_ms: u64, device: Option<String>, peer: SocketAddr) -> AuditEvent {
    let mut row = AuditEvent::auth_failure("").at(audit_time(unix_ms));
    row.device = device;
    row.address = Some(audit_address(peer));
    row
}
