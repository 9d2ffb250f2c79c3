//! Unit tests of the address plan: the documented examples and every error message.

use std::net::Ipv6Addr;

use super::*;

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn site() -> SitePrefix {
    "2001:db8:1200::/48".parse().unwrap()
}

fn err_text<T: std::fmt::Debug>(r: Result<T, AddrError>) -> String {
    r.unwrap_err().to_string()
}

// ---- the module doc table ----

#[test]
fn table_device_rows() {
    let rows: [(&str, u8, u8, u8, u64); 3] = [
        (
            "2001:db8:1200:305:12:3456:78ab:cdef",
            3,
            5,
            0x12,
            0x3456_78ab_cdef,
        ),
        ("2001:db8:1200:100:1::1", 1, 0, 0x01, 0x1),
        (
            "2001:db8:1200:fefe:ff:ffff:ffff:ffff",
            254,
            254,
            0xff,
            0xffff_ffff_ffff,
        ),
    ];
    for (text, plant, line, class, serial) in rows {
        let dev = DeviceAddress::new(site(), plant, line, class, serial).unwrap();
        assert_eq!(dev.to_ipv6(), ip(text), "{text}");
        assert_eq!(dev.to_string(), text);
        let parsed = DeviceAddress::parse(ip(text)).unwrap();
        assert_eq!(parsed, dev);
        assert_eq!(parsed.site(), site());
        assert_eq!((parsed.plant(), parsed.line()), (plant, line));
        assert_eq!((parsed.class(), parsed.serial()), (class, serial));
        assert_eq!(text.parse::<DeviceAddress>().unwrap(), dev);
    }
}

#[test]
fn table_non_device_rows() {
    assert_eq!(
        err_text(DeviceAddress::parse(ip("2001:db8:1200::1"))),
        "plant 0 is reserved for infrastructure (devices use 1..=254)"
    );
    assert_eq!(
        err_text(DeviceAddress::parse(ip(
            "2001:db8:1200:305:102:304:506:708"
        ))),
        "interface ID 0102:0304:0506:0708 is not in the v6iot plan (byte 0 must be 0x00)"
    );
    assert_eq!(
        err_text(DeviceAddress::parse(ip("2001:db8:1200:305:0:ff:fe00:1234"))),
        "class 0 is reserved (devices use 1..=255)"
    );
}

#[test]
fn table_link_forms() {
    let dev = DeviceAddress::new(site(), 3, 5, 0x12, 0x3456_78ab_cdef).unwrap();
    assert_eq!(dev.interface_id().to_string(), "0012:3456:78ab:cdef");
    assert_eq!(dev.link_local(), ip("fe80::12:3456:78ab:cdef"));
    assert_eq!(dev.eui64().to_string(), "02:12:34:56:78:ab:cd:ef");
    assert_eq!(
        format!("{dev:#}"),
        "site 2001:db8:1200::/48 plant 3 line 5 class 0x12 serial 0x345678abcdef"
    );
    assert_eq!(dev.describe(), format!("{dev:#}"));
}

// ---- site prefix ----

#[test]
fn site_prefix_round_trip() {
    let s = site();
    assert_eq!(s.to_string(), "2001:db8:1200::/48");
    assert_eq!(s.network(), ip("2001:db8:1200::"));
    assert!(s.contains(ip("2001:db8:1200:ffff::1")));
    assert!(!s.contains(ip("2001:db8:1201::1")));
    assert_eq!(SitePrefix::of_addr(ip("2001:db8:1200:305::9")), s);
    assert_eq!(SitePrefix::new(ip("2001:db8:1200::"), 48), Ok(s));
    assert_eq!(
        s.subnet_prefix(Subnet::new(3, 5)),
        ip("2001:db8:1200:305::")
    );
}

#[test]
fn site_prefix_errors_name_the_field() {
    assert_eq!(
        err_text("2001:db8:1200::/56".parse::<SitePrefix>()),
        "site prefix length /56: the plan needs a /48"
    );
    assert_eq!(
        err_text("2001:db8::/32".parse::<SitePrefix>()),
        "site prefix length /32: the plan needs a /48"
    );
    assert_eq!(
        err_text("2001:db8:1200:1::/48".parse::<SitePrefix>()),
        "site prefix 2001:db8:1200:1::/48 has bits set beyond /48"
    );
    assert_eq!(
        err_text(SitePrefix::new(ip("2001:db8:1200::1"), 48)),
        "site prefix 2001:db8:1200::1/48 has bits set beyond /48"
    );
    for bad in [
        "2001:db8:1200::",
        "2001:db8:1200::/",
        "2001:db8:1200::/+48",
        "x/48",
        "::/999",
    ] {
        assert_eq!(
            err_text(bad.parse::<SitePrefix>()),
            format!("site prefix {bad:?} is not an IPv6 prefix like 2001:db8:1200::/48")
        );
    }
}

// ---- subnet ----

