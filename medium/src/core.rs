//! [`Medium`]: the simulated 802.15.4 channels, sans-IO on virtual time.
//!
//! Participants hand it MAC frames ([`Medium::handle_frame`]); it hands out what each receiver
//! gets ([`Medium::poll_delivery`]) and what went on air ([`Medium::poll_on_air`], for a
//! capture). Time passes only through `handle_*(now, …)`; [`Medium::poll_timeout`] says when it
//! must be woken. Randomness comes from the configured seed, so a run repeats exactly.
//!
//! A frame reaches every other participant on the sender's channel that is in the sender's
//! range ([`Topology`]) and whose reception takes it: a [`Reception::Promiscuous`] participant
//! (a ZEP peer: a router, a sniffer) takes every frame on its channel; a
//! [`Reception::Filtered`] one takes what an 802.15.4 transceiver's frame filter lets through —
//! frames to its address or to the broadcast address, on its PAN or the broadcast PAN. Each
//! reception draws against the link's delivery probability and arrives after the link's latency.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::time::Instant;

use self::air::{AirEvent, Mac, Transmission};
use super::phy::AirtimeConfig;
use super::rng::Rng;
use super::stats::{ChannelLoad, MediumStats, Windowed};
use super::topology::{LinkModel, Topology};

mod air;

/// A participant of the medium: an index, reused after a participant is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u32);

impl ParticipantId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which frames on its channel a participant takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reception {
    /// Every frame on the channel (ZEP peers: routers, sniffers). Its link-layer address, if
    /// any, is learned from the frames it sends.
    Promiscuous,
    /// What a transceiver's frame filter passes: frames to `addr` or the broadcast address,
    /// on `pan` or the broadcast PAN.
    Filtered {
        /// The participant's PAN.
        pan: PanId,
        /// The participant's address.
        addr: LinkAddr,
    },
}

/// A new participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantConfig {
    /// The channel it sends and listens on.
    pub channel: u8,
    /// Which frames it takes.
    pub reception: Reception,
}

/// How the medium runs.
#[derive(Debug, Clone)]
pub struct MediumConfig {
    /// The seed of every random draw.
    pub seed: u64,
    /// Who hears whom.
    pub topology: Topology,
    /// Deliveries that may wait at once (for their latency, or to be polled); more are dropped
    /// and counted ([`super::stats::Drops::backlog`]).
    pub max_pending: usize,
    /// Whether to keep what goes on air for [`Medium::poll_on_air`] (a capture).
    pub capture: bool,
    /// The window of the load accounting ([`ChannelLoad`]).
    pub window: Duration,
    /// The airtime model (CSMA/CA, collisions, ACKs and retries at 250 kbit/s; see the `air`
    /// module), or `None` for the ideal medium: every frame at once, no contention.
    pub airtime: Option<AirtimeConfig>,
    /// A star: [`Reception::Filtered`] participants (devices) hear only promiscuous ones
    /// (routers, ZEP peers) and not each other, whatever the topology says — a fleet around
    /// its router, where one device's broadcast costs one reception, not one per device.
    pub star: bool,
}

impl Default for MediumConfig {
    fn default() -> Self {
        MediumConfig {
            seed: 1,
            topology: Topology::default(),
            max_pending: 65_536,
            capture: false,
            window: Duration::from_secs(1),
            airtime: None,
            star: false,
        }
    }
}

/// A MAC frame as the medium carries it, without FCS; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Arc<[u8]>);

impl Frame {
    fn new(frame: MacFrame<'_>) -> Frame {
        Frame(Arc::from(frame.as_bytes()))
    }

    /// The frame (no FCS); always `Some`, as a `Frame` is only made from a [`MacFrame`].
    #[must_use]
    pub fn mac(&self) -> Option<MacFrame<'_>> {
        MacFrame::new(&self.0).ok()
    }

    /// The frame's bytes (no FCS).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The PSDU's length on air: the frame and its 2-byte FCS.
    #[must_use]
    pub fn psdu_len(&self) -> usize {
        self.0.len() + v6iot_sdk::radio::FCS_LEN
    }
}

