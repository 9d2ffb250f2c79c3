//! The tokio UDP driver: runs one [`Device`] on one socket. The only I/O in this crate.
//!
//! It moves datagrams between the socket and the device and sleeps until the device's next
//! deadline; all protocol decisions stay in the sans-IO core.

use std::future::Future;
use std::io;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::coap::{App, Device, Event};

/// Largest datagram the driver receives; CoAP over UDP stays far below it.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Runs `device` on `socket` until `shutdown` completes, handing each protocol event to
/// `on_event`. Send errors are logged and the datagram dropped (the core retransmits
/// Confirmable messages); receive errors other than transient ones end the run.
pub async fn run<S: App>(
    socket: &UdpSocket,
    device: &mut Device<S>,
    mut on_event: impl FnMut(Event),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        while let Some(event) = device.poll_event() {
            on_event(event);
        }
        while let Some(t) = device.poll_transmit() {
            if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                tracing::warn!(peer = %t.destination, error = %e, "send failed; datagram dropped");
            }
        }
        let deadline = device.poll_timeout();
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    if let Some(bytes) = buf.get(..len) {
                        device.handle_datagram(Instant::now(), peer, bytes);
                    }
                }
                Err(e) if is_transient(&e) => tracing::debug!(error = %e, "transient receive error"),
                Err(e) => return Err(e),
            },
            () = sleep_until(deadline) => device.handle_timeout(Instant::now()),
            () = &mut shutdown => return Ok(()),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
