//! Stateful IPHC (RFC 6282) and RFC 4944 fragmentation, from bytes upward:
//!
//! * header forms assembled by hand from RFC 6282 §3.1.1 / §3.2 / §4.3 (and the two IPHC
//!   headers of smoltcp's own tests, which are those forms),
//! * smoltcp 0.14 as an independent peer: it decompresses what we compress (with the CID byte
//!   it needs), we decompress what it compresses, and a fragmented UDP datagram from its test
//!   suite reassembles here with a good UDP checksum,
//! * frame sizes: a planned device's telemetry with the context against smoltcp's context-free
//!   compression of the same datagram,
//! * refusals, and a compress → decompress round-trip property.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::Ipv6Addr;
use std::time::Duration;

use v6iot_sdk::time::Instant;

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    SixlowpanAddressContext, SixlowpanIphcPacket, SixlowpanIphcRepr, SixlowpanNextHeader,
    SixlowpanUdpNhcPacket, SixlowpanUdpNhcRepr, UdpRepr,
};
use v6iot_sdk::lowpan::context::{Context, ContextTable};
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::lowpan::iphc::{
    self, CidByte, CompressOptions, DecompressError, LinkAddrs, fill_udp_checksum,
};
use v6iot_sdk::lowpan::{Adaptation, InputError};
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};

const DEVICE_LL: LinkAddr = LinkAddr::Extended([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]);
const ROUTER_LL: LinkAddr = LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]);

fn addr(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The PAN's prefix as context 0, as the router's 6CO gives it.
fn pan_contexts() -> ContextTable {
    let mut t = ContextTable::new();
    t.set(0, Context::new(addr("2001:db8:1200:305::"), 64));
    t
}

#[derive(Clone, Copy)]
struct Ip {
    tc: u8,
    flow: u32,
    next: u8,
    hop: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
}

impl Ip {
    fn new(src: &str, dst: &str, next: u8) -> Ip {
        Ip {
            tc: 0,
            flow: 0,
            next,
            hop: 64,
            src: addr(src),
            dst: addr(dst),
        }
    }

    fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let vtf = 6 << 28 | u32::from(self.tc) << 20 | self.flow;
        let mut p = vtf.to_be_bytes().to_vec();
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[self.next, self.hop]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(payload);
        p
    }

    /// A UDP packet with a correct checksum.
    fn udp(&self, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        let mut p = Ip { next: 17, ..*self }.packet(&u);
        fill_udp_checksum(&mut p);
        p
    }
}

fn compress_with(packet: &[u8], ll: LinkAddrs, ctx: &ContextTable, cid: CidByte) -> Vec<u8> {
    let mut out = [0; 64];
    let c = iphc::compress(
        packet,
        &ll,
        ctx,
        CompressOptions { cid_byte: cid },
        &mut out,
    )
    .unwrap();
    let mut v = out[..c.header_len].to_vec();
    v.extend_from_slice(&packet[c.consumed..]);
    v
}

fn compress(packet: &[u8], ll: LinkAddrs, ctx: &ContextTable) -> Vec<u8> {
    compress_with(packet, ll, ctx, CidByte::WhenNonZero)
}

fn decompress(data: &[u8], ll: LinkAddrs, ctx: &ContextTable) -> Vec<u8> {
    let mut out = vec![0; 1500];
    let n = iphc::decompress_packet(data, &ll, ctx, &mut out).unwrap();
    out.truncate(n);
    out
}

fn up() -> LinkAddrs {
    LinkAddrs {
        src: DEVICE_LL,
        dst: ROUTER_LL,
    }
}

/// Compresses to exactly `expected` (header bytes, then the payload) and back.
fn check_vector(packet: &[u8], ll: LinkAddrs, ctx: &ContextTable, expected: &[u8]) {
    let c = compress(packet, ll, ctx);
    assert_eq!(c, expected, "compressed form");
    assert_eq!(decompress(&c, ll, ctx), packet, "decompressed form");
}

