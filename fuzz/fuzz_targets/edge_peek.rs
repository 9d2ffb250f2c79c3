//! Fuzzes the gateway's look at a datagram before anything is spent on it
//! (`v6iot_edge_router::gateway::peek`): it must never panic, and whenever the full parser
//! accepts a datagram (with at most one OSCORE option), the peek must agree with it on the
//! message ID, token, type and kid — the lane a datagram goes to must be the one its real
//! contents name.

#![no_main]

use coap_lite::CoapOption;
use libfuzzer_sys::fuzz_target;
use v6iot_edge_router::gateway::peek::Peek;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::OscoreOption;

fuzz_target!(|data: &[u8]| {
    let peek = Peek::of(data);
    let Ok(packet) = wire::parse(data) else {
        return;
    };
    if packet
        .get_option(CoapOption::Oscore)
        .is_some_and(|v| v.len() > 1)
    {
        return;
    }
    let Some(peek) = peek else {
        panic!("the full parser accepts what the peek refuses: {data:02x?}");
    };
    assert_eq!(peek.message_id, packet.header.message_id);
    assert_eq!(peek.token, packet.get_token());
    assert_eq!(peek.kind, packet.header.get_type());
    assert_eq!(peek.code, u8::from(packet.header.code));
    let kid = OscoreOption::from_packet(&packet).ok().and_then(|o| o.kid);
    assert_eq!(peek.kid(), kid, "{data:02x?}");
});
