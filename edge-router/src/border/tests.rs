//! The border router on virtual time, with the SDK's 6LoWPAN device as its peer and frames made
//! by hand for what a device would never send.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use v6iot_sdk::addr::{DeviceAddress, Eui64, SitePrefix};
use v6iot_sdk::coap::{App, Code, Config, Device, Resource, ResourceTree, Response};
use v6iot_sdk::lowpan::context::Context;
use v6iot_sdk::lowpan::device::{LowpanConfig, LowpanDevice, UplinkTarget};
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{CompressOptions, LinkAddrs};
use v6iot_sdk::lowpan::nd::{self, Icmpv6};
use v6iot_sdk::lowpan::{Adaptation, udp_packet};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::time::Instant as SdkInstant;
use v6iot_sdk::uplink::UplinkConfig;

use super::neighbours::NeighbourConfig;
use super::pan::PanConfig;
use super::{BorderConfig, BorderRouter};

const PAN: PanId = PanId(0xabcd);
const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0);
const ROUTER_EUI: Eui64 = Eui64([0x02, 0, 0, 0, 0, 0, 0, 0x01]);
const ROUTER_LL: LinkAddr = LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]);
const ROUTER_GLOBAL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 1);
const HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

#[derive(Debug, Default)]
struct Sensor {
    value: u32,
    uploaded: Vec<u8>,
}

impl App for Sensor {}

fn tree() -> Arc<ResourceTree<Sensor>> {
    let mut t = ResourceTree::new();
    t.add(
        Resource::new("value")
            .get(|s: &mut Sensor, _| Response::content(0, s.value.to_string().into_bytes()).into()),
    )
    .unwrap();
    t.add(Resource::new("upload").post(|s: &mut Sensor, r| {
        s.uploaded = r.payload.to_vec();
        Response::code(Code::Changed).into()
    }))
    .unwrap();
    Arc::new(t)
}

fn planned(serial: u64) -> DeviceAddress {
    let site: SitePrefix = "2001:db8:1200::/48".parse().unwrap();
    DeviceAddress::new(site, 3, 5, 0x12, serial).unwrap()
}

fn pan_config() -> PanConfig {
    PanConfig::new(PAN, PREFIX, ROUTER_EUI)
}

/// The router, the devices, and virtual time.
struct Net {
    t0: Instant,
    now: Instant,
    router: BorderRouter,
    devices: Vec<LowpanDevice<Sensor>>,
    /// Frames the router sent, as bytes.
    on_air: Vec<Vec<u8>>,
    /// Packets for the host.
    host: Vec<Vec<u8>>,
}

impl Net {
    fn new(config: BorderConfig, devices: usize) -> Net {
        let t0 = Instant::now();
        let router = BorderRouter::new(t0, config);
        let devices = (0..devices)
            .map(|i| {
                let coap = Device::new(Config::default(), i as u64, tree(), Sensor::default());
                let eui = planned(0x1000 + i as u64).eui64();
                LowpanDevice::new(SdkInstant::ZERO, LowpanConfig::new(PAN, eui), coap)
            })
            .collect();
        Net {
            t0,
            now: t0,
            router,
            devices,
            on_air: Vec::new(),
            host: Vec::new(),
        }
    }

    fn sdk_now(&self) -> SdkInstant {
        SdkInstant::ZERO + (self.now - self.t0)
    }

