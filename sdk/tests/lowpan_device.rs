//! The 6LoWPAN device against a stand-in router (`tests/lowpan/`): it attaches (RS → RA with
//! PIO and 6CO), forms the planned address, registers, reports, takes commands and Observe,
//! and moves payloads larger than a frame in fragments — over in-memory radios on virtual time,
//! and over ZEP on loopback with a pcap that tshark decodes as 802.15.4 → 6LoWPAN → IPv6 → UDP
//! → CoAP without a malformed frame. Bad input is counted, lifetimes expire.
//!
//! `scripts/test` installs Debian's `tshark`; without it the ZEP test fails, naming it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod lowpan;
mod tshark;

use std::net::SocketAddrV6;
use std::time::Duration;

use v6iot_sdk::time::Instant;

use coap_lite::{CoapOption, MessageClass, RequestType, ResponseType};
use common::{Meter, Thing, config, tree};
use lowpan::{PAN, PREFIX, ROUTER_GLOBAL, ROUTER_LL, StandIn};
use v6iot_sdk::addr::{DeviceAddress, SitePrefix};
use v6iot_sdk::coap::{Changed, Device, content_format as cf};
use v6iot_sdk::lowpan::device::{LowpanConfig, LowpanDevice, LowpanEvent, UplinkTarget};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::memory::Medium;
use v6iot_sdk::radio::{MacFrame, Radio};
use v6iot_sdk::uplink::UplinkConfig;

fn planned() -> DeviceAddress {
    let site: SitePrefix = "2001:db8:1200::/48".parse().unwrap();
    DeviceAddress::new(site, 3, 5, 0x12, 0x3456_78ab_cdef).unwrap()
}

/// A SenML-CBOR report (tshark decodes it as CBOR).
fn senml_report() -> Vec<u8> {
    use v6iot_sdk::senml::{self, PackBuilder, Record};
    let pack = PackBuilder::new()
        .base_name("urn:dev:v6iot:345678abcdef:")
        .record(Record::measurement("temp", "Cel", 21.5))
        .build();
    senml::to_cbor(&pack).unwrap()
}

fn device(now: Instant) -> LowpanDevice<Thing> {
    let coap = Device::new(config(), 7, tree(), Thing::default());
    LowpanDevice::new(now, LowpanConfig::new(PAN, planned().eui64()), coap).with_uplink(
        UplinkConfig::new("[::]:0".parse().unwrap(), "dev-42"),
        UplinkTarget::Router { port: 5683 },
    )
}

/// A device and the stand-in router on two radios of one channel.
struct Net<D: Radio, R: Radio> {
    dev: LowpanDevice<Thing>,
    dev_radio: D,
    router: StandIn,
    router_radio: R,
    /// How long a receive may wait (0 for in-memory radios).
    wait: Duration,
    /// Every frame the device sent, in order.
    sent: Vec<Vec<u8>>,
}

