//! Transmission parameters (RFC 7252 §4.8) and the limits that bound a device's memory.

use core::time::Duration;

/// Settings of one CoAP endpoint. The defaults are RFC 7252's and fit a device on IPv6/UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// ACK_TIMEOUT: the first retransmission waits between this and this × ACK_RANDOM_FACTOR.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR in percent (150 = 1.5).
    pub ack_random_factor_percent: u16,
    /// MAX_RETRANSMIT: retransmissions of a Confirmable message before giving up.
    pub max_retransmit: u8,
    /// MAX_LATENCY: the longest a datagram is assumed to take in the network.
    pub max_latency: Duration,
    /// Preferred block size exponent (RFC 7959): blocks of `2^(szx+4)` bytes, 0..=6.
    pub block_szx: u8,
    /// Largest request body accepted through Block1, in bytes; larger gets 4.13.
    pub max_body: usize,
    /// Most concurrent Block1 uploads kept; a new one evicts the oldest.
    pub max_uploads: u8,
    /// Most observers kept; further registrations are served without Observe (RFC 7641 §4.1).
    pub max_observers: u8,
    /// Most remembered message IDs for deduplication; the oldest is forgotten first.
    pub max_dedup: u16,
    /// Most requests awaiting a separate response at once; more get 5.03.
    pub max_deferred: u8,
    /// A notification is sent Confirmable when the last Confirmable one to that observer is
    /// this old (RFC 7641 §4.5: at least every 24 hours).
    pub con_notification_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor_percent: 150,
            max_retransmit: 4,
            max_latency: Duration::from_secs(100),
            block_szx: 6,
            max_body: 16 * 1024,
            max_uploads: 2,
            max_observers: 8,
            max_dedup: 64,
            max_deferred: 4,
            con_notification_interval: Duration::from_secs(24 * 3600),
        }
    }
}

impl Config {
    /// MAX_TRANSMIT_SPAN = ACK_TIMEOUT × (2^MAX_RETRANSMIT − 1) × ACK_RANDOM_FACTOR (§4.8.2).
    pub fn max_transmit_span(&self) -> Duration {
        let doublings = (1u32 << u32::from(self.max_retransmit.min(16))) - 1;
        self.ack_timeout
            .saturating_mul(doublings)
            .saturating_mul(u32::from(self.ack_random_factor_percent))
            / 100
    }

    /// EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 × MAX_LATENCY + PROCESSING_DELAY (§4.8.2);
    /// 247 s with the defaults.
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency * 2 + self.ack_timeout
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        1usize << (u32::from(self.block_szx.min(6)) + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_times_match_rfc7252_section_4_8_2() {
        let c = Config::default();
        assert_eq!(c.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(c.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(c.block_size(), 1024);
    }
}