#[test]
fn link_local_addresses_from_the_link_layer_take_no_bytes() {
    // RFC 6282 §3.1.1: TF = 11, NH inline (58), HLIM = 10 (64), SAM = 11, DAM = 11 — the first
    // header in smoltcp's IPHC tests.
    let p = Ip::new("fe80::12:3456:78ab:cdef", "fe80::1", 58).packet(&[0x80, 0, 0, 0]);
    check_vector(
        &p,
        up(),
        &ContextTable::new(),
        &[0x7a, 0x33, 0x3a, 0x80, 0, 0, 0],
    );
}

#[test]
fn link_local_inline_forms() {
    // Not derived from the frame's addresses: 64 bits (SAM = 01), 16 bits (DAM = 10).
    let p = Ip::new("fe80::1:2:3:4", "fe80::ff:fe00:beef", 58).packet(&[]);
    check_vector(
        &p,
        up(),
        &ContextTable::new(),
        &[0x7a, 0x12, 0x3a, 0, 1, 0, 2, 0, 3, 0, 4, 0xbe, 0xef],
    );
    // Short link-layer addresses: both elided.
    let short = LinkAddrs {
        src: LinkAddr::Short([0x00, 0x01]),
        dst: LinkAddr::Short([0xbe, 0xef]),
    };
    let p = Ip::new("fe80::ff:fe00:1", "fe80::ff:fe00:beef", 58).packet(&[]);
    check_vector(&p, short, &ContextTable::new(), &[0x7a, 0x33, 0x3a]);
}

#[test]
fn planned_device_to_router_with_context_0_takes_no_address_bytes() {
    // SAC = 1 SAM = 11, DAC = 1 DAM = 11, no CID byte (context 0); NHC UDP with the ports
    // inline (5683 is not 0xF0xx) and the checksum.
    let ip = Ip::new(
        "2001:db8:1200:305:12:3456:78ab:cdef",
        "2001:db8:1200:305::1",
        17,
    );
    let p = ip.udp(5683, 5683, b"hello");
    let sum = [p[46], p[47]];
    let mut expected = vec![0x7e, 0x77, 0xf0, 0x16, 0x33, 0x16, 0x33, sum[0], sum[1]];
    expected.extend_from_slice(b"hello");
    check_vector(&p, up(), &pan_contexts(), &expected);
    // With the CID byte: the second header of smoltcp's IPHC tests (0x7e 0xf7 0x00).
    let c = compress_with(&p, up(), &pan_contexts(), CidByte::Always);
    assert_eq!(&c[..3], &[0x7e, 0xf7, 0x00]);
    assert_eq!(decompress(&c, up(), &pan_contexts()), p);
}

#[test]
fn context_forms_16_and_64_bits_and_a_nonzero_context_id() {
    let mut ctx = ContextTable::new();
    ctx.set(3, Context::new(addr("2001:db8:1200:305::"), 64));
    // Source: IID not from the link layer, 64 bits inline; destination ::ff:fe00:1, 16 bits.
    let p = Ip::new(
        "2001:db8:1200:305:1:2:3:4",
        "2001:db8:1200:305::ff:fe00:1",
        58,
    )
    .packet(&[]);
    check_vector(
        &p,
        up(),
        &ctx,
        &[0x7a, 0xd6, 0x33, 0x3a, 0, 1, 0, 2, 0, 3, 0, 4, 0x00, 0x01],
    );
    // An address outside every context goes inline.
    let p = Ip::new("2001:db8:1200:305:12:3456:78ab:cdef", "2001:db8:99::1", 58).packet(&[]);
    let c = compress(&p, up(), &ctx);
    assert_eq!(&c[..3], &[0x7a, 0xf0, 0x30]);
    assert_eq!(c.len(), 3 + 1 + 16);
    assert_eq!(decompress(&c, up(), &ctx), p);
}

