//! Property tests of the address plan: round trips through every form, and no panics on any
//! input.

use std::net::Ipv6Addr;

use proptest::prelude::*;
use v6iot_sdk::addr::{
    AddrError, DeviceAddress, DeviceIid, Eui64, InterfaceId, ShortAddr, SitePrefix, Subnet,
    link_local,
};

/// Any /48 site prefix.
fn site() -> impl Strategy<Value = SitePrefix> {
    (0_u64..1 << 48)
        .prop_map(|bits| SitePrefix::of_addr(Ipv6Addr::from_bits(u128::from(bits) << 80)))
}

/// Any address in the plan, with its fields.
fn device() -> impl Strategy<Value = (SitePrefix, u8, u8, u8, u64)> {
    (
        site(),
        1_u8..=254,
        0_u8..=254,
        1_u8..=255,
        0_u64..=DeviceIid::MAX_SERIAL,
    )
}

proptest! {
    #[test]
    fn device_address_to_ipv6_and_back((site, plant, line, class, serial) in device()) {
        let dev = DeviceAddress::new(site, plant, line, class, serial).unwrap();
        prop_assert_eq!(
            (dev.site(), dev.plant(), dev.line(), dev.class(), dev.serial()),
            (site, plant, line, class, serial)
        );
        let addr = dev.to_ipv6();
        prop_assert_eq!(DeviceAddress::parse(addr), Ok(dev));
        prop_assert_eq!(DeviceAddress::parse_in_site(site, addr), Ok(dev));
        prop_assert!(site.contains(addr));
        prop_assert_eq!(Subnet::of_addr(addr), Subnet::new(plant, line));
        prop_assert_eq!(InterfaceId::of_addr(addr), dev.interface_id());
    }

    #[test]
    fn device_address_to_string_and_back((site, plant, line, class, serial) in device()) {
        let dev = DeviceAddress::new(site, plant, line, class, serial).unwrap();
        let text = dev.to_string();
        prop_assert_eq!(&text, &dev.to_ipv6().to_string());
        prop_assert_eq!(text.parse::<DeviceAddress>(), Ok(dev));
        let human = format!("{dev:#}");
        let expected = format!(
            "site {site} plant {plant} line {line} class {class:#04x} serial {serial:#x}"
        );
        prop_assert_eq!(human, expected);
    }

    #[test]
    fn site_prefix_to_string_and_back(site in site()) {
        prop_assert_eq!(site.to_string().parse::<SitePrefix>(), Ok(site));
        prop_assert_eq!(SitePrefix::new(site.network(), 48), Ok(site));
    }

    #[test]
    fn site_prefix_rejects_other_lengths(bits: u128, len in 0_u8..=128) {
        prop_assume!(len != 48);
        let text = format!("{}/{len}", Ipv6Addr::from_bits(bits));
        prop_assert_eq!(text.parse::<SitePrefix>(), Err(AddrError::SitePrefixLength { len }));
    }

    #[test]
    fn site_prefix_rejects_host_bits(bits: u128) {
        let addr = Ipv6Addr::from_bits(bits);
        let host_bits = bits & ((1 << 80) - 1) != 0;
        let parsed = format!("{addr}/48").parse::<SitePrefix>();
        if host_bits {
            prop_assert_eq!(parsed, Err(AddrError::SitePrefixHostBits { addr }));
        } else {
            prop_assert_eq!(parsed, Ok(SitePrefix::of_addr(addr)));
        }
    }

    #[test]
    fn iid_eui64_round_trip(bits: u64) {
        let iid = InterfaceId(bits);
        let eui = iid.to_eui64();
        prop_assert_eq!(InterfaceId::from_eui64(eui), iid);
        prop_assert_eq!(eui.to_string().parse::<Eui64>(), Ok(eui));
        // Only the U/L bit differs.
        prop_assert_eq!(u64::from_be_bytes(eui.0) ^ bits, 0x02 << 56);
        prop_assert_eq!(InterfaceId::of_addr(link_local(iid)), iid);
    }

    #[test]
    fn eui64_text_round_trip(bytes: [u8; 8]) {
        let eui = Eui64(bytes);
        let text = eui.to_string();
        prop_assert_eq!(text.len(), 23);
        prop_assert_eq!(text.parse::<Eui64>(), Ok(eui));
        prop_assert_eq!(InterfaceId::from_eui64(eui).to_eui64(), eui);
    }

    #[test]
    fn short_iid_round_trip(short: u16) {
        let short = ShortAddr(short);
        match InterfaceId::from_short(short) {
            Ok(iid) => {
                prop_assert!(short.is_unicast());
                prop_assert_eq!(iid.as_short(), Some(short));
                prop_assert_eq!(iid.0 >> 16, 0x0000_00ff_fe00);
                // Never a plan IID.
                prop_assert!(DeviceIid::try_from(iid).is_err());
            }
            Err(e) => {
                prop_assert!(!short.is_unicast());
                prop_assert_eq!(e, AddrError::ShortNotUnicast { short });
            }
        }
    }

    #[test]
    fn as_short_only_for_the_short_form(bits: u64) {
        let iid = InterfaceId(bits);
        if let Some(short) = iid.as_short() {
            prop_assert_eq!(InterfaceId::from_short(short), Ok(iid));
        }
    }

    #[test]
    fn short_hint_is_unicast((site, plant, line, class, serial) in device()) {
        let dev = DeviceAddress::new(site, plant, line, class, serial).unwrap();
        let hint = dev.short_hint();
        prop_assert!(hint.is_unicast());
        prop_assert!(InterfaceId::from_short(hint).is_ok());
        if (serial as u16) < 0xfffe {
            prop_assert_eq!(hint, ShortAddr(serial as u16));
        }
    }

    #[test]
    fn every_ipv6_addr_parses_cleanly(bits: u128) {
        let addr = Ipv6Addr::from_bits(bits);
        match DeviceAddress::parse(addr) {
            Ok(dev) => {
                prop_assert_eq!(dev.to_ipv6(), addr);
                prop_assert_eq!(dev.describe(), format!("{dev:#}"));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let subnet = Subnet::of_addr(addr);
        let iid = InterfaceId::of_addr(addr);
        let fits = subnet.check_device().is_ok() && DeviceIid::try_from(iid).is_ok();
        prop_assert_eq!(DeviceAddress::parse(addr).is_ok(), fits);
    }

    #[test]
    fn near_plan_addresses_parse_cleanly(
        site in site(),
        subnet: u16,
        version in prop_oneof![Just(0_u8), any::<u8>()],
        class: u8,
        serial in 0_u64..=DeviceIid::MAX_SERIAL,
    ) {
        // Mostly-valid addresses, to reach each error branch often.
        let iid = InterfaceId((u64::from(version) << 56) | (u64::from(class) << 48) | serial);
        let addr = site.addr(Subnet::from_id(subnet), iid);
        let result = DeviceAddress::parse(addr);
        let subnet = Subnet::from_id(subnet);
        let expected = if subnet.plant == 0 {
            Err(AddrError::PlantInfrastructure)
        } else if subnet.plant == 255 {
            Err(AddrError::PlantReserved)
        } else if subnet.line == 255 {
            Err(AddrError::LineReserved)
        } else if version != 0 {
            Err(AddrError::NotInPlan { iid })
        } else if class == 0 {
            Err(AddrError::ClassReserved)
        } else {
            DeviceAddress::new(site, subnet.plant, subnet.line, class, serial)
        };
        prop_assert_eq!(result, expected);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,60}") {
        let _ = s.parse::<SitePrefix>();
        let _ = s.parse::<Eui64>();
        let _ = s.parse::<DeviceAddress>();
    }

    #[test]
    fn near_valid_text_never_panics(
        s in "[0-9a-fA-F:/.x+-]{0,50}"
    ) {
        if let Ok(site) = s.parse::<SitePrefix>() {
            prop_assert_eq!(site.to_string().parse::<SitePrefix>(), Ok(site));
        }
        if let Ok(eui) = s.parse::<Eui64>() {
            prop_assert_eq!(eui.to_string().to_lowercase(), s.to_lowercase());
        }
        if let Ok(dev) = s.parse::<DeviceAddress>() {
            prop_assert_eq!(dev.to_string().parse::<DeviceAddress>(), Ok(dev));
        }
    }
}
