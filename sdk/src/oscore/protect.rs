//! Protecting and verifying requests and responses (RFC 8613 §4, §5.3, §8).
//!
//! Protecting moves the Code, every Class E option and the payload of the original message into
//! the plaintext (§5.3), encrypts it, and sends an outer message with the same header, token and
//! Class U options, the OSCORE option and the ciphertext as payload. Verifying discards the outer
//! code and Class E options and puts the decrypted ones back.
//!
//! | option | here |
//! |---|---|
//! | Uri-Host (3), Uri-Port (7), Proxy-Scheme (39) | outer only (Class U) |
//! | Proxy-Uri (35) | refused when protecting ([`OscoreError::ProxyUriUnsupported`]); kept outer when verifying |
//! | Observe (6) | inner and outer (§4.1.3.5): a request carries its value in both; a notification carries an empty inner value and the original outer one |
//! | OSCORE (9) | never inner: protecting an OSCORE message is refused ([`OscoreError::AlreadyProtected`]) |
//! | everything else, including Max-Age, Block1/2, Size1/2, No-Response and unknown options | inner (Class E): this SDK does block-wise before OSCORE (§4.1.3.4.1) |
//!
//! The outer code is POST (2.04 for responses), or FETCH (2.05) when the message has an Observe
//! option (§4.2, §4.1.3.5). No Class I options are defined, so the AAD's option field is empty.
//!
//! A client keeps the [`RequestInfo`] of each request it protects (with the token) and hands it
//! to [`unprotect_response`]; a server keeps the one [`unprotect_request`] returns until its
//! response — or, for an observation, its last notification — is protected (§8: the association
//! of token and {context, request Partial IV}). `RequestInfo` is deliberately not `Clone`: it
//! tracks whether the request's nonce was used for a response, so it must exist once.

use alloc::vec::Vec;

use alloc::collections::LinkedList;

use coap_lite::{CoapOption, MessageClass, Packet};

use super::OscoreError;
use super::context::SecurityContext;
use super::cose;
use super::option::{OscoreOption, partial_iv_bytes};
use crate::coap::wire;

const OPT_OBSERVE: u16 = 6;
const OPT_OSCORE: u16 = 9;
const OPT_PROXY_URI: u16 = 35;

const CODE_POST: u8 = 0x02;
const CODE_FETCH: u8 = 0x05;
const CODE_CHANGED: u8 = 0x44;
const CODE_CONTENT: u8 = 0x45;

/// Which side created a [`RequestInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// From [`protect_request`]: this endpoint is the client.
    Sent,
    /// From [`unprotect_request`]: this endpoint is the server.
    Received,
}

/// The binding of a request to its responses (§7.1): the request's 'kid' and Partial IV, which
/// go into every response's AAD and, for responses without their own Partial IV, its nonce; plus
/// the freshness state of §7.4.1 and §8.3.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestInfo {
    role: Role,
    kid: Vec<u8>,
    kid_context: Option<Vec<u8>>,
    partial_iv: Vec<u8>,
    sequence_number: u64,
    observe: bool,
    /// Server: the request's nonce protected a response already.
    nonce_used: bool,
    /// Client: a response was accepted already.
    accepted: bool,
    /// Client: the largest Partial IV of the accepted notifications.
    notification_number: Option<u64>,
}

impl RequestInfo {
    /// The request's 'kid': the client's Sender ID.
    pub fn kid(&self) -> &[u8] {
        &self.kid
    }

    /// The request's 'kid context', if it carried one.
    pub fn kid_context(&self) -> Option<&[u8]> {
        self.kid_context.as_deref()
    }

    /// The request's Partial IV as encoded in the message.
    pub fn partial_iv(&self) -> &[u8] {
        &self.partial_iv
    }

    /// The request's Partial IV as a number: the client's sender sequence number.
    pub fn sequence_number(&self) -> u64 {
        self.sequence_number
    }

