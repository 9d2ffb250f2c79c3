//! One PAN the border router serves: its addresses, its adaptation layer (contexts, the
//! reassembly table for all its devices), its neighbour table, its Router Advertisement, and
//! frames in and out.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use v6iot_sdk::addr::{Eui64, InterfaceId};
use v6iot_sdk::lowpan::context::Context;
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{CidByte, CompressOptions, LinkAddrs, iid_from_link};
use v6iot_sdk::lowpan::nd::{self, ContextOption, Icmpv6, PrefixInfo, RouterAdvert};
use v6iot_sdk::lowpan::{Adaptation, IPV6_MTU, OutputError};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::{MAX_MAC_FRAME, MacFrame};

use super::ip;
use super::neighbours::{NeighbourConfig, NeighbourTable, Origin};
use super::stats::{Drop, PanStats};

/// How one PAN is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanConfig {
    /// The PAN ID.
    pub pan: PanId,
    /// The PAN's /64 (bits past 64 are ignored).
    pub prefix: Ipv6Addr,
    /// The 6LoWPAN context ID the prefix is advertised under (0–15).
    pub context_id: u8,
    /// The router's extended address; its interface ID makes the router's addresses.
    pub router: Eui64,
    /// When IPHC sends the CID byte.
    pub cid_byte: CidByte,
    /// Router lifetime in RAs, seconds.
    pub router_lifetime_s: u16,
    /// Prefix valid and preferred lifetime in RAs, seconds.
    pub prefix_lifetime_s: u32,
    /// Context lifetime in RAs, minutes.
    pub context_lifetime_min: u16,
    /// Time between unsolicited RAs to all nodes.
    pub ra_interval: Duration,
    /// Neighbour table bounds.
    pub neighbours: NeighbourConfig,
    /// Reassembly bounds (all the PAN's devices share the table).
    pub reassembly: ReassemblyConfig,
}

impl PanConfig {
    /// Defaults for a PAN: context ID 0, CID byte only for contexts ≠ 0, router lifetime
    /// 1800 s, prefix 1 day, context 60 min, an RA every 60 s, 16,384 neighbours idle for at
    /// most 2 h, reassembly of 256 datagrams (2 per source) within 60 s.
    #[must_use]
    pub fn new(pan: PanId, prefix: Ipv6Addr, router: Eui64) -> PanConfig {
        PanConfig {
            pan,
            prefix,
            context_id: 0,
            router,
            cid_byte: CidByte::WhenNonZero,
            router_lifetime_s: 1800,
            prefix_lifetime_s: 86_400,
            context_lifetime_min: 60,
            ra_interval: Duration::from_secs(60),
            neighbours: NeighbourConfig::default(),
            reassembly: ReassemblyConfig {
                max_datagrams: 256,
                max_per_source: 2,
                timeout: Duration::from_secs(60),
            },
        }
    }
}

/// A frame the router sends: a MAC frame without FCS, for the radio of PAN `pan`.
#[derive(Clone, Copy)]
pub struct RadioFrame {
    /// The PAN (index in the configuration) whose radio sends it.
    pub pan: usize,
    len: usize,
    buf: [u8; MAX_MAC_FRAME],
}

impl std::fmt::Debug for RadioFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadioFrame")
            .field("pan", &self.pan)
            .field("len", &self.len)
            .finish()
    }
}

impl RadioFrame {
    /// The frame.
    ///
    /// # Errors
    ///
    /// Never for frames the router built (a MAC header of at least 3 bytes, at most
    /// [`MAX_MAC_FRAME`]); the `Result` is `MacFrame`'s checked constructor.
    pub fn frame(&self) -> Result<MacFrame<'_>, v6iot_sdk::radio::FrameError> {
        MacFrame::new(self.as_bytes())
    }

    /// The frame's bytes (no FCS).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// A packet the PAN's radio delivered: from `src`, for the link-layer destination `dst`.
pub(super) struct Arrived {
    pub(super) src: LinkAddr,
    pub(super) packet: Vec<u8>,
}