/// A frame handed to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The receiver.
    pub to: ParticipantId,
    /// The sender.
    pub from: ParticipantId,
    /// The channel it came on.
    pub channel: u8,
    /// The frame.
    pub frame: Frame,
    /// The link quality the receiver reports.
    pub lqi: u8,
    /// When it arrived (the end of the transmission plus the link's latency).
    pub at: Instant,
}

/// A frame as it went on air: what a sniffer on the channel captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnAir {
    /// When its transmission began.
    pub at: Instant,
    /// The channel.
    pub channel: u8,
    /// The sender.
    pub from: ParticipantId,
    /// The frame (an acknowledgement is a frame too).
    pub frame: Frame,
}

/// What one participant did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    /// Frames it offered.
    pub offered: u64,
    /// Frames handed to it.
    pub received: u64,
    /// Bytes (MAC frames with FCS) handed to it.
    pub received_bytes: u64,
}

/// The fields of a frame the medium looks at (its MAC header), read once per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    /// The destination; `None` for frames that are not 6LoWPAN data frames (only promiscuous
    /// participants take those).
    pub(crate) dst: Option<LinkAddr>,
    pub(crate) pan: Option<PanId>,
    pub(crate) src: Option<LinkAddr>,
    pub(crate) ack_request: bool,
    pub(crate) sequence: u8,
}

