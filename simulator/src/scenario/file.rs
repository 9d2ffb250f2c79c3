//! Scenario files: TOML, every key documented in `simulator/scenarios/README.md`.
//!
//! ```toml
//! name = "steady"
//! seed = 7
//! duration = "60s"
//! drain = "10s"
//! settle = "30s"
//!
//! [edge]
//! address = "[::1]:5683"
//!
//! [broker]
//! url = "mqtt://[::1]:1883"
//!
//! [[fleet]]
//! name = "meters"
//! devices = 1000
//! rate = "500/s"
//! ramp = "5s"
//! ```
//!
//! Every error names the line and the key (`fleet[2].rate`): TOML syntax, unknown keys and
//! wrong types as the TOML reader finds them, bad values (durations, rates, prefixes) as this
//! module converts them. Unknown keys are refused, so a typo never silently means a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use v6iot_credentials::Ipv6Prefix;
use v6iot_sdk::uplink::Binding;

use super::{
    BrokerSpec, DEFAULT_QUEUE, DEFAULT_SEED, DEFAULT_SETTLE, EdgeSpec, Fault, FaultKind, FleetSpec,
    Format, LinkSpec, Load, Managed, OscoreSpec, Payload, Scenario, Sources, Transport,
};
use crate::duration::parse_duration;
use crate::lowpan::{LowpanPlan, MediumAt};
use crate::nbiot::carrier::{CarrierPlan, CoverageMix};
use crate::nbiot::emulator::EmulatorConfig;
use crate::nbiot::fleet::{CommandPlan, NbiotPlan};

/// A scenario file that cannot be used: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: `{key}`: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct ScenarioError {
    /// The file, when read from one.
    pub file: Option<PathBuf>,
    /// 1-based line (0 when the whole file is at fault).
    pub line: usize,
    /// The key, as a path (`fleet[0].link.loss`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Reads the scenario file at `path`; relative paths in it (credentials, state files) are
/// taken from the file's directory.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: Some(path.to_path_buf()),
        line: 0,
        key: String::new(),
        message: format!("cannot read it: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })
}

/// Parses scenario text; relative paths are taken from `base`.
pub fn parse(text: &str, base: &Path) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let (line, key) = e
            .span()
            .map(|s| locate_offset(text, s.start))
            .unwrap_or((0, String::new()));
        ScenarioError {
            file: None,
            line,
            key,
            message: e.message().trim().to_owned(),
        }
    })?;
    let at = Locator { text };
    convert(raw, base, &at)
}

/// The scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    seed: Option<u64>,
    duration: String,
    drain: Option<String>,
    settle: Option<String>,
    threads: Option<u16>,
    edge: RawEdge,
    broker: RawBroker,
    #[serde(rename = "fleet", default)]
    fleets: Vec<RawFleet>,
    #[serde(rename = "fault", default)]
    faults: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    address: String,
    command: Option<Vec<String>>,
    ready_within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: String,
    prefix: Option<String>,
    site: Option<String>,
    persistent_session: Option<bool>,
    command: Option<Vec<String>>,
    ready_within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRate {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    name: Option<String>,
    devices: u64,
    transport: Option<String>,
    id_prefix: Option<String>,
    first: Option<u64>,
    rate: Option<RawRate>,
    interval: Option<String>,
    payload: Option<RawPayload>,
    oscore: Option<RawOscore>,
    ramp: Option<String>,
    source_prefix: Option<String>,
    address_offset: Option<u64>,
    queue_mode: Option<bool>,
    queue: Option<usize>,
    link: Option<RawLink>,
    nbiot: Option<RawNbiot>,
    lowpan: Option<RawLowpan>,
}

/// `[fleet.lowpan]`: the PAN and medium of a `transport = "lowpan"` fleet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLowpan {
    pan_id: Option<u16>,
    channel: Option<u8>,
    listen: Option<String>,
    router: Option<String>,
    medium: Option<String>,
    airtime: Option<bool>,
    loss: Option<f64>,
    topology: Option<String>,
    router_port: Option<u16>,
    pcap: Option<String>,
}

/// `[fleet.nbiot]`: the carrier and the PSM timers of a `transport = "nbiot"` fleet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNbiot {
    coverage: Option<String>,
    loss: Option<f64>,
    active_time: Option<String>,
    tau: Option<String>,
    readdress_share: Option<f64>,
    seed: Option<u64>,
    commands_every: Option<usize>,
    commands_at: Option<String>,
    commands_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    records: Option<u8>,
    format: Option<String>,
    pad: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOscore {
    credentials: String,
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    loss: Option<f64>,
    latency: Option<String>,
    jitter: Option<String>,
    bandwidth: Option<RawRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    kind: String,
    down: Option<String>,
    #[serde(rename = "for")]
    length: Option<String>,
    loss: Option<f64>,
    fleet: Option<String>,
}

