//! Authentication failures: the [`SecurityEvent`]s the limits and reports consume, the CoAP
//! answer each cause gets, and the bounds that keep a flood from becoming a reply storm or a
//! database write per packet — per source and globally, however many sources there are.
//!
//! # Error answers
//!
//! Per source address, a window of [`FailureLog::WINDOW`] opens with the first failure and
//! allows [`FailureLog::MAX_REPLIES`] error answers; at most [`FailureLog::MAX_SOURCES`] windows
//! are open (failures from further sources are not answered). On top of that, all error answers
//! together draw from one bucket of [`FailureLog::REPLIES_PER_SECOND`]: a flood from a million
//! addresses gets at most that many answers a second, none larger than a short diagnostic.
//!
//! # Audit rows
//!
//! Failures are audited per interval of [`FailureLog::AUDIT_INTERVAL`], globally: the first
//! failure of each of the first [`FailureLog::MAX_DETAIL_ROWS`] sources in an interval gets a row
//! of its own at once (source address, device, kid, cause), every later failure is only counted,
//! and when the interval ends one summary row carries the counts per cause and up to
//! [`FailureLog::SUMMARY_SAMPLES`] samples. So failures never cost more than
//! `MAX_DETAIL_ROWS + 1` rows per interval (9 per 10 s, under 80,000 a day, whatever the flood),
//! and a single attacker is still on record with its address the moment it starts.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashMapExt as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use coap_lite::ResponseType;

use crate::audit::AuditEvent;