    /// True when the request is an Observe registration (inner Observe 0): its notifications
    /// need their own Partial IVs, except possibly the first (§4.1.3.5.2).
    pub fn is_observe_registration(&self) -> bool {
        self.observe
    }

    /// Client side: the Notification Number, the largest Partial IV of the notifications accepted
    /// so far (§4.1.3.5.2).
    pub fn notification_number(&self) -> Option<u64> {
        self.notification_number
    }

    /// Server side: true once a response was protected with the request's nonce, so further
    /// responses (notifications) need `fresh_piv`.
    pub fn request_nonce_used(&self) -> bool {
        self.nonce_used
    }
}

/// Protects a request (§8.1): uses the next sender sequence number as Partial IV and the Sender
/// ID as 'kid' (with the ID Context as 'kid context' if the context is configured to send it).
///
/// Returns the OSCORE message and the [`RequestInfo`] to verify the response with. Errors:
/// [`OscoreError::WrongCodeClass`] for a non-request, [`OscoreError::AlreadyProtected`],
/// [`OscoreError::ProxyUriUnsupported`], [`OscoreError::PersistPending`] (persist the mark and
/// retry), [`OscoreError::SequenceExhausted`], [`OscoreError::EncodingFailed`].
pub fn protect_request(
    ctx: &mut SecurityContext,
    request: &Packet,
) -> Result<(Packet, RequestInfo), OscoreError> {
    check_original(request, true)?;
    let plaintext = build_plaintext(request, true)?;
    let piv = ctx.sequence_mut().take()?;
    let piv_bytes = partial_iv_bytes(piv);
    let kid = ctx.sender_id().to_vec();
    let kid_context = if ctx.sends_kid_context() {
        ctx.id_context().map(<[u8]>::to_vec)
    } else {
        None
    };
    let option = OscoreOption {
        partial_iv: Some(piv),
        kid_context: kid_context.clone(),
        kid: Some(kid.clone()),
    }
    .to_vec()?;
    let aad = cose::aad(&kid, &piv_bytes, &[]);
    let nonce = cose::nonce(ctx.keys().common_iv(), &kid, piv)?;
    let ciphertext = cose::encrypt(ctx.keys().sender_key(), &nonce, &aad, &plaintext)?;
    let observe = has_option(request, OPT_OBSERVE);
    let code = if observe { CODE_FETCH } else { CODE_POST };
    let info = RequestInfo {
        role: Role::Sent,
        kid,
        kid_context,
        partial_iv: piv_bytes,
        sequence_number: piv,
        observe: is_registration(request),
        nonce_used: false,
        accepted: false,
        notification_number: None,
    };
    Ok((outer_packet(request, code, option, ciphertext), info))
}

/// Verifies a request (§8.2): decompresses the OSCORE option, checks the 'kid' (and 'kid
/// context') against this context, the Partial IV against the replay window, decrypts, and
/// returns the original request and the [`RequestInfo`] for the response.
///
/// A server with many peers first reads the option with [`OscoreOption::from_packet`] to pick
/// the context. Errors: [`OscoreError::NoOscoreOption`], [`OscoreError::MalformedOption`]
/// (also for a missing 'kid' or Partial IV), [`OscoreError::MalformedMessage`] (no payload),
/// [`OscoreError::WrongCodeClass`], [`OscoreError::UnknownKid`], [`OscoreError::Replay`],
/// [`OscoreError::DecryptionFailed`], [`OscoreError::MalformedPlaintext`]. The window moves only
/// for requests that decrypt.
pub fn unprotect_request(
    ctx: &mut SecurityContext,
    packet: &Packet,
) -> Result<(Packet, RequestInfo), OscoreError> {
    let option = OscoreOption::from_packet(packet)?;
    if !wire::is_request_code(u8::from(packet.header.code)) {
        return Err(OscoreError::WrongCodeClass);
    }
    let (Some(kid), Some(piv)) = (option.kid.clone(), option.partial_iv) else {
        return Err(OscoreError::MalformedOption);
    };
    if packet.payload.is_empty() {
        return Err(OscoreError::MalformedMessage);
    }
    if !ctx.accepts(&option) {
        return Err(OscoreError::UnknownKid);
    }
    ctx.replay_window().check(piv)?;
    let piv_bytes = partial_iv_bytes(piv);
    let aad = cose::aad(&kid, &piv_bytes, &[]);
    let nonce = cose::nonce(ctx.keys().common_iv(), &kid, piv)?;
    let plaintext = cose::decrypt(ctx.keys().recipient_key(), &nonce, &aad, &packet.payload)?;
    ctx.replay_mut().accept(piv);
    let request = open(packet, &plaintext, true)?;
    let info = RequestInfo {
        role: Role::Received,
        kid,
        kid_context: option.kid_context,
        partial_iv: piv_bytes,
        sequence_number: piv,
        observe: is_registration(&request),
        nonce_used: false,
        accepted: false,
        notification_number: None,
    };
    Ok((request, info))
}

