//! Durable storage of OSCORE sequence-number marks (RFC 8613 Appendix B.1.1): the file I/O
//! behind [`Device::mark_to_persist`](crate::coap::Device::mark_to_persist).
//!
//! The sans-IO core names a mark; a [`MarkStore`] writes it so that it survives a crash (write
//! a temporary file, `fsync` it, rename it over the old one, `fsync` the directory) and only then
//! does the driver confirm it with [`Device::persisted`](crate::coap::Device::persisted). A
//! crash at any point leaves either the old mark or the new one, never a torn file; both are at
//! or above every sequence number used, because none was used at or above the confirmed mark.
//!
//! [`SequenceFile`] keeps one device's mark in a file of its own: the decimal number and a
//! newline.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Where a driver writes the marks a device asks for.
pub trait MarkStore {
    /// Writes `mark` durably; returns once it would survive a crash or power loss.
    fn store(&mut self, mark: u64) -> io::Result<()>;
}

/// A store that cannot store: every mark fails, so a device with credentials sends nothing
/// that needs a sequence number. The driver's default for devices without credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl MarkStore for NoStore {
    fn store(&mut self, _mark: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no sequence-number store: run the device with driver::run_with_store",
        ))
    }
}

/// Replaces the file at `path` with `contents` atomically and durably: a temporary file in the
/// same directory, `fsync`, rename, `fsync` of the directory.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

/// One device's mark in a file of its own.
#[derive(Debug, Clone)]
pub struct SequenceFile {
    path: PathBuf,
}

impl SequenceFile {
    /// Opens the mark file at `path` and reads the stored mark: `0` when the file does not exist
    /// yet (a fresh context). A file that exists but does not hold a number is an error: the
    /// device must not guess, or it could reuse sequence numbers.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<(SequenceFile, u64)> {
        let path = path.into();
        let mark = match fs::read_to_string(&path) {
            Ok(text) => parse_mark(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a sequence-number mark (one decimal number)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok((SequenceFile { path }, mark))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl MarkStore for SequenceFile {
    fn store(&mut self, mark: u64) -> io::Result<()> {
        write_atomically(&self.path, format!("{mark}\n").as_bytes())
    }
}

/// Parses a decimal mark with optional surrounding white space.
pub fn parse_mark(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_mark_reads_back_and_a_missing_file_is_zero() {
        let dir = std::env::temp_dir().join(format!("v6iot-seq-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.seq");
        let _ = fs::remove_file(&path);
        let (mut file, mark) = SequenceFile::open(&path).unwrap();
        assert_eq!(mark, 0);
        file.store(4096).unwrap();
        assert_eq!(SequenceFile::open(&path).unwrap().1, 4096);
        fs::write(&path, "garbage").unwrap();
        assert!(SequenceFile::open(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
