//! The 6LoWPAN border router, sans-IO: one or more PANs on IEEE 802.15.4 radios on one side,
//! the host's IPv6 stack (a TUN interface) and the edge's own gateway on the other.
//!
//! ```text
//!  radio frames ─▶ handle_frame ─▶ MAC, 6LoWPAN (IPHC, reassembly) ─▶ IPv6 packet
//!        ├─ for the router: RS → RA, NS → NA, echo → reply; UDP to port 5683 ─▶ poll_local (the gateway)
//!        ├─ for another PAN's prefix (or this one's) ─▶ compressed, fragmented ─▶ poll_transmit
//!        └─ anything else global ─▶ poll_host (TUN)
//!  TUN packets ─▶ handle_host ─▶ the PAN whose /64 holds the destination ─▶ poll_transmit
//!  gateway answers, commands ─▶ send_local ─▶ poll_transmit
//!  timers ─▶ handle_timeout: periodic RAs, reassembly timeouts, neighbour sweeps
//! ```
//!
//! | file | job |
//! |---|---|
//! | [`pan`] | one PAN: its addresses, adaptation layer (contexts, the reassembly table all its devices share), neighbour table, RA, frames in and out |
//! | `local` | packets for the router itself: RS, NS, echo, CoAP |
//! | [`neighbours`] | the bounded neighbour table; how RFC 8505 registration and RPL plug in |
//! | [`ip`] | the fixed IPv6 header, checked once |
//! | [`stats`] | counters: per PAN (drops by cause, reassembly, neighbours) and the host side |
//!
//! # Addresses
//!
//! In each PAN the router has a link-local address and a global one in the PAN's /64, both
//! with the interface ID of its extended address (so IPHC elides them). CoAP to the global
//! (or link-local) address at port 5683 is the edge's own: it goes to the gateway through
//! [`BorderRouter::poll_local`], and the gateway's answers and commands for a device come back
//! through [`BorderRouter::send_local`]. The same global address may also be put on the TUN
//! interface ([`BorderConfig::host_owns_router_address`]): the kernel then routes the /64 to
//! the TUN and host programs reach the router's address too; everything for that address but
//! CoAP to 5683 and ICMPv6 goes to the host.
//!
//! # Bounds
//!
//! Every queue and table is bounded: frames waiting for the radio
//! ([`BorderConfig::max_tx_frames`]; a datagram that does not fit is dropped whole), packets
//! for the host and for the gateway, each PAN's reassembly table (the SDK's [`Reassembly`],
//! keyed by link-layer source, destination, tag and size; limits in total and per source,
//! timeout) and neighbour table. Every drop is counted by cause ([`stats::Drop`]); nothing
//! from the radio or the TUN can panic the router (the `border_radio_input` fuzz target).
//!
//! [`Reassembly`]: v6iot_sdk::lowpan::frag::Reassembly

pub mod ip;
mod local;
pub mod neighbours;
pub mod pan;
pub mod stats;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use v6iot_sdk::lowpan::nd;
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::LinkAddr;

use self::ip::Ipv6Header;
use self::pan::{Arrived, Pan, PanConfig, RadioFrame};
use self::stats::{BorderStats, Drop, HostStats};

/// The hop limit of packets the router originates.
pub const HOP_LIMIT: u8 = 64;

/// How often idle neighbours are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How the border router runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorderConfig {
    /// The PANs, each on its own radio.
    pub pans: Vec<PanConfig>,
    /// The UDP port of the edge's CoAP on the PANs.
    pub coap_port: u16,
    /// Whether a host side (TUN) takes packets for other networks.
    pub host: bool,
    /// Whether the host has the router's global addresses on its TUN interface (then it gets
    /// everything for them but CoAP to `coap_port` and ICMPv6).
    pub host_owns_router_address: bool,
    /// Frames waiting for the radios at most.
    pub max_tx_frames: usize,
    /// Packets waiting for the host at most.
    pub max_host_queue: usize,
    /// CoAP datagrams waiting for the gateway at most.
    pub max_local_queue: usize,
}

impl BorderConfig {
    /// These PANs, CoAP on 5683, a host side that owns the router's addresses, 8192 frames,
    /// 4096 host packets and 4096 gateway datagrams queued at most.
    #[must_use]
    pub fn new(pans: Vec<PanConfig>) -> BorderConfig {
        BorderConfig {
            pans,
            coap_port: 5683,
            host: true,
            host_owns_router_address: true,
            max_tx_frames: 8192,
            max_host_queue: 4096,
            max_local_queue: 4096,
        }
    }
}

