//! Interface IDs: the plan's class and serial form, modified EUI-64 and 802.15.4 short addresses.

use alloc::borrow::ToOwned;

use core::fmt;
use core::net::Ipv6Addr;
use core::str::FromStr;

use super::AddrError;

/// The U/L ("universal/local") bit of the first byte of an EUI-64, inverted in an IID.
const UL_BIT: u64 = 0x02 << 56;

/// The fixed part of the IID formed from an 802.15.4 short address: `0000:00ff:fe00:XXXX`.
const SHORT_IID_BASE: u64 = 0x0000_00ff_fe00_0000;

/// The mask of [`SHORT_IID_BASE`]: everything but the low 16 bits.
const SHORT_IID_MASK: u64 = 0xffff_ffff_ffff_0000;

/// A 64-bit IPv6 interface identifier: the low half of an address.
///
/// Any 64-bit value is an interface ID; whether it is a v6iot device IID is up to
/// [`DeviceIid::try_from`]. `Display` writes the four groups in full, e.g.
/// `0012:3456:78ab:cdef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceId(pub u64);

impl InterfaceId {
    /// The interface ID from its eight bytes, most significant first.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    /// The eight bytes of the interface ID, most significant first.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The low 64 bits of `addr`.
    #[must_use]
    pub const fn of_addr(addr: Ipv6Addr) -> Self {
        // Truncation keeps exactly the low 64 bits.
        Self(addr.to_bits() as u64)
    }

    /// The interface ID of a modified EUI-64 (RFC 4291 Appendix A): the EUI-64 with the U/L
    /// bit (`0x02` of the first byte) flipped.
    #[must_use]
    pub const fn from_eui64(eui: Eui64) -> Self {
        Self(u64::from_be_bytes(eui.0) ^ UL_BIT)
    }

    /// The EUI-64 this interface ID was formed from: the U/L bit flipped back.
    #[must_use]
    pub const fn to_eui64(self) -> Eui64 {
        Eui64((self.0 ^ UL_BIT).to_be_bytes())
    }

    /// The interface ID `0000:00ff:fe00:XXXX` for the 802.15.4 short address `XXXX`
    /// (RFC 6282 §3.2.2, which 6LoWPAN IPHC can elide).
    ///
    /// # Errors
    ///
    /// [`AddrError::ShortNotUnicast`] for `0xfffe` ("no short address") and `0xffff`
    /// (broadcast).
    pub fn from_short(short: ShortAddr) -> Result<Self, AddrError> {
        if short.is_unicast() {
            Ok(Self(SHORT_IID_BASE | short.0 as u64))
        } else {
            Err(AddrError::ShortNotUnicast { short })
        }
    }

    /// The 802.15.4 short address this interface ID was formed from, if it has the form
    /// `0000:00ff:fe00:XXXX` and `XXXX` is a unicast short address.
    ///
    /// This is the RFC 6282 form; the RFC 4944 §6 form that puts the PAN ID in the first
    /// group is not recognised.
    #[must_use]
    pub const fn as_short(self) -> Option<ShortAddr> {
        if self.0 & SHORT_IID_MASK != SHORT_IID_BASE {
            return None;
        }
        // The mask check leaves only the low 16 bits set.
        let short = ShortAddr(self.0 as u16);
        if short.is_unicast() {
            Some(short)
        } else {
            None
        }
    }
}

impl fmt::Display for InterfaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:04x}:{:04x}:{:04x}:{:04x}",
            (v >> 48) as u16,
            (v >> 32) as u16,
            (v >> 16) as u16,
            v as u16
        )
    }
}

impl From<Eui64> for InterfaceId {
    fn from(eui: Eui64) -> Self {
        Self::from_eui64(eui)
    }
}

impl From<InterfaceId> for Eui64 {
    fn from(iid: InterfaceId) -> Self {
        iid.to_eui64()
    }
}

/// The link-local address `fe80::/64` + `iid`.
#[must_use]
pub const fn link_local(iid: InterfaceId) -> Ipv6Addr {
    Ipv6Addr::from_bits((0xfe80_u128 << 112) | iid.0 as u128)
}

