//! Placeholder fuzz target `senml_decode`: proves the stable fuzz build works.
//! The owner of this target replaces it with one that drives the real v6iot-sdk code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<std::net::Ipv6Addr>();
    }
});
