//! A stand-in 6LoWPAN router for device tests: answers Router Solicitations with an RA (PIO,
//! 6CO, MTU, SLLAO), acts as the CoAP resource directory and telemetry sink (`POST /rd` →
//! 2.01, `POST /t` → 2.04), and sends the device requests of its own. It uses the SDK's own
//! adaptation layer and `coap-lite`; nothing of the device's state.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use v6iot_sdk::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::lowpan::Adaptation;
use v6iot_sdk::lowpan::context::Context;
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{
    CompressOptions, LinkAddrs, fill_udp_checksum, upper_layer_checksum,
};
use v6iot_sdk::lowpan::nd::{self, ContextOption, Icmpv6, PrefixInfo, RouterAdvert};
use v6iot_sdk::oscore::{self, RequestInfo, SecurityContext};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};

use crate::common::paths;

pub const PAN: PanId = PanId(0xabcd);
pub const ROUTER_LL: LinkAddr = LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]);
pub const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0);
pub const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const ROUTER_GLOBAL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 1);

/// A message the router received from the device.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: SocketAddrV6,
    pub to: Ipv6Addr,
    /// The message (the inner one, verified, when it came OSCORE-protected).
    pub packet: Packet,
    /// Whether it came OSCORE-protected and verified.
    pub protected: bool,
}

/// The stand-in router.
pub struct StandIn {
    pub adaptation: Adaptation<Instant>,
    pub sequence: u8,
    /// Lifetimes put in RAs: router (s), prefix valid (s), context (minutes).
    pub lifetimes: (u16, u32, u16),
    /// Whether to answer Router Solicitations.
    pub answer_rs: bool,
    pub solicitations: u32,
    /// Requests and responses the device sent, in order.
    pub received: Vec<Received>,
    /// Frames the router refused, by reason.
    pub refused: Vec<String>,
    /// The edge's OSCORE context for the device, when the device has credentials.
    pub oscore: Option<SecurityContext>,
    /// Requests the router protected, by token, to verify their answers with.
    sent_protected: HashMap<Vec<u8>, RequestInfo>,
    next_mid: u16,
}

impl Default for StandIn {
    fn default() -> Self {
        let mut adaptation = Adaptation::new(
            ReassemblyConfig {
                max_datagrams: 8,
                max_per_source: 4,
                timeout: std::time::Duration::from_secs(60),
            },
            CompressOptions::default(),
            0x100,
        );
        adaptation.contexts.set(0, Context::new(PREFIX, 64));
        StandIn {
            adaptation,
            sequence: 0,
            lifetimes: (1800, 86_400, 60),
            answer_rs: true,
            solicitations: 0,
            received: Vec::new(),
            refused: Vec::new(),
            oscore: None,
            sent_protected: HashMap::new(),
            next_mid: 0x7000,
        }
    }
}

impl StandIn {
    pub fn router_advert(&self) -> Icmpv6 {
        let (router, prefix, ctx) = self.lifetimes;
        Icmpv6::RouterAdvert(RouterAdvert {
            hop_limit: 64,
            router_lifetime: router,
            reachable_time: 0,
            retrans_timer: 0,
            source_ll: Some(ROUTER_LL),
            mtu: Some(1280),
            prefixes: vec![PrefixInfo {
                prefix: PREFIX,
                len: 64,
                on_link: false,
                autonomous: true,
                valid_lifetime: prefix,
                preferred_lifetime: prefix,
            }],
            contexts: vec![ContextOption {
                cid: 0,
                compress: true,
                prefix: PREFIX,
                len: 64,
                lifetime_minutes: ctx,
            }],
        })
    }

