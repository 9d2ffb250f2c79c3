//! [`SimFs`]: an in-memory disk that knows what was synced, for crash tests.
//!
//! # The model
//!
//! - A file (inode) has its current bytes and its synced bytes. [`FsFile::sync_data`] and
//!   [`FsFile::sync_all`] make the current bytes (and length) the synced ones.
//! - A directory has its current entries (name → inode) and its synced entries.
//!   [`FsDir::sync`] makes the current ones the synced ones. Creating, renaming and removing
//!   a file change only the current entries: syncing the *file* does not make its name
//!   durable (POSIX promises no more; ext4 often does more, which is why a real disk hides
//!   the bug).
//! - Every call that changes something (a create, a truncation, a write, `set_len`, a sync, a
//!   rename, a removal, creating directories) is a *step*. [`SimFs::stop_after`]`(n)` lets n
//!   more steps happen; the next one kills the process: it does not happen (a write is cut
//!   in half instead: the first half of its bytes lands), and every call after fails until
//!   [`SimFs::restart`]. Reads are not steps, so a reader racing a writer does not move the
//!   crash point.
//! - [`SimFs::restart`] with [`Crash::PowerLoss`] sets every directory back to its synced
//!   entries and every file to its synced bytes; with [`Crash::ProcessKill`] everything
//!   written stays (the page cache survives `kill -9`). Either way handles opened before are
//!   dead and locks are released.
//!
//! Simplifications: directories made by [`Fs::create_dir_all`] are durable at once; permission
//! bits are not kept; paths are made absolute (a relative path is taken from `/`), `..` is
//! resolved by name.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Fs, FsDir, FsFile, OpenOptions, parent_dir, sync_parent};

/// What a crash keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Power loss: only what a sync covered (file bytes, directory entries) survives.
    PowerLoss,
    /// `kill -9`: everything written survives (the kernel still had it).
    ProcessKill,
}

/// Counters of a [`SimFs`] since it was made (or forked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Steps taken (calls that change something).
    pub steps: u64,
    /// File syncs (`sync_data`, `sync_all`).
    pub file_syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
    /// Restarts.
    pub crashes: u64,
}

/// An in-memory disk that loses what was not synced when it crashes. Clones share the disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Dir {
    entries: BTreeMap<OsString, u64>,
    synced: BTreeMap<OsString, u64>,
}

#[derive(Debug, Clone)]
struct Disk {
    inodes: BTreeMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    next_inode: u64,
    next_handle: u64,
    /// Bumped by every restart: handles of an older generation are dead.
    generation: u64,
    /// Steps still allowed before the process dies (`None`: no limit).
    budget: Option<u64>,
    /// The step at which the process died, described.
    down: Option<String>,
    /// Inode → the handle holding its lock.
    locks: BTreeMap<u64, u64>,
    stats: SimStats,
}

impl Default for Disk {
    fn default() -> Disk {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        Disk {
            inodes: BTreeMap::new(),
            dirs,
            next_inode: 1,
            next_handle: 1,
            generation: 0,
            budget: None,
            down: None,
            locks: BTreeMap::new(),
            stats: SimStats::default(),
        }
    }
}

fn down_error(at: &str) -> io::Error {
    io::Error::other(format!("simulated crash (the process died at: {at})"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// Writes `buf` into `data` at `at`, zero-filling a gap.
fn write_at(data: &mut Vec<u8>, at: usize, buf: &[u8]) {
    let end = at.saturating_add(buf.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    if let Some(dst) = data.get_mut(at..end) {
        dst.copy_from_slice(buf);
    }
}

/// `path` made absolute with `.` and `..` resolved.
fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path prefixes are not modelled",
                ));
            }
        }
    }
    Ok(out)
}

/// The directory and the name of the file at `path`.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let path = normalize(path)?;
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_os_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the root is not a file",
        )),
    }
}

impl Disk {
    fn alive(&self) -> io::Result<()> {
        match &self.down {
            Some(at) => Err(down_error(at)),
            None => Ok(()),
        }
    }

