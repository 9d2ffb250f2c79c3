//! The COSE parts of OSCORE: the CBOR structures (RFC 8613 §3.2.1 `info`, §5.4 `aad_array` and
//! `Enc_structure`), the AEAD nonce (§5.2) and AES-CCM-16-64-128 itself (RustCrypto `ccm` over
//! `aes`).
//!
//! The CBOR here is a handful of fixed arrays of byte strings, text strings and small unsigned
//! integers, written by hand (RFC 8949 §3: head byte with major type and length, then content);
//! nothing here decodes CBOR.

use alloc::vec::Vec;

use aes::Aes128;
use ccm::aead::{Aead, KeyInit, Payload};
use ccm::consts::{U8, U13};

use super::OscoreError;
use super::sequence::MAX_SEQUENCE_NUMBER;

/// COSE algorithm value of AES-CCM-16-64-128 (RFC 8152 §10.2), the AEAD Algorithm.
pub const AES_CCM_16_64_128: u8 = 10;
/// AEAD key length of AES-CCM-16-64-128, in bytes.
pub const KEY_LEN: usize = 16;
/// AEAD nonce (and Common IV) length of AES-CCM-16-64-128, in bytes.
pub const NONCE_LEN: usize = 13;
/// AEAD tag length of AES-CCM-16-64-128, in bytes.
pub const TAG_LEN: usize = 8;
/// The longest Sender ID: nonce length − 6 (§3.3).
pub const MAX_ID_LEN: usize = NONCE_LEN - 6;
/// The OSCORE version in the AAD (§5.4).
const OSCORE_VERSION: u64 = 1;

/// AES-CCM with a 16-byte key, 8-byte tag and 13-byte nonce (L = 2).
type AesCcm16_64_128 = ccm::Ccm<Aes128, U8, U13>;

const MAJOR_UINT: u8 = 0;
const MAJOR_BSTR: u8 = 2;
const MAJOR_TSTR: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const CBOR_NIL: u8 = 0xf6;

