//! A device: one [`Endpoint`], a shared [`ResourceTree`], and the application's state.
//!
//! The application's state implements [`App`] to ask for wake-ups of its own (sampling a
//! sensor, say) and to say which resources changed, so their observers are notified. Like the
//! endpoint, a device owns no socket or clock.
//!
//! With OSCORE credentials ([`Device::with_credentials`]) the device serves only protected
//! requests (plain `GET /.well-known/core` stays open) and protects everything it sends. Its
//! driver then writes the state the device asks for ([`Device::state_to_persist`]: the
//! sequence-number mark and the replay floor of received requests, RFC 8613 Appendix B.1.1 and
//! B.1.2) durably and confirms it ([`Device::state_persisted`]); messages that need a sequence
//! number wait for that, and so does every verified request that raised the replay floor — its
//! handler runs only once the floor is durable, so a request replayed after a crash is refused.
//! After a restart the device is built from the stored state with
//! [`SecurityContext::restore_state`].

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::time::Instant;
use alloc::sync::Arc;
use core::net::SocketAddr;

use super::config::Config;
use super::endpoint::{Endpoint, Event, RequestId, RequestOutcome, SeparateError, Transmit};
use super::resource::{Changed, ResourceTree, Response, Ticket};
use crate::oscore::{DurableState, SecurityContext};
use crate::persist::{PersistFailed, StateStore};
use crate::uplink::{QueueFull, Registration, ReportEvent, Reporter, UplinkConfig};

/// The application side of a device: its own timers, and which resources changed.
pub trait App {
    /// When the application next wants [`App::handle_timeout`], if ever.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Called once `now` has reached [`App::poll_timeout`]; returns the resources whose
    /// representation changed, so their observers are notified.
    fn handle_timeout(&mut self, _now: Instant) -> Changed {
        Changed::NONE
    }

    /// A deferred answer that is ready: the ticket a handler got with `Reply::Separate`, and the
    /// response. Polled after [`App::handle_timeout`] until it returns `None`.
    fn poll_answer(&mut self) -> Option<(Ticket, Response)> {
        None
    }

    /// A telemetry report to send north (content format, body), polled after
    /// [`App::handle_timeout`] until `None`. Queued when the device has an uplink (or holds
    /// reports for one, [`Device::hold_reports`]); otherwise refused with
    /// [`ReportEvent::Dropped`].
    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        None
    }

    /// The outcome of a request the application sent itself through
    /// [`Device::endpoint_mut`].
    fn handle_response(&mut self, _now: Instant, _id: RequestId, _outcome: RequestOutcome) {}

    /// What became of a report from [`App::poll_report`]: each answer to the report at the
    /// front of the uplink's queue (reports go out one at a time, in the order they were made),
    /// or [`ReportEvent::Dropped`] for a new report a full queue refused.
    fn report_event(&mut self, _now: Instant, _event: ReportEvent) {}
}

/// Registration and reporting state of a device that talks to an edge router. (The link
/// format sent with a registration is made from the shared tree when one is due, not kept.)
#[derive(Debug)]
struct Uplink {
    /// `None` until the edge's address is known ([`Device::hold_reports`]): reports queue,
    /// nothing is sent.
    registration: Option<Registration>,
    reporter: Reporter,
}

/// An application with no timers and no state, for trees whose handlers need none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTimers;

impl App for NoTimers {}

/// A CoAP device: protocol state, resources and application state as one sans-IO unit.
pub struct Device<S> {
    endpoint: Endpoint,
    tree: Arc<ResourceTree<S>>,
    app: S,
    uplink: Option<Box<Uplink>>,
}

impl<S: core::fmt::Debug> core::fmt::Debug for Device<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("endpoint", &self.endpoint)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl<S: App> Device<S> {
    /// A device with its own endpoint, sharing `tree` with others of its kind.
    pub fn new(config: Config, seed: u64, tree: Arc<ResourceTree<S>>, app: S) -> Device<S> {
        Device {
            endpoint: Endpoint::new(config, seed),
            tree,
            app,
            uplink: None,
        }
    }

    /// Gives the device OSCORE credentials (RFC 8613): one security context with the edge,
    /// Sender ID = the device's kid, Recipient ID = the edge's Sender ID. Call it before
    /// [`Device::with_uplink`], so the first registration is protected too.
    ///
    /// The context's sender sequence number starts where [`SecurityContext::restore`] put it;
    /// nothing is sent with a number at or above the last confirmed mark.
    pub fn with_credentials(mut self, ctx: SecurityContext) -> Self {
        self.endpoint.set_security_context(ctx);
        self
    }

