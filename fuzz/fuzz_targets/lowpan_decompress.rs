//! Fuzzes stateful IPHC decompression (RFC 6282) with a context table like a PAN's: any bytes
//! as a frame payload, from extended, short or absent link-layer addresses, whole or as a
//! FRAG1 with any datagram size. Decompression must never panic, and whatever decompresses must
//! survive compress → decompress unchanged.

#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::lowpan::context::{Context, ContextTable};
use v6iot_sdk::lowpan::iphc::{self, CidByte, CompressOptions, LinkAddrs};
use v6iot_sdk::radio::mac::LinkAddr;

fn contexts() -> ContextTable {
    let mut t = ContextTable::new();
    t.set(
        0,
        Context::new(Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 0), 64),
    );
    t.set(
        1,
        Context::new(Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0, 0, 0, 0, 0), 48),
    );
    t.set(
        2,
        Context::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0xab, 0, 0, 0),
            80,
        ),
    );
    let mut off = Context::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8);
    off.compress = false;
    t.set(15, off);
    t
}

fn link(sel: u8) -> LinkAddr {
    match sel & 3 {
        0 => LinkAddr::Extended([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]),
        1 => LinkAddr::Short([0x00, 0x01]),
        2 => LinkAddr::Absent,
        _ => LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&size, payload)) = rest.split_first() else {
        return;
    };
    let ll = LinkAddrs {
        src: link(sel),
        dst: link(sel >> 2),
    };
    let ctx = contexts();
    let mut out = vec![0; 2048];
    // As a FRAG1 with a datagram size.
    let _ = iphc::decompress(payload, &ll, &ctx, Some(usize::from(size) * 9), &mut out);
    // Whole.
    let Ok(n) = iphc::decompress_packet(payload, &ll, &ctx, &mut out) else {
        return;
    };
    let packet = out[..n].to_vec();
    let cid_byte = if sel & 0x10 != 0 {
        CidByte::Always
    } else {
        CidByte::WhenNonZero
    };
    let mut header = [0; 64];
    let c = iphc::compress(
        &packet,
        &ll,
        &ctx,
        CompressOptions { cid_byte },
        &mut header,
    )
    .expect("a decompressed packet compresses");
    let mut again = header[..c.header_len].to_vec();
    again.extend_from_slice(&packet[c.consumed..]);
    let mut back = vec![0; 2048];
    let m = iphc::decompress_packet(&again, &ll, &ctx, &mut back)
        .expect("our own compression decompresses");
    assert_eq!(
        &back[..m],
        &packet[..],
        "compress → decompress changed the packet"
    );
});
