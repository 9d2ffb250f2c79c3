//! The edge router's configuration: a TOML file, overridable by command-line flags.
//!
//! Unknown or invalid keys are errors that name the key. Example (every key but `site` has a
//! default):
//!
//! ```toml
//! site = "plant-a"            # topic level of this site
//! edge_id = "edge-1"          # this router's name in topics and the Last Will
//! data_dir = "/var/lib/v6iot" # the outbox lives here
//!
//! [coap]
//! listen = "[::]:5683"
//! max_body = 4096             # bytes
//! min_lifetime = 60           # seconds
//! max_lifetime = 90000
//!
//! [mqtt]
//! url = "mqtts://broker.example:8883"   # mqtt:// or mqtts://
//! protocol = 4                # 4 = MQTT 3.1.1, 5 = MQTT 5
//! client_id = "v6iot-edge-1"
//! topic_prefix = "v6iot"
//! ca_file = "/etc/v6iot/ca.pem"         # pins the broker's CA (mqtts)
//! client_cert = "/etc/v6iot/edge.pem"   # mutual TLS
//! client_key = "/etc/v6iot/edge.key"
//! max_in_flight = 256         # QoS 1 messages unacknowledged at most
//! username = "edge-1"         # optional; the broker's ACL names this identity
//! password = "…"              # over mqtt:// only with allow_plain_password = true
//! allow_plain_password = false
//!
//! [websocket]                 # optional second sink: JSON lines over ws:// or wss://
//! url = "wss://ingest.example/v6iot"
//!
//! [outbox]
//! max_bytes = 1073741824      # when full, devices get 5.03 + Max-Age
//! min_sync_interval_us = 0    # e.g. 2000 on flash that wears: syncs at least this far apart
//!
//! [registry]                  # devices and the audit trail (SQLite)
//! db = "/var/lib/v6iot/registry.db"     # default: {data_dir}/registry.db
//! seal_key_file = "/etc/v6iot/seal.key" # 64 hex digits; else the V6IOT_SEAL_KEY variable
//! audit_lane_rows = 262144    # audit rows waiting for the disk at most (~250 B each); without
//!                             #   room a registration gets 5.03 + Max-Age (2 per device: none)
//!
//! [audit]                     # checkpoints of the audit trail (see audit::checkpoint)
//! checkpoint_file = "/var/lib/v6iot/audit.checkpoint" # default: {data_dir}/audit.checkpoint
//! checkpoint_every_s = 60     # published on _edge/{edge}/security at least this often ...
//! checkpoint_min_gap_s = 5    # ... and after new rows, no sooner than this after the last
//!
//! [security]                  # the OSCORE gateway in front of the ingress
//! require_oscore = true       # default; false is LAB ONLY (plain CoAP accepted, loud warning)
//! sender_persist_step = 4096  # edge sequence numbers per persisted mark (RFC 8613 App. B.1.1)
//! rate_per_source = 20000     # unauthenticated datagrams/s per source network (IPv6 /64,
//! burst_per_source = 40000    #   IPv4 address); verified devices' traffic is not counted here
//! rate_per_device = 50        # verified requests/s per device (over it: 5.03 + Max-Age)
//! burst_per_device = 200
//! quarantine_after = 20       # failed verifications under one device's kid ...
//! failure_window_s = 10       # ... within this window quarantine the kid ...
//! quarantine_s = 300          # ... for this long (refused unless from the device's own address)
//! report_interval_s = 5       # at most one report per interval on _edge/{edge}/security
//!
//! [commands]                  # commands from the platform (…/{device}/cmd/{req})
//! max_queued_per_device = 64  # waiting or in flight per device; more: `queue full`
//! max_queued_total = 32768    # the same over all devices
//! max_message_bytes = 1152    # the CoAP request with OSCORE (RFC 7252 §4.6); larger: `too large`
//! max_payload_bytes = 1024    # a device's block size (no Block1 downlink); larger: `too large`
//! allow_devices = ["valve-*", "pump-3"]  # optional: only these take commands
//! ```
//!
//! The border router's `[lowpan]` and `[[radio]]` sections are in [`lowpan`].
//!
//! With `require_oscore` (the default) the router needs the registry's seal key to open the
//! devices' master secrets; it refuses to start without one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::gateway::limits::{self, LimitsConfig, Rate};
use crate::registry_db::admin::RegistryPlace;
use crate::registry_db::{Registry, RegistryError};
use crate::registry_worker::Jobs;

