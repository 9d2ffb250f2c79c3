//! Blocking file I/O: recovery on open, writing a group commit, the acknowledgement file,
//! deleting segments, reading records back for the publisher.
//!
//! Everything here blocks; [`super::task`] runs it on tokio's blocking pool. What to write and
//! where comes from the [state core](super::state); this module only moves bytes and syncs.
//! The file I/O goes through [`v6iot_durable::Fs`]: [`StdFs`](v6iot_durable::StdFs) in
//! production, the crash model in `tests/outbox_power_loss.rs`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};
use v6iot_durable::{Fs, FsDir as _, FsFile as _, OpenOptions};

use super::OutboxError;
use super::log::{self, AckSlot, HeaderCheck, RECORD_OVERHEAD, RecordError, SEGMENT_HEADER_LEN};
use super::state::{Plan, Recovered, SegmentSummary};
use crate::message::{NewMessage, OutboundMessage};

/// Name of the acknowledgement file in the outbox directory.
pub(crate) const ACK_FILE: &str = "acked";
/// Name of the file whose `flock` keeps a second process (or a second open) out.
pub(crate) const LOCK_FILE: &str = "lock";

/// The segment being appended to.
#[derive(Debug)]
struct Active<F: Fs> {
    file: F::File,
    /// Bytes written to it (durable once synced).
    len: u64,
}

