//! The file operations of v6iot's durable stores, and a model of a disk that crashes.
//!
//! Three stores promise that what they reported durable survives a crash: the cloud bridge's
//! outbox, the edge's command journal and the OSCORE state files (the SDK's `store`, the
//! simulator's fleet file). A `kill -9` test cannot check that promise: the page cache outlives
//! the process, so a store that forgot an `fsync` passes. These stores therefore do their file
//! I/O through [`Fs`], generic (static dispatch), and
//!
//! - [`StdFs`] is `std::fs`: every method is the one system call the store made before (no
//!   extra syscall, no dynamic dispatch) — what production runs;
//! - [`SimFs`] keeps an in-memory disk that knows what was synced. A test lets it crash at the
//!   n-th step and restarts it as after a power loss ([`Crash::PowerLoss`]: file contents and
//!   directory entries fall back to what the last `fsync` of the file or of its directory
//!   covered) or after `kill -9` ([`Crash::ProcessKill`]: everything written stays). Running a
//!   workload once per step enumerates every crash point; a store with a missing sync loses
//!   something at one of them.
//!
//! [`write_atomically`] is the replace-a-file pattern two of the stores share (temporary file,
//! `fsync`, rename, `fsync` of the directory).
//!
//! I/O boundary: [`StdFs`] calls the operating system; [`SimFs`] and the rest are plain code.

mod sim;
mod std_fs;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;

pub use sim::{Crash, SimFs, SimStats};
pub use std_fs::StdFs;

/// A file system: the operations the durable stores use. Paths name files; directories are
/// opened only to be synced ([`Fs::open_dir`]).
pub trait Fs: Clone + fmt::Debug + Send + Sync + 'static {
    /// An open file.
    type File: FsFile;
    /// An open directory (to sync its entries).
    type Dir: FsDir;

    /// Opens the file at `path` as `options` say.
    ///
    /// # Errors
    ///
    /// As `std::fs::OpenOptions::open`: missing file or directory, an existing file with
    /// `create_new`, permissions, …
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<Self::File>;

    /// Opens the directory at `path`, to sync it.
    ///
    /// # Errors
    ///
    /// When it does not exist or cannot be opened.
    fn open_dir(&self, path: &Path) -> io::Result<Self::Dir>;

    /// The whole content of the file at `path`.
    ///
    /// # Errors
    ///
    /// As `std::fs::read` (`NotFound` when it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// The names of the entries of the directory at `path`.
    ///
    /// # Errors
    ///
    /// As `std::fs::read_dir`.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// Whether something exists at `path`.
    ///
    /// # Errors
    ///
    /// When that cannot be found out (permissions).
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Renames `from` to `to`, replacing `to` if it exists (durable once the directory is
    /// synced).
    ///
    /// # Errors
    ///
    /// As `std::fs::rename`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path` (durable once the directory is synced).
    ///
    /// # Errors
    ///
    /// As `std::fs::remove_file` (`NotFound` when it does not exist).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Creates the directory at `path` and its missing parents.
    ///
    /// # Errors
    ///
    /// As `std::fs::create_dir_all`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
}

/// An open file of an [`Fs`].
pub trait FsFile: io::Read + io::Write + fmt::Debug + Send + 'static {
    /// `fdatasync`: the file's data (and its length) survive a crash.
    ///
    /// # Errors
    ///
    /// When the disk could not write it: then nothing is known about what is durable.
    fn sync_data(&self) -> io::Result<()>;

    /// `fsync`: data and metadata survive a crash.
    ///
    /// # Errors
    ///
    /// As [`sync_data`](Self::sync_data).
    fn sync_all(&self) -> io::Result<()>;

    /// Truncates or extends the file to `len` bytes.
    ///
    /// # Errors
    ///
    /// As `std::fs::File::set_len`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the file ends before, or a read error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// A write error (then part of `buf` may be written).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Takes an exclusive advisory lock (`flock`) without waiting: `false` when another open
    /// file holds it. Released when the file is closed.
    ///
    /// # Errors
    ///
    /// When locking is not possible at all.
    fn try_lock(&self) -> io::Result<bool>;
}

/// An open directory of an [`Fs`].
pub trait FsDir: fmt::Debug + Send + 'static {
    /// `fsync` of the directory: entries created, renamed or removed in it survive a crash.
    ///
    /// # Errors
    ///
    /// When the disk could not write it.
    fn sync(&self) -> io::Result<()>;
}

/// How to open a file (the part of `std::fs::OpenOptions` the stores use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // mirrors std::fs::OpenOptions
pub struct OpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Every write goes to the end.
    pub append: bool,
    /// Cut the file to zero length.
    pub truncate: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Create the file; fail if it exists.
    pub create_new: bool,
    /// Permission bits of a created file (Unix), before the umask; `None` is 0o666.
    pub mode: Option<u32>,
}

impl OpenOptions {
    /// Nothing set.
    #[must_use]
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Sets [`read`](Self::read).
    #[must_use]
    pub fn read(mut self, on: bool) -> Self {
        self.read = on;
        self
    }

    /// Sets [`write`](Self::write).
    #[must_use]
    pub fn write(mut self, on: bool) -> Self {
        self.write = on;
        self
    }

    /// Sets [`append`](Self::append).
    #[must_use]
    pub fn append(mut self, on: bool) -> Self {
        self.append = on;
        self
    }

    /// Sets [`truncate`](Self::truncate).
    #[must_use]
    pub fn truncate(mut self, on: bool) -> Self {
        self.truncate = on;
        self
    }

    /// Sets [`create`](Self::create).
    #[must_use]
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Sets [`create_new`](Self::create_new).
    #[must_use]
    pub fn create_new(mut self, on: bool) -> Self {
        self.create_new = on;
        self
    }

    /// Sets [`mode`](Self::mode).
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// The directory holding `path` (`.` for a bare file name).
#[must_use]
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Syncs the directory holding `path`, so that a file created, renamed or removed there stays
/// so after a crash.
///
/// # Errors
///
/// When the directory cannot be opened or synced.
pub fn sync_parent<F: Fs>(fs: &F, path: &Path) -> io::Result<()> {
    fs.open_dir(parent_dir(path))?.sync()
}

/// Replaces the file at `path` with `contents`, atomically and durably: `contents` go to `tmp`
/// (created or truncated, with `mode` when given; it must be in the same directory), which is
/// synced, renamed over `path`, and the directory synced. A crash at any point leaves the old
/// file or the new one, whole.
///
/// # Errors
///
/// When a step fails; `path` then still holds the old content (`tmp` may be left behind).
pub fn write_atomically<F: Fs>(
    fs: &F,
    path: &Path,
    tmp: &Path,
    contents: &[u8],
    mode: Option<u32>,
) -> io::Result<()> {
    let mut options = OpenOptions::new().write(true).create(true).truncate(true);
    options.mode = mode;
    {
        let mut file = fs.open(tmp, &options)?;
        io::Write::write_all(&mut file, contents)?;
        file.sync_all()?;
    }
    fs.rename(tmp, path)?;
    sync_parent(fs, path)
}
