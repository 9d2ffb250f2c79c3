//! `v6iot-cloud-bridge`: the north side of the edge router.
//!
//! It carries records to the platform over MQTT (its own session core on rumqttc's packet
//! codecs, over rustls) and WebSocket, keeps a durable outbox, and brings commands back down
//! (see `ARCHITECTURE.md`).
//!
//! | module | job |
//! |---|---|
//! | [`message`] | `OutboundMessage`: one MQTT message with its record id |
//! | [`outbox`] | the durable outbox: group-committed segment files, bounded in bytes, at-least-once delivery to the bridge with acknowledgements |
//! | [`fanout`] | the outbox's messages to several sinks (MQTT and WebSocket); an id is acknowledged to the outbox once every sink acknowledged it |
//! | [`topics`] | the topic convention of shared/DESIGN.md §9 |
//! | [`mqtt`] | the MQTT publisher: at-least-once delivery, status and Last Will, commands |
//! | [`websocket`] | the WebSocket sink: one JSON text message per record |
//! | [`command`] | commands from the platform: JSON parsing and error results (sans-IO) |
//! | [`event`] | `BridgeEvent`, `BridgeStats`, `BridgeError` |
//! | [`latency`] | fixed-bucket latency histograms (outbox group commits, PUBLISH → PUBACK) for metrics |
//! | [`endpoint`] | `mqtt://`, `mqtts://`, `ws://`, `wss://` URLs (sans-IO) |
//! | [`happy_eyeballs`] | RFC 8305 address order and attempt schedule (sans-IO) + TCP race |
//! | [`tls`] | rustls client configuration: CA pinning, client certificates, server name |
//! | `transport` | resolve, race, TLS: one connection to the platform |
//! | `backoff` | jittered exponential reconnection delays (sans-IO) |

mod backoff;
pub mod command;
pub mod endpoint;
pub mod event;
pub mod fanout;
pub mod happy_eyeballs;
pub mod latency;
pub mod message;
pub mod mqtt;
pub mod outbox;
pub mod tls;
pub mod topics;
mod transport;
pub mod websocket;

pub use command::Command;
pub use event::{BridgeError, BridgeEvent, BridgeStats};
pub use mqtt::{MqttConfig, run_mqtt};
pub use websocket::{WsConfig, run_websocket};
