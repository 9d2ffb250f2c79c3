//! The device's way north (sans-IO): registration with a CoRE Resource Directory (RFC 9176),
//! the way LwM2M does it, and telemetry reports to the edge router.
//!
//! | module | job |
//! |---|---|
//! | [`registration`] | register (`POST /rd?ep=…&lt=…&b=…`), keep alive (`POST /rd/{loc}`), re-register on 4.04, deregister |
//! | [`reporter`] | queue telemetry, send it one at a time as `POST /t`, retry after 5.03's Max-Age, count outcomes |
//! | [`power`] | power saving of a queue-mode device: listen for the active time after traffic, then sleep until the next work or periodic TAU |
//!
//! Both drive an [`Endpoint`](crate::coap::Endpoint)'s client role and take the time as an
//! argument; [`Device`](crate::coap::Device) runs them when given an [`UplinkConfig`].

use alloc::string::String;

pub mod power;
pub mod registration;
pub mod reporter;

use core::net::SocketAddr;
use core::time::Duration;

pub use power::{PowerConfig, PowerSaving, PowerStats, WakeReason};
pub use registration::{Binding, Registration, RegistrationCounts, RegistrationState};
pub use reporter::{QueueFull, ReportEvent, ReportStats, Reporter};

/// Where and how a device registers and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The edge router's CoAP address.
    pub server: SocketAddr,
    /// Endpoint name (`ep`), the device's identity at the directory.
    pub endpoint: String,
    /// Registration lifetime (`lt`); the device updates well before it runs out.
    pub lifetime: Duration,
    /// `U` (always reachable) or `UQ` (queue mode: listens only after its uplinks).
    pub binding: Binding,
    /// Telemetry reports kept while the edge is unreachable or busy; more are refused.
    pub max_queued_reports: usize,
}

impl UplinkConfig {
    /// Defaults: lifetime 300 s, binding `U`, up to 64 queued reports.
    pub fn new(server: SocketAddr, endpoint: impl Into<String>) -> UplinkConfig {
        UplinkConfig {
            server,
            endpoint: endpoint.into(),
            lifetime: Duration::from_secs(300),
            binding: Binding::U,
            max_queued_reports: 64,
        }
    }
}
