//! OSCORE (RFC 8613): the test vectors of Appendix C byte for byte, property tests of
//! protect → unprotect round trips and tamper detection, replay protection, Observe
//! notifications and sequence-number persistence across restarts.
//!
//! The hex values of Appendix C are copied from the text of RFC 8613 as published by the RFC
//! Editor (mirrored as `rfc8613.txt` in the IETF CoRE working group's `oscore` repository).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use proptest::prelude::*;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::cose::{self, KdfOutput};
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, DerivedKeys, OscoreError, OscoreOption, RequestInfo,
    SecurityContext, protect_request, protect_response, unprotect_request, unprotect_response,
};

/// Decodes a hex string (whitespace ignored).
fn h(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length: {text}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn arr<const N: usize>(text: &str) -> [u8; N] {
    h(text).try_into().unwrap()
}

const MASTER_SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const MASTER_SALT: &str = "9e7ca92223786340";
const ID_CONTEXT: &str = "37cbf3210017a2d3";

fn input(
    salt: Option<&str>,
    id_context: Option<&str>,
    sender: &str,
    recipient: &str,
) -> ContextInput {
    ContextInput {
        master_secret: h(MASTER_SECRET),
        master_salt: salt.map(h).unwrap_or_default(),
        id_context: id_context.map(h),
        sender_id: h(sender),
        recipient_id: h(recipient),
    }
}

/// A context whose sender sequence number continues at `seq`, with its mark persisted.
fn context(input: &ContextInput, config: ContextConfig, seq: u64) -> SecurityContext {
    let mut ctx = SecurityContext::restore(input, config, seq).unwrap();
    let mark = ctx.mark_to_persist().unwrap();
    ctx.persisted(mark);
    ctx
}

// ---------------------------------------------------------------------------------------------
// Appendix C.1–C.3: key derivation.

struct Derivation {
    input: ContextInput,
    info_sender: &'static str,
    info_recipient: &'static str,
    info_iv: &'static str,
    sender_key: &'static str,
    recipient_key: &'static str,
    common_iv: &'static str,
    sender_nonce: &'static str,
    recipient_nonce: &'static str,
}

fn check_derivation(v: &Derivation) {
    let ctx = v.input.id_context.as_deref();
    assert_eq!(
        cose::kdf_info(&v.input.sender_id, ctx, KdfOutput::Key),
        h(v.info_sender)
    );
    assert_eq!(
        cose::kdf_info(&v.input.recipient_id, ctx, KdfOutput::Key),
        h(v.info_recipient)
    );
    assert_eq!(cose::kdf_info(&[], ctx, KdfOutput::Iv), h(v.info_iv));
    let keys = DerivedKeys::derive(&v.input).unwrap();
    assert_eq!(keys.sender_key(), &arr::<16>(v.sender_key));
    assert_eq!(keys.recipient_key(), &arr::<16>(v.recipient_key));
    assert_eq!(keys.common_iv(), &arr::<13>(v.common_iv));
    // "From the previous parameters and a Partial IV equal to 0 (both for sender and recipient)".
    assert_eq!(
        cose::nonce(keys.common_iv(), &v.input.sender_id, 0).unwrap(),
        arr::<13>(v.sender_nonce)
    );
    assert_eq!(
        cose::nonce(keys.common_iv(), &v.input.recipient_id, 0).unwrap(),
        arr::<13>(v.recipient_nonce)
    );
}

#[test]
fn c_1_1_key_derivation_with_master_salt_client() {
    check_derivation(&Derivation {
        input: input(Some(MASTER_SALT), None, "", "01"),
        info_sender: "8540f60a634b657910",
        info_recipient: "854101f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "f0910ed7295e6ad4b54fc793154302ff",
        recipient_key: "ffb14e093c94c9cac9471648b4f98710",
        common_iv: "4622d4dd6d944168eefb54987c",
        sender_nonce: "4622d4dd6d944168eefb54987c",
        recipient_nonce: "4722d4dd6d944169eefb54987c",
    });
}

#[test]
fn c_1_2_key_derivation_with_master_salt_server() {
    check_derivation(&Derivation {
        input: input(Some(MASTER_SALT), None, "01", ""),
        info_sender: "854101f60a634b657910",
        info_recipient: "8540f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "ffb14e093c94c9cac9471648b4f98710",
        recipient_key: "f0910ed7295e6ad4b54fc793154302ff",
        common_iv: "4622d4dd6d944168eefb54987c",
        sender_nonce: "4722d4dd6d944169eefb54987c",
        recipient_nonce: "4622d4dd6d944168eefb54987c",
    });
}

#[test]
fn c_2_1_key_derivation_without_master_salt_client() {
    check_derivation(&Derivation {
        input: input(None, None, "00", "01"),
        info_sender: "854100f60a634b657910",
        info_recipient: "854101f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "321b26943253c7ffb6003b0b64d74041",
        recipient_key: "e57b5635815177cd679ab4bcec9d7dda",
        common_iv: "be35ae297d2dace910c52e99f9",
        sender_nonce: "bf35ae297d2dace910c52e99f9",
        recipient_nonce: "bf35ae297d2dace810c52e99f9",
    });
}

#[test]
fn c_2_2_key_derivation_without_master_salt_server() {
    check_derivation(&Derivation {
        input: input(None, None, "01", "00"),
        info_sender: "854101f60a634b657910",
        info_recipient: "854100f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "e57b5635815177cd679ab4bcec9d7dda",
        recipient_key: "321b26943253c7ffb6003b0b64d74041",
        common_iv: "be35ae297d2dace910c52e99f9",
        sender_nonce: "bf35ae297d2dace810c52e99f9",
        recipient_nonce: "bf35ae297d2dace910c52e99f9",
    });
}

#[test]
fn c_3_1_key_derivation_with_id_context_client() {
    check_derivation(&Derivation {
        input: input(Some(MASTER_SALT), Some(ID_CONTEXT), "", "01"),
        info_sender: "85404837cbf3210017a2d30a634b657910",
        info_recipient: "8541014837cbf3210017a2d30a634b657910",
        info_iv: "85404837cbf3210017a2d30a6249560d",
        sender_key: "af2a1300a5e95788b356336eeecd2b92",
        recipient_key: "e39a0c7c77b43f03b4b39ab9a268699f",
        common_iv: "2ca58fb85ff1b81c0b7181b85e",
        sender_nonce: "2ca58fb85ff1b81c0b7181b85e",
        recipient_nonce: "2da58fb85ff1b81d0b7181b85e",
    });
}

#[test]
fn c_3_2_key_derivation_with_id_context_server() {
    check_derivation(&Derivation {
        input: input(Some(MASTER_SALT), Some(ID_CONTEXT), "01", ""),
        info_sender: "8541014837cbf3210017a2d30a634b657910",
        info_recipient: "85404837cbf3210017a2d30a634b657910",
        info_iv: "85404837cbf3210017a2d30a6249560d",
        sender_key: "e39a0c7c77b43f03b4b39ab9a268699f",
        recipient_key: "af2a1300a5e95788b356336eeecd2b92",
        common_iv: "2ca58fb85ff1b81c0b7181b85e",
        sender_nonce: "2da58fb85ff1b81d0b7181b85e",
        recipient_nonce: "2ca58fb85ff1b81c0b7181b85e",
    });
}

// ---------------------------------------------------------------------------------------------
// Appendix C.4–C.6: requests.

struct RequestVector {
    client: ContextInput,
    server: ContextInput,
    config: ContextConfig,
    unprotected: &'static str,
    aad_array: &'static str,
    aad: &'static str,
    nonce: &'static str,
    option: &'static str,
    protected: &'static str,
}

/// Protects the unprotected request at sender sequence number 20 and checks every intermediate
/// value the RFC lists, then verifies the result on the server side and gets the original back.
fn check_request(
    v: &RequestVector,
) -> (SecurityContext, RequestInfo, SecurityContext, RequestInfo) {
    let keys = DerivedKeys::derive(&v.client).unwrap();
    let kid = &v.client.sender_id;
    assert_eq!(cose::aad_array(kid, &[0x14], &[]), h(v.aad_array));
    assert_eq!(cose::aad(kid, &[0x14], &[]), h(v.aad));
    assert_eq!(
        cose::nonce(keys.common_iv(), kid, 20).unwrap(),
        arr::<13>(v.nonce)
    );

    let mut client = context(&v.client, v.config, 20);
    let request = wire::parse(&h(v.unprotected)).unwrap();
    let (protected, client_info) = protect_request(&mut client, &request).unwrap();
    assert_eq!(wire::encode(&protected).unwrap(), h(v.protected));
    assert_eq!(
        protected.get_first_option(CoapOption::Oscore),
        Some(&h(v.option))
    );
    assert_eq!(client_info.partial_iv(), &[0x14]);
    assert_eq!(client_info.sequence_number(), 20);
    assert_eq!(client.sequence().peek(), 21);

    let mut server = context(&v.server, ContextConfig::default(), 0);
    let received = wire::parse(&h(v.protected)).unwrap();
    let option = OscoreOption::from_packet(&received).unwrap();
    assert_eq!(option.kid.as_deref(), Some(kid.as_slice()));
    assert!(
        server.accepts(&option),
        "the edge's lookup finds this context"
    );
    assert!(!client.accepts(&option));
    let (decrypted, server_info) = unprotect_request(&mut server, &received).unwrap();
    assert_eq!(wire::encode(&decrypted).unwrap(), h(v.unprotected));
    assert_eq!(server_info.kid(), kid.as_slice());
    assert_eq!(server_info.partial_iv(), &[0x14]);
    (client, client_info, server, server_info)
}

fn vector_c4() -> RequestVector {
    RequestVector {
        client: input(Some(MASTER_SALT), None, "", "01"),
        server: input(Some(MASTER_SALT), None, "01", ""),
        config: ContextConfig::default(),
        unprotected: "44015d1f00003974396c6f63616c686f737483747631",
        aad_array: "8501810a40411440",
        aad: "8368456e63727970743040488501810a40411440",
        nonce: "4622d4dd6d944168eefb549868",
        option: "0914",
        protected: "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e",
    }
}

#[test]
fn c_4_request_with_master_salt() {
    let (_, client_info, _, server_info) = check_request(&vector_c4());
    assert!(!client_info.is_observe_registration());
    assert!(!server_info.is_observe_registration());
    // The ciphertext of the RFC (its plaintext is 0x01b3747631: GET, Uri-Path "tv1"; it matches
    // because the request decrypts back to the unprotected bytes above).
    let protected = wire::parse(&h(vector_c4().protected)).unwrap();
    assert_eq!(protected.payload, h("612f1092f1776f1c1668b3825e"));
}

#[test]
fn c_5_request_without_master_salt() {
    check_request(&RequestVector {
        client: input(None, None, "00", "01"),
        server: input(None, None, "01", "00"),
        config: ContextConfig::default(),
        unprotected: "440171c30000b932396c6f63616c686f737483747631",
        aad_array: "8501810a4100411440",
        aad: "8368456e63727970743040498501810a4100411440",
        nonce: "bf35ae297d2dace910c52e99ed",
        option: "091400",
        protected: "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
    });
}

#[test]
fn c_6_request_with_kid_context() {
    let (_, client_info, _, server_info) = check_request(&RequestVector {
        client: input(Some(MASTER_SALT), Some(ID_CONTEXT), "", "01"),
        server: input(Some(MASTER_SALT), Some(ID_CONTEXT), "01", ""),
        config: ContextConfig {
            send_kid_context: true,
            ..ContextConfig::default()
        },
        unprotected: "44012f8eef9bbf7a396c6f63616c686f737483747631",
        aad_array: "8501810a40411440",
        aad: "8368456e63727970743040488501810a40411440",
        nonce: "2ca58fb85ff1b81c0b7181b84a",
        option: "19140837cbf3210017a2d3",
        protected: "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3",
    });
    assert_eq!(client_info.kid_context(), Some(h(ID_CONTEXT).as_slice()));
    assert_eq!(server_info.kid_context(), Some(h(ID_CONTEXT).as_slice()));
}

// ---------------------------------------------------------------------------------------------
// Appendix C.7–C.8: responses to the request of C.4.

const C7_C8_UNPROTECTED: &str = "64455d1f00003974ff48656c6c6f20576f726c6421";
const C7_PROTECTED: &str = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106";
const C8_PROTECTED: &str = "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e";

#[test]
fn c_7_response_without_partial_iv() {
    let (mut client, mut client_info, mut server, mut server_info) = check_request(&vector_c4());
    let keys = DerivedKeys::derive(&input(Some(MASTER_SALT), None, "01", "")).unwrap();
    // The response uses the request's nonce: ID_PIV = the client's (empty) Sender ID, PIV 20.
    assert_eq!(
        cose::nonce(keys.common_iv(), &[], 20).unwrap(),
        arr::<13>("4622d4dd6d944168eefb549868")
    );
    let response = wire::parse(&h(C7_C8_UNPROTECTED)).unwrap();
    let protected = protect_response(&mut server, &response, &mut server_info, false).unwrap();
    assert_eq!(wire::encode(&protected).unwrap(), h(C7_PROTECTED));
    assert_eq!(server.sequence().peek(), 0, "no sequence number used");
    assert_eq!(
        protect_response(&mut server, &response, &mut server_info, false).err(),
        Some(OscoreError::RequestNonceUsed)
    );

    let received = wire::parse(&h(C7_PROTECTED)).unwrap();
    let decrypted = unprotect_response(&mut client, &received, &mut client_info).unwrap();
    assert_eq!(wire::encode(&decrypted).unwrap(), h(C7_C8_UNPROTECTED));
    assert_eq!(
        unprotect_response(&mut client, &received, &mut client_info).err(),
        Some(OscoreError::Replay),
        "one response per request"
    );
}

#[test]
fn c_8_response_with_partial_iv() {
    let (mut client, mut client_info, mut server, mut server_info) = check_request(&vector_c4());
    let keys = DerivedKeys::derive(&input(Some(MASTER_SALT), None, "01", "")).unwrap();
    assert_eq!(
        cose::nonce(keys.common_iv(), &[0x01], 0).unwrap(),
        arr::<13>("4722d4dd6d944169eefb54987c")
    );
    // Server Sender Sequence Number 0.
    let response = wire::parse(&h(C7_C8_UNPROTECTED)).unwrap();
    let protected = protect_response(&mut server, &response, &mut server_info, true).unwrap();
    assert_eq!(wire::encode(&protected).unwrap(), h(C8_PROTECTED));
    assert_eq!(server.sequence().peek(), 1);

    let received = wire::parse(&h(C8_PROTECTED)).unwrap();
    let decrypted = unprotect_response(&mut client, &received, &mut client_info).unwrap();
    assert_eq!(wire::encode(&decrypted).unwrap(), h(C7_C8_UNPROTECTED));
}

#[test]
fn c_7_tampered_response_is_rejected() {
    let (mut client, mut client_info, ..) = check_request(&vector_c4());
    let mut bytes = h(C7_PROTECTED);
    *bytes.last_mut().unwrap() ^= 1;
    let received = wire::parse(&bytes).unwrap();
    assert_eq!(
        unprotect_response(&mut client, &received, &mut client_info).err(),
        Some(OscoreError::DecryptionFailed)
    );
    // The failed attempt did not use up the one response.
    let received = wire::parse(&h(C7_PROTECTED)).unwrap();
    assert!(unprotect_response(&mut client, &received, &mut client_info).is_ok());
}

// ---------------------------------------------------------------------------------------------
// A client and a server with the contexts of Appendix C.2, for the behaviour tests.

fn pair() -> (SecurityContext, SecurityContext) {
    let client = context(&input(None, None, "00", "01"), ContextConfig::default(), 0);
    let server = context(&input(None, None, "01", "00"), ContextConfig::default(), 0);
    (client, server)
}

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = 7;
    p.set_token(vec![1, 2, 3]);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriHost, b"edge".to_vec());
    for seg in path.split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

