//! RFC 4944 §5.3 fragmentation: splitting a compressed datagram into FRAG1/FRAGN frames, and a
//! bounded reassembly table that a device and a border router serving many devices both use.
//!
//! ```text
//! FRAG1  |1 1 0 0 0| datagram_size (11) | datagram_tag (16) |  compressed headers + payload
//! FRAGN  |1 1 1 0 0| datagram_size (11) | datagram_tag (16) | offset (8, ×8 bytes) | payload
//! ```
//!
//! Sizes and offsets count **uncompressed** bytes: FRAG1 carries the compressed headers, which
//! stand for more bytes than they take, and every fragment but the last carries a multiple of
//! 8 such bytes.
//!
//! # Reassembly bounds
//!
//! [`Reassembly`] keeps at most [`ReassemblyConfig::max_datagrams`] datagrams in progress, at
//! most [`ReassemblyConfig::max_per_source`] from one link-layer source, and drops a datagram
//! not complete within [`ReassemblyConfig::timeout`] (RFC 4944: 60 s). A fragment that would
//! exceed a bound is refused with a named cause ([`FragDrop`]) and counted
//! ([`ReassemblyStats`]); datagrams already in progress are never evicted by newcomers, so a
//! flood from one source cannot push out another's. Memory: at most `max_datagrams` buffers of
//! at most [`MAX_DATAGRAM_SIZE`] bytes. Time is a parameter (any `Copy + Ord` instant that adds
//! a `Duration`), so the table runs on virtual time.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Add;
use core::time::Duration;

use crate::radio::mac::LinkAddr;

/// The largest datagram_size the 11-bit field holds.
pub const MAX_DATAGRAM_SIZE: usize = 2047;
/// The length of a FRAG1 header.
pub const FRAG1_HEADER_LEN: usize = 4;
/// The length of a FRAGN header.
pub const FRAGN_HEADER_LEN: usize = 5;

const DISPATCH_FRAG1: u8 = 0b1100_0000;
const DISPATCH_FRAGN: u8 = 0b1110_0000;

/// A parsed fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// The uncompressed datagram's size.
    pub size: u16,
    /// The sender's datagram tag.
    pub tag: u16,
    /// The offset of this fragment's data in the uncompressed datagram, in bytes (0 for FRAG1).
    pub offset: usize,
    /// Whether this is the first fragment (its data starts with compressed headers).
    pub first: bool,
}

impl FragHeader {
    /// Parses a FRAG1 or FRAGN header at the start of `data`; returns it and the data after it.
    /// `None` if `data` does not start with a complete fragment header.
    #[must_use]
    pub fn parse(data: &[u8]) -> Option<(FragHeader, &[u8])> {
        let (&b0, _) = data.split_first()?;
        let first = match b0 & 0xf8 {
            DISPATCH_FRAG1 => true,
            DISPATCH_FRAGN => false,
            _ => return None,
        };
        let head_len = if first {
            FRAG1_HEADER_LEN
        } else {
            FRAGN_HEADER_LEN
        };
        let (head, rest) = data.split_at_checked(head_len)?;
        let b = |i: usize| head.get(i).copied().unwrap_or(0);
        let header = FragHeader {
            size: u16::from_be_bytes([b(0) & 0x07, b(1)]),
            tag: u16::from_be_bytes([b(2), b(3)]),
            offset: if first { 0 } else { usize::from(b(4)) * 8 },
            first,
        };
        Some((header, rest))
    }
}

/// Why a datagram could not be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// Larger than the 11-bit datagram_size allows.
    #[error("datagram of {0} bytes exceeds the 2047 bytes RFC 4944 can fragment")]
    TooLarge(usize),
    /// The frame payload cannot hold the first fragment's headers and 8 bytes of data.
    #[error("frame payload of {0} bytes is too small to fragment into")]
    FrameTooSmall(usize),
}

/// What [`fragment`] needs to know about one compressed datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The compressed headers (IPHC, NHC).
    pub header: &'a [u8],
    /// How many uncompressed bytes `header` stands for.
    pub consumed: usize,
    /// The rest of the IPv6 packet, uncompressed.
    pub rest: &'a [u8],
}

