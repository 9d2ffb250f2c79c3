//! Every device has a master secret of its own: a keyed fingerprint of each secret in a column
//! with a UNIQUE index (`devices.secret_fp`, schema migration 3).
//!
//! # Why
//!
//! The edge's OSCORE Sender ID is empty ([`crate::gateway::keys`]), so the edge's sender key and
//! Common IV depend on the device's master secret and salt alone. Two devices with the same
//! secret and salt would give the edge the same key for both, and both contexts number the
//! edge's Partial IVs from 0: the same key and nonce twice, which for AES-CCM reveals the XOR of
//! the two plaintexts and lets either device forge the edge's messages to the other.
//!
//! Uniqueness is required of the secret alone, not of secret and salt: the salt is stored in
//! clear and is often empty or shared, so it cannot be what keeps two devices apart; a device
//! whose secret is another's falls with it. An add, an import line or a rotation whose secret is
//! already in the registry — any device, revoked ones too (a revoked device's secret may be
//! known to whoever had the device) — is refused with [`RegistryError::DuplicateSecret`].
//!
//! # The fingerprint: HMAC-SHA-256 under a key derived from the seal key
//!
//! `secret_fp = HMAC-SHA-256(K, master secret)`, `K = `[`SealKey::derive_key`]`("v6iot registry:
//! secret fingerprint v1")`. Keyed rather than SHA-256 with a domain tag: secrets are sealed
//! so that the file alone reveals nothing, and an unkeyed hash would undo part of that — whoever
//! copies the file could test guesses of the secrets offline (a vendor's default or a weak
//! secret in a CSV falls to a dictionary) and see which devices of two registries share a
//! secret. Under a key derived from the seal key the fingerprint is as opaque as the sealed
//! value. The price: it needs the seal key, which adding, importing and rotating need anyway;
//! and existing rows get theirs on the first open with the key ([`fill`]), not in the SQL
//! migration (SQLite cannot open a sealed secret).
//!
//! # Existing duplicates (a registry made before migration 3)
//!
//! [`fill`] fingerprints every row without one, oldest first, in one transaction. A device
//! whose secret is already an older device's keeps no fingerprint and is reported
//! ([`DuplicateSecret`], [`Registry::duplicate_secrets`]); an active one is quarantined, with an
//! audit row, so the gateway stops using the shared key for it. The way out: `v6iot-edge devices
//! rotate ID`, deliver the new secret, `v6iot-edge devices set-state ID active`. Reinstating a
//! device without a fingerprint computes it first and is refused while its secret is still
//! another's ([`check_before_reinstating`]). A revoked duplicate stays revoked and unreported.

use std::fmt;

use hmac::{Hmac, Mac as _};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use sha2::Sha256;

use super::{DeviceState, RegistryError, SealKey};
use crate::audit::{self, AuditEvent, AuditKind, ChainWriter};
use crate::seal::hmac_sha256;

/// The `info` of the fingerprint key's derivation (see the module docs).
const FINGERPRINT_KEY_INFO: &[u8] = b"v6iot registry: secret fingerprint v1";

/// Computes secrets' fingerprints under one seal key.
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter(..)")
    }
}

impl Fingerprinter {
    /// The fingerprinter of `key`'s registry.
    #[must_use]
    pub fn new(key: &SealKey) -> Fingerprinter {
        let k = key.derive_key(FINGERPRINT_KEY_INFO);
        Fingerprinter {
            mac: hmac_sha256(&k),
        }
    }

    /// The fingerprint of `secret`.
    #[must_use]
    pub fn of(&self, secret: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }
}

/// A device whose master secret is another's, found by [`fill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateSecret {
    /// The device without a fingerprint (the younger one).
    pub device: String,
    /// The device whose fingerprint it is.
    pub holder: String,
    /// The device was active and has just been quarantined (with an audit row).
    pub quarantined_now: bool,
}

impl fmt::Display for DuplicateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device `{}` has the master secret of device `{}` (equal edge keys, reused nonces): ",
            self.device, self.holder
        )?;
        if self.quarantined_now {
            f.write_str("quarantined now; ")?;
        } else {
            f.write_str("it stays quarantined; ")?;
        }
        write!(
            f,
            "rotate it (`v6iot-edge devices rotate {0}`), deliver the new secret, then \
             `v6iot-edge devices set-state {0} active`",
            self.device
        )
    }
}

