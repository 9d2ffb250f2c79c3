//! Telemetry reports: `POST /t` with a SenML body, one at a time, retried after 5.03.

use alloc::vec::Vec;

use alloc::collections::VecDeque;
use core::net::SocketAddr;
use core::time::Duration;

use crate::time::Instant;

use crate::coap::{ClientRequest, Code, Endpoint, Method, RequestId, RequestOutcome};

/// What happened to the reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Reports handed to the reporter.
    pub queued: u64,
    /// Reports refused because the queue was full.
    pub refused: u64,
    /// Requests sent (including retries).
    pub sent: u64,
    /// Reports the edge acknowledged with 2.xx.
    pub acked: u64,
    /// Reports the edge refused for good (4.xx, 5.xx other than 5.03).
    pub rejected: u64,
    /// 5.03 answers (back-pressure); the report is kept and retried.
    pub busy: u64,
    /// Requests that timed out; the report is kept and retried.
    pub timeouts: u64,
}

#[derive(Debug)]
struct Report {
    content_format: u16,
    payload: Vec<u8>,
}

/// Sends queued telemetry to the edge router, in order, one request at a time (NSTART = 1).
#[derive(Debug)]
pub struct Reporter {
    server: SocketAddr,
    queue: VecDeque<Report>,
    max_queue: usize,
    in_flight: Option<RequestId>,
    hold_until: Option<Instant>,
    needs_registration: bool,
    stats: ReportStats,
}

/// What became of a report: the answer to one attempt to send the report at the front of the
/// queue, or the refusal of a new report by a full queue. A device hands each to its
/// application ([`App::report_event`](crate::coap::App::report_event)), so a load generator can
/// account for every report it made.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ReportEvent {
    /// 2.xx: the edge took it; it leaves the queue.
    Acked,
    /// Refused for good (4.xx other than 4.03, 5.xx other than 5.03), with the code: it leaves
    /// the queue and is not sent again.
    Refused(Code),
    /// 5.03 (back-pressure): kept, sent again after the Max-Age.
    Busy,
    /// 4.03: the edge does not know the device; kept, sent again once registered.
    Forbidden,
    /// No answer after the retransmissions, or a Reset: kept, sent again later.
    TimedOut,
    /// A new report refused because the queue was full: it was never queued.
    Dropped,
}

impl ReportEvent {
    /// Whether the report at the front of the queue left it (acknowledged or refused).
    pub fn is_final(&self) -> bool {
        matches!(self, ReportEvent::Acked | ReportEvent::Refused(_))
    }
}

/// The queue is full; the report was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("telemetry queue is full")]
pub struct QueueFull;

/// How long to wait after a timeout before trying the same report again.
const RETRY_AFTER_TIMEOUT: Duration = Duration::from_secs(5);

impl Reporter {
    /// A reporter that sends to `server` and keeps at most `max_queue` reports.
    pub fn new(server: SocketAddr, max_queue: usize) -> Reporter {
        Reporter {
            server,
            queue: VecDeque::new(),
            max_queue: max_queue.max(1),
            in_flight: None,
            hold_until: None,
            needs_registration: false,
            stats: ReportStats::default(),
        }
    }

    /// Sends the reports still queued to `server` from now on, keeping at most `max_queue`
    /// (those already queued beyond it stay). A request in flight keeps its exchange: its
    /// answer or timeout is taken as before.
    pub fn retarget(&mut self, server: SocketAddr, max_queue: usize) {
        self.server = server;
        self.max_queue = max_queue.max(1);
    }

    /// Queues a report (SenML-CBOR 112 or SenML-JSON 110).
    pub fn report(&mut self, content_format: u16, payload: Vec<u8>) -> Result<(), QueueFull> {
        if self.queue.len() >= self.max_queue {
            self.stats.refused += 1;
            return Err(QueueFull);
        }
        self.stats.queued += 1;
        self.queue.push_back(Report {
            content_format,
            payload,
        });
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> &ReportStats {
        &self.stats
    }

    /// Reports waiting (including the one in flight).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the report at the front of the queue is on its way (sent, not yet answered).
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When [`Reporter::poll`] may next send (only while held back by 5.03 or a timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_none() && !self.queue.is_empty() {
            self.hold_until
        } else {
            None
        }
    }

    /// Sends the next report if none is in flight, the edge is not holding us back, and
    /// `registered` says the edge knows us.
    pub fn poll(&mut self, now: Instant, endpoint: &mut Endpoint, registered: bool) {
        if self.in_flight.is_some() || !registered || self.hold_until.is_some_and(|t| t > now) {
            return;
        }
        self.hold_until = None;
        let Some(next) = self.queue.front() else {
            return;
        };
        let request =
            ClientRequest::new(Method::Post, "t").body(next.content_format, next.payload.clone());
        self.stats.sent += 1;
        self.in_flight = Some(endpoint.send_request(now, self.server, request));
    }

    /// True once, after the edge said it does not know this device (4.03).
    pub fn take_needs_registration(&mut self) -> bool {
        core::mem::take(&mut self.needs_registration)
    }

    /// Takes the outcome of one of its requests: what became of the report, or `None` when
    /// `id` is not one of them.
    pub fn handle_outcome(
        &mut self,
        now: Instant,
        id: RequestId,
        outcome: &RequestOutcome,
    ) -> Option<ReportEvent> {
        if self.in_flight != Some(id) {
            return None;
        }
        self.in_flight = None;
        let event = match outcome {
            RequestOutcome::Response(r) if r.code == Code::ServiceUnavailable => {
                self.stats.busy += 1;
                let wait = Duration::from_secs(u64::from(r.max_age.unwrap_or(60).max(1)));
                self.hold_until = Some(now + wait);
                ReportEvent::Busy
            }
            // 4.03: the edge does not know us (it restarted, or our registration expired):
            // keep the report and register again.
            RequestOutcome::Response(r) if r.code == Code::Forbidden => {
                self.needs_registration = true;
                ReportEvent::Forbidden
            }
            RequestOutcome::Response(r) if !r.code.is_error() => {
                self.stats.acked += 1;
                self.pop_front();
                ReportEvent::Acked
            }
            RequestOutcome::Response(r) => {
                self.stats.rejected += 1;
                self.pop_front();
                ReportEvent::Refused(r.code)
            }
            _ => {
                self.stats.timeouts += 1;
                self.hold_until = Some(now + RETRY_AFTER_TIMEOUT);
                ReportEvent::TimedOut
            }
        };
        Some(event)
    }

    /// Removes the report at the front; an emptied queue gives its buffer back (a million idle
    /// devices in one simulator each keep no queue).
    fn pop_front(&mut self) {
        self.queue.pop_front();
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }
}
