//! The device registry on a real SQLite file: add, get, list, state changes, rotation, unique
//! ids and kids, sealing at rest (the file never holds a secret in clear), corrupt rows, and the
//! CSV import (1,000 rows; the rate of larger imports is measured by the criterion bench
//! `edge-router/benches/registry.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use v6iot_edge_router::audit::AuditKind;
use v6iot_edge_router::registry_db::{
    DeviceFilter, DeviceRecord, DeviceState, MasterSecret, Registry, RegistryError, SealKey, csv,
};

fn key() -> SealKey {
    SealKey::from_bytes(&[0x42; 32]).unwrap()
}

fn other_key() -> SealKey {
    SealKey::from_bytes(&[0x43; 32]).unwrap()
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("registry.db")
}

fn record(id: &str, kid: &[u8], secret: &[u8]) -> DeviceRecord {
    DeviceRecord {
        id: id.to_owned(),
        kid: kid.to_vec(),
        master_secret: MasterSecret::new(secret.to_vec()),
        master_salt: Some(vec![0x9e, 0x7c]),
        class: 3,
        prefixes: vec!["2001:db8:1200:305::/64".parse().unwrap()],
        state: DeviceState::Active,
    }
}

/// A credentials CSV of `n` devices with fresh random secrets, as `v6iot-sim provision` writes.
fn generated_csv(n: usize) -> String {
    let mut text = format!("{}\n", csv::HEADER);
    for i in 0..n {
        let r = DeviceRecord {
            id: format!("sim{i:06}"),
            kid: (i as u32).to_be_bytes().to_vec(),
            master_secret: MasterSecret::random(16).unwrap(),
            master_salt: None,
            class: 1,
            prefixes: vec!["2001:db8:1200:305::/64".parse().unwrap()],
            state: DeviceState::Active,
        };
        text.push_str(&csv::format_line(&r));
        text.push('\n');
    }
    text
}

#[test]
fn add_get_list_revoke_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    let secret = b"0123456789abcdef0123";
    reg.add(record("dev-a", &[0x0a], secret)).unwrap();
    reg.add(record("dev-b", &[0x0b, 0x01], b"fedcba9876543210"))
        .unwrap();

    let a = reg.get("dev-a").unwrap().unwrap();
    assert_eq!(a.record, record("dev-a", &[0x0a], secret));
    assert_eq!(a.created, a.updated);
    assert_eq!(
        reg.get_by_kid(&[0x0b, 0x01]).unwrap().unwrap().record.id,
        "dev-b"
    );
    assert!(reg.get("nobody").unwrap().is_none());
    assert!(reg.get_by_kid(&[0x0c]).unwrap().is_none());

    let all = reg.list(&DeviceFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["dev-a", "dev-b"]
    );
    assert_eq!(all[0].secret_len, 20);
    assert_eq!(all[0].prefixes[0].to_string(), "2001:db8:1200:305::/64");

    assert_eq!(reg.revoke("dev-a").unwrap(), DeviceState::Active);
    assert_eq!(reg.revoke("dev-a").unwrap(), DeviceState::Revoked);
    let revoked = reg
        .list(&DeviceFilter {
            state: Some(DeviceState::Revoked),
            class: None,
        })
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].id, "dev-a");
    // Revocation is final.
    assert!(matches!(
        reg.set_state("dev-a", DeviceState::Active),
        Err(RegistryError::Revoked(id)) if id == "dev-a"
    ));
    assert!(matches!(
        reg.rotate("dev-a"),
        Err(RegistryError::Revoked(_))
    ));
    assert!(matches!(
        reg.revoke("nobody"),
        Err(RegistryError::NotFound(_))
    ));

    let before = reg.get("dev-b").unwrap().unwrap();
    let new = reg.rotate("dev-b").unwrap();
    assert_eq!(new.as_bytes().len(), 16);
    assert_ne!(new, before.record.master_secret);
    let after = reg.get("dev-b").unwrap().unwrap();
    assert_eq!(after.record.master_secret, new);
    assert!(after.updated >= before.updated);

    assert_eq!(
        reg.set_state("dev-b", DeviceState::Quarantined).unwrap(),
        DeviceState::Active
    );
    assert_eq!(
        reg.set_state("dev-b", DeviceState::Active).unwrap(),
        DeviceState::Quarantined
    );

    // Every change left its audit row, in order.
    let kinds = |id| -> Vec<AuditKind> {
        reg.audit()
            .history(id)
            .unwrap()
            .into_iter()
            .map(|r| r.event.kind)
            .collect()
    };
    assert_eq!(kinds("dev-a"), [AuditKind::Provisioned, AuditKind::Revoked]);
    assert_eq!(
        kinds("dev-b"),
        [
            AuditKind::Provisioned,
            AuditKind::Rotated,
            AuditKind::Quarantined,
            AuditKind::Reinstated
        ]
    );
    reg.audit().verify().unwrap();

    // And it all survives a reopen.
    drop(reg);
    let reg = Registry::open(&db(&dir), Some(key())).unwrap();
    assert_eq!(reg.get("dev-b").unwrap().unwrap().record.master_secret, new);
}

