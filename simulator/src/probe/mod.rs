//! `v6iot-sim probe coap://[addr]:port`: an IPv6 and CoAP readiness evaluation of any CoAP
//! endpoint (issue 14 §7).
//!
//! | module | job |
//! |---|---|
//! | `v6iot_sdk::coap::probe` | the checks as a sans-IO state machine (datagrams in through `handle_datagram(now, …)`, out through `poll_transmit`, time through `poll_timeout` / `handle_timeout(now)`) and their names and verdicts, re-exported here |
//! | [`driver`] | the thin driver: one UDP socket connected to the target, blocking reads with the core's timeout; the CLI's arguments |
//! | this file | the target URI, the report (table and JSON, schema `v6iot-sim/probe/1`); the link-format reader is the SDK's `v6iot_sdk::coap::link` |
//!
//! The checks, their order and what each asks: `v6iot_sdk::coap::probe`.

pub mod driver;

pub use v6iot_sdk::coap::probe::{CheckId, CheckResult, Probe, ProbeConfig, Verdict};

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The report's schema name.
pub const SCHEMA: &str = "v6iot-sim/probe/1";

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