#[test]
fn subnet_is_plant_then_line() {
    let s = Subnet::of_addr(ip("2001:db8:1200:0305::"));
    assert_eq!(s, Subnet { plant: 3, line: 5 });
    assert_eq!(s.id(), 0x0305);
    assert_eq!(Subnet::from_id(0x0305), s);
    assert_eq!(s.to_string(), "plant 3 line 5");
    assert!(Subnet::new(0, 1).is_infrastructure());
    assert!(!s.is_infrastructure());
    assert_eq!(s.check_device(), Ok(()));
    assert_eq!(Subnet::new(254, 254).check_device(), Ok(()));
    assert_eq!(Subnet::new(1, 0).check_device(), Ok(()));
}

#[test]
fn subnet_errors_name_the_field() {
    assert_eq!(
        err_text(DeviceAddress::new(site(), 0, 1, 1, 1)),
        "plant 0 is reserved for infrastructure (devices use 1..=254)"
    );
    assert_eq!(
        err_text(DeviceAddress::new(site(), 255, 1, 1, 1)),
        "plant 255 is reserved (devices use 1..=254)"
    );
    assert_eq!(
        err_text(DeviceAddress::new(site(), 1, 255, 1, 1)),
        "line 255 is reserved (devices use 0..=254)"
    );
    assert_eq!(
        err_text(DeviceAddress::parse(ip("2001:db8:1200:ff01:1:0:0:1"))),
        "plant 255 is reserved (devices use 1..=254)"
    );
    assert_eq!(
        err_text(DeviceAddress::parse(ip("2001:db8:1200:1ff:1:0:0:1"))),
        "line 255 is reserved (devices use 0..=254)"
    );
}

// ---- interface ID ----

#[test]
fn device_iid_example() {
    let iid = DeviceIid::new(0x12, 0x3456_78ab_cdef).unwrap();
    assert_eq!(iid.interface_id(), InterfaceId(0x0012_3456_78ab_cdef));
    assert_eq!(
        DeviceIid::try_from(InterfaceId(0x0012_3456_78ab_cdef)),
        Ok(iid)
    );
    assert_eq!(
        InterfaceId::from(iid).to_bytes(),
        [0, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]
    );
    // Byte 0 is zero, so the U/L and group bits are clear.
    assert_eq!(iid.interface_id().to_bytes()[0] & 0x03, 0);
}

#[test]
fn iid_errors_name_the_field() {
    assert_eq!(
        err_text(DeviceIid::new(0, 1)),
        "class 0 is reserved (devices use 1..=255)"
    );
    assert_eq!(
        err_text(DeviceIid::new(1, 0x1_0000_0000_0000)),
        "serial 0x1000000000000 exceeds 48 bits"
    );
    assert_eq!(
        err_text(DeviceAddress::new(site(), 3, 5, 1, u64::MAX)),
        "serial 0xffffffffffffffff exceeds 48 bits"
    );
    assert_eq!(
        err_text(DeviceAddress::new(site(), 3, 5, 0, 1)),
        "class 0 is reserved (devices use 1..=255)"
    );
    assert_eq!(
        err_text(DeviceIid::try_from(InterfaceId(0x0102_0304_0506_0708))),
        "interface ID 0102:0304:0506:0708 is not in the v6iot plan (byte 0 must be 0x00)"
    );
    // A SLAAC-style IID with the U/L bit set is not in the plan either.
    assert_eq!(
        err_text(DeviceAddress::parse(ip(
            "2001:db8:1200:305:212:3456:78ab:cdef"
        ))),
        "interface ID 0212:3456:78ab:cdef is not in the v6iot plan (byte 0 must be 0x00)"
    );
}

#[test]
fn error_order_follows_field_order() {
    // Plant before line before class before serial.
    assert_eq!(
        DeviceAddress::new(site(), 0, 255, 0, u64::MAX),
        Err(AddrError::PlantInfrastructure)
    );
    assert_eq!(
        DeviceAddress::new(site(), 1, 255, 0, u64::MAX),
        Err(AddrError::LineReserved)
    );
    assert_eq!(
        DeviceAddress::new(site(), 1, 1, 0, u64::MAX),
        Err(AddrError::ClassReserved)
    );
}

// ---- EUI-64 ----

#[test]
fn eui64_example() {
    let eui: Eui64 = "02:12:34:56:78:ab:cd:ef".parse().unwrap();
    assert_eq!(eui, Eui64([0x02, 0x12, 0x34, 0x56, 0x78, 0xab, 0xcd, 0xef]));
    assert_eq!(eui.to_string(), "02:12:34:56:78:ab:cd:ef");
    assert_eq!("02:12:34:56:78:AB:CD:EF".parse::<Eui64>(), Ok(eui));
    let iid = InterfaceId::from_eui64(eui);
    assert_eq!(iid, InterfaceId(0x0012_3456_78ab_cdef));
    assert_eq!(iid.to_string(), "0012:3456:78ab:cdef");
    assert_eq!(iid.to_eui64(), eui);
    assert_eq!(link_local(iid), ip("fe80::12:3456:78ab:cdef"));
    assert_eq!(InterfaceId::from(eui), iid);
    assert_eq!(Eui64::from(iid), eui);
}

