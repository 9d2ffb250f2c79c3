//! What a run simulates: a [`Scenario`] of fleets, the edge and broker they meet, and timed
//! faults — read from a TOML file (`v6iot-sim run --scenario FILE.toml`, [`file`]) or built
//! from the command line's flags (one fleet). [`check`] refuses impossible settings before
//! anything starts.
//!
//! Example files ship in `simulator/scenarios/`; `simulator/scenarios/README.md` documents every
//! key.

pub mod check;
pub mod file;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use v6iot_credentials::Ipv6Prefix;
use v6iot_sdk::uplink::Binding;

pub use check::{CheckError, Partition, PartitionError};
pub use file::ScenarioError;

/// A whole run: fleets, where they send, how long, and what goes wrong when.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Seeds every random choice (start offsets, report phases, message IDs, link losses).
    pub seed: u64,
    /// How long the devices make reports.
    pub duration: Duration,
    /// After the reporting period: how long devices go on sending what they queued and the
    /// broker delivering it, at most (a run ends earlier once every report is accounted for).
    pub drain: Duration,
    /// After the devices stopped (every report resolved, or the drain's end): how long the
    /// collector goes on waiting for the reports the edge acknowledged to reach the broker, at
    /// most (it ends as soon as every acknowledged report was delivered). What has not arrived
    /// by then counts as lost.
    pub settle: Duration,
    /// Threads that drive the devices.
    pub threads: u16,
    /// The edge router.
    pub edge: EdgeSpec,
    /// The MQTT broker the edge publishes to (the simulator subscribes there).
    pub broker: BrokerSpec,
    /// The fleets, in order (device ids and addresses follow this order).
    pub fleets: Vec<FleetSpec>,
    /// Timed faults, by time.
    pub faults: Vec<Fault>,
}

/// A process the simulator starts itself, so that faults can kill and restart it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// Program and arguments.
    pub command: Vec<String>,
    /// How long it may take to be ready (the edge answering CoAP, the broker accepting TCP).
    pub ready_within: Duration,
}

/// The edge router the fleets talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Its CoAP address.
    pub address: SocketAddr,
    /// Started (and, for faults, killed and restarted) by the simulator.
    pub managed: Option<Managed>,
}

/// The broker the edge publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    /// `mqtt://host:port`.
    pub url: String,
    /// Topic prefix.
    pub prefix: String,
    /// The edge's site.
    pub site: String,
    /// A persistent session (clean session off, a fixed client id): the broker keeps the
    /// collector's undelivered messages while it reconnects, and across a broker restart when
    /// the broker persists sessions. Default: on when a fault restarts the broker.
    pub persistent_session: bool,
    /// Started (and, for faults, stopped and restarted) by the simulator.
    pub managed: Option<Managed>,
}

/// How a fleet's devices reach the edge. More transports plug in here (each with its own
/// link I/O under the shard driver).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Transport {
    /// CoAP over UDP/IPv6 (or IPv4), the device's core on a socket.
    Udp,
    /// Each device the SDK's NB-IoT device on an emulated modem behind the carrier model (PSM,
    /// coverage classes, re-addressing after sleeps), CoAP over the carrier's UDP; needs
    /// [`Sources::Pool`] (every device at a carrier address of its own).
    Nbiot(Box<crate::nbiot::fleet::NbiotPlan>),
    /// Each device the SDK's 6LoWPAN device on a simulated 802.15.4 medium (in this process,
    /// one ZEP socket for the fleet) with the edge's border router as the medium's peer; CoAP to
    /// the router's global address. Needs [`Sources::Pool`] with the router's /64 (device `n` at
    /// interface id `offset + n + 1`, its extended address set from it).
    Lowpan(Box<crate::lowpan::LowpanPlan>),
}

impl Transport {
    /// The name in scenario files and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Nbiot(_) => "nbiot",
            Transport::Lowpan(_) => "lowpan",
        }
    }
}

