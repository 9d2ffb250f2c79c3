//! The device registry: who may talk to this edge router, with which OSCORE keys, from where.
//!
//! One SQLite file (WAL, foreign keys, `PRAGMA user_version` migrations, see [`schema`]) holds
//! the devices, their allowed prefixes and the [audit trail](crate::audit). A device is
//!
//! | field | what |
//! |---|---|
//! | `id` | its endpoint name (RFC 9176 `ep`): 1–64 bytes, no `/ + # ,` NUL, white space or control characters, not starting with `_` |
//! | `kid` | its OSCORE key id, 1–7 bytes (the most AES-CCM-16-64-128's 13-byte nonce leaves), unique |
//! | master secret | 16–32 bytes, stored **sealed** (AES-256-GCM, a random nonce per row, the device id as associated data) under a key that is not in the file ([`SealKey`]); **unique**: its keyed fingerprint is in a UNIQUE column ([`unique`]) |
//! | master salt | optional, up to 32 bytes, stored as is (it is not secret) |
//! | `class` | the address plan's device class, 1–255 |
//! | prefixes | IPv6 prefixes its source addresses must be in ([`Ipv6Prefix`]) |
//! | state | [`DeviceState`]: active, quarantined or revoked (revocation is final) |
//! | created, updated | times, microseconds |
//!
//! Every change (add, import, state change, rotation) appends its audit row in the same
//! transaction. A row that does not read back (a sealed secret that does not open, prefix text
//! that does not parse, an unknown state) is a [`RegistryError::Corrupt`] naming the device.
//!
//! The credentials CSV that [`Registry::import_csv`] reads is described in [`csv`].

pub mod admin;
pub mod oscore_state;
pub mod schema;
pub mod unique;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OptionalExtension as _, TransactionBehavior, params};
use time::OffsetDateTime;

pub use crate::seal::{SEAL_KEY_ENV, SealError, SealKey};
pub use unique::DuplicateSecret;
pub use v6iot_credentials::{
    DeviceRecord, DeviceState, InvalidRecord, Ipv6Prefix, MAX_ID_LEN, MAX_KID_LEN, MAX_SALT_LEN,
    MAX_SECRET_LEN, MIN_SECRET_LEN, MasterSecret, PrefixError, UnknownState, check_id, csv, prefix,
};

use crate::audit::{self, AuditError, AuditEvent, AuditKind, AuditLog, ChainWriter};
use crate::seal;

/// Length of the secrets [`Registry::rotate`] makes when the old length is unknown.
pub const DEFAULT_SECRET_LEN: usize = 16;
/// How many line errors an import keeps (it counts them all).
pub const MAX_IMPORT_ERRORS: usize = 100;

/// The plaintext sealed in the `meta` table to tell a wrong seal key at open.
const SEAL_CHECK: &[u8] = b"v6iot registry seal check";
const SEAL_CHECK_AAD: &[u8] = b"meta:seal_check";

/// A stored device with its secret: what [`Registry::get`] and [`Registry::get_by_kid`] give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device.
    pub record: DeviceRecord,
    /// When it was added.
    pub created: OffsetDateTime,
    /// When it last changed (state, secret).
    pub updated: OffsetDateTime,
}

/// A stored device without its secret: what [`Registry::list`] gives (no key needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Endpoint name.
    pub id: String,
    /// OSCORE key id.
    pub kid: Vec<u8>,
    /// Length of the sealed master secret.
    pub secret_len: usize,
    /// OSCORE master salt, if any.
    pub master_salt: Option<Vec<u8>>,
    /// Address plan device class.
    pub class: u8,
    /// Allowed prefixes.
    pub prefixes: Vec<Ipv6Prefix>,
    /// State.
    pub state: DeviceState,
    /// When it was added.
    pub created: OffsetDateTime,
    /// When it last changed.
    pub updated: OffsetDateTime,
}

/// Which devices [`Registry::list`] returns; the default is all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only devices in this state.
    pub state: Option<DeviceState>,
    /// Only devices of this class.
    pub class: Option<u8>,
}

/// What [`Registry::import_csv`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Devices added.
    pub imported: usize,
    /// Lines read, header, blank and comment lines included.
    pub lines: usize,
}

/// One refused line of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (the header is line 1).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an import added nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors {
    /// The first [`MAX_IMPORT_ERRORS`] refused lines.
    pub errors: Vec<LineError>,
    /// How many lines were refused in all.
    pub total: usize,
}