    /// Takes a step, or dies at it: `Ok(false)` means the process dies at this step (a write
    /// may still land half of its bytes; then the caller returns [`Disk::died`]).
    fn step(&mut self, what: impl FnOnce() -> String) -> io::Result<bool> {
        self.alive()?;
        if self.budget == Some(0) {
            self.down = Some(format!("step {}: {}", self.stats.steps + 1, what()));
            return Ok(false);
        }
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        self.stats.steps += 1;
        Ok(true)
    }

    fn died(&self) -> io::Error {
        down_error(self.down.as_deref().unwrap_or("?"))
    }

    fn dir(&self, path: &Path) -> io::Result<&Dir> {
        self.dirs.get(path).ok_or_else(|| not_found(path))
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| not_found(path))
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other("internal: a handle without its inode"))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?
            .entries
            .get(&name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn restart(&mut self, crash: Crash) {
        if crash == Crash::PowerLoss {
            for dir in self.dirs.values_mut() {
                dir.entries = dir.synced.clone();
            }
            for inode in self.inodes.values_mut() {
                inode.data = inode.synced.clone();
            }
        }
        let live: std::collections::BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.entries.values().chain(d.synced.values()).copied())
            .collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        self.generation += 1;
        self.budget = None;
        self.down = None;
        self.locks.clear();
        self.stats.crashes += 1;
    }
}

impl SimFs {
    /// An empty disk holding only the directory `/`.
    #[must_use]
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets `steps` more steps happen; the process dies at the one after (`None`: no limit).
    pub fn stop_after(&self, steps: Option<u64>) {
        self.disk().budget = steps;
    }

    /// The step at which the process died, described (`None` while it runs).
    #[must_use]
    pub fn down_at(&self) -> Option<String> {
        self.disk().down.clone()
    }

    /// Crashes (whether or not the process already died at a step) and starts again with what
    /// `crash` keeps: every handle opened before is dead, locks are released, no step limit.
    pub fn restart(&self, crash: Crash) {
        self.disk().restart(crash);
    }

    /// An independent copy of this disk (current and synced state), for running many crash
    /// scenarios from one prepared state. Its counters start at zero.
    #[must_use]
    pub fn fork(&self) -> SimFs {
        let mut copy = self.disk().clone();
        copy.stats = SimStats::default();
        copy.budget = None;
        copy.locks.clear();
        copy.generation += 1;
        SimFs {
            disk: Arc::new(Mutex::new(copy)),
        }
    }

    /// A fresh disk holding `contents` at `path` (its directories made), durable: the file and
    /// its directory entry synced — a starting point written without the store under test, so
    /// that a broken store cannot weaken it.
    ///
    /// # Errors
    ///
    /// When `path` cannot be a file (it names `/` or a directory).
    pub fn with_durable_file(path: &Path, contents: &[u8]) -> io::Result<SimFs> {
        let fs = SimFs::new();
        fs.create_dir_all(parent_dir(path))?;
        let mut file = fs.open(path, &OpenOptions::new().write(true).create(true))?;
        io::Write::write_all(&mut file, contents)?;
        file.sync_all()?;
        sync_parent(&fs, path)?;
        Ok(fs)
    }

    /// Crashes a workload at every step it takes: for `steps` = 0, 1, 2 …, `workload(disk,
    /// steps)` runs on a fresh [`fork`](SimFs::fork) of this disk and calls
    /// [`stop_after`](SimFs::stop_after)`(Some(steps))` where the steps to crash at begin (after
    /// its setup); the disk is then [restarted](SimFs::restart) after `crash` and `check(disk,
    /// what the workload returned, the step it died at)` looks at what survived. Ends after the
    /// first run in which the process did not die (`check` then sees `None`); returns the number
    /// of runs: the crash points and the run that completed.
    pub fn crash_at_every_step<T>(
        &self,
        crash: Crash,
        mut workload: impl FnMut(&SimFs, u64) -> T,
        mut check: impl FnMut(&SimFs, T, Option<&str>),
    ) -> u64 {
        let mut steps = 0;
        loop {
            let fs = self.fork();
            let outcome = workload(&fs, steps);
            let at = fs.down_at();
            fs.restart(crash);
            check(&fs, outcome, at.as_deref());
            if at.is_none() {
                return steps + 1;
            }
            steps += 1;
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        self.disk().stats
    }

    /// The synced bytes of the file at `path` (what a power loss now would leave), if its
    /// name is durable too.
    #[must_use]
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk();
        let (dir, name) = split(path).ok()?;
        let ino = disk.dirs.get(&dir)?.synced.get(&name)?;
        disk.inodes.get(ino).map(|i| i.synced.clone())
    }
}

