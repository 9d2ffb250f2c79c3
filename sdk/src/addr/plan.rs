//! The routing half of the plan (site and subnet) and whole device addresses.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

use core::fmt;
use core::net::Ipv6Addr;
use core::str::FromStr;

use super::AddrError;
use super::iid::{DeviceIid, Eui64, InterfaceId, ShortAddr, link_local};

/// The number of bits below the site prefix.
const SITE_SHIFT: u32 = 128 - SitePrefix::LEN as u32;

/// A site's /48 prefix, e.g. `2001:db8:1200::/48`.
///
/// `Display` and `FromStr` use the `2001:db8:1200::/48` form; `FromStr` rejects any other
/// prefix length and any bits set beyond the 48th.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SitePrefix {
    /// The 48 prefix bits, in the low bits.
    bits: u64,
}

impl SitePrefix {
    /// The prefix length of every site: 48.
    pub const LEN: u8 = 48;

    /// The site prefix `addr/len`.
    ///
    /// # Errors
    ///
    /// [`AddrError::SitePrefixLength`] if `len` is not 48 and
    /// [`AddrError::SitePrefixHostBits`] if `addr` has bits set beyond the 48th.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, AddrError> {
        if len != Self::LEN {
            return Err(AddrError::SitePrefixLength { len });
        }
        let bits = addr.to_bits();
        if bits & ((1 << SITE_SHIFT) - 1) != 0 {
            return Err(AddrError::SitePrefixHostBits { addr });
        }
        Ok(Self::of_addr(addr))
    }

    /// The /48 that `addr` is in (the low 80 bits are dropped).
    #[must_use]
    pub const fn of_addr(addr: Ipv6Addr) -> Self {
        // After the shift only 48 bits are left, so the cast is lossless.
        Self {
            bits: (addr.to_bits() >> SITE_SHIFT) as u64,
        }
    }

    /// The prefix as an address, with the low 80 bits zero: `2001:db8:1200::`.
    #[must_use]
    pub const fn network(self) -> Ipv6Addr {
        Ipv6Addr::from_bits((self.bits as u128) << SITE_SHIFT)
    }

    /// Whether `addr` is in this /48.
    #[must_use]
    pub const fn contains(self, addr: Ipv6Addr) -> bool {
        Self::of_addr(addr).bits == self.bits
    }

    /// The /64 prefix of `subnet` in this site, as an address with the low 64 bits zero:
    /// `2001:db8:1200:305::` for plant 3, line 5.
    #[must_use]
    pub const fn subnet_prefix(self, subnet: Subnet) -> Ipv6Addr {
        self.addr(subnet, InterfaceId(0))
    }

    /// The address of `iid` in `subnet` of this site.
    #[must_use]
    pub const fn addr(self, subnet: Subnet, iid: InterfaceId) -> Ipv6Addr {
        Ipv6Addr::from_bits(
            ((self.bits as u128) << SITE_SHIFT) | ((subnet.id() as u128) << 64) | iid.0 as u128,
        )
    }
}

impl fmt::Display for SitePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), Self::LEN)
    }
}

impl FromStr for SitePrefix {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let syntax = || AddrError::SitePrefixSyntax {
            input: s.to_owned(),
        };
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        Self::new(addr, len)
    }
}

/// The subnet ID, the 4th group of an address: `0xPPLL` is plant `PP`, line `LL`.
///
/// Any plant and line make a subnet, but only plant `1..=254` and line `0..=254` hold devices
/// (see [`Subnet::check_device`]). Plant 0 is the infrastructure subnet (edge routers,
/// management); plant `0xff` and line `0xff` are reserved.
///
/// `Display` writes `plant 3 line 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    /// The plant, the high byte of the subnet ID.
    pub plant: u8,
    /// The production line within the plant, the low byte of the subnet ID.
    pub line: u8,
}

impl Subnet {
    /// The plant of the infrastructure subnets (edge routers, management).
    pub const INFRASTRUCTURE_PLANT: u8 = 0x00;
    /// The reserved plant.
    pub const RESERVED_PLANT: u8 = 0xff;
    /// The reserved line.
    pub const RESERVED_LINE: u8 = 0xff;

