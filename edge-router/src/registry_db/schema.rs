//! The database file: connection settings and schema migrations (`PRAGMA user_version`).
//!
//! Migration `n` (1-based) moves `user_version` from `n - 1` to `n`; each runs in the same
//! transaction as its version bump. A file whose version is newer than this build knows is
//! refused rather than guessed at.
//!
//! | version | what |
//! |---|---|
//! | 1 | devices, their prefixes, the audit trail (append-only triggers), `meta` |
//! | 2 | `oscore_state`: the edge's sender marks and replay floors per device context |
//! | 3 | `devices.secret_fp` with a UNIQUE index: no two devices share a master secret ([`super::unique`]) |

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::RegistryError;

/// Every migration, in order. Never edit a released one: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: devices, their prefixes, the audit trail, a key-check value.
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE devices (
        id         TEXT PRIMARY KEY NOT NULL,
        kid        BLOB NOT NULL UNIQUE,
        secret     BLOB NOT NULL,
        salt       BLOB,
        class      INTEGER NOT NULL CHECK (class BETWEEN 1 AND 255),
        state      TEXT NOT NULL CHECK (state IN ('active', 'quarantined', 'revoked')),
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE device_prefixes (
        device TEXT NOT NULL REFERENCES devices (id) ON UPDATE RESTRICT ON DELETE CASCADE,
        prefix TEXT NOT NULL,
        PRIMARY KEY (device, prefix)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
        at_us     INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        device    TEXT,
        address   BLOB,
        detail    TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash      BLOB NOT NULL
    ) STRICT;
    CREATE INDEX audit_by_device ON audit (device, at_us);
    CREATE INDEX audit_by_address ON audit (address, at_us);

    -- Append-only: rows are added at the end (seq = last + 1, so INSERT OR REPLACE cannot
    -- overwrite one), never changed, never removed.
    CREATE TRIGGER audit_append_at_end BEFORE INSERT ON audit
        WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM audit)
        BEGIN SELECT RAISE(ABORT, 'audit is append-only: rows are added at the end'); END;
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only: rows cannot be changed'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only: rows cannot be deleted'); END;
    ",
    // 2: the edge's OSCORE state per device context (sender sequence marks, replay floors).
    r"
    CREATE TABLE oscore_state (
        kid          BLOB PRIMARY KEY NOT NULL,
        device       TEXT NOT NULL,
        fingerprint  BLOB NOT NULL,
        sender_mark  INTEGER NOT NULL CHECK (sender_mark >= 0),
        replay_floor INTEGER NOT NULL CHECK (replay_floor >= 0),
        updated_us   INTEGER NOT NULL
    ) STRICT;
    ",
    // 3: every master secret is unique: a keyed fingerprint per device (see `unique`). It needs
    // the seal key, so existing rows are filled in by `unique::fill` on the first open with it.
    r"
    ALTER TABLE devices ADD COLUMN secret_fp BLOB;
    CREATE UNIQUE INDEX devices_by_secret ON devices (secret_fp);
    ",
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating it if needed) and configures the database file: WAL, foreign keys, full
/// sync, a busy timeout, then runs the pending migrations. On Unix the file, its `-wal` and its
/// `-shm` are owner-only (0600): a new file is created so, before SQLite opens it; an existing
/// one open to its group or others is made owner-only, with a warning.
/// SQLite's page cache per connection, KiB (its default is 2 MiB). With a million devices the
/// tables and indexes the running edge writes per registration (`oscore_state` by kid, the
/// `devices` row its foreign key checks, the audit trail's tail) are about 150 MiB; a 2 MiB
/// cache made nearly every row a `pread` of a page and the import of a million devices
/// superlinear. A cap, filled only as pages are read.
pub(crate) const PAGE_CACHE_KIB: i64 = 128 * 1024;

pub(crate) fn open(path: &Path) -> Result<Connection, RegistryError> {
    let err = |source| RegistryError::Open {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    private::create_or_restrict(path)?;
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RegistryError::Config(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    // A negative size is KiB (SQLite's `PRAGMA cache_size`); pages are cached as they are read.
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
        .map_err(err)?;
    // REPLACE's implicit deletes fire delete triggers only with recursive triggers on.
    conn.pragma_update(None, "recursive_triggers", true)
        .map_err(err)?;
    let foreign_keys: bool = conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .map_err(err)?;
    if !foreign_keys {
        return Err(RegistryError::Config(
            "SQLite was built without foreign key support".to_owned(),
        ));
    }
    migrate(&mut conn)?;
    // SQLite gives its -wal and -shm the database file's mode, but not to files an earlier run
    // left behind (or made while the database was open to others).
    #[cfg(unix)]
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        private::restrict(Path::new(&side))?;
    }
    Ok(conn)
}

/// Owner-only database files (Unix).
#[cfg(unix)]
mod private {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    use std::path::Path;

    use super::RegistryError;

    /// Creates `path` empty with mode 0600 if it does not exist, else [`restrict`]s it.
    pub(super) fn create_or_restrict(path: &Path) -> Result<(), RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path),
            Err(e) => Err(RegistryError::Io(e)),
        }
    }

    /// Takes group and other permissions off `path`, if it exists and has any.
    pub(super) fn restrict(path: &Path) -> Result<(), RegistryError> {
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RegistryError::Io(e)),
        };
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = %format!("{mode:03o}"),
                "registry file open to its group or others: made owner-only (0600)");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > VERSION {
        return Err(RegistryError::NewerSchema {
            found,
            known: VERSION,
        });
    }
    for (n, sql) in (1i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_get_the_larger_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("registry.db")).unwrap();
        let kib: i64 = conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -PAGE_CACHE_KIB);
    }
}
