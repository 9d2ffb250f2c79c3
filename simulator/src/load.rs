//! `v6iot-sim run`: a scenario's fleets against an edge router, counted at its broker. This is
//! the simulator's I/O layer: it starts the processes the scenario manages, subscribes at the
//! broker, runs the devices on shard threads, injects the faults at their times, shows progress,
//! and builds the report.
//!
//! The edge sees each device at a source address of its own: a UDP socket per device (its own
//! port), or an IPv6 address per device from a prefix with one socket per shard thread
//! (shared/DESIGN.md §4, [`crate::link::AddressPool`]). A run goes through three periods and
//! the report: devices power on (spread over their fleet's ramp) and report for the scenario's
//! `duration`; then, for at most `drain`, they go on sending what they queued, until every
//! report is resolved (acknowledged, refused or dropped); then the devices stop, and for at
//! most `settle` the collector waits for every report the edge acknowledged to reach the broker
//! (the edge may still hold some in its outbox, e.g. while the broker is away); then the
//! report, which counts only what had not arrived by then as lost.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use v6iot_sdk::oscore::SecurityContext;
use v6iot_sdk::radio::mac::LinkAddr;
use v6iot_sdk::time::Instant;

use crate::collector::Deliveries;
use crate::credentials;
use crate::faults::{self, Process, Readiness};
use crate::fleet::{FleetShared, WallClock};
use crate::fleet_marks::FleetMarks;
use crate::link::{AddressPool, Segment, Sockets};
use crate::linkmodel::LinkModel;
use crate::lowpan::air::MediumLink;
use crate::lowpan::{LowpanPlan, eui64_for};
use crate::nbiot::fleet::{self as nbiot_fleet, CommandReport, NbiotReport};
use crate::plan::Plan;
use crate::report::build::{self, RunFacts};
use crate::report::{FaultMark, Report};
use crate::scenario::check::{self, Host};
use crate::scenario::{FaultKind, Partition, Scenario, Sources, Transport};
use crate::shard::{self, MemberStore, Roster, ShardCore, ShardResult, Stop};
use crate::subscriber::{Session, Subscription};
use crate::timeline::Timeline;

/// The distance between a fleet device's persisted sequence-number marks: large, so the shared
/// state file is written at start and then hardly ever (a restart skips at most 1.5 × this many
/// numbers of 2^40 per device).
pub const FLEET_PERSIST_STEP: u64 = 1 << 16;

/// How a run is carried out (what is not the scenario).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which shard of the scenario this process runs.
    pub partition: Partition,
    /// A progress bar and a live line on standard error.
    pub progress: bool,
    /// Where managed processes' logs go (default: a new temporary directory).
    pub workdir: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            partition: Partition::WHOLE,
            progress: false,
            workdir: None,
        }
    }
}

/// Splits `mqtt://host:port` into host and port (brackets removed from IPv6 literals).
pub fn mqtt_host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .context("the collector's broker URL must be mqtt://host:port")?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            (h, p.parse::<u16>().context("bad port in the broker URL")?)
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

/// Raises the open-file limit to its hard maximum (one socket per device needs many); returns
/// the limit now in force.
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

/// Live figures one device thread publishes for the progress line (its totals so far).
#[derive(Debug, Default)]
pub struct Live {
    made: AtomicU64,
    acknowledged: AtomicU64,
    registered: AtomicU64,
    pending: AtomicU64,
}

impl Live {
    /// The thread's totals so far (about 4 times a second).
    fn store(&self, c: &crate::timeline::Counts, pending: i64) {
        self.made.store(c.made, Ordering::Relaxed);
        self.acknowledged.store(c.acknowledged, Ordering::Relaxed);
        self.registered.store(c.registered, Ordering::Relaxed);
        self.pending
            .store(u64::try_from(pending).unwrap_or(0), Ordering::Relaxed);
    }
}

