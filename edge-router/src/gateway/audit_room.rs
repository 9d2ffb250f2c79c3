//! Room in the audit lane: the edge does nothing it cannot audit.
//!
//! The registry thread's audit lane is bounded
//! ([`crate::registry_worker::Jobs::MAX_AUDIT_ROWS`]): an unauthenticated flood must not grow
//! it. Rows it has no room for are dropped and counted — a gap in the trail. So before the
//! gateway serves a verified request whose audit rows could be dropped it asks this table: a
//! device that is not bound at its address yet writes a binding row (two when it displaces
//! another), a registration (`POST /rd`) writes its registration row. Without room for those
//! plus [`AuditRoom::RESERVE`] the request is answered 5.03 Service Unavailable with a Max-Age
//! ([`AuditRoom::retry_after`]) and nothing about it is changed or written; the device retries
//! once the lane has drained. Requests that write no rows (telemetry, updates,
//! deregistrations from a bound device) never wait for the lane. In lab mode
//! (`require_oscore = false`) a plain registration without room for its row gets the same 5.03
//! from the ingress ([`Ingress::hold_registrations`](crate::ingress::Ingress::hold_registrations)),
//! after its deduplication: a retransmission of one already accepted still gets its 2.01.
//!
//! # Retry hints paced by the lane's drain
//!
//! A storm of registrations refused with the same short hint comes back as the same storm a
//! few seconds later, and again: in a million-device storm each device was refused about four
//! times, and every refusal cost a full OSCORE round trip at both ends. So the hints are slots
//! in a virtual queue served at the rate the registry thread drains the lane: each refusal's
//! slot is the later of [`AuditRoom::RETRY_MIN_S`] from now and the end of the slots already
//! given, and moves that end on by the rows the request would write over the drain rate
//! ([`DrainRate`]: rows the thread took per second of its CPU time — its state batches
//! included — while a backlog waited: what it drains with a core to itself, which it has once
//! the storm's first wave has passed; measured per second of wall-clock time, while the
//! simulator, the verification and the thread shared two cores, it paced a million-device
//! storm's retries at half of what the thread then wrote, and the lane stood idle). A slot of
//! fractional seconds is rounded up or down at random in proportion (Max-Age counts whole
//! seconds), so a second's worth of slots arrives spread over two seconds and on average on
//! time. Hints are at most [`AuditRoom::RETRY_MAX_S`] (the SDK's longest back-off); a device
//! that comes back when the lane is still full is refused again and queued at the end.
//!
//! The driver tells the room after each hand-over of rows
//! ([`Gateway::handle_audit_room`](super::Gateway::handle_audit_room)) and the thread's progress
//! ([`Gateway::handle_audit_drain`](super::Gateway::handle_audit_drain)); between two
//! hand-overs every row the gateway emits, and every registration it lets through, is charged
//! against the room. The reserve is what rows that cannot be refused (aggregated authentication
//! failures, revocations noticed, commands answered, conflicts) may take meanwhile; those that
//! still find no room stay dropped and counted as before.

use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use v6iot_sdk::coap::wire;

use coap_lite::{MessageClass, Packet, RequestType};

use crate::ingress::PathKind;

/// What the audit lane can still take, as the gateway last heard it, less what it emitted
/// since; and the retry slots given to requests it had no room for.
#[derive(Debug, Clone)]
pub struct AuditRoom {
    room: usize,
    /// Mixed into the rounding of retry hints so that refused devices spread their retries.
    seed: u64,
    refusals: u64,
    drain: DrainRate,
    /// The end of the retry slots given so far (see the module docs).
    slots_end: Option<Instant>,
}

impl AuditRoom {
    /// Rows kept free for rows that cannot be refused (see the module docs): 1/64 of the
    /// lane's bound.
    pub const RESERVE: usize = 4096;
    /// The shortest retry hint (seconds): a full lane has drained a good part by then.
    pub const RETRY_MIN_S: u32 = 2;
    /// The longest retry hint (seconds): the SDK's longest registration back-off.
    pub const RETRY_MAX_S: u32 = 300;
    /// Rows a verified request from a device not bound at its address may write (a binding
    /// row, and a conflict row for a device it displaces).
    pub const BINDING_ROWS: usize = 2;

    /// Unbounded until the driver tells the room (an edge without a registry thread).
    pub(super) fn new(seed: u64) -> AuditRoom {
        AuditRoom {
            room: usize::MAX,
            seed,
            refusals: 0,
            drain: DrainRate::default(),
            slots_end: None,
        }
    }

    /// The lane can take `room` rows now.
    pub(super) fn set(&mut self, room: usize) {
        self.room = room;
    }