impl Fs for SimFs {
    type File = SimFile;
    type Dir = SimDir;

    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<SimFile> {
        let mut disk = self.disk();
        disk.alive()?;
        let (dir, name) = split(path)?;
        let existing = disk.dir(&dir)?.entries.get(&name).copied();
        let ino = match existing {
            Some(_) if options.create_new => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists", path.display()),
                ));
            }
            Some(ino) => {
                if options.truncate {
                    if !disk.step(|| format!("truncate {}", path.display()))? {
                        return Err(disk.died());
                    }
                    disk.inode(ino)?.data.clear();
                }
                ino
            }
            None if options.create || options.create_new => {
                if !disk.step(|| format!("create {}", path.display()))? {
                    return Err(disk.died());
                }
                let ino = disk.next_inode;
                disk.next_inode += 1;
                disk.inodes.insert(ino, Inode::default());
                disk.dir_mut(&dir)?.entries.insert(name, ino);
                ino
            }
            None => return Err(not_found(path)),
        };
        let handle = disk.next_handle;
        disk.next_handle += 1;
        Ok(SimFile {
            fs: self.clone(),
            ino,
            handle,
            generation: disk.generation,
            pos: 0,
            read: options.read,
            write: options.write || options.append,
            append: options.append,
            name: path.display().to_string(),
        })
    }

    fn open_dir(&self, path: &Path) -> io::Result<SimDir> {
        let disk = self.disk();
        disk.alive()?;
        let path = normalize(path)?;
        disk.dir(&path)?;
        Ok(SimDir {
            fs: self.clone(),
            path,
            generation: disk.generation,
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        disk.alive()?;
        if disk.dirs.contains_key(&normalize(path)?) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{}: a directory", path.display()),
            ));
        }
        let ino = disk.lookup(path)?;
        Ok(disk.inode(ino)?.data.clone())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let disk = self.disk();
        disk.alive()?;
        let path = normalize(path)?;
        let mut names: Vec<OsString> = disk.dir(&path)?.entries.keys().cloned().collect();
        for sub in disk.dirs.keys() {
            if sub.parent() == Some(path.as_path())
                && let Some(name) = sub.file_name()
            {
                names.push(name.to_os_string());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let disk = self.disk();
        disk.alive()?;
        if disk.dirs.contains_key(&normalize(path)?) {
            return Ok(true);
        }
        let (dir, name) = split(path)?;
        Ok(disk
            .dirs
            .get(&dir)
            .is_some_and(|d| d.entries.contains_key(&name)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.alive()?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let ino = disk.lookup(from)?;
        disk.dir(&to_dir)?;
        if !disk.step(|| format!("rename {} to {}", from.display(), to.display()))? {
            return Err(disk.died());
        }
        disk.dir_mut(&from_dir)?.entries.remove(&from_name);
        disk.dir_mut(&to_dir)?.entries.insert(to_name, ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.alive()?;
        let (dir, name) = split(path)?;
        disk.lookup(path)?;
        if !disk.step(|| format!("remove {}", path.display()))? {
            return Err(disk.died());
        }
        disk.dir_mut(&dir)?.entries.remove(&name);
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.alive()?;
        let path = normalize(path)?;
        let missing: Vec<PathBuf> = path
            .ancestors()
            .filter(|a| !disk.dirs.contains_key(*a))
            .map(Path::to_path_buf)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(file) = missing.iter().find(|d| disk.lookup(d).is_ok()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: a file", file.display()),
            ));
        }
        if !disk.step(|| format!("create directory {}", path.display()))? {
            return Err(disk.died());
        }
        for d in missing {
            disk.dirs.insert(d, Dir::default());
        }
        Ok(())
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    ino: u64,
    handle: u64,
    generation: u64,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
    name: String,
}

impl SimFile {
    /// The disk, if this handle is still alive (the process did not die since it was opened).
    fn disk(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.fs.disk();
        disk.alive()?;
        if disk.generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: a handle from before a crash",
                self.name
            )));
        }
        Ok(disk)
    }

    fn need(&self, allowed: bool, what: &str) -> io::Result<()> {
        if allowed {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: not open for {what}", self.name),
            ))
        }
    }

    /// Writes `buf` at `at` (or at the end for an append handle, as Linux does even for
    /// positioned writes); returns where it ended.
    fn write_bytes(&self, buf: &[u8], at: u64, what: &str) -> io::Result<u64> {
        self.need(self.write, "writing")?;
        let mut disk = self.disk()?;
        let lands = disk.step(|| format!("{what} {} bytes to {}", buf.len(), self.name))?;
        let inode = disk.inode(self.ino)?;
        let at = if self.append {
            inode.data.len()
        } else {
            to_usize(at)?
        };
        if lands {
            write_at(&mut inode.data, at, buf);
            Ok((at + buf.len()) as u64)
        } else {
            let half = buf.get(..buf.len() / 2).unwrap_or_default();
            write_at(&mut inode.data, at, half);
            Err(disk.died())
        }
    }

    fn sync(&self, what: &str) -> io::Result<()> {
        let mut disk = self.disk()?;
        if !disk.step(|| format!("{what} {}", self.name))? {
            return Err(disk.died());
        }
        disk.stats.file_syncs += 1;
        let inode = disk.inode(self.ino)?;
        inode.synced = inode.data.clone();
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut disk = self.fs.disk();
        if disk.generation == self.generation && disk.locks.get(&self.ino) == Some(&self.handle) {
            disk.locks.remove(&self.ino);
        }
    }
}

