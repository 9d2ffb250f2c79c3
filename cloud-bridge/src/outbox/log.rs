//! The on-disk format: segment headers, records and the acknowledgement file, as bytes.
//!
//! Pure functions over byte slices, no I/O. Every decoder is checked: it never panics and never
//! allocates more than the input it was given, whatever the bytes (they come from a disk that a
//! crash may have left half-written). The layout is documented in the [module docs](super).

use crate::message::{NewMessage, OutboundMessage};

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"V6OB";
/// The only segment format version this code reads and writes.
pub(crate) const SEGMENT_VERSION: u8 = 1;
/// Bytes of the segment header: magic (4), version (1), reserved (3), base id (8).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;

/// Bytes of a record before the topic: length (4), crc (4), id (8), flags (1), topic length (2).
pub(crate) const RECORD_OVERHEAD: u64 = 19;
/// The smallest value of a record's length field (crc .. topic length, empty topic and payload).
const MIN_LEN_FIELD: u32 = 15;
/// `flags` bit 0: the MQTT retain flag. Every other bit must be zero.
const FLAG_RETAIN: u8 = 0x01;

/// Magic at the start of each acknowledgement slot.
pub(crate) const ACK_MAGIC: [u8; 8] = *b"V6OBACK1";
/// Bytes of one acknowledgement slot; the file holds two.
pub(crate) const ACK_SLOT_LEN: usize = 32;

/// File name of the segment whose first id is `base`: 20 decimal digits, so that names sort
/// like ids.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base id of a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a new segment whose first record will have an id of at least `base`.
pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0_u8; SEGMENT_HEADER_LEN as usize];
    put(&mut h, 0, &SEGMENT_MAGIC);
    put(&mut h, 4, &[SEGMENT_VERSION]);
    put(&mut h, 8, &base.to_le_bytes());
    h
}

/// Copies `bytes` into `buf` at `at` (a no-op where it would not fit; callers use fixed sizes).
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// What the first bytes of a segment file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// A valid header with this base id.
    Valid(u64),
    /// Shorter than a header, or all zeros: the file was created and the process died before
    /// its header was written (a torn creation, never an error).
    Torn,
    /// A header of another magic or version: not ours, or from a newer release.
    Foreign,
}

/// Checks the header at the start of `bytes`.
pub(crate) fn check_segment_header(bytes: &[u8]) -> HeaderCheck {
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN as usize) else {
        return HeaderCheck::Torn;
    };
    if h.iter().all(|&b| b == 0) {
        return HeaderCheck::Torn;
    }
    if h.get(..4) != Some(&SEGMENT_MAGIC[..]) || h.get(4) != Some(&SEGMENT_VERSION) {
        return HeaderCheck::Foreign;
    }
    match h.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        Some(base) => HeaderCheck::Valid(u64::from_le_bytes(base)),
        None => HeaderCheck::Torn,
    }
}

/// Why a message cannot become a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// The topic is longer than 65535 bytes.
    TopicTooLong,
    /// The record would be longer than 4 GiB.
    RecordTooLong,
}

/// Bytes the record of `msg` takes on disk, or why it cannot be stored.
pub(crate) fn record_len(msg: &NewMessage) -> Result<u64, EncodeError> {
    if u16::try_from(msg.topic.len()).is_err() {
        return Err(EncodeError::TopicTooLong);
    }
    let len = RECORD_OVERHEAD + msg.topic.len() as u64 + msg.payload.len() as u64;
    if len - 4 > u64::from(u32::MAX) {
        return Err(EncodeError::RecordTooLong);
    }
    Ok(len)
}

