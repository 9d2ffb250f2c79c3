//! `require_root` without root: the test binary ends at once, exit status 101, with one line
//! naming the test and what needs root — not a panic, and nothing after it runs. The test runs
//! itself again as `nobody` (setpriv, util-linux), which needs root to begin with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

const CHILD: &str = "V6IOT_REQUIRE_ROOT_CHILD";

#[test]
fn without_root_the_binary_ends_at_once_with_one_line() {
    if std::env::var_os(CHILD).is_some() {
        // The child, as `nobody`.
        v6iot_testkit::require_root("a check of require_root");
        panic!("require_root returned without root");
    }
    v6iot_testkit::require_root("setpriv, to run this test again as another user");
    let setpriv = v6iot_testkit::system_binary("setpriv", "util-linux");
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_root_the_binary_ends_at_once_with_one_line",
        ])
        .args(["--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines,
        [
            "error: without_root_the_binary_ends_at_once_with_one_line needs root (a check of \
             require_root); running as uid 65534. Run ./scripts/test as root, or `sudo -E cargo test`."
        ],
        "one line, nothing else: {stderr}"
    );
}