impl FrameInfo {
    pub(crate) fn read(frame: MacFrame<'_>) -> FrameInfo {
        match DataHeader::parse(frame) {
            Ok((h, _)) => FrameInfo {
                dst: Some(h.dst),
                pan: Some(h.pan),
                src: Some(h.src),
                ack_request: h.ack_request && h.dst != LinkAddr::BROADCAST,
                sequence: h.sequence,
            },
            Err(_) => FrameInfo {
                dst: None,
                pan: None,
                src: None,
                ack_request: false,
                sequence: frame.as_bytes().get(2).copied().unwrap_or(0),
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct Participant {
    pub(crate) channel: u8,
    pub(crate) reception: Reception,
    /// Its extended address, as far as known.
    pub(crate) ext: Option<LinkAddr>,
    /// Its short address, as far as known.
    pub(crate) short: Option<LinkAddr>,
    pub(crate) stats: ParticipantStats,
    received: Windowed,
    mac: Mac,
}

impl Participant {
    /// The address the topology knows it by: its extended address, else its short one.
    pub(crate) fn addr(&self) -> Option<LinkAddr> {
        self.ext.or(self.short)
    }

    fn learn(&mut self, a: LinkAddr) {
        match a {
            LinkAddr::Extended(_) => self.ext = Some(a),
            LinkAddr::Short(_) if a != LinkAddr::BROADCAST => self.short = Some(a),
            _ => {}
        }
    }

    pub(crate) fn has_addr(&self, a: LinkAddr) -> bool {
        self.ext == Some(a) || self.short == Some(a)
    }

    /// Whether its frame filter passes a frame with this destination and PAN.
    fn takes(&self, dst: Option<LinkAddr>, pan: Option<PanId>) -> bool {
        match self.reception {
            Reception::Promiscuous => true,
            Reception::Filtered { pan: own, addr } => {
                let pan_ok = pan.is_some_and(|p| p == own || p == PanId::BROADCAST);
                let dst_ok = dst.is_some_and(|d| d == addr || d == LinkAddr::BROADCAST);
                pan_ok && dst_ok
            }
        }
    }
}

/// The participants on one channel, indexed for delivery.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    promiscuous: Vec<ParticipantId>,
    filtered: Vec<ParticipantId>,
    by_addr: HashMap<LinkAddr, Vec<ParticipantId>>,
    pub(crate) air_bytes: u64,
    pub(crate) busy_us: u64,
    pub(crate) busy_windows: Windowed,
    /// Until when the channel is known to be busy (for the busy-time union).
    pub(crate) busy_until: Instant,
    /// Recent transmissions (airtime model), for overlap checks.
    on_air: Vec<Transmission>,
}

#[derive(Debug)]
enum Event {
    Deliver(Delivery),
    Air(AirEvent),
}

/// An event at a time; ties keep the order they were scheduled in.
#[derive(Debug)]
struct Timed {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Why the medium did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The sender is not a participant (never added, or removed).
    #[error("participant {0:?} is not in the medium")]
    UnknownSender(ParticipantId),
}

/// The simulated medium (see the module doc).
#[derive(Debug)]
pub struct Medium {
    config: MediumConfig,
    rng: Rng,
    participants: Vec<Option<Participant>>,
    free: Vec<ParticipantId>,
    channels: BTreeMap<u8, Channel>,
    events: BinaryHeap<Reverse<Timed>>,
    next_seq: u64,
    /// Deliveries scheduled for later (their latency) that count against `max_pending`.
    scheduled: usize,
    ready: VecDeque<Delivery>,
    on_air: VecDeque<OnAir>,
    scratch: Vec<ParticipantId>,
    now: Instant,
    next_generation: u64,
    next_transmission: u64,
    stats: MediumStats,
}

/// Frames on air kept for a capture that is not drained; older ones are dropped first.
const MAX_ON_AIR: usize = 65_536;

impl Medium {
    /// An empty medium.
    #[must_use]
    pub fn new(config: MediumConfig) -> Medium {
        Medium {
            rng: Rng::new(config.seed),
            config,
            participants: Vec::new(),
            free: Vec::new(),
            channels: BTreeMap::new(),
            events: BinaryHeap::new(),
            next_seq: 0,
            scheduled: 0,
            ready: VecDeque::new(),
            on_air: VecDeque::new(),
            scratch: Vec::new(),
            now: Instant::ZERO,
            next_generation: 0,
            next_transmission: 0,
            stats: MediumStats::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MediumConfig {
        &self.config
    }

    /// Adds a participant.
    pub fn add(&mut self, config: ParticipantConfig) -> ParticipantId {
        // A generation no earlier event carries, should the id be a removed one's.
        self.next_generation += 1;
        let mut p = Participant {
            channel: config.channel,
            reception: config.reception,
            ext: None,
            short: None,
            stats: ParticipantStats::default(),
            received: Windowed::default(),
            mac: Mac::new(self.next_generation),
        };
        if let Reception::Filtered { addr, .. } = config.reception {
            p.learn(addr);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.participants.push(None);
                ParticipantId((self.participants.len() - 1) as u32)
            }
        };
        self.index(id, &p);
        if let Some(slot) = self.participants.get_mut(id.index()) {
            *slot = Some(p);
        }
        id
    }

    /// Removes a participant: it sends and receives nothing more, and its id may be reused.
    pub fn remove(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(id.index()).and_then(Option::take) else {
            return;
        };
        self.unindex(id, &p);
        self.free.push(id);
    }

    /// Moves a participant to another channel.
    pub fn set_channel(&mut self, id: ParticipantId, channel: u8) {
        let Some(mut p) = self.participants.get_mut(id.index()).and_then(Option::take) else {
            return;
        };
        if p.channel != channel {
            self.unindex(id, &p);
            p.channel = channel;
            self.index(id, &p);
        }
        if let Some(slot) = self.participants.get_mut(id.index()) {
            *slot = Some(p);
        }
    }

    fn index(&mut self, id: ParticipantId, p: &Participant) {
        let ch = self.channels.entry(p.channel).or_default();
        match p.reception {
            Reception::Promiscuous => ch.promiscuous.push(id),
            Reception::Filtered { addr, .. } => {
                ch.filtered.push(id);
                ch.by_addr.entry(addr).or_default().push(id);
            }
        }
    }

    fn unindex(&mut self, id: ParticipantId, p: &Participant) {
        let Some(ch) = self.channels.get_mut(&p.channel) else {
            return;
        };
        ch.promiscuous.retain(|&x| x != id);
        ch.filtered.retain(|&x| x != id);
        if let Reception::Filtered { addr, .. } = p.reception
            && let Some(ids) = ch.by_addr.get_mut(&addr)
        {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                ch.by_addr.remove(&addr);
            }
        }
    }

    /// Whether `id` is a participant.
    #[must_use]
    pub fn contains(&self, id: ParticipantId) -> bool {
        self.participant(id).is_some()
    }

    pub(crate) fn participant(&self, id: ParticipantId) -> Option<&Participant> {
        self.participants.get(id.index()).and_then(Option::as_ref)
    }

    pub(crate) fn participant_mut(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        self.participants
            .get_mut(id.index())
            .and_then(Option::as_mut)
    }

    /// A participant's channel.
    #[must_use]
    pub fn channel_of(&self, id: ParticipantId) -> Option<u8> {
        self.participant(id).map(|p| p.channel)
    }

    /// A participant's link-layer address (its extended one where known), if known.
    #[must_use]
    pub fn address_of(&self, id: ParticipantId) -> Option<LinkAddr> {
        self.participant(id).and_then(Participant::addr)
    }

    /// What a participant did.
    #[must_use]
    pub fn participant_stats(&self, id: ParticipantId) -> Option<ParticipantStats> {
        self.participant(id).map(|p| p.stats)
    }

    /// How many participants there are.
    #[must_use]
    pub fn participants(&self) -> usize {
        self.participants.iter().flatten().count()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> MediumStats {
        self.stats
    }

    /// The load of every channel in use, by channel number.
    #[must_use]
    pub fn channel_loads(&self) -> Vec<ChannelLoad> {
        self.channels
            .iter()
            .map(|(&channel, ch)| {
                let peak_received_bytes = ch
                    .promiscuous
                    .iter()
                    .chain(&ch.filtered)
                    .filter_map(|&id| self.participant(id))
                    .map(|p| p.received.peak())
                    .max()
                    .unwrap_or(0);
                ChannelLoad {
                    channel,
                    air_bytes: ch.air_bytes,
                    busy_us: ch.busy_us,
                    window_us: self.window_us(),
                    peak_busy_us: ch.busy_windows.peak(),
                    peak_received_bytes,
                }
            })
            .collect()
    }

    pub(crate) fn window_us(&self) -> u64 {
        (self.config.window.as_micros() as u64).max(1)
    }

    /// Takes a frame from participant `from` at `now` and sends it (see the module doc).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: ParticipantId,
        frame: MacFrame<'_>,
    ) -> Result<(), OfferError> {
        self.handle_timeout(now);
        let info = FrameInfo::read(frame);
        let Some(p) = self.participant_mut(from) else {
            self.stats.dropped.unknown_sender += 1;
            return Err(OfferError::UnknownSender(from));
        };
        p.stats.offered += 1;
        if p.reception == Reception::Promiscuous
            && let Some(src) = info.src
        {
            p.learn(src);
        }
        self.stats.offered += 1;
        let frame = Frame::new(frame);
        if self.config.airtime.is_some() {
            self.offer_airtime(now, from, frame, info);
        } else {
            self.transmit_ideal(now, from, frame, info);
        }
        Ok(())
    }

    /// The ideal medium: the frame is on air for no time and reaches every receiver at once
    /// (plus the link's latency), subject only to the link's losses.
    fn transmit_ideal(&mut self, now: Instant, from: ParticipantId, frame: Frame, info: FrameInfo) {
        let Some(channel) = self.channel_of(from) else {
            return;
        };
        self.stats.transmissions += 1;
        self.record_on_air(now, channel, from, &frame);
        let receivers = self.receivers(channel, from, info);
        for &to in &receivers {
            let Some(link) = self.link(from, to) else {
                continue;
            };
            self.receive(now, from, to, channel, &frame, link);
        }
        self.scratch = receivers;
    }

    /// The participants on `channel` whose filter takes a frame with `info`, `from` excluded.
    /// (The vector is the medium's scratch space: hand it back when done.)
    pub(crate) fn receivers(
        &mut self,
        channel: u8,
        from: ParticipantId,
        info: FrameInfo,
    ) -> Vec<ParticipantId> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let Some(ch) = self.channels.get(&channel) else {
            return out;
        };
        out.extend(ch.promiscuous.iter().copied().filter(|&id| id != from));
        let filtered: &[ParticipantId] = match info.dst {
            _ if self.config.star && self.is_filtered(from) => &[],
            None => &[],
            Some(LinkAddr::BROADCAST) => &ch.filtered,
            Some(dst) => ch.by_addr.get(&dst).map_or(&[], Vec::as_slice),
        };
        for &id in filtered {
            if id != from
                && self
                    .participant(id)
                    .is_some_and(|p| p.takes(info.dst, info.pan))
            {
                out.push(id);
            }
        }
        out
    }

    /// The link from one participant to another, if in range.
    pub(crate) fn link(&self, from: ParticipantId, to: ParticipantId) -> Option<LinkModel> {
        let a = self.participant(from)?;
        let b = self.participant(to)?;
        if self.config.star
            && a.reception != Reception::Promiscuous
            && b.reception != Reception::Promiscuous
        {
            return None;
        }
        self.config.topology.link(a.addr(), b.addr())
    }

    fn is_filtered(&self, id: ParticipantId) -> bool {
        self.participant(id)
            .is_some_and(|p| p.reception != Reception::Promiscuous)
    }

    /// One reception at the end of a transmission (at `end`): the link's draw, then the
    /// delivery after its latency.
    pub(crate) fn receive(
        &mut self,
        end: Instant,
        from: ParticipantId,
        to: ParticipantId,
        channel: u8,
        frame: &Frame,
        link: LinkModel,
    ) -> bool {
        if !self.rng.chance(link.delivery) {
            self.stats.dropped.link_loss += 1;
            return false;
        }
        let delivery = Delivery {
            to,
            from,
            channel,
            frame: frame.clone(),
            lqi: link.lqi(),
            at: end + link.latency,
        };
        self.deliver(delivery);
        true
    }

    fn deliver(&mut self, d: Delivery) {
        if self.ready.len() + self.scheduled >= self.config.max_pending {
            self.stats.dropped.backlog += 1;
            return;
        }
        if d.at <= self.now {
            self.hand_over(d);
        } else {
            self.scheduled += 1;
            self.schedule(d.at, Event::Deliver(d));
        }
    }

    /// Counts a delivery in and queues it for its receiver.
    fn hand_over(&mut self, d: Delivery) {
        let window = d.at.as_micros() / self.window_us();
        let bytes = d.frame.psdu_len() as u64;
        let Some(p) = self.participant_mut(d.to) else {
            return; // removed meanwhile
        };
        p.stats.received += 1;
        p.stats.received_bytes += bytes;
        p.received.add(window, bytes);
        self.stats.delivered += 1;
        self.ready.push_back(d);
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.next_seq += 1;
        self.events.push(Reverse(Timed {
            at,
            seq: self.next_seq,
            event,
        }));
    }

    pub(crate) fn record_on_air(
        &mut self,
        at: Instant,
        channel: u8,
        from: ParticipantId,
        frame: &Frame,
    ) {
        if !self.config.capture {
            return;
        }
        if self.on_air.len() >= MAX_ON_AIR {
            self.on_air.pop_front();
        }
        self.on_air.push_back(OnAir {
            at,
            channel,
            from,
            frame: frame.clone(),
        });
    }

    /// Lets time pass to `now`: everything due by then happens, in order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(t)) = self.events.peek() {
            if t.at > now {
                break;
            }
            let Some(Reverse(t)) = self.events.pop() else {
                break;
            };
            self.now = self.now.max(t.at);
            match t.event {
                Event::Deliver(d) => {
                    self.scheduled = self.scheduled.saturating_sub(1);
                    self.hand_over(d);
                }
                Event::Air(e) => self.handle_air(t.at, e),
            }
        }
        self.now = self.now.max(now);
    }

    /// When the medium must be woken next ([`Medium::handle_timeout`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.events.peek().map(|Reverse(t)| t.at)
    }

    /// The next frame handed to a receiver.
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.ready.pop_front()
    }

    /// The next frame that went on air (with [`MediumConfig::capture`]).
    pub fn poll_on_air(&mut self) -> Option<OnAir> {
        self.on_air.pop_front()
    }
}