/// Appends the record of `msg` with `id` to `out`. The caller has checked [`record_len`];
/// a message that fails it is written as nothing and reported.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    id: u64,
    msg: &NewMessage,
) -> Result<(), EncodeError> {
    let total = record_len(msg)?;
    let topic_len = u16::try_from(msg.topic.len()).map_err(|_| EncodeError::TopicTooLong)?;
    let len_field = u32::try_from(total - 4).map_err(|_| EncodeError::RecordTooLong)?;
    let start = out.len();
    out.reserve(usize::try_from(total).unwrap_or(0));
    out.extend_from_slice(&len_field.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&id.to_le_bytes());
    out.push(if msg.retain { FLAG_RETAIN } else { 0 });
    out.extend_from_slice(&topic_len.to_le_bytes());
    out.extend_from_slice(msg.topic.as_bytes());
    out.extend_from_slice(&msg.payload);
    let crc = record_crc(out.get(start..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// The CRC of a whole record: over the length field and everything after the CRC field.
fn record_crc(record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(record.get(..4).unwrap_or_default());
    h.update(record.get(8..).unwrap_or_default());
    h.finalize()
}

/// Why the bytes at some offset are not a complete, valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Fewer bytes than the length field announces (or than a length field): a torn tail, or
    /// the end of what was read.
    Incomplete {
        /// Bytes the whole record needs, when the length field could be read and is sane.
        needed: Option<u64>,
    },
    /// The length field is smaller than the smallest record.
    BadLength,
    /// The CRC does not match.
    BadCrc,
    /// Reserved flag bits are set.
    BadFlags,
    /// The topic length points past the record.
    BadTopicLength,
    /// The topic is not UTF-8.
    BadTopic,
}

/// Decodes the record at the start of `bytes`: the message and the bytes it took.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<(OutboundMessage, u64), RecordError> {
    let Some(len_field) = bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
    else {
        return Err(RecordError::Incomplete { needed: None });
    };
    if len_field < MIN_LEN_FIELD {
        return Err(RecordError::BadLength);
    }
    let total = u64::from(len_field) + 4;
    let Some(record) = usize::try_from(total).ok().and_then(|t| bytes.get(..t)) else {
        return Err(RecordError::Incomplete {
            needed: Some(total),
        });
    };
    let crc = read_u32(record, 4);
    if crc != Some(record_crc(record)) {
        return Err(RecordError::BadCrc);
    }
    let id = read_u64(record, 8).ok_or(RecordError::BadLength)?;
    let flags = *record.get(16).ok_or(RecordError::BadLength)?;
    if flags & !FLAG_RETAIN != 0 {
        return Err(RecordError::BadFlags);
    }
    let topic_len = record
        .get(17..19)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_le_bytes)
        .ok_or(RecordError::BadLength)?;
    let topic_end = 19 + usize::from(topic_len);
    let topic = record
        .get(19..topic_end)
        .ok_or(RecordError::BadTopicLength)?;
    let topic = std::str::from_utf8(topic).map_err(|_| RecordError::BadTopic)?;
    let payload = record.get(topic_end..).unwrap_or_default();
    Ok((
        OutboundMessage {
            id,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain: flags & FLAG_RETAIN != 0,
        },
        total,
    ))
}

/// A stretch of consecutive valid records in a segment file, as [`scan_records`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// Offset of its first record in the file.
    pub(crate) offset: u64,
    /// Bytes of its records.
    pub(crate) len: u64,
    /// First and last id (`None`: no record).
    pub(crate) ids: Option<(u64, u64)>,
}

/// Bytes of a segment file that [`scan_records`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where they start.
    pub(crate) offset: u64,
    /// How many.
    pub(crate) len: u64,
    /// What the first bad record was (for the log).
    pub(crate) problem: String,
}

/// What [`scan_records`] found in a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// The runs of valid records in file order; the first starts right after the header (it may
    /// hold no record), every later one starts with a record found by resynchronising.
    pub(crate) runs: Vec<Run>,
    /// Damaged stretches between runs (one before each run but the first; empty where only
    /// the ids jump), each followed by a valid record.
    pub(crate) skipped: Vec<Damage>,
    /// A torn or damaged tail after the last run (no valid record follows it).
    pub(crate) tail: Option<Damage>,
}