/// Finds where keys are written, for errors about values that parsed but do not make sense.
pub(crate) struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    /// An error about `key` of the table `table` (`""` for the top level, `fleet` with its
    /// index for an array of tables), at the line where the key is written (or the table's).
    pub(crate) fn error(
        &self,
        table: &str,
        index: Option<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        let path = match (table.is_empty(), index) {
            (true, _) => key.to_owned(),
            (false, Some(i)) => format!("{table}[{i}].{key}"),
            (false, None) => format!("{table}.{key}"),
        };
        ScenarioError {
            file: None,
            line: self.line_of(table, index, key),
            key: path,
            message: message.into(),
        }
    }

    /// The line of `key` in the table (the n-th `[[table]]`, or `[table]`), or of the table's
    /// header when the key is not written there.
    fn line_of(&self, table: &str, index: Option<usize>, key: &str) -> usize {
        let mut current = String::new();
        let mut occurrence: Option<usize> = None;
        let mut header_line = 0;
        let first = key.split('.').next().unwrap_or(key);
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim();
                if name == table {
                    occurrence = Some(occurrence.map_or(0, |o| o + 1));
                }
                current = name.to_owned();
                if name == table && occurrence == index {
                    header_line = i + 1;
                }
                continue;
            }
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                current = name.trim().to_owned();
                if current == table && index.is_none() {
                    header_line = i + 1;
                }
                continue;
            }
            let here = current == table && (index.is_none() || occurrence == index);
            if here
                && let Some((k, _)) = t.split_once('=')
                && k.trim().trim_matches('"') == first
            {
                return i + 1;
            }
        }
        header_line
    }
}

/// The line where `key` (a path as [`super::CheckError`] names it: `fleet[0].rate`,
/// `duration`, `edge.address`) is written in `text`, or its table's header; 0 when neither is.
pub fn line_of_key(text: &str, key: &str) -> usize {
    let at = Locator { text };
    let (table, rest) = match key.split_once('.') {
        Some((t, r)) => (t, r),
        None => ("", key),
    };
    let (name, index) = match table.split_once('[') {
        Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
        None => (table, None),
    };
    if name.is_empty() && rest.contains('[') {
        // `fleet[0]` alone: the table's header.
        let (n, i) = rest.split_once('[').unwrap_or((rest, ""));
        return at.line_of(n, i.trim_end_matches(']').parse().ok(), "");
    }
    at.line_of(name, index, rest)
}

/// The 1-based line of byte `offset`, and the key written there (with its table, as
/// `fleet[1].devices`) for errors the TOML reader reports.
fn locate_offset(text: &str, offset: usize) -> (usize, String) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut key = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 > line {
            break;
        }
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let n = counts.entry(name.trim().to_owned()).or_insert(0);
            table = format!("{}[{}]", name.trim(), *n);
            *n += 1;
            key.clear();
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
            key.clear();
        } else if i + 1 == line
            && let Some((k, _)) = t.split_once('=')
        {
            key = k.trim().trim_matches('"').to_owned();
        }
    }
    let path = match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    };
    (line, path)
}

/// Parses `500/s`, `500`, `20kbit/s`-style numbers with an optional unit suffix.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let n = text.trim().trim_end_matches("/s");
    match n.trim().parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("`{text}` is not a rate like 500/s")),
    }
}

/// Parses a bandwidth: `20kbit/s`, `1.5Mbit/s`, `250000` (bit/s).
fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s").trim_end_matches("bit");
    let (number, factor) = if let Some(n) = t.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('M') {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix('G') {
        (n, 1e9)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * factor).round() as u64),
        _ => Err(format!("`{text}` is not a bandwidth like 20kbit/s")),
    }
}

fn rate_value(raw: &RawRate) -> Result<f64, String> {
    match raw {
        RawRate::Number(n) if *n >= 0.0 && n.is_finite() => Ok(*n),
        RawRate::Number(n) => Err(format!("{n} is not a rate (a non-negative number)")),
        RawRate::Text(t) => parse_rate(t),
    }
}