fn content(payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = 7;
    p.set_token(vec![1, 2, 3]);
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.add_option(CoapOption::ContentFormat, vec![50]);
    p.payload = payload.to_vec();
    p
}

/// Through the wire: encode and parse again.
fn wire_trip(p: &Packet) -> Packet {
    wire::parse(&wire::encode(p).unwrap()).unwrap()
}

#[test]
fn protected_request_hides_code_path_and_payload() {
    let (mut client, _) = pair();
    let mut request = get("secret/path");
    request.header.code = MessageClass::Request(RequestType::Put);
    request.add_option(CoapOption::UriQuery, b"q=1".to_vec());
    request.payload = b"valve=open".to_vec();
    let (protected, _) = protect_request(&mut client, &request).unwrap();
    assert_eq!(u8::from(protected.header.code), 0x02, "outer POST");
    assert!(protected.get_option(CoapOption::UriPath).is_none());
    assert!(protected.get_option(CoapOption::UriQuery).is_none());
    assert_eq!(
        protected.get_first_option(CoapOption::UriHost),
        Some(&b"edge".to_vec()),
        "Uri-Host stays outer (Class U)"
    );
    assert_eq!(protected.get_token(), &[1, 2, 3]);
    assert_eq!(protected.header.message_id, 7);
    let bytes = wire::encode(&protected).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"secret"));
    assert!(!bytes.windows(5).any(|w| w == b"valve"));
}

