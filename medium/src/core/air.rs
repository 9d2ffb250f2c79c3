//! The airtime model of the [`Medium`]: what the PHY and the MAC of every participant do when it
//! is on ([`MediumConfig::airtime`](super::MediumConfig)).
//!
//! Each participant's radio takes its frames one at a time, in order (at most
//! [`AirtimeConfig::max_queue`] waiting):
//!
//! 1. **Unslotted CSMA/CA** (IEEE 802.15.4-2020 §6.2.5.1): NB = 0, BE = macMinBe; wait a random
//!    number of unit back-off periods in `0..2^BE` (320 µs each), then listen for 8 symbols
//!    (CCA, 128 µs). The channel is busy if a transmission the radio can hear overlaps those
//!    128 µs (or it is sending an ACK itself); then NB += 1, BE = min(BE + 1, macMaxBe) and, past
//!    macMaxCsmaBackoffs, the channel access fails and the frame is dropped.
//! 2. **Transmission**: after the 192 µs turnaround, the frame is on air for 32 µs per byte of
//!    PHY header (6) and PSDU (frame + FCS).
//! 3. **Reception** at its end, per receiver in range: lost if the receiver was itself
//!    transmitting meanwhile (half duplex), or if another transmission it can hear overlapped
//!    it (a **collision** — at that receiver only: a hidden terminal collides at the receiver in
//!    range of both senders, not at the senders), else the link's draw, then delivery after the
//!    link's latency.
//! 4. **Acknowledgement**: a unicast frame with the AR bit is acknowledged by the receiver it is
//!    addressed to, if that one received it: an ACK frame (5 bytes) after the turnaround, on air
//!    like any frame (it can collide too). The sender waits macAckWaitDuration (864 µs) from the
//!    end of its frame; without the ACK it sends again through CSMA/CA, at most
//!    macMaxFrameRetries times, then drops the frame. A receiver whose ACK was lost gets the
//!    retransmission as a duplicate, as on a real channel.

use std::collections::VecDeque;

use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::time::Instant;

use super::{Event, Frame, FrameInfo, Medium, ParticipantId};
use crate::phy::{self, AirtimeConfig};

/// Transmissions are kept this long after their end (longer than a frame plus a CCA), for the
/// overlap checks of later ones.
const KEEP_ON_AIR: std::time::Duration = std::time::Duration::from_millis(10);

/// What one radio's MAC is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacState {
    Idle,
    /// Backing off or sensing the channel.
    Csma {
        nb: u8,
        be: u8,
        retries: u8,
    },
    /// In turnaround or on air.
    Sending {
        retries: u8,
    },
    /// Waiting for the ACK of the frame at the head of the queue.
    AwaitAck {
        retries: u8,
        sequence: u8,
    },
}

/// One radio's MAC: its queue (the head is the frame in progress) and state.
#[derive(Debug)]
pub(crate) struct Mac {
    queue: VecDeque<(Frame, FrameInfo)>,
    state: MacState,
    /// Changes with every step, so events of an earlier step are recognised as stale.
    generation: u64,
}

impl Mac {
    pub(crate) fn new(generation: u64) -> Mac {
        Mac {
            queue: VecDeque::new(),
            state: MacState::Idle,
            generation,
        }
    }
}

/// What a transmission carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    /// An acknowledgement for participant `to`'s frame.
    Ack {
        to: ParticipantId,
    },
}

/// A transmission on a channel.
#[derive(Debug, Clone)]
pub(crate) struct Transmission {
    id: u64,
    from: ParticipantId,
    start: Instant,
    end: Instant,
    frame: Frame,
    info: FrameInfo,
    kind: Kind,
}

impl Transmission {
    fn overlaps(&self, start: Instant, end: Instant) -> bool {
        self.start < end && self.end > start
    }
}

/// The events of the airtime model.
#[derive(Debug)]
pub(crate) enum AirEvent {
    /// A back-off ended: the CCA begins.
    Cca { who: ParticipantId, generation: u64 },
    /// The CCA that began at `began` ends.
    CcaDone {
        who: ParticipantId,
        generation: u64,
        began: Instant,
    },
    /// The turnaround ended: the frame goes on air.
    TxStart { who: ParticipantId, generation: u64 },
    /// Transmission `id` on `channel` ends.
    TxEnd { channel: u8, id: u64 },
    /// The receiver `by` acknowledges `to`'s frame.
    AckStart {
        by: ParticipantId,
        to: ParticipantId,
        channel: u8,
        sequence: u8,
    },
    /// The wait for an ACK is over.
    AckTimeout { who: ParticipantId, generation: u64 },
}

impl Medium {
    fn air(&self) -> AirtimeConfig {
        self.config.airtime.unwrap_or_default()
    }

    /// Queues a frame at its sender's radio (airtime model).
    pub(super) fn offer_airtime(
        &mut self,
        now: Instant,
        from: ParticipantId,
        frame: Frame,
        info: FrameInfo,
    ) {
        let max_queue = self.air().max_queue;
        let Some(p) = self.participant_mut(from) else {
            return;
        };
        if p.mac.queue.len() >= max_queue {
            self.stats.dropped.queue_full += 1;
            return;
        }
        p.mac.queue.push_back((frame, info));
        if p.mac.state == MacState::Idle {
            self.start_csma(now, from, 0);
        }
    }