/// The smallest `[registry] audit_lane_rows`: twice the reserve the gateway keeps for rows it
/// cannot refuse (`AuditRoom::RESERVE`).
const MIN_AUDIT_LANE_ROWS: usize = 8192;
/// The largest `[registry] audit_lane_rows` (about 4 GiB of rows).
const MAX_AUDIT_LANE_ROWS: usize = 1 << 24;
use crate::seal::{SealError, SealKey};

pub mod lowpan;

pub use lowpan::{LowpanSection, RadioLink, RadioSection};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Site name (one MQTT topic level).
    pub site: String,
    /// This edge router's name.
    #[serde(default = "default_edge_id")]
    pub edge_id: String,
    /// Where the outbox and other state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// CoAP ingress.
    #[serde(default)]
    pub coap: CoapSection,
    /// MQTT to the platform.
    #[serde(default)]
    pub mqtt: MqttSection,
    /// Optional WebSocket sink.
    #[serde(default)]
    pub websocket: Option<WebSocketSection>,
    /// Durable outbox.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// Device registry and audit trail.
    #[serde(default)]
    pub registry: RegistrySection,
    /// The authentication gateway.
    #[serde(default)]
    pub security: SecuritySection,
    /// Commands from the platform.
    #[serde(default)]
    pub commands: CommandsSection,
    /// Checkpoints of the audit trail.
    #[serde(default)]
    pub audit: AuditSection,
    /// The border router: what its PANs share.
    #[serde(default)]
    pub lowpan: LowpanSection,
    /// The border router's PANs, one radio each (none: no border router).
    #[serde(default)]
    pub radio: Vec<RadioSection>,
    /// Metrics, the dashboard and the stop.
    #[serde(default)]
    pub ops: OpsSection,
    /// Logs.
    #[serde(default)]
    pub log: LogSection,
}

/// `[ops]`: the operations listener (`/metrics`, the dashboard) and the graceful stop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSection {
    /// HTTP address of `/metrics` and the dashboard; absent (the default): no listener.
    pub listen: Option<SocketAddr>,
    /// Allow `listen` on an address other than loopback (the metrics are then readable by
    /// anyone who reaches it; the dashboard still needs its token). Default false.
    pub allow_remote: bool,
    /// The dashboard's access token (at least 16 characters); absent with no
    /// `dashboard_token_file`: the dashboard is off (`/metrics` stays).
    pub dashboard_token: Option<String>,
    /// A file holding the token (first line), e.g. readable by the service user only.
    pub dashboard_token_file: Option<PathBuf>,
    /// Rows the dashboard keeps at most (devices past it are counted, not shown).
    pub dashboard_max_devices: usize,
    /// HTTP connections open at once at most; more are closed at once (and counted).
    pub max_connections: usize,
    /// At a stop (SIGTERM), how long the edge waits for the broker to take what is in the
    /// outbox, seconds; what is left stays for the next start.
    pub stop_flush_s: u64,
    /// While stopping, new requests get 5.03 with this Max-Age, seconds.
    pub stop_retry_after_s: u32,
}

impl Default for OpsSection {
    fn default() -> Self {
        OpsSection {
            listen: None,
            allow_remote: false,
            dashboard_token: None,
            dashboard_token_file: None,
            dashboard_max_devices: 200_000,
            max_connections: 64,
            stop_flush_s: 10,
            stop_retry_after_s: 30,
        }
    }
}

impl OpsSection {
    /// The dashboard's token: `dashboard_token`, else the first line of
    /// `dashboard_token_file`; `None` when neither is set (dashboard off).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or the token is shorter than 16 characters.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let token = match (&self.dashboard_token, &self.dashboard_token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if token.chars().count() < 16 {
            return Err(ConfigError::Invalid {
                key: "ops.dashboard_token",
                reason: "must be at least 16 characters".to_owned(),
            });
        }
        Ok(Some(token))
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line (for journald forwarding, Loki, Elasticsearch).
    Json,
}

/// `[log]`: format and levels (the `RUST_LOG` variable, when set, replaces `level` and
/// `modules`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// The level of everything not named in `modules`: error, warn, info, debug, trace.
    pub level: String,
    /// Levels per module, e.g. `"v6iot_edge_router::gateway" = "debug"`.
    pub modules: std::collections::BTreeMap<String, String>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Human,
            level: "info".to_owned(),
            modules: std::collections::BTreeMap::new(),
        }
    }
}