    /// The sequence-number mark to write durably now, if one is due (see
    /// [`Endpoint::mark_to_persist`]); the same value until [`Device::persisted`] confirms it.
    #[must_use]
    pub fn mark_to_persist(&self) -> Option<u64> {
        self.endpoint.mark_to_persist()
    }

    /// Confirms that `mark` is durable: requests and notifications that waited for it go out.
    ///
    /// For a driver that stores only the sender mark; one that serves protected requests uses
    /// [`Device::state_to_persist`] and [`Device::state_persisted`], or verified requests wait.
    pub fn persisted(&mut self, now: Instant, mark: u64) {
        self.endpoint.persisted(now, mark);
        self.after_persisted(now);
    }

    /// Everything to write durably now, if anything (see [`Endpoint::state_to_persist`]): the
    /// sender mark and the replay floor, in one write. The same value until
    /// [`Device::state_persisted`] confirms it; never anything without credentials.
    #[must_use]
    pub fn state_to_persist(&self) -> Option<DurableState> {
        self.endpoint.state_to_persist()
    }

    /// Confirms that `state` is durable: verified requests that waited for their replay floor
    /// are served now, and requests and notifications that waited for a mark go out.
    pub fn state_persisted(&mut self, now: Instant, state: DurableState) {
        self.endpoint
            .state_persisted(now, state, &self.tree, &mut self.app);
        self.after_persisted(now);
    }

