//! I/O for the single-device path: an emulated modem on a pseudo-terminal.
//!
//! [`Pty::open`] makes a pty in raw mode; its *device end* (`/dev/pts/N`) is what the SDK's
//! driver — or a person with `screen`/`minicom` — opens as the modem's serial port, through
//! [`AsyncSerial`] for the SDK's tokio driver. [`serve`] runs a [`Cellular`] (the emulator
//! behind its carrier link) on the pty's other end, sending and receiving its datagrams on an
//! [`AddressPool`] of one member: the device's carrier address, in a network namespace whose
//! prefix is routed to loopback (shared/DESIGN.md §4).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use v6iot_sdk::time::Instant;

use super::carrier::Cellular;
use crate::link::{AddressPool, AddressRequest, Arrival, Link};

/// The longest the serving loop waits before it looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A pseudo-terminal in raw mode: the emulator holds `master`, the device opens `device_path`.
#[derive(Debug)]
pub struct Pty {
    /// The emulator's end.
    pub master: OwnedFd,
    /// The device end's path, e.g. `/dev/pts/3`.
    pub device_path: PathBuf,
    /// Kept open so the master never reads end-of-file while the device reopens its end.
    _device_end: OwnedFd,
}

impl Pty {
    /// A new pty with its device end in raw mode (no echo, no line editing, no CR/LF mapping:
    /// a serial line).
    pub fn open() -> io::Result<Pty> {
        let pair = nix::pty::openpty(None, None)?;
        make_raw(&pair.slave)?;
        let device_path = nix::unistd::ttyname(&pair.slave)?;
        Ok(Pty {
            master: pair.master,
            device_path,
            _device_end: pair.slave,
        })
    }
}

fn make_raw(fd: &impl AsFd) -> io::Result<()> {
    let mut t = tcgetattr(fd)?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t)?;
    Ok(())
}

/// An async serial line over a tty (the device end of a pty, or a real serial port in raw
/// mode): what the SDK's `nbiot::driver` reads and writes.
#[derive(Debug)]
pub struct AsyncSerial {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncSerial {
    /// Opens the tty at `path` (non-blocking, not as the controlling terminal) in raw mode.
    /// Needs a tokio runtime with I/O enabled.
    pub fn open(path: &Path) -> io::Result<AsyncSerial> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)?;
        let fd = OwnedFd::from(file);
        make_raw(&fd)?;
        #[allow(
            deprecated,
            reason = "AsyncFd::new is deprecated for raw descriptors it does not own; this one owns its OwnedFd until it drops it (the safe form, AsyncFd::register, is `unsafe`)"
        )]
        let fd = AsyncFd::new(fd)?;
        Ok(AsyncSerial { fd })
    }
}

impl AsyncRead for AsyncSerial {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for AsyncSerial {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Switches for a running [`serve`] loop (shared with the thread that runs it).
#[derive(Debug, Default)]
pub struct ServeControl {
    /// Ends the loop.
    pub stop: AtomicBool,
    /// Test hook: the modem hangs (reads and answers nothing) while set.
    pub frozen: AtomicBool,
}

/// Runs `cellular` on the pty's `master` end, its datagrams on `pool` (member 0), until
/// `control.stop`. Returns an error when the pty or the socket fails for good.
pub fn serve(
    cellular: &mut Cellular,
    master: &OwnedFd,
    pool: &mut AddressPool,
    control: &ServeControl,
) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    while !control.stop.load(Ordering::Relaxed) {
        cellular
            .modem
            .set_frozen(control.frozen.load(Ordering::Relaxed));
        let now = Instant::now();
        exchange(cellular, master, pool, now)?;
        let wait = cellular
            .poll_timeout()
            .map_or(STOP_CHECK, |t| t.saturating_duration_since(now))
            .min(STOP_CHECK);
        let (serial, network) = {
            let mut fds = [
                PollFd::new(master.as_fd(), PollFlags::POLLIN),
                PollFd::new(pool.as_fd(), PollFlags::POLLIN),
            ];
            let millis = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let [serial, network] = &fds;
            (ready(serial), ready(network))
        };
        let now = Instant::now();
        if serial {
            match nix::unistd::read(master, &mut buf) {
                Ok(n) => cellular.handle_serial(now, buf.get(..n).unwrap_or_default()),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if network {
            pool.receive(Duration::ZERO, &mut |arrival| {
                if let Arrival::Datagram { peer, bytes, .. } = arrival {
                    cellular.handle_datagram(now, peer, bytes);
                }
            })?;
        }
        if cellular.poll_timeout().is_some_and(|t| t <= now) {
            cellular.handle_timeout(now);
        }
    }
    Ok(())
}

/// Answers address requests, writes the modem's output, sends its datagrams.
fn exchange(
    cellular: &mut Cellular,
    master: &OwnedFd,
    pool: &mut AddressPool,
    now: Instant,
) -> io::Result<()> {
    while let Some(request) = cellular.poll_address_request() {
        let address = match request {
            AddressRequest::Current => pool.address(0),
            AddressRequest::Fresh => Some(pool.readdress(0)?),
        };
        if let Some(std::net::IpAddr::V6(a)) = address {
            cellular.handle_address(now, a);
        }
    }
    while let Some(bytes) = cellular.poll_serial() {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            match nix::unistd::write(master, rest) {
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    while let Some((to, bytes)) = cellular.poll_transmit() {
        if let Err(e) = pool.send(0, to, &bytes) {
            tracing::warn!(%to, error = %e, "the emulated modem's datagram was not sent");
        }
    }
    Ok(())
}
