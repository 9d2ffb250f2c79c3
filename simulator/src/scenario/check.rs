//! Settings that cannot work, refused before anything starts: more devices than addresses in
//! a prefix, rates the link model cannot carry, a shard index out of range, faults on processes
//! the simulator does not run, more sockets than the process may open.
//!
//! Each refusal names the key it is about (`fleet[0].rate`); for a scenario file the caller
//! adds the line ([`super::file::ScenarioError`]).

use std::time::Duration;

use super::{FaultKind, FleetSpec, Format, Scenario, Sources, Transport};

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct CheckError {
    /// The key, as a path (`fleet[1].devices`, `shard`).
    pub key: String,
    /// Why.
    pub message: String,
}

fn refuse(key: impl Into<String>, message: impl Into<String>) -> CheckError {
    CheckError {
        key: key.into(),
        message: message.into(),
    }
}

/// Which part of every fleet this process runs: `index` of `count` (`--shard I/N`). Device `n`
/// of a fleet belongs to shard `n mod count`, so each shard has every fleet's ramp and rate in
/// proportion, and shards on several machines together are the whole scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// This shard, 0-based.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl Partition {
    /// The whole scenario in one process.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Whether device `n` (of any fleet) is this shard's.
    pub fn contains(&self, n: u64) -> bool {
        n % u64::from(self.count.max(1)) == u64::from(self.index)
    }

    /// How many of `devices` devices (0..devices) are this shard's.
    pub fn share(&self, devices: u64) -> u64 {
        let count = u64::from(self.count.max(1));
        let index = u64::from(self.index);
        if devices <= index {
            0
        } else {
            (devices - index).div_ceil(count)
        }
    }

    /// The `k`-th of this shard's devices (its number in the fleet).
    pub fn device(&self, k: u64) -> u64 {
        u64::from(self.index) + k * u64::from(self.count.max(1))
    }
}

/// A `--shard` that is not `I/N` with `I < N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a shard like 0/4 (index from 0, below the count)")]
pub struct PartitionError(pub String);

impl std::str::FromStr for Partition {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PartitionError(s.to_owned());
        let (i, n) = s.trim().split_once('/').ok_or_else(err)?;
        let index: u32 = i.trim().parse().map_err(|_| err())?;
        let count: u32 = n.trim().parse().map_err(|_| err())?;
        if count == 0 || index >= count {
            return Err(err());
        }
        Ok(Partition { index, count })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What the host allows, for the checks that depend on it.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Files this process may open (`ulimit -n`, hard limit).
    pub max_files: u64,
}

/// Fewest file descriptors kept free for everything but device sockets.
const SPARE_FILES: u64 = 256;

/// The shortest time between two reports of one device (the timer wheel's resolution is 1 ms,
/// and a device has one report on its way at a time).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Largest `pad` of a report: a report is one datagram (no Block1), and the edge takes
/// messages up to about 1 KiB.
pub const MAX_PAD: usize = 900;

/// Refuses the scenario (as this shard runs it) if a setting cannot work.
pub fn check(s: &Scenario, shard: Partition, host: Host) -> Result<(), CheckError> {
    if shard.count == 0 || shard.index >= shard.count {
        return Err(refuse(
            "shard",
            format!("{shard}: the index must be below the count"),
        ));
    }
    if u64::from(shard.count) > s.devices() {
        return Err(refuse(
            "shard",
            format!(
                "{shard}: {} devices cannot fill {} shards",
                s.devices(),
                shard.count
            ),
        ));
    }
    if s.duration.is_zero() {
        return Err(refuse("duration", "a run needs a reporting period above 0"));
    }
    if !(1..=256).contains(&s.threads) {
        return Err(refuse(
            "threads",
            format!("{} threads: 1 to 256", s.threads),
        ));
    }
    if s.fleets.is_empty() {
        return Err(refuse("fleet", "a scenario needs at least one [[fleet]]"));
    }
    check_lowpan(s)?;
    let mut sockets = 0;
    for (i, f) in s.fleets.iter().enumerate() {
        check_fleet(s, i, f)?;
        if f.sources == Sources::Sockets {
            sockets += shard.share(f.devices);
        }
    }
    if sockets + SPARE_FILES > host.max_files {
        return Err(refuse(
            "fleet",
            format!(
                "{sockets} devices with a socket each need more files than this process may open ({}): raise `ulimit -n`, or give the fleet a `source_prefix` (one socket per thread)",
                host.max_files
            ),
        ));
    }
    check_overlaps(s)?;
    check_faults(s)
}

