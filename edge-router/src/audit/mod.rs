//! The audit trail: an append-only, tamper-evident log in the registry's SQLite file.
//!
//! Rows are only ever inserted at the end: the code has no statement that changes or removes
//! one, and triggers in the schema refuse `UPDATE`, `DELETE` and any insert that is not
//! `seq = last + 1`. Each row carries
//!
//! ```text
//! hash = SHA-256(prev_hash ‖ canonical row bytes)        prev_hash of row 1 = 32 zero bytes
//!
//! canonical row bytes = "v6iot-audit-v1"
//!     ‖ seq (i64, big-endian) ‖ at (i64 µs since the Unix epoch, big-endian)
//!     ‖ field(kind) ‖ optional(device) ‖ optional(address, 16 bytes) ‖ field(detail)
//! field(x)    = len(x) as u32 big-endian ‖ x
//! optional(x) = 0x00 when absent, 0x01 ‖ field(x) when present
//! ```
//!
//! so [`AuditLog::verify`] finds the first row that was altered, removed or inserted by other
//! means than this code, unless every later hash was recomputed too. Rows cut from the end
//! leave a valid chain: [`checkpoint`]s — the head hash and row count published by the
//! running edge and kept, signed, in a file — anchor the end, and
//! [`AuditLog::verify_anchored`] fails when the trail no longer reaches one, naming how many
//! rows are missing.
//!
//! [`AuditLog::who_had`] answers "which device held address A at time T" from the
//! `address_bound` / `address_changed` rows: a binding lasts until the next binding of the same
//! device (to any address) or another device's binding of the same address.

pub mod checkpoint;
pub mod checkpointer;

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// The device was added to the registry (by hand or by an import).
    Provisioned,
    /// The device registered (RFC 9176) at the edge.
    Registration,
    /// The device was first seen at an address.
    AddressBound,
    /// The device moved to another address.
    AddressChanged,
    /// A message failed authentication (bad MAC, replay, unknown kid).
    AuthFailure,
    /// The device was revoked.
    Revoked,
    /// The device's master secret was replaced.
    Rotated,
    /// A command reached the device.
    CommandDelivered,
    /// The device was quarantined.
    Quarantined,
    /// A quarantined device was made active again.
    Reinstated,
    /// Two devices were verified at one address: the row names the device it is about, the
    /// other in its detail (a challenge sent, or the address taken over).
    AddressConflict,
}

impl AuditKind {
    /// Every kind.
    pub const ALL: [AuditKind; 11] = [
        AuditKind::Provisioned,
        AuditKind::Registration,
        AuditKind::AddressBound,
        AuditKind::AddressChanged,
        AuditKind::AuthFailure,
        AuditKind::Revoked,
        AuditKind::Rotated,
        AuditKind::CommandDelivered,
        AuditKind::Quarantined,
        AuditKind::Reinstated,
        AuditKind::AddressConflict,
    ];

