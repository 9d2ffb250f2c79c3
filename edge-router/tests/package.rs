//! The Debian package: the postinst makes the seal key only when it is missing (0600) and
//! leaves an existing one alone; the systemd unit passes `systemd-analyze verify`; the `.deb`
//! that `cargo deb -p v6iot-edge-router` built (scripts/test builds it once) holds the binary,
//! the unit and the configuration (a conffile), and its binary, stripped (the symbols go to the
//! dbgsym `.ddeb`), accepts its configuration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn debian_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("debian")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn postinst_creates_the_seal_key_once_and_never_replaces_it() {
    let etc = tempdir();
    let run = || {
        let out = Command::new("sh")
            .arg(debian_dir().join("postinst"))
            .arg("configure")
            .env("V6IOT_ETC", etc.path())
            .env("V6IOT_BIN", env!("CARGO_BIN_EXE_v6iot-edge"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = run();
    assert!(said.contains("created the registry seal key"), "{said}");
    let key = etc.path().join("seal.key");
    let first = std::fs::read_to_string(&key).unwrap();
    assert_eq!(first.trim().len(), 64, "64 hex digits");
    assert!(first.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // a second run (an upgrade) leaves it alone
    let said = run();
    assert!(!said.contains("created"), "{said}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), first);
    // and so does a run with a key the operator put there
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    run();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "ab".repeat(32));
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: apt-get install systemd (scripts/test does)"
    );
    // verify checks that ExecStart's program exists: point it at the binary under test
    let dir = tempdir();
    let unit = std::fs::read_to_string(debian_dir().join("v6iot-edge.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/v6iot-edge run --config /etc/v6iot/edge.toml"));
    for needed in [
        "User=v6iot",
        "StateDirectory=v6iot",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    let unit = unit.replace("/usr/bin/v6iot-edge", env!("CARGO_BIN_EXE_v6iot-edge"));
    let path = dir.path().join("v6iot-edge.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(
        !err.contains("v6iot-edge.service:"),
        "warnings about the unit: {err}"
    );
}

#[test]
fn the_deb_holds_the_binary_the_unit_and_the_configuration() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debian");
    let deb = std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no .deb in {}: build it with `cargo deb -p v6iot-edge-router` (cargo install \
                 --locked cargo-deb; scripts/test does both)",
                dir.display()
            )
        });
    let out = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let contents = String::from_utf8_lossy(&out.stdout);
    for path in [
        "./usr/bin/v6iot-edge",
        "./etc/v6iot/edge.toml",
        "system/v6iot-edge.service",
        "./usr/share/doc/v6iot-edge/README.md",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from the package:\n{contents}"
        );
    }
    // the packaged binary takes the packaged configuration as shipped
    let root = tempdir();
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(root.path().join("usr/bin/v6iot-edge"))
        .arg("check-config")
        .arg(root.path().join("etc/v6iot/edge.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("edge.toml: ok"),
        "the packaged binary refused the packaged configuration: {out:?}"
    );
    // the packaged binary is stripped: its line tables went to the dbgsym .ddeb
    let out = Command::new("readelf")
        .args(["--section-headers", "--wide"])
        .arg(root.path().join("usr/bin/v6iot-edge"))
        .output()
        .expect("readelf (Debian binutils) is not installed: apt-get install binutils");
    assert!(out.status.success(), "{out:?}");
    let sections = String::from_utf8_lossy(&out.stdout);
    assert!(sections.contains(".text"), "{sections}");
    assert!(
        [".debug_line", ".debug_info", ".symtab"]
            .iter()
            .all(|s| !sections.contains(s)),
        "the packaged binary is not stripped:\n{sections}"
    );
    let control = tempdir();
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(control.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/v6iot/edge.toml"), "{conffiles}");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("devices keygen"), "{postinst}");
    assert!(
        postinst.contains("systemctl") || postinst.contains("deb-systemd"),
        "unit enabled"
    );
}
