//! The NB-IoT options of `v6iot-sim run` (`--transport nbiot …`) and the [`NbiotPlan`] they
//! make; the options of `v6iot-sim modem` (one emulated modem on a pty) and its summary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use v6iot_credentials::Ipv6Prefix;

use super::carrier::{CarrierPlan, Cellular, CoverageMix, Latency};
use super::emulator::EmulatorConfig;
use super::fleet::{CommandPlan, NbiotPlan};
use crate::duration::parse_duration;

/// How the fleet reaches the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// CoAP on UDP directly.
    Udp,
    /// The SDK's NB-IoT device on an emulated modem and carrier (needs `--source-prefix`).
    Nbiot,
    /// The SDK's 6LoWPAN device on a simulated 802.15.4 medium to the border router (needs
    /// `--source-prefix`, the router's /64; see the `--pan-id` … options).
    Lowpan,
}

/// `v6iot-sim run`'s NB-IoT options.
#[derive(Debug, Clone, Args)]
pub struct NbiotArgs {
    /// `udp`, or `nbiot`: every device on an emulated NB-IoT modem and carrier, in PSM between
    /// its exchanges (registers with `b=UQ`; needs `--source-prefix`).
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: TransportArg,
    /// NB-IoT coverage class of the devices: `ce0`, `ce1`, `ce2`, or `mixed` (70/20/10 %).
    #[arg(long, default_value = "mixed", value_parser = parse_coverage)]
    pub coverage: CoverageMix,
    /// NB-IoT: probability that the carrier loses a datagram, each direction.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// NB-IoT: the active time (T3324) the devices ask for; set the edge's
    /// `queue_listen_window_s` to it less the coverage's longest round trip (ce0 1 s, ce1 4 s,
    /// ce2 and mixed 12 s), so that nothing the edge sends reaches a modem already in PSM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub active_time: Duration,
    /// NB-IoT: the periodic TAU (T3412) the devices ask for.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub tau: Duration,
    /// NB-IoT: the share of devices (0 to 1) that get a new carrier address after every sleep.
    #[arg(long, default_value_t = 0.1)]
    pub readdress_share: f64,
    /// NB-IoT: publish a platform command (`PUT /actuators/valve`) for one device in this many.
    #[arg(long)]
    pub commands_every: Option<usize>,
    /// NB-IoT: when the commands are published, after the start.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub commands_at: Duration,
    /// NB-IoT: the commands' TTL.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub commands_ttl: Duration,
}

fn parse_coverage(text: &str) -> Result<CoverageMix, String> {
    CoverageMix::parse(text).ok_or_else(|| format!("{text}: ce0, ce1, ce2 or mixed"))
}

impl NbiotArgs {
    /// The NB-IoT plan, with `--transport nbiot`; `seed` seeds the carrier (the run's `--seed`).
    pub fn plan(&self, seed: u64) -> Option<NbiotPlan> {
        (self.transport == TransportArg::Nbiot).then(|| NbiotPlan {
            carrier: CarrierPlan {
                coverage: self.coverage,
                loss: self.loss,
                emulator: EmulatorConfig::default(),
                readdress_share: self.readdress_share,
                seed,
            },
            active_time: self.active_time,
            periodic_tau: self.tau,
            commands: self.commands_every.map(|every| CommandPlan {
                every: every.max(1),
                at: self.commands_at,
                ttl: self.commands_ttl,
            }),
        })
    }
}

/// `v6iot-sim modem`: one emulated NB-IoT modem on a pty, for the SDK's driver (the
/// `nbiot_meter` example) or a person at a serial terminal (`screen /dev/pts/N`).
#[derive(Debug, Clone, Args)]
pub struct ModemArgs {
    /// Also make a symbolic link to the pty's device end here (replaced if it exists), so a
    /// device can be pointed at a fixed path.
    #[arg(long)]
    pub link: Option<PathBuf>,
    /// The carrier's prefix: the modem's addresses come from it. It must be routed to this
    /// host (in a network namespace of its own: `unshare -n`, `ip link set lo up`,
    /// `ip -6 route add local PREFIX dev lo`).
    #[arg(long, default_value = "2001:db8:100::/64")]
    pub carrier_prefix: Ipv6Prefix,
    /// The interface identifier of the modem's first address in the prefix.
    #[arg(long, default_value_t = 7)]
    pub iid: u64,
    /// From `AT+CGATT=1` to registered.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub attach_delay: Duration,
    /// One-way latency of the radio path (fixed); without it, a draw per datagram from the
    /// `--coverage` class.
    #[arg(long, value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// The coverage class: `ce0`, `ce1` or `ce2` (0.1–0.5 s, 0.5–2 s, 2–6 s one way).
    #[arg(long, default_value = "ce0", value_parser = parse_coverage)]
    pub coverage: CoverageMix,
    /// Probability that the carrier loses a datagram, each direction.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// A new address from the carrier after every sleep.
    #[arg(long)]
    pub readdress_after_sleep: bool,
    /// Seed of the latency and loss draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this long (default: at Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

impl ModemArgs {
    /// The modem behind its carrier link, as these flags describe it.
    pub fn cellular(&self) -> Cellular {
        let plan = CarrierPlan {
            coverage: self
                .latency
                .map_or(self.coverage, |l| CoverageMix::Fixed(Latency::fixed(l))),
            loss: self.loss,
            emulator: EmulatorConfig {
                attach_delay: self.attach_delay,
                readdress_after_sleep: self.readdress_after_sleep,
                ..EmulatorConfig::default()
            },
            readdress_share: 0.0,
            seed: self.seed,
        };
        plan.cellular(0)
    }
}

/// What `v6iot-sim modem` prints when it stops (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ModemSummary {
    /// Command lines answered.
    pub commands: u64,
    /// Of them answered with an error.
    pub errors: u64,
    /// Datagrams sent from the device's address.
    pub uplinks: u64,
    /// Datagrams handed to the device.
    pub downlinks: u64,
    /// Datagrams for the device while it could not be reached (PSM, detached).
    pub unreachable: u64,
    /// Times PSM was entered.
    pub sleeps: u64,
    /// Addresses changed on wake-up.
    pub readdressed: u64,
    /// Datagrams the carrier lost, both directions.
    pub lost: u64,
    /// The device's address at the end.
    pub address: Option<std::net::Ipv6Addr>,
}

impl ModemSummary {
    /// What `cellular` counted.
    pub fn of(cellular: &Cellular) -> ModemSummary {
        let e = cellular.modem.stats();
        let c = cellular.carrier.stats();
        ModemSummary {
            commands: e.commands,
            errors: e.errors,
            uplinks: e.uplinks,
            downlinks: e.downlinks,
            unreachable: e.unreachable,
            sleeps: e.sleeps,
            readdressed: e.readdressed,
            lost: c.lost_up + c.lost_down,
            address: cellular.modem.address(),
        }
    }
}