/// Hands `emit` the frame payload(s) of `datagram`: one unfragmented payload if it fits
/// `max_payload`, else a FRAG1 and FRAGNs with `tag`. Returns the number of payloads.
pub fn fragment(
    datagram: Datagram<'_>,
    tag: u16,
    max_payload: usize,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, FragmentError> {
    let Datagram {
        header,
        consumed,
        rest,
    } = datagram;
    let mut buf = [0_u8; crate::radio::MAX_MAC_FRAME];
    let max_payload = max_payload.min(buf.len());
    if header.len() + rest.len() <= max_payload {
        let n = header.len() + rest.len();
        if let Some((h, r)) = buf.get_mut(..n).map(|b| b.split_at_mut(header.len())) {
            h.copy_from_slice(header);
            r.copy_from_slice(rest);
        }
        emit(buf.get(..n).unwrap_or_default());
        return Ok(1);
    }
    let size = consumed + rest.len();
    if size > MAX_DATAGRAM_SIZE {
        return Err(FragmentError::TooLarge(size));
    }
    let [s0, s1] = (size as u16).to_be_bytes();
    let [t0, t1] = tag.to_be_bytes();
    // FRAG1: as much data as fits, so that consumed + data is a multiple of 8.
    let room = max_payload.saturating_sub(FRAG1_HEADER_LEN + header.len());
    let first_data = ((consumed + room) / 8 * 8).saturating_sub(consumed);
    let room_n = max_payload.saturating_sub(FRAGN_HEADER_LEN) / 8 * 8;
    if first_data == 0 || room_n == 0 || !(consumed + first_data).is_multiple_of(8) {
        return Err(FragmentError::FrameTooSmall(max_payload));
    }
    let mut n = FRAG1_HEADER_LEN;
    buf[..FRAG1_HEADER_LEN].copy_from_slice(&[DISPATCH_FRAG1 | s0, s1, t0, t1]);
    for part in [header, rest.get(..first_data).unwrap_or_default()] {
        if let Some(dst) = buf.get_mut(n..n + part.len()) {
            dst.copy_from_slice(part);
        }
        n += part.len();
    }
    emit(buf.get(..n).unwrap_or_default());
    let mut count = 1;
    let mut sent = first_data;
    while sent < rest.len() {
        let chunk = rest
            .get(sent..(sent + room_n).min(rest.len()))
            .unwrap_or_default();
        // Offsets are multiples of 8 below 2048, so offset / 8 fits a byte.
        let offset = ((consumed + sent) / 8) as u8;
        buf[..FRAGN_HEADER_LEN].copy_from_slice(&[DISPATCH_FRAGN | s0, s1, t0, t1, offset]);
        let n = FRAGN_HEADER_LEN + chunk.len();
        if let Some(dst) = buf.get_mut(FRAGN_HEADER_LEN..n) {
            dst.copy_from_slice(chunk);
        }
        emit(buf.get(..n).unwrap_or_default());
        sent += chunk.len();
        count += 1;
    }
    Ok(count)
}

/// What identifies one datagram being reassembled (RFC 4944 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragKey {
    /// The link-layer source.
    pub src: LinkAddr,
    /// The link-layer destination.
    pub dst: LinkAddr,
    /// The datagram tag.
    pub tag: u16,
    /// The datagram size.
    pub size: u16,
}

/// The bounds of a [`Reassembly`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Datagrams in progress at once, from all sources.
    pub max_datagrams: usize,
    /// Datagrams in progress at once from one link-layer source.
    pub max_per_source: usize,
    /// How long a datagram may take to complete (RFC 4944: 60 s).
    pub timeout: Duration,
}

impl ReassemblyConfig {
    /// For a device: 2 datagrams, 2 per source, 60 s.
    pub const DEVICE: ReassemblyConfig = ReassemblyConfig {
        max_datagrams: 2,
        max_per_source: 2,
        timeout: Duration::from_secs(60),
    };
}