/// Protects a response to the request `request` (§8.3).
///
/// With `fresh_piv == false` the request's nonce is used and no Partial IV is sent (the usual
/// single response; also allowed for the first notification). That works once per request: a
/// second time fails with [`OscoreError::RequestNonceUsed`]. With `fresh_piv == true` the next
/// sender sequence number is the Partial IV, as every Observe notification but the first needs
/// (§4.1.3.5.2); this may fail with [`OscoreError::PersistPending`].
///
/// Other errors: [`OscoreError::WrongCodeClass`] (not a response, or `request` is not a
/// received request), [`OscoreError::UnknownKid`] (`request` belongs to another context),
/// [`OscoreError::AlreadyProtected`], [`OscoreError::ProxyUriUnsupported`],
/// [`OscoreError::EncodingFailed`].
pub fn protect_response(
    ctx: &mut SecurityContext,
    response: &Packet,
    request: &mut RequestInfo,
    fresh_piv: bool,
) -> Result<Packet, OscoreError> {
    if request.role != Role::Received {
        return Err(OscoreError::WrongCodeClass);
    }
    if request.kid != ctx.recipient_id() {
        return Err(OscoreError::UnknownKid);
    }
    check_original(response, false)?;
    if !fresh_piv && request.nonce_used {
        return Err(OscoreError::RequestNonceUsed);
    }
    let plaintext = build_plaintext(response, false)?;
    let aad = cose::aad(&request.kid, &request.partial_iv, &[]);
    let (nonce, option) = if fresh_piv {
        let piv = ctx.sequence_mut().take()?;
        let nonce = cose::nonce(ctx.keys().common_iv(), ctx.sender_id(), piv)?;
        let option = OscoreOption {
            partial_iv: Some(piv),
            ..OscoreOption::default()
        };
        (nonce, option)
    } else {
        let nonce = cose::nonce(
            ctx.keys().common_iv(),
            &request.kid,
            request.sequence_number,
        )?;
        (nonce, OscoreOption::default())
    };
    let option = option.to_vec()?;
    let ciphertext = cose::encrypt(ctx.keys().sender_key(), &nonce, &aad, &plaintext)?;
    if !fresh_piv {
        request.nonce_used = true;
    }
    let code = if has_option(response, OPT_OBSERVE) {
        CODE_CONTENT
    } else {
        CODE_CHANGED
    };
    Ok(outer_packet(response, code, option, ciphertext))
}