impl LogSection {
    /// The filter directive these keys make (`info,v6iot_edge_router::gateway=debug`).
    #[must_use]
    pub fn directive(&self) -> String {
        let mut d = self.level.clone();
        for (module, level) in &self.modules {
            d.push_str(&format!(",{module}={level}"));
        }
        d
    }
}

/// `[commands]`: bounds and the allow-list of commands from the platform (see
/// [`crate::ingress::downlink`]; each refusal is an error result on `…/cmd/{req}/result`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsSection {
    /// Commands waiting or in flight for one device; more get `queue full`.
    pub max_queued_per_device: usize,
    /// Commands waiting or in flight over all devices; more get `queue full`. With the size
    /// limits this bounds the queue's memory (about `max_queued_total` times
    /// `max_message_bytes` plus 200 bytes) and the journal (at most about twice as many lines,
    /// rewritten while running).
    pub max_queued_total: usize,
    /// The largest CoAP request to a device, OSCORE overhead included (default 1152: RFC 7252
    /// §4.6 for a path of unknown MTU); larger commands get `too large`.
    pub max_message_bytes: usize,
    /// The largest command payload (default 1024: a device's block size; the downlink sends no
    /// Block1); larger get `too large`.
    pub max_payload_bytes: usize,
    /// Only these devices take commands: names, or prefixes ending in `*` (`"valve-*"`).
    /// Absent: every registered device. Which MQTT identities may publish commands at all is
    /// the broker's ACL (see the README).
    pub allow_devices: Option<Vec<String>>,
}

impl Default for CommandsSection {
    fn default() -> Self {
        let d = crate::ingress::CommandLimits::default();
        CommandsSection {
            max_queued_per_device: d.max_per_device,
            max_queued_total: d.max_total,
            max_message_bytes: d.max_message_bytes,
            max_payload_bytes: d.max_payload_bytes,
            allow_devices: None,
        }
    }
}

impl CommandsSection {
    /// The downlink's limits these keys describe.
    ///
    /// # Errors
    ///
    /// A pattern of `allow_devices` that is not a name or a prefix with one final `*`.
    pub fn limits(
        &self,
    ) -> Result<crate::ingress::CommandLimits, crate::ingress::downlink::BadPattern> {
        let allow = match &self.allow_devices {
            None => None,
            Some(patterns) => Some(crate::ingress::DeviceAllowList::new(patterns)?),
        };
        Ok(crate::ingress::CommandLimits {
            max_per_device: self.max_queued_per_device,
            max_total: self.max_queued_total,
            max_message_bytes: self.max_message_bytes,
            max_payload_bytes: self.max_payload_bytes,
            allow,
        })
    }
}

/// `[audit]`: the checkpoints that anchor the audit trail's end (see
/// [`crate::audit::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The signed checkpoint file; default `{data_dir}/audit.checkpoint`.
    pub checkpoint_file: Option<PathBuf>,
    /// A checkpoint is published at least this often, seconds.
    pub checkpoint_every_s: u64,
    /// After rows were added, the next checkpoint comes no sooner than this after the last,
    /// seconds (0: after every batch of rows).
    pub checkpoint_min_gap_s: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            checkpoint_file: None,
            checkpoint_every_s: 60,
            checkpoint_min_gap_s: 5,
        }
    }
}