/// A 6LoWPAN fleet runs alone (its medium and ZEP socket are the run's), from an address pool
/// that leaves interface id 1 to the router, on a 2.4 GHz channel, with a loss below 1.
fn check_lowpan(s: &Scenario) -> Result<(), CheckError> {
    let Some((i, f, plan)) = s
        .fleets
        .iter()
        .enumerate()
        .find_map(|(i, f)| match &f.transport {
            Transport::Lowpan(p) => Some((i, f, p)),
            _ => None,
        })
    else {
        return Ok(());
    };
    let key = |k: &str| format!("fleet[{i}].{k}");
    if s.fleets.len() > 1 {
        return Err(refuse(
            key("transport"),
            "a 6LoWPAN fleet runs alone in its scenario (one PAN, one medium, one ZEP socket)",
        ));
    }
    match f.sources {
        Sources::Sockets => {
            return Err(refuse(
                key("transport"),
                "a 6LoWPAN fleet needs a `source_prefix`: the router's /64 (its devices' addresses)",
            ));
        }
        Sources::Pool { offset: 0, .. } => {
            return Err(refuse(
                key("address_offset"),
                "interface id 1 is the border router's (router_eui64 02:00:00:00:00:00:00:01): give the 6LoWPAN fleet an address_offset of at least 1",
            ));
        }
        Sources::Pool { .. } => {}
    }
    if !(11..=26).contains(&plan.channel) {
        return Err(refuse(
            key("lowpan.channel"),
            format!("channel {}: 11 to 26 (2.4 GHz O-QPSK)", plan.channel),
        ));
    }
    if !(0.0..1.0).contains(&plan.loss) {
        return Err(refuse(
            key("lowpan.loss"),
            format!("loss {}: 0 ≤ loss < 1", plan.loss),
        ));
    }
    Ok(())
}

fn check_fleet(s: &Scenario, i: usize, f: &FleetSpec) -> Result<(), CheckError> {
    let key = |k: &str| format!("fleet[{i}].{k}");
    if f.devices == 0 {
        return Err(refuse(key("devices"), "a fleet of no devices"));
    }
    if s.fleets.iter().filter(|g| g.name == f.name).count() > 1 {
        return Err(refuse(
            key("name"),
            format!("`{}` names two fleets", f.name),
        ));
    }
    if matches!(f.transport, Transport::Nbiot(_)) {
        if f.sources == Sources::Sockets {
            return Err(refuse(
                key("transport"),
                "an NB-IoT fleet needs a `source_prefix`: every device at a carrier address of its own",
            ));
        }
        if let Transport::Nbiot(n) = &f.transport
            && let Err(e) = n.modem_config()
        {
            return Err(refuse(key("nbiot"), format!("the PSM timers: {e}")));
        }
    }
    if let Sources::Pool { prefix, offset } = f.sources {
        if s.edge.address.is_ipv4() {
            return Err(refuse(
                key("source_prefix"),
                "devices with IPv6 addresses need an IPv6 edge address",
            ));
        }
        // Interface ids 1 ..= 2^(128 - len) - 1 of the prefix (of its first /64 when shorter).
        let host_bits = 128 - u32::from(prefix.prefix_len().max(64));
        let capacity = if host_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << host_bits) - 1
        };
        let last = offset.checked_add(f.devices);
        if last.is_none_or(|l| l > capacity) {
            return Err(refuse(
                key("devices"),
                format!(
                    "{} devices from interface id {} do not fit in {prefix} ({capacity} addresses)",
                    f.devices,
                    offset.saturating_add(1)
                ),
            ));
        }
    }
    if f.queue == 0 {
        return Err(refuse(
            key("queue"),
            "a device must be able to keep one report",
        ));
    }
    if !(2..=64).contains(&f.payload.records) {
        return Err(refuse(
            key("payload"),
            format!("{} records: 2 to 64 (the last is `seq`)", f.payload.records),
        ));
    }
    if f.payload.pad > MAX_PAD {
        return Err(refuse(
            key("payload"),
            format!(
                "pad {}: at most {MAX_PAD} bytes (a report is one datagram)",
                f.payload.pad
            ),
        ));
    }
    check_link(i, f)
}

/// A report's datagram on the wire, about: IPv6 + UDP headers, CoAP header and options,
/// OSCORE's option and tag, and the SenML body.
pub fn report_bytes(f: &FleetSpec) -> u64 {
    let per_record = match f.payload.format {
        Format::Cbor => 24,
        Format::Json => 40,
    };
    let body = 40 + per_record * u64::from(f.payload.records) + f.payload.pad as u64;
    let oscore = if f.oscore.is_some() { 16 } else { 0 };
    48 + 16 + oscore + body
}

