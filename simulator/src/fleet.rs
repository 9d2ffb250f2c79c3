//! A fleet of simulated devices that register with an edge router and report telemetry at a
//! given total rate, each on the real SDK core with its own uplink.
//!
//! Every report is SenML-CBOR with two records: the reading, and `seq` (the device's report
//! number) timed at the moment it was made, so a subscriber at the broker can match deliveries
//! to reports and measure end-to-end latency (see [`crate::collector`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use v6iot_sdk::coap::{
    App, Changed, Config, Device, Resource, ResourceTree, Response, TreeError, content_format as cf,
};
use v6iot_sdk::oscore::SecurityContext;
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::{Binding, ReportStats, UplinkConfig};

/// Live counters shared by every device of a fleet.
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Reports made.
    pub made: AtomicU64,
}

/// The application of one fleet device.
#[derive(Debug)]
pub struct FleetSensor {
    /// The SenML base name of its reports, `urn:dev:v6iot:{id}:` (made once).
    base_name: String,
    next_report: Instant,
    interval: Duration,
    stop_at: Instant,
    seq: u64,
    value: f64,
    pending: Option<Vec<u8>>,
    counters: Arc<FleetCounters>,
    clock: WallClock,
}

/// Maps `Instant`s to Unix time (captured once, so the cores stay clock-free).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
    unix_at_start: f64,
}

impl WallClock {
    /// Captures the current wall-clock time.
    pub fn now() -> WallClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        WallClock {
            start: Instant::now(),
            unix_at_start: unix,
        }
    }

    /// Unix seconds at `t`.
    pub fn unix(&self, t: Instant) -> f64 {
        if t >= self.start {
            self.unix_at_start + (t - self.start).as_secs_f64()
        } else {
            self.unix_at_start - (self.start - t).as_secs_f64()
        }
    }
}

impl App for FleetSensor {
    fn poll_timeout(&self) -> Option<Instant> {
        (self.next_report < self.stop_at).then_some(self.next_report)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        if now >= self.stop_at {
            // A report due before the end but woken after it: none is made, and no deadline
            // stays behind (one left in the past would wake the device again at once, forever).
            self.next_report = self.stop_at;
            return Changed::NONE;
        }
        self.seq += 1;
        self.value = ((self.value + 0.37) * 100.0).round() / 100.0;
        let t = (self.clock.unix(now) * 1000.0).round() / 1000.0;
        let pack = PackBuilder::new()
            .base_name(self.base_name.clone())
            .base_time(t)
            .record(Record::measurement("temperature", "Cel", self.value))
            .record(Record {
                n: Some("seq".into()),
                v: Some(self.seq as f64),
                ..Record::default()
            })
            .build();
        self.pending = senml::to_cbor(&pack).ok();
        self.counters.made.fetch_add(1, Ordering::Relaxed);
        self.next_report += self.interval;
        if self.next_report <= now {
            self.next_report = now + self.interval;
        }
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|b| (cf::SENML_CBOR, b))
    }
}

/// Settings of a fleet.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// The edge router.
    pub edge: SocketAddr,
    /// How many devices.
    pub devices: usize,
    /// Reports per second over the whole fleet.
    pub rate: f64,
    /// How long devices report.
    pub duration: Duration,
    /// Device id prefix; ids are `{prefix}{n:06}`.
    pub id_prefix: String,
    /// Registration binding.
    pub binding: Binding,
}

/// The shared tree of fleet devices (one informational resource).
pub fn tree() -> Result<Arc<ResourceTree<FleetSensor>>, TreeError> {
    let mut t = ResourceTree::new();
    t.add(
        Resource::new("sensors/temperature")
            .rt("oic.r.temperature")
            .content_formats(&[cf::TEXT_PLAIN])
            .get(|s: &mut FleetSensor, _| {
                Response::content(cf::TEXT_PLAIN, s.value.to_string().into_bytes()).into()
            }),
    )?;
    Ok(Arc::new(t))
}

