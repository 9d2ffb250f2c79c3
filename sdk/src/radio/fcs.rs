//! The IEEE 802.15.4 frame check sequence: CRC-16/KERMIT (ITU-T polynomial x¹⁶ + x¹² + x⁵ + 1,
//! reflected as `0x8408`, initial value 0, no final XOR), sent least significant byte first
//! (IEEE 802.15.4-2020 §7.2.11).

/// The CRC table of the reflected polynomial `0x8408`, one entry per byte value.
const TABLE: [u16; 256] = make_table();

// Evaluated at compile time only: an index out of range would fail the build, not panic.
#[allow(clippy::indexing_slicing)]
const fn make_table() -> [u16; 256] {
    let mut table = [0_u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The FCS of `bytes` (a MAC frame without its FCS).
///
/// ```
/// // The CRC-16/KERMIT check value.
/// assert_eq!(v6iot_sdk::radio::fcs::fcs(b"123456789"), 0x2189);
/// ```
#[must_use]
pub fn fcs(bytes: &[u8]) -> u16 {
    let mut crc = 0_u16;
    for &b in bytes {
        // The index is a u8, so it is always within the 256-entry table.
        let idx = usize::from((crc ^ u16::from(b)) as u8);
        crc = (crc >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
    }
    crc
}

/// The two FCS bytes of `bytes` as they follow the frame on air (least significant first).
#[must_use]
pub fn fcs_bytes(bytes: &[u8]) -> [u8; 2] {
    fcs(bytes).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_byte_order() {
        assert_eq!(fcs(b"123456789"), 0x2189);
        assert_eq!(fcs_bytes(b"123456789"), [0x89, 0x21]);
        assert_eq!(fcs(&[]), 0);
    }

    #[test]
    fn a_frame_followed_by_its_fcs_checks_to_zero() {
        // An 802.15.4 ACK frame (FCF 0x0002, sequence 0x56); tshark checks FCS of whole frames
        // (tests/lowpan_tshark.rs).
        let frame = [0x02, 0x00, 0x56];
        let mut with_fcs = frame.to_vec();
        with_fcs.extend_from_slice(&fcs_bytes(&frame));
        assert_eq!(fcs(&with_fcs), 0, "the residue of a good frame is zero");
        with_fcs[1] ^= 0x10;
        assert_ne!(fcs(&with_fcs), 0, "a flipped bit is seen");
    }
}
