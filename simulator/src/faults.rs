//! Processes the simulator runs itself (an edge router, a broker) and the faults it injects
//! into them at their times: `kill -9` of the edge, a graceful restart, a broker outage. Link
//! loss bursts are not here: the shard cores' link model applies them
//! ([`crate::linkmodel`]).
//!
//! A managed process is started before the fleet, with its output appended to a log file in the
//! run's work directory, and is ready when it answers: the edge a CoAP ping (an empty
//! Confirmable message, answered with a Reset), the broker a TCP connection. At the end of the
//! run it is stopped with SIGTERM (SIGKILL after a grace period).

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::report::FaultMark;
use crate::scenario::{Fault, FaultKind, Managed};

/// How a managed process shows it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Answers a CoAP ping at this address.
    CoapPing(SocketAddr),
    /// Accepts a TCP connection at this address.
    Tcp(SocketAddr),
}

/// A process the simulator started.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    spec: Managed,
    ready: Readiness,
    log: PathBuf,
    child: Option<Child>,
}

/// How long a stopped process may take to exit before it is killed.
const GRACE: Duration = Duration::from_secs(10);

impl Process {
    /// A process named `name` (for logs and errors) run as `spec` says, its output appended to
    /// `{workdir}/{name}.log`.
    pub fn new(name: &'static str, spec: Managed, ready: Readiness, workdir: &Path) -> Process {
        Process {
            name,
            spec,
            ready,
            log: workdir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts it and waits until it is ready (at most its `ready_within`).
    pub fn start(&mut self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let err = log.try_clone()?;
        let (program, args) = self
            .spec
            .command
            .split_first()
            .context("an empty command")?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start the {} ({program})", self.name))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.spec.ready_within;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!(
                    "the {} exited at start ({status}); its output is in {}",
                    self.name,
                    self.log.display()
                );
            }
            if is_ready(self.ready) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the {} was not ready within {:?} ({:?}); its output is in {}",
                    self.name,
                    self.spec.ready_within,
                    self.ready,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no chance to write anything on the way out.
    pub fn kill9(&mut self) -> io::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        c.kill()?;
        c.wait().map(|_| ())
    }

    /// SIGTERM, then SIGKILL if it has not exited within the grace period.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(c.id()).unwrap_or(0));
        if kill(pid, Signal::SIGTERM).is_err() {
            c.kill()?;
            return c.wait().map(|_| ());
        }
        let deadline = Instant::now() + GRACE;
        loop {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    name = self.name,
                    "did not stop within the grace period; killed"
                );
                c.kill()?;
                return c.wait().map(|_| ());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(name = self.name, error = %e, "stopping a managed process failed");
        }
    }
}

/// Whether the process answers as `ready` says.
fn is_ready(ready: Readiness) -> bool {
    match ready {
        Readiness::Tcp(addr) => {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }
        Readiness::CoapPing(addr) => coap_ping(addr).unwrap_or(false),
    }
}

/// Sends a CoAP ping (RFC 7252 §4.3: an empty Confirmable message) and waits briefly for the
/// Reset.
fn coap_ping(addr: SocketAddr) -> io::Result<bool> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mid = (std::process::id() as u16).to_be_bytes();
    socket.send(&[0x40, 0x00, mid[0], mid[1]])?;
    let mut buf = [0u8; 64];
    match socket.recv(&mut buf) {
        // A Reset (type 3) or any answer: something is serving CoAP there.
        Ok(n) => Ok(n >= 4),
        Err(_) => Ok(false),
    }
}

/// The address a broker URL names (`mqtt://host:port`).
pub fn broker_address(url: &str) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let (host, port) = crate::load::mqtt_host_port(url)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolve the broker in {url}"))?
        .next()
        .with_context(|| format!("the broker in {url} has no address"))
}

/// Carries out `fault` on `process` (sleeping through its down time), `at_s` seconds into the
/// run; says what was done.
pub fn inject(fault: &Fault, process: &mut Process, at_s: f64) -> FaultMark {
    let kind = fault.kind.name().to_owned();
    let length = fault.kind.length();
    let mut mark = FaultMark {
        at_s,
        kind,
        length_s: length.as_secs_f64(),
        detail: String::new(),
        ok: true,
    };
    let stopped = match &fault.kind {
        FaultKind::EdgeKill { .. } => process.kill9().map(|()| "killed (SIGKILL)"),
        FaultKind::EdgeRestart { .. } | FaultKind::BrokerOutage { .. } => {
            process.stop().map(|()| "stopped (SIGTERM)")
        }
        FaultKind::LinkLoss { .. } => {
            mark.detail = "applied by the device threads' link model".into();
            return mark;
        }
    };
    let began = Instant::now();
    match stopped {
        Ok(what) => mark.detail = format!("{} {what}", process.name),
        Err(e) => {
            mark.ok = false;
            mark.detail = format!("{}: could not stop it: {e}", process.name);
            return mark;
        }
    }
    std::thread::sleep(length.saturating_sub(began.elapsed()));
    match process.start() {
        Ok(()) => {
            mark.detail.push_str(&format!(
                ", started again after {:.1} s, ready after {:.1} s",
                length.as_secs_f64(),
                began.elapsed().as_secs_f64()
            ));
        }
        Err(e) => {
            mark.ok = false;
            mark.detail
                .push_str(&format!(", would not start again: {e:#}"));
        }
    }
    mark
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A managed process that serves TCP: `python3 -m http.server` stands in for a broker.
    #[test]
    fn a_managed_process_starts_ready_is_killed_and_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let spec = Managed {
            command: vec![
                "python3".into(),
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                port.to_string(),
            ],
            ready_within: Duration::from_secs(10),
        };
        let mut p = Process::new("broker", spec, Readiness::Tcp(addr), dir.path());
        p.start()
            .expect("python3 (Debian: python3) serves on the port");
        assert!(p.running());
        let fault = Fault {
            at: Duration::ZERO,
            kind: FaultKind::BrokerOutage {
                down: Duration::from_millis(300),
            },
        };
        let mark = inject(&fault, &mut p, 1.5);
        assert!(mark.ok, "{mark:?}");
        assert!(mark.detail.contains("started again"), "{mark:?}");
        assert!(is_ready(Readiness::Tcp(addr)));
        let kill = Fault {
            at: Duration::ZERO,
            kind: FaultKind::EdgeKill {
                down: Duration::ZERO,
            },
        };
        let mark = inject(&kill, &mut p, 2.0);
        assert!(mark.ok && mark.detail.contains("SIGKILL"), "{mark:?}");
        p.stop().unwrap();
        assert!(!p.running());
        assert!(!is_ready(Readiness::Tcp(addr)), "stopped");
        // A command that exits at once is named with its log.
        let mut bad = Process::new(
            "edge",
            Managed {
                command: vec!["false".into()],
                ready_within: Duration::from_secs(2),
            },
            Readiness::Tcp(addr),
            dir.path(),
        );
        let e = bad.start().unwrap_err();
        assert!(format!("{e:#}").contains("exited at start"), "{e:#}");
    }
}
