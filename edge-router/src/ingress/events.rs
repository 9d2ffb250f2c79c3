//! What the ingress reports besides datagrams and records: events worth logging (bounded: the
//! oldest dropped beyond [`MAX_EVENTS`]) and its counters.

use super::*;

/// Something worth logging or counting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngressEvent {
    /// A device registered.
    Registered {
        /// Endpoint name.
        endpoint: String,
        /// Its address.
        address: SocketAddr,
    },
    /// A registered device now sends from another address.
    AddressChanged {
        /// Endpoint name.
        endpoint: String,
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// A device deregistered.
    Deregistered {
        /// Endpoint name.
        endpoint: String,
    },
    /// A registration ran out.
    Expired {
        /// Endpoint name.
        endpoint: String,
    },
    /// A command from the platform ended (not the edge's own observation requests).
    CommandDone {
        /// Device.
        endpoint: String,
        /// The platform's request id.
        req: String,
        /// `ok`, `expired`, `timeout`, `reset`, `rejected`.
        status: &'static str,
        /// The device's response code, when it answered.
        code: Option<String>,
    },
    /// A request was refused.
    Refused {
        /// Who sent it.
        peer: SocketAddr,
        /// The code sent.
        code: String,
        /// Why.
        reason: String,
    },
}

/// Counters. Every datagram lands in exactly one of the first group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngressStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Not CoAP.
    pub malformed: u64,
    /// Retransmissions recognised.
    pub duplicates: u64,
    /// ACK, RST or responses nobody waited for.
    pub unexpected: u64,
    /// Requests answered or pending.
    pub requests: u64,
    /// Registrations (new or replacing).
    pub registrations: u64,
    /// Registration updates.
    pub updates: u64,
    /// Deregistrations.
    pub deregistrations: u64,
    /// Registrations that expired.
    pub expirations: u64,
    /// Telemetry records stored and acknowledged.
    pub telemetry_stored: u64,
    /// Telemetry refused with 5.03 because the outbox was full.
    pub telemetry_busy: u64,
    /// Requests refused with 4.xx.
    pub refused: u64,
    /// Records that could not be stored (5.00).
    pub store_failures: u64,
}

/// Events kept at most until [`Ingress::poll_event`]; the oldest goes first.
pub(super) const MAX_EVENTS: usize = 1024;

impl Ingress {
    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IngressEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &IngressStats {
        &self.stats
    }

    pub(super) fn event(&mut self, e: IngressEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}
