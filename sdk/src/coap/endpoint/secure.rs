//! OSCORE (RFC 8613) inside an [`Endpoint`]: the device's security context, the gate every
//! incoming request passes, the sealing of outgoing messages, and the messages held until a
//! sequence-number mark is durable.
//!
//! OSCORE sits between CoAP messaging (type, message ID, token: deduplication, retransmission)
//! and the request/response layer (§4): a request is verified after deduplication and before the
//! resource tree sees it; an answer is protected before it becomes the bytes the endpoint stores
//! for retransmission and deduplication, so a retransmitted message is the same protected
//! message, never a second protection with a new Partial IV.
//!
//! The replay window of received requests survives a restart too (RFC 8613 Appendix B.1.2):
//! a verified request that raises the window's restart floor
//! ([`ReplayWindow::restart_floor`](crate::oscore::ReplayWindow::restart_floor)) above the
//! durable one is *held*, verified but not yet served, until the caller has written the new floor
//! ([`Endpoint::state_to_persist`], [`Endpoint::state_persisted`]). So a request captured before
//! a crash is refused after it ("Replay detected") and its handler — opening a valve, say — never
//! runs twice. Meanwhile retransmissions of the held request are dropped as duplicates; requests
//! after it queue behind it, in order. One write carries the floor and the sender mark.
//!
//! Messages that need a sender sequence number (this device's requests, Observe notifications)
//! and find none below the durable mark are *held*: requests as their plain packet, in order,
//! notifications as "resource changed" (the observer gets the then current state once a mark is
//! confirmed). Responses bound to a request's nonce need no number and are never held.

use alloc::boxed::Box;
use alloc::vec::Vec;

use alloc::collections::VecDeque;
use core::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::request::Incoming;
use super::{Endpoint, RequestId, Token};
use crate::coap::resource::{Code, Method, ResourceId, ResourceTree, WELL_KNOWN_CORE};
use crate::coap::wire;
use crate::oscore::{self, DurableState, OscoreError, RequestInfo, SecurityContext};
use crate::time::Instant;

/// Verified requests held for a durable replay floor, at most. Past it a verified request is
/// dropped unanswered (counted): the store is failing, and the client retries later.
const MAX_HELD_INCOMING: usize = 4;

/// Counters of the OSCORE layer of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OscoreStats {
    /// Protected requests that verified and went on to the resources.
    pub requests_verified: u64,
    /// Protected requests that failed verification (answered with the §8.2 error response; the
    /// handler never ran).
    pub requests_rejected: u64,
    /// Unprotected requests refused with 4.01 (all but `GET /.well-known/core`).
    pub plain_refused: u64,
    /// Responses to this device's requests that verified.
    pub responses_verified: u64,
    /// Responses to this device's requests that failed verification or were unprotected:
    /// dropped, the request retries or times out.
    pub responses_rejected: u64,
    /// Messages held because no sequence number was left below the durable mark.
    pub held: u64,
    /// Messages that could not be protected and were dropped (sequence numbers exhausted, an
    /// unencodable message).
    pub protect_failed: u64,
    /// Verified requests held until their replay floor was durable (Appendix B.1.2).
    pub requests_held: u64,
    /// Verified requests dropped unanswered because too many already waited for a durable
    /// replay floor (the store keeps failing).
    pub requests_dropped_unpersisted: u64,
    /// Unprotected error responses (4.xx/5.xx, e.g. the edge's 4.01 "Security context not
    /// found") to this device's protected requests: unauthenticated, so dropped like any
    /// unverified response, but counted here and reported as
    /// [`Event::UnprotectedError`](super::Event::UnprotectedError).
    pub unprotected_errors: u64,
    /// Requests of this device repeated with an Echo value after a verified 4.01 asked for one
    /// (RFC 9175; the edge confirms a device's new address so): at most once per request.
    pub echo_repeats: u64,
}

/// A request of this device waiting for a durable mark.
#[derive(Debug)]
struct HeldRequest {
    id: RequestId,
    peer: SocketAddr,
    packet: Packet,
}

/// A verified request as it arrived; held while its replay floor is not durable.
#[derive(Debug)]
pub(super) struct HeldIncoming {
    pub(super) peer: SocketAddr,
    pub(super) message_id: u16,
    pub(super) confirmable: bool,
    pub(super) token: Token,
    /// The verified (inner) request.
    pub(super) packet: Packet,
    pub(super) info: Box<RequestInfo>,
}

