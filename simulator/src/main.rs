//! `v6iot-sim`: the simulator's command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::UdpSocket;
use v6iot_sdk::coap::{Config, Device, Event};
use v6iot_sdk::store::{MarkStore, NoStore, SequenceFile};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::Binding;
use v6iot_simulator::credentials::{self, Credentials};
#[cfg(feature = "demo")]
use v6iot_simulator::demo::{self, DemoPlan};
use v6iot_simulator::duration::parse_duration;
use v6iot_simulator::load::{self, RunOptions};
use v6iot_simulator::lowpan::cli::LowpanArgs;
use v6iot_simulator::medium;
use v6iot_simulator::nbiot::cli::{NbiotArgs, TransportArg};
use v6iot_simulator::report::Report;
use v6iot_simulator::scenario::{
    self, FleetSpec, OscoreSpec, Partition, Scenario, Sources, Transport,
};
use v6iot_simulator::sensor::{self, Sensor, SensorSettings};

/// Simulated v6iot devices running the real SDK core.
#[derive(Parser)]
#[command(name = "v6iot-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one simulated sensor that serves CoAP on a UDP address (until Ctrl-C).
    Device {
        /// Address to serve on; any IPv6 (or IPv4) address and port.
        #[arg(long, default_value = "[::1]:5683")]
        bind: SocketAddr,
        /// Device id (used in SenML names and /device/info).
        #[arg(long, default_value = "sim-0001")]
        id: String,
        /// How often readings change and observers are notified, e.g. `2s`, `500ms`.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
        /// Speak OSCORE only, with the row of `--id` in this credentials CSV (`provision`'s
        /// output); only `GET /.well-known/core` stays open without it.
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Where the OSCORE sequence-number mark and replay floor survive restarts (default:
        /// next to the CSV, `CSV.ID.seq`; the file holds `mark floor`).
        #[arg(long, requires = "credentials")]
        seq_file: Option<PathBuf>,
    },
    /// Everything in one process on loopback: an embedded MQTT broker, the edge router and a
    /// fleet of devices that register and report; then a summary.
    #[cfg(feature = "demo")]
    Demo {
        /// Number of devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// How long devices report, e.g. `10s`.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Reports per second over the fleet (default: one per device per second).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Drive a fleet of devices at an external edge router and count deliveries at its broker:
    /// one fleet from the flags, or the fleets and faults of a scenario file (`--scenario`).
    Run(Box<RunArgs>),
    /// Combine the JSON reports of a sharded run (`run --shard I/N` on several machines) into
    /// one: counts added, histograms merged, timelines added; optionally the HTML report.
    Merge {
        /// The shards' JSON reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged JSON report here (it is also printed).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the merged HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Run the simulated 802.15.4 medium over ZEP v2 (UDP): every frame from one participant
    /// reaches every other on its channel. Participants are learned from the datagrams they
    /// send (at most --max-participants); radios point their ZEP remote at --listen. Until
    /// Ctrl-C or --duration; then a JSON summary on standard output.
    Medium {
        /// The UDP address to listen on.
        #[arg(long, default_value = "[::1]:17754")]
        listen: SocketAddr,
        /// Write every frame on air to this pcap file (link type 195, with FCS).
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// A participant to relay to before it has sent anything (a border router); repeat for
        /// more.
        #[arg(long = "peer")]
        peers: Vec<SocketAddr>,
        /// The channel of the --peer participants.
        #[arg(long, default_value_t = 26)]
        channel: u8,
        /// The probability that a frame is lost on its way to a receiver, 0 to 1.
        #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
        loss: f64,
        /// How long frames take to reach a receiver, e.g. `5ms`.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        latency: Duration,
        /// The seed of the medium's random draws (losses).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The most remote participants at once.
        #[arg(long, default_value_t = v6iot_simulator::medium::hub::DEFAULT_MAX_REMOTE)]
        max_participants: usize,
        /// Stop after this long (default: at Ctrl-C).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Model airtime: 250 kbit/s, unslotted CSMA/CA, collisions, ACKs and retries (IEEE
        /// 802.15.4 defaults), instead of the ideal medium.
        #[arg(long)]
        airtime: bool,
    },
    /// Emulate one NB-IoT modem on a pty (AT commands: attach, the carrier's IPv6 address, PSM,
    /// the HiSilicon UDP sockets) for the SDK's driver or a serial terminal, its datagrams from
    /// an address in the carrier's prefix. Until Ctrl-C or --duration; then a JSON summary on
    /// standard output.
    Modem(Box<v6iot_simulator::nbiot::cli::ModemArgs>),
    /// Evaluate a CoAP endpoint's IPv6 and CoAP behaviour (reachability, CON and NON,
    /// discovery, Block2, Observe, answers to malformed input) and print a pass/fail table;
    /// exits with status 1 when a check fails.
    Probe(v6iot_simulator::probe::driver::ProbeArgs),
    /// Write fresh OSCORE credentials for a fleet as the CSV `v6iot-edge devices import` reads
    /// (random 16-byte master secrets; the file is readable by its owner only).
    Provision {
        /// Number of devices.
        #[arg(long)]
        devices: u64,
        /// The CSV file to create (`-` for standard output).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The IPv6 prefix every device may use.
        #[arg(long, default_value = "2001:db8:1200:305::/64")]
        prefix: v6iot_credentials::Ipv6Prefix,
        /// Device id prefix (ids are PREFIX + 6-digit serial, as `run` names devices).
        #[arg(long, default_value = "sim")]
        id_prefix: String,
        /// Serial of the first device (kids are the serials).
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Address plan device class (1-255).
        #[arg(long, default_value_t = 1)]
        class: u8,
    },
}

/// `v6iot-sim run`'s flags.
#[derive(clap::Args)]
struct RunArgs {
    /// Run the fleets, edge, broker and faults of this scenario file (TOML; see
    /// simulator/scenarios/README.md). The fleet flags below then do not apply.
    #[arg(long, conflicts_with_all = ["devices", "rate", "duration", "credentials", "source_prefix", "ramp", "queue_mode", "id_prefix", "edge", "mqtt_url", "site", "prefix", "transport"])]
    scenario: Option<PathBuf>,
    /// Run shard I of N of the scenario (device n of each fleet is shard n mod N's): several
    /// machines, or processes, load one platform together; `merge` combines their reports.
    #[arg(long, default_value = "0/1")]
    shard: Partition,
    /// The edge router's CoAP address.
    #[arg(long, default_value = "[::1]:5683")]
    edge: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 100)]
    devices: u64,
    /// Reports per second over the whole fleet, e.g. `500/s` or `500`.
    #[arg(long, default_value = "100/s", value_parser = parse_rate)]
    rate: f64,
    /// How long devices report, e.g. `30s`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Spread the devices' start (and registration) over this long, jittered, as real fleets
    /// come back after a power cut (`0`: all at once, a registration storm).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ramp: Duration,
    /// Seeds every random choice: the same seed gives the same run.
    #[arg(long)]
    seed: Option<u64>,
    /// The broker the edge publishes to (the simulator subscribes there).
    #[arg(long, default_value = "mqtt://[::1]:1883")]
    mqtt_url: String,
    /// MQTT topic prefix.
    #[arg(long, default_value = "v6iot")]
    prefix: String,
    /// The edge's site name.
    #[arg(long, default_value = "site")]
    site: String,
    /// Device id prefix.
    #[arg(long, default_value = "sim")]
    id_prefix: String,
    /// After the reporting period, how long devices go on sending what they queued (and the
    /// broker delivering it), at most.
    #[arg(long, value_parser = parse_duration)]
    drain: Option<Duration>,
    /// After the devices stopped, how long the collector goes on waiting for the reports the
    /// edge acknowledged to reach the broker, at most (it stops as soon as all did; what has
    /// not arrived by then counts as lost). Default 30 s; `0` does not wait.
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Register in queue mode (`b=UQ`).
    #[arg(long)]
    queue_mode: bool,
    /// Write the JSON report here (it is also printed).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the HTML report (plots, no external resources) here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Speak OSCORE: device n uses the row of its id (`{id-prefix}{n:06}`) in this
    /// credentials CSV (`provision`'s output).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// The fleet's OSCORE state: sequence-number marks and replay floors (default: next to
    /// the CSV, `CSV.seq`).
    #[arg(long, requires = "credentials")]
    seq_file: Option<PathBuf>,
    /// Threads that drive the devices (each owns a share of the sockets, one `epoll` set).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Give device n the address PREFIX + n + 1 and send from one socket per thread instead
    /// of a socket per device (IPv6 edge only). The prefix must be routed to this host, inside
    /// a network namespace of its own:
    /// `unshare -n`, `ip link set lo up`, `ip -6 route add local PREFIX dev lo`.
    #[arg(long)]
    source_prefix: Option<v6iot_credentials::Ipv6Prefix>,
    /// Where processes the scenario runs (edge, broker) write their logs (default: a new
    /// directory under the system's temporary directory).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// `--transport nbiot` and its options (one fleet from flags; a scenario file gives a
    /// fleet `transport = "nbiot"` and an `[fleet.nbiot]` table).
    #[command(flatten)]
    nbiot: NbiotArgs,
    /// `--transport lowpan`'s options (a scenario file gives the fleet `transport = "lowpan"`
    /// and a `[fleet.lowpan]` table).
    #[command(flatten)]
    lowpan: LowpanArgs,
}