fn convert(raw: RawScenario, base: &Path, at: &Locator<'_>) -> Result<Scenario, ScenarioError> {
    let duration = |table: &str, index: Option<usize>, key: &str, text: &str| {
        parse_duration(text).map_err(|e| at.error(table, index, key, e.to_string()))
    };
    let edge = EdgeSpec {
        address: raw.edge.address.parse::<SocketAddr>().map_err(|e| {
            at.error(
                "edge",
                None,
                "address",
                format!("`{}`: {e} (like [::1]:5683)", raw.edge.address),
            )
        })?,
        managed: managed(
            raw.edge.command,
            raw.edge.ready_within.as_deref(),
            "edge",
            at,
        )?,
    };
    let broker_restarts = raw.faults.iter().any(|f| f.kind.starts_with("broker_"));
    let broker = BrokerSpec {
        url: raw.broker.url.clone(),
        prefix: raw.broker.prefix.unwrap_or_else(|| "v6iot".into()),
        site: raw.broker.site.unwrap_or_else(|| "site".into()),
        persistent_session: raw.broker.persistent_session.unwrap_or(broker_restarts),
        managed: managed(
            raw.broker.command,
            raw.broker.ready_within.as_deref(),
            "broker",
            at,
        )?,
    };
    if !raw.broker.url.starts_with("mqtt://") {
        return Err(at.error(
            "broker",
            None,
            "url",
            format!(
                "`{}`: the collector subscribes over mqtt://host:port",
                raw.broker.url
            ),
        ));
    }
    let mut fleets = Vec::with_capacity(raw.fleets.len());
    for (i, f) in raw.fleets.into_iter().enumerate() {
        fleets.push(fleet(f, i, base, at)?);
    }
    assign_offsets(&mut fleets);
    let mut faults = Vec::with_capacity(raw.faults.len());
    for (i, f) in raw.faults.into_iter().enumerate() {
        faults.push(fault(f, i, at)?);
    }
    faults.sort_by_key(|f| f.at);
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| "scenario".into()),
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        duration: duration("", None, "duration", &raw.duration)?,
        drain: match raw.drain.as_deref() {
            Some(d) => duration("", None, "drain", d)?,
            None => Duration::from_secs(5),
        },
        settle: match raw.settle.as_deref() {
            Some(d) => duration("", None, "settle", d)?,
            None => DEFAULT_SETTLE,
        },
        threads: raw.threads.unwrap_or(1),
        edge,
        broker,
        fleets,
        faults,
    })
}

fn managed(
    command: Option<Vec<String>>,
    ready_within: Option<&str>,
    table: &str,
    at: &Locator<'_>,
) -> Result<Option<Managed>, ScenarioError> {
    let Some(command) = command else {
        if ready_within.is_some() {
            return Err(at.error(table, None, "ready_within", "given without a `command`"));
        }
        return Ok(None);
    };
    if command.first().is_none_or(|p| p.is_empty()) {
        return Err(at.error(
            table,
            None,
            "command",
            "an empty command (a program and its arguments)",
        ));
    }
    let ready_within = match ready_within {
        Some(t) => {
            parse_duration(t).map_err(|e| at.error(table, None, "ready_within", e.to_string()))?
        }
        None => Duration::from_secs(10),
    };
    Ok(Some(Managed {
        command,
        ready_within,
    }))
}

/// Fleets that share a source prefix get consecutive blocks of interface ids, in file order,
/// unless one names its `address_offset` (a 6LoWPAN fleet's block starts after interface id
/// 1, the border router's).
fn assign_offsets(fleets: &mut [FleetSpec]) {
    let mut next: Vec<(Ipv6Prefix, u64)> = Vec::new();
    for f in fleets.iter_mut() {
        if let Sources::Pool { prefix, offset } = &mut f.sources {
            let slot = match next
                .iter_mut()
                .find(|(p, _)| p.network() == prefix.network())
            {
                Some(s) => s,
                None => {
                    next.push((*prefix, 0));
                    let last = next.len() - 1;
                    match next.get_mut(last) {
                        Some(s) => s,
                        None => continue,
                    }
                }
            };
            if *offset == u64::MAX {
                // A 6LoWPAN fleet's interface id 1 is its border router's.
                let router = u64::from(matches!(f.transport, Transport::Lowpan(_)));
                *offset = slot.1.max(router);
            }
            slot.1 = slot.1.max(offset.saturating_add(f.devices));
        }
    }
}

