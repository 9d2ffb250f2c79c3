//! Telemetry (`POST /t`): a device's SenML filed under its topic (the authenticated device, the
//! device registered at the address, or in lab mode `anon-{address}`), handed to the outbox
//! with a ticket, and answered only once the driver reports the store
//! ([`Ingress::handle_appended`]: 2.04; 5.03 with Max-Age when the outbox is full; 5.00 when
//! storing failed). The body's conversion to resolved SenML-JSON is in
//! [`normalise`](mod@normalise).

mod normalise;

use super::*;
pub(super) use normalise::{RecordIds, Refusal, normalise};

/// Identifies a record waiting to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendTicket(u64);

/// A message for the outbox. With a ticket, a device waits for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// `Some` when a device's acknowledgement waits for this store.
    pub ticket: Option<AppendTicket>,
    /// The message.
    pub message: NewMessage,
}

/// The outcome of storing a record, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// Durable.
    Stored,
    /// The outbox is full; the device should retry after this long.
    Full {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// Storing failed (I/O error); the device gets 5.00 and may retry.
    Failed,
}

/// A request (or a notification) whose answer waits for its record to be stored.
pub(super) struct Waiting {
    pub(super) peer: Peer,
    pub(super) message_id: u16,
    pub(super) token: Token,
    pub(super) confirmable: bool,
    /// An Observe notification (answered with an empty ACK), not a request.
    pub(super) notification: bool,
}

impl Waiting {
    /// `msg`, waiting; `notification`: an Observe notification rather than a request.
    pub(super) fn of(msg: Incoming<'_>, notification: bool) -> Waiting {
        Waiting {
            peer: msg.peer,
            message_id: msg.header.message_id,
            token: Token::from_slice(msg.packet.get_token()),
            confirmable: msg.confirmable(),
            notification,
        }
    }
}

/// Lab mode: names of unregistered senders kept at most (then the table starts over).
pub(super) const LAB_NAMES: usize = 4096;

/// Lab mode: the name an unregistered sender's telemetry is filed under, `anon-{peer}`,
/// formatted once per peer (an IPv6 address is slow to format).
fn lab_name(names: &mut HashMap<SocketAddr, String>, peer: SocketAddr) -> &str {
    if names.len() >= LAB_NAMES && !names.contains_key(&peer) {
        names.clear();
    }
    names.entry(peer).or_insert_with(|| format!("anon-{peer}"))
}

impl Ingress {
    /// `POST /t`: the record goes to the outbox; the answer waits for its store.
    pub(super) fn telemetry(
        &mut self,
        now: Instant,
        unix_ms: u64,
        origin: Origin<'_>,
        format: Option<u32>,
        body: &[u8],
    ) -> Outcome {
        let found = match origin.identity {
            Some(device) => self.directory.touch(now, device),
            None => self.directory.touch_by_address(now, origin.peer.remote),
        };
        let topic = match found {
            Some(reg) => self.config.topics.telemetry(&reg.endpoint),
            None if self.config.lab_accept_unregistered => {
                let name = lab_name(&mut self.lab_names, origin.peer.remote);
                self.config.topics.telemetry(name)
            }
            None => {
                return Outcome::error(
                    ResponseType::Forbidden,
                    "unknown device: register at /rd first",
                );
            }
        };
        let id = self.record_ids.next();
        let payload = match normalise(format, body, unix_ms, id) {
            Ok(p) => p,
            Err(Refusal { code, reason }) => return Outcome::error(code, reason),
        };
        Outcome::Waiting(self.queue_telemetry(topic, payload))
    }

    /// Queues a telemetry record for `device`'s topic; the ticket comes back with the result.
    pub(super) fn store_telemetry(&mut self, device: &str, payload: Vec<u8>) -> AppendTicket {
        let topic = self.config.topics.telemetry(device);
        self.queue_telemetry(topic, payload)
    }

    /// Queues a telemetry record for the outbox; the ticket comes back with the result.
    fn queue_telemetry(&mut self, topic: String, payload: Vec<u8>) -> AppendTicket {
        let ticket = AppendTicket(self.next_ticket);
        self.next_ticket += 1;
        let message = NewMessage {
            topic,
            payload,
            retain: false,
        };
        self.appends.push_back(Append {
            ticket: Some(ticket),
            message,
        });
        ticket
    }

    /// Reports the outcome of storing the record with `ticket`; the device gets its answer.
    pub fn handle_appended(&mut self, ticket: AppendTicket, result: AppendResult) {
        let Some(w) = self.waiting.remove(&ticket) else {
            return;
        };
        if w.notification {
            self.notification_stored(w, result);
            return;
        }
        let response = match result {
            AppendResult::Stored => {
                self.stats.telemetry_stored += 1;
                reply::Response::code(ResponseType::Changed)
            }
            AppendResult::Full { retry_after } => {
                self.stats.telemetry_busy += 1;
                let secs = u32::try_from(retry_after.as_secs().max(1)).unwrap_or(u32::MAX);
                reply::Response::error(ResponseType::ServiceUnavailable, "outbox full, retry later")
                    .max_age(secs)
            }
            AppendResult::Failed => {
                self.stats.store_failures += 1;
                reply::Response::error(
                    ResponseType::InternalServerError,
                    "record could not be stored",
                )
            }
        };
        self.requests.count(PathKind::Telemetry, response.code);
        let request = Answering {
            peer: w.peer,
            message_id: w.message_id,
            token: w.token.as_slice(),
            confirmable: w.confirmable,
        };
        self.answer(request, &response);
    }

    /// Requests waiting for their record to be stored.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