/// Writes a CBOR head: major type and argument in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let mt = major << 5;
    if let Ok(v) = u8::try_from(value) {
        if v < 24 {
            out.push(mt | v);
        } else {
            out.extend_from_slice(&[mt | 24, v]);
        }
    } else if let Ok(v) = u16::try_from(value) {
        out.push(mt | 25);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(mt | 26);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(mt | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn bstr(out: &mut Vec<u8>, bytes: &[u8]) {
    head(out, MAJOR_BSTR, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn tstr(out: &mut Vec<u8>, text: &str) {
    head(out, MAJOR_TSTR, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// What an HKDF output is for (the `type` of the `info` array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfOutput {
    /// A Sender or Recipient Key ("Key").
    Key,
    /// The Common IV ("IV").
    Iv,
}

/// The HKDF `info` of §3.2.1: `[id, id_context / nil, alg_aead, type, L]`, CBOR-encoded.
/// `id` is the Sender or Recipient ID for keys, empty for the Common IV.
pub fn kdf_info(id: &[u8], id_context: Option<&[u8]>, output: KdfOutput) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + id.len() + id_context.map_or(0, <[u8]>::len));
    head(&mut out, MAJOR_ARRAY, 5);
    bstr(&mut out, id);
    match id_context {
        Some(ctx) => bstr(&mut out, ctx),
        None => out.push(CBOR_NIL),
    }
    head(&mut out, MAJOR_UINT, u64::from(AES_CCM_16_64_128));
    let (label, len) = match output {
        KdfOutput::Key => ("Key", KEY_LEN),
        KdfOutput::Iv => ("IV", NONCE_LEN),
    };
    tstr(&mut out, label);
    head(&mut out, MAJOR_UINT, len as u64);
    out
}

/// The `aad_array` of §5.4: `[1, [alg_aead], request_kid, request_piv, options]`, CBOR-encoded.
/// `class_i_options` are the Class I options, encoded as CoAP options (none are defined: empty).
pub fn aad_array(request_kid: &[u8], request_piv: &[u8], class_i_options: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + request_kid.len() + request_piv.len() + class_i_options.len());
    head(&mut out, MAJOR_ARRAY, 5);
    head(&mut out, MAJOR_UINT, OSCORE_VERSION);
    head(&mut out, MAJOR_ARRAY, 1);
    head(&mut out, MAJOR_UINT, u64::from(AES_CCM_16_64_128));
    bstr(&mut out, request_kid);
    bstr(&mut out, request_piv);
    bstr(&mut out, class_i_options);
    out
}

/// The AAD of §5.4: `Enc_structure = ["Encrypt0", h'', external_aad]` with
/// `external_aad = bstr .cbor aad_array`, CBOR-encoded.
pub fn aad(request_kid: &[u8], request_piv: &[u8], class_i_options: &[u8]) -> Vec<u8> {
    let array = aad_array(request_kid, request_piv, class_i_options);
    let mut out = Vec::with_capacity(14 + array.len());
    head(&mut out, MAJOR_ARRAY, 3);
    tstr(&mut out, "Encrypt0");
    bstr(&mut out, &[]);
    bstr(&mut out, &array);
    out
}

/// The AEAD nonce of §5.2: `S || pad(ID_PIV) || pad(PIV)` XOR Common IV, where `id_piv` is the
/// Sender ID of the endpoint that generated the Partial IV `piv`.
///
/// Errors with [`OscoreError::InvalidContext`] for an ID longer than 7 bytes and
/// [`OscoreError::EncodingFailed`] for a Partial IV above 2^40 − 1.
pub fn nonce(
    common_iv: &[u8; NONCE_LEN],
    id_piv: &[u8],
    piv: u64,
) -> Result<[u8; NONCE_LEN], OscoreError> {
    let s = u8::try_from(id_piv.len()).map_err(|_| OscoreError::InvalidContext)?;
    if id_piv.len() > MAX_ID_LEN {
        return Err(OscoreError::InvalidContext);
    }
    if piv > MAX_SEQUENCE_NUMBER {
        return Err(OscoreError::EncodingFailed);
    }
    let piv_bytes = piv.to_be_bytes();
    let fields = core::iter::once(s)
        .chain(core::iter::repeat_n(0, MAX_ID_LEN - id_piv.len()))
        .chain(id_piv.iter().copied())
        .chain(piv_bytes.iter().skip(3).copied());
    let mut out = *common_iv;
    for (o, f) in out.iter_mut().zip(fields) {
        *o ^= f;
    }
    Ok(out)
}

/// Encrypts `plaintext` with AES-CCM-16-64-128; the result is the ciphertext with the 8-byte tag
/// appended.
pub(crate) fn encrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, OscoreError> {
    let cipher = AesCcm16_64_128::new(&(*key).into());
    cipher
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| OscoreError::EncodingFailed)
}

/// Verifies and decrypts `ciphertext` (with its tag) with AES-CCM-16-64-128.
pub(crate) fn decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, OscoreError> {
    if ciphertext.len() < TAG_LEN {
        return Err(OscoreError::DecryptionFailed);
    }
    let cipher = AesCcm16_64_128::new(&(*key).into());
    cipher
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| OscoreError::DecryptionFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8613_section_5_4_aad_example() {
        // request_kid 0x00, request_piv 0x25, no Class I options.
        assert_eq!(
            aad_array(&[0x00], &[0x25], &[]),
            [0x85, 0x01, 0x81, 0x0a, 0x41, 0x00, 0x41, 0x25, 0x40]
        );
        assert_eq!(
            aad(&[0x00], &[0x25], &[]),
            [
                0x83, 0x68, 0x45, 0x6e, 0x63, 0x72, 0x79, 0x70, 0x74, 0x30, 0x40, 0x49, 0x85, 0x01,
                0x81, 0x0a, 0x41, 0x00, 0x41, 0x25, 0x40
            ]
        );
    }

    #[test]
    fn cbor_heads_use_the_shortest_form() {
        let mut v = Vec::new();
        head(&mut v, MAJOR_BSTR, 23);
        head(&mut v, MAJOR_BSTR, 24);
        head(&mut v, MAJOR_BSTR, 256);
        head(&mut v, MAJOR_BSTR, 65_536);
        head(&mut v, MAJOR_UINT, 1 << 32);
        assert_eq!(
            v,
            [
                0x57, 0x58, 24, 0x59, 1, 0, 0x5a, 0, 1, 0, 0, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn nonce_rejects_long_ids_and_pivs() {
        let iv = [0u8; NONCE_LEN];
        assert_eq!(nonce(&iv, &[0; 8], 0), Err(OscoreError::InvalidContext));
        assert_eq!(
            nonce(&iv, &[], MAX_SEQUENCE_NUMBER + 1),
            Err(OscoreError::EncodingFailed)
        );
        let n = nonce(&iv, &[1, 2, 3, 4, 5, 6, 7], MAX_SEQUENCE_NUMBER).unwrap();
        assert_eq!(n, [7, 1, 2, 3, 4, 5, 6, 7, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn tag_is_checked() {
        let key = [7u8; KEY_LEN];
        let n = [1u8; NONCE_LEN];
        let ct = encrypt(&key, &n, b"aad", b"hello").unwrap();
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(decrypt(&key, &n, b"aad", &ct).unwrap(), b"hello");
        assert_eq!(
            decrypt(&key, &n, b"aae", &ct),
            Err(OscoreError::DecryptionFailed)
        );
        assert_eq!(
            decrypt(&key, &n, b"aad", &ct[..7]),
            Err(OscoreError::DecryptionFailed)
        );
    }
}
