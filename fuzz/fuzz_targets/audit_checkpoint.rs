//! Fuzzes the audit checkpoint file's parser (`CheckpointFile::parse`, what `audit verify` and
//! the starting edge read from `audit.checkpoint`). Parsing must never panic; whatever parses
//! must survive a round trip through a file signed with a fixed key, which then authenticates
//! under that key and not under another; and an arbitrary file must not authenticate unless it
//! is such a round trip.

#![no_main]

use std::sync::OnceLock;

use v6iot_edge_router::audit::checkpoint::CheckpointFile;
use v6iot_edge_router::registry_db::SealKey;

fn keys() -> &'static (SealKey, SealKey) {
    static KEYS: OnceLock<(SealKey, SealKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |b: u8| SealKey::from_bytes(&[b; 32]).unwrap_or_else(|_| unreachable!());
        (key(1), key(2))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(file) = CheckpointFile::parse(data) else {
        return;
    };
    let (key, other) = keys();
    let cp = file.checkpoint;
    let signed = cp.to_file(key);
    let again = CheckpointFile::parse(&signed).expect("a file this code wrote parses");
    assert_eq!(again.checkpoint, cp);
    assert_eq!(again.authenticate(key).ok(), Some(cp));
    assert!(again.authenticate(other).is_err());
    // The fuzzer's own file authenticates only if it is exactly what this code signs.
    if file.authenticate(key).is_ok() {
        assert_eq!(CheckpointFile::parse(&signed).ok(), Some(file));
    }
});
