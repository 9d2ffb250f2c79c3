//! What travels north: one MQTT message with the id that makes at-least-once delivery safe.

/// A message bound for the platform, as the outbox stores it and the bridge publishes it.
///
/// `id` is unique per edge router and increases in the order messages were accepted; the
/// platform drops duplicates by it (publishing is at-least-once, shared/DESIGN.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Record id, unique per edge router, increasing.
    pub id: u64,
    /// Full MQTT topic, e.g. `v6iot/plant-a/sensor-1/telemetry`.
    pub topic: String,
    /// Payload bytes (JSON for the default topics).
    pub payload: Vec<u8>,
    /// MQTT retain flag (true for status topics).
    pub retain: bool,
}

/// A message before the outbox has given it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Full MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// MQTT retain flag.
    pub retain: bool,
}

impl NewMessage {
    /// Gives the message its id.
    pub fn with_id(self, id: u64) -> OutboundMessage {
        OutboundMessage {
            id,
            topic: self.topic,
            payload: self.payload,
            retain: self.retain,
        }
    }
}