/// Reads the records of a segment file (`bytes`, header included) whose base id is `base`;
/// every id is below `id_limit` (the next segment's base). Never panics, whatever the bytes.
///
/// Records follow each other with consecutive ids. At a record that is torn, corrupt (length,
/// CRC, flags, topic) or whose id does not follow, the scan looks for the next offset where a
/// record checks out (its CRC) and whose id is above every id before, below `id_limit`, and no
/// further above the last good id than the damaged bytes could have held records (one per
/// [`RECORD_OVERHEAD`] bytes): the bytes in between are skipped and a new run starts there. When
/// no such record follows, the rest of the file is the tail, to be cut.
pub(crate) fn scan_records(bytes: &[u8], base: u64, id_limit: u64) -> SegmentScan {
    let end = bytes.len() as u64;
    let mut scan = SegmentScan {
        runs: Vec::new(),
        skipped: Vec::new(),
        tail: None,
    };
    let mut run = Run {
        offset: SEGMENT_HEADER_LEN,
        len: 0,
        ids: None,
    };
    // The last good id of any run so far.
    let mut last: Option<u64> = None;
    let mut offset = SEGMENT_HEADER_LEN;
    while offset < end {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o..))
            .unwrap_or_default();
        let lowest = last.map_or(base, |l| l.saturating_add(1));
        let problem = match decode_record(rest) {
            Ok((msg, n)) => {
                // The first record of a run only needs to be above every id before it; the
                // others follow on by one.
                let follows = match run.ids {
                    None => msg.id >= lowest && msg.id < id_limit,
                    Some(_) => msg.id == lowest && msg.id < id_limit,
                };
                if follows {
                    run.ids = Some((run.ids.map_or(msg.id, |(f, _)| f), msg.id));
                    run.len += n;
                    last = Some(msg.id);
                    offset += n;
                    continue;
                }
                if msg.id > lowest && msg.id < id_limit {
                    // A valid record after a gap in the ids: a new run, no byte lost.
                    scan.skipped.push(Damage {
                        offset,
                        len: 0,
                        problem: format!("ids jump to {}", msg.id),
                    });
                    scan.runs.push(run);
                    run = Run {
                        offset,
                        len: 0,
                        ids: None,
                    };
                    continue;
                }
                format!("id {} out of sequence", msg.id)
            }
            Err(RecordError::Incomplete { .. }) => "torn record".to_owned(),
            Err(other) => format!("{other:?}"),
        };
        match resync(bytes, offset + 1, lowest, id_limit) {
            Some(at) => {
                scan.skipped.push(Damage {
                    offset,
                    len: at - offset,
                    problem,
                });
                scan.runs.push(run);
                run = Run {
                    offset: at,
                    len: 0,
                    ids: None,
                };
                offset = at;
            }
            None => {
                scan.tail = Some(Damage {
                    offset,
                    len: end - offset,
                    problem,
                });
                break;
            }
        }
    }
    scan.runs.push(run);
    scan
}

