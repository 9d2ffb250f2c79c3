//! Requests to an [`Endpoint`] (RFC 7252 §5): the OSCORE gate's verdict applied, the request
//! checked (method, options, discovery, resource, content formats, body size), the handler run
//! (or its answer deferred to a separate response), and the answer built, protected and
//! remembered for duplicates; No-Response (RFC 7967).
//!
//! Every check that fails answers with its code and a diagnostic; the handler runs only for a
//! request that passed them all.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use core::net::SocketAddr;

use crate::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::exchange::Purpose;
use super::secure::{Admit, Gate, HeldIncoming};
use super::{Endpoint, Event, SeparateError, Transmit};
use crate::coap::resource::{
    Code, Method, Reply, Request, Resource, ResourceId, ResourceTree, Response, Ticket,
    WELL_KNOWN_CORE, content_format,
};
use crate::coap::wire::{self, Block, Token, empty_message};
use crate::oscore::RequestInfo;

/// A request whose handler chose to answer later.
#[derive(Debug)]
pub(super) struct Deferred {
    pub(super) ticket: Ticket,
    pub(super) peer: SocketAddr,
    pub(super) token: Token,
    pub(super) confirmable: bool,
    pub(super) expires: Instant,
    /// With OSCORE: the request's binding for the separate response.
    pub(super) oscore: Option<Box<RequestInfo>>,
}

/// The answer to a request, before it becomes a message.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) response: Response,
    pub(super) observe: Option<u32>,
    pub(super) block1: Option<Block>,
    pub(super) block2: Option<Block>,
    pub(super) size1: Option<u32>,
    pub(super) size2: Option<u32>,
    pub(super) etag: Option<[u8; 4]>,
}

impl Answer {
    pub(super) fn of(response: Response) -> Answer {
        Answer {
            response,
            observe: None,
            block1: None,
            block2: None,
            size1: None,
            size2: None,
            etag: None,
        }
    }

    pub(super) fn error(code: Code, diagnostic: impl Into<String>) -> Answer {
        Answer::of(Response::error(code, diagnostic))
    }

    /// Sets Max-Age.
    pub(super) fn map_max_age(mut self, seconds: u32) -> Answer {
        self.response.max_age = Some(seconds);
        self
    }
}

/// What became of a request: an answer now, or a separate one later.
pub(super) enum Outcome {
    Answer(Answer),
    Deferred,
}

/// A request as it arrived: who sent it, its message, and the packet (the inner request once
/// OSCORE verified it).
pub(super) struct Incoming<'p> {
    pub(super) now: Instant,
    pub(super) peer: SocketAddr,
    pub(super) message_id: u16,
    pub(super) confirmable: bool,
    pub(super) token: Token,
    pub(super) packet: &'p Packet,
}

/// The options of a request, read and checked (RFC 7252 §5.4, §5.10).
struct Options {
    method: Method,
    path: String,
    query: Vec<String>,
    content_format: Option<u16>,
    accept: Option<u16>,
    observe: Option<u32>,
    block1: Option<Block>,
    block2: Option<Block>,
    size1: Option<u32>,
}

/// The body a handler gets, or the answer that asks for the next Block1 piece.
enum Body {
    /// Whole: `None` for the packet's own payload, `Some` for a reassembled Block1 body.
    Ready {
        body: Option<Vec<u8>>,
        content_format: Option<u16>,
        /// The Block1 option of the answer (the last piece's).
        block1: Option<Block>,
    },
    /// 2.31 Continue: more pieces to come.
    Continue(Answer),
}

impl Endpoint {
    /// Sends the answer to a request whose handler returned [`Reply::Separate`].
    pub fn respond_separately(
        &mut self,
        now: Instant,
        ticket: Ticket,
        response: Response,
    ) -> Result<(), SeparateError> {
        let pos = self
            .deferred
            .iter()
            .position(|d| d.ticket == ticket)
            .ok_or(SeparateError::UnknownTicket)?;
        let d = self.deferred.swap_remove(pos);
        let answer = self.finish_block2(Answer::of(response), None);
        let kind = if d.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let message_id = self.take_message_id();
        let mut info = d.oscore;
        let packet = build_packet(kind, message_id, d.token, &answer);
        let Some(contents) = self.seal_answer(d.peer, &packet, info.as_deref_mut()) else {
            return Ok(());
        };
        self.count_answer(&answer);
        if d.confirmable {
            self.send_confirmable(now, d.peer, message_id, contents, Purpose::Separate);
        } else {
            self.transmits.push_back(Transmit {
                destination: d.peer,
                contents,
            });
        }
        Ok(())
    }

