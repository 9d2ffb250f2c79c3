//! `v6iot-mqtt-ceiling`: the broker's own QoS 1 ceiling, for benchmarks (loopback only).
//!
//! One plain rumqttc publisher sends `--count` QoS 1 messages of `--payload-bytes` bytes as fast
//! as the broker acknowledges them, with at most `--window` unacknowledged; one rumqttc
//! subscriber (QoS 1, in the same process) counts what arrives. Each payload starts with a
//! sequence number and its send time, so the subscriber counts distinct messages, duplicates
//! and losses, and measures publish-to-delivery latency.
//!
//! Bounded: stops when every message has arrived or after `--max-secs`, whichever comes first.
//!
//! ```text
//! v6iot-mqtt-ceiling --mqtt-url mqtt://[::1]:1883 --count 200000 --window 64 --payload-bytes 160
//! count=200000 window=64 payload_bytes=160 acked=200000 delivered=200000 lost=0 ... delivered_per_s=61000 ...
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use v6iot_simulator::load::mqtt_host_port;

/// The broker's QoS 1 ceiling: one publisher with a window, one subscriber.
#[derive(Parser, Debug, Clone)]
#[command(name = "v6iot-mqtt-ceiling", version, about)]
struct Cli {
    /// The broker (loopback).
    #[arg(long, default_value = "mqtt://[::1]:1883")]
    mqtt_url: String,
    /// Messages to publish (at most 50 million).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Most unacknowledged QoS 1 publishes (the edge's bridge uses 64).
    #[arg(long, default_value_t = 64)]
    window: u16,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 160)]
    payload_bytes: usize,
    /// Topic to publish on.
    #[arg(long, default_value = "v6iot/bench/ceiling/telemetry")]
    topic: String,
    /// Spread the messages over this many topics, `{topic}/{n}` in turn (the subscriber takes
    /// `{topic}/+`), as an edge publishes on one topic per device.
    #[arg(long, default_value_t = 1)]
    topics: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Also print the result as one JSON object on a second line.
    #[arg(long)]
    json: bool,
}