#[test]
fn ids_and_kids_are_unique_and_records_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    reg.add(record("dev-a", &[1, 2], &[7; 16])).unwrap();
    match reg.add(record("dev-a", &[9], &[7; 16])) {
        Err(RegistryError::DuplicateId(id)) => assert_eq!(id, "dev-a"),
        other => panic!("{other:?}"),
    }
    match reg.add(record("dev-b", &[1, 2], &[7; 16])) {
        Err(e @ RegistryError::DuplicateKid { .. }) => {
            assert_eq!(e.to_string(), "kid 0102 is already device `dev-a`'s");
        }
        other => panic!("{other:?}"),
    }
    for (bad, needle) in [
        (
            record("dev-c", &[3], &[7; 15]),
            "master secret must be 16 to 32",
        ),
        (
            record("dev-c", &[3], &[7; 33]),
            "master secret must be 16 to 32",
        ),
        (record("dev-c", &[], &[7; 16]), "kid must be 1 to 7"),
        (record("dev c", &[3], &[7; 16]), "white space"),
        (
            DeviceRecord {
                class: 0,
                ..record("dev-c", &[3], &[7; 16])
            },
            "class 0",
        ),
    ] {
        let e = reg.add(bad).unwrap_err();
        assert!(
            matches!(e, RegistryError::Invalid { .. }) && e.to_string().contains(needle),
            "{e}"
        );
    }
    assert_eq!(reg.list(&DeviceFilter::default()).unwrap().len(), 1);
    assert_eq!(
        reg.audit().len().unwrap(),
        1,
        "refused adds leave no audit row"
    );
}

#[test]
fn master_secrets_are_unique_whatever_the_salt_or_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    let shared = [0x5a; 16];
    reg.add(record("dev-a", &[1], &shared)).unwrap();
    let dup = |e: RegistryError| match e {
        RegistryError::DuplicateSecret { device, holder } => (device, holder),
        other => panic!("expected a duplicate secret, got {other:?}"),
    };
    // Another kid, another salt: still the same secret, refused, nothing written.
    let other_salt = DeviceRecord {
        master_salt: Some(vec![1, 2, 3]),
        ..record("dev-b", &[2], &shared)
    };
    let e = reg.add(other_salt).unwrap_err();
    assert!(e.to_string().contains("already device `dev-a`'s"), "{e}");
    assert_eq!(dup(e), ("dev-b".to_owned(), "dev-a".to_owned()));
    assert_eq!(reg.list(&DeviceFilter::default()).unwrap().len(), 1);
    assert_eq!(reg.audit().len().unwrap(), 1, "a refused add leaves no row");
    // A revoked device's secret stays taken (whoever had the device may know it).
    reg.revoke("dev-a").unwrap();
    let e = reg.add(record("dev-c", &[3], &shared)).unwrap_err();
    assert_eq!(dup(e).1, "dev-a");
    // A rotation frees the old secret and takes the new one.
    reg.add(record("dev-d", &[4], &[0x44; 16])).unwrap();
    let rotated = reg.rotate("dev-d").unwrap();
    reg.add(record("dev-e", &[5], &[0x44; 16])).unwrap();
    let e = reg
        .add(record("dev-f", &[6], rotated.as_bytes()))
        .unwrap_err();
    assert_eq!(dup(e), ("dev-f".to_owned(), "dev-d".to_owned()));
    // An id or kid that is taken is named first, whichever index SQLite checks first.
    assert!(matches!(
        reg.add(record("dev-e", &[5], &shared)),
        Err(RegistryError::DuplicateId(_))
    ));
    assert!(matches!(
        reg.add(record("dev-g", &[5], &shared)),
        Err(RegistryError::DuplicateKid { .. })
    ));
    let ids: Vec<String> = reg
        .list(&DeviceFilter::default())
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["dev-a", "dev-d", "dev-e"]);
    reg.audit().verify().unwrap();
}

