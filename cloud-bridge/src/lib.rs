//! `v6iot-cloud-bridge`: the north side of the edge router.
//!
//! It will carry normalised records to the platform over MQTT (rumqttc + rustls) and WebSocket,
//! keep a durable outbox, and bring commands back down (see `ARCHITECTURE.md`). This crate is a
//! placeholder until the data-path issue lands: it only reports its version.

/// The crate's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