impl RunArgs {
    /// The scenario these flags describe (or the file names), with `--seed`, `--threads`,
    /// `--drain` and `--settle` applied.
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = match &self.scenario {
            Some(path) => {
                let mut s = scenario::file::load(path)?;
                if let Some(pcap) = &self.lowpan.pcap {
                    for f in &mut s.fleets {
                        if let Transport::Lowpan(plan) = &mut f.transport {
                            plan.pcap = Some(pcap.clone());
                        }
                    }
                }
                s
            }
            None => self.flag_scenario(),
        };
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        if let Some(t) = self.threads {
            s.threads = t;
        }
        if let Some(d) = self.drain {
            s.drain = d;
        }
        if let Some(d) = self.settle {
            s.settle = d;
        }
        Ok(s)
    }

    /// The one fleet of `run`'s flags.
    fn flag_scenario(&self) -> Scenario {
        let mut fleet = FleetSpec::new(&self.id_prefix, self.devices, self.rate);
        fleet.id_prefix = self.id_prefix.clone();
        fleet.ramp = self.ramp;
        if let Some(plan) = self.nbiot.plan(self.seed.unwrap_or(1)) {
            fleet.transport = Transport::Nbiot(Box::new(plan));
        }
        let lowpan = self.nbiot.transport == TransportArg::Lowpan;
        if lowpan {
            fleet.transport = Transport::Lowpan(Box::new(self.lowpan.plan()));
        }
        fleet.binding = if self.queue_mode || matches!(fleet.transport, Transport::Nbiot(_)) {
            Binding::UQ
        } else {
            Binding::U
        };
        if let Some(p) = self.source_prefix {
            fleet.sources = Sources::Pool {
                prefix: p,
                // Interface id 1 is the border router's.
                offset: u64::from(lowpan),
            };
        }
        if let Some(csv) = &self.credentials {
            fleet.oscore = Some(OscoreSpec {
                credentials: csv.clone(),
                state: self
                    .seq_file
                    .clone()
                    .unwrap_or_else(|| with_suffix(csv, ".seq")),
            });
        }
        let mut s = Scenario::single(fleet, self.edge, &self.mqtt_url);
        s.name = "run".into();
        s.duration = self.duration;
        s.broker.prefix = self.prefix.clone();
        s.broker.site = self.site.clone();
        s
    }
}