/// The first offset at or after `from` where a valid record starts whose id is in
/// `lowest..id_limit` and at most one per [`RECORD_OVERHEAD`] bytes since `from - 1` above
/// `lowest` (the damaged bytes could not have held more records). Cheap checks (length, id,
/// flags) come before the CRC, so garbage costs about one pass.
fn resync(bytes: &[u8], from: u64, lowest: u64, id_limit: u64) -> Option<u64> {
    let damaged_at = from.saturating_sub(1);
    let end = bytes.len() as u64;
    let mut at = from;
    while at.saturating_add(RECORD_OVERHEAD) <= end {
        let i = usize::try_from(at).ok()?;
        let plausible = read_u32(bytes, i)
            .is_some_and(|len| len >= MIN_LEN_FIELD && at + 4 + u64::from(len) <= end)
            && read_u64(bytes, i + 8).is_some_and(|id| {
                let most = lowest.saturating_add((at - damaged_at) / RECORD_OVERHEAD);
                id >= lowest && id < id_limit && id <= most
            })
            && bytes.get(i + 16).is_some_and(|f| f & !FLAG_RETAIN == 0);
        if plausible
            && bytes
                .get(i..)
                .is_some_and(|rest| decode_record(rest).is_ok())
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

/// One slot of the acknowledgement file: every id up to `watermark` was acknowledged; `seq`
/// tells the newer of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckSlot {
    /// Incremented on every write; slot `seq % 2` is the one written.
    pub(crate) seq: u64,
    /// Every id up to and including this one is acknowledged.
    pub(crate) watermark: u64,
}

impl AckSlot {
    /// The 32 bytes of this slot: magic (8), seq (8), watermark (8), crc (4), zero (4).
    pub(crate) fn encode(self) -> [u8; ACK_SLOT_LEN] {
        let mut b = [0_u8; ACK_SLOT_LEN];
        put(&mut b, 0, &ACK_MAGIC);
        put(&mut b, 8, &self.seq.to_le_bytes());
        put(&mut b, 16, &self.watermark.to_le_bytes());
        let sum = crc32fast::hash(b.get(..24).unwrap_or_default());
        put(&mut b, 24, &sum.to_le_bytes());
        b
    }

    /// The slot in `bytes` (32 bytes), if its magic and CRC are right.
    pub(crate) fn decode(bytes: &[u8]) -> Option<AckSlot> {
        let b = bytes.get(..ACK_SLOT_LEN)?;
        if b.get(..8)? != ACK_MAGIC || read_u32(b, 24)? != crc32fast::hash(b.get(..24)?) {
            return None;
        }
        Some(AckSlot {
            seq: read_u64(b, 8)?,
            watermark: read_u64(b, 16)?,
        })
    }

    /// The newest valid slot of an acknowledgement file's contents.
    pub(crate) fn newest(file: &[u8]) -> Option<AckSlot> {
        let a = file.get(..ACK_SLOT_LEN).and_then(AckSlot::decode);
        let b = file
            .get(ACK_SLOT_LEN..2 * ACK_SLOT_LEN)
            .and_then(AckSlot::decode);
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Byte offset of this slot in the file.
    pub(crate) fn offset(self) -> u64 {
        (self.seq % 2) * ACK_SLOT_LEN as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a crash or a bad disk leaves, decoding neither panics nor accepts a record
        /// that is not exactly one that was encoded.
        #[test]
        fn decoding_any_bytes_is_safe(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((m, n)) = decode_record(&bytes) {
                let mut again = Vec::new();
                let new = NewMessage { topic: m.topic.clone(), payload: m.payload.clone(),
                    retain: m.retain };
                encode_record(&mut again, m.id, &new).unwrap();
                prop_assert_eq!(&again[..], &bytes[..n as usize]);
            }
            let _ = check_segment_header(&bytes);
            let _ = AckSlot::newest(&bytes);
        }

        #[test]
        fn records_round_trip_any_content(
            id in any::<u64>(),
            topic in ".{0,40}",
            payload in prop::collection::vec(any::<u8>(), 0..300),
            retain in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let msg = NewMessage { topic, payload, retain };
            let mut out = Vec::new();
            encode_record(&mut out, id, &msg).unwrap();
            prop_assert_eq!(out.len() as u64, record_len(&msg).unwrap());
            prop_assert_eq!(decode_record(&out), Ok((msg.with_id(id), out.len() as u64)));
            let torn = &out[..cut.index(out.len())];
            let is_incomplete = matches!(decode_record(torn), Err(RecordError::Incomplete { .. }));
            prop_assert!(is_incomplete);
        }
    }

    /// A segment with base `base` holding `n` records with ids `base..`, and their offsets.
    fn segment(base: u64, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_segment_header(base).to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(bytes.len());
            let m = msg(
                &format!("t/{i}"),
                &vec![i as u8; (i as usize * 7) % 50],
                i % 3 == 0,
            );
            encode_record(&mut bytes, base + i, &m).unwrap();
        }
        (bytes, offsets)
    }

    /// Every id the runs of `scan` hold, checking that each run holds exactly its ids,
    /// consecutive, and that they increase from run to run.
    fn ids_of(bytes: &[u8], scan: &SegmentScan) -> Vec<u64> {
        let mut ids: Vec<u64> = Vec::new();
        for run in &scan.runs {
            let mut at = run.offset as usize;
            let end = (run.offset + run.len) as usize;
            let mut in_run = Vec::new();
            while at < end {
                let (m, n) = decode_record(&bytes[at..end]).unwrap();
                in_run.push(m.id);
                at += n as usize;
            }
            assert_eq!(
                run.ids,
                in_run.first().zip(in_run.last()).map(|(f, l)| (*f, *l))
            );
            assert!(in_run.windows(2).all(|w| w[1] == w[0] + 1));
            if let (Some(last), Some(first)) = (ids.last(), in_run.first()) {
                assert!(first > last);
            }
            ids.extend(in_run);
        }
        ids
    }

    proptest! {
        /// Whatever the bytes, the scan never panics and what it keeps are valid records in
        /// increasing id order, inside the file, below the limit.
        #[test]
        fn scanning_any_bytes_is_safe(tail in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = encode_segment_header(7).to_vec();
            bytes.extend_from_slice(&tail);
            let scan = scan_records(&bytes, 7, 1000);
            let ids = ids_of(&bytes, &scan);
            prop_assert!(ids.iter().all(|&i| (7..1000).contains(&i)));
            prop_assert_eq!(scan.runs.len(), scan.skipped.len() + 1);
        }

        /// Damage inside one record (any bytes of it overwritten) loses that record only; the
        /// records before and after it are all kept. Damage in the last record is a tail.
        #[test]
        fn damage_in_one_record_loses_only_that_record(
            n in 2_u64..20,
            victim in any::<prop::sample::Index>(),
            from in any::<prop::sample::Index>(),
            len in 1_usize..60,
            fill in any::<u8>(),
        ) {
            let (mut bytes, offsets) = segment(100, n);
            let k = victim.index(n as usize);
            let start = offsets[k];
            let end = offsets.get(k + 1).copied().unwrap_or(bytes.len());
            let a = start + from.index(end - start);
            let b = (a + len).min(end);
            let before = bytes.clone();
            bytes[a..b].fill(fill);
            prop_assume!(bytes != before);
            let scan = scan_records(&bytes, 100, u64::MAX);
            let ids = ids_of(&bytes, &scan);
            let want: Vec<u64> = (100..100 + n).filter(|&i| i != 100 + k as u64).collect();
            prop_assert_eq!(ids, want);
            prop_assert_eq!(scan.tail.is_some(), k as u64 == n - 1);
        }
    }

    #[test]
    fn a_clean_segment_is_one_run() {
        let (bytes, _) = segment(5, 4);
        let scan = scan_records(&bytes, 5, 9);
        assert_eq!(scan.runs.len(), 1);
        assert_eq!(scan.runs[0].ids, Some((5, 8)));
        assert_eq!(scan.runs[0].len, bytes.len() as u64 - SEGMENT_HEADER_LEN);
        assert_eq!((scan.skipped.len(), scan.tail), (0, None));
        // ids at or above the next segment's base are not this segment's
        let scan = scan_records(&bytes, 5, 7);
        assert_eq!(scan.runs[0].ids, Some((5, 6)));
        assert!(scan.tail.is_some());
    }

    fn msg(topic: &str, payload: &[u8], retain: bool) -> NewMessage {
        NewMessage {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain,
        }
    }

    #[test]
    fn record_bytes_are_as_documented() {
        let mut out = Vec::new();
        encode_record(&mut out, 0x0102, &msg("a/b", b"xy", true)).unwrap();
        assert_eq!(
            out.len() as u64,
            record_len(&msg("a/b", b"xy", true)).unwrap()
        );
        assert_eq!(out.len(), 19 + 3 + 2);
        // length field: everything after it
        assert_eq!(&out[..4], &20_u32.to_le_bytes());
        assert_eq!(&out[8..16], &0x0102_u64.to_le_bytes());
        assert_eq!(out[16], 1);
        assert_eq!(&out[17..19], &3_u16.to_le_bytes());
        assert_eq!(&out[19..22], b"a/b");
        assert_eq!(&out[22..], b"xy");
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..4]);
        h.update(&out[8..]);
        assert_eq!(&out[4..8], &h.finalize().to_le_bytes());
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, &msg("t", b"", false)).unwrap();
        encode_record(&mut out, 8, &msg("topic/x", &[0xff; 300], true)).unwrap();
        let (a, n) = decode_record(&out).unwrap();
        assert_eq!(a, msg("t", b"", false).with_id(7));
        let (b, m) = decode_record(&out[n as usize..]).unwrap();
        assert_eq!(b, msg("topic/x", &[0xff; 300], true).with_id(8));
        assert_eq!((n + m) as usize, out.len());
    }

    #[test]
    fn damaged_records_are_named() {
        let mut out = Vec::new();
        encode_record(&mut out, 1, &msg("t", b"hello", false)).unwrap();
        for cut in 0..out.len() {
            assert!(matches!(
                decode_record(&out[..cut]),
                Err(RecordError::Incomplete { .. })
            ));
        }
        for i in 4..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode_record(&bad), Err(RecordError::BadCrc), "byte {i}");
        }
        assert_eq!(decode_record(&[0; 32]), Err(RecordError::BadLength));
        let mut huge = out.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_record(&huge),
            Err(RecordError::Incomplete {
                needed: Some(u64::from(u32::MAX) + 4)
            })
        );
    }

    #[test]
    fn reserved_flags_and_bad_topics_are_rejected_even_with_a_good_crc() {
        let fix_crc = |r: &mut Vec<u8>| {
            let crc = record_crc(r);
            r[4..8].copy_from_slice(&crc.to_le_bytes());
        };
        let mut out = Vec::new();
        encode_record(&mut out, 1, &msg("t", b"p", false)).unwrap();
        let mut flags = out.clone();
        flags[16] = 0x80;
        fix_crc(&mut flags);
        assert_eq!(decode_record(&flags), Err(RecordError::BadFlags));
        let mut topic = out.clone();
        topic[17..19].copy_from_slice(&9_u16.to_le_bytes());
        fix_crc(&mut topic);
        assert_eq!(decode_record(&topic), Err(RecordError::BadTopicLength));
        let mut utf8 = out.clone();
        utf8[19] = 0xff;
        fix_crc(&mut utf8);
        assert_eq!(decode_record(&utf8), Err(RecordError::BadTopic));
    }

    #[test]
    fn headers_and_names() {
        let h = encode_segment_header(42);
        assert_eq!(&h[..4], b"V6OB");
        assert_eq!(check_segment_header(&h), HeaderCheck::Valid(42));
        assert_eq!(check_segment_header(&h[..15]), HeaderCheck::Torn);
        assert_eq!(check_segment_header(&[0; 16]), HeaderCheck::Torn);
        let mut v2 = h;
        v2[4] = 2;
        assert_eq!(check_segment_header(&v2), HeaderCheck::Foreign);
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("acked"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
    }

    #[test]
    fn topic_limits() {
        let long = msg(&"t".repeat(70_000), b"", false);
        assert_eq!(record_len(&long), Err(EncodeError::TopicTooLong));
        assert_eq!(
            encode_record(&mut Vec::new(), 1, &long),
            Err(EncodeError::TopicTooLong)
        );
    }

    #[test]
    fn ack_slots_pick_the_newest_valid_one() {
        let a = AckSlot {
            seq: 4,
            watermark: 10,
        };
        let b = AckSlot {
            seq: 5,
            watermark: 12,
        };
        let mut file = [0_u8; 64];
        file[a.offset() as usize..][..32].copy_from_slice(&a.encode());
        assert_eq!(AckSlot::newest(&file), Some(a));
        file[b.offset() as usize..][..32].copy_from_slice(&b.encode());
        assert_eq!(AckSlot::newest(&file), Some(b));
        file[40] ^= 1; // a torn write of slot b
        assert_eq!(AckSlot::newest(&file), Some(a));
        assert_eq!(AckSlot::newest(&[]), None);
    }
}