/// The device threads' live figures added up: (made, acknowledged, registered, pending).
fn live_totals(live: &[Arc<Live>]) -> (u64, u64, u64, u64) {
    live.iter().fold((0, 0, 0, 0), |t, l| {
        (
            t.0 + l.made.load(Ordering::Relaxed),
            t.1 + l.acknowledged.load(Ordering::Relaxed),
            t.2 + l.registered.load(Ordering::Relaxed),
            t.3 + l.pending.load(Ordering::Relaxed),
        )
    })
}

/// Runs `scenario` (this process's shard of it) and returns its report.
pub async fn run(scenario: Scenario, options: RunOptions) -> anyhow::Result<Report> {
    let partition = options.partition;
    let host = Host {
        max_files: raise_fd_limit(),
    };
    check::check(&scenario, partition, host).map_err(|e| anyhow::anyhow!("{e}"))?;
    let workdir = match &options.workdir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("v6iot-sim-{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir).with_context(|| format!("create {}", workdir.display()))?;
    // Only the first shard runs the scenario's processes (the others load the same ones).
    let mut processes = if partition.index == 0 {
        start_processes(&scenario, &workdir)?
    } else {
        Processes::default()
    };
    let plan = Arc::new(Plan::new(scenario.clone(), partition));
    let contexts = oscore_contexts(&plan)?;
    let bucket = Timeline::width_for(scenario.duration + scenario.drain);
    // The clocks start a moment ahead, so the threads are running when the first device is due.
    let now = WallClock::now();
    let start = now.start() + Duration::from_millis(200);
    let unix_start = now.unix(now.start()) + 0.2;
    let deliveries = Arc::new(Mutex::new(Deliveries::new(
        plan.clone(),
        start,
        unix_start,
        bucket,
    )));
    let collector = start_collector(&scenario, partition, deliveries.clone()).await?;
    let stop = Stop {
        soft: start + scenario.duration,
        hard: start + scenario.duration + scenario.drain,
    };
    let clock = WallClock::at(start, unix_start);
    let state_files = contexts.marks.clone();
    let (threads, live) = spawn_shards(&plan, contexts, start, clock, bucket, stop)?;
    let mut resources = Timeline::new(start, bucket);
    let commands = if partition.index == 0 {
        spawn_commands(&scenario, start, stop.hard)
    } else {
        Vec::new()
    };
    let faults = FaultRunner::start(&scenario, std::mem::take(&mut processes), start);
    let outcome = watch(
        &plan,
        &live,
        &deliveries,
        &mut resources,
        stop,
        options.progress,
        threads,
    )
    .await;
    // The devices have stopped: no fault starts any more (one under way runs its course, e.g.
    // a broker outage that outlasts the drain: the settle period waits for it).
    let devices_stopped = Instant::now();
    faults.cancel();
    let (results, rss_registered) = match outcome {
        Ok(r) => r,
        Err(e) => {
            let (_, returned) = faults.finish();
            processes = returned;
            collector.stop();
            processes.stop_all();
            return Err(e);
        }
    };
    // The settle period: give the broker path time to deliver everything acknowledged (the
    // edge holds it in its outbox until it is published), however late the devices stopped.
    let acknowledged: u64 = results
        .iter()
        .flat_map(|r| r.members.iter())
        .filter_map(|m| m.device())
        .filter_map(|d| d.reporter())
        .map(|r| r.stats().acked)
        .sum();
    let settled = settle(
        &deliveries,
        acknowledged,
        devices_stopped + scenario.settle,
        options.progress,
    )
    .await;
    let settled_s = settled
        .saturating_duration_since(devices_stopped)
        .as_secs_f64();
    let (marks, returned) = faults.finish();
    processes = returned;
    let mut command_reports = Vec::new();
    for (fleet, task) in commands {
        match task.await {
            Ok(Ok(c)) => command_reports.push((fleet, c)),
            Ok(Err(e)) => {
                tracing::error!(fleet, error = %e, "the fleet's platform commands failed")
            }
            Err(e) => tracing::error!(fleet, error = %e, "the fleet's command task failed"),
        }
    }
    let ended_s = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    collector.stop();
    processes.stop_all();
    let usage = crate::resources::usage();
    let d = deliveries
        .lock()
        .map_err(|_| anyhow::anyhow!("the collector's state is poisoned"))?;
    let facts = RunFacts {
        started_unix: unix_start,
        ended_s,
        settled_s,
        faults: marks,
        resources,
        cpu_s: usage.cpu_s,
        peak_rss_bytes: usage.peak_rss_bytes,
        rss_registered_bytes: rss_registered.unwrap_or(usage.rss_bytes),
        threads: scenario.threads,
    };
    let mut report = build::report(&plan, &results, &d, facts);
    add_commands(&mut report, command_reports);
    for (fleet, marks) in report.fleets.iter_mut().zip(&state_files) {
        if let Some(m) = marks {
            fleet.oscore.state_writes = m.lock().map(|m| m.writes()).unwrap_or(0);
            report.total.oscore.state_writes += fleet.oscore.state_writes;
        }
    }
    Ok(report)
}

/// A fleet's platform commands: its index and the task that publishes them and collects the
/// results.
type CommandTask = (
    usize,
    tokio::task::JoinHandle<anyhow::Result<CommandReport>>,
);

/// Starts the platform commands of every NB-IoT fleet that has some, published from `start`
/// on, results collected until `until`.
fn spawn_commands(scenario: &Scenario, start: Instant, until: Instant) -> Vec<CommandTask> {
    let mut tasks = Vec::new();
    for (i, f) in scenario.fleets.iter().enumerate() {
        let Transport::Nbiot(nbiot) = &f.transport else {
            continue;
        };
        let Some(plan) = nbiot.commands else {
            continue;
        };
        let ids = (0..f.devices).map(|n| f.device_id(n)).collect();
        let task = tokio::spawn(nbiot_fleet::run_commands(
            scenario.broker.clone(),
            i,
            plan,
            ids,
            start,
            until,
        ));
        tasks.push((i, task));
    }
    tasks
}

/// Puts what became of each fleet's commands into the report (`served`: the commands the
/// fleet's devices in this process ran), and the sum into the total.
fn add_commands(report: &mut Report, commands: Vec<(usize, CommandReport)>) {
    for (fleet, mut c) in commands {
        if let Some(n) = report.fleets.get_mut(fleet).and_then(|f| f.nbiot.as_mut()) {
            c.served = n.commands_run;
            n.commands = Some(c);
        }
    }
    let mut total: Option<NbiotReport> = None;
    for n in report.fleets.iter().filter_map(|f| f.nbiot.as_ref()) {
        total.get_or_insert_default().add(n);
    }
    report.total.nbiot = total;
}

/// The processes a run manages.
#[derive(Debug, Default)]
struct Processes {
    broker: Option<Process>,
    edge: Option<Process>,
}

impl Processes {
    fn stop_all(&mut self) {
        for p in [self.edge.as_mut(), self.broker.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = p.stop() {
                tracing::warn!(error = %e, "stopping a managed process failed");
            }
        }
    }
}

fn start_processes(s: &Scenario, workdir: &Path) -> anyhow::Result<Processes> {
    let mut processes = Processes::default();
    if let Some(m) = &s.broker.managed {
        let addr = faults::broker_address(&s.broker.url)?;
        let mut p = Process::new("broker", m.clone(), Readiness::Tcp(addr), workdir);
        p.start()?;
        processes.broker = Some(p);
    }
    if let Some(m) = &s.edge.managed {
        let mut p = Process::new(
            "edge",
            m.clone(),
            Readiness::CoapPing(s.edge.address),
            workdir,
        );
        p.start()?;
        processes.edge = Some(p);
    }
    Ok(processes)
}

/// What a fault thread hands back: the faults it injected, its process, and whether that is
/// the edge.
type FaultThreadEnd = (Vec<FaultMark>, Option<Process>, bool);

/// Injects the scenario's faults at their times: edge and broker faults on threads of their
/// own (so one's down time does not delay the other's), each holding its process meanwhile.
struct FaultRunner {
    threads: Vec<std::thread::JoinHandle<FaultThreadEnd>>,
    marks: Vec<FaultMark>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl FaultRunner {
    fn start(s: &Scenario, mut processes: Processes, start: Instant) -> FaultRunner {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut marks = Vec::new();
        let mut edge_faults = Vec::new();
        let mut broker_faults = Vec::new();
        for f in &s.faults {
            match &f.kind {
                FaultKind::EdgeKill { .. } | FaultKind::EdgeRestart { .. } => {
                    edge_faults.push(f.clone())
                }
                FaultKind::BrokerOutage { .. } => broker_faults.push(f.clone()),
                FaultKind::LinkLoss { loss, fleet, .. } => marks.push(FaultMark {
                    at_s: f.at.as_secs_f64(),
                    kind: f.kind.name().into(),
                    length_s: f.kind.length().as_secs_f64(),
                    detail: format!(
                        "{:.0}% of datagrams lost both ways, {}",
                        loss * 100.0,
                        fleet
                            .as_deref()
                            .map_or("every fleet".to_owned(), |n| format!("fleet {n}"))
                    ),
                    ok: true,
                }),
            }
        }
        let mut threads = Vec::new();
        for (faults, is_edge) in [(edge_faults, true), (broker_faults, false)] {
            let process = if is_edge {
                processes.edge.take()
            } else {
                processes.broker.take()
            };
            let cancel = cancel.clone();
            threads.push(std::thread::spawn(move || {
                let mut process = process;
                let mut marks = Vec::new();
                for f in faults {
                    let Some(p) = process.as_mut() else { break };
                    // Sleep in steps, so a run that ends early does not wait for its faults.
                    while Instant::now() < start + f.at {
                        if cancel.load(Ordering::Relaxed) {
                            return (marks, process, is_edge);
                        }
                        std::thread::sleep(
                            (start + f.at)
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(50)),
                        );
                    }
                    let at_s = Instant::now()
                        .saturating_duration_since(start)
                        .as_secs_f64();
                    marks.push(faults::inject(&f, p, at_s));
                }
                (marks, process, is_edge)
            }));
        }
        FaultRunner {
            threads,
            marks,
            cancel,
        }
    }

    /// No fault starts from now on (one under way still runs its course: a process that was
    /// stopped is started again).
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Ends the faults still to come, and waits for one under way; returns what was done, and
    /// the processes.
    fn finish(self) -> (Vec<FaultMark>, Processes) {
        self.cancel();
        let mut marks = self.marks;
        let mut processes = Processes::default();
        for t in self.threads {
            if let Ok((m, p, is_edge)) = t.join() {
                marks.extend(m);
                if is_edge {
                    processes.edge = p;
                } else {
                    processes.broker = p;
                }
            }
        }
        marks.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        (marks, processes)
    }
}

/// Subscribes to the fleet's telemetry on its own thread ([`crate::subscriber`]); returns once
/// the subscription is acknowledged.
async fn start_collector(
    s: &Scenario,
    partition: Partition,
    deliveries: Arc<Mutex<Deliveries>>,
) -> anyhow::Result<Subscription> {
    let (host, port) = mqtt_host_port(&s.broker.url)?;
    let filter = format!("{}/{}/+/telemetry", s.broker.prefix, s.broker.site);
    let url = s.broker.url.clone();
    let session = if s.broker.persistent_session {
        Session::Persistent(format!(
            "v6iot-sim-{}-{}-{}",
            s.name,
            partition.index,
            std::process::id()
        ))
    } else {
        Session::Clean
    };
    tokio::task::spawn_blocking(move || {
        Subscription::start_with(&host, port, &filter, deliveries, session)
    })
    .await?
    .with_context(|| format!("collector at {url}"))
}

/// Per fleet, what its devices share.
fn fleet_shared(plan: &Plan, start: Instant, clock: WallClock) -> Vec<Arc<FleetShared>> {
    let s = plan.scenario();
    s.fleets
        .iter()
        .map(|f| {
            Arc::new(FleetShared {
                id_prefix: f.id_prefix.clone(),
                first: f.first,
                interval: f.interval(),
                stop_at: start + s.duration,
                payload: f.payload,
                clock,
            })
        })
        .collect()
}

/// Every device's OSCORE context of a shard, and per fleet its shared state file.
#[derive(Debug)]
pub struct Contexts {
    /// By plan number.
    pub contexts: Vec<Option<Box<SecurityContext>>>,
    /// Per fleet, its state file (OSCORE fleets).
    pub marks: Vec<Option<Arc<Mutex<FleetMarks>>>>,
}

/// Every OSCORE device's context of this shard (indexed by its plan number; `None` for
/// devices of plain fleets), restored from its fleet's state file, each device's next mark
/// written to that file in one write before any of them sends.
pub fn oscore_contexts(plan: &Plan) -> anyhow::Result<Contexts> {
    let s = plan.scenario();
    let len = usize::try_from(plan.len()).context("too many devices for this machine")?;
    let mut contexts: Vec<Option<Box<SecurityContext>>> = (0..len).map(|_| None).collect();
    let mut all_marks = Vec::with_capacity(s.fleets.len());
    for (fleet, f) in s.fleets.iter().enumerate() {
        let Some(o) = &f.oscore else {
            all_marks.push(None);
            continue;
        };
        let mut marks = FleetMarks::load(&o.state)?;
        let mut next = Vec::new();
        let file = std::fs::File::open(&o.credentials).with_context(|| {
            format!(
                "cannot open the credentials CSV {}",
                o.credentials.display()
            )
        })?;
        credentials::for_each_record(std::io::BufReader::new(file), |line, record| {
            let Some(d) = plan.find_id(&record.id).filter(|d| d.fleet == fleet) else {
                return Ok(());
            };
            let Some(local) = plan.local(d) else {
                return Ok(()); // another shard's device
            };
            let slot = contexts
                .get_mut(usize::try_from(local).unwrap_or(usize::MAX))
                .context("a device outside the plan")?;
            anyhow::ensure!(
                slot.is_none(),
                "line {line}: device `{}` appears twice",
                record.id
            );
            let mut ctx =
                credentials::device_context(&record, marks.state(&record.id), FLEET_PERSIST_STEP)?;
            let mark = ctx
                .mark_to_persist()
                .context("a device's sequence numbers are exhausted")?;
            next.push((record.id, mark));
            ctx.persisted(mark);
            *slot = Some(Box::new(ctx));
            Ok(())
        })
        .with_context(|| format!("credentials CSV {}", o.credentials.display()))?;
        // Every device of the fleet in this shard needs its row.
        for k in 0..plan.partition().share(f.devices) {
            let n = plan.partition().device(k);
            let d = crate::plan::DeviceRef { fleet, n };
            let local = plan.local(d).and_then(|l| usize::try_from(l).ok());
            if local
                .and_then(|l| contexts.get(l))
                .is_none_or(|c| c.is_none())
            {
                anyhow::bail!(
                    "device `{}` of fleet `{}` is not in the credentials CSV {} (provision at least devices {}..{} of prefix `{}`)",
                    f.device_id(n),
                    f.name,
                    o.credentials.display(),
                    f.first,
                    f.first + f.devices,
                    f.id_prefix
                );
            }
        }
        marks
            .set_all(next)
            .with_context(|| format!("write {}", o.state.display()))?;
        all_marks.push(Some(Arc::new(Mutex::new(marks))));
    }
    Ok(Contexts {
        contexts,
        marks: all_marks,
    })
}

/// A shard thread's OSCORE state writes: each to its device's fleet's state file.
struct ShardMarks {
    roster: Roster,
    marks: Vec<Option<Arc<Mutex<FleetMarks>>>>,
}

impl MemberStore for ShardMarks {
    fn store(
        &mut self,
        member: usize,
        state: v6iot_sdk::oscore::DurableState,
    ) -> std::io::Result<()> {
        let d = self
            .roster
            .device_ref(member)
            .ok_or_else(|| std::io::Error::other("no such member"))?;
        let Some(Some(marks)) = self.marks.get(d.fleet) else {
            return Err(std::io::Error::other(
                "a plain device asked to store OSCORE state",
            ));
        };
        let id = self.roster.plan.device_id(d);
        marks
            .lock()
            .map_err(|_| std::io::Error::other("the fleet's mark state is poisoned"))?
            .set_state(&id, state)
    }
}

type ShardThread = std::thread::JoinHandle<std::io::Result<ShardResult>>;

/// The shard cores of a plan, one per device thread: thread `t` runs the plan's devices `t`,
/// `t + threads`, …, with their OSCORE contexts (`contexts` by plan number), on a clock that
/// starts at `start` (Unix time `clock`), each writing OSCORE state through the store `store`
/// makes for its roster. No I/O: the threads' drivers, or a [`crate::standin::VirtualNet`],
/// run them.
pub fn build_cores<St: MemberStore>(
    plan: &Arc<Plan>,
    contexts: Vec<Option<Box<SecurityContext>>>,
    start: Instant,
    clock: WallClock,
    bucket: Duration,
    mut store: impl FnMut(&Roster) -> St,
) -> anyhow::Result<Vec<ShardCore<St>>> {
    let s = plan.scenario();
    // A 6LoWPAN fleet's medium and its ZEP socket are one: one thread runs the whole fleet.
    let threads = if lowpan_plan(s).is_some() {
        1
    } else {
        u32::from(s.threads.max(1)).min(u32::try_from(plan.len()).unwrap_or(u32::MAX).max(1))
    };
    let tree = crate::fleet::tree()?;
    let shared = fleet_shared(plan, start, clock);
    let mut per_thread: Vec<Vec<Option<Box<SecurityContext>>>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (j, ctx) in contexts.into_iter().enumerate() {
        if let Some(t) = per_thread.get_mut(j % threads as usize) {
            t.push(ctx);
        }
    }
    let mut cores = Vec::with_capacity(threads as usize);
    for (t, ctxs) in per_thread.into_iter().enumerate() {
        let roster = Roster {
            plan: plan.clone(),
            thread: t as u32,
            threads,
            shared: shared.clone(),
            start,
            edge: s.edge.address,
        };
        let link = LinkModel::new(
            s,
            start,
            s.seed ^ (u64::from(plan.partition().index) << 32) ^ t as u64,
        );
        let st = store(&roster);
        cores.push(ShardCore::new(roster, ctxs, tree.clone(), st, link, bucket));
    }
    Ok(cores)
}

/// Starts the device threads on the cores [`build_cores`] makes.
fn spawn_shards(
    plan: &Arc<Plan>,
    contexts: Contexts,
    start: Instant,
    clock: WallClock,
    bucket: Duration,
    stop: Stop,
) -> anyhow::Result<(Vec<ShardThread>, Vec<Arc<Live>>)> {
    let s = plan.scenario();
    let marks = contexts.marks;
    let cores = build_cores(plan, contexts.contexts, start, clock, bucket, |roster| {
        ShardMarks {
            roster: roster.clone(),
            marks: marks.clone(),
        }
    })?;
    let mut handles = Vec::with_capacity(cores.len());
    let mut lives = Vec::with_capacity(cores.len());
    for (t, core) in cores.into_iter().enumerate() {
        let roster = core.roster().clone();
        let name = format!("v6iot-sim-shard-{t}");
        let live = Arc::new(Live::default());
        lives.push(live.clone());
        let handle = if let Some(lowpan) = lowpan_plan(s) {
            let link = medium_link(&roster, lowpan, s.seed)?;
            spawn(name, core, link, stop, live, |link, r| {
                r.air = Some(link.finish());
            })?
        } else if s.fleets.iter().all(|f| f.sources == Sources::Sockets) {
            let link = device_sockets(roster.members(), s.edge.address)?;
            spawn(name, core, link, stop, live, |_, _| {})?
        } else {
            let pool = AddressPool::bind_segments(0, pool_segments(&roster)).context(
                "a socket for the devices' addresses (is the prefix routed to loopback in this network namespace?)",
            )?;
            spawn(name, core, pool, stop, live, |_, _| {})?
        };
        handles.push(handle);
    }
    Ok((handles, lives))
}

/// The 6LoWPAN plan of a scenario's fleet, if it has one (check allows one 6LoWPAN fleet, and
/// no other fleet beside it).
pub fn lowpan_plan(s: &Scenario) -> Option<&LowpanPlan> {
    s.fleets.iter().find_map(|f| match &f.transport {
        Transport::Lowpan(p) => Some(p.as_ref()),
        _ => None,
    })
}

/// The medium of a 6LoWPAN shard on its ZEP socket: a participant per member, at the extended
/// address its planned interface id gives.
fn medium_link(roster: &Roster, plan: &LowpanPlan, seed: u64) -> anyhow::Result<MediumLink> {
    let addrs = (0..roster.members())
        .map(|i| {
            let address = roster
                .device_ref(i)
                .and_then(|d| roster.plan.address(d))
                .context("a 6LoWPAN device without a planned address (a `source_prefix`)")?;
            Ok(LinkAddr::Extended(eui64_for(u128::from(address) as u64).0))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let socket = MediumLink::bind(plan)
        .with_context(|| format!("bind the fleet's ZEP socket {}", plan.listen))?;
    MediumLink::new(plan, &addrs, socket, seed).context("start the fleet's medium")
}

/// The address segments of a thread's members: per fleet, its members of this thread, at
/// consecutive-by-stride interface ids.
fn pool_segments(roster: &Roster) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for i in 0..roster.members() {
        let Some(d) = roster.device_ref(i) else {
            continue;
        };
        let Some(address) = roster.plan.address(d) else {
            continue;
        };
        let iid = u128::from(address) as u64;
        match segments.last_mut() {
            Some(seg)
                if seg.members.end == i
                    && u128::from(seg.network) >> 64 == u128::from(address) >> 64 =>
            {
                let k = (i - seg.members.start) as u64;
                if k == 1 {
                    seg.stride = iid.wrapping_sub(seg.first);
                }
                if seg.first.wrapping_add(k.wrapping_mul(seg.stride)) == iid && seg.stride != 0 {
                    seg.members.end = i + 1;
                    continue;
                }
                segments.push(Segment {
                    network: address,
                    first: iid,
                    stride: 1,
                    members: i..i + 1,
                });
            }
            _ => segments.push(Segment {
                network: address,
                first: iid,
                stride: 1,
                members: i..i + 1,
            }),
        }
    }
    segments
}

/// Runs `core` on `link` in a thread of its own; `finish` then adds what the link itself
/// counted to the shard's result (a 6LoWPAN medium's figures).
fn spawn<St, L, F>(
    name: String,
    core: ShardCore<St>,
    mut link: L,
    stop: Stop,
    live: Arc<Live>,
    finish: F,
) -> anyhow::Result<ShardThread>
where
    St: MemberStore + 'static,
    L: crate::link::Link + Send + 'static,
    F: FnOnce(L, &mut ShardResult) + Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut result = shard::run_with(core, &mut link, stop, &mut |c, pending| {
                live.store(c, pending);
            })?;
            finish(link, &mut result);
            Ok(result)
        })
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