    /// Moves frames between the router and the devices (a shared channel: every device hears
    /// every router frame) until nobody has anything to send.
    fn pump(&mut self) {
        let sdk_now = self.sdk_now();
        loop {
            let mut moved = false;
            let mut from_devices = Vec::new();
            for d in &mut self.devices {
                while let Some(state) = d.coap().state_to_persist() {
                    d.coap_mut().state_persisted(sdk_now, state);
                    d.flush();
                }
                while let Some(f) = d.poll_transmit() {
                    from_devices.push(f.as_bytes().to_vec());
                }
            }
            for f in from_devices {
                self.router
                    .handle_frame(self.now, 0, MacFrame::new(&f).unwrap());
                moved = true;
            }
            while let Some(f) = self.router.poll_transmit() {
                self.on_air.push(f.as_bytes().to_vec());
                for d in &mut self.devices {
                    d.handle_frame(sdk_now, f.frame().unwrap());
                }
                moved = true;
            }
            while let Some(p) = self.router.poll_host() {
                self.host.push(p);
            }
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let sdk_now = self.sdk_now();
        for d in &mut self.devices {
            if d.poll_timeout().is_some_and(|t| t <= sdk_now) {
                d.handle_timeout(sdk_now);
            }
        }
        if self.router.poll_timeout().is_some_and(|t| t <= self.now) {
            self.router.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Attaches every device (the router's first RA at start, then RS/RA).
    fn attach(&mut self) {
        self.router.handle_timeout(self.now);
        self.pump();
        self.advance(Duration::ZERO);
        for d in &self.devices {
            assert!(d.address().is_some(), "attached");
        }
    }
}

fn get(path: &str, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(vec![1, 2]);
    for s in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p.to_bytes().unwrap()
}

fn udp_payload(packet: &[u8]) -> &[u8] {
    &packet[48..]
}

fn src_of(packet: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).unwrap())
}

fn dst_of(packet: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).unwrap())
}

#[test]
fn devices_attach_from_the_routers_advertisements() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 3);
    net.attach();
    for (i, d) in net.devices.iter().enumerate() {
        let at = d.attachment().unwrap();
        assert_eq!(at.address, planned(0x1000 + i as u64).to_ipv6());
        assert_eq!(at.router_global, ROUTER_GLOBAL);
        assert_eq!(at.router_ll, ROUTER_LL);
        // The context came with the RA: the device compresses with it.
        assert_eq!(
            d.adaptation().contexts.get(0).map(Context::prefix),
            Some(PREFIX)
        );
    }
    let s = &net.router.stats().pans[0];
    // One periodic RA at start, each device attached from it (no solicitation needed).
    assert_eq!(s.advertisements, 1);
    assert_eq!(s.drops.total(), 0, "{s:?}");
    // The next periodic RA is due one interval later.
    assert_eq!(
        net.router.poll_timeout(),
        Some(net.t0 + pan_config().ra_interval)
    );
    net.advance(pan_config().ra_interval);
    assert_eq!(net.router.stats().pans[0].advertisements, 2);
}

#[test]
fn a_solicitation_is_answered_with_an_advertisement_to_the_asker() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 1);
    // No periodic RA yet: the device solicits.
    let now = net.sdk_now();
    net.devices[0].handle_timeout(now);
    net.pump();
    let s = &net.router.stats().pans[0];
    assert_eq!(s.solicitations, 1);
    assert_eq!(s.advertisements, 1);
    assert!(net.devices[0].address().is_some());
    // The answer went to the device's extended address, not broadcast.
    let (h, _) = DataHeader::parse(MacFrame::new(&net.on_air[0]).unwrap()).unwrap();
    assert_eq!(h.dst, LinkAddr::Extended(planned(0x1000).eui64().0));
    assert_eq!(h.src, ROUTER_LL);
    assert_eq!(h.pan, PAN);
}

#[test]
fn coap_to_the_router_goes_to_the_gateway_and_answers_come_back_on_air() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 1);
    let coap = Device::new(Config::default(), 9, tree(), Sensor::default());
    net.devices[0] = LowpanDevice::new(
        SdkInstant::ZERO,
        LowpanConfig::new(PAN, planned(0x1000).eui64()),
        coap,
    )
    .with_uplink(
        UplinkConfig::new("[::]:0".parse().unwrap(), "dev-1"),
        UplinkTarget::Router { port: 5683 },
    );
    net.attach();
    let dev = net.devices[0].address().unwrap();
    // The registration came to the router's CoAP port: the gateway's.
    let reg = net.router.poll_local().expect("registration");
    assert_eq!(reg.remote, SocketAddrV6::new(dev, 5683, 0, 0));
    assert_eq!(reg.local, ROUTER_GLOBAL);
    let req = Packet::from_bytes(&reg.payload).unwrap();
    assert_eq!(req.header.code, MessageClass::Request(RequestType::Post));
    // The device is a neighbour now (gleaned from its own traffic).
    let n = net.router.neighbours(0).unwrap();
    assert_eq!(
        n.next_hop(&dev),
        Some(LinkAddr::Extended(planned(0x1000).eui64().0))
    );
    // The gateway's command leaves through the radio and the answer comes back to it.
    net.router
        .send_local(Some(reg.local), reg.remote, &get("value", 0x77))
        .unwrap();
    net.pump();
    let answer = std::iter::from_fn(|| net.router.poll_local())
        .map(|d| Packet::from_bytes(&d.payload).unwrap())
        .find(|p| p.header.message_id == 0x77)
        .expect("the device's answer");
    assert_eq!(answer.payload, b"0");
    let s = &net.router.stats().pans[0];
    assert!(s.local_in >= 2 && s.local_out == 1, "{s:?}");
    assert_eq!(s.derived_next_hop, 0);
    assert_eq!(s.drops.total(), 0, "{s:?}");
}