/// An NB-IoT fleet's plan from its `[fleet.nbiot]` table (the defaults of `v6iot-sim run
/// --transport nbiot` for what it leaves out).
fn nbiot(
    n: RawNbiot,
    err: &dyn Fn(&str, String) -> ScenarioError,
) -> Result<NbiotPlan, ScenarioError> {
    let dur = |text: Option<&str>, default: Duration| match text {
        Some(t) => parse_duration(t).map_err(|e| err("nbiot", e.to_string())),
        None => Ok(default),
    };
    let coverage = match n.coverage.as_deref() {
        None => CoverageMix::Mixed,
        Some(t) => CoverageMix::parse(t)
            .ok_or_else(|| err("nbiot", format!("coverage `{t}`: ce0, ce1, ce2 or mixed")))?,
    };
    let share = |v: f64, what: &str| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(err("nbiot", format!("{what} {v} is not between 0 and 1")))
        }
    };
    let commands = match n.commands_every {
        None => None,
        Some(every) => Some(CommandPlan {
            every: every.max(1),
            at: dur(n.commands_at.as_deref(), Duration::from_secs(30))?,
            ttl: dur(n.commands_ttl.as_deref(), Duration::from_secs(600))?,
        }),
    };
    Ok(NbiotPlan {
        carrier: CarrierPlan {
            coverage,
            loss: share(n.loss.unwrap_or(0.0), "loss")?,
            emulator: EmulatorConfig::default(),
            readdress_share: share(n.readdress_share.unwrap_or(0.1), "readdress_share")?,
            seed: n.seed.unwrap_or(1),
        },
        active_time: dur(n.active_time.as_deref(), Duration::from_secs(20))?,
        periodic_tau: dur(n.tau.as_deref(), Duration::from_secs(600))?,
        commands,
    })
}

/// A 6LoWPAN fleet's plan from its `[fleet.lowpan]` table (paths relative to `base`).
fn lowpan(
    l: RawLowpan,
    base: &Path,
    err: &dyn Fn(&str, String) -> ScenarioError,
) -> Result<LowpanPlan, ScenarioError> {
    let addr = |text: &str| {
        text.parse::<SocketAddr>()
            .map_err(|e| err("lowpan", format!("`{text}`: {e}")))
    };
    let router = addr(l.router.as_deref().unwrap_or("[::1]:17755"))?;
    let mut plan = LowpanPlan::new(l.pan_id.unwrap_or(0xabcd), l.channel.unwrap_or(26), router);
    if let Some(t) = &l.listen {
        plan.listen = addr(t)?;
    }
    if let Some(t) = &l.medium {
        plan.medium = MediumAt::Remote(addr(t)?);
    }
    plan.airtime = l.airtime.unwrap_or(false);
    plan.loss = l.loss.unwrap_or(0.0);
    plan.flat = match l.topology.as_deref().unwrap_or("star") {
        "star" => false,
        "flat" => true,
        other => {
            return Err(err("lowpan", format!("topology `{other}`: star or flat")));
        }
    };
    plan.router_port = l.router_port.unwrap_or(5683);
    plan.pcap = l.pcap.map(|p| base.join(p));
    Ok(plan)
}

