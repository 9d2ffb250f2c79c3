//! The server loop's side of the metrics and the dashboard: what it learns from the cores'
//! events (no extra work per datagram beyond two additions) and copies out at its stats tick.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use v6iot_cloud_bridge::message::NewMessage;

use crate::gateway::{DeviceKeys, Gateway, SecurityEvent};
use crate::ingress::IngressEvent;
use crate::ops::dashboard::BoardHandle;
use crate::ops::dashboard::board::Update;
use crate::ops::metrics::{EdgeSnapshot, RadioSnapshot};
use crate::registry_db::DeviceState;

/// The first 64 bits of `a` (its /64 prefix).
fn upper_64(a: Ipv6Addr) -> u64 {
    (a.to_bits() >> 64) as u64
}

/// Loop-owned counters and the shared copies (see the module docs).
#[derive(Debug)]
pub struct Live {
    /// The copy `/metrics` reads.
    pub snapshot: Arc<Mutex<EdgeSnapshot>>,
    /// The dashboard's model (on its own thread), when the dashboard is on.
    pub board: Option<BoardHandle>,
    /// Set when the stop began.
    pub stopping: Arc<AtomicBool>,
    udp_in: u64,
    udp_out: u64,
    commands_done: BTreeMap<&'static str, u64>,
    devices: (u64, u64, u64),
    radio: Option<RadioSnapshot>,
    /// `{prefix}/{site}/`: telemetry topics start with it.
    topic_head: String,
    /// The border router's PAN prefixes (/64): devices there are shown as `lowpan`.
    lowpan_prefixes: Vec<u64>,
}

impl Live {
    /// For a site whose topics start with `topic_head` (`v6iot/plant-a/`).
    #[must_use]
    pub fn new(topic_head: String, board: Option<BoardHandle>) -> Live {
        Live {
            snapshot: Arc::default(),
            board,
            stopping: Arc::default(),
            udp_in: 0,
            udp_out: 0,
            commands_done: BTreeMap::new(),
            devices: (0, 0, 0),
            radio: None,
            topic_head,
            lowpan_prefixes: Vec::new(),
        }
    }

    /// The border router's PAN prefixes (their first 64 bits count): a device registered at
    /// an address in one of them is shown on the dashboard as `lowpan`, any other as `udp`.
    #[must_use]
    pub fn with_lowpan_prefixes(mut self, prefixes: impl IntoIterator<Item = Ipv6Addr>) -> Live {
        self.lowpan_prefixes = prefixes.into_iter().map(upper_64).collect();
        self
    }

