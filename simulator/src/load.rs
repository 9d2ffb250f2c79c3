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
use crate::shard::{self, Member};
use crate::subscriber::Subscription;

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
    let (mut contexts, shared_marks) = match &oscore {
        Some(o) => {
            let (c, m) = fleet_contexts(&plan, o)?;
            (c.into_iter().map(Some).collect::<Vec<_>>(), Some(m))
        }
        None => (Vec::new(), None),
    };
    contexts.reverse();
    let deliveries = Arc::new(Mutex::new(Deliveries::new()?));
    let collector = start_collector(&view, deliveries.clone()).await?;
    let tree = fleet::tree()?;
    let counters = Arc::new(FleetCounters::default());
    let clock = WallClock::now();
    let start = Instant::now();
    let stop_devices = start + plan.duration + drain;
    let shards = shards.clamp(1, plan.devices.max(1));
    let mut groups: Vec<Vec<Member<FleetSensor>>> = (0..shards).map(|_| Vec::new()).collect();
    for n in 0..plan.devices {
        let ctx = contexts.pop().flatten();
        let store: Box<dyn MarkStore + Send> = match &shared_marks {
            Some(shared) => Box::new(FleetMarkStore {
                shared: shared.clone(),
                id: fleet::device_id(&plan, n),
            }),
            None => Box::new(NoStore),
        };
        let device = fleet::device(&plan, n, start, tree.clone(), counters.clone(), clock, ctx);
        if let Some(g) = groups.get_mut(n % shards) {
            g.push(Member::new(device, store));
        }
    }
    let mut threads = Vec::with_capacity(shards);
    for (k, members) in groups.into_iter().enumerate() {
        let n = members.len();
        let name = format!("v6iot-sim-shard-{k}");
        let handle = match sources {
            Sources::Sockets => {
                spawn_shard(name, members, device_sockets(n, plan.edge)?, stop_devices)
            }
            Sources::Pool(network) => {
                // shard k's devices are k, k + shards, …: interface ids k + 1, k + 1 + shards, …
                let pool = AddressPool::bind(network, 0, k as u64 + 1, shards as u64, n)
                    .with_context(|| format!("a socket for the devices in {network}/64"))?;
                spawn_shard(name, members, pool, stop_devices)
            }
        }?;
        threads.push(handle);
    }

    let expected = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(expected.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} reports  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
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
    let mut registered = 0;
    let mut total = ReportStats::default();
    let mut unsent = 0;
    let mut oscore_total = OscoreStats::default();
    for result in joined {
        let (members, stats) = result
            .map_err(|_| anyhow::anyhow!("a shard thread panicked"))?
            .context("a shard's event loop failed")?;
        tracing::debug!(?stats, "shard finished");
        for m in &members {
            let device = &m.device;
            if device.registration().is_some_and(|r| r.registrations() > 0) {
                registered += 1;
            }
            if let Some(r) = device.reporter() {
                fleet::add_stats(&mut total, r.stats());
                unsent += r.queued() as u64;
            }
            if let Some(o) = device.endpoint().oscore_stats() {
                oscore_total.responses_verified += o.responses_verified;
                oscore_total.responses_rejected += o.responses_rejected;
                oscore_total.requests_rejected += o.requests_rejected;
                oscore_total.held += o.held;
            }
        }
    }
    let oscore_report = shared_marks.as_ref().map(|m| OscoreReport {
        responses_verified: oscore_total.responses_verified,
        responses_rejected: oscore_total.responses_rejected,
        requests_rejected: oscore_total.requests_rejected,
        held: oscore_total.held,
        mark_writes: m.lock().map(|m| m.writes()).unwrap_or(0),
    });
    // Give the broker path time to deliver everything acknowledged.
    let wait_until = Instant::now() + drain;
    while Instant::now() < wait_until {
        if deliveries
            .lock()
            .map(|d| d.delivered() >= total.acked)
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
    let d = deliveries
        .lock()
        .map_err(|_| anyhow::anyhow!("collector state poisoned"))?;
    let duration_s = plan.duration.as_secs_f64();
    Ok(RunReport {
        devices: plan.devices,
        registered,
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
        unsent,
        oscore: oscore_report,
    })
}

/// The members' results, once the shard's thread has run them until `stop`.
type ShardThread =
    std::thread::JoinHandle<std::io::Result<(Vec<Member<FleetSensor>>, shard::ShardStats)>>;

/// Runs `members` over `link` on a thread of their own named `name`.
fn spawn_shard<L: Link + Send + 'static>(
    name: String,
    members: Vec<Member<FleetSensor>>,
    mut link: L,
    stop: Instant,
) -> anyhow::Result<ShardThread> {
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