#[test]
fn replayed_request_is_rejected() {
    let (mut client, mut server) = pair();
    let (protected, _) = protect_request(&mut client, &get("a")).unwrap();
    let received = wire_trip(&protected);
    assert!(unprotect_request(&mut server, &received).is_ok());
    assert_eq!(
        unprotect_request(&mut server, &received).err(),
        Some(OscoreError::Replay)
    );
}

#[test]
fn replay_window_slides() {
    let (mut client, mut server) = pair();
    let mut sent = Vec::new();
    for _ in 0..40 {
        let (p, _) = protect_request(&mut client, &get("a")).unwrap();
        sent.push(wire_trip(&p));
    }
    // Receive 39 first, then older ones out of order.
    assert!(unprotect_request(&mut server, &sent[39]).is_ok());
    assert!(
        unprotect_request(&mut server, &sent[20]).is_ok(),
        "inside the window"
    );
    assert!(
        unprotect_request(&mut server, &sent[8]).is_ok(),
        "39 - 8 = 31: last slot"
    );
    assert_eq!(
        unprotect_request(&mut server, &sent[7]).err(),
        Some(OscoreError::Replay),
        "39 - 7 = 32: left of the window"
    );
    assert_eq!(
        unprotect_request(&mut server, &sent[20]).err(),
        Some(OscoreError::Replay)
    );
    assert_eq!(server.replay_window().highest(), Some(39));
}

