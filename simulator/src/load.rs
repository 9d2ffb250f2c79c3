//! `v6iot-sim run`: drives a fleet at an edge router and counts what reaches the broker.
//! This is the simulator's I/O layer: sockets, the MQTT subscriber, timers, the progress bar.
//!
//! The edge sees each device at a source address of its own: by default each device has its own
//! UDP socket (its own port) on the edge's address family; with [`Sources::Pool`] each device
//! has its own IPv6 address in a /64 and a shard's devices share one socket (shared/DESIGN.md
//! §4, [`crate::link::AddressPool`]). The devices are spread over a few shard threads
//! ([`crate::shard`]); the MQTT subscriber has a thread of its own ([`crate::subscriber`]); the
//! progress bar runs on the tokio runtime.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use v6iot_sdk::coap::OscoreStats;
use v6iot_sdk::oscore::SecurityContext;
use v6iot_sdk::store::{MarkStore, NoStore};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::ReportStats;

use crate::collector::Deliveries;
use crate::credentials::{self, Credentials};
use crate::fleet::{self, FleetCounters, FleetPlan, FleetSensor, WallClock};
use crate::fleet_marks::{FleetMarkStore, FleetMarks};
use crate::link::{AddressPool, Link, Sockets};
use crate::nbiot::fleet::{self as nbiot_fleet, CommandReport, NbiotPlan};
use crate::nbiot::node::NbiotNode;
use crate::shard::{self, Member, Node};
use crate::subscriber::Subscription;
use v6iot_sdk::coap::Device;

/// The distance between a fleet device's persisted sequence-number marks: large, so the shared
/// state file is written at start and then hardly ever (a restart skips at most 1.5 × this many
/// numbers of 2^40 per device).
pub const FLEET_PERSIST_STEP: u64 = 1 << 16;

/// OSCORE for a fleet: every device's credentials and the file of their sequence-number marks.
#[derive(Debug)]
pub struct FleetOscore {
    /// The credentials CSV, parsed.
    pub credentials: Credentials,
    /// The fleet's mark state file.
    pub marks: PathBuf,
}

/// Where a fleet's devices send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// A UDP socket per device, connected to the edge, on the host's address (loopback for a
    /// loopback edge): the edge tells devices apart by their port.
    Sockets,
    /// Device `n` at `network + n + 1` (in the /64 of `network`), one socket per shard thread.
    /// Needs the /64 routed to this host, in a network namespace of its own:
    /// `ip -6 route add local NETWORK/64 dev lo` (shared/DESIGN.md §4).
    Pool(Ipv6Addr),
}

/// Where the collector listens.
#[derive(Debug, Clone)]
pub struct BrokerView {
    /// `mqtt://host:port`.
    pub url: String,
    /// Topic prefix.
    pub prefix: String,
    /// Site.
    pub site: String,
}

/// The JSON report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Devices simulated.
    pub devices: usize,
    /// Devices that registered at least once.
    pub registered: usize,
    /// Records devices tried to send.
    pub sent: u64,
    /// Records the edge acknowledged with 2.xx.
    pub acked: u64,
    /// Refusals: 4.xx answers and 5.03 back-pressure answers.
    pub rejected: u64,
    /// Distinct records seen at the broker.
    pub delivered: u64,
    /// Acknowledged but never delivered after the drain period (must be 0).
    pub lost: u64,
    /// Deliveries of a record already seen.
    pub duplicates: u64,
    /// Delivered records per second over the reporting period.
    pub throughput_per_s: f64,
    /// End-to-end latency, device to broker subscriber.
    pub latency_ms: Latency,
    /// Length of the reporting period, seconds.
    pub duration_s: f64,
    /// Requests that timed out at the devices (they retry).
    pub timeouts: u64,
    /// Reports still queued at the devices when the run ended.
    pub unsent: u64,
    /// With `--credentials`: the OSCORE counters over the fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oscore: Option<OscoreReport>,
    /// With `--transport nbiot`: sleeps, wake-ups, moves, the carrier, the commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbiot: Option<NbiotReport>,
}