impl AuditSection {
    /// The checkpoint file of a router whose data directory is `data_dir`.
    #[must_use]
    pub fn checkpoint_path(&self, data_dir: &Path) -> PathBuf {
        self.checkpoint_file
            .clone()
            .unwrap_or_else(|| data_dir.join("audit.checkpoint"))
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Refuse every CoAP request that is not OSCORE-protected by a registered, active device.
    /// `false` is for labs and benchmarks only: plain CoAP is accepted (OSCORE still works).
    pub require_oscore: bool,
    /// The distance between the persisted marks of the edge's own OSCORE sequence numbers:
    /// one registry write per half step of messages to a device, a step skipped per restart.
    pub sender_persist_step: u64,
    /// Unauthenticated datagrams per second allowed from one source network (an IPv6 /64 — a
    /// whole production line shares it — or an IPv4 address): plain requests, unknown kids,
    /// stray responses, empty messages, garbage (in lab mode, all plain traffic); over it they
    /// are dropped unread. Requests naming an active device's kid and answers to the edge's
    /// own requests do not count here (see `gateway::limits`).
    pub rate_per_source: u32,
    /// The burst a source network may send after a quiet spell.
    pub burst_per_source: u32,
    /// Verified requests per second allowed from one device; over it they get 5.03 + Max-Age.
    /// The same rate (and burst) bounds the requests under its kid that are refused before
    /// verification (replays, failed verifications) from anywhere but the device's own address.
    pub rate_per_device: u32,
    /// The burst a device may send after a quiet spell.
    pub burst_per_device: u32,
    /// Failed verifications under one active device's kid within `failure_window_s` that
    /// quarantine the kid (its requests from any address but the device's own are then refused
    /// unverified). No source network is ever quarantined.
    pub quarantine_after: u32,
    /// The window in which failures are counted, seconds.
    pub failure_window_s: u64,
    /// How long a kid's quarantine lasts, seconds.
    pub quarantine_s: u64,
    /// At most one security report per this many seconds (none while nothing is refused).
    pub report_interval_s: u64,
}

impl SecuritySection {
    /// The rate limits these keys describe.
    pub fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            per_source: Rate {
                per_second: f64::from(self.rate_per_source),
                burst: f64::from(self.burst_per_source),
            },
            per_device: Rate {
                per_second: f64::from(self.rate_per_device),
                burst: f64::from(self.burst_per_device),
            },
            failures_to_quarantine: self.quarantine_after,
            failure_window: std::time::Duration::from_secs(self.failure_window_s),
            quarantine: std::time::Duration::from_secs(self.quarantine_s),
            max_tracked: limits::DEFAULT_MAX_TRACKED,
        }
    }
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            require_oscore: true,
            sender_persist_step: 4096,
            // The gateway owns these numbers and their reasons (`gateway::limits`).
            rate_per_source: limits::DEFAULT_RATE_PER_SOURCE,
            burst_per_source: limits::DEFAULT_BURST_PER_SOURCE,
            rate_per_device: limits::DEFAULT_RATE_PER_DEVICE,
            burst_per_device: limits::DEFAULT_BURST_PER_DEVICE,
            quarantine_after: limits::DEFAULT_FAILURES_TO_QUARANTINE,
            failure_window_s: limits::DEFAULT_FAILURE_WINDOW_S,
            quarantine_s: limits::DEFAULT_QUARANTINE_S,
            report_interval_s: 5,
        }
    }
}

/// `[coap]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoapSection {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Shortest registration lifetime granted, seconds.
    pub min_lifetime: u64,
    /// Longest registration lifetime granted, seconds.
    pub max_lifetime: u64,
    /// LAB ONLY: accept telemetry from devices that never registered (benchmarks with load
    /// generators that cannot register). Logged loudly at start.
    pub lab_accept_unregistered: bool,
    /// How long a queue-mode (`b=UQ`) device listens after each uplink, seconds: the edge
    /// sends it queued commands only within this window. Set it to the device's active time
    /// (T3324) less the radio's longest round trip (CE2: about 12 s): the window starts when the
    /// edge hears the uplink, the modem's active time when the answer reaches it, so a command
    /// sent late in a longer window arrives after the modem went to sleep (it goes again in the
    /// next window).
    pub queue_listen_window_s: u64,
    /// Socket receive and send buffer sizes asked of the kernel, bytes (it may cap them at
    /// `net.core.rmem_max` / `wmem_max`). Large buffers absorb bursts from many devices.
    pub socket_buffer_bytes: usize,
}