impl<D: Radio, R: Radio> Net<D, R> {
    /// Moves frames both ways until neither side has anything more to say.
    fn pump(&mut self, now: Instant) {
        let mut buf = [0_u8; 127];
        loop {
            let mut moved = false;
            // What a driver with a store does: write the OSCORE state asked for, then confirm.
            while let Some(state) = self.dev.coap().state_to_persist() {
                self.dev.coap_mut().state_persisted(now, state);
                self.dev.flush();
            }
            while let Some(f) = self.dev.poll_transmit() {
                self.sent.push(f.as_bytes().to_vec());
                self.dev_radio.transmit(f.frame()).unwrap();
                moved = true;
            }
            while let Some(r) = self.router_radio.receive(&mut buf, self.wait).unwrap() {
                let bytes = r.frame.as_bytes().to_vec();
                for f in self.router.handle_frame(now, &bytes) {
                    self.router_radio
                        .transmit(MacFrame::new(&f).unwrap())
                        .unwrap();
                }
                moved = true;
            }
            while let Some(r) = self.dev_radio.receive(&mut buf, self.wait).unwrap() {
                self.dev.handle_frame(now, r.frame);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// The router's CoAP message to the device's global address.
    fn send_to_device(&mut self, now: Instant, msg: &coap_lite::Packet) {
        let to = SocketAddrV6::new(self.dev.address().unwrap(), 5683, 0, 0);
        for f in self.router.coap_to(to, msg) {
            self.router_radio
                .transmit(MacFrame::new(&f).unwrap())
                .unwrap();
        }
        self.pump(now);
    }
}

fn memory_net(now: Instant) -> Net<impl Radio, impl Radio> {
    let medium = Medium::new();
    Net {
        dev: device(now),
        dev_radio: medium.attach(),
        router: StandIn::default(),
        router_radio: medium.attach(),
        wait: Duration::ZERO,
        sent: Vec::new(),
    }
}

/// Attach, register: returns the time after.
fn attach_and_register<D: Radio, R: Radio>(net: &mut Net<D, R>, now: Instant) {
    net.dev.handle_timeout(now);
    net.pump(now);
    assert_eq!(net.router.solicitations, 1);
    let at = match net.dev.poll_event() {
        Some(LowpanEvent::Attached(at)) => at,
        other => panic!("expected Attached, got {other:?}"),
    };
    assert_eq!(
        at.address,
        planned().to_ipv6(),
        "SLAAC gives the planned address"
    );
    assert_eq!(at.router_global, ROUTER_GLOBAL);
    assert_eq!(at.router_ll, ROUTER_LL);
    assert_eq!(at.mtu, Some(1280));
    assert_eq!(
        net.dev.adaptation().contexts.get(0).unwrap().prefix(),
        PREFIX,
        "6CO learned"
    );
    assert!(net.dev.coap().registration().unwrap().is_registered());
    let regs = net.router.requests_to("rd");
    assert_eq!(regs.len(), 1);
    assert_eq!(*regs[0].from.ip(), planned().to_ipv6());
    assert_eq!(regs[0].to, ROUTER_GLOBAL);
}

#[test]
fn attaches_registers_reports_and_takes_commands_over_in_memory_radios() {
    let now = Instant::now();
    let mut net = memory_net(now);
    attach_and_register(&mut net, now);

    // The registration's frame: both global addresses elided by context 0 (IPHC 0x7e 0x77).
    let reg_frame = net
        .sent
        .iter()
        .find(|f| f.len() > 21 && f[21] >> 5 == 0b011 && f[22] == 0x77);
    assert!(
        reg_frame.is_some(),
        "a frame with SAC/DAC and both addresses elided"
    );

    // Telemetry.
    let body = vec![0xa5; 40];
    net.dev
        .coap_mut()
        .report(now, cf::SENML_CBOR, body.clone())
        .unwrap();
    net.dev.flush();
    net.pump(now);
    let reports = net.router.requests_to("t");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].packet.payload, body);
    assert_eq!(net.dev.coap().reporter().unwrap().stats().acked, 1);

    // A command: PUT /value 42, then GET it back.
    let mut put = net.router.request(RequestType::Put, "value", 0x51);
    put.payload = b"42".to_vec();
    net.send_to_device(now, &put);
    assert_eq!(net.dev.coap().app().value, 42);
    let changed = net.router.responses(0x51);
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0].header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    let get = net.router.request(RequestType::Get, "value", 0x52);
    net.send_to_device(now, &get);
    assert_eq!(net.router.responses(0x52)[0].payload, b"42");