/// OSCORE figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct OscoreReport {
    /// Responses that verified.
    pub responses_verified: u64,
    /// Responses that failed verification (dropped; the request retried).
    pub responses_rejected: u64,
    /// Requests from the edge that failed verification.
    pub requests_rejected: u64,
    /// Messages that waited for a sequence-number mark.
    pub held: u64,
    /// Writes of the fleet's mark state file (one at start, then only when a device needs a
    /// new mark).
    pub mark_writes: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Splits `mqtt://host:port` into host and port (brackets removed from IPv6 literals).
pub fn mqtt_host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .context("the collector's --mqtt-url must be mqtt://host:port")?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            (h, p.parse::<u16>().context("bad port in --mqtt-url")?)
        }
        _ => (rest, 1883),
    };
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Subscribes to the fleet's telemetry on its own thread ([`crate::subscriber`]); returns once
/// the subscription is acknowledged.
async fn start_collector(
    view: &BrokerView,
    deliveries: Arc<Mutex<Deliveries>>,
) -> anyhow::Result<Subscription> {
    let (host, port) = mqtt_host_port(&view.url)?;
    let filter = format!("{}/{}/+/telemetry", view.prefix, view.site);
    let url = view.url.clone();
    tokio::task::spawn_blocking(move || Subscription::start(&host, port, &filter, deliveries))
        .await?
        .with_context(|| format!("collector at {url}"))
}

/// Runs a fleet per `plan` against the edge, counting deliveries at the broker.
pub async fn run(
    plan: FleetPlan,
    view: BrokerView,
    drain: Duration,
    progress: bool,
) -> anyhow::Result<RunReport> {
    run_with(plan, view, drain, progress, None).await
}

/// Builds every device's security context, persisting each device's next mark in one write
/// of the fleet's state file before any of them sends.
fn fleet_contexts(
    plan: &FleetPlan,
    oscore: &FleetOscore,
) -> anyhow::Result<(Vec<SecurityContext>, Arc<Mutex<FleetMarks>>)> {
    let mut marks = FleetMarks::load(&oscore.marks)?;
    let mut contexts = Vec::with_capacity(plan.devices);
    let mut next = Vec::with_capacity(plan.devices);
    for n in 0..plan.devices {
        let id = fleet::device_id(plan, n);
        let record = oscore.credentials.get(&id).with_context(|| {
            format!(
                "device `{id}` is not in the credentials CSV ({} devices; provision at least --devices {})",
                oscore.credentials.len(),
                plan.devices
            )
        })?;
        let stored = marks.state(&id);
        let ctx = credentials::device_context(record, stored, FLEET_PERSIST_STEP)?;
        let mark = ctx
            .mark_to_persist()
            .context("a device's sequence numbers are exhausted")?;
        next.push((id, mark));
        contexts.push(ctx);
    }
    marks
        .set_all(next.iter().cloned())
        .with_context(|| format!("write {}", oscore.marks.display()))?;
    for (ctx, (_, mark)) in contexts.iter_mut().zip(&next) {
        ctx.persisted(*mark);
    }
    Ok((contexts, Arc::new(Mutex::new(marks))))
}

/// As [`run`]; with `oscore` every device protects its traffic with its own credentials.
pub async fn run_with(
    plan: FleetPlan,
    view: BrokerView,
    drain: Duration,
    progress: bool,
    oscore: Option<FleetOscore>,
) -> anyhow::Result<RunReport> {
    run_sharded(
        plan,
        view,
        drain,
        progress,
        oscore,
        usize::from(DEFAULT_SHARDS),
        Sources::Sockets,
    )
    .await
}

/// Shard threads of a fleet unless told otherwise: one thread drives tens of thousands of
/// records per second, and a single `epoll` set batches the most wake-ups.
pub const DEFAULT_SHARDS: u16 = 1;

/// How a fleet's devices reach the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Each device's CoAP core on UDP directly.
    Udp,
    /// Each device on an emulated NB-IoT modem and carrier (needs [`Sources::Pool`]: every
    /// device at a carrier address of its own).
    Nbiot(NbiotPlan),
}