#[test]
fn multicast_unspecified_traffic_class_and_hop_limit_forms() {
    let ctx = ContextTable::new();
    // ff02::1 in 8 bits; hop limit 255.
    let mut ip = Ip::new("fe80::12:3456:78ab:cdef", "ff02::1", 58);
    ip.hop = 255;
    check_vector(
        &ip.packet(&[]),
        LinkAddrs {
            src: DEVICE_LL,
            dst: LinkAddr::BROADCAST,
        },
        &ctx,
        &[0x7b, 0x3b, 0x3a, 0x01],
    );
    // Solicited-node ff02::1:ff00:1 in 48 bits; the unspecified source is SAC = 1 SAM = 00.
    let ip = Ip::new("::", "ff02::1:ff00:1", 58);
    check_vector(
        &ip.packet(&[]),
        up(),
        &ctx,
        &[0x7a, 0x49, 0x3a, 0x02, 0x01, 0xff, 0x00, 0x00, 0x01],
    );
    // ff05::1:3 in 32 bits.
    let ip = Ip::new("fe80::12:3456:78ab:cdef", "ff05::1:3", 58);
    check_vector(
        &ip.packet(&[]),
        up(),
        &ctx,
        &[0x7a, 0x3a, 0x3a, 0x05, 0x01, 0x00, 0x03],
    );
    // TF: DSCP 46 (EF) alone in 1 byte (ECN|DSCP), flow label alone in 3, both in 4; hop 7 inline.
    let mut ip = Ip::new("fe80::12:3456:78ab:cdef", "fe80::1", 59);
    ip.hop = 7;
    ip.tc = 0xb8;
    check_vector(&ip.packet(&[]), up(), &ctx, &[0x70, 0x33, 0x2e, 59, 7]);
    ip.tc = 0;
    ip.flow = 0x1_2345;
    check_vector(
        &ip.packet(&[]),
        up(),
        &ctx,
        &[0x68, 0x33, 0x01, 0x23, 0x45, 59, 7],
    );
    ip.tc = 0xb9;
    check_vector(
        &ip.packet(&[]),
        up(),
        &ctx,
        &[0x60, 0x33, 0x6e, 0x01, 0x23, 0x45, 59, 7],
    );
}

#[test]
fn udp_port_forms() {
    let ip = Ip::new("fe80::12:3456:78ab:cdef", "fe80::1", 17);
    let cases: [(u16, u16, &[u8]); 4] = [
        (0xf0b1, 0xf0b2, &[0xf3, 0x12]),
        (5683, 0xf0aa, &[0xf1, 0x16, 0x33, 0xaa]),
        (0xf0aa, 5683, &[0xf2, 0xaa, 0x16, 0x33]),
        (5683, 5684, &[0xf0, 0x16, 0x33, 0x16, 0x34]),
    ];
    for (s, d, nhc) in cases {
        let p = ip.udp(s, d, b"x");
        let c = compress(&p, up(), &ContextTable::new());
        assert_eq!(&c[..2], &[0x7e, 0x33]);
        assert_eq!(&c[2..2 + nhc.len()], nhc, "ports {s:#x} {d:#x}");
        assert_eq!(decompress(&c, up(), &ContextTable::new()), p);
    }
}

#[test]
fn an_elided_udp_checksum_is_recomputed() {
    let p = Ip::new("fe80::12:3456:78ab:cdef", "fe80::1", 17).udp(5683, 5683, b"abc");
    // NHC with C = 1 and no checksum bytes.
    let c = [0x7e, 0x33, 0xf4, 0x16, 0x33, 0x16, 0x33, b'a', b'b', b'c'];
    assert_eq!(decompress(&c, up(), &ContextTable::new()), p);
}

