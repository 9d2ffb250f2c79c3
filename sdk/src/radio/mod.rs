//! IEEE 802.15.4 radios: one [`Radio`] trait, the frame types it carries, and its
//! implementations.
//!
//! # Frames with and without FCS
//!
//! The 6LoWPAN layer builds and parses [`MacFrame`]s: MAC header and payload, **without** the
//! 2-byte frame check sequence. On air (and in ZEP datagrams, and in pcap link type 195) a frame
//! is followed by its FCS: that is an [`FcsFrame`], whose constructor checks the FCS. A radio
//! takes a `MacFrame` to send and hands out a `MacFrame` it received; where its medium carries
//! an FCS, the radio appends it on the way out and checks and strips it on the way in (a frame
//! with a bad FCS is dropped and counted in [`RadioStats::bad_fcs`]). A Linux `wpan` interface
//! does both in the kernel or the hardware.
//!
//! # Layers
//!
//! | module | job | I/O |
//! |---|---|---|
//! | [`fcs`] | CRC-16/KERMIT, the 802.15.4 FCS | none |
//! | [`mac`] | 802.15.4 data frames on `smoltcp::wire::Ieee802154Frame`: build and parse, with named drop causes | none |
//! | [`zep`] | ZEP v2 (the simulated medium's encapsulation, UDP port 17754): encode and decode, FCS in CRC mode | none |
//! | [`pcap`] | pcap files of 802.15.4 frames (link type 195 with FCS, 230 without); [`pcap::PcapRadio`] records any radio | the wrapper writes to an `io::Write` (`std`) |
//! | [`memory`] | in-memory radios joined by a shared medium, for tests and simulations | none |
//! | [`zep_udp`] | ZEP over a UDP socket | `std` |
//! | [`linux`] | a Linux 802.15.4 interface (`wpan0`) through an `AF_PACKET` raw socket | `std`, Linux |
//!
//! Everything but `zep_udp`, `linux` and `PcapRadio` uses `core` and `alloc` only.

use core::time::Duration;

pub mod fcs;
#[cfg(all(feature = "std", target_os = "linux"))]
pub mod linux;
pub mod mac;
pub mod memory;
pub mod pcap;
pub mod zep;
#[cfg(feature = "std")]
pub mod zep_udp;

/// The largest PHY payload (PSDU) of IEEE 802.15.4: `aMaxPhyPacketSize`, FCS included.
pub const MAX_PHY_PACKET: usize = 127;

/// The length of the frame check sequence.
pub const FCS_LEN: usize = 2;

/// The largest MAC frame without its FCS: [`MAX_PHY_PACKET`] − [`FCS_LEN`].
pub const MAX_MAC_FRAME: usize = MAX_PHY_PACKET - FCS_LEN;

/// Why a byte string is not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Longer than the PHY allows.
    #[error("frame of {len} bytes exceeds the 802.15.4 limit of {max}")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// The limit (with or without FCS).
        max: usize,
    },
    /// Shorter than the smallest frame (3 bytes of MAC header, plus the FCS where carried).
    #[error("frame of {len} bytes is too short")]
    TooShort {
        /// The frame's length.
        len: usize,
    },
    /// The FCS does not match the frame.
    #[error("bad FCS: frame says {carried:#06x}, computed {computed:#06x}")]
    BadFcs {
        /// The FCS at the end of the frame.
        carried: u16,
        /// The FCS of the frame's bytes.
        computed: u16,
    },
}

/// A MAC frame as the 6LoWPAN layer builds and parses it: header and payload, **no FCS**.
///
/// At least 3 bytes (frame control and sequence number) and at most [`MAX_MAC_FRAME`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacFrame<'a>(&'a [u8]);

impl<'a> MacFrame<'a> {
    /// `bytes` as a MAC frame without FCS, if its length allows.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FrameError> {
        match bytes.len() {
            len if len > MAX_MAC_FRAME => Err(FrameError::TooLong {
                len,
                max: MAX_MAC_FRAME,
            }),
            len if len < 3 => Err(FrameError::TooShort { len }),
            _ => Ok(Self(bytes)),
        }
    }

    /// `bytes` that the crate built as a frame (a MAC header of at least 3 bytes, at most
    /// [`MAX_MAC_FRAME`]), without checking again.
    pub(crate) fn from_built(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The frame's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The frame's length without FCS.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The FCS of this frame.
    #[must_use]
    pub fn fcs(&self) -> u16 {
        fcs::fcs(self.0)
    }

    /// Writes the frame followed by its FCS into `out`; returns that length
    /// (`self.len() + 2`), or `None` if `out` is too small.
    pub fn write_with_fcs(&self, out: &mut [u8]) -> Option<usize> {
        let n = self.0.len();
        out.get_mut(..n)?.copy_from_slice(self.0);
        out.get_mut(n..n + FCS_LEN)?
            .copy_from_slice(&fcs::fcs_bytes(self.0));
        Some(n + FCS_LEN)
    }
}

