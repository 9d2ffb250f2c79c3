//! The audit trail: the hash chain verifies and follows its documented format; the schema
//! refuses changes; rows altered or removed behind its back — with a raw connection or with
//! Debian's `sqlite3` CLI (scripts/test installs it) after dropping the triggers — are named by
//! `verify`; `who_had` answers address-time questions across moves and re-assignments. Rows cut
//! from the end pass the chain alone but not its checkpoint: the signed file the edge keeps
//! (its keeper is tested here on its own) and the head it publishes, through
//! `v6iot-edge audit verify`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};
use v6iot_edge_router::audit::checkpoint::{self, Checkpoint, CheckpointFile};
use v6iot_edge_router::audit::checkpointer::{CheckpointConfig, Checkpointer};
use v6iot_edge_router::audit::{AuditError, AuditEvent, AuditKind, ChainBroken};
use v6iot_edge_router::registry_db::{
    DeviceRecord, DeviceState, MasterSecret, Registry, SEAL_KEY_ENV, SealKey,
};
use v6iot_testkit::sqlite3;

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000 + secs).unwrap()
}

fn addr(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

fn key() -> SealKey {
    SealKey::from_bytes(&[1; 32]).unwrap()
}

fn open(path: &Path) -> Registry {
    Registry::open(path, Some(key())).unwrap()
}

/// A registry with 6 audit rows: 2 provisioned, 4 about addresses.
fn populated(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("registry.db");
    let mut reg = open(&path);
    for (id, kid) in [("dev-a", 1u8), ("dev-b", 2)] {
        reg.add(DeviceRecord {
            id: id.to_owned(),
            kid: vec![kid],
            master_secret: MasterSecret::new(vec![kid; 16]),
            master_salt: None,
            class: 1,
            prefixes: vec![],
            state: DeviceState::Active,
        })
        .unwrap();
    }
    let log = reg.audit();
    log.append(
        &AuditEvent::new(AuditKind::AddressBound, "dev-a")
            .at(t(10))
            .address(addr("2001:db8:1200:305::a")),
    )
    .unwrap();
    log.append(&AuditEvent::auth_failure("unknown kid 77 from [2001:db8::66]:5683").at(t(11)))
        .unwrap();
    log.append(
        &AuditEvent::new(AuditKind::CommandDelivered, "dev-a")
            .at(t(12))
            .detail("cmd c1 PUT /actuators/valve"),
    )
    .unwrap();
    log.append(
        &AuditEvent::new(AuditKind::AddressBound, "dev-b")
            .at(t(13))
            .address(addr("2001:db8:1200:305::b")),
    )
    .unwrap();
    assert_eq!(log.verify().unwrap().rows, 6);
    path
}

fn broken_row(reg: &Registry) -> ChainBroken {
    match reg.audit().verify() {
        Err(AuditError::ChainBroken(b)) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

/// The documented canonical bytes, written out independently of the crate.
fn documented_hash(
    prev: &[u8],
    seq: i64,
    at_us: i64,
    kind: &str,
    device: Option<&str>,
    address: Option<&[u8]>,
    detail: &str,
) -> Vec<u8> {
    let field = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend((b.len() as u32).to_be_bytes());
        out.extend(b);
    };
    let mut bytes = prev.to_vec();
    bytes.extend(b"v6iot-audit-v1");
    bytes.extend(seq.to_be_bytes());
    bytes.extend(at_us.to_be_bytes());
    field(&mut bytes, kind.as_bytes());
    for opt in [device.map(str::as_bytes), address] {
        match opt {
            None => bytes.push(0),
            Some(b) => {
                bytes.push(1);
                field(&mut bytes, b);
            }
        }
    }
    field(&mut bytes, detail.as_bytes());
    Sha256::digest(&bytes).to_vec()
}

#[test]
fn the_chain_verifies_and_follows_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let reg = open(&path);
    let report = reg.audit().verify().unwrap();

    let raw = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = raw
        .prepare("SELECT seq, at_us, kind, device, address, detail, prev_hash, hash FROM audit ORDER BY seq")
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut prev = vec![0u8; 32];
    let mut n = 0;
    while let Some(r) = rows.next().unwrap() {
        let device: Option<String> = r.get(3).unwrap();
        let address: Option<Vec<u8>> = r.get(4).unwrap();
        let kind: String = r.get(2).unwrap();
        let detail: String = r.get(5).unwrap();
        let expected = documented_hash(
            &prev,
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            &kind,
            device.as_deref(),
            address.as_deref(),
            &detail,
        );
        assert_eq!(r.get::<_, Vec<u8>>(6).unwrap(), prev);
        assert_eq!(r.get::<_, Vec<u8>>(7).unwrap(), expected, "row {n}");
        prev = expected;
        n += 1;
    }
    assert_eq!(n, 6);
    assert_eq!(report.head.to_vec(), prev);

    // Rows read back as written, times to the microsecond.
    let a = reg.audit().history("dev-a").unwrap();
    assert_eq!(
        a.iter().map(|r| r.event.kind).collect::<Vec<_>>(),
        [
            AuditKind::Provisioned,
            AuditKind::AddressBound,
            AuditKind::CommandDelivered
        ]
    );
    assert_eq!(a[1].event.at, t(10));
    assert_eq!(a[1].event.address, Some(addr("2001:db8:1200:305::a")));
    assert_eq!(a[2].event.detail, "cmd c1 PUT /actuators/valve");
    let b = reg
        .audit()
        .address_history(addr("2001:db8:1200:305::b"))
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].seq, 6);
}

