//! The complete OSCORE exchange on the target: the valve sensor (`v6iot-examples`) on the SDK's
//! [`Device`] with OSCORE credentials registers with the [edge stand-in](crate::edge), sends
//! three SenML reports, and takes a valve command — every message protected both ways — driven
//! in the plain loop a firmware author writes (`examples/sans_io_sensor.rs` does the same on a
//! socket):
//!
//! 1. write the OSCORE state the device asks for ([`Device::persist`] into a [`StateStore`],
//!    here a RAM "flash page" that counts its writes);
//! 2. hand what the device sends to the edge, and what the edge sends to the device;
//! 3. when nothing moves, let time pass to the device's next deadline ([`Device::poll_timeout`],
//!    then [`Device::handle_timeout`]) — virtual time, so the self-test takes no wall time.

use alloc::string::String;
use alloc::sync::Arc;
use core::convert::Infallible;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use cortex_m_semihosting::hprintln;
use v6iot_examples::valve_sensor::{self, ValveSensor};
use v6iot_sdk::coap::{Code, Config, Device};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, DurableState, SecurityContext};
use v6iot_sdk::persist::StateStore;
use v6iot_sdk::senml::Value;
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::UplinkConfig;

use crate::edge::EdgeStandIn;
use crate::heap_used;

/// The device's provisioned identity (demo values, as in `examples/credentials/demo.csv`).
const DEVICE_ID: &str = "sensor-1";
const KID: [u8; 1] = [0x51];
const SECRET: [u8; 16] = [
    0x5e, 0x6f, 0x2a, 0x1c, 0x9d, 0x8b, 0x7e, 0x4f, 0x3a, 0x2b, 0x1c, 0x0d, 0x9e, 0x8f, 0x7a, 0x6b,
];
/// Reports the device makes before the self-test checks them.
const REPORTS: u32 = 3;
/// A bound on loop turns: a device that stops making progress fails instead of hanging.
const MAX_TURNS: u32 = 500;

/// The stand-in ADC: the temperature for report `n` (0-based), a quarter degree apart.
fn reading(n: u32) -> f64 {
    20.0 + 0.25 * f64::from(n)
}

/// A "flash page" in RAM for the OSCORE state: what a firmware's flash driver implements.
#[derive(Debug, Default)]
struct RamPage {
    state: DurableState,
    writes: u32,
}

impl StateStore for RamPage {
    type Error = Infallible;

    fn store(&mut self, state: DurableState) -> Result<(), Infallible> {
        self.state = state;
        self.writes += 1;
        Ok(())
    }
}

/// What the exchange showed.
pub struct Summary {
    reports: usize,
    updates: u32,
    store_writes: u32,
    heap_tree: usize,
    heap_device: usize,
    heap_peak: usize,
    virtual_secs: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registered, {} reports verified, {} updates, valve command done; {} state writes; \
             heap: tree {} B, idle device {} B, peak {} B; {} s of virtual time",
            self.reports,
            self.updates,
            self.store_writes,
            self.heap_tree,
            self.heap_device,
            self.heap_peak,
            self.virtual_secs
        )
    }
}

