//! The `v6iot-edge devices …` and `v6iot-edge audit …` commands, through the built binary:
//! keygen → import of a generated credentials CSV → list → show → add → revoke → rotate →
//! audit --device / --address --at / verify, with the key from a config file or the
//! environment.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use v6iot_edge_router::audit::{AuditEvent, AuditKind};
use v6iot_edge_router::registry_db::{
    DeviceRecord, DeviceState, MasterSecret, Registry, SEAL_KEY_ENV, SealKey, csv,
};

const BIN: &str = env!("CARGO_BIN_EXE_v6iot-edge");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env_key: Option<&str>, stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove(SEAL_KEY_ENV)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = env_key {
        cmd.env(SEAL_KEY_ENV, k);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        ok: status.success(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

#[track_caller]
fn ok(args: &[&str], env_key: Option<&str>, stdin: Option<&str>) -> String {
    let r = run(args, env_key, stdin);
    assert!(
        r.ok,
        "v6iot-edge {args:?} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

#[track_caller]
fn fails(args: &[&str], env_key: Option<&str>) -> String {
    let r = run(args, env_key, None);
    assert!(!r.ok, "v6iot-edge {args:?} should fail:\n{}", r.stdout);
    r.stderr
}

fn generated_csv(path: &Path, n: u32) -> Vec<DeviceRecord> {
    let mut text = format!("{}\n", csv::HEADER);
    let mut records = Vec::new();
    for i in 0..n {
        let r = DeviceRecord {
            id: format!("sim{i:06}"),
            kid: vec![u8::try_from(i).unwrap()],
            master_secret: MasterSecret::random(16).unwrap(),
            master_salt: (i % 2 == 1).then(|| vec![0xab; 8]),
            class: 2,
            prefixes: vec!["2001:db8:1200:305::/64".parse().unwrap()],
            state: DeviceState::Active,
        };
        text.push_str(&csv::format_line(&r));
        text.push('\n');
        records.push(r);
    }
    std::fs::write(path, text).unwrap();
    records
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SECRET: &str = "00112233445566778899aabbccddeeff";

/// `devices add --data-dir DATA --id ID --kid KID --secret SECRET`.
fn add_args<'a>(data: &'a Path, id: &'a str, kid: &'a str, secret: &'a str) -> [&'a str; 10] {
    let data = s(data);
    [
        "devices",
        "add",
        "--data-dir",
        data,
        "--id",
        id,
        "--kid",
        kid,
        "--secret",
        secret,
    ]
}

#[test]
fn provision_import_list_show_revoke_rotate_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let key_file = dir.path().join("seal.key");
    let config = dir.path().join("edge.toml");
    let creds = dir.path().join("creds.csv");

    // A seal key, referenced by the configuration.
    ok(&["devices", "keygen", s(&key_file)], None, None);
    let key_hex = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(key_hex.len(), 64);
    assert!(fails(&["devices", "keygen", s(&key_file)], None).contains("create"));
    std::fs::write(
        &config,
        format!(
            "site = \"plant-a\"\ndata_dir = \"{}\"\n[registry]\nseal_key_file = \"{}\"\n",
            s(&data),
            s(&key_file)
        ),
    )
    .unwrap();
    let cfg = ["--config", s(&config)];

    // Nothing there yet: reading commands do not create a database.
    assert!(fails(&["devices", "list", "--config", s(&config)], None).contains("no registry at"));

    // Import.
    let records = generated_csv(&creds, 5);
    let out = ok(
        &["devices", "import", s(&creds), cfg[0], cfg[1]],
        None,
        None,
    );
    assert!(out.starts_with("imported 5 device(s) from"), "{out}");
    assert!(data.join("registry.db").exists());

    // List, with and without the key.
    let out = ok(&["devices", "list", cfg[0], cfg[1]], None, None);
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("sim000000"),
        "{out}"
    );
    assert!(out.contains("2001:db8:1200:305::/64"));
    let out = ok(&["devices", "list", "--data-dir", s(&data)], None, None);
    assert_eq!(out.lines().count(), 6, "{out}");

    // Show: everything but the secret.
    let out = ok(
        &["devices", "show", "sim000001", cfg[0], cfg[1]],
        None,
        None,
    );
    for needle in [
        "id:       sim000001",
        "kid:      01",
        "secret:   16 bytes, sealed (opens with this key)",
        "salt:     abababababababab",
        "class:    2",
        "state:    active",
        "prefixes: 2001:db8:1200:305::/64",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert!(!out.contains(records[1].master_secret.to_hex().as_str()));

    // Add with the key from the environment and the secret from standard input.
    let out = ok(
        &[
            "devices",
            "add",
            "--data-dir",
            s(&data),
            "--id",
            "manual-1",
            "--kid",
            "0A0B",
            "--secret",
            "-",
            "--class",
            "7",
            "--prefix",
            "2001:db8:1200:306::/64",
            "--prefix",
            "2001:db8:1200:307::/64",
        ],
        Some(&key_hex),
        Some("00112233445566778899aabbccddeeff\n"),
    );
    assert_eq!(out.trim(), "added manual-1");
    let err = fails(&add_args(&data, "manual-2", "0a0b", SECRET), Some(&key_hex));
    assert!(
        err.contains("kid 0a0b is already device `manual-1`'s"),
        "{err}"
    );
    // A wrong key is refused; no key refuses adding.
    let wrong = "11".repeat(32);
    let err = fails(
        &["devices", "show", "manual-1", "--data-dir", s(&data)],
        Some(&wrong),
    );
    assert!(err.contains("not the one"), "{err}");
    let err = fails(&add_args(&data, "m3", "0c", SECRET), None);
    assert!(err.contains("no seal key"), "{err}");

    // Revoke, then list by state.
    let out = ok(
        &["devices", "revoke", "sim000001", cfg[0], cfg[1]],
        None,
        None,
    );
    assert_eq!(out.trim(), "revoked sim000001 (was active)");
    let out = ok(
        &["devices", "list", "--state", "revoked", cfg[0], cfg[1]],
        None,
        None,
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("sim000001"));
    let err = fails(&["devices", "rotate", "sim000001", cfg[0], cfg[1]], None);
    assert!(err.contains("revoked"), "{err}");

    // Rotate prints the new secret, which the registry then holds.
    let out = ok(
        &["devices", "rotate", "sim000002", cfg[0], cfg[1]],
        None,
        None,
    );
    let new_secret = out.trim().to_owned();
    assert_eq!(new_secret.len(), 32, "{out}");
    assert_ne!(new_secret, records[2].master_secret.to_hex().as_str());
    {
        let reg = Registry::open(
            &data.join("registry.db"),
            Some(SealKey::from_hex(&key_hex).unwrap()),
        )
        .unwrap();
        assert_eq!(
            reg.get("sim000002")
                .unwrap()
                .unwrap()
                .record
                .master_secret
                .to_hex()
                .as_str(),
            new_secret
        );
        // The ingress would record address bindings; do it here through the library.
        let t0 =
            v6iot_edge_router::registry_db::admin::parse_rfc3339("2026-05-01T12:00:00Z").unwrap();
        reg.audit()
            .append(
                &AuditEvent::new(AuditKind::AddressBound, "sim000003")
                    .address("2001:db8:1200:305::3".parse().unwrap())
                    .at(t0),
            )
            .unwrap();
    }

    // Audit: a device's history, who had an address, verify.
    let out = ok(
        &["audit", "--device", "sim000001", cfg[0], cfg[1]],
        None,
        None,
    );
    let kinds: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(kinds, ["provisioned", "revoked"], "{out}");
    let who = |at: &str| {
        run(
            &[
                "audit",
                "--address",
                "2001:db8:1200:305::3",
                "--at",
                at,
                "--data-dir",
                s(&data),
            ],
            None,
            None,
        )
    };
    let r = who("2026-05-01T14:30:00+02:00");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "sim000003");
    let r = who("2026-05-01T11:59:59Z");
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("no device held 2001:db8:1200:305::3 at 2026-05-01T11:59:59Z"),
        "{}",
        r.stderr
    );
    let err = fails(
        &[
            "audit",
            "--address",
            "2001:db8::1",
            "--at",
            "yesterday",
            cfg[0],
            cfg[1],
        ],
        None,
    );
    assert!(err.contains("RFC 3339"), "{err}");
    let out = ok(&["audit", "verify", cfg[0], cfg[1]], None, None);
    // 5 imported + 1 added + revoke + rotate + binding.
    assert!(out.starts_with("audit chain ok: 9 rows, head "), "{out}");

    // A tampered row makes `verify` fail, naming it.
    let raw = rusqlite::Connection::open(data.join("registry.db")).unwrap();
    raw.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'x' WHERE seq = 7;")
        .unwrap();
    drop(raw);
    let err = fails(&["audit", "verify", cfg[0], cfg[1]], None);
    assert!(err.contains("audit chain broken at row 7"), "{err}");
}

#[test]
fn a_bad_csv_is_refused_whole_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = dir.path().join("bad.csv");
    std::fs::write(
        &creds,
        format!(
            "{}\nok,01,00112233445566778899aabbccddeeff,,1,\nbad,01,0011,,1,\nworse,02,00112233445566778899aabbccddeeff,,1,2001:db8::/200\n",
            csv::HEADER
        ),
    )
    .unwrap();
    let key = SealKey::generate_hex().unwrap();
    let err = fails(
        &["devices", "import", s(&creds), "--data-dir", s(&data)],
        Some(&key),
    );
    assert!(err.contains("2 bad line(s), nothing imported"), "{err}");
    assert!(err.contains("line 3: device `bad`: master secret"), "{err}");
    assert!(err.contains("line 4: prefixes"), "{err}");
    let out = ok(&["devices", "list", "--data-dir", s(&data)], None, None);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
}