impl ImportErrors {
    fn refuse(&mut self, line: usize, message: String) {
        self.total += 1;
        if self.errors.len() < MAX_IMPORT_ERRORS {
            self.errors.push(LineError { line, message });
        }
    }
}

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bad line(s), nothing imported:", self.total)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        if self.total > self.errors.len() {
            write!(f, "\n  … and {} more", self.total - self.errors.len())?;
        }
        Ok(())
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The database file could not be opened or set up.
    #[error("cannot open the registry {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// SQLite failed.
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// SQLite lacks a feature the registry needs.
    #[error("{0}")]
    Config(String),
    /// The file was written by a newer version.
    #[error("the registry has schema version {found}; this build knows up to {known}")]
    NewerSchema {
        /// Version in the file.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
    /// Sealing or opening failed.
    #[error("{0}")]
    Seal(#[from] SealError),
    /// The operation needs the seal key and none was given.
    #[error(
        "no seal key: set registry.seal_key_file in the configuration or {SEAL_KEY_ENV} (64 hex digits)"
    )]
    NoSealKey,
    /// The seal key is not the one the registry was created with.
    #[error("the seal key is not the one this registry's secrets were sealed with")]
    WrongSealKey,
    /// A record given to [`Registry::add`] is not acceptable.
    #[error("device `{device}`: {reason}")]
    Invalid {
        /// The device id given.
        device: String,
        /// What is wrong.
        reason: InvalidRecord,
    },
    /// The id is taken.
    #[error("device `{0}` already exists")]
    DuplicateId(String),
    /// The kid is taken.
    #[error("kid {kid} is already device `{holder}`'s")]
    DuplicateKid {
        /// The kid, hex.
        kid: String,
        /// The device that has it.
        holder: String,
    },
    /// The master secret is already another device's (see [`unique`]).
    #[error(
        "the master secret of `{device}` is already device `{holder}`'s: every device needs its \
         own (equal secrets give the edge equal keys and repeated nonces)"
    )]
    DuplicateSecret {
        /// The device being added, rotated or reinstated.
        device: String,
        /// The device that has the secret.
        holder: String,
    },
    /// No such device.
    #[error("no device `{0}`")]
    NotFound(String),
    /// The device is revoked: it cannot be reactivated or rotated.
    #[error("device `{0}` is revoked (revocation is final)")]
    Revoked(String),
    /// A stored row does not read back.
    #[error("device `{device}`: corrupt row: {what}")]
    Corrupt {
        /// The device id of the row.
        device: String,
        /// What does not read back.
        what: String,
    },
    /// An import refused some lines and added nothing.
    #[error("{0}")]
    Import(ImportErrors),
    /// The audit trail failed.
    #[error("{0}")]
    Audit(#[from] AuditError),
}

/// The registry: a SQLite file and, for secrets, the seal key.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    key: Option<SealKey>,
    path: PathBuf,
    duplicates: Vec<DuplicateSecret>,
}

/// The columns [`RawDevice::read`] expects, in order.
const DEVICE_COLUMNS: &str = "d.id, d.kid, d.secret, d.salt, d.class, d.state, d.created_us, \
     d.updated_us, (SELECT group_concat(p.prefix, ' ') FROM device_prefixes p WHERE p.device = d.id)";

impl Registry {
    /// Opens (or creates) the registry at `path`.
    ///
    /// Without a seal key, everything but adding, importing, rotating and reading secrets
    /// ([`Registry::get`], [`Registry::get_by_kid`]) works. With one, the key is checked against
    /// the value sealed when the registry first got a key: a wrong key fails here; and devices
    /// without a secret fingerprint get theirs ([`unique`]; duplicates found are in
    /// [`Registry::duplicate_secrets`]).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Open`], [`RegistryError::NewerSchema`], [`RegistryError::WrongSealKey`]…
    pub fn open(path: &Path, seal_key: Option<SealKey>) -> Result<Self, RegistryError> {
        let mut conn = schema::open(path)?;
        let mut duplicates = Vec::new();
        if let Some(key) = &seal_key {
            check_seal_key(&mut conn, key)?;
            duplicates = unique::fill(&mut conn, key)?;
        }
        Ok(Self {
            conn,
            key: seal_key,
            path: path.to_owned(),
            duplicates,
        })
    }

