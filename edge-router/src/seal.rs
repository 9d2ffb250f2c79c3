//! Sealing of master secrets at rest: AES-256-GCM under a key that is not in the database.
//!
//! A sealed value is `0x01 ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)`; the
//! associated data binds it to its row (the registry passes the device id), so a sealed secret
//! copied into another device's row does not open. Keys come from a file or the environment as
//! 64 hex digits ([`SealKey::from_hex`]); the 256-bit key is held inside the cipher and in one
//! buffer for [`SealKey::derive_key`], both wiped on drop.
//!
//! # Keys derived from the seal key
//!
//! Other integrity keys of the registry are derived from the seal key with HKDF-SHA-256
//! (RFC 5869; salt `v6iot-seal-key`, one `info` string per purpose), never the seal key itself:
//! the secrets' fingerprints ([`crate::registry_db::unique`]) and the audit checkpoint's MAC
//! ([`crate::audit::checkpoint`]). Whoever reads the file without the seal key learns nothing
//! from either, and a value made for one purpose is no use for another.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::Hmac;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The environment variable that may hold the seal key (64 hex digits).
pub const SEAL_KEY_ENV: &str = "V6IOT_SEAL_KEY";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext: version, nonce, tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The HKDF salt of every key derived from the seal key.
const DERIVE_SALT: &[u8] = b"v6iot-seal-key";

/// A 256-bit AES-GCM key for sealing secrets.
#[derive(Clone)]
pub struct SealKey {
    cipher: Aes256Gcm,
    /// The key bytes, for [`SealKey::derive_key`] only.
    root: Zeroizing<[u8; SealKey::LEN]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Why a key could not be had or a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key is not 32 bytes.
    #[error("a seal key is 32 bytes (64 hex digits), not {got} bytes")]
    KeyLength {
        /// Bytes given.
        got: usize,
    },
    /// The key text is not hex.
    #[error("the seal key is not hex: {0}")]
    KeyHex(hex::FromHexError),
    /// The key file could not be read.
    #[error("cannot read the seal key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file can be read or written by its group or by others.
    #[error(
        "the seal key file {path} is open to its group or others (mode {mode:03o}): it must be \
         owner-only; run `chmod 600 {path}`"
    )]
    KeyFileExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random source failed.
    #[error("no random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    /// The stored value is too short or of an unknown version.
    #[error("not a sealed value (too short or unknown version)")]
    Format,
    /// Authentication failed: another key, another row, or altered bytes.
    #[error(
        "the sealed value does not open with this key (wrong seal key, or the row was altered)"
    )]
    Open,
    /// Encryption failed (cannot happen for the sizes used here).
    #[error("sealing failed")]
    Seal,
}

impl SealKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A key from its 32 bytes.
    ///
    /// # Errors
    ///
    /// [`SealError::KeyLength`] for any other length.
    pub fn from_bytes(key: &[u8]) -> Result<Self, SealError> {
        if key.len() != Self::LEN {
            return Err(SealError::KeyLength { got: key.len() });
        }
        let cipher =
            Aes256Gcm::new_from_slice(key).map_err(|_| SealError::KeyLength { got: key.len() })?;
        let mut root = Zeroizing::new([0u8; Self::LEN]);
        root.copy_from_slice(key);
        Ok(Self { cipher, root })
    }

    /// A 256-bit key for one purpose, derived from this key: HKDF-SHA-256 with salt
    /// `v6iot-seal-key` and `info` naming the purpose (see the module docs). Different `info`,
    /// unrelated keys; the seal key cannot be recovered from any of them.
    #[must_use]
    pub fn derive_key(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes are far below HKDF-SHA-256's limit of 255 × 32: expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(DERIVE_SALT), self.root.as_slice())
            .expand(info, okm.as_mut_slice());
        okm
    }

    /// A key from 64 hex digits (surrounding white space is ignored).
    ///
    /// # Errors
    ///
    /// [`SealError::KeyHex`] or [`SealError::KeyLength`].
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(SealError::KeyHex)?);
        Self::from_bytes(&bytes)
    }

    /// A key from a file holding 64 hex digits (as written by `v6iot-edge devices keygen`,
    /// mode 0600). On Unix the file must be owner-only: a key file its group or others may
    /// read or write is refused (as ssh refuses such a private key).
    ///
    /// # Errors
    ///
    /// [`SealError::KeyFile`] when unreadable, [`SealError::KeyFileExposed`] when open to the
    /// group or others, else as [`SealKey::from_hex`].
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let key_file = |source| SealError::KeyFile {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(key_file)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(key_file)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SealError::KeyFileExposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut file, &mut text).map_err(key_file)?;
        Self::from_hex(&text)
    }

    /// The key in [`SEAL_KEY_ENV`], if that variable is set.
    ///
    /// # Errors
    ///
    /// As [`SealKey::from_hex`] when it is set but not a key.
    pub fn from_env() -> Result<Option<Self>, SealError> {
        match std::env::var(SEAL_KEY_ENV) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Self::from_hex(&text).map(Some)
            }
            Err(_) => Ok(None),
        }
    }

    /// A fresh random key, as the 64 hex digits the other constructors read.
    ///
    /// # Errors
    ///
    /// [`SealError::Random`].
    pub fn generate_hex() -> Result<Zeroizing<String>, SealError> {
        let mut key = Zeroizing::new([0u8; Self::LEN]);
        getrandom::fill(key.as_mut_slice()).map_err(SealError::Random)?;
        Ok(Zeroizing::new(hex::encode(key.as_slice())))
    }

    /// Seals `plaintext` bound to `aad`, under a fresh random nonce.
    ///
    /// # Errors
    ///
    /// [`SealError::Random`] (or [`SealError::Seal`], which does not happen for small values).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(SealError::Random)?;
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a value sealed with this key and the same `aad`.
    ///
    /// # Errors
    ///
    /// [`SealError::Format`] when `sealed` is not a sealed value, [`SealError::Open`] when it
    /// does not authenticate (another key or `aad`, or altered bytes).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let Some((&VERSION, rest)) = sealed.split_first() else {
            return Err(SealError::Format);
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Format)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

