//! Fleet devices (sans-IO): the reporting sensor application on the real SDK core, and what
//! became of every report it made.
//!
//! Every report is SenML with the device's readings and `seq` (the device's report number,
//! from 1), timed at the moment the report was *scheduled* — so a subscriber at the broker can
//! match each delivery to its report and measure end-to-end latency, and a simulator that falls
//! behind shows in the latency instead of hiding it (no coordinated omission). A device makes
//! every report its schedule has due, catching up after a late wake-up, so the reports made are
//! a function of the plan alone.
//!
//! The SDK sends a device's reports one at a time, in the order they were made, and tells the
//! application what became of each ([`ReportEvent`]). So the application knows the fate of
//! every report by its number: the one at the front of the queue is `front`; everything before
//! it was acknowledged, except the few refused (with their code) or dropped by a full queue,
//! kept in a small list ([`Outcomes`]). That is what the run report classifies against the
//! deliveries ([`crate::tally`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use v6iot_sdk::coap::{
    App, Changed, Code, Resource, ResourceTree, Response, TreeError, content_format as cf,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::ReportEvent;

use crate::scenario::{Format, Payload};

/// How far apart the two Unix readings of [`WallClock::read`] may be, seconds.
pub const PAIR_SPREAD: f64 = 0.001;

/// How often [`WallClock::read`] tries for a pair within [`PAIR_SPREAD`].
pub const PAIR_TRIES: usize = 8;

/// Maps `Instant`s to Unix time (captured once, so the cores stay clock-free).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
    unix_at_start: f64,
}

impl WallClock {
    /// Captures the current wall-clock time (a tight pair of readings, see [`WallClock::read`]).
    pub fn now() -> WallClock {
        WallClock::read(Instant::now, unix_now)
    }

    /// Reads the monotonic clock and Unix time as one pair: the Unix time is the middle of two
    /// readings taken around the monotonic one, read again (up to [`PAIR_TRIES`] times) while
    /// those two are more than [`PAIR_SPREAD`] apart. A thread preempted between two separate
    /// readings (a loaded machine) would otherwise shift every report's time by as long as it
    /// waited, and deliveries, timed with Unix time, would come out with negative latencies.
    pub fn read(mut instant: impl FnMut() -> Instant, mut unix: impl FnMut() -> f64) -> WallClock {
        let mut best: Option<(f64, WallClock)> = None;
        for _ in 0..PAIR_TRIES {
            let before = unix();
            let now = instant();
            let after = unix();
            let spread = (after - before).abs();
            if best.as_ref().is_none_or(|(s, _)| spread < *s) {
                best = Some((spread, WallClock::at(now, before + (after - before) / 2.0)));
            }
            if spread <= PAIR_SPREAD {
                break;
            }
        }
        best.map_or_else(|| WallClock::at(instant(), unix()), |(_, c)| c)
    }

