//! A 6LoWPAN device: the CoAP device core ([`coap::Device`]) on an IEEE 802.15.4 radio.
//!
//! It attaches to a PAN by soliciting a router (RS to `ff02::2`, repeated with back-off until a
//! Router Advertisement comes), takes the global /64 prefix (PIO with the A flag) and the
//! 6LoWPAN contexts (6CO) from the RA, forms its global address from that prefix and the
//! interface ID of its own extended address (the address plan sets the extended address from
//! the planned IID, so the address is the planned one and IPHC elides it on air), and then runs
//! the device core unchanged: registration, telemetry, commands, Observe, OSCORE. Datagrams
//! larger than a frame are fragmented and reassembled (RFC 4944). It answers neighbour
//! solicitations for its addresses and echo requests; it refreshes the router before the
//! shortest lifetime of the RA runs out and detaches (address and contexts gone, soliciting
//! again) if none comes.
//!
//! # Why not smoltcp's `Interface`
//!
//! smoltcp 0.14's `Interface` (`Medium::Ieee802154`, SLAAC) was considered and not used. Its
//! compressor ignores contexts, so every global address would go inline (16 bytes each way);
//! it ignores the 6CO; its reassembly is one compile-time buffer and its fragmentation one
//! datagram at a time; it keeps time in its own `Instant` and hands datagrams to sockets, while
//! the CoAP core wants `(peer, bytes)` with our time. What a device needs on top of
//! `smoltcp::wire` — RS/RA/NS/NA, one UDP port, ICMPv6 echo — is small, so this module is that
//! thin layer, on our stateful [`iphc`](super::iphc), [`frag`](super::frag) and
//! [`nd`]. Sans-IO: frames in with [`LowpanDevice::handle_frame`], out with
//! [`LowpanDevice::poll_transmit`], time through `handle_timeout`/`poll_timeout`.
//!
//! # Routing
//!
//! Everything that is not link-local goes to the router's link-layer address (6LoWPAN route-over,
//! RFC 6775); link-local unicast goes to the link-layer address its IID was derived from;
//! multicast to the broadcast address. No neighbour cache is needed.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use core::time::Duration;

use smoltcp::wire::Ipv6Packet;

use super::context::Context;
use super::frag::ReassemblyConfig;
use super::iphc::{
    CidByte, CompressOptions, IPV6_HEADER_LEN, LinkAddrs, UDP_HEADER_LEN, upper_layer_checksum,
};
use super::nd::{self, ALL_NODES, ALL_ROUTERS, Icmpv6, RouterAdvert};
use super::{Adaptation, PROTO_UDP};
use crate::addr::{Eui64, InterfaceId, link_local};
use crate::coap::{self, App};
use crate::radio::mac::{DataHeader, LinkAddr, PanId};
use crate::radio::{MAX_MAC_FRAME, MacFrame};
use crate::time::Instant;
use crate::uplink::UplinkConfig;

const HOP_LIMIT: u8 = 64;
/// Network events kept for the application; older ones are dropped when it does not poll.
const MAX_EVENTS: usize = 16;

/// How a [`LowpanDevice`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowpanConfig {
    /// The PAN it joins; frames of other PANs are ignored.
    pub pan: PanId,
    /// Its extended address (from the address plan: the planned IID with the U/L bit flipped).
    pub eui64: Eui64,
    /// The UDP port of its CoAP endpoint.
    pub coap_port: u16,
    /// When IPHC sends the CID byte ([`CidByte::Always`] for routers built on smoltcp).
    pub cid_byte: CidByte,
    /// Reassembly bounds.
    pub reassembly: ReassemblyConfig,
    /// The first wait between router solicitations; it doubles up to `max_rs_interval`.
    pub rs_interval: Duration,
    /// The longest wait between router solicitations.
    pub max_rs_interval: Duration,
    /// Frames waiting to be sent; a datagram whose frames do not fit is dropped and counted.
    pub max_queued_frames: usize,
}