fn fleet(f: RawFleet, i: usize, base: &Path, at: &Locator<'_>) -> Result<FleetSpec, ScenarioError> {
    let err = |key: &str, message: String| at.error("fleet", Some(i), key, message);
    let dur = |key: &str, text: &str| parse_duration(text).map_err(|e| err(key, e.to_string()));
    let name = f.name.unwrap_or_else(|| format!("fleet{i}"));
    let kind = f.transport.as_deref().unwrap_or("udp");
    if f.lowpan.is_some() && kind != "lowpan" {
        return Err(err(
            "lowpan",
            "a `lowpan` table needs `transport = \"lowpan\"`".into(),
        ));
    }
    let transport = match (kind, f.nbiot) {
        ("udp", None) => Transport::Udp,
        ("udp" | "lowpan", Some(_)) => {
            return Err(err(
                "nbiot",
                "an `nbiot` table needs `transport = \"nbiot\"`".into(),
            ));
        }
        ("nbiot", raw) => Transport::Nbiot(Box::new(nbiot(raw.unwrap_or_default(), &err)?)),
        ("lowpan", None) => {
            Transport::Lowpan(Box::new(lowpan(f.lowpan.unwrap_or_default(), base, &err)?))
        }
        (other, _) => {
            return Err(err(
                "transport",
                format!("`{other}` is not a transport of this build (udp, nbiot, lowpan)"),
            ));
        }
    };
    let load = match (&f.rate, &f.interval) {
        (Some(_), Some(_)) => {
            return Err(err(
                "interval",
                "give `rate` (over the fleet) or `interval` (per device), not both".into(),
            ));
        }
        (Some(r), None) => Load::Rate(rate_value(r).map_err(|m| err("rate", m))?),
        (None, Some(t)) => Load::Interval(dur("interval", t)?),
        (None, None) => Load::Rate(f.devices as f64),
    };
    let payload = match f.payload {
        None => Payload::default(),
        Some(p) => Payload {
            records: p.records.unwrap_or(2),
            format: match p.format.as_deref().unwrap_or("cbor") {
                "cbor" | "senml-cbor" => Format::Cbor,
                "json" | "senml-json" => Format::Json,
                other => return Err(err("payload", format!("format `{other}`: cbor or json"))),
            },
            pad: p.pad.unwrap_or(0),
        },
    };
    let oscore = f.oscore.map(|o| {
        let credentials = base.join(&o.credentials);
        let state = match o.state {
            Some(s) => base.join(s),
            None => {
                let mut s = credentials.clone().into_os_string();
                s.push(".seq");
                PathBuf::from(s)
            }
        };
        OscoreSpec { credentials, state }
    });
    let sources = match f.source_prefix {
        None => {
            if f.address_offset.is_some() {
                return Err(err(
                    "address_offset",
                    "given without a `source_prefix`".into(),
                ));
            }
            Sources::Sockets
        }
        Some(text) => Sources::Pool {
            prefix: text
                .parse::<Ipv6Prefix>()
                .map_err(|e| err("source_prefix", e.to_string()))?,
            offset: f.address_offset.unwrap_or(u64::MAX),
        },
    };
    let link = match f.link {
        None => LinkSpec::default(),
        Some(l) => LinkSpec {
            loss: l.loss.unwrap_or(0.0),
            latency: match l.latency.as_deref() {
                Some(t) => dur("link", t)?,
                None => Duration::ZERO,
            },
            jitter: match l.jitter.as_deref() {
                Some(t) => dur("link", t)?,
                None => Duration::ZERO,
            },
            bandwidth_bps: match &l.bandwidth {
                Some(RawRate::Text(t)) => parse_bandwidth(t).map_err(|m| err("link", m))?,
                Some(r) => rate_value(r).map_err(|m| err("link", m))?.round() as u64,
                None => 0,
            },
        },
    };
    Ok(FleetSpec {
        name,
        devices: f.devices,
        transport,
        sources,
        id_prefix: f.id_prefix.unwrap_or_else(|| "sim".into()),
        first: f.first.unwrap_or(0),
        load,
        payload,
        oscore,
        ramp: match f.ramp.as_deref() {
            Some(t) => dur("ramp", t)?,
            None => Duration::ZERO,
        },
        binding: if f.queue_mode.unwrap_or(false) {
            Binding::UQ
        } else {
            Binding::U
        },
        queue: f.queue.unwrap_or(DEFAULT_QUEUE),
        link,
    })
}

