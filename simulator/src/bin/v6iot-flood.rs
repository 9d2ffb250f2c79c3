//! `v6iot-flood`: a closed-loop CoAP load generator for benchmarks (loopback only).
//!
//! K UDP sockets, one thread each, keep W confirmable requests outstanding per socket. Every
//! request carries the same valid SenML-CBOR body (`[{"bn":"urn:dev:bench:","n":"t","u":"Cel",
//! "v":21.5}]`), so the v6iot edge router accepts it (with `coap.lab_accept_unregistered`), and
//! the same bytes go to any other server (libcoap's `coap-server`, the `udpecho` yardstick), so
//! all targets are measured the same way. A request completes when its piggybacked ACK arrives;
//! 2.xx answers are counted as accepted, and their round-trip times go into a latency histogram.
//! A request unanswered after `--timeout-ms` is counted as a timeout and forgotten (there is no
//! retransmission). Each socket opens its window by slow start (one request, then up to two
//! more per answer until W are outstanding), so neither the start nor the recovery after a loss
//! sends a burst larger than a server's receive buffer.
//!
//! With `--credentials creds.csv` (the registry's credentials CSV, as `v6iot-sim provision`
//! writes it) socket `n` is the device on line `n`: it first registers (`POST /rd?ep=ID`) and
//! then sends its telemetry OSCORE-protected (RFC 8613; Sender ID = the kid, the edge's Sender ID
//! empty), so the edge router's authenticated path is measured. The requests are protected
//! before the run starts (`--presign` per socket), so the generator spends no time on
//! cryptography while measuring; responses are judged by their outer code (an OSCORE success is
//! an outer 2.04; refusals are plain 4.01/4.00/4.02) and not decrypted. The sequence numbers a
//! run reserves are written to `--seq-file` before anything is sent, so that the next run
//! starts above them (the edge refuses replays, also across its restarts).
//!
//! Bounded by design: it stops after `--warmup + --secs` seconds (at most an hour) or once
//! `--max-requests` requests have been sent, whichever comes first.
//!
//! ```text
//! v6iot-flood --target [::1]:5683 --sockets 4 --window 32 --secs 5
//! target=[::1]:5683 sockets=4 window=32 secs=5.00 responses_per_s=61234 ok=306170 ...
//! ```

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use hdrhistogram::Histogram;
use v6iot_sdk::coap::wire;
use v6iot_sdk::senml::{self, Record};

/// Longest run accepted (warm-up included), seconds.
const MAX_SECS: f64 = 3600.0;
/// Latency histogram bounds, microseconds.
const HIST_MAX_US: u64 = 60_000_000;

/// Closed-loop CoAP load generator: K sockets × W outstanding confirmable requests.
#[derive(Parser, Debug, Clone)]
#[command(name = "v6iot-flood", version, about)]
struct Cli {
    /// Server address (loopback).
    #[arg(long, default_value = "[::1]:5683")]
    target: SocketAddr,
    /// Uri-Path, `/`-separated.
    #[arg(long, default_value = "t")]
    path: String,
    /// Request method.
    #[arg(long, value_enum, default_value_t = Method::Post)]
    method: Method,
    /// Content-Format option value; `none` omits the option.
    #[arg(long, default_value = "112")]
    content_format: String,
    /// Number of sockets (one thread each).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Confirmable requests outstanding per socket.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Measured period, seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up before the measured period, seconds (load runs, nothing is counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// A request unanswered for this long counts as a timeout and is forgotten.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Stop after sending this many requests in all (a bound on the loop).
    #[arg(long, default_value_t = 200_000_000)]
    max_requests: u64,
    /// Count any answer to a request as accepted (for a server that does not speak CoAP).
    #[arg(long)]
    any_answer: bool,
    /// Also print the result as one JSON object on a second line.
    #[arg(long)]
    json: bool,
    /// OSCORE: the credentials CSV; socket n is the device on line n (needs as many lines as
    /// sockets).
    #[arg(long)]
    credentials: Option<std::path::PathBuf>,
    /// OSCORE: where the next free sender sequence number of each kid is kept between runs
    /// (default: the credentials file's name + `.flood-seq`).
    #[arg(long)]
    seq_file: Option<std::path::PathBuf>,
    /// OSCORE: requests protected in advance per socket (default: enough for 100,000 requests/s
    /// over the whole run, shared by the sockets). A socket that uses them all stops sending.
    #[arg(long)]
    presign: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Post,
    Put,
}