fn check_link(i: usize, f: &FleetSpec) -> Result<(), CheckError> {
    let key = |k: &str| format!("fleet[{i}].{k}");
    let link = &f.link;
    if !(0.0..1.0).contains(&link.loss) {
        return Err(refuse(
            key("link"),
            format!(
                "loss {}: a probability below 1 (a link that loses everything for a while is a `link_loss` fault)",
                link.loss
            ),
        ));
    }
    let Some(interval) = f.interval() else {
        return Ok(());
    };
    if interval < MIN_INTERVAL {
        return Err(refuse(
            key("rate"),
            format!(
                "{:.0} reports/s from {} devices is one every {interval:?} per device; a device sends one at a time, at most one a millisecond",
                f.rate(),
                f.devices
            ),
        ));
    }
    // One report on its way per device: each needs a round trip before the next goes.
    let round_trip = (link.latency + link.jitter) * 2;
    if !round_trip.is_zero() && interval < round_trip {
        return Err(refuse(
            key("rate"),
            format!(
                "a report every {interval:?} per device, but the link's round trip is up to {round_trip:?} and a device sends one report at a time"
            ),
        ));
    }
    if link.bandwidth_bps > 0 {
        let bits_per_s = report_bytes(f) as f64 * 8.0 / interval.as_secs_f64();
        if bits_per_s > link.bandwidth_bps as f64 {
            return Err(refuse(
                key("rate"),
                format!(
                    "a report every {interval:?} per device is {bits_per_s:.0} bit/s ({} B each), more than the link's {} bit/s",
                    report_bytes(f),
                    link.bandwidth_bps
                ),
            ));
        }
    }
    Ok(())
}

/// Fleets in one prefix must not share interface ids.
fn check_overlaps(s: &Scenario) -> Result<(), CheckError> {
    for (i, a) in s.fleets.iter().enumerate() {
        for (j, b) in s.fleets.iter().enumerate().skip(i + 1) {
            if let (
                Sources::Pool {
                    prefix: pa,
                    offset: oa,
                },
                Sources::Pool {
                    prefix: pb,
                    offset: ob,
                },
            ) = (a.sources, b.sources)
                && pa.network() == pb.network()
                && oa < ob.saturating_add(b.devices)
                && ob < oa.saturating_add(a.devices)
            {
                return Err(refuse(
                    format!("fleet[{j}].address_offset"),
                    format!("its addresses overlap fleet `{}`'s in {pa}", a.name),
                ));
            }
        }
    }
    Ok(())
}

