//! A sans-IO stand-in for the edge router, inside the firmware: the other end of the device's
//! OSCORE exchange. It holds the edge's side of the device's security context (Sender ID empty,
//! Recipient ID = the device's kid) and
//!
//! - verifies each request of the device (RFC 8613 §8.2) and answers it protected (§8.3):
//!   `POST /rd?ep=…` (registration, RFC 9176) → 2.01 Created at `rd/1`, `POST /rd/1` (update)
//!   → 2.04, `POST /t` (telemetry) → 2.04 once the SenML-CBOR decodes and resolves, else 4.00;
//! - sends the device a protected command, `PUT /actuators/valve`, and verifies the answer.
//!
//! What the real edge does besides (registry, address binding, replay floors on disk, the
//! outbox, MQTT) is out of scope here: this checks the device, not the edge.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::coap::wire::{self, Token};
use v6iot_sdk::oscore::{
    self, ContextConfig, ContextInput, OscoreError, RequestInfo, SecurityContext,
};
use v6iot_sdk::senml::{self, ResolvedRecord};

/// Why the stand-in refused a datagram of the device (each one ends the self-test).
#[derive(Debug)]
pub enum EdgeError {
    /// Not a CoAP message.
    Malformed,
    /// OSCORE verification failed.
    Oscore(OscoreError),
    /// A message the stand-in did not expect.
    Unexpected(&'static str),
    /// A message could not be encoded.
    Encode,
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::Malformed => f.write_str("a datagram that is not CoAP"),
            EdgeError::Oscore(e) => write!(f, "OSCORE: {e}"),
            EdgeError::Unexpected(what) => write!(f, "unexpected: {what}"),
            EdgeError::Encode => f.write_str("cannot encode a message"),
        }
    }
}

impl From<OscoreError> for EdgeError {
    fn from(e: OscoreError) -> Self {
        EdgeError::Oscore(e)
    }
}

/// The command in flight: its message ID, token and OSCORE binding for the answer.
struct Command {
    message_id: u16,
    token: Token,
    info: RequestInfo,
}

/// The edge's side of one device.
pub struct EdgeStandIn {
    ctx: SecurityContext,
    /// The device's endpoint name, once registered.
    pub registered: Option<String>,
    /// Registration updates answered.
    pub updates: u32,
    /// Telemetry reports verified and resolved, their records.
    pub reports: Vec<Vec<ResolvedRecord>>,
    command: Option<Command>,
    /// The device's answer to the command: its code and payload.
    pub command_result: Option<(ResponseType, Vec<u8>)>,
    next_message_id: u16,
    out: VecDeque<Vec<u8>>,
}

impl EdgeStandIn {
    /// The edge's side of a context with `secret` and the device's `kid`.
    pub fn new(secret: &[u8], kid: &[u8]) -> Result<EdgeStandIn, OscoreError> {
        let input = ContextInput {
            master_secret: secret.to_vec(),
            master_salt: Vec::new(),
            id_context: None,
            sender_id: Vec::new(),
            recipient_id: kid.to_vec(),
        };
        Ok(EdgeStandIn {
            ctx: SecurityContext::restore(&input, ContextConfig::default(), 0)?,
            registered: None,
            updates: 0,
            reports: Vec::new(),
            command: None,
            command_result: None,
            next_message_id: 0x7000,
            out: VecDeque::new(),
        })
    }

    /// The next datagram for the device.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Whether the command was sent (answered or not).
    pub fn command_sent(&self) -> bool {
        self.command.is_some() || self.command_result.is_some()
    }

    /// A datagram from the device.
    pub fn handle_datagram(&mut self, bytes: &[u8]) -> Result<(), EdgeError> {
        let packet = wire::parse(bytes).map_err(|_| EdgeError::Malformed)?;
        let code = u8::from(packet.header.code);
        match (wire::code_class(code), packet.header.get_type()) {
            (0, MessageType::Confirmable | MessageType::NonConfirmable) if code != 0 => {
                self.serve(&packet)
            }
            (2..=5, MessageType::Acknowledgement) => self.command_answered(&packet),
            _ => Err(EdgeError::Unexpected(
                "a message that is neither request nor answer",
            )),
        }
    }