impl Default for CoapSection {
    fn default() -> Self {
        CoapSection {
            listen: SocketAddr::from(([0u16; 8], 5683)),
            max_body: 4096,
            min_lifetime: 60,
            max_lifetime: 90_000,
            lab_accept_unregistered: false,
            queue_listen_window_s: 20,
            socket_buffer_bytes: 4 << 20,
        }
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// 4 (MQTT 3.1.1) or 5.
    pub protocol: u8,
    /// Client id; defaults to `v6iot-{edge_id}`.
    pub client_id: Option<String>,
    /// First topic level(s).
    pub topic_prefix: String,
    /// Keep-alive, seconds.
    pub keep_alive: u64,
    /// QoS 1 messages in flight (published, not yet acknowledged) at most. MQTT 5 brokers
    /// announce their own limit (Receive Maximum), which wins when lower; some managed MQTT 3.1.1
    /// brokers allow only about 100.
    pub max_in_flight: u16,
    /// User name.
    pub username: Option<String>,
    /// Password. Over plain `mqtt://` (no TLS) it would cross the network in clear text:
    /// refused unless `allow_plain_password` is set.
    pub password: Option<String>,
    /// Allow `password` over plain `mqtt://` (a broker on the same host or a trusted link);
    /// default false.
    pub allow_plain_password: bool,
    /// CA certificate(s), PEM: the only roots trusted for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, PEM (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// Client private key, PEM (mutual TLS).
    pub client_key: Option<PathBuf>,
    /// Name to verify the broker's certificate against, when not the URL's host.
    pub server_name: Option<String>,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: "mqtt://[::1]:1883".to_owned(),
            protocol: 4,
            client_id: None,
            topic_prefix: "v6iot".to_owned(),
            keep_alive: 30,
            max_in_flight: 256,
            username: None,
            password: None,
            allow_plain_password: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            server_name: None,
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// `ws://…` or `wss://…`.
    pub url: String,
    /// CA certificate(s), PEM: the only roots trusted for `wss://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, PEM.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Client private key, PEM.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Name to verify the server's certificate against, when not the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[outbox]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Bound on stored, unpublished bytes.
    pub max_bytes: u64,
    /// Segment file size.
    pub segment_bytes: u64,
    /// Most records per group commit.
    pub max_batch: usize,
    /// Longest wait to gather a group, milliseconds.
    pub max_batch_delay_ms: u64,
    /// Shortest time between the starts of two outbox syncs, microseconds (default 0: a sync
    /// starts as soon as the last one ended): appends arriving meanwhile share the next
    /// `fdatasync` (no wait while appends are sparse). Fewer syncs spare flash that wears and
    /// a little CPU, but every acknowledgement may wait this long: on this project's benchmark
    /// machine 1 ms halved the rate at 128 requests outstanding and did not raise it at 512.
    pub min_sync_interval_us: u64,
    /// Max-Age of the 5.03 answer when the outbox is full, seconds.
    pub retry_after_s: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            max_batch: 4096,
            max_batch_delay_ms: 0,
            min_sync_interval_us: 0,
            retry_after_s: 10,
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// The SQLite file of the registry and the audit trail; default `{data_dir}/registry.db`.
    pub db: Option<PathBuf>,
    /// A file holding the seal key of the devices' master secrets (64 hex digits, as
    /// `v6iot-edge devices keygen` writes). Without it, the `V6IOT_SEAL_KEY` environment
    /// variable is used.
    pub seal_key_file: Option<PathBuf>,
    /// Audit rows waiting for the registry thread at most (about 250 bytes each in memory);
    /// default [`Jobs::MAX_AUDIT_ROWS`]. Without room for its rows a new binding or
    /// registration is answered 5.03 with a retry hint paced by the lane's drain
    /// (`gateway::audit_room`); an edge that must take a storm of all its devices'
    /// registrations without one gives it two rows per device.
    pub audit_lane_rows: Option<usize>,
}

impl RegistrySection {
    /// The audit lane's bound ([`Jobs::MAX_AUDIT_ROWS`] unless set).
    #[must_use]
    pub fn audit_lane_rows(&self) -> usize {
        self.audit_lane_rows.unwrap_or(Jobs::MAX_AUDIT_ROWS)
    }

    /// The database file for a router whose data directory is `data_dir`.
    #[must_use]
    pub fn db_path(&self, data_dir: &Path) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| data_dir.join("registry.db"))
    }

    /// The seal key: from `seal_key_file` when set, else from the
    /// [`SEAL_KEY_ENV`](crate::seal::SEAL_KEY_ENV) environment variable, else none.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or either holds no key.
    pub fn seal_key(&self) -> Result<Option<SealKey>, SealError> {
        match &self.seal_key_file {
            Some(file) => SealKey::from_file(file).map(Some),
            None => SealKey::from_env(),
        }
    }
}

impl EdgeConfig {
    /// Opens (or creates, with its directory) the registry this configuration names:
    /// `registry.db` (default `{data_dir}/registry.db`), with the key of
    /// [`RegistrySection::seal_key`].
    ///
    /// # Errors
    ///
    /// As [`Registry::open`] and [`RegistrySection::seal_key`].
    pub fn open_registry(&self) -> Result<Registry, RegistryError> {
        let path = self.registry.db_path(&self.data_dir);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Registry::open(&path, self.registry.seal_key()?)
    }