/// The OSCORE state of an endpoint with credentials.
#[derive(Debug)]
pub(super) struct Secure {
    pub(super) ctx: SecurityContext,
    /// The replay floor last confirmed durable (or restored).
    floor_durable: u64,
    held_incoming: VecDeque<HeldIncoming>,
    held_requests: VecDeque<HeldRequest>,
    held_notifications: Vec<ResourceId>,
    pub(super) stats: OscoreStats,
}

/// What the gate decided about an incoming request.
pub(super) enum Gate {
    /// Unprotected and allowed: `GET /.well-known/core`.
    Open,
    /// Verified: the original request and its binding for the response.
    Verified(Packet, Box<RequestInfo>),
    /// Refused before any handler runs: answer with this code and diagnostic (Max-Age 0).
    Refused {
        code: Code,
        diagnostic: &'static str,
        cause: Option<OscoreError>,
    },
}

impl Secure {
    pub(super) fn new(ctx: SecurityContext) -> Secure {
        Secure {
            floor_durable: ctx.replay_window().restart_floor(),
            ctx,
            held_incoming: VecDeque::new(),
            held_requests: VecDeque::new(),
            held_notifications: Vec::new(),
            stats: OscoreStats::default(),
        }
    }

    /// Bytes held on the heap for OSCORE (approximate: the held messages' bodies and options
    /// are counted by their payloads).
    pub(super) fn memory_footprint(&self) -> usize {
        core::mem::size_of::<Secure>()
            + self.ctx.sender_id().len()
            + self.ctx.recipient_id().len()
            + self.held_requests.capacity() * core::mem::size_of::<HeldRequest>()
            + self
                .held_requests
                .iter()
                .map(|h| h.packet.payload.len())
                .sum::<usize>()
            + self.held_notifications.capacity() * core::mem::size_of::<ResourceId>()
            + self.held_incoming.capacity() * core::mem::size_of::<HeldIncoming>()
            + self
                .held_incoming
                .iter()
                .map(|h| h.packet.payload.len())
                .sum::<usize>()
    }

    /// Whether a verified request raised the replay floor above the durable one.
    fn floor_pending(&self) -> bool {
        self.ctx.replay_window().restart_floor() > self.floor_durable
    }

    /// What to write durably now, if anything: a due sender mark, or a replay floor above the
    /// durable one. Both values go in every write.
    fn state_to_persist(&self) -> Option<DurableState> {
        let mark = self.ctx.mark_to_persist();
        if mark.is_none() && !self.floor_pending() {
            return None;
        }
        Some(DurableState {
            sender_mark: mark.unwrap_or_else(|| self.ctx.sequence().durable_mark()),
            replay_floor: self.ctx.replay_window().restart_floor(),
        })
    }

    /// Verifies a request (§8.2), or lets plain discovery through, or refuses.
    pub(super) fn gate(&mut self, packet: &Packet) -> Gate {
        if packet.get_first_option(CoapOption::Oscore).is_none() {
            if is_plain_discovery(packet) {
                return Gate::Open;
            }
            self.stats.plain_refused += 1;
            return Gate::Refused {
                code: Code::Unauthorized,
                diagnostic: "OSCORE required",
                cause: None,
            };
        }
        match oscore::unprotect_request(&mut self.ctx, packet) {
            Ok((request, info)) => {
                self.stats.requests_verified += 1;
                Gate::Verified(request, Box::new(info))
            }
            Err(e) => {
                self.stats.requests_rejected += 1;
                let (code, diagnostic) = e
                    .error_response()
                    .unwrap_or((Code::BadRequest, "Malformed OSCORE message"));
                Gate::Refused {
                    code,
                    diagnostic,
                    cause: Some(e),
                }
            }
        }
    }

    /// Protects a response (or, with `fresh_piv`, a notification) bound to `info`. `Ok(None)`:
    /// held for a mark (notifications only).
    pub(super) fn seal_response(
        &mut self,
        packet: &Packet,
        info: &mut RequestInfo,
        fresh_piv: bool,
    ) -> Result<Option<Packet>, OscoreError> {
        match oscore::protect_response(&mut self.ctx, packet, info, fresh_piv) {
            Ok(p) => Ok(Some(p)),
            Err(OscoreError::PersistPending) => {
                self.stats.held += 1;
                Ok(None)
            }
            Err(e) => {
                self.stats.protect_failed += 1;
                Err(e)
            }
        }
    }

