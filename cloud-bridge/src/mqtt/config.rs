//! The MQTT publisher's configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::{Endpoint, Scheme};
use crate::event::{BridgeError, BridgeStats};
use crate::happy_eyeballs::CONNECTION_ATTEMPT_DELAY;
use crate::tls::TlsOptions;
use crate::topics::Topics;

/// Everything [`run_mqtt`](super::run_mqtt) needs to know.
///
/// Start from [`MqttConfig::new`] and change fields:
///
/// ```
/// # use v6iot_cloud_bridge::{mqtt::MqttConfig, topics::Topics};
/// let mut config = MqttConfig::new(
///     "mqtts://broker.example:8883",
///     "edge-1",
///     Topics::new("v6iot", "plant-a").unwrap(),
/// );
/// config.tls.ca_file = Some("/etc/v6iot/ca.pem".into());
/// config.protocol = 5;
/// ```
#[derive(Clone)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (IPv6 literals in brackets).
    pub url: String,
    /// MQTT client id (default: `v6iot-edge-{edge_id}`).
    pub client_id: String,
    /// 4 for MQTT 3.1.1, 5 for MQTT 5.
    pub protocol: u8,
    /// Keep-alive interval, at least 5 s.
    pub keep_alive: Duration,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password (only with a username).
    pub password: Option<String>,
    /// For `mqtts://`: the CA to trust (and only it), a client certificate for mutual TLS,
    /// the name to verify.
    pub tls: TlsOptions,
    /// This edge router's id: names the status topic and its Last Will.
    pub edge_id: String,
    /// The site's topics.
    pub topics: Topics,
    /// At most this many QoS 1 PUBLISHes wait for their PUBACK at once (at least 1; an MQTT 5
    /// broker's Receive Maximum may lower it). All of them are published again after a
    /// reconnection.
    pub max_in_flight: u16,
    /// Whether every acknowledged message is also reported as [`BridgeEvent::Published`] on
    /// the events channel (one event per message; an edge that only logs events turns it off).
    ///
    /// [`BridgeEvent::Published`]: crate::BridgeEvent::Published
    pub report_published: bool,
    /// First reconnection delay (jittered, doubling).
    pub reconnect_min: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// Limit for resolving, TCP, TLS and the CONNECT/CONNACK exchange, each connection.
    pub connect_timeout: Duration,
    /// Happy Eyeballs' Connection Attempt Delay (RFC 8305: 250 ms).
    pub attempt_delay: Duration,
    /// Largest MQTT packet sent or accepted, in bytes.
    pub max_packet_size: u32,
    /// Counters, shared with the caller.
    pub stats: Arc<BridgeStats>,
}

impl MqttConfig {
    /// A configuration with defaults: MQTT 3.1.1, keep-alive 30 s, 256 in flight (each
    /// reported as published), reconnect 0.5 s … 30 s, connect timeout 10 s, 256 KiB
    /// packets, no credentials, no client cert.
    pub fn new(url: &str, edge_id: &str, topics: Topics) -> Self {
        MqttConfig {
            url: url.to_owned(),
            client_id: format!("v6iot-edge-{edge_id}"),
            protocol: 4,
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            tls: TlsOptions::default(),
            edge_id: edge_id.to_owned(),
            topics,
            max_in_flight: 256,
            report_published: true,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            attempt_delay: CONNECTION_ATTEMPT_DELAY,
            max_packet_size: 256 * 1024,
            stats: Arc::default(),
        }
    }

    /// Checks what would otherwise fail later, at each connection.
    pub(crate) fn validate(&self) -> Result<Endpoint, BridgeError> {
        let endpoint = Endpoint::parse(&self.url)?;
        let bad = |s: &str| Err(BridgeError::Config(s.to_owned()));
        if !matches!(endpoint.scheme, Scheme::Mqtt | Scheme::Mqtts) {
            return bad("the MQTT url must be mqtt:// or mqtts://");
        }
        if !matches!(self.protocol, 4 | 5) {
            return bad("protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5)");
        }
        if self.client_id.is_empty() || self.client_id.starts_with(' ') {
            return bad("client_id must be non-empty and not start with a space");
        }
        if !crate::topics::valid_level(&self.edge_id) {
            return bad("edge_id must be a valid topic level");
        }
        if self.keep_alive < Duration::from_secs(5)
            || self.keep_alive.as_secs() > u64::from(u16::MAX)
        {
            return bad("keep_alive must be 5 s ..= 65535 s");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.password.is_some() && self.username.is_none() {
            return bad("a password needs a username");
        }
        if self.max_packet_size < 1024 {
            return bad("max_packet_size must be at least 1024 bytes");
        }
        Ok(endpoint)
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("protocol", &self.protocol)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("edge_id", &self.edge_id)
            .field("topics", &self.topics)
            .field("max_in_flight", &self.max_in_flight)
            .field("report_published", &self.report_published)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_delay", &self.attempt_delay)
            .field("max_packet_size", &self.max_packet_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MqttConfig {
        MqttConfig::new(
            "mqtt://[::1]:1883",
            "e1",
            Topics::new("v6iot", "s").unwrap(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        assert_eq!(c.client_id, "v6iot-edge-e1");
        assert_eq!(c.validate().unwrap().port, 1883);
    }

    #[test]
    fn refuses_what_cannot_work() {
        type Change = Box<dyn Fn(&mut MqttConfig)>;
        let cases: Vec<Change> = vec![
            Box::new(|c| c.url = "ws://h".into()),
            Box::new(|c| c.url = "h:1883".into()),
            Box::new(|c| c.protocol = 3),
            Box::new(|c| c.client_id = String::new()),
            Box::new(|c| c.edge_id = "a/b".into()),
            Box::new(|c| c.keep_alive = Duration::from_secs(1)),
            Box::new(|c| c.max_in_flight = 0),
            Box::new(|c| c.password = Some("p".into())),
            Box::new(|c| c.max_packet_size = 10),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut c = config();
            change(&mut c);
            assert!(c.validate().is_err(), "case {i}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = config();
        c.username = Some("u".into());
        c.password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
