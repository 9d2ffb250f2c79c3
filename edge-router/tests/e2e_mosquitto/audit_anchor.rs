//! The audit trail's end anchored by the running edge (issue 10, point 6): its checkpoints reach
//! a real mosquitto on `_edge/e1/security` (parsed here), its signed file matches them, and
//! after the last row is deleted with the `sqlite3` CLI `v6iot-edge audit verify` fails —
//! against the file and against the head taken from the broker — naming the row missing.

use std::process::Command;
use std::time::Duration;

use coap_lite::ResponseType;
use v6iot_testkit::sqlite3;

use super::{ANY_LOOPBACK4, Device, add_device, edge_cli, provision, start_edge_with};
use crate::{Edge, Mosquitto, TempDir, subscribe, wait_for};

/// SIGTERM (a clean stop: the edge writes its last checkpoint), then waits for the exit.
fn stop(edge: &mut Edge) {
    let mut child = edge.child.take().expect("the edge runs");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_edge_publishes_checkpoints_and_verify_finds_a_deleted_last_row() {
    let dir = TempDir::new("audit-anchor");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let rt = super::runtime();
    let seen = subscribe(&rt, broker.port);
    // A checkpoint after every batch of new rows, and every 2 s regardless.
    let mut edge = start_edge_with(
        dir.path(),
        broker.port,
        &creds,
        "[audit]\ncheckpoint_every_s = 2\ncheckpoint_min_gap_s = 0\n",
    );
    let db = creds.data.join("registry.db");
    let rows_in_db = || {
        sqlite3(&db, "SELECT max(seq) FROM audit;")
            .parse::<u64>()
            .unwrap()
    };

    // The device registers and reports: rows for its registration and address.
    let mut m1 = Device::registered("m1", 1, "127.0.0.1:0", edge.coap);
    let t = m1.telemetry(1);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    wait_for(
        "the registration's audit rows",
        Duration::from_secs(10),
        || rows_in_db() >= 3,
    );
    // Checkpoints at the broker: one that covers every row, and a regular one after it.
    wait_for(
        "two checkpoints of the whole trail",
        Duration::from_secs(15),
        || {
            let n = rows_in_db();
            let s = seen.lock().unwrap();
            s.checkpoints.iter().filter(|c| c["rows"] == n).count() >= 2
        },
    );
    let published = seen.lock().unwrap().checkpoints.last().unwrap().clone();
    let rows = published["rows"].as_u64().unwrap();
    let head = published["head"].as_str().unwrap().to_owned();
    assert_eq!(published["kind"], "audit_checkpoint");
    assert_eq!(published["edge"], "e1");
    assert!(published.get("anchor_broken").is_none(), "{published}");
    assert!(published["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(head.len(), 64);
    assert_eq!(rows, rows_in_db());
    assert_eq!(
        sqlite3(
            &db,
            &format!("SELECT lower(hex(hash)) FROM audit WHERE seq = {rows};")
        ),
        head,
        "the published head is the last row's hash"
    );
    // The security reports are not mistaken for checkpoints, nor the other way round.
    assert!(
        seen.lock()
            .unwrap()
            .security
            .iter()
            .all(|r| r["kind"] == "security_report")
    );

    // A clean stop; the file then holds the whole trail too.
    stop(&mut edge);
    let cli = |args: &[&str]| {
        let out = edge_cli(&creds, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let rows_text = rows.to_string();
    let from_broker = [
        "audit",
        "verify",
        "--expect-rows",
        rows_text.as_str(),
        "--expect-head",
        head.as_str(),
    ];
    let (ok, text) = cli(&["audit", "verify"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("reaches checkpoint") && text.contains("signature checked"),
        "{text}"
    );
    let (ok, text) = cli(&from_broker);
    assert!(ok, "{text}");

    // The last row deleted behind the registry's back.
    sqlite3(
        &db,
        &format!("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = {rows};"),
    );
    let missing = format!("1 row(s) missing after row {}", rows - 1);
    let (ok, text) = cli(&["audit", "verify"]);
    assert!(!ok, "verify passed against the edge's checkpoint: {text}");
    assert!(text.contains(&missing), "{text}");
    // Against the head from the broker alone (the file moved aside).
    let file = creds.data.join("audit.checkpoint");
    std::fs::rename(&file, creds.data.join("audit.checkpoint.aside")).unwrap();
    let (ok, text) = cli(&from_broker);
    assert!(
        !ok,
        "verify passed against the published checkpoint: {text}"
    );
    assert!(text.contains(&missing), "{text}");
}