#[test]
fn the_host_reaches_a_device_by_its_global_address_and_gets_the_answer() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 2);
    net.attach();
    let dev = net.devices[1].address().unwrap();
    let p = udp_packet(
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        SocketAddrV6::new(dev, 5683, 0, 0),
        64,
        &get(".well-known/core", 5),
    );
    net.router.handle_host(net.now, &p);
    net.pump();
    assert_eq!(net.host.len(), 1);
    let back = &net.host[0];
    assert_eq!((src_of(back), dst_of(back)), (dev, HOST));
    // One hop: the device's 64 less one.
    assert_eq!(back[7], 63);
    assert_eq!(
        v6iot_sdk::lowpan::iphc::upper_layer_checksum(dev, HOST, 17, &back[40..]),
        0
    );
    let answer = Packet::from_bytes(udp_payload(back)).unwrap();
    assert!(
        String::from_utf8_lossy(&answer.payload).contains("</value>"),
        "{answer:?}"
    );
    let s = &net.router.stats().pans[0];
    assert_eq!((s.from_host, s.to_host), (1, 1));
    // The other device heard the frames and let them be.
    assert!(net.devices[0].stats().not_for_us >= 1);
}

#[test]
fn large_datagrams_are_fragmented_onto_the_radio_and_reassembled_from_it() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 1);
    net.attach();
    let dev = net.devices[0].address().unwrap();
    let body: Vec<u8> = (0..600).map(|i| (i % 251) as u8).collect();
    let mut post = Packet::new();
    post.header.set_type(MessageType::Confirmable);
    post.header.code = MessageClass::Request(RequestType::Post);
    post.header.message_id = 9;
    post.add_option(CoapOption::UriPath, b"upload".to_vec());
    post.payload = body.clone();
    let p = udp_packet(
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        SocketAddrV6::new(dev, 5683, 0, 0),
        64,
        &post.to_bytes().unwrap(),
    );
    let before = net.on_air.len();
    net.router.handle_host(net.now, &p);
    net.pump();
    assert!(net.on_air.len() - before >= 7, "fragments on air");
    assert_eq!(net.devices[0].coap().app().uploaded, body);
    // Back: a 700-byte datagram from the device, in fragments, reassembled by the router.
    let big = udp_packet(
        SocketAddrV6::new(dev, 5683, 0, 0),
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        64,
        &[0x5a; 700],
    );
    let frames = device_frames(&big, planned(0x1000).eui64());
    assert!(frames.len() >= 8);
    for f in &frames {
        net.router
            .handle_frame(net.now, 0, MacFrame::new(f).unwrap());
    }
    let got = net.router.poll_host().expect("reassembled");
    assert_eq!(got.len(), big.len());
    assert_eq!(udp_payload(&got), &[0x5a; 700][..]);
    assert_eq!(net.router.stats().pans[0].reassembly.completed, 1);
}

/// The frames an SDK adaptation layer with the PAN's context makes of `packet` from the
/// device with `eui` to the router.
fn device_frames(packet: &[u8], eui: Eui64) -> Vec<Vec<u8>> {
    frames_from(packet, LinkAddr::Extended(eui.0), 0x4242)
}

