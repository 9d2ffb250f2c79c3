//! The OSCORE test vectors of RFC 8613 Appendix C, checked through the SDK's API on the target:
//! key derivation (C.1–C.3), protected requests (C.4–C.6) and responses (C.7–C.8), byte for
//! byte, and each protected message verified back to its original. The same values as
//! `sdk/tests/oscore_rfc8613.rs` on the host.

use alloc::vec::Vec;

use cortex_m_semihosting::hprintln;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, DerivedKeys, SecurityContext, cose, protect_request,
    protect_response, unprotect_request, unprotect_response,
};

const MASTER_SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const MASTER_SALT: &str = "9e7ca92223786340";
const ID_CONTEXT: &str = "37cbf3210017a2d3";

fn h(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_default()
}

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

/// Counts and prints results.
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
            hprintln!("  ok      {}", name);
        } else {
            self.failed += 1;
            hprintln!("  FAILED  {}", name);
        }
    }
}

/// C.1–C.3: sender key, recipient key, common IV and both nonces for Partial IV 0.
struct Derivation {
    name: &'static str,
    input: ContextInput,
    sender_key: &'static str,
    recipient_key: &'static str,
    common_iv: &'static str,
    sender_nonce: &'static str,
    recipient_nonce: &'static str,
}

fn derivation_holds(v: &Derivation) -> bool {
    let Ok(keys) = DerivedKeys::derive(&v.input) else {
        return false;
    };
    let nonce = |id: &[u8]| {
        cose::nonce(keys.common_iv(), id, 0)
            .map(|n| n.to_vec())
            .ok()
    };
    keys.sender_key().as_slice() == h(v.sender_key)
        && keys.recipient_key().as_slice() == h(v.recipient_key)
        && keys.common_iv().as_slice() == h(v.common_iv)
        && nonce(&v.input.sender_id) == Some(h(v.sender_nonce))
        && nonce(&v.input.recipient_id) == Some(h(v.recipient_nonce))
}

fn derivations() -> [Derivation; 6] {
    let salt = Some(MASTER_SALT);
    [
        Derivation {
            name: "C.1.1 key derivation with master salt, client",
            input: input(salt, None, "", "01"),
            sender_key: "f0910ed7295e6ad4b54fc793154302ff",
            recipient_key: "ffb14e093c94c9cac9471648b4f98710",
            common_iv: "4622d4dd6d944168eefb54987c",
            sender_nonce: "4622d4dd6d944168eefb54987c",
            recipient_nonce: "4722d4dd6d944169eefb54987c",
        },
        Derivation {
            name: "C.1.2 key derivation with master salt, server",
            input: input(salt, None, "01", ""),
            sender_key: "ffb14e093c94c9cac9471648b4f98710",
            recipient_key: "f0910ed7295e6ad4b54fc793154302ff",
            common_iv: "4622d4dd6d944168eefb54987c",
            sender_nonce: "4722d4dd6d944169eefb54987c",
            recipient_nonce: "4622d4dd6d944168eefb54987c",
        },
        Derivation {
            name: "C.2.1 key derivation without master salt, client",
            input: input(None, None, "00", "01"),
            sender_key: "321b26943253c7ffb6003b0b64d74041",
            recipient_key: "e57b5635815177cd679ab4bcec9d7dda",
            common_iv: "be35ae297d2dace910c52e99f9",
            sender_nonce: "bf35ae297d2dace910c52e99f9",
            recipient_nonce: "bf35ae297d2dace810c52e99f9",
        },
        Derivation {
            name: "C.2.2 key derivation without master salt, server",
            input: input(None, None, "01", "00"),
            sender_key: "e57b5635815177cd679ab4bcec9d7dda",
            recipient_key: "321b26943253c7ffb6003b0b64d74041",
            common_iv: "be35ae297d2dace910c52e99f9",
            sender_nonce: "bf35ae297d2dace810c52e99f9",
            recipient_nonce: "bf35ae297d2dace910c52e99f9",
        },
        Derivation {
            name: "C.3.1 key derivation with ID context, client",
            input: input(salt, Some(ID_CONTEXT), "", "01"),
            sender_key: "af2a1300a5e95788b356336eeecd2b92",
            recipient_key: "e39a0c7c77b43f03b4b39ab9a268699f",
            common_iv: "2ca58fb85ff1b81c0b7181b85e",
            sender_nonce: "2ca58fb85ff1b81c0b7181b85e",
            recipient_nonce: "2da58fb85ff1b81d0b7181b85e",
        },
        Derivation {
            name: "C.3.2 key derivation with ID context, server",
            input: input(salt, Some(ID_CONTEXT), "01", ""),
            sender_key: "e39a0c7c77b43f03b4b39ab9a268699f",
            recipient_key: "af2a1300a5e95788b356336eeecd2b92",
            common_iv: "2ca58fb85ff1b81c0b7181b85e",
            sender_nonce: "2da58fb85ff1b81d0b7181b85e",
            recipient_nonce: "2ca58fb85ff1b81c0b7181b85e",
        },
    ]
}