/// Runs the exchange; the summary, or what went wrong.
pub fn run() -> Result<Summary, String> {
    hprintln!("OSCORE exchange with the edge stand-in:");
    let edge_addr: SocketAddr = "[2001:db8::1]:5683"
        .parse()
        .map_err(|_| String::from("bad edge address"))?;
    let mut edge = EdgeStandIn::new(&SECRET, &KID).map_err(|e| alloc::format!("edge: {e}"))?;
    let heap_start = heap_used();
    let (tree, _ids) = valve_sensor::tree().map_err(|e| alloc::format!("tree: {e}"))?;
    let tree = Arc::new(tree);
    let heap_tree = heap_used() - heap_start;

    let now = Instant::ZERO;
    let input = ContextInput {
        master_secret: SECRET.to_vec(),
        master_salt: alloc::vec::Vec::new(),
        id_context: None,
        sender_id: KID.to_vec(),
        recipient_id: alloc::vec::Vec::new(),
    };
    let mut page = RamPage::default();
    let ctx = SecurityContext::restore_state(&input, ContextConfig::default(), page.state)
        .map_err(|e| alloc::format!("context: {e}"))?;
    let app = ValveSensor::new(
        DEVICE_ID,
        now + Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .stop_after(REPORTS);
    let mut device = Device::new(Config::default(), 0x51, tree, app)
        .with_credentials(ctx)
        .with_uplink(now, UplinkConfig::new(edge_addr, DEVICE_ID));

    let (now, heap_peak) = drive(&mut device, &mut edge, &mut page, edge_addr, now)?;
    check(&device, &edge)?;

    // Steady state: everything remembered for duplicates has expired.
    let idle = now + Config::default().exchange_lifetime() + Duration::from_secs(1);
    device.handle_timeout(idle);
    let heap_device = heap_used() - heap_start - heap_tree;
    Ok(Summary {
        reports: edge.reports.len(),
        updates: edge.updates,
        store_writes: page.writes,
        heap_tree,
        heap_device,
        heap_peak: heap_peak - heap_start,
        virtual_secs: idle.as_millis() / 1000,
    })
}

/// The loop: until the reports are in and the command is answered. Returns the time reached
/// and the peak heap seen.
fn drive(
    device: &mut Device<ValveSensor>,
    edge: &mut EdgeStandIn,
    page: &mut RamPage,
    edge_addr: SocketAddr,
    mut now: Instant,
) -> Result<(Instant, usize), String> {
    let mut peak = heap_used();
    for _ in 0..MAX_TURNS {
        // Infallible here; a flash driver's error would leave the device waiting, not wrong.
        let _ = device.persist(now, page);
        let mut moved = false;
        while let Some(t) = device.poll_transmit() {
            if t.destination != edge_addr {
                return Err(alloc::format!("a datagram to {}", t.destination));
            }
            edge.handle_datagram(&t.contents)
                .map_err(|e| alloc::format!("edge refused a datagram: {e}"))?;
            moved = true;
        }
        while let Some(event) = device.poll_event() {
            hprintln!("  event: {:?}", event);
        }
        while let Some(bytes) = edge.poll_transmit() {
            device.handle_datagram(now, edge_addr, &bytes);
            moved = true;
        }
        peak = peak.max(heap_used());
        let acked = device.reporter().map_or(0, |r| r.stats().acked);
        if acked >= u64::from(REPORTS) && !edge.command_sent() {
            hprintln!(
                "  {} reports acknowledged; the edge sends PUT /actuators/valve 1",
                acked
            );
            edge.send_command(b"1")
                .map_err(|e| alloc::format!("command: {e}"))?;
            moved = true;
        }
        if edge.command_result.is_some() {
            return Ok((now, peak));
        }
        if !moved {
            let Some(next) = device.poll_timeout() else {
                return Err(String::from("the device stopped with work left"));
            };
            now = now.max(next);
            // The sensor's reading before the device wakes (a real firmware reads its ADC).
            let made = device.app().reports_made();
            device.app_mut().set_temperature(reading(made));
            device.handle_timeout(now);
        }
    }
    Err(alloc::format!("no end after {MAX_TURNS} turns"))
}

/// What must hold after the exchange.
fn check(device: &Device<ValveSensor>, edge: &EdgeStandIn) -> Result<(), String> {
    let fail = |what: &str| Err(String::from(what));
    if edge.registered.as_deref() != Some(DEVICE_ID) {
        return fail("the edge saw no registration with ep=sensor-1");
    }
    hprintln!("  registered as {}", DEVICE_ID);
    if edge.reports.len() != REPORTS as usize {
        return Err(alloc::format!(
            "{} reports at the edge, expected {REPORTS}",
            edge.reports.len()
        ));
    }
    for (n, records) in edge.reports.iter().enumerate() {
        let temperature = records
            .iter()
            .find(|r| r.name == "urn:dev:v6iot:sensor-1:temperature")
            .and_then(|r| r.value.clone());
        let Some(Value::Float(celsius)) = temperature else {
            return fail("a report without its temperature");
        };
        if celsius != reading(n as u32) {
            return Err(alloc::format!(
                "report {} carries {celsius} Cel, the sensor read {}",
                n + 1,
                reading(n as u32)
            ));
        }
        hprintln!("  report {} verified: temperature {} Cel", n + 1, celsius);
    }
    match &edge.command_result {
        Some((Code::Changed, _)) => hprintln!("  command answered 2.04 Changed (verified)"),
        other => return Err(alloc::format!("command answer {other:?}")),
    }
    if !device.app().valve_open() {
        return fail("the valve did not open");
    }
    let stats = device
        .endpoint()
        .oscore_stats()
        .ok_or_else(|| String::from("no OSCORE on the device"))?;
    if stats.requests_verified != 1 || stats.responses_verified < 1 + u64::from(REPORTS) {
        return Err(alloc::format!("OSCORE counters {stats:?}"));
    }
    if stats.requests_rejected + stats.responses_rejected + stats.protect_failed != 0 {
        return Err(alloc::format!("OSCORE failures {stats:?}"));
    }
    hprintln!(
        "  valve open; device OSCORE: {} requests and {} responses verified, none rejected",
        stats.requests_verified,
        stats.responses_verified
    );
    Ok(())
}
