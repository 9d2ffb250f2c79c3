//! What the handlers see of a message: [`Incoming`] (the parsed message, from where, as which
//! device); a request's parts as the routing reads them, checked first (no unrecognised
//! critical option: 4.02; Uri-Path and Uri-Query in UTF-8 and a well-formed Content-Format:
//! 4.00; a body within the configured bound: 4.13); and a handler's [`Outcome`].

use super::*;

/// A request's parts, borrowed from its packet.
pub(super) struct Request<'p> {
    pub(super) method: RequestType,
    pub(super) path: Vec<&'p str>,
    pub(super) query: Vec<&'p str>,
    pub(super) format: Option<u32>,
    pub(super) body: &'p [u8],
}

impl<'p> Request<'p> {
    /// The parts of `packet`, or the error to answer it with.
    pub(super) fn parse(packet: &'p Packet, max_body: usize) -> Result<Request<'p>, Response> {
        if let Some(n) = wire::unknown_critical_option(packet) {
            return Err(Response::error(
                ResponseType::BadOption,
                format!("unrecognized critical option {n}"),
            ));
        }
        let Some(path) = strings(packet, CoapOption::UriPath) else {
            return Err(Response::error(
                ResponseType::BadRequest,
                "Uri-Path is not UTF-8",
            ));
        };
        let Some(query) = strings(packet, CoapOption::UriQuery) else {
            return Err(Response::error(
                ResponseType::BadRequest,
                "Uri-Query is not UTF-8",
            ));
        };
        let Ok(format) = wire::uint_option(packet, CoapOption::ContentFormat, 2) else {
            return Err(Response::error(
                ResponseType::BadRequest,
                "malformed Content-Format",
            ));
        };
        if packet.payload.len() > max_body {
            return Err(Response::error(
                ResponseType::RequestEntityTooLarge,
                format!("bodies are limited to {max_body} bytes"),
            ));
        }
        let method = match packet.header.code {
            MessageClass::Request(m) => m,
            _ => RequestType::UnKnown,
        };
        Ok(Request {
            method,
            path,
            query,
            format,
            body: &packet.payload,
        })
    }
}

/// The fixed header of a parsed packet.
pub(super) fn header_of(packet: &Packet) -> wire::RawHeader {
    wire::RawHeader {
        kind: packet.header.get_type(),
        message_id: packet.header.message_id,
        code: u8::from(packet.header.code),
    }
}

/// The values of a repeatable text option (Uri-Path, Uri-Query), borrowed from the packet;
/// `None` if one is not UTF-8.
fn strings(packet: &Packet, option: CoapOption) -> Option<Vec<&str>> {
    match packet.get_option(option) {
        None => Some(Vec::new()),
        Some(list) => list.iter().map(|v| std::str::from_utf8(v).ok()).collect(),
    }
}

/// The value of `key=value` in a request's Uri-Query, the first if there are several.
pub(super) fn query_value<'q>(query: &[&'q str], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find_map(|q| q.strip_prefix(key)?.strip_prefix('='))
}

/// What a handler did with a request: answered it, or queued a record whose store decides
/// the answer.
pub(super) enum Outcome {
    Now(Response),
    Waiting(AppendTicket),
}

impl Outcome {
    pub(super) fn error(code: ResponseType, reason: impl Into<String>) -> Outcome {
        Outcome::Now(Response::error(code, reason))
    }
}

/// A parsed message as it came in: from where, its header, and the device it verified as
/// (`identity`; `None` for a device known by its address only).
#[derive(Clone, Copy)]
pub(super) struct Incoming<'a> {
    pub(super) peer: Peer,
    pub(super) header: wire::RawHeader,
    pub(super) packet: &'a Packet,
    pub(super) identity: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    pub(super) fn confirmable(&self) -> bool {
        self.header.kind == MessageType::Confirmable
    }

    /// The request to answer.
    pub(super) fn answering(&self) -> Answering<'a> {
        Answering {
            peer: self.peer,
            message_id: self.header.message_id,
            token: self.packet.get_token(),
            confirmable: self.confirmable(),
        }
    }
}

/// Who sent a request: from where, and as which device if the gateway verified it.
#[derive(Clone, Copy)]
pub(super) struct Origin<'a> {
    pub(super) peer: Peer,
    pub(super) identity: Option<&'a str>,
}
