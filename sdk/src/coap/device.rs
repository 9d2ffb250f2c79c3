//! A device: one [`Endpoint`], a shared [`ResourceTree`], and the application's state.
//!
//! The application's state implements [`App`] to ask for wake-ups of its own (sampling a
//! sensor, say) and to say which resources changed, so their observers are notified. Like the
//! endpoint, a device owns no socket or clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::config::Config;
use super::endpoint::{Endpoint, Event, SeparateError, Transmit};
use super::resource::{Changed, ResourceTree, Response, Ticket};

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
}

impl<S: std::fmt::Debug> std::fmt::Debug for Device<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        }
    }

    /// Handles one datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.endpoint
            .handle_datagram(now, peer, bytes, &self.tree, &mut self.app);
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
        match (self.endpoint.poll_timeout(), self.app.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        }
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