/// A CoAP datagram for the router, from a device on a PAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDatagram {
    /// The PAN it came from.
    pub pan: usize,
    /// The device's address and port.
    pub remote: SocketAddrV6,
    /// The router's address it was sent to.
    pub local: Ipv6Addr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Why [`BorderRouter::send_local`] did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The destination is in no PAN's prefix.
    #[error("no PAN for the destination")]
    NoRoute,
    /// The radio queue is full.
    #[error("radio queue full")]
    QueueFull,
    /// The datagram cannot be compressed or fragmented (too large).
    #[error("cannot be sent over 6LoWPAN")]
    Unsendable,
}

/// The border router (see the module doc).
#[derive(Debug)]
pub struct BorderRouter {
    config: BorderConfig,
    pans: Vec<Pan>,
    tx: VecDeque<RadioFrame>,
    host_out: VecDeque<Vec<u8>>,
    local_out: VecDeque<LocalDatagram>,
    next_sweep: Instant,
    host: HostStats,
    scratch: Vec<RadioFrame>,
}

impl BorderRouter {
    /// A router for `config`; its first RAs are due at `now`.
    #[must_use]
    pub fn new(now: Instant, config: BorderConfig) -> BorderRouter {
        let pans = config
            .pans
            .iter()
            .enumerate()
            .map(|(i, c)| Pan::new(now, i, *c))
            .collect();
        BorderRouter {
            config,
            pans,
            tx: VecDeque::new(),
            host_out: VecDeque::new(),
            local_out: VecDeque::new(),
            next_sweep: now + SWEEP_EVERY,
            host: HostStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BorderConfig {
        &self.config
    }

    /// The router's global address on PAN `pan`.
    #[must_use]
    pub fn router_address(&self, pan: usize) -> Option<Ipv6Addr> {
        self.pans.get(pan).map(|p| p.global)
    }

    /// The PAN whose /64 holds `addr`.
    #[must_use]
    pub fn pan_of(&self, addr: Ipv6Addr) -> Option<usize> {
        self.pans.iter().position(|p| p.contains(addr))
    }

    /// The neighbour table of PAN `pan`.
    #[must_use]
    pub fn neighbours(&self, pan: usize) -> Option<&neighbours::NeighbourTable> {
        self.pans.get(pan).map(|p| &p.neighbours)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> BorderStats {
        BorderStats {
            pans: self.pans.iter().map(Pan::stats).collect(),
            host: self.host,
        }
    }

    /// Takes one frame from the radio of PAN `pan` (its FCS already checked and removed).
    pub fn handle_frame(&mut self, now: Instant, pan: usize, frame: MacFrame<'_>) {
        let Some(p) = self.pans.get_mut(pan) else {
            return;
        };
        let Some(Arrived { src, packet }) = p.receive(now, frame) else {
            return;
        };
        self.route_from_radio(now, pan, src, packet);
    }

    fn route_from_radio(
        &mut self,
        now: Instant,
        pan: usize,
        from_ll: LinkAddr,
        mut packet: Vec<u8>,
    ) {
        let Some(p) = self.pans.get_mut(pan) else {
            return;
        };
        let h = match Ipv6Header::parse(&packet) {
            Ok(h) => h,
            Err(_) => return p.count(Drop::BadIp),
        };
        p.glean(now, h.src, from_ll);
        if p.is_for_router(h.dst) {
            return self.local(now, pan, from_ll, &h, &packet);
        }
        if h.dst.is_multicast() {
            return p.count(Drop::Multicast);
        }
        if ip::is_link_local(h.dst) {
            return p.count(Drop::NotRoutable);
        }
        // Ingress filtering (BCP 38): a PAN forwards only its own prefix's packets.
        if !p.contains(h.src) {
            return p.count(Drop::BadSource);
        }
        if h.hop_limit <= 1 {
            return p.count(Drop::HopLimit);
        }
        ip::set_hop_limit(&mut packet, h.hop_limit - 1);
        match self.pan_of(h.dst) {
            Some(to) => {
                // A failure is counted by cause.
                let _counted = self.route_to_radio(to, h.dst, &packet);
            }
            None => self.queue_for_host(pan, packet),
        }
    }

    fn queue_for_host(&mut self, pan: usize, packet: Vec<u8>) {
        let Some(p) = self.pans.get_mut(pan) else {
            return;
        };
        if !self.config.host {
            return p.count(Drop::NoRoute);
        }
        if self.host_out.len() >= self.config.max_host_queue {
            return p.count(Drop::HostQueueFull);
        }
        p.stats.to_host += 1;
        self.host.packets_out += 1;
        self.host_out.push_back(packet);
    }

    /// Compresses and fragments `packet` onto PAN `pan`'s radio, to `dst`'s next hop.
    fn route_to_radio(
        &mut self,
        pan: usize,
        dst: Ipv6Addr,
        packet: &[u8],
    ) -> Result<(), SendError> {
        let Some(p) = self.pans.get_mut(pan) else {
            return Err(SendError::NoRoute);
        };
        let to_ll = p.next_hop(dst);
        self.send_on(pan, to_ll, packet)
    }

    /// Takes one IPv6 packet from the host (TUN).
    pub fn handle_host(&mut self, _now: Instant, packet: &[u8]) {
        self.host.packets_in += 1;
        let Ok(h) = Ipv6Header::parse(packet) else {
            self.host.bad_ip += 1;
            return;
        };
        let Some(pan) = self.pan_of(h.dst) else {
            self.host.no_route += 1;
            return;
        };
        if self.pans.get(pan).is_some_and(|p| p.is_router(h.dst)) {
            self.host.to_router += 1;
            return;
        }
        if h.hop_limit <= 1 {
            self.host.hop_limit += 1;
            return;
        }
        let mut packet = packet.to_vec();
        ip::set_hop_limit(&mut packet, h.hop_limit - 1);
        if self.route_to_radio(pan, h.dst, &packet).is_ok()
            && let Some(p) = self.pans.get_mut(pan)
        {
            p.stats.from_host += 1;
        }
    }

    /// Sends a CoAP datagram of the edge's (an answer, a command) from `local` (a router
    /// address; `None` or another address: the router's global address on the device's PAN)
    /// at the CoAP port to the device at `remote`.
    ///
    /// # Errors
    ///
    /// [`SendError`] when it cannot go (counted too).
    pub fn send_local(
        &mut self,
        local: Option<Ipv6Addr>,
        remote: SocketAddrV6,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let Some(pan) = self.pan_of(*remote.ip()) else {
            self.host.local_no_route += 1;
            return Err(SendError::NoRoute);
        };
        let Some(p) = self.pans.get(pan) else {
            return Err(SendError::NoRoute);
        };
        let from = local.filter(|a| p.is_router(*a)).unwrap_or(p.global);
        let packet = v6iot_sdk::lowpan::udp_packet(
            SocketAddrV6::new(from, self.config.coap_port, 0, 0),
            remote,
            HOP_LIMIT,
            payload,
        );
        self.route_to_radio(pan, *remote.ip(), &packet)?;
        if let Some(p) = self.pans.get_mut(pan) {
            p.stats.local_out += 1;
        }
        Ok(())
    }

    /// The next frame for a radio.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<RadioFrame> {
        self.tx.pop_front()
    }

    /// The next packet for the host (TUN).
    #[must_use]
    pub fn poll_host(&mut self) -> Option<Vec<u8>> {
        self.host_out.pop_front()
    }

    /// The next CoAP datagram for the gateway.
    #[must_use]
    pub fn poll_local(&mut self) -> Option<LocalDatagram> {
        self.local_out.pop_front()
    }

    /// When to call [`BorderRouter::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pans
            .iter()
            .filter_map(Pan::poll_timeout)
            .chain([self.next_sweep])
            .min()
    }

    /// Lets time pass: periodic RAs, reassembly timeouts, neighbour sweeps.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.pans.len() {
            let Some(p) = self.pans.get_mut(i) else {
                continue;
            };
            p.handle_timeout(now);
            if p.next_ra <= now {
                p.next_ra = now + p.config.ra_interval;
                let ra = nd::packet(p.link_local, nd::ALL_NODES, &p.router_advert());
                if self.send_on(i, LinkAddr::BROADCAST, &ra).is_ok()
                    && let Some(p) = self.pans.get_mut(i)
                {
                    p.stats.advertisements += 1;
                }
            }
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SWEEP_EVERY;
            for p in &mut self.pans {
                p.neighbours.sweep(now);
            }
        }
    }
}