#[test]
fn forged_request_does_not_move_the_window() {
    let (mut client, mut server) = pair();
    let (protected, _) = protect_request(&mut client, &get("a")).unwrap();
    let mut forged = protected.clone();
    // Claim a far-away Partial IV: the nonce and AAD change, so the tag fails.
    forged.set_option(
        CoapOption::Oscore,
        [OscoreOption {
            partial_iv: Some(1_000_000),
            kid: Some(vec![0x00]),
            kid_context: None,
        }
        .to_vec()
        .unwrap()]
        .into(),
    );
    assert_eq!(
        unprotect_request(&mut server, &forged).err(),
        Some(OscoreError::DecryptionFailed)
    );
    assert_eq!(server.replay_window().highest(), None);
    assert!(unprotect_request(&mut server, &protected).is_ok());
}

#[test]
fn wrong_kid_and_missing_fields_are_named() {
    let (mut client, mut server) = pair();
    let (protected, _) = protect_request(&mut client, &get("a")).unwrap();
    let mut other = context(&input(None, None, "01", "02"), ContextConfig::default(), 0);
    assert_eq!(
        unprotect_request(&mut other, &protected).err(),
        Some(OscoreError::UnknownKid)
    );
    let mut plain = get("a");
    assert_eq!(
        unprotect_request(&mut server, &plain).err(),
        Some(OscoreError::NoOscoreOption)
    );
    plain.add_option(CoapOption::Oscore, vec![0x01, 0x05]);
    plain.payload = vec![0; 9];
    assert_eq!(
        unprotect_request(&mut server, &plain).err(),
        Some(OscoreError::MalformedOption),
        "request without kid"
    );
    let mut empty = protected.clone();
    empty.payload.clear();
    assert_eq!(
        unprotect_request(&mut server, &empty).err(),
        Some(OscoreError::MalformedMessage)
    );
    assert_eq!(
        OscoreError::UnknownKid.error_response().map(|(c, _)| c),
        Some(ResponseType::Unauthorized)
    );
}