/// A frame as it is on air: a [`MacFrame`] followed by its 2-byte FCS, checked on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FcsFrame<'a>(&'a [u8]);

impl<'a> FcsFrame<'a> {
    /// `bytes` (a frame ending in its FCS), if its length allows and its FCS is right.
    pub fn check(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let len = bytes.len();
        if len > MAX_PHY_PACKET {
            return Err(FrameError::TooLong {
                len,
                max: MAX_PHY_PACKET,
            });
        }
        let Some((frame, carried)) = bytes.split_last_chunk::<FCS_LEN>() else {
            return Err(FrameError::TooShort { len });
        };
        if frame.len() < 3 {
            return Err(FrameError::TooShort { len });
        }
        let carried = u16::from_le_bytes(*carried);
        let computed = fcs::fcs(frame);
        if carried != computed {
            return Err(FrameError::BadFcs { carried, computed });
        }
        Ok(Self(bytes))
    }

    /// The frame without its FCS.
    #[must_use]
    pub fn mac_frame(&self) -> MacFrame<'a> {
        MacFrame(self.0.get(..self.0.len() - FCS_LEN).unwrap_or_default())
    }

    /// The frame with its FCS, as on air.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// A frame a radio received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception<'b> {
    /// The frame, its FCS (where the medium carries one) checked and removed.
    pub frame: MacFrame<'b>,
    /// The link quality indication the medium reported, if any.
    pub lqi: Option<u8>,
}

/// What a radio dropped, by cause, and what it moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RadioStats {
    /// Frames sent.
    pub sent: u64,
    /// Frames received and handed out.
    pub received: u64,
    /// Frames dropped because their FCS was wrong.
    pub bad_fcs: u64,
    /// Datagrams or frames dropped as malformed (not ZEP, wrong version, length mismatch,
    /// shorter than a MAC header).
    pub malformed: u64,
    /// Frames dropped because they were on another channel.
    pub other_channel: u64,
    /// ZEP acknowledgements and other non-data messages dropped.
    pub not_data: u64,
    /// Frames dropped because they did not fit the receive buffer.
    pub truncated: u64,
}

/// An IEEE 802.15.4 radio: sends and receives MAC frames (without FCS, see the module doc).
///
/// Drivers move frames between a radio and a sans-IO core (a 6LoWPAN device, a border router);
/// the cores never call a radio themselves.
pub trait Radio {
    /// What can go wrong below the radio (a socket error, say).
    type Error: core::fmt::Debug + core::fmt::Display;

    /// Sends one frame; the radio appends the FCS where its medium carries one.
    fn transmit(&mut self, frame: MacFrame<'_>) -> Result<(), Self::Error>;

    /// The next frame received, written into `buf`, waiting at most `wait` for one
    /// (`Duration::ZERO`: only what is already there). `Ok(None)` when nothing came. Frames
    /// the radio drops (bad FCS, malformed, another channel) are counted in [`Radio::stats`]
    /// and never handed out.
    fn receive<'b>(
        &mut self,
        buf: &'b mut [u8],
        wait: Duration,
    ) -> Result<Option<Reception<'b>>, Self::Error>;

    /// Counters of frames moved and dropped.
    fn stats(&self) -> RadioStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_frame_bounds() {
        assert!(MacFrame::new(&[0; 3]).is_ok());
        assert!(MacFrame::new(&[0; MAX_MAC_FRAME]).is_ok());
        assert_eq!(
            MacFrame::new(&[0; MAX_MAC_FRAME + 1]),
            Err(FrameError::TooLong { len: 126, max: 125 })
        );
        assert_eq!(MacFrame::new(&[0; 2]), Err(FrameError::TooShort { len: 2 }));
    }

    #[test]
    fn fcs_frame_round_trip_and_refusals() {
        let bytes = [0x41, 0xd8, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x7a];
        let frame = MacFrame::new(&bytes).unwrap();
        let mut buf = [0; 16];
        let n = frame.write_with_fcs(&mut buf).unwrap();
        assert_eq!(n, bytes.len() + 2);
        let on_air = FcsFrame::check(&buf[..n]).unwrap();
        assert_eq!(on_air.mac_frame(), frame);
        assert_eq!(on_air.as_bytes().len(), 10);

        buf[3] ^= 1;
        assert!(matches!(
            FcsFrame::check(&buf[..n]),
            Err(FrameError::BadFcs { .. })
        ));
        assert_eq!(
            FcsFrame::check(&buf[..4]),
            Err(FrameError::TooShort { len: 4 })
        );
        assert!(frame.write_with_fcs(&mut [0; 9]).is_none());
        assert!(matches!(
            FcsFrame::check(&[0; 128]),
            Err(FrameError::TooLong { .. })
        ));
    }
}
