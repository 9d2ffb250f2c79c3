//! The I/O of a ZEP medium: one UDP socket, the wall clock, an optional pcap capture. It moves
//! datagrams between the socket and a sans-IO [`ZepNode`] (a bare [`Hub`], or a fleet that runs
//! its devices inside the hub) and wakes it at its deadlines; every decision stays in the core.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use v6iot_sdk::radio::pcap::{LinkType, PcapWriter, since_unix_epoch};
use v6iot_sdk::time::Instant;

use super::core::OnAir;
use super::hub::{Hub, ZepDatagram};

/// The longest the driver waits on the socket before it looks at its stop condition again.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Datagrams taken in one go after a wait returned, before deadlines are looked at again.
const BATCH: usize = 64;

/// A receive buffer larger than any ZEP datagram, so an oversized one is seen whole (and refused
/// by its length field) rather than cut to fit.
const RECV_BUF: usize = 2048;

/// A sans-IO core that speaks ZEP on one socket.
pub trait ZepNode {
    /// A datagram from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// Lets time pass.
    fn handle_timeout(&mut self, now: Instant);
    /// When to call `handle_timeout` next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next datagram to send.
    fn poll_datagram(&mut self) -> Option<(SocketAddr, ZepDatagram)>;
    /// The next frame that went on air, for the capture.
    fn poll_on_air(&mut self) -> Option<OnAir>;
}

impl ZepNode for Hub {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        Hub::handle_datagram(self, now, from, datagram);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Hub::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Hub::poll_timeout(self)
    }
    fn poll_datagram(&mut self) -> Option<(SocketAddr, ZepDatagram)> {
        Hub::poll_datagram(self)
    }
    fn poll_on_air(&mut self) -> Option<OnAir> {
        Hub::poll_on_air(self)
    }
}

/// The Unix time of the SDK's `Instant::ZERO` in this process: what ZEP and pcap timestamps
/// add the medium's time to.
#[must_use]
pub fn unix_at_zero() -> Duration {
    since_unix_epoch().saturating_sub(Instant::now().since_start())
}

/// A pcap capture (link type 195: every frame with its FCS) of what goes on air.
#[derive(Debug)]
pub struct Capture<W: Write> {
    writer: PcapWriter<W>,
    unix_at_zero: Duration,
    errors: u64,
}

impl<W: Write> Capture<W> {
    /// A capture into `out`, stamping frames at `unix_at_zero` plus their medium time.
    pub fn new(out: W, unix_at_zero: Duration) -> io::Result<Capture<W>> {
        Ok(Capture {
            writer: PcapWriter::new(out, LinkType::WithFcs)?,
            unix_at_zero,
            errors: 0,
        })
    }

    /// Records one frame; a failed write is counted, not returned.
    pub fn record(&mut self, on_air: &OnAir) {
        let Some(frame) = on_air.frame.mac() else {
            return;
        };
        let at = self.unix_at_zero + on_air.at.since_start();
        if self.writer.write_frame(at, frame).is_err() {
            self.errors += 1;
        }
    }

    /// Frames recorded.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.writer.frames()
    }

    /// Frames that failed to be written.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Flushes the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// What the driver counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriverStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the kernel refused to send (dropped; logged).
    pub send_errors: u64,
    /// Frames written to the capture.
    pub captured: u64,
    /// Frames the capture failed to write.
    pub capture_errors: u64,
}

/// Runs `node` on `socket` until `stop` is set (looked at least every 50 ms).
pub fn run<N: ZepNode, W: Write>(
    node: &mut N,
    socket: &UdpSocket,
    mut capture: Option<&mut Capture<W>>,
    stop: &AtomicBool,
) -> io::Result<DriverStats> {
    let mut stats = DriverStats::default();
    let mut buf = vec![0_u8; RECV_BUF];
    loop {
        let now = Instant::now();
        node.handle_timeout(now);
        flush(node, socket, capture.as_deref_mut(), &mut stats);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let wait = node
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(now))
            .min(MAX_WAIT);
        if wait.is_zero() {
            continue;
        }
        socket.set_read_timeout(Some(wait))?;
        if !receive(node, socket, &mut buf, &mut stats)? {
            continue;
        }
        // More may be waiting: take them without waiting.
        socket.set_nonblocking(true)?;
        for _ in 0..BATCH {
            flush(node, socket, capture.as_deref_mut(), &mut stats);
            if !receive(node, socket, &mut buf, &mut stats)? {
                break;
            }
        }
        socket.set_nonblocking(false)?;
    }
    if let Some(c) = capture {
        c.flush()?;
        stats.capture_errors = c.errors();
    }
    Ok(stats)
}

/// One datagram into the node; `false` when none came.
fn receive<N: ZepNode>(
    node: &mut N,
    socket: &UdpSocket,
    buf: &mut [u8],
    stats: &mut DriverStats,
) -> io::Result<bool> {
    match socket.recv_from(buf) {
        Ok((n, from)) => {
            stats.received += 1;
            node.handle_datagram(Instant::now(), from, buf.get(..n).unwrap_or_default());
            Ok(true)
        }
        // nothing came, or an ICMP port unreachable from a participant that went away
        Err(e) if v6iot_sdk::net::is_transient(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends what the node has to send and records what went on air.
fn flush<N: ZepNode, W: Write>(
    node: &mut N,
    socket: &UdpSocket,
    mut capture: Option<&mut Capture<W>>,
    stats: &mut DriverStats,
) {
    while let Some(on_air) = node.poll_on_air() {
        if let Some(c) = capture.as_deref_mut() {
            c.record(&on_air);
            stats.captured += 1;
        }
    }
    while let Some((to, d)) = node.poll_datagram() {
        match socket.send_to(d.as_bytes(), to) {
            Ok(_) => stats.sent += 1,
            Err(e) => {
                stats.send_errors += 1;
                tracing::debug!(%to, error = %e, "ZEP datagram not sent");
            }
        }
    }
}