/// Writes `report` as JSON (stdout and `json`) and HTML (`html`).
fn write_reports(report: &Report, json: Option<&Path>, html: Option<&Path>) -> anyhow::Result<()> {
    let text = report.to_json();
    println!("{text}");
    if let Some(path) = json {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(path, v6iot_simulator::report::html::render(report))
            .with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!("{}", report.summary());
    Ok(())
}

/// A `--rate` that is not a finite, non-negative number per second.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a rate like 500/s")]
struct RateError(String);

/// Parses `500/s` or `500`.
fn parse_rate(text: &str) -> Result<f64, RateError> {
    let n = text.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => Err(RateError(text.to_owned())),
    }
}

/// Parses a probability between 0 and 1.
fn parse_probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability between 0 and 1")),
    }
}

/// The same allocator as `v6iot-edge` (the demo runs the edge router in this process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo and fleet runs print their own progress; their components' logs stay quiet.
    let default_level = match cli.command {
        Command::Device { .. } => "info",
        // rumqttd logs every closed connection as an error; the demo's own summary says more.
        _ => "warn,rumqttd=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::Provision {
        devices,
        out,
        prefix,
        id_prefix,
        first,
        class,
    } = cli.command
    {
        let plan = v6iot_simulator::provision::ProvisionPlan {
            devices,
            first,
            id_prefix,
            class,
            prefix,
        };
        if out.as_os_str() == "-" {
            v6iot_simulator::provision::write_csv(&plan, std::io::stdout().lock())?;
        } else {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options
                .open(&out)
                .with_context(|| format!("create {}", out.display()))?;
            let n = v6iot_simulator::provision::write_csv(&plan, std::io::BufWriter::new(file))?;
            eprintln!("wrote {n} device credentials to {}", out.display());
        }
        return Ok(());
    }
    if let Command::Medium {
        listen,
        pcap,
        peers,
        channel,
        loss,
        latency,
        seed,
        max_participants,
        duration,
        airtime,
    } = cli.command
    {
        let options = medium::MediumOptions {
            pcap,
            peers,
            peer_channel: channel,
            link: medium::link_model(loss, latency),
            seed,
            max_participants,
            airtime: airtime.then(medium::phy::AirtimeConfig::default),
        };
        return run_medium(listen, &options, duration);
    }
    if let Command::Modem(args) = cli.command {
        let control = v6iot_simulator::nbiot::pty::ServeControl {
            stop: stop_flag(args.duration),
            ..Default::default()
        };
        let summary = v6iot_simulator::nbiot::pty::run_modem(&args, &control)?;
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    if let Command::Probe(args) = &cli.command {
        return run_probe(args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Device {
            bind,
            id,
            interval,
            credentials,
            seq_file,
        } => {
            let oscore = credentials.map(|csv| {
                let seq = seq_file.unwrap_or_else(|| with_suffix(&csv, &format!(".{id}.seq")));
                (csv, seq)
            });
            runtime.block_on(run_device(bind, id, interval, oscore))
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            devices,
            duration,
            rate,
            quiet,
        } => {
            let plan = DemoPlan {
                devices,
                duration,
                rate: rate.unwrap_or(devices as f64),
                progress: !quiet,
            };
            let multi = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = multi.block_on(demo::run(plan))?;
            println!("\n{}", demo::summary(&report));
            if report.total.lost > 0 {
                anyhow::bail!("{} reports were lost", report.total.lost);
            }
            Ok(())
        }
        Command::Run(args) => {
            let scenario = args.scenario()?;
            let options = RunOptions {
                partition: args.shard,
                progress: !args.quiet,
                workdir: args.workdir.clone(),
            };
            let multi = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = multi.block_on(load::run(scenario, options))?;
            write_reports(&report, args.report.as_deref(), args.html.as_deref())
        }
        Command::Merge {
            reports,
            report,
            html,
        } => {
            let mut parsed = Vec::with_capacity(reports.len());
            for path in &reports {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read {}", path.display()))?;
                let r: Report = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a v6iot-sim report", path.display()))?;
                parsed.push(r);
            }
            let merged = v6iot_simulator::report::merge::merge(&parsed)?;
            write_reports(&merged, report.as_deref(), html.as_deref())
        }
        Command::Provision { .. }
        | Command::Medium { .. }
        | Command::Modem(_)
        | Command::Probe(_) => Ok(()),
    }
}

/// `v6iot-sim probe`: the table (or JSON) on standard output; status 1 when a check failed.
fn run_probe(args: &v6iot_simulator::probe::driver::ProbeArgs) -> anyhow::Result<()> {
    let oscore = v6iot_simulator::probe::driver::oscore_context(args)?;
    let report = v6iot_simulator::probe::driver::run(args.target, args.config(), oscore)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.table());
    }
    if report.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `v6iot-sim medium`: serves until Ctrl-C or `duration`, then prints the summary.
