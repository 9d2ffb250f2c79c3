//! ZEP v2, the ZigBee Encapsulation Protocol: 802.15.4 frames in UDP datagrams (port 17754),
//! as Wireshark dissects them (`packet-zep.c`). Sans-IO: encode into a buffer, decode a slice.
//!
//! ```text
//! offset  0    2    3    4       5          7          8    9          17         21     31    32
//!        +----+----+----+-------+----------+----------+----+----------+----------+------+-----+-----------+
//!        | EX | 2  | 1  |channel|device id | CRC/LQI  |LQI | NTP time | sequence | rsvd | len | PSDU ...  |
//!        |    |ver |type|       |  (u16)   |  mode    |    |  (u64)   |  (u32)   | (10) |     | (len)     |
//!        +----+----+----+-------+----------+----------+----+----------+----------+------+-----+-----------+
//! ```
//!
//! Multi-byte fields are big-endian. `len` (7 bits) is the PSDU length, FCS included. In CRC
//! mode (1) the PSDU ends in the frame's FCS — what we send, and what Wireshark needs to call a
//! frame good; in LQI mode (0) its last two bytes are RSSI/LQI metadata instead, not checked.
//! Type 2 messages (acknowledgements, 8 bytes) carry no frame and are refused as
//! [`ZepError::NotData`].

use core::time::Duration;

use super::{FCS_LEN, FcsFrame, FrameError, MAX_PHY_PACKET, MacFrame};

/// The UDP port of ZEP.
pub const PORT: u16 = 17754;

/// The length of a ZEP v2 data header.
pub const HEADER_LEN: usize = 32;

/// The longest ZEP v2 data datagram: the header and a full PSDU.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_PHY_PACKET;

const PREAMBLE: [u8; 2] = *b"EX";
const VERSION: u8 = 2;
const TYPE_DATA: u8 = 1;
const MODE_CRC: u8 = 1;
const MODE_LQI: u8 = 0;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why a datagram is not a ZEP v2 data message with a frame in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZepError {
    /// Shorter than the header, or than the length it claims.
    #[error("ZEP datagram of {len} bytes is too short")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// Does not start with `EX`.
    #[error("not ZEP: no \"EX\" preamble")]
    Preamble,
    /// A version other than 2.
    #[error("ZEP version {0} (only 2 is supported)")]
    Version(u8),
    /// An acknowledgement or another message type without a frame.
    #[error("ZEP message type {0} carries no frame")]
    NotData(u8),
    /// The length field disagrees with the datagram's size.
    #[error("ZEP length field {field} but {actual} bytes follow the header")]
    Length {
        /// The header's length field.
        field: usize,
        /// The bytes after the header.
        actual: usize,
    },
    /// The encapsulated frame is not a good frame (bad FCS, too short).
    #[error("ZEP frame: {0}")]
    Frame(#[from] FrameError),
    /// The output buffer is smaller than the datagram (when encoding).
    #[error("output buffer too small for a ZEP datagram of {need} bytes")]
    BufferTooSmall {
        /// What the datagram needs.
        need: usize,
    },
}

/// An NTP timestamp: 32 bits of seconds since 1900, 32 bits of fraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP time of `since_unix_epoch` (what `SystemTime::now().duration_since(UNIX_EPOCH)`
    /// gives).
    #[must_use]
    pub fn from_unix(since_unix_epoch: Duration) -> NtpTime {
        let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }
}

/// The fields of a ZEP v2 data header that vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZepHeader {
    /// The 802.15.4 channel (11–26 on 2.4 GHz).
    pub channel: u8,
    /// The sending device's id.
    pub device_id: u16,
    /// The link quality indication.
    pub lqi: u8,
    /// When the frame was sent.
    pub timestamp: NtpTime,
    /// The sender's message counter.
    pub sequence: u32,
}

/// A decoded ZEP data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZepData<'a> {
    /// The header.
    pub header: ZepHeader,
    /// Whether the PSDU ended in an FCS (CRC mode) that was checked.
    pub fcs_checked: bool,
    /// The frame without its FCS (or LQI trailer).
    pub frame: MacFrame<'a>,
}

