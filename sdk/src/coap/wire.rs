//! CoAP on the wire: checked parsing of datagrams and the option values the core understands.
//!
//! The message codec itself is coap-lite's [`Packet`]; this module adds the checks RFC 7252 asks
//! for that coap-lite leaves out (version, token length, reserved codes, critical options,
//! option value lengths) and the block-wise option value of RFC 7959 §2.2, whose block numbers
//! reach 2^20 (coap-lite's `BlockValue` stops at 2^12).
//!
//! No function here panics on any input.

use alloc::vec::Vec;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

/// Why an incoming datagram was not accepted as a CoAP message (RFC 7252 §3, §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the 4-byte fixed header.
    #[error("datagram of {0} bytes is shorter than the CoAP header")]
    TooShort(usize),
    /// The version field is not 1; such messages are silently ignored (RFC 7252 §3).
    #[error("CoAP version {0} is not 1")]
    BadVersion(u8),
    /// Token length 9..=15 is reserved (RFC 7252 §3).
    #[error("token length {0} is reserved")]
    BadTokenLength(u8),
    /// The options or the payload marker are malformed.
    #[error("malformed options or payload marker")]
    BadOptions,
}

/// The fixed header of a datagram, readable even when the rest is malformed, so that a
/// malformed Confirmable message can still be rejected with a Reset (RFC 7252 §4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawHeader {
    /// Message type.
    pub kind: MessageType,
    /// Message ID.
    pub message_id: u16,
    /// Code byte (class << 5 | detail).
    pub code: u8,
}

/// Reads the fixed header of `bytes`.
pub fn raw_header(bytes: &[u8]) -> Result<RawHeader, WireError> {
    let [b0, code, m0, m1, ..] = *bytes else {
        return Err(WireError::TooShort(bytes.len()));
    };
    let version = b0 >> 6;
    if version != 1 {
        return Err(WireError::BadVersion(version));
    }
    let kind = match (b0 >> 4) & 0x3 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    };
    Ok(RawHeader {
        kind,
        message_id: u16::from_be_bytes([m0, m1]),
        code,
    })
}

/// Parses a datagram into a packet, with the checks of RFC 7252 §3 that coap-lite omits.
pub fn parse(bytes: &[u8]) -> Result<Packet, WireError> {
    let header = raw_header(bytes)?;
    let tkl = bytes.first().map_or(0, |b| b & 0x0f);
    if tkl > 8 {
        return Err(WireError::BadTokenLength(tkl));
    }
    // A payload marker followed by a zero-length payload is a format error (§3).
    let packet = Packet::from_bytes(bytes).map_err(|_| WireError::BadOptions)?;
    if bytes.last() == Some(&0xff) && packet.payload.is_empty() {
        // Either the marker ended the message or 0xff was the last option byte; coap-lite reads
        // both the same way, so re-encode to tell which.
        let reencoded_len = packet.to_bytes_unlimited().map(|b| b.len()).unwrap_or(0);
        if reencoded_len != bytes.len() {
            return Err(WireError::BadOptions);
        }
    }
    // The empty message (0.00) must be exactly 4 bytes (§4.1).
    if header.code == 0 && bytes.len() != 4 {
        return Err(WireError::BadOptions);
    }
    Ok(packet)
}

/// Encodes `packet` for sending. Packets the core builds never exceed the limit it checks, so
/// failures are reported to the caller rather than assumed away.
pub fn encode(packet: &Packet) -> Option<Vec<u8>> {
    packet.to_bytes_unlimited().ok()
}

/// The options this core understands (RFC 7252 §5.10, RFC 7641, RFC 7959, RFC 7967, and
/// OSCORE = 9 of RFC 8613). Any other option with an odd number is critical and makes a request
/// fail with 4.02.
pub fn is_known_option(number: u16) -> bool {
    matches!(
        number,
        1 | 3
            | 4
            | 5
            | 6
            | 7
            | 8
            | 9
            | 11
            | 12
            | 14
            | 15
            | 17
            | 20
            | 23
            | 27
            | 28
            | 35
            | 39
            | 60
            | 258
    )
}

/// The Echo option (RFC 9175 §2.2.1): elective, safe to forward; inside OSCORE it is Class E
/// (encrypted). A server that wants a request's freshness or the client's reachability at its
/// address confirmed answers 4.01 with an Echo value; the client repeats the request with it.
pub const ECHO: u16 = 252;

/// True when option `number` is critical (odd number, RFC 7252 §5.4.1).
pub fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// First unrecognised critical option in `packet`, if any.
pub fn unknown_critical_option(packet: &Packet) -> Option<u16> {
    packet
        .options()
        .map(|(n, _)| *n)
        .find(|n| is_critical(*n) && !is_known_option(*n))
}

/// Reads an unsigned integer option value (RFC 7252 §3.2) of at most `max_len` bytes.
pub fn read_uint(value: &[u8], max_len: usize) -> Option<u32> {
    if value.len() > max_len || value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Encodes an unsigned integer option value in the fewest bytes (zero is empty).
pub fn write_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// An option is present but its value is malformed (too long, or a reserved value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed option value")]
pub struct BadOptionValue;

/// The first value of a uint option; `Err` when present but malformed.
pub fn uint_option(
    packet: &Packet,
    option: CoapOption,
    max_len: usize,
) -> Result<Option<u32>, BadOptionValue> {
    match packet.get_first_option(option) {
        None => Ok(None),
        Some(v) => read_uint(v, max_len).map(Some).ok_or(BadOptionValue),
    }
}

/// A Block1 or Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number, 0..2^20.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block holds `2^(szx + 4)` bytes, `szx` in 0..=6.
    pub szx: u8,
}

