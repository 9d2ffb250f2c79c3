//! A simulated industrial sensor node: the resources a real one would serve, on the SDK's
//! sans-IO device core.
//!
//! | path | methods | formats | notes |
//! |---|---|---|---|
//! | `/sensors/temperature` | GET, observable | SenML-CBOR (112), SenML-JSON (110) | °C, random walk, sampled every `interval` |
//! | `/sensors/pressure` | GET, observable | SenML-CBOR (112), SenML-JSON (110) | Pa, random walk |
//! | `/actuators/valve` | GET, PUT, observable | text/plain (0), JSON (50) | PUT `on` or `off` as text/plain |
//! | `/device/info` | GET | JSON (50), text/plain (0) | model, firmware, serial, address |
//! | `/device/log` | GET | text/plain (0) | [`boot_log`]: over 2 KiB, so it travels in Block2 pieces |
//! | `/device/config` | GET, PUT | any | stores what is PUT (Block1 for large bodies), returns it |
//! | `/device/selftest` | POST | text/plain | answered as a separate response after [`SELFTEST_TIME`] |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::coap::{
    App, Changed, Code, Reply, Request, Resource, ResourceId, ResourceTree, Response, Ticket,
    TreeError, content_format as cf,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;

/// Model name reported in `/device/info`.
pub const MODEL: &str = "v6iot-sim-sensor";

/// How long the self test takes before its separate response.
pub const SELFTEST_TIME: Duration = Duration::from_millis(1500);

/// The resource ids of the sensor's tree, found once after building it.
#[derive(Debug, Clone, Copy)]
pub struct SensorIds {
    /// `/sensors/temperature`
    pub temperature: ResourceId,
    /// `/sensors/pressure`
    pub pressure: ResourceId,
    /// `/actuators/valve`
    pub valve: ResourceId,
}

/// Builds the resource tree every simulated sensor shares.
pub fn tree() -> Result<(Arc<ResourceTree<Sensor>>, SensorIds), TreeError> {
    let mut t = ResourceTree::new();
    let temperature = t.add(
        Resource::new("sensors/temperature")
            .rt("oic.r.temperature")
            .interface("core.s")
            .title("Temperature")
            .content_formats(&[cf::SENML_CBOR, cf::SENML_JSON])
            .observable()
            .get(|s: &mut Sensor, r| s.reading(r, "temperature", "Cel", s.temperature)),
    )?;
    let pressure = t.add(
        Resource::new("sensors/pressure")
            .rt("oic.r.pressure")
            .interface("core.s")
            .title("Pressure")
            .content_formats(&[cf::SENML_CBOR, cf::SENML_JSON])
            .observable()
            .get(|s: &mut Sensor, r| s.reading(r, "pressure", "Pa", s.pressure)),
    )?;
    let valve = t.add(
        Resource::new("actuators/valve")
            .rt("v6iot.valve")
            .interface("core.a")
            .title("Valve")
            .content_formats(&[cf::TEXT_PLAIN, cf::JSON])
            .accepts(&[cf::TEXT_PLAIN])
            .observable()
            .get(Sensor::get_valve)
            .put(Sensor::put_valve),
    )?;
    t.add(
        Resource::new("device/info")
            .rt("v6iot.info")
            .interface("core.rp")
            .content_formats(&[cf::JSON, cf::TEXT_PLAIN])
            .get(Sensor::get_info),
    )?;
    t.add(
        Resource::new("device/log")
            .rt("v6iot.log")
            .interface("core.rp")
            .content_formats(&[cf::TEXT_PLAIN])
            .get(|s: &mut Sensor, _| {
                Response::content(cf::TEXT_PLAIN, boot_log(&s.id).into_bytes()).into()
            }),
    )?;
    t.add(
        Resource::new("device/config")
            .rt("v6iot.config")
            .interface("core.p")
            .get(Sensor::get_config)
            .put(Sensor::put_config),
    )?;
    t.add(
        Resource::new("device/selftest")
            .rt("v6iot.selftest")
            .interface("core.a")
            .post(Sensor::post_selftest),
    )?;
    Ok((
        Arc::new(t),
        SensorIds {
            temperature,
            pressure,
            valve,
        },
    ))
}

