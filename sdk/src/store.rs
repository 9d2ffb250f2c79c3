//! Durable storage of a device's OSCORE state (RFC 8613 Appendix B.1.1, B.1.2) in files (feature
//! `std`): the file I/O behind [`Device::state_to_persist`](crate::coap::Device::state_to_persist),
//! implementing the core's [`StateStore`](crate::persist::StateStore) through [`MarkStore`].
//!
//! The sans-IO core names a [`DurableState`] — the sender sequence-number mark and the replay
//! floor of received requests; a [`MarkStore`] writes it so that it survives a crash (write a
//! temporary file, `fsync` it, rename it over the old one, `fsync` the directory) and only then
//! does the driver confirm it with
//! [`Device::state_persisted`](crate::coap::Device::state_persisted). A crash at any point
//! leaves either the old state or the new one, never a torn file; the mark is at or above every
//! sequence number used, because none was used at or above the confirmed mark, and the floor is
//! above every request Partial IV whose handler ran, because none ran before its floor was
//! confirmed.
//!
//! [`SequenceFile`] keeps one device's state in a file of its own: the decimal mark, a space and
//! the decimal replay floor, then a newline (`4096 17`). A file written before replay floors
//! were kept holds the mark alone (`4096`) and reads as floor 0.
//!
//! The file I/O goes through [`v6iot_durable::Fs`]: [`StdFs`] (the default) in a driver,
//! [`v6iot_durable::SimFs`] in the crash tests (`sdk/tests/store_power_loss.rs`), which lose
//! what was not synced.

use std::ffi::OsString;
use std::format;
use std::io;
use std::path::{Path, PathBuf};
use std::string::String;

use v6iot_durable::{Fs, StdFs, parent_dir};

use crate::oscore::DurableState;

/// Where a driver writes the OSCORE state a device asks for, with `std::io` errors: the form of
/// [`StateStore`] for Linux (every `MarkStore` is one).
pub trait MarkStore {
    /// Writes `state` (both values) durably; returns once it would survive a crash or power
    /// loss.
    fn store(&mut self, state: DurableState) -> io::Result<()>;
}

impl<T: MarkStore + ?Sized> crate::persist::StateStore for T {
    type Error = io::Error;

    fn store(&mut self, state: DurableState) -> io::Result<()> {
        MarkStore::store(self, state)
    }
}

/// A store that cannot store: every write fails, so a device with credentials sends nothing
/// that needs a sequence number and serves no protected request. The driver's default for
/// devices without credentials (which never ask for a write).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl MarkStore for NoStore {
    fn store(&mut self, _state: DurableState) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no sequence-number store: run the device with driver::run_with_store",
        ))
    }
}

/// Replaces the file at `path` with `contents` atomically and durably: a temporary file in the
/// same directory (`.{name}.tmp`), `fsync`, rename, `fsync` of the directory.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomically_in(&StdFs, path, contents)
}

/// [`write_atomically`] on the file system `fs`.
pub fn write_atomically_in<F: Fs>(fs: &F, path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = parent_dir(path).join(tmp_name);
    v6iot_durable::write_atomically(fs, path, &tmp, contents, None)
}

/// One device's OSCORE state in a file of its own, on the file system `F`.
#[derive(Debug, Clone)]
pub struct SequenceFile<F: Fs = StdFs> {
    fs: F,
    path: PathBuf,
}

impl SequenceFile {
    /// Opens the state file at `path` and reads the stored state: all zero when the file does
    /// not exist yet (a fresh context), replay floor 0 for a file that holds only a mark. A file
    /// that exists but does not hold one or two numbers is an error: the device must not guess,
    /// or it could reuse sequence numbers or accept replays.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<(SequenceFile, DurableState)> {
        SequenceFile::open_in(StdFs, path)
    }
}

impl<F: Fs> SequenceFile<F> {
    /// [`SequenceFile::open`] on the file system `fs`.
    pub fn open_in(fs: F, path: impl Into<PathBuf>) -> io::Result<(SequenceFile<F>, DurableState)> {
        let path = path.into();
        let read = fs.read(&path).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        });
        let state = match read {
            Ok(text) => parse_state(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not an OSCORE state (a decimal mark and optionally a replay floor)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => DurableState::default(),
            Err(e) => return Err(e),
        };
        Ok((SequenceFile { fs, path }, state))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<F: Fs> MarkStore for SequenceFile<F> {
    fn store(&mut self, state: DurableState) -> io::Result<()> {
        write_atomically_in(&self.fs, &self.path, format_state(state).as_bytes())
    }
}

/// The text of a state: `mark floor` and a newline.
pub fn format_state(state: DurableState) -> String {
    format!("{} {}\n", state.sender_mark, state.replay_floor)
}

/// Parses `mark [floor]` (decimal, white space around and between): a missing floor is 0.
pub fn parse_state(text: &str) -> Option<DurableState> {
    let mut numbers = text.split_whitespace();
    let sender_mark = numbers.next()?.parse().ok()?;
    let replay_floor = match numbers.next() {
        Some(n) => n.parse().ok()?,
        None => 0,
    };
    numbers.next().is_none().then_some(DurableState {
        sender_mark,
        replay_floor,
    })
}

/// Parses a decimal mark with optional surrounding white space.
pub fn parse_mark(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_stored_state_reads_back_and_a_missing_file_is_zero() {
        let dir = std::env::temp_dir().join(format!("v6iot-seq-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.seq");
        let _ = fs::remove_file(&path);
        let (mut file, state) = SequenceFile::open(&path).unwrap();
        assert_eq!(state, DurableState::default());
        let stored = DurableState {
            sender_mark: 4096,
            replay_floor: 17,
        };
        file.store(stored).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "4096 17\n");
        assert_eq!(SequenceFile::open(&path).unwrap().1, stored);
        for bad in ["garbage", "1 2 3", "1 x", ""] {
            fs::write(&path, bad).unwrap();
            assert!(SequenceFile::open(&path).is_err(), "{bad:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_with_only_a_mark_still_loads() {
        assert_eq!(
            parse_state("4096\n"),
            Some(DurableState {
                sender_mark: 4096,
                replay_floor: 0
            })
        );
        assert_eq!(parse_mark("4096\n"), Some(4096));
    }
}
