//! Commands from the platform through the ingress: queued ([`Downlink`]), journalled, sent when
//! the device is reachable, and the device's responses matched to them.

use super::*;

impl Ingress {
    /// A response-class message: the end of a command or observe request of the edge, a
    /// retransmission of one, or a notification.
    pub(super) fn response(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) {
        let (peer, message_id) = (msg.peer, msg.header.message_id);
        match self
            .downlink
            .handle_response(peer.remote, msg.packet, msg.identity)
        {
            Some((device, needs_ack)) => {
                if needs_ack {
                    let ack = reply::empty(MessageType::Acknowledgement, message_id);
                    self.send(peer, ack.clone());
                    self.remember(now, peer, message_id, Reply::Sent(ack.into_boxed_slice()));
                }
                self.send_next(now, unix_ms, &device);
            }
            None if self.repeat(peer, message_id, msg.confirmable()) => {}
            None if self.notification(now, unix_ms, msg) => {}
            None => self.unexpected(msg),
        }
        self.pump_downlink(unix_ms);
    }

    /// An empty ACK or Reset: the end of a Confirmable command's exchange (after a Reset the
    /// device's next command may go).
    pub(super) fn empty_reply(&mut self, now: Instant, unix_ms: u64, msg: Incoming<'_>) {
        let reset = msg.header.kind == MessageType::Reset;
        let message_id = msg.header.message_id;
        match self
            .downlink
            .handle_empty(now, msg.peer.remote, message_id, reset)
        {
            Some(device) if reset => self.send_next(now, unix_ms, &device),
            Some(_) => {}
            None => self.stats.unexpected += 1,
        }
        self.pump_downlink(unix_ms);
    }

    /// Takes a command from the platform for one device.
    pub fn handle_command(&mut self, now: Instant, unix_ms: u64, command: DownlinkCommand) {
        let reach = self.reachability(&command.device);
        let message_id = self.take_message_id();
        self.downlink.command(
            now,
            unix_ms,
            command,
            reach,
            self.config.listen_window,
            message_id,
        );
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        self.pump_downlink(unix_ms);
    }

    /// Puts back a queued command from the journal after a restart.
    pub fn restore_command(&mut self, command: DownlinkCommand) {
        self.downlink.restore(command);
    }

    /// The next batch of the command journal to persist (see [`downlink::JournalBatch`]); one
    /// at a time, until [`Ingress::handle_journal_written`] reports it.
    #[must_use]
    pub fn poll_journal(&mut self) -> Option<JournalBatch> {
        self.downlink.poll_journal()
    }

    /// What became of journal batch `id`: commands it made durable may go out now; those of a
    /// failed batch get an error result.
    pub fn handle_journal_written(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: u64,
        outcome: JournalWritten,
    ) {
        for device in self.downlink.journal_written(id, outcome) {
            self.send_next(now, unix_ms, &device);
        }
        self.pump_downlink(unix_ms);
    }

    /// The downlink's counters (commands accepted and refused by cause, journal batches).
    pub fn command_stats(&self) -> &DownlinkStats {
        self.downlink.stats()
    }

    /// Lines the command journal holds, and the journaled commands not yet done.
    pub fn journal_sizes(&self) -> (u64, u64) {
        self.downlink.journal_sizes()
    }

    /// Commands queued or in flight.
    pub fn pending_commands(&self) -> usize {
        self.downlink.pending()
    }

    pub(super) fn reachability(&self, device: &str) -> Option<downlink::Reachability> {
        self.directory.get(device).map(|r| downlink::Reachability {
            address: r.peer(),
            queue_mode: r.binding == Binding::UQ,
            last_uplink: r.last_uplink,
        })
    }

    pub(super) fn send_next(&mut self, now: Instant, unix_ms: u64, device: &str) {
        let reach = self.reachability(device);
        let message_id = self.take_message_id();
        let window = self.config.listen_window;
        self.downlink
            .try_send(now, unix_ms, device, reach, window, message_id);
    }

    /// Moves the downlink's datagrams out and its results into the outbox.
    pub(super) fn pump_downlink(&mut self, unix_ms: u64) {
        while let Some(t) = self.downlink.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(result) = self.downlink.poll_result() {
            if let Some(rest) = result.req.strip_prefix(observe::OBSERVE_REQ) {
                let rest = rest.to_owned();
                self.observation_started(unix_ms, &rest, result);
                continue;
            }
            self.event(IngressEvent::CommandDone {
                endpoint: result.device.clone(),
                req: result.req.clone(),
                status: result.status,
                code: result.code.clone(),
            });
            let rid = self.record_ids.next();
            let topic = self
                .config
                .topics
                .command_result(&result.device, &result.req);
            self.appends.push_back(Append {
                ticket: None,
                message: NewMessage {
                    topic,
                    payload: result.to_json(rid),
                    retain: false,
                },
            });
        }
    }
}