#[test]
fn nested_and_proxy_uri_are_refused() {
    let (mut client, _) = pair();
    let (protected, _) = protect_request(&mut client, &get("a")).unwrap();
    assert_eq!(
        protect_request(&mut client, &protected).err(),
        Some(OscoreError::AlreadyProtected)
    );
    let mut proxied = get("a");
    proxied.add_option(CoapOption::ProxyUri, b"coap://example.com/a".to_vec());
    assert_eq!(
        protect_request(&mut client, &proxied).err(),
        Some(OscoreError::ProxyUriUnsupported)
    );
    assert_eq!(
        protect_request(&mut client, &content(b"x")).err(),
        Some(OscoreError::WrongCodeClass)
    );
}

#[test]
fn response_to_another_request_fails() {
    let (mut client, mut server) = pair();
    let (r1, mut info1) = protect_request(&mut client, &get("a")).unwrap();
    let (r2, mut info2) = protect_request(&mut client, &get("b")).unwrap();
    let (_, mut s1) = unprotect_request(&mut server, &wire_trip(&r1)).unwrap();
    let (_, mut s2) = unprotect_request(&mut server, &wire_trip(&r2)).unwrap();
    let resp1 = protect_response(&mut server, &content(b"one"), &mut s1, false).unwrap();
    let resp2 = protect_response(&mut server, &content(b"two"), &mut s2, false).unwrap();
    // Swapped: the AAD binds each response to its request.
    assert_eq!(
        unprotect_response(&mut client, &wire_trip(&resp1), &mut info2).err(),
        Some(OscoreError::DecryptionFailed)
    );
    let got = unprotect_response(&mut client, &wire_trip(&resp1), &mut info1).unwrap();
    assert_eq!(got.payload, b"one");
    let got = unprotect_response(&mut client, &wire_trip(&resp2), &mut info2).unwrap();
    assert_eq!(got.payload, b"two");
    // A RequestInfo of the other role is refused (it would reuse the request's nonce).
    assert_eq!(
        protect_response(&mut client, &content(b"x"), &mut info1, false).err(),
        Some(OscoreError::WrongCodeClass)
    );
}