    /// Devices found at open to share another device's master secret (none without the seal
    /// key): each is quarantined until rotated (see [`unique`]). Callers report them.
    #[must_use]
    pub fn duplicate_secrets(&self) -> &[DuplicateSecret] {
        &self.duplicates
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The audit trail (same file).
    #[must_use]
    pub fn audit(&self) -> AuditLog<'_> {
        AuditLog::new(&self.conn)
    }

    /// The seal key, if one was given (for keys derived from it, e.g. the audit checkpoint's).
    #[must_use]
    pub fn seal_key(&self) -> Option<&SealKey> {
        self.key.as_ref()
    }

    fn key(&self) -> Result<&SealKey, RegistryError> {
        self.key.as_ref().ok_or(RegistryError::NoSealKey)
    }

    /// Adds a device (and its `provisioned` audit row).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Invalid`], [`RegistryError::DuplicateId`],
    /// [`RegistryError::DuplicateKid`], [`RegistryError::DuplicateSecret`],
    /// [`RegistryError::NoSealKey`]…
    pub fn add(&mut self, record: DeviceRecord) -> Result<(), RegistryError> {
        let key = self.key.clone().ok_or(RegistryError::NoSealKey)?;
        record.check().map_err(|reason| RegistryError::Invalid {
            device: record.id.clone(),
            reason,
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut chain = ChainWriter::load(&tx)?;
        let sealer = Sealer::new(&key);
        insert_device(&tx, &sealer, &mut chain, &record, audit::now(), "added")?;
        tx.commit()?;
        Ok(())
    }

    /// Imports a credentials CSV (see [`csv`]) in one transaction: every line is added, or —
    /// when any line is refused (syntax, limits, an id, kid or master secret already taken, in
    /// the registry or earlier in the file) — none is, and the error lists the refused lines by
    /// number, naming the line or the device that has what a refused line repeats.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Import`] for refused lines, [`RegistryError::Io`] for a read error,
    /// [`RegistryError::NoSealKey`]…
    pub fn import_csv<R: BufRead>(&mut self, mut reader: R) -> Result<ImportReport, RegistryError> {
        let key = self.key.clone().ok_or(RegistryError::NoSealKey)?;
        let sealer = Sealer::new(&key);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut chain = ChainWriter::load(&tx)?;
        let now = audit::now();
        let mut errors = ImportErrors {
            errors: Vec::new(),
            total: 0,
        };
        // The line each device of this file was imported from, to name it in refusals.
        let mut line_of: HashMap<String, usize> = HashMap::new();
        let mut buf = Vec::new();
        let mut lines = 0;
        let mut header_seen = false;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            lines += 1;
            let Ok(text) = std::str::from_utf8(&buf) else {
                errors.refuse(lines, "not UTF-8".to_owned());
                continue;
            };
            let text = text.trim_end_matches(['\n', '\r']);
            if csv::is_skipped(text) {
                continue;
            }
            if !header_seen {
                header_seen = true;
                if let Err(e) = csv::check_header(text) {
                    errors.refuse(lines, e.to_string());
                }
                continue;
            }
            let record = match csv::parse_line(text) {
                Ok(r) => r,
                Err(e) => {
                    errors.refuse(lines, e.to_string());
                    continue;
                }
            };
            let detail = format!("imported (line {lines})");
            match insert_device(&tx, &sealer, &mut chain, &record, now, &detail) {
                Ok(()) => {
                    line_of.insert(record.id, lines);
                }
                Err(e) => match duplicate_of(&e) {
                    Some(other) => {
                        let place = line_of.get(other).map_or_else(
                            || "already in the registry".to_owned(),
                            |n| format!("line {n} of this file"),
                        );
                        errors.refuse(lines, format!("{e} ({place})"));
                    }
                    None if matches!(e, RegistryError::Invalid { .. }) => {
                        errors.refuse(lines, e.to_string());
                    }
                    None => return Err(e),
                },
            }
        }
        if !header_seen {
            errors.refuse(lines.max(1), format!("no header line `{}`", csv::HEADER));
        }
        if errors.total > 0 {
            // Dropping the transaction rolls it back: nothing of this file stays.
            return Err(RegistryError::Import(errors));
        }
        tx.commit()?;
        Ok(ImportReport {
            imported: line_of.len(),
            lines,
        })
    }

    /// The devices that pass `filter`, by id, without their secrets.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Corrupt`] naming the first device whose row does not read back.
    pub fn list(&self, filter: &DeviceFilter) -> Result<Vec<DeviceInfo>, RegistryError> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d \
             WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.class = ?2) ORDER BY d.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let raws = stmt
            .query_map(
                params![filter.state.map(DeviceState::as_str), filter.class],
                RawDevice::read,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(RawDevice::into_info).collect()
    }

