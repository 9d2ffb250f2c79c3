//! The v6iot IPv6 address plan.
//!
//! Every v6iot device has one global IPv6 address that says where it is and what it is. The
//! plan is pure data: this module parses, validates and builds addresses, and does no I/O.
//!
//! # Bit layout
//!
//! ```text
//! bits  0                     47 48       55 56       63 64    71 72    79 80                127
//!      +------------------------+-----------+-----------+--------+--------+--------------------+
//!      |    site prefix (/48)   |   plant   |   line    |  0x00  | class  |  serial (48 bits)  |
//!      +------------------------+-----------+-----------+--------+--------+--------------------+
//!      |<-------- routing prefix (/64) ---------------->|<----------- interface ID ---------->|
//!                               |<- subnet ID 0xPPLL -->|  plan  |
//!                                                         version
//! ```
//!
//! * **Site prefix** ([`SitePrefix`]): one /48 per site, e.g. `2001:db8:1200::/48`.
//! * **Subnet ID** ([`Subnet`]): the 4th group, `0xPPLL` = plant `PP`, line `LL`. Plant 0 is
//!   the infrastructure subnet (edge routers, management) and plant `0xff` is reserved, so a
//!   device lives in plant `1..=254`. Line `0xff` is reserved too, so a device is on line
//!   `0..=254`.
//! * **Interface ID** ([`InterfaceId`], [`DeviceIid`]): byte 0 is the plan version, `0x00`
//!   (anything else is "not in the plan"); byte 1 is the device class `1..=255` (class 0 is
//!   reserved, which also keeps plan IIDs apart from the 802.15.4 short-address form
//!   `0000:00ff:fe00:XXXX`); bytes 2..8 are the 48-bit serial number. Because byte 0 is zero,
//!   the U/L bit (`0x02`) and the group bit (`0x01`) of the IID are clear.
//!
//! # Examples
//!
//! Site `2001:db8:1200::/48`:
//!
//! | address | plant | line | class | serial | what |
//! |---|---|---|---|---|---|
//! | `2001:db8:1200:305:12:3456:78ab:cdef` | 3 | 5 | `0x12` | `0x3456_78ab_cdef` | a device |
//! | `2001:db8:1200:100:1::1` | 1 | 0 | `0x01` | `0x1` | the first device of line 0, plant 1 |
//! | `2001:db8:1200:fefe:ff:ffff:ffff:ffff` | 254 | 254 | `0xff` | `0xffff_ffff_ffff` | the highest device address |
//! | `2001:db8:1200::1` | 0 | 0 | – | – | infrastructure (edge router): not a device address |
//! | `2001:db8:1200:305:102:304:506:708` | 3 | 5 | – | – | not in the plan: IID byte 0 is `0x01` |
//! | `2001:db8:1200:305:0:ff:fe00:1234` | 3 | 5 | – | – | 802.15.4 short-address IID, class 0: not a device address |
//!
//! The same device on its link and its radio:
//!
//! | form | value |
//! |---|---|
//! | interface ID | `0012:3456:78ab:cdef` |
//! | link-local address | `fe80::12:3456:78ab:cdef` |
//! | 802.15.4 extended address (modified EUI-64, U/L bit flipped) | `02:12:34:56:78:ab:cd:ef` |
//! | human form (`{:#}`) | `site 2001:db8:1200::/48 plant 3 line 5 class 0x12 serial 0x345678abcdef` |
//!
//! The radio uses the EUI-64 derived from the IID (RFC 4291 Appendix A) as its extended
//! address, so 6LoWPAN IPHC (RFC 6282) can elide the IID entirely.
//!
//! ```
//! use core::net::Ipv6Addr;
//! use v6iot_sdk::addr::{DeviceAddress, Eui64, SitePrefix};
//!
//! # fn main() -> Result<(), v6iot_sdk::addr::AddrError> {
//! let site: SitePrefix = "2001:db8:1200::/48".parse()?;
//! let dev = DeviceAddress::new(site, 3, 5, 0x12, 0x3456_78ab_cdef)?;
//! assert_eq!(dev.to_ipv6(), "2001:db8:1200:305:12:3456:78ab:cdef".parse::<Ipv6Addr>().unwrap());
//! assert_eq!(dev.eui64().to_string(), "02:12:34:56:78:ab:cd:ef");
//! assert_eq!(
//!     format!("{dev:#}"),
//!     "site 2001:db8:1200::/48 plant 3 line 5 class 0x12 serial 0x345678abcdef"
//! );
//! assert_eq!(DeviceAddress::parse_in_site(site, dev.to_ipv6())?, dev);
//! assert_eq!(dev.eui64(), "02:12:34:56:78:ab:cd:ef".parse::<Eui64>()?);
//! # Ok(())
//! # }
//! ```