/// Writes `header` and `frame` followed by its FCS (CRC mode) into `out`; returns the
/// datagram's length.
pub fn encode(header: &ZepHeader, frame: MacFrame<'_>, out: &mut [u8]) -> Result<usize, ZepError> {
    let psdu_len = frame.len() + FCS_LEN;
    let need = HEADER_LEN + psdu_len;
    let out = out
        .get_mut(..need)
        .ok_or(ZepError::BufferTooSmall { need })?;
    let (head, psdu) = out.split_at_mut(HEADER_LEN);
    head.fill(0);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = head.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&PREAMBLE);
    put(&[VERSION, TYPE_DATA, header.channel]);
    put(&header.device_id.to_be_bytes());
    put(&[MODE_CRC, header.lqi]);
    put(&header.timestamp.0.to_be_bytes());
    put(&header.sequence.to_be_bytes());
    put(&[0; 10]);
    // A MacFrame is at most 125 bytes, so the PSDU length fits the 7-bit field.
    put(&[psdu_len as u8]);
    frame
        .write_with_fcs(psdu)
        .ok_or(ZepError::BufferTooSmall { need })?;
    Ok(need)
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Decodes a ZEP v2 data datagram; in CRC mode the frame's FCS is checked.
pub fn decode(datagram: &[u8]) -> Result<ZepData<'_>, ZepError> {
    let len = datagram.len();
    let Some((head, psdu)) = datagram.split_at_checked(HEADER_LEN) else {
        // A v2 ACK is 8 bytes: say so rather than "too short".
        return match (datagram.get(..2), datagram.get(2), datagram.get(3)) {
            (Some(p), _, _) if p != PREAMBLE => Err(ZepError::Preamble),
            (_, Some(&VERSION), Some(&t)) if t != TYPE_DATA => Err(ZepError::NotData(t)),
            _ => Err(ZepError::TooShort { len }),
        };
    };
    if head.get(..2) != Some(&PREAMBLE[..]) {
        return Err(ZepError::Preamble);
    }
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    match (byte(2), byte(3)) {
        (VERSION, TYPE_DATA) => {}
        (VERSION, t) => return Err(ZepError::NotData(t)),
        (v, _) => return Err(ZepError::Version(v)),
    }
    let field = usize::from(byte(31) & 0x7f);
    if field != psdu.len() {
        return Err(ZepError::Length {
            field,
            actual: psdu.len(),
        });
    }
    let header = ZepHeader {
        channel: byte(4),
        device_id: be_u16(head, 5),
        lqi: byte(8),
        timestamp: NtpTime(be_u64(head, 9)),
        sequence: be_u32(head, 17),
    };
    let (frame, fcs_checked) = if byte(7) == MODE_LQI {
        let body = psdu
            .len()
            .checked_sub(FCS_LEN)
            .and_then(|n| psdu.get(..n))
            .ok_or(ZepError::TooShort { len })?;
        (MacFrame::new(body)?, false)
    } else {
        (FcsFrame::check(psdu)?.mac_frame(), true)
    };
    Ok(ZepData {
        header,
        fcs_checked,
        frame,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ZepHeader {
        ZepHeader {
            channel: 26,
            device_id: 0x1234,
            lqi: 255,
            timestamp: NtpTime(0x0102_0304_0506_0708),
            sequence: 9,
        }
    }

    #[test]
    fn encode_layout_and_round_trip() {
        let frame_bytes = [0x41, 0xd8, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x01, 0x00, 0x7a];
        let frame = MacFrame::new(&frame_bytes).unwrap();
        let mut buf = [0; MAX_DATAGRAM];
        let n = encode(&header(), frame, &mut buf).unwrap();
        assert_eq!(n, 32 + 10 + 2);
        assert_eq!(
            &buf[..32],
            &[
                b'E', b'X', 2, 1, 26, 0x12, 0x34, 1, 255, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 12
            ]
        );
        let fcs = crate::radio::fcs::fcs_bytes(&frame_bytes);
        assert_eq!(&buf[42..44], &fcs);
        let data = decode(&buf[..n]).unwrap();
        assert_eq!(data.header, header());
        assert!(data.fcs_checked);
        assert_eq!(data.frame, frame);
    }

    #[test]
    fn refusals() {
        let frame = MacFrame::new(&[0x41, 0xd8, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x01, 0x00]).unwrap();
        let mut buf = [0; MAX_DATAGRAM];
        let n = encode(&header(), frame, &mut buf).unwrap();
        let good = buf;

        buf[40] ^= 0x80;
        assert!(matches!(
            decode(&buf[..n]),
            Err(ZepError::Frame(FrameError::BadFcs { .. }))
        ));
        assert_eq!(
            decode(&good[..n - 1]),
            Err(ZepError::Length {
                field: 11,
                actual: 10
            })
        );
        assert_eq!(decode(b"EX\x02\x02\0\0\0\x05"), Err(ZepError::NotData(2)));
        assert_eq!(decode(b"XX\x02\x01"), Err(ZepError::Preamble));
        assert_eq!(decode(&good[..20]), Err(ZepError::TooShort { len: 20 }));
        let mut v1 = good;
        v1[2] = 1;
        assert_eq!(decode(&v1[..n]), Err(ZepError::Version(1)));
        assert_eq!(
            encode(&header(), frame, &mut [0; 40]),
            Err(ZepError::BufferTooSmall { need: 43 })
        );
        // LQI mode: the trailer is not an FCS and is not checked.
        let mut lqi = good;
        lqi[7] = 0;
        lqi[n - 1] ^= 0xff;
        let data = decode(&lqi[..n]).unwrap();
        assert!(!data.fcs_checked);
        assert_eq!(data.frame, frame);
    }

    #[test]
    fn ntp_time_of_unix_time() {
        let t = NtpTime::from_unix(Duration::new(1, 500_000_000));
        assert_eq!(t.0 >> 32, 2_208_988_801);
        assert_eq!(t.0 & 0xffff_ffff, 0x8000_0000);
    }
}
