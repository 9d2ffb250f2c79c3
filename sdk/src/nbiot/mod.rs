//! NB-IoT: the device's cellular modem driven over AT commands, and power saving.
//!
//! # Layers
//!
//! | module | job |
//! |---|---|
//! | [`at`] | bytes from the modem → lines → final result codes, URCs, information lines; `+CEREG`, `+CGPADDR` (both notations), hex |
//! | [`timers`] | T3412 (GPRS Timer 3), T3324 (GPRS Timer 2), eDRX cycle and paging window: encode and decode (3GPP TS 24.008) |
//! | [`client`] | the command/response dialogue: one command in flight, URCs taken out anywhere, deadlines, probing and recovery after a timeout |
//! | [`modem`] | bring-up (PDP context `IPV6`, `+CEREG=4`, PSM, eDRX, attach), the address, the HiSilicon UDP socket (`AT+NSOCR/NSOST/NSORF`, `+NSONMI`) |
//! | [`device`] | [`NbiotDevice`]: the CoAP device core on the modem, with [`crate::uplink::PowerSaving`] |
//! | `driver` | (feature `tokio`) the I/O loop over any `AsyncRead + AsyncWrite`: a serial port, or a pty in tests |
//! | `serial` | (feature `tokio`, Linux) a tty — a serial port, a pty's device end — opened raw as that async stream |
//!
//! # I/O boundary
//!
//! Everything but `driver` and `serial` is sans-IO and uses `core` and `alloc` only: bytes of the serial
//! line in and out, time passed in as [`crate::time::Instant`]. The same core runs on a
//! device's UART, over a pty against the simulator's modem emulator, and in-process for
//! simulated fleets.
//!
//! # Why not `atat`
//!
//! `atat` is the ecosystem's AT client, and its digester would parse these lines. It does not
//! fit this crate's rule that protocol logic takes time as an argument and owns no task: its
//! client `await`s each response on a timer of its own (embassy-time or a `Clock`), its ingress
//! and URC channel are statics shared between tasks, and responses without a prefix (the
//! `AT+NSORF` answer) need a custom digester anyway. A simulator driving 10,000 modems on one
//! thread, and tests on virtual time, need a dialogue that is a plain state machine; the whole
//! parser here is a few hundred lines with a fuzz target (`fuzz/fuzz_targets/nbiot_at.rs`).
//!
//! # The dialect
//!
//! 3GPP TS 27.007 for the common set (shared/DESIGN.md §10), the HiSilicon socket commands for
//! datagrams (at most [`MAX_DATAGRAM`] bytes each), `+NPSMR` for power saving reports. The
//! simulator's modem emulator speaks the same dialect; a real module may need its vendor's
//! variants of the socket commands.

pub mod at;
pub mod client;
pub mod device;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod modem;
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub mod serial;
pub mod timers;

pub use device::{NbiotDevice, NbiotEvent, nbiot_uplink};
pub use modem::{Modem, ModemConfig, ModemEvent, ModemStats, PsmRequest, SendError};
pub use timers::{EdrxCycle, PagingWindow, T3324, T3412, TimerError};

/// The largest datagram carried (the data of one `AT+NSOST` / `AT+NSORF`). Quectel's BC95
/// takes 512 bytes; this dialect, and the simulator's emulator, 1024.
pub const MAX_DATAGRAM: usize = 1024;

#[cfg(test)]
mod tests;