#[test]
fn incomplete_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(&dir.path().join("r.db"));
    let e = reg
        .audit()
        .append(&AuditEvent::new(AuditKind::AddressBound, "d"))
        .unwrap_err();
    assert!(
        e.to_string().contains("address_bound: needs an address"),
        "{e}"
    );
    let mut no_device = AuditEvent::auth_failure("x");
    no_device.kind = AuditKind::Revoked;
    let e = reg.audit().append(&no_device).unwrap_err();
    assert!(e.to_string().contains("revoked: needs a device"), "{e}");
    assert!(reg.audit().is_empty().unwrap());
}

#[test]
fn the_schema_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let raw = rusqlite::Connection::open(&path).unwrap();
    for sql in [
        "UPDATE audit SET detail = 'x' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 6",
        "DELETE FROM audit",
        // Not at the end, or over an existing row (REPLACE would delete it silently).
        "INSERT INTO audit VALUES (9, 0, 'revoked', 'd', NULL, '', x'', x'')",
        "INSERT OR REPLACE INTO audit VALUES (2, 0, 'revoked', 'd', NULL, '', x'', x'')",
    ] {
        let e = raw.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains("audit is append-only"), "{sql}: {e}");
    }
    drop(raw);
    open(&path).audit().verify().unwrap();
}

#[test]
fn a_row_altered_with_a_raw_connection_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER audit_no_update; \
         UPDATE audit SET device = 'mallory' WHERE seq = 3;",
    )
    .unwrap();
    let reg = open(&path);
    let b = broken_row(&reg);
    assert_eq!(b.row, 3, "{b}");
    assert!(b.reason.contains("altered"), "{b}");

    // Recomputing the altered row's hash moves the break to the next row.
    let (prev, at_us, detail): (Vec<u8>, i64, String) = raw
        .query_row(
            "SELECT prev_hash, at_us, detail FROM audit WHERE seq = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let address = addr("2001:db8:1200:305::a").octets();
    let forged = documented_hash(
        &prev,
        3,
        at_us,
        "address_bound",
        Some("mallory"),
        Some(&address),
        &detail,
    );
    raw.execute("UPDATE audit SET hash = ?1 WHERE seq = 3", [forged])
        .unwrap();
    let b = broken_row(&reg);
    assert_eq!(b.row, 4, "{b}");
    assert!(b.reason.contains("prev_hash"), "{b}");
}