fn frames_from(packet: &[u8], src: LinkAddr, tag: u16) -> Vec<Vec<u8>> {
    let mut a: Adaptation<SdkInstant> =
        Adaptation::new(ReassemblyConfig::DEVICE, CompressOptions::default(), tag);
    a.contexts.set(0, Context::new(PREFIX, 64));
    let header = DataHeader {
        sequence: 0,
        pan: PAN,
        dst: ROUTER_LL,
        src,
        ack_request: false,
    };
    let mut out = Vec::new();
    a.send(
        packet,
        LinkAddrs {
            src,
            dst: ROUTER_LL,
        },
        header.max_payload(),
        |p| {
            let mut f = [0; 127];
            let n = header.emit(p, &mut f).unwrap();
            out.push(f[..n].to_vec());
        },
    )
    .unwrap();
    out
}

#[test]
fn neighbour_solicitations_for_the_router_get_an_advertisement() {
    let mut net = Net::new(BorderConfig::new(vec![pan_config()]), 0);
    let eui = planned(0x1000).eui64();
    let me = planned(0x1000).to_ipv6();
    let ns = Icmpv6::NeighborSolicit {
        target: ROUTER_GLOBAL,
        source_ll: Some(LinkAddr::Extended(eui.0)),
    };
    let packet = nd::packet(me, ROUTER_GLOBAL, &ns);
    for f in device_frames(&packet, eui) {
        net.router
            .handle_frame(net.now, 0, MacFrame::new(&f).unwrap());
    }
    let f = net.router.poll_transmit().expect("an NA");
    let (h, _) = DataHeader::parse(f.frame().unwrap()).unwrap();
    assert_eq!(h.dst, LinkAddr::Extended(eui.0));
    // Decode it with a device-side adaptation layer.
    let mut a: Adaptation<SdkInstant> =
        Adaptation::new(ReassemblyConfig::DEVICE, CompressOptions::default(), 0);
    a.contexts.set(0, Context::new(PREFIX, 64));
    let (h, payload) = DataHeader::parse(f.frame().unwrap()).unwrap();
    let p = a
        .receive(
            SdkInstant::ZERO,
            LinkAddrs {
                src: h.src,
                dst: h.dst,
            },
            payload,
        )
        .unwrap()
        .unwrap();
    match nd::parse_packet(src_of(&p), dst_of(&p), p[7], &p[40..]).unwrap() {
        Icmpv6::NeighborAdvert {
            router,
            solicited,
            target,
            target_ll,
            ..
        } => {
            assert!(router && solicited);
            assert_eq!(target, ROUTER_GLOBAL);
            assert_eq!(target_ll, Some(ROUTER_LL));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.router.stats().pans[0].neighbour_adverts, 1);
    // An NS for another address (to its solicited-node group) is not the router's business.
    let other = Icmpv6::NeighborSolicit {
        target: planned(0x2000).to_ipv6(),
        source_ll: None,
    };
    let group: Ipv6Addr = "ff02::1:ff00:2000".parse().unwrap();
    for f in device_frames(&nd::packet(me, group, &other), eui) {
        net.router
            .handle_frame(net.now, 0, MacFrame::new(&f).unwrap());
    }
    assert!(net.router.poll_transmit().is_none());
    assert_eq!(net.router.stats().pans[0].drops.multicast, 1);
}

#[test]
fn two_pans_each_get_their_own_prefix_and_traffic() {
    let second = PanConfig {
        context_id: 1,
        ..PanConfig::new(
            PanId(0x1234),
            "2001:db8:1200:306::".parse().unwrap(),
            Eui64([0x02, 0, 0, 0, 0, 0, 0, 0x02]),
        )
    };
    let mut router = BorderRouter::new(
        Instant::now(),
        BorderConfig::new(vec![pan_config(), second]),
    );
    // The interface ID of 02:00:00:00:00:00:00:02, its U/L bit flipped.
    assert_eq!(
        router.router_address(1),
        Some("2001:db8:1200:306::2".parse().unwrap())
    );
    let dst: Ipv6Addr = "2001:db8:1200:306:12:3456:78ab:cdef".parse().unwrap();
    let p = udp_packet(
        SocketAddrV6::new(HOST, 1, 0, 0),
        SocketAddrV6::new(dst, 5683, 0, 0),
        64,
        b"x",
    );
    router.handle_host(Instant::now(), &p);
    let f = router.poll_transmit().unwrap();
    assert_eq!(f.pan, 1);
    let (h, _) = DataHeader::parse(f.frame().unwrap()).unwrap();
    assert_eq!(h.pan, PanId(0x1234));
    assert_eq!(
        h.dst,
        LinkAddr::Extended([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef])
    );
    // Neither is the other's: nothing for an address outside both.
    let outside = udp_packet(
        SocketAddrV6::new(HOST, 1, 0, 0),
        SocketAddrV6::new("2001:db8:1200:307::5".parse().unwrap(), 5683, 0, 0),
        64,
        b"x",
    );
    router.handle_host(Instant::now(), &outside);
    assert!(router.poll_transmit().is_none());
    let s = router.stats();
    assert_eq!(
        (s.pans[1].from_host, s.pans[0].from_host, s.host.no_route),
        (1, 0, 1)
    );
    // The gateway cannot send to a device in no PAN either.
    assert!(
        router
            .send_local(None, SocketAddrV6::new(HOST, 5683, 0, 0), b"x")
            .is_err()
    );
}

fn host_to(dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    udp_packet(
        SocketAddrV6::new(HOST, 40_000, 0, 0),
        SocketAddrV6::new(dst, 5683, 0, 0),
        64,
        payload,
    )
}

#[test]
fn the_neighbour_table_holds_its_bound_and_forwarding_goes_on_past_it() {
    let mut pan = pan_config();
    pan.neighbours = NeighbourConfig {
        max_entries: 50,
        idle: Duration::from_secs(600),
    };
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan]));
    let now = Instant::now();
    for i in 0..60 {
        let d = planned(0x5000 + i);
        let p = udp_packet(
            SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
            SocketAddrV6::new(HOST, 40_000, 0, 0),
            64,
            b"hello",
        );
        for f in device_frames(&p, d.eui64()) {
            router.handle_frame(now, 0, MacFrame::new(&f).unwrap());
        }
    }
    let s = &router.stats().pans[0];
    assert_eq!(s.to_host, 60);
    assert_eq!(s.neighbours, 50);
    assert_eq!(s.neighbour.table_full, 10);
    // The 60th device is not in the table, yet reachable: its next hop derives from its IID.
    let last = planned(0x5000 + 59);
    router.handle_host(now, &host_to(last.to_ipv6(), b"x"));
    let f = router.poll_transmit().unwrap();
    let (h, _) = DataHeader::parse(f.frame().unwrap()).unwrap();
    assert_eq!(h.dst, LinkAddr::Extended(last.eui64().0));
    assert_eq!(router.stats().pans[0].derived_next_hop, 1);
    // Idle entries are swept after their time.
    router.handle_timeout(now + Duration::from_secs(601));
    assert_eq!(router.stats().pans[0].neighbours, 0);
    assert_eq!(router.stats().pans[0].neighbour.expired, 50);
}