/// The open files of an outbox directory.
#[derive(Debug)]
pub(crate) struct Disk<F: Fs> {
    fs: F,
    dir: PathBuf,
    dir_file: F::Dir,
    active: Active<F>,
    ack_file: F::File,
    ack_seq: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// Holds the directory's lock until the outbox is closed.
    _lock: F::File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the scan of one segment file found.
struct Scan {
    /// The segment, then the segments split off it after damaged stretches (empty when the
    /// file was removed).
    summaries: Vec<SegmentSummary>,
    /// Bytes of the tail cut off.
    truncated: u64,
    /// Damaged stretches skipped in the middle (valid records followed each).
    skipped_regions: u64,
    /// Their bytes.
    skipped_bytes: u64,
}

impl Scan {
    /// The next id must be at least this: above every id the cut-off records may have had
    /// (each record has at least `RECORD_OVERHEAD` bytes).
    fn min_next_id(&self) -> u64 {
        let Some(s) = self.summaries.last() else {
            return 0;
        };
        let after_valid = s.ids.map_or(s.base, |(_, last)| last.saturating_add(1));
        after_valid.saturating_add(self.truncated.div_ceil(RECORD_OVERHEAD))
    }
}

impl<F: Fs> Disk<F> {
    /// Opens (creating if needed) the outbox in `dir` on `fs`: reads the acknowledgement file,
    /// checks every segment, cuts torn tails off, and makes sure there is an active segment.
    pub(crate) fn open(fs: F, dir: &Path) -> Result<(Disk<F>, Recovered), OutboxError> {
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        let dir_file = fs.open_dir(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs
            .open(&lock_path, &OpenOptions::new().write(true).create(true))
            .map_err(io_err(&lock_path))?;
        if !lock.try_lock().map_err(io_err(&lock_path))? {
            return Err(OutboxError::Locked {
                path: dir.to_owned(),
            });
        }

        let ack_path = dir.join(ACK_FILE);
        let ack_existed = fs.exists(&ack_path).map_err(io_err(&ack_path))?;
        let mut ack_file = fs
            .open(
                &ack_path,
                &OpenOptions::new().read(true).write(true).create(true),
            )
            .map_err(io_err(&ack_path))?;
        let mut ack_bytes = Vec::new();
        ack_file
            .read_to_end(&mut ack_bytes)
            .map_err(io_err(&ack_path))?;
        let slot = AckSlot::newest(&ack_bytes);
        if slot.is_none() && !ack_bytes.is_empty() {
            warn!(path = %ack_path.display(), "no valid slot in the acknowledgement file: \
                  unacknowledged and acknowledged messages alike will be published again");
        }
        if !ack_existed {
            dir_file.sync().map_err(io_err(dir))?;
        }
        let watermark = slot.map_or(0, |s| s.watermark);

        let mut bases = Vec::new();
        for name in fs.read_dir(dir).map_err(io_err(dir))? {
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = log::parse_segment_file_name(name) {
                bases.push(base);
            } else if name.ends_with(SPLIT_SUFFIX) {
                // A split-off segment a crash interrupted before its rename: redone below.
                let path = dir.join(name);
                fs.remove_file(&path).map_err(io_err(&path))?;
            }
        }
        bases.sort_unstable();

        let mut recovered = Recovered {
            segments: Vec::new(),
            watermark,
            torn_tails: 0,
            truncated_bytes: 0,
            skipped_regions: 0,
            skipped_bytes: 0,
            min_next_id: 0,
        };
        for (i, &base) in bases.iter().enumerate() {
            let id_limit = bases.get(i + 1).copied().unwrap_or(u64::MAX);
            let scan = scan_segment(&fs, dir, base, id_limit)?;
            recovered.min_next_id = recovered.min_next_id.max(scan.min_next_id());
            if scan.truncated > 0 {
                recovered.torn_tails += 1;
                recovered.truncated_bytes += scan.truncated;
            }
            recovered.skipped_regions += scan.skipped_regions;
            recovered.skipped_bytes += scan.skipped_bytes;
            recovered.segments.extend(scan.summaries);
        }

        let next_id = recovered.next_id();
        // Appends continue the last segment if their ids follow on from its records (not
        // after ids were skipped over a cut-off tail); otherwise a new segment starts.
        let continues = recovered.segments.last().filter(|last| {
            last.ids
                .is_none_or(|(_, l)| l.checked_add(1) == Some(next_id))
        });
        let active = match continues {
            Some(last) => {
                let path = dir.join(log::segment_file_name(last.base));
                let file = fs
                    .open(&path, &OpenOptions::new().append(true))
                    .map_err(io_err(&path))?;
                Active {
                    file,
                    len: SEGMENT_HEADER_LEN + last.record_bytes,
                }
            }
            None => {
                let active =
                    create_segment(&fs, dir, next_id, &mut Vec::new()).map_err(io_err(dir))?;
                active.file.sync_data().map_err(io_err(dir))?;
                dir_file.sync().map_err(io_err(dir))?;
                recovered.segments.push(SegmentSummary {
                    base: next_id,
                    ids: None,
                    record_bytes: 0,
                });
                active
            }
        };
        info!(
            dir = %dir.display(),
            segments = recovered.segments.len(),
            watermark,
            next_id,
            torn_tails = recovered.torn_tails,
            "outbox opened"
        );
        let disk = Disk {
            fs,
            dir: dir.to_owned(),
            dir_file,
            active,
            ack_file,
            ack_seq: slot.map_or(0, |s| s.seq),
            buf: Vec::new(),
            _lock: lock,
        };
        Ok((disk, recovered))
    }

    /// Writes the records of `plan` (`msgs` in order) and makes them durable. Returns the
    /// number of syncs: one for a batch in one segment, more when it opened a new segment.
    pub(crate) fn write(&mut self, plan: &Plan, msgs: &[NewMessage]) -> io::Result<u64> {
        let mut syncs = 0;
        let mut dirty = false;
        let mut new_entry = false;
        let mut msgs = msgs.iter();
        for chunk in &plan.chunks {
            if chunk.new_segment {
                if dirty {
                    self.active.file.sync_data()?;
                    syncs += 1;
                }
                self.active = create_segment(&self.fs, &self.dir, chunk.base, &mut self.buf)?;
                new_entry = true;
                dirty = true;
            }
            self.buf.clear();
            for (id, msg) in (chunk.first_id..).zip(msgs.by_ref().take(chunk.count)) {
                log::encode_record(&mut self.buf, id, msg)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
            }
            self.active.file.write_all(&self.buf)?;
            self.active.len += self.buf.len() as u64;
            dirty |= !self.buf.is_empty();
        }
        if dirty {
            self.active.file.sync_data()?;
            syncs += 1;
        }
        if new_entry {
            self.dir_file.sync()?;
            syncs += 1;
        }
        Ok(syncs)
    }

    /// Persists the acknowledgement watermark: writes the older slot, syncs.
    pub(crate) fn persist_watermark(&mut self, watermark: u64) -> io::Result<()> {
        let slot = AckSlot {
            seq: self.ack_seq + 1,
            watermark,
        };
        self.ack_file.write_all_at(&slot.encode(), slot.offset())?;
        self.ack_file.sync_data()?;
        self.ack_seq = slot.seq;
        Ok(())
    }

    /// Deletes segment `base` (already gone counts as done).
    pub(crate) fn delete_segment(&self, base: u64) -> io::Result<()> {
        match self
            .fs
            .remove_file(&self.dir.join(log::segment_file_name(base)))
        {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Creates segment `base` with its header written (not yet synced: the caller syncs it with
/// the records that follow, and syncs the directory).
fn create_segment<F: Fs>(
    fs: &F,
    dir: &Path,
    base: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Active<F>> {
    let path = dir.join(log::segment_file_name(base));
    let mut file = fs.open(&path, &OpenOptions::new().append(true).create_new(true))?;
    buf.clear();
    buf.extend_from_slice(&log::encode_segment_header(base));
    file.write_all(buf)?;
    Ok(Active {
        file,
        len: SEGMENT_HEADER_LEN,
    })
}

/// Suffix of a segment being split off a damaged one, until its rename.
const SPLIT_SUFFIX: &str = ".seg.split";

/// Checks one segment file (`base`; every id in it is below `id_limit`): its header, then its
/// records ([`log::scan_records`]). Valid records after a damaged stretch move to segments of
/// their own (named by their first id, written and synced before the damaged file is cut); a
/// torn or damaged tail is cut off. Each is logged and counted.
fn scan_segment<F: Fs>(fs: &F, dir: &Path, base: u64, id_limit: u64) -> Result<Scan, OutboxError> {
    let path = dir.join(log::segment_file_name(base));
    let path = path.as_path();
    let bytes = fs.read(path).map_err(io_err(path))?;
    match log::check_segment_header(&bytes) {
        HeaderCheck::Valid(b) if b == base => {}
        HeaderCheck::Torn => {
            warn!(path = %path.display(), "segment without a complete header (a crash while \
                  creating it): removed");
            fs.remove_file(path).map_err(io_err(path))?;
            return Ok(Scan {
                summaries: Vec::new(),
                truncated: bytes.len() as u64,
                skipped_regions: 0,
                skipped_bytes: 0,
            });
        }
        HeaderCheck::Valid(_) | HeaderCheck::Foreign => {
            return Err(OutboxError::Foreign {
                path: path.to_owned(),
            });
        }
    }
    let found = log::scan_records(&bytes, base, id_limit);
    let mut runs = found.runs.iter();
    let first = runs.next().copied().unwrap_or(log::Run {
        offset: SEGMENT_HEADER_LEN,
        len: 0,
        ids: None,
    });
    let mut summaries = vec![SegmentSummary {
        base,
        ids: first.ids,
        record_bytes: first.len,
    }];
    let mut before = first.ids.map(|(_, l)| l);
    for (run, damage) in runs.zip(&found.skipped) {
        let Some((from, to)) = run.ids else { continue };
        warn!(
            path = %path.display(),
            at = damage.offset,
            bytes = damage.len,
            problem = %damage.problem,
            lost_ids = %format!("{}..{}", before.map_or(base, |l| l + 1), from),
            resumed_at_id = from,
            "skipping a damaged stretch in the middle of an outbox segment; the valid records \
             after it move to a segment of their own"
        );
        split_off(fs, dir, &bytes, run).map_err(io_err(dir))?;
        summaries.push(SegmentSummary {
            base: from,
            ids: run.ids,
            record_bytes: run.len,
        });
        before = Some(to);
    }
    let keep = first.offset + first.len;
    let cut = bytes.len() as u64 - keep;
    let truncated = found.tail.as_ref().map_or(0, |t| t.len);
    if let Some(tail) = &found.tail {
        warn!(
            path = %path.display(),
            at = tail.offset,
            bytes = tail.len,
            problem = %tail.problem,
            "cutting a torn or corrupt tail off an outbox segment"
        );
    }
    if cut > 0 {
        let file = fs
            .open(path, &OpenOptions::new().write(true))
            .map_err(io_err(path))?;
        file.set_len(keep).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
    }
    if summaries.len() > 1 {
        fs.open_dir(dir)
            .and_then(|d| d.sync())
            .map_err(io_err(dir))?;
    }
    Ok(Scan {
        summaries,
        truncated,
        skipped_regions: found.skipped.len() as u64,
        skipped_bytes: found.skipped.iter().map(|d| d.len).sum(),
    })
}

/// Writes the records of `run` (from the damaged segment's `bytes`) as a segment of their own,
/// named by their first id: to a temporary name, synced, then renamed (an existing file of that
/// name, from a recovery a crash interrupted, is replaced by the same bytes).
fn split_off<F: Fs>(fs: &F, dir: &Path, bytes: &[u8], run: &log::Run) -> io::Result<()> {
    let Some((first, _)) = run.ids else {
        return Ok(());
    };
    let records = usize::try_from(run.offset)
        .ok()
        .zip(usize::try_from(run.offset + run.len).ok())
        .and_then(|(from, to)| bytes.get(from..to))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "run outside the file"))?;
    let name = log::segment_file_name(first);
    let tmp = dir.join(format!("{first:020}{SPLIT_SUFFIX}"));
    let mut file = fs.open(
        &tmp,
        &OpenOptions::new().write(true).create(true).truncate(true),
    )?;
    file.write_all(&log::encode_segment_header(first))?;
    file.write_all(records)?;
    file.sync_all()?;
    fs.rename(&tmp, &dir.join(name))
}

/// Why records could not be read back.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file could not be read (gone: it was reclaimed).
    Io(io::Error),
    /// Durable bytes that do not decode: the disk changed under us.
    Corrupt(RecordError),
}

/// Reads the records of segment `base` in `offset..end` (durable bytes): at most `max_records`
/// of them, in about `max_chunk` bytes (at least one whole record). Returns them and the
/// offset after the last.
pub(crate) fn read_records<F: Fs>(
    fs: &F,
    dir: &Path,
    base: u64,
    offset: u64,
    end: u64,
    max_chunk: u64,
    max_records: usize,
) -> Result<(Vec<OutboundMessage>, u64), ReadError> {
    let file = fs
        .open(
            &dir.join(log::segment_file_name(base)),
            &OpenOptions::new().read(true),
        )
        .map_err(ReadError::Io)?;
    let mut want = end.saturating_sub(offset).min(max_chunk);
    loop {
        let mut buf = vec![0; usize::try_from(want).unwrap_or(0)];
        file.read_exact_at(&mut buf, offset)
            .map_err(ReadError::Io)?;
        let mut msgs = Vec::new();
        let mut at = 0_u64;
        let mut first_error = None;
        while let Some(rest) = usize::try_from(at).ok().and_then(|a| buf.get(a..)) {
            if rest.is_empty() || msgs.len() >= max_records {
                break;
            }
            match log::decode_record(rest) {
                Ok((m, n)) => {
                    msgs.push(m);
                    at += n;
                }
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        match first_error {
            None => return Ok((msgs, offset + at)),
            Some(_) if !msgs.is_empty() => return Ok((msgs, offset + at)),
            // one record larger than the chunk: read exactly it
            Some(RecordError::Incomplete {
                needed: Some(needed),
            }) if needed > want && offset + needed <= end => want = needed,
            Some(e) => return Err(ReadError::Corrupt(e)),
        }
    }
}