    /// A request from `peer`: through the OSCORE gate (with credentials), then served.
    pub(super) fn handle_request<S>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let token = Token::from_slice(packet.get_token());
        let (packet, info) = match self.secure.as_deref_mut().map(|s| s.gate(packet)) {
            None | Some(Gate::Open) => (Cow::Borrowed(packet), None),
            Some(Gate::Verified(request, binding)) => {
                let verified = HeldIncoming {
                    peer,
                    message_id,
                    confirmable,
                    token,
                    packet: request,
                    info: binding,
                };
                match self.admit(verified) {
                    Admit::Serve(request, binding) => (Cow::Owned(request), Some(binding)),
                    Admit::Held | Admit::Dropped => {
                        // Its retransmissions are duplicates until the answer exists.
                        self.remember(now, peer, message_id, None);
                        return;
                    }
                }
            }
            Some(Gate::Refused {
                code,
                diagnostic,
                cause,
            }) => {
                if let Some(error) = cause {
                    self.push_event(Event::OscoreRejected { peer, error });
                }
                let answer = Answer::error(code, diagnostic).map_max_age(0);
                self.answer_unprotected(now, peer, packet, token, &answer);
                return;
            }
        };
        let request = Incoming {
            now,
            peer,
            message_id,
            confirmable,
            token,
            packet: &packet,
        };
        self.serve_request(&request, info, tree, state);
    }

    /// Serves a request that passed the OSCORE gate (`info`: its binding when it was
    /// protected), answers it and remembers the answer for duplicates.
    pub(super) fn serve_request<S>(
        &mut self,
        req: &Incoming<'_>,
        mut info: Option<Box<RequestInfo>>,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let Incoming {
            now,
            peer,
            message_id,
            confirmable,
            token,
            packet,
        } = *req;
        let outcome = match self.check_request(req, &mut info, tree, state) {
            Ok(outcome) => outcome,
            Err(answer) => Outcome::Answer(answer),
        };
        let reply = match outcome {
            Outcome::Deferred => {
                confirmable.then(|| empty_message(MessageType::Acknowledgement, message_id))
            }
            Outcome::Answer(answer) => {
                self.count_answer(&answer);
                let suppressed = no_response_suppresses(packet, answer.response.code);
                let message = match (confirmable, suppressed) {
                    (true, true) => None,
                    (true, false) => Some(build_packet(
                        MessageType::Acknowledgement,
                        message_id,
                        token,
                        &answer,
                    )),
                    (false, true) => None,
                    (false, false) => {
                        let id = self.take_message_id();
                        Some(build_packet(
                            MessageType::NonConfirmable,
                            id,
                            token,
                            &answer,
                        ))
                    }
                };
                let sealed = message.and_then(|m| self.seal_answer(peer, &m, info.as_deref_mut()));
                if info.is_some() && answer.observe.is_some() {
                    // A registration: its notifications are protected with its binding.
                    if let Some(o) = self
                        .observers
                        .iter_mut()
                        .find(|o| o.peer == peer && o.token == token)
                    {
                        o.oscore = info.take();
                    }
                }
                match sealed {
                    None if confirmable => {
                        Some(empty_message(MessageType::Acknowledgement, message_id))
                    }
                    other => other,
                }
            }
        };
        if let Some(contents) = &reply {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: contents.clone(),
            });
        }
        self.record_reply(now, peer, message_id, reply.filter(|_| confirmable));
        if let Some(id) = self.notify_after.take() {
            self.notify(now, id, tree, state);
        }
    }

    /// Answers a request the OSCORE gate refused, unprotected (§8.2).
    fn answer_unprotected(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        packet: &Packet,
        token: Token,
        answer: &Answer,
    ) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        self.count_answer(answer);
        let (kind, id) = if confirmable {
            (MessageType::Acknowledgement, message_id)
        } else {
            (MessageType::NonConfirmable, self.take_message_id())
        };
        let reply = wire::encode(&build_packet(kind, id, token, answer));
        if let Some(contents) = &reply {
            self.transmits.push_back(Transmit {
                destination: peer,
                contents: contents.clone(),
            });
        }
        self.remember(now, peer, message_id, reply.filter(|_| confirmable));
    }

    /// The bytes of an answer: protected with the request's binding when there is one (and the
    /// endpoint has credentials), else plain. `None` when it cannot be protected or encoded.
    fn seal_answer(
        &mut self,
        peer: SocketAddr,
        packet: &Packet,
        info: Option<&mut RequestInfo>,
    ) -> Option<Vec<u8>> {
        let (Some(secure), Some(info)) = (self.secure.as_deref_mut(), info) else {
            return wire::encode(packet);
        };
        match secure.seal_response(packet, info, false) {
            Ok(p) => p.and_then(|p| wire::encode(&p)),
            Err(error) => {
                self.push_event(Event::OscoreRejected { peer, error });
                None
            }
        }
    }

    /// Checks a request and runs its handler: the answer (an error for a failed check), or
    /// `Deferred` when the handler answers later.
    fn check_request<S>(
        &mut self,
        req: &Incoming<'_>,
        info: &mut Option<Box<RequestInfo>>,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) -> Result<Outcome, Answer> {
        let opts = read_options(req.packet)?;
        if opts.path == WELL_KNOWN_CORE {
            return self.discovery(tree, &opts).map(Outcome::Answer);
        }
        let path = &opts.path;
        let id = tree
            .find(path)
            .ok_or_else(|| Answer::error(Code::NotFound, format!("no resource /{path}")))?;
        let resource = tree
            .get(id)
            .ok_or_else(|| Answer::error(Code::NotFound, format!("no resource /{path}")))?;
        let handler = resource.handler(opts.method).ok_or_else(|| {
            Answer::error(
                Code::MethodNotAllowed,
                format!("/{path} allows {}", resource.methods()),
            )
        })?;
        let accept = negotiate_accept(resource, &opts)?;
        let (body, content_format, block1_reply) =
            match self.request_body(req, id, resource, &opts)? {
                Body::Continue(answer) => return Ok(Outcome::Answer(answer)),
                Body::Ready {
                    body,
                    content_format,
                    block1,
                } => (body, content_format, block1),
            };

        // Observe (RFC 7641 §2): 0 registers, 1 deregisters; only on the first block.
        let method = opts.method;
        let observable = resource.link_attrs().observable && method == Method::Get;
        let first_block = opts.block2.is_none_or(|b| b.num == 0);
        if opts.observe == Some(1) {
            self.deregister(req.peer, req.token);
        }
        let register = observable && opts.observe == Some(0) && first_block;

        let ticket = self.take_ticket();
        let request = Request {
            method,
            path: resource.path(),
            query: &opts.query,
            content_format,
            accept,
            payload: body.as_deref().unwrap_or(&req.packet.payload),
            peer: req.peer,
            now: req.now,
            ticket,
        };
        let response = match handler(state, &request) {
            Reply::Now(r) => r,
            Reply::Separate => return self.defer(req, ticket, info).map(|()| Outcome::Deferred),
        };
        let success = response.is_success();
        let mut answer = Answer::of(response);
        answer.block1 = block1_reply;
        let mut answer = if method == Method::Get {
            self.finish_block2(answer, opts.block2)
        } else {
            answer
        };
        if register && success && answer.response.code == Code::Content {
            if self.register(req.now, req.peer, req.token, id, accept) {
                answer.observe = Some(self.take_observe_seq());
            }
        } else if register {
            self.deregister(req.peer, req.token);
        }
        if success && method != Method::Get && resource.link_attrs().observable {
            // The state changed: tell the observers once this response is queued.
            self.notify_after = Some(id);
        }
        Ok(Outcome::Answer(answer))
    }

    /// `GET /.well-known/core` (RFC 6690), filtered by the query.
    fn discovery<S>(&self, tree: &ResourceTree<S>, opts: &Options) -> Result<Answer, Answer> {
        if opts.method != Method::Get {
            return Err(Answer::error(
                Code::MethodNotAllowed,
                "discovery allows GET only",
            ));
        }
        if opts
            .accept
            .is_some_and(|a| a != content_format::LINK_FORMAT)
        {
            return Err(Answer::error(
                Code::NotAcceptable,
                "discovery is served as application/link-format (40)",
            ));
        }
        let body = tree.link_format(&opts.query).into_bytes();
        let answer = Answer::of(Response::content(content_format::LINK_FORMAT, body));
        Ok(self.finish_block2(answer, opts.block2))
    }

    /// The body of a PUT or POST, checked against the resource's formats and the size limit,
    /// and put together from its Block1 pieces; other methods pass the payload as it is.
    fn request_body<S>(
        &mut self,
        req: &Incoming<'_>,
        id: ResourceId,
        resource: &Resource<S>,
        opts: &Options,
    ) -> Result<Body, Answer> {
        let mut content_format = opts.content_format;
        if !matches!(opts.method, Method::Put | Method::Post) {
            return Ok(Body::Ready {
                body: None,
                content_format,
                block1: None,
            });
        }
        let path = &opts.path;
        let accepted = resource.accepted_formats();
        if let Some(cf) = content_format
            && !accepted.is_empty()
            && !accepted.contains(&cf)
        {
            let list: Vec<String> = accepted.iter().map(u16::to_string).collect();
            return Err(Answer::error(
                Code::UnsupportedContentFormat,
                format!("/{path} accepts content formats {}", list.join(", ")),
            ));
        }
        content_format = content_format.or_else(|| accepted.first().copied());
        let max_body = self.config.max_body;
        if opts.size1.is_some_and(|s| s as usize > max_body) || req.packet.payload.len() > max_body
        {
            let mut answer = Answer::error(
                Code::RequestEntityTooLarge,
                format!("bodies are limited to {max_body} bytes"),
            );
            answer.size1 = Some(max_body as u32);
            return Err(answer);
        }
        let Some(b) = opts.block1 else {
            return Ok(Body::Ready {
                body: None,
                content_format,
                block1: None,
            });
        };
        let szx = b.szx.min(self.config.block_szx);
        match self.upload(
            req.now,
            req.peer,
            id,
            b,
            content_format,
            &req.packet.payload,
        )? {
            None => {
                let mut answer = Answer::of(Response::code(Code::Continue));
                answer.block1 = Some(Block {
                    num: b.num,
                    more: true,
                    szx,
                });
                Ok(Body::Continue(answer))
            }
            Some((whole, cf)) => Ok(Body::Ready {
                body: Some(whole),
                content_format: cf,
                block1: Some(Block {
                    num: b.num,
                    more: false,
                    szx,
                }),
            }),
        }
    }

    /// Keeps a request whose handler answers later (`Reply::Separate`), up to `max_deferred`.
    fn defer(
        &mut self,
        req: &Incoming<'_>,
        ticket: Ticket,
        info: &mut Option<Box<RequestInfo>>,
    ) -> Result<(), Answer> {
        if self.deferred.len() >= usize::from(self.config.max_deferred) {
            return Err(
                Answer::error(Code::ServiceUnavailable, "too many requests in progress")
                    .map_max_age(2),
            );
        }
        let expires = req.now + self.config.exchange_lifetime();
        self.deferred.push(Deferred {
            ticket,
            peer: req.peer,
            token: req.token,
            confirmable: req.confirmable,
            expires,
            oscore: info.take(),
        });
        Ok(())
    }

    /// Counts an answer (and an error one).
    pub(super) fn count_answer(&mut self, answer: &Answer) {
        self.stats.requests += 1;
        if answer.response.code.is_error() {
            self.stats.error_responses += 1;
        }
    }
}