/// Turns a registry file back into schema version 2 (no secret fingerprints), as a registry
/// made before migration 3 is.
fn downgrade_to_v2(path: &Path) {
    let raw = rusqlite::Connection::open(path).unwrap();
    raw.execute_batch(
        "DROP INDEX devices_by_secret; ALTER TABLE devices DROP COLUMN secret_fp; \
         PRAGMA user_version = 2;",
    )
    .unwrap();
}

#[test]
fn migration_3_fingerprints_old_rows_and_quarantines_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    reg.add(record("dev-a", &[1], &[0xa1; 16])).unwrap();
    reg.add(record("dev-b", &[2], &[0xb2; 16])).unwrap();
    reg.add(record("dev-c", &[3], &[0xc3; 16])).unwrap();
    reg.add(record("dev-d", &[4], &[0xd4; 16])).unwrap();
    reg.revoke("dev-d").unwrap();
    drop(reg);
    // Before migration 3 nothing stopped dev-b (active) and dev-d (revoked) from getting
    // dev-a's secret.
    downgrade_to_v2(&path);
    let raw = rusqlite::Connection::open(&path).unwrap();
    for id in ["dev-b", "dev-d"] {
        raw.execute(
            "UPDATE devices SET secret = ?2 WHERE id = ?1",
            rusqlite::params![id, key().seal(id.as_bytes(), &[0xa1; 16]).unwrap()],
        )
        .unwrap();
    }
    drop(raw);

    // Without the key the schema moves on, but nothing can be fingerprinted yet.
    let keyless = Registry::open(&path, None).unwrap();
    assert!(keyless.duplicate_secrets().is_empty());
    drop(keyless);
    let rows_before = {
        let reg = Registry::open(&path, None).unwrap();
        reg.audit().len().unwrap()
    };

    // The first open with the key fills them in: the younger active duplicate is quarantined,
    // with an audit row; the revoked one stays as it is, unreported.
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    let found = reg.duplicate_secrets().to_vec();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].device.as_str(), found[0].holder.as_str()),
        ("dev-b", "dev-a")
    );
    assert!(found[0].quarantined_now);
    assert!(found[0].to_string().contains("devices rotate dev-b"));
    let state = |reg: &Registry, id: &str| reg.info(id).unwrap().unwrap().state;
    assert_eq!(state(&reg, "dev-b"), DeviceState::Quarantined);
    assert_eq!(state(&reg, "dev-a"), DeviceState::Active);
    assert_eq!(state(&reg, "dev-c"), DeviceState::Active);
    let history = reg.audit().history("dev-b").unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.event.kind, AuditKind::Quarantined);
    assert!(last.event.detail.contains("`dev-a`'s"), "{last:?}");
    assert_eq!(reg.audit().len().unwrap(), rows_before + 1);
    // The filled fingerprints hold: dev-c's secret is taken now.
    let e = reg.add(record("dev-x", &[9], &[0xc3; 16])).unwrap_err();
    assert!(matches!(e, RegistryError::DuplicateSecret { ref holder, .. } if holder == "dev-c"));
    // Reinstating the duplicate is refused until it is rotated.
    assert!(matches!(
        reg.set_state("dev-b", DeviceState::Active),
        Err(RegistryError::DuplicateSecret { .. })
    ));
    drop(reg);

    // Found again at the next open, without a second audit row; a keyless reinstatement
    // cannot check the secret and is refused.
    let mut keyless = Registry::open(&path, None).unwrap();
    assert!(matches!(
        keyless.set_state("dev-b", DeviceState::Active),
        Err(RegistryError::NoSealKey)
    ));
    drop(keyless);
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    assert_eq!(reg.duplicate_secrets().len(), 1);
    assert!(!reg.duplicate_secrets()[0].quarantined_now);
    assert_eq!(reg.audit().len().unwrap(), rows_before + 1);

    // Rotated, it can be reinstated, and nothing is reported any more.
    reg.rotate("dev-b").unwrap();
    reg.set_state("dev-b", DeviceState::Active).unwrap();
    drop(reg);
    let reg = Registry::open(&path, Some(key())).unwrap();
    assert!(reg.duplicate_secrets().is_empty());
    reg.audit().verify().unwrap();
}