    // Observe: the registration's answer, then a notification when the value changes.
    let mut obs = net.router.request(RequestType::Get, "value", 0x53);
    obs.add_option(CoapOption::Observe, vec![]);
    net.send_to_device(now, &obs);
    assert_eq!(net.dev.coap().endpoint().observer_count(), 1);
    net.dev.coap_mut().app_mut().value = 7;
    let id = net.dev.coap().tree().find("value").unwrap();
    net.dev.coap_mut().notify(now, Changed::NONE.with(id));
    net.dev.flush();
    net.pump(now);
    let notes = net.router.responses(0x53);
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[1].payload, b"7");

    let s = net.dev.stats();
    assert_eq!(
        (
            s.bad_mac,
            s.bad_lowpan,
            s.bad_ip,
            s.bad_checksum,
            s.no_route
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(s.advertisements, 1);
    assert!(s.frames_in >= 5 && s.frames_out >= 6, "{s:?}");
    assert!(net.router.refused.is_empty(), "{:?}", net.router.refused);
}

#[test]
fn payloads_larger_than_a_frame_go_in_fragments_both_ways() {
    let now = Instant::now();
    let mut net = memory_net(now);
    attach_and_register(&mut net, now);
    let before = net.sent.len();

    // Down: a 600-byte upload in one CoAP message (fragmented by the router).
    let mut post = net.router.request(RequestType::Post, "upload", 0x61);
    post.payload = (0..600).map(|i| (i % 251) as u8).collect();
    net.send_to_device(now, &post);
    assert_eq!(net.dev.coap().app().uploaded, post.payload);
    assert_eq!(net.dev.adaptation().reassembly().stats().completed, 1);

    // Up: GET /big answers with a 1024-byte Block2 block: one datagram in many frames.
    let get = net.router.request(RequestType::Get, "big", 0x62);
    net.send_to_device(now, &get);
    let answer = net.router.responses(0x62);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].payload, common::big_body()[..1024]);
    let frag1 = net.sent[before..]
        .iter()
        .filter(|f| f[21] & 0xf8 == 0xc0)
        .count();
    let fragn = net.sent[before..]
        .iter()
        .filter(|f| f[21] & 0xf8 == 0xe0)
        .count();
    assert_eq!(frag1, 1, "one fragmented datagram");
    assert!(
        fragn >= 10,
        "a 1 KiB block takes more than ten FRAGNs: {fragn}"
    );
    assert!(net.sent.iter().all(|f| f.len() <= 125));
    assert_eq!(net.router.adaptation.reassembly().stats().completed, 1);
}