    /// Writes every state the device asks for to `store` and confirms each once written
    /// ([`Device::state_to_persist`], then [`Device::state_persisted`]): what a driver does
    /// before it sends. On a failed write the device keeps waiting for that state (its
    /// messages and verified requests stay held); call again later.
    pub fn persist<M: StateStore + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut M,
    ) -> Result<(), PersistFailed<M::Error>> {
        while let Some(state) = self.state_to_persist() {
            store
                .store(state)
                .map_err(|error| PersistFailed { state, error })?;
            self.state_persisted(now, state);
        }
        Ok(())
    }

    fn after_persisted(&mut self, now: Instant) {
        for id in self.endpoint.take_held_notifications() {
            self.endpoint.notify(now, id, &self.tree, &mut self.app);
        }
        self.drive_uplink(now);
    }

    /// Makes the device register with the edge router in `config` (from `now` on) and send
    /// the reports its [`App`] produces.
    pub fn with_uplink(mut self, now: Instant, config: UplinkConfig) -> Self {
        self.start_uplink(now, config);
        self
    }

    /// As [`Device::with_uplink`], on a device already built: for drivers that learn the edge's
    /// address only later (a 6LoWPAN device, from its router). Starts a new registration; the
    /// reports already queued (held by [`Device::hold_reports`], or of an earlier uplink) stay
    /// queued, in order, and go to the new server; the registration's counts
    /// ([`Registration::counts`]) carry on from the earlier uplink's.
    pub fn start_uplink(&mut self, now: Instant, config: UplinkConfig) {
        let mut registration = Registration::new(
            now,
            config.server,
            config.endpoint,
            config.lifetime,
            config.binding,
        );
        let reporter = match self.uplink.take() {
            Some(old) => {
                if let Some(r) = &old.registration {
                    registration.continue_counts(r.counts());
                }
                let mut reporter = old.reporter;
                reporter.retarget(config.server, config.max_queued_reports);
                reporter
            }
            None => Reporter::new(config.server, config.max_queued_reports),
        };
        self.uplink = Some(Box::new(Uplink {
            registration: Some(registration),
            reporter,
        }));
        self.drive_uplink(now);
    }

    /// For drivers that start the uplink later ([`Device::start_uplink`]): keeps up to
    /// `max_queued_reports` reports the application makes until then (more are refused with
    /// [`ReportEvent::Dropped`]), to send once registered. Does nothing if an uplink exists.
    pub fn hold_reports(&mut self, max_queued_reports: usize) {
        if self.uplink.is_none() {
            let nowhere = SocketAddr::new(core::net::Ipv6Addr::UNSPECIFIED.into(), 0);
            self.uplink = Some(Box::new(Uplink {
                registration: None,
                reporter: Reporter::new(nowhere, max_queued_reports),
            }));
        }
    }

    /// Queues a telemetry report (SenML-CBOR 112 or SenML-JSON 110) for the edge router.
    pub fn report(
        &mut self,
        now: Instant,
        content_format: u16,
        payload: Vec<u8>,
    ) -> Result<(), QueueFull> {
        let uplink = self.uplink.as_mut().ok_or(QueueFull)?;
        uplink.reporter.report(content_format, payload)?;
        self.drive_uplink(now);
        Ok(())
    }

    /// The registration client, if the device has an uplink.
    pub fn registration(&self) -> Option<&Registration> {
        self.uplink.as_ref().and_then(|u| u.registration.as_ref())
    }

    /// The telemetry reporter, if the device has an uplink.
    pub fn reporter(&self) -> Option<&Reporter> {
        self.uplink.as_ref().map(|u| &u.reporter)
    }

    /// Sends the registration's keep-alive update now, if registered (see
    /// [`Registration::refresh_now`]).
    pub fn refresh_registration(&mut self, now: Instant) {
        if let Some(r) = self.uplink.as_mut().and_then(|u| u.registration.as_mut()) {
            r.refresh_now(now);
        }
        self.drive_uplink(now);
    }

    /// Deregisters from the edge router (sends `DELETE /rd/{location}`).
    pub fn deregister(&mut self, now: Instant) {
        if let Some(r) = self.uplink.as_mut().and_then(|u| u.registration.as_mut()) {
            r.deregister(now, &mut self.endpoint);
        }
    }

    /// The protocol endpoint, mutably (to send requests of the application's own).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Routes finished requests to the registration, the reporter or the application, then
    /// lets the registration and reporter send what is due.
    fn drive_uplink(&mut self, now: Instant) {
        while let Some((id, outcome)) = self.endpoint.poll_response() {
            let Some(u) = self.uplink.as_mut() else {
                self.app.handle_response(now, id, outcome);
                continue;
            };
            if u.registration
                .as_mut()
                .is_some_and(|r| r.handle_outcome(now, id, &outcome))
            {
                continue;
            }
            match u.reporter.handle_outcome(now, id, &outcome) {
                Some(event) => self.app.report_event(now, event),
                None => self.app.handle_response(now, id, outcome),
            }
        }
        if let Some(u) = self.uplink.as_mut()
            && let Some(registration) = u.registration.as_mut()
        {
            if u.reporter.take_needs_registration() {
                registration.reregister(now);
            }
            let links = if registration.poll_timeout().is_some_and(|t| t <= now) {
                self.tree.link_format(&[])
            } else {
                String::new()
            };
            registration.poll(now, &mut self.endpoint, &links);
            u.reporter
                .poll(now, &mut self.endpoint, registration.is_registered());
        }
        self.endpoint.release_idle_buffers();
    }

    /// Handles one datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.endpoint
            .handle_datagram(now, peer, bytes, &self.tree, &mut self.app);
        self.drive_uplink(now);
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    /// The next protocol event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.endpoint.poll_event()
    }

    /// The earliest of the endpoint's and the application's wake-up times.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let uplink = self.uplink.as_ref().map_or([None, None], |u| {
            [
                u.registration.as_ref().and_then(Registration::poll_timeout),
                u.reporter.poll_timeout(),
            ]
        });
        [self.endpoint.poll_timeout(), self.app.poll_timeout()]
            .into_iter()
            .chain(uplink)
            .flatten()
            .min()
    }

    /// Lets time pass for both the endpoint and the application; notifies observers of
    /// whatever the application says changed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        if self.app.poll_timeout().is_some_and(|t| t <= now) {
            let changed = self.app.handle_timeout(now);
            self.notify(now, changed);
            while let Some((ticket, response)) = self.app.poll_answer() {
                // An unknown ticket means the request expired meanwhile; the endpoint has
                // already reported that as an event.
                let _ = self.endpoint.respond_separately(now, ticket, response);
            }
            while let Some((format, body)) = self.app.poll_report() {
                // A full queue refuses the report (the reporter counts it), and so does a
                // device with no uplink and none to come: the application hears of it.
                let taken = self
                    .uplink
                    .as_mut()
                    .is_some_and(|u| u.reporter.report(format, body).is_ok());
                if !taken {
                    self.app.report_event(now, ReportEvent::Dropped);
                }
            }
        }
        self.drive_uplink(now);
    }

    /// Notifies observers of the resources in `changed` (for changes the application makes
    /// outside [`App::handle_timeout`]).
    pub fn notify(&mut self, now: Instant, changed: Changed) {
        for id in changed.iter() {
            self.endpoint.notify(now, id, &self.tree, &mut self.app);
        }
    }

    /// Answers a request that a handler deferred with `Reply::Separate`.
    pub fn respond_separately(
        &mut self,
        now: Instant,
        ticket: Ticket,
        response: Response,
    ) -> Result<(), SeparateError> {
        self.endpoint.respond_separately(now, ticket, response)
    }

    /// The application state.
    pub fn app(&self) -> &S {
        &self.app
    }

    /// The application state, mutably. Call [`Device::notify`] for resources you change.
    pub fn app_mut(&mut self) -> &mut S {
        &mut self.app
    }

    /// The protocol endpoint (statistics, observer count, footprint).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The shared resource tree.
    pub fn tree(&self) -> &Arc<ResourceTree<S>> {
        &self.tree
    }
}
