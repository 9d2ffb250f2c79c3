//! An MQTT broker inside the process (rumqttd), so the demo needs nothing installed.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts rumqttd on a free port of `ip` (MQTT 3.1.1) in a thread of its own; returns the
/// address. The broker lives until the process ends.
pub fn start(ip: std::net::IpAddr) -> anyhow::Result<SocketAddr> {
    // Reserve a free port, then hand it to the broker (which binds it itself).
    let listen = TcpListener::bind(SocketAddr::new(ip, 0))?.local_addr()?;
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-demo".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    // Wait (bounded) until it accepts connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(listen).is_err() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("embedded broker did not start on {listen}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(listen)
}
