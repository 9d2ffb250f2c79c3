//! Message-layer exchanges of an [`Endpoint`] (RFC 7252 §4): the message IDs seen within
//! EXCHANGE_LIFETIME and the replies to repeat for them (deduplication, §4.5), Confirmable
//! messages in flight with their exponential back-off (§4.2), matching of ACKs and Resets, and
//! CoAP pings (§4.3).

use alloc::boxed::Box;
use alloc::vec::Vec;

use core::net::SocketAddr;
use core::time::Duration;

use crate::time::Instant;

use coap_lite::MessageType;

use super::{Endpoint, Event, ObserveEnd, RequestId, RequestOutcome, Transmit, splitmix64};
use crate::coap::wire::{Token, empty_message};

/// A message ID seen recently, with the reply to repeat if it comes again.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) peer: SocketAddr,
    pub(super) message_id: u16,
    pub(super) expires: Instant,
    pub(super) reply: Option<Box<[u8]>>,
}

/// What a Confirmable message in flight is for, and so what its ACK, Reset or timeout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Notification(Token),
    Separate,
    Request(RequestId),
}

/// A Confirmable message awaiting its ACK.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) peer: SocketAddr,
    pub(super) message_id: u16,
    pub(super) contents: Box<[u8]>,
    pub(super) next_at: Instant,
    pub(super) timeout: Duration,
    pub(super) retransmits: u8,
    pub(super) purpose: Purpose,
}

impl Endpoint {
    /// Retransmits the Confirmable messages that are due, and gives up on those that reached
    /// MAX_RETRANSMIT (ending what they were for).
    pub(super) fn retransmit_due(&mut self, now: Instant) {
        let max_retransmit = self.config.max_retransmit;
        let mut gave_up = Vec::new();
        for f in &mut self.in_flight {
            if f.next_at > now {
                continue;
            }
            if f.retransmits >= max_retransmit {
                gave_up.push((f.peer, f.message_id, f.purpose));
                continue;
            }
            f.retransmits += 1;
            f.timeout = f.timeout.saturating_mul(2);
            f.next_at = now + f.timeout;
            self.stats.retransmissions += 1;
            self.transmits.push_back(Transmit {
                destination: f.peer,
                contents: f.contents.to_vec(),
            });
        }
        for (peer, message_id, purpose) in gave_up {
            self.in_flight
                .retain(|f| !(f.peer == peer && f.message_id == message_id));
            self.stats.timeouts += 1;
            self.end_for(peer, purpose, ObserveEnd::Timeout);
        }
    }

