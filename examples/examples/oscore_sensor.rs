//! The valve sensor on Linux with OSCORE: it registers with the edge router, reports SenML-CBOR
//! every few seconds and takes valve commands — every message protected end to end (RFC 8613).
//!
//! Needs: `v6iot-sdk` with its default features (`std`, `tokio`); this crate's `std` feature.
//!
//! The device's credentials come from the provisioning CSV the edge was given (see
//! `examples/credentials/demo.csv` and the README): the same file, read for one device. Its
//! OSCORE state (sender sequence-number mark, replay floor) lives in a state file written before
//! any number is used, so a restart never reuses a nonce (RFC 8613 Appendix B.1).
//!
//! Run an edge that knows the device (`v6iot-edge devices import examples/credentials/demo.csv`,
//! then `v6iot-edge run`), then:
//!
//! ```text
//! cargo run -p v6iot-examples --example oscore_sensor -- \
//!     --edge [::1]:5683 --credentials examples/credentials/demo.csv --id sensor-1 \
//!     --state /tmp/sensor-1.state
//! ```
//!
//! and on the platform side `--example platform` (or `mosquitto_sub -t 'v6iot/+/sensor-1/#'`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use v6iot_examples::credentials::DeviceCredentials;
use v6iot_examples::valve_sensor::{self, ValveSensor};
use v6iot_sdk::coap::{Config, Device, Event};
use v6iot_sdk::store::SequenceFile;
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::UplinkConfig;

/// The command line: `--edge ADDR --credentials CSV --id ID [--state FILE] [--bind ADDR]
/// [--every SECONDS]`.
struct Args {
    edge: SocketAddr,
    credentials: PathBuf,
    id: String,
    state: PathBuf,
    bind: SocketAddr,
    every: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut given = std::collections::HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        given.insert(flag, value);
    }
    let get = |flag: &str| given.get(flag).cloned();
    let id = get("--id").context("--id ID is required (the device's line in the CSV)")?;
    Ok(Args {
        edge: get("--edge").as_deref().unwrap_or("[::1]:5683").parse()?,
        credentials: get("--credentials")
            .context("--credentials CSV is required")?
            .into(),
        state: get("--state").map_or_else(|| format!("{id}.state").into(), PathBuf::from),
        bind: get("--bind").as_deref().unwrap_or("[::]:0").parse()?,
        every: Duration::from_secs_f64(get("--every").as_deref().unwrap_or("5").parse()?),
        id,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;

    // 1. Credentials and the OSCORE state the last run left (all zero the first time).
    let creds = DeviceCredentials::load(&args.credentials, &args.id)?;
    let (mut state_file, stored) = SequenceFile::open(&args.state)
        .with_context(|| format!("state file {}", args.state.display()))?;
    let context = creds.context(stored)?;

    // 2. The device: the shared tree, the application, OSCORE, and the uplink to the edge.
    let (tree, _ids) = valve_sensor::tree()?;
    let now = Instant::now();
    let app = ValveSensor::new(&args.id, now + Duration::from_secs(1), args.every);
    let seed = creds.kid.iter().fold(0u64, |s, b| s << 8 | u64::from(*b));
    let device = Device::new(Config::default(), seed, Arc::new(tree), app)
        .with_credentials(context)
        .with_uplink(now, UplinkConfig::new(args.edge, args.id.clone()));
    let mut device = device;

    // 3. Run it on a UDP socket until Ctrl-C; the driver writes the OSCORE state before use.
    let socket = tokio::net::UdpSocket::bind(args.bind).await?;
    println!(
        "{} on {} reporting to {} every {:?}",
        args.id,
        socket.local_addr()?,
        args.edge,
        args.every
    );
    let on_event = |event: Event| println!("event: {event:?}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    v6iot_sdk::driver::run_with_store(&socket, &mut device, &mut state_file, on_event, shutdown)
        .await?;
    let app = device.app();
    println!(
        "stopped: {} reports made, {} acknowledged, valve {}",
        app.reports_made(),
        device.reporter().map_or(0, |r| r.stats().acked),
        if app.valve_open() { "open" } else { "closed" }
    );
    Ok(())
}