#[test]
fn bad_input_is_counted_and_the_device_keeps_working() {
    let now = Instant::now();
    let mut net = memory_net(now);
    attach_and_register(&mut net, now);
    let me = LinkAddr::Extended(planned().eui64().0);
    let frame = |pan: PanId, dst: LinkAddr, payload: &[u8]| {
        let h = DataHeader {
            sequence: 9,
            pan,
            dst,
            src: ROUTER_LL,
            ack_request: false,
        };
        let mut f = [0; 127];
        let n = h.emit(payload, &mut f).unwrap();
        f[..n].to_vec()
    };
    let inject =
        |net: &mut Net<_, _>, f: &[u8]| net.dev.handle_frame(now, MacFrame::new(f).unwrap());
    inject(&mut net, &[0x02, 0x00, 0x01]); // an ACK frame
    inject(&mut net, &frame(PanId(0x1111), me, &[0x7a, 0x33, 0x3a])); // another PAN
    inject(
        &mut net,
        &frame(PAN, LinkAddr::Extended([2, 9, 9, 9, 9, 9, 9, 9]), &[0x7a]),
    ); // not us
    inject(&mut net, &frame(PAN, me, &[0x7a, 0xf7, 0x55])); // unknown context 5
    inject(&mut net, &frame(PAN, me, &[0x50, 1, 2])); // broadcast header: unsupported
    // A UDP datagram with a wrong checksum.
    let to = SocketAddrV6::new(planned().to_ipv6(), 5683, 0, 0);
    let mut p = lowpan::udp_packet(
        SocketAddrV6::new(ROUTER_GLOBAL, 5683, 0, 0),
        to,
        b"\x40\x01\x00\x01",
    );
    p[46] ^= 0xff;
    for f in net.router.frames(&p, me) {
        inject(&mut net, &f);
    }
    // A fragment flood: 5 datagrams from one source, never finished; the device keeps 2.
    for tag in 0..5_u16 {
        let [t0, t1] = tag.to_be_bytes();
        inject(
            &mut net,
            &frame(PAN, me, &[0xe1, 0x00, t0, t1, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
    }
    let s = net.dev.stats();
    assert_eq!((s.bad_mac, s.other_pan, s.not_for_us), (1, 1, 1));
    assert_eq!(s.bad_checksum, 1);
    assert_eq!(
        s.bad_lowpan,
        2 + 3,
        "unknown context, broadcast header, 3 fragments over the limit"
    );
    let r = net.dev.adaptation().reassembly();
    assert_eq!(r.in_progress(), 2);
    // The device's table holds 2 datagrams in all, so the third is refused as "full".
    assert_eq!(r.stats().table_full, 3);
    // An RA with router lifetime 0 is not taken.
    net.router.lifetimes.0 = 0;
    for f in net.router.advertise() {
        inject(&mut net, &f);
    }
    assert_eq!(net.dev.stats().ignored_ra, 1);
    assert!(net.dev.address().is_some(), "still attached");
    // Still works: a GET.
    let get = net.router.request(RequestType::Get, "value", 0x71);
    net.send_to_device(now, &get);
    assert_eq!(net.router.responses(0x71).len(), 1);
    // The unfinished fragments time out.
    net.dev.handle_timeout(now + Duration::from_secs(61));
    assert_eq!(net.dev.adaptation().reassembly().in_progress(), 0);
    assert_eq!(net.dev.adaptation().reassembly().stats().timeouts, 2);
}

#[test]
fn solicits_with_back_off_refreshes_and_detaches_when_the_router_goes_quiet() {
    let t0 = Instant::now();
    let mut net = memory_net(t0);
    net.router.answer_rs = false;
    // Solicitations at 0, 4, 12, 28 s (4 s doubling).
    let mut times = vec![];
    for _ in 0..4 {
        let now = net.dev.poll_timeout().unwrap();
        net.dev.handle_timeout(now);
        net.pump(now);
        times.push(now.duration_since(t0).as_secs());
    }
    assert_eq!(times, [0, 4, 12, 28]);
    assert_eq!(net.router.solicitations, 4);
    // Now the router answers, with a 40 s router lifetime.
    net.router.answer_rs = true;
    net.router.lifetimes = (40, 3600, 60);
    let now = net.dev.poll_timeout().unwrap();
    net.dev.handle_timeout(now);
    net.pump(now);
    assert!(matches!(
        net.dev.poll_event(),
        Some(LowpanEvent::Attached(_))
    ));
    // A refresh at 3/4 of 40 s, answered: still attached.
    let refresh = net.dev.poll_timeout().unwrap();
    assert_eq!(refresh.duration_since(now), Duration::from_secs(30));
    net.dev.handle_timeout(refresh);
    net.pump(refresh);
    assert_eq!(net.router.solicitations, 6);
    assert!(
        net.dev.poll_event().is_none(),
        "same router, same prefix: no new event"
    );
    // The router goes quiet: more refreshes, then detached at the end of the lifetime.
    net.router.answer_rs = false;
    let mut now = refresh;
    while net.dev.address().is_some() {
        now = net
            .dev
            .coap()
            .poll_timeout()
            .into_iter()
            .chain(net.dev.poll_timeout())
            .min()
            .unwrap();
        net.dev.handle_timeout(now);
        net.pump(now);
    }
    assert_eq!(now.duration_since(refresh), Duration::from_secs(40));
    assert_eq!(net.dev.poll_event(), Some(LowpanEvent::Detached));
    assert!(
        net.dev.adaptation().contexts.is_empty(),
        "contexts go with the router"
    );
}

#[test]
fn oscore_registration_reports_and_commands_over_6lowpan() {
    use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext};
    let input = |sender: &[u8], recipient: &[u8]| ContextInput {
        master_secret: vec![0x11; 16],
        master_salt: vec![0x9e, 0x7c, 0x01, 0x02],
        id_context: None,
        sender_id: sender.to_vec(),
        recipient_id: recipient.to_vec(),
    };
    let now = Instant::now();
    let mut net = memory_net(now);
    let device_ctx = SecurityContext::new(&input(&[0x2a], &[]), ContextConfig::default()).unwrap();
    let coap = Device::new(config(), 7, tree(), Thing::default()).with_credentials(device_ctx);
    net.dev = LowpanDevice::new(now, LowpanConfig::new(PAN, planned().eui64()), coap).with_uplink(
        UplinkConfig::new("[::]:0".parse().unwrap(), "dev-42"),
        UplinkTarget::Router { port: 5683 },
    );
    let mut edge_ctx =
        SecurityContext::new(&input(&[], &[0x2a]), ContextConfig::default()).unwrap();
    let mark = edge_ctx.mark_to_persist().unwrap();
    edge_ctx.persisted(mark);
    net.router.oscore = Some(edge_ctx);

    attach_and_register(&mut net, now);
    net.dev
        .coap_mut()
        .report(now, cf::SENML_CBOR, senml_report())
        .unwrap();
    net.dev.flush();
    net.pump(now);
    let reports = net.router.requests_to("t");
    assert_eq!(reports.len(), 1);
    assert!(reports[0].protected, "telemetry goes OSCORE-protected");
    assert!(
        net.router.requests_to("rd")[0].protected,
        "so does the registration"
    );
    assert_eq!(
        net.dev.coap().reporter().unwrap().stats().acked,
        1,
        "the protected 2.04 verified"
    );

    // A protected command works; the same command unprotected gets 4.01 and changes nothing.
    let mut put = net.router.request(RequestType::Put, "value", 0x41);
    put.payload = b"9".to_vec();
    let outer = net.router.protect(&put);
    net.send_to_device(now, &outer);
    assert_eq!(net.dev.coap().app().value, 9);
    let answer = net.router.responses(0x41);
    assert_eq!(answer.len(), 1);
    assert_eq!(
        answer[0].header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    let mut plain = net.router.request(RequestType::Put, "value", 0x42);
    plain.payload = b"1".to_vec();
    net.send_to_device(now, &plain);
    assert_eq!(net.dev.coap().app().value, 9);
    assert_eq!(
        net.router.responses(0x42)[0].header.code,
        MessageClass::Response(ResponseType::Unauthorized)
    );
    assert!(net.router.refused.is_empty(), "{:?}", net.router.refused);
}

#[test]
fn over_zep_on_loopback_tshark_decodes_every_frame_down_to_coap() {
    use v6iot_sdk::radio::pcap::{LinkType, PcapRadio};
    use v6iot_sdk::radio::zep_udp::{ZepConfig, ZepRadio};

    let tshark = tshark::Tshark::find();
    let dir = tshark::temp_dir("lowpan-zep");
    let pcap = dir.join("device.pcap");
    let dev_sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let router_sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let zep = |remote, device_id| ZepConfig {
        remote,
        channel: 26,
        device_id,
    };
    let dev_radio = ZepRadio::new(
        dev_sock.try_clone().unwrap(),
        zep(router_sock.local_addr().unwrap(), 2),
    );
    let router_radio = ZepRadio::new(router_sock, zep(dev_sock.local_addr().unwrap(), 1));
    let mut t = 0_u64;
    let dev_radio = PcapRadio::new(
        dev_radio,
        std::fs::File::create(&pcap).unwrap(),
        LinkType::WithFcs,
    )
    .unwrap()
    .with_clock(move || {
        t += 1;
        Duration::from_millis(1_765_000_000_000 + t)
    });
    let now = Instant::now();
    let mut net = Net {
        dev: device(now),
        dev_radio,
        router: StandIn::default(),
        router_radio,
        wait: Duration::from_millis(50),
        sent: Vec::new(),
    };
    attach_and_register(&mut net, now);
    net.dev
        .coap_mut()
        .report(now, cf::SENML_CBOR, senml_report())
        .unwrap();
    net.dev.flush();
    net.pump(now);
    let mut put = net.router.request(RequestType::Put, "value", 0x31);
    put.payload = b"5".to_vec();
    net.send_to_device(now, &put);
    let get = net.router.request(RequestType::Get, "big", 0x32);
    net.send_to_device(now, &get);
    assert_eq!(
        net.router.responses(0x32)[0].payload,
        common::big_body()[..1024]
    );
    net.dev_radio.flush().unwrap();
    let frames = net.dev_radio.frames();
    assert!(frames >= 20, "{frames} frames captured");

    // The RA is in the capture, so Wireshark learns context 0 from its 6CO.
    let rows = tshark.fields(
        &pcap,
        &[],
        &["frame.protocols", "wpan.fcs_ok", "ipv6.src", "ipv6.dst"],
    );
    assert_eq!(rows.len() as u64, frames);
    let verbose = || tshark.verbose(&pcap, &[]);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[1], "1", "frame {i}: bad FCS\n{}", verbose());
        assert!(r[0].starts_with("wpan:6lowpan"), "frame {i}: {r:?}");
    }
    assert_eq!(
        tshark.count(
            &pcap,
            &[],
            // Malformed, or any expert note of warning level (0x00600000) or above.
            "_ws.malformed || _ws.expert.severity >= 0x00600000 || wpan.fcs.bad"
        ),
        0,
        "{}",
        verbose()
    );
    // Whole datagrams (and reassembled ones) decode to CoAP with the planned addresses.
    let coap = tshark.fields(
        &pcap,
        &[],
        &[
            "ipv6.src",
            "ipv6.dst",
            "coap.code",
            "coap.opt.uri_path_recon",
        ],
    );
    let me = planned().to_ipv6().to_string();
    let router = ROUTER_GLOBAL.to_string();
    let coap: Vec<_> = coap.into_iter().filter(|r| !r[2].is_empty()).collect();
    assert!(
        coap.iter()
            .any(|r| r[0] == me && r[1] == router && r[2] == "2" && r[3] == "/rd"),
        "registration POST /rd: {coap:?}"
    );
    assert!(
        coap.iter().any(|r| r[0] == me && r[3] == "/t"),
        "telemetry POST /t: {coap:?}"
    );
    assert!(
        coap.iter()
            .any(|r| r[0] == me && r[1] == router && r[2] == "69"),
        "2.05 answers: {coap:?}"
    );
    assert!(
        coap.iter()
            .any(|r| r[1] == me && r[2] == "3" && r[3] == "/value"),
        "the PUT command: {coap:?}"
    );
    // The fragmented block: tshark reassembles it and finds the 1024 bytes we sent.
    let payload = tshark.fields(
        &pcap,
        &[],
        &[
            "6lowpan.reassembled.length",
            "coap.opt.block_number",
            "coap.block_payload",
        ],
    );
    let whole: Vec<_> = payload.iter().filter(|r| !r[0].is_empty()).collect();
    assert_eq!(whole.len(), 1, "{payload:?}");
    let hex: String = common::big_body()[..1024]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        whole[0][2].replace(':', "").contains(&hex),
        "reassembled payload differs: {whole:?}"
    );
}

