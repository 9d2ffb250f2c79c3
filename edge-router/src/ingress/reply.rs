//! Building the ingress's answers.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use v6iot_sdk::coap::wire;

/// What a remembered message ID was answered with.
#[derive(Debug)]
pub(super) enum Reply {
    /// Its record is being stored; a retransmission is ignored meanwhile.
    Pending,
    /// This was sent (repeat it for a retransmitted Confirmable request).
    Sent(Box<[u8]>),
    /// Non-confirmable: nothing to repeat.
    Silent,
}

impl Reply {
    /// The reply kept for a request answered with `bytes`: the same bytes again for a
    /// Confirmable one's duplicates; nothing for a Non-confirmable one's.
    pub(super) fn repeating(confirmable: bool, bytes: Vec<u8>) -> Reply {
        if confirmable {
            Reply::Sent(bytes.into_boxed_slice())
        } else {
            Reply::Silent
        }
    }
}

/// A response before encoding.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Response {
    pub(super) code: ResponseType,
    pub(super) payload: Vec<u8>,
    pub(super) max_age: Option<u32>,
    pub(super) location: Vec<String>,
}

impl Response {
    pub(super) fn code(code: ResponseType) -> Response {
        Response {
            code,
            payload: Vec::new(),
            max_age: None,
            location: Vec::new(),
        }
    }

    /// An error with a diagnostic payload (RFC 7252 §5.5.2).
    pub(super) fn error(code: ResponseType, reason: impl Into<String>) -> Response {
        Response {
            payload: reason.into().into_bytes(),
            ..Response::code(code)
        }
    }

    pub(super) fn max_age(mut self, seconds: u32) -> Response {
        self.max_age = Some(seconds);
        self
    }
}

/// The answer to the request with `request_message_id` and `token`: piggybacked on an ACK when
/// it was Confirmable, else a NON with `message_id`.
pub(super) fn response(
    request_message_id: u16,
    token: &[u8],
    confirmable: bool,
    message_id: u16,
    r: &Response,
) -> Vec<u8> {
    let (kind, id) = if confirmable {
        (MessageType::Acknowledgement, request_message_id)
    } else {
        (MessageType::NonConfirmable, message_id)
    };
    if r.location.is_empty() && r.max_age.is_none() && r.payload.is_empty() && token.len() <= 8 {
        // Header and token only (every telemetry ACK): written directly.
        return wire::bare_message(kind, u8::from(MessageClass::Response(r.code)), id, token);
    }
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = id;
    p.header.code = MessageClass::Response(r.code);
    p.set_token(token.to_vec());
    for seg in &r.location {
        p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
    }
    if let Some(age) = r.max_age {
        p.add_option(CoapOption::MaxAge, wire::write_uint(age));
    }
    if !r.payload.is_empty() {
        p.add_option(CoapOption::ContentFormat, Vec::new());
        p.payload = r.payload.clone();
    }
    wire::encode(&p).unwrap_or_else(|| empty(MessageType::Reset, request_message_id))
}

pub(super) use v6iot_sdk::coap::wire::empty_message as empty;

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes written directly are what coap-lite writes for the same message.
    #[test]
    fn bare_responses_match_the_codec() {
        for (code, token, confirmable) in [
            (ResponseType::Changed, &[1u8, 2, 3, 4][..], true),
            (ResponseType::Changed, &[][..], false),
            (ResponseType::Created, &[9, 8, 7, 6, 5, 4, 3, 2][..], true),
            (ResponseType::Deleted, &[0xff][..], false),
        ] {
            let bytes = response(0x1234, token, confirmable, 0xbeef, &Response::code(code));
            let mut p = Packet::new();
            p.header.set_type(if confirmable {
                MessageType::Acknowledgement
            } else {
                MessageType::NonConfirmable
            });
            p.header.message_id = if confirmable { 0x1234 } else { 0xbeef };
            p.header.code = MessageClass::Response(code);
            p.set_token(token.to_vec());
            assert_eq!(
                bytes,
                p.to_bytes().unwrap(),
                "{code:?} {token:?} {confirmable}"
            );
        }
    }
}
