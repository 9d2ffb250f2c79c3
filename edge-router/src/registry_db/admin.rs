//! What the `v6iot-edge devices …` and `audit …` subcommands do, for the binary's command line
//! (`src/bin/v6iot-edge/registry_cli.rs`: arguments and printing) and for tests.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Registry, RegistryError};
use crate::audit::checkpoint::{self, Anchor, CheckpointError};
use crate::audit::{AuditError, VerifyReport};
use crate::seal::{SealError, SealKey};

/// A text that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 time like 2026-05-01T12:00:00Z: {source}")]
pub struct TimeArgError {
    /// The text given.
    pub text: String,
    /// Why it does not parse.
    pub source: time::error::Parse,
}

/// Parses an RFC 3339 time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00.5+02:00`).
///
/// # Errors
///
/// [`TimeArgError`], quoting the text.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, TimeArgError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|source| TimeArgError {
        text: text.to_owned(),
        source,
    })
}

/// A time as RFC 3339, UTC.
#[must_use]
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Where a registry is: its file, the key to open its secrets, its audit checkpoint file
/// (`EdgeConfig::registry_place` from a configuration).
#[derive(Debug, Clone)]
pub struct RegistryPlace {
    /// The SQLite file.
    pub path: PathBuf,
    /// The seal key, if one was given.
    pub key: Option<SealKey>,
    /// The edge's signed audit checkpoint file (it may not exist).
    pub checkpoint: PathBuf,
}

/// Why an administrative action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A reading command found no registry at its path (none is created for it).
    #[error("no registry at {} (add or import devices first, or give --config / --data-dir)", .0.display())]
    NoRegistry(PathBuf),
    /// A file or directory could not be made or read.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// `create`, `open`, ….
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The registry refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The seal key could not be made.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The audit trail is broken, does not reach an anchor, or could not be read.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The checkpoint file could not be read or its MAC does not match.
    #[error("{}: {source}", .path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CheckpointError,
    },
    /// A checkpoint file was named and is not there.
    #[error("no checkpoint file {}", .0.display())]
    NoCheckpoint(PathBuf),
}

/// Opens an existing registry (reading commands must not create one at a mistyped path).
///
/// # Errors
///
/// [`AdminError::NoRegistry`], or as [`Registry::open`].
pub fn open_existing(place: &RegistryPlace) -> Result<Registry, AdminError> {
    if !place.path.exists() {
        return Err(AdminError::NoRegistry(place.path.clone()));
    }
    Ok(Registry::open(&place.path, place.key.clone())?)
}

/// Opens or creates the registry (and its directory).
///
/// # Errors
///
/// [`AdminError::Io`] for the directory, or as [`Registry::open`].
pub fn open_or_create(place: &RegistryPlace) -> Result<Registry, AdminError> {
    if let Some(dir) = place.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AdminError::Io {
            what: "create",
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(Registry::open(&place.path, place.key.clone())?)
}

/// Writes a new random seal key (64 hex digits and a newline) to `file`, which must not exist,
/// readable by its owner only, synced.
///
/// # Errors
///
/// [`AdminError::Io`] (the file exists, or cannot be written), [`AdminError::Seal`].
pub fn write_new_seal_key(file: &Path) -> Result<(), AdminError> {
    let io = |source| AdminError::Io {
        what: "create",
        path: file.to_owned(),
        source,
    };
    let key = SealKey::generate_hex()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file).map_err(io)?;
    writeln!(f, "{}", key.as_str()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// What `audit verify` checks the trail's end against besides the edge's checkpoint file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyRequest {
    /// A checkpoint file to use instead of the edge's own (then it must exist).
    pub checkpoint: Option<PathBuf>,
    /// The trail must have at least this many rows.
    pub expect_rows: Option<u64>,
    /// A head hash the trail must reach.
    pub expect_head: Option<[u8; 32]>,
}

/// A trail that verified, and what it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Rows and head.
    pub report: VerifyReport,
    /// Each anchor reached, described (the checkpoint file, the given row count or head).
    pub reached: Vec<String>,
    /// The checkpoint file looked for when there was none (rows cut from the end cannot be
    /// detected without another anchor).
    pub no_checkpoint: Option<PathBuf>,
}

/// `audit verify`: the checkpoint file (`request.checkpoint`, else `place`'s when it exists)
/// and the given anchors are read first (a running edge only adds rows after them), then the
/// chain is recomputed and must reach every anchor. Without a seal key the checkpoint's
/// signature is not checked, and its description says so.
///
/// # Errors
///
/// [`AdminError::Audit`] naming the first broken row or the anchor not reached,
/// [`AdminError::Checkpoint`], [`AdminError::NoCheckpoint`].
pub fn verify_trail(
    registry: &Registry,
    place: &RegistryPlace,
    request: &VerifyRequest,
) -> Result<Verified, AdminError> {
    let mut anchors = Vec::new();
    let file = request.checkpoint.as_deref().unwrap_or(&place.checkpoint);
    let checkpoint_error = |source| AdminError::Checkpoint {
        path: file.to_owned(),
        source,
    };
    let mut no_checkpoint = None;
    match checkpoint::read(file).map_err(checkpoint_error)? {
        Some(f) => {
            let (cp, signature) = match registry.seal_key() {
                Some(key) => (
                    f.authenticate(key).map_err(checkpoint_error)?,
                    "signature checked",
                ),
                None => (f.checkpoint, "signature NOT checked: no seal key given"),
            };
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(cp.at_ms) * 1_000_000)
                .map_or_else(|_| format!("{} ms", cp.at_ms), format_time);
            anchors.push(cp.anchor(format!(
                "checkpoint {} of {at} ({} rows; {signature})",
                file.display(),
                cp.rows
            )));
        }
        None if request.checkpoint.is_some() => {
            return Err(AdminError::NoCheckpoint(file.to_owned()));
        }
        None => no_checkpoint = Some(file.to_owned()),
    }
    if request.expect_rows.is_some() || request.expect_head.is_some() {
        anchors.push(Anchor {
            rows: request.expect_rows,
            head: request.expect_head,
            source: "--expect-rows/--expect-head".to_owned(),
        });
    }
    let report = registry.audit().verify_anchored(&anchors)?;
    Ok(Verified {
        report,
        reached: anchors.into_iter().map(|a| a.source).collect(),
        no_checkpoint,
    })
}
