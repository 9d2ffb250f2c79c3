//! Handing our own connection to rumqttc.
//!
//! rumqttc 0.25 opens its connections itself: `MqttOptions` takes a host and port (or a Unix
//! socket path), there is no hook for a caller's stream or connector, and `EventLoop`'s network
//! type is private. Its `Transport::Unix` is the one way in: for each connection the bridge
//! listens on a Unix socket in a new private directory (mode 0700), rumqttc "connects" there,
//! and the bridge splices that local stream to the connection it made itself (Happy Eyeballs
//! TCP, then its own rustls handshake with the real host name as SNI). Only a connection from
//! this very process is accepted (SO_PEERCRED pid); the socket and its directory are removed as
//! soon as it is accepted. Directories left by processes that were killed in that short window
//! are swept at the next start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::transport::Io;

/// How long rumqttc has to come and take a connection.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
const PREFIX: &str = "v6iot-bridge-";

/// A private directory with the listening socket; both removed when dropped.
struct SocketDir {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn base_dir() -> PathBuf {
    // A Unix socket path has at most 107 bytes: fall back to /tmp for a long TMPDIR.
    Some(std::env::temp_dir())
        .filter(|t| t.as_os_str().len() <= 64)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Removes hand-off directories of processes that no longer exist.
pub(crate) fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(base_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes the socket rumqttc will connect to, and a task that accepts that one connection
/// (from this process only) and splices it to `stream` until either side closes. The task's
/// result is the cause when the remote side failed.
pub(crate) fn splice(mut stream: Box<dyn Io>) -> io::Result<(PathBuf, JoinHandle<io::Result<()>>)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base_dir().join(format!(
        "{PREFIX}{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    }
    let socket = SocketDir {
        path: dir.join("mqtt.sock"),
        dir,
    };
    let listener = UnixListener::bind(&socket.path)?;
    let path = socket.path.clone();
    let task = tokio::spawn(async move {
        let accepted = tokio::time::timeout(ACCEPT_TIMEOUT, async {
            loop {
                let (local, _) = listener.accept().await?;
                match local.peer_cred() {
                    Ok(cred) if cred.pid() == i32::try_from(std::process::id()).ok() => {
                        return Ok::<_, io::Error>(local);
                    }
                    other => tracing::warn!(?other, "refused a foreign hand-off connection"),
                }
            }
        })
        .await;
        drop(listener);
        drop(socket);
        let mut local = accepted
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "MQTT client never came"))??;
        tokio::io::copy_bidirectional(&mut local, &mut stream).await?;
        Ok(())
    });
    Ok((path, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_directories_of_dead_processes_only() {
        let dead = base_dir().join(format!("{PREFIX}4000000000-0-test"));
        let alive = base_dir().join(format!("{PREFIX}{}-999-test", std::process::id()));
        for d in [&dead, &alive] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("mqtt.sock"), b"").unwrap();
        }
        sweep_stale();
        assert!(!dead.exists());
        assert!(alive.exists());
        std::fs::remove_dir_all(alive).unwrap();
    }
}
