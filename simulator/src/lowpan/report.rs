//! The `lowpan` section of a run's report: per fleet what its devices counted (attachment,
//! frames, drops by cause), and for the whole run what the medium counted (frames and
//! fragments each way, transmissions, the airtime model's back-offs, retries and drops by
//! cause, the busiest second of the channel).

use serde::{Deserialize, Serialize};
use v6iot_medium::hub::Hub;
use v6iot_sdk::coap::App;

use super::air::LinkCounts;
use super::node::LowpanNode;

/// What a 6LoWPAN fleet's devices counted (and, in the total, the medium).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LowpanReport {
    /// Devices attached (a global address from the router's RA) at the end.
    pub attached: u64,
    /// Router solicitations sent.
    pub solicitations: u64,
    /// Router advertisements taken.
    pub advertisements: u64,
    /// Frames the devices sent.
    pub frames_out: u64,
    /// Frames the devices took in.
    pub frames_in: u64,
    /// IPv6 packets the devices sent (more frames than packets: fragmentation).
    pub packets_out: u64,
    /// IPv6 packets the devices took in (whole or reassembled).
    pub packets_in: u64,
    /// Datagrams the devices reassembled from fragments.
    pub reassembled: u64,
    /// Frames the devices dropped, by cause.
    pub dropped: DeviceDrops,
    /// The medium (in the total only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub air: Option<AirReport>,
}

/// Frames and datagrams the devices dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDrops {
    /// Not a 6LoWPAN data frame.
    pub bad_mac: u64,
    /// Of another PAN.
    pub other_pan: u64,
    /// Refused by the adaptation layer (dispatch, IPHC, fragments).
    pub bad_lowpan: u64,
    /// Fragments refused or timed out in reassembly.
    pub fragments: u64,
    /// Malformed IPv6, or for someone else.
    pub bad_ip: u64,
    /// UDP with a wrong checksum.
    pub bad_checksum: u64,
    /// CoAP datagrams with no route (not attached yet).
    pub no_route: u64,
    /// Datagrams whose frames did not fit the device's queue.
    pub queue_full: u64,
    /// Datagrams that could not be compressed or fragmented.
    pub send_errors: u64,
}

impl LowpanReport {
    /// Adds one device's figures.
    pub fn add_node<S: App>(&mut self, node: &LowpanNode<S>) {
        let d = &node.device;
        let s = d.stats();
        let a = d.adaptation().stats();
        let r = d.adaptation().reassembly().stats();
        self.attached += u64::from(d.address().is_some());
        self.solicitations += s.solicitations;
        self.advertisements += s.advertisements;
        self.frames_out += s.frames_out;
        self.frames_in += s.frames_in;
        self.packets_out += a.packets_out;
        self.packets_in += a.packets_in;
        self.reassembled += r.completed;
        let x = &mut self.dropped;
        x.bad_mac += s.bad_mac;
        x.other_pan += s.other_pan;
        x.bad_lowpan += s.bad_lowpan;
        x.fragments += r.timeouts
            + r.duplicates
            + r.overlaps
            + r.bad_fragments
            + r.table_full
            + r.source_limit;
        x.bad_ip += s.bad_ip;
        x.bad_checksum += s.bad_checksum;
        x.no_route += s.no_route;
        x.queue_full += s.queue_full;
        x.send_errors += s.send_errors;
    }

    /// Adds `o` (another fleet's or shard's).
    pub fn add(&mut self, o: &LowpanReport) {
        self.attached += o.attached;
        self.solicitations += o.solicitations;
        self.advertisements += o.advertisements;
        self.frames_out += o.frames_out;
        self.frames_in += o.frames_in;
        self.packets_out += o.packets_out;
        self.packets_in += o.packets_in;
        self.reassembled += o.reassembled;
        let (x, y) = (&mut self.dropped, &o.dropped);
        x.bad_mac += y.bad_mac;
        x.other_pan += y.other_pan;
        x.bad_lowpan += y.bad_lowpan;
        x.fragments += y.fragments;
        x.bad_ip += y.bad_ip;
        x.bad_checksum += y.bad_checksum;
        x.no_route += y.no_route;
        x.queue_full += y.queue_full;
        x.send_errors += y.send_errors;
        if let Some(a) = &o.air {
            self.air.get_or_insert_default().add(a);
        }
    }
}

