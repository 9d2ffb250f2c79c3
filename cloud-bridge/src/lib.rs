//! `v6iot-cloud-bridge`: the north side of the edge router.
//!
//! It carries records to the platform over MQTT (rumqttc + rustls) and WebSocket, keeps a
//! durable outbox, and brings commands back down (see `ARCHITECTURE.md`).
//!
//! | module | job |
//! |---|---|
//! | [`message`] | `OutboundMessage`: one MQTT message with its record id |
//! | [`outbox`] | the durable outbox: group-committed segment files, bounded in bytes, at-least-once delivery to the bridge with acknowledgements |
//! | [`topics`] | the topic convention of shared/DESIGN.md §9 |

pub mod message;
pub mod outbox;
pub mod topics;
