//! Checkpoints: the head of the audit chain anchored outside the database, so that rows cut
//! from its end are detected too.
//!
//! The hash chain ([`super`]) shows a row altered, removed or inserted in the middle, but not
//! rows removed from the end: what is left is still a valid chain. A *checkpoint* — row count,
//! head hash, time — recorded elsewhere closes that gap: a trail that no longer reaches the
//! checkpoint's row, or whose row there has another hash, fails [`AuditLog::verify_anchored`]
//! with the number of rows missing.
//!
//! The running edge keeps two ([`Checkpointer`], on the registry thread):
//!
//! - **published** on its security topic `{prefix}/{site}/_edge/{edge}/security`, at start, at
//!   most every `checkpoint_min_gap_s` after rows were added and at least every
//!   `checkpoint_every_s` (`[audit]`, see [`crate::config`]), as JSON:
//!
//!   ```json
//!   {"kind":"audit_checkpoint","edge":"edge-1","at_ms":1764150000000,"rows":1234,
//!    "head":"9f2c…(64 hex digits)"}
//!   ```
//!
//!   with `"anchor_broken":"…"` added while the trail no longer extends the edge's own file
//!   (see below). The platform keeps these; `v6iot-edge audit verify --expect-rows N
//!   --expect-head HEX` checks the trail against any of them.
//! - **signed, in a file** (default `{data_dir}/audit.checkpoint`), rewritten atomically when the
//!   head moved:
//!
//!   ```json
//!   {"v":1,"rows":1234,"head":"9f2c…","at_ms":1764150000000,"mac":"…(64 hex digits)"}
//!   ```
//!
//!   `mac = HMAC-SHA-256(K, "v6iot-audit-checkpoint-v1" ‖ rows (u64 BE) ‖ head (32 bytes) ‖
//!   at_ms (u64 BE))`, `K = `[`SealKey::derive_key`]`("v6iot audit checkpoint v1")`: whoever
//!   can change the database but does not hold the seal key cannot make a checkpoint that
//!   matches a shortened trail. `audit verify` checks the trail against this file by default.
//!
//! The edge never replaces its file with a checkpoint that does not extend it: at start and
//! before each write it checks that the trail still reaches the file's row with the file's
//! hash. When it does not (rows were cut while the edge was stopped or behind its back), the
//! file is kept as evidence, the error is logged and every published checkpoint carries
//! `anchor_broken` until an operator has looked and moved the file aside.
//!
//! Limits: rows added after the last checkpoint (at most `checkpoint_min_gap_s` old while the
//! edge runs) are not anchored yet. Without the seal key (lab mode) there is no file, only the
//! published checkpoints. Someone with the seal key and write access can forge anything local;
//! and the file alone cannot tell an older genuine checkpoint put back in its place — the
//! published ones, kept by the platform, can.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use rusqlite::OptionalExtension as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{AuditError, AuditLog};
use crate::seal::{SealKey, hmac_sha256};

/// The `info` of the checkpoint MAC key's derivation.
const MAC_KEY_INFO: &[u8] = b"v6iot audit checkpoint v1";
/// The domain tag in front of the MAC input.
const MAC_TAG: &[u8] = b"v6iot-audit-checkpoint-v1";
/// The file format's version.
const FILE_VERSION: u32 = 1;
/// The `kind` of a published checkpoint.
pub const MESSAGE_KIND: &str = "audit_checkpoint";
/// Longest checkpoint file read (a genuine one is about 200 bytes).
const MAX_FILE_LEN: usize = 4096;

/// The head of the chain at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Rows in the chain.
    pub rows: u64,
    /// Hash of the last row (32 zero bytes when empty).
    pub head: [u8; 32],
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

impl Checkpoint {
    /// The MAC over this checkpoint, before finalisation (see the module docs).
    fn mac_of(&self, key: &SealKey) -> Hmac<Sha256> {
        let k = key.derive_key(MAC_KEY_INFO);
        let mut mac = hmac_sha256(&k);
        mac.update(MAC_TAG);
        mac.update(&self.rows.to_be_bytes());
        mac.update(&self.head);
        mac.update(&self.at_ms.to_be_bytes());
        mac
    }

    fn mac(&self, key: &SealKey) -> [u8; 32] {
        self.mac_of(key).finalize().into_bytes().into()
    }

