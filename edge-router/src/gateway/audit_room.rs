//! Room in the audit lane: the edge does nothing it cannot audit.
//!
//! The registry thread's audit lane is bounded
//! ([`crate::registry_worker::Jobs::MAX_AUDIT_ROWS`]): an unauthenticated flood must not grow
//! it. Rows it has no room for are dropped and counted — a gap in the trail. So before the
//! gateway serves a verified request whose audit rows could be dropped it asks this table: a
//! device that is not bound at its address yet writes a binding row (two when it displaces
//! another), a registration (`POST /rd`) writes its registration row. Without room for those
//! plus [`AuditRoom::RESERVE`] the request is answered 5.03 Service Unavailable with a short,
//! jittered Max-Age ([`AuditRoom::RETRY_MIN_S`] plus less than [`AuditRoom::RETRY_SPREAD_S`])
//! and nothing about it is changed or written; the device retries once the lane has drained.
//! Requests that write no rows (telemetry, updates, deregistrations from a bound device) never
//! wait for the lane. In lab mode (`require_oscore = false`) a plain registration without room
//! for its row gets the same 5.03 from the ingress
//! ([`Ingress::hold_registrations`](crate::ingress::Ingress::hold_registrations)), after its
//! deduplication: a retransmission of one already accepted still gets its 2.01.
//!
//! The driver tells the room after each hand-over of rows
//! ([`Gateway::handle_audit_room`](super::Gateway::handle_audit_room)); between two hand-overs
//! every row the gateway emits, and every registration it lets through, is charged against it.
//! The reserve is what rows that cannot be refused (aggregated authentication failures,
//! revocations noticed, commands answered, conflicts) may take meanwhile; those that still find
//! no room stay dropped and counted as before.

use std::hash::BuildHasher as _;

use v6iot_sdk::coap::wire;

use coap_lite::{MessageClass, Packet, RequestType};

use crate::ingress::PathKind;

/// What the audit lane can still take, as the gateway last heard it, less what it emitted
/// since.
#[derive(Debug, Clone)]
pub struct AuditRoom {
    room: usize,
    /// Mixed into the retry hints so that refused devices spread their retries.
    seed: u64,
    refusals: u64,
}

impl AuditRoom {
    /// Rows kept free for rows that cannot be refused (see the module docs): 1/64 of the
    /// lane's bound.
    pub const RESERVE: usize = 4096;
    /// The shortest retry hint (seconds): a full lane drains in about 1.2 s at the registry
    /// thread's ~215,000 rows/s.
    pub const RETRY_MIN_S: u32 = 2;
    /// Retry hints spread over this many seconds above [`Self::RETRY_MIN_S`].
    pub const RETRY_SPREAD_S: u32 = 8;
    /// Rows a verified request from a device not bound at its address may write (a binding
    /// row, and a conflict row for a device it displaces).
    pub const BINDING_ROWS: usize = 2;

    /// Unbounded until the driver tells the room (an edge without a registry thread).
    pub(super) fn new(seed: u64) -> AuditRoom {
        AuditRoom {
            room: usize::MAX,
            seed,
            refusals: 0,
        }
    }

    /// The lane can take `room` rows now.
    pub(super) fn set(&mut self, room: usize) {
        self.room = room;
    }

    /// `rows` were emitted (or will be, by the ingress) since the room was told.
    pub(super) fn charge(&mut self, rows: usize) {
        self.room = self.room.saturating_sub(rows);
    }

    /// Whether `rows` more fit and leave the reserve free.
    pub(super) fn admits(&self, rows: usize) -> bool {
        rows == 0 || self.room >= rows.saturating_add(Self::RESERVE)
    }

    /// The Max-Age of the next refusal: [`Self::RETRY_MIN_S`] plus a jitter below
    /// [`Self::RETRY_SPREAD_S`], different for consecutive refusals.
    pub(super) fn retry_after(&mut self) -> u32 {
        self.refusals = self.refusals.wrapping_add(1);
        let jitter = foldhash::fast::FixedState::with_seed(self.seed).hash_one(self.refusals)
            % u64::from(Self::RETRY_SPREAD_S);
        Self::RETRY_MIN_S + u32::try_from(jitter).unwrap_or(0)
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
    fn retry_hints_are_short_and_spread() {
        let mut room = AuditRoom::new(42);
        let hints: Vec<u32> = (0..1000).map(|_| room.retry_after()).collect();
        let min = AuditRoom::RETRY_MIN_S;
        let max = min + AuditRoom::RETRY_SPREAD_S - 1;
        assert!(hints.iter().all(|h| (min..=max).contains(h)), "{hints:?}");
        for h in min..=max {
            let n = hints.iter().filter(|&&x| x == h).count();
            assert!(n > 50, "{h} s given {n} times of 1000: not spread");
        }
    }
}