/// Reads a file and its WAL, if any.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_file_alone_does_not_reveal_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let secret = *b"S3CRET-master-secret-bytes-32!!!";
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    reg.add(record("dev-secret", &[0x5e], &secret)).unwrap();
    let rotated = reg.rotate("dev-secret").unwrap();

    // While open (WAL and all) and after closing (checkpointed into the main file).
    let open_bytes = file_bytes(&path);
    assert!(
        contains(&open_bytes, b"dev-secret"),
        "the test reads the right file"
    );
    drop(reg);
    for bytes in [open_bytes, file_bytes(&path)] {
        for needle in [&secret[..], rotated.as_bytes()] {
            assert!(!contains(&bytes, needle), "secret in clear in the file");
            let hex_text = hex::encode(needle);
            assert!(
                !contains(&bytes, hex_text.as_bytes()),
                "secret as hex in the file"
            );
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "registry file is private: {mode:o}");
    }

    // The wrong key is refused at open; no key still lists, but does not read secrets.
    assert!(matches!(
        Registry::open(&path, Some(other_key())),
        Err(RegistryError::WrongSealKey)
    ));
    let mut keyless = Registry::open(&path, None).unwrap();
    assert_eq!(keyless.list(&DeviceFilter::default()).unwrap().len(), 1);
    assert!(keyless.info("dev-secret").unwrap().is_some());
    assert!(matches!(
        keyless.get("dev-secret"),
        Err(RegistryError::NoSealKey)
    ));
    assert!(matches!(
        keyless.rotate("dev-secret"),
        Err(RegistryError::NoSealKey)
    ));
    assert!(matches!(
        keyless.add(record("x", &[1], &[1; 16])),
        Err(RegistryError::NoSealKey)
    ));
    keyless.revoke("dev-secret").unwrap();
}

#[test]
fn corrupt_rows_are_errors_that_name_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    reg.add(record("dev-good", &[1], &[1; 16])).unwrap();
    reg.add(record("dev-swapped", &[2], &[2; 16])).unwrap();
    reg.add(record("dev-garbled", &[3], &[3; 16])).unwrap();
    reg.add(record("dev-prefix", &[4], &[4; 16])).unwrap();

    let raw = rusqlite::Connection::open(&path).unwrap();
    // A sealed secret moved from another row (the device id is its associated data).
    raw.execute(
        "UPDATE devices SET secret = (SELECT secret FROM devices WHERE id = 'dev-good') \
         WHERE id = 'dev-swapped'",
        [],
    )
    .unwrap();
    raw.execute(
        "UPDATE devices SET secret = x'01020304' WHERE id = 'dev-garbled'",
        [],
    )
    .unwrap();
    raw.execute(
        "UPDATE device_prefixes SET prefix = '2001:db8::zz/64' WHERE device = 'dev-prefix'",
        [],
    )
    .unwrap();
    drop(raw);

    assert!(reg.get("dev-good").unwrap().is_some());
    for (id, needle) in [
        ("dev-swapped", "does not open"),
        ("dev-garbled", "not a sealed value"),
        ("dev-prefix", "2001:db8::zz/64"),
    ] {
        let e = reg.get(id).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, RegistryError::Corrupt { .. }), "{text}");
        assert!(
            text.starts_with(&format!("device `{id}`: corrupt row")),
            "{text}"
        );
        assert!(text.contains(needle), "{text}");
    }
    let e = reg.list(&DeviceFilter::default()).unwrap_err().to_string();
    assert!(
        e.contains("dev-prefix") && e.contains("2001:db8::zz/64"),
        "{e}"
    );
    // Rotation replaces a secret that no longer opens.
    reg.rotate("dev-garbled").unwrap();
    assert!(reg.get("dev-garbled").unwrap().is_some());
}

