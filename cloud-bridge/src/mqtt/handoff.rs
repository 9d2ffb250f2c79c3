//! Handing our own connection to rumqttc.
//!
//! rumqttc 0.25 opens its connections itself: `MqttOptions` takes a host and port (or a Unix
//! socket path), there is no hook for a caller's stream or connector, and `EventLoop`'s network
//! type is private. Its `Transport::Unix` is the one way in: the bridge listens on a Unix socket
//! in a private directory (mode 0700), rumqttc "connects" there, and the bridge splices that
//! local stream to the connection it made itself (Happy Eyeballs TCP, then its own rustls
//! handshake with the real host name as SNI). Only connections from this very process are
//! accepted (SO_PEERCRED pid).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::transport::Io;

/// How long rumqttc has to come and take a connection.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Handoff {
    dir: PathBuf,
    path: PathBuf,
    listener: Arc<UnixListener>,
}

impl Handoff {
    /// A listening socket in a new private directory under the system's temp directory.
    pub(crate) fn bind() -> io::Result<Handoff> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // A Unix socket path has at most 107 bytes: fall back to /tmp for a long TMPDIR.
        let tmp = Some(std::env::temp_dir())
            .filter(|t| t.as_os_str().len() <= 64)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let dir = tmp.join(format!(
            "v6iot-bridge-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        }
        let path = dir.join("mqtt.sock");
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(Handoff {
            dir,
            path,
            listener: Arc::new(listener),
        })
    }

    /// The socket path to give rumqttc.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (in a task) for rumqttc's local connection and splices it to `stream` until either
    /// side closes. The task's result is the cause when the remote side failed.
    pub(crate) fn splice(&self, mut stream: Box<dyn Io>) -> JoinHandle<io::Result<()>> {
        let listener = Arc::clone(&self.listener);
        tokio::spawn(async move {
            let mut local = tokio::time::timeout(ACCEPT_TIMEOUT, async {
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
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "MQTT client never came"))??;
            tokio::io::copy_bidirectional(&mut local, &mut stream).await?;
            Ok(())
        })
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