    /// The signed file's text (one JSON line, see the module docs).
    #[must_use]
    pub fn to_file(&self, key: &SealKey) -> Vec<u8> {
        let file = FileRepr {
            v: FILE_VERSION,
            rows: self.rows,
            head: hex::encode(self.head),
            at_ms: self.at_ms,
            mac: hex::encode(self.mac(key)),
        };
        let mut text = serde_json::to_vec(&file).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// What the edge publishes (see the module docs).
    #[must_use]
    pub fn message(&self, edge: &str, anchor_broken: Option<&str>) -> CheckpointMessage {
        CheckpointMessage {
            kind: MESSAGE_KIND.to_owned(),
            edge: edge.to_owned(),
            at_ms: self.at_ms,
            rows: self.rows,
            head: hex::encode(self.head),
            anchor_broken: anchor_broken.map(str::to_owned),
        }
    }

    /// The anchor this checkpoint sets, named `source` in errors.
    #[must_use]
    pub fn anchor(&self, source: impl Into<String>) -> Anchor {
        Anchor {
            rows: Some(self.rows),
            head: Some(self.head),
            source: source.into(),
        }
    }
}

/// A checkpoint as published on the security topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMessage {
    /// Always [`MESSAGE_KIND`]: tells it from the security reports on the same topic.
    pub kind: String,
    /// The edge router's name.
    pub edge: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Rows in the chain.
    pub rows: u64,
    /// Hash of the last row, hex.
    pub head: String,
    /// Set while the trail does not extend the edge's own checkpoint file: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_broken: Option<String>,
}

impl CheckpointMessage {
    /// The message as the JSON payload of the security topic.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // Strings and numbers always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    v: u32,
    rows: u64,
    head: String,
    at_ms: u64,
    mac: String,
}

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a checkpoint.
    #[error("not an audit checkpoint: {0}")]
    Format(String),
    /// The MAC does not match: another seal key, or the file was altered.
    #[error("the checkpoint's MAC does not match (another seal key, or the file was altered)")]
    Mac,
}

/// A checkpoint read from a file, not yet authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// What it says.
    pub checkpoint: Checkpoint,
    mac: [u8; 32],
}

impl CheckpointFile {
    /// Parses a checkpoint file's bytes (no panic on any input; at most 4 KiB are looked at).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Format`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<CheckpointFile, CheckpointError> {
        if bytes.len() > MAX_FILE_LEN {
            return Err(CheckpointError::Format(format!(
                "{} bytes, more than {MAX_FILE_LEN}",
                bytes.len()
            )));
        }
        let repr: FileRepr =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
        if repr.v != FILE_VERSION {
            return Err(CheckpointError::Format(format!(
                "version {}, this build reads {FILE_VERSION}",
                repr.v
            )));
        }
        Ok(CheckpointFile {
            checkpoint: Checkpoint {
                rows: repr.rows,
                head: hash32("head", &repr.head)?,
                at_ms: repr.at_ms,
            },
            mac: hash32("mac", &repr.mac)?,
        })
    }

    /// Checks the MAC under `key`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Mac`].
    pub fn authenticate(&self, key: &SealKey) -> Result<Checkpoint, CheckpointError> {
        // `verify_slice` compares in constant time.
        self.checkpoint
            .mac_of(key)
            .verify_slice(&self.mac)
            .map_err(|_| CheckpointError::Mac)?;
        Ok(self.checkpoint)
    }
}

