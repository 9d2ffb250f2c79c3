//! A real mosquitto per test, on free loopback ports, handed out only once it listens.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Running, free_tcp_port, system_binary};

/// The lines every test broker starts with: anonymous clients, and root kept when run as root
/// (mosquitto would otherwise switch to its own user, which cannot read a test's files).
pub const BASE_CONFIG: &str = "allow_anonymous true\nuser root\n";

/// A mosquitto process, its configuration and its log in a test's directory; killed (SIGKILL)
/// when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Running>,
    conf: PathBuf,
    log: PathBuf,
    listeners: Vec<SocketAddr>,
}

impl Mosquitto {
    /// Starts mosquitto on `config` (written to `dir/mosquitto.conf`; its output goes to
    /// `dir/mosquitto.log`) and returns once every address of `listeners` accepts a TCP
    /// connection. Panics with the log when it exits or is not listening within 10 s.
    pub fn start(dir: &Path, config: &str, listeners: Vec<SocketAddr>) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let mut m = Mosquitto {
            child: None,
            conf,
            log: dir.join("mosquitto.log"),
            listeners,
        };
        m.restart();
        m
    }

    /// One anonymous plain listener on `[::1]` on a free port, then `extra` (more listeners,
    /// persistence, limits …).
    pub fn on_loopback(dir: &Path, extra: &str) -> Mosquitto {
        let port = free_tcp_port();
        let config = format!("listener {port} ::1\n{BASE_CONFIG}log_dest stderr\n{extra}");
        Mosquitto::start(
            dir,
            &config,
            vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))],
        )
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.listeners.first().map_or(0, SocketAddr::port)
    }

    /// Starts it again (same configuration, same ports) after [`Mosquitto::kill`] or
    /// [`Mosquitto::stop`]; returns once it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto is running");
        self.child = Some(spawn(&self.conf, &self.log, &self.listeners));
    }

    /// SIGKILL: no goodbye to anyone, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// SIGTERM: a graceful stop (mosquitto saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate();
        }
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        log_text(&self.log)
    }
}

/// Starts mosquitto on the configuration file `conf`, its output appended to `log`, and
/// returns once every address of `listeners` accepts a TCP connection. Panics with the log when
/// it exits or is not listening within 10 s. (What [`Mosquitto`] runs; for a test that writes
/// its configuration itself.)
pub fn spawn(conf: &Path, log: &Path, listeners: &[SocketAddr]) -> Running {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let child = Command::new(system_binary("mosquitto", "mosquitto"))
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start mosquitto: {e}"));
    let mut child = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in listeners {
        while TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("mosquitto exited ({status}): {}", log_text(log));
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening on {addr} within 10 s: {}",
                log_text(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

/// `mosquitto_pub` to `host`:`port` on `topic` at QoS 1; the caller adds the message (`-m …`,
/// or `-l` with lines on stdin) and runs it.
pub fn pub_command(host: &str, port: u16, topic: &str) -> Command {
    let mut cmd = Command::new(system_binary("mosquitto_pub", "mosquitto-clients"));
    cmd.args(["-h", host, "-p", &port.to_string(), "-q", "1", "-t", topic]);
    cmd
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    #[test]
    fn listens_when_handed_out_and_again_after_kill_and_stop() {
        let dir = TempDir::new("kit-mosquitto");
        let mut m = Mosquitto::on_loopback(dir.path(), "persistence false\n");
        let addr = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], m.port()));
        TcpStream::connect(addr).unwrap();
        m.kill();
        assert!(TcpStream::connect(addr).is_err(), "killed");
        m.restart();
        TcpStream::connect(addr).unwrap();
        m.stop();
        assert!(TcpStream::connect(addr).is_err(), "stopped");
        assert!(m.log_text().contains("mosquitto"), "{}", m.log_text());
    }

    #[test]
    fn pub_command_reaches_the_broker() {
        let dir = TempDir::new("kit-mosquitto-pub");
        let m = Mosquitto::on_loopback(dir.path(), "log_type all\n");
        let status = pub_command("::1", m.port(), "kit/t")
            .args(["-m", "hello"])
            .status()
            .unwrap();
        assert!(status.success());
        crate::wait_for("the PUBLISH in the log", Duration::from_secs(10), || {
            m.log_text().contains("Received PUBLISH from")
        });
    }

    #[test]
    #[should_panic(expected = "mosquitto exited")]
    fn a_bad_configuration_fails_with_the_log() {
        let dir = TempDir::new("kit-mosquitto-bad");
        Mosquitto::on_loopback(dir.path(), "no_such_option 1\n");
    }
}