    /// The registry thread has taken `taken` rows from the lane since start in `cpu` of its
    /// CPU time; `waiting` rows wait now.
    pub(super) fn drained(&mut self, now: Instant, taken: u64, cpu: Duration, waiting: usize) {
        self.drain.observe(now, taken, cpu, waiting);
    }

    /// `rows` were emitted (or will be, by the ingress) since the room was told.
    pub(super) fn charge(&mut self, rows: usize) {
        self.room = self.room.saturating_sub(rows);
    }

    /// Whether `rows` more fit and leave the reserve free.
    pub(super) fn admits(&self, rows: usize) -> bool {
        rows == 0 || self.room >= rows.saturating_add(Self::RESERVE)
    }

    /// The Max-Age (seconds) for a request refused at `now` that would write `rows` when
    /// served: its slot in the queue of retries (see the module docs).
    pub(super) fn retry_after(&mut self, now: Instant, rows: usize) -> u32 {
        self.refusals = self.refusals.wrapping_add(1);
        let earliest = now + Duration::from_secs(u64::from(Self::RETRY_MIN_S));
        let start = self
            .slots_end
            .filter(|&end| end > earliest)
            .unwrap_or(earliest);
        let cost = Duration::from_secs_f64(rows.max(1) as f64 / self.drain.rows_per_s());
        self.slots_end = Some(start + cost);
        let offset = start.saturating_duration_since(now);
        // Rounded up with the chance of the fraction (a uniform draw from the hash).
        let draw = foldhash::fast::FixedState::with_seed(self.seed).hash_one(self.refusals);
        let uniform = (draw >> 11) as f64 / ((1u64 << 53) as f64);
        let up = uniform < f64::from(offset.subsec_nanos()) / 1e9;
        let secs = offset.as_secs().saturating_add(u64::from(up));
        u32::try_from(secs)
            .unwrap_or(u32::MAX)
            .clamp(Self::RETRY_MIN_S, Self::RETRY_MAX_S)
    }
}

/// How fast the registry thread drains the audit lane, in rows per second of its CPU time
/// (state batches included: they take the same thread): measured over windows of at least
/// [`DrainRate::WINDOW`] through which a backlog of at least [`DrainRate::BACKLOG`] rows waited,
/// so that chunks were at their largest — what the lane can take when it is full, which is when
/// the hints are given. Smoothed over the last few windows.
#[derive(Debug, Clone, Default)]
pub struct DrainRate {
    /// Start of the window: when, rows taken, CPU time.
    window: Option<(Instant, u64, Duration)>,
    rows_per_s: Option<f64>,
}

impl DrainRate {
    /// The shortest window a measurement spans.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// The backlog a window needs throughout (rows): enough for the largest chunks, a quarter
    /// of the backlog up to 2,048 rows ([`crate::registry_worker::Jobs::audit_chunk`]; the
    /// registry thread's module imports this one, not the reverse, and checks the two agree).
    pub const BACKLOG: usize = 8192;
    /// The rate assumed before the first measurement (rows/s): about what the registry thread
    /// writes per second of CPU in a million-device storm on the 2-core bench machine.
    pub const ASSUMED: f64 = 40_000.0;
    /// The lowest rate believed (rows/s): a stalled disk must not push hints past the
    /// longest one for every device at once.
    pub const FLOOR: f64 = 100.0;

    /// `taken` rows taken since start in `cpu` of CPU time, `waiting` waiting, at `now`.
    pub fn observe(&mut self, now: Instant, taken: u64, cpu: Duration, waiting: usize) {
        if waiting < Self::BACKLOG {
            self.window = None;
            return;
        }
        let Some((since, rows_before, cpu_before)) = self.window else {
            self.window = Some((now, taken, cpu));
            return;
        };
        if now.saturating_duration_since(since) < Self::WINDOW {
            return;
        }
        let worked = cpu.saturating_sub(cpu_before).as_secs_f64();
        // A thread that did not work at all in a second with a backlog is stalled: rate 0.
        let sample = if worked > 0.0 {
            taken.saturating_sub(rows_before) as f64 / worked
        } else {
            0.0
        };
        self.rows_per_s = Some(self.rows_per_s.map_or(sample, |r| (r + sample) / 2.0));
        self.window = Some((now, taken, cpu));
    }

    /// The rate to plan with, rows/s.
    pub fn rows_per_s(&self) -> f64 {
        self.rows_per_s.unwrap_or(Self::ASSUMED).max(Self::FLOOR)
    }
}

/// Whether `request` is a registration (`POST /rd`): the ingress audits each one.
pub(super) fn is_registration(request: &Packet) -> bool {
    request.header.code == MessageClass::Request(RequestType::Post)
        && PathKind::of(request) == PathKind::Rd
}