fn run_medium(
    listen: SocketAddr,
    options: &medium::MediumOptions,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let socket =
        std::net::UdpSocket::bind(listen).with_context(|| format!("cannot bind UDP {listen}"))?;
    let stop = stop_flag(duration);
    eprintln!(
        "v6iot-sim medium: ZEP v2 on {} (Ctrl-C to stop){}",
        socket.local_addr()?,
        options
            .pcap
            .as_ref()
            .map(|p| format!(", capturing to {}", p.display()))
            .unwrap_or_default()
    );
    let summary = medium::serve(options, &socket, &stop)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// `path` with `suffix` appended to its file name (`creds.csv` → `creds.csv.seq`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The distance between the single device's persisted sequence-number marks.
const DEVICE_PERSIST_STEP: u64 = 256;

async fn run_device(
    bind: SocketAddr,
    id: String,
    interval: Duration,
    oscore: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(bind)
        .await
        .with_context(|| format!("cannot bind UDP {bind}"))?;
    let address = socket.local_addr()?;
    let (tree, ids) = sensor::tree()?;
    let epoch_at_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let settings = SensorSettings {
        id: id.clone(),
        address,
        interval,
        epoch_at_start,
        start: Instant::now(),
    };
    let seed = sensor::serial_of(&id);
    let mut device = Device::new(Config::default(), seed, tree, Sensor::new(settings, ids));
    let uri = format!("coap://{}", uri_host(address));
    let mut store: Box<dyn MarkStore + Send> = Box::new(NoStore);
    match &oscore {
        None => {
            println!("v6iot-sim device {id} serving CoAP on {address} (Ctrl-C to stop)");
            println!("  discover: coap-client-notls -m get {uri}/.well-known/core");
            println!("  read:     coap-client-notls -m get -A 110 {uri}/sensors/temperature");
            println!("  observe:  coap-client-notls -m get -s 10 -A 110 {uri}/sensors/temperature");
            println!("  info:     coap-client-notls -m get {uri}/device/info");
            println!("  log:      coap-client-notls -m get -b 64 {uri}/device/log");
            println!("  valve:    coap-client-notls -m put -e on {uri}/actuators/valve");
        }
        Some((csv, seq_path)) => {
            let creds = Credentials::load(csv)?;
            let record = creds
                .get(&id)
                .with_context(|| format!("device `{id}` is not in {}", csv.display()))?;
            let (file, stored) = SequenceFile::open(seq_path)
                .with_context(|| format!("sequence-number file {}", seq_path.display()))?;
            let ctx = credentials::device_context(record, stored, DEVICE_PERSIST_STEP)?;
            device = device.with_credentials(ctx);
            store = Box::new(file);
            let kid = hex::encode(&record.kid);
            println!(
                "v6iot-sim device {id} serving OSCORE-protected CoAP on {address} (kid {kid}; Ctrl-C to stop)"
            );
            println!(
                "  sequence numbers continue at {}, requests below Partial IV {} are replays; state in {}",
                stored.sender_mark,
                stored.replay_floor,
                seq_path.display()
            );
            println!("  open without OSCORE: coap-client-notls -m get {uri}/.well-known/core");
            println!(
                "  everything else needs OSCORE (Sender ID = kid {kid}, Recipient ID = empty, no ID Context), e.g. aiocoap:"
            );
            println!(
                "    ctx/settings.json: {{\"sender-id_hex\": \"\", \"recipient-id_hex\": \"{kid}\", \"secret_hex\": \"<secret_hex of {id} in {}>\", \"salt_hex\": \"<salt_hex>\"}}",
                csv.display()
            );
            println!("    client.json: {{\"{uri}/*\": {{\"oscore\": {{\"basedir\": \"ctx/\"}}}}}}");
            println!("    aiocoap-client --credentials client.json {uri}/sensors/temperature");
        }
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let on_event = |event: Event| tracing::info!(?event, "coap event");
    v6iot_sdk::driver::run_with_store(&socket, &mut device, store.as_mut(), on_event, shutdown)
        .await?;
    let s = device.endpoint().stats();
    println!(
        "stopped: {} datagrams in, {} requests answered ({} errors), {} notifications, {} malformed, {} duplicates",
        s.received, s.requests, s.error_responses, s.notifications, s.malformed, s.duplicates
    );
    if let Some(o) = device.endpoint().oscore_stats() {
        println!(
            "  OSCORE: {} requests verified, {} rejected, {} plain refused, {} held for a mark, {} held for a replay floor, {} unprotected errors received",
            o.requests_verified,
            o.requests_rejected,
            o.plain_refused,
            o.held,
            o.requests_held,
            o.unprotected_errors
        );
    }
    Ok(())
}

fn uri_host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    }
}

/// A stop flag set when `duration` has passed or on Ctrl-C, whichever comes first (`None`:
/// Ctrl-C only). The signal is watched on a thread of its own.
fn stop_flag(duration: Option<Duration>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            match duration {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        });
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
