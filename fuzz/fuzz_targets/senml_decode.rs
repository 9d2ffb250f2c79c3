//! Fuzzes the SenML decoders: any input must decode or fail with an error, never panic; what
//! decodes must resolve without panicking and survive a re-encode in both representations.
//! The one-pass `resolve_to_json` must accept exactly what the owned path (decode, `resolve`,
//! `to_record`, `to_json_vec`) accepts, and write the same bytes.

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

/// The owned path to resolved SenML JSON.
fn owned(pack: Result<senml::Pack, senml::SenmlError>) -> Option<Vec<u8>> {
    let resolved = senml::resolve(&pack.ok()?, NOW).ok()?;
    let records: Vec<senml::Record> = resolved
        .iter()
        .map(senml::ResolvedRecord::to_record)
        .collect();
    Some(senml::to_json_vec(&records).expect("resolved records encode"))
}

fn one_pass(encoding: senml::Encoding, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    senml::resolve_to_json(encoding, data, NOW, None, &mut out).ok()?;
    Some(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert_eq!(
        one_pass(senml::Encoding::Cbor, data),
        owned(senml::from_cbor(data))
    );
    assert_eq!(
        one_pass(senml::Encoding::Json, data),
        owned(senml::from_json(data))
    );
    if let Ok(pack) = senml::from_cbor(data) {
        check(&pack);
    }
    if let Ok(pack) = senml::from_json(data) {
        check(&pack);
    }
});