    /// The device `id` without its secret (no key needed).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Corrupt`]…
    pub fn info(&self, id: &str) -> Result<Option<DeviceInfo>, RegistryError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.id = ?1");
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], RawDevice::read)
            .optional()?;
        raw.map(RawDevice::into_info).transpose()
    }

    /// The device `id`, with its secret opened.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoSealKey`], [`RegistryError::Corrupt`]…
    pub fn get(&self, id: &str) -> Result<Option<Device>, RegistryError> {
        self.get_where("d.id = ?1", rusqlite::types::Value::Text(id.to_owned()))
    }

    /// The device whose OSCORE kid is `kid`, with its secret opened.
    ///
    /// # Errors
    ///
    /// As [`Registry::get`].
    pub fn get_by_kid(&self, kid: &[u8]) -> Result<Option<Device>, RegistryError> {
        self.get_where("d.kid = ?1", rusqlite::types::Value::Blob(kid.to_owned()))
    }

    fn get_where(
        &self,
        condition: &str,
        value: rusqlite::types::Value,
    ) -> Result<Option<Device>, RegistryError> {
        let key = self.key()?;
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE {condition}");
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row([value], RawDevice::read)
            .optional()?;
        raw.map(|raw| raw.into_device(key)).transpose()
    }

    /// Revokes a device for good (idempotent); returns its previous state.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`]…
    pub fn revoke(&mut self, id: &str) -> Result<DeviceState, RegistryError> {
        self.set_state(id, DeviceState::Revoked)
    }

    /// Sets a device's state and records it in the audit trail (`quarantined`, `revoked`, or
    /// `reinstated` for active); returns the previous state. Setting the state it already has
    /// changes nothing and records nothing.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`], [`RegistryError::Revoked`] when leaving `revoked`,
    /// [`RegistryError::DuplicateSecret`] when reinstating a device whose master secret is
    /// another's (see [`unique`]; [`RegistryError::NoSealKey`] when that cannot be checked)…
    pub fn set_state(
        &mut self,
        id: &str,
        state: DeviceState,
    ) -> Result<DeviceState, RegistryError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let previous: String = tx
            .query_row("SELECT state FROM devices WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        let previous = previous
            .parse::<DeviceState>()
            .map_err(|e| RegistryError::Corrupt {
                device: id.to_owned(),
                what: e.to_string(),
            })?;
        if previous == state {
            return Ok(previous);
        }
        if previous == DeviceState::Revoked {
            return Err(RegistryError::Revoked(id.to_owned()));
        }
        if state == DeviceState::Active {
            unique::check_before_reinstating(&tx, self.key.as_ref(), id)?;
        }
        let now = audit::now();
        tx.execute(
            "UPDATE devices SET state = ?2, updated_us = ?3 WHERE id = ?1",
            params![id, state.as_str(), audit::to_us(now)?],
        )?;
        let kind = match state {
            DeviceState::Active => AuditKind::Reinstated,
            DeviceState::Quarantined => AuditKind::Quarantined,
            DeviceState::Revoked => AuditKind::Revoked,
        };
        let mut chain = ChainWriter::load(&tx)?;
        chain.append(
            &tx,
            &AuditEvent::new(kind, id)
                .at(now)
                .detail(format!("state {previous} -> {state}")),
        )?;
        tx.commit()?;
        Ok(previous)
    }

    /// Gives a device a new random master secret (as long as the old one) and returns it; the
    /// audit row says that it changed, not what it is. A revoked device is not rotated.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`], [`RegistryError::Revoked`], [`RegistryError::NoSealKey`]…
    pub fn rotate(&mut self, id: &str) -> Result<MasterSecret, RegistryError> {
        let key = self.key.clone().ok_or(RegistryError::NoSealKey)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (sealed, state): (Vec<u8>, String) = tx
            .query_row(
                "SELECT secret, state FROM devices WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        if state == DeviceState::Revoked.as_str() {
            return Err(RegistryError::Revoked(id.to_owned()));
        }
        // The old secret need not open (rotating is how a corrupt one is replaced).
        let len = seal::plaintext_len(&sealed)
            .filter(|n| (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(n))
            .unwrap_or(DEFAULT_SECRET_LEN);
        let secret = MasterSecret::random(len).map_err(SealError::Random)?;
        let fp = unique::Fingerprinter::new(&key).of(secret.as_bytes());
        let now = audit::now();
        tx.execute(
            "UPDATE devices SET secret = ?2, secret_fp = ?3, updated_us = ?4 WHERE id = ?1",
            params![
                id,
                key.seal(id.as_bytes(), secret.as_bytes())?,
                fp.as_slice(),
                audit::to_us(now)?
            ],
        )
        .map_err(|e| match unique_violation(&e) {
            // 2^-256 for random secrets, but never a shared key, however unlikely.
            Some(Column::SecretFp) => RegistryError::DuplicateSecret {
                device: id.to_owned(),
                holder: unique::holder(&tx, &fp)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "?".to_owned()),
            },
            _ => RegistryError::Sqlite(e),
        })?;
        let mut chain = ChainWriter::load(&tx)?;
        chain.append(
            &tx,
            &AuditEvent::new(AuditKind::Rotated, id)
                .at(now)
                .detail(format!("new master secret ({len} bytes)")),
        )?;
        tx.commit()?;
        Ok(secret)
    }
}

