//! An NB-IoT meter: the valve sensor behind a cellular modem on a serial port — what a meter
//! maker copies. The SDK's modem driver speaks AT commands on the tty (3GPP TS 27.007 and the
//! HiSilicon socket set of Quectel BC95/BC28-class modules): PDP context `IPV6` on the APN,
//! `AT+CEREG=4`, PSM asked for with `AT+CPSMS` (and eDRX with `AT+CEDRXS` if wanted), attach,
//! the carrier's IPv6 address from `AT+CGPADDR`, datagrams through `AT+NSOST` / `+NSONMI` /
//! `AT+NSORF`. On top runs the same CoAP device core as every other example: it registers with
//! binding `UQ` (queue mode: the edge holds commands for its listening windows), reports
//! SenML-CBOR every `--every`, takes valve commands, all over OSCORE; between exchanges the
//! modem sleeps in PSM.
//!
//! Needs: `v6iot-sdk` with its default features (`std`, `tokio`) on Linux; this crate's `std`
//! feature. The serial port is opened raw (no echo, no line editing) by
//! `v6iot_sdk::nbiot::serial::AsyncSerial`; a USB modem is e.g. `/dev/ttyUSB0` (set its baud
//! rate first, e.g. `stty -F /dev/ttyUSB0 9600`).
//!
//! Without a modem, `v6iot-sim modem` emulates one on a pty and prints its path; in a network
//! namespace where the carrier prefix is routed to loopback (see `v6iot-sim modem --help`):
//!
//! ```text
//! v6iot-sim modem --link /tmp/modem &
//! cargo run -p v6iot-examples --example nbiot_meter -- \
//!     --serial /tmp/modem --edge [::1]:5683 --credentials meters.csv --id meter-1 \
//!     --state /tmp/meter-1.state --every 60 --active-time 20 --tau 3600
//! ```
//!
//! The edge must know the device (`v6iot-edge devices import meters.csv`, its prefixes the
//! carrier's) and should listen to queue-mode devices for no longer than their active time
//! minus the network's round trip (`[coap] queue_listen_window_s`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use v6iot_examples::credentials::DeviceCredentials;
use v6iot_examples::valve_sensor::{self, ValveSensor};
use v6iot_sdk::coap::{Config, Device};
use v6iot_sdk::nbiot::serial::AsyncSerial;
use v6iot_sdk::nbiot::{
    EdrxCycle, ModemConfig, ModemEvent, NbiotDevice, NbiotEvent, PsmRequest, T3324, T3412,
    nbiot_uplink,
};
use v6iot_sdk::store::SequenceFile;
use v6iot_sdk::time::Instant;

/// How often the loop looks at the device to print what changed.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The command line: `--serial TTY --edge ADDR --credentials CSV --id ID [--state FILE]
/// [--apn APN] [--every S] [--active-time S] [--tau S] [--edrx S] [--reports N]`.
struct Args {
    serial: PathBuf,
    edge: SocketAddr,
    credentials: PathBuf,
    id: String,
    state: PathBuf,
    apn: String,
    every: Duration,
    active_time: Duration,
    tau: Duration,
    edrx: Option<Duration>,
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
    let seconds = |flag: &str, default: &str| -> anyhow::Result<Duration> {
        let text = get(flag).unwrap_or_else(|| default.to_owned());
        Duration::try_from_secs_f64(text.parse()?).with_context(|| format!("{flag} {text}"))
    };
    let id = get("--id").context("--id ID is required (the device's line in the CSV)")?;
    Ok(Args {
        serial: get("--serial")
            .context("--serial TTY is required (the modem's serial port)")?
            .into(),
        edge: get("--edge").as_deref().unwrap_or("[::1]:5683").parse()?,
        credentials: get("--credentials")
            .context("--credentials CSV is required")?
            .into(),
        state: get("--state").map_or_else(|| format!("{id}.state").into(), PathBuf::from),
        apn: get("--apn").unwrap_or_else(|| "v6iot".to_owned()),
        every: seconds("--every", "60")?,
        active_time: seconds("--active-time", "20")?,
        tau: seconds("--tau", "3600")?,
        edrx: get("--edrx")
            .map(|s| s.parse().map(Duration::from_secs_f64))
            .transpose()?,
        reports: get("--reports").map(|n| n.parse()).transpose()?,
        id,
    })
}

/// The modem's settings: the APN, PSM with the timers asked for (the network may grant
/// others; the device follows what `+CEREG` says it granted), eDRX if asked for.
fn modem_config(args: &Args) -> anyhow::Result<ModemConfig> {
    Ok(ModemConfig {
        psm: Some(PsmRequest {
            periodic_tau: T3412::encode(args.tau)?,
            active_time: T3324::encode(args.active_time)?,
        }),
        edrx: args.edrx.map(EdrxCycle::encode_nb_iot).transpose()?,
        ..ModemConfig::new(args.apn.clone())
    })
}

