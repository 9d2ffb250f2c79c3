//! A blocking driver: runs one [`LowpanDevice`] on one [`Radio`] (ZEP over UDP, a Linux
//! `wpan` interface, or any other) in the calling thread. Feature `std`.
//!
//! It moves frames between the radio and the device, waits on the radio until the device's
//! next deadline, and writes the OSCORE state the device asks for to a [`StateStore`] (a file
//! store is one) before confirming it, as the tokio UDP driver does. All protocol decisions stay in the core.

use core::time::Duration;

use super::device::{LowpanDevice, LowpanEvent};
use crate::coap::{App, Event};
use crate::persist::StateStore;
use crate::radio::{MAX_PHY_PACKET, Radio};
use crate::time::Instant;

/// The longest the driver waits on the radio before it looks at `stop` again.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// How long the driver waits before it tries again to store a state that failed to store.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What the driver hands the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverEvent {
    /// From the 6LoWPAN layer (attached, detached).
    Network(LowpanEvent),
    /// From the CoAP core.
    Coap(Event),
}

/// Runs `device` on `radio` until `stop` says so (asked after every wake-up, at least every
/// 200 ms); events go to `on_event`. Returns the radio's error if sending or receiving fails.
pub fn run<S: App, R: Radio, M: StateStore + ?Sized>(
    radio: &mut R,
    device: &mut LowpanDevice<S>,
    store: &mut M,
    mut on_event: impl FnMut(DriverEvent),
    mut stop: impl FnMut(&LowpanDevice<S>) -> bool,
) -> Result<(), R::Error> {
    let mut buf = [0_u8; MAX_PHY_PACKET];
    let mut store_retry: Option<Instant> = None;
    loop {
        if store_retry.is_none_or(|t| t <= Instant::now()) {
            store_retry = persist(device, store);
        }
        while let Some(frame) = device.poll_transmit() {
            radio.transmit(frame.frame())?;
        }
        while let Some(e) = device.poll_event() {
            on_event(DriverEvent::Network(e));
        }
        while let Some(e) = device.coap_mut().poll_event() {
            on_event(DriverEvent::Coap(e));
        }
        if stop(device) {
            return Ok(());
        }
        let now = Instant::now();
        let deadline = [device.poll_timeout(), store_retry]
            .into_iter()
            .flatten()
            .min();
        let wait = deadline.map_or(MAX_WAIT, |d| d.saturating_duration_since(now).min(MAX_WAIT));
        if let Some(r) = radio.receive(&mut buf, wait)? {
            device.handle_frame(Instant::now(), r.frame);
        }
        let now = Instant::now();
        if device.poll_timeout().is_some_and(|t| t <= now) {
            device.handle_timeout(now);
        }
    }
}

/// Writes and confirms every state the device asks for; the time to try again if a write
/// failed.
fn persist<S: App, M: StateStore + ?Sized>(
    device: &mut LowpanDevice<S>,
    store: &mut M,
) -> Option<Instant> {
    let now = Instant::now();
    let failed = device.coap_mut().persist(now, store).is_err();
    device.flush();
    failed.then(|| now + STORE_RETRY)
}
