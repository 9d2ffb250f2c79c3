//! The tokio driver of an [`NbiotDevice`]: moves bytes between the modem's serial line (any
//! `AsyncRead + AsyncWrite`: a serial port, a pty) and the device core, sleeps until the
//! core's next deadline, and writes the OSCORE state the core asks for before confirming it.
//! Every decision stays in the sans-IO core.

use std::future::Future;
use std::io;
use std::vec;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::device::{NbiotDevice, NbiotEvent};
use crate::coap::App;
use crate::driver::{retry_after_failure, sleep_until};
use crate::store::{MarkStore, NoStore};
use crate::time::Instant;

/// Bytes read from the serial line at once.
const READ_CHUNK: usize = 4096;

/// Runs `device` on `serial` until `shutdown` completes, handing each event to `on_event`.
/// For a device without OSCORE credentials; one with credentials needs [`run_with_store`].
///
/// Returns an error when the serial line fails or closes (end of file).
pub async fn run<S: App, L: AsyncRead + AsyncWrite + Unpin>(
    serial: &mut L,
    device: &mut NbiotDevice<S>,
    on_event: impl FnMut(NbiotEvent),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with_store(serial, device, &mut NoStore, on_event, shutdown).await
}

/// As [`run`], and writes every OSCORE state the device asks for to `store` before
/// confirming it (as `v6iot_sdk::driver::run_with_store` does).
pub async fn run_with_store<S: App, L: AsyncRead + AsyncWrite + Unpin, M: MarkStore + ?Sized>(
    serial: &mut L,
    device: &mut NbiotDevice<S>,
    store: &mut M,
    mut on_event: impl FnMut(NbiotEvent),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    tokio::pin!(shutdown);
    loop {
        while let Some(event) = device.poll_event() {
            on_event(event);
        }
        let retry_store_at = retry_after_failure(device.persist(Instant::now(), store));
        while let Some(bytes) = device.poll_serial() {
            serial.write_all(&bytes).await?;
        }
        serial.flush().await?;
        let deadline = [device.poll_timeout(), retry_store_at]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            read = serial.read(&mut buf) => match read {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the modem's serial line closed")),
                Ok(n) => {
                    if let Some(bytes) = buf.get(..n) {
                        device.handle_serial(Instant::now(), bytes);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {}
                Err(e) => return Err(e),
            },
            () = sleep_until(deadline) => device.handle_timeout(Instant::now()),
            () = &mut shutdown => return Ok(()),
        }
    }
}