    /// The instant the clock was read at.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// A clock on which `start` is `unix` seconds (virtual time in tests).
    pub fn at(start: Instant, unix: f64) -> WallClock {
        WallClock {
            start,
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

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the devices of one fleet share.
#[derive(Debug)]
pub struct FleetShared {
    /// Device ids are `{id_prefix}{serial:06}`.
    pub id_prefix: String,
    /// The serial of device 0.
    pub first: u64,
    /// Each device's time between reports (`None`: it does not report).
    pub interval: Option<Duration>,
    /// No report is scheduled at or after this.
    pub stop_at: Instant,
    /// What a report holds.
    pub payload: Payload,
    /// Unix time of the run's instants.
    pub clock: WallClock,
}

/// A device's counts of its reports' fate (each fits a `u32`: a device makes far fewer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportCounts {
    /// Reports made (the last report's `seq`).
    pub made: u32,
    /// Acknowledged with 2.xx.
    pub acked: u32,
    /// Refused for good (4.xx, 5.xx other than 5.03 and 4.03).
    pub refused: u32,
    /// Dropped by the device's full queue (never sent).
    pub dropped: u32,
    /// 5.03 answers (each report kept and retried).
    pub busy: u32,
    /// Timeouts (the report kept and retried).
    pub timeouts: u32,
    /// 4.03 answers (the device registered again; the report kept).
    pub forbidden: u32,
}

impl ReportCounts {
    /// Reports whose fate is settled at the device (acknowledged, refused or dropped).
    pub fn resolved(&self) -> u64 {
        u64::from(self.acked) + u64::from(self.refused) + u64::from(self.dropped)
    }
}

/// The reports of one device that were not acknowledged: refused (with the code, as on the
/// wire: class × 32 + detail) or dropped. Bounded by the reports the device itself made; held
/// only by devices that had any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcomes {
    /// Refused reports: (seq, code), in order.
    pub refused: Vec<(u32, u8)>,
    /// Dropped reports' seqs, in order.
    pub dropped: Vec<u32>,
}

/// The application of one fleet device.
#[derive(Debug)]
pub struct FleetSensor {
    shared: Arc<FleetShared>,
    /// The device's number in its fleet.
    n: u32,
    /// The scheduled time of the next report to make.
    next_report: Instant,
    /// Reports made but not yet handed to the uplink, and the scheduled time of the first.
    due: u16,
    due_from: Instant,
    counts: ReportCounts,
    /// The seq of the report at the front of the device's queue (the oldest not resolved).
    front: u32,
    /// Whether the front report went out at least once (an answer or a timeout came back).
    front_tried: bool,
    outcomes: Option<Box<Outcomes>>,
    /// Platform commands (`PUT /actuators/valve`) it ran.
    commands: u32,
}

impl FleetSensor {
    /// Device `n` of the fleet, its first report scheduled at `first_report`.
    pub fn new(shared: Arc<FleetShared>, n: u32, first_report: Instant) -> FleetSensor {
        FleetSensor {
            shared,
            n,
            next_report: first_report,
            due: 0,
            due_from: first_report,
            counts: ReportCounts::default(),
            front: 1,
            front_tried: false,
            outcomes: None,
            commands: 0,
        }
    }

    /// Platform commands (`PUT /actuators/valve`) it ran.
    pub fn commands(&self) -> u32 {
        self.commands
    }

    /// Counts of its reports' fate.
    pub fn counts(&self) -> &ReportCounts {
        &self.counts
    }

    /// Refused and dropped reports, if any.
    pub fn outcomes(&self) -> Option<&Outcomes> {
        self.outcomes.as_deref()
    }

    /// The seq of the oldest report not resolved (past `made` when none is).
    pub fn front(&self) -> u32 {
        self.front
    }

    /// Whether the oldest unresolved report went out at least once.
    pub fn front_tried(&self) -> bool {
        self.front_tried
    }

    /// The device's number in its fleet.
    pub fn number(&self) -> u32 {
        self.n
    }

    /// The id of the device.
    pub fn device_id(&self) -> String {
        format!(
            "{}{:06}",
            self.shared.id_prefix,
            self.shared.first + u64::from(self.n)
        )
    }

    /// The report `seq`, made at unix time `t`.
    fn report(&self, seq: u32, t: f64) -> Option<(u16, Vec<u8>)> {
        let payload = self.shared.payload;
        let value = |k: u32| {
            20.0 + f64::from(
                (seq.wrapping_mul(37)
                    .wrapping_add(self.n)
                    .wrapping_add(k * 11))
                    % 1000,
            ) / 100.0
        };
        let mut pack = PackBuilder::new()
            .base_name(format!("urn:dev:v6iot:{}:", self.device_id()))
            .base_time((t * 1000.0).round() / 1000.0)
            .record(Record::measurement("temperature", "Cel", value(0)));
        for k in 1..u32::from(payload.records.saturating_sub(2)) + 1 {
            pack = pack.record(Record::measurement(format!("m{k}"), "/", value(k)));
        }
        if payload.pad > 0 {
            pack = pack.record(Record::string_value("pad", "x".repeat(payload.pad)));
        }
        let pack = pack
            .record(Record {
                n: Some("seq".into()),
                v: Some(f64::from(seq)),
                ..Record::default()
            })
            .build();
        match payload.format {
            Format::Cbor => senml::to_cbor(&pack).ok().map(|b| (cf::SENML_CBOR, b)),
            Format::Json => senml::to_json_vec(&pack).ok().map(|b| (cf::SENML_JSON, b)),
        }
    }

