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

/// The answer to `request`: piggybacked on an ACK when it was Confirmable, else a NON with
/// `message_id`.
pub(super) fn response(
    request: &Packet,
    confirmable: bool,
    message_id: u16,
    r: &Response,
) -> Vec<u8> {
    let mut p = Packet::new();
    if confirmable {
        p.header.set_type(MessageType::Acknowledgement);
        p.header.message_id = request.header.message_id;
    } else {
        p.header.set_type(MessageType::NonConfirmable);
        p.header.message_id = message_id;
    }
    p.header.code = MessageClass::Response(r.code);
    p.set_token(request.get_token().to_vec());
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
    wire::encode(&p).unwrap_or_else(|| empty(MessageType::Reset, request.header.message_id))
}

pub(super) use v6iot_sdk::coap::wire::empty_message as empty;
