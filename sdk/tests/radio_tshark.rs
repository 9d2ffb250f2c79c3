//! Wireshark agrees with our radio layer: pcap files written by `PcapRadio` (link types 195
//! and 230) and ZEP datagrams captured live on loopback decode as IEEE 802.15.4 data frames
//! with a good FCS, with the addresses we sent.
//!
//! `scripts/test` installs Debian's `tshark`; without it these tests fail, naming it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod tshark;

use std::net::UdpSocket;
use std::time::Duration;

use tshark::{Tshark, temp_dir};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::memory::Medium;
use v6iot_sdk::radio::pcap::{LinkType, PcapRadio};
use v6iot_sdk::radio::zep_udp::{ZepConfig, ZepRadio};
use v6iot_sdk::radio::{MacFrame, Radio};

const DEVICE: [u8; 8] = [0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef];
const ROUTER: [u8; 8] = [0x02, 0, 0, 0, 0, 0, 0, 0x01];

/// A 6LoWPAN payload Wireshark decodes: the uncompressed-IPv6 dispatch (0x41) and an IPv6
/// header with no next header (59), hop limit `hop`, fe80::1 → fe80::2.
fn ipv6_payload(hop: u8) -> Vec<u8> {
    let mut p = vec![0x41, 0x60, 0, 0, 0, 0, 0, 59, hop];
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p
}

/// `count` data frames from the device to the router, sequence numbers 0.., each carrying
/// [`ipv6_payload`] with hop limit 64 + i.
fn frames(count: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let header = DataHeader {
                sequence: i,
                pan: PanId(0xabcd),
                dst: LinkAddr::Extended(ROUTER),
                src: LinkAddr::Extended(DEVICE),
                ack_request: false,
            };
            let mut buf = [0; 127];
            let payload = ipv6_payload(64 + i);
            let n = header.emit(&payload, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn capture_through_pcap_radio(link: LinkType) -> std::path::PathBuf {
    let dir = temp_dir("radio-pcap");
    let path = dir.join(format!("frames-{}.pcap", link.number()));
    let medium = Medium::new();
    let file = std::fs::File::create(&path).unwrap();
    let mut t = 0;
    let mut radio = PcapRadio::new(medium.attach(), file, link)
        .unwrap()
        .with_clock(move || {
            t += 1;
            Duration::from_millis(1_700_000_000_000 + t)
        });
    let mut peer = medium.attach();
    for f in frames(3) {
        radio.transmit(MacFrame::new(&f).unwrap()).unwrap();
    }
    // One frame the other way: received frames are recorded too.
    let back = DataHeader {
        sequence: 9,
        pan: PanId(0xabcd),
        dst: LinkAddr::Extended(DEVICE),
        src: LinkAddr::Extended(ROUTER),
        ack_request: false,
    };
    let mut buf = [0; 127];
    let n = back.emit(&ipv6_payload(255), &mut buf).unwrap();
    peer.transmit(MacFrame::new(&buf[..n]).unwrap()).unwrap();
    let mut rx = [0; 127];
    assert!(radio.receive(&mut rx, Duration::ZERO).unwrap().is_some());
    assert_eq!(radio.frames(), 4);
    assert_eq!(radio.capture_errors(), 0);
    radio.flush().unwrap();
    path
}

#[test]
fn pcap_with_fcs_decodes_as_802154_with_good_fcs() {
    let tshark = Tshark::find();
    let path = capture_through_pcap_radio(LinkType::WithFcs);
    let rows = tshark.fields(
        &path,
        &[],
        &[
            "frame.protocols",
            "wpan.seq_no",
            "wpan.src64",
            "wpan.dst64",
            "wpan.fcs_ok",
            "ipv6.hlim",
        ],
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], "wpan:6lowpan:ipv6", "frame {i}: {row:?}");
        assert_eq!(row[4], "1", "frame {i}: FCS not good: {row:?}");
    }
    assert_eq!(rows[0][1], "0");
    assert_eq!(rows[0][2], "02:12:34:56:78:ab:cd:ef");
    assert_eq!(rows[0][3], "02:00:00:00:00:00:00:01");
    assert_eq!(rows[2][5], "66");
    assert_eq!(rows[3][1], "9");
    assert_eq!(rows[3][2], "02:00:00:00:00:00:00:01");
    assert_eq!(
        tshark.count(
            &path,
            &[],
            "wpan.fcs.bad || _ws.malformed || _ws.expert.severity >= 0x00600000"
        ),
        0
    );
}

#[test]
fn pcap_without_fcs_decodes_as_802154() {
    let tshark = Tshark::find();
    let path = capture_through_pcap_radio(LinkType::NoFcs);
    let rows = tshark.fields(
        &path,
        &[],
        &["frame.protocols", "wpan.seq_no", "wpan.src64"],
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|r| r[0] == "wpan:6lowpan:ipv6"), "{rows:?}");
    assert_eq!(rows[2][1], "2");
    assert_eq!(tshark.count(&path, &[], "_ws.malformed"), 0);
}

#[test]
fn zep_on_loopback_decodes_as_zep_then_802154_with_good_fcs() {
    v6iot_testkit::require_root("capturing on loopback with tshark");
    let tshark = Tshark::find();
    let rx = UdpSocket::bind("[::1]:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let dir = temp_dir("radio-zep");
    let path = dir.join("zep.pcap");
    let capture = tshark.capture_loopback(&path, &format!("udp dst port {port}"), 3);
    let mut radio = ZepRadio::bind(
        "[::1]:0".parse().unwrap(),
        ZepConfig {
            remote: rx.local_addr().unwrap(),
            channel: 26,
            device_id: 7,
        },
    )
    .unwrap();
    for f in frames(3) {
        radio.transmit(MacFrame::new(&f).unwrap()).unwrap();
    }
    capture.finish();
    let decode_as = [format!("udp.port=={port},zep")];
    let rows = tshark.fields(
        &path,
        &decode_as,
        &[
            "frame.protocols",
            "zep.version",
            "zep.channel_id",
            "zep.device_id",
            "zep.seqno",
            "wpan.src64",
            "wpan.fcs_ok",
        ],
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row[0].ends_with("udp:zep:wpan:6lowpan:ipv6"),
            "frame {i}: {row:?}"
        );
        assert_eq!(
            &row[1..5],
            ["2", "26", "7", &i.to_string()],
            "frame {i}: {row:?}"
        );
        assert_eq!(row[5], "02:12:34:56:78:ab:cd:ef");
        assert_eq!(row[6], "1", "frame {i}: FCS not good: {row:?}");
    }
    assert_eq!(
        tshark.count(&path, &decode_as, "wpan.fcs.bad || _ws.malformed"),
        0
    );
}