/// The device log served at `/device/log`: 64 fixed lines, over 2 KiB, a pure function of the
/// device id so that a test can build the expected bytes on its own. Line `i` reads
/// `format!("{i:04} {id} selftest step {:02} passed\n", i % 17)`.
pub fn boot_log(id: &str) -> String {
    (0..64)
        .map(|i| format!("{i:04} {id} selftest step {:02} passed\n", i % 17))
        .collect()
}

/// Settings of one simulated sensor.
#[derive(Debug, Clone)]
pub struct SensorSettings {
    /// Device id, used in SenML base names and `/device/info`.
    pub id: String,
    /// The address it serves on.
    pub address: SocketAddr,
    /// How often readings change (and observers are notified).
    pub interval: Duration,
    /// Seconds since the Unix epoch at `start`, for SenML times.
    pub epoch_at_start: f64,
    /// The instant that `epoch_at_start` names.
    pub start: Instant,
}

/// The state of one simulated sensor.
#[derive(Debug)]
pub struct Sensor {
    id: String,
    serial: u64,
    address: SocketAddr,
    interval: Duration,
    epoch_at_start: f64,
    start: Instant,
    next_sample: Instant,
    rng: u64,
    temperature: f64,
    pressure: f64,
    valve_open: bool,
    config: Option<(Vec<u8>, Option<u16>)>,
    selftests: Vec<(Ticket, Instant)>,
    ready: Vec<(Ticket, Response)>,
    ids: SensorIds,
}

impl Sensor {
    /// A sensor with the given settings and the ids of its tree.
    pub fn new(settings: SensorSettings, ids: SensorIds) -> Sensor {
        let serial = serial_of(&settings.id);
        let mut rng = serial ^ 0x5eed;
        let t0 = 20.0 + (next_unit(&mut rng) * 5.0);
        Sensor {
            id: settings.id,
            serial,
            address: settings.address,
            interval: settings.interval,
            epoch_at_start: settings.epoch_at_start,
            start: settings.start,
            next_sample: settings.start + settings.interval,
            rng,
            temperature: round2(t0),
            pressure: round2(101_325.0 + next_unit(&mut rng) * 200.0),
            valve_open: false,
            config: None,
            selftests: Vec::new(),
            ready: Vec::new(),
            ids,
        }
    }

    /// Current temperature in °C.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Whether the valve is open.
    pub fn valve_open(&self) -> bool {
        self.valve_open
    }

