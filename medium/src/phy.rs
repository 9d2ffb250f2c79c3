//! The 2.4 GHz O-QPSK PHY and the unslotted CSMA/CA MAC of IEEE 802.15.4 in numbers: what the
//! airtime model charges for a frame and how long a radio backs off, senses and waits.
//!
//! 250 kbit/s is 62.5 k symbols/s of 4 bits: 16 µs per symbol, 32 µs per byte. On air a frame
//! (the PSDU, FCS included) follows a 6-byte PHY header: 4 bytes of preamble, the start-of-frame
//! delimiter and the length byte (IEEE 802.15.4-2020 §12.1).

use std::time::Duration;

/// The time one byte takes on air at 250 kbit/s.
pub const BYTE_TIME: Duration = Duration::from_micros(32);

/// The PHY header in front of every PSDU: preamble (4), SFD (1), PHR (1).
pub const PHY_HEADER_LEN: usize = 6;

/// `aUnitBackoffPeriod`: 20 symbols.
pub const UNIT_BACKOFF: Duration = Duration::from_micros(320);

/// The clear channel assessment: 8 symbols of listening.
pub const CCA_TIME: Duration = Duration::from_micros(128);

/// `aTurnaroundTime`: 12 symbols from receiving to sending (after a clear CCA, before an ACK).
pub const TURNAROUND: Duration = Duration::from_micros(192);

/// `macAckWaitDuration`: 54 symbols from the end of a frame to the end of its ACK.
pub const ACK_WAIT: Duration = Duration::from_micros(864);

/// The PSDU of an acknowledgement: frame control (2), sequence number (1), FCS (2).
pub const ACK_PSDU_LEN: usize = 5;

/// How long a PSDU of `psdu_len` bytes (FCS included) occupies the channel, PHY header included.
#[must_use]
pub fn airtime(psdu_len: usize) -> Duration {
    BYTE_TIME * (PHY_HEADER_LEN + psdu_len) as u32
}

/// The MAC's parameters (IEEE 802.15.4-2020 §6.2.5.1 and Table 8-94), defaults as the standard's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AirtimeConfig {
    /// `macMinBe`: the first back-off exponent (3).
    pub min_be: u8,
    /// `macMaxBe`: the largest back-off exponent (5).
    pub max_be: u8,
    /// `macMaxCsmaBackoffs`: busy CCAs allowed before the channel access fails (4).
    pub max_csma_backoffs: u8,
    /// `macMaxFrameRetries`: retransmissions after a missing ACK (3).
    pub max_frame_retries: u8,
    /// Frames a radio holds while it is busy with one; more are dropped and counted.
    pub max_queue: usize,
}

impl Default for AirtimeConfig {
    fn default() -> Self {
        AirtimeConfig {
            min_be: 3,
            max_be: 5,
            max_csma_backoffs: 4,
            max_frame_retries: 3,
            max_queue: 128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_frame_and_an_ack_on_air() {
        // 127-byte PSDU: 133 bytes on air, 4.256 ms.
        assert_eq!(airtime(127), Duration::from_micros(4256));
        assert_eq!(airtime(ACK_PSDU_LEN), Duration::from_micros(352));
        // An ACK comes back within the wait: turnaround then the ACK itself.
        assert!(TURNAROUND + airtime(ACK_PSDU_LEN) <= ACK_WAIT);
    }
}
