//! The OSCORE option value (RFC 8613 §6.1): the compressed COSE header.
//!
//! ```text
//!  0 1 2 3 4 5 6 7 <----------- n bytes ----------->
//! +-+-+-+-+-+-+-+-+----------------------------------
//! |0 0 0|h|k|  n  |       Partial IV (if any) ...
//! +-+-+-+-+-+-+-+-+----------------------------------
//!  <- 1 byte -> <----- s bytes ------>
//! +------------+----------------------+------------------+
//! | s (if any) | kid context (if any) | kid (if any) ... |
//! +------------+----------------------+------------------+
//! ```
//!
//! [`OscoreOption::parse`] never panics; it rejects values over 255 bytes (RFC 8613 Figure 3),
//! reserved flag bits, the reserved Partial IV
//! lengths 6 and 7, truncated fields, a one-byte value of zero flags (which must be sent as the
//! empty value, §2) and Partial IVs with leading zero bytes (§5: they SHALL be removed), so every
//! accepted value has exactly one encoding and `emit(parse(v)) == v`.

use alloc::vec::Vec;

use coap_lite::{CoapOption, Packet};

use super::OscoreError;
use super::sequence::MAX_SEQUENCE_NUMBER;

/// Flag bit: 'kid context' present.
const FLAG_H: u8 = 0x10;
/// Flag bit: 'kid' present.
const FLAG_K: u8 = 0x08;
/// Mask of the Partial IV length.
const MASK_N: u8 = 0x07;
/// The reserved flag bits (§6.1).
const MASK_RESERVED: u8 = 0xe0;
/// Largest OSCORE option value (RFC 8613 Figure 3).
pub const MAX_OPTION_LEN: usize = 255;

/// A parsed OSCORE option value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OscoreOption {
    /// The Partial IV (a sender sequence number, below 2^40), if present.
    pub partial_iv: Option<u64>,
    /// The 'kid context' (an ID Context), if present.
    pub kid_context: Option<Vec<u8>>,
    /// The 'kid' (the sender's Sender ID), if present; `Some(vec![])` is the empty kid.
    pub kid: Option<Vec<u8>>,
}