    fn epoch(&self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.start).as_secs_f64();
        ((self.epoch_at_start + secs) * 1000.0).round() / 1000.0
    }

    fn reading(&self, r: &Request<'_>, name: &str, unit: &str, value: f64) -> Reply {
        let pack = PackBuilder::new()
            .base_name(format!("urn:dev:v6iot:{}:", self.id))
            .base_time(self.epoch(r.now))
            .record(Record::measurement(name, unit, value))
            .build();
        let encoded = match r.accept {
            Some(cf::SENML_JSON) => senml::to_json_vec(&pack).map(|b| (cf::SENML_JSON, b)),
            _ => senml::to_cbor(&pack).map(|b| (cf::SENML_CBOR, b)),
        };
        match encoded {
            Ok((format, body)) => Response::content(format, body)
                .with_max_age(self.interval.as_secs().max(1) as u32)
                .into(),
            Err(e) => {
                Response::error(Code::InternalServerError, format!("encoding failed: {e}")).into()
            }
        }
    }

    fn get_valve(&mut self, r: &Request<'_>) -> Reply {
        let state = if self.valve_open { "on" } else { "off" };
        match r.accept {
            Some(cf::JSON) => {
                Response::content(cf::JSON, format!("{{\"valve\":\"{state}\"}}").into_bytes())
                    .into()
            }
            _ => Response::content(cf::TEXT_PLAIN, state.as_bytes().to_vec()).into(),
        }
    }

    fn put_valve(&mut self, r: &Request<'_>) -> Reply {
        match r.text() {
            Some("on") => self.valve_open = true,
            Some("off") => self.valve_open = false,
            _ => return Response::error(Code::BadRequest, "valve takes `on` or `off`").into(),
        }
        Response::code(Code::Changed).into()
    }

    fn get_info(&mut self, r: &Request<'_>) -> Reply {
        let firmware = env!("CARGO_PKG_VERSION");
        match r.accept {
            Some(cf::TEXT_PLAIN) => {
                let text = format!(
                    "model {MODEL}\nfirmware {firmware}\nid {}\nserial {:012x}\naddress {}\n",
                    self.id,
                    self.serial,
                    self.address.ip()
                );
                Response::content(cf::TEXT_PLAIN, text.into_bytes()).into()
            }
            _ => {
                let json = serde_json::json!({
                    "model": MODEL,
                    "firmware": firmware,
                    "id": self.id,
                    "serial": format!("{:012x}", self.serial),
                    "address": self.address.ip().to_string(),
                    "port": self.address.port(),
                });
                Response::content(cf::JSON, json.to_string().into_bytes()).into()
            }
        }
    }

    fn get_config(&mut self, _r: &Request<'_>) -> Reply {
        match &self.config {
            None => Response::error(Code::NotFound, "no configuration stored yet").into(),
            Some((body, format)) => Response {
                content_format: *format,
                payload: body.clone(),
                ..Response::code(Code::Content)
            }
            .into(),
        }
    }

    fn put_config(&mut self, r: &Request<'_>) -> Reply {
        let created = self.config.is_none();
        self.config = Some((r.payload.to_vec(), r.content_format));
        Response::code(if created {
            Code::Created
        } else {
            Code::Changed
        })
        .into()
    }

    fn post_selftest(&mut self, r: &Request<'_>) -> Reply {
        self.selftests.push((r.ticket, r.now + SELFTEST_TIME));
        Reply::Separate
    }
}

impl App for Sensor {
    fn poll_timeout(&self) -> Option<Instant> {
        let selftest = self.selftests.iter().map(|(_, t)| *t).min();
        Some(selftest.map_or(self.next_sample, |t| t.min(self.next_sample)))
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        let mut changed = Changed::NONE;
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.selftests.drain(..).partition(|(_, t)| *t <= now);
        self.selftests = waiting;
        for (ticket, _) in due {
            let body = format!("selftest of {} passed", self.id).into_bytes();
            self.ready.push((
                ticket,
                Response {
                    content_format: Some(cf::TEXT_PLAIN),
                    payload: body,
                    ..Response::code(Code::Changed)
                },
            ));
        }
        if now >= self.next_sample {
            self.temperature = round2(
                (self.temperature + (next_unit(&mut self.rng) - 0.5) * 0.4).clamp(-40.0, 125.0),
            );
            self.pressure = round2(self.pressure + (next_unit(&mut self.rng) - 0.5) * 40.0);
            self.next_sample += self.interval;
            if self.next_sample <= now {
                self.next_sample = now + self.interval;
            }
            changed = changed.with(self.ids.temperature).with(self.ids.pressure);
        }
        changed
    }

    fn poll_answer(&mut self) -> Option<(Ticket, Response)> {
        self.ready.pop()
    }
}

/// A stable 48-bit serial number derived from a device id: trailing decimal digits if the id
/// has them (`sensor-0042` → 42), else a hash.
pub fn serial_of(id: &str) -> u64 {
    let digits: String = id
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match digits.parse::<u64>() {
        Ok(n) if !digits.is_empty() && n <= 0xffff_ffff_ffff => n,
        _ => v6iot_sdk::coap::wire::fnv1a(id.as_bytes()) & 0xffff_ffff_ffff,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A uniform number in [0, 1) from a splitmix64 state.
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_log_is_over_two_kib_and_deterministic() {
        let log = boot_log("sim-0001");
        assert!(log.len() > 2048, "{}", log.len());
        assert_eq!(log.lines().count(), 64);
        assert!(log.starts_with("0000 sim-0001 selftest step 00 passed\n"));
        assert_eq!(log, boot_log("sim-0001"));
    }

    #[test]
    fn serial_comes_from_trailing_digits() {
        assert_eq!(serial_of("sensor-0042"), 42);
        assert!(serial_of("abc") <= 0xffff_ffff_ffff);
    }
}
