//! The NB-IoT options of `v6iot-sim run` (`--transport nbiot …`) and the [`NbiotPlan`] they make.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::carrier::{CarrierPlan, CoverageMix};
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
    /// `queue_listen_window_s` to it.
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