use alloc::string::String;

use core::net::Ipv6Addr;

mod iid;
mod plan;

pub use iid::{DeviceIid, Eui64, InterfaceId, ShortAddr, link_local};
pub use plan::{DeviceAddress, SitePrefix, Subnet};

/// Everything that can be wrong with an address, a prefix or one of their fields.
///
/// Each message names the field that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The site prefix is not a /48.
    #[error("site prefix length /{len}: the plan needs a /48")]
    SitePrefixLength {
        /// The prefix length that was given.
        len: u8,
    },
    /// The site prefix has bits set beyond its 48th bit.
    #[error("site prefix {addr}/48 has bits set beyond /48")]
    SitePrefixHostBits {
        /// The address part of the prefix as given.
        addr: Ipv6Addr,
    },
    /// The text is not of the form `2001:db8:1200::/48`.
    #[error("site prefix {input:?} is not an IPv6 prefix like 2001:db8:1200::/48")]
    SitePrefixSyntax {
        /// The text that was given.
        input: String,
    },
    /// The address is not in the expected site prefix.
    #[error("address {addr} is outside site prefix {site}")]
    WrongSite {
        /// The address that was checked.
        addr: Ipv6Addr,
        /// The site it should be in.
        site: SitePrefix,
    },
    /// Plant 0 is the infrastructure subnet, not a device subnet.
    #[error("plant 0 is reserved for infrastructure (devices use 1..=254)")]
    PlantInfrastructure,
    /// Plant `0xff` is reserved.
    #[error("plant 255 is reserved (devices use 1..=254)")]
    PlantReserved,
    /// Line `0xff` is reserved.
    #[error("line 255 is reserved (devices use 0..=254)")]
    LineReserved,
    /// Device class 0 is reserved.
    #[error("class 0 is reserved (devices use 1..=255)")]
    ClassReserved,
    /// The serial number does not fit in 48 bits.
    #[error("serial {serial:#x} exceeds 48 bits")]
    SerialTooLarge {
        /// The serial number that was given.
        serial: u64,
    },
    /// The interface ID's byte 0 (the plan version) is not `0x00`.
    #[error("interface ID {iid} is not in the v6iot plan (byte 0 must be 0x00)")]
    NotInPlan {
        /// The interface ID that was given.
        iid: InterfaceId,
    },
    /// `0xfffe` ("no short address") and `0xffff` (broadcast) cannot form a unicast IID.
    #[error(
        "short address {short} is not unicast (0xfffe means no short address, 0xffff is broadcast)"
    )]
    ShortNotUnicast {
        /// The short address that was given.
        short: ShortAddr,
    },
    /// The text is not eight colon-separated hex bytes.
    #[error("EUI-64 {input:?} is not 8 colon-separated hex bytes like 02:12:34:56:78:ab:cd:ef")]
    Eui64Syntax {
        /// The text that was given.
        input: String,
    },
    /// The text is not an IPv6 address.
    #[error("device address {input:?} is not an IPv6 address")]
    AddressSyntax {
        /// The text that was given.
        input: String,
    },
}

#[cfg(test)]
mod tests;