    fn transport(&self, address: SocketAddr) -> &'static str {
        match address.ip() {
            IpAddr::V6(a) if self.lowpan_prefixes.contains(&upper_64(a)) => "lowpan",
            _ => "udp",
        }
    }

    /// Datagrams received.
    pub fn received(&mut self, n: usize) {
        self.udp_in += n as u64;
    }

    /// Datagrams handed to the send thread.
    pub fn sent(&mut self, n: usize) {
        self.udp_out += n as u64;
    }

    /// Hands `update` to the board's thread (never waits; a full queue drops it, counted).
    fn to_board(&self, update: impl FnOnce() -> Update) {
        if let Some(b) = &self.board {
            b.update(update());
        }
    }

    /// An ingress event (registrations for the board, commands ended for the metrics).
    pub fn ingress_event(&mut self, event: &IngressEvent, unix_ms: u64) {
        match event {
            IngressEvent::Registered {
                endpoint,
                address: to,
            }
            | IngressEvent::AddressChanged { endpoint, to, .. } => {
                let transport = self.transport(*to);
                self.to_board(|| Update::Registered {
                    id: endpoint.clone(),
                    address: *to,
                    transport,
                    unix_ms,
                });
            }
            IngressEvent::Deregistered { endpoint } => {
                self.to_board(|| Update::States(vec![(endpoint.clone(), "deregistered")]));
            }
            IngressEvent::Expired { endpoint } => {
                self.to_board(|| Update::States(vec![(endpoint.clone(), "expired")]));
            }
            IngressEvent::CommandDone { status, .. } => {
                let key = match *status {
                    "ok" => "ok",
                    "expired" => "expired",
                    "timeout" => "timeout",
                    "reset" => "reset",
                    _ => "rejected",
                };
                *self.commands_done.entry(key).or_default() += 1;
            }
            _ => {}
        }
    }

    /// A refusal by the gateway.
    pub fn security_event(&mut self, event: &SecurityEvent, unix_ms: u64) {
        self.to_board(|| Update::Security {
            unix_ms,
            cause: event.cause.to_string(),
            peer: event.peer,
            device: event.device.clone(),
        });
    }

    /// A telemetry record on its way to the outbox (read, as SenML on the board's thread,
    /// only when the dashboard is on).
    pub fn telemetry(&mut self, message: &NewMessage, unix_ms: u64) {
        if self.board.is_none() {
            return;
        }
        let Some(device) = message
            .topic
            .strip_prefix(self.topic_head.as_str())
            .and_then(|t| t.strip_suffix("/telemetry"))
        else {
            return;
        };
        self.to_board(|| Update::Record {
            id: device.to_owned(),
            unix_ms,
            payload: message.payload.clone(),
        });
    }

    /// The registry's devices (at start and after each change).
    pub fn devices(&mut self, devices: &[DeviceKeys]) {
        let mut counts = (0, 0, 0);
        for d in devices {
            match d.state {
                DeviceState::Active => counts.0 += 1,
                DeviceState::Quarantined => counts.1 += 1,
                DeviceState::Revoked => counts.2 += 1,
            }
        }
        self.devices = counts;
        self.to_board(|| {
            Update::States(
                devices
                    .iter()
                    .filter_map(|d| match d.state {
                        DeviceState::Active => None,
                        DeviceState::Quarantined => Some((d.id.clone(), "quarantined")),
                        DeviceState::Revoked => Some((d.id.clone(), "revoked")),
                    })
                    .collect(),
            )
        });
    }

    /// The border router's counters as of now (the next [`Live::tick`] copies them out).
    pub fn radio(&mut self, radio: RadioSnapshot) {
        self.radio = Some(radio);
    }

    /// The stop began.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Copies the cores' counters out for `/metrics` (at the loop's stats tick).
    pub fn tick(&self, gateway: &Gateway) {
        let ingress = gateway.ingress();
        let (always_on, queue_mode) = ingress.directory().count_by_binding();
        let registrations = (always_on as u64, queue_mode as u64);
        let snapshot = EdgeSnapshot {
            udp_in: self.udp_in,
            udp_out: self.udp_out,
            ingress: *ingress.stats(),
            gateway: *gateway.stats(),
            limits: gateway.limit_stats(),
            downlink: *ingress.command_stats(),
            commands_pending: ingress.pending_commands() as u64,
            commands_done: self.commands_done.clone(),
            requests: ingress.request_counts().clone(),
            registrations,
            queue_mode: {
                let (awake, sleeping) = ingress.queue_mode_states();
                (awake as u64, sleeping as u64)
            },
            devices: self.devices,
            stopping: self.stopping.load(Ordering::Relaxed),
            radio: self.radio.clone(),
        };
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::ops::dashboard::board::Query;
    use crate::ops::dashboard::{Board, BoardHandle};

    /// A device registered in a PAN's prefix shows as `lowpan`, one elsewhere as `udp`, and
    /// a move out of the PAN turns it to `udp`.
    #[test]
    fn the_board_shows_the_transport_by_the_pan_prefixes() {
        let board = BoardHandle::spawn(Board::new(10), 16).unwrap();
        let pan: Ipv6Addr = "2001:db8:1200:305::".parse().unwrap();
        let mut live =
            Live::new("v6iot/t/".into(), Some(board.clone())).with_lowpan_prefixes([pan]);
        let at = |a: &str| SocketAddr::new(a.parse().unwrap(), 5683);
        for (id, a) in [
            ("radio", "2001:db8:1200:305::7"),
            ("cell", "2001:db8:1200:306::7"),
        ] {
            live.ingress_event(
                &IngressEvent::Registered {
                    endpoint: id.into(),
                    address: at(a),
                },
                1,
            );
        }
        let rows = || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let q = Query {
                limit: 10,
                ..Query::default()
            };
            let page = rt.block_on(board.read(move |b| b.query(&q))).unwrap();
            page.rows
                .into_iter()
                .map(|r| (r.id, r.transport))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(),
            [("cell".to_owned(), "udp"), ("radio".to_owned(), "lowpan")]
        );
        live.ingress_event(
            &IngressEvent::AddressChanged {
                endpoint: "radio".into(),
                from: at("2001:db8:1200:305::7"),
                to: at("2001:db8:1200:307::7"),
            },
            2,
        );
        assert_eq!(rows()[1], ("radio".to_owned(), "udp"));
    }
}
