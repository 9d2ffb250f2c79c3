//! `v6iot-sim demo` end to end (embedded broker, edge router, devices) at a small size, and
//! `v6iot-sim run` against it through the report file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

#[test]
fn a_small_demo_delivers_every_record() {
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args([
            "demo",
            "--devices",
            "50",
            "--duration",
            "2s",
            "--rate",
            "200/s",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("devices 50 (registered 50)"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sent "))
        .expect("summary line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (sent, acked, refused) = (numbers[0], numbers[1], numbers[2]);
    assert!(sent >= 300, "about 200/s for 2 s: {line}");
    assert_eq!((acked, refused), (sent, 0), "{line}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("delivered at the broker"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers[0], sent, "every record delivered: {line}");
    assert_eq!(numbers[1], 0, "none lost: {line}");
}
