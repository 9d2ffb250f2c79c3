//! The edge's OSCORE state in the registry file: per device context the sender sequence mark
//! and the replay floor the gateway persists (see [`crate::gateway::persist`]), the devices'
//! credentials for the gateway's keyring, and the cheap change check the edge polls.
//!
//! A state row belongs to one secret and salt ([`fingerprint`]): after a rotation the old row
//! no longer matches and the new context starts from zero (new key, new nonces), and a batch
//! that comes back after the rotation does not count for the new context
//! ([`crate::gateway::persist`]). This 8-byte fingerprint is not the registry's keyed
//! `secret_fp` ([`super::unique`]): it predates it, and changing it would reset every stored mark.

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::{DEVICE_COLUMNS, DeviceState, RawDevice, Registry, RegistryError, audit};
use crate::gateway::{DeviceKeys, StateRow, StoredState};
use crate::registry_db::MasterSecret;

/// Which secret and salt a state row belongs to: the first 8 bytes of
/// SHA-256("v6iot-oscore-state" ‖ len(secret) ‖ secret ‖ salt). Not secret-revealing.
#[must_use]
pub fn fingerprint(secret: &[u8], salt: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"v6iot-oscore-state");
    h.update(
        u32::try_from(secret.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(secret);
    h.update(salt);
    let digest = h.finalize();
    let mut out = [0u8; 8];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    out
}

impl Registry {
    /// SQLite's `PRAGMA data_version`: changes when another connection (another process, e.g.
    /// `v6iot-edge devices revoke`) committed to the file since the last call on this one.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Sqlite`].
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// Every device with what the gateway needs: secrets of active devices opened (revoked and
    /// quarantined ones only by kid, their secrets stay sealed) and the stored OSCORE state
    /// (zero when none, or when it belongs to another secret). Devices whose rows do not read
    /// back are left out and named in the second list.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoSealKey`], [`RegistryError::Sqlite`].
    pub fn device_keys(&self) -> Result<(Vec<DeviceKeys>, Vec<RegistryError>), RegistryError> {
        let key = self.key()?;
        let sql = format!(
            "SELECT {DEVICE_COLUMNS}, s.fingerprint, s.sender_mark, s.replay_floor \
             FROM devices d LEFT JOIN oscore_state s ON s.kid = d.kid ORDER BY d.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([], |r| {
                let stored: (Option<Vec<u8>>, Option<i64>, Option<i64>) =
                    (r.get(9)?, r.get(10)?, r.get(11)?);
                Ok((RawDevice::read(r)?, stored))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut devices = Vec::with_capacity(rows.len());
        let mut problems = Vec::new();
        for (raw, (fp, mark, floor)) in rows {
            let active = raw.state == DeviceState::Active.as_str();
            let opened = if active {
                raw.into_device(key).map(|d| d.record)
            } else {
                raw.into_info().map(|i| super::DeviceRecord {
                    id: i.id,
                    kid: i.kid,
                    master_secret: MasterSecret::new(Vec::new()),
                    master_salt: i.master_salt,
                    class: i.class,
                    prefixes: i.prefixes,
                    state: i.state,
                })
            };
            let record = match opened {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let salt = record.master_salt.clone().unwrap_or_default();
            let fingerprint = fingerprint(record.master_secret.as_bytes(), &salt);
            let stored = match (fp, mark, floor) {
                (Some(fp), Some(mark), Some(floor)) if fp == fingerprint => StoredState {
                    sender_mark: u64::try_from(mark).unwrap_or(0),
                    replay_floor: u64::try_from(floor).unwrap_or(0),
                    fingerprint,
                },
                _ => StoredState {
                    fingerprint,
                    ..StoredState::default()
                },
            };
            devices.push(DeviceKeys {
                id: record.id,
                kid: record.kid,
                master_secret: record.master_secret,
                master_salt: salt,
                prefixes: record.prefixes,
                state: record.state,
                stored,
            });
        }
        Ok((devices, problems))
    }

    /// The stored OSCORE state of `kid`, if any.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Sqlite`].
    pub fn oscore_state(&self, kid: &[u8]) -> Result<Option<StoredState>, RegistryError> {
        let row: Option<(Vec<u8>, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT fingerprint, sender_mark, replay_floor FROM oscore_state WHERE kid = ?1",
            )?
            .query_row([kid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(row.map(|(fp, mark, floor)| {
            let mut fingerprint = [0u8; 8];
            for (o, b) in fingerprint.iter_mut().zip(fp) {
                *o = b;
            }
            StoredState {
                sender_mark: u64::try_from(mark).unwrap_or(0),
                replay_floor: u64::try_from(floor).unwrap_or(0),
                fingerprint,
            }
        }))
    }

    /// Writes a batch of OSCORE state rows in one transaction (durable on return: the file
    /// runs with `synchronous=FULL`). Marks and floors never go down: a row is only raised.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Sqlite`].
    pub fn store_oscore_state(&mut self, rows: &[StateRow]) -> Result<(), RegistryError> {
        let now = audit::to_us(audit::now())?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO oscore_state (kid, device, fingerprint, sender_mark, replay_floor, updated_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (kid) DO UPDATE SET device = excluded.device, \
                   sender_mark = CASE WHEN fingerprint = excluded.fingerprint \
                     THEN max(sender_mark, excluded.sender_mark) ELSE excluded.sender_mark END, \
                   replay_floor = CASE WHEN fingerprint = excluded.fingerprint \
                     THEN max(replay_floor, excluded.replay_floor) ELSE excluded.replay_floor END, \
                   fingerprint = excluded.fingerprint, updated_us = excluded.updated_us",
            )?;
            for row in rows {
                stmt.execute(params![
                    row.kid,
                    row.device,
                    row.state.fingerprint.as_slice(),
                    i64::try_from(row.state.sender_mark).unwrap_or(i64::MAX),
                    i64::try_from(row.state.replay_floor).unwrap_or(i64::MAX),
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