/// Why a fragment was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragDrop {
    /// A fragment already received (same offset and length): ignored.
    #[error("duplicate fragment")]
    Duplicate,
    /// Overlaps part of one received before: the whole datagram is discarded.
    #[error("overlapping fragment: datagram discarded")]
    Overlap,
    /// Extends beyond the datagram size, is empty, or (not being the last) is not a multiple
    /// of 8 bytes.
    #[error("fragment outside the datagram or misaligned")]
    BadRange,
    /// The datagram size is zero or above [`MAX_DATAGRAM_SIZE`].
    #[error("bad datagram size")]
    BadSize,
    /// As many datagrams in progress as the table holds.
    #[error("reassembly table full")]
    TableFull,
    /// As many datagrams in progress from this source as it may have.
    #[error("too many datagrams in progress from this source")]
    SourceLimit,
}

/// What a [`Reassembly`] table did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Datagrams completed.
    pub completed: u64,
    /// Datagrams dropped because they did not complete in time.
    pub timeouts: u64,
    /// Duplicate fragments ignored.
    pub duplicates: u64,
    /// Datagrams discarded for overlapping fragments.
    pub overlaps: u64,
    /// Fragments refused for a bad range or size.
    pub bad_fragments: u64,
    /// Fragments refused because the table was full.
    pub table_full: u64,
    /// Fragments refused because their source had too many datagrams in progress.
    pub source_limit: u64,
}

#[derive(Debug)]
struct Entry<T> {
    data: Vec<u8>,
    /// One bit per 8-byte unit received.
    units: [u64; 4],
    expires: T,
}

fn unit_range(offset: usize, len: usize) -> core::ops::Range<usize> {
    offset / 8..(offset + len).div_ceil(8)
}

impl<T> Entry<T> {
    fn has(&self, unit: usize) -> bool {
        self.units
            .get(unit / 64)
            .is_some_and(|w| w & (1 << (unit % 64)) != 0)
    }

    fn set(&mut self, unit: usize) {
        if let Some(w) = self.units.get_mut(unit / 64) {
            *w |= 1 << (unit % 64);
        }
    }

    fn complete(&self) -> bool {
        (0..self.data.len().div_ceil(8)).all(|u| self.has(u))
    }
}

/// A bounded table of datagrams being reassembled (see the module doc).
#[derive(Debug)]
pub struct Reassembly<T> {
    config: ReassemblyConfig,
    entries: BTreeMap<FragKey, Entry<T>>,
    per_source: BTreeMap<LinkAddr, usize>,
    stats: ReassemblyStats,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Reassembly<T> {
    /// An empty table with these bounds.
    #[must_use]
    pub fn new(config: ReassemblyConfig) -> Reassembly<T> {
        Reassembly {
            config,
            entries: BTreeMap::new(),
            per_source: BTreeMap::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Datagrams in progress.
    #[must_use]
    pub fn in_progress(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held in buffers.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.entries.values().map(|e| e.data.len()).sum()
    }

    fn remove(&mut self, key: &FragKey) -> Option<Entry<T>> {
        let entry = self.entries.remove(key)?;
        if let Some(n) = self.per_source.get_mut(&key.src) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&key.src);
            }
        }
        Some(entry)
    }

    fn refuse(&mut self, why: FragDrop) -> Result<Option<Vec<u8>>, FragDrop> {
        match why {
            FragDrop::Duplicate => self.stats.duplicates += 1,
            FragDrop::Overlap => self.stats.overlaps += 1,
            FragDrop::BadRange | FragDrop::BadSize => self.stats.bad_fragments += 1,
            FragDrop::TableFull => self.stats.table_full += 1,
            FragDrop::SourceLimit => self.stats.source_limit += 1,
        }
        Err(why)
    }

