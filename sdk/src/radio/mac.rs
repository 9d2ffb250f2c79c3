//! IEEE 802.15.4 data frames, on `smoltcp::wire::Ieee802154Frame` and `Ieee802154Repr`
//! (IEEE 802.15.4-2006 §7.2.2.2).
//!
//! 6LoWPAN uses one kind of frame: a data frame with a destination (an extended address, or the
//! short broadcast address `0xffff`), a source (an extended or short address), PAN ID
//! compression (one PAN ID for both), no security. [`DataHeader`] builds such frames and parses
//! any data frame with both addresses; everything else is refused with a named cause
//! ([`MacError`]), so a receiver can count what it drops.

pub use smoltcp::wire::{Ieee802154Address as LinkAddr, Ieee802154Pan as PanId};
use smoltcp::wire::{Ieee802154Frame, Ieee802154FrameType, Ieee802154FrameVersion, Ieee802154Repr};

use super::{MAX_MAC_FRAME, MacFrame};

/// Why a MAC frame was not accepted as a 6LoWPAN data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// The frame's header is cut short or has reserved values (frame version, addressing mode).
    #[error("malformed MAC header")]
    Malformed,
    /// A beacon, acknowledgement or MAC command: not data.
    #[error("not a data frame")]
    NotData,
    /// MAC security is not supported (OSCORE protects the application data).
    #[error("MAC security is not supported")]
    Secured,
    /// The frame lacks a source or destination address, or its PAN ID.
    #[error("data frame without both addresses and a PAN ID")]
    MissingAddress,
    /// The header and payload do not fit one frame (when building).
    #[error("frame of {len} bytes exceeds {max} bytes (without FCS)")]
    TooLong {
        /// Header plus payload.
        len: usize,
        /// [`MAX_MAC_FRAME`].
        max: usize,
    },
    /// The output buffer is smaller than the frame (when building).
    #[error("output buffer of {have} bytes, frame needs {need}")]
    BufferTooSmall {
        /// What the frame needs.
        need: usize,
        /// What the buffer has.
        have: usize,
    },
}

/// The header of a 6LoWPAN data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The MAC sequence number.
    pub sequence: u8,
    /// The PAN ID (destination PAN; the source PAN is the same, compressed).
    pub pan: PanId,
    /// The destination: an extended address, a short address or [`LinkAddr::BROADCAST`].
    pub dst: LinkAddr,
    /// The source: an extended or a short address.
    pub src: LinkAddr,
    /// Whether the sender asks for a MAC acknowledgement.
    pub ack_request: bool,
}

impl DataHeader {
    fn repr(&self) -> Ieee802154Repr {
        Ieee802154Repr {
            frame_type: Ieee802154FrameType::Data,
            security_enabled: false,
            frame_pending: false,
            ack_request: self.ack_request,
            sequence_number: Some(self.sequence),
            pan_id_compression: true,
            frame_version: Ieee802154FrameVersion::Ieee802154_2006,
            dst_pan_id: Some(self.pan),
            dst_addr: Some(self.dst),
            src_pan_id: None,
            src_addr: Some(self.src),
        }
    }

