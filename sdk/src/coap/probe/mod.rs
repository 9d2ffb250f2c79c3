//! A CoAP endpoint's IPv6 and CoAP readiness, checked from the client's side (issue 14 §7):
//! the sans-IO core of `v6iot-sim probe`.
//!
//! | module | job |
//! |---|---|
//! | [`machine`] | the checks as a state machine: datagrams in through [`Probe::handle_datagram`], out through [`Probe::poll_transmit`], time through [`Probe::poll_timeout`] / [`Probe::handle_timeout`] |
//! | this file | the checks' names ([`CheckId`]), their outcomes ([`Verdict`], [`CheckResult`]) |
//!
//! The checks, in the order they run: reachable over IPv6, CoAP ping, CON and NON requests,
//! discovery (`/.well-known/core`), Block2 on a large resource ("not offered" when no resource
//! answers in blocks), Observe, OSCORE (not applicable without credentials), and answers to
//! malformed input (bad version, truncated header, reserved token length, unknown critical
//! option → 4.02, payload marker without payload), then whether the endpoint still answers.
//! Whatever the endpoint sends and however late, a probe ends with one result per check.
//!
//! The simulator's `probe` module is the driver (one UDP socket) and the report (table, JSON);
//! the fuzz target `probe_machine` drives this core with arbitrary datagrams and timeouts.

pub mod machine;

use alloc::string::String;

use serde::{Deserialize, Serialize};

pub use machine::{Probe, ProbeConfig, UNKNOWN_CRITICAL_OPTION};

/// One check the probe makes, in the order the table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// The endpoint answers over IPv6 (the target is an IPv6 address and something came back).
    Ipv6,
    /// An empty CON (CoAP ping, RFC 7252 §4.3) is answered with a Reset.
    Ping,
    /// A confirmable GET is answered (piggybacked in the ACK, or an empty ACK and a separate
    /// response).
    Con,
    /// A non-confirmable GET is answered.
    Non,
    /// `GET /.well-known/core` gives link format (RFC 6690) with at least one link.
    Discovery,
    /// A resource answers a GET with a small Block2 size in blocks that reassemble (RFC 7959).
    Block2,
    /// An observable resource accepts a registration and notifies (RFC 7641).
    Observe,
    /// A request protected with the given OSCORE credentials is answered and verifies.
    Oscore,
    /// A message with version 2 is silently ignored (RFC 7252 §3).
    BadVersion,
    /// A 3-byte datagram (truncated header) is silently ignored.
    Truncated,
    /// A CON with the reserved token length 9 is rejected with a Reset or ignored (§3, §4.2).
    TokenLength,
    /// A CON GET with an unknown critical option gets 4.02 Bad Option (§5.4.1).
    CriticalOption,
    /// A CON with a payload marker and no payload is rejected with a Reset or ignored (§3).
    PayloadMarker,
    /// After the malformed input the endpoint still answers a ping.
    StillAlive,
}

impl CheckId {
    /// Every check, in table order.
    pub const ALL: [CheckId; 14] = [
        CheckId::Ipv6,
        CheckId::Ping,
        CheckId::Con,
        CheckId::Non,
        CheckId::Discovery,
        CheckId::Block2,
        CheckId::Observe,
        CheckId::Oscore,
        CheckId::BadVersion,
        CheckId::Truncated,
        CheckId::TokenLength,
        CheckId::CriticalOption,
        CheckId::PayloadMarker,
        CheckId::StillAlive,
    ];

    /// The name in the table and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            CheckId::Ipv6 => "ipv6",
            CheckId::Ping => "ping",
            CheckId::Con => "con",
            CheckId::Non => "non",
            CheckId::Discovery => "discovery",
            CheckId::Block2 => "block2",
            CheckId::Observe => "observe",
            CheckId::Oscore => "oscore",
            CheckId::BadVersion => "bad-version",
            CheckId::Truncated => "truncated",
            CheckId::TokenLength => "token-length",
            CheckId::CriticalOption => "critical-option",
            CheckId::PayloadMarker => "payload-marker",
            CheckId::StillAlive => "still-alive",
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The endpoint behaved as the RFCs ask.
    Pass,
    /// It did not (the detail says what it did).
    Fail,
    /// The check does not apply (the endpoint does not offer the feature, or no credentials).
    NotApplicable,
}

impl Verdict {
    /// The word in the table.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check.
    pub check: CheckId,
    /// Its outcome.
    pub verdict: Verdict,
    /// What the endpoint did.
    pub detail: String,
}