/// Prints what the device reports: the modem's state, sleeps and wake-ups, failures.
fn print_event(event: NbiotEvent) {
    match event {
        NbiotEvent::Modem(ModemEvent::Ready { address }) => println!("attached: {address}"),
        NbiotEvent::Modem(ModemEvent::AddressChanged { from, to }) => {
            println!("address changed: {from} -> {to}");
        }
        NbiotEvent::Modem(ModemEvent::NetworkTimers {
            active_time,
            periodic_tau,
        }) => {
            println!("network granted: active time {active_time:?}, periodic TAU {periodic_tau:?}")
        }
        NbiotEvent::Sleeping { until } => match until {
            Some(t) => println!(
                "sleeping (PSM) for {:?}",
                t.saturating_duration_since(Instant::now())
            ),
            None => println!("sleeping (PSM)"),
        },
        NbiotEvent::Awake { reason } => println!("awake: {reason:?}"),
        other => println!("event: {other:?}"),
    }
}

/// What the loop prints when it changes: registered, reports acknowledged, valve commands.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    registered: bool,
    acked: u64,
    commands: u32,
}

impl Seen {
    fn of(device: &NbiotDevice<ValveSensor>) -> Seen {
        let core = device.device();
        Seen {
            registered: core.registration().is_some_and(|r| r.is_registered()),
            acked: core.reporter().map_or(0, |r| r.stats().acked),
            commands: core.app().valve_commands(),
        }
    }

    fn print_changes(&self, before: &Seen, device: &NbiotDevice<ValveSensor>) {
        if self.registered && !before.registered {
            println!("registered (b=UQ)");
        }
        if self.acked > before.acked {
            println!("reports acknowledged: {}", self.acked);
        }
        if self.commands > before.commands {
            let open = device.device().app().valve_open();
            println!("valve command: {}", if open { "open" } else { "closed" });
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;

    // 1. Credentials and the OSCORE state the last run left (all zero the first time).
    let creds = DeviceCredentials::load(&args.credentials, &args.id)?;
    let (mut state_file, stored) = SequenceFile::open(&args.state)
        .with_context(|| format!("state file {}", args.state.display()))?;
    let context = creds.context(stored)?;

    // 2. The CoAP device: the valve sensor and OSCORE. Its first retransmission waits for a
    //    slow cell's round trip (seconds in deep coverage).
    let (tree, _ids) = valve_sensor::tree()?;
    let now = Instant::now();
    let mut app = ValveSensor::new(&args.id, now + Duration::from_secs(1), args.every);
    if let Some(n) = args.reports {
        app = app.stop_after(n);
    }
    let seed = creds.kid.iter().fold(0u64, |s, b| s << 8 | u64::from(*b));
    let coap = Config {
        ack_timeout: Duration::from_secs(4),
        ..Config::default()
    };
    let core = Device::new(coap, seed, Arc::new(tree), app).with_credentials(context);

    // 3. The NB-IoT device: that core on the modem, with power saving; its uplink starts once
    //    the modem has attached.
    let mut device = NbiotDevice::new(now, core, modem_config(&args)?)
        .with_uplink(nbiot_uplink(args.edge, args.id.clone()));

    // 4. The serial port, and the driver until Ctrl-C (or the last report acknowledged). It
    //    returns after each slice so the loop can print what changed.
    let mut serial = AsyncSerial::open(&args.serial)
        .with_context(|| format!("serial port {}", args.serial.display()))?;
    println!(
        "{} on the modem at {}, reporting to {} every {:?} (APN {})",
        args.id,
        args.serial.display(),
        args.edge,
        args.every,
        args.apn
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = Seen::default();
    loop {
        let mut stop = false;
        let slice = async {
            tokio::select! {
                _ = &mut ctrl_c => stop = true,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        };
        v6iot_sdk::nbiot::driver::run_with_store(
            &mut serial,
            &mut device,
            &mut state_file,
            print_event,
            slice,
        )
        .await?;
        let now_seen = Seen::of(&device);
        now_seen.print_changes(&seen, &device);
        seen = now_seen;
        let done = args
            .reports
            .is_some_and(|n| seen.acked >= u64::from(n) && device.is_asleep());
        if stop || done {
            break;
        }
    }
    let app = device.device().app();
    println!(
        "stopped: {} reports made, {} acknowledged, {} valve commands, valve {}",
        app.reports_made(),
        seen.acked,
        app.valve_commands(),
        if app.valve_open() { "open" } else { "closed" }
    );
    Ok(())
}
