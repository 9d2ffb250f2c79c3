//! What the workspace's integration tests share, so that each piece exists once: free loopback
//! ports never handed out twice in a process ([`ports`]), a directory removed on drop
//! ([`TempDir`]), waiting for a condition with a deadline ([`wait_for`]), child processes killed
//! on drop and read line by line ([`process`]), the binaries of this build and of the system
//! ([`binaries`]; [`sqlite3`], the CLI on a database), a fresh seal key from the edge's binary
//! ([`edge::seal_key`]), a real mosquitto that is listening before it is handed out ([`Mosquitto`]),
//! the check that stops a run which lacks root at once, with one message ([`require_root`]), and
//! with the feature `certs`, test certificates from rcgen (`certs::make_certs`).
//!
//! A dev-dependency only (`publish = false`); it depends on no v6iot crate, so every crate can
//! use it, and on nothing but std without `certs`. Everything here panics on failure: that is how a test fails.

// A test-support crate: a failed step ends the test, with the message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod binaries;
#[cfg(feature = "certs")]
pub mod certs;
pub mod edge;
pub mod mosquitto;
pub mod ports;
pub mod process;
mod root;
mod temp;

pub use binaries::{built_binary, chromium_headless, sqlite3, system_binary, system_binary_named};
pub use mosquitto::Mosquitto;
pub use ports::{free_tcp_port, free_tcp_port_on_both, free_udp_port, unique_port};
pub use process::{Running, await_line, drain_until_closed, spawn_lines};
pub use root::{is_root, require_root};
pub use temp::TempDir;

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it holds; panics naming `what` once `limit` has passed.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_once_the_check_holds() {
        let mut calls = 0;
        wait_for("the third call", Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn wait_for_fails_naming_what_it_waited_for() {
        wait_for("never", Duration::from_millis(50), || false);
    }
}
