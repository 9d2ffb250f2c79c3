//! What the examples' end-to-end tests share: the workspace's binaries, free ports, child
//! processes read line by line, mosquitto and the `v6iot-edge` binary with imported credentials.
//! Each test binary uses a part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `target/debug` (or whichever profile built this test).
pub(crate) fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test>
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

pub(crate) fn binary(relative: &str, how: &str) -> PathBuf {
    let path = build_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: {how} (scripts/test builds the whole workspace before testing)",
        path.display()
    );
    path
}

pub(crate) fn edge_bin() -> PathBuf {
    binary("v6iot-edge", "run `cargo build -p v6iot-edge-router`")
}

pub(crate) fn example(name: &str) -> PathBuf {
    binary(
        &format!("examples/{name}"),
        "run `cargo build -p v6iot-examples --examples`",
    )
}

pub(crate) fn free_tcp_port() -> u16 {
    unique_port(|| {
        TcpListener::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

pub(crate) fn free_udp_port() -> u16 {
    unique_port(|| {
        UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// Never the same port twice in this process: the kernel may hand a port that was just
/// released out again, and two listeners of one test (or of two tests running at once)
/// then collided ("Address already in use" from mosquitto in CI).
fn unique_port(mut pick: impl FnMut() -> u16) -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = pick();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout and stderr read line by line into a channel.
pub(crate) fn spawn_lines(mut cmd: Command) -> (Running, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (Running(child), rx)
}

/// Reads every line still to come until the readers have reached the end of the process's
/// output (the channel disconnects), within `limit`.
pub(crate) fn drain_until_closed(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    seen: &mut Vec<String>,
) {
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

/// Reads lines until one contains `needle` (all lines read so far returned), within `limit`.
pub(crate) fn await_line(
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
            Err(_) => panic!("no line with `{needle}` within {limit:?}: {seen:#?}"),
        }
    }
}

pub(crate) fn mosquitto(dir: &Path) -> (Running, u16) {
    let port = free_tcp_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} ::1\nallow_anonymous true\nuser root\nlog_dest stderr\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is not installed: run scripts/test (it installs Debian's mosquitto)");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("::1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (running, port)
}

pub(crate) fn edge_cli(args: &[&str], data: &Path, key_hex: &str) -> Output {
    Command::new(edge_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("V6IOT_SEAL_KEY", key_hex)
        .output()
        .unwrap()
}

/// An edge requiring OSCORE on `[::1]:port` with the demo devices imported.
pub(crate) fn edge(
    dir: &Path,
    broker: u16,
    credentials: &Path,
    coap_extra: &str,
) -> (Running, u16) {
    let key_file = dir.join("seal.key");
    let out = Command::new(edge_bin())
        .args(["devices", "keygen"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key_hex = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let data = dir.join("data");
    let out = edge_cli(
        &["devices", "import", credentials.to_str().unwrap()],
        &data,
        &key_hex,
    );
    assert!(
        out.status.success(),
        "import of {}: {out:?}",
        credentials.display()
    );
    let port = free_udp_port();
    let conf = dir.join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"plant1\"\nedge_id = \"e1\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:{port}\"\n{coap_extra}\
             [mqtt]\nurl = \"mqtt://[::1]:{broker}\"\n[registry]\nseal_key_file = \"{}\"\n\
             [security]\nrequire_oscore = true\n",
            data.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(edge_bin());
    cmd.args(["run", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "info");
    let (running, lines) = spawn_lines(cmd);
    let mut seen = Vec::new();
    await_line(
        &lines,
        "edge router running",
        Duration::from_secs(20),
        &mut seen,
    );
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (running, port)
}