/// Reads and checks a request's method and options.
fn read_options(packet: &Packet) -> Result<Options, Answer> {
    let method = match packet.header.code {
        MessageClass::Request(m @ (Method::Get | Method::Put | Method::Post | Method::Delete)) => m,
        other => {
            return Err(Answer::error(
                Code::MethodNotAllowed,
                format!("method {other} is not supported"),
            ));
        }
    };
    if packet.get_first_option(CoapOption::Oscore).is_some() {
        // Only an endpoint without credentials sees the option here (RFC 8613 §2).
        return Err(Answer::error(
            Code::BadOption,
            "OSCORE is not configured on this device",
        ));
    }
    if let Some(n) = wire::unknown_critical_option(packet) {
        return Err(Answer::error(
            Code::BadOption,
            format!("unrecognized critical option {n}"),
        ));
    }
    if packet.get_first_option(CoapOption::ProxyUri).is_some()
        || packet.get_first_option(CoapOption::ProxyScheme).is_some()
    {
        return Err(Answer::error(
            Code::ProxyingNotSupported,
            "this device is not a proxy",
        ));
    }
    let path = text_options(packet, CoapOption::UriPath)
        .ok_or_else(|| Answer::error(Code::BadRequest, "Uri-Path is not UTF-8"))?
        .join("/");
    let query = text_options(packet, CoapOption::UriQuery)
        .ok_or_else(|| Answer::error(Code::BadRequest, "Uri-Query is not UTF-8"))?;
    let bad = |name: &str| Answer::error(Code::BadRequest, format!("malformed {name} option"));
    Ok(Options {
        method,
        path,
        query,
        content_format: wire::uint_option(packet, CoapOption::ContentFormat, 2)
            .map_err(|_| bad("Content-Format"))?
            .map(|v| v as u16),
        accept: wire::uint_option(packet, CoapOption::Accept, 2)
            .map_err(|_| bad("Accept"))?
            .map(|v| v as u16),
        observe: wire::uint_option(packet, CoapOption::Observe, 3).map_err(|_| bad("Observe"))?,
        block1: wire::block_option(packet, CoapOption::Block1).map_err(|_| bad("Block1"))?,
        block2: wire::block_option(packet, CoapOption::Block2).map_err(|_| bad("Block2"))?,
        size1: wire::uint_option(packet, CoapOption::Size1, 4).map_err(|_| bad("Size1"))?,
    })
}

