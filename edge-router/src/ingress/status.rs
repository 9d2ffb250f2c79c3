//! A device's status for the platform, a retained message on its status topic: `registered`
//! (also when a queue-mode device wakes), `sleeping` (with its next expected wake-up), `gone`.
//! And the queue-mode devices' listening windows that drive it: an uplink opens one (and lets a
//! command waiting for the device go), a window that closes publishes `sleeping`.

use super::*;

/// A status message's state and what it says besides.
#[derive(Debug, Clone, Copy)]
pub(super) enum Status<'a> {
    /// Registered (again) at `address`; `detail`: the binding, or `awake`.
    Registered {
        address: SocketAddr,
        detail: Option<&'a str>,
    },
    /// A queue-mode device's listening window closed; `next_wake_ms`: its next expected
    /// wake-up (Unix milliseconds) when known.
    Sleeping {
        address: Option<SocketAddr>,
        next_wake_ms: Option<u64>,
    },
    /// No longer registered; `reason`: `deregistered`, `expired`, or why it was removed.
    Gone {
        address: SocketAddr,
        reason: &'a str,
    },
}

impl Status<'_> {
    fn state(&self) -> &'static str {
        match self {
            Status::Registered { .. } => "registered",
            Status::Sleeping { .. } => "sleeping",
            Status::Gone { .. } => "gone",
        }
    }
}

impl Ingress {
    /// Queues a retained status message for `endpoint` (not awaited by anyone): `rid`, `state`,
    /// `address`, `detail`, `t`, and for `sleeping` `next_wake` (Unix seconds or null).
    pub(super) fn status(&mut self, unix_ms: u64, endpoint: &str, status: Status<'_>) {
        let (address, detail) = match status {
            Status::Registered { address, detail } => (Some(address), detail),
            Status::Sleeping { address, .. } => (address, None),
            Status::Gone { address, reason } => (Some(address), Some(reason)),
        };
        let mut body = serde_json::json!({
            "rid": self.record_ids.next().to_string(),
            "state": status.state(),
            "address": address.map(|a| a.to_string()),
            "detail": detail,
            "t": unix_ms as f64 / 1000.0,
        });
        if let (Status::Sleeping { next_wake_ms, .. }, Some(map)) = (status, body.as_object_mut()) {
            let next = next_wake_ms.map(|ms| serde_json::Value::from(ms as f64 / 1000.0));
            map.insert("next_wake".into(), next.unwrap_or(serde_json::Value::Null));
        }
        let topic = self.config.topics.status(endpoint);
        self.appends.push_back(Append {
            ticket: None,
            message: NewMessage {
                topic,
                payload: body.to_string().into_bytes(),
                retain: true,
            },
        });
    }

    /// An uplink: it opens a queue-mode device's listening window (waking it if it slept), and
    /// a command waiting for the device goes out. The device is the authenticated one
    /// (`identity`), or, for a device known by its address only, the one registered at the
    /// address. (The name is copied only for queue-mode devices and when a command waits: this
    /// runs for every request.)
    pub(super) fn uplink_seen(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        identity: Option<&str>,
    ) {
        let sender = match identity {
            Some(device) => Some(device),
            None => self.directory.endpoint_at(peer.remote),
        };
        let Some(reg) = sender.and_then(|e| self.directory.get(e)) else {
            return;
        };
        let queue_mode = reg.binding == Binding::UQ;
        if !queue_mode && !self.downlink.has_waiting(&reg.endpoint) {
            return;
        }
        let (device, address) = (reg.endpoint.clone(), reg.address);
        if queue_mode
            && self
                .sleepers
                .uplink(now, &device, self.config.listen_window)
        {
            let awake = Status::Registered {
                address,
                detail: Some("awake"),
            };
            self.status(unix_ms, &device, awake);
        }
        if self.downlink.has_waiting(&device) {
            self.send_next(now, unix_ms, &device);
        }
    }

    /// Publishes `sleeping` for every queue-mode device whose listening window has closed,
    /// with its next expected wake-up when known.
    pub(super) fn publish_sleepers(&mut self, now: Instant, unix_ms: u64) {
        while let Some((device, next)) = self.sleepers.poll_asleep(now) {
            let address = self.directory.get(&device).map(|r| r.address);
            let next_wake_ms = next.map(|t| {
                let ahead =
                    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
                unix_ms.saturating_add(ahead)
            });
            let sleeping = Status::Sleeping {
                address,
                next_wake_ms,
            };
            self.status(unix_ms, &device, sleeping);
        }
    }

    /// Queue-mode devices as the edge last saw them: (awake, sleeping).
    #[must_use]
    pub fn queue_mode_states(&self) -> (usize, usize) {
        self.sleepers.states()
    }

    /// Whether queue-mode `device` is asleep (its listening window closed).
    pub fn is_asleep(&self, device: &str) -> bool {
        self.sleepers.is_asleep(device)
    }
}