impl OscoreOption {
    /// Parses an option value.
    pub fn parse(value: &[u8]) -> Result<OscoreOption, OscoreError> {
        if value.len() > MAX_OPTION_LEN {
            return Err(OscoreError::MalformedOption);
        }
        let Some((&flags, rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags == 0 || flags & MASK_RESERVED != 0 {
            return Err(OscoreError::MalformedOption);
        }
        let n = usize::from(flags & MASK_N);
        if n > 5 {
            return Err(OscoreError::MalformedOption);
        }
        let (piv_bytes, mut rest) = rest
            .split_at_checked(n)
            .ok_or(OscoreError::MalformedOption)?;
        let partial_iv = if n == 0 {
            None
        } else {
            Some(partial_iv_value(piv_bytes).ok_or(OscoreError::MalformedOption)?)
        };
        let kid_context = if flags & FLAG_H != 0 {
            let (&s, after) = rest.split_first().ok_or(OscoreError::MalformedOption)?;
            let (ctx, after) = after
                .split_at_checked(usize::from(s))
                .ok_or(OscoreError::MalformedOption)?;
            rest = after;
            Some(ctx.to_vec())
        } else {
            None
        };
        let kid = if flags & FLAG_K != 0 {
            Some(rest.to_vec())
        } else if rest.is_empty() {
            None
        } else {
            return Err(OscoreError::MalformedOption);
        };
        Ok(OscoreOption {
            partial_iv,
            kid_context,
            kid,
        })
    }

    /// Reads the OSCORE option of `packet`: [`OscoreError::NoOscoreOption`] when absent,
    /// [`OscoreError::MalformedOption`] when repeated (it is not repeatable, §2) or malformed.
    pub fn from_packet(packet: &Packet) -> Result<OscoreOption, OscoreError> {
        let values = packet
            .get_option(CoapOption::Oscore)
            .filter(|v| !v.is_empty())
            .ok_or(OscoreError::NoOscoreOption)?;
        if values.len() != 1 {
            return Err(OscoreError::MalformedOption);
        }
        let value = values.front().ok_or(OscoreError::NoOscoreOption)?;
        OscoreOption::parse(value)
    }

    /// Length of the encoded value.
    pub fn buffer_len(&self) -> usize {
        let piv = self.partial_iv.map_or(0, |p| partial_iv_bytes(p).len());
        let ctx = self.kid_context.as_ref().map_or(0, |c| 1 + c.len());
        let kid = self.kid.as_ref().map_or(0, Vec::len);
        let any = self.partial_iv.is_some() || self.kid_context.is_some() || self.kid.is_some();
        usize::from(any) + piv + ctx + kid
    }

    /// Appends the encoded value to `out`. Fails with [`OscoreError::EncodingFailed`] for a
    /// Partial IV above 2^40 − 1, a 'kid context' over 255 bytes or a value over 255 bytes.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), OscoreError> {
        if self.buffer_len() > MAX_OPTION_LEN {
            return Err(OscoreError::EncodingFailed);
        }
        let piv = match self.partial_iv {
            Some(p) if p > MAX_SEQUENCE_NUMBER => return Err(OscoreError::EncodingFailed),
            Some(p) => partial_iv_bytes(p),
            None => Vec::new(),
        };
        let mut flags = u8::try_from(piv.len()).map_err(|_| OscoreError::EncodingFailed)?;
        if self.kid_context.is_some() {
            flags |= FLAG_H;
        }
        if self.kid.is_some() {
            flags |= FLAG_K;
        }
        if flags == 0 {
            return Ok(());
        }
        out.push(flags);
        out.extend_from_slice(&piv);
        if let Some(ctx) = &self.kid_context {
            out.push(u8::try_from(ctx.len()).map_err(|_| OscoreError::EncodingFailed)?);
            out.extend_from_slice(ctx);
        }
        if let Some(kid) = &self.kid {
            out.extend_from_slice(kid);
        }
        Ok(())
    }

    /// The encoded value.
    pub fn to_vec(&self) -> Result<Vec<u8>, OscoreError> {
        let mut out = Vec::with_capacity(self.buffer_len());
        self.emit(&mut out)?;
        Ok(out)
    }
}

/// The Partial IV encoding of a sequence number (§5): big-endian without leading zero bytes,
/// `0x00` for zero.
pub fn partial_iv_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// The value of an encoded Partial IV: 1 to 5 bytes, no leading zero byte unless it is the only
/// one. `None` otherwise.
pub fn partial_iv_value(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [] => None,
        [0, _, ..] => None,
        _ if bytes.len() > 5 => None,
        _ => Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8613_section_6_3_examples() {
        // 1. kid 0x25, Partial IV 0x05.
        let o = OscoreOption::parse(&[0x09, 0x05, 0x25]).unwrap();
        assert_eq!(o.partial_iv, Some(5));
        assert_eq!(o.kid, Some(vec![0x25]));
        assert_eq!(o.kid_context, None);
        assert_eq!(o.to_vec().unwrap(), vec![0x09, 0x05, 0x25]);
        // 2. empty kid, Partial IV 0.
        let o = OscoreOption::parse(&[0x09, 0x00]).unwrap();
        assert_eq!((o.partial_iv, o.kid.clone()), (Some(0), Some(vec![])));
        assert_eq!(o.to_vec().unwrap(), vec![0x09, 0x00]);
        // 3. empty kid, Partial IV 5, kid context 0x44616c656b.
        let v = [0x19, 0x05, 0x05, 0x44, 0x61, 0x6c, 0x65, 0x6b];
        let o = OscoreOption::parse(&v).unwrap();
        assert_eq!(o.kid_context, Some(b"Dalek".to_vec()));
        assert_eq!(o.kid, Some(vec![]));
        assert_eq!(o.to_vec().unwrap(), v.to_vec());
        // 4. response without Partial IV: empty value.
        assert_eq!(OscoreOption::parse(&[]).unwrap(), OscoreOption::default());
        assert_eq!(OscoreOption::default().to_vec().unwrap(), Vec::<u8>::new());
        // 5. response with Partial IV 7.
        let o = OscoreOption::parse(&[0x01, 0x07]).unwrap();
        assert_eq!(o.partial_iv, Some(7));
        assert_eq!(o.to_vec().unwrap(), vec![0x01, 0x07]);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            &[0x00][..],               // zero flags must be the empty value
            &[0x20],                   // reserved bit
            &[0x80, 0x01],             // reserved bit
            &[0x06, 1, 2, 3, 4, 5, 6], // n = 6 reserved
            &[0x07, 1, 2, 3, 4, 5, 6, 7],
            &[0x02, 0x01],       // truncated Partial IV
            &[0x10],             // h without s
            &[0x10, 0x03, 0x01], // truncated kid context
            &[0x01, 0x05, 0x25], // bytes left without k
            &[0x02, 0x00, 0x05], // leading zero in Partial IV
        ] {
            assert_eq!(
                OscoreOption::parse(bad),
                Err(OscoreError::MalformedOption),
                "{bad:02x?}"
            );
        }
    }

    #[test]
    fn emit_limits() {
        let o = OscoreOption {
            partial_iv: Some(MAX_SEQUENCE_NUMBER + 1),
            ..OscoreOption::default()
        };
        assert_eq!(o.to_vec(), Err(OscoreError::EncodingFailed));
        let o = OscoreOption {
            kid_context: Some(vec![0; 256]),
            ..OscoreOption::default()
        };
        assert_eq!(o.to_vec(), Err(OscoreError::EncodingFailed));
        let o = OscoreOption {
            partial_iv: Some(MAX_SEQUENCE_NUMBER),
            kid: Some(vec![1, 2, 3]),
            ..OscoreOption::default()
        };
        let v = o.to_vec().unwrap();
        assert_eq!(v.len(), o.buffer_len());
        assert_eq!(OscoreOption::parse(&v).unwrap(), o);
    }

    #[test]
    fn partial_iv_encoding() {
        assert_eq!(partial_iv_bytes(0), vec![0]);
        assert_eq!(partial_iv_bytes(20), vec![0x14]);
        assert_eq!(partial_iv_bytes(0x0100), vec![1, 0]);
        assert_eq!(partial_iv_value(&[1, 0]), Some(0x100));
        assert_eq!(partial_iv_value(&[0]), Some(0));
        assert_eq!(partial_iv_value(&[0, 1]), None);
        assert_eq!(partial_iv_value(&[1, 2, 3, 4, 5, 6]), None);
    }
}
