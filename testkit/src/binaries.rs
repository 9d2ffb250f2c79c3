//! Binaries a test runs: those of this build (next to the test) and those of the system.

use std::path::{Path, PathBuf};

/// `target/<profile>` of the build that made the running test (`target/<profile>/deps/<test>`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_path_buf()
}

/// `relative` (e.g. `v6iot-edge`, `examples/minimal_device`) in [`build_dir`]; panics naming
/// `how` to build it when it is missing.
pub fn built_binary(relative: &str, how: &str) -> PathBuf {
    let path = build_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: {how} (`cargo test --workspace` and scripts/test build the whole \
         workspace first)",
        path.display()
    );
    path
}

/// The system's `name` (in the sbin and bin directories, then on `PATH`); panics naming the
/// Debian `package` to install when it is missing.
pub fn system_binary(name: &str, package: &str) -> PathBuf {
    system_binary_named(&[name], package)
}

/// The first of `names` the system has (a tool Debian ships under several names, e.g.
/// `coap-client-notls` and `coap-client`); panics naming `package` when it has none.
pub fn system_binary_named(names: &[&str], package: &str) -> PathBuf {
    const DIRS: [&str; 6] = [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = DIRS
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: apt-get install {package} (scripts/test installs it)",
                names.join(" or ")
            )
        })
}

/// `sqlite3 DB SQL` with Debian's `sqlite3` CLI (a second writer the stores do not control);
/// its output, trimmed. Panics naming the Debian package when the CLI is missing, and with
/// its stderr when the statement fails.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI (Debian package sqlite3) is not installed: run scripts/test");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Headless chromium with a fresh profile in `profile` and no traffic of its own (no sandbox,
/// GPU, QUIC, first-run page, background networking, component updates or sync); the caller
/// adds what it does (a screenshot, a DevTools port …).
pub fn chromium_headless(profile: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(system_binary("chromium", "chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_shell_and_names_the_package_of_what_is_missing() {
        assert!(system_binary("sh", "dash").is_file());
        let err = std::panic::catch_unwind(|| system_binary("v6iot-no-such-tool", "v6iot-pkg"));
        let message = *err.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("apt-get install v6iot-pkg"), "{message}");
        let first = system_binary_named(&["v6iot-no-such-tool", "sh", "bash"], "dash");
        assert_eq!(first.file_name().unwrap(), "sh");
    }

    #[test]
    fn sqlite3_returns_the_output_and_fails_with_the_error() {
        let dir = crate::TempDir::new("sqlite3");
        let db = dir.path().join("t.db");
        let out = sqlite3(
            &db,
            "CREATE TABLE t (x); INSERT INTO t VALUES (7); SELECT x FROM t;",
        );
        assert_eq!(out, "7");
        let err = std::panic::catch_unwind(|| sqlite3(&db, "SELECT nope FROM t;"));
        let message = *err.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("no such column"), "{message}");
    }

    #[test]
    fn this_test_sits_in_the_build_dir() {
        assert!(build_dir().join("deps").is_dir());
        assert!(built_binary("deps", "nothing to build").is_dir());
    }
}