impl LowpanConfig {
    /// Defaults: CoAP on 5683, CID byte only for contexts ≠ 0, the device reassembly bounds,
    /// solicitations after 4 s doubling to 60 s, 64 frames queued.
    #[must_use]
    pub fn new(pan: PanId, eui64: Eui64) -> LowpanConfig {
        LowpanConfig {
            pan,
            eui64,
            coap_port: 5683,
            cid_byte: CidByte::WhenNonZero,
            reassembly: ReassemblyConfig::DEVICE,
            rs_interval: Duration::from_secs(4),
            max_rs_interval: Duration::from_secs(60),
            max_queued_frames: 64,
        }
    }
}

/// Where the device's uplink (registration and reports) goes once it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkTarget {
    /// The router itself: its address in the PAN's prefix (the prefix + the IID of the link-local
    /// address its RA came from), at this port.
    Router {
        /// The CoAP port.
        port: u16,
    },
    /// A fixed address.
    Fixed(SocketAddr),
}

/// The router the device is attached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The device's global address.
    pub address: Ipv6Addr,
    /// The /64 prefix.
    pub prefix: Ipv6Addr,
    /// The router's link-local address.
    pub router: Ipv6Addr,
    /// The router's address in the prefix.
    pub router_global: Ipv6Addr,
    /// The router's link-layer address.
    pub router_ll: LinkAddr,
    /// The PAN's MTU, if the router said.
    pub mtu: Option<u32>,
}

/// What the device tells its application about the network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LowpanEvent {
    /// Attached (or re-attached with another prefix or router).
    Attached(Attachment),
    /// The router's lifetime ran out: no global address until the next RA.
    Detached,
}

/// Counters of a [`LowpanDevice`], drops by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowpanStats {
    /// Frames taken in (for us, parsed).
    pub frames_in: u64,
    /// Frames handed out.
    pub frames_out: u64,
    /// Frames not for this device (another destination on the shared channel).
    pub not_for_us: u64,
    /// Frames of another PAN (the broadcast PAN `0xffff` is taken).
    pub other_pan: u64,
    /// Frames that are not 6LoWPAN data frames (malformed, secured, acknowledgements...).
    pub bad_mac: u64,
    /// Frame payloads the adaptation layer refused (its own counters say why).
    pub bad_lowpan: u64,
    /// IPv6 packets malformed, or addressed to someone else.
    pub bad_ip: u64,
    /// UDP datagrams with a wrong checksum.
    pub bad_checksum: u64,
    /// UDP datagrams to a port other than CoAP's.
    pub port_closed: u64,
    /// ICMPv6 messages refused or not handled.
    pub bad_icmp: u64,
    /// Router advertisements without a usable prefix, or with router lifetime 0.
    pub ignored_ra: u64,
    /// Router solicitations sent.
    pub solicitations: u64,
    /// Router advertisements taken.
    pub advertisements: u64,
    /// CoAP datagrams dropped: no route yet (not attached) or not IPv6.
    pub no_route: u64,
    /// Datagrams dropped because the frame queue was full.
    pub queue_full: u64,
    /// Datagrams that could not be compressed or fragmented.
    pub send_errors: u64,
}

/// A frame to send: a MAC frame without FCS.
#[derive(Clone, Copy)]
pub struct OutFrame {
    buf: [u8; MAX_MAC_FRAME],
    len: usize,
}

impl core::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutFrame").field("len", &self.len).finish()
    }
}

impl OutFrame {
    /// The frame.
    #[must_use]
    pub fn frame(&self) -> MacFrame<'_> {
        // Built by `DataHeader::emit`: a header of at least 3 bytes, at most MAX_MAC_FRAME.
        MacFrame::from_built(self.buf.get(..self.len).unwrap_or_default())
    }

    /// The frame's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Detached {
        next_rs: Instant,
        interval: Duration,
    },
    Attached {
        at: Attachment,
        refresh: Instant,
        expires: Instant,
    },
}