/// A context whose sender sequence number continues at `seq`, its mark confirmed.
fn context(input: &ContextInput, config: ContextConfig, seq: u64) -> Option<SecurityContext> {
    let mut ctx = SecurityContext::restore(input, config, seq).ok()?;
    if let Some(mark) = ctx.mark_to_persist() {
        ctx.persisted(mark);
    }
    Some(ctx)
}

/// C.4–C.6: the request protected at sender sequence number 20 is the RFC's bytes, and the
/// server side verifies it back to the unprotected request.
struct RequestVector {
    name: &'static str,
    client: ContextInput,
    server: ContextInput,
    config: ContextConfig,
    unprotected: &'static str,
    protected: &'static str,
}

fn request_holds(v: &RequestVector) -> Option<bool> {
    let mut client = context(&v.client, v.config, 20)?;
    let request = wire::parse(&h(v.unprotected)).ok()?;
    let (protected, _) = protect_request(&mut client, &request).ok()?;
    let mut server = context(&v.server, ContextConfig::default(), 0)?;
    let received = wire::parse(&h(v.protected)).ok()?;
    let (decrypted, _) = unprotect_request(&mut server, &received).ok()?;
    Some(
        wire::encode(&protected)? == h(v.protected)
            && wire::encode(&decrypted)? == h(v.unprotected),
    )
}

fn requests() -> [RequestVector; 3] {
    let salt = Some(MASTER_SALT);
    [
        RequestVector {
            name: "C.4 request with master salt",
            client: input(salt, None, "", "01"),
            server: input(salt, None, "01", ""),
            config: ContextConfig::default(),
            unprotected: "44015d1f00003974396c6f63616c686f737483747631",
            protected: "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e",
        },
        RequestVector {
            name: "C.5 request without master salt",
            client: input(None, None, "00", "01"),
            server: input(None, None, "01", "00"),
            config: ContextConfig::default(),
            unprotected: "440171c30000b932396c6f63616c686f737483747631",
            protected: "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
        },
        RequestVector {
            name: "C.6 request with kid context",
            client: input(salt, Some(ID_CONTEXT), "", "01"),
            server: input(salt, Some(ID_CONTEXT), "01", ""),
            config: ContextConfig {
                send_kid_context: true,
                ..ContextConfig::default()
            },
            unprotected: "44012f8eef9bbf7a396c6f63616c686f737483747631",
            protected: "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3",
        },
    ]
}

const C7_C8_UNPROTECTED: &str = "64455d1f00003974ff48656c6c6f20576f726c6421";
const C7_PROTECTED: &str = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106";
const C8_PROTECTED: &str = "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e";

/// C.7 (`fresh_piv` false) and C.8 (true): the server's response to the request of C.4 is the
/// RFC's bytes and the client verifies it back to the unprotected response.
fn response_holds(fresh_piv: bool, expected: &str) -> Option<bool> {
    let v = &requests()[0];
    let mut client = context(&v.client, v.config, 20)?;
    let (outer, mut client_info) =
        protect_request(&mut client, &wire::parse(&h(v.unprotected)).ok()?).ok()?;
    let mut server = context(&v.server, ContextConfig::default(), 0)?;
    let (_, mut server_info) = unprotect_request(&mut server, &outer).ok()?;
    let response = wire::parse(&h(C7_C8_UNPROTECTED)).ok()?;
    let protected = protect_response(&mut server, &response, &mut server_info, fresh_piv).ok()?;
    let received = wire::parse(&h(expected)).ok()?;
    let decrypted = unprotect_response(&mut client, &received, &mut client_info).ok()?;
    Some(
        wire::encode(&protected)? == h(expected)
            && wire::encode(&decrypted)? == h(C7_C8_UNPROTECTED),
    )
}

/// Runs every vector; true when all hold.
pub fn run() -> bool {
    hprintln!("RFC 8613 Appendix C vectors:");
    let mut tally = Tally {
        passed: 0,
        failed: 0,
    };
    for v in &derivations() {
        tally.check(v.name, derivation_holds(v));
    }
    for v in &requests() {
        tally.check(v.name, request_holds(v) == Some(true));
    }
    tally.check(
        "C.7 response without Partial IV",
        response_holds(false, C7_PROTECTED) == Some(true),
    );
    tally.check(
        "C.8 response with Partial IV",
        response_holds(true, C8_PROTECTED) == Some(true),
    );
    hprintln!("vectors: {} passed, {} failed", tally.passed, tally.failed);
    tally.failed == 0 && tally.passed == 11
}