fn check_faults(s: &Scenario) -> Result<(), CheckError> {
    let end = s.duration + s.drain;
    let mut busy_until: [Duration; 2] = [Duration::ZERO; 2];
    for (i, f) in s.faults.iter().enumerate() {
        let key = |k: &str| format!("fault[{i}].{k}");
        if f.at >= end {
            return Err(refuse(
                key("at"),
                format!("{:?} is after the run ends ({end:?})", f.at),
            ));
        }
        let target = match &f.kind {
            FaultKind::EdgeKill { .. } | FaultKind::EdgeRestart { .. } => {
                if s.edge.managed.is_none() {
                    return Err(refuse(
                        key("kind"),
                        format!(
                            "`{}` needs the simulator to run the edge: give [edge] a `command`",
                            f.kind.name()
                        ),
                    ));
                }
                0
            }
            FaultKind::BrokerOutage { .. } => {
                if s.broker.managed.is_none() {
                    return Err(refuse(
                        key("kind"),
                        format!(
                            "`{}` needs the simulator to run the broker: give [broker] a `command`",
                            f.kind.name()
                        ),
                    ));
                }
                1
            }
            FaultKind::LinkLoss { fleet, .. } => {
                if let Some(name) = fleet
                    && s.fleet_index(name).is_none()
                {
                    return Err(refuse(key("fleet"), format!("no fleet is named `{name}`")));
                }
                continue;
            }
        };
        if let Some(until) = busy_until.get_mut(target) {
            if f.at < *until {
                return Err(refuse(
                    key("at"),
                    format!(
                        "at {:?} the {} is still down from the fault before",
                        f.at,
                        if target == 0 { "edge" } else { "broker" }
                    ),
                ));
            }
            *until = f.at + f.kind.length();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Fault, LinkSpec, Load, Managed};

    fn scenario() -> Scenario {
        Scenario::single(
            FleetSpec::new("f", 100, 50.0),
            "[::1]:5683".parse().unwrap(),
            "mqtt://[::1]:1883",
        )
    }

    const HOST: Host = Host { max_files: 1 << 20 };

    fn refused(s: &Scenario, shard: Partition, key: &str, says: &str) {
        let e = check(s, shard, HOST).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(says), "{e}");
    }

    #[test]
    fn a_plain_scenario_passes_and_partitions_cover_every_device_once() {
        check(&scenario(), Partition::WHOLE, HOST).unwrap();
        let p: Partition = "2/3".parse().unwrap();
        assert_eq!(p.to_string(), "2/3");
        for devices in [1u64, 2, 3, 10, 11] {
            let total: u64 = (0..3)
                .map(|i| Partition { index: i, count: 3 }.share(devices))
                .sum();
            assert_eq!(total, devices);
            for i in 0..3 {
                let part = Partition { index: i, count: 3 };
                for k in 0..part.share(devices) {
                    assert!(part.contains(part.device(k)) && part.device(k) < devices);
                }
            }
        }
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn impossible_settings_are_refused_naming_the_key() {
        refused(
            &scenario(),
            Partition { index: 5, count: 2 },
            "shard",
            "below the count",
        );
        refused(
            &scenario(),
            Partition {
                index: 0,
                count: 101,
            },
            "shard",
            "cannot fill",
        );
        // More devices than the prefix has addresses: a /120 has 255 interface ids.
        let mut s = scenario();
        s.fleets[0].devices = 300;
        s.fleets[0].sources = Sources::Pool {
            prefix: "2001:db8:100::/120".parse().unwrap(),
            offset: 0,
        };
        refused(&s, Partition::WHOLE, "fleet[0].devices", "do not fit");
        s.fleets[0].devices = 255;
        check(&s, Partition::WHOLE, HOST).unwrap();
        // A rate the link cannot carry: a report every 2 s per device, a 3 s round trip.
        let mut s = scenario();
        s.fleets[0].link = LinkSpec {
            latency: Duration::from_millis(1500),
            ..LinkSpec::default()
        };
        refused(&s, Partition::WHOLE, "fleet[0].rate", "round trip");
        // ... or more bits than its bandwidth.
        let mut s = scenario();
        s.fleets[0].link.bandwidth_bps = 300;
        refused(&s, Partition::WHOLE, "fleet[0].rate", "bit/s");
        s.fleets[0].link.bandwidth_bps = 2000;
        check(&s, Partition::WHOLE, HOST).unwrap();
        let mut s = scenario();
        s.fleets[0].load = Load::Rate(1e6);
        refused(&s, Partition::WHOLE, "fleet[0].rate", "one at a time");
        let mut s = scenario();
        s.fleets[0].link.loss = 1.0;
        refused(&s, Partition::WHOLE, "fleet[0].link", "probability below 1");
        // A socket per device beyond `ulimit -n`.
        let e = check(&scenario(), Partition::WHOLE, Host { max_files: 300 }).unwrap_err();
        assert!(e.message.contains("ulimit -n"), "{e}");
        // Faults on processes the simulator does not run, or overlapping.
        let mut s = scenario();
        s.faults.push(Fault {
            at: Duration::from_secs(2),
            kind: FaultKind::EdgeKill {
                down: Duration::from_secs(3),
            },
        });
        refused(
            &s,
            Partition::WHOLE,
            "fault[0].kind",
            "give [edge] a `command`",
        );
        s.edge.managed = Some(Managed {
            command: vec!["v6iot-edge".into()],
            ready_within: Duration::from_secs(5),
        });
        check(&s, Partition::WHOLE, HOST).unwrap();
        s.faults.push(Fault {
            at: Duration::from_secs(4),
            kind: FaultKind::EdgeRestart {
                down: Duration::ZERO,
            },
        });
        refused(&s, Partition::WHOLE, "fault[1].at", "still down");
        s.faults[1].at = Duration::from_secs(60);
        refused(&s, Partition::WHOLE, "fault[1].at", "after the run ends");
        // An IPv4 edge cannot be reached from a pool of IPv6 addresses.
        let mut s = scenario();
        s.edge.address = "127.0.0.1:5683".parse().unwrap();
        s.fleets[0].sources = Sources::Pool {
            prefix: "2001:db8:100::/64".parse().unwrap(),
            offset: 0,
        };
        refused(&s, Partition::WHOLE, "fleet[0].source_prefix", "IPv6 edge");
    }
}