/// How a run is carried out (besides the fleet's plan and the broker).
#[derive(Debug)]
pub struct RunSettings {
    /// How long to wait for stragglers after the reporting period.
    pub drain: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// OSCORE credentials, if the devices speak OSCORE.
    pub oscore: Option<FleetOscore>,
    /// Shard threads (at least one, at most one per device).
    pub shards: usize,
    /// Where the devices send from.
    pub sources: Sources,
    /// UDP or NB-IoT.
    pub transport: Transport,
}

/// As [`run_with`], with the devices spread over `shards` threads (at least one, at most one
/// per device), sending from `sources`.
pub async fn run_sharded(
    plan: FleetPlan,
    view: BrokerView,
    drain: Duration,
    progress: bool,
    oscore: Option<FleetOscore>,
    shards: usize,
    sources: Sources,
) -> anyhow::Result<RunReport> {
    let settings = RunSettings {
        drain,
        progress,
        oscore,
        shards,
        sources,
        transport: Transport::Udp,
    };
    run_with_settings(plan, view, settings).await
}

/// Runs a fleet per `plan` and `settings` against the edge, counting deliveries at the broker
/// (and, for an NB-IoT fleet with commands, what became of the commands).
pub async fn run_with_settings(
    plan: FleetPlan,
    view: BrokerView,
    settings: RunSettings,
) -> anyhow::Result<RunReport> {
    let shared = fleet::Shared {
        tree: fleet::tree()?,
        counters: Arc::new(FleetCounters::default()),
        clock: WallClock::now(),
        coap: v6iot_sdk::coap::Config::default(),
    };
    match settings.transport.clone() {
        Transport::Udp => {
            let p = plan.clone();
            let make =
                move |n: usize, start: Instant, ctx: Option<SecurityContext>, s: &fleet::Shared| {
                    fleet::device_with(&p, n, start, s, ctx)
                };
            run_fleet(plan, view, settings, shared, make).await
        }
        Transport::Nbiot(nbiot) => {
            if !matches!(settings.sources, Sources::Pool(_)) {
                anyhow::bail!(
                    "an NB-IoT fleet needs --source-prefix: every device at a carrier address of its own"
                );
            }
            let modem = nbiot.modem_config()?;
            let p = plan.clone();
            let n_plan = nbiot.clone();
            let make =
                move |n: usize, start: Instant, ctx: Option<SecurityContext>, s: &fleet::Shared| {
                    let shared_n = fleet::Shared {
                        coap: n_plan.coap_config(n),
                        ..s.clone()
                    };
                    let core = fleet::device_with(&p, n, start, &shared_n, ctx);
                    nbiot_fleet::node(&n_plan, &modem, n, start, core)
                };
            run_fleet(plan, view, settings, shared, make).await
        }
    }
}

/// A fleet member as the run's report reads it.
pub trait FleetNode: Node + Send + 'static {
    /// Its CoAP core.
    fn core(&self) -> &Device<FleetSensor>;
    /// Adds its NB-IoT figures (none for a UDP device).
    fn add_nbiot(&self, _totals: &mut NbiotReport) {}
}

impl FleetNode for Device<FleetSensor> {
    fn core(&self) -> &Device<FleetSensor> {
        self
    }
}

impl FleetNode for NbiotNode<FleetSensor> {
    fn core(&self) -> &Device<FleetSensor> {
        self.device.device()
    }

    fn add_nbiot(&self, t: &mut NbiotReport) {
        let e = self.cellular.modem.stats();
        t.sleeps += e.sleeps;
        t.tau_wakes += e.tau_wakes;
        t.readdressed += e.readdressed;
        t.downlinks += e.downlinks;
        t.unreachable += e.unreachable;
        let c = self.cellular.carrier.stats();
        t.lost += c.lost_up + c.lost_down;
        let m = self.device.modem().stats();
        t.modem_send_failures += m.send_failures;
        t.modem_timeouts += self.device.modem().client_stats().timeouts;
        if self.device.modem().is_ready() {
            t.attached += 1;
        }
    }
}