use super::limits::{Bucket, Rate};
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
    /// The source network (IPv6 /64, IPv4 address) was over its rate of unauthenticated
    /// datagrams: dropped unread.
    SourceLimited,
    /// The kid is quarantined after repeated failed verifications and the request did not come
    /// from where its device was last verified (or came faster than its rate): refused
    /// unverified.
    KidQuarantined,
    /// The kid's requests were refused too often (replays, failed verifications) and this one
    /// did not come from where its device was last verified: dropped unread until the kid's
    /// budget refills.
    KidLimited,
    /// An empty Reset that would end a protected exchange of the edge: RFC 8613 leaves empty
    /// messages unprotected, so anyone could send it; ignored (the request stays pending and
    /// is retransmitted).
    ResetIgnored,
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
            SecurityCause::KidQuarantined => "kid_quarantined",
            SecurityCause::KidLimited => "kid_limited",
            SecurityCause::ResetIgnored => "reset_ignored",
            SecurityCause::DeviceLimited => "device_limited",
            SecurityCause::StaleElsewhere => "stale_elsewhere",
        }
    }

    /// Whether the cause draws from the refusal budget of the (active) kid the request named:
    /// a refusal before or by verification.
    pub fn draws_on_kid(self) -> bool {
        self.counts_against_kid() || self == SecurityCause::Replay
    }

    /// Whether the cause counts towards quarantining the kid the message named: a failed
    /// verification under an active device's kid (AEAD failure, malformed OSCORE). Nothing
    /// else does — not replays (the MAC verified: the device's own retransmission after a
    /// restart, or a captured message), not plain requests, unknown or revoked kids, stray
    /// responses (they name no device or are not its doing), not rate limits — and nothing
    /// counts towards a source network (see [`super::limits`]).
    pub fn counts_against_kid(self) -> bool {
        matches!(
            self,
            SecurityCause::DecryptionFailed | SecurityCause::Malformed
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
            SecurityCause::KidQuarantined => (ResponseType::Forbidden, "kid quarantined"),
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

/// One source's error-answer window.
struct Window {
    replies: u32,
}

/// Failures of the current audit interval that have no row of their own.
#[derive(Default)]
struct Unreported {
    counts: BTreeMap<&'static str, u64>,
    samples: Vec<String>,
}

/// Sizes of the failure log's tables, for tests and the stated bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureTables {
    /// Open error-answer windows (at most [`FailureLog::MAX_SOURCES`]).
    pub reply_windows: usize,
    /// Audit rows waiting to be taken.
    pub queued_rows: usize,
    /// Failure audit rows made since start (detail and summary rows).
    pub rows_made: u64,
}

/// Error-answer windows and the failure audit (see the module docs).
pub(super) struct FailureLog {
    windows: HashMap<IpAddr, Window>,
    order: VecDeque<(Instant, IpAddr)>,
    /// All error answers together; made full on first use.
    replies: Option<Bucket>,
    /// When the current audit interval ends (none open while quiet).
    interval_until: Option<Instant>,
    /// Sources with a detail row in the current interval.
    detailed: Vec<IpAddr>,
    unreported: Unreported,
    audits: VecDeque<AuditEvent>,
    rows_made: u64,
}

impl FailureLog {
    /// How long a source's error-answer window lasts.
    pub(super) const WINDOW: Duration = Duration::from_secs(5);
    /// Error answers per source and window; further failures are dropped silently.
    pub(super) const MAX_REPLIES: u32 = 4;
    /// Open windows at most.
    pub(super) const MAX_SOURCES: usize = 4096;
    /// Error answers per second, all sources together (also the burst).
    pub(super) const REPLIES_PER_SECOND: f64 = 200.0;
    /// The audit interval.
    pub(super) const AUDIT_INTERVAL: Duration = Duration::from_secs(10);
    /// Rows of their own per audit interval (one per source, the first sources only).
    pub(super) const MAX_DETAIL_ROWS: usize = 8;
    /// Samples in an interval's summary row.
    pub(super) const SUMMARY_SAMPLES: usize = 4;

    const REPLY_RATE: Rate = Rate {
        per_second: Self::REPLIES_PER_SECOND,
        burst: Self::REPLIES_PER_SECOND,
    };

    pub(super) fn new() -> FailureLog {
        FailureLog {
            windows: HashMap::new(),
            order: VecDeque::new(),
            replies: None,
            interval_until: None,
            detailed: Vec::new(),
            unreported: Unreported::default(),
            audits: VecDeque::new(),
            rows_made: 0,
        }
    }

    /// Records a failure; true when it may be answered.
    pub(super) fn record(&mut self, now: Instant, unix_ms: u64, event: &SecurityEvent) -> bool {
        self.audit(now, unix_ms, event);
        self.may_reply(now, event.peer.ip())
    }

    /// Whether `ip` may get one more error answer now (takes it from its window and the
    /// global bucket).
    fn may_reply(&mut self, now: Instant, ip: IpAddr) -> bool {
        let open = self.windows.len();
        match self.windows.get_mut(&ip) {
            Some(w) if w.replies >= Self::MAX_REPLIES => return false,
            Some(w) => w.replies += 1,
            None if open >= Self::MAX_SOURCES => return false,
            None => {
                self.windows.insert(ip, Window { replies: 1 });
                self.order.push_back((now + Self::WINDOW, ip));
            }
        }
        self.replies
            .get_or_insert_with(|| Bucket::full(Self::REPLY_RATE, now))
            .take(Self::REPLY_RATE, now)
    }

    /// A row of its own for the first failure of one of the interval's first sources; the
    /// rest is counted for the summary.
    fn audit(&mut self, now: Instant, unix_ms: u64, event: &SecurityEvent) {
        self.interval_until
            .get_or_insert(now + Self::AUDIT_INTERVAL);
        let ip = event.peer.ip();
        if self.detailed.len() < Self::MAX_DETAIL_ROWS && !self.detailed.contains(&ip) {
            self.detailed.push(ip);
            let row =
                failure_row(unix_ms, event.device.clone(), event.peer).detail(describe(event));
            self.push_row(row);
            return;
        }
        *self
            .unreported
            .counts
            .entry(event.cause.as_str())
            .or_insert(0) += 1;
        if self.unreported.samples.len() < Self::SUMMARY_SAMPLES {
            self.unreported.samples.push(describe(event));
        }
    }

    fn push_row(&mut self, row: AuditEvent) {
        self.rows_made += 1;
        self.audits.push_back(row);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let first = self.order.front().map(|(t, _)| *t);
        [first, self.interval_until].into_iter().flatten().min()
    }

    /// Closes the answer windows that ended, and the audit interval with its summary row.
    pub(super) fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        while let Some(&(until, ip)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.windows.remove(&ip);
        }
        if self.interval_until.is_none_or(|t| t > now) {
            return;
        }
        self.interval_until = None;
        self.detailed.clear();
        let Unreported { counts, samples } = std::mem::take(&mut self.unreported);
        let total: u64 = counts.values().sum();
        if total == 0 {
            return;
        }
        let by_cause: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let row = AuditEvent::auth_failure(format!(
            "{total} more failures within {} s ({}); e.g. {}",
            Self::AUDIT_INTERVAL.as_secs(),
            by_cause.join(", "),
            samples.join("; ")
        ))
        .at(audit_time(unix_ms));
        self.push_row(row);
    }

    /// The next audit row to write.
    pub(super) fn poll_audit(&mut self) -> Option<AuditEvent> {
        self.audits.pop_front()
    }

    /// Table sizes and rows made.
    pub(super) fn tables(&self) -> FailureTables {
        FailureTables {
            reply_windows: self.windows.len(),
            queued_rows: self.audits.len(),
            rows_made: self.rows_made,
        }
    }
}