/// The plaintext length of a sealed value, from its length alone (no key needed).
pub fn plaintext_len(sealed: &[u8]) -> Option<usize> {
    sealed.len().checked_sub(OVERHEAD)
}

/// HMAC-SHA-256 under a 32-byte key, without a fallible constructor: RFC 2104 §2 pads a key
/// shorter than the block (64 bytes) with zeros, which is done here (a test holds it to the
/// crate's own `new_from_slice`).
pub(crate) fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = zeroize::Zeroizing::new([0u8; 64]);
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    <Hmac<Sha256> as hmac::KeyInit>::new(&(*block).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac as _;

    fn key(byte: u8) -> SealKey {
        SealKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_open_to_group_or_others_is_refused_by_name() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = SealKey::from_file(&path).unwrap_err();
            assert!(matches!(e, SealError::KeyFileExposed { mode: m, .. } if m == mode));
            let text = e.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            SealKey::from_file(&path).unwrap();
        }
    }

    #[test]
    fn round_trip() {
        let k = key(7);
        let secret = b"0123456789abcdef";
        let sealed = k.seal(b"dev-1", secret).unwrap();
        assert_eq!(sealed.len(), secret.len() + OVERHEAD);
        assert_eq!(plaintext_len(&sealed), Some(secret.len()));
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        assert_eq!(k.open(b"dev-1", &sealed).unwrap().as_slice(), secret);
        // A fresh nonce each time: the same secret seals differently.
        assert_ne!(k.seal(b"dev-1", secret).unwrap(), sealed);
    }

    #[test]
    fn wrong_key_other_row_or_altered_bytes_do_not_open() {
        let sealed = key(7).seal(b"dev-1", b"0123456789abcdef").unwrap();
        assert!(matches!(
            key(8).open(b"dev-1", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            key(7).open(b"dev-2", &sealed),
            Err(SealError::Open)
        ));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            key(7).open(b"dev-1", &altered),
            Err(SealError::Open)
        ));
        assert!(matches!(
            key(7).open(b"dev-1", &sealed[..20]),
            Err(SealError::Format)
        ));
        assert!(matches!(key(7).open(b"dev-1", &[]), Err(SealError::Format)));
        let mut version = sealed;
        version[0] = 2;
        assert!(matches!(
            key(7).open(b"dev-1", &version),
            Err(SealError::Format)
        ));
    }

    #[test]
    fn keys_from_text() {
        let text = SealKey::generate_hex().unwrap();
        assert_eq!(text.len(), 64);
        let a = SealKey::from_hex(&format!("  {}\n", text.as_str())).unwrap();
        let b = SealKey::from_hex(&text.to_uppercase()).unwrap();
        let sealed = a.seal(b"x", b"secret-secret-16").unwrap();
        assert_eq!(
            b.open(b"x", &sealed).unwrap().as_slice(),
            b"secret-secret-16"
        );
        assert!(matches!(
            SealKey::from_hex("abcd"),
            Err(SealError::KeyLength { got: 2 })
        ));
        assert!(matches!(SealKey::from_hex("xy"), Err(SealError::KeyHex(_))));
        assert_eq!(format!("{a:?}"), "SealKey(..)");
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_by_seal_key() {
        let a = key(7).derive_key(b"purpose one");
        assert_eq!(a, key(7).derive_key(b"purpose one"), "deterministic");
        assert_ne!(a, key(7).derive_key(b"purpose two"));
        assert_ne!(a, key(8).derive_key(b"purpose one"));
        assert_ne!(a.as_slice(), &[7u8; 32], "never the seal key itself");
        // RFC 5869 HKDF-SHA-256 with this salt, checked against the hkdf crate directly.
        let mut expected = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"v6iot-seal-key"), &[7u8; 32])
            .expand(b"purpose one", &mut expected)
            .unwrap();
        assert_eq!(*a, expected);
    }

    #[test]
    fn hmac_with_a_padded_key_is_hmac() {
        for key in [[0u8; 32], [0x0b; 32], core::array::from_fn(|i| i as u8)] {
            let mut ours = hmac_sha256(&key);
            let mut theirs = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key).unwrap();
            ours.update(b"Hi There");
            theirs.update(b"Hi There");
            assert_eq!(ours.finalize().into_bytes(), theirs.finalize().into_bytes());
        }
        // RFC 4231 test case 1 has a 20-byte key: padded to 32 with zeros it is the same key.
        let mut key = [0u8; 32];
        key[..20].fill(0x0b);
        let mut mac = hmac_sha256(&key);
        mac.update(b"Hi There");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }
}
