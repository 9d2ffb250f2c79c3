//! The border router's counters, as plain structs anyone can copy and read (logs, metrics).

use v6iot_sdk::lowpan::AdaptationStats;
use v6iot_sdk::lowpan::frag::ReassemblyStats;

use super::neighbours::NeighbourStats;

/// Why the border router dropped a frame or a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drop {
    /// Not a 6LoWPAN data frame (malformed MAC header, secured, an acknowledgement ...).
    BadMac,
    /// A frame of another PAN.
    OtherPan,
    /// A frame for another link-layer destination.
    NotForUs,
    /// A frame payload the adaptation layer refused (bad dispatch, bad IPHC, a fragment
    /// refused: [`AdaptationStats`] and [`ReassemblyStats`] say which).
    BadLowpan,
    /// Not a well-formed IPv6 packet.
    BadIp,
    /// A source the router does not forward from: outside the PAN's prefix (from the radio),
    /// link-local or unspecified towards another network.
    BadSource,
    /// The hop limit ran out.
    HopLimit,
    /// Multicast the router does not take (not all-nodes, all-routers or its own
    /// solicited-node group).
    Multicast,
    /// Link-local, or otherwise not to be routed.
    NotRoutable,
    /// A UDP datagram for the router with a wrong checksum or length.
    BadChecksum,
    /// UDP for the router to a port other than CoAP's.
    PortClosed,
    /// An ICMPv6 message refused (checksum, hop limit, format) or not for the router.
    Icmp,
    /// No PAN and no host route for the destination (or no TUN for it to go to).
    NoRoute,
    /// The radio queue had no room for all of a datagram's frames: the datagram is dropped
    /// whole.
    TxQueueFull,
    /// The queue to the host (TUN) was full.
    HostQueueFull,
    /// The queue to the gateway (CoAP to the router) was full.
    LocalQueueFull,
    /// A packet that could not be compressed or fragmented (too large, say).
    SendError,
}

/// Drops by cause (see [`Drop`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // one field per `Drop` variant, documented there
pub struct Drops {
    pub bad_mac: u64,
    pub other_pan: u64,
    pub not_for_us: u64,
    pub bad_lowpan: u64,
    pub bad_ip: u64,
    pub bad_source: u64,
    pub hop_limit: u64,
    pub multicast: u64,
    pub not_routable: u64,
    pub bad_checksum: u64,
    pub port_closed: u64,
    pub icmp: u64,
    pub no_route: u64,
    pub tx_queue_full: u64,
    pub host_queue_full: u64,
    pub local_queue_full: u64,
    pub send_errors: u64,
}

impl Drops {
    /// Counts one drop.
    pub fn count(&mut self, why: Drop) {
        let n = match why {
            Drop::BadMac => &mut self.bad_mac,
            Drop::OtherPan => &mut self.other_pan,
            Drop::NotForUs => &mut self.not_for_us,
            Drop::BadLowpan => &mut self.bad_lowpan,
            Drop::BadIp => &mut self.bad_ip,
            Drop::BadSource => &mut self.bad_source,
            Drop::HopLimit => &mut self.hop_limit,
            Drop::Multicast => &mut self.multicast,
            Drop::NotRoutable => &mut self.not_routable,
            Drop::BadChecksum => &mut self.bad_checksum,
            Drop::PortClosed => &mut self.port_closed,
            Drop::Icmp => &mut self.icmp,
            Drop::NoRoute => &mut self.no_route,
            Drop::TxQueueFull => &mut self.tx_queue_full,
            Drop::HostQueueFull => &mut self.host_queue_full,
            Drop::LocalQueueFull => &mut self.local_queue_full,
            Drop::SendError => &mut self.send_errors,
        };
        *n += 1;
    }

    /// All drops.
    #[must_use]
    pub fn total(&self) -> u64 {
        [
            self.bad_mac,
            self.other_pan,
            self.not_for_us,
            self.bad_lowpan,
            self.bad_ip,
            self.bad_source,
            self.hop_limit,
            self.multicast,
            self.not_routable,
            self.bad_checksum,
            self.port_closed,
            self.icmp,
            self.no_route,
            self.tx_queue_full,
            self.host_queue_full,
            self.local_queue_full,
            self.send_errors,
        ]
        .iter()
        .sum()
    }
}

/// What one PAN moved and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PanStats {
    /// Frames taken from the radio.
    pub frames_in: u64,
    /// Frames handed to the radio.
    pub frames_out: u64,
    /// IPv6 packets whole from the radio (at once or reassembled).
    pub packets_in: u64,
    /// IPv6 packets sent onto the radio (one or more frames each).
    pub packets_out: u64,
    /// Packets forwarded from the radio to the host (TUN).
    pub to_host: u64,
    /// Packets forwarded from the host (TUN) onto the radio.
    pub from_host: u64,
    /// CoAP datagrams for the router handed to the gateway.
    pub local_in: u64,
    /// CoAP datagrams from the gateway sent onto the radio.
    pub local_out: u64,
    /// Router solicitations answered.
    pub solicitations: u64,
    /// Router advertisements sent (periodic and answers).
    pub advertisements: u64,
    /// Neighbour advertisements sent.
    pub neighbour_adverts: u64,
    /// Echo replies sent.
    pub echo_replies: u64,
    /// Packets to a device not in the neighbour table, sent to the link-layer address its
    /// interface ID derives from.
    pub derived_next_hop: u64,
    /// Drops by cause.
    pub drops: Drops,
    /// The adaptation layer's counters (dispatch, IPHC, fragments).
    pub adaptation: AdaptationStats,
    /// The reassembly table's counters.
    pub reassembly: ReassemblyStats,
    /// Datagrams being reassembled now.
    pub reassembly_in_progress: usize,
    /// Bytes held by reassembly now.
    pub reassembly_bytes: usize,
    /// Neighbour table entries now.
    pub neighbours: usize,
    /// The neighbour table's counters.
    pub neighbour: NeighbourStats,
}

/// What came from the host (TUN) that no PAN took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Packets taken from the TUN.
    pub packets_in: u64,
    /// Packets handed to the TUN.
    pub packets_out: u64,
    /// Not IPv6, or malformed.
    pub bad_ip: u64,
    /// For no PAN's prefix.
    pub no_route: u64,
    /// Hop limit ran out.
    pub hop_limit: u64,
    /// For the router's own address on a PAN (the host owns that address itself when the
    /// TUN carries it, so it should never come here).
    pub to_router: u64,
    /// CoAP from the gateway for an address in no PAN.
    pub local_no_route: u64,
}

/// The border router's counters: per PAN, and the host side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BorderStats {
    /// One per PAN, in the configuration's order.
    pub pans: Vec<PanStats>,
    /// The host side.
    pub host: HostStats,
}
