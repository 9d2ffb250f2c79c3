//! Registration with a CoRE Resource Directory (RFC 9176 §5.3), with LwM2M's `b` binding.

use alloc::format;
use alloc::string::String;

use core::net::SocketAddr;
use core::time::Duration;

use crate::time::Instant;

use crate::coap::{
    ClientRequest, Code, Endpoint, Method, RequestId, RequestOutcome, content_format,
};

/// How the device can be reached (LwM2M binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Always reachable over UDP.
    U,
    /// Queue mode: reachable only shortly after its own uplinks (NB-IoT PSM, sleepy nodes).
    UQ,
}

impl Binding {
    /// Parses the query value `U` or `UQ`.
    pub fn parse(s: &str) -> Option<Binding> {
        match s {
            "U" => Some(Binding::U),
            "UQ" => Some(Binding::UQ),
            _ => None,
        }
    }

    /// The query value: `U` or `UQ`.
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::U => "U",
            Binding::UQ => "UQ",
        }
    }
}

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered; the next attempt is due at `retry_at`.
    Unregistered {
        /// When to try.
        retry_at: Instant,
        /// Failed attempts so far (for back-off).
        failures: u32,
    },
    /// `POST /rd` sent.
    Registering(RequestId),
    /// Registered at `location`; an update is due at `refresh_at`.
    Registered {
        /// Location path given by the directory, e.g. `rd/4521`.
        location: String,
        /// When to send the keep-alive update.
        refresh_at: Instant,
    },
    /// `POST /rd/{location}` sent.
    Updating {
        /// Location being updated.
        location: String,
        /// The update request.
        request: RequestId,
    },
    /// `DELETE` sent or done; nothing more will be sent.
    Deregistered,
}

/// What a device's registration requests came to, counted from its start
/// ([`Registration::counts`]). A request is counted once, when its outcome is known, as
/// accepted (not counted here) or in exactly one of `busy`, `refused`, `unanswered`; so `attempts`
/// = accepted + `busy` + `refused` + `unanswered` + the one still out, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrationCounts {
    /// Requests sent: registrations (`POST /rd`) and updates (`POST /rd/{location}`), each
    /// counted once however often CoAP retransmitted it.
    pub attempts: u32,
    /// Requests answered 5.03 Service Unavailable (the directory was busy; the next attempt
    /// waits the answer's Max-Age).
    pub busy: u32,
    /// Requests answered with anything else but success (4.xx, 5.xx other than 5.03; a 2.01
    /// without a location; an update's 4.04, after which the device registers afresh).
    pub refused: u32,
    /// Requests that got no answer (timed out, or reset).
    pub unanswered: u32,
}

/// The registration client of one device.
#[derive(Debug)]
pub struct Registration {
    server: SocketAddr,
    endpoint: String,
    lifetime: Duration,
    binding: Binding,
    state: RegistrationState,
    registrations: u32,
    counts: RegistrationCounts,
}