#[test]
fn rows_edited_or_deleted_with_the_sqlite3_cli_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);

    // Edited: the detail of row 5 (the command).
    sqlite3(
        &path,
        "DROP TRIGGER audit_no_update; \
         UPDATE audit SET detail = 'cmd c1 PUT /actuators/valve off' WHERE seq = 5;",
    );
    let reg = open(&path);
    let b = broken_row(&reg);
    assert_eq!(b.row, 5, "{b}");
    let e = AuditError::ChainBroken(b).to_string();
    assert!(e.starts_with("audit chain broken at row 5:"), "{e}");
    drop(reg);

    // Deleted: row 2, in a fresh copy.
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = populated(&dir2);
    sqlite3(
        &path2,
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 2;",
    );
    let b = broken_row(&open(&path2));
    assert_eq!(b.row, 2, "{b}");
    assert!(
        b.reason.contains("row 2 is missing (the next row is 3)"),
        "{b}"
    );
}

#[test]
fn who_had_an_address_when() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(&dir.path().join("r.db"));
    let log = reg.audit();
    let addr1 = addr("2001:db8:1200:305::1");
    let addr2 = addr("2001:db8:1200:305::2");
    let bind = |kind, device: &str, address, at| {
        log.append(&AuditEvent::new(kind, device).address(address).at(at))
            .unwrap();
    };
    // A at addr1 from t1, moves to addr2 at t2; B takes addr1 at t3.
    let (t1, t2, t3) = (t(100), t(200), t(300));
    bind(AuditKind::AddressBound, "A", addr1, t1);
    bind(AuditKind::AddressChanged, "A", addr2, t2);
    bind(AuditKind::AddressBound, "B", addr1, t3);
    // Events that are not bindings change nothing.
    log.append(&AuditEvent::new(AuditKind::CommandDelivered, "A").at(t(250)))
        .unwrap();

    let who = |a, at| log.who_had(a, at).unwrap();
    let ms = Duration::milliseconds(1);
    assert_eq!(who(addr1, t1 - ms), None, "before anyone");
    assert_eq!(who(addr1, t1).as_deref(), Some("A"), "from t1 on");
    assert_eq!(who(addr1, t1 + Duration::seconds(50)).as_deref(), Some("A"));
    assert_eq!(who(addr1, t2 - ms).as_deref(), Some("A"));
    assert_eq!(who(addr1, t2), None, "A moved away at t2");
    assert_eq!(who(addr1, t2 + Duration::seconds(50)), None);
    assert_eq!(who(addr1, t3).as_deref(), Some("B"));
    assert_eq!(who(addr1, t3 + Duration::days(30)).as_deref(), Some("B"));
    assert_eq!(who(addr2, t2 - ms), None);
    assert_eq!(who(addr2, t2 + ms).as_deref(), Some("A"));
    assert_eq!(
        who(addr2, t3 + ms).as_deref(),
        Some("A"),
        "A still at addr2"
    );

    // A comes back to addr1 at t4: B lost it then (another device's binding ends B's), and
    // A's binding at addr2 ended.
    let t4 = t(400);
    bind(AuditKind::AddressChanged, "A", addr1, t4);
    assert_eq!(who(addr1, t4).as_deref(), Some("A"));
    assert_eq!(who(addr1, t4 - ms).as_deref(), Some("B"));
    assert_eq!(who(addr2, t4), None);

    // Rows appended late (out of time order) are placed by their time.
    let addr3 = addr("2001:db8:1200:305::3");
    bind(AuditKind::AddressBound, "C", addr3, t(150));
    assert_eq!(who(addr3, t(160)).as_deref(), Some("C"));
    assert_eq!(who(addr3, t(140)), None);
    log.verify().unwrap();
}

#[test]
fn a_batch_is_appended_in_order_in_one_transaction_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(&dir.path().join("r.db"));
    let log = reg.audit();
    let batch = vec![
        AuditEvent::new(AuditKind::AddressBound, "d1")
            .at(t(10))
            .address(addr("2001:db8::1")),
        AuditEvent::auth_failure("replay from [2001:db8::9]:5683").at(t(11)),
        AuditEvent::new(AuditKind::AddressChanged, "d1")
            .at(t(12))
            .address(addr("2001:db8::2")),
    ];
    assert_eq!(log.append_all(&batch).unwrap(), 3);
    assert_eq!(log.verify().unwrap().rows, 3);
    assert_eq!(
        log.who_had(addr("2001:db8::1"), t(11)).unwrap().as_deref(),
        Some("d1")
    );
    assert_eq!(log.who_had(addr("2001:db8::1"), t(13)).unwrap(), None);
    // An incomplete event fails the whole batch: nothing of it is written.
    let bad = vec![
        AuditEvent::new(AuditKind::Registration, "d2").at(t(20)),
        AuditEvent::new(AuditKind::AddressBound, "d2").at(t(21)), // no address
    ];
    assert!(matches!(log.append_all(&bad), Err(AuditError::Invalid(_))));
    assert_eq!(log.verify().unwrap().rows, 3);
}

