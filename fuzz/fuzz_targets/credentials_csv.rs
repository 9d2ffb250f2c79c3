//! Fuzzes the examples' reading of a device's credentials from the provisioning CSV
//! (`v6iot_examples::credentials`, each line through `v6iot_credentials::csv`, the edge's
//! reader): any text must give credentials or a named error, never a panic; credentials found
//! must make an OSCORE context or a named error.

#![no_main]

use v6iot_examples::credentials::DeviceCredentials;
use v6iot_sdk::oscore::DurableState;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first field of the last line names the device looked up, so matches happen.
    let id = text
        .lines()
        .last()
        .and_then(|l| l.split(',').next())
        .unwrap_or("sensor-1");
    if let Ok(creds) = DeviceCredentials::find(text, id) {
        assert_eq!(creds.id, id);
        let _ = creds.context(DurableState::default());
    }
});
