//! The client role of an [`Endpoint`]: requests this device sends (registration, telemetry),
//! matched to their responses — piggybacked on the ACK, or separate (RFC 7252 §5.2).
//!
//! With credentials, a verified 4.01 that carries an Echo option (RFC 9175 §2.3: the server
//! wants the request's freshness, or this device's reachability at its address, confirmed) is
//! not the request's outcome: the request goes again, once, with the Echo value (a new message
//! ID, token and Partial IV), and its answer is the outcome. So the plain request is kept while
//! it is in flight.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::time::Instant;
use core::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::secure::Sealed;
use super::{Endpoint, Event, Purpose, Token, Transmit, empty_message};
use crate::coap::resource::{Code, Method};
use crate::coap::wire;
use crate::oscore::{self, OscoreError, RequestInfo};

/// Identifies a request sent with [`Endpoint::send_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub(crate) u32);

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    /// Method.
    pub method: Method,
    /// Path, e.g. `rd` or `rd/4521`.
    pub path: String,
    /// Uri-Query options, e.g. `ep=sensor-1`.
    pub query: Vec<String>,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Body (sent in one datagram; keep it under a block).
    pub payload: Vec<u8>,
    /// Confirmable (retransmitted until acknowledged) or not.
    pub confirmable: bool,
}

impl ClientRequest {
    /// A Confirmable request with no query and no body.
    pub fn new(method: Method, path: impl Into<String>) -> ClientRequest {
        ClientRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            content_format: None,
            payload: Vec::new(),
            confirmable: true,
        }
    }

    /// Adds a Uri-Query option.
    pub fn query(mut self, q: impl Into<String>) -> Self {
        self.query.push(q.into());
        self
    }

    /// Sets the body and its content format.
    pub fn body(mut self, content_format: u16, payload: Vec<u8>) -> Self {
        self.content_format = Some(content_format);
        self.payload = payload;
        self
    }
}

/// A response to one of this endpoint's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientResponse {
    /// Response code.
    pub code: Code,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Body.
    pub payload: Vec<u8>,
    /// Max-Age, when given (for 5.03 it says when to try again).
    pub max_age: Option<u32>,
    /// Location-Path segments (2.01 Created).
    pub location: Vec<String>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// The server answered.
    Response(ClientResponse),
    /// No acknowledgement after MAX_RETRANSMIT, or no separate response within
    /// EXCHANGE_LIFETIME.
    Timeout,
    /// The server answered with Reset.
    Reset,
}

/// A request awaiting its response.
#[derive(Debug)]
pub(super) struct Exchange {
    id: RequestId,
    peer: SocketAddr,
    token: Token,
    message_id: u16,
    /// `Some(deadline)` once an empty ACK said a separate response will follow (or for a
    /// Non-confirmable request); `None` while the request itself is unacknowledged (or held for
    /// a sequence-number mark).
    separate_until: Option<Instant>,
    /// With OSCORE: the binding its response is verified with (`None` while held).
    oscore: Option<Box<RequestInfo>>,
    /// With OSCORE: the request as built, to repeat it with an Echo value (taken then).
    plain: Option<Box<Packet>>,
}

impl Exchange {
    /// True when it holds an OSCORE binding for its response.
    pub(super) fn has_binding(&self) -> bool {
        self.oscore.is_some()
    }
}