/// `v6iot-edge audit verify --data-dir DIR ARGS…`, with the seal key or without: (ok, stdout,
/// stderr).
fn verify_cli(dir: &Path, with_key: bool, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"));
    cmd.args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(args)
        .env_remove(SEAL_KEY_ENV)
        .env("RUST_LOG", "warn");
    if with_key {
        cmd.env(SEAL_KEY_ENV, "01".repeat(32));
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_last_row_deleted_with_the_sqlite3_cli_fails_verify_against_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let file = dir.path().join("audit.checkpoint");
    // The checkpoint the running edge keeps (same code) and the head it publishes.
    let (rows, head) = open(&path).audit().head().unwrap();
    assert_eq!(rows, 6);
    let cp = Checkpoint {
        rows,
        head,
        at_ms: 1_780_000_020_000,
    };
    checkpoint::write(&file, &cp, &key()).unwrap();
    let head_hex = hex::encode(head);
    let published = ["--expect-rows", "6", "--expect-head", head_hex.as_str()];

    // Unchanged: passes against the file (the default) and against the published head.
    let (ok, out, err) = verify_cli(dir.path(), true, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("audit chain ok: 6 rows, head "), "{out}");
    assert!(out.contains("reaches checkpoint"), "{out}");
    assert!(out.contains("signature checked"), "{out}");
    let (ok, out, err) = verify_cli(dir.path(), true, &published);
    assert!(ok, "{out}{err}");
    assert!(out.contains("reaches --expect-rows/--expect-head"), "{out}");

    // The last row deleted with the sqlite3 CLI: the chain alone still verifies ...
    sqlite3(
        &path,
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 6;",
    );
    assert_eq!(open(&path).audit().verify().unwrap().rows, 5);
    // ... its checkpoint does not, and says how many rows are missing.
    match open(&path)
        .audit()
        .verify_anchored(&[cp.anchor("the file")])
    {
        Err(AuditError::AnchorBroken(b)) => {
            assert_eq!(b.missing, Some(1), "{b}");
            assert!(
                b.to_string().starts_with("the file: the trail has 5 rows"),
                "{b}"
            );
        }
        other => panic!("expected a broken anchor, got {other:?}"),
    }
    let file_arg = file.to_str().unwrap();
    for args in [&[][..], &["--checkpoint", file_arg][..], &published[..]] {
        let (ok, out, err) = verify_cli(dir.path(), true, args);
        assert!(!ok, "{args:?} should fail: {out}");
        assert!(
            err.contains("the trail has 5 rows, the anchor 6: 1 row(s) missing after row 5"),
            "{args:?}: {err}"
        );
    }
    // A published head alone (no file): no row has it any more.
    let aside = dir.path().join("aside");
    std::fs::rename(&file, &aside).unwrap();
    let (ok, _, err) = verify_cli(dir.path(), true, &["--expect-head", head_hex.as_str()]);
    assert!(!ok);
    assert!(err.contains("no row has hash"), "{err}");
    let (ok, _, err) = verify_cli(dir.path(), true, &[]);
    assert!(ok, "without any anchor the cut is not seen: {err}");
    assert!(err.contains("no checkpoint file"), "{err}");
    std::fs::rename(&aside, &file).unwrap();

    // Another row appended in its place (a valid chain of 6 rows again): rewritten.
    open(&path)
        .audit()
        .append(&AuditEvent::auth_failure("filler").at(t(20)))
        .unwrap();
    assert_eq!(open(&path).audit().verify().unwrap().rows, 6);
    let (ok, _, err) = verify_cli(dir.path(), true, &[]);
    assert!(!ok);
    assert!(
        err.contains("row 6 has hash") && err.contains("rewritten"),
        "{err}"
    );

    // A checkpoint made to match without the seal key is refused; without the key the
    // signature cannot be checked, and the output says so.
    let row5 = open(&path).audit().history("dev-a").unwrap().pop().unwrap();
    assert_eq!(row5.seq, 5);
    let head5 = row5.hash;
    let forged = Checkpoint {
        rows: 5,
        head: head5,
        at_ms: cp.at_ms,
    };
    std::fs::write(
        &file,
        forged.to_file(&SealKey::from_bytes(&[9; 32]).unwrap()),
    )
    .unwrap();
    let (ok, _, err) = verify_cli(dir.path(), true, &[]);
    assert!(!ok);
    assert!(err.contains("MAC does not match"), "{err}");
    let (ok, out, err) = verify_cli(dir.path(), false, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("signature NOT checked"), "{out}");
    // An explicit file that is not there is an error, not a pass.
    let (ok, _, err) = verify_cli(dir.path(), true, &["--checkpoint", "/nonexistent/cp"]);
    assert!(!ok);
    assert!(err.contains("no checkpoint file"), "{err}");
}

fn read_checkpoint(file: &Path) -> Checkpoint {
    let bytes = std::fs::read(file).unwrap();
    CheckpointFile::parse(&bytes)
        .unwrap()
        .authenticate(&key())
        .unwrap()
}

#[test]
fn the_edge_never_replaces_a_checkpoint_the_trail_no_longer_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let file = dir.path().join("audit.checkpoint");
    let config = CheckpointConfig {
        file: Some(file.clone()),
        every: std::time::Duration::from_secs(60),
        min_gap: std::time::Duration::from_secs(5),
        edge: "e1".into(),
    };
    let t0 = Instant::now();
    let secs = |n| t0 + std::time::Duration::from_secs(n);
    {
        let reg = open(&path);
        let mut keeper = Checkpointer::start(config.clone(), Some(key()), reg.audit(), t0);
        let m = keeper
            .handle_timeout(t0, 1_000, reg.audit())
            .expect("one at start");
        assert_eq!(
            (m.kind.as_str(), m.edge.as_str(), m.rows),
            ("audit_checkpoint", "e1", 6)
        );
        assert_eq!(m.anchor_broken, None);
        assert_eq!(read_checkpoint(&file).rows, 6);
        // A new row: the next checkpoint comes after the gap, not before.
        reg.audit()
            .append(&AuditEvent::auth_failure("new").at(t(30)))
            .unwrap();
        keeper.changed(secs(1));
        assert!(keeper.handle_timeout(secs(1), 2_000, reg.audit()).is_none());
        assert_eq!(keeper.poll_timeout(), secs(5));
        let m = keeper.handle_timeout(secs(5), 6_000, reg.audit()).unwrap();
        assert_eq!(m.rows, 7);
        assert_eq!(m.head, hex::encode(reg.audit().head().unwrap().1));
        assert_eq!(read_checkpoint(&file), {
            let (rows, head) = reg.audit().head().unwrap();
            Checkpoint {
                rows,
                head,
                at_ms: 6_000,
            }
        });
    }
    // While the edge is stopped the last row is deleted behind its back.
    sqlite3(
        &path,
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 7;",
    );
    let reg = open(&path);
    let mut keeper = Checkpointer::start(config, Some(key()), reg.audit(), t0);
    let m = keeper.handle_timeout(t0, 9_000, reg.audit()).unwrap();
    assert_eq!(m.rows, 6);
    let why = m.anchor_broken.expect("the published checkpoint says so");
    assert!(why.contains("1 row(s) missing after row 6"), "{why}");
    // The file is kept as evidence, also at shutdown.
    keeper.finish(10_000, reg.audit());
    assert_eq!(read_checkpoint(&file).rows, 7);
    let (ok, _, err) = verify_cli(dir.path(), true, &[]);
    assert!(!ok);
    assert!(err.contains("1 row(s) missing"), "{err}");
}