impl io::Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.need(self.read, "reading")?;
        let mut disk = self.disk()?;
        let data = &disk.inode(self.ino)?.data;
        let from = to_usize(self.pos)?.min(data.len());
        let n = buf.len().min(data.len() - from);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), data.get(from..from + n)) {
            dst.copy_from_slice(src);
        }
        drop(disk);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pos = self.write_bytes(buf, self.pos, "write")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for SimFile {
    fn sync_data(&self) -> io::Result<()> {
        self.sync("fdatasync")
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync("fsync")
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.need(self.write, "writing")?;
        let mut disk = self.disk()?;
        if !disk.step(|| format!("set_len({len}) of {}", self.name))? {
            return Err(disk.died());
        }
        let len = to_usize(len)?;
        disk.inode(self.ino)?.data.resize(len, 0);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.need(self.read, "reading")?;
        let mut disk = self.disk()?;
        let data = &disk.inode(self.ino)?.data;
        let from = to_usize(offset)?;
        let src = data
            .get(from..from.saturating_add(buf.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_bytes(buf, offset, "pwrite").map(drop)
    }

    fn try_lock(&self) -> io::Result<bool> {
        let mut disk = self.disk()?;
        match disk.locks.get(&self.ino) {
            Some(&holder) => Ok(holder == self.handle),
            None => {
                disk.locks.insert(self.ino, self.handle);
                Ok(true)
            }
        }
    }
}

/// An open directory of a [`SimFs`].
#[derive(Debug)]
pub struct SimDir {
    fs: SimFs,
    path: PathBuf,
    generation: u64,
}

impl FsDir for SimDir {
    fn sync(&self) -> io::Result<()> {
        let mut disk = self.fs.disk();
        disk.alive()?;
        if disk.generation != self.generation {
            return Err(io::Error::other("a directory handle from before a crash"));
        }
        if !disk.step(|| format!("fsync of directory {}", self.path.display()))? {
            return Err(disk.died());
        }
        disk.stats.dir_syncs += 1;
        let dir = disk.dir_mut(&self.path)?;
        dir.synced = dir.entries.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