const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Registration {
    /// A client that registers at `now` (or as soon as it is polled).
    pub fn new(
        now: Instant,
        server: SocketAddr,
        endpoint: String,
        lifetime: Duration,
        binding: Binding,
    ) -> Self {
        Registration {
            server,
            endpoint,
            lifetime: lifetime.max(Duration::from_secs(60)),
            binding,
            state: RegistrationState::Unregistered {
                retry_at: now,
                failures: 0,
            },
            registrations: 0,
            counts: RegistrationCounts::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// True while registered (including during an update).
    pub fn is_registered(&self) -> bool {
        matches!(
            self.state,
            RegistrationState::Registered { .. } | RegistrationState::Updating { .. }
        )
    }

    /// Successful registrations so far (1 after the first, more after re-registrations).
    pub fn registrations(&self) -> u32 {
        self.registrations
    }

    /// What its requests came to so far: attempts, and the failed ones by kind.
    pub fn counts(&self) -> RegistrationCounts {
        self.counts
    }

    /// Carries `earlier`'s counts on (a device that starts a new registration client keeps
    /// counting where the old one stopped).
    pub(crate) fn continue_counts(&mut self, earlier: RegistrationCounts) {
        self.counts = earlier;
    }

    /// When [`Registration::poll`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            RegistrationState::Unregistered { retry_at, .. } => Some(*retry_at),
            RegistrationState::Registered { refresh_at, .. } => Some(*refresh_at),
            _ => None,
        }
    }

    /// Sends a registration or an update when one is due. `links` is the device's
    /// `/.well-known/core` (RFC 6690), sent with the registration.
    pub fn poll(&mut self, now: Instant, endpoint: &mut Endpoint, links: &str) {
        match &self.state {
            RegistrationState::Unregistered { retry_at, .. } if *retry_at <= now => {
                let request = ClientRequest::new(Method::Post, "rd")
                    .query(format!("ep={}", self.endpoint))
                    .query(format!("lt={}", self.lifetime.as_secs()))
                    .query(format!("b={}", self.binding.as_str()))
                    .body(content_format::LINK_FORMAT, links.as_bytes().to_vec());
                self.counts.attempts = self.counts.attempts.saturating_add(1);
                self.state = RegistrationState::Registering(endpoint.send_request(
                    now,
                    self.server,
                    request,
                ));
            }
            RegistrationState::Registered {
                location,
                refresh_at,
            } if *refresh_at <= now => {
                let location = location.clone();
                self.counts.attempts = self.counts.attempts.saturating_add(1);
                let request = endpoint.send_request(
                    now,
                    self.server,
                    ClientRequest::new(Method::Post, location.clone()),
                );
                self.state = RegistrationState::Updating { location, request };
            }
            _ => {}
        }
    }

    /// Takes the outcome of one of its requests; false when `id` is not one of them.
    pub fn handle_outcome(
        &mut self,
        now: Instant,
        id: RequestId,
        outcome: &RequestOutcome,
    ) -> bool {
        match &self.state {
            RegistrationState::Registering(r) if *r == id => {
                match outcome {
                    RequestOutcome::Response(resp)
                        if resp.code == Code::Created && !resp.location.is_empty() =>
                    {
                        self.registrations += 1;
                        self.state = RegistrationState::Registered {
                            location: resp.location.join("/"),
                            refresh_at: now + self.refresh_after(),
                        };
                    }
                    _ => self.failed(now, outcome),
                }
                true
            }
            RegistrationState::Updating { location, request } if *request == id => {
                let location = location.clone();
                match outcome {
                    RequestOutcome::Response(resp) if resp.code == Code::Changed => {
                        self.state = RegistrationState::Registered {
                            location,
                            refresh_at: now + self.refresh_after(),
                        };
                    }
                    // 4.04: the directory forgot us (expiry, restart): register afresh at once.
                    RequestOutcome::Response(resp) if resp.code == Code::NotFound => {
                        self.count_answer(resp.code);
                        self.state = RegistrationState::Unregistered {
                            retry_at: now,
                            failures: 0,
                        };
                    }
                    _ => self.failed(now, outcome),
                }
                true
            }
            _ => false,
        }
    }

    /// Makes the keep-alive update due now, if registered and none is out (a queue-mode device
    /// that wakes for its periodic TAU opens a listening window at the edge with it).
    pub fn refresh_now(&mut self, now: Instant) {
        if let RegistrationState::Registered { refresh_at, .. } = &mut self.state {
            *refresh_at = (*refresh_at).min(now);
        }
    }

    /// Forces a re-registration (e.g. after the device's address changed).
    pub fn reregister(&mut self, now: Instant) {
        self.state = RegistrationState::Unregistered {
            retry_at: now,
            failures: 0,
        };
    }

    /// Sends `DELETE /rd/{location}` if registered; nothing is sent afterwards.
    pub fn deregister(&mut self, now: Instant, endpoint: &mut Endpoint) {
        if let RegistrationState::Registered { location, .. }
        | RegistrationState::Updating { location, .. } = &self.state
        {
            let _ = endpoint.send_request(
                now,
                self.server,
                ClientRequest::new(Method::Delete, location.clone()),
            );
        }
        self.state = RegistrationState::Deregistered;
    }

    /// Updates go out when three quarters of the lifetime have passed.
    fn refresh_after(&self) -> Duration {
        self.lifetime * 3 / 4
    }

    /// Counts an answer that was not a success: 5.03 as busy, anything else as refused.
    fn count_answer(&mut self, code: Code) {
        let count = if code == Code::ServiceUnavailable {
            &mut self.counts.busy
        } else {
            &mut self.counts.refused
        };
        *count = count.saturating_add(1);
    }

    /// A request of ours ended without the answer it wanted: counted by kind, then the
    /// back-off (a response's Max-Age when it gave one).
    fn failed(&mut self, now: Instant, outcome: &RequestOutcome) {
        match outcome {
            RequestOutcome::Response(resp) => {
                self.count_answer(resp.code);
                self.fail(now, resp.max_age);
            }
            _ => {
                self.counts.unanswered = self.counts.unanswered.saturating_add(1);
                self.fail(now, None);
            }
        }
    }

    fn fail(&mut self, now: Instant, max_age: Option<u32>) {
        let failures = match self.state {
            RegistrationState::Unregistered { failures, .. } => failures,
            _ => 0,
        } + 1;
        let backoff = BACKOFF_MIN
            .saturating_mul(1 << failures.min(8))
            .min(BACKOFF_MAX);
        let wait = max_age.map_or(backoff, |s| {
            Duration::from_secs(u64::from(s)).max(BACKOFF_MIN)
        });
        self.state = RegistrationState::Unregistered {
            retry_at: now + wait,
            failures,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::{ClientResponse, Config};
    use alloc::vec::Vec;

    fn at(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn fresh() -> (Registration, Endpoint) {
        let server = SocketAddr::new(core::net::Ipv6Addr::LOCALHOST.into(), 5683);
        let reg = Registration::new(
            at(0),
            server,
            "d1".into(),
            Duration::from_secs(3600),
            Binding::U,
        );
        (reg, Endpoint::new(Config::default(), 1))
    }

    /// Sends what is due at `now`; the request now out.
    fn send(reg: &mut Registration, endpoint: &mut Endpoint, now: Instant) -> RequestId {
        reg.poll(now, endpoint, "</s>");
        match reg.state() {
            RegistrationState::Registering(id) => *id,
            RegistrationState::Updating { request, .. } => *request,
            other => panic!("nothing out: {other:?}"),
        }
    }

    fn answer(code: Code, max_age: Option<u32>, location: &[&str]) -> RequestOutcome {
        RequestOutcome::Response(ClientResponse {
            code,
            content_format: None,
            payload: Vec::new(),
            max_age,
            location: location.iter().map(|s| String::from(*s)).collect(),
        })
    }

    #[test]
    fn a_503_counts_as_busy_and_the_retry_waits_max_age() {
        let (mut reg, mut ep) = fresh();
        let id = send(&mut reg, &mut ep, at(0));
        assert!(reg.handle_outcome(at(1), id, &answer(Code::ServiceUnavailable, Some(30), &[])));
        assert_eq!(
            reg.counts(),
            RegistrationCounts {
                attempts: 1,
                busy: 1,
                refused: 0,
                unanswered: 0
            }
        );
        assert_eq!(
            reg.poll_timeout(),
            Some(at(31)),
            "Max-Age, not the back-off"
        );
        reg.poll(at(30), &mut ep, "</s>");
        assert!(
            matches!(reg.state(), RegistrationState::Unregistered { .. }),
            "nothing sent before Max-Age"
        );
        let id = send(&mut reg, &mut ep, at(31));
        assert!(reg.handle_outcome(at(32), id, &answer(Code::Created, None, &["rd", "7"])));
        assert!(reg.is_registered());
        assert_eq!(reg.registrations(), 1);
        assert_eq!(
            reg.counts(),
            RegistrationCounts {
                attempts: 2,
                busy: 1,
                refused: 0,
                unanswered: 0
            }
        );
    }

    #[test]
    fn an_error_answer_counts_as_refused_and_no_answer_as_unanswered() {
        let (mut reg, mut ep) = fresh();
        let id = send(&mut reg, &mut ep, at(0));
        assert!(reg.handle_outcome(at(1), id, &answer(Code::BadRequest, None, &[])));
        assert_eq!(reg.counts().refused, 1);
        let retry = reg.poll_timeout().unwrap();
        let id = send(&mut reg, &mut ep, retry);
        assert!(reg.handle_outcome(retry, id, &RequestOutcome::Timeout));
        let retry = reg.poll_timeout().unwrap();
        let id = send(&mut reg, &mut ep, retry);
        assert!(reg.handle_outcome(retry, id, &RequestOutcome::Reset));
        assert_eq!(
            reg.counts(),
            RegistrationCounts {
                attempts: 3,
                busy: 0,
                refused: 1,
                unanswered: 2
            }
        );
        assert!(!reg.is_registered());
    }

    #[test]
    fn updates_are_attempts_and_their_failures_count_too() {
        let (mut reg, mut ep) = fresh();
        let id = send(&mut reg, &mut ep, at(0));
        assert!(reg.handle_outcome(at(0), id, &answer(Code::Created, None, &["rd", "7"])));
        let due = reg.poll_timeout().unwrap();
        let id = send(&mut reg, &mut ep, due);
        assert!(reg.handle_outcome(due, id, &answer(Code::Changed, None, &[])));
        let due = reg.poll_timeout().unwrap();
        let id = send(&mut reg, &mut ep, due);
        assert!(reg.handle_outcome(due, id, &answer(Code::ServiceUnavailable, Some(5), &[])));
        assert_eq!(reg.poll_timeout(), Some(due + Duration::from_secs(5)));
        let id = send(&mut reg, &mut ep, due + Duration::from_secs(5));
        assert!(matches!(reg.state(), RegistrationState::Registering(_)));
        assert!(reg.handle_outcome(due, id, &answer(Code::Created, None, &["rd", "8"])));
        let due = reg.poll_timeout().unwrap();
        let id = send(&mut reg, &mut ep, due);
        assert!(reg.handle_outcome(due, id, &answer(Code::NotFound, None, &[])));
        assert_eq!(
            reg.counts(),
            RegistrationCounts {
                attempts: 5,
                busy: 1,
                refused: 1,
                unanswered: 0
            }
        );
        assert_eq!(reg.registrations(), 2);
        // An outcome of another request changes nothing.
        assert!(!reg.handle_outcome(due, RequestId(u32::MAX), &RequestOutcome::Timeout));
        assert_eq!(reg.counts().unanswered, 0);
    }
}