/// The NB-IoT figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NbiotReport {
    /// Devices attached (modem ready) at the end.
    pub attached: u64,
    /// Times the modems entered PSM.
    pub sleeps: u64,
    /// Wake-ups for the periodic TAU.
    pub tau_wakes: u64,
    /// Addresses changed on wake-up (each a move the edge verified and audited).
    pub readdressed: u64,
    /// Datagrams handed to the devices.
    pub downlinks: u64,
    /// Datagrams for devices in PSM, which the network could not deliver.
    pub unreachable: u64,
    /// Datagrams the carrier lost (both directions).
    pub lost: u64,
    /// `AT+NSOST`s that failed (the CoAP layer retransmits).
    pub modem_send_failures: u64,
    /// AT commands that timed out.
    pub modem_timeouts: u64,
    /// What became of the platform's commands, if any were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandReport>,
}

/// Builds the fleet's members with `make`, runs them on shard threads, collects the report.
async fn run_fleet<N: FleetNode>(
    plan: FleetPlan,
    view: BrokerView,
    settings: RunSettings,
    shared: fleet::Shared,
    make: impl Fn(usize, Instant, Option<SecurityContext>, &fleet::Shared) -> N,
) -> anyhow::Result<RunReport> {
    let (mut contexts, shared_marks) = match &settings.oscore {
        Some(o) => {
            let (c, m) = fleet_contexts(&plan, o)?;
            (c.into_iter().map(Some).collect::<Vec<_>>(), Some(m))
        }
        None => (Vec::new(), None),
    };
    contexts.reverse();
    let deliveries = Arc::new(Mutex::new(Deliveries::new()?));
    let collector = start_collector(&view, deliveries.clone()).await?;
    let counters = shared.counters.clone();
    let start = Instant::now();
    let stop_devices = start + plan.duration + settings.drain;
    let shards = settings.shards.clamp(1, plan.devices.max(1));
    let mut groups: Vec<Vec<Member<N>>> = (0..shards).map(|_| Vec::new()).collect();
    for n in 0..plan.devices {
        let ctx = contexts.pop().flatten();
        let store: Box<dyn MarkStore + Send> = match &shared_marks {
            Some(m) => Box::new(FleetMarkStore {
                shared: m.clone(),
                id: fleet::device_id(&plan, n),
            }),
            None => Box::new(NoStore),
        };
        if let Some(g) = groups.get_mut(n % shards) {
            g.push(Member::new(make(n, start, ctx, &shared), store));
        }
    }
    let threads = spawn_shards(&plan, groups, settings.sources, stop_devices)?;
    let commands = match &settings.transport {
        Transport::Nbiot(NbiotPlan {
            commands: Some(c), ..
        }) => {
            let ids = (0..plan.devices)
                .map(|n| fleet::device_id(&plan, n))
                .collect();
            Some(tokio::spawn(nbiot_fleet::run_commands(
                view.clone(),
                *c,
                ids,
                start,
                stop_devices,
            )))
        }
        _ => None,
    };
    let expected = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let bar = settings.progress.then(|| progress_bar(expected));
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    // Progress while the fleet reports.
    while Instant::now() < start + plan.duration {
        ticker.tick().await;
        if let Some(bar) = &bar {
            let made = counters.made.load(Ordering::Relaxed);
            let delivered = deliveries.lock().map(|d| d.delivered()).unwrap_or(0);
            bar.set_position(made.min(expected));
            bar.set_message(format!("delivered {delivered}"));
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    })
    .await?;
    let mut totals = Totals::default();
    for result in joined {
        let (members, stats) = result
            .map_err(|_| anyhow::anyhow!("a shard thread panicked"))?
            .context("a shard's event loop failed")?;
        tracing::debug!(?stats, "shard finished");
        totals.add(&members);
    }
    let oscore_report = shared_marks.as_ref().map(|m| OscoreReport {
        responses_verified: totals.oscore.responses_verified,
        responses_rejected: totals.oscore.responses_rejected,
        requests_rejected: totals.oscore.requests_rejected,
        held: totals.oscore.held,
        mark_writes: m.lock().map(|m| m.writes()).unwrap_or(0),
    });
    // Give the broker path time to deliver everything acknowledged.
    let wait_until = Instant::now() + settings.drain;
    while Instant::now() < wait_until {
        if deliveries
            .lock()
            .map(|d| d.delivered() >= totals.reports.acked)
            .unwrap_or(false)
        {
            break;
        }
        ticker.tick().await;
    }
    collector.stop();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(task) = commands {
        let mut report = task.await??;
        report.served = counters.commands.load(Ordering::Relaxed);
        totals.nbiot.commands = Some(report);
    }
    let d = deliveries
        .lock()
        .map_err(|_| anyhow::anyhow!("collector state poisoned"))?;
    let nbiot = matches!(settings.transport, Transport::Nbiot(_)).then_some(totals.nbiot.clone());
    Ok(report(&plan, &totals, &d, oscore_report, nbiot))
}