/// The content format of the answer: the request's Accept when the resource serves it (a GET
/// asking for another is refused with 4.06), else the resource's first format.
fn negotiate_accept<S>(resource: &Resource<S>, opts: &Options) -> Result<Option<u16>, Answer> {
    let formats = &resource.link_attrs().ct;
    match (opts.method, opts.accept) {
        (Method::Get, Some(a)) if !formats.is_empty() && !formats.contains(&a) => {
            let list: Vec<String> = formats.iter().map(u16::to_string).collect();
            Err(Answer::error(
                Code::NotAcceptable,
                format!("/{} is served as {}", opts.path, list.join(", ")),
            ))
        }
        (_, Some(a)) => Ok(Some(a)),
        (_, None) => Ok(formats.first().copied()),
    }
}

/// The values of a repeatable text option; `None` when one is not UTF-8.
fn text_options(packet: &Packet, option: CoapOption) -> Option<Vec<String>> {
    match packet.get_option(option) {
        None => Some(Vec::new()),
        Some(list) => list
            .iter()
            .map(|v| String::from_utf8(v.clone()).ok())
            .collect(),
    }
}

/// RFC 7967: the No-Response option suppresses classes of answers.
fn no_response_suppresses(packet: &Packet, code: Code) -> bool {
    let Ok(Some(mask)) = wire::uint_option(packet, CoapOption::NoResponse, 1) else {
        return false;
    };
    let class = wire::code_class(u8::from(MessageClass::Response(code)));
    let bit = match class {
        2 => 0x02,
        4 => 0x08,
        5 => 0x10,
        _ => 0,
    };
    mask & bit != 0
}