fn fault(f: RawFault, i: usize, at: &Locator<'_>) -> Result<Fault, ScenarioError> {
    let err = |key: &str, message: String| at.error("fault", Some(i), key, message);
    let dur = |key: &str, text: &str| parse_duration(text).map_err(|e| err(key, e.to_string()));
    let down = |f: &RawFault| match f.down.as_deref() {
        Some(t) => dur("down", t),
        None => Ok(Duration::from_secs(2)),
    };
    let only = |allowed: &[&str], f: &RawFault| {
        let given = [
            ("down", f.down.is_some()),
            ("for", f.length.is_some()),
            ("loss", f.loss.is_some()),
            ("fleet", f.fleet.is_some()),
        ];
        match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(err(k, format!("not a setting of a `{}` fault", f.kind))),
            None => Ok(()),
        }
    };
    let kind = match f.kind.as_str() {
        "edge_kill" => {
            only(&["down"], &f)?;
            FaultKind::EdgeKill { down: down(&f)? }
        }
        "edge_restart" => {
            only(&["down"], &f)?;
            FaultKind::EdgeRestart { down: down(&f)? }
        }
        "broker_outage" => {
            only(&["down"], &f)?;
            FaultKind::BrokerOutage { down: down(&f)? }
        }
        "broker_restart" => {
            only(&[], &f)?;
            FaultKind::BrokerOutage {
                down: Duration::ZERO,
            }
        }
        "link_loss" => {
            only(&["for", "loss", "fleet"], &f)?;
            let loss = f.loss.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&loss) {
                return Err(err("loss", format!("{loss} is not a probability (0 to 1)")));
            }
            FaultKind::LinkLoss {
                length: match f.length.as_deref() {
                    Some(t) => dur("for", t)?,
                    None => {
                        return Err(err(
                            "for",
                            "a `link_loss` fault needs `for` (how long)".into(),
                        ));
                    }
                },
                loss,
                fleet: f.fleet.clone(),
            }
        }
        other => {
            return Err(err(
                "kind",
                format!(
                    "`{other}` is not a fault (edge_kill, edge_restart, broker_outage, broker_restart, link_loss)"
                ),
            ));
        }
    };
    Ok(Fault {
        at: dur("at", &f.at)?,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in `simulator/scenarios/` reads and passes the checks, and the fault
    /// drill has its edge kill and broker restart on processes the simulator runs.
    #[test]
    fn the_example_scenarios_read_and_pass_the_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("simulator/scenarios") {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // The drill's edge configuration is the edge's file, not a scenario.
            if path.extension().is_none_or(|e| e != "toml") || name.ends_with("-edge.toml") {
                continue;
            }
            let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
            let host = super::super::check::Host { max_files: 1 << 21 };
            super::super::check::check(&s, super::super::Partition::WHOLE, host)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push((s.name.clone(), s));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let found: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(found, ["fault-drill", "lowpan", "mixed", "steady", "storm"]);
        let drill = &names[0].1;
        assert!(drill.edge.managed.is_some() && drill.broker.managed.is_some());
        let kinds: Vec<&str> = drill.faults.iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds, ["edge_kill", "broker_restart"]);
        assert!(drill.broker.persistent_session);
    }

    const GOOD: &str = r#"
name = "drill"
seed = 42
duration = "20s"
drain = "15s"
threads = 2

[edge]
address = "[::1]:5683"
command = ["v6iot-edge", "run", "--config", "edge.toml"]

[broker]
url = "mqtt://[::1]:1883"
site = "plant"
command = ["mosquitto", "-c", "mosquitto.conf"]

[[fleet]]
name = "meters"
devices = 1000
rate = "500/s"
ramp = "5s"
source_prefix = "2001:db8:100::/64"
oscore = { credentials = "creds.csv" }
payload = { records = 4, format = "json", pad = 32 }

[[fleet]]
name = "valves"
devices = 10
interval = "2s"
source_prefix = "2001:db8:100::/64"
link = { loss = 0.01, latency = "20ms", jitter = "5ms", bandwidth = "20kbit/s" }

[[fault]]
at = "12s"
kind = "broker_restart"

[[fault]]
at = "5s"
kind = "edge_kill"
down = "1s"

[[fault]]
at = "8s"
kind = "link_loss"
for = "2s"
fleet = "valves"
"#;

    #[test]
    fn a_full_scenario_reads_as_written() {
        let s = parse(GOOD, Path::new("/etc/sim")).unwrap();
        assert_eq!((s.name.as_str(), s.seed, s.threads), ("drill", 42, 2));
        assert_eq!(
            (s.duration, s.drain),
            (Duration::from_secs(20), Duration::from_secs(15))
        );
        assert_eq!(s.settle, Duration::from_secs(30), "settle's default");
        for (written, settle) in [("\"45s\"", 45_000), ("\"0s\"", 0), ("\"1500ms\"", 1500)] {
            let text = GOOD.replacen(
                "drain = \"15s\"",
                &format!("drain = \"15s\"\nsettle = {written}"),
                1,
            );
            let s = parse(&text, Path::new(".")).unwrap();
            assert_eq!(
                s.settle,
                Duration::from_millis(settle),
                "settle = {written}"
            );
        }
        assert!(
            s.broker.persistent_session,
            "a broker restart asks for a persistent session"
        );
        assert_eq!(s.broker.site, "plant");
        assert_eq!(s.edge.managed.as_ref().unwrap().command[0], "v6iot-edge");
        let [meters, valves] = s.fleets.as_slice() else {
            panic!("two fleets")
        };
        assert_eq!(meters.load, Load::Rate(500.0));
        assert_eq!(meters.interval(), Some(Duration::from_secs(2)));
        assert_eq!(meters.ramp, Duration::from_secs(5));
        assert_eq!(
            meters.payload,
            Payload {
                records: 4,
                format: Format::Json,
                pad: 32
            }
        );
        let o = meters.oscore.as_ref().unwrap();
        assert_eq!(o.credentials, Path::new("/etc/sim/creds.csv"));
        assert_eq!(o.state, Path::new("/etc/sim/creds.csv.seq"));
        // Two fleets in one prefix: consecutive blocks of interface ids.
        assert!(matches!(meters.sources, Sources::Pool { offset: 0, .. }));
        assert!(matches!(valves.sources, Sources::Pool { offset: 1000, .. }));
        assert_eq!(valves.load, Load::Interval(Duration::from_secs(2)));
        assert_eq!(valves.link.bandwidth_bps, 20_000);
        assert_eq!(valves.link.latency, Duration::from_millis(20));
        // Faults sorted by time.
        let kinds: Vec<&str> = s.faults.iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds, ["edge_kill", "link_loss", "broker_restart"]);
        assert_eq!(
            s.faults[1].kind,
            FaultKind::LinkLoss {
                length: Duration::from_secs(2),
                loss: 1.0,
                fleet: Some("valves".into())
            }
        );
    }

    /// A `transport = "lowpan"` fleet reads its `[fleet.lowpan]` table (defaults for what it
    /// leaves out; its pool starts after the router's interface id 1); a `lowpan` table on
    /// another transport, an unknown topology and a lowpan fleet beside another are refused.
    #[test]
    fn a_lowpan_fleet_reads_its_pan_and_medium() {
        let text = r#"
duration = "30s"
[edge]
address = "[::1]:5683"
[broker]
url = "mqtt://[::1]:1883"
[[fleet]]
name = "motes"
transport = "lowpan"
devices = 10
interval = "10s"
source_prefix = "2001:db8:1200:305::/64"
[fleet.lowpan]
pan_id = 4660
channel = 15
airtime = true
loss = 0.1
topology = "flat"
pcap = "air.pcap"
"#;
        let s = parse(text, Path::new("/tmp/x")).unwrap();
        let Transport::Lowpan(l) = &s.fleets[0].transport else {
            panic!("a 6LoWPAN fleet: {:?}", s.fleets[0].transport)
        };
        assert_eq!(s.fleets[0].transport.name(), "lowpan");
        assert_eq!(
            (l.pan, l.channel, l.airtime, l.flat),
            (4660, 15, true, true)
        );
        assert_eq!(l.loss, 0.1);
        assert_eq!(
            l.medium,
            MediumAt::InProcess {
                router: "[::1]:17755".parse().unwrap()
            }
        );
        assert_eq!(l.listen, "[::1]:17754".parse().unwrap());
        assert_eq!(l.pcap.as_deref(), Some(Path::new("/tmp/x/air.pcap")));
        let Sources::Pool { offset, .. } = s.fleets[0].sources else {
            panic!("a pool")
        };
        assert_eq!(offset, 1, "interface id 1 is the router's");
        let host = super::super::check::Host { max_files: 1 << 21 };
        super::super::check::check(&s, super::super::Partition::WHOLE, host).unwrap();

        let remote = text.replace("pcap = \"air.pcap\"", "medium = \"[::1]:9999\"");
        let s = parse(&remote, Path::new(".")).unwrap();
        let Transport::Lowpan(l) = &s.fleets[0].transport else {
            panic!()
        };
        assert_eq!(l.medium, MediumAt::Remote("[::1]:9999".parse().unwrap()));

        let e = parse(&text.replace("\"flat\"", "\"mesh\""), Path::new(".")).unwrap_err();
        assert_eq!(e.key, "fleet[0].lowpan", "{e}");
        let e = parse(&text.replace("\"lowpan\"\n", "\"udp\"\n"), Path::new(".")).unwrap_err();
        assert_eq!(e.key, "fleet[0].lowpan", "{e}");
        let two = format!("{text}[[fleet]]\nname = \"udp\"\ndevices = 1\nrate = \"1/s\"\n");
        let s = parse(&two, Path::new(".")).unwrap();
        let e = super::super::check::check(&s, super::super::Partition::WHOLE, host).unwrap_err();
        assert_eq!(e.key, "fleet[0].transport", "{e}");
        let mut at_one = parse(text, Path::new(".")).unwrap();
        at_one.fleets[0].sources = Sources::Pool {
            prefix: "2001:db8:1200:305::/64".parse().unwrap(),
            offset: 0,
        };
        let e =
            super::super::check::check(&at_one, super::super::Partition::WHOLE, host).unwrap_err();
        assert_eq!(e.key, "fleet[0].address_offset", "{e}");
    }

    /// A `transport = "nbiot"` fleet reads its `[fleet.nbiot]` table (the CLI's defaults for
    /// what it leaves out); the table without the transport, a bad coverage class or share is
    /// refused naming `nbiot`; the checks refuse an NB-IoT fleet without a prefix.
    #[test]
    fn an_nbiot_fleet_reads_its_carrier_and_commands() {
        let text = GOOD.replacen(
            "name = \"valves\"",
            "name = \"valves\"\ntransport = \"nbiot\"\nqueue_mode = true\nnbiot = { coverage = \"ce2\", active_time = \"8s\", commands_every = 5, commands_at = \"40s\" }",
            1,
        );
        let s = parse(&text, Path::new(".")).unwrap();
        let Transport::Nbiot(n) = &s.fleets[1].transport else {
            panic!("an NB-IoT fleet: {:?}", s.fleets[1].transport)
        };
        assert_eq!(s.fleets[1].transport.name(), "nbiot");
        assert_eq!(
            n.carrier.coverage,
            CoverageMix::All(crate::nbiot::carrier::Coverage::Ce2)
        );
        assert_eq!(n.active_time, Duration::from_secs(8));
        assert_eq!(n.periodic_tau, Duration::from_secs(600), "the default TAU");
        assert_eq!(
            n.commands,
            Some(CommandPlan {
                every: 5,
                at: Duration::from_secs(40),
                ttl: Duration::from_secs(600),
            })
        );
        assert_eq!(s.fleets[0].transport, Transport::Udp);
        let host = super::super::check::Host { max_files: 1 << 21 };
        super::super::check::check(&s, super::super::Partition::WHOLE, host).unwrap();
        let mut sockets = s.clone();
        sockets.fleets[1].sources = Sources::Sockets;
        let e =
            super::super::check::check(&sockets, super::super::Partition::WHOLE, host).unwrap_err();
        assert_eq!(e.key, "fleet[1].transport", "{e}");
        for bad in [
            "nbiot = { coverage = \"ce3\" }",
            "nbiot = { loss = 1.5 }",
            "nbiot = { readdress_share = -0.1 }",
        ] {
            let text = GOOD.replacen(
                "name = \"valves\"",
                &format!("name = \"valves\"\ntransport = \"nbiot\"\n{bad}"),
                1,
            );
            let e = parse(&text, Path::new(".")).unwrap_err();
            assert_eq!(e.key, "fleet[1].nbiot", "{bad}: {e}");
        }
        let e = parse(
            &GOOD.replacen("name = \"valves\"", "name = \"valves\"\nnbiot = {}", 1),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "fleet[1].nbiot", "{e}");
    }

    /// `text` with `from` replaced by `to` must fail at `line` naming `key`.
    fn fails(from: &str, to: &str, line: usize, key: &str, says: &str) {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let e = parse(&text, Path::new(".")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains(says), "{e}");
        assert!(
            e.to_string().contains(&format!("line {line}: `{key}`")),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        // Wrong type and unknown keys, as the TOML reader finds them.
        fails(
            "devices = 1000",
            "devices = \"many\"",
            19,
            "fleet[0].devices",
            "invalid type",
        );
        fails(
            "devices = 10\n",
            "devices = 10\nspeed = 3\n",
            29,
            "fleet[1].speed",
            "unknown field",
        );
        fails("seed = 42", "seed = -1", 3, "seed", "invalid value");
        // Values that parse as TOML but not as what they stand for.
        fails(
            "rate = \"500/s\"",
            "rate = \"fast\"",
            20,
            "fleet[0].rate",
            "not a rate",
        );
        fails(
            "interval = \"2s\"",
            "interval = \"2 weeks\"",
            29,
            "fleet[1].interval",
            "unknown unit",
        );
        fails(
            "duration = \"20s\"",
            "duration = \"soon\"",
            4,
            "duration",
            "not a duration",
        );
        fails(
            "drain = \"15s\"",
            "drain = \"15s\"\nsettle = \"later\"",
            6,
            "settle",
            "not a duration",
        );
        fails(
            "drain = \"15s\"",
            "drain = \"15s\"\nsettle = 30",
            6,
            "settle",
            "invalid type",
        );
        fails(
            "source_prefix = \"2001:db8:100::/64\"\noscore",
            "source_prefix = \"2001:db8:100::1/64\"\noscore",
            22,
            "fleet[0].source_prefix",
            "bits are set",
        );
        fails(
            "kind = \"edge_kill\"",
            "kind = \"edge_melt\"",
            39,
            "fault[1].kind",
            "not a fault",
        );
        fails(
            "down = \"1s\"",
            "down = \"1s\"\nloss = 0.5",
            41,
            "fault[1].loss",
            "not a setting",
        );
        fails(
            "address = \"[::1]:5683\"",
            "address = \"localhost\"",
            9,
            "edge.address",
            "like [::1]:5683",
        );
        fails(
            "url = \"mqtt://[::1]:1883\"",
            "url = \"http://[::1]:1883\"",
            13,
            "broker.url",
            "mqtt://",
        );
        fails(
            "name = \"valves\"",
            "name = \"valves\"\ntransport = \"lora\"",
            28,
            "fleet[1].transport",
            "not a transport",
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = parse(
            &GOOD.replacen("threads = 2", "threads = 2\n[[fleet]\n", 1),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        let e = parse(
            "duration = \"1s\"\n[edge]\naddress = \"[::1]:5683\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.message.contains("broker"),
            "the missing table is named: {e}"
        );
    }
}
