//! I/O for the single-device path: an emulated modem on a pseudo-terminal.
//!
//! [`Pty::open`] makes a pty in raw mode; its *device end* (`/dev/pts/N`) is what the SDK's
//! driver — or a person with `screen`/`minicom` — opens as the modem's serial port, through
//! the SDK's [`AsyncSerial`] for its tokio driver. [`serve`] runs a [`Cellular`] (the emulator
//! behind its carrier link) on the pty's other end, sending and receiving its datagrams on an
//! [`AddressPool`] of one member: the device's carrier address, in a network namespace whose
//! prefix is routed to loopback (shared/DESIGN.md §4).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
/// The async serial line the SDK's driver runs on (the SDK's, re-exported for the tests).
pub use v6iot_sdk::nbiot::serial::AsyncSerial;
use v6iot_sdk::nbiot::serial::make_raw;
use v6iot_sdk::time::Instant;

use super::carrier::Cellular;
use super::cli::{ModemArgs, ModemSummary};
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

/// Switches for a running [`serve`] loop (shared with the thread that runs it).
#[derive(Debug, Default)]
pub struct ServeControl {
    /// Ends the loop.
    pub stop: Arc<AtomicBool>,
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

/// `v6iot-sim modem`: the emulator `args` describe on a new pty (linked at `args.link`), its
/// datagrams from the carrier prefix, until `control.stop`; what it counted at the end.
pub fn run_modem(args: &ModemArgs, control: &ServeControl) -> anyhow::Result<ModemSummary> {
    let network = args.carrier_prefix.network();
    let mut pool = AddressPool::bind(network, 0, args.iid, 1, 1)
        .with_context(|| format!("an address in {} (see --help)", args.carrier_prefix))?;
    let pty = Pty::open().context("open a pty")?;
    if let Some(link) = &args.link {
        match std::fs::remove_file(link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("replace {}", link.display()));
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&pty.device_path, link)
            .with_context(|| format!("link {}", link.display()))?;
    }
    eprintln!(
        "v6iot-sim modem: AT commands on {}{}, carrier prefix {} (Ctrl-C to stop)",
        pty.device_path.display(),
        args.link
            .as_ref()
            .map(|l| format!(" (linked at {})", l.display()))
            .unwrap_or_default(),
        args.carrier_prefix
    );
    let mut cellular = args.cellular();
    serve(&mut cellular, &pty.master, &mut pool, control)?;
    Ok(ModemSummary::of(&cellular))
}