/// The device whose secret has fingerprint `fp`, if any.
pub(crate) fn holder(conn: &Connection, fp: &[u8; 32]) -> Result<Option<String>, RegistryError> {
    Ok(conn
        .prepare_cached("SELECT id FROM devices WHERE secret_fp = ?1")?
        .query_row([fp.as_slice()], |r| r.get(0))
        .optional()?)
}

/// Fingerprints every device that has none (see the module docs); returns the duplicates
/// found, oldest device first kept.
pub(crate) fn fill(
    conn: &mut Connection,
    key: &SealKey,
) -> Result<Vec<DuplicateSecret>, RegistryError> {
    let missing: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE secret_fp IS NULL)",
        [],
        |r| r.get(0),
    )?;
    if !missing {
        return Ok(Vec::new());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows: Vec<(String, Vec<u8>, String)> = tx
        .prepare(
            "SELECT id, secret, state FROM devices WHERE secret_fp IS NULL \
             ORDER BY created_us, id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let prints = Fingerprinter::new(key);
    let now = audit::now();
    let mut chain: Option<ChainWriter> = None;
    let mut found = Vec::new();
    for (id, sealed, state) in rows {
        // A secret that does not open, or an unknown state, is a corrupt row: reported when
        // the row is read, left without a fingerprint here.
        let (Ok(secret), Ok(state)) = (key.open(id.as_bytes(), &sealed), state.parse()) else {
            continue;
        };
        let fp = prints.of(&secret);
        let Some(holder) = holder(&tx, &fp)? else {
            tx.execute(
                "UPDATE devices SET secret_fp = ?2 WHERE id = ?1",
                params![id, fp.as_slice()],
            )?;
            continue;
        };
        let quarantined_now = match state {
            DeviceState::Revoked => continue,
            DeviceState::Quarantined => false,
            DeviceState::Active => true,
        };
        if quarantined_now {
            tx.execute(
                "UPDATE devices SET state = 'quarantined', updated_us = ?2 WHERE id = ?1",
                params![id, audit::to_us(now)?],
            )?;
            let writer = match &mut chain {
                Some(w) => w,
                None => chain.insert(ChainWriter::load(&tx)?),
            };
            writer.append(
                &tx,
                &AuditEvent::new(AuditKind::Quarantined, &id)
                    .at(now)
                    .detail(format!(
                        "state active -> quarantined: its master secret is device `{holder}`'s \
                         (found when the secrets' fingerprints were filled in); rotate it"
                    )),
            )?;
        }
        found.push(DuplicateSecret {
            device: id,
            holder,
            quarantined_now,
        });
    }
    tx.commit()?;
    Ok(found)
}

/// Before `id` is made active: a device without a fingerprint (a duplicate found by [`fill`],
/// or a registry not yet opened with the key) gets it now, and is refused while its secret is
/// another's. `conn` holds the caller's write transaction.
pub(crate) fn check_before_reinstating(
    conn: &Connection,
    key: Option<&SealKey>,
    id: &str,
) -> Result<(), RegistryError> {
    let (sealed, fp): (Vec<u8>, Option<Vec<u8>>) = conn.query_row(
        "SELECT secret, secret_fp FROM devices WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if fp.is_some() {
        return Ok(());
    }
    let key = key.ok_or(RegistryError::NoSealKey)?;
    let secret = key
        .open(id.as_bytes(), &sealed)
        .map_err(|e| RegistryError::Corrupt {
            device: id.to_owned(),
            what: format!("master secret: {e}"),
        })?;
    let fp = Fingerprinter::new(key).of(&secret);
    if let Some(holder) = holder(conn, &fp)? {
        return Err(RegistryError::DuplicateSecret {
            device: id.to_owned(),
            holder,
        });
    }
    conn.execute(
        "UPDATE devices SET secret_fp = ?2 WHERE id = ?1",
        params![id, fp.as_slice()],
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_distinct() {
        let a = SealKey::from_bytes(&[1; 32]).unwrap();
        let b = SealKey::from_bytes(&[2; 32]).unwrap();
        let fa = Fingerprinter::new(&a);
        assert_eq!(fa.of(&[7; 16]), fa.of(&[7; 16]));
        assert_ne!(fa.of(&[7; 16]), fa.of(&[8; 16]));
        assert_ne!(fa.of(&[7; 16]), Fingerprinter::new(&b).of(&[7; 16]));
        // Not the unkeyed hash of the secret.
        use sha2::Digest as _;
        let plain: [u8; 32] = Sha256::digest([7u8; 16]).into();
        assert_ne!(fa.of(&[7; 16]), plain);
    }
}
