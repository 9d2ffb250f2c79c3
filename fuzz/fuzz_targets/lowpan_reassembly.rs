//! Fuzzes the RFC 4944 reassembly table: a run of fragments (four sources, any tag, size,
//! offset and length) and clock steps. It must never panic, never hold more datagrams than its
//! bounds (in total and per source), and every datagram it completes has the size its key said.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::lowpan::frag::{FragKey, Reassembly, ReassemblyConfig};
use v6iot_sdk::radio::mac::LinkAddr;

const CONFIG: ReassemblyConfig = ReassemblyConfig {
    max_datagrams: 6,
    max_per_source: 2,
    timeout: Duration::from_secs(60),
};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut table = Reassembly::new(CONFIG);
    for op in data.chunks(6) {
        let [sel, tag, s0, s1, off, len] = *op else {
            return;
        };
        if sel & 0x80 != 0 {
            now += Duration::from_secs(u64::from(sel & 0x7f));
            table.handle_timeout(now);
            continue;
        }
        let src = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, sel & 3]);
        let key = FragKey {
            src,
            dst: LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 0xff]),
            tag: u16::from(tag & 3),
            size: u16::from_be_bytes([s0 & 0x0f, s1]),
        };
        let offset = usize::from(off) * 8;
        let piece = vec![sel; usize::from(len)];
        if let Ok(Some(done)) = table.insert(now, key, offset, &piece) {
            assert_eq!(done.len(), usize::from(key.size));
        }
        assert!(table.in_progress() <= CONFIG.max_datagrams);
        assert!(table.buffered_bytes() <= CONFIG.max_datagrams * 2047);
        if let Some(t) = table.poll_timeout() {
            assert!(t > now - Duration::from_secs(1) || t <= now);
        }
    }
    let s = table.stats();
    assert!(s.source_limit + s.table_full <= data.len() as u64);
});
