//! (feature `std`) What a UDP socket's error means to a driver that goes on reading.

use std::io;

/// Whether a UDP socket error is one to ignore and go on: nothing to read (`WouldBlock`, or
/// `TimedOut` after a read timeout), an interrupted call, or an ICMP error from an earlier
/// datagram (refused, reset: a peer that went away). Shared by the SDK's driver and ZEP radio,
/// the medium's driver and the simulator's sockets.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}
