//! Fuzzes the radio input path of a 6LoWPAN device and of a border router's adaptation layer:
//! bytes as a ZEP datagram (even first byte) or a raw MAC frame (odd), into an attached
//! `LowpanDevice` (a stand-in router's RA with PIO and 6CO taken first) and into an
//! `Adaptation` with a bounded reassembly table. Nothing may panic; whatever the device sends
//! in answer must be a frame that parses.

#![no_main]

use std::net::Ipv6Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::addr::Eui64;
use v6iot_sdk::coap::{Config, Device, NoTimers, Resource, ResourceTree, Response};
use v6iot_sdk::lowpan::Adaptation;
use v6iot_sdk::lowpan::device::{LowpanConfig, LowpanDevice};
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{CompressOptions, LinkAddrs};
use v6iot_sdk::lowpan::nd::{self, ContextOption, Icmpv6, PrefixInfo, RouterAdvert};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::{MacFrame, zep};
use v6iot_sdk::time::Instant;

const PAN: PanId = PanId(0xabcd);
const ROUTER: LinkAddr = LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]);
const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0);

fn tree() -> Arc<ResourceTree<NoTimers>> {
    static TREE: OnceLock<Arc<ResourceTree<NoTimers>>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = ResourceTree::new();
        let _ = t.add(Resource::new("v").get(|_, _| Response::content(0, vec![1; 300]).into()));
        Arc::new(t)
    })
    .clone()
}

/// The RA frame that attaches the device.
fn ra_frame() -> Vec<u8> {
    let ra = Icmpv6::RouterAdvert(RouterAdvert {
        hop_limit: 64,
        router_lifetime: 1800,
        source_ll: Some(ROUTER),
        prefixes: vec![PrefixInfo {
            prefix: PREFIX,
            len: 64,
            on_link: false,
            autonomous: true,
            valid_lifetime: 3600,
            preferred_lifetime: 3600,
        }],
        contexts: vec![ContextOption {
            cid: 0,
            compress: true,
            prefix: PREFIX,
            len: 64,
            lifetime_minutes: 60,
        }],
        ..RouterAdvert::default()
    });
    let packet = nd::packet(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        nd::ALL_NODES,
        &ra,
    );
    let mut a: Adaptation<Instant> =
        Adaptation::new(ReassemblyConfig::DEVICE, CompressOptions::default(), 0);
    let header = DataHeader {
        sequence: 0,
        pan: PAN,
        dst: LinkAddr::BROADCAST,
        src: ROUTER,
        ack_request: false,
    };
    let mut frame = Vec::new();
    a.send(
        &packet,
        LinkAddrs {
            src: ROUTER,
            dst: LinkAddr::BROADCAST,
        },
        header.max_payload(),
        |p| {
            let mut f = [0; 127];
            if let Ok(n) = header.emit(p, &mut f) {
                frame = f[..n].to_vec();
            }
        },
    )
    .expect("the RA fits a frame");
    frame
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let frame_bytes: &[u8] = if sel & 1 == 0 {
        match zep::decode(rest) {
            Ok(z) => z.frame.as_bytes(),
            Err(_) => return,
        }
    } else {
        rest
    };
    let now = Instant::ZERO;
    let eui = Eui64([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]);
    let mut dev = LowpanDevice::new(
        now,
        LowpanConfig::new(PAN, eui),
        Device::new(Config::default(), 1, tree(), NoTimers),
    );
    dev.handle_frame(now, MacFrame::new(&ra_frame()).expect("RA frame"));
    assert!(dev.address().is_some(), "the RA attaches the device");
    while dev.poll_transmit().is_some() {}

    let mut router: Adaptation<Instant> = Adaptation::new(
        ReassemblyConfig {
            max_datagrams: 4,
            max_per_source: 2,
            timeout: Duration::from_secs(60),
        },
        CompressOptions::default(),
        0,
    );
    // The same bytes, split into frames at 0xfe bytes, so fragments can follow one another.
    for (i, piece) in frame_bytes.split(|&b| b == 0xfe).enumerate() {
        let t = now + Duration::from_secs(i as u64);
        let Ok(frame) = MacFrame::new(piece) else {
            continue;
        };
        dev.handle_frame(t, frame);
        if let Ok((h, payload)) = DataHeader::parse(frame) {
            let _ = router.receive(
                t,
                LinkAddrs {
                    src: h.src,
                    dst: h.dst,
                },
                payload,
            );
        }
        while let Some(out) = dev.poll_transmit() {
            assert!(
                DataHeader::parse(out.frame()).is_ok(),
                "the device sends only good frames"
            );
        }
    }
    dev.handle_timeout(now + Duration::from_secs(3600));
    assert!(router.reassembly().in_progress() <= 4);
});