/// The settle period: waits until the collector has seen at least `acknowledged` reports (as
/// many as the edge acknowledged), at most until `until`; shows how it goes as [`watch`] does
/// (a bar of the acknowledged reports delivered, or a plain `live: settling …` line a second).
/// Returns when it ended: at once when nothing is missing.
async fn settle(
    deliveries: &Mutex<Deliveries>,
    acknowledged: u64,
    until: Instant,
    progress: bool,
) -> Instant {
    let from = Instant::now();
    let plain = progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut plain_at: Option<Instant> = None;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let most = until.saturating_duration_since(from).as_secs_f64();
    loop {
        let now = Instant::now();
        let delivered = deliveries.lock().map(|d| d.delivered()).unwrap_or(0);
        if delivered >= acknowledged || now >= until {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return now;
        }
        if progress {
            let waited = now.saturating_duration_since(from).as_secs_f64();
            let message = format!(
                "settling: delivered {delivered} of {acknowledged} acknowledged, waited {waited:.0} s of at most {most:.0} s since the devices stopped"
            );
            if plain {
                if plain_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
                {
                    plain_at = Some(now);
                    eprintln!("live: {message}");
                }
            } else {
                let bar = bar.get_or_insert_with(|| {
                    let bar = indicatif::ProgressBar::new(acknowledged.max(1));
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:30}] {pos}/{len} delivered  {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar
                });
                bar.set_position(delivered);
                bar.set_message(message);
            }
        }
        tokio::time::sleep(
            until
                .saturating_duration_since(now)
                .min(Duration::from_millis(50)),
        )
        .await;
    }
}

