//! Fuzzes the CoRE link-format reader (`v6iot_sdk::coap::link::parse`) on any text (bytes read
//! as UTF-8 with replacement characters, as the probe reads a `/.well-known/core` body): no
//! panic, and whatever it reads must round trip through the writer: `parse(write(links)) ==
//! links`, and writing that again gives the same text.

#![no_main]

use v6iot_sdk::coap::link;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(links) = link::parse(&text) else {
        return;
    };
    let written = link::write(&links);
    let again = link::parse(&written);
    assert_eq!(again.as_ref(), Some(&links), "{written:?}");
    assert_eq!(link::write(&links), written);
});