/// One PAN (see the module doc).
#[derive(Debug)]
pub(super) struct Pan {
    pub(super) config: PanConfig,
    pub(super) ll: LinkAddr,
    pub(super) link_local: Ipv6Addr,
    pub(super) global: Ipv6Addr,
    net: u64,
    solicited_node: Ipv6Addr,
    adaptation: Adaptation<Instant>,
    pub(super) neighbours: NeighbourTable,
    sequence: u8,
    pub(super) next_ra: Instant,
    pub(super) stats: PanStats,
}

impl Pan {
    pub(super) fn new(now: Instant, index: usize, config: PanConfig) -> Pan {
        let iid = InterfaceId::from_eui64(config.router).to_bytes();
        let net = ip::net64(config.prefix);
        let mut adaptation = Adaptation::new(
            config.reassembly,
            CompressOptions {
                cid_byte: config.cid_byte,
            },
            // Tags of different PANs apart, in case two share a medium.
            (index as u16).wrapping_mul(0x1000),
        );
        adaptation
            .contexts
            .set(config.context_id, Context::new(ip::join(net, [0; 8]), 64));
        let [.., a, b, c] = iid;
        Pan {
            ll: LinkAddr::Extended(config.router.0),
            link_local: ip::join(0xfe80_0000_0000_0000, iid),
            global: ip::join(net, iid),
            net,
            solicited_node: Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | u16::from(a),
                u16::from_be_bytes([b, c]),
            ),
            adaptation,
            neighbours: NeighbourTable::new(config.neighbours),
            sequence: 0,
            next_ra: now,
            stats: PanStats::default(),
            config,
        }
    }

    /// Whether `addr` is in this PAN's /64.
    pub(super) fn contains(&self, addr: Ipv6Addr) -> bool {
        ip::net64(addr) == self.net
    }

    /// Whether `addr` is one of the router's unicast addresses here.
    pub(super) fn is_router(&self, addr: Ipv6Addr) -> bool {
        addr == self.global || addr == self.link_local
    }

    /// Whether the router takes packets to `addr`: its own unicast addresses, all-nodes,
    /// all-routers, its solicited-node group.
    pub(super) fn is_for_router(&self, addr: Ipv6Addr) -> bool {
        self.is_router(addr)
            || addr == nd::ALL_NODES
            || addr == nd::ALL_ROUTERS
            || addr == self.solicited_node
    }

    pub(super) fn count(&mut self, why: Drop) {
        self.stats.drops.count(why);
    }

    /// Takes one frame: the IPv6 packet it completes, if any. Drops are counted.
    pub(super) fn receive(&mut self, now: Instant, frame: MacFrame<'_>) -> Option<Arrived> {
        self.stats.frames_in += 1;
        let Ok((header, payload)) = DataHeader::parse(frame) else {
            self.count(Drop::BadMac);
            return None;
        };
        if header.pan != self.config.pan && header.pan != PanId(0xffff) {
            self.count(Drop::OtherPan);
            return None;
        }
        if header.dst != self.ll && header.dst != LinkAddr::BROADCAST {
            self.count(Drop::NotForUs);
            return None;
        }
        let ll = LinkAddrs {
            src: header.src,
            dst: header.dst,
        };
        match self.adaptation.receive(now, ll, payload) {
            Ok(Some(packet)) => {
                self.stats.packets_in += 1;
                Some(Arrived {
                    src: header.src,
                    packet,
                })
            }
            Ok(None) => None,
            Err(_) => {
                self.count(Drop::BadLowpan);
                None
            }
        }
    }

    /// Learns `src` at `from_ll` if the address's interface ID is the one `from_ll` derives
    /// (see [`super::neighbours`]).
    pub(super) fn glean(&mut self, now: Instant, src: Ipv6Addr, from_ll: LinkAddr) {
        if self.contains(src)
            && !self.is_router(src)
            && iid_from_link(from_ll) == Some(ip::iid(src))
        {
            // A full table is counted in its own stats; the address still derives its next hop.
            let _full = self.neighbours.learn(now, src, from_ll, Origin::Gleaned);
        }
    }

    /// The link-layer next hop for `dst` in this PAN (or link-local, or multicast).
    pub(super) fn next_hop(&mut self, dst: Ipv6Addr) -> LinkAddr {
        if dst.is_multicast() {
            return LinkAddr::BROADCAST;
        }
        if let Some(ll) = self.neighbours.next_hop(&dst) {
            return ll;
        }
        self.stats.derived_next_hop += 1;
        link_from_iid(ip::iid(dst))
    }

    /// This PAN's Router Advertisement.
    pub(super) fn router_advert(&self) -> Icmpv6 {
        let c = &self.config;
        let prefix = ip::join(self.net, [0; 8]);
        Icmpv6::RouterAdvert(RouterAdvert {
            hop_limit: 64,
            router_lifetime: c.router_lifetime_s,
            reachable_time: 0,
            retrans_timer: 0,
            source_ll: Some(self.ll),
            mtu: Some(IPV6_MTU as u32),
            prefixes: vec![PrefixInfo {
                prefix,
                len: 64,
                // Route-over (RFC 6775 §5.4): devices send everything through the router.
                on_link: false,
                autonomous: true,
                valid_lifetime: c.prefix_lifetime_s,
                preferred_lifetime: c.prefix_lifetime_s,
            }],
            contexts: vec![ContextOption {
                cid: c.context_id,
                compress: true,
                prefix,
                len: 64,
                lifetime_minutes: c.context_lifetime_min,
            }],
        })
    }

    /// The frames carrying `packet` to `to_ll`, appended to `out` (nothing appended on error).
    pub(super) fn encode(
        &mut self,
        packet: &[u8],
        to_ll: LinkAddr,
        pan_index: usize,
        out: &mut Vec<RadioFrame>,
    ) -> Result<(), OutputError> {
        let header = DataHeader {
            sequence: self.sequence,
            pan: self.config.pan,
            dst: to_ll,
            src: self.ll,
            ack_request: false,
        };
        let start = out.len();
        let mut sequence = self.sequence;
        let mut failed = false;
        let ll = LinkAddrs {
            src: self.ll,
            dst: to_ll,
        };
        let result = self
            .adaptation
            .send(packet, ll, header.max_payload(), |payload| {
                let mut f = RadioFrame {
                    pan: pan_index,
                    len: 0,
                    buf: [0; MAX_MAC_FRAME],
                };
                match (DataHeader { sequence, ..header }).emit(payload, &mut f.buf) {
                    Ok(n) => {
                        f.len = n;
                        out.push(f);
                        sequence = sequence.wrapping_add(1);
                    }
                    Err(_) => failed = true,
                }
            });
        if result.is_err() || failed {
            out.truncate(start);
            return result.map(|_| ());
        }
        self.sequence = sequence;
        Ok(())
    }

    /// When reassembly next times out.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [Some(self.next_ra), self.adaptation.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reassembly timeouts.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.adaptation.handle_timeout(now);
    }

    /// The counters, with the adaptation layer's and the tables' current figures.
    pub(super) fn stats(&self) -> PanStats {
        let r = self.adaptation.reassembly();
        PanStats {
            adaptation: self.adaptation.stats(),
            reassembly: r.stats(),
            reassembly_in_progress: r.in_progress(),
            reassembly_bytes: r.buffered_bytes(),
            neighbours: self.neighbours.len(),
            neighbour: self.neighbours.stats(),
            ..self.stats
        }
    }
}

/// The link-layer address an interface ID derives from (RFC 6282 §3.2.2): a short address for
/// `0000:00ff:fe00:XXXX`, else the extended address with the U/L bit flipped back.
#[must_use]
pub fn link_from_iid(iid: [u8; 8]) -> LinkAddr {
    match iid {
        [0, 0, 0, 0xff, 0xfe, 0, a, b] => LinkAddr::Short([a, b]),
        [i0, i1, i2, i3, i4, i5, i6, i7] => {
            LinkAddr::Extended([i0 ^ 0x02, i1, i2, i3, i4, i5, i6, i7])
        }
    }
}