/// What the subscriber saw.
struct Seen {
    delivered: u64,
    duplicates: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    latency_us: Histogram<u64>,
    bits: Vec<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        cli.count >= 1 && cli.count <= 50_000_000,
        "--count: 1 to 50 million"
    );
    anyhow::ensure!(cli.payload_bytes >= 16, "--payload-bytes: at least 16");
    anyhow::ensure!(cli.window >= 1, "--window: at least 1");
    anyhow::ensure!(
        cli.topics >= 1 && cli.topics <= 1_000_000,
        "--topics: 1 to a million"
    );
    anyhow::ensure!(
        cli.max_secs >= 1 && cli.max_secs <= 3600,
        "--max-secs: 1 to 3600"
    );
    let (host, _) = mqtt_host_port(&cli.mqtt_url)?;
    anyhow::ensure!(
        host == "::1" || host == "localhost" || host.starts_with("127."),
        "--mqtt-url must be a loopback broker (benchmarks stay on this machine)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

fn options(url: &str, id: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = mqtt_host_port(url)?;
    let mut o = MqttOptions::new(format!("{id}-{}", std::process::id()), host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    Ok(o)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let origin = Instant::now();
    let give_up = origin + Duration::from_secs(cli.max_secs);

    // --- the subscriber: subscribe, wait for the SUBACK, then count ---
    let (sub, mut sub_events) = AsyncClient::new(options(&cli.mqtt_url, "v6iot-ceiling-sub")?, 64);
    let filter = if cli.topics > 1 {
        format!("{}/+", cli.topic)
    } else {
        cli.topic.clone()
    };
    sub.subscribe(filter, QoS::AtLeastOnce).await?;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("subscriber cannot reach {}: {e}", cli.mqtt_url),
            Err(_) => anyhow::bail!("no SUBACK before --max-secs"),
        }
    }
    let words = usize::try_from(cli.count.div_ceil(64)).context("--count too large")?;
    let seen = Arc::new(std::sync::Mutex::new(Seen {
        delivered: 0,
        duplicates: 0,
        first_at: None,
        last_at: None,
        latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        bits: vec![0; words],
    }));
    let (all_in_tx, all_in_rx) = tokio::sync::oneshot::channel::<()>();
    let count = cli.count;
    let seen_sub = seen.clone();
    let subscriber = tokio::spawn(async move {
        let _sub = sub;
        let mut all_in = Some(all_in_tx);
        loop {
            match sub_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    let Some((seq, sent_ns)) = decode(&p.payload) else {
                        continue;
                    };
                    let Ok(mut s) = seen_sub.lock() else {
                        return;
                    };
                    let word = usize::try_from(seq / 64).ok();
                    let bit = 1u64 << (seq % 64);
                    let Some(w) = word.and_then(|i| s.bits.get_mut(i)) else {
                        continue;
                    };
                    if *w & bit != 0 {
                        s.duplicates += 1;
                        continue;
                    }
                    *w |= bit;
                    s.delivered += 1;
                    s.first_at.get_or_insert(now);
                    s.last_at = Some(now);
                    let sent = origin + Duration::from_nanos(sent_ns);
                    let us = u64::try_from(now.saturating_duration_since(sent).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    let _ = s.latency_us.record(us.min(3_600_000_000));
                    if s.delivered >= count
                        && let Some(tx) = all_in.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "subscriber connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    // --- the publisher: `window` in flight, counts PUBACKs ---
    let mut o = options(&cli.mqtt_url, "v6iot-ceiling-pub")?;
    o.set_inflight(cli.window);
    let (publisher, mut pub_events) = AsyncClient::new(o, usize::from(cli.window) * 2);
    let acked = Arc::new(AtomicU64::new(0));
    let last_ack_ns = Arc::new(AtomicU64::new(0));
    let (acked_ev, last_ack_ev) = (acked.clone(), last_ack_ns.clone());
    let acker = tokio::spawn(async move {
        loop {
            match pub_events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked_ev.fetch_add(1, Ordering::Relaxed);
                    let ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    last_ack_ev.store(ns, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "publisher connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let start = Instant::now();
    let topics: Vec<String> = if cli.topics > 1 {
        (0..cli.topics)
            .map(|n| format!("{}/{n}", cli.topic))
            .collect()
    } else {
        vec![cli.topic.clone()]
    };
    let payload_bytes = cli.payload_bytes;
    let producer = tokio::spawn(async move {
        for seq in 0..count {
            if Instant::now() >= give_up {
                break;
            }
            let sent_ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let payload = encode(seq, sent_ns, payload_bytes);
            let n = usize::try_from(seq % topics.len() as u64).unwrap_or(0);
            let topic = topics.get(n).cloned().unwrap_or_default();
            if publisher
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let left = give_up.saturating_duration_since(Instant::now());
    let complete = tokio::time::timeout(left, all_in_rx).await.is_ok();
    let _publisher = producer.await;
    // give the last PUBACKs a moment (they may trail the last delivery)
    let ack_deadline = Instant::now() + Duration::from_secs(2);
    while acked.load(Ordering::Relaxed) < count && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    subscriber.abort();
    acker.abort();

    let s = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("subscriber state poisoned"))?;
    let acked = acked.load(Ordering::Relaxed);
    let delivered_span = s
        .last_at
        .map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64());
    let ack_span = Duration::from_nanos(last_ack_ns.load(Ordering::Relaxed))
        .saturating_sub(start.saturating_duration_since(origin))
        .as_secs_f64();
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let h = &s.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let lost = acked.saturating_sub(s.delivered);
    println!(
        "count={} window={} payload_bytes={} complete={} acked={} delivered={} duplicates={} lost={} secs={:.3} acked_per_s={:.0} delivered_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        cli.count,
        cli.window,
        cli.payload_bytes,
        complete,
        acked,
        s.delivered,
        s.duplicates,
        lost,
        delivered_span,
        rate(acked, ack_span),
        rate(s.delivered, delivered_span),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
    );
    if cli.json {
        let json = serde_json::json!({
            "count": cli.count,
            "window": cli.window,
            "payload_bytes": cli.payload_bytes,
            "complete": complete,
            "acked": acked,
            "delivered": s.delivered,
            "duplicates": s.duplicates,
            "lost": lost,
            "secs": delivered_span,
            "acked_per_s": rate(acked, ack_span),
            "delivered_per_s": rate(s.delivered, delivered_span),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
        });
        println!("{json}");
    }
    anyhow::ensure!(complete, "not every message arrived within --max-secs");
    Ok(())
}

/// `seq` (8 bytes) · send time in ns since the origin (8 bytes) · padding to `len`.
fn encode(seq: u64, sent_ns: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&sent_ns.to_be_bytes());
    v.resize(len, b'x');
    v
}

fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}