#[test]
fn eui64_errors_name_the_field() {
    for bad in [
        "",
        "02:12:34:56:78:ab:cd",
        "02:12:34:56:78:ab:cd:ef:01",
        "02:12:34:56:78:ab:cd:e",
        "02:12:34:56:78:ab:cd:efg",
        "02-12-34-56-78-ab-cd-ef",
        "02:12:34:56:78:ab:cd:+f",
        "02:12:34:56:78:ab:cd:ef:",
        "0212:3456:78ab:cdef",
    ] {
        assert_eq!(
            err_text(bad.parse::<Eui64>()),
            format!(
                "EUI-64 {bad:?} is not 8 colon-separated hex bytes like 02:12:34:56:78:ab:cd:ef"
            )
        );
    }
}

// ---- 802.15.4 short addresses ----

#[test]
fn short_address_forms() {
    let iid = InterfaceId::from_short(ShortAddr(0x1234)).unwrap();
    assert_eq!(iid.to_string(), "0000:00ff:fe00:1234");
    assert_eq!(iid.as_short(), Some(ShortAddr(0x1234)));
    assert_eq!(
        InterfaceId::from_short(ShortAddr(0)).unwrap().as_short(),
        Some(ShortAddr(0))
    );
    assert_eq!(link_local(iid), ip("fe80::ff:fe00:1234"));
    // Not the short form: other bits set, or a non-unicast short address.
    assert_eq!(InterfaceId(0x0012_3456_78ab_cdef).as_short(), None);
    assert_eq!(InterfaceId(0x0100_00ff_fe00_1234).as_short(), None);
    assert_eq!(InterfaceId(0x0000_00ff_fe00_fffe).as_short(), None);
    assert_eq!(InterfaceId(0x0000_00ff_fe00_ffff).as_short(), None);
    // The short form is never a plan IID: its class byte is 0.
    assert_eq!(DeviceIid::try_from(iid), Err(AddrError::ClassReserved));
    assert_eq!(ShortAddr(0x1234).to_string(), "0x1234");
    assert!(!ShortAddr::BROADCAST.is_unicast());
    assert!(!ShortAddr::NONE.is_unicast());
    assert!(ShortAddr(0xfffd).is_unicast());
}

#[test]
fn short_errors_name_the_field() {
    assert_eq!(
        err_text(InterfaceId::from_short(ShortAddr::BROADCAST)),
        "short address 0xffff is not unicast (0xfffe means no short address, 0xffff is broadcast)"
    );
    assert_eq!(
        err_text(InterfaceId::from_short(ShortAddr::NONE)),
        "short address 0xfffe is not unicast (0xfffe means no short address, 0xffff is broadcast)"
    );
}

#[test]
fn short_hint_skips_non_unicast() {
    let hint = |serial| {
        DeviceAddress::new(site(), 3, 5, 1, serial)
            .unwrap()
            .short_hint()
    };
    assert_eq!(hint(0x3456_78ab_cdef), ShortAddr(0xcdef));
    assert_eq!(hint(0x0001_fffd), ShortAddr(0xfffd));
    assert_eq!(hint(0x0001_fffe), ShortAddr(0x7ffe));
    assert_eq!(hint(0xffff_ffff_ffff), ShortAddr(0x7fff));
}

// ---- sites ----

#[test]
fn parse_in_site_checks_the_site() {
    let dev = ip("2001:db8:1200:305:12:3456:78ab:cdef");
    assert!(DeviceAddress::parse_in_site(site(), dev).is_ok());
    let other: SitePrefix = "2001:db8:1201::/48".parse().unwrap();
    assert_eq!(
        err_text(DeviceAddress::parse_in_site(other, dev)),
        "address 2001:db8:1200:305:12:3456:78ab:cdef is outside site prefix 2001:db8:1201::/48"
    );
    // Site first, then the rest of the plan.
    assert_eq!(
        err_text(DeviceAddress::parse_in_site(site(), ip("2001:db8:1200::1"))),
        "plant 0 is reserved for infrastructure (devices use 1..=254)"
    );
}

#[test]
fn address_text_errors() {
    assert_eq!(
        err_text("2001:db8:1200:305::/64".parse::<DeviceAddress>()),
        "device address \"2001:db8:1200:305::/64\" is not an IPv6 address"
    );
    assert_eq!(
        err_text("10.0.0.1".parse::<DeviceAddress>()),
        "device address \"10.0.0.1\" is not an IPv6 address"
    );
}

#[test]
fn conversions() {
    let dev = DeviceAddress::new(site(), 3, 5, 0x12, 0x3456_78ab_cdef).unwrap();
    let addr: Ipv6Addr = dev.into();
    assert_eq!(DeviceAddress::try_from(addr), Ok(dev));
    assert_eq!(
        DeviceAddress::from_parts(site(), Subnet::new(3, 5), dev.device_iid()),
        Ok(dev)
    );
    assert_eq!(dev.subnet(), Subnet::new(3, 5));
    // Width and other flags pass through to the IPv6 address.
    assert_eq!(format!("{dev:>40}"), format!("{:>40}", dev.to_ipv6()));
}
