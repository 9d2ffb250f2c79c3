//! The edge's command line, as the tests that start an edge of their own need it.

use std::path::Path;
use std::process::Command;

/// Runs `edge devices keygen KEY_FILE` (`edge`: the `v6iot-edge` binary of this build) and
/// returns the seal key it wrote, in hex (what `V6IOT_SEAL_KEY` takes); `key_file` stays for a
/// configuration's `seal_key_file`. Panics with the command's output when it fails.
pub fn seal_key(edge: &Path, key_file: &Path) -> String {
    let out = Command::new(edge)
        .args(["devices", "keygen"])
        .arg(key_file)
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", edge.display()));
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(key_file).unwrap().trim().to_owned()
}
