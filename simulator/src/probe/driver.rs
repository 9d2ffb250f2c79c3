//! The probe's thin driver: one UDP socket connected to the target, blocking reads bounded by
//! the core's next deadline. Nothing here decides anything.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use v6iot_sdk::oscore::{ContextConfig, DurableState, SecurityContext};
use v6iot_sdk::store::{MarkStore, SequenceFile};
use v6iot_sdk::time::Instant;

use super::{Probe, ProbeConfig, ProbeReport, UriError, parse_target};
use crate::duration::parse_duration;

/// `v6iot-sim probe`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The endpoint: `coap://[addr]:port` (port 5683 when left out).
    #[arg(value_parser = parse_uri)]
    pub target: SocketAddr,
    /// Print the report as JSON (schema v6iot-sim/probe/1) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long the first transmission of a request waits for its answer (doubling on each of
    /// two retransmissions).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long malformed input waits for an answer it should not get.
    #[arg(long, default_value = "800ms", value_parser = parse_duration)]
    pub silence: Duration,
    /// How long an Observe registration waits for its first notification.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub observe_wait: Duration,
    /// Check OSCORE as the edge would speak to the device: the row of `--id` in this
    /// credentials CSV (`provision`'s output); the probe's Sender ID is empty, its Recipient
    /// ID the device's kid.
    #[arg(long, requires = "id")]
    pub credentials: Option<PathBuf>,
    /// The device whose credentials row to use.
    #[arg(long, requires = "credentials")]
    pub id: Option<String>,
    /// Where the probe's OSCORE sequence-number mark survives between probes (default:
    /// `CSV.ID.probe.seq`), so that a device's replay window never sees a number twice.
    #[arg(long, requires = "credentials")]
    pub seq_file: Option<PathBuf>,
}

fn parse_uri(text: &str) -> Result<SocketAddr, UriError> {
    parse_target(text)
}

impl ProbeArgs {
    /// The core's configuration from these arguments.
    pub fn config(&self) -> ProbeConfig {
        ProbeConfig {
            timeout: self.timeout,
            silence: self.silence,
            observe_wait: self.observe_wait,
            ..ProbeConfig::default()
        }
    }
}

/// The steps between a sequence-number mark the probe stores (it sends one protected request).
const PROBE_PERSIST_STEP: u64 = 64;

/// The client's OSCORE context from `--credentials`/`--id`, its next mark written to
/// `--seq-file` before it is used.
pub fn oscore_context(args: &ProbeArgs) -> anyhow::Result<Option<SecurityContext>> {
    let (Some(csv), Some(id)) = (&args.credentials, &args.id) else {
        return Ok(None);
    };
    let creds = crate::credentials::Credentials::load(csv)?;
    let record = creds
        .get(id)
        .with_context(|| format!("device `{id}` is not in {}", csv.display()))?;
    let seq = args.seq_file.clone().unwrap_or_else(|| {
        let mut name = csv.as_os_str().to_owned();
        name.push(format!(".{id}.probe.seq"));
        PathBuf::from(name)
    });
    let (mut file, stored) =
        SequenceFile::open(&seq).with_context(|| format!("sequence file {}", seq.display()))?;
    let input = crate::credentials::edge_input(record);
    let config = ContextConfig {
        persist_step: PROBE_PERSIST_STEP,
        ..ContextConfig::default()
    };
    let mut ctx = SecurityContext::restore(&input, config, stored.sender_mark)
        .map_err(|e| anyhow::anyhow!("device `{id}`: cannot build its OSCORE context: {e}"))?;
    if let Some(mark) = ctx.mark_to_persist() {
        file.store(DurableState {
            sender_mark: mark,
            replay_floor: stored.replay_floor,
        })
        .with_context(|| format!("write {}", seq.display()))?;
        ctx.persisted(mark);
    }
    Ok(Some(ctx))
}

/// A socket error while probing (the target's silence is not an error).
#[derive(Debug, thiserror::Error)]
#[error("probe socket: {0}")]
pub struct ProbeIoError(#[from] std::io::Error);

/// Runs every check against `target` and returns the report.
pub fn run(
    target: SocketAddr,
    config: ProbeConfig,
    oscore: Option<SecurityContext>,
) -> Result<ProbeReport, ProbeIoError> {
    let local: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().map_err(std::io::Error::other)?
    } else {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(target)?;
    let seed = u16::try_from(std::process::id() & 0xffff).unwrap_or(1);
    let mut probe = Probe::new(config, target.is_ipv6(), seed);
    if let Some(ctx) = oscore {
        probe = probe.with_oscore(ctx);
    }
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some(d) = probe.poll_transmit(now) {
            socket.send(&d)?;
        }
        if probe.is_done() {
            break;
        }
        let wait = probe
            .poll_timeout()
            .map_or(Duration::from_millis(10), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv(&mut buf) {
            Ok(n) => probe.handle_datagram(Instant::now(), buf.get(..n).unwrap_or_default()),
            // Nothing came, or the target's port is closed (ICMP): the core's timeout decides.
            Err(e) if v6iot_sdk::net::is_transient(&e) => {}
            Err(e) => return Err(e.into()),
        }
        probe.handle_timeout(Instant::now());
    }
    Ok(ProbeReport::new(target, probe.results().to_vec()))
}
