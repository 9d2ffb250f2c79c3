//! What the medium counts: frames offered, put on air, delivered, collided; back-offs, CCA
//! failures, retries; drops by cause; and per channel the time on air, accounted per window so a
//! report can say how busy the busiest window was.

use serde::Serialize;

/// Frames the medium dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Offered while the sender's radio queue was full (airtime model).
    pub queue_full: u64,
    /// The channel access failed: the CCA found the channel busy more than `macMaxCsmaBackoffs`
    /// times in a row (airtime model).
    pub channel_access: u64,
    /// No ACK came after `macMaxFrameRetries` retransmissions (airtime model).
    pub no_ack: u64,
    /// Receptions lost by the link's delivery probability.
    pub link_loss: u64,
    /// Receptions lost because the receiver was itself transmitting (half duplex).
    pub receiver_busy: u64,
    /// Deliveries dropped because too many were waiting (latency, or not polled).
    pub backlog: u64,
    /// Offered by a participant that is not (or no longer) in the medium.
    pub unknown_sender: u64,
}

/// The medium's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediumStats {
    /// Frames participants handed to the medium.
    pub offered: u64,
    /// Data frames put on air (retransmissions included; with the model off, one per frame
    /// offered).
    pub transmissions: u64,
    /// Acknowledgements put on air.
    pub acks: u64,
    /// Receptions handed to participants.
    pub delivered: u64,
    /// Receptions lost to another transmission overlapping at the receiver.
    pub collided: u64,
    /// Back-off periods drawn before a CCA.
    pub backoffs: u64,
    /// CCAs that found the channel busy (each followed by another back-off, or a channel access
    /// failure).
    pub cca_busy: u64,
    /// Retransmissions after a missing ACK.
    pub retries: u64,
    /// Frames confirmed by an ACK.
    pub acked: u64,
    /// PPDU bytes put on air: PHY headers, FCS, retransmissions and ACKs included.
    pub air_bytes: u64,
    /// Drops by cause.
    pub dropped: Drops,
}

/// The load of one channel, accounted in windows of fixed length on the medium's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChannelLoad {
    /// The channel.
    pub channel: u8,
    /// PPDU bytes transmitted on it (overlapping transmissions each counted).
    pub air_bytes: u64,
    /// Time during which at least one transmission was on air, µs.
    pub busy_us: u64,
    /// The accounting window, µs.
    pub window_us: u64,
    /// The most busy time in one window, µs (at most `window_us`).
    pub peak_busy_us: u64,
    /// The most bytes one receiver on the channel was handed in one window.
    pub peak_received_bytes: u64,
}

impl ChannelLoad {
    /// The busiest window's time on air as bits per second at 250 kbit/s: what the channel
    /// carried at its peak (never above 250,000).
    #[must_use]
    pub fn peak_on_air_bps(&self) -> f64 {
        if self.window_us == 0 {
            return 0.0;
        }
        250_000.0 * self.peak_busy_us as f64 / self.window_us as f64
    }

    /// The most bits per second one receiver was handed in a window (MAC frames with FCS).
    #[must_use]
    pub fn peak_received_bps(&self) -> f64 {
        if self.window_us == 0 {
            return 0.0;
        }
        8.0 * self.peak_received_bytes as f64 * 1e6 / self.window_us as f64
    }
}

/// A running total per window: the current window's sum and the largest sum of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Windowed {
    window: u64,
    current: u64,
    peak: u64,
}

impl Windowed {
    /// Adds `amount` to window number `window` (windows only move forward; an amount for an
    /// earlier window is added to the current one).
    pub(crate) fn add(&mut self, window: u64, amount: u64) {
        if window > self.window {
            self.window = window;
            self.current = 0;
        }
        self.current += amount;
        self.peak = self.peak.max(self.current);
    }

    /// The largest sum of one window so far.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_their_peak() {
        let mut w = Windowed::default();
        w.add(0, 5);
        w.add(0, 5);
        w.add(1, 3);
        w.add(3, 12);
        w.add(2, 1); // late: counted in the current window
        assert_eq!(w.peak(), 13);
        let load = ChannelLoad {
            window_us: 1_000_000,
            peak_busy_us: 500_000,
            peak_received_bytes: 10_000,
            ..ChannelLoad::default()
        };
        assert_eq!(load.peak_on_air_bps(), 125_000.0);
        assert_eq!(load.peak_received_bps(), 80_000.0);
    }
}
