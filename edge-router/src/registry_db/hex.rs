//! Lower-case hexadecimal text for keys, kids, secrets and hashes.

/// `bytes` as lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex digits (either case, even count, nothing else) as bytes.
///
/// # Errors
///
/// A short message saying what is wrong (odd length, a character that is not a hex digit).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        if let [hi, lo] = *pair {
            out.push((value(hi)? << 4) | value(lo)?);
        }
    }
    Ok(out)
}

fn value(digit: u8) -> Result<u8, String> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(format!(
            "`{}` is not a hex digit",
            char::from(digit).escape_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(decode("000FA5ff").unwrap(), vec![0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
        assert!(decode("abc").unwrap_err().contains("odd"));
        assert!(decode("zz").unwrap_err().contains("`z`"));
    }
}
