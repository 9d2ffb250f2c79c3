//! Packets for the router itself: Router Solicitations (answered with the PAN's RA), Neighbour
//! Solicitations for its addresses (answered with an NA), echo requests, and CoAP to its port
//! (handed to the gateway). What is for the router's global address but none of these goes to
//! the host when the host owns that address.

use std::net::SocketAddrV6;
use std::time::Instant;

use v6iot_sdk::lowpan::PROTO_UDP;
use v6iot_sdk::lowpan::iphc::{UDP_HEADER_LEN, upper_layer_checksum};
use v6iot_sdk::lowpan::nd::{self, ALL_NODES, Icmpv6};
use v6iot_sdk::radio::mac::LinkAddr;

use super::ip::{self, Ipv6Header};
use super::stats::Drop;
use super::{BorderRouter, HOP_LIMIT, LocalDatagram};

impl BorderRouter {
    /// A packet from PAN `pan` whose destination is the router (or a group it is in).
    pub(super) fn local(
        &mut self,
        now: Instant,
        pan: usize,
        from_ll: LinkAddr,
        h: &Ipv6Header,
        packet: &[u8],
    ) {
        let body = ip::payload(packet);
        match h.next_header {
            nd::PROTO_ICMPV6 => match nd::parse_packet(h.src, h.dst, h.hop_limit, body) {
                Ok(msg) => self.icmp(pan, from_ll, h, msg),
                Err(_) => self.count(pan, Drop::Icmp),
            },
            PROTO_UDP if !h.dst.is_multicast() => self.udp(now, pan, h, packet),
            _ => self.not_ours(pan, h, packet),
        }
    }

    fn count(&mut self, pan: usize, why: Drop) {
        if let Some(p) = self.pans.get_mut(pan) {
            p.count(why);
        }
    }

    /// What is for the router's address but not the router's own business: the host's, when
    /// it owns the address.
    fn not_ours(&mut self, pan: usize, h: &Ipv6Header, packet: &[u8]) {
        let global = self.pans.get(pan).is_some_and(|p| p.global == h.dst);
        if global && self.config.host_owns_router_address {
            self.queue_for_host(pan, packet.to_vec());
        } else if h.next_header == PROTO_UDP {
            self.count(pan, Drop::PortClosed);
        } else {
            self.count(pan, Drop::NotRoutable);
        }
    }

    fn udp(&mut self, _now: Instant, pan: usize, h: &Ipv6Header, packet: &[u8]) {
        let udp = ip::payload(packet);
        let field = |at: usize| {
            udp.get(at..at + 2)
                .and_then(|s| <[u8; 2]>::try_from(s).ok())
                .map(u16::from_be_bytes)
        };
        let (Some(sport), Some(dport), Some(len)) = (field(0), field(2), field(4)) else {
            return self.count(pan, Drop::BadChecksum);
        };
        if dport != self.config.coap_port {
            return self.not_ours(pan, h, packet);
        }
        if usize::from(len) != udp.len() || upper_layer_checksum(h.src, h.dst, PROTO_UDP, udp) != 0
        {
            return self.count(pan, Drop::BadChecksum);
        }
        if ip::is_link_local(h.src) || h.src.is_unspecified() {
            // The gateway binds devices to global addresses only.
            return self.count(pan, Drop::BadSource);
        }
        if self.local_out.len() >= self.config.max_local_queue {
            return self.count(pan, Drop::LocalQueueFull);
        }
        if let Some(p) = self.pans.get_mut(pan) {
            p.stats.local_in += 1;
        }
        self.local_out.push_back(LocalDatagram {
            pan,
            remote: SocketAddrV6::new(h.src, sport, 0, 0),
            local: h.dst,
            payload: udp.get(UDP_HEADER_LEN..).unwrap_or_default().to_vec(),
        });
    }

    fn icmp(&mut self, pan: usize, from_ll: LinkAddr, h: &Ipv6Header, msg: Icmpv6) {
        let Some(p) = self.pans.get_mut(pan) else {
            return;
        };
        // Answers go to the asker's address at its link-layer address (from the option, else
        // the frame's source); to all nodes when it has no address yet.
        let reply_to = |source_ll: Option<LinkAddr>| {
            if h.src.is_unspecified() {
                (ALL_NODES, LinkAddr::BROADCAST)
            } else {
                (h.src, source_ll.unwrap_or(from_ll))
            }
        };
        let (packet, to, to_ll) = match msg {
            Icmpv6::RouterSolicit { source_ll } => {
                p.stats.solicitations += 1;
                let (to, to_ll) = reply_to(source_ll);
                (nd::packet(p.link_local, to, &p.router_advert()), to, to_ll)
            }
            Icmpv6::NeighborSolicit { target, source_ll } if p.is_router(target) => {
                let na = Icmpv6::NeighborAdvert {
                    router: true,
                    solicited: !h.src.is_unspecified(),
                    override_: true,
                    target,
                    target_ll: Some(p.ll),
                };
                let (to, to_ll) = reply_to(source_ll);
                (nd::packet(target, to, &na), to, to_ll)
            }
            Icmpv6::EchoRequest { id, seq, data } if !h.src.is_unspecified() => {
                let from = if h.dst.is_multicast() {
                    if ip::is_link_local(h.src) {
                        p.link_local
                    } else {
                        p.global
                    }
                } else {
                    h.dst
                };
                let mut packet = nd::packet(from, h.src, &Icmpv6::EchoReply { id, seq, data });
                ip::set_hop_limit(&mut packet, HOP_LIMIT);
                (packet, h.src, from_ll)
            }
            _ => return p.count(Drop::Icmp),
        };
        let kind = packet.get(40).copied();
        let to_ll = if to.is_multicast() {
            LinkAddr::BROADCAST
        } else {
            to_ll
        };
        if self.send_on(pan, to_ll, &packet).is_ok()
            && let Some(p) = self.pans.get_mut(pan)
        {
            match kind {
                Some(134) => p.stats.advertisements += 1,
                Some(136) => p.stats.neighbour_adverts += 1,
                Some(129) => p.stats.echo_replies += 1,
                _ => {}
            }
        }
    }

    /// Sends `packet` on PAN `pan` to the link-layer address `to_ll` (no neighbour lookup).
    pub(super) fn send_on(
        &mut self,
        pan: usize,
        to_ll: LinkAddr,
        packet: &[u8],
    ) -> Result<(), super::SendError> {
        let Some(p) = self.pans.get_mut(pan) else {
            return Err(super::SendError::NoRoute);
        };
        self.scratch.clear();
        if p.encode(packet, to_ll, pan, &mut self.scratch).is_err() {
            p.count(Drop::SendError);
            return Err(super::SendError::Unsendable);
        }
        if self.tx.len() + self.scratch.len() > self.config.max_tx_frames {
            p.count(Drop::TxQueueFull);
            return Err(super::SendError::QueueFull);
        }
        p.stats.packets_out += 1;
        p.stats.frames_out += self.scratch.len() as u64;
        self.tx.extend(self.scratch.drain(..));
        Ok(())
    }
}
