//! `v6iot-sim probe coap://[addr]:port`: an IPv6 and CoAP readiness evaluation of any CoAP
//! endpoint (issue 14 §7).
//!
//! | module | job |
//! |---|---|
//! | [`core`] | the checks as a sans-IO state machine: datagrams in through `handle_datagram(now, …)`, out through `poll_transmit`, time through `poll_timeout` / `handle_timeout(now)` |
//! | [`driver`] | the thin driver: one UDP socket connected to the target, blocking reads with the core's timeout; the CLI's arguments |
//! | this file | the target URI, the checks' names and verdicts, the report (table and JSON, schema `v6iot-sim/probe/1`); the link-format reader is the SDK's `v6iot_sdk::coap::link` |
//!
//! The checks, in the order they run: reachable over IPv6, CoAP ping, CON and NON requests,
//! discovery (`/.well-known/core`), Block2 on a large resource ("not offered" when no resource
//! answers in blocks), Observe, OSCORE (not applicable without credentials), and answers to
//! malformed input (bad version, truncated header, reserved token length, unknown critical
//! option → 4.02, payload marker without payload), then whether the endpoint still answers.

pub mod core;
pub mod driver;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The report's schema name.
pub const SCHEMA: &str = "v6iot-sim/probe/1";

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

/// The probe's report: every check once, in table order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The target's address.
    pub target: SocketAddr,
    /// The checks' results.
    pub checks: Vec<CheckResult>,
    /// Checks passed.
    pub passed: usize,
    /// Checks failed.
    pub failed: usize,
    /// Checks not applicable.
    pub not_applicable: usize,
}

impl ProbeReport {
    /// The report of `results` (one per check, in any order; missing checks are failures).
    pub fn new(target: SocketAddr, mut results: Vec<CheckResult>) -> ProbeReport {
        for id in CheckId::ALL {
            if !results.iter().any(|r| r.check == id) {
                results.push(CheckResult {
                    check: id,
                    verdict: Verdict::Fail,
                    detail: "not run".into(),
                });
            }
        }
        results.sort_by_key(|r| CheckId::ALL.iter().position(|c| *c == r.check));
        let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
        ProbeReport {
            schema: SCHEMA.into(),
            target,
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            not_applicable: count(Verdict::NotApplicable),
            checks: results,
        }
    }

    /// The verdict of `check`.
    pub fn verdict(&self, check: CheckId) -> Option<Verdict> {
        self.checks
            .iter()
            .find(|r| r.check == check)
            .map(|r| r.verdict)
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = format!("v6iot-sim probe coap://{}\n", uri_host(self.target));
        let _ = writeln!(out, "{:<16} {:<6} detail", "check", "result");
        for r in &self.checks {
            let _ = writeln!(
                out,
                "{:<16} {:<6} {}",
                r.check.name(),
                r.verdict.word(),
                r.detail
            );
        }
        let _ = write!(
            out,
            "{} checks: {} pass, {} fail, {} n/a",
            self.checks.len(),
            self.passed,
            self.failed,
            self.not_applicable
        );
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// `[addr]:port` for IPv6, `addr:port` for IPv4.
pub fn uri_host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    }
}

/// A target URI the probe cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not `coap://`.
    #[error("`{0}` is not a coap:// URI (coaps and coap+tcp are not probed)")]
    Scheme(String),
    /// The host is not an address literal.
    #[error("`{0}`: the host must be an IP address literal, e.g. coap://[2001:db8::1]:5683")]
    Host(String),
    /// The port is not a number.
    #[error("`{0}`: bad port")]
    Port(String),
}

/// Parses `coap://[addr]:port`, `coap://[addr]` (port 5683) or `coap://a.b.c.d[:port]`; a path
/// after the authority is ignored.
pub fn parse_target(uri: &str) -> Result<SocketAddr, UriError> {
    let rest = uri
        .strip_prefix("coap://")
        .ok_or_else(|| UriError::Scheme(uri.into()))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| UriError::Host(uri.into()))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ip: IpAddr = host.parse().map_err(|_| UriError::Host(uri.into()))?;
    let port = match port {
        None | Some("") => 5683,
        Some(p) => p.parse().map_err(|_| UriError::Port(uri.into()))?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("coap://[::1]:5684").unwrap(),
            "[::1]:5684".parse().unwrap()
        );
        assert_eq!(
            parse_target("coap://[2001:db8::1]/x").unwrap(),
            "[2001:db8::1]:5683".parse().unwrap()
        );
        assert_eq!(
            parse_target("coap://127.0.0.1:7").unwrap(),
            "127.0.0.1:7".parse().unwrap()
        );
        assert!(matches!(
            parse_target("coaps://[::1]"),
            Err(UriError::Scheme(_))
        ));
        assert!(matches!(
            parse_target("coap://example.com"),
            Err(UriError::Host(_))
        ));
        assert!(matches!(
            parse_target("coap://[::1]:x"),
            Err(UriError::Port(_))
        ));
    }

    #[test]
    fn report_counts_and_fills_missing_checks() {
        let r = ProbeReport::new(
            "[::1]:1".parse().unwrap(),
            vec![CheckResult {
                check: CheckId::Ping,
                verdict: Verdict::Pass,
                detail: "RST".into(),
            }],
        );
        assert_eq!(r.checks.len(), CheckId::ALL.len());
        assert_eq!(r.checks[1].check, CheckId::Ping);
        assert_eq!((r.passed, r.failed), (1, CheckId::ALL.len() - 1));
        assert!(r.table().contains("ping             pass   RST"));
    }
}