impl Block {
    /// Largest valid block number.
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// Block size in bytes.
    pub fn size(self) -> usize {
        1usize << (u32::from(self.szx.min(6)) + 4)
    }

    /// Byte offset of this block in the whole body.
    pub fn offset(self) -> usize {
        (self.num as usize).saturating_mul(self.size())
    }

    /// Decodes an option value; `None` for more than 3 bytes or the reserved `szx` 7.
    pub fn decode(value: &[u8]) -> Option<Block> {
        let v = read_uint(value, 3)?;
        let szx = (v & 0x7) as u8;
        if szx == 7 {
            return None;
        }
        Some(Block {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    /// Encodes the option value.
    pub fn encode(self) -> Vec<u8> {
        write_uint(
            (self.num.min(Self::MAX_NUM) << 4)
                | (u32::from(self.more) << 3)
                | u32::from(self.szx & 0x7),
        )
    }
}

/// Reads a Block option: `Ok(None)` when absent, `Err` when malformed.
pub fn block_option(packet: &Packet, option: CoapOption) -> Result<Option<Block>, BadOptionValue> {
    match packet.get_first_option(option) {
        None => Ok(None),
        Some(v) => Block::decode(v).map(Some).ok_or(BadOptionValue),
    }
}

/// An empty message (code 0.00, no token) of `kind` with `message_id`: an ACK, a Reset, or a
/// CoAP ping (RFC 7252 §4.1).
pub fn empty_message(kind: MessageType, message_id: u16) -> Vec<u8> {
    bare_message(kind, 0, message_id, &[])
}

/// A message with only a header and a token (RFC 7252 §3): `kind`, the code byte `code`,
/// `message_id`, and the first 8 bytes of `token` — an empty message, or a response without
/// options or payload (a piggybacked 2.04 ACK). Written directly, without a [`Packet`].
pub fn bare_message(kind: MessageType, code: u8, message_id: u16, token: &[u8]) -> Vec<u8> {
    let t: u8 = match kind {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let token = token.get(..8).unwrap_or(token);
    let [m0, m1] = message_id.to_be_bytes();
    let mut bytes = Vec::with_capacity(4 + token.len());
    bytes.extend_from_slice(&[0x40 | (t << 4) | token.len() as u8, code, m0, m1]);
    bytes.extend_from_slice(token);
    bytes
}

/// A token of up to 8 bytes (RFC 7252 §3), stored inline: no allocation per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// The first 8 bytes of `s` (all of any token that came over the wire).
    pub fn from_slice(s: &[u8]) -> Token {
        let mut bytes = [0u8; 8];
        let len = s.len().min(bytes.len());
        for (dst, src) in bytes.iter_mut().zip(s) {
            *dst = *src;
        }
        Token {
            len: len as u8,
            bytes,
        }
    }

    /// The token's bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// The class of a code byte.
pub fn code_class(code: u8) -> u8 {
    code >> 5
}

/// True for message classes that are requests (0.01..=0.31).
pub fn is_request_code(code: u8) -> bool {
    code_class(code) == 0 && code != 0
}

/// The coap-lite message class of a code byte.
pub fn class_of(code: u8) -> MessageClass {
    MessageClass::from(code)
}

/// A 64-bit FNV-1a hash, used for entity tags of block-wise bodies (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_values_round_trip_rfc7959_examples() {
        // RFC 7959 §2.2: NUM=0, M=1, SZX=6 → 0x0e; NUM=1 M=0 SZX=6 → 0x16.
        assert_eq!(
            Block {
                num: 0,
                more: true,
                szx: 6
            }
            .encode(),
            vec![0x0e]
        );
        assert_eq!(
            Block {
                num: 1,
                more: false,
                szx: 6
            }
            .encode(),
            vec![0x16]
        );
        assert_eq!(
            Block::decode(&[0x16]),
            Some(Block {
                num: 1,
                more: false,
                szx: 6
            })
        );
        let big = Block {
            num: Block::MAX_NUM,
            more: true,
            szx: 2,
        };
        assert_eq!(Block::decode(&big.encode()), Some(big));
        assert_eq!(Block::decode(&[0x07]), None, "szx 7 is reserved");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None, "more than 3 bytes");
        assert_eq!(
            Block {
                num: 0,
                more: false,
                szx: 0
            }
            .encode(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn uint_encoding_is_minimal() {
        assert_eq!(write_uint(0), Vec::<u8>::new());
        assert_eq!(write_uint(60), vec![60]);
        assert_eq!(write_uint(0x1_0000), vec![1, 0, 0]);
        assert_eq!(read_uint(&[1, 0, 0], 3), Some(0x1_0000));
        assert_eq!(read_uint(&[1, 0, 0], 2), None);
    }

    #[test]
    fn rejects_bad_version_token_length_and_trailing_marker() {
        assert_eq!(parse(&[0x40]), Err(WireError::TooShort(1)));
        assert_eq!(parse(&[0x80, 1, 0, 1]), Err(WireError::BadVersion(2)));
        assert_eq!(
            parse(&[0x49, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::BadTokenLength(9))
        );
        assert_eq!(parse(&[0x40, 1, 0, 1, 0xff]), Err(WireError::BadOptions));
        assert_eq!(
            parse(&[0x40, 0, 0, 1, 0xb1]),
            Err(WireError::BadOptions),
            "empty message with bytes"
        );
        assert!(parse(&[0x40, 1, 0, 1, 0xb1, b'a']).is_ok());
    }
}