/// Shows progress until the device threads end; samples the process's CPU and memory into
/// `resources`; returns the threads' results and the memory once every device had registered.
async fn watch(
    plan: &Plan,
    live: &[Arc<Live>],
    deliveries: &Mutex<Deliveries>,
    resources: &mut Timeline,
    stop: Stop,
    progress: bool,
    threads: Vec<ShardThread>,
) -> anyhow::Result<(Vec<ShardResult>, Option<u64>)> {
    let expected: u64 = (0..plan.len())
        .filter_map(|j| plan.device(j))
        .map(|d| plan.scheduled_reports(d))
        .sum();
    // Not a terminal (a CI log, a pipe): no bar, the live line once a second instead.
    let plain = progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut plain_at = Instant::now();
    let bar = (progress && !plain).then(|| {
        let bar = indicatif::ProgressBar::new(expected.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} made  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut last = crate::resources::usage();
    let mut last_at = Instant::now();
    let mut registered_rss = None;
    let devices = plan.len();
    while threads.iter().any(|t| !t.is_finished()) {
        ticker.tick().await;
        let now = Instant::now();
        let usage = crate::resources::usage();
        if now.saturating_duration_since(last_at) >= Duration::from_secs(1) || now >= stop.hard {
            let b = resources.at(now);
            b.cpu_s += usage.cpu_s - last.cpu_s;
            b.rss_bytes = b.rss_bytes.max(usage.rss_bytes);
            last = usage;
            last_at = now;
        }
        let (made, acked, registered, pending) = live_totals(live);
        if registered_rss.is_none() && registered >= devices {
            registered_rss = Some(usage.rss_bytes);
        }
        let line_due = plain && now.saturating_duration_since(plain_at) >= Duration::from_secs(1);
        if bar.is_some() || line_due {
            let (delivered, p99) = deliveries
                .lock()
                .map(|d| {
                    (
                        d.delivered(),
                        d.timeline()
                            .buckets()
                            .last()
                            .map_or(0.0, |b| b.latency.quantile_ms(0.99)),
                    )
                })
                .unwrap_or((0, 0.0));
            let phase = if now < stop.soft { "" } else { "draining " };
            let message = format!(
                "{phase}registered {registered}/{devices}  acked {acked}  delivered {delivered}  p99 {p99:.0} ms  rss {} MB  pending {pending}",
                usage.rss_bytes >> 20,
            );
            if let Some(bar) = &bar {
                bar.set_position(made.min(expected));
                bar.set_message(message);
            } else {
                plain_at = now;
                eprintln!("live: made {made}/{expected}  {message}");
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut results = Vec::with_capacity(threads.len());
    for t in threads {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("a shard thread panicked"))?
            .context("a shard's event loop failed")?;
        results.push(r);
    }
    Ok((results, registered_rss))
}