#[test]
fn a_secret_already_in_the_registry_is_refused_by_add_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = dir.path().join("creds.csv");
    let key = SealKey::generate_hex().unwrap();
    let key = Some(key.as_str());
    let records = generated_csv(&creds, 3);
    ok(
        &["devices", "import", s(&creds), "--data-dir", s(&data)],
        key,
        None,
    );
    let secret = |i: usize| records[i].master_secret.to_hex().as_str().to_owned();
    let add = |id: &str, kid: &str, secret: &str| run(&add_args(&data, id, kid, secret), key, None);
    let listed = || {
        ok(&["devices", "list", "--data-dir", s(&data)], None, None)
            .lines()
            .count()
            - 1
    };

    // `devices add` with sim000001's secret (another kid, no salt where it had one).
    let r = add("m1", "0a", &secret(1));
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("the master secret of `m1` is already device `sim000001`'s"),
        "{}",
        r.stderr
    );
    assert_eq!(listed(), 3);

    // An import repeating a secret within the file and one of the registry: all refused.
    let fresh = MasterSecret::random(16).unwrap().to_hex();
    std::fs::write(
        &creds,
        format!(
            "{}\nnew-1,11,{f},,1,\nnew-2,12,{f},9e7c,1,\nnew-3,13,{},,1,\nnew-4,14,{},,1,\n",
            csv::HEADER,
            secret(2),
            MasterSecret::random(16).unwrap().to_hex().as_str(),
            f = fresh.as_str(),
        ),
    )
    .unwrap();
    let err = fails(
        &["devices", "import", s(&creds), "--data-dir", s(&data)],
        key,
    );
    assert!(err.contains("2 bad line(s), nothing imported"), "{err}");
    assert!(
        err.contains("line 3: the master secret of `new-2` is already device `new-1`'s"),
        "{err}"
    );
    assert!(err.contains("(line 2 of this file)"), "{err}");
    assert!(
        err.contains("line 4: the master secret of `new-3` is already device `sim000002`'s"),
        "{err}"
    );
    assert!(err.contains("(already in the registry)"), "{err}");
    assert_eq!(listed(), 3, "nothing of the file imported");

    // A rotation frees the old secret and takes the new one.
    let rotated = ok(
        &["devices", "rotate", "sim000000", "--data-dir", s(&data)],
        key,
        None,
    );
    let r = add("m2", "0b", rotated.trim());
    assert!(!r.ok);
    assert!(
        r.stderr.contains("already device `sim000000`'s"),
        "{}",
        r.stderr
    );
    let r = add("m3", "0c", &secret(0));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(listed(), 4);
    let out = ok(&["audit", "verify", "--data-dir", s(&data)], None, None);
    assert!(out.starts_with("audit chain ok: 5 rows"), "{out}");
}