    /// A Confirmable or Non-confirmable message ID seen within EXCHANGE_LIFETIME: repeat the
    /// reply to a Confirmable one, drop either (RFC 7252 §4.5). True when it was a duplicate.
    pub(super) fn repeat_reply(
        &mut self,
        peer: SocketAddr,
        message_id: u16,
        kind: MessageType,
    ) -> bool {
        let Some(seen) = self
            .seen
            .iter()
            .find(|s| s.peer == peer && s.message_id == message_id)
        else {
            return false;
        };
        self.stats.duplicates += 1;
        if let Some(reply) = seen
            .reply
            .as_ref()
            .filter(|_| kind == MessageType::Confirmable)
        {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: reply.to_vec(),
            });
        }
        true
    }

    /// An empty message: a ping (answered with Reset), the ACK or Reset of a Confirmable
    /// message in flight, or the Reset of a Non-confirmable notification.
    pub(super) fn handle_empty(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        kind: MessageType,
    ) {
        match kind {
            // CoAP ping (RFC 7252 §4.3): answer with Reset.
            MessageType::Confirmable => self.send_reset(peer, message_id),
            MessageType::Acknowledgement => {
                if let Some(pos) = self
                    .in_flight
                    .iter()
                    .position(|f| f.peer == peer && f.message_id == message_id)
                {
                    let f = self.in_flight.swap_remove(pos);
                    if let Purpose::Request(id) = f.purpose {
                        self.request_acknowledged(now, id);
                    }
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::Reset => {
                if let Some(pos) = self
                    .in_flight
                    .iter()
                    .position(|f| f.peer == peer && f.message_id == message_id)
                {
                    let f = self.in_flight.swap_remove(pos);
                    self.end_for(peer, f.purpose, ObserveEnd::Reset);
                } else if let Some(pos) = self
                    .observers
                    .iter()
                    .position(|o| o.peer == peer && o.last_message_id == message_id)
                {
                    // Reset of a Non-confirmable notification (RFC 7641 §3.6).
                    let o = self.observers.remove(pos);
                    self.push_event(Event::ObserveEnded {
                        peer,
                        resource: o.resource,
                        reason: ObserveEnd::Reset,
                    });
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::NonConfirmable => self.stats.unexpected += 1,
        }
    }

    /// Ends what a Confirmable message was for: its ACK never came (`Timeout`) or a Reset did.
    pub(super) fn end_for(&mut self, peer: SocketAddr, purpose: Purpose, reason: ObserveEnd) {
        match purpose {
            Purpose::Notification(token) => {
                if let Some(pos) = self
                    .observers
                    .iter()
                    .position(|o| o.peer == peer && o.token == token)
                {
                    let o = self.observers.remove(pos);
                    self.push_event(Event::ObserveEnded {
                        peer,
                        resource: o.resource,
                        reason,
                    });
                }
            }
            Purpose::Separate => {
                if reason == ObserveEnd::Timeout {
                    self.push_event(Event::SeparateResponseFailed { peer });
                }
            }
            Purpose::Request(id) => {
                let outcome = if reason == ObserveEnd::Reset {
                    RequestOutcome::Reset
                } else {
                    RequestOutcome::Timeout
                };
                self.finish_request(id, outcome);
            }
        }
    }

    pub(super) fn send_confirmable(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        contents: Vec<u8>,
        purpose: Purpose,
    ) {
        let timeout = self.initial_timeout();
        self.in_flight.push(InFlight {
            peer,
            message_id,
            contents: contents.clone().into_boxed_slice(),
            next_at: now + timeout,
            timeout,
            retransmits: 0,
            purpose,
        });
        self.transmits.push_back(Transmit {
            destination: peer,
            contents,
        });
    }

    /// A random duration between ACK_TIMEOUT and ACK_TIMEOUT × ACK_RANDOM_FACTOR (§4.2).
    fn initial_timeout(&mut self) -> Duration {
        let base = self.config.ack_timeout;
        let extra_percent = u64::from(self.config.ack_random_factor_percent.saturating_sub(100));
        let span_ms = (base.as_millis() as u64).saturating_mul(extra_percent) / 100;
        let jitter = if span_ms == 0 {
            0
        } else {
            splitmix64(&mut self.rng) % (span_ms + 1)
        };
        base + Duration::from_millis(jitter)
    }

    pub(super) fn send_reset(&mut self, peer: SocketAddr, message_id: u16) {
        self.stats.resets_sent += 1;
        self.transmits.push_back(Transmit {
            destination: peer,
            contents: empty_message(MessageType::Reset, message_id),
        });
    }

    pub(super) fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        reply: Option<Vec<u8>>,
    ) {
        if self.seen.len() >= usize::from(self.config.max_dedup.max(1)) {
            self.seen.pop_front();
            self.stats.dedup_evictions += 1;
        }
        let expires = now + self.config.exchange_lifetime();
        self.seen.push_back(Seen {
            peer,
            message_id,
            expires,
            reply: reply.map(Vec::into_boxed_slice),
        });
    }

    /// Remembers the reply to a request: fills in the entry of a request that was held
    /// (remembered without a reply), or adds one.
    pub(super) fn record_reply(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message_id: u16,
        reply: Option<Vec<u8>>,
    ) {
        match self
            .seen
            .iter_mut()
            .find(|s| s.peer == peer && s.message_id == message_id)
        {
            Some(seen) => seen.reply = reply.map(Vec::into_boxed_slice),
            None => self.remember(now, peer, message_id, reply),
        }
    }
}
