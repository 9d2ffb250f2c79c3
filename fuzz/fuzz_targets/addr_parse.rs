//! Fuzzes the address plan's parsers: text for `SitePrefix`, `Eui64` and `DeviceAddress`,
//! and 16 raw bytes for `DeviceAddress::parse`. Parsing must never panic, and whatever parses
//! must survive a round trip.

#![no_main]

use std::net::Ipv6Addr;

use v6iot_sdk::addr::{DeviceAddress, Eui64, InterfaceId, SitePrefix};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(site) = text.parse::<SitePrefix>() {
            assert_eq!(site.to_string().parse::<SitePrefix>(), Ok(site));
        }
        if let Ok(eui) = text.parse::<Eui64>() {
            assert_eq!(eui.to_string().parse::<Eui64>(), Ok(eui));
            assert_eq!(InterfaceId::from_eui64(eui).to_eui64(), eui);
        }
        if let Ok(dev) = text.parse::<DeviceAddress>() {
            assert_eq!(dev.to_string().parse::<DeviceAddress>(), Ok(dev));
        }
    }

    if let Some(bytes) = data.first_chunk::<16>() {
        let addr = Ipv6Addr::from(*bytes);
        match DeviceAddress::parse(addr) {
            Ok(dev) => {
                assert_eq!(dev.to_ipv6(), addr);
                assert_eq!(DeviceAddress::parse_in_site(dev.site(), addr), Ok(dev));
                let _ = dev.describe();
                let _ = dev.short_hint();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