    /// Remembers that `resource` has observers whose notification waits for a mark.
    pub(super) fn hold_notification(&mut self, resource: ResourceId) {
        if !self.held_notifications.contains(&resource) {
            self.held_notifications.push(resource);
        }
    }

    /// Whether requests wait for a mark (a newer request must queue behind them).
    fn has_held_requests(&self) -> bool {
        !self.held_requests.is_empty()
    }
}

/// `GET /.well-known/core`, the one resource served without OSCORE.
fn is_plain_discovery(packet: &Packet) -> bool {
    if packet.header.code != MessageClass::Request(Method::Get) {
        return false;
    }
    let mut segments = packet.get_option(CoapOption::UriPath).into_iter().flatten();
    let mut expected = WELL_KNOWN_CORE.split('/');
    loop {
        match (segments.next(), expected.next()) {
            (None, None) => return true,
            (Some(s), Some(e)) if s.as_slice() == e.as_bytes() => {}
            _ => return false,
        }
    }
}

/// What the gate does with a request that verified.
pub(super) enum Admit {
    /// Its replay floor is durable: serve it now (the verified request and its binding).
    Serve(Packet, Box<RequestInfo>),
    /// Held until the floor is durable (the dedup cache drops its retransmissions meanwhile).
    Held,
    /// Too many wait already: dropped unanswered.
    Dropped,
}

/// What became of a request this device protects.
pub(super) enum Sealed {
    /// Ready: the bytes to send and, when protected, the binding for its response.
    Sent(Vec<u8>, Option<Box<RequestInfo>>),
    /// Held until a mark is durable.
    Held,
    /// Could not be protected or encoded: the request fails.
    Failed,
}

impl Endpoint {
    /// Gives this endpoint OSCORE credentials: from now on it serves only protected requests
    /// (and plain `GET /.well-known/core`) and protects every message it sends. Give them before
    /// the first request goes out.
    pub fn set_security_context(&mut self, ctx: SecurityContext) {
        self.secure = Some(Box::new(Secure::new(ctx)));
    }

    /// The OSCORE security context, when the endpoint has credentials.
    pub fn security_context(&self) -> Option<&SecurityContext> {
        self.secure.as_ref().map(|s| &s.ctx)
    }

    /// The OSCORE counters, when the endpoint has credentials.
    pub fn oscore_stats(&self) -> Option<&OscoreStats> {
        self.secure.as_ref().map(|s| &s.stats)
    }

    /// The sequence-number mark to write to non-volatile memory now, if one is due (RFC 8613
    /// Appendix B.1.1, see [`SecurityContext::mark_to_persist`]). The same value comes back
    /// until [`Endpoint::persisted`] confirms it, so a caller with a write in flight compares and
    /// skips. Nothing is ever sent with a sequence number at or above the confirmed mark: such
    /// messages wait.
    #[must_use]
    pub fn mark_to_persist(&self) -> Option<u64> {
        self.secure.as_ref().and_then(|s| s.ctx.mark_to_persist())
    }

    /// Confirms that `mark` is durable and sends the requests that waited for it. Notifications
    /// that waited are named by [`Endpoint::take_held_notifications`]; a
    /// [`Device`](crate::coap::Device) sends them itself.
    pub fn persisted(&mut self, now: Instant, mark: u64) {
        if let Some(secure) = self.secure.as_deref_mut() {
            secure.ctx.persisted(mark);
        }
        while let Some((id, peer, confirmable, sealed)) = self.next_released() {
            self.release_request(now, id, peer, confirmable, sealed);
        }
    }

    /// What to write durably now, if anything: the sender sequence-number mark when one is due
    /// and the replay floor when a verified request raised it (RFC 8613 Appendix B.1.1, B.1.2).
    /// Write both values in one go, then call [`Endpoint::state_persisted`]; the same value
    /// comes back until then. Verified requests are not served, and nothing is sent with a
    /// sequence number at or above the confirmed mark, until the write is confirmed.
    ///
    /// `None` without credentials: the plain path never writes.
    #[must_use]
    pub fn state_to_persist(&self) -> Option<DurableState> {
        self.secure.as_deref().and_then(Secure::state_to_persist)
    }