/// What one socket's thread counted.
struct Tally {
    ok: u64,
    other: u64,
    resets: u64,
    timeouts: u64,
    late: u64,
    sent: u64,
    /// OSCORE mode: the pre-protected requests ran out.
    exhausted: bool,
    codes: [u64; 256],
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            ok: 0,
            other: 0,
            resets: 0,
            timeouts: 0,
            late: 0,
            sent: 0,
            exhausted: false,
            codes: [0; 256],
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, 3)?,
        })
    }

    fn add(&mut self, o: &Tally) -> anyhow::Result<()> {
        self.ok += o.ok;
        self.other += o.other;
        self.resets += o.resets;
        self.timeouts += o.timeouts;
        self.late += o.late;
        self.sent += o.sent;
        self.exhausted |= o.exhausted;
        for (a, b) in self.codes.iter_mut().zip(o.codes.iter()) {
            *a += *b;
        }
        self.latency_us.add(&o.latency_us)?;
        Ok(())
    }
}

/// The fixed parts of a run that every socket thread shares.
struct Plan {
    target: SocketAddr,
    template: Vec<u8>,
    /// OSCORE mode: per socket, the registration and the pre-protected requests.
    devices: Vec<std::sync::Mutex<Option<oscore_mode::Prepared>>>,
    window: usize,
    timeout: Duration,
    measure_from: Instant,
    measure_until: Instant,
    any_answer: bool,
    max_requests: u64,
    sent_total: AtomicU64,
    stop: AtomicBool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.sockets >= 1 && cli.sockets <= 1024,
        "--sockets: 1..=1024"
    );
    anyhow::ensure!(cli.window >= 1 && cli.window <= 4096, "--window: 1..=4096");
    anyhow::ensure!(
        cli.secs > 0.0 && cli.warmup >= 0.0 && cli.secs + cli.warmup <= MAX_SECS,
        "--secs + --warmup must be positive and at most {MAX_SECS} s"
    );
    anyhow::ensure!(
        cli.target.ip().is_loopback(),
        "--target must be a loopback address (benchmarks stay on this machine)"
    );
    let template = request_template(&cli)?;
    let devices = match &cli.credentials {
        Some(path) => oscore_mode::prepare(&cli, path)?
            .into_iter()
            .map(|p| std::sync::Mutex::new(Some(p)))
            .collect(),
        None => Vec::new(),
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cli.warmup);
    let plan = Arc::new(Plan {
        target: cli.target,
        template,
        devices,
        window: cli.window,
        timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        measure_from,
        measure_until: measure_from + Duration::from_secs_f64(cli.secs),
        any_answer: cli.any_answer,
        max_requests: cli.max_requests,
        sent_total: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut threads = Vec::with_capacity(cli.sockets);
    for n in 0..cli.sockets {
        let plan = plan.clone();
        let handle = std::thread::Builder::new()
            .name(format!("flood-{n}"))
            .spawn(move || run_socket(&plan, n))
            .context("spawn a socket thread")?;
        threads.push(handle);
    }
    let mut total = Tally::new()?;
    for t in threads {
        let tally = t
            .join()
            .map_err(|_| anyhow::anyhow!("a socket thread panicked"))??;
        total.add(&tally)?;
    }
    let measured = plan
        .measure_until
        .min(Instant::now())
        .saturating_duration_since(plan.measure_from)
        .as_secs_f64();
    report(&cli, &total, measured);
    Ok(())
}

/// The request as bytes; message ID (bytes 2..4) and token (bytes 4..8) are patched per send.
fn request_template(cli: &Cli) -> anyhow::Result<Vec<u8>> {
    let pack = vec![Record {
        bn: Some("urn:dev:bench:".to_owned()),
        ..Record::measurement("t", "Cel", 21.5)
    }];
    let body = senml::to_cbor(&pack).context("encode the SenML body")?;
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(match cli.method {
        Method::Post => RequestType::Post,
        Method::Put => RequestType::Put,
    });
    p.set_token(vec![0; 4]);
    for seg in cli.path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if cli.content_format != "none" {
        let cf: u32 = cli
            .content_format
            .parse()
            .context("--content-format: a number or `none`")?;
        p.add_option(CoapOption::ContentFormat, wire::write_uint(cf));
    }
    p.payload = body;
    wire::encode(&p).context("encode the request")
}

/// One socket: W requests outstanding until the run ends.
fn run_socket(plan: &Plan, n: usize) -> anyhow::Result<Tally> {
    let bind: SocketAddr = if plan.target.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    };
    let socket = UdpSocket::bind(bind).context("bind")?;
    socket.connect(plan.target).context("connect")?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let prepared = match plan.devices.get(n) {
        Some(slot) => slot.lock().ok().and_then(|mut p| p.take()),
        None => None,
    };
    let presigned = match prepared {
        Some(p) => {
            oscore_mode::register(&socket, &p)?;
            Some(p.requests.into_iter())
        }
        None => None,
    };
    let mut s = SocketState {
        socket,
        packet: plan.template.clone(),
        presigned,
        sent_at: vec![None; 1 << 16],
        order: VecDeque::with_capacity(plan.window * 4),
        outstanding: 0,
        next_mid: (n as u16).wrapping_mul(7919),
        token_hi: (n as u16).to_be_bytes(),
        tally: Tally::new()?,
    };
    let mut buf = [0u8; 2048];
    // Slow start: one request, then up to two more per completion until W are outstanding, so
    // that the window does not arrive as one burst larger than the server's receive buffer.
    s.send(plan, Instant::now())?;
    let mut next_scan = Instant::now() + Duration::from_millis(20);
    loop {
        let received = s.socket.recv(&mut buf);
        let now = Instant::now();
        if now >= plan.measure_until || plan.stop.load(Ordering::Relaxed) {
            break;
        }
        match received {
            Ok(len) => {
                if let Some(bytes) = buf.get(..len)
                    && s.on_answer(plan, now, bytes)
                {
                    for _ in 0..2 {
                        if s.outstanding < plan.window {
                            s.send(plan, now)?;
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ECONNREFUSED from an earlier send (nobody listening): counts as nothing; the
            // request times out.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e).context("receive"),
        }
        if now >= next_scan {
            next_scan = now + Duration::from_millis(20);
            s.expire(plan, now);
            if s.outstanding == 0 {
                s.send(plan, now)?;
            }
        }
    }
    Ok(s.tally)
}

struct SocketState {
    socket: UdpSocket,
    packet: Vec<u8>,
    /// OSCORE mode: the protected requests still to send, in sequence-number order.
    presigned: Option<std::vec::IntoIter<Vec<u8>>>,
    /// Send time of the request outstanding with each message ID.
    sent_at: Vec<Option<Instant>>,
    /// (message ID, send time) in send order; answered entries are dropped lazily.
    order: VecDeque<(u16, Instant)>,
    /// Requests sent and neither answered nor expired.
    outstanding: usize,
    next_mid: u16,
    token_hi: [u8; 2],
    tally: Tally,
}

impl SocketState {
    /// Sends one new request (unless the run's request budget is spent).
    fn send(&mut self, plan: &Plan, now: Instant) -> anyhow::Result<()> {
        if plan.sent_total.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
            plan.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(pool) = self.presigned.as_mut() {
            match pool.next() {
                Some(next) => self.packet = next,
                None => {
                    self.tally.exhausted = true;
                    return Ok(());
                }
            }
        }
        self.next_mid = self.next_mid.wrapping_add(1);
        let mid = self.next_mid;
        if let Some(b) = self.packet.get_mut(2..4) {
            b.copy_from_slice(&mid.to_be_bytes());
        }
        if let Some(b) = self.packet.get_mut(4..6) {
            b.copy_from_slice(&self.token_hi);
        }
        if let Some(b) = self.packet.get_mut(6..8) {
            b.copy_from_slice(&mid.to_be_bytes());
        }
        if let Some(slot) = self.sent_at.get_mut(usize::from(mid)) {
            if slot.is_some() {
                // the message ID came round while its request was still unanswered
                self.tally.timeouts += 1;
                self.outstanding = self.outstanding.saturating_sub(1);
            }
            *slot = Some(now);
        }
        self.outstanding += 1;
        self.order.push_back((mid, now));
        self.tally.sent += 1;
        match self.socket.send(&self.packet) {
            Ok(_) => Ok(()),
            // a full send buffer or an ICMP error from an earlier datagram: the request is
            // lost and will time out like any other loss
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e).context("send"),
        }
    }

    /// Takes an answer; true when it completed an outstanding request (send the next one).
    fn on_answer(&mut self, plan: &Plan, now: Instant, bytes: &[u8]) -> bool {
        let Some(&[b0, code, m0, m1]) = bytes.get(..4) else {
            self.tally.other += 1;
            return false;
        };
        let kind = (b0 >> 4) & 3;
        let mid = u16::from_be_bytes([m0, m1]);
        // an empty ACK (separate response to follow) or a CON/NON response: not a completion
        if (kind != 2 && kind != 3) || (kind == 2 && code == 0 && !plan.any_answer) {
            self.tally.other += 1;
            return false;
        }
        let Some(sent) = self
            .sent_at
            .get_mut(usize::from(mid))
            .and_then(Option::take)
        else {
            self.tally.late += 1;
            return false;
        };
        self.outstanding = self.outstanding.saturating_sub(1);
        if now < plan.measure_from {
            return true;
        }
        if kind == 3 {
            self.tally.resets += 1;
        } else if plan.any_answer || code >> 5 == 2 {
            self.tally.ok += 1;
            let us = u64::try_from(now.saturating_duration_since(sent).as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, HIST_MAX_US);
            let _ = self.tally.latency_us.record(us);
        } else {
            self.tally.other += 1;
        }
        if let Some(c) = self.tally.codes.get_mut(usize::from(code)) {
            *c += 1;
        }
        true
    }

    /// Forgets requests unanswered for longer than the timeout.
    fn expire(&mut self, plan: &Plan, now: Instant) {
        while let Some(&(mid, at)) = self.order.front() {
            let slot = self.sent_at.get_mut(usize::from(mid));
            match slot {
                Some(slot) if *slot == Some(at) => {
                    if now.saturating_duration_since(at) < plan.timeout {
                        break;
                    }
                    *slot = None;
                    if now >= plan.measure_from {
                        self.tally.timeouts += 1;
                    }
                    self.outstanding = self.outstanding.saturating_sub(1);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

fn report(cli: &Cli, t: &Tally, measured_s: f64) {
    let rate = if measured_s > 0.0 {
        t.ok as f64 / measured_s
    } else {
        0.0
    };
    let h = &t.latency_us;
    let codes: Vec<String> = t
        .codes
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .map(|(c, n)| format!("{}.{:02}:{n}", c >> 5, c & 31))
        .collect();
    println!(
        "target={} sockets={} window={} secs={:.2} responses_per_s={:.0} ok={} other={} resets={} timeouts={} late={} sent={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} codes={}",
        cli.target,
        cli.sockets,
        cli.window,
        measured_s,
        rate,
        t.ok,
        t.other,
        t.resets,
        t.timeouts,
        t.late,
        t.sent,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        if codes.is_empty() {
            "-".to_owned()
        } else {
            codes.join(",")
        }
    );
    if t.exhausted {
        println!("warning: a socket used all its pre-protected requests (raise --presign)");
    }
    if cli.json {
        let json = serde_json::json!({
            "target": cli.target.to_string(),
            "sockets": cli.sockets,
            "window": cli.window,
            "secs": measured_s,
            "responses_per_s": rate,
            "ok": t.ok,
            "other": t.other,
            "resets": t.resets,
            "timeouts": t.timeouts,
            "late": t.late,
            "sent": t.sent,
            "p50_us": h.value_at_quantile(0.5),
            "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(),
            "codes": codes,
            "oscore": cli.credentials.is_some(),
            "presigned_exhausted": t.exhausted,
        });
        println!("{json}");
    }
}

/// The OSCORE mode: credentials, sequence numbers reserved on disk, requests protected in
/// advance, the registration.
mod oscore_mode {
    use std::collections::HashMap;
    use std::net::UdpSocket;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
    use v6iot_edge_router::registry_db::{DeviceRecord, csv};
    use v6iot_sdk::coap::wire;
    use v6iot_sdk::oscore::{self, ContextConfig, ContextInput, SecurityContext};

    use super::Cli;

    /// One socket's device, ready to go.
    pub(super) struct Prepared {
        /// The device id (its RD endpoint name).
        pub(super) id: String,
        /// The protected registration request.
        pub(super) registration: Vec<u8>,
        /// The protected telemetry requests, in sequence-number order.
        pub(super) requests: Vec<Vec<u8>>,
    }

    fn read_devices(path: &Path, wanted: usize) -> anyhow::Result<Vec<DeviceRecord>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the credentials {}", path.display()))?;
        let mut lines = text.lines().filter(|l| !csv::is_skipped(l));
        let header = lines.next().context("the credentials file is empty")?;
        csv::check_header(header).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let devices = lines
            .take(wanted)
            .enumerate()
            .map(|(i, l)| {
                csv::parse_line(l)
                    .map_err(|e| anyhow::anyhow!("{} device line {}: {e}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            devices.len() == wanted,
            "{} has {} devices; --sockets {wanted} needs one per socket",
            path.display(),
            devices.len()
        );
        Ok(devices)
    }

    /// `kid_hex next_free_sequence_number` per line.
    fn read_seq(path: &Path) -> anyhow::Result<HashMap<String, u64>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (kid, seq) = l
                    .split_once(' ')
                    .with_context(|| format!("{}: bad line `{l}`", path.display()))?;
                Ok((kid.to_owned(), seq.trim().parse()?))
            })
            .collect()
    }

    fn write_seq(path: &Path, seq: &HashMap<String, u64>) -> anyhow::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut lines: Vec<String> = seq.iter().map(|(k, v)| format!("{k} {v}")).collect();
        lines.sort();
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(lines.join("\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reserves the sequence numbers on disk, then protects every request of the run.
    pub(super) fn prepare(cli: &Cli, path: &Path) -> anyhow::Result<Vec<Prepared>> {
        let devices = read_devices(path, cli.sockets)?;
        let seq_path = cli.seq_file.clone().unwrap_or_else(|| {
            let mut p = path.as_os_str().to_owned();
            p.push(".flood-seq");
            PathBuf::from(p)
        });
        let per_socket = cli.presign.unwrap_or_else(|| {
            let total = 100_000.0 * (cli.warmup + cli.secs);
            (total / cli.sockets as f64).ceil() as usize
        });
        let per_socket = per_socket
            .min(usize::try_from(cli.max_requests / cli.sockets as u64 + 1).unwrap_or(usize::MAX));
        let mut seq = read_seq(&seq_path)?;
        let mut starts = Vec::with_capacity(devices.len());
        for d in &devices {
            let start = seq.get(&hex(&d.kid)).copied().unwrap_or(0);
            // the registration and the telemetry, plus the context's own persist step
            seq.insert(hex(&d.kid), start + per_socket as u64 + 1 + 1024);
            starts.push(start);
        }
        write_seq(&seq_path, &seq).with_context(|| format!("write {}", seq_path.display()))?;
        let body = super::request_template(cli)?;
        let template = wire::parse(&body).context("re-read the request template")?;
        let began = Instant::now();
        let prepared = devices
            .iter()
            .zip(starts)
            .map(|(d, start)| protect_all(cli, d, start, per_socket, &template))
            .collect::<anyhow::Result<Vec<_>>>()?;
        eprintln!(
            "oscore: {} devices, {per_socket} requests each protected in {:.1} s; sequence numbers reserved in {}",
            prepared.len(),
            began.elapsed().as_secs_f64(),
            seq_path.display()
        );
        Ok(prepared)
    }

    fn protect_all(
        cli: &Cli,
        d: &DeviceRecord,
        start: u64,
        count: usize,
        template: &Packet,
    ) -> anyhow::Result<Prepared> {
        let input = ContextInput {
            master_secret: d.master_secret.as_bytes().to_vec(),
            master_salt: d.master_salt.clone().unwrap_or_default(),
            id_context: None,
            sender_id: d.kid.clone(),
            recipient_id: Vec::new(),
        };
        let config = ContextConfig {
            persist_step: 1024,
            ..ContextConfig::default()
        };
        let mut ctx = SecurityContext::restore(&input, config, start)
            .map_err(|e| anyhow::anyhow!("device {}: {e}", d.id))?;
        let mut protect = |packet: &Packet| -> anyhow::Result<Vec<u8>> {
            loop {
                match oscore::protect_request(&mut ctx, packet) {
                    Ok((p, _)) => return wire::encode(&p).context("encode"),
                    // reserved on disk already (prepare wrote start + count + margin)
                    Err(oscore::OscoreError::PersistPending) => {
                        if let Some(mark) = ctx.mark_to_persist() {
                            ctx.persisted(mark);
                        }
                    }
                    Err(e) => anyhow::bail!("device {}: {e}", d.id),
                }
            }
        };
        let mut reg = Packet::new();
        reg.header.set_type(MessageType::Confirmable);
        reg.header.code = MessageClass::Request(RequestType::Post);
        reg.header.message_id = 1;
        reg.set_token(vec![0xfe, 0xed, 0, 1]);
        reg.add_option(CoapOption::UriPath, b"rd".to_vec());
        for q in [
            format!("ep={}", d.id),
            "lt=3600".to_owned(),
            "b=U".to_owned(),
        ] {
            reg.add_option(CoapOption::UriQuery, q.into_bytes());
        }
        reg.add_option(CoapOption::ContentFormat, wire::write_uint(40));
        reg.payload = format!("<{}>;ct=112", cli.path).into_bytes();
        let registration = protect(&reg)?;
        let requests = (0..count)
            .map(|_| protect(template))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Prepared {
            id: d.id.clone(),
            registration,
            requests,
        })
    }

    /// Registers the socket's device: up to five tries, two seconds each; a 2.xx (the OSCORE
    /// outer 2.04) is success.
    pub(super) fn register(socket: &UdpSocket, p: &Prepared) -> anyhow::Result<()> {
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            socket
                .send(&p.registration)
                .context("send the registration")?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let Ok(len) = socket.recv(&mut buf) else {
                    continue;
                };
                let Some(answer) = buf.get(..len).and_then(|b| wire::parse(b).ok()) else {
                    continue;
                };
                if answer.header.message_id != 1 {
                    continue;
                }
                let code = u8::from(answer.header.code);
                anyhow::ensure!(
                    code >> 5 == 2,
                    "device {}: registration refused with {}.{:02}",
                    p.id,
                    code >> 5,
                    code & 31
                );
                return Ok(());
            }
        }
        anyhow::bail!("device {}: no answer to the registration", p.id)
    }
}
