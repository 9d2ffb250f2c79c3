//! Notifications: the edge's own observations of device resources (RFC 7641), their
//! notifications stored as telemetry and acknowledged once durable.

use super::*;

impl Ingress {
    /// The answer to the edge's own observe request: keep the observation and store the
    /// current value it carried.
    pub(super) fn observation_started(
        &mut self,
        unix_ms: u64,
        req_rest: &str,
        result: CommandResult,
    ) {
        let path = req_rest
            .split_once(':')
            .map_or(req_rest, |(_, p)| p)
            .to_owned();
        let (true, Some("2.05"), Some(token), Some(reach)) = (
            result.observing,
            result.code.as_deref(),
            result.token,
            self.reachability(&result.device),
        ) else {
            self.event(IngressEvent::Refused {
                peer: self
                    .reachability(&result.device)
                    .map_or_else(|| SocketAddr::from(([0u16; 8], 0)), |r| r.address.remote),
                code: result.code.unwrap_or_else(|| result.status.to_owned()),
                reason: format!("observing {path} failed"),
            });
            return;
        };
        self.observations.insert(
            token,
            observe::Observed {
                device: result.device.clone(),
                path,
                peer: reach.address.remote,
            },
        );
        let id = self.record_ids.next();
        let format = result.content_format.map(u32::from);
        if let Ok(payload) = telemetry::normalise(format, &result.payload, unix_ms, id) {
            let topic = self.config.topics.telemetry(&result.device);
            self.appends.push_back(Append {
                ticket: None,
                message: NewMessage {
                    topic,
                    payload,
                    retain: false,
                },
            });
        }
    }

    /// A notification's record was stored (ACK it) or not (stay silent and forget its message ID,
    /// so the device's retransmission is taken afresh).
    pub(super) fn notification_stored(&mut self, w: Waiting, result: AppendResult) {
        let list = self.recent.get_mut(&w.peer.remote);
        if result == AppendResult::Stored {
            self.stats.telemetry_stored += 1;
            let ack = reply::empty(MessageType::Acknowledgement, w.message_id);
            if w.confirmable {
                self.transmits
                    .push_back(Outgoing::answer(w.peer, ack.clone()));
            }
            if let Some(r) = list.and_then(|l| l.find_mut(w.message_id)) {
                r.reply = Reply::repeating(w.confirmable, ack);
            }
        } else {
            self.stats.telemetry_busy += 1;
            if let Some(l) = list {
                l.retain(|id, _| id != w.message_id);
            }
        }
    }

    /// A notification of a resource the edge observes: store it as telemetry. Known by its
    /// token, and by the device it verified as, or else by its address.
    pub(super) fn notification(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) -> bool {
        let Incoming {
            peer,
            packet,
            identity,
            ..
        } = msg;
        let Some(obs) = self
            .observations
            .get(packet.get_token(), peer.remote, identity)
        else {
            return false;
        };
        let device = obs.device.clone();
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let format = wire::uint_option(packet, CoapOption::ContentFormat, 2)
            .ok()
            .flatten();
        let id = self.record_ids.next();
        match telemetry::normalise(format, &packet.payload, unix_ms, id) {
            Ok(payload) => {
                let ticket = self.store_telemetry(&device, payload);
                self.waiting.insert(ticket, Waiting::of(msg, true));
                self.remember(now, peer, msg.header.message_id, Reply::Pending);
            }
            Err(refusal) => {
                // Unusable data: a Reset ends the observation (RFC 7641 §3.6).
                self.stats.refused += 1;
                self.event(IngressEvent::Refused {
                    peer: peer.remote,
                    code: "RST".into(),
                    reason: refusal.reason,
                });
                if confirmable {
                    self.send(
                        peer,
                        reply::empty(MessageType::Reset, packet.header.message_id),
                    );
                }
            }
        }
        true
    }

    /// Starts observing the observable SenML resources in `links` (always-on devices only).
    pub(super) fn observe_resources(
        &mut self,
        now: Instant,
        unix_ms: u64,
        endpoint: &str,
        links: &str,
        binding: Binding,
    ) {
        self.observations.forget(endpoint);
        if binding != Binding::U {
            return;
        }
        for (path, accept) in observe::observable_senml(links) {
            self.next_observation += 1;
            let cmd = DownlinkCommand {
                device: endpoint.to_owned(),
                req: format!("{}{}:{path}", observe::OBSERVE_REQ, self.next_observation),
                method: "GET".into(),
                path,
                payload: Vec::new(),
                content_format: None,
                expires_unix_ms: unix_ms + 60_000,
                confirmable: true,
                observe: true,
                accept: Some(accept),
            };
            let reach = self.reachability(endpoint);
            let message_id = self.take_message_id();
            self.downlink.command(
                now,
                unix_ms,
                cmd,
                reach,
                self.config.listen_window,
                message_id,
            );
        }
    }

    /// Observations the edge holds.
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }
}