#[test]
fn observe_notifications_carry_their_own_partial_iv() {
    let (mut client, mut server) = pair();
    let mut register = get("temp");
    register.header.code = MessageClass::Request(RequestType::Get);
    register.set_observe_value(0);
    let (protected, mut info) = protect_request(&mut client, &register).unwrap();
    assert_eq!(
        u8::from(protected.header.code),
        0x05,
        "outer FETCH with Observe"
    );
    assert_eq!(
        protected.get_observe_value().unwrap().unwrap(),
        0,
        "outer Observe 0"
    );
    assert!(info.is_observe_registration());
    let (request, mut sinfo) = unprotect_request(&mut server, &wire_trip(&protected)).unwrap();
    assert_eq!(
        request.get_observe_value().unwrap().unwrap(),
        0,
        "inner Observe 0"
    );
    assert_eq!(u8::from(request.header.code), 0x01, "inner GET");
    assert!(sinfo.is_observe_registration());

    let notification = |seq: u32, value: &[u8]| {
        let mut n = content(value);
        n.set_observe_value(seq);
        n
    };
    // First notification may use the request nonce; the rest need fresh Partial IVs.
    let n0 = protect_response(&mut server, &notification(2, b"20"), &mut sinfo, false).unwrap();
    assert_eq!(u8::from(n0.header.code), 0x45, "outer 2.05 with Observe");
    assert_eq!(
        protect_response(&mut server, &notification(3, b"21"), &mut sinfo, false).err(),
        Some(OscoreError::RequestNonceUsed)
    );
    let n1 = protect_response(&mut server, &notification(3, b"21"), &mut sinfo, true).unwrap();
    let n2 = protect_response(&mut server, &notification(4, b"22"), &mut sinfo, true).unwrap();
    assert_eq!(OscoreOption::from_packet(&n1).unwrap().partial_iv, Some(0));
    assert_eq!(OscoreOption::from_packet(&n2).unwrap().partial_iv, Some(1));

    let got = unprotect_response(&mut client, &wire_trip(&n0), &mut info).unwrap();
    assert_eq!(got.payload, b"20");
    assert_eq!(
        unprotect_response(&mut client, &wire_trip(&n0), &mut info).err(),
        Some(OscoreError::Replay),
        "at most one notification without Partial IV"
    );
    let got = unprotect_response(&mut client, &wire_trip(&n2), &mut info).unwrap();
    assert_eq!(got.payload, b"22");
    assert_eq!(
        got.get_observe_value().unwrap().unwrap(),
        1,
        "Observe from the Partial IV"
    );
    assert_eq!(info.notification_number(), Some(1));
    // Older than the freshest: dropped.
    assert_eq!(
        unprotect_response(&mut client, &wire_trip(&n1), &mut info).err(),
        Some(OscoreError::Replay)
    );
    assert_eq!(
        unprotect_response(&mut client, &wire_trip(&n2), &mut info).err(),
        Some(OscoreError::Replay)
    );
}