    /// MAC frames carrying `packet` to `dst_ll`.
    pub fn frames(&mut self, packet: &[u8], dst_ll: LinkAddr) -> Vec<Vec<u8>> {
        let header = DataHeader {
            sequence: self.sequence,
            pan: PAN,
            dst: dst_ll,
            src: ROUTER_LL,
            ack_request: false,
        };
        let mut out = Vec::new();
        let mut seq = self.sequence;
        self.adaptation
            .send(
                packet,
                LinkAddrs {
                    src: ROUTER_LL,
                    dst: dst_ll,
                },
                header.max_payload(),
                |p| {
                    let mut f = [0; 127];
                    let n = DataHeader {
                        sequence: seq,
                        ..header
                    }
                    .emit(p, &mut f)
                    .unwrap();
                    out.push(f[..n].to_vec());
                    seq = seq.wrapping_add(1);
                },
            )
            .unwrap();
        self.sequence = seq;
        out
    }

    /// An unsolicited RA to all nodes.
    pub fn advertise(&mut self) -> Vec<Vec<u8>> {
        let p = nd::packet(ROUTER_LINK_LOCAL, nd::ALL_NODES, &self.router_advert());
        self.frames(&p, LinkAddr::BROADCAST)
    }

    /// A CoAP message from the router's global address to `to`.
    pub fn coap_to(&mut self, to: SocketAddrV6, msg: &Packet) -> Vec<Vec<u8>> {
        let p = udp_packet(
            SocketAddrV6::new(ROUTER_GLOBAL, 5683, 0, 0),
            to,
            &msg.to_bytes().unwrap(),
        );
        self.frames(&p, device_ll_of(*to.ip()))
    }

