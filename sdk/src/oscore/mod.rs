//! OSCORE (RFC 8613): end-to-end protection of CoAP requests and responses, sans-IO.
//!
//! # What it does
//!
//! An OSCORE message is a CoAP message whose code, Class E options and payload travel encrypted
//! (AES-CCM-16-64-128) in its payload, with a compressed COSE header in the OSCORE option (9).
//! This module turns plain coap-lite [`Packet`](coap_lite::Packet)s into OSCORE messages and
//! back; it works on `Packet`s, the codec the rest of the SDK uses, so a caller parses a datagram
//! with [`coap::wire::parse`](crate::coap::wire::parse) first and encodes the result with
//! [`coap::wire::encode`](crate::coap::wire::encode).
//!
//! | file | job |
//! |---|---|
//! | [`context`] | [`SecurityContext`]: derivation of Sender Key, Recipient Key and Common IV with HKDF-SHA-256 (§3.2), the sender sequence number and the replay window |
//! | [`option`] | [`OscoreOption`]: the OSCORE option value (§6.1), parse and emit; public so a server can find the context by `kid` before decrypting |
//! | [`cose`] | the CBOR structures (HKDF `info`, `aad_array`, `Enc_structure`, §3.2.1, §5.4), the AEAD nonce (§5.2) and the AEAD itself |
//! | [`protect`] | [`protect_request`], [`unprotect_request`], [`protect_response`], [`unprotect_response`] (§4, §8) and [`RequestInfo`], the request–response binding |
//! | [`replay`] | [`ReplayWindow`]: the anti-replay sliding window of received requests (§7.4) |
//! | [`sequence`] | [`SenderSequence`]: the sender sequence number, which never repeats across restarts given a persisted mark (Appendix B.1.1) |
//!
//! # The I/O boundary
//!
//! Nothing here touches a file, socket or clock. The one piece of state that must survive a
//! restart is the sender sequence number: [`SecurityContext::mark_to_persist`] names a value to
//! write to non-volatile memory, the caller writes it and reports it back with
//! [`SecurityContext::persisted`], and after a restart [`SecurityContext::restore`] starts at the
//! stored value. No sequence number at or above the last confirmed mark is ever used, so none
//! repeats, whenever the device dies (see [`sequence`]). A server (a device answering the edge's
//! commands) also keeps the floor of its replay window ([`ReplayWindow::restart_floor`],
//! restored with [`SecurityContext::set_replay_floor`]), so a request accepted before a restart
//! is a replay after it (Appendix B.1.2); [`DurableState`] holds both values.
//!
//! # Client (device) flow
//!
//! A [`Device`](crate::coap::Device) given a context with
//! [`Device::with_credentials`](crate::coap::Device::with_credentials) does all of the following
//! itself, for the requests it receives and the ones it sends; the steps by hand:
//!
//! ```
//! use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
//! use v6iot_sdk::oscore::{self, ContextConfig, ContextInput, SecurityContext};
//!
//! let input = ContextInput {
//!     master_secret: vec![1; 16],
//!     master_salt: vec![],
//!     id_context: None,
//!     sender_id: vec![0x01],
//!     recipient_id: vec![],
//! };
//! let mut device = SecurityContext::new(&input, ContextConfig::default())?;
//! // A fresh context has no persisted mark yet: store one before the first request.
//! let mark = device.mark_to_persist().expect("a fresh context asks for a mark");
//! /* write `mark` to flash, then: */
//! device.persisted(mark);
//!
//! let mut request = Packet::new();
//! request.header.code = MessageClass::Request(RequestType::Post);
//! request.add_option(CoapOption::UriPath, b"t".to_vec());
//! request.payload = b"21.5".to_vec();
//! let (protected, mut info) = oscore::protect_request(&mut device, &request)?;
//! // send `protected`; keep `info` with the token until the response arrives, then:
//! // let response = oscore::unprotect_response(&mut device, &received, &mut info)?;
//! # let _ = (protected, &mut info);
//! # Ok::<(), oscore::OscoreError>(())
//! ```
//!
//! # Server (edge) flow
//!
//! ```text
//! let option = OscoreOption::from_packet(&packet)?;          // kid, kid context: find the device
//! let ctx = contexts_for(&option.kid?).find(|c| c.accepts(&option)) else 4.01; // your lookup
//! let (request, mut info) = unprotect_request(ctx, &packet)?; // replay window, decryption
//! let reply = protect_response(ctx, &response, &mut info, false)?;
//! ```
//!
//! Errors map to the unprotected error responses of §8.2 with [`OscoreError::error_response`].
//!
//! Only the mandatory algorithms are implemented: AES-CCM-16-64-128 (COSE algorithm 10) and
//! HKDF-SHA-256. No function here panics on any input.