#[test]
fn import_of_a_generated_csv() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    let text = generated_csv(1000);
    let started = Instant::now();
    let report = reg.import_csv(Cursor::new(text.as_bytes())).unwrap();
    println!(
        "imported 1000 rows in {:?} (debug build)",
        started.elapsed()
    );
    assert_eq!(report.imported, 1000);
    assert_eq!(report.lines, 1001);
    let all = reg.list(&DeviceFilter::default()).unwrap();
    assert_eq!(all.len(), 1000);
    // Every line reads back to what the CSV said, secret included.
    for line in text.lines().skip(1).step_by(97) {
        let expected = csv::parse_line(line).unwrap();
        let got = reg.get(&expected.id).unwrap().unwrap().record;
        assert_eq!(got, expected);
        assert_eq!(
            reg.get_by_kid(&expected.kid).unwrap().unwrap().record.id,
            expected.id
        );
    }
    assert_eq!(reg.audit().verify().unwrap().rows, 1000);
    // A second import of the same file is refused whole: every id is taken.
    match reg.import_csv(Cursor::new(text.as_bytes())) {
        Err(RegistryError::Import(e)) => {
            assert_eq!(e.total, 1000);
            assert_eq!(e.errors.len(), 100);
            assert_eq!(e.errors[0].line, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_lines_are_reported_by_number_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    reg.add(record("existing", &[0xee], &[1; 16])).unwrap();
    let text = "\
# credentials of line 5
id,kid_hex,secret_hex,salt_hex,class,prefixes

ok-1,01,000102030405060708090a0b0c0d0e01,,1,2001:db8:1200:305::/64
bad-hex,0x,000102030405060708090a0b0c0d0e02,,1,
ok-2,02,000102030405060708090a0b0c0d0e03,,1,\r
short,03,0001,,1,
dup-kid,01,000102030405060708090a0b0c0d0e04,,1,
ok-1,04,000102030405060708090a0b0c0d0e05,,1,
kid-taken,ee,000102030405060708090a0b0c0d0e06,,1,
bad-prefix,05,000102030405060708090a0b0c0d0e07,,1,2001:db8::1/64
too,few
ok-3,06,000102030405060708090a0b0c0d0e08,,1,
same-as-ok-2,07,000102030405060708090a0b0c0d0e03,9e7c,1,
same-as-existing,08,01010101010101010101010101010101,,1,
";
    let e = match reg.import_csv(Cursor::new(text)) {
        Err(RegistryError::Import(e)) => e,
        other => panic!("{other:?}"),
    };
    let lines: Vec<usize> = e.errors.iter().map(|l| l.line).collect();
    assert_eq!(lines, [5, 7, 8, 9, 10, 11, 12, 14, 15], "{e}");
    let message = e.to_string();
    for needle in [
        "9 bad line(s), nothing imported",
        "line 5: kid_hex",
        "line 7: device `short`: master secret must be 16 to 32 bytes",
        "line 8: kid 01 is already device `ok-1`'s (line 4 of this file)",
        "line 9: device `ok-1` already exists (line 4 of this file)",
        "line 10: kid ee is already device `existing`'s (already in the registry)",
        "line 11: prefixes",
        "line 12: 2 fields",
        // The same secret under another salt is refused too: the salt is not secret.
        "line 14: the master secret of `same-as-ok-2` is already device `ok-2`'s: every device \
         needs its own (equal secrets give the edge equal keys and repeated nonces) (line 6 of \
         this file)",
        "line 15: the master secret of `same-as-existing` is already device `existing`'s",
    ] {
        assert!(message.contains(needle), "{needle}\n{message}");
    }
    assert!(
        message.ends_with("(already in the registry)"),
        "line 15 names where: {message}"
    );
    // Nothing half-imported: only the device that was there before.
    let all = reg.list(&DeviceFilter::default()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, "existing");
    assert_eq!(reg.audit().len().unwrap(), 1);
    reg.audit().verify().unwrap();

    // No header.
    let e = reg
        .import_csv(Cursor::new(
            "ok-1,01,000102030405060708090a0b0c0d0e0f,,1,\n",
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1: the header must be"), "{e}");
    // An empty file.
    let e = reg.import_csv(Cursor::new("")).unwrap_err().to_string();
    assert!(e.contains("no header line"), "{e}");
    // Not UTF-8.
    let e = reg
        .import_csv(Cursor::new(
            &b"id,kid_hex,secret_hex,salt_hex,class,prefixes\n\xff\n"[..],
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2: not UTF-8"), "{e}");
}

#[test]
fn open_configured_uses_the_registry_section() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("seal.key");
    std::fs::write(&key_file, format!("{}\n", "42".repeat(32))).unwrap();
    let config = v6iot_edge_router::config::EdgeConfig::parse(&format!(
        "site = \"s\"\ndata_dir = \"{}\"\n[registry]\nseal_key_file = \"{}\"\n",
        dir.path().join("nested/data").display(),
        key_file.display()
    ))
    .unwrap();
    #[cfg(unix)]
    {
        // A key file others may read is refused, naming the file and the fix.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = config.open_registry().unwrap_err().to_string();
        assert!(
            e.contains(&format!("chmod 600 {}", key_file.display())),
            "{e}"
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut reg = config.open_registry().unwrap();
    assert_eq!(reg.path(), dir.path().join("nested/data/registry.db"));
    reg.add(record("dev-a", &[1], &[1; 16])).unwrap();
    drop(reg);
    // The same key as the file's: `key()` is 32 bytes of 0x42.
    let reg = Registry::open(&dir.path().join("nested/data/registry.db"), Some(key())).unwrap();
    assert!(reg.get("dev-a").unwrap().is_some());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Registry::open(&path, None).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    match Registry::open(&path, None) {
        Err(RegistryError::NewerSchema {
            found: 99,
            known: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn oscore_state_is_only_raised_and_starts_afresh_after_a_rotation() {
    use v6iot_edge_router::gateway::{StateRow, StoredState};
    use v6iot_edge_router::registry_db::oscore_state::fingerprint;

    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&db(&dir), Some(key())).unwrap();
    reg.add(record("dev-a", &[1], &[5; 16])).unwrap();
    reg.add(record("dev-b", &[2], &[6; 16])).unwrap();
    reg.revoke("dev-b").unwrap();
    let salt_a = reg
        .get("dev-a")
        .unwrap()
        .unwrap()
        .record
        .master_salt
        .unwrap_or_default();
    let fp = fingerprint(&[5; 16], &salt_a);
    let row = |mark, floor, fingerprint| StateRow {
        device: "dev-a".into(),
        kid: vec![1],
        state: StoredState {
            sender_mark: mark,
            replay_floor: floor,
            fingerprint,
        },
    };
    reg.store_oscore_state(&[row(4096, 10, fp)]).unwrap();
    // A lower value (a late batch) never lowers what is stored.
    reg.store_oscore_state(&[row(100, 3, fp)]).unwrap();
    let (devices, problems) = reg.device_keys().unwrap();
    assert!(problems.is_empty());
    let a = devices.iter().find(|d| d.id == "dev-a").unwrap();
    assert_eq!(
        (
            a.stored.sender_mark,
            a.stored.replay_floor,
            a.stored.fingerprint
        ),
        (4096, 10, fp)
    );
    assert_eq!(a.master_secret.as_bytes(), &[5; 16]);
    let b = devices.iter().find(|d| d.id == "dev-b").unwrap();
    assert_eq!(b.state, DeviceState::Revoked);
    assert!(
        b.master_secret.as_bytes().is_empty(),
        "a revoked secret stays sealed"
    );
    // After a rotation the stored state belongs to the old secret: the new context starts at 0.
    reg.rotate("dev-a").unwrap();
    let (devices, _) = reg.device_keys().unwrap();
    let a = devices.iter().find(|d| d.id == "dev-a").unwrap();
    assert_eq!((a.stored.sender_mark, a.stored.replay_floor), (0, 0));
    assert_ne!(a.stored.fingerprint, fp);
    // data_version moves when another connection writes.
    let v = reg.data_version().unwrap();
    let mut other = Registry::open(&db(&dir), Some(key())).unwrap();
    other.revoke("dev-a").unwrap();
    assert_ne!(reg.data_version().unwrap(), v);
}

/// The database, its `-wal` and its `-shm` are owner-only while the registry is open, also when
/// the file was made readable to others before (SQLite gives its side files the database's mode).
#[cfg(unix)]
#[test]
fn the_database_and_its_wal_and_shm_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let side = |p: &std::path::Path, suffix: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // a fresh registry, written to while open
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    reg.add(record("dev-a", &[1], &[1; 16])).unwrap();
    for p in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(reg);
    // a database someone made readable to all (a copy, a chmod), with side files of that mode
    // left behind (a crash): all owner-only again once opened
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    for suffix in ["-wal", "-shm"] {
        let p = side(&path, suffix);
        std::fs::write(&p, [0_u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut reg = Registry::open(&path, Some(key())).unwrap();
    reg.add(record("dev-b", &[2], &[2; 16])).unwrap();
    for p in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
        assert!(p.exists(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