/// The packet of an answer: its type, message ID, token, options and payload.
pub(super) fn build_packet(
    kind: MessageType,
    message_id: u16,
    token: Token,
    answer: &Answer,
) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = message_id;
    p.header.code = MessageClass::Response(answer.response.code);
    p.set_token(token.as_slice().to_vec());
    let r = &answer.response;
    if let Some(etag) = answer.etag {
        p.add_option(CoapOption::ETag, etag.to_vec());
    }
    if let Some(seq) = answer.observe {
        p.add_option(CoapOption::Observe, wire::write_uint(seq));
    }
    for seg in &r.location {
        p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
    }
    if let Some(cf) = r.content_format {
        p.add_option(CoapOption::ContentFormat, wire::write_uint(u32::from(cf)));
    }
    if let Some(age) = r.max_age {
        p.add_option(CoapOption::MaxAge, wire::write_uint(age));
    }
    if let Some(b) = answer.block2 {
        p.add_option(CoapOption::Block2, b.encode());
    }
    if let Some(b) = answer.block1 {
        p.add_option(CoapOption::Block1, b.encode());
    }
    if let Some(s) = answer.size2 {
        p.add_option(CoapOption::Size2, wire::write_uint(s));
    }
    if let Some(s) = answer.size1 {
        p.add_option(CoapOption::Size1, wire::write_uint(s));
    }
    p.payload = r.payload.clone();
    p
}