/// Seals the check value on first use of a key, and compares with it afterwards.
fn check_seal_key(conn: &mut Connection, key: &SealKey) -> Result<(), RegistryError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'seal_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match stored {
        Some(sealed) => match key.open(SEAL_CHECK_AAD, &sealed) {
            Ok(plain) if plain.as_slice() == SEAL_CHECK => {}
            _ => return Err(RegistryError::WrongSealKey),
        },
        None => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('seal_check', ?1)",
                [key.seal(SEAL_CHECK_AAD, SEAL_CHECK)?],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The seal key and the fingerprinter made from it, for inserting devices.
struct Sealer<'k> {
    key: &'k SealKey,
    prints: unique::Fingerprinter,
}

impl<'k> Sealer<'k> {
    fn new(key: &'k SealKey) -> Self {
        Self {
            key,
            prints: unique::Fingerprinter::new(key),
        }
    }
}

/// Inserts one checked-or-not record and its audit row, in the caller's write transaction.
fn insert_device(
    conn: &Connection,
    sealer: &Sealer<'_>,
    chain: &mut ChainWriter,
    record: &DeviceRecord,
    now: OffsetDateTime,
    detail: &str,
) -> Result<(), RegistryError> {
    record.check().map_err(|reason| RegistryError::Invalid {
        device: record.id.clone(),
        reason,
    })?;
    let secret = record.master_secret.as_bytes();
    let sealed = sealer.key.seal(record.id.as_bytes(), secret)?;
    let fp = sealer.prints.of(secret);
    let now_us = audit::to_us(now)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO devices (id, kid, secret, salt, class, state, created_us, updated_us, \
             secret_fp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        )?
        .execute(params![
            record.id,
            record.kid,
            sealed,
            record.master_salt,
            record.class,
            record.state.as_str(),
            now_us,
            fp.as_slice()
        ]);
    if let Err(e) = inserted {
        return Err(match unique_violation(&e) {
            Some(_) => duplicate(conn, record, &fp)?,
            None => RegistryError::Sqlite(e),
        });
    }
    let prefixes: BTreeSet<Ipv6Prefix> = record.prefixes.iter().copied().collect();
    let mut stmt =
        conn.prepare_cached("INSERT INTO device_prefixes (device, prefix) VALUES (?1, ?2)")?;
    for p in prefixes {
        stmt.execute(params![record.id, p.to_string()])?;
    }
    chain.append(
        conn,
        &AuditEvent::new(AuditKind::Provisioned, &record.id)
            .at(now)
            .detail(format!(
                "{detail}: kid {}, class {}, state {}",
                hex::encode(&record.kid),
                record.class,
                record.state
            )),
    )?;
    Ok(())
}