impl Endpoint {
    /// Sends a request to `peer`; its outcome arrives through [`Endpoint::poll_response`].
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: ClientRequest,
    ) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        let token = self.fresh_token();
        let message_id = self.take_message_id();
        let mut p = Packet::new();
        p.header.set_type(if request.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.header.message_id = message_id;
        p.header.code = MessageClass::Request(request.method);
        p.set_token(token.as_slice().to_vec());
        for seg in request.path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if let Some(cf) = request.content_format {
            p.add_option(CoapOption::ContentFormat, wire::write_uint(u32::from(cf)));
        }
        for q in &request.query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = request.payload;
        let plain = self.secure.is_some().then(|| Box::new(p.clone()));
        self.exchanges.push(Exchange {
            id,
            peer,
            token,
            message_id,
            separate_until: None,
            oscore: None,
            plain,
        });
        let sealed = self.seal_request(id, peer, p);
        self.release_request(now, id, peer, request.confirmable, sealed);
        id
    }

    /// Sends a request that is ready (or fails it); a held one stays pending.
    pub(super) fn release_request(
        &mut self,
        now: Instant,
        id: RequestId,
        peer: SocketAddr,
        confirmable: bool,
        sealed: Sealed,
    ) {
        let (contents, oscore) = match sealed {
            Sealed::Held => return,
            Sealed::Failed => {
                self.finish_request(id, RequestOutcome::Timeout);
                return;
            }
            Sealed::Sent(contents, oscore) => (contents, oscore),
        };
        let lifetime = self.config.exchange_lifetime();
        let Some(x) = self.exchanges.iter_mut().find(|x| x.id == id) else {
            return;
        };
        x.oscore = oscore;
        let message_id = x.message_id;
        if confirmable {
            self.send_confirmable(now, peer, message_id, contents, Purpose::Request(id));
        } else {
            x.separate_until = Some(now + lifetime);
            self.transmits.push_back(Transmit {
                destination: peer,
                contents,
            });
        }
    }

    /// The next finished request, if any.
    #[must_use]
    pub fn poll_response(&mut self) -> Option<(RequestId, RequestOutcome)> {
        self.outcomes.pop_front()
    }

    /// Requests still awaiting their outcome.
    pub fn pending_requests(&self) -> usize {
        self.exchanges.len()
    }

    /// An empty ACK of one of our Confirmable requests: a separate response will follow.
    pub(super) fn request_acknowledged(&mut self, now: Instant, id: RequestId) {
        let until = now + self.config.exchange_lifetime();
        if let Some(x) = self.exchanges.iter_mut().find(|x| x.id == id) {
            x.separate_until = Some(until);
        }
    }

    /// Ends an exchange with `outcome`.
    pub(super) fn finish_request(&mut self, id: RequestId, outcome: RequestOutcome) {
        if let Some(pos) = self.exchanges.iter().position(|x| x.id == id) {
            self.exchanges.swap_remove(pos);
            self.outcomes.push_back((id, outcome));
        }
    }

    /// A response-class message from `peer`. Returns false when it matched nothing.
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
    ) -> bool {
        let kind = packet.header.get_type();
        let token = Token::from_slice(packet.get_token());
        let message_id = packet.header.message_id;
        let found = self.exchanges.iter().find(|x| {
            x.peer == peer
                && x.token == token
                && match kind {
                    // Piggybacked: the ACK carries our request's message ID.
                    MessageType::Acknowledgement => x.message_id == message_id,
                    _ => true,
                }
        });
        let Some(id) = found.map(|x| x.id) else {
            return false;
        };
        let verified = match self.verify_response(id, packet) {
            Ok(verified) => verified,
            Err(OscoreError::NoOscoreOption)
                if wire::code_class(u8::from(packet.header.code)) >= 4 =>
            {
                // An unauthenticated error answer (§8.2, e.g. "Security context not found"):
                // dropped like any unverified response, but reported with its code.
                if let Some(secure) = self.secure.as_deref_mut() {
                    secure.stats.unprotected_errors += 1;
                }
                let code = u8::from(packet.header.code);
                let shown = packet.payload.get(..64).unwrap_or(&packet.payload);
                self.push_event(Event::UnprotectedError {
                    peer,
                    code,
                    diagnostic: String::from_utf8_lossy(shown).into_owned(),
                });
                return true;
            }
            Err(error) => {
                // Dropped unacknowledged: the request retries or times out as usual.
                self.push_event(Event::OscoreRejected { peer, error });
                return true;
            }
        };
        let packet = verified.as_ref().unwrap_or(packet);
        if kind == MessageType::Acknowledgement || kind == MessageType::Confirmable {
            self.in_flight.retain(|f| f.purpose != Purpose::Request(id));
        }
        if kind == MessageType::Confirmable {
            let ack = empty_message(MessageType::Acknowledgement, message_id);
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: ack.clone(),
            });
            self.remember(now, peer, message_id, Some(ack));
        } else if kind == MessageType::NonConfirmable {
            self.remember(now, peer, message_id, None);
        }
        if verified.is_some()
            && let Some(echo) = echo_challenge(packet)
            && self.repeat_with_echo(now, id, peer, echo)
        {
            return true;
        }
        let code = match packet.header.code {
            MessageClass::Response(c) => c,
            _ => Code::UnKnown,
        };
        let response = ClientResponse {
            code,
            content_format: wire::uint_option(packet, CoapOption::ContentFormat, 2)
                .ok()
                .flatten()
                .map(|v| v as u16),
            payload: packet.payload.clone(),
            max_age: wire::uint_option(packet, CoapOption::MaxAge, 4)
                .ok()
                .flatten(),
            location: packet
                .get_option(CoapOption::LocationPath)
                .map(|l| {
                    l.iter()
                        .filter_map(|s| String::from_utf8(s.clone()).ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.finish_request(id, RequestOutcome::Response(response));
        true
    }

    /// Sends request `id` again with the server's Echo value (RFC 9175 §2.3): a new message
    /// ID, token and (when sealed) Partial IV. `false` when it was repeated once already, or
    /// nothing is kept to repeat: the 4.01 is then its outcome.
    fn repeat_with_echo(
        &mut self,
        now: Instant,
        id: RequestId,
        peer: SocketAddr,
        echo: Vec<u8>,
    ) -> bool {
        let Some(pos) = self.exchanges.iter().position(|x| x.id == id) else {
            return false;
        };
        let token = self.fresh_token();
        let message_id = self.take_message_id();
        let Some(x) = self.exchanges.get_mut(pos) else {
            return false;
        };
        let Some(mut p) = x.plain.take() else {
            return false;
        };
        x.token = token;
        x.message_id = message_id;
        x.separate_until = None;
        x.oscore = None;
        p.clear_option(CoapOption::Unknown(wire::ECHO));
        p.add_option(CoapOption::Unknown(wire::ECHO), echo);
        p.header.message_id = message_id;
        p.set_token(token.as_slice().to_vec());
        let confirmable = p.header.get_type() == MessageType::Confirmable;
        self.in_flight.retain(|f| f.purpose != Purpose::Request(id));
        if let Some(secure) = self.secure.as_deref_mut() {
            secure.stats.echo_repeats += 1;
        }
        let sealed = self.seal_request(id, peer, *p);
        self.release_request(now, id, peer, confirmable, sealed);
        true
    }

    /// With credentials, verifies a response to request `id` (§8.4): `Ok(Some(original))`,
    /// `Ok(None)` without credentials, an error for anything that does not verify (unprotected
    /// responses included).
    fn verify_response(
        &mut self,
        id: RequestId,
        packet: &Packet,
    ) -> Result<Option<Packet>, OscoreError> {
        let Some(secure) = self.secure.as_deref_mut() else {
            return Ok(None);
        };
        let info = self
            .exchanges
            .iter_mut()
            .find(|x| x.id == id)
            .and_then(|x| x.oscore.as_deref_mut());
        let result = match info {
            Some(info) => oscore::unprotect_response(&mut secure.ctx, packet, info),
            // Held, so never sent: nothing can answer it.
            None => Err(OscoreError::UnknownKid),
        };
        match result {
            Ok(original) => {
                secure.stats.responses_verified += 1;
                Ok(Some(original))
            }
            Err(e) => {
                secure.stats.responses_rejected += 1;
                Err(e)
            }
        }
    }

    /// Exchanges whose separate response never came.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        let expired: Vec<RequestId> = self
            .exchanges
            .iter()
            .filter(|x| x.separate_until.is_some_and(|t| t <= now))
            .map(|x| x.id)
            .collect();
        for id in expired {
            self.finish_request(id, RequestOutcome::Timeout);
        }
    }

    /// The earliest separate-response deadline.
    pub(super) fn request_deadline(&self) -> Option<Instant> {
        self.exchanges.iter().filter_map(|x| x.separate_until).min()
    }

    fn fresh_token(&mut self) -> Token {
        loop {
            let bytes = super::splitmix64(&mut self.rng).to_be_bytes();
            let token = Token::from_slice(bytes.get(..4).unwrap_or(&[0; 4]));
            if !self.exchanges.iter().any(|x| x.token == token) {
                return token;
            }
        }
    }
}

/// The Echo value of a 4.01 that asks for one (RFC 9175 §2.3), if `response` is one.
fn echo_challenge(response: &Packet) -> Option<Vec<u8>> {
    if response.header.code != MessageClass::Response(Code::Unauthorized) {
        return None;
    }
    response
        .get_first_option(CoapOption::Unknown(wire::ECHO))
        .cloned()
}
