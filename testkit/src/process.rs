//! Child processes: killed when the test lets go of them, their output read line by line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves
/// nothing running behind it.
#[derive(Debug)]
pub struct Running(pub Child);

impl Running {
    /// `kill -9` and reap it: no chance to write anything on the way out.
    pub fn kill(&mut self) {
        // Err only when it has already exited; wait() reaps it either way.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM and wait for it to exit (a graceful stop: mosquitto saves its sessions).
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .expect("`kill` (Debian procps) must be installed");
        assert!(status.success(), "kill -TERM {}", self.0.id());
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` with stdout and stderr read line by line, both into one channel.
pub fn spawn_lines(mut cmd: Command) -> (Running, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return; // nobody reads any more
                }
            }
        });
    }
    (Running(child), rx)
}

/// Reads lines into `seen` until one contains `needle`; panics (with every line read) when
/// none has within `limit`, or when the output ended first.
pub fn await_line(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
    seen: &mut Vec<String>,
) {
    let deadline = Instant::now() + limit;
    while !seen.iter().any(|l| l.contains(needle)) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no line with `{needle}` within {limit:?}: {seen:#?}"));
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with `{needle}` within {limit:?} ({e}): {seen:#?}"),
        }
    }
}

/// Reads every line still to come into `seen` until the process's output has ended (the
/// channel disconnects); panics when it is still open after `limit`.
pub fn drain_until_closed(rx: &mpsc::Receiver<String>, limit: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("output still open after {limit:?}: {seen:#?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn lines_of_both_streams_arrive_and_the_end_is_seen() {
        let (_child, rx) = spawn_lines(sh("echo one; echo two >&2; echo three"));
        let mut seen = Vec::new();
        await_line(&rx, "two", Duration::from_secs(10), &mut seen);
        drain_until_closed(&rx, Duration::from_secs(10), &mut seen);
        seen.sort();
        assert_eq!(seen, ["one", "three", "two"]);
    }

    #[test]
    #[should_panic(expected = "no line with `never`")]
    fn a_missing_line_fails_when_the_output_ends() {
        let (_child, rx) = spawn_lines(sh("echo only"));
        await_line(&rx, "never", Duration::from_secs(10), &mut Vec::new());
    }

    #[test]
    fn dropped_means_killed() {
        let running = Running(sh("sleep 30").spawn().unwrap());
        let pid = running.0.id();
        drop(running);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