/// What the members counted, summed.
#[derive(Debug, Default)]
struct Totals {
    registered: usize,
    reports: ReportStats,
    unsent: u64,
    oscore: OscoreStats,
    nbiot: NbiotReport,
}

impl Totals {
    fn add<N: FleetNode>(&mut self, members: &[Member<N>]) {
        for m in members {
            let device = m.node.core();
            if device.registration().is_some_and(|r| r.registrations() > 0) {
                self.registered += 1;
            }
            if let Some(r) = device.reporter() {
                fleet::add_stats(&mut self.reports, r.stats());
                self.unsent += r.queued() as u64;
            }
            if let Some(o) = device.endpoint().oscore_stats() {
                self.oscore.responses_verified += o.responses_verified;
                self.oscore.responses_rejected += o.responses_rejected;
                self.oscore.requests_rejected += o.requests_rejected;
                self.oscore.held += o.held;
            }
            m.node.add_nbiot(&mut self.nbiot);
        }
    }
}

fn report(
    plan: &FleetPlan,
    totals: &Totals,
    d: &Deliveries,
    oscore: Option<OscoreReport>,
    nbiot: Option<NbiotReport>,
) -> RunReport {
    let total = &totals.reports;
    let duration_s = plan.duration.as_secs_f64();
    RunReport {
        devices: plan.devices,
        registered: totals.registered,
        sent: total.queued,
        acked: total.acked,
        rejected: total.rejected + total.busy,
        delivered: d.delivered(),
        lost: total.acked.saturating_sub(d.delivered()),
        duplicates: d.duplicates,
        throughput_per_s: if duration_s > 0.0 {
            d.delivered() as f64 / duration_s
        } else {
            0.0
        },
        latency_ms: Latency {
            p50: d.latency_ms(0.5),
            p90: d.latency_ms(0.9),
            p99: d.latency_ms(0.99),
            p999: d.latency_ms(0.999),
            max: d.latency_max_ms(),
        },
        duration_s,
        timeouts: total.timeouts,
        unsent: totals.unsent,
        oscore,
        nbiot,
    }
}

fn progress_bar(expected: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(expected.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} reports  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The members' results, once the shard's thread has run them until `stop`.
type ShardThread<N> = std::thread::JoinHandle<std::io::Result<(Vec<Member<N>>, shard::ShardStats)>>;

/// Runs each group on a shard thread of its own, over the links `sources` says.
fn spawn_shards<N: FleetNode>(
    plan: &FleetPlan,
    groups: Vec<Vec<Member<N>>>,
    sources: Sources,
    stop: Instant,
) -> anyhow::Result<Vec<ShardThread<N>>> {
    let shards = groups.len();
    let mut threads = Vec::with_capacity(shards);
    for (k, members) in groups.into_iter().enumerate() {
        let n = members.len();
        let name = format!("v6iot-sim-shard-{k}");
        let handle = match sources {
            Sources::Sockets => spawn_shard(name, members, device_sockets(n, plan.edge)?, stop),
            Sources::Pool(network) => {
                // shard k's devices are k, k + shards, …: interface ids k + 1, k + 1 + shards, …
                let pool = AddressPool::bind(network, 0, k as u64 + 1, shards as u64, n)
                    .with_context(|| format!("a socket for the devices in {network}/64"))?;
                spawn_shard(name, members, pool, stop)
            }
        }?;
        threads.push(handle);
    }
    Ok(threads)
}

/// Runs `members` over `link` on a thread of their own named `name`.
fn spawn_shard<N: FleetNode, L: Link + Send + 'static>(
    name: String,
    members: Vec<Member<N>>,
    mut link: L,
    stop: Instant,
) -> anyhow::Result<ShardThread<N>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || shard::run(members, &mut link, stop))
        .context("start a shard thread")
}