#[test]
fn the_blocking_driver_runs_a_device_over_zep_until_it_is_registered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use v6iot_sdk::lowpan::driver::{self, DriverEvent};
    use v6iot_sdk::radio::zep_udp::{ZepConfig, ZepRadio};
    use v6iot_sdk::store::NoStore;

    let dev_sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let router_sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let zep = |remote, device_id| ZepConfig {
        remote,
        channel: 26,
        device_id,
    };
    let mut dev_radio = ZepRadio::new(
        dev_sock.try_clone().unwrap(),
        zep(router_sock.local_addr().unwrap(), 2),
    );
    let mut router_radio = ZepRadio::new(router_sock, zep(dev_sock.local_addr().unwrap(), 1));
    let stop = Arc::new(AtomicBool::new(false));
    let stop_dev = Arc::clone(&stop);
    let driver = std::thread::spawn(move || {
        let mut dev = device(Instant::now());
        let mut events = Vec::new();
        driver::run(
            &mut dev_radio,
            &mut dev,
            &mut NoStore,
            |e| events.push(e),
            // Until registered (or told to stop).
            |d| {
                stop_dev.load(Ordering::Relaxed)
                    || d.coap().registration().is_some_and(|r| r.is_registered())
            },
        )
        .unwrap();
        (dev.coap().registration().unwrap().is_registered(), events)
    });
    // The router side, in this thread, for at most 10 s.
    let mut router = StandIn::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0_u8; 127];
    while router.requests_to("rd").is_empty() && Instant::now() < deadline {
        if let Some(r) = router_radio
            .receive(&mut buf, Duration::from_millis(100))
            .unwrap()
        {
            let bytes = r.frame.as_bytes().to_vec();
            for f in router.handle_frame(Instant::now(), &bytes) {
                router_radio.transmit(MacFrame::new(&f).unwrap()).unwrap();
            }
        }
    }
    // The driver returns once the device has its 2.01; a stuck one is stopped after 5 s.
    let until = Instant::now() + Duration::from_secs(5);
    while !driver.is_finished() && Instant::now() < until {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let (registered, events) = driver.join().unwrap();
    assert_eq!(router.solicitations, 1);
    assert_eq!(router.requests_to("rd").len(), 1);
    assert!(registered, "the device saw its registration's 2.01");
    assert!(
        matches!(
            events.first(),
            Some(DriverEvent::Network(LowpanEvent::Attached(_)))
        ),
        "{events:?}"
    );
}