    /// The subnet of this plant and line (not checked: see [`Self::check_device`]).
    #[must_use]
    pub const fn new(plant: u8, line: u8) -> Self {
        Self { plant, line }
    }

    /// The subnet with this 16-bit ID, `0xPPLL`.
    #[must_use]
    pub const fn from_id(id: u16) -> Self {
        let [plant, line] = id.to_be_bytes();
        Self { plant, line }
    }

    /// The 16-bit subnet ID, `0xPPLL`.
    #[must_use]
    pub const fn id(self) -> u16 {
        u16::from_be_bytes([self.plant, self.line])
    }

    /// The subnet ID of `addr` (its 4th group).
    #[must_use]
    pub const fn of_addr(addr: Ipv6Addr) -> Self {
        // The cast keeps exactly the 16 bits above the interface ID.
        Self::from_id((addr.to_bits() >> 64) as u16)
    }

    /// Whether this is an infrastructure subnet (plant 0).
    #[must_use]
    pub const fn is_infrastructure(self) -> bool {
        self.plant == Self::INFRASTRUCTURE_PLANT
    }

    /// Checks that devices may live in this subnet: plant `1..=254`, line `0..=254`.
    ///
    /// # Errors
    ///
    /// [`AddrError::PlantInfrastructure`], [`AddrError::PlantReserved`] or
    /// [`AddrError::LineReserved`].
    pub fn check_device(self) -> Result<(), AddrError> {
        if self.plant == Self::INFRASTRUCTURE_PLANT {
            Err(AddrError::PlantInfrastructure)
        } else if self.plant == Self::RESERVED_PLANT {
            Err(AddrError::PlantReserved)
        } else if self.line == Self::RESERVED_LINE {
            Err(AddrError::LineReserved)
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plant {} line {}", self.plant, self.line)
    }
}

/// The global address of a v6iot device: site, subnet (plant and line), class and serial.
///
/// Built by [`DeviceAddress::new`] or parsed by [`DeviceAddress::parse`], so it is always
/// in the plan. `Display` writes the IPv6 address; the alternate form (`{:#}`) writes the
/// human form, `site 2001:db8:1200::/48 plant 3 line 5 class 0x12 serial 0x345678abcdef`.
/// `FromStr` parses the IPv6 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddress {
    site: SitePrefix,
    subnet: Subnet,
    iid: DeviceIid,
}

impl DeviceAddress {
    /// The address of device `class`/`serial` on `line` of `plant` in `site`.
    ///
    /// # Errors
    ///
    /// The [`AddrError`] naming the first field out of range: plant (0 or 255), line (255),
    /// class (0) or serial (above 48 bits).
    pub fn new(
        site: SitePrefix,
        plant: u8,
        line: u8,
        class: u8,
        serial: u64,
    ) -> Result<Self, AddrError> {
        let subnet = Subnet::new(plant, line);
        subnet.check_device()?;
        let iid = DeviceIid::new(class, serial)?;
        Ok(Self { site, subnet, iid })
    }

    /// The address of device `iid` in `subnet` of `site`.
    ///
    /// # Errors
    ///
    /// As [`Subnet::check_device`].
    pub fn from_parts(site: SitePrefix, subnet: Subnet, iid: DeviceIid) -> Result<Self, AddrError> {
        subnet.check_device()?;
        Ok(Self { site, subnet, iid })
    }

    /// Reads a device address, taking its /48 as the site.
    ///
    /// # Errors
    ///
    /// The [`AddrError`] naming the first field that is not in the plan: plant, line, the IID's
    /// plan version byte ([`AddrError::NotInPlan`]) or class.
    pub fn parse(addr: Ipv6Addr) -> Result<Self, AddrError> {
        let site = SitePrefix::of_addr(addr);
        let subnet = Subnet::of_addr(addr);
        subnet.check_device()?;
        let iid = DeviceIid::from_interface_id(InterfaceId::of_addr(addr))?;
        Ok(Self { site, subnet, iid })
    }