    /// A fresh CSMA/CA attempt for the frame at the head of `who`'s queue.
    fn start_csma(&mut self, now: Instant, who: ParticipantId, retries: u8) {
        let be = self.air().min_be;
        self.back_off(now, who, 0, be, retries);
    }

    fn back_off(&mut self, now: Instant, who: ParticipantId, nb: u8, be: u8, retries: u8) {
        let periods = self.rng.below(1 << be.min(20));
        let Some(generation) = self.step(who, MacState::Csma { nb, be, retries }) else {
            return;
        };
        self.stats.backoffs += 1;
        let at = now + phy::UNIT_BACKOFF * periods as u32;
        self.schedule(at, Event::Air(AirEvent::Cca { who, generation }));
    }

    /// Moves `who`'s MAC to `state`; its new generation (`None` if `who` is gone).
    fn step(&mut self, who: ParticipantId, state: MacState) -> Option<u64> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let p = self.participant_mut(who)?;
        p.mac.state = state;
        p.mac.generation = generation;
        Some(generation)
    }

    /// `who`'s MAC state if `generation` is still its current one.
    fn current(&self, who: ParticipantId, generation: u64) -> Option<MacState> {
        self.participant(who)
            .filter(|p| p.mac.generation == generation)
            .map(|p| p.mac.state)
    }

    pub(super) fn handle_air(&mut self, now: Instant, event: AirEvent) {
        match event {
            AirEvent::Cca { who, generation } => {
                if self.current(who, generation).is_some() {
                    let done = AirEvent::CcaDone {
                        who,
                        generation,
                        began: now,
                    };
                    self.schedule(now + phy::CCA_TIME, Event::Air(done));
                }
            }
            AirEvent::CcaDone {
                who,
                generation,
                began,
            } => {
                if let Some(MacState::Csma { nb, be, retries }) = self.current(who, generation) {
                    self.cca_done(now, who, began, (nb, be, retries));
                }
            }
            AirEvent::TxStart { who, generation } => {
                if let Some(MacState::Sending { .. }) = self.current(who, generation) {
                    self.tx_start(now, who);
                }
            }
            AirEvent::TxEnd { channel, id } => self.tx_end(now, channel, id),
            AirEvent::AckStart {
                by,
                to,
                channel,
                sequence,
            } => self.ack_start(now, by, to, channel, sequence),
            AirEvent::AckTimeout { who, generation } => {
                if let Some(MacState::AwaitAck { retries, .. }) = self.current(who, generation) {
                    if retries < self.air().max_frame_retries {
                        self.stats.retries += 1;
                        self.start_csma(now, who, retries + 1);
                    } else {
                        self.stats.dropped.no_ack += 1;
                        self.finish_frame(now, who);
                    }
                }
            }
        }
    }

    fn cca_done(&mut self, now: Instant, who: ParticipantId, began: Instant, csma: (u8, u8, u8)) {
        let (nb, be, retries) = csma;
        if !self.channel_busy(who, began, now) {
            if let Some(generation) = self.step(who, MacState::Sending { retries }) {
                let start = AirEvent::TxStart { who, generation };
                self.schedule(now + phy::TURNAROUND, Event::Air(start));
            }
            return;
        }
        self.stats.cca_busy += 1;
        let air = self.air();
        if nb >= air.max_csma_backoffs {
            self.stats.dropped.channel_access += 1;
            self.finish_frame(now, who);
        } else {
            self.back_off(now, who, nb + 1, (be + 1).min(air.max_be), retries);
        }
    }

    /// Whether `who` senses energy on its channel between `from` and `to`: a transmission it
    /// can hear, or its own (an ACK it sends).
    fn channel_busy(&self, who: ParticipantId, from: Instant, to: Instant) -> bool {
        let Some(ch) = self.channel_of(who).and_then(|c| self.channels.get(&c)) else {
            return false;
        };
        ch.on_air
            .iter()
            .filter(|t| t.overlaps(from, to))
            .any(|t| t.from == who || self.link(t.from, who).is_some())
    }

    fn tx_start(&mut self, now: Instant, who: ParticipantId) {
        let Some(p) = self.participant(who) else {
            return;
        };
        let channel = p.channel;
        let Some((frame, info)) = p.mac.queue.front().cloned() else {
            return;
        };
        self.stats.transmissions += 1;
        self.put_on_air(now, who, channel, frame, info, Kind::Data);
    }

    /// Starts a transmission on `channel` and schedules its end.
    fn put_on_air(
        &mut self,
        now: Instant,
        from: ParticipantId,
        channel: u8,
        frame: Frame,
        info: FrameInfo,
        kind: Kind,
    ) {
        let end = now + phy::airtime(frame.psdu_len());
        let ppdu = (phy::PHY_HEADER_LEN + frame.psdu_len()) as u64;
        self.record_on_air(now, channel, from, &frame);
        self.next_transmission += 1;
        let id = self.next_transmission;
        let window_us = self.window_us();
        let ch = self.channels.entry(channel).or_default();
        ch.on_air.retain(|t| t.end + KEEP_ON_AIR >= now);
        // The union of busy time: only what this one adds past what is known to be busy.
        let mut from_us = now.max(ch.busy_until).as_micros();
        let end_us = end.as_micros();
        while from_us < end_us {
            let window = from_us / window_us;
            let upto = ((window + 1) * window_us).min(end_us);
            ch.busy_windows.add(window, upto - from_us);
            ch.busy_us += upto - from_us;
            from_us = upto;
        }
        ch.busy_until = ch.busy_until.max(end);
        ch.air_bytes += ppdu;
        ch.on_air.push(Transmission {
            id,
            from,
            start: now,
            end,
            frame,
            info,
            kind,
        });
        self.stats.air_bytes += ppdu;
        self.schedule(end, Event::Air(AirEvent::TxEnd { channel, id }));
    }

    fn tx_end(&mut self, now: Instant, channel: u8, id: u64) {
        let Some(tx) = self
            .channels
            .get(&channel)
            .and_then(|ch| ch.on_air.iter().find(|t| t.id == id))
            .cloned()
        else {
            return;
        };
        match tx.kind {
            Kind::Data => self.data_end(now, channel, &tx),
            Kind::Ack { to } => {
                let heard = self.link(tx.from, to).is_some_and(|link| {
                    self.clear_at(channel, &tx, to) && self.rng.chance(link.delivery)
                });
                if heard
                    && let Some(MacState::AwaitAck { sequence, .. }) =
                        self.participant(to).map(|p| p.mac.state)
                    && sequence == tx.info.sequence
                {
                    self.stats.acked += 1;
                    self.finish_frame(now, to);
                }
            }
        }
    }

    /// Whether `to` received transmission `tx` free of its own sending and of collisions;
    /// counts the cause when not.
    fn clear_at(&mut self, channel: u8, tx: &Transmission, to: ParticipantId) -> bool {
        let Some(ch) = self.channels.get(&channel) else {
            return false;
        };
        let overlapping = ch
            .on_air
            .iter()
            .filter(|u| u.id != tx.id && u.overlaps(tx.start, tx.end));
        let mut collided = false;
        for u in overlapping {
            if u.from == to {
                self.stats.dropped.receiver_busy += 1;
                return false;
            }
            collided = collided || self.link(u.from, to).is_some();
        }
        if collided {
            self.stats.collided += 1;
        }
        !collided
    }

    fn data_end(&mut self, now: Instant, channel: u8, tx: &Transmission) {
        let receivers = self.receivers(channel, tx.from, tx.info);
        let mut acker = None;
        for &to in &receivers {
            let Some(link) = self.link(tx.from, to) else {
                continue;
            };
            if !self.clear_at(channel, tx, to) {
                continue;
            }
            let got = self.receive(now, tx.from, to, channel, &tx.frame, link);
            let addressed = tx
                .info
                .dst
                .is_some_and(|d| self.participant(to).is_some_and(|p| p.has_addr(d)));
            if got && addressed && acker.is_none() {
                acker = Some(to);
            }
        }
        self.scratch = receivers;
        let retries = match self.participant(tx.from).map(|p| p.mac.state) {
            Some(MacState::Sending { retries }) => retries,
            _ => return, // gone meanwhile
        };
        if !tx.info.ack_request {
            self.finish_frame(now, tx.from);
            return;
        }
        let sequence = tx.info.sequence;
        let Some(generation) = self.step(tx.from, MacState::AwaitAck { retries, sequence }) else {
            return;
        };
        let timeout = AirEvent::AckTimeout {
            who: tx.from,
            generation,
        };
        self.schedule(now + phy::ACK_WAIT, Event::Air(timeout));
        if let Some(by) = acker {
            let ack = AirEvent::AckStart {
                by,
                to: tx.from,
                channel,
                sequence,
            };
            self.schedule(now + phy::TURNAROUND, Event::Air(ack));
        }
    }

    fn ack_start(
        &mut self,
        now: Instant,
        by: ParticipantId,
        to: ParticipantId,
        channel: u8,
        sequence: u8,
    ) {
        if !self.contains(by) {
            return;
        }
        // Frame control 0x0002 (acknowledgement, 2003 frame version), the sequence number.
        let bytes = [0x02, 0x00, sequence];
        let Ok(mac) = MacFrame::new(&bytes) else {
            return;
        };
        let frame = Frame::new(mac);
        let info = FrameInfo::read(mac);
        self.stats.acks += 1;
        self.put_on_air(now, by, channel, frame, info, Kind::Ack { to });
    }

    /// The frame at the head of `who`'s queue is done (sent, acknowledged or dropped): the next
    /// one starts.
    fn finish_frame(&mut self, now: Instant, who: ParticipantId) {
        let more = match self.participant_mut(who) {
            Some(p) => {
                p.mac.queue.pop_front();
                !p.mac.queue.is_empty()
            }
            None => return,
        };
        if more {
            self.start_csma(now, who, 0);
        } else {
            self.step(who, MacState::Idle);
        }
    }
}
