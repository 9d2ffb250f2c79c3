//! Fuzzes the SenML decoders: any input must decode or fail with an error, never panic; what
//! decodes must resolve without panicking and survive a re-encode in both representations.

#![no_main]

use v6iot_sdk::senml;

/// A fixed "now" (2024-01-01T00:00:00Z) for relative times.
const NOW: f64 = 1_704_067_200.0;

fn check(pack: &[senml::Record]) {
    let _ = senml::resolve(pack, NOW);

    // A decoded pack is valid, so it must encode, and decode back to itself
    // (Debug text compares every f64 bit-exactly).
    let cbor = senml::to_cbor(pack).expect("a decoded pack encodes to CBOR");
    let again = senml::from_cbor(&cbor).expect("our CBOR decodes");
    assert_eq!(format!("{again:?}"), format!("{pack:?}"));

    let json = senml::to_json_vec(pack).expect("a decoded pack encodes to JSON");
    let again = senml::from_json(&json).expect("our JSON decodes");
    assert_eq!(format!("{again:?}"), format!("{pack:?}"));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(pack) = senml::from_cbor(data) {
        check(&pack);
    }
    if let Ok(pack) = senml::from_json(data) {
        check(&pack);
    }
});