#[test]
fn observe_in_response_to_a_plain_request_is_refused() {
    let (mut client, mut server) = pair();
    let (protected, mut info) = protect_request(&mut client, &get("a")).unwrap();
    let (_, mut sinfo) = unprotect_request(&mut server, &wire_trip(&protected)).unwrap();
    let mut n = content(b"1");
    n.set_observe_value(5);
    let resp = protect_response(&mut server, &n, &mut sinfo, false).unwrap();
    assert_eq!(
        unprotect_response(&mut client, &wire_trip(&resp), &mut info).err(),
        Some(OscoreError::UnexpectedObserve)
    );
}

// ---------------------------------------------------------------------------------------------
// Sequence-number persistence (Appendix B.1.1).

#[test]
fn restart_with_the_persisted_mark_never_reuses_a_sequence_number() {
    let ci = input(None, None, "00", "01");
    let config = ContextConfig {
        persist_step: 8,
        ..ContextConfig::default()
    };
    let mut used = std::collections::BTreeSet::new();
    let mut flash: u64 = 0; // what survives a restart
    let mut ctx = SecurityContext::new(&ci, config).unwrap();
    assert_eq!(
        protect_request(&mut ctx, &get("a")).err(),
        Some(OscoreError::PersistPending),
        "nothing is sent before a first mark is durable"
    );
    for round in 0..6u64 {
        for i in 0..(5 + round * 7) {
            if let Some(mark) = ctx.mark_to_persist() {
                // Some writes land late: the mark becomes durable only every other time.
                if (i + round) % 2 == 0 {
                    flash = mark;
                    ctx.persisted(mark);
                }
            }
            match protect_request(&mut ctx, &get("a")) {
                Ok((_, info)) => {
                    assert!(
                        used.insert(info.sequence_number()),
                        "reused {}",
                        info.sequence_number()
                    );
                    assert!(
                        info.sequence_number() < flash,
                        "used above the durable mark"
                    );
                }
                Err(OscoreError::PersistPending) => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Power loss: everything but `flash` is gone.
        ctx = SecurityContext::restore(&ci, config, flash).unwrap();
        assert_eq!(ctx.sequence().peek(), flash);
    }
    assert!(used.len() > 20, "the test sent something: {}", used.len());
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn arb_request() -> impl Strategy<Value = Packet> {
    (
        1u8..=7,
        prop::collection::vec("[a-z0-9]{0,12}", 0..4),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::option::of(0u8..=1),
        prop::collection::vec(any::<u8>(), 0..8),
        prop::option::of("[a-z=0-9]{1,10}"),
        any::<u16>(),
    )
        .prop_map(|(code, path, payload, observe, token, query, mid)| {
            let mut p = Packet::new();
            p.header.code = MessageClass::from(code);
            p.header.message_id = mid;
            p.set_token(token);
            for seg in path {
                p.add_option(CoapOption::UriPath, seg.into_bytes());
            }
            if let Some(q) = query {
                p.add_option(CoapOption::UriQuery, q.into_bytes());
            }
            if let Some(o) = observe {
                p.set_observe_value(u32::from(o));
            }
            p.add_option(CoapOption::UriPort, vec![0x16, 0x33]);
            p.add_option(CoapOption::Unknown(2049), vec![1, 2]);
            p.payload = payload;
            p
        })
}

fn arb_response() -> impl Strategy<Value = Packet> {
    (
        prop::sample::select(vec![0x41u8, 0x44, 0x45, 0x84, 0x80, 0xa0, 0xa3]),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::option::of(0u16..=20_000),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(code, payload, cf, max_age)| {
            let mut p = Packet::new();
            p.header.set_type(MessageType::Acknowledgement);
            p.header.code = MessageClass::from(code);
            p.set_token(vec![9]);
            if let Some(cf) = cf {
                p.add_option(CoapOption::ContentFormat, wire::write_uint(u32::from(cf)));
            }
            if let Some(m) = max_age {
                p.add_option(CoapOption::MaxAge, wire::write_uint(m));
            }
            p.payload = payload;
            p
        })
}

proptest! {
    #[test]
    fn request_and_response_round_trip(request in arb_request(), response in arb_response(), fresh in any::<bool>()) {
        let (mut client, mut server) = pair();
        let (protected, mut info) = protect_request(&mut client, &request).unwrap();
        let (got, mut sinfo) = unprotect_request(&mut server, &wire_trip(&protected)).unwrap();
        prop_assert_eq!(wire::encode(&got).unwrap(), wire::encode(&request).unwrap());

        let protected = protect_response(&mut server, &response, &mut sinfo, fresh).unwrap();
        let got = unprotect_response(&mut client, &wire_trip(&protected), &mut info).unwrap();
        prop_assert_eq!(wire::encode(&got).unwrap(), wire::encode(&response).unwrap());
    }

    #[test]
    fn any_bit_flip_in_ciphertext_or_tag_is_rejected(request in arb_request(), bit in any::<prop::sample::Index>()) {
        let (mut client, mut server) = pair();
        let (protected, _) = protect_request(&mut client, &request).unwrap();
        let mut tampered = protected.clone();
        let nbits = tampered.payload.len() * 8;
        let i = bit.index(nbits);
        tampered.payload[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(unprotect_request(&mut server, &tampered).err(), Some(OscoreError::DecryptionFailed));
        // The genuine one still verifies: the failure did not move the window.
        prop_assert!(unprotect_request(&mut server, &protected).is_ok());
    }

    #[test]
    fn any_bit_flip_in_a_response_is_rejected(response in arb_response(), bit in any::<prop::sample::Index>(), fresh in any::<bool>()) {
        let (mut client, mut server) = pair();
        let (protected, mut info) = protect_request(&mut client, &get("a")).unwrap();
        let (_, mut sinfo) = unprotect_request(&mut server, &protected).unwrap();
        let protected = protect_response(&mut server, &response, &mut sinfo, fresh).unwrap();
        let mut tampered = protected.clone();
        let i = bit.index(tampered.payload.len() * 8);
        tampered.payload[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(unprotect_response(&mut client, &tampered, &mut info).err(), Some(OscoreError::DecryptionFailed));
        prop_assert!(unprotect_response(&mut client, &protected, &mut info).is_ok());
    }

    #[test]
    fn option_parse_never_panics_and_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(o) = OscoreOption::parse(&bytes) {
            prop_assert_eq!(o.to_vec().unwrap(), bytes);
        }
    }
}