/// `cause from [addr]:port kid 01ab`.
fn describe(event: &SecurityEvent) -> String {
    let kid = event
        .kid
        .as_ref()
        .map(|k| format!(" kid {}", hex::encode(k)))
        .unwrap_or_default();
    format!("{} from {}{kid}", event.cause, event.peer)
}

/// An `auth_failure` row at `unix_ms`, about `device` if known, with the source address.
fn failure_row(unix_ms: u64, device: Option<String>, peer: SocketAddr) -> AuditEvent {
    let mut row = AuditEvent::auth_failure("").at(audit_time(unix_ms));
    row.device = device;
    row.address = Some(audit_address(peer));
    row
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn forgery(i: u32) -> SecurityEvent {
        let ip = Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64) | 1);
        SecurityEvent {
            peer: SocketAddr::new(IpAddr::V6(ip), 5683),
            kid: Some(vec![0x99]),
            device: None,
            cause: SecurityCause::UnknownKid,
        }
    }

    #[test]
    fn ten_thousand_sources_cost_at_most_nine_rows_per_interval_and_bounded_answers() {
        let t0 = Instant::now();
        let mut log = FailureLog::new();
        let mut answered = 0;
        for i in 0..10_000 {
            if log.record(t0, 1_000, &forgery(i)) {
                answered += 1;
            }
        }
        let tables = log.tables();
        assert_eq!(tables.reply_windows, FailureLog::MAX_SOURCES);
        assert_eq!(answered, FailureLog::REPLIES_PER_SECOND as usize);
        assert_eq!(tables.rows_made, FailureLog::MAX_DETAIL_ROWS as u64);
        // The interval ends: one summary row with the count and a few samples.
        log.handle_timeout(t0 + FailureLog::AUDIT_INTERVAL, 11_000);
        let rows: Vec<_> = std::iter::from_fn(|| log.poll_audit()).collect();
        assert_eq!(rows.len(), FailureLog::MAX_DETAIL_ROWS + 1);
        let summary = &rows[FailureLog::MAX_DETAIL_ROWS].detail;
        assert!(
            summary.starts_with("9992 more failures within 10 s (unknown_kid 9992); e.g. "),
            "{summary}"
        );
        assert_eq!(summary.matches("unknown_kid from").count(), 4, "{summary}");
        // The first sources are on record with their addresses.
        assert_eq!(rows[0].address, Some(audit_address(forgery(0).peer)));
        assert!(rows[0].detail.contains("kid 99"), "{}", rows[0].detail);
        // The windows closed with the interval; a second flood gets the same bounds.
        assert_eq!(log.tables().reply_windows, 0);
        let t1 = t0 + FailureLog::AUDIT_INTERVAL + Duration::from_secs(1);
        for i in 0..10_000 {
            log.record(t1, 12_000, &forgery(i));
        }
        log.handle_timeout(t1 + FailureLog::AUDIT_INTERVAL, 22_000);
        assert_eq!(
            log.tables().rows_made,
            2 * (FailureLog::MAX_DETAIL_ROWS as u64 + 1)
        );
    }

    #[test]
    fn one_source_gets_four_answers_per_window_and_one_row() {
        let t0 = Instant::now();
        let mut log = FailureLog::new();
        let answered = (0..100).filter(|_| log.record(t0, 0, &forgery(1))).count();
        assert_eq!(answered, FailureLog::MAX_REPLIES as usize);
        assert_eq!(log.tables().rows_made, 1);
        // A window later it may be answered again.
        log.handle_timeout(t0 + FailureLog::WINDOW, 0);
        assert!(log.record(t0 + FailureLog::WINDOW, 0, &forgery(1)));
        log.handle_timeout(t0 + FailureLog::AUDIT_INTERVAL, 0);
        let rows: Vec<_> = std::iter::from_fn(|| log.poll_audit()).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[1].detail.starts_with("100 more failures"), "{rows:?}");
    }
}