    /// Takes `data`, the uncompressed bytes at `offset` of the datagram `key`; returns the
    /// whole datagram once its last missing piece arrives.
    pub fn insert(
        &mut self,
        now: T,
        key: FragKey,
        offset: usize,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, FragDrop> {
        let size = usize::from(key.size);
        if size == 0 || size > MAX_DATAGRAM_SIZE {
            return self.refuse(FragDrop::BadSize);
        }
        let end = offset + data.len();
        if data.is_empty()
            || end > size
            || !offset.is_multiple_of(8)
            || (end != size && !end.is_multiple_of(8))
        {
            return self.refuse(FragDrop::BadRange);
        }
        if !self.entries.contains_key(&key) {
            if self.entries.len() >= self.config.max_datagrams {
                return self.refuse(FragDrop::TableFull);
            }
            let from_source = self.per_source.get(&key.src).copied().unwrap_or(0);
            if from_source >= self.config.max_per_source {
                return self.refuse(FragDrop::SourceLimit);
            }
            let entry = Entry {
                data: alloc::vec![0; size],
                units: [0; 4],
                expires: now + self.config.timeout,
            };
            self.entries.insert(key, entry);
            *self.per_source.entry(key.src).or_insert(0) += 1;
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(None);
        };
        let units = unit_range(offset, data.len());
        let seen = units.clone().filter(|&u| entry.has(u)).count();
        if seen == units.len() {
            return self.refuse(FragDrop::Duplicate);
        }
        if seen > 0 {
            self.remove(&key);
            return self.refuse(FragDrop::Overlap);
        }
        if let Some(dst) = entry.data.get_mut(offset..end) {
            dst.copy_from_slice(data);
        }
        units.for_each(|u| entry.set(u));
        if !entry.complete() {
            return Ok(None);
        }
        self.stats.completed += 1;
        Ok(self.remove(&key).map(|e| e.data))
    }

    /// When the next datagram in progress times out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<T> {
        self.entries.values().map(|e| e.expires).min()
    }

    /// Drops the datagrams whose time ran out by `now`.
    pub fn handle_timeout(&mut self, now: T) {
        let expired: Vec<FragKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.remove(&key);
            self.stats.timeouts += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time for the tests: milliseconds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);

    impl Add<Duration> for Ms {
        type Output = Ms;
        fn add(self, d: Duration) -> Ms {
            Ms(self.0 + d.as_millis() as u64)
        }
    }