    /// A confirmable request from the router to the device.
    pub fn request(&mut self, method: RequestType, path: &str, token: u8) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        p.set_token(vec![token]);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p
    }

    /// Takes one frame from the medium; returns the frames it sends in answer.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Vec<Vec<u8>> {
        let Ok((h, payload)) = DataHeader::parse(MacFrame::new(bytes).unwrap()) else {
            self.refused.push("mac".into());
            return vec![];
        };
        if h.dst != ROUTER_LL && h.dst != LinkAddr::BROADCAST {
            return vec![];
        }
        let packet = match self.adaptation.receive(
            now,
            LinkAddrs {
                src: h.src,
                dst: h.dst,
            },
            payload,
        ) {
            Ok(Some(p)) => p,
            Ok(None) => return vec![],
            Err(e) => {
                self.refused.push(format!("lowpan: {e}"));
                return vec![];
            }
        };
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).unwrap());
        let body = &packet[40..];
        match packet[6] {
            58 => match nd::parse_packet(src, dst, packet[7], body) {
                Ok(Icmpv6::RouterSolicit { source_ll }) => {
                    self.solicitations += 1;
                    if !self.answer_rs {
                        return vec![];
                    }
                    let ra = nd::packet(ROUTER_LINK_LOCAL, src, &self.router_advert());
                    self.frames(&ra, source_ll.unwrap_or(h.src))
                }
                Ok(other) => {
                    self.refused.push(format!("icmp {other:?}"));
                    vec![]
                }
                Err(e) => {
                    self.refused.push(format!("icmp: {e}"));
                    vec![]
                }
            },
            17 => {
                assert_eq!(
                    upper_layer_checksum(src, dst, 17, body),
                    0,
                    "device's UDP checksum"
                );
                let sport = u16::from_be_bytes([body[0], body[1]]);
                let msg = Packet::from_bytes(&body[8..]).unwrap();
                let from = SocketAddrV6::new(src, sport, 0, 0);
                self.take_coap(from, dst, msg)
            }
            other => {
                self.refused.push(format!("next header {other}"));
                vec![]
            }
        }
    }

    /// Records a CoAP message from the device (verifying it if protected) and answers it.
    fn take_coap(&mut self, from: SocketAddrV6, to: Ipv6Addr, msg: Packet) -> Vec<Vec<u8>> {
        let protected = msg.get_first_option(CoapOption::Oscore).is_some();
        let request = matches!(msg.header.code, MessageClass::Request(_));
        let (inner, info) = match (&mut self.oscore, protected, request) {
            (Some(ctx), true, true) => match oscore::unprotect_request(ctx, &msg) {
                Ok((inner, info)) => (inner, Some(info)),
                Err(e) => {
                    self.refused.push(format!("oscore request: {e}"));
                    return vec![];
                }
            },
            (Some(ctx), true, false) => {
                let Some(info) = self.sent_protected.get_mut(msg.get_token()) else {
                    self.refused.push("protected answer to nothing".into());
                    return vec![];
                };
                match oscore::unprotect_response(ctx, &msg, info) {
                    Ok(inner) => (inner, None),
                    Err(e) => {
                        self.refused.push(format!("oscore response: {e}"));
                        return vec![];
                    }
                }
            }
            _ => (msg.clone(), None),
        };
        self.received.push(Received {
            from,
            to,
            packet: inner.clone(),
            protected,
        });
        let Some(mut answer) = self.answer(&inner) else {
            return vec![];
        };
        if let (Some(ctx), Some(mut info)) = (&mut self.oscore, info) {
            answer = oscore::protect_response(ctx, &answer, &mut info, false).unwrap();
        }
        self.coap_to(from, &answer)
    }

    /// Protects a request the router sends to the device with its OSCORE context.
    pub fn protect(&mut self, request: &Packet) -> Packet {
        let ctx = self.oscore.as_mut().expect("an OSCORE context");
        let (outer, info) = oscore::protect_request(ctx, request).unwrap();
        self.sent_protected
            .insert(request.get_token().to_vec(), info);
        outer
    }

    /// The directory and sink: 2.01 for `POST /rd`, 2.04 for `POST /t`, an empty ACK for
    /// confirmable notifications, nothing for responses.
    fn answer(&mut self, msg: &Packet) -> Option<Packet> {
        let MessageClass::Request(_) = msg.header.code else {
            if msg.header.get_type() == MessageType::Confirmable {
                let mut ack = Packet::new();
                ack.header.set_type(MessageType::Acknowledgement);
                ack.header.message_id = msg.header.message_id;
                return Some(ack);
            }
            return None;
        };
        let path = paths(msg);
        let mut r = Packet::new();
        r.header.set_type(MessageType::Acknowledgement);
        r.header.message_id = msg.header.message_id;
        r.set_token(msg.get_token().to_vec());
        r.header.code = MessageClass::Response(match path.first().map(String::as_str) {
            Some("rd") if path.len() == 1 => {
                r.add_option(CoapOption::LocationPath, b"rd".to_vec());
                r.add_option(CoapOption::LocationPath, b"1".to_vec());
                ResponseType::Created
            }
            Some("rd") => ResponseType::Changed,
            Some("t") => ResponseType::Changed,
            _ => ResponseType::NotFound,
        });
        Some(r)
    }

    /// Requests of the device with path `p` received so far.
    pub fn requests_to(&self, p: &str) -> Vec<&Received> {
        self.received
            .iter()
            .filter(|r| {
                matches!(r.packet.header.code, MessageClass::Request(_))
                    && paths(&r.packet).join("/") == p
            })
            .collect()
    }

    /// Responses the device sent with `token`.
    pub fn responses(&self, token: u8) -> Vec<&Packet> {
        self.received
            .iter()
            .map(|r| &r.packet)
            .filter(|p| {
                matches!(p.header.code, MessageClass::Response(_)) && p.get_token() == [token]
            })
            .collect()
    }
}

/// The link-layer address a device's IID was derived from (its extended address).
pub fn device_ll_of(addr: Ipv6Addr) -> LinkAddr {
    let mut e: [u8; 8] = addr.octets()[8..].try_into().unwrap();
    e[0] ^= 0x02;
    LinkAddr::Extended(e)
}

pub fn udp_packet(from: SocketAddrV6, to: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    fill_udp_checksum(&mut p);
    p
}

pub fn socket_v6(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => panic!("not IPv6"),
    }
}