#[test]
fn the_frame_queue_and_the_event_queue_are_bounded() {
    let now = Instant::now();
    let mut net = memory_net(now);
    attach_and_register(&mut net, now);
    // A 1 KiB Block2 answer needs more than 10 frames: with room for 8 it is dropped whole.
    let mut small = LowpanConfig::new(PAN, planned().eui64());
    small.max_queued_frames = 8;
    let coap = Device::new(config(), 7, tree(), Thing::default());
    net.dev = LowpanDevice::new(now, small, coap);
    net.dev.handle_timeout(now);
    net.pump(now);
    assert!(matches!(
        net.dev.poll_event(),
        Some(LowpanEvent::Attached(_))
    ));
    let get = net.router.request(RequestType::Get, "big", 0x81);
    net.send_to_device(now, &get);
    assert!(net.router.responses(0x81).is_empty());
    assert_eq!(net.dev.stats().queue_full, 1);
    assert!(
        net.dev.poll_transmit().is_none(),
        "no part of the datagram was queued"
    );
    // A small answer still fits.
    let get = net.router.request(RequestType::Get, "value", 0x82);
    net.send_to_device(now, &get);
    assert_eq!(net.router.responses(0x82).len(), 1);

    // RAs with a new prefix each time: each is an Attached event; unpolled, 16 are kept.
    for i in 0..20_u16 {
        let mut ra = match net.router.router_advert() {
            v6iot_sdk::lowpan::nd::Icmpv6::RouterAdvert(ra) => ra,
            _ => unreachable!(),
        };
        ra.prefixes[0].prefix =
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x400 + i, 0, 0, 0, 0);
        let p = v6iot_sdk::lowpan::nd::packet(
            lowpan::ROUTER_LINK_LOCAL,
            v6iot_sdk::lowpan::nd::ALL_NODES,
            &v6iot_sdk::lowpan::nd::Icmpv6::RouterAdvert(ra),
        );
        for f in net.router.frames(&p, LinkAddr::BROADCAST) {
            net.dev.handle_frame(now, MacFrame::new(&f).unwrap());
        }
    }
    let events = std::iter::from_fn(|| net.dev.poll_event()).count();
    assert_eq!(events, 16);
    assert_eq!(net.dev.stats().advertisements, 21);
    assert_eq!(
        net.dev.address().unwrap().segments()[3],
        0x400 + 19,
        "the latest prefix is in force"
    );
}