    /// The length of this header: 3 + 2 (PAN ID) + the two addresses.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.repr().buffer_len()
    }

    /// The most payload a frame with this header carries.
    #[must_use]
    pub fn max_payload(&self) -> usize {
        MAX_MAC_FRAME - self.header_len()
    }

    /// Writes this header and `payload` into `out`; returns the frame's length (no FCS).
    pub fn emit(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, MacError> {
        let header_len = self.header_len();
        let len = header_len + payload.len();
        if len > MAX_MAC_FRAME {
            return Err(MacError::TooLong {
                len,
                max: MAX_MAC_FRAME,
            });
        }
        if matches!(self.src, LinkAddr::Absent) || matches!(self.dst, LinkAddr::Absent) {
            return Err(MacError::MissingAddress);
        }
        let have = out.len();
        let (frame_buf, payload_buf) = out
            .get_mut(..len)
            .ok_or(MacError::BufferTooSmall { need: len, have })?
            .split_at_mut(header_len);
        frame_buf.fill(0);
        // `emit` writes exactly `buffer_len()` bytes for a data frame with both addresses.
        self.repr()
            .emit(&mut Ieee802154Frame::new_unchecked(frame_buf));
        payload_buf.copy_from_slice(payload);
        Ok(len)
    }

    /// Parses a data frame with both addresses; returns its header and payload.
    pub fn parse(frame: MacFrame<'_>) -> Result<(DataHeader, &[u8]), MacError> {
        let bytes = frame.as_bytes();
        // The frame type first (frame control bits 0–2): smoltcp's length check assumes
        // addressing fields that an acknowledgement does not have.
        if bytes.first().is_some_and(|fc| fc & 0b111 != 0b001) {
            return Err(MacError::NotData);
        }
        let view = Ieee802154Frame::new_checked(bytes).map_err(|_| MacError::Malformed)?;
        let repr = Ieee802154Repr::parse(&view).map_err(|_| MacError::Malformed)?;
        if repr.frame_type != Ieee802154FrameType::Data {
            return Err(MacError::NotData);
        }
        if repr.security_enabled {
            return Err(MacError::Secured);
        }
        let (Some(dst), Some(src), Some(pan)) = (
            repr.dst_addr,
            repr.src_addr,
            repr.dst_pan_id.or(repr.src_pan_id),
        ) else {
            return Err(MacError::MissingAddress);
        };
        if matches!(dst, LinkAddr::Absent) || matches!(src, LinkAddr::Absent) {
            return Err(MacError::MissingAddress);
        }
        let payload = view.payload().ok_or(MacError::Malformed)?;
        let header = DataHeader {
            sequence: repr.sequence_number.unwrap_or(0),
            pan,
            dst,
            src,
            ack_request: repr.ack_request,
        };
        Ok((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: LinkAddr = LinkAddr::Extended([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]);
    const ROUTER: LinkAddr = LinkAddr::Extended([0x02, 0, 0, 0, 0, 0, 0, 0x01]);

    #[test]
    fn data_frame_bytes_and_round_trip() {
        let header = DataHeader {
            sequence: 7,
            pan: PanId(0xabcd),
            dst: ROUTER,
            src: DEVICE,
            ack_request: false,
        };
        assert_eq!(header.header_len(), 21);
        assert_eq!(header.max_payload(), 104);
        let mut buf = [0; 127];
        let n = header.emit(b"\x7a\x33", &mut buf).unwrap();
        // FCF 0xdc41: data, PAN ID compression, 2006, both addresses extended; then the
        // sequence number, the PAN ID and the addresses, all least significant byte first.
        assert_eq!(
            &buf[..n],
            &[
                0x41, 0xdc, 7, 0xcd, 0xab, 0x01, 0, 0, 0, 0, 0, 0, 0x02, 0xef, 0xcd, 0xab, 0x78,
                0x56, 0x34, 0x12, 0x02, 0x7a, 0x33
            ]
        );
        let (parsed, payload) = DataHeader::parse(MacFrame::new(&buf[..n]).unwrap()).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(payload, b"\x7a\x33");
    }

    #[test]
    fn broadcast_and_short_addresses() {
        let header = DataHeader {
            sequence: 0,
            pan: PanId(0x1234),
            dst: LinkAddr::BROADCAST,
            src: LinkAddr::Short([0x00, 0x01]),
            ack_request: false,
        };
        assert_eq!(header.header_len(), 9);
        let mut buf = [0; 127];
        let n = header.emit(&[0x7a], &mut buf).unwrap();
        let (parsed, payload) = DataHeader::parse(MacFrame::new(&buf[..n]).unwrap()).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(payload, [0x7a]);
    }

    #[test]
    fn refusals() {
        let header = DataHeader {
            sequence: 0,
            pan: PanId(1),
            dst: ROUTER,
            src: DEVICE,
            ack_request: false,
        };
        let mut buf = [0; 200];
        assert_eq!(
            header.emit(&[0; 105], &mut buf),
            Err(MacError::TooLong { len: 126, max: 125 })
        );
        assert_eq!(
            header.emit(&[0; 10], &mut buf[..20]),
            Err(MacError::BufferTooSmall { need: 31, have: 20 })
        );
        // An ACK frame: not data.
        assert_eq!(
            DataHeader::parse(MacFrame::new(&[0x02, 0x00, 0x56]).unwrap()),
            Err(MacError::NotData)
        );
        // A data frame claiming an extended destination but cut short.
        assert_eq!(
            DataHeader::parse(MacFrame::new(&[0x41, 0xdc, 0x01, 0xcd, 0xab]).unwrap()),
            Err(MacError::Malformed)
        );
        // Security enabled (bit 3), short addresses.
        let secured = [
            0x49, 0x88, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x01, 0x00, 0x00, 0, 0, 0, 0,
        ];
        assert_eq!(
            DataHeader::parse(MacFrame::new(&secured).unwrap()),
            Err(MacError::Secured)
        );
        // No source address.
        let no_src = [0x41, 0x08, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x7a];
        assert_eq!(
            DataHeader::parse(MacFrame::new(&no_src).unwrap()),
            Err(MacError::MissingAddress)
        );
    }
}
