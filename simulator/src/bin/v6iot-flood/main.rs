//! `v6iot-flood`: a closed-loop CoAP load generator for benchmarks (loopback only).
//!
//! K UDP sockets keep W confirmable requests outstanding each. Every request carries the same
//! valid SenML-CBOR body (`[{"bn":"urn:dev:bench:","n":"t","u":"Cel","v":21.5}]`), so the
//! v6iot edge router accepts it (with `coap.lab_accept_unregistered`), and the same bytes go to
//! any other server (libcoap's `coap-server`, the `udpecho` yardstick), so
//! all targets are measured the same way. A request completes when its piggybacked ACK arrives;
//! 2.xx answers are counted as accepted, and their round-trip times go into a latency histogram.
//! A request unanswered after `--timeout-ms` is counted as a timeout and forgotten (there is no
//! retransmission). Each socket opens its window by slow start (one request, then up to two
//! more per answer until W are outstanding), so neither the start nor the recovery after a loss
//! sends a burst larger than a server's receive buffer.
//!
//! The generator is meant to cost the server under test as little CPU as possible: the sockets
//! are spread over `--threads` threads (default min(K, 2)), each with one `epoll` set over its
//! non-blocking sockets; a wake-up reads the clock once, takes each ready socket's answers with
//! one `recvmmsg` (up to 64) and sends their refill with one `sendmmsg`. The bookkeeping of a
//! socket's requests is the sans-IO [`window`] module; [`driver`] moves the bytes.
//!
//! With `--credentials creds.csv` (the registry's credentials CSV, as `v6iot-sim provision`
//! writes it) socket `n` is the device on line `n`: it registers (`POST /rd?ep=ID`) before the
//! run's clock starts (every socket is opened first) and then sends its telemetry
//! OSCORE-protected (RFC 8613; Sender ID = the kid, the edge's Sender ID empty), so the edge
//! router's authenticated path is measured. The requests are protected before the run starts
//! (`--presign` per socket), so the generator spends no time on cryptography while measuring;
//! responses are judged by their outer code (an OSCORE success is an outer 2.04; refusals are
//! plain 4.01/4.00/4.02) and not decrypted. The sequence numbers a run reserves are written to
//! `--seq-file` before anything is sent, so that the next run starts above them (the edge
//! refuses replays, also across its restarts).
//!
//! Bounded by design: it stops after `--warmup + --secs` seconds (at most an hour), or once
//! `--max-requests` requests have been sent and each of them is answered or has expired,
//! whichever comes first.
//!
//! ```text
//! v6iot-flood --target [::1]:5683 --sockets 4 --window 32 --secs 5
//! target=[::1]:5683 sockets=4 window=32 secs=5.00 responses_per_s=61234 ok=306170 ...
//! ```

mod driver;
mod oscore_mode;
mod tally;
mod window;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use v6iot_sdk::coap::wire;
use v6iot_sdk::senml::{self, Record};

use crate::driver::{Budget, Run};
use crate::tally::Tally;
use crate::window::{Rules, Tick};

/// Longest run accepted (warm-up included), seconds.
const MAX_SECS: f64 = 3600.0;

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
    /// Number of sockets (each its own source port).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Threads that drive the sockets (socket n on thread n mod N); default: min(sockets, 2).
    #[arg(long)]
    threads: Option<usize>,
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
    /// OSCORE: requests protected in advance per socket (default: enough for 150,000 requests/s
    /// over the whole run, shared by the sockets). A socket that uses them all stops sending.
    #[arg(long)]
    presign: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Post,
    Put,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.sockets >= 1 && cli.sockets <= 1024,
        "--sockets: 1..=1024"
    );
    anyhow::ensure!(cli.window >= 1 && cli.window <= 4096, "--window: 1..=4096");
    let threads = cli.threads.unwrap_or(cli.sockets.min(2));
    anyhow::ensure!(
        threads >= 1 && threads <= cli.sockets,
        "--threads: 1..=--sockets"
    );
    anyhow::ensure!(
        cli.secs > 0.0 && cli.warmup >= 0.0 && cli.secs + cli.warmup <= MAX_SECS,
        "--secs + --warmup must be positive and at most {MAX_SECS} s"
    );
    anyhow::ensure!(
        cli.target.ip().is_loopback(),
        "--target must be a loopback address (benchmarks stay on this machine)"
    );
    let template = request_template(&cli)?;
    let mut devices = match &cli.credentials {
        Some(path) => oscore_mode::prepare(&cli, path)?,
        None => Vec::new(),
    }
    .into_iter();
    // socket n (the device on line n) goes to thread n mod N
    let mut shares: Vec<Vec<(usize, Option<oscore_mode::Prepared>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (n, share) in (0..cli.sockets).zip((0..threads).cycle()) {
        if let Some(s) = shares.get_mut(share) {
            s.push((n, devices.next()));
        }
    }
    let warmup = Duration::from_secs_f64(cli.warmup);
    let timeout_us = u32::try_from(cli.timeout_ms.max(1).saturating_mul(1000)).unwrap_or(u32::MAX);
    let rules = Rules {
        window: cli.window,
        timeout_us,
        measure_from: Tick::after(warmup),
        any_answer: cli.any_answer,
    };
    let members = open_sockets(&cli, &template, &rules, shares)?;
    // the run's clock starts once every socket is open (and registered)
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_until = measure_from + Duration::from_secs_f64(cli.secs);
    let run = Run {
        rules,
        epoch: start,
        until: measure_until,
        budget: Budget::new(cli.max_requests),
    };
    let mut total = Tally::new()?;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::with_capacity(threads);
        for (t, share) in members.into_iter().enumerate() {
            let run = &run;
            let handle = std::thread::Builder::new()
                .name(format!("flood-{t}"))
                .spawn_scoped(scope, move || driver::run_thread(run, share))
                .context("spawn a generator thread")?;
            handles.push(handle);
        }
        for h in handles {
            let tally = h
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
            total.add(&tally)?;
        }
        Ok(())
    })?;
    let measured = measure_until
        .min(Instant::now())
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    report(&cli, threads, &total, measured);
    Ok(())
}

/// Opens (and in OSCORE mode registers) every thread's share of the sockets, each share on a
/// thread of its own as the run will; before the run's clock starts.
fn open_sockets(
    cli: &Cli,
    template: &[u8],
    rules: &Rules,
    shares: Vec<Vec<(usize, Option<oscore_mode::Prepared>)>>,
) -> anyhow::Result<Vec<Vec<driver::Member>>> {
    std::thread::scope(|scope| {
        let handles = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(n, device)| driver::open(cli.target, template, rules, n, device))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect::<Vec<_>>();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a thread opening sockets panicked"))?
            })
            .collect()
    })
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

/// Prints the result line (and the JSON object with `--json`).
fn report(cli: &Cli, threads: usize, t: &Tally, measured_s: f64) {
    let rate = if measured_s > 0.0 {
        t.ok as f64 / measured_s
    } else {
        0.0
    };
    let h = &t.latency_us;
    let codes = t.code_list();
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
            "threads": threads,
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