/// Verifies a response to the request `request` (§8.4) and returns the original response.
///
/// Freshness (§7.4, §7.4.1): for a plain request one response is accepted; for an Observe
/// registration at most one response without Partial IV (the oldest) and then only notifications
/// whose Partial IV is greater than the Notification Number. A verified notification's Observe
/// value is set to the low 24 bits of its Partial IV (§4.1.3.5.2 allows it), so the CoAP layer
/// orders notifications by it; the outer Observe value is ignored.
///
/// Errors: [`OscoreError::NoOscoreOption`], [`OscoreError::MalformedOption`],
/// [`OscoreError::MalformedMessage`], [`OscoreError::WrongCodeClass`] (not a response, or
/// `request` was not sent by this endpoint), [`OscoreError::UnknownKid`], [`OscoreError::Replay`],
/// [`OscoreError::DecryptionFailed`], [`OscoreError::MalformedPlaintext`],
/// [`OscoreError::UnexpectedObserve`]. Only a verified response changes `request`.
pub fn unprotect_response(
    ctx: &mut SecurityContext,
    packet: &Packet,
    request: &mut RequestInfo,
) -> Result<Packet, OscoreError> {
    if request.role != Role::Sent {
        return Err(OscoreError::WrongCodeClass);
    }
    if request.kid != ctx.sender_id() {
        return Err(OscoreError::UnknownKid);
    }
    let option = OscoreOption::from_packet(packet)?;
    if !is_response_code(u8::from(packet.header.code)) {
        return Err(OscoreError::WrongCodeClass);
    }
    if packet.payload.is_empty() {
        return Err(OscoreError::MalformedMessage);
    }
    if option.kid.as_ref().is_some_and(|k| k != ctx.recipient_id())
        || option
            .kid_context
            .as_ref()
            .is_some_and(|k| Some(k.as_slice()) != ctx.id_context())
    {
        return Err(OscoreError::UnknownKid);
    }
    let fresh = match option.partial_iv {
        None => !request.accepted,
        Some(p) if request.observe => request.notification_number.is_none_or(|n| p > n),
        Some(_) => !request.accepted,
    };
    if !fresh {
        return Err(OscoreError::Replay);
    }
    let aad = cose::aad(&request.kid, &request.partial_iv, &[]);
    let nonce = match option.partial_iv {
        Some(p) => cose::nonce(ctx.keys().common_iv(), ctx.recipient_id(), p)?,
        None => cose::nonce(
            ctx.keys().common_iv(),
            &request.kid,
            request.sequence_number,
        )?,
    };
    let plaintext = cose::decrypt(ctx.keys().recipient_key(), &nonce, &aad, &packet.payload)?;
    let mut response = open(packet, &plaintext, false)?;
    let notification = has_option(&response, OPT_OBSERVE);
    if notification && !request.observe {
        return Err(OscoreError::UnexpectedObserve);
    }
    request.accepted = true;
    if let Some(p) = option.partial_iv
        && request.observe
    {
        request.notification_number = Some(request.notification_number.map_or(p, |n| n.max(p)));
        if notification {
            let value = u32::try_from(p & 0x00ff_ffff).unwrap_or(0);
            response.set_option(
                CoapOption::Observe,
                LinkedList::from([wire::write_uint(value)]),
            );
        }
    }
    Ok(response)
}

/// Response codes: classes 2, 4 and 5.
fn is_response_code(code: u8) -> bool {
    matches!(wire::code_class(code), 2 | 4 | 5)
}

/// Options that stay outer only (Class U): Uri-Host, Uri-Port, Proxy-Uri, Proxy-Scheme.
fn is_outer_only(number: u16) -> bool {
    matches!(number, 3 | 7 | 35 | 39)
}

/// True when `packet` carries at least one value of option `number`.
fn has_option(packet: &Packet, number: u16) -> bool {
    packet
        .get_option(CoapOption::from(number))
        .is_some_and(|values| !values.is_empty())
}

/// An Observe registration: an Observe option with value 0.
fn is_registration(request: &Packet) -> bool {
    matches!(
        wire::uint_option(request, CoapOption::Observe, 3),
        Ok(Some(0))
    )
}