/// A 6LoWPAN device running a CoAP device core (see the module doc).
pub struct LowpanDevice<S> {
    config: LowpanConfig,
    coap: coap::Device<S>,
    adaptation: Adaptation<Instant>,
    state: State,
    uplink: Option<(UplinkConfig, UplinkTarget)>,
    link_local: Ipv6Addr,
    sequence: u8,
    tx: VecDeque<OutFrame>,
    events: VecDeque<LowpanEvent>,
    stats: LowpanStats,
}

impl<S> core::fmt::Debug for LowpanDevice<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LowpanDevice")
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: App> LowpanDevice<S> {
    /// A device running `coap` on the PAN of `config`; its first router solicitation is due at
    /// `now`.
    pub fn new(now: Instant, config: LowpanConfig, coap: coap::Device<S>) -> LowpanDevice<S> {
        let options = CompressOptions {
            cid_byte: config.cid_byte,
        };
        // The datagram tags start from the extended address, so two devices rarely collide.
        let [.., a, b] = config.eui64.0;
        LowpanDevice {
            adaptation: Adaptation::new(config.reassembly, options, u16::from_be_bytes([a, b])),
            link_local: link_local(InterfaceId::from_eui64(config.eui64)),
            state: State::Detached {
                next_rs: now,
                interval: config.rs_interval,
            },
            config,
            coap,
            uplink: None,
            sequence: 0,
            tx: VecDeque::new(),
            events: VecDeque::new(),
            stats: LowpanStats::default(),
        }
    }

    /// Registers and reports through `config` once attached, to `target` (the server address
    /// in `config` is replaced by the target's). Reports the application makes before that
    /// are queued (up to `config.max_queued_reports`) and sent once registered; a new
    /// attachment registers anew and keeps the queue.
    #[must_use]
    pub fn with_uplink(mut self, config: UplinkConfig, target: UplinkTarget) -> Self {
        self.coap.hold_reports(config.max_queued_reports);
        self.uplink = Some((config, target));
        self
    }

    fn ll(&self) -> LinkAddr {
        LinkAddr::Extended(self.config.eui64.0)
    }

    /// The link-local address.
    #[must_use]
    pub fn link_local(&self) -> Ipv6Addr {
        self.link_local
    }

    /// The attachment, if attached.
    #[must_use]
    pub fn attachment(&self) -> Option<&Attachment> {
        match &self.state {
            State::Attached { at, .. } => Some(at),
            State::Detached { .. } => None,
        }
    }

    /// The global address, once attached.
    #[must_use]
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.attachment().map(|a| a.address)
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> LowpanStats {
        self.stats
    }

    /// The adaptation layer (contexts in force, reassembly, its counters).
    #[must_use]
    pub fn adaptation(&self) -> &Adaptation<Instant> {
        &self.adaptation
    }

    /// The CoAP device core.
    #[must_use]
    pub fn coap(&self) -> &coap::Device<S> {
        &self.coap
    }

    /// The CoAP device core, mutably (reports, events, OSCORE state to persist). Call
    /// [`LowpanDevice::flush`] after changing it, so what it wants to send goes out.
    pub fn coap_mut(&mut self) -> &mut coap::Device<S> {
        &mut self.coap
    }

    /// The next network event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LowpanEvent> {
        self.events.pop_front()
    }

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        self.tx.pop_front()
    }

    /// When to call [`LowpanDevice::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match self.state {
            State::Detached { next_rs, .. } => next_rs,
            State::Attached {
                refresh, expires, ..
            } => refresh.min(expires),
        };
        [
            Some(own),
            self.coap.poll_timeout(),
            self.adaptation.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Lets time pass: solicitations, lifetimes, reassembly timeouts, the CoAP core's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Detached { next_rs, interval } if next_rs <= now => {
                self.solicit(ALL_ROUTERS, LinkAddr::BROADCAST);
                let next = (interval * 2).min(self.config.max_rs_interval);
                self.state = State::Detached {
                    next_rs: now + interval,
                    interval: next,
                };
            }
            State::Attached { expires, .. } if expires <= now => {
                self.detach(now);
            }
            State::Attached {
                at,
                refresh,
                expires,
            } if refresh <= now => {
                self.solicit(at.router, at.router_ll);
                // Ask again halfway to the end if no answer comes.
                let left = expires.saturating_duration_since(now);
                self.state = State::Attached {
                    at,
                    refresh: now + (left / 2).max(Duration::from_secs(1)),
                    expires,
                };
            }
            _ => {}
        }
        self.adaptation.handle_timeout(now);
        if self.coap.poll_timeout().is_some_and(|t| t <= now) {
            self.coap.handle_timeout(now);
        }
        self.flush();
    }

    fn detach(&mut self, now: Instant) {
        self.adaptation.contexts = super::context::ContextTable::new();
        self.push_event(LowpanEvent::Detached);
        self.solicit(ALL_ROUTERS, LinkAddr::BROADCAST);
        self.state = State::Detached {
            next_rs: now + self.config.rs_interval,
            interval: (self.config.rs_interval * 2).min(self.config.max_rs_interval),
        };
    }

    fn push_event(&mut self, event: LowpanEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn solicit(&mut self, to: Ipv6Addr, to_ll: LinkAddr) {
        let rs = Icmpv6::RouterSolicit {
            source_ll: Some(self.ll()),
        };
        let packet = nd::packet(self.link_local, to, &rs);
        self.stats.solicitations += 1;
        self.send_packet(&packet, to_ll);
    }

    /// Takes one frame from the radio.
    pub fn handle_frame(&mut self, now: Instant, frame: MacFrame<'_>) {
        let Ok((header, payload)) = DataHeader::parse(frame) else {
            self.stats.bad_mac += 1;
            return;
        };
        if header.pan != self.config.pan && header.pan != PanId(0xffff) {
            self.stats.other_pan += 1;
            return;
        }
        if header.dst != self.ll() && header.dst != LinkAddr::BROADCAST {
            self.stats.not_for_us += 1;
            return;
        }
        self.stats.frames_in += 1;
        let ll = LinkAddrs {
            src: header.src,
            dst: header.dst,
        };
        match self.adaptation.receive(now, ll, payload) {
            Ok(Some(packet)) => self.handle_packet(now, header.src, &packet),
            Ok(None) => {}
            Err(_) => self.stats.bad_lowpan += 1,
        }
        self.flush();
    }

    fn is_mine(&self, dst: Ipv6Addr) -> bool {
        let iid = InterfaceId::from_eui64(self.config.eui64).to_bytes();
        let [.., i5, i6, i7] = iid;
        let solicited = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(i5),
            u16::from_be_bytes([i6, i7]),
        );
        dst == self.link_local
            || Some(dst) == self.address()
            || dst == ALL_NODES
            || dst == solicited
    }

    fn handle_packet(&mut self, now: Instant, from_ll: LinkAddr, packet: &[u8]) {
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            self.stats.bad_ip += 1;
            return;
        };
        let (src, dst, hop) = (ip.src_addr(), ip.dst_addr(), ip.hop_limit());
        let end = IPV6_HEADER_LEN + usize::from(ip.payload_len());
        let Some(body) = packet.get(IPV6_HEADER_LEN..end) else {
            self.stats.bad_ip += 1;
            return;
        };
        if ip.version() != 6 || !self.is_mine(dst) {
            self.stats.bad_ip += 1;
            return;
        }
        match u8::from(ip.next_header()) {
            PROTO_UDP => self.handle_udp(now, src, dst, body),
            nd::PROTO_ICMPV6 => match nd::parse_packet(src, dst, hop, body) {
                Ok(msg) => self.handle_icmp(now, (src, dst), from_ll, msg),
                Err(_) => self.stats.bad_icmp += 1,
            },
            _ => self.stats.bad_ip += 1,
        }
    }

    fn handle_udp(&mut self, now: Instant, src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) {
        let field = |at: usize| {
            udp.get(at..at + 2)
                .and_then(|s| s.try_into().ok())
                .map(u16::from_be_bytes)
        };
        let (Some(sport), Some(dport), Some(len)) = (field(0), field(2), field(4)) else {
            self.stats.bad_ip += 1;
            return;
        };
        if usize::from(len) != udp.len() || upper_layer_checksum(src, dst, PROTO_UDP, udp) != 0 {
            self.stats.bad_checksum += 1;
            return;
        }
        if dport != self.config.coap_port {
            self.stats.port_closed += 1;
            return;
        }
        let peer = SocketAddr::V6(SocketAddrV6::new(src, sport, 0, 0));
        let payload = udp.get(UDP_HEADER_LEN..).unwrap_or_default();
        self.coap.handle_datagram(now, peer, payload);
    }

    fn handle_icmp(
        &mut self,
        now: Instant,
        (src, dst): (Ipv6Addr, Ipv6Addr),
        from_ll: LinkAddr,
        msg: Icmpv6,
    ) {
        match msg {
            Icmpv6::RouterAdvert(ra) => self.handle_ra(now, src, from_ll, &ra),
            Icmpv6::NeighborSolicit { target, source_ll } if self.is_unicast_mine(target) => {
                let na = Icmpv6::NeighborAdvert {
                    router: false,
                    solicited: !src.is_unspecified(),
                    override_: true,
                    target,
                    target_ll: Some(self.ll()),
                };
                let (to, to_ll) = if src.is_unspecified() {
                    (ALL_NODES, LinkAddr::BROADCAST)
                } else {
                    (src, source_ll.unwrap_or(from_ll))
                };
                let packet = nd::packet(target, to, &na);
                self.send_packet(&packet, to_ll);
            }
            Icmpv6::EchoRequest { id, seq, data } => {
                let from = if dst.is_multicast() {
                    self.source_for(src)
                } else {
                    dst
                };
                let reply = Icmpv6::EchoReply { id, seq, data };
                let mut packet = nd::packet(from, src, &reply);
                if let Some(h) = packet.get_mut(7) {
                    *h = HOP_LIMIT;
                }
                let to_ll = self.next_hop(src);
                self.send_packet(&packet, to_ll);
            }
            _ => self.stats.bad_icmp += 1,
        }
    }

    fn is_unicast_mine(&self, addr: Ipv6Addr) -> bool {
        addr == self.link_local || Some(addr) == self.address()
    }

    fn handle_ra(&mut self, now: Instant, src: Ipv6Addr, from_ll: LinkAddr, ra: &RouterAdvert) {
        let prefix = ra
            .prefixes
            .iter()
            .find(|p| p.autonomous && p.len == 64 && p.valid_lifetime > 0);
        let (Some(prefix), true, true) = (prefix, ra.router_lifetime > 0, is_link_local(src))
        else {
            self.stats.ignored_ra += 1;
            return;
        };
        self.stats.advertisements += 1;
        for c in &ra.contexts {
            if c.lifetime_minutes == 0 {
                self.adaptation.contexts.remove(c.cid);
            } else {
                let mut ctx = Context::new(c.prefix, c.len);
                ctx.compress = c.compress;
                self.adaptation.contexts.set(c.cid, ctx);
            }
        }
        let lifetimes = [
            Some(u64::from(ra.router_lifetime)),
            Some(u64::from(prefix.valid_lifetime)),
            ra.contexts
                .iter()
                .filter(|c| c.lifetime_minutes > 0)
                .map(|c| u64::from(c.lifetime_minutes) * 60)
                .min(),
        ];
        let shortest = lifetimes.into_iter().flatten().min().unwrap_or(0);
        let high = prefix.prefix.to_bits() & (u128::MAX << 64);
        let own_iid = u128::from(InterfaceId::from_eui64(self.config.eui64).0);
        let router_iid = src.to_bits() & u128::from(u64::MAX);
        let at = Attachment {
            address: Ipv6Addr::from_bits(high | own_iid),
            prefix: Ipv6Addr::from_bits(high),
            router: src,
            router_global: Ipv6Addr::from_bits(high | router_iid),
            router_ll: ra.source_ll.unwrap_or(from_ll),
            mtu: ra.mtu,
        };
        let life = Duration::from_secs(shortest);
        let changed = self.attachment() != Some(&at);
        self.state = State::Attached {
            at,
            refresh: now + life * 3 / 4,
            expires: now + life,
        };
        if changed {
            self.push_event(LowpanEvent::Attached(at));
            self.start_uplink(now, &at);
        }
    }

    fn start_uplink(&mut self, now: Instant, at: &Attachment) {
        let Some((mut config, target)) = self.uplink.clone() else {
            return;
        };
        config.server = match target {
            UplinkTarget::Router { port } => {
                SocketAddr::V6(SocketAddrV6::new(at.router_global, port, 0, 0))
            }
            UplinkTarget::Fixed(addr) => addr,
        };
        self.coap.start_uplink(now, config);
    }

    /// The source address for a packet to `dst`: link-local for link-local destinations, the
    /// global address otherwise (link-local while detached).
    fn source_for(&self, dst: Ipv6Addr) -> Ipv6Addr {
        if is_link_local(dst) {
            self.link_local
        } else {
            self.address().unwrap_or(self.link_local)
        }
    }

    /// The link-layer destination for `dst`, or `None` when there is no route.
    fn route(&self, dst: Ipv6Addr) -> Option<LinkAddr> {
        if dst.is_multicast() {
            Some(LinkAddr::BROADCAST)
        } else if is_link_local(dst) {
            let [.., a, b, c, d, e, f, g, h] = dst.octets();
            Some(match [a, b, c, d, e, f, g, h] {
                [0, 0, 0, 0xff, 0xfe, 0, s0, s1] => LinkAddr::Short([s0, s1]),
                [i0, i1, i2, i3, i4, i5, i6, i7] => {
                    LinkAddr::Extended([i0 ^ 0x02, i1, i2, i3, i4, i5, i6, i7])
                }
            })
        } else {
            self.attachment().map(|a| a.router_ll)
        }
    }

    fn next_hop(&self, dst: Ipv6Addr) -> LinkAddr {
        self.route(dst).unwrap_or(LinkAddr::BROADCAST)
    }

    /// Sends what the CoAP core has queued, as far as there are routes. Called after every
    /// input; call it after using [`LowpanDevice::coap_mut`].
    pub fn flush(&mut self) {
        while let Some(t) = self.coap.poll_transmit() {
            let SocketAddr::V6(to) = t.destination else {
                self.stats.no_route += 1;
                continue;
            };
            let dst = *to.ip();
            let routable = is_link_local(dst) || self.address().is_some();
            let Some(to_ll) = self.route(dst).filter(|_| routable) else {
                self.stats.no_route += 1;
                continue;
            };
            let packet = super::udp_packet(
                SocketAddrV6::new(self.source_for(dst), self.config.coap_port, 0, 0),
                to,
                HOP_LIMIT,
                &t.contents,
            );
            self.send_packet(&packet, to_ll);
        }
    }

    fn send_packet(&mut self, packet: &[u8], to_ll: LinkAddr) {
        let header = DataHeader {
            sequence: self.sequence,
            pan: self.config.pan,
            dst: to_ll,
            src: self.ll(),
            ack_request: false,
        };
        let mut frames: Vec<OutFrame> = Vec::new();
        let mut failed = false;
        let mut sequence = self.sequence;
        let ll = LinkAddrs {
            src: header.src,
            dst: header.dst,
        };
        let sent = self
            .adaptation
            .send(packet, ll, header.max_payload(), |payload| {
                let mut out = OutFrame {
                    buf: [0; MAX_MAC_FRAME],
                    len: 0,
                };
                let h = DataHeader { sequence, ..header };
                match h.emit(payload, &mut out.buf) {
                    Ok(n) => {
                        out.len = n;
                        frames.push(out);
                        sequence = sequence.wrapping_add(1);
                    }
                    Err(_) => failed = true,
                }
            });
        if sent.is_err() || failed {
            self.stats.send_errors += 1;
            return;
        }
        if self.tx.len() + frames.len() > self.config.max_queued_frames {
            self.stats.queue_full += 1;
            return;
        }
        self.sequence = sequence;
        self.stats.frames_out += frames.len() as u64;
        self.tx.extend(frames);
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80)
}