#[test]
fn a_full_radio_queue_drops_whole_datagrams_and_counts_them() {
    let mut config = BorderConfig::new(vec![pan_config()]);
    config.max_tx_frames = 10;
    let mut router = BorderRouter::new(Instant::now(), config);
    let now = Instant::now();
    let dev = planned(0x1000).to_ipv6();
    // 600 bytes: 7 frames. The first fits, the second does not (7 + 7 > 10), nor does a third.
    for _ in 0..3 {
        router.handle_host(now, &host_to(dev, &[1; 600]));
    }
    assert_eq!(std::iter::from_fn(|| router.poll_transmit()).count(), 7);
    let s = &router.stats().pans[0];
    assert_eq!((s.from_host, s.drops.tx_queue_full), (1, 2));
    // Room again: the next one goes.
    router.handle_host(now, &host_to(dev, &[1; 600]));
    assert_eq!(std::iter::from_fn(|| router.poll_transmit()).count(), 7);
}

#[test]
fn bad_frames_and_packets_are_counted_by_cause() {
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan_config()]));
    let now = Instant::now();
    let d = planned(0x1000);
    let good = udp_packet(
        SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(HOST, 1, 0, 0),
        64,
        b"x",
    );
    let frame = device_frames(&good, d.eui64()).remove(0);
    let take = |router: &mut BorderRouter, bytes: &[u8]| {
        if let Ok(f) = MacFrame::new(bytes) {
            router.handle_frame(now, 0, f);
        }
    };
    // Truncated MAC header, an ACK, another PAN, another destination.
    take(&mut router, &frame[..5]);
    take(&mut router, &[0x02, 0x00, 0x01]);
    let mut other_pan = frame.clone();
    other_pan[3] ^= 0xff;
    take(&mut router, &other_pan);
    let mut other_dst = frame.clone();
    other_dst[5] ^= 0xff;
    take(&mut router, &other_dst);
    // Bad IPHC: a reserved dispatch; an IPHC header cut short.
    let hl = 21;
    let mut bad_dispatch = frame[..hl].to_vec();
    bad_dispatch.push(0x01);
    take(&mut router, &bad_dispatch);
    let mut cut = frame[..hl + 2].to_vec();
    cut[hl + 1] = 0xff;
    take(&mut router, &cut);
    // A source outside the PAN's prefix, towards the host.
    let spoofed = udp_packet(
        SocketAddrV6::new(HOST, 5683, 0, 0),
        SocketAddrV6::new("2001:db8:9::1".parse().unwrap(), 1, 0, 0),
        64,
        b"x",
    );
    take(&mut router, &device_frames(&spoofed, d.eui64())[0]);
    // Hop limit 1.
    let mut last_hop = good.clone();
    last_hop[7] = 1;
    take(&mut router, &device_frames(&last_hop, d.eui64())[0]);
    // UDP to the router's CoAP port with a wrong checksum.
    let mut bad_sum = udp_packet(
        SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(ROUTER_GLOBAL, 5683, 0, 0),
        64,
        b"x",
    );
    bad_sum[46] ^= 1;
    take(&mut router, &device_frames(&bad_sum, d.eui64())[0]);
    // And the good one.
    take(&mut router, &frame);
    let s = &router.stats().pans[0];
    let dr = s.drops;
    assert_eq!(dr.bad_mac, 2, "{dr:?}");
    assert_eq!(dr.other_pan, 1);
    assert_eq!(dr.not_for_us, 1);
    assert_eq!(dr.bad_lowpan, 2);
    assert_eq!(s.adaptation.bad_dispatch, 1);
    assert_eq!(s.adaptation.bad_iphc, 1);
    assert_eq!(dr.bad_source, 1);
    assert_eq!(dr.hop_limit, 1);
    assert_eq!(dr.bad_checksum, 1);
    assert_eq!(dr.total(), 9);
    assert_eq!(s.to_host, 1);
    assert_eq!(router.poll_host().map(|p| p[7]), Some(63));
    // From the host: garbage, and a packet for the router's own address.
    router.handle_host(now, &[0x60, 0, 0]);
    router.handle_host(now, &host_to(ROUTER_GLOBAL, b"x"));
    let h = router.stats().host;
    assert_eq!((h.packets_in, h.bad_ip, h.to_router), (2, 1, 1));
}