#[test]
fn refusals() {
    let ctx = pan_contexts();
    let mut out = [0; 200];
    let mut err = |data: &[u8]| iphc::decompress_packet(data, &up(), &ctx, &mut out).unwrap_err();
    assert_eq!(err(&[0x41, 0x60]), DecompressError::NotIphc);
    assert_eq!(err(&[0x7a]), DecompressError::Truncated);
    assert_eq!(err(&[0x7a, 0x00, 0x3a, 1, 2]), DecompressError::Truncated);
    // Context 5 unknown.
    assert_eq!(
        err(&[0x7a, 0xf7, 0x55, 0x3a]),
        DecompressError::UnknownContext(5)
    );
    // DAC = 1 DAM = 00 and M = 1 DAC = 1 DAM = 01 are reserved.
    assert_eq!(err(&[0x7a, 0x34, 0x3a]), DecompressError::ReservedMode);
    assert_eq!(err(&[0x7a, 0x3d, 0x3a]), DecompressError::ReservedMode);
    // An extension-header NHC (1110 000 0, hop-by-hop).
    assert_eq!(
        err(&[0x7e, 0x33, 0xe0, 0, 0]),
        DecompressError::UnsupportedNhc(0xe0)
    );
    // Elided addresses with no link-layer address to derive them from.
    let none = LinkAddrs {
        src: LinkAddr::Absent,
        dst: LinkAddr::Absent,
    };
    assert_eq!(
        iphc::decompress_packet(&[0x7a, 0x33, 0x3a], &none, &ctx, &mut out),
        Err(DecompressError::NoLinkAddress)
    );
    // A datagram size below the headers.
    assert_eq!(
        iphc::decompress(&[0x7a, 0x33, 0x3a], &up(), &ctx, Some(20), &mut out),
        Err(DecompressError::BadLength)
    );
    // Not IPv6.
    assert!(
        iphc::compress(
            &[0x45; 40],
            &up(),
            &ctx,
            CompressOptions::default(),
            &mut out
        )
        .is_err()
    );
}

/// smoltcp's view of a context table: prefixes by ID (it only knows 64-bit contexts).
fn smoltcp_contexts() -> [SixlowpanAddressContext; 1] {
    [SixlowpanAddressContext([
        0x20, 0x01, 0x0d, 0xb8, 0x12, 0x00, 0x03, 0x05,
    ])]
}

#[test]
fn smoltcp_decompresses_what_we_compress_with_the_cid_byte() {
    let ip = Ip::new(
        "2001:db8:1200:305:12:3456:78ab:cdef",
        "2001:db8:1200:305::1",
        17,
    );
    let p = ip.udp(5683, 5683, b"telemetry");
    let c = compress_with(&p, up(), &pan_contexts(), CidByte::Always);
    let packet = SixlowpanIphcPacket::new_checked(&c[..]).unwrap();
    let repr = SixlowpanIphcRepr::parse(
        &packet,
        Some(DEVICE_LL),
        Some(ROUTER_LL),
        &smoltcp_contexts(),
    )
    .unwrap();
    assert_eq!(repr.src_addr, ip.src);
    assert_eq!(repr.dst_addr, ip.dst);
    assert_eq!(repr.hop_limit, 64);
    assert_eq!(repr.next_header, SixlowpanNextHeader::Compressed);
    let udp = SixlowpanUdpNhcPacket::new_checked(packet.payload()).unwrap();
    let udp_repr = SixlowpanUdpNhcRepr::parse(
        &udp,
        &repr.src_addr,
        &repr.dst_addr,
        &ChecksumCapabilities::default(),
    )
    .unwrap();
    assert_eq!((udp_repr.src_port, udp_repr.dst_port), (5683, 5683));
    assert_eq!(
        udp.payload(),
        b"telemetry",
        "smoltcp verified the UDP checksum too"
    );
}