pub mod context;
pub mod cose;
pub mod option;
pub mod protect;
pub mod replay;
pub mod sequence;

pub use context::{ContextConfig, ContextInput, DerivedKeys, DurableState, SecurityContext};
pub use option::OscoreOption;
pub use protect::{
    RequestInfo, protect_request, protect_response, unprotect_request, unprotect_response,
};
pub use replay::ReplayWindow;
pub use sequence::{MAX_SEQUENCE_NUMBER, SenderSequence};

use coap_lite::ResponseType;

/// Why a message could not be protected or verified. Each variant names one cause; none carries
/// secret material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OscoreError {
    /// The message carries no OSCORE option.
    #[error("the message has no OSCORE option")]
    NoOscoreOption,
    /// The OSCORE option value is malformed (§6.1: reserved flag bits, Partial IV length 6 or 7,
    /// truncated 'kid context', a Partial IV with leading zeros, a repeated option), or a request
    /// lacks the 'kid' or the Partial IV it must carry (§5). A server may answer 4.02.
    #[error("malformed OSCORE option")]
    MalformedOption,
    /// An OSCORE message without payload (§2), or a code of the wrong class.
    #[error("malformed OSCORE message")]
    MalformedMessage,
    /// The 'kid' (or 'kid context') does not name this security context. A server may answer
    /// 4.01 ("Security context not found").
    #[error("no security context for this kid")]
    UnknownKid,
    /// The Partial IV was received before or lies left of the replay window (§7.4), or a response
    /// or notification for this request was already accepted (§7.4.1). A server may answer 4.01.
    #[error("replayed message")]
    Replay,
    /// The AEAD tag did not verify: wrong key, tampered message, or a ciphertext shorter than the
    /// tag. A server may answer 4.00 ("Decryption failed").
    #[error("decryption failed")]
    DecryptionFailed,
    /// The decrypted plaintext is not a code, options and payload of the expected kind (§5.3).
    #[error("malformed plaintext")]
    MalformedPlaintext,
    /// A response carries an inner Observe option, but its request was no Observe registration
    /// (§4.1.3.5.2).
    #[error("Observe in a response to a non-Observe request")]
    UnexpectedObserve,
    /// The message to protect already carries an OSCORE option; nesting is not supported
    /// (§4.1.3.7).
    #[error("the message is already OSCORE-protected")]
    AlreadyProtected,
    /// The message to protect has a Proxy-Uri option, which must first be split into its parts
    /// (§4.1.3.3); this implementation does not do that.
    #[error("Proxy-Uri must be decomposed before OSCORE protection")]
    ProxyUriUnsupported,
    /// A request was given to a response function or the other way round.
    #[error("wrong code class for this operation")]
    WrongCodeClass,
    /// The sender sequence number has reached the last persisted mark: persist the value of
    /// [`SecurityContext::mark_to_persist`], call [`SecurityContext::persisted`], then retry.
    #[error("sender sequence number needs a newly persisted mark")]
    PersistPending,
    /// The sender sequence number passed 2^40 − 1 (§7.2.1): this context must not send any more.
    #[error("sender sequence number exhausted")]
    SequenceExhausted,
    /// The request's nonce was already used for a response; further responses need a fresh
    /// Partial IV (§8.3).
    #[error("the request nonce was already used for a response")]
    RequestNonceUsed,
    /// The context parameters are invalid: an empty Master Secret, a Sender or Recipient ID
    /// longer than 7 bytes (§3.3), or equal Sender and Recipient IDs.
    #[error("invalid security context parameters")]
    InvalidContext,
    /// The protected message cannot be encoded (an OSCORE option longer than 255 bytes, or a
    /// message coap-lite refuses).
    #[error("the protected message cannot be encoded")]
    EncodingFailed,
}

impl OscoreError {
    /// The unprotected error response a server MAY send for this failure when verifying a
    /// request (§7.4, §8.2): code and diagnostic payload. A server SHOULD add an Outer Max-Age of
    /// 0. `None` where no response is suggested (e.g. the sender's own errors).
    pub fn error_response(self) -> Option<(ResponseType, &'static str)> {
        match self {
            OscoreError::MalformedOption | OscoreError::MalformedMessage => {
                Some((ResponseType::BadOption, "Failed to decode COSE"))
            }
            OscoreError::UnknownKid => {
                Some((ResponseType::Unauthorized, "Security context not found"))
            }
            OscoreError::Replay => Some((ResponseType::Unauthorized, "Replay detected")),
            OscoreError::DecryptionFailed => Some((ResponseType::BadRequest, "Decryption failed")),
            _ => None,
        }
    }
}