#[test]
fn a_fragment_flood_from_many_sources_is_bounded_and_times_out() {
    let mut pan = pan_config();
    pan.reassembly = ReassemblyConfig {
        max_datagrams: 32,
        max_per_source: 2,
        timeout: Duration::from_secs(60),
    };
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan]));
    let now = Instant::now();
    // 200 sources, each the first fragments of 3 datagrams it never finishes.
    for i in 0..200 {
        let d = planned(0x9000 + i);
        for tag in 0..3 {
            let p = udp_packet(
                SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
                SocketAddrV6::new(HOST, 1, 0, 0),
                64,
                &[7; 400],
            );
            let frames = frames_from(&p, LinkAddr::Extended(d.eui64().0), tag);
            router.handle_frame(now, 0, MacFrame::new(&frames[0]).unwrap());
        }
    }
    let s = router.stats().pans[0];
    assert_eq!(s.reassembly_in_progress, 32);
    assert!(s.reassembly_bytes <= 32 * 2047);
    // The first 16 sources got 2 each; their third was over the source's limit (but for the
    // 16th's, which found the table full); everything after was refused too, and counted.
    assert_eq!(s.reassembly.source_limit, 15);
    assert_eq!(s.reassembly.table_full, 600 - 32 - 15);
    assert_eq!(s.drops.bad_lowpan, 600 - 32);
    // An honest device waits for the flood to time out, then gets through.
    let honest = planned(0x1000);
    let p = udp_packet(
        SocketAddrV6::new(honest.to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(HOST, 1, 0, 0),
        64,
        &[1; 400],
    );
    let later = now + Duration::from_secs(60);
    router.handle_timeout(later);
    assert_eq!(router.stats().pans[0].reassembly.timeouts, 32);
    for f in device_frames(&p, honest.eui64()) {
        router.handle_frame(later, 0, MacFrame::new(&f).unwrap());
    }
    assert!(router.poll_host().is_some());
    assert_eq!(router.stats().pans[0].reassembly_bytes, 0);
}