    /// Where the registry of this configuration is, for the `devices` and `audit` commands:
    /// its file in `data_dir` (default: the configuration's own), the seal key, the audit
    /// checkpoint file.
    ///
    /// # Errors
    ///
    /// As [`RegistrySection::seal_key`].
    pub fn registry_place(&self, data_dir: Option<&Path>) -> Result<RegistryPlace, SealError> {
        let data_dir = data_dir.unwrap_or(&self.data_dir);
        Ok(RegistryPlace {
            path: self.registry.db_path(data_dir),
            key: self.registry.seal_key()?,
            checkpoint: self.audit.checkpoint_path(data_dir),
        })
    }
}

fn default_edge_id() -> String {
    "edge".to_owned()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("v6iot-edge-data")
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message names the key and line).
    #[error("{0}")]
    Parse(String),
    /// A key's value is not acceptable.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `mqtt.url`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl EdgeConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text)?;
        Ok(config)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let config: EdgeConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// A configuration from defaults, for `site` (used when no file is given).
    pub fn with_site(site: &str) -> EdgeConfig {
        EdgeConfig {
            site: site.to_owned(),
            edge_id: default_edge_id(),
            data_dir: default_data_dir(),
            coap: CoapSection::default(),
            mqtt: MqttSection::default(),
            websocket: None,
            outbox: OutboxSection::default(),
            registry: RegistrySection::default(),
            security: SecuritySection::default(),
            commands: CommandsSection::default(),
            audit: AuditSection::default(),
            lowpan: LowpanSection::default(),
            radio: Vec::new(),
            ops: OpsSection::default(),
            log: LogSection::default(),
        }
    }

    /// Checks values the types cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if v6iot_cloud_bridge::topics::Topics::new(&self.mqtt.topic_prefix, &self.site).is_err() {
            return invalid(
                "site",
                "must be one MQTT topic level: not empty, no / + # NUL, not starting with _",
            );
        }
        if !v6iot_cloud_bridge::topics::valid_level(&self.edge_id) {
            return invalid(
                "edge_id",
                "must be one MQTT topic level: not empty, no / + # NUL, not starting with _",
            );
        }
        if !(self.mqtt.url.starts_with("mqtt://") || self.mqtt.url.starts_with("mqtts://")) {
            return invalid("mqtt.url", "must start with mqtt:// or mqtts://");
        }
        if !matches!(self.mqtt.protocol, 4 | 5) {
            return invalid("mqtt.protocol", "must be 4 (MQTT 3.1.1) or 5");
        }
        if self.mqtt.password.is_some()
            && self.mqtt.url.starts_with("mqtt://")
            && !self.mqtt.allow_plain_password
        {
            return invalid(
                "mqtt.allow_plain_password",
                "a password over plain mqtt:// (no TLS) crosses the network in clear text: use \
                 mqtts://, or set mqtt.allow_plain_password = true for a broker on this host",
            );
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            return invalid("mqtt.client_key", "client_cert and client_key go together");
        }
        if let Some(ws) = &self.websocket
            && !(ws.url.starts_with("ws://") || ws.url.starts_with("wss://"))
        {
            return invalid("websocket.url", "must start with ws:// or wss://");
        }
        if self.coap.min_lifetime == 0 || self.coap.min_lifetime > self.coap.max_lifetime {
            return invalid(
                "coap.min_lifetime",
                "must be at least 1 and at most coap.max_lifetime",
            );
        }
        if self.security.sender_persist_step < 2 {
            return invalid("security.sender_persist_step", "must be at least 2");
        }
        for (key, value) in [
            ("security.rate_per_source", self.security.rate_per_source),
            ("security.burst_per_source", self.security.burst_per_source),
            ("security.rate_per_device", self.security.rate_per_device),
            ("security.burst_per_device", self.security.burst_per_device),
            ("security.quarantine_after", self.security.quarantine_after),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.mqtt.max_in_flight == 0 {
            return invalid("mqtt.max_in_flight", "must be at least 1");
        }
        if self.security.report_interval_s == 0 {
            return invalid("security.report_interval_s", "must be at least 1");
        }
        if self.audit.checkpoint_every_s == 0 {
            return invalid("audit.checkpoint_every_s", "must be at least 1");
        }
        if self.audit.checkpoint_min_gap_s > self.audit.checkpoint_every_s {
            return invalid(
                "audit.checkpoint_min_gap_s",
                "must be at most audit.checkpoint_every_s",
            );
        }
        if !(MIN_AUDIT_LANE_ROWS..=MAX_AUDIT_LANE_ROWS).contains(&self.registry.audit_lane_rows()) {
            return invalid(
                "registry.audit_lane_rows",
                "must be from 8192 (twice the reserve kept for rows that cannot be refused) to 16777216",
            );
        }
        if self.outbox.max_bytes < 1 << 20 {
            return invalid("outbox.max_bytes", "must be at least 1 MiB");
        }
        if self.commands.max_queued_per_device == 0 || self.commands.max_queued_total == 0 {
            return invalid(
                "commands.max_queued_per_device",
                "commands.max_queued_per_device and max_queued_total must be at least 1",
            );
        }
        if !(128..=1452).contains(&self.commands.max_message_bytes) {
            return invalid(
                "commands.max_message_bytes",
                "must be 128..=1452 (1452: a 1500-byte link MTU less the IPv6 and UDP headers)",
            );
        }
        if self.commands.max_payload_bytes > self.commands.max_message_bytes {
            return invalid(
                "commands.max_payload_bytes",
                "must be at most commands.max_message_bytes",
            );
        }
        if let Err(e) = self.commands.limits() {
            return Err(ConfigError::Invalid {
                key: "commands.allow_devices",
                reason: e.to_string(),
            });
        }
        self.check_ops()?;
        if self.outbox.min_sync_interval_us > 100_000 {
            return invalid(
                "outbox.min_sync_interval_us",
                "must be at most 100000 (0.1 s): every acknowledgement waits for a sync",
            );
        }
        lowpan::check(&self.lowpan, &self.radio)
    }

    /// The border router's configuration (`None` when there is no `[[radio]]`).
    ///
    /// # Errors
    ///
    /// What [`EdgeConfig::check`] refuses in `[lowpan]` and `[[radio]]`.
    pub fn border(&self) -> Result<Option<crate::border::BorderConfig>, ConfigError> {
        lowpan::border_config(&self.lowpan, &self.radio)
    }
}

