//! The platform's side: subscribe to one device's telemetry and send it a command, over MQTT —
//! what an industrial internet platform does with the topics the edge router publishes
//! (shared/DESIGN.md §9):
//!
//! ```text
//! v6iot/{site}/{device}/telemetry          SenML-JSON, one message per report
//! v6iot/{site}/{device}/cmd/{req}          platform → device: {"method", "path", "payload"}
//! v6iot/{site}/{device}/cmd/{req}/result   the device's answer, or why it did not run
//! ```
//!
//! Needs: rumqttc (plain TCP here; enable its `use-rustls` feature for `mqtts://`).
//!
//! ```text
//! cargo run -p v6iot-examples --example platform -- \
//!     --broker [::1]:1883 --site plant1 --device sensor-1 --valve 1
//! ```
//!
//! It prints every telemetry message of the device; after the first one it sends `PUT
//! /actuators/valve` with the `--valve` value (if given) and prints the result. `--count N`
//! stops after N telemetry messages and the result.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// `--broker HOST:PORT --site SITE --device ID [--prefix v6iot] [--valve 0|1] [--count N]`.
struct Args {
    broker: std::net::SocketAddr,
    prefix: String,
    site: String,
    device: String,
    valve: Option<String>,
    count: Option<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut given = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        given.insert(flag, value);
    }
    let get = |flag: &str| given.get(flag).cloned();
    Ok(Args {
        broker: get("--broker").as_deref().unwrap_or("[::1]:1883").parse()?,
        prefix: get("--prefix").unwrap_or_else(|| "v6iot".into()),
        site: get("--site").context("--site SITE is required (the edge's site)")?,
        device: get("--device").context("--device ID is required")?,
        valve: get("--valve"),
        count: get("--count").map(|n| n.parse()).transpose()?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let base = format!("{}/{}/{}", args.prefix, args.site, args.device);
    let mut options = MqttOptions::new(
        format!("platform-{}", std::process::id()),
        args.broker.ip().to_string(),
        args.broker.port(),
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe(format!("{base}/telemetry"), QoS::AtLeastOnce)
        .await?;
    client
        .subscribe(format!("{base}/cmd/+/result"), QoS::AtLeastOnce)
        .await?;

    let request = format!("valve-{}", std::process::id());
    let (mut telemetry, mut command_sent, mut result_seen) = (0, false, args.valve.is_none());
    let mut subscriptions = 0;
    loop {
        let p = match events.poll().await? {
            Event::Incoming(Packet::Publish(p)) => p,
            Event::Incoming(Packet::SubAck(_)) => {
                subscriptions += 1;
                if subscriptions == 2 {
                    // Both topics are subscribed: nothing published from here on is missed.
                    println!("subscribed");
                }
                continue;
            }
            _ => continue,
        };
        let text = String::from_utf8_lossy(&p.payload);
        if p.topic.ends_with("/result") {
            println!("command result: {text}");
            result_seen = true;
        } else {
            telemetry += 1;
            // A SenML-JSON array, times absolute, names whole, with the edge's record id.
            println!("telemetry: {text}");
            if let Some(valve) = args.valve.as_deref().filter(|_| !command_sent) {
                let command = serde_json::json!({
                    "method": "PUT",
                    "path": "/actuators/valve",
                    "payload": valve,
                    "content_format": 0,
                    "ttl": 60,
                });
                client
                    .publish(
                        format!("{base}/cmd/{request}"),
                        QoS::AtLeastOnce,
                        false,
                        command.to_string(),
                    )
                    .await?;
                println!("sent PUT /actuators/valve {valve} as request {request}");
                command_sent = true;
            }
        }
        if args.count.is_some_and(|n| telemetry >= n) && result_seen {
            break;
        }
    }
    client.disconnect().await?;
    Ok(())
}