/// The same datagram compressed by smoltcp (context-free): IPHC + NHC UDP + payload.
fn smoltcp_compress(ip: &Ip, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let repr = SixlowpanIphcRepr {
        src_addr: ip.src,
        ll_src_addr: Some(DEVICE_LL),
        dst_addr: ip.dst,
        ll_dst_addr: Some(ROUTER_LL),
        next_header: SixlowpanNextHeader::Compressed,
        hop_limit: ip.hop,
        ecn: None,
        dscp: None,
        flow_label: None,
    };
    let udp = SixlowpanUdpNhcRepr(UdpRepr {
        src_port: sport,
        dst_port: dport,
    });
    let len = repr.buffer_len() + udp.header_len() + data.len();
    let mut buf = vec![0; len];
    repr.emit(&mut SixlowpanIphcPacket::new_unchecked(&mut buf[..]));
    let mut nhc = SixlowpanUdpNhcPacket::new_unchecked(&mut buf[repr.buffer_len()..]);
    udp.emit(
        &mut nhc,
        &ip.src,
        &ip.dst,
        data.len(),
        |b| b.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    buf
}

#[test]
fn we_decompress_what_smoltcp_compresses() {
    let ip = Ip::new(
        "2001:db8:1200:305:12:3456:78ab:cdef",
        "2001:db8:1200:305::1",
        17,
    );
    let theirs = smoltcp_compress(&ip, 5683, 5683, b"from smoltcp");
    assert_eq!(
        decompress(&theirs, up(), &pan_contexts()),
        ip.udp(5683, 5683, b"from smoltcp")
    );
    let ll = Ip::new("fe80::12:3456:78ab:cdef", "fe80::1", 17);
    let theirs = smoltcp_compress(&ll, 0xf0b1, 5683, b"x");
    assert_eq!(
        decompress(&theirs, up(), &ContextTable::new()),
        ll.udp(0xf0b1, 5683, b"x")
    );
}

/// A CoAP CON POST /t with a SenML-CBOR report of one temperature: what a device sends.
fn telemetry_coap() -> Vec<u8> {
    let mut m = vec![
        0x42, 0x02, 0x12, 0x34, 0xab, 0xcd, 0xb1, b't', 0x11, 0x70, 0xff,
    ];
    // [{-2: "urn:dev:sn:345678abcdef:", 0: "temp", 1: "Cel", 2: 21.5}]
    m.extend_from_slice(&[0x81, 0xa4, 0x21, 0x78, 0x18]);
    m.extend_from_slice(b"urn:dev:sn:345678abcdef:");
    m.extend_from_slice(&[0x00, 0x64]);
    m.extend_from_slice(b"temp");
    m.extend_from_slice(&[0x01, 0x63]);
    m.extend_from_slice(b"Cel");
    m.extend_from_slice(&[0x02, 0xf9, 0x4d, 0x60]);
    m
}

#[test]
fn a_planned_devices_telemetry_frame_is_32_bytes_shorter_than_smoltcps() {
    let ip = Ip::new(
        "2001:db8:1200:305:12:3456:78ab:cdef",
        "2001:db8:1200:305::1",
        17,
    );
    let coap = telemetry_coap();
    assert_eq!(coap.len(), 55);
    let ours = compress(&ip.udp(5683, 5683, &coap), up(), &pan_contexts());
    let theirs = smoltcp_compress(&ip, 5683, 5683, &coap);
    let mac = DataHeader {
        sequence: 1,
        pan: PanId(0xabcd),
        dst: ROUTER_LL,
        src: DEVICE_LL,
        ack_request: false,
    };
    let frame = |payload: &[u8]| {
        let mut f = [0; 127];
        mac.emit(payload, &mut f).unwrap()
    };
    // MAC header 21 + IPHC 2 + NHC UDP 7 + CoAP 55 = 85; smoltcp: + two 16-byte addresses.
    assert_eq!(ours.len(), 9 + 55);
    assert_eq!(theirs.len(), 41 + 55);
    assert_eq!(frame(&ours), 85);
    assert_eq!(frame(&theirs), 117);
    assert!(frame(&theirs) - frame(&ours) >= 20);
    // Without the context our own compressor sends the addresses inline too, like smoltcp.
    assert_eq!(
        compress(&ip.udp(5683, 5683, &coap), up(), &ContextTable::new()).len(),
        41 + 55
    );
}

/// Three link fragments of a UDP datagram from smoltcp's test suite
/// (`wire::sixlowpan::test::sixlowpan_three_fragments`).
const SMOLTCP_FRAGMENTS: [&[u8]; 3] = [
    &[
        0x41, 0xcc, 0x92, 0xef, 0xbe, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x0b, 0x1a, 0xd9, 0x3e,
        0x08, 0x28, 0x2f, 0x82, 0x93, 0x32, 0xc1, 0x33, 0x00, 0x3f, 0x6e, 0x33, 0x02, 0x35, 0x3d,
        0xf0, 0xd2, 0x5f, 0x1b, 0x39, 0xb4, 0x6b, 0x4c, 0x6f, 0x72, 0x65, 0x6d, 0x20, 0x69, 0x70,
        0x73, 0x75, 0x6d, 0x20, 0x64, 0x6f, 0x6c, 0x6f, 0x72, 0x20, 0x73, 0x69, 0x74, 0x20, 0x61,
        0x6d, 0x65, 0x74, 0x2c, 0x20, 0x63, 0x6f, 0x6e, 0x73, 0x65, 0x63, 0x74, 0x65, 0x74, 0x75,
        0x72, 0x20, 0x61, 0x64, 0x69, 0x70, 0x69, 0x73, 0x63, 0x69, 0x6e, 0x67, 0x20, 0x65, 0x6c,
        0x69, 0x74, 0x2e, 0x20, 0x41, 0x6c, 0x69, 0x71, 0x75, 0x61, 0x6d, 0x20, 0x64, 0x75, 0x69,
        0x20, 0x6f, 0x64, 0x69, 0x6f, 0x2c, 0x20, 0x69, 0x61, 0x63, 0x75, 0x6c, 0x69, 0x73, 0x20,
        0x76, 0x65, 0x6c, 0x20, 0x72,
    ],
    &[
        0x41, 0xcc, 0x93, 0xef, 0xbe, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x0b, 0x1a, 0xd9, 0x3e,
        0x08, 0x28, 0x2f, 0x82, 0x93, 0x32, 0xe1, 0x33, 0x00, 0x3f, 0x11, 0x75, 0x74, 0x72, 0x75,
        0x6d, 0x20, 0x61, 0x74, 0x2c, 0x20, 0x74, 0x72, 0x69, 0x73, 0x74, 0x69, 0x71, 0x75, 0x65,
        0x20, 0x6e, 0x6f, 0x6e, 0x20, 0x6e, 0x75, 0x6e, 0x63, 0x20, 0x65, 0x72, 0x61, 0x74, 0x20,
        0x63, 0x75, 0x72, 0x61, 0x65, 0x2e, 0x20, 0x4c, 0x6f, 0x72, 0x65, 0x6d, 0x20, 0x69, 0x70,
        0x73, 0x75, 0x6d, 0x20, 0x64, 0x6f, 0x6c, 0x6f, 0x72, 0x20, 0x73, 0x69, 0x74, 0x20, 0x61,
        0x6d, 0x65, 0x74, 0x2c, 0x20, 0x63, 0x6f, 0x6e, 0x73, 0x65, 0x63, 0x74, 0x65, 0x74, 0x75,
        0x72, 0x20, 0x61, 0x64, 0x69, 0x70, 0x69, 0x73, 0x63, 0x69, 0x6e, 0x67, 0x20, 0x65, 0x6c,
        0x69, 0x74,
    ],
    &[
        0x41, 0xcc, 0x94, 0xef, 0xbe, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x0b, 0x1a, 0xd9, 0x3e,
        0x08, 0x28, 0x2f, 0x82, 0x93, 0x32, 0xe1, 0x33, 0x00, 0x3f, 0x1d, 0x2e, 0x20, 0x41, 0x6c,
        0x69, 0x71, 0x75, 0x61, 0x6d, 0x20, 0x64, 0x75, 0x69, 0x20, 0x6f, 0x64, 0x69, 0x6f, 0x2c,
        0x20, 0x69, 0x61, 0x63, 0x75, 0x6c, 0x69, 0x73, 0x20, 0x76, 0x65, 0x6c, 0x20, 0x72, 0x75,
        0x74, 0x72, 0x75, 0x6d, 0x20, 0x61, 0x74, 0x2c, 0x20, 0x74, 0x72, 0x69, 0x73, 0x74, 0x69,
        0x71, 0x75, 0x65, 0x20, 0x6e, 0x6f, 0x6e, 0x20, 0x6e, 0x75, 0x6e, 0x63, 0x20, 0x65, 0x72,
        0x61, 0x74, 0x20, 0x63, 0x75, 0x72, 0x61, 0x65, 0x2e, 0x20, 0x0a,
    ],
];

fn adaptation() -> Adaptation<Instant> {
    Adaptation::new(ReassemblyConfig::DEVICE, CompressOptions::default(), 1)
}

fn receive_frames(a: &mut Adaptation<Instant>, frames: &[&[u8]], now: Instant) -> Option<Vec<u8>> {
    let mut done = None;
    for f in frames {
        let (h, payload) = DataHeader::parse(v6iot_sdk::radio::MacFrame::new(f).unwrap()).unwrap();
        let ll = LinkAddrs {
            src: h.src,
            dst: h.dst,
        };
        if let Some(p) = a.receive(now, ll, payload).unwrap() {
            done = Some(p);
        }
    }
    done
}

#[test]
fn smoltcps_fragmented_datagram_reassembles_with_a_good_udp_checksum() {
    let mut a = adaptation();
    let now = Instant::now();
    // Out of order: the last fragment first.
    let p = receive_frames(
        &mut a,
        &[
            SMOLTCP_FRAGMENTS[2],
            SMOLTCP_FRAGMENTS[0],
            SMOLTCP_FRAGMENTS[1],
        ],
        now,
    )
    .expect("reassembled");
    assert_eq!(p.len(), 307);
    assert_eq!(p[6], 17);
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
    // The addresses come from the frames' extended addresses (IID = EUI-64 with U/L flipped).
    assert_eq!(src, addr("fe80::3093:822f:2808:3ed9"));
    assert_eq!(dst, addr("fe80::180b:4242:4242:4242"));
    assert_eq!(
        iphc::upper_layer_checksum(src, dst, 17, &p[40..]),
        0,
        "UDP checksum verifies"
    );
    assert!(p[48..].starts_with(b"Lorem ipsum dolor sit amet"));
    assert!(p.ends_with(b"erat curae. \n"));
    assert_eq!(a.reassembly().stats().completed, 1);
    assert_eq!(a.stats().packets_in, 1);
}

#[test]
fn fragments_we_send_reassemble_and_bad_ones_are_counted() {
    let ip = Ip::new(
        "2001:db8:1200:305:12:3456:78ab:cdef",
        "2001:db8:1200:305::1",
        17,
    );
    let data: Vec<u8> = (0..600).map(|i| (i % 251) as u8).collect();
    let p = ip.udp(5683, 5683, &data);
    let mut tx = adaptation();
    tx.contexts = pan_contexts();
    let mut payloads = Vec::new();
    let n = tx
        .send(&p, up(), 104, |f| payloads.push(f.to_vec()))
        .unwrap();
    assert_eq!(n, 7);
    assert_eq!(payloads.len(), 7);
    assert_eq!(payloads[0][0] & 0xf8, 0xc0, "FRAG1");
    assert!(payloads.iter().all(|f| f.len() <= 104));
    let mut rx = adaptation();
    rx.contexts = pan_contexts();
    let now = Instant::now();
    let mut got = None;
    for f in payloads.iter().rev() {
        if let Some(d) = rx.receive(now, up(), f).unwrap() {
            got = Some(d);
        }
    }
    assert_eq!(got.unwrap(), p);
    // A duplicate of a finished datagram's fragment starts a new one that then times out.
    assert_eq!(rx.receive(now, up(), &payloads[1]), Ok(None));
    assert_eq!(rx.reassembly().in_progress(), 1);
    rx.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(rx.reassembly().stats().timeouts, 1);
    // Junk dispatches and cut headers are refused and counted.
    assert_eq!(
        rx.receive(now, up(), &[0x80, 1]),
        Err(InputError::Dispatch(0x80))
    );
    assert_eq!(
        rx.receive(now, up(), &[0xc0, 1]),
        Err(InputError::FragmentHeader)
    );
    assert!(matches!(
        rx.receive(now, up(), &[0x7a]),
        Err(InputError::Iphc(_))
    ));
    let s = rx.stats();
    assert_eq!(
        (s.packets_in, s.bad_dispatch, s.bad_fragments, s.bad_iphc),
        (1, 1, 1, 1)
    );
}

fn arb_addr(ll: LinkAddr) -> impl Strategy<Value = Ipv6Addr> {
    let iid = v6iot_sdk::lowpan::iphc::iid_from_link(ll).unwrap();
    prop_oneof![
        // link-local from the link layer, 16-bit form, random
        Just(Ipv6Addr::from(u128::from_be_bytes(
            [[0xfe, 0x80, 0, 0, 0, 0, 0, 0], iid]
                .concat()
                .try_into()
                .unwrap()
        ))),
        any::<u16>().prop_map(|s| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, s)),
        any::<u64>().prop_map(|i| Ipv6Addr::from((0xfe80_u128 << 112) | u128::from(i))),
        // under the PAN context: from the link layer, 16-bit, random IID
        Just(Ipv6Addr::from(u128::from_be_bytes(
            [[0x20, 0x01, 0x0d, 0xb8, 0x12, 0x00, 0x03, 0x05], iid]
                .concat()
                .try_into()
                .unwrap()
        ))),
        any::<u16>().prop_map(|s| Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0xff, 0xfe00, s)),
        any::<u64>()
            .prop_map(|i| Ipv6Addr::from((0x2001_0db8_1200_0305_u128 << 64) | u128::from(i))),
        // anything (global, multicast, unspecified)
        any::<u128>().prop_map(Ipv6Addr::from),
        any::<(u8, u32)>().prop_map(|(s, g)| Ipv6Addr::from(
            0xff00_u128 << 112 | u128::from(s) << 112 | u128::from(g)
        )),
        Just(Ipv6Addr::UNSPECIFIED),
    ]
}