/// Where a fleet's devices send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// A UDP socket per device on the host's address (the edge tells devices apart by port).
    Sockets,
    /// Device `n` at interface id `offset + n + 1` of `prefix`, one socket per shard thread
    /// (shared/DESIGN.md §4: the prefix routed to loopback in a network namespace of its own).
    Pool {
        /// The prefix (its first /64 when shorter).
        prefix: Ipv6Prefix,
        /// Interface ids before this fleet's first device (other fleets in the same prefix).
        offset: u64,
    },
}

impl Sources {
    /// The /64 network of a pool.
    pub fn network(&self) -> Option<Ipv6Addr> {
        match self {
            Sources::Sockets => None,
            Sources::Pool { prefix, .. } => Some(prefix.network()),
        }
    }
}

/// How often a fleet reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Reports per second over the whole fleet.
    Rate(f64),
    /// Each device's time between reports.
    Interval(Duration),
}

/// How reports are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SenML-CBOR (content format 112).
    Cbor,
    /// SenML-JSON (content format 110).
    Json,
}

/// What a report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// SenML records per report: measurements plus the `seq` record (at least 2).
    pub records: u8,
    /// Encoding.
    pub format: Format,
    /// Bytes of an extra string record (`vs`), to make reports larger; 0 for none.
    pub pad: usize,
}

impl Default for Payload {
    fn default() -> Self {
        Payload {
            records: 2,
            format: Format::Cbor,
            pad: 0,
        }
    }
}

/// A fleet's OSCORE credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OscoreSpec {
    /// The credentials CSV (`v6iot-sim provision`'s output).
    pub credentials: PathBuf,
    /// The fleet's OSCORE state file (default: next to the CSV, `CSV.seq`).
    pub state: PathBuf,
}

/// A link model: what the network between device and edge does to datagrams, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkSpec {
    /// Probability that a datagram is lost (0 ≤ loss < 1).
    pub loss: f64,
    /// One-way delay.
    pub latency: Duration,
    /// Extra one-way delay, uniform in 0..jitter.
    pub jitter: Duration,
    /// Bits per second a device's link carries (0: unlimited); adds each datagram's
    /// serialisation time to its delay.
    pub bandwidth_bps: u64,
}

impl LinkSpec {
    /// True when the link does nothing to datagrams (no loss, no delay).
    pub fn is_ideal(&self) -> bool {
        self.loss == 0.0
            && self.latency.is_zero()
            && self.jitter.is_zero()
            && self.bandwidth_bps == 0
    }
}

/// One fleet: devices alike but for their identity, address and timing.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// Its name in reports.
    pub name: String,
    /// How many devices.
    pub devices: u64,
    /// How they reach the edge.
    pub transport: Transport,
    /// Where they send from.
    pub sources: Sources,
    /// Device ids are `{id_prefix}{serial:06}`.
    pub id_prefix: String,
    /// The serial of device 0 (device n has serial `first + n`).
    pub first: u64,
    /// How often they report.
    pub load: Load,
    /// What a report holds.
    pub payload: Payload,
    /// OSCORE, or plain CoAP (the edge in lab mode).
    pub oscore: Option<OscoreSpec>,
    /// Start times spread over this long (uniform, jittered; 0: every device at once, a
    /// registration storm).
    pub ramp: Duration,
    /// Registration binding (`UQ`: queue mode).
    pub binding: Binding,
    /// Reports a device keeps while the edge is away or busy; more are dropped (and counted).
    pub queue: usize,
    /// The link model.
    pub link: LinkSpec,
}

impl FleetSpec {
    /// A fleet of `devices` plain UDP devices named `{id_prefix}{n:06}` reporting `rate` per
    /// second in total: the defaults of every other setting.
    pub fn new(name: &str, devices: u64, rate: f64) -> FleetSpec {
        FleetSpec {
            name: name.to_owned(),
            devices,
            transport: Transport::Udp,
            sources: Sources::Sockets,
            id_prefix: "sim".to_owned(),
            first: 0,
            load: Load::Rate(rate),
            payload: Payload::default(),
            oscore: None,
            ramp: Duration::ZERO,
            binding: Binding::U,
            queue: DEFAULT_QUEUE,
            link: LinkSpec::default(),
        }
    }

