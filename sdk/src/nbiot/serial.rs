//! (feature `tokio`, Linux) The modem's serial line as an async byte stream: a tty — a USB
//! modem's `/dev/ttyUSB0`, a UART's `/dev/ttyS1`, or the device end of a pty in tests — opened
//! non-blocking and switched to raw mode (no echo, no line editing, no CR/LF mapping), read and
//! written through tokio's reactor. What [`super::driver`] runs on.
//!
//! The line speed is left as it is: set it before (`stty -F /dev/ttyUSB0 9600`); a pty has
//! none.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Switches the tty `fd` to raw mode (`cfmakeraw`): bytes pass as they are, as on a serial
/// line.
pub fn make_raw(fd: &impl AsFd) -> io::Result<()> {
    let mut t = tcgetattr(fd)?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t)?;
    Ok(())
}

/// An async serial line over a tty. See the [module docs](self).
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
