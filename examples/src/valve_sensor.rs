//! The valve sensor every example runs: a temperature sensor and a valve, reporting SenML-CBOR
//! to the edge router and taking valve commands. `no_std` + `alloc`: the same code runs in the
//! firmware and on Linux.
//!
//! Resources (one shared [`ResourceTree`], as [`tree`] builds it):
//!
//! | path | methods | content |
//! |---|---|---|
//! | `sensors/temperature` | GET, observable | SenML-CBOR (112) or text (0), degrees Celsius |
//! | `actuators/valve` | GET, PUT, observable | text `0` (closed) or `1` (open); PUT from the platform is the command |
//!
//! Every `report_every` the application queues a report for the uplink: a SenML pack with the
//! base name `urn:dev:v6iot:{id}:` and two records, `temperature` (Cel) and `valve` (a boolean).
//! It carries no time: a record without one means "now" (RFC 8428 §4.5.3), and the edge router
//! stamps it on arrival, so a device without a wall clock reports correct times.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use v6iot_sdk::coap::{
    App, Changed, Code, Reply, Request, Resource, ResourceId, ResourceTree, Response, TreeError,
    content_format as cf,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;

/// The path of the valve, the resource the platform's commands address.
pub const VALVE_PATH: &str = "actuators/valve";
/// The path of the temperature reading.
pub const TEMPERATURE_PATH: &str = "sensors/temperature";

/// The state of one valve sensor.
#[derive(Debug)]
pub struct ValveSensor {
    base_name: String,
    temperature: f64,
    valve_open: bool,
    report_every: Duration,
    next_report: Instant,
    reports_left: Option<u32>,
    reports_made: u32,
    valve_commands: u32,
    pending: Option<Vec<u8>>,
}

impl ValveSensor {
    /// A sensor named `id` (its SenML base name is `urn:dev:v6iot:{id}:`) that reports every
    /// `report_every`, the first one at `first_report`.
    pub fn new(id: &str, first_report: Instant, report_every: Duration) -> ValveSensor {
        ValveSensor {
            base_name: format!("urn:dev:v6iot:{id}:"),
            temperature: 21.5,
            valve_open: false,
            report_every,
            next_report: first_report,
            reports_left: None,
            reports_made: 0,
            valve_commands: 0,
            pending: None,
        }
    }

    /// Makes at most `n` reports, then no more (tests and the firmware's self-test end).
    #[must_use]
    pub fn stop_after(mut self, n: u32) -> ValveSensor {
        self.reports_left = Some(n);
        self
    }

    /// A new reading from the sensor (firmware: from its ADC); the next report carries it.
    pub fn set_temperature(&mut self, celsius: f64) {
        self.temperature = celsius;
    }

    /// The last reading.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Whether the valve is open.
    pub fn valve_open(&self) -> bool {
        self.valve_open
    }

    /// Reports made so far.
    pub fn reports_made(&self) -> u32 {
        self.reports_made
    }

    /// Valve commands (PUTs of `actuators/valve`) carried out so far.
    pub fn valve_commands(&self) -> u32 {
        self.valve_commands
    }

    /// The report of the current state, SenML-CBOR.
    fn report(&self) -> Option<Vec<u8>> {
        let pack = PackBuilder::new()
            .base_name(self.base_name.clone())
            .record(Record::measurement("temperature", "Cel", self.temperature))
            .record(Record::bool_value("valve", self.valve_open))
            .build();
        senml::to_cbor(&pack).ok()
    }

    fn temperature_reply(&self, r: &Request<'_>) -> Reply {
        match r.accept {
            Some(cf::TEXT_PLAIN) => {
                Response::content(cf::TEXT_PLAIN, self.temperature.to_string().into_bytes()).into()
            }
            _ => {
                let pack = PackBuilder::new()
                    .base_name(self.base_name.clone())
                    .record(Record::measurement("temperature", "Cel", self.temperature))
                    .build();
                match senml::to_cbor(&pack) {
                    Ok(body) => Response::content(cf::SENML_CBOR, body).into(),
                    Err(_) => Response::error(Code::InternalServerError, "no reading").into(),
                }
            }
        }
    }

    fn set_valve(&mut self, r: &Request<'_>) -> Reply {
        let open = match r.text() {
            Some("1") => true,
            Some("0") => false,
            _ => return Response::error(Code::BadRequest, "send 0 (close) or 1 (open)").into(),
        };
        self.valve_open = open;
        self.valve_commands += 1;
        Response::code(Code::Changed).into()
    }
}

impl App for ValveSensor {
    fn poll_timeout(&self) -> Option<Instant> {
        (self.reports_left != Some(0)).then_some(self.next_report)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        if self.reports_left == Some(0) {
            return Changed::NONE;
        }
        self.pending = self.report();
        self.reports_made += 1;
        self.reports_left = self.reports_left.map(|n| n.saturating_sub(1));
        self.next_report += self.report_every;
        if self.next_report <= now {
            // Woken late (a sleeping device): the next report is one period from now.
            self.next_report = now + self.report_every;
        }
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|body| (cf::SENML_CBOR, body))
    }
}

/// The ids of the tree's resources.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// `sensors/temperature`.
    pub temperature: ResourceId,
    /// `actuators/valve`.
    pub valve: ResourceId,
}

/// The valve sensor's resource tree (build it once, share it between devices).
pub fn tree() -> Result<(ResourceTree<ValveSensor>, Ids), TreeError> {
    let mut tree = ResourceTree::new();
    let temperature = tree.add(
        Resource::new(TEMPERATURE_PATH)
            .rt("oic.r.temperature")
            .content_formats(&[cf::SENML_CBOR, cf::TEXT_PLAIN])
            .observable()
            .get(|s: &mut ValveSensor, r| s.temperature_reply(r)),
    )?;
    let valve = tree.add(
        Resource::new(VALVE_PATH)
            .rt("oic.r.switch.binary")
            .content_formats(&[cf::TEXT_PLAIN])
            .accepts(&[cf::TEXT_PLAIN])
            .observable()
            .get(|s: &mut ValveSensor, _| {
                let state = if s.valve_open { "1" } else { "0" };
                Response::content(cf::TEXT_PLAIN, state.as_bytes().to_vec()).into()
            })
            .put(|s: &mut ValveSensor, r| s.set_valve(r)),
    )?;
    Ok((tree, Ids { temperature, valve }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_the_reading_and_the_valve_and_stop_when_told() {
        let t0 = Instant::ZERO;
        let mut s = ValveSensor::new("s1", t0, Duration::from_secs(10)).stop_after(2);
        assert_eq!(s.poll_timeout(), Some(t0));
        s.set_temperature(19.25);
        let _ = s.handle_timeout(t0);
        let (format, body) = s.poll_report().unwrap();
        assert_eq!(format, cf::SENML_CBOR);
        let pack = senml::from_cbor(&body).unwrap();
        let resolved = senml::resolve(&pack, 1.8e9).unwrap();
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[0].name, "urn:dev:v6iot:s1:temperature");
        assert_eq!(resolved[0].value, Some(senml::Value::Float(19.25)));
        assert_eq!(resolved[1].value, Some(senml::Value::Bool(false)));
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        let _ = s.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(s.reports_made(), 2);
        assert_eq!(s.poll_timeout(), None, "two reports, then none");
    }
}