    /// Confirms that `state` is durable: requests of this device that waited for a mark go
    /// out, and verified requests that waited for their replay floor are served by `tree` now.
    pub fn state_persisted<S>(
        &mut self,
        now: Instant,
        state: DurableState,
        tree: &ResourceTree<S>,
        app: &mut S,
    ) {
        if let Some(secure) = self.secure.as_deref_mut() {
            secure.floor_durable = secure.floor_durable.max(state.replay_floor);
        }
        self.persisted(now, state.sender_mark);
        while let Some(held) = self.next_admitted() {
            let request = Incoming {
                now,
                peer: held.peer,
                message_id: held.message_id,
                confirmable: held.confirmable,
                token: held.token,
                packet: &held.packet,
            };
            self.serve_request(&request, Some(held.info), tree, app);
        }
    }

    /// The oldest verified request held for its replay floor, once that floor is durable.
    fn next_admitted(&mut self) -> Option<HeldIncoming> {
        let secure = self.secure.as_deref_mut()?;
        if secure.floor_pending() {
            return None;
        }
        let next = secure.held_incoming.pop_front();
        if next.is_none() {
            // Rarely used: give the memory back (an idle device stays small).
            secure.held_incoming = VecDeque::new();
        }
        next
    }

    /// Serves a verified request now if its replay floor is durable, else holds it.
    pub(super) fn admit(&mut self, request: HeldIncoming) -> Admit {
        let Some(secure) = self.secure.as_deref_mut() else {
            return Admit::Serve(request.packet, request.info);
        };
        if !secure.floor_pending() && secure.held_incoming.is_empty() {
            return Admit::Serve(request.packet, request.info);
        }
        if secure.held_incoming.len() >= MAX_HELD_INCOMING {
            secure.stats.requests_dropped_unpersisted += 1;
            return Admit::Dropped;
        }
        secure.stats.requests_held += 1;
        secure.held_incoming.push_back(request);
        Admit::Held
    }

    /// The oldest held request, protected, once a sequence number is free for it.
    fn next_released(&mut self) -> Option<(RequestId, SocketAddr, bool, Sealed)> {
        let secure = self.secure.as_deref_mut()?;
        let held = secure.held_requests.front()?;
        let result = oscore::protect_request(&mut secure.ctx, &held.packet);
        if result == Err(OscoreError::PersistPending) {
            return None;
        }
        let held = secure.held_requests.pop_front()?;
        let sealed = match result {
            Ok((outer, info)) => match wire::encode(&outer) {
                Some(bytes) => Sealed::Sent(bytes, Some(Box::new(info))),
                None => Sealed::Failed,
            },
            Err(_) => Sealed::Failed,
        };
        if matches!(sealed, Sealed::Failed) {
            secure.stats.protect_failed += 1;
        }
        let confirmable = held.packet.header.get_type() == MessageType::Confirmable;
        Some((held.id, held.peer, confirmable, sealed))
    }

    /// Resources whose notifications waited for a mark; notify their observers again.
    pub fn take_held_notifications(&mut self) -> Vec<ResourceId> {
        self.secure
            .as_deref_mut()
            .map(|s| core::mem::take(&mut s.held_notifications))
            .unwrap_or_default()
    }

    /// Encodes one of this device's requests; with credentials protects it, or holds it when no sequence number is left below
    /// the durable mark (or earlier requests wait already, to keep their order).
    pub(super) fn seal_request(
        &mut self,
        id: RequestId,
        peer: SocketAddr,
        packet: Packet,
    ) -> Sealed {
        let Some(secure) = self.secure.as_deref_mut() else {
            return match wire::encode(&packet) {
                Some(bytes) => Sealed::Sent(bytes, None),
                None => Sealed::Failed,
            };
        };
        if !secure.has_held_requests() {
            match oscore::protect_request(&mut secure.ctx, &packet) {
                Ok((outer, info)) => {
                    return match wire::encode(&outer) {
                        Some(bytes) => Sealed::Sent(bytes, Some(Box::new(info))),
                        None => {
                            secure.stats.protect_failed += 1;
                            Sealed::Failed
                        }
                    };
                }
                Err(OscoreError::PersistPending) => {}
                Err(_) => {
                    secure.stats.protect_failed += 1;
                    return Sealed::Failed;
                }
            }
        }
        secure.stats.held += 1;
        secure
            .held_requests
            .push_back(HeldRequest { id, peer, packet });
        Sealed::Held
    }
}
