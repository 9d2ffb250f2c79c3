//! rumqttc for MQTT 3.1.1 (`rumqttc::`) and MQTT 5 (`rumqttc::v5`) behind one face: a client
//! for requests, and a task that polls the event loop of one connection and reports what the
//! bridge cares about.

use std::path::Path;

use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{Outgoing, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::MqttConfig;

/// What the bridge needs from rumqttc's events.
#[derive(Debug)]
pub(crate) enum Ev {
    /// CONNACK (success; a refusal is an error).
    ConnAck,
    /// rumqttc wrote a QoS 1 PUBLISH with this packet id.
    OutgoingPublish(u16),
    /// A PUBACK; `refused` holds an MQTT 5 error reason code, and whether it is permanent.
    PubAck {
        pkid: u16,
        refused: Option<(String, bool)>,
    },
    /// An incoming PUBLISH (a command).
    Publish { topic: String, payload: Vec<u8> },
    /// A SUBACK; `refused` when the broker refused a filter.
    SubAck { refused: Option<String> },
}

/// A client of one connection.
pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Statuses are JSON: `{"state":"online","edge":"…"}`.
pub(crate) fn status_payload(state: &str, edge: &str) -> Vec<u8> {
    serde_json::json!({ "state": state, "edge": edge })
        .to_string()
        .into_bytes()
}

impl Client {
    /// Creates the client of one connection (through the hand-off socket at `socket`) and
    /// spawns the task that polls its event loop until the first error. Events arrive on the
    /// returned channel; the last one is the error that ended the connection.
    pub(crate) fn start(
        config: &MqttConfig,
        socket: &Path,
        capacity: usize,
    ) -> (Client, mpsc::Receiver<Result<Ev, String>>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(256);
        let socket = socket.to_string_lossy().into_owned();
        let will_topic = config.topics.edge_status(&config.edge_id);
        let will = status_payload("offline", &config.edge_id);
        let timeout = config.connect_timeout.as_secs().max(1);
        let packet = config.max_packet_size;
        // More packet ids than the bridge's window: fewer collisions when PUBACKs come out of
        // order (rumqttc then waits for the older PUBACK before it sends more).
        let rumqttc_inflight = config.max_in_flight.saturating_mul(2);
        if config.protocol == 5 {
            use rumqttc::v5::{MqttOptions, mqttbytes::v5::LastWill};
            let mut o = MqttOptions::new(config.client_id.clone(), socket, 0);
            o.set_transport(Transport::Unix)
                .set_clean_start(true)
                .set_keep_alive(config.keep_alive)
                .set_connection_timeout(timeout)
                .set_max_packet_size(Some(packet))
                .set_outgoing_inflight_upper_limit(rumqttc_inflight)
                .set_last_will(LastWill::new(
                    will_topic,
                    will,
                    V5QoS::AtLeastOnce,
                    true,
                    None,
                ));
            if let Some(user) = &config.username {
                o.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
            }
            let (client, mut el) = rumqttc::v5::AsyncClient::new(o, capacity);
            let task = tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(ev) => {
                            if let Some(ev) = v5_event(ev)
                                && tx.send(Ok(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            // Packets read together with the end of the stream (say a PUBACK
                            // just before the broker closed) are still in rumqttc's buffer.
                            for ev in el.state.events.drain(..).filter_map(v5_event) {
                                let _ = tx.send(Ok(ev)).await;
                            }
                            let _ = tx.send(Err(e.to_string())).await;
                            return;
                        }
                    }
                }
            });
            (Client::V5(client), rx, task)
        } else {
            use rumqttc::{LastWill, MqttOptions, NetworkOptions};
            let mut o = MqttOptions::new(config.client_id.clone(), socket, 0);
            o.set_transport(Transport::Unix)
                .set_clean_session(true)
                .set_keep_alive(config.keep_alive)
                .set_max_packet_size(packet as usize, packet as usize)
                .set_inflight(rumqttc_inflight)
                .set_last_will(LastWill::new(will_topic, will, QoS::AtLeastOnce, true));
            if let Some(user) = &config.username {
                o.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
            }
            let (client, mut el) = rumqttc::AsyncClient::new(o, capacity);
            let mut net = NetworkOptions::new();
            net.set_connection_timeout(timeout);
            el.set_network_options(net);
            let task = tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(ev) => {
                            if let Some(ev) = v4_event(ev)
                                && tx.send(Ok(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            // Packets read together with the end of the stream (say a PUBACK
                            // just before the broker closed) are still in rumqttc's buffer.
                            for ev in el.state.events.drain(..).filter_map(v4_event) {
                                let _ = tx.send(Ok(ev)).await;
                            }
                            let _ = tx.send(Err(e.to_string())).await;
                            return;
                        }
                    }
                }
            });
            (Client::V4(client), rx, task)
        }
    }

    /// Queues a QoS 1 PUBLISH without waiting; fails when rumqttc's request queue is full or
    /// its event loop is gone.
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, V5QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a QoS 1 SUBSCRIBE.
    pub(crate) fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, V5QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a DISCONNECT (a clean end: the broker drops the Last Will).
    pub(crate) fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

fn v4_event(ev: rumqttc::Event) -> Option<Ev> {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    Some(match ev {
        Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
        Event::Incoming(Packet::PubAck(a)) => Ev::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Incoming(Packet::Publish(p)) => Ev::Publish {
            topic: p.topic,
            payload: p.payload.to_vec(),
        },
        Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
            refused: s
                .return_codes
                .iter()
                .any(|c| matches!(c, SubscribeReasonCode::Failure))
                .then(|| "Failure".to_owned()),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Ev::OutgoingPublish(pkid),
        _ => return None,
    })
}

fn v5_event(ev: rumqttc::v5::Event) -> Option<Ev> {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
    Some(match ev {
        Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
        Event::Incoming(Packet::PubAck(a)) => Ev::PubAck {
            pkid: a.pkid,
            refused: match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                other => {
                    // The same PUBLISH will be refused again, whenever it is sent.
                    let permanent = matches!(
                        other,
                        PubAckReason::NotAuthorized
                            | PubAckReason::TopicNameInvalid
                            | PubAckReason::PayloadFormatInvalid
                    );
                    let reason = match a.properties.and_then(|p| p.reason_string) {
                        Some(why) => format!("{other:?}: {why}"),
                        None => format!("{other:?}"),
                    };
                    Some((reason, permanent))
                }
            },
        },
        Event::Incoming(Packet::Publish(p)) => Ev::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
        },
        Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
            refused: s
                .return_codes
                .iter()
                .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}")),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => Ev::OutgoingPublish(pkid),
        _ => return None,
    })
}
