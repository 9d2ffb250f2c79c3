//! The valve sensor of `oscore_sensor.rs`, driven by hand through the sans-IO API: no async
//! runtime, one plain loop — what a firmware author copies, replacing the UDP socket with the
//! radio or the modem, the clock with a hardware timer and the state file with a flash page.
//!
//! Needs: `v6iot-sdk` with `std` only for the socket, the clock and the file used here; the
//! device core itself is `no_std` (see `firmware/`, which runs the same loop on a Cortex-M4).
//!
//! The loop, every turn:
//! 1. write the OSCORE state the device asks for, durably, before anything is sent
//!    (`Device::persist` through a [`StateStore`]: here a file, on a device a flash page);
//! 2. send what the device has to send (`poll_transmit`), read its events (`poll_event`);
//! 3. wait for a datagram until the device's next deadline (`poll_timeout`), then hand in
//!    whichever came first: the datagram (`handle_datagram`) or the time (`handle_timeout`).
//!
//! Run it like `oscore_sensor` (same flags), plus `--reports N` to stop after N acknowledged
//! reports:
//!
//! ```text
//! cargo run -p v6iot-examples --example sans_io_sensor -- \
//!     --edge [::1]:5683 --credentials examples/credentials/demo.csv --id sensor-1 --reports 3
//! ```

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use v6iot_examples::credentials::DeviceCredentials;
use v6iot_examples::valve_sensor::{self, ValveSensor};
use v6iot_sdk::coap::{Config, Device};
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::persist::StateStore;
use v6iot_sdk::store::{format_state, parse_state, write_atomically};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::UplinkConfig;

/// Where the OSCORE state lives: on a microcontroller a flash page (erase, write, verify); here
/// a file, replaced atomically. `store` returns only once the state would survive power loss.
struct StatePage {
    path: PathBuf,
}

impl StatePage {
    /// The page and what it holds (all zero when it was never written).
    fn open(path: PathBuf) -> anyhow::Result<(StatePage, DurableState)> {
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => parse_state(&text)
                .with_context(|| format!("{} holds no OSCORE state", path.display()))?,
            Err(e) if e.kind() == ErrorKind::NotFound => DurableState::default(),
            Err(e) => return Err(e.into()),
        };
        Ok((StatePage { path }, stored))
    }
}

impl StateStore for StatePage {
    type Error = std::io::Error;

    fn store(&mut self, state: DurableState) -> std::io::Result<()> {
        write_atomically(&self.path, format_state(state).as_bytes())
    }
}

/// `--edge ADDR --credentials CSV --id ID [--state FILE] [--every SECONDS] [--reports N]`.
struct Args {
    edge: SocketAddr,
    credentials: PathBuf,
    id: String,
    state: PathBuf,
    every: Duration,
    reports: Option<u32>,
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
        every: Duration::from_secs_f64(get("--every").as_deref().unwrap_or("5").parse()?),
        reports: get("--reports").map(|n| n.parse()).transpose()?,
        id,
    })
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let creds = DeviceCredentials::load(&args.credentials, &args.id)?;
    let (mut page, stored) = StatePage::open(args.state.clone())?;

    let (tree, _ids) = valve_sensor::tree()?;
    let now = Instant::now();
    let mut app = ValveSensor::new(&args.id, now + Duration::from_secs(1), args.every);
    if let Some(n) = args.reports {
        app = app.stop_after(n);
    }
    let seed = creds.kid.iter().fold(0u64, |s, b| s << 8 | u64::from(*b));
    let mut device = Device::new(Config::default(), seed, Arc::new(tree), app)
        .with_credentials(creds.context(stored)?)
        .with_uplink(now, UplinkConfig::new(args.edge, args.id.clone()));

    let socket = UdpSocket::bind(if args.edge.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    println!("{} on {} (sans-IO loop)", args.id, socket.local_addr()?);
    let mut buf = [0u8; 1280];
    let mut retry_store_at = None;
    loop {
        // 1. Durable state first: nothing that needs it is sent until it is written.
        if retry_store_at.is_none_or(|t| t <= Instant::now()) {
            retry_store_at = None;
            if let Err(e) = device.persist(Instant::now(), &mut page) {
                eprintln!("{e}; trying again in a second");
                retry_store_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        // 2. Out with what is ready; events for the log.
        while let Some(t) = device.poll_transmit() {
            if let Err(e) = socket.send_to(&t.contents, t.destination) {
                // Lost like on a radio: the core retransmits what is Confirmable.
                eprintln!("send to {}: {e}", t.destination);
            }
        }
        while let Some(event) = device.poll_event() {
            println!("event: {event:?}");
        }
        let acked = device.reporter().map_or(0, |r| r.stats().acked);
        if args.reports.is_some_and(|n| acked >= u64::from(n)) {
            break;
        }
        // 3. Wait for a datagram or the next deadline, whichever comes first.
        let deadline = [device.poll_timeout(), retry_store_at]
            .into_iter()
            .flatten()
            .min();
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // A zero timeout means "block forever" to the socket: wait at least a millisecond.
        socket.set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))?;
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                let bytes = buf.get(..len).unwrap_or_default();
                device.handle_datagram(Instant::now(), peer, bytes);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                device.handle_timeout(Instant::now());
            }
            // An ICMP error from an earlier datagram: go on, the core retries.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e.into()),
        }
    }
    let app = device.app();
    println!(
        "done: {} reports made and acknowledged, valve {}",
        app.reports_made(),
        if app.valve_open() { "open" } else { "closed" }
    );
    Ok(())
}