#[test]
fn duplicate_and_overlapping_fragments_are_counted() {
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan_config()]));
    let now = Instant::now();
    let d = planned(0x1000);
    let p = udp_packet(
        SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(HOST, 1, 0, 0),
        64,
        &[3; 400],
    );
    let frames = device_frames(&p, d.eui64());
    let take = |r: &mut BorderRouter, f: &[u8]| r.handle_frame(now, 0, MacFrame::new(f).unwrap());
    take(&mut router, &frames[0]);
    take(&mut router, &frames[1]);
    take(&mut router, &frames[1]);
    // The same FRAGN with its offset moved on by one unit: overlaps what is there.
    let mut overlap = frames[1].clone();
    overlap[21 + 4] += 1;
    take(&mut router, &overlap);
    let s = router.stats().pans[0];
    assert_eq!(s.reassembly.duplicates, 1);
    assert_eq!(s.reassembly.overlaps, 1);
    assert_eq!(
        s.reassembly_in_progress, 0,
        "the overlapped datagram is discarded"
    );
    // Sent again whole, it gets through.
    for f in &frames {
        take(&mut router, f);
    }
    assert_eq!(router.poll_host().map(|p| p.len()), Some(p.len()));
}

#[test]
fn echo_requests_to_the_router_are_answered() {
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan_config()]));
    let d = planned(0x1000);
    let req = Icmpv6::EchoRequest {
        id: 1,
        seq: 2,
        data: vec![9; 20],
    };
    let mut p = nd::packet(d.to_ipv6(), ROUTER_GLOBAL, &req);
    p[7] = 64;
    // nd::packet sets hop 255; the checksum does not cover it.
    for f in device_frames(&p, d.eui64()) {
        router.handle_frame(Instant::now(), 0, MacFrame::new(&f).unwrap());
    }
    assert!(router.poll_transmit().is_some());
    assert_eq!(router.stats().pans[0].echo_replies, 1);
}

#[test]
fn host_traffic_to_the_routers_address_other_than_coap_goes_to_the_host() {
    let mut router = BorderRouter::new(Instant::now(), BorderConfig::new(vec![pan_config()]));
    let d = planned(0x1000);
    // The device answers a host program that used the router's address as its source.
    let p = udp_packet(
        SocketAddrV6::new(d.to_ipv6(), 5683, 0, 0),
        SocketAddrV6::new(ROUTER_GLOBAL, 40_000, 0, 0),
        64,
        b"answer",
    );
    for f in device_frames(&p, d.eui64()) {
        router.handle_frame(Instant::now(), 0, MacFrame::new(&f).unwrap());
    }
    assert!(router.poll_local().is_none());
    let got = router.poll_host().expect("for the host");
    assert_eq!(udp_payload(&got), b"answer");
    // Without a host owning the address, the port is closed.
    let mut config = BorderConfig::new(vec![pan_config()]);
    config.host_owns_router_address = false;
    let mut router = BorderRouter::new(Instant::now(), config);
    for f in device_frames(&p, d.eui64()) {
        router.handle_frame(Instant::now(), 0, MacFrame::new(&f).unwrap());
    }
    assert!(router.poll_host().is_none());
    assert_eq!(router.stats().pans[0].drops.port_closed, 1);
}
