//! Provisioning records, shared by the edge router's registry and the simulator.
//!
//! A device as provisioned ([`DeviceRecord`]):
//!
//! | field | what |
//! |---|---|
//! | `id` | its endpoint name (RFC 9176 `ep`): 1–64 bytes, no `/ + # ,` NUL, white space or control characters, not starting with `_` ([`check_id`]) |
//! | `kid` | its OSCORE key id, 1–7 bytes (the most AES-CCM-16-64-128's 13-byte nonce leaves) |
//! | master secret | 16–32 bytes ([`MasterSecret`]: redacted in `Debug`, wiped on drop) |
//! | master salt | optional, up to 32 bytes |
//! | `class` | the address plan's device class, 1–255 |
//! | prefixes | IPv6 prefixes its source addresses must be in ([`Ipv6Prefix`]) |
//! | state | [`DeviceState`]: active, quarantined or revoked (revocation is final) |
//!
//! [`csv`] reads and writes the credentials CSV (`v6iot-sim provision` writes it,
//! `v6iot-edge devices import` reads it). This crate has no I/O and depends on nothing of the
//! edge router: the simulator's load generators use it without the edge's SQLite, MQTT broker
//! or HTTP stack.

pub mod csv;
pub mod prefix;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

pub use prefix::{Ipv6Prefix, PrefixError};

/// Longest kid: AES-CCM-16-64-128 has a 13-byte nonce, which leaves 7 bytes for the kid
/// (RFC 8613 §5.2).
pub const MAX_KID_LEN: usize = 7;
/// Shortest master secret.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest master secret.
pub const MAX_SECRET_LEN: usize = 32;
/// Longest master salt.
pub const MAX_SALT_LEN: usize = 32;
/// Longest device id (the ingress's limit on endpoint names).
pub const MAX_ID_LEN: usize = 64;
/// An OSCORE master secret. `Debug` does not show it; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret(Zeroizing<Vec<u8>>);

impl MasterSecret {
    /// Wraps secret bytes (their length is checked where they are used).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wraps secret bytes that are already wiped on drop (e.g. just unsealed).
    #[must_use]
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// `len` fresh random bytes from the operating system.
    ///
    /// # Errors
    ///
    /// When the OS random source fails.
    pub fn random(len: usize) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The secret.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as lower-case hex.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0))
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterSecret({} bytes, redacted)", self.0.len())
    }
}

/// Whether a device may talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceState {
    /// Accepted.
    Active,
    /// Known but refused for now (e.g. after repeated authentication failures).
    Quarantined,
    /// Refused for good: a revoked device is never made active again, nor rotated.
    Revoked,
}

impl DeviceState {
    /// `active`, `quarantined` or `revoked`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Quarantined => "quarantined",
            DeviceState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A text that is not a [`DeviceState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a device state (active, quarantined, revoked)")]
pub struct UnknownState(pub String);

impl FromStr for DeviceState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        match s {
            "active" => Ok(DeviceState::Active),
            "quarantined" => Ok(DeviceState::Quarantined),
            "revoked" => Ok(DeviceState::Revoked),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// Why a [`DeviceRecord`] (or a device id) is refused: the field and its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRecord {
    /// The id is empty or too long (its length).
    #[error("device id must be 1 to {MAX_ID_LEN} bytes, not {0}")]
    IdLength(usize),
    /// The id starts with `_` or holds a character MQTT topics or the CSV cannot carry.
    #[error(
        "device id `{}` must not start with _ nor hold / + # , white space or control characters",
        .0.escape_debug()
    )]
    IdCharacters(String),
    /// The kid is empty or too long (its length).
    #[error("kid must be 1 to {MAX_KID_LEN} bytes, not {0}")]
    KidLength(usize),
    /// The master secret is too short or too long (its length).
    #[error("master secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, not {0}")]
    SecretLength(usize),
    /// The master salt is too long (its length).
    #[error("master salt must be at most {MAX_SALT_LEN} bytes, not {0}")]
    SaltLength(usize),
    /// Class 0.
    #[error("class 0 is reserved in the address plan: use 1 to 255")]
    ClassZero,
}

/// A device as provisioned: what the edge's registry stores and the credentials CSV carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Endpoint name.
    pub id: String,
    /// OSCORE key id.
    pub kid: Vec<u8>,
    /// OSCORE master secret.
    pub master_secret: MasterSecret,
    /// OSCORE master salt, if any.
    pub master_salt: Option<Vec<u8>>,
    /// Address plan device class, 1–255.
    pub class: u8,
    /// Prefixes its addresses must be in.
    pub prefixes: Vec<Ipv6Prefix>,
    /// Its state.
    pub state: DeviceState,
}

impl DeviceRecord {
    /// Checks every field against the limits in the crate documentation.
    ///
    /// # Errors
    ///
    /// The first field that is wrong.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        check_id(&self.id)?;
        if self.kid.is_empty() || self.kid.len() > MAX_KID_LEN {
            return Err(InvalidRecord::KidLength(self.kid.len()));
        }
        let n = self.master_secret.as_bytes().len();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&n) {
            return Err(InvalidRecord::SecretLength(n));
        }
        if let Some(salt) = &self.master_salt
            && salt.len() > MAX_SALT_LEN
        {
            return Err(InvalidRecord::SaltLength(salt.len()));
        }
        if self.class == 0 {
            return Err(InvalidRecord::ClassZero);
        }
        Ok(())
    }
}

/// Checks a device id (endpoint name).
///
/// # Errors
///
/// [`InvalidRecord::IdLength`] or [`InvalidRecord::IdCharacters`].
pub fn check_id(id: &str) -> Result<(), InvalidRecord> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(InvalidRecord::IdLength(id.len()));
    }
    if id.starts_with('_')
        || id
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#' | ',') || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidRecord::IdCharacters(id.to_owned()));
    }
    Ok(())
}
