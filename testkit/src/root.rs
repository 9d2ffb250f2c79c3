//! The one check a test that needs root makes first.

use std::io::Write as _;

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// proc(5): /proc/self is owned by the process's effective user id.
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

/// Stops the whole test run at once unless this process runs as root, with one line naming
/// `what` needs root (e.g. "a network namespace"). Every test that needs root calls it first.
///
/// It ends the process (exit status 101, as a failed test binary) instead of panicking: a
/// panic fails only this test, and a plain `cargo test` by another user would print one panic
/// per such test, halfway through. The line goes to stderr directly, past the test harness's
/// output capture, which would swallow it on exit.
pub fn require_root(what: &str) {
    let euid = effective_uid();
    if euid == 0 {
        return;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!(
        "\nerror: {test} needs root ({what}); running as uid {euid}. Run ./scripts/test as root, \
         or `sudo -E cargo test`.\n"
    );
    let mut stderr = std::io::stderr().lock();
    // Nothing more can be done if stderr is gone; the exit status still says it failed.
    let _ = stderr.write_all(line.as_bytes());
    let _ = stderr.flush();
    std::process::exit(101);
}
