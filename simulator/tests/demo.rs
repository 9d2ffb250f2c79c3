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
    // A clean run logs no warning, also not while it shuts down (the edge's sinks stop after
    // they acknowledged everything; the fan-out must not call that a loss).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "a clean demo logged: {warnings:#?}");
    // `made 412, sent 412, acknowledged 412, delivered 412, unsent at end 0, lost 0, …`
    let line = stdout
        .lines()
        .find(|l| l.starts_with("devices ") && l.contains(", made "))
        .expect("summary line");
    let count = |name: &str| -> u64 {
        line.split(", ")
            .find_map(|part| part.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("`{name}` in {line}"))
    };
    let made = count("made ");
    assert!(made >= 300, "about 200/s for 2 s: {line}");
    assert_eq!(count("sent "), made, "{line}");
    assert_eq!(count("acknowledged "), made, "{line}");
    assert_eq!(count("delivered "), made, "every report delivered: {line}");
    assert_eq!(
        (
            count("unsent at end "),
            count("lost "),
            count("refused "),
            count("duplicates ")
        ),
        (0, 0, 0, 0),
        "{line}"
    );
}
