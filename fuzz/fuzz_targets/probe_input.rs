//! Fuzzes what `v6iot-sim probe` parses in each datagram the probed endpoint sends
//! (`v6iot_sdk::coap::probe`, `handle_datagram` and the checks after it), with the same SDK
//! calls in the same order: the message (`wire::parse`), its Block2 and Content-Format
//! options, an unknown critical option, and the payload as link format (`link::parse`, whose
//! links must round trip through `link::write`). The input is one datagram.
//!
//! The probe's state machine itself, driven through whole conversations, is `probe_machine`.

#![no_main]

use coap_lite::CoapOption;
use v6iot_sdk::coap::{link, wire};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(packet) = wire::parse(data) else {
        return;
    };
    let block = wire::block_option(&packet, CoapOption::Block2);
    if let Ok(Some(b)) = block {
        // the probe asks for the next block: num + 1 must encode and decode back
        let next = wire::Block {
            num: b.num.saturating_add(1),
            more: false,
            szx: b.szx,
        };
        let _ = (next.offset(), next.size());
        if let Some(back) = wire::Block::decode(&next.encode()) {
            assert_eq!(
                (back.num, back.szx),
                (next.num.min(wire::Block::MAX_NUM), b.szx)
            );
        }
    }
    let _ = wire::uint_option(&packet, CoapOption::ContentFormat, 2);
    let _ = wire::unknown_critical_option(&packet);
    let text = String::from_utf8_lossy(&packet.payload);
    if let Some(links) = link::parse(&text) {
        assert_eq!(link::parse(&link::write(&links)), Some(links));
    }
});