    /// The stored name: `provisioned`, `registration`, `address_bound`, …
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditKind::Provisioned => "provisioned",
            AuditKind::Registration => "registration",
            AuditKind::AddressBound => "address_bound",
            AuditKind::AddressChanged => "address_changed",
            AuditKind::AuthFailure => "auth_failure",
            AuditKind::Revoked => "revoked",
            AuditKind::Rotated => "rotated",
            AuditKind::CommandDelivered => "command_delivered",
            AuditKind::Quarantined => "quarantined",
            AuditKind::Reinstated => "reinstated",
            AuditKind::AddressConflict => "address_conflict",
        }
    }

    /// Whether this kind binds its device to its address.
    #[must_use]
    pub const fn is_binding(self) -> bool {
        matches!(self, AuditKind::AddressBound | AuditKind::AddressChanged)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A text that is not an [`AuditKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an audit event kind")]
pub struct UnknownKind(pub String);

impl FromStr for AuditKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        AuditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened (stored to the microsecond).
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: AuditKind,
    /// The device (every kind but `auth_failure` needs one).
    pub device: Option<String>,
    /// The address (`address_bound` and `address_changed` need one).
    pub address: Option<Ipv6Addr>,
    /// Free text: peer, kid, reason, command id… never a secret.
    pub detail: String,
}

impl AuditEvent {
    /// An event about `device`, now.
    #[must_use]
    pub fn new(kind: AuditKind, device: impl Into<String>) -> Self {
        Self {
            at: now(),
            kind,
            device: Some(device.into()),
            address: None,
            detail: String::new(),
        }
    }

    /// An authentication failure of no known device (an unknown kid), now.
    #[must_use]
    pub fn auth_failure(detail: impl Into<String>) -> Self {
        Self {
            at: now(),
            kind: AuditKind::AuthFailure,
            device: None,
            address: None,
            detail: detail.into(),
        }
    }

    /// At `at` instead of now.
    #[must_use]
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }

    /// With an address.
    #[must_use]
    pub fn address(mut self, address: Ipv6Addr) -> Self {
        self.address = Some(address);
        self
    }

    /// With detail text.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn check(&self) -> Result<(), AuditError> {
        let invalid = |what: &str| Err(AuditError::Invalid(format!("{}: {what}", self.kind)));
        if self.device.is_none() && self.kind != AuditKind::AuthFailure {
            return invalid("needs a device");
        }
        if self.address.is_none() && self.kind.is_binding() {
            return invalid("needs an address");
        }
        Ok(())
    }
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The event (its time truncated to the microsecond).
    pub event: AuditEvent,
    /// The row's chain hash.
    pub hash: [u8; 32],
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked.
    pub rows: u64,
    /// Hash of the last row (32 zero bytes when empty): record it elsewhere to detect a
    /// recomputed chain or a cut tail later.
    pub head: [u8; 32],
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at row {row}: {reason}")]
pub struct ChainBroken {
    /// The first row that does not verify (for a removed row: its number).
    pub row: u64,
    /// What does not match.
    pub reason: String,
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// SQLite failed.
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The event is incomplete.
    #[error("audit event refused: {0}")]
    Invalid(String),
    /// [`AuditLog::verify`] found a break.
    #[error("{0}")]
    ChainBroken(ChainBroken),
    /// [`AuditLog::verify_anchored`] or [`AuditLog::check_anchor`]: the trail does not reach
    /// an anchor (rows cut from the end, or rewritten).
    #[error("audit trail does not reach its anchor: {0}")]
    AnchorBroken(checkpoint::AnchorBroken),
    /// A stored row does not read back.
    #[error("audit row {row}: {what}")]
    Corrupt {
        /// The row.
        row: u64,
        /// What does not read back.
        what: String,
    },
}

/// The audit trail, borrowed from a [`Registry`](crate::registry_db::Registry).
#[derive(Debug, Clone, Copy)]
pub struct AuditLog<'c> {
    conn: &'c Connection,
}

const COLUMNS: &str = "seq, at_us, kind, device, address, detail, prev_hash, hash";

impl<'c> AuditLog<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }

    /// Appends one event (in its own transaction) and returns the stored row.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] for an incomplete event, [`AuditError::Sqlite`].
    pub fn append(&self, event: &AuditEvent) -> Result<AuditRow, AuditError> {
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let mut chain = ChainWriter::load(&tx)?;
        let row = chain.append(&tx, event)?;
        tx.commit()?;
        Ok(row)
    }

    /// Appends `events` in order in one transaction (one sync for the lot), as the running
    /// edge does with the rows it gathered. An invalid event fails the whole batch.
    ///
    /// # Errors
    ///
    /// [`AuditError::Invalid`] for an incomplete event, [`AuditError::Sqlite`].
    pub fn append_all(&self, events: &[AuditEvent]) -> Result<u64, AuditError> {
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let mut chain = ChainWriter::load(&tx)?;
        for event in events {
            chain.append(&tx, event)?;
        }
        tx.commit()?;
        Ok(events.len() as u64)
    }

    /// Recomputes the whole chain.
    ///
    /// # Errors
    ///
    /// [`AuditError::ChainBroken`] naming the first row that does not verify.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_anchored(&[])
    }

    /// Recomputes the whole chain and checks that it reaches every anchor (a checkpoint, a
    /// head hash or row count kept elsewhere): rows cut from the end are found too.
    ///
    /// # Errors
    ///
    /// [`AuditError::ChainBroken`] naming the first row that does not verify, then
    /// [`AuditError::AnchorBroken`] for the first anchor not reached (with the rows missing).
    pub fn verify_anchored(
        &self,
        anchors: &[checkpoint::Anchor],
    ) -> Result<VerifyReport, AuditError> {
        let mut walks: Vec<checkpoint::AnchorWalk<'_>> =
            anchors.iter().map(checkpoint::AnchorWalk::new).collect();
        // One read transaction: a consistent snapshot while appends go on.
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Deferred)?;
        let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        let mut prev = [0u8; 32];
        let mut expected: i64 = 1;
        let broken = |row: i64, reason: String| {
            AuditError::ChainBroken(ChainBroken {
                row: u64::try_from(row).unwrap_or(0),
                reason,
            })
        };
        while let Some(r) = rows.next()? {
            let raw = RawRow::read(r)?;
            if raw.seq != expected {
                return Err(broken(
                    expected,
                    format!("row {expected} is missing (the next row is {})", raw.seq),
                ));
            }
            if raw.prev_hash != prev {
                return Err(broken(
                    raw.seq,
                    "its prev_hash is not the previous row's hash".to_owned(),
                ));
            }
            let hash = raw.chain_hash(&prev);
            if raw.hash != hash {
                return Err(broken(
                    raw.seq,
                    "its hash does not match its contents (the row was altered)".to_owned(),
                ));
            }
            for w in &mut walks {
                w.observe(u64::try_from(raw.seq).unwrap_or(0), &hash);
            }
            prev = hash;
            expected += 1;
        }
        let rows = u64::try_from(expected - 1).unwrap_or(0);
        for w in &walks {
            w.finish(rows, &prev).map_err(AuditError::AnchorBroken)?;
        }
        Ok(VerifyReport { rows, head: prev })
    }

    /// Which device held `address` at `at`, from the binding rows (see the module docs).
    ///
    /// # Errors
    ///
    /// [`AuditError::Sqlite`].
    pub fn who_had(
        &self,
        address: Ipv6Addr,
        at: OffsetDateTime,
    ) -> Result<Option<String>, AuditError> {
        let at_us = to_us(at)?;
        let binding: Option<(i64, i64, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT seq, at_us, device FROM audit \
                 WHERE address = ?1 AND kind IN ('address_bound', 'address_changed') \
                 AND at_us <= ?2 ORDER BY at_us DESC, seq DESC LIMIT 1",
            )?
            .query_row(params![address.octets().as_slice(), at_us], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((seq, bound_us, Some(device))) = binding else {
            return Ok(None);
        };
        let moved: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM audit \
                 WHERE device = ?1 AND kind IN ('address_bound', 'address_changed') \
                 AND at_us <= ?4 AND (at_us > ?2 OR (at_us = ?2 AND seq > ?3)))",
            )?
            .query_row(params![device, bound_us, seq, at_us], |r| r.get(0))?;
        Ok(if moved { None } else { Some(device) })
    }

    /// Every row about `device`, oldest first.
    ///
    /// # Errors
    ///
    /// [`AuditError::Corrupt`] for a row that does not read back.
    pub fn history(&self, device: &str) -> Result<Vec<AuditRow>, AuditError> {
        self.rows_where("device = ?1", device)
    }

    /// Every row mentioning `address`, oldest first.
    ///
    /// # Errors
    ///
    /// As [`AuditLog::history`].
    pub fn address_history(&self, address: Ipv6Addr) -> Result<Vec<AuditRow>, AuditError> {
        self.rows_where("address = ?1", address.octets().as_slice())
    }

    fn rows_where(
        &self,
        condition: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Vec<AuditRow>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit WHERE {condition} ORDER BY seq"
        ))?;
        let raws = stmt
            .query_map([value], RawRow::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(RawRow::into_row).collect()
    }

    /// Number of rows.
    ///
    /// # Errors
    ///
    /// [`AuditError::Sqlite`].
    pub fn len(&self) -> Result<u64, AuditError> {
        let n: i64 = self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether there are no rows.
    ///
    /// # Errors
    ///
    /// [`AuditError::Sqlite`].
    pub fn is_empty(&self) -> Result<bool, AuditError> {
        Ok(self.len()? == 0)
    }
}

/// Appends to the chain inside a write transaction the caller holds (the registry's own
/// changes and their audit rows commit together); remembers the head between appends.
#[derive(Debug)]
pub(crate) struct ChainWriter {
    next_seq: i64,
    prev: [u8; 32],
}

impl ChainWriter {
    /// Reads the head of the chain. The caller must hold a write transaction on `conn`.
    pub(crate) fn load(conn: &Connection) -> Result<Self, AuditError> {
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match last {
            None => Self {
                next_seq: 1,
                prev: [0; 32],
            },
            Some((seq, hash)) => Self {
                next_seq: seq + 1,
                prev: hash.try_into().map_err(|_| AuditError::Corrupt {
                    row: u64::try_from(seq).unwrap_or(0),
                    what: "its hash is not 32 bytes".to_owned(),
                })?,
            },
        })
    }

    /// Inserts `event` as the next row.
    pub(crate) fn append(
        &mut self,
        conn: &Connection,
        event: &AuditEvent,
    ) -> Result<AuditRow, AuditError> {
        event.check()?;
        let at_us = to_us(event.at)?;
        let raw = RawRow {
            seq: self.next_seq,
            at_us,
            kind: event.kind.as_str().to_owned(),
            device: event.device.clone(),
            address: event.address.map(|a| a.octets().to_vec()),
            detail: event.detail.clone(),
            prev_hash: self.prev.to_vec(),
            hash: Vec::new(),
        };
        let hash = raw.chain_hash(&self.prev);
        conn.prepare_cached(
            "INSERT INTO audit (seq, at_us, kind, device, address, detail, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            raw.seq,
            raw.at_us,
            raw.kind,
            raw.device,
            raw.address,
            raw.detail,
            raw.prev_hash,
            hash.as_slice()
        ])?;
        let row = AuditRow {
            seq: u64::try_from(raw.seq).unwrap_or(0),
            event: AuditEvent {
                at: from_us(at_us)?,
                ..event.clone()
            },
            hash,
        };
        self.next_seq += 1;
        self.prev = hash;
        Ok(row)
    }
}

/// A row as stored.
struct RawRow {
    seq: i64,
    at_us: i64,
    kind: String,
    device: Option<String>,
    address: Option<Vec<u8>>,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl RawRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            at_us: r.get(1)?,
            kind: r.get(2)?,
            device: r.get(3)?,
            address: r.get(4)?,
            detail: r.get(5)?,
            prev_hash: r.get(6)?,
            hash: r.get(7)?,
        })
    }

    /// `SHA-256(prev ‖ canonical bytes)`; see the module documentation.
    fn chain_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            // Fields longer than 4 GiB cannot be stored in SQLite (its limit is 1 GB).
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            h.update(len.to_be_bytes());
            h.update(bytes);
        }
        fn optional(h: &mut Sha256, bytes: Option<&[u8]>) {
            match bytes {
                None => h.update([0u8]),
                Some(b) => {
                    h.update([1u8]);
                    field(h, b);
                }
            }
        }
        let mut h = Sha256::new();
        h.update(prev);
        h.update(b"v6iot-audit-v1");
        h.update(self.seq.to_be_bytes());
        h.update(self.at_us.to_be_bytes());
        field(&mut h, self.kind.as_bytes());
        optional(&mut h, self.device.as_deref().map(str::as_bytes));
        optional(&mut h, self.address.as_deref());
        field(&mut h, self.detail.as_bytes());
        h.finalize().into()
    }

    fn into_row(self) -> Result<AuditRow, AuditError> {
        let row = u64::try_from(self.seq).unwrap_or(0);
        let corrupt = |what: String| AuditError::Corrupt { row, what };
        let kind = self
            .kind
            .parse::<AuditKind>()
            .map_err(|e| corrupt(e.to_string()))?;
        let address = match self.address {
            None => None,
            Some(bytes) => Some(Ipv6Addr::from(
                <[u8; 16]>::try_from(bytes.as_slice())
                    .map_err(|_| corrupt("its address is not 16 bytes".to_owned()))?,
            )),
        };
        let hash = <[u8; 32]>::try_from(self.hash.as_slice())
            .map_err(|_| corrupt("its hash is not 32 bytes".to_owned()))?;
        let at = from_us(self.at_us)
            .map_err(|_| corrupt(format!("its time {} µs is out of range", self.at_us)))?;
        Ok(AuditRow {
            seq: row,
            event: AuditEvent {
                at,
                kind,
                device: self.device,
                address,
                detail: self.detail,
            },
            hash,
        })
    }
}

/// Now, UTC, to the microsecond.
pub(crate) fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    from_us(to_us(t).unwrap_or(0)).unwrap_or(t)
}

/// Microseconds since the Unix epoch.
pub(crate) fn to_us(t: OffsetDateTime) -> Result<i64, AuditError> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000))
        .map_err(|_| AuditError::Invalid(format!("time {t} is out of range")))
}

/// The time `us` microseconds after the Unix epoch, UTC.
pub(crate) fn from_us(us: i64) -> Result<OffsetDateTime, AuditError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).map_err(|_| {
        AuditError::Corrupt {
            row: 0,
            what: format!("time {us} µs is out of range"),
        }
    })
}