/// The Max-Age option's value for `seconds`.
pub(super) fn max_age(seconds: u32) -> Vec<u8> {
    wire::write_uint(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_free_and_charges_count() {
        let mut room = AuditRoom::new(7);
        assert!(room.admits(3), "unbounded until told");
        room.set(AuditRoom::RESERVE + 3);
        assert!(room.admits(3));
        assert!(!room.admits(4));
        assert!(
            room.admits(0),
            "a request that writes nothing always passes"
        );
        room.charge(1);
        assert!(!room.admits(3));
        assert!(room.admits(2));
        room.charge(usize::MAX);
        assert!(!room.admits(1));
        room.set(usize::MAX);
        assert!(room.admits(usize::MAX), "no overflow at the top");
    }

    #[test]
    fn retry_hints_are_slots_paced_by_the_drain_rate() {
        let t0 = Instant::now();
        let mut room = AuditRoom::new(42);
        // 10,000 rows per second of the thread's CPU measured while a backlog waited.
        let backlog = DrainRate::BACKLOG;
        room.drained(t0, 0, Duration::ZERO, backlog);
        room.drained(
            t0 + Duration::from_secs(1),
            5_000,
            Duration::from_millis(500),
            backlog,
        );
        assert!((room.drain.rows_per_s() - 10_000.0).abs() < 1e-6);
        let now = t0 + Duration::from_secs(1);
        // 100,000 refusals of three rows each at the same moment: 30 s of slots after the
        // first 2 s, spread evenly, each hint within a second of its slot.
        let hints: Vec<u32> = (0..100_000).map(|_| room.retry_after(now, 3)).collect();
        for (i, &h) in hints.iter().enumerate() {
            let slot = 2.0 + i as f64 * 3.0 / 10_000.0;
            assert!(
                (f64::from(h) - slot).abs() <= 1.0,
                "refusal {i}: {h} s for a slot at {slot} s"
            );
        }
        let mean = hints.iter().map(|&h| f64::from(h)).sum::<f64>() / hints.len() as f64;
        assert!(
            (mean - 17.0).abs() < 0.1,
            "hints are on time on average: {mean}"
        );
        for s in 2..=31 {
            let n = hints.iter().filter(|&&h| h == s).count();
            assert!(
                (1_000..=5_000).contains(&n),
                "{n} devices told {s} s: not spread at the drain rate"
            );
        }
        // Later refusals queue behind, and the hint never passes the longest back-off.
        assert_eq!(room.retry_after(now, 3_000_000), 32);
        assert_eq!(room.retry_after(now, 3), AuditRoom::RETRY_MAX_S);
        // Once the slots given have passed, a refusal gets the shortest hint again.
        assert_eq!(
            room.retry_after(now + Duration::from_secs(400), 3),
            AuditRoom::RETRY_MIN_S
        );
    }

    #[test]
    fn the_drain_rate_is_rows_per_cpu_second_measured_only_under_a_backlog() {
        let t0 = Instant::now();
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        let full = DrainRate::BACKLOG;
        let mut rate = DrainRate::default();
        assert_eq!(
            rate.rows_per_s(),
            DrainRate::ASSUMED,
            "assumed until measured"
        );
        rate.observe(t0, 0, s(0), full);
        rate.observe(t0 + ms(500), 4_000, ms(400), full);
        assert_eq!(
            rate.rows_per_s(),
            DrainRate::ASSUMED,
            "a window is at least a second"
        );
        // 16,000 rows in 2 s in which the thread had 1 s of CPU (the rest: waiting for work,
        // or for a core, is not its pace).
        rate.observe(t0 + s(2), 16_000, s(1), full);
        assert!((rate.rows_per_s() - 16_000.0).abs() < 1e-6);
        // A small backlog: chunks were small and their commits dominate; not measured.
        rate.observe(t0 + s(3), 17_000, ms(1_500), full - 1);
        rate.observe(t0 + s(5), 17_100, s(2), 100);
        assert!((rate.rows_per_s() - 16_000.0).abs() < 1e-6);
        rate.observe(t0 + s(10), 18_000, s(3), full);
        rate.observe(t0 + s(11), 26_000, ms(3_250), full);
        assert!(
            (rate.rows_per_s() - 24_000.0).abs() < 1e-6,
            "smoothed: (16,000 + 32,000) / 2"
        );
        rate.observe(t0 + s(100), 26_000, ms(3_250), full);
        assert_eq!(rate.rows_per_s(), 12_000.0, "a stalled thread halves it");
        for i in 0..64 {
            rate.observe(t0 + s(101 + i), 26_000, ms(3_250), full);
        }
        assert_eq!(rate.rows_per_s(), DrainRate::FLOOR, "never below the floor");
    }
}