    /// Reads a device address that must be in `site`.
    ///
    /// # Errors
    ///
    /// [`AddrError::WrongSite`] if `addr` is not in `site`, then as [`Self::parse`].
    pub fn parse_in_site(site: SitePrefix, addr: Ipv6Addr) -> Result<Self, AddrError> {
        if site.contains(addr) {
            Self::parse(addr)
        } else {
            Err(AddrError::WrongSite { addr, site })
        }
    }

    /// The IPv6 address.
    #[must_use]
    pub const fn to_ipv6(self) -> Ipv6Addr {
        self.site.addr(self.subnet, self.iid.interface_id())
    }

    /// The site prefix.
    #[must_use]
    pub const fn site(self) -> SitePrefix {
        self.site
    }

    /// The subnet (plant and line).
    #[must_use]
    pub const fn subnet(self) -> Subnet {
        self.subnet
    }

    /// The plant, `1..=254`.
    #[must_use]
    pub const fn plant(self) -> u8 {
        self.subnet.plant
    }

    /// The line, `0..=254`.
    #[must_use]
    pub const fn line(self) -> u8 {
        self.subnet.line
    }

    /// The device class, `1..=255`.
    #[must_use]
    pub const fn class(self) -> u8 {
        self.iid.class()
    }

    /// The 48-bit serial number.
    #[must_use]
    pub const fn serial(self) -> u64 {
        self.iid.serial()
    }

    /// The device interface ID (class and serial).
    #[must_use]
    pub const fn device_iid(self) -> DeviceIid {
        self.iid
    }

    /// The interface ID, the low 64 bits of the address.
    #[must_use]
    pub const fn interface_id(self) -> InterfaceId {
        self.iid.interface_id()
    }

    /// The 802.15.4 extended address of the device's radio: the modified EUI-64 of its IID,
    /// so 6LoWPAN IPHC can elide the IID. For `0012:3456:78ab:cdef` it is
    /// `02:12:34:56:78:ab:cd:ef`.
    #[must_use]
    pub const fn eui64(self) -> Eui64 {
        self.interface_id().to_eui64()
    }

    /// The device's link-local address, `fe80::` + its IID.
    #[must_use]
    pub const fn link_local(self) -> Ipv6Addr {
        link_local(self.interface_id())
    }

    /// A deterministic 802.15.4 short address for the device within its PAN: the low 16 bits
    /// of the serial, with `0xfffe` and `0xffff` (not unicast) mapped to `0x7ffe` and `0x7fff`.
    ///
    /// It is only a hint: two serials can give the same short address (and some stacks keep
    /// `0x0000` for the PAN coordinator), so whoever assigns short addresses in the PAN must
    /// still check for collisions.
    #[must_use]
    pub const fn short_hint(self) -> ShortAddr {
        // The cast keeps exactly the low 16 bits.
        let short = ShortAddr(self.serial() as u16);
        if short.is_unicast() {
            short
        } else {
            ShortAddr(short.0 ^ 0x8000)
        }
    }

    /// The human form: `site 2001:db8:1200::/48 plant 3 line 5 class 0x12 serial
    /// 0x345678abcdef`, the same as `format!("{addr:#}")`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{self:#}")
    }
}

impl fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(
                f,
                "site {} {} class {:#04x} serial {:#x}",
                self.site,
                self.subnet,
                self.class(),
                self.serial()
            )
        } else {
            fmt::Display::fmt(&self.to_ipv6(), f)
        }
    }
}

impl FromStr for DeviceAddress {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let addr: Ipv6Addr = s.parse().map_err(|_| AddrError::AddressSyntax {
            input: s.to_owned(),
        })?;
        Self::parse(addr)
    }
}

impl From<DeviceAddress> for Ipv6Addr {
    fn from(addr: DeviceAddress) -> Self {
        addr.to_ipv6()
    }
}

impl TryFrom<Ipv6Addr> for DeviceAddress {
    type Error = AddrError;

    fn try_from(addr: Ipv6Addr) -> Result<Self, AddrError> {
        Self::parse(addr)
    }
}