    /// The report at the front left the queue: the next one not dropped is the front now.
    fn advance_front(&mut self) {
        self.front += 1;
        self.front_tried = false;
        if let Some(o) = &self.outcomes {
            while o.dropped.binary_search(&self.front).is_ok() {
                self.front += 1;
            }
        }
    }
}

impl App for FleetSensor {
    fn poll_timeout(&self) -> Option<Instant> {
        self.shared.interval?;
        (self.next_report < self.shared.stop_at).then_some(self.next_report)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        let Some(interval) = self.shared.interval else {
            return Changed::NONE;
        };
        // Every report scheduled up to now, each timed as scheduled.
        while self.next_report <= now && self.next_report < self.shared.stop_at {
            if self.due == 0 {
                self.due_from = self.next_report;
            }
            self.due = self.due.saturating_add(1);
            self.counts.made += 1;
            self.next_report += interval;
        }
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        let interval = self.shared.interval?;
        if self.due == 0 {
            return None;
        }
        let seq = self.counts.made - u32::from(self.due) + 1;
        let t = self.shared.clock.unix(self.due_from);
        self.due -= 1;
        self.due_from += interval;
        self.report(seq, t)
    }

    fn report_event(&mut self, _now: Instant, event: ReportEvent) {
        match event {
            ReportEvent::Acked => {
                self.counts.acked += 1;
                self.advance_front();
            }
            ReportEvent::Refused(code) => {
                self.counts.refused += 1;
                let front = self.front;
                self.outcomes
                    .get_or_insert_with(Box::default)
                    .refused
                    .push((front, u8::from(coap_lite::MessageClass::Response(code))));
                self.advance_front();
            }
            ReportEvent::Dropped => {
                // The report just made: the newest.
                self.counts.dropped += 1;
                let seq = self.counts.made;
                self.outcomes
                    .get_or_insert_with(Box::default)
                    .dropped
                    .push(seq);
                if self.front == seq {
                    self.advance_front();
                }
            }
            ReportEvent::Busy => {
                self.counts.busy += 1;
                self.front_tried = true;
            }
            ReportEvent::TimedOut => {
                self.counts.timeouts += 1;
                self.front_tried = true;
            }
            ReportEvent::Forbidden => {
                self.counts.forbidden += 1;
                self.front_tried = true;
            }
            _ => {}
        }
    }
}

/// The shared tree of fleet devices: the temperature, and a valve platform commands set (each
/// command run is counted in [`FleetSensor::commands`]).
pub fn tree() -> Result<Arc<ResourceTree<FleetSensor>>, TreeError> {
    let mut t = ResourceTree::new();
    t.add(
        Resource::new("sensors/temperature")
            .rt("oic.r.temperature")
            .content_formats(&[cf::TEXT_PLAIN])
            .get(|s: &mut FleetSensor, _| {
                let v = 20.0 + f64::from(s.counts.made % 1000) / 100.0;
                Response::content(cf::TEXT_PLAIN, v.to_string().into_bytes()).into()
            }),
    )?;
    t.add(
        Resource::new("actuators/valve")
            .rt("v6iot.valve")
            .put(|s: &mut FleetSensor, _| {
                s.commands = s.commands.saturating_add(1);
                Response::code(Code::Changed).into()
            }),
    )?;
    Ok(Arc::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_pair_is_read_again_when_the_thread_was_preempted() {
        // The first try is preempted for 120 ms between its readings, the second is tight.
        let unix = [100.0, 100.12, 100.2, 100.2004];
        let mut u = unix.iter().copied();
        let mut i = [Instant::from_millis(5), Instant::from_millis(85)].into_iter();
        let c = WallClock::read(|| i.next().unwrap(), || u.next().unwrap());
        assert_eq!(c.start, Instant::from_millis(85));
        assert!((c.unix_at_start - 100.2002).abs() < 1e-9, "{c:?}");
        // A clock that never settles: the tightest of the tries.
        let mut spreads = [0.5, 0.3, 0.02, 0.4, 0.6, 0.7, 0.8, 0.9].into_iter();
        let mut t = 0.0;
        let mut first = true;
        let c = WallClock::read(Instant::now, || {
            if first {
                t += 10.0;
            } else {
                t += spreads.next().unwrap_or(1.0);
            }
            first = !first;
            t
        });
        // Third try: before 30.8, after 30.82.
        assert!((c.unix_at_start - 30.81).abs() < 1e-9, "{c:?}");
    }
    use v6iot_sdk::coap::Code;

    fn shared(interval_ms: u64, stop_ms: u64, payload: Payload) -> Arc<FleetShared> {
        Arc::new(FleetShared {
            id_prefix: "f".into(),
            first: 1,
            interval: Some(Duration::from_millis(interval_ms)),
            stop_at: Instant::ZERO + Duration::from_millis(stop_ms),
            payload,
            clock: WallClock::at(Instant::ZERO, 1000.0),
        })
    }

    fn ms(t: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(t)
    }

    /// The `seq` and time of a SenML-CBOR report.
    fn seq_and_time(body: &[u8]) -> (u32, f64) {
        let pack = senml::from_cbor(body).unwrap();
        let bt = pack[0].bt.unwrap();
        let seq = pack
            .iter()
            .find(|r| r.n.as_deref() == Some("seq"))
            .unwrap()
            .v
            .unwrap();
        (seq as u32, bt)
    }

    #[test]
    fn makes_every_scheduled_report_timed_as_scheduled_even_when_woken_late() {
        let mut s = FleetSensor::new(shared(100, 1000, Payload::default()), 4, ms(50));
        assert_eq!(s.device_id(), "f000005");
        assert_eq!(s.poll_timeout(), Some(ms(50)));
        // Woken 260 ms late: the reports due at 50, 150, 250 are all made.
        let _ = s.handle_timeout(ms(310));
        let made: Vec<(u32, f64)> = std::iter::from_fn(|| s.poll_report())
            .map(|(cf, b)| {
                assert_eq!(cf, cf::SENML_CBOR);
                seq_and_time(&b)
            })
            .collect();
        assert_eq!(made, [(1, 1000.05), (2, 1000.15), (3, 1000.25)]);
        assert_eq!(s.poll_timeout(), Some(ms(350)));
        // Nothing is scheduled at or after the end, however late the wake-up.
        let _ = s.handle_timeout(ms(5000));
        assert_eq!(std::iter::from_fn(|| s.poll_report()).count(), 7);
        assert_eq!(s.counts().made, 10);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn the_fate_of_every_report_is_known_by_its_number() {
        let mut s = FleetSensor::new(shared(10, 1000, Payload::default()), 0, ms(0));
        let _ = s.handle_timeout(ms(50)); // seqs 1..=6
        while s.poll_report().is_some() {}
        s.report_event(ms(50), ReportEvent::Acked); // 1
        s.report_event(ms(50), ReportEvent::Busy); // 2 kept
        s.report_event(ms(50), ReportEvent::Dropped); // 6, the newest, never queued
        assert!(s.front_tried());
        s.report_event(ms(50), ReportEvent::Refused(Code::BadRequest)); // 2
        s.report_event(ms(50), ReportEvent::TimedOut); // 3 kept
        s.report_event(ms(50), ReportEvent::Acked); // 3
        s.report_event(ms(50), ReportEvent::Acked); // 4
        assert_eq!(s.front(), 5);
        s.report_event(ms(50), ReportEvent::Acked); // 5; 6 was dropped: the front is 7
        assert_eq!(s.front(), 7);
        assert!(!s.front_tried());
        let c = *s.counts();
        assert_eq!(
            (c.made, c.acked, c.refused, c.dropped, c.busy, c.timeouts),
            (6, 4, 1, 1, 1, 1)
        );
        assert_eq!(c.resolved(), 6);
        let o = s.outcomes().unwrap();
        assert_eq!(o.refused, [(2, 0x80)]);
        assert_eq!(o.dropped, [6]);
    }

    #[test]
    fn payload_shapes_carry_records_pad_and_seq() {
        let payload = Payload {
            records: 5,
            format: Format::Json,
            pad: 40,
        };
        let mut s = FleetSensor::new(shared(10, 1000, payload), 2, ms(0));
        let _ = s.handle_timeout(ms(0));
        let (cf, body) = s.poll_report().unwrap();
        assert_eq!(cf, cf::SENML_JSON);
        let pack = senml::from_json(&body).unwrap();
        assert_eq!(pack.len(), 6, "temperature, m1..m3, pad, seq");
        assert_eq!(pack[3].n.as_deref(), Some("m3"));
        assert_eq!(pack[4].vs.as_deref().map(str::len), Some(40));
        assert_eq!(pack[5].n.as_deref(), Some("seq"));
        assert_eq!(pack[0].bn.as_deref(), Some("urn:dev:v6iot:f000003:"));
    }
}
