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
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cli.warmup);
    let plan = Arc::new(Plan {
        target: cli.target,
        template,
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
    let mut s = SocketState {
        socket,
        packet: plan.template.clone(),
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
        });
        println!("{json}");
    }
}
