//! The base64url alphabet of RFC 4648 §5, as SenML JSON uses it for `vd` (RFC 8428 §5).
//!
//! Encoding omits padding. Decoding accepts unpadded input and, for interoperability, also
//! correctly padded input; it rejects the standard alphabet's `+` and `/`, whitespace, and
//! non-zero trailing bits (so every byte string has exactly one accepted encoding).

use alloc::string::String;
use alloc::vec::Vec;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `data` as base64url without padding.
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    let sextet = |bits: u32, shift: u32| {
        // `& 63` keeps the index in range, so `get` never misses.
        ALPHABET
            .get(((bits >> shift) & 63) as usize)
            .copied()
            .map_or('A', char::from)
    };
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let bits = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(bits, 18));
        out.push(sextet(bits, 12));
        if chunk.len() > 1 {
            out.push(sextet(bits, 6));
        }
        if chunk.len() > 2 {
            out.push(sextet(bits, 0));
        }
    }
    out
}

fn value_of(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes base64url, unpadded or correctly padded. `None` if `text` is not valid.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let unpadded = if bytes.len().is_multiple_of(4) {
        let stripped = text.strip_suffix("==").or_else(|| text.strip_suffix('='));
        stripped.unwrap_or(text).as_bytes()
    } else {
        bytes
    };
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    for chunk in unpadded.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value_of(c)? << (18 - 6 * i as u32);
        }
        let [_, b0, b1, b2] = bits.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&[b0, b1, b2]),
            3 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_without_padding() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, text) in cases {
            assert_eq!(encode(raw), text);
            assert_eq!(decode(text).as_deref(), Some(raw));
        }
    }

    #[test]
    fn url_safe_alphabet_and_padding() {
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode("Zg=="), Some(b"f".to_vec()));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "+/8", "Z", "Zh", "Zm9=", "Zg=", "Z===", "Zm 9v", "Zm9v=", "====",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