/// What the medium carried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AirReport {
    /// Frames the devices offered to the medium.
    pub frames_up: u64,
    /// Of those, 6LoWPAN fragments.
    pub fragments_up: u64,
    /// Frames the medium handed to devices.
    pub frames_down: u64,
    /// Of those, fragments.
    pub fragments_down: u64,
    /// Transmissions on air (retries included, ACKs not).
    pub transmissions: u64,
    /// Receptions handed to participants (the router included).
    pub delivered: u64,
    /// Link-layer ACKs sent.
    pub acks: u64,
    /// Frames acknowledged.
    pub acked: u64,
    /// Retransmissions after a missing ACK.
    pub retries: u64,
    /// CSMA/CA back-offs.
    pub backoffs: u64,
    /// Clear-channel assessments that found the channel busy.
    pub cca_busy: u64,
    /// Receptions lost to a collision.
    pub collided: u64,
    /// Bytes on air (PHY headers and FCS included).
    pub air_bytes: u64,
    /// The busiest window's bits per second on air (never above 250 kbit/s with the airtime
    /// model on).
    pub peak_on_air_bps: f64,
    /// Frames or receptions the medium dropped, by cause.
    pub dropped: AirDrops,
    /// ZEP datagrams received from the peer.
    pub zep_in: u64,
    /// ZEP datagrams sent to the peer.
    pub zep_out: u64,
    /// ZEP datagrams the hub refused (not ZEP, malformed, bad FCS, …).
    pub zep_refused: u64,
    /// ZEP datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Frames written to the capture.
    pub captured: u64,
    /// Frames (or the file) the capture failed to write.
    pub capture_errors: u64,
}

/// The medium's drops by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AirDrops {
    /// A radio's queue was full.
    pub queue_full: u64,
    /// CSMA/CA gave up: the channel stayed busy.
    pub channel_access: u64,
    /// No ACK after every retry.
    pub no_ack: u64,
    /// Lost on the link (its loss probability).
    pub link_loss: u64,
    /// The receiver was sending.
    pub receiver_busy: u64,
    /// Too many deliveries waiting.
    pub backlog: u64,
    /// Frames from a member the medium did not know, or that were not MAC frames.
    pub refused: u64,
}

impl AirReport {
    /// What `hub` and its link counted.
    pub fn new(hub: &Hub, link: LinkCounts, captured: u64, capture_errors: u64) -> AirReport {
        let m = hub.medium().stats();
        let h = hub.stats().dropped;
        let peak = hub
            .medium()
            .channel_loads()
            .iter()
            .map(|c| c.peak_on_air_bps())
            .fold(0.0, f64::max);
        AirReport {
            frames_up: link.frames_up,
            fragments_up: link.fragments_up,
            frames_down: link.frames_down,
            fragments_down: link.fragments_down,
            transmissions: m.transmissions,
            delivered: m.delivered,
            acks: m.acks,
            acked: m.acked,
            retries: m.retries,
            backoffs: m.backoffs,
            cca_busy: m.cca_busy,
            collided: m.collided,
            air_bytes: m.air_bytes,
            peak_on_air_bps: peak,
            dropped: AirDrops {
                queue_full: m.dropped.queue_full,
                channel_access: m.dropped.channel_access,
                no_ack: m.dropped.no_ack,
                link_loss: m.dropped.link_loss,
                receiver_busy: m.dropped.receiver_busy,
                backlog: m.dropped.backlog + h.backlog,
                refused: link.refused + m.dropped.unknown_sender,
            },
            zep_in: link.zep_in,
            zep_out: link.zep_out,
            zep_refused: h.not_zep
                + h.version
                + h.not_data
                + h.malformed
                + h.bad_fcs
                + h.table_full,
            send_errors: link.send_errors,
            captured,
            capture_errors,
        }
    }

    /// Adds `o` (another shard's); the peak is the larger.
    pub fn add(&mut self, o: &AirReport) {
        self.frames_up += o.frames_up;
        self.fragments_up += o.fragments_up;
        self.frames_down += o.frames_down;
        self.fragments_down += o.fragments_down;
        self.transmissions += o.transmissions;
        self.delivered += o.delivered;
        self.acks += o.acks;
        self.acked += o.acked;
        self.retries += o.retries;
        self.backoffs += o.backoffs;
        self.cca_busy += o.cca_busy;
        self.collided += o.collided;
        self.air_bytes += o.air_bytes;
        self.peak_on_air_bps = self.peak_on_air_bps.max(o.peak_on_air_bps);
        let (x, y) = (&mut self.dropped, &o.dropped);
        x.queue_full += y.queue_full;
        x.channel_access += y.channel_access;
        x.no_ack += y.no_ack;
        x.link_loss += y.link_loss;
        x.receiver_busy += y.receiver_busy;
        x.backlog += y.backlog;
        x.refused += y.refused;
        self.zep_in += o.zep_in;
        self.zep_out += o.zep_out;
        self.zep_refused += o.zep_refused;
        self.send_errors += o.send_errors;
        self.captured += o.captured;
        self.capture_errors += o.capture_errors;
    }
}