/// What a refused insert of `record` repeats, in a fixed order whichever UNIQUE index SQLite
/// named: the id, else the kid, else the master secret.
fn duplicate(
    conn: &Connection,
    record: &DeviceRecord,
    fp: &[u8; 32],
) -> Result<RegistryError, RegistryError> {
    let id_taken: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)",
        [&record.id],
        |r| r.get(0),
    )?;
    if id_taken {
        return Ok(RegistryError::DuplicateId(record.id.clone()));
    }
    let kid_holder: Option<String> = conn
        .query_row(
            "SELECT id FROM devices WHERE kid = ?1",
            [&record.kid],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(holder) = kid_holder {
        return Ok(RegistryError::DuplicateKid {
            kid: hex::encode(&record.kid),
            holder,
        });
    }
    Ok(RegistryError::DuplicateSecret {
        device: record.id.clone(),
        holder: unique::holder(conn, fp)?.unwrap_or_else(|| "?".to_owned()),
    })
}

/// The other device a duplicate error names (for [`RegistryError::DuplicateId`] the id itself).
fn duplicate_of(e: &RegistryError) -> Option<&str> {
    match e {
        RegistryError::DuplicateId(id) => Some(id),
        RegistryError::DuplicateKid { holder, .. }
        | RegistryError::DuplicateSecret { holder, .. } => Some(holder),
        _ => None,
    }
}

enum Column {
    Id,
    Kid,
    SecretFp,
}

fn unique_violation(e: &rusqlite::Error) -> Option<Column> {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == ErrorCode::ConstraintViolation =>
        {
            if msg.contains("devices.kid") {
                Some(Column::Kid)
            } else if msg.contains("devices.id") {
                Some(Column::Id)
            } else if msg.contains("devices.secret_fp") {
                Some(Column::SecretFp)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A device row as stored, before checking.
struct RawDevice {
    id: String,
    kid: Vec<u8>,
    secret: Vec<u8>,
    salt: Option<Vec<u8>>,
    class: i64,
    state: String,
    created_us: i64,
    updated_us: i64,
    prefixes: Option<String>,
}

impl RawDevice {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            kid: row.get(1)?,
            secret: row.get(2)?,
            salt: row.get(3)?,
            class: row.get(4)?,
            state: row.get(5)?,
            created_us: row.get(6)?,
            updated_us: row.get(7)?,
            prefixes: row.get(8)?,
        })
    }

    fn corrupt(&self, what: String) -> RegistryError {
        RegistryError::Corrupt {
            device: self.id.clone(),
            what,
        }
    }

    fn into_info(self) -> Result<DeviceInfo, RegistryError> {
        let class = u8::try_from(self.class)
            .ok()
            .filter(|c| *c != 0)
            .ok_or_else(|| self.corrupt(format!("class {} is not 1..=255", self.class)))?;
        let state = self
            .state
            .parse::<DeviceState>()
            .map_err(|e| self.corrupt(e.to_string()))?;
        let mut prefixes = Vec::new();
        for text in self
            .prefixes
            .as_deref()
            .unwrap_or("")
            .split_ascii_whitespace()
        {
            prefixes.push(
                text.parse::<Ipv6Prefix>()
                    .map_err(|e| self.corrupt(format!("prefix: {e}")))?,
            );
        }
        let time = |us, which: &str| {
            audit::from_us(us)
                .map_err(|_| self.corrupt(format!("{which} time {us} is out of range")))
        };
        let created = time(self.created_us, "created")?;
        let updated = time(self.updated_us, "updated")?;
        let secret_len = seal::plaintext_len(&self.secret).unwrap_or(0);
        Ok(DeviceInfo {
            id: self.id,
            kid: self.kid,
            secret_len,
            master_salt: self.salt,
            class,
            prefixes,
            state,
            created,
            updated,
        })
    }

    fn into_device(self, key: &SealKey) -> Result<Device, RegistryError> {
        let secret = key
            .open(self.id.as_bytes(), &self.secret)
            .map_err(|e| self.corrupt(format!("master secret: {e}")))?;
        let info = self.into_info()?;
        let record = DeviceRecord {
            id: info.id,
            kid: info.kid,
            master_secret: MasterSecret::from_zeroizing(secret),
            master_salt: info.master_salt,
            class: info.class,
            prefixes: info.prefixes,
            state: info.state,
        };
        Ok(Device {
            record,
            created: info.created,
            updated: info.updated,
        })
    }
}