/// A 64-bit extended unique identifier, as used for the 802.15.4 extended address.
///
/// `Display` and `FromStr` use eight colon-separated hex bytes, `02:12:34:56:78:ab:cd:ef`
/// (`FromStr` accepts either case and insists on exactly two digits a byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eui64(pub [u8; 8]);

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for byte in self.0 {
            write!(f, "{sep}{byte:02x}")?;
            sep = ":";
        }
        Ok(())
    }
}

impl FromStr for Eui64 {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let err = || AddrError::Eui64Syntax {
            input: s.to_owned(),
        };
        let mut out = [0_u8; 8];
        let mut parts = s.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// A 16-bit 802.15.4 short address.
///
/// `Display` writes it as `0x1234`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortAddr(pub u16);

impl ShortAddr {
    /// The broadcast short address, `0xffff`.
    pub const BROADCAST: Self = Self(0xffff);
    /// "No short address; use the extended address", `0xfffe`.
    pub const NONE: Self = Self(0xfffe);

    /// Whether this is a unicast short address (neither [`Self::BROADCAST`] nor
    /// [`Self::NONE`]).
    #[must_use]
    pub const fn is_unicast(self) -> bool {
        self.0 < Self::NONE.0
    }
}

impl fmt::Display for ShortAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// The interface ID of a v6iot device: plan version 0, a device class and a 48-bit serial.
///
/// ```text
/// byte   0      1      2 ..................... 7
///      +------+------+--------------------------+
///      | 0x00 | class|      serial (48 bits)    |
///      +------+------+--------------------------+
/// ```
///
/// Class 0x12, serial 0x3456_78ab_cdef is the IID `0012:3456:78ab:cdef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIid {
    class: u8,
    serial: u64,
}

impl DeviceIid {
    /// The plan version, byte 0 of every device IID.
    pub const PLAN_VERSION: u8 = 0x00;
    /// The largest serial number: 48 bits.
    pub const MAX_SERIAL: u64 = 0xffff_ffff_ffff;

    /// A device IID with this class and serial.
    ///
    /// # Errors
    ///
    /// [`AddrError::ClassReserved`] for class 0 and [`AddrError::SerialTooLarge`] for a serial
    /// above [`Self::MAX_SERIAL`].
    pub fn new(class: u8, serial: u64) -> Result<Self, AddrError> {
        if class == 0 {
            return Err(AddrError::ClassReserved);
        }
        if serial > Self::MAX_SERIAL {
            return Err(AddrError::SerialTooLarge { serial });
        }
        Ok(Self { class, serial })
    }

    /// The device class, `1..=255`.
    #[must_use]
    pub const fn class(self) -> u8 {
        self.class
    }

    /// The 48-bit serial number.
    #[must_use]
    pub const fn serial(self) -> u64 {
        self.serial
    }

    /// The interface ID: `0x00`, class, serial.
    #[must_use]
    pub const fn interface_id(self) -> InterfaceId {
        InterfaceId(((Self::PLAN_VERSION as u64) << 56) | ((self.class as u64) << 48) | self.serial)
    }

    /// Reads a device IID out of an interface ID.
    ///
    /// # Errors
    ///
    /// [`AddrError::NotInPlan`] if byte 0 is not `0x00` and [`AddrError::ClassReserved`] if
    /// byte 1 (the class) is 0.
    pub fn from_interface_id(iid: InterfaceId) -> Result<Self, AddrError> {
        let [version, class, ..] = iid.to_bytes();
        if version != Self::PLAN_VERSION {
            return Err(AddrError::NotInPlan { iid });
        }
        Self::new(class, iid.0 & Self::MAX_SERIAL)
    }
}

impl TryFrom<InterfaceId> for DeviceIid {
    type Error = AddrError;

    fn try_from(iid: InterfaceId) -> Result<Self, AddrError> {
        Self::from_interface_id(iid)
    }
}

impl From<DeviceIid> for InterfaceId {
    fn from(iid: DeviceIid) -> Self {
        iid.interface_id()
    }
}
