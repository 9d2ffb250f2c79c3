//! Fuzzes OSCORE verification: arbitrary bytes as a CoAP message with (maybe) an OSCORE option
//! into `unprotect_request` and `unprotect_response` of fixed contexts (RFC 8613 Appendix C.1),
//! and into `OscoreOption::parse`. Nothing may panic; a parsed option value must re-encode to the
//! same bytes; and a message protected here must verify back to itself, while the same message
//! with one byte changed must not panic either.
//!
//! Input: the first byte selects the mode; the rest is the datagram.
//! * even: the datagram goes straight into both verifiers (the attacker's view);
//! * odd: the datagram is the *original* message: protect it, check the round trip, then flip
//!   the byte the first input byte points at and verify again.

#![no_main]

use std::sync::OnceLock;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use libfuzzer_sys::fuzz_target;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, OscoreError, OscoreOption, RequestInfo, SecurityContext,
    protect_request, protect_response, unprotect_request, unprotect_response,
};

/// Client and server contexts of RFC 8613 Appendix C.1, sequence numbers persisted.
fn contexts() -> &'static (SecurityContext, SecurityContext) {
    static CTX: OnceLock<(SecurityContext, SecurityContext)> = OnceLock::new();
    CTX.get_or_init(|| {
        let input = |sender: Vec<u8>, recipient: Vec<u8>| ContextInput {
            master_secret: (1..=16).collect(),
            master_salt: vec![0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40],
            id_context: None,
            sender_id: sender,
            recipient_id: recipient,
        };
        let make = |i: ContextInput| {
            let mut ctx = SecurityContext::new(&i, ContextConfig::default()).unwrap();
            let mark = ctx.mark_to_persist().unwrap();
            ctx.persisted(mark);
            ctx
        };
        (make(input(vec![], vec![1])), make(input(vec![1], vec![])))
    })
}

/// A fresh client context and the `RequestInfo` of one GET it sent.
fn client_with_request() -> (SecurityContext, RequestInfo, Packet) {
    let mut client = contexts().0.clone();
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.set_token(vec![0x39, 0x74]);
    get.add_option(CoapOption::UriPath, b"tv1".to_vec());
    let (protected, info) = protect_request(&mut client, &get).unwrap();
    (client, info, protected)
}

fn verify_both(packet: &Packet) {
    let mut server = contexts().1.clone();
    if let Ok((request, _)) = unprotect_request(&mut server, packet) {
        assert!(wire::encode(&request).is_some());
    }
    let (mut client, mut info, _) = client_with_request();
    if let Ok(response) = unprotect_response(&mut client, packet, &mut info) {
        assert!(wire::encode(&response).is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(option) = OscoreOption::parse(data) {
        assert_eq!(option.to_vec().unwrap(), data, "parse/emit round trip");
    }
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let Ok(packet) = wire::parse(bytes) else {
        return;
    };
    if mode & 1 == 0 {
        verify_both(&packet);
        return;
    }

    let code = u8::from(packet.header.code);
    let protected = if wire::is_request_code(code) {
        let mut client = contexts().0.clone();
        let mut server = contexts().1.clone();
        let Ok((protected, _)) = protect_request(&mut client, &packet) else {
            return;
        };
        let received = wire::parse(&wire::encode(&protected).unwrap()).unwrap();
        let (got, _) = unprotect_request(&mut server, &received).expect("own request verifies");
        assert_eq!(wire::encode(&got), wire::encode(&packet));
        protected
    } else {
        let (mut client, mut info, request) = client_with_request();
        let mut server = contexts().1.clone();
        let (_, mut server_info) = unprotect_request(&mut server, &request).unwrap();
        let Ok(protected) = protect_response(&mut server, &packet, &mut server_info, mode & 2 != 0)
        else {
            return;
        };
        let received = wire::parse(&wire::encode(&protected).unwrap()).unwrap();
        let result = unprotect_response(&mut client, &received, &mut info);
        if packet.get_option(CoapOption::Observe).is_some() {
            // The fixed request is no Observe registration (§4.1.3.5.2).
            assert_eq!(result.err(), Some(OscoreError::UnexpectedObserve));
        } else {
            let got = result.expect("own response verifies");
            assert_eq!(wire::encode(&got), wire::encode(&packet));
        }
        protected
    };
    let mut encoded = wire::encode(&protected).unwrap();
    let at = usize::from(mode >> 1) % encoded.len().max(1);
    if let Some(b) = encoded.get_mut(at) {
        *b ^= 0x5a;
    }
    if let Ok(tampered) = wire::parse(&encoded) {
        verify_both(&tampered);
    }
});