    const A: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 0xa]);
    const B: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 0xb]);
    const R: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 0x1]);

    fn key(src: LinkAddr, tag: u16, size: u16) -> FragKey {
        FragKey {
            src,
            dst: R,
            tag,
            size,
        }
    }

    fn table() -> Reassembly<Ms> {
        Reassembly::new(ReassemblyConfig {
            max_datagrams: 3,
            max_per_source: 2,
            timeout: Duration::from_secs(60),
        })
    }

    #[test]
    fn fragments_of_a_datagram_in_any_order() {
        let data: Vec<u8> = (0..100).collect();
        let mut t = table();
        let k = key(A, 7, 100);
        assert_eq!(t.insert(Ms(0), k, 96, &data[96..]), Ok(None));
        assert_eq!(t.insert(Ms(1), k, 0, &data[..48]), Ok(None));
        assert_eq!(t.in_progress(), 1);
        assert_eq!(t.buffered_bytes(), 100);
        assert_eq!(
            t.insert(Ms(2), k, 48, &data[48..96]),
            Ok(Some(data.clone()))
        );
        assert_eq!(t.in_progress(), 0);
        assert_eq!(t.stats().completed, 1);
    }

    #[test]
    fn duplicates_overlaps_and_bad_ranges() {
        let data = [7_u8; 64];
        let mut t = table();
        let k = key(A, 1, 64);
        assert_eq!(t.insert(Ms(0), k, 0, &data[..16]), Ok(None));
        assert_eq!(t.insert(Ms(0), k, 0, &data[..16]), Err(FragDrop::Duplicate));
        assert_eq!(t.in_progress(), 1, "a duplicate keeps the datagram");
        assert_eq!(t.insert(Ms(0), k, 8, &data[..16]), Err(FragDrop::Overlap));
        assert_eq!(t.in_progress(), 0, "an overlap discards it");
        assert_eq!(t.insert(Ms(0), k, 8, &data[..3]), Err(FragDrop::BadRange));
        assert_eq!(t.insert(Ms(0), k, 60, &data[..8]), Err(FragDrop::BadRange));
        assert_eq!(t.insert(Ms(0), k, 4, &data[..8]), Err(FragDrop::BadRange));
        assert_eq!(t.insert(Ms(0), k, 0, &[]), Err(FragDrop::BadRange));
        assert_eq!(
            t.insert(Ms(0), key(A, 1, 0), 0, &data[..8]),
            Err(FragDrop::BadSize)
        );
        assert_eq!(
            t.insert(Ms(0), key(A, 1, 2048), 0, &data[..8]),
            Err(FragDrop::BadSize)
        );
        let s = t.stats();
        assert_eq!((s.duplicates, s.overlaps, s.bad_fragments), (1, 1, 6));
    }

    #[test]
    fn bounds_per_source_and_in_total_at_the_limit() {
        let mut t = table();
        let piece = [0_u8; 8];
        // Source A: 2 datagrams, its limit.
        assert_eq!(t.insert(Ms(0), key(A, 1, 64), 0, &piece), Ok(None));
        assert_eq!(t.insert(Ms(0), key(A, 2, 64), 0, &piece), Ok(None));
        assert_eq!(
            t.insert(Ms(0), key(A, 3, 64), 0, &piece),
            Err(FragDrop::SourceLimit)
        );
        // More pieces of A's datagrams in progress are still taken.
        assert_eq!(t.insert(Ms(0), key(A, 1, 64), 8, &piece), Ok(None));
        // Source B: one more fills the table (3).
        assert_eq!(t.insert(Ms(0), key(B, 1, 64), 0, &piece), Ok(None));
        assert_eq!(
            t.insert(Ms(0), key(B, 2, 64), 0, &piece),
            Err(FragDrop::TableFull)
        );
        assert_eq!(t.in_progress(), 3);
        let s = t.stats();
        assert_eq!((s.source_limit, s.table_full), (1, 1));
    }

    #[test]
    fn unfinished_datagrams_time_out() {
        let mut t = table();
        assert_eq!(t.insert(Ms(1_000), key(A, 1, 64), 0, &[0; 8]), Ok(None));
        assert_eq!(t.insert(Ms(2_000), key(B, 1, 64), 0, &[0; 8]), Ok(None));
        assert_eq!(t.poll_timeout(), Some(Ms(61_000)));
        t.handle_timeout(Ms(60_999));
        assert_eq!(t.in_progress(), 2);
        t.handle_timeout(Ms(61_000));
        assert_eq!(t.in_progress(), 1);
        assert_eq!(t.poll_timeout(), Some(Ms(62_000)));
        assert_eq!(t.stats().timeouts, 1);
        // The source's slot is free again.
        assert_eq!(t.insert(Ms(61_000), key(A, 5, 64), 0, &[0; 8]), Ok(None));
    }

    #[test]
    fn fragment_splits_on_8_byte_boundaries() {
        let header = [0x7e_u8; 6]; // stands for 48 uncompressed bytes
        let rest: Vec<u8> = (0..=255).cycle().take(300).collect();
        let mut frames = Vec::new();
        let n = fragment(
            Datagram {
                header: &header,
                consumed: 48,
                rest: &rest,
            },
            0xbeef,
            80,
            |f| frames.push(f.to_vec()),
        )
        .unwrap();
        assert_eq!(n, frames.len());
        // Reassemble from the headers alone.
        let mut t = table();
        let mut done = None;
        for f in &frames {
            assert!(f.len() <= 80);
            let (h, data) = FragHeader::parse(f).unwrap();
            assert_eq!((h.size, h.tag), (348, 0xbeef));
            let (offset, data) = if h.first {
                assert_eq!(&data[..6], &header);
                // Stand-in for decompression: 48 bytes of zeros for the headers.
                let mut d = alloc::vec![0; 48];
                d.extend_from_slice(&data[6..]);
                (0, d)
            } else {
                (h.offset, data.to_vec())
            };
            if let Some(d) = t
                .insert(Ms(0), key(A, h.tag, h.size), offset, &data)
                .unwrap()
            {
                done = Some(d);
            }
        }
        let done = done.unwrap();
        assert_eq!(&done[48..], &rest[..]);
        // Too big, too small.
        let big = alloc::vec![0; 2000];
        let d = Datagram {
            header: &header,
            consumed: 48,
            rest: &big,
        };
        assert_eq!(
            fragment(d, 1, 80, |_| {}),
            Err(FragmentError::TooLarge(2048))
        );
        let d = Datagram {
            header: &header,
            consumed: 48,
            rest: &rest,
        };
        assert_eq!(
            fragment(d, 1, 12, |_| {}),
            Err(FragmentError::FrameTooSmall(12))
        );
    }
}