    /// Each device's time between reports (`None`: the fleet does not report).
    pub fn interval(&self) -> Option<Duration> {
        match self.load {
            Load::Interval(d) if !d.is_zero() => Some(d),
            Load::Interval(_) => None,
            Load::Rate(r) if r > 0.0 && self.devices > 0 => {
                Duration::try_from_secs_f64(self.devices as f64 / r).ok()
            }
            Load::Rate(_) => None,
        }
    }

    /// Reports per second over the fleet.
    pub fn rate(&self) -> f64 {
        match self.interval() {
            Some(i) => self.devices as f64 / i.as_secs_f64(),
            None => 0.0,
        }
    }

    /// The id of device `n`.
    pub fn device_id(&self, n: u64) -> String {
        format!("{}{:06}", self.id_prefix, self.first + n)
    }
}

/// Reports a device keeps by default.
pub const DEFAULT_QUEUE: usize = 1024;

/// What goes wrong, and when (from the start of the run).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// When.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
}

/// The faults a scenario can inject.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// `kill -9` of the (managed) edge; started again after `down`.
    EdgeKill {
        /// How long it stays down.
        down: Duration,
    },
    /// SIGTERM to the (managed) edge, which stops gracefully; started again after `down`.
    EdgeRestart {
        /// How long it stays down.
        down: Duration,
    },
    /// The (managed) broker stopped (SIGTERM) for `down`, then started again (a restart when
    /// `down` is 0).
    BrokerOutage {
        /// How long it stays down.
        down: Duration,
    },
    /// For `length`, datagrams of `fleet` (every fleet when `None`) are lost with probability
    /// `loss`, both ways.
    LinkLoss {
        /// How long.
        length: Duration,
        /// Probability of loss meanwhile (0..=1).
        loss: f64,
        /// Which fleet (by name).
        fleet: Option<String>,
    },
}

impl FaultKind {
    /// The name in scenario files and reports.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::EdgeKill { .. } => "edge_kill",
            FaultKind::EdgeRestart { .. } => "edge_restart",
            FaultKind::BrokerOutage { down } if down.is_zero() => "broker_restart",
            FaultKind::BrokerOutage { .. } => "broker_outage",
            FaultKind::LinkLoss { .. } => "link_loss",
        }
    }

    /// How long the fault lasts (the time its target is down or lossy).
    pub fn length(&self) -> Duration {
        match self {
            FaultKind::EdgeKill { down }
            | FaultKind::EdgeRestart { down }
            | FaultKind::BrokerOutage { down } => *down,
            FaultKind::LinkLoss { length, .. } => *length,
        }
    }
}

impl Scenario {
    /// A scenario of one fleet against the edge at `edge` and the broker at `mqtt_url`: what
    /// `v6iot-sim run` builds from its flags.
    pub fn single(fleet: FleetSpec, edge: SocketAddr, mqtt_url: &str) -> Scenario {
        Scenario {
            name: fleet.name.clone(),
            seed: DEFAULT_SEED,
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            settle: DEFAULT_SETTLE,
            threads: 1,
            edge: EdgeSpec {
                address: edge,
                managed: None,
            },
            broker: BrokerSpec {
                url: mqtt_url.to_owned(),
                prefix: "v6iot".to_owned(),
                site: "site".to_owned(),
                persistent_session: false,
                managed: None,
            },
            fleets: vec![fleet],
            faults: Vec::new(),
        }
    }

    /// Devices over all fleets.
    pub fn devices(&self) -> u64 {
        self.fleets.iter().map(|f| f.devices).sum()
    }

    /// The index of the fleet named `name`.
    pub fn fleet_index(&self, name: &str) -> Option<usize> {
        self.fleets.iter().position(|f| f.name == name)
    }
}

/// The seed when none is given.
pub const DEFAULT_SEED: u64 = 1;

/// How long the collector waits at most, after the devices stopped, for acknowledged reports
/// to be delivered ([`Scenario::settle`]; the scenario key `settle`, `--settle`).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);