proptest! {
    #[test]
    fn compress_then_decompress_gives_the_packet_back(
        src in arb_addr(DEVICE_LL),
        dst in arb_addr(ROUTER_LL),
        tc in any::<u8>(),
        flow in 0..(1_u32 << 20),
        hop in prop_oneof![Just(1_u8), Just(64), Just(255), any::<u8>()],
        udp in any::<bool>(),
        sport in prop_oneof![Just(5683_u16), 0xf0b0..=0xf0bf_u16, 0xf000..=0xf0ff_u16, any::<u16>()],
        dport in prop_oneof![Just(5683_u16), 0xf0b0..=0xf0bf_u16, 0xf000..=0xf0ff_u16, any::<u16>()],
        payload in proptest::collection::vec(any::<u8>(), 0..80),
        always in any::<bool>(),
    ) {
        // Multicast sources are not IPv6; the decompressor cannot tell them from others anyway.
        prop_assume!(src.octets()[0] != 0xff);
        let ip = Ip { tc, flow, next: 59, hop, src, dst };
        let p = if udp { ip.udp(sport, dport, &payload) } else { ip.packet(&payload) };
        let cid = if always { CidByte::Always } else { CidByte::WhenNonZero };
        let c = compress_with(&p, up(), &pan_contexts(), cid);
        prop_assert!(c.len() <= p.len() + 3, "compression never grows a packet by more than its dispatch and CID");
        prop_assert_eq!(decompress(&c, up(), &pan_contexts()), p);
    }
}
