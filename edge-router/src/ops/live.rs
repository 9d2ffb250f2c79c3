//! The server loop's side of the metrics and the dashboard: what it learns from the cores'
//! events (no extra work per datagram beyond two additions) and copies out at its stats tick.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use v6iot_cloud_bridge::message::NewMessage;

use crate::gateway::{DeviceKeys, Gateway, SecurityEvent};
use crate::ingress::IngressEvent;
use crate::ops::dashboard::Board;
use crate::ops::dashboard::board::senml_value;
use crate::ops::metrics::{EdgeSnapshot, RadioSnapshot};
use crate::registry_db::DeviceState;

/// Loop-owned counters and the shared copies (see the module docs).
#[derive(Debug)]
pub struct Live {
    /// The copy `/metrics` reads.
    pub snapshot: Arc<Mutex<EdgeSnapshot>>,
    /// The dashboard's model, when the dashboard is on.
    pub board: Option<Arc<Mutex<Board>>>,
    /// Set when the stop began.
    pub stopping: Arc<AtomicBool>,
    udp_in: u64,
    udp_out: u64,
    commands_done: BTreeMap<&'static str, u64>,
    devices: (u64, u64, u64),
    radio: Option<RadioSnapshot>,
    /// `{prefix}/{site}/`: telemetry topics start with it.
    topic_head: String,
}

impl Live {
    /// For a site whose topics start with `topic_head` (`v6iot/plant-a/`).
    #[must_use]
    pub fn new(topic_head: String, board: Option<Arc<Mutex<Board>>>) -> Live {
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

    fn with_board(&self, f: impl FnOnce(&mut Board)) {
        if let Some(b) = &self.board {
            f(&mut b.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// An ingress event (registrations for the board, commands ended for the metrics).
    pub fn ingress_event(&mut self, event: &IngressEvent, unix_ms: u64) {
        match event {
            IngressEvent::Registered { endpoint, address } => {
                self.with_board(|b| b.registered(endpoint, *address, unix_ms));
            }
            IngressEvent::AddressChanged { endpoint, to, .. } => {
                self.with_board(|b| b.registered(endpoint, *to, unix_ms));
            }
            IngressEvent::Deregistered { endpoint } => {
                self.with_board(|b| b.state(endpoint, "deregistered"));
            }
            IngressEvent::Expired { endpoint } => {
                self.with_board(|b| b.state(endpoint, "expired"));
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
        let cause = event.cause.to_string();
        self.with_board(|b| b.security(unix_ms, &cause, event.peer, event.device.as_deref()));
    }

    /// A telemetry record on its way to the outbox (read only when the dashboard is on).
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
        if let Some((text, value)) = senml_value(&message.payload) {
            self.with_board(|b| b.telemetry(device, unix_ms, text, value));
        }
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
        self.with_board(|b| {
            for d in devices {
                match d.state {
                    DeviceState::Active => {}
                    DeviceState::Quarantined => b.state(&d.id, "quarantined"),
                    DeviceState::Revoked => b.state(&d.id, "revoked"),
                }
            }
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