/// Checks an original message before protection.
fn check_original(packet: &Packet, request: bool) -> Result<(), OscoreError> {
    let code = u8::from(packet.header.code);
    let right_class = if request {
        wire::is_request_code(code)
    } else {
        is_response_code(code)
    };
    if !right_class {
        return Err(OscoreError::WrongCodeClass);
    }
    if has_option(packet, OPT_OSCORE) {
        return Err(OscoreError::AlreadyProtected);
    }
    if has_option(packet, OPT_PROXY_URI) {
        return Err(OscoreError::ProxyUriUnsupported);
    }
    Ok(())
}

/// The plaintext of §5.3: the code, the Class E options, and `0xff` + payload if any.
fn build_plaintext(packet: &Packet, request: bool) -> Result<Vec<u8>, OscoreError> {
    let code = u8::from(packet.header.code);
    let mut inner = Packet::new();
    inner.header.code = MessageClass::from(code);
    for (&number, values) in packet.options() {
        if is_outer_only(number) {
            continue;
        }
        for value in values {
            // A notification's inner Observe is empty (§4.1.3.5.2).
            let value = if number == OPT_OBSERVE && !request {
                Vec::new()
            } else {
                value.clone()
            };
            inner.add_option(CoapOption::from(number), value);
        }
    }
    inner.payload.clone_from(&packet.payload);
    // coap-lite writes header (4 bytes, no token) + options + marker/payload; the plaintext is
    // the code followed by the rest.
    let encoded = inner
        .to_bytes_unlimited()
        .map_err(|_| OscoreError::EncodingFailed)?;
    let rest = encoded.get(4..).unwrap_or_default();
    let mut plaintext = Vec::with_capacity(1 + rest.len());
    plaintext.push(code);
    plaintext.extend_from_slice(rest);
    Ok(plaintext)
}

/// The outer OSCORE message: header, token and Class U options (and Observe) of `original`,
/// the outer `code`, the OSCORE option and the ciphertext.
fn outer_packet(original: &Packet, code: u8, option: Vec<u8>, ciphertext: Vec<u8>) -> Packet {
    let mut out = Packet::new();
    out.header = original.header.clone();
    out.header.code = MessageClass::from(code);
    out.set_token(original.get_token().to_vec());
    for (&number, values) in original.options() {
        if is_outer_only(number) || number == OPT_OBSERVE {
            for value in values {
                out.add_option(CoapOption::from(number), value.clone());
            }
        }
    }
    out.add_option(CoapOption::Oscore, option);
    out.payload = ciphertext;
    out
}

/// The verified message: the outer header, token and Class U options, the inner code, options
/// and payload.
fn open(outer: &Packet, plaintext: &[u8], request: bool) -> Result<Packet, OscoreError> {
    let (&code, rest) = plaintext
        .split_first()
        .ok_or(OscoreError::MalformedPlaintext)?;
    let right_class = if request {
        wire::is_request_code(code)
    } else {
        is_response_code(code)
    };
    if !right_class {
        return Err(OscoreError::MalformedPlaintext);
    }
    // Parse the options and payload with the SDK's checked codec behind a synthetic header.
    let mut bytes = Vec::with_capacity(4 + rest.len());
    bytes.extend_from_slice(&[0x40, code, 0, 0]);
    bytes.extend_from_slice(rest);
    let inner = wire::parse(&bytes).map_err(|_| OscoreError::MalformedPlaintext)?;
    if has_option(&inner, OPT_OSCORE) {
        return Err(OscoreError::MalformedPlaintext);
    }
    let mut out = Packet::new();
    out.header = outer.header.clone();
    out.header.code = MessageClass::from(code);
    out.set_token(outer.get_token().to_vec());
    for (&number, values) in outer.options() {
        if is_outer_only(number) {
            for value in values {
                out.add_option(CoapOption::from(number), value.clone());
            }
        }
    }
    for (&number, values) in inner.options() {
        for value in values {
            out.add_option(CoapOption::from(number), value.clone());
        }
    }
    out.payload = inner.payload;
    Ok(out)
}