/// A metering device (with an uplink to the router) and the stand-in router on in-memory
/// radios.
fn meter_net(now: Instant) -> (LowpanDevice<Meter>, impl Radio, StandIn, impl Radio) {
    let medium = Medium::new();
    let tree = std::sync::Arc::new(v6iot_sdk::coap::ResourceTree::new());
    let coap = Device::new(config(), 7, tree, Meter::default());
    let dev = LowpanDevice::new(now, LowpanConfig::new(PAN, planned().eui64()), coap).with_uplink(
        UplinkConfig::new("[::]:0".parse().unwrap(), "dev-42"),
        UplinkTarget::Router { port: 5683 },
    );
    (dev, medium.attach(), StandIn::default(), medium.attach())
}

/// Moves frames both ways between a metering device and the router until both are quiet.
fn pump_meter(
    now: Instant,
    dev: &mut LowpanDevice<Meter>,
    dev_radio: &mut impl Radio,
    router: &mut StandIn,
    router_radio: &mut impl Radio,
) {
    let mut buf = [0_u8; 127];
    loop {
        let mut moved = false;
        while let Some(f) = dev.poll_transmit() {
            dev_radio.transmit(f.frame()).unwrap();
            moved = true;
        }
        while let Some(r) = router_radio.receive(&mut buf, Duration::ZERO).unwrap() {
            for f in router.handle_frame(now, r.frame.as_bytes()) {
                router_radio.transmit(MacFrame::new(&f).unwrap()).unwrap();
            }
            moved = true;
        }
        while let Some(r) = dev_radio.receive(&mut buf, Duration::ZERO).unwrap() {
            dev.handle_frame(now, r.frame);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Issue 11's lost report: a report the application makes before the device has attached
/// (its first Router Solicitation went unanswered) waits for the uplink and is sent, and
/// acknowledged, once the device attaches and registers — it is not thrown away unheard.
#[test]
fn a_report_made_before_the_device_attaches_is_sent_once_it_has() {
    use v6iot_sdk::uplink::ReportEvent;
    let t0 = Instant::now();
    let (mut dev, mut dr, mut router, mut rr) = meter_net(t0);
    dev.coap_mut().app_mut().due = Some(t0 + Duration::from_secs(1));
    router.answer_rs = false;
    // The RS at 0 s goes unanswered; the report is made at 1 s, detached.
    for _ in 0..2 {
        let now = dev.poll_timeout().unwrap();
        dev.handle_timeout(now);
        pump_meter(now, &mut dev, &mut dr, &mut router, &mut rr);
    }
    assert_eq!(dev.coap().app().made, 1);
    assert!(dev.address().is_none(), "still detached");
    // The RS at 4 s is answered: attached, registered, and the report goes out.
    router.answer_rs = true;
    let now = dev.poll_timeout().unwrap();
    assert_eq!(now.duration_since(t0), Duration::from_secs(4));
    dev.handle_timeout(now);
    pump_meter(now, &mut dev, &mut dr, &mut router, &mut rr);
    assert!(dev.coap().registration().unwrap().is_registered());
    let reports = router.requests_to("t");
    assert_eq!(reports.len(), 1, "the report made while detached was sent");
    assert_eq!(reports[0].packet.payload, b"r1");
    assert_eq!(dev.coap().app().events, [ReportEvent::Acked]);
    let stats = dev.coap().reporter().unwrap().stats();
    assert_eq!((stats.queued, stats.acked), (1, 1));
}

/// A device that detaches and attaches again starts a new registration, but the reports it
/// queued meanwhile stay queued and are sent (the reporter is not replaced).
#[test]
fn reports_queued_while_detached_survive_a_new_attachment() {
    use v6iot_sdk::uplink::ReportEvent;
    let t0 = Instant::now();
    let (mut dev, mut dr, mut router, mut rr) = meter_net(t0);
    router.lifetimes = (40, 3600, 60);
    dev.handle_timeout(t0);
    pump_meter(t0, &mut dev, &mut dr, &mut router, &mut rr);
    assert!(dev.coap().registration().unwrap().is_registered());
    // The router goes quiet; the device detaches at 40 s.
    router.answer_rs = false;
    let mut now = t0;
    while dev.address().is_some() {
        now = dev.poll_timeout().unwrap();
        dev.handle_timeout(now);
        pump_meter(now, &mut dev, &mut dr, &mut router, &mut rr);
    }
    // A report while detached: its request has no route, so it waits (timeouts, retries).
    dev.coap_mut().app_mut().due = Some(now);
    dev.handle_timeout(now);
    pump_meter(now, &mut dev, &mut dr, &mut router, &mut rr);
    assert_eq!(dev.coap().app().made, 1);
    assert!(router.requests_to("t").is_empty());
    // The router answers again: the device attaches anew, registers, and sends the report.
    router.answer_rs = true;
    let end = now + Duration::from_secs(300);
    while router.requests_to("t").is_empty() || dev.coap().app().events.is_empty() {
        now = dev.poll_timeout().unwrap();
        assert!(
            now < end,
            "the report was never sent: {:?}",
            dev.coap().app().events
        );
        dev.handle_timeout(now);
        pump_meter(now, &mut dev, &mut dr, &mut router, &mut rr);
    }
    let reports = router.requests_to("t");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].packet.payload, b"r1");
    assert_eq!(
        dev.coap().app().events.last(),
        Some(&ReportEvent::Acked),
        "{:?}",
        dev.coap().app().events
    );
    assert_eq!(dev.coap().reporter().unwrap().stats().acked, 1);
    assert_eq!(router.requests_to("rd").len(), 2, "registered anew");
}