impl EdgeConfig {
    /// A copy with the secrets a file may hold (`mqtt.password`, `ops.dashboard_token`)
    /// replaced by `…`, for printing (`check-config`).
    #[must_use]
    pub fn redacted(&self) -> EdgeConfig {
        let mut c = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("…".to_owned());
            }
        };
        hide(&mut c.mqtt.password);
        hide(&mut c.ops.dashboard_token);
        c
    }

    fn check_ops(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Some(addr) = self.ops.listen
            && !addr.ip().is_loopback()
            && !self.ops.allow_remote
        {
            return invalid(
                "ops.listen",
                "not a loopback address: set ops.allow_remote = true to serve metrics beyond this host",
            );
        }
        if self.ops.max_connections == 0 {
            return invalid("ops.max_connections", "must be at least 1");
        }
        if self.ops.dashboard_token.is_some() && self.ops.dashboard_token_file.is_some() {
            return invalid(
                "ops.dashboard_token",
                "set dashboard_token or dashboard_token_file, not both",
            );
        }
        if let Some(t) = &self.ops.dashboard_token
            && t.chars().count() < 16
        {
            return invalid("ops.dashboard_token", "must be at least 16 characters");
        }
        if self.ops.stop_retry_after_s == 0 {
            return invalid("ops.stop_retry_after_s", "must be at least 1");
        }
        if tracing_subscriber::EnvFilter::try_new(self.log.directive()).is_err() {
            return invalid(
                "log.level",
                "log.level and log.modules must be levels (error, warn, info, debug, trace) and module paths",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGED: &str = include_str!("../debian/edge.toml");

    /// The fields serde expects in `section` (from the message refusing an unknown key).
    fn expected_fields(section: Option<&str>) -> Vec<String> {
        let table = section.map(|s| format!("[{s}]\n")).unwrap_or_default();
        let e = EdgeConfig::parse(&format!("site = \"a\"\n{table}zzz_unknown = 1\n"))
            .unwrap_err()
            .to_string();
        let list = e.split("expected ").nth(1).unwrap_or_else(|| panic!("{e}"));
        let list = list.split('\n').next().unwrap_or_default();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn printed_configurations_hold_no_secret() {
        let c = EdgeConfig::parse(
            "site = \"a\"\n[mqtt]\nurl = \"mqtts://b:8883\"\npassword = \"pw-secret-1\"\n\
             [ops]\ndashboard_token = \"token-secret-0123456\"\n",
        )
        .unwrap();
        let shown = format!("{:#?}", c.redacted());
        assert!(!shown.contains("pw-secret-1") && !shown.contains("token-secret-0123456"));
        assert!(
            format!("{c:?}").contains("pw-secret-1"),
            "the original keeps it"
        );
    }

    /// The example configuration the package installs: valid as shipped, valid with every
    /// optional key switched on, and naming every key the configuration has (no more, no
    /// fewer), so it cannot drift from the code.
    #[test]
    fn the_packaged_example_names_every_key() {
        EdgeConfig::parse(PACKAGED).unwrap();
        let all: String = PACKAGED
            .lines()
            .filter(|l| !l.contains("dashboard_token_file")) // one of two alternatives
            .map(|l| format!("{}\n", l.strip_prefix("#: ").unwrap_or(l)))
            .collect();
        EdgeConfig::parse(&all).unwrap();
        let table: toml::Table = toml::from_str(&all).unwrap();
        let mut top: Vec<String> = table.keys().cloned().collect();
        top.sort();
        let mut want = expected_fields(None);
        want.sort();
        assert_eq!(top, want, "top-level keys");
        for (name, value) in &table {
            let Some(section) = value.as_table() else {
                continue;
            };
            let mut keys: Vec<String> = section.keys().cloned().collect();
            if name == "ops" {
                keys.push("dashboard_token_file".to_owned());
            }
            keys.sort();
            let mut want = expected_fields(Some(name));
            want.sort();
            assert_eq!(keys, want, "keys of [{name}]");
            for line in PACKAGED.lines() {
                assert!(!line.contains("= \"\""), "an empty value: {line}");
            }
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .map(|l| format!("{l}\n"))
            .collect();
        let c = EdgeConfig::parse(&example).unwrap();
        assert_eq!(c.site, "plant-a");
        assert_eq!(c.mqtt.protocol, 4);
        assert_eq!(c.websocket.unwrap().url, "wss://ingest.example/v6iot");
        assert_eq!(
            c.registry.db_path(&c.data_dir),
            PathBuf::from("/var/lib/v6iot/registry.db")
        );
        assert_eq!(
            c.registry.seal_key_file,
            Some(PathBuf::from("/etc/v6iot/seal.key"))
        );
        assert!(c.security.require_oscore);
        assert_eq!(c.security.sender_persist_step, 4096);
        let d = EdgeConfig::with_site("s");
        assert!(d.security.require_oscore);
        assert_eq!(
            d.registry.db_path(Path::new("/data")),
            PathBuf::from("/data/registry.db")
        );
    }

    #[test]
    fn unknown_and_invalid_keys_are_named() {
        let e = EdgeConfig::parse("site = \"a\"\n[mqtt]\nurll = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `urll`"), "{e}");
        let e = EdgeConfig::parse("site = \"a\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = EdgeConfig::parse("site = \"a\"\n[mqtt]\nurl = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`mqtt.url`"), "{e}");
        let e = EdgeConfig::parse("site = \"a/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`site`"), "{e}");
        let e = EdgeConfig::parse("site = \"a\"\n[coap]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        // A password over plain mqtt:// needs the explicit opt-in; over mqtts:// it does not.
        let plain = "site = \"a\"\n[mqtt]\nurl = \"mqtt://[::1]:1883\"\nusername = \"u\"\npassword = \"p\"\n";
        let e = EdgeConfig::parse(plain).unwrap_err().to_string();
        assert!(e.starts_with("`mqtt.allow_plain_password`"), "{e}");
        EdgeConfig::parse(&format!("{plain}allow_plain_password = true\n")).unwrap();
        EdgeConfig::parse(&plain.replace("mqtt://", "mqtts://")).unwrap();
        EdgeConfig::parse("site = \"a\"\n[mqtt]\nusername = \"u\"\n").unwrap();
        let e = EdgeConfig::parse("edge_id = \"e\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `site`"), "{e}");
    }

    #[test]
    fn the_audit_lane_bound_is_set_and_checked() {
        let c = EdgeConfig::parse("site = \"a\"\n").unwrap();
        assert_eq!(c.registry.audit_lane_rows(), Jobs::MAX_AUDIT_ROWS);
        let c = EdgeConfig::parse("site = \"a\"\n[registry]\naudit_lane_rows = 2000000\n").unwrap();
        assert_eq!(c.registry.audit_lane_rows(), 2_000_000);
        for bad in [0, MIN_AUDIT_LANE_ROWS - 1, MAX_AUDIT_LANE_ROWS + 1] {
            let e = EdgeConfig::parse(&format!(
                "site = \"a\"\n[registry]\naudit_lane_rows = {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("`registry.audit_lane_rows`"), "{bad}: {e}");
        }
    }
}