/// A socket per device, connected to `edge`, on the host's address of the edge's family
/// (loopback for a loopback edge).
fn device_sockets(devices: usize, edge: SocketAddr) -> anyhow::Result<Sockets> {
    let bind_ip: IpAddr = match edge.ip() {
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(ip),
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    let mut sockets = Vec::with_capacity(devices);
    for _ in 0..devices {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .context("bind a device socket (raise `ulimit -n` for large fleets)")?;
        // Connected to the edge: its sends skip the route lookup, and only the edge reaches it.
        socket
            .connect(edge)
            .with_context(|| format!("connect a device socket to {edge}"))?;
        sockets.push(socket);
    }
    Sockets::new(sockets).context("make the device sockets non-blocking")
}

/// Raises the open-file limit to its hard maximum (one socket per device needs many); returns
/// the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(devices: usize) -> FleetPlan {
        FleetPlan {
            edge: "[::1]:5683".parse().unwrap(),
            devices,
            rate: 1.0,
            duration: Duration::from_secs(1),
            id_prefix: "sim".into(),
            binding: v6iot_sdk::uplink::Binding::U,
        }
    }

    #[test]
    fn fleet_marks_are_written_once_at_start_and_restarts_continue_above_them() {
        let dir = std::env::temp_dir().join(format!("v6iot-fleet-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = format!("{}\n", v6iot_edge_router::registry_db::csv::HEADER);
        for n in 0..3 {
            csv.push_str(&format!(
                "sim{n:06},{:02x},000102030405060708090a0b0c0d0e0f,,1,\n",
                n + 1
            ));
        }
        let oscore = FleetOscore {
            credentials: Credentials::read(csv.as_bytes()).unwrap(),
            marks: dir.join("creds.csv.seq"),
        };
        let _ = std::fs::remove_file(&oscore.marks);
        let (contexts, marks) = fleet_contexts(&plan(3), &oscore).unwrap();
        assert_eq!(
            marks.lock().unwrap().writes(),
            1,
            "one write for the whole fleet"
        );
        for ctx in &contexts {
            assert_eq!(ctx.sequence().peek(), 0);
            assert_eq!(ctx.sequence().durable_mark(), FLEET_PERSIST_STEP);
            assert_eq!(ctx.mark_to_persist(), None, "no write due for a long while");
        }
        // A restart (however the last run ended) continues at the stored marks.
        let (again, _) = fleet_contexts(&plan(3), &oscore).unwrap();
        assert!(
            again
                .iter()
                .all(|c| c.sequence().peek() == FLEET_PERSIST_STEP)
        );
        // A fleet larger than the CSV is refused, naming the device.
        let e = fleet_contexts(&plan(4), &oscore).unwrap_err();
        assert!(format!("{e:#}").contains("sim000003"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_mqtt_urls() {
        assert_eq!(
            mqtt_host_port("mqtt://[::1]:1884").unwrap(),
            ("::1".to_owned(), 1884)
        );
        assert_eq!(
            mqtt_host_port("mqtt://localhost").unwrap(),
            ("localhost".to_owned(), 1883)
        );
        assert_eq!(
            mqtt_host_port("mqtt://127.0.0.1:1883/").unwrap(),
            ("127.0.0.1".to_owned(), 1883)
        );
        assert!(mqtt_host_port("http://x").is_err());
    }
}