/// The id of device `n` of `plan`: `{prefix}{n:06}`, as `v6iot-sim provision` names them.
pub fn device_id(plan: &FleetPlan, n: usize) -> String {
    format!("{}{n:06}", plan.id_prefix)
}

/// Builds device `n` of `plan`, starting at `start`; with `credentials` it speaks OSCORE only.
pub fn device(
    plan: &FleetPlan,
    n: usize,
    start: Instant,
    tree: Arc<ResourceTree<FleetSensor>>,
    counters: Arc<FleetCounters>,
    clock: WallClock,
    credentials: Option<SecurityContext>,
) -> Device<FleetSensor> {
    sensor_device(plan, n, start, tree, counters, clock, credentials)
        .with_uplink(start, uplink_config(plan, n))
}

/// The uplink of device `n` of `plan`: its registration and reports to the plan's edge.
pub fn uplink_config(plan: &FleetPlan, n: usize) -> UplinkConfig {
    UplinkConfig {
        binding: plan.binding,
        max_queued_reports: 1024,
        lifetime: Duration::from_secs(600),
        ..UplinkConfig::new(plan.edge, device_id(plan, n))
    }
}

/// As [`device`] without its uplink, for drivers that start it later (a 6LoWPAN device, once
/// attached); reports made before are not sent.
pub fn sensor_device(
    plan: &FleetPlan,
    n: usize,
    start: Instant,
    tree: Arc<ResourceTree<FleetSensor>>,
    counters: Arc<FleetCounters>,
    clock: WallClock,
    credentials: Option<SecurityContext>,
) -> Device<FleetSensor> {
    let id = device_id(plan, n);
    let per_device = plan.rate / plan.devices.max(1) as f64;
    let interval = Duration::from_secs_f64(if per_device > 0.0 {
        1.0 / per_device
    } else {
        3600.0
    });
    // Spread first reports over one interval so the fleet does not report in lock step; leave
    // a moment to register first.
    let phase = interval.mul_f64((n as f64 * 0.618_033_988_75).fract());
    let app = FleetSensor {
        base_name: format!("urn:dev:v6iot:{id}:"),
        next_report: start + Duration::from_millis(200) + phase,
        interval,
        stop_at: start + plan.duration,
        seq: 0,
        value: 20.0,
        pending: None,
        counters,
        clock,
    };
    let device = Device::new(Config::default(), n as u64 + 1, tree, app);
    match credentials {
        Some(ctx) => device.with_credentials(ctx),
        None => device,
    }
}

/// Adds one device's reporter counters into a total.
pub fn add_stats(total: &mut ReportStats, s: &ReportStats) {
    total.queued += s.queued;
    total.refused += s.refused;
    total.sent += s.sent;
    total.acked += s.acked;
    total.rejected += s.rejected;
    total.busy += s.busy;
    total.timeouts += s.timeouts;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(start: Instant, stop_at: Instant) -> FleetSensor {
        FleetSensor {
            base_name: "urn:dev:v6iot:f000001:".into(),
            next_report: start,
            interval: Duration::from_millis(100),
            stop_at,
            seq: 0,
            value: 20.0,
            pending: None,
            counters: Arc::new(FleetCounters::default()),
            clock: WallClock::now(),
        }
    }

    #[test]
    fn reports_until_the_end_and_leaves_no_deadline_behind() {
        let start = Instant::now();
        let stop = start + Duration::from_millis(250);
        let mut s = sensor(start, stop);
        let _ = s.handle_timeout(start);
        assert!(s.poll_report().is_some());
        assert_eq!(s.poll_timeout(), Some(start + Duration::from_millis(100)));
        let _ = s.handle_timeout(start + Duration::from_millis(100));
        assert_eq!(s.poll_timeout(), Some(start + Duration::from_millis(200)));
        // The report due at 200 ms is woken late, after the end: none is made, and the
        // deadline in the past is gone (a driver would otherwise wake the device forever).
        let _ = s.poll_report();
        let _ = s.handle_timeout(stop + Duration::from_millis(5));
        assert!(s.poll_report().is_none());
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.counters.made.load(Ordering::Relaxed), 2);
    }
}
