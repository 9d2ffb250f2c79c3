//! The tokio UDP driver: runs one [`Device`] on one socket. The only I/O in this crate.
//!
//! It moves datagrams between the socket and the device and sleeps until the device's next
//! deadline; all protocol decisions stay in the sans-IO core. For a device with OSCORE
//! credentials it also writes the state the device asks for (sequence-number mark and replay
//! floor) to a [`MarkStore`] and confirms it ([`run_with_store`]).

use std::future::Future;
use std::io;
use std::vec;

use tokio::net::UdpSocket;

use crate::coap::{App, Device, Event};
use crate::net::is_transient;
use crate::persist::PersistFailed;
use crate::store::{MarkStore, NoStore};
use crate::time::Instant;

/// Largest datagram the driver receives; CoAP over UDP stays far below it.
const MAX_DATAGRAM: usize = 64 * 1024;

/// How long the driver waits before it tries again to store a mark that failed to store.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `device` on `socket` until `shutdown` completes, handing each protocol event to
/// `on_event`. Send errors are logged and the datagram dropped (the core retransmits
/// Confirmable messages); receive errors other than transient ones end the run.
///
/// For a device without OSCORE credentials; one with credentials needs [`run_with_store`].
pub async fn run<S: App>(
    socket: &UdpSocket,
    device: &mut Device<S>,
    on_event: impl FnMut(Event),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with_store(socket, device, &mut NoStore, on_event, shutdown).await
}

/// As [`run`], and writes every OSCORE state the device asks for to `store` before confirming
/// it to the device (RFC 8613 Appendix B.1.1, B.1.2): the sequence-number mark every persist
/// step, and the replay floor once per verified request that raises it (commands are rare).
/// The write blocks the device's task (it must finish before the device may use the numbers or
/// run the request's handler). A failed write is logged and retried a second later; meanwhile
/// messages that need a sequence number and verified requests wait.
pub async fn run_with_store<S: App, M: MarkStore + ?Sized>(
    socket: &UdpSocket,
    device: &mut Device<S>,
    store: &mut M,
    mut on_event: impl FnMut(Event),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        while let Some(event) = device.poll_event() {
            on_event(event);
        }
        let retry_store_at = retry_after_failure(device.persist(Instant::now(), store));
        while let Some(t) = device.poll_transmit() {
            if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                tracing::warn!(peer = %t.destination, error = %e, "send failed; datagram dropped");
            }
        }
        let deadline = match (device.poll_timeout(), retry_store_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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

/// Logs a failed write of the OSCORE state; returns when to try again. Shared with the NB-IoT
/// driver.
pub(crate) fn retry_after_failure<E: core::fmt::Display>(
    result: Result<(), PersistFailed<E>>,
) -> Option<Instant> {
    let PersistFailed { state, error } = result.err()?;
    tracing::error!(mark = state.sender_mark, replay_floor = state.replay_floor, %error, "cannot store the OSCORE state; messages and verified requests wait");
    Some(Instant::now() + STORE_RETRY)
}

/// Sleeps until `deadline`; forever without one, or for one past what `std` can represent.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline.and_then(Instant::to_std) {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