fn hash32(field: &str, text: &str) -> Result<[u8; 32], CheckpointError> {
    let bytes = hex::decode(text).map_err(|e| CheckpointError::Format(format!("{field}: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| CheckpointError::Format(format!("{field}: {} bytes, not 32", bytes.len())))
}

/// Reads the checkpoint file at `path`; `None` when there is none.
///
/// # Errors
///
/// [`CheckpointError::Io`] when it exists but cannot be read, else as [`CheckpointFile::parse`].
pub fn read(path: &Path) -> Result<Option<CheckpointFile>, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => CheckpointFile::parse(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Writes `checkpoint`, signed with `key`, to `path` atomically (temporary file, sync, rename,
/// sync of the directory).
///
/// # Errors
///
/// [`CheckpointError::Io`].
pub fn write(path: &Path, checkpoint: &Checkpoint, key: &SealKey) -> Result<(), CheckpointError> {
    v6iot_sdk::store::write_atomically(path, &checkpoint.to_file(key)).map_err(|source| {
        CheckpointError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// What the chain must reach: a row count, a head hash, or both (that row has that hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The chain has at least this many rows.
    pub rows: Option<u64>,
    /// A row has this hash (row `rows` when both are given).
    pub head: Option<[u8; 32]>,
    /// Where the anchor comes from, for messages (a file, `--expect-head`).
    pub source: String,
}

/// The trail does not reach an anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct AnchorBroken {
    /// Where the anchor comes from.
    pub origin: String,
    /// Rows missing after the trail's end, when the anchor names a row count.
    pub missing: Option<u64>,
    /// What does not match.
    pub reason: String,
}

/// An anchor's findings during a walk of the chain.
#[derive(Debug)]
pub(super) struct AnchorWalk<'a> {
    anchor: &'a Anchor,
    hash_at_rows: Option<[u8; 32]>,
    head_at: Option<u64>,
}

impl<'a> AnchorWalk<'a> {
    pub(super) fn new(anchor: &'a Anchor) -> Self {
        Self {
            anchor,
            hash_at_rows: None,
            head_at: None,
        }
    }

    /// Row `seq` has hash `hash`.
    pub(super) fn observe(&mut self, seq: u64, hash: &[u8; 32]) {
        if self.anchor.rows == Some(seq) {
            self.hash_at_rows = Some(*hash);
        }
        if self.head_at.is_none() && self.anchor.head.as_ref() == Some(hash) {
            self.head_at = Some(seq);
        }
    }

    /// The walk ended after `rows` rows (hash `last`).
    pub(super) fn finish(&self, rows: u64, last: &[u8; 32]) -> Result<(), AnchorBroken> {
        judge(self.anchor, rows, last, self.hash_at_rows, self.head_at)
    }
}

/// The verdict on `anchor` for a chain of `rows` rows ending in `last`, whose row
/// `anchor.rows` has `hash_at_rows` and whose row `head_at` has the anchor's head.
fn judge(
    anchor: &Anchor,
    rows: u64,
    last: &[u8; 32],
    hash_at_rows: Option<[u8; 32]>,
    head_at: Option<u64>,
) -> Result<(), AnchorBroken> {
    let broken = |missing: Option<u64>, reason: String| AnchorBroken {
        origin: anchor.source.clone(),
        missing,
        reason,
    };
    match (anchor.rows, anchor.head) {
        (Some(n), _) if rows < n => {
            let missing = n - rows;
            Err(broken(
                Some(missing),
                format!(
                    "the trail has {rows} rows, the anchor {n}: {missing} row(s) missing after \
                     row {rows} (cut from the end)"
                ),
            ))
        }
        // An anchor of 0 rows is the empty chain's, whose head is 32 zero bytes.
        (Some(0), Some(head)) if head != [0; 32] => Err(broken(
            None,
            "an anchor of 0 rows must have the empty chain's head (64 zeros)".to_owned(),
        )),
        (Some(n), Some(head)) if n > 0 && hash_at_rows != Some(head) => Err(broken(
            None,
            format!(
                "row {n} has hash {}, the anchor {}: the trail was rewritten from row {n} back",
                hash_at_rows.map_or_else(|| "?".to_owned(), hex::encode),
                hex::encode(head)
            ),
        )),
        (None, Some(head)) if head_at.is_none() && !(rows == 0 && head == [0; 32]) => Err(broken(
            None,
            format!(
                "no row has hash {} (the trail ends at row {rows}, hash {}): rows after the \
                     anchor were removed, or the trail was rewritten",
                hex::encode(head),
                hex::encode(last)
            ),
        )),
        _ => Ok(()),
    }
}

impl AuditLog<'_> {
    /// Row count and head hash (32 zero bytes when empty), from the last row as stored.
    ///
    /// # Errors
    ///
    /// [`AuditError::Sqlite`], [`AuditError::Corrupt`] for a head that is not 32 bytes.
    pub fn head(&self) -> Result<(u64, [u8; 32]), AuditError> {
        let last: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = last else {
            return Ok((0, [0; 32]));
        };
        let row = u64::try_from(seq).unwrap_or(0);
        let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| AuditError::Corrupt {
            row,
            what: "its hash is not 32 bytes".to_owned(),
        })?;
        Ok((row, hash))
    }

    /// Whether the stored trail still reaches `anchor`, from the stored hashes alone (two
    /// lookups, no walk: what the edge checks before it replaces its checkpoint; a full check
    /// is [`verify_anchored`](Self::verify_anchored)).
    ///
    /// # Errors
    ///
    /// [`AuditError::AnchorBroken`], [`AuditError::Sqlite`].
    pub fn check_anchor(&self, anchor: &Anchor) -> Result<(), AuditError> {
        let (rows, last) = self.head()?;
        let hash_at = |seq: u64| -> Result<Option<[u8; 32]>, AuditError> {
            let h: Option<Vec<u8>> = self
                .conn
                .prepare_cached("SELECT hash FROM audit WHERE seq = ?1")?
                .query_row([i64::try_from(seq).unwrap_or(i64::MAX)], |r| r.get(0))
                .optional()?;
            Ok(h.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()))
        };
        let hash_at_rows = match anchor.rows {
            Some(n) if n > 0 => hash_at(n)?,
            _ => None,
        };
        let head_at = match (anchor.rows, anchor.head) {
            (None, Some(head)) => self
                .conn
                .prepare_cached("SELECT seq FROM audit WHERE hash = ?1 LIMIT 1")?
                .query_row([head.as_slice()], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|s| u64::try_from(s).unwrap_or(0)),
            _ => None,
        };
        judge(anchor, rows, &last, hash_at_rows, head_at).map_err(AuditError::AnchorBroken)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, head {}", self.rows, hex::encode(self.head))
    }
}

/// When the next checkpoint is due (sans-IO): at start, at most every `min_gap` after the
/// trail changed, at least every `every`.
#[derive(Debug, Clone)]
pub struct Schedule {
    every: Duration,
    min_gap: Duration,
    last: Option<Instant>,
    due: Instant,
}

impl Schedule {
    /// The first checkpoint is due at `now`.
    #[must_use]
    pub fn new(now: Instant, every: Duration, min_gap: Duration) -> Schedule {
        Schedule {
            every: every.max(min_gap),
            min_gap,
            last: None,
            due: now,
        }
    }

    /// Rows were added at `now`: a checkpoint is due `min_gap` after the last one, or now.
    pub fn changed(&mut self, now: Instant) {
        let soonest = self.last.map_or(now, |l| (l + self.min_gap).max(now));
        self.due = self.due.min(soonest);
    }

    /// When the next one is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.due
    }

    /// True when one is due at `now`.
    #[must_use]
    pub fn is_due(&self, now: Instant) -> bool {
        self.due <= now
    }

    /// One was made at `now`.
    pub fn done(&mut self, now: Instant) {
        self.last = Some(now);
        self.due = now + self.every;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes(&[b; 32]).unwrap()
    }

    fn cp() -> Checkpoint {
        Checkpoint {
            rows: 42,
            head: [0xab; 32],
            at_ms: 1_780_000_000_000,
        }
    }

    #[test]
    fn the_file_round_trips_and_its_mac_binds_every_field_and_the_key() {
        let text = cp().to_file(&key(1));
        let parsed = CheckpointFile::parse(&text).unwrap();
        assert_eq!(parsed.authenticate(&key(1)).unwrap(), cp());
        assert!(matches!(
            parsed.authenticate(&key(2)),
            Err(CheckpointError::Mac)
        ));
        // The documented MAC, computed here from its definition.
        let k = key(1).derive_key(b"v6iot audit checkpoint v1");
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(k.as_slice()).unwrap();
        mac.update(b"v6iot-audit-checkpoint-v1");
        mac.update(&42u64.to_be_bytes());
        mac.update(&[0xab; 32]);
        mac.update(&1_780_000_000_000u64.to_be_bytes());
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            json["mac"],
            hex::encode(mac.finalize().into_bytes()),
            "{json}"
        );
        assert_eq!(json["v"], 1);
        // Any field changed: the MAC no longer matches.
        for (field, value) in [
            ("rows", serde_json::json!(41)),
            ("at_ms", serde_json::json!(1)),
            ("head", serde_json::json!(hex::encode([0xac; 32]))),
        ] {
            let mut changed = json.clone();
            changed[field] = value;
            let f = CheckpointFile::parse(&serde_json::to_vec(&changed).unwrap()).unwrap();
            assert!(
                matches!(f.authenticate(&key(1)), Err(CheckpointError::Mac)),
                "{field}"
            );
        }
    }

    #[test]
    fn bad_files_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"v":2,"rows":1,"head":"00","at_ms":1,"mac":"00"}"#,
            br#"{"v":1,"rows":1,"head":"00","at_ms":1,"mac":"00"}"#,
            br#"{"v":1,"rows":-1,"head":"00","at_ms":1,"mac":"00"}"#,
            br#"{"v":1,"rows":1,"head":"00","at_ms":1,"mac":"00","extra":1}"#,
        ] {
            assert!(
                matches!(CheckpointFile::parse(bad), Err(CheckpointError::Format(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(CheckpointFile::parse(&vec![b' '; 5000]).is_err());
    }

    fn anchor(rows: Option<u64>, head: Option<[u8; 32]>) -> Anchor {
        Anchor {
            rows,
            head,
            source: "test".into(),
        }
    }

    #[test]
    fn anchors_are_judged_by_rows_and_head() {
        let h = [7u8; 32];
        let last = [9u8; 32];
        // Reached: row 5 has h, the chain has 8 rows.
        assert!(judge(&anchor(Some(5), Some(h)), 8, &last, Some(h), Some(5)).is_ok());
        assert!(judge(&anchor(Some(5), None), 5, &last, None, None).is_ok());
        assert!(judge(&anchor(None, Some(h)), 8, &last, None, Some(5)).is_ok());
        assert!(judge(&anchor(Some(0), Some([0; 32])), 0, &[0; 32], None, None).is_ok());
        // Cut: 2 rows missing.
        let e = judge(&anchor(Some(5), Some(h)), 3, &last, None, None).unwrap_err();
        assert_eq!(e.missing, Some(2));
        assert!(
            e.to_string().contains("2 row(s) missing after row 3"),
            "{e}"
        );
        // Rewritten.
        let e = judge(&anchor(Some(5), Some(h)), 8, &last, Some(last), None).unwrap_err();
        assert_eq!(e.missing, None);
        assert!(e.to_string().contains("rewritten"), "{e}");
        // A head nowhere in the chain.
        let e = judge(&anchor(None, Some(h)), 8, &last, None, None).unwrap_err();
        assert!(e.to_string().contains("no row has hash"), "{e}");
    }

    #[test]
    fn the_schedule_is_regular_and_follows_changes_at_a_bounded_rate() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut sch = Schedule::new(t0, Duration::from_secs(60), Duration::from_secs(5));
        assert!(sch.is_due(t0), "one at start");
        sch.done(t0);
        assert_eq!(sch.poll_timeout(), s(60));
        // A change 1 s later waits for the gap; a change long after is due at once.
        sch.changed(s(1));
        assert_eq!(sch.poll_timeout(), s(5));
        sch.changed(s(2));
        assert_eq!(
            sch.poll_timeout(),
            s(5),
            "changes in a gap make one checkpoint"
        );
        sch.done(s(5));
        assert_eq!(sch.poll_timeout(), s(65));
        sch.changed(s(30));
        assert_eq!(sch.poll_timeout(), s(30));
        // At most one per gap however many changes: 1000 changes in 10 s, at most 3.
        let mut made = 0;
        let mut sch = Schedule::new(t0, Duration::from_secs(60), Duration::from_secs(5));
        for ms in (0..10_000u64).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            sch.changed(now);
            if sch.is_due(now) {
                sch.done(now);
                made += 1;
            }
        }
        assert_eq!(made, 2, "at 0 s and 5 s");
    }

    #[test]
    fn the_message_is_documented_json() {
        let m = cp().message("edge-1", None);
        let json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(json["kind"], "audit_checkpoint");
        assert_eq!(json["edge"], "edge-1");
        assert_eq!(json["rows"], 42);
        assert_eq!(json["head"], "ab".repeat(32));
        assert!(json.get("anchor_broken").is_none());
        let m = cp().message("edge-1", Some("cut"));
        let back: CheckpointMessage = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(back.anchor_broken.as_deref(), Some("cut"));
    }
}
