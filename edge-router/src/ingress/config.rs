//! The ingress's settings and their defaults.

use super::*;

/// Settings of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Topic names for the records.
    pub topics: Topics,
    /// Lifetimes outside this range are clamped into it.
    pub min_lifetime: Duration,
    /// Longest lifetime granted.
    pub max_lifetime: Duration,
    /// Lifetime when a registration names none (RFC 9176 says 90000 s).
    pub default_lifetime: Duration,
    /// Largest request body accepted (registration links or telemetry), in bytes.
    pub max_body: usize,
    /// How long duplicates of a message are recognised (EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// LAB ONLY: accept telemetry from unregistered sources, filed under `anon-{address}`.
    /// For load generators that cannot register (benchmarks); never in production.
    pub lab_accept_unregistered: bool,
    /// How long a queue-mode (`b=UQ`) device listens after each uplink.
    pub listen_window: Duration,
    /// Seeds the message IDs and tokens the ingress chooses (see [`downlink`]); `None` (the
    /// default) draws the seed from the OS when the ingress is made, so they cannot be guessed
    /// from the boot time. Tests and fuzzers pass one for repeatable runs.
    pub random_seed: Option<[u8; 18]>,
    /// Bounds and allow-list of platform commands.
    pub commands: CommandLimits,
}

impl IngressConfig {
    /// Defaults for `topics`.
    pub fn new(topics: Topics) -> IngressConfig {
        IngressConfig {
            topics,
            min_lifetime: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(90_000),
            default_lifetime: Duration::from_secs(90_000),
            max_body: 4096,
            exchange_lifetime: Duration::from_secs(247),
            lab_accept_unregistered: false,
            listen_window: Duration::from_secs(20),
            random_seed: None,
            commands: CommandLimits::default(),
        }
    }
}
