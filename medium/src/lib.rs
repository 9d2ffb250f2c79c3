//! `v6iot-medium`: the simulated IEEE 802.15.4 medium (issue 11 point 5), the air between 6LoWPAN
//! devices and border routers. The simulator serves it (`v6iot-sim medium`, re-exported as
//! `v6iot_simulator::medium`); tests of a border router can run it in process.
//!
//! # Layers and the I/O boundary
//!
//! | module | job | I/O |
//! |---|---|---|
//! | [`core`] | [`Medium`]: participants on channels, who takes which frame, per-link loss and latency ([`topology`]), deliveries and captures, on virtual time; with the airtime model on, each radio's CSMA/CA, transmissions at 250 kbit/s, collisions at receivers, ACKs and retries | none |
//! | [`topology`] | who hears whom: per-link delivery probability and latency by link-layer address | none |
//! | [`phy`] | the 2.4 GHz O-QPSK PHY and the CSMA/CA MAC in numbers | none |
//! | [`stats`] | counters, drops by cause, load per channel in windows | none |
//! | [`rng`] | the seeded generator every draw comes from | none |
//! | [`hub`] | [`Hub`]: the medium over ZEP v2 — participants learned from datagrams' source addresses (bounded), frames in and out as ZEP | none |
//! | [`driver`] | one UDP socket, the wall clock, the pcap capture; [`serve`] is `v6iot-sim medium` | UDP, file |
//!
//! Every core takes time as an argument and draws its randomness from the configured seed:
//! the same inputs at the same instants give the same outputs.

pub mod core;
pub mod driver;
pub mod hub;
pub mod phy;
pub mod rng;
pub mod stats;
pub mod topology;

#[cfg(test)]
mod air_tests;
#[cfg(test)]
mod tests;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use v6iot_sdk::time::Instant;

pub use self::core::{Medium, MediumConfig};
use self::driver::{Capture, DriverStats};
use self::hub::HubStats;
pub use self::hub::{Hub, HubConfig};
use self::phy::AirtimeConfig;
use self::stats::{ChannelLoad, MediumStats};
use self::topology::{LinkModel, Topology};

/// What `v6iot-sim medium` runs with.
#[derive(Debug, Clone)]
pub struct MediumOptions {
    /// Write a pcap (link type 195) of every frame on air here.
    pub pcap: Option<PathBuf>,
    /// Peers to add before anything arrives (they never expire).
    pub peers: Vec<SocketAddr>,
    /// The channel of those peers.
    pub peer_channel: u8,
    /// The link between any two participants.
    pub link: LinkModel,
    /// The seed of the medium's random draws.
    pub seed: u64,
    /// The most remote participants at once.
    pub max_participants: usize,
    /// The airtime model (CSMA/CA, collisions, ACKs, retries), or `None` for the ideal medium.
    pub airtime: Option<AirtimeConfig>,
}

/// What a medium did, as `v6iot-sim medium` prints it when it stops.
#[derive(Debug, Clone, Serialize)]
pub struct MediumSummary {
    /// Where it listened.
    pub listen: SocketAddr,
    /// The ZEP side.
    pub hub: HubStats,
    /// The medium.
    pub medium: MediumStats,
    /// Each channel's load.
    pub channels: Vec<ChannelLoad>,
    /// The socket and the capture.
    pub driver: DriverStats,
}

/// Runs a ZEP medium on `socket` until `stop` is set; what it did.
pub fn serve(
    options: &MediumOptions,
    socket: &UdpSocket,
    stop: &AtomicBool,
) -> anyhow::Result<MediumSummary> {
    let listen = socket.local_addr()?;
    let unix_at_zero = driver::unix_at_zero();
    let medium = Medium::new(MediumConfig {
        seed: options.seed,
        topology: Topology::flat(options.link),
        capture: options.pcap.is_some(),
        airtime: options.airtime,
        ..MediumConfig::default()
    });
    let mut hub = Hub::new(
        medium,
        HubConfig {
            max_remote: options.max_participants,
            unix_at_zero,
            ..HubConfig::default()
        },
    );
    for &peer in &options.peers {
        hub.add_peer(Instant::now(), peer, options.peer_channel)
            .with_context(|| format!("add peer {peer}"))?;
    }
    let mut capture = match &options.pcap {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            Some(Capture::new(std::io::BufWriter::new(file), unix_at_zero)?)
        }
        None => None,
    };
    let driver = driver::run(&mut hub, socket, capture.as_mut(), stop)?;
    Ok(MediumSummary {
        listen,
        hub: hub.stats(),
        medium: hub.medium().stats(),
        channels: hub.medium().channel_loads(),
        driver,
    })
}

/// A link model from the command line's loss probability and latency.
#[must_use]
pub fn link_model(loss: f64, latency: Duration) -> LinkModel {
    LinkModel {
        delivery: (1.0 - loss).clamp(0.0, 1.0),
        latency,
    }
}