    /// Verifies a request, routes it, answers it protected (piggybacked on the ACK).
    fn serve(&mut self, packet: &Packet) -> Result<(), EdgeError> {
        let (inner, mut info) = oscore::unprotect_request(&mut self.ctx, packet)?;
        let path = segments(&inner, CoapOption::UriPath).join("/");
        let (code, location) = match (inner.header.code, path.as_str()) {
            (MessageClass::Request(RequestType::Post), "rd") => {
                let ep = segments(&inner, CoapOption::UriQuery)
                    .into_iter()
                    .find_map(|q| q.strip_prefix("ep=").map(String::from));
                self.registered = ep;
                (ResponseType::Created, Some(["rd", "1"]))
            }
            (MessageClass::Request(RequestType::Post), "rd/1") => {
                self.updates += 1;
                (ResponseType::Changed, None)
            }
            (MessageClass::Request(RequestType::Post), "t") => {
                // Resolved at an arbitrary "now": the report carries no time of its own.
                match senml::from_cbor(&inner.payload).and_then(|p| senml::resolve(&p, 1.8e9)) {
                    Ok(records) => {
                        self.reports.push(records);
                        (ResponseType::Changed, None)
                    }
                    Err(_) => (ResponseType::BadRequest, None),
                }
            }
            _ => (ResponseType::NotFound, None),
        };
        let mut answer = Packet::new();
        answer.header.set_type(MessageType::Acknowledgement);
        answer.header.message_id = packet.header.message_id;
        answer.header.code = MessageClass::Response(code);
        answer.set_token(packet.get_token().to_vec());
        for segment in location.into_iter().flatten() {
            answer.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
        }
        let outer = oscore::protect_response(&mut self.ctx, &answer, &mut info, false)?;
        self.out
            .push_back(wire::encode(&outer).ok_or(EdgeError::Encode)?);
        Ok(())
    }

    /// Sends `PUT /actuators/valve` with `payload`, protected, Confirmable.
    pub fn send_command(&mut self, payload: &[u8]) -> Result<(), EdgeError> {
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let token = Token::from_slice(&message_id.to_be_bytes());
        let mut request = Packet::new();
        request.header.set_type(MessageType::Confirmable);
        request.header.message_id = message_id;
        request.header.code = MessageClass::Request(RequestType::Put);
        request.set_token(token.as_slice().to_vec());
        for segment in v6iot_examples::valve_sensor::VALVE_PATH.split('/') {
            request.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        request.add_option(CoapOption::ContentFormat, wire::write_uint(0));
        request.payload = payload.to_vec();
        // The stand-in's sequence-number marks are "durable" at once (it keeps nothing).
        if let Some(mark) = self.ctx.mark_to_persist() {
            self.ctx.persisted(mark);
        }
        let (outer, info) = oscore::protect_request(&mut self.ctx, &request)?;
        self.out
            .push_back(wire::encode(&outer).ok_or(EdgeError::Encode)?);
        self.command = Some(Command {
            message_id,
            token,
            info,
        });
        Ok(())
    }

    /// The device's piggybacked answer to the command, verified.
    fn command_answered(&mut self, packet: &Packet) -> Result<(), EdgeError> {
        let matches = self.command.as_ref().is_some_and(|c| {
            c.message_id == packet.header.message_id
                && c.token == Token::from_slice(packet.get_token())
        });
        let Some(mut command) = self.command.take().filter(|_| matches) else {
            return Err(EdgeError::Unexpected("an answer to no command"));
        };
        let inner = oscore::unprotect_response(&mut self.ctx, packet, &mut command.info)?;
        let code = match inner.header.code {
            MessageClass::Response(c) => c,
            _ => return Err(EdgeError::Unexpected("an answer without a response code")),
        };
        self.command_result = Some((code, inner.payload));
        Ok(())
    }
}

/// The values of a repeatable text option (not UTF-8: left out).
fn segments(packet: &Packet, option: CoapOption) -> Vec<&str> {
    packet
        .get_option(option)
        .into_iter()
        .flatten()
        .filter_map(|v| core::str::from_utf8(v).ok())
        .collect()
}
