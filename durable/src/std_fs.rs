//! [`StdFs`]: the durable stores' file operations on `std::fs`, one system call each.

use std::ffi::OsString;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::{Fs, FsDir, FsFile, OpenOptions};

/// The operating system's file system (`std::fs`). Zero-sized; each method is the call the
/// stores made before they were generic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdFs;

impl Fs for StdFs {
    type File = File;
    type Dir = File;

    #[inline]
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        let mut o = fs::OpenOptions::new();
        o.read(options.read)
            .write(options.write)
            .append(options.append)
            .truncate(options.truncate)
            .create(options.create)
            .create_new(options.create_new);
        if let Some(mode) = options.mode {
            o.mode(mode);
        }
        o.open(path)
    }

    #[inline]
    fn open_dir(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    #[inline]
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    #[inline]
    fn exists(&self, path: &Path) -> io::Result<bool> {
        fs::exists(path)
    }

    #[inline]
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    #[inline]
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    #[inline]
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
}

impl FsFile for File {
    #[inline]
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    #[inline]
    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    #[inline]
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    #[inline]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    #[inline]
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }

    #[inline]
    fn try_lock(&self) -> io::Result<bool> {
        match File::try_lock(self) {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl FsDir for File {
    #[inline]
    fn sync(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_std_file_system_does_what_the_stores_ask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let fs = StdFs;
        let mut f = fs
            .open(
                &path,
                &OpenOptions::new().append(true).create(true).mode(0o600),
            )
            .unwrap();
        io::Write::write_all(&mut f, b"hello").unwrap();
        f.sync_data().unwrap();
        let mut two = [0; 2];
        f.read_exact_at(&mut two, 0).unwrap_err(); // append-only handle: not readable
        let r = fs
            .open(&path, &OpenOptions::new().read(true).write(true))
            .unwrap();
        r.write_all_at(b"J", 0).unwrap();
        r.read_exact_at(&mut two, 3).unwrap();
        assert_eq!(&two, b"lo");
        assert!(FsFile::try_lock(&f).unwrap());
        assert!(
            !FsFile::try_lock(&r).unwrap(),
            "a second open file does not get the lock"
        );
        drop(f);
        assert!(FsFile::try_lock(&r).unwrap(), "closing releases it");
        f_set_len(&fs, &path);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        crate::write_atomically(&fs, &path, &dir.path().join(".f.tmp"), b"new", None).unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"new");
        let mut names = fs.read_dir(dir.path()).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("f")]);
        fs.rename(&path, &dir.path().join("g")).unwrap();
        assert!(!fs.exists(&path).unwrap());
        fs.remove_file(&dir.path().join("g")).unwrap();
        fs.open_dir(dir.path()).unwrap().sync().unwrap();
    }

    fn f_set_len(fs: &StdFs, path: &Path) {
        let f = fs.open(path, &OpenOptions::new().write(true)).unwrap();
        f.set_len(2).unwrap();
        f.sync_all().unwrap();
        assert_eq!(fs.read(path).unwrap(), b"Je");
    }
}
