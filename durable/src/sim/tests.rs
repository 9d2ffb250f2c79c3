use std::io::Write as _;

use super::*;
use crate::{sync_parent, write_atomically};

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn create(fs: &SimFs, path: &str) -> SimFile {
    fs.open(p(path), &OpenOptions::new().write(true).create(true))
        .unwrap()
}

#[test]
fn a_power_loss_keeps_only_what_a_sync_covered() {
    let fs = SimFs::new();
    fs.create_dir_all(p("/d")).unwrap();
    let mut c = create(&fs, "/d/c");
    c.write_all(b"synced").unwrap();
    c.sync_data().unwrap();
    sync_parent(&fs, p("/d/c")).unwrap();
    c.write_all(b" and not").unwrap();
    // written, never synced: gone with its name
    create(&fs, "/d/a").write_all(b"a").unwrap();
    // synced, but its name never was
    let mut b = create(&fs, "/d/b");
    b.write_all(b"b").unwrap();
    b.sync_all().unwrap();
    // both durable, then renamed without a directory sync
    fs.rename(p("/d/c"), p("/d/e")).unwrap();
    assert_eq!(fs.read(p("/d/e")).unwrap(), b"synced and not");
    fs.restart(Crash::PowerLoss);
    assert_eq!(fs.read_dir(p("/d")).unwrap(), vec![OsString::from("c")]);
    assert_eq!(fs.read(p("/d/c")).unwrap(), b"synced");
    assert_eq!(fs.durable_contents(p("/d/c")).unwrap(), b"synced");
    assert!(!fs.exists(p("/d/a")).unwrap());
    assert!(fs.exists(p("/d")).unwrap());
    let s = fs.stats();
    assert_eq!((s.file_syncs, s.dir_syncs, s.crashes), (2, 1, 1));
}

#[test]
fn a_process_kill_keeps_everything_and_cuts_the_dying_write_in_half() {
    let fs = SimFs::new();
    let mut f = create(&fs, "/f");
    f.write_all(b"kept").unwrap();
    fs.stop_after(Some(0));
    assert!(f.write_all(b"1234").is_err());
    assert!(
        fs.down_at()
            .unwrap()
            .contains("step 3: write 4 bytes to /f")
    );
    // everything fails until the restart, reads too
    assert!(fs.read(p("/f")).is_err());
    assert!(f.sync_data().is_err());
    fs.restart(Crash::ProcessKill);
    assert_eq!(fs.read(p("/f")).unwrap(), b"kept12");
    assert!(
        f.write_all(b"x").is_err(),
        "a handle from before the crash is dead"
    );
    // under a power loss the same write leaves nothing (no sync)
    let fs = SimFs::new();
    let mut f = create(&fs, "/f");
    fs.stop_after(Some(0));
    assert!(f.write_all(b"1234").is_err());
    fs.restart(Crash::PowerLoss);
    assert!(!fs.exists(p("/f")).unwrap());
}

#[test]
fn locks_are_per_open_file_and_released_by_close_and_crash() {
    let fs = SimFs::new();
    let a = create(&fs, "/lock");
    let b = create(&fs, "/lock");
    assert!(a.try_lock().unwrap());
    assert!(a.try_lock().unwrap(), "again by the holder");
    assert!(!b.try_lock().unwrap());
    drop(a);
    assert!(b.try_lock().unwrap());
    fs.restart(Crash::ProcessKill);
    let c = create(&fs, "/lock");
    assert!(c.try_lock().unwrap(), "the dead process's lock is gone");
}

#[test]
fn files_read_write_and_truncate_like_std() {
    let fs = SimFs::new();
    assert_eq!(
        fs.open(p("/x"), &OpenOptions::new().read(true))
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    let mut f = fs
        .open(
            p("x"),
            &OpenOptions::new().read(true).write(true).create_new(true),
        )
        .unwrap();
    assert_eq!(
        fs.open(p("/x"), &OpenOptions::new().write(true).create_new(true))
            .unwrap_err()
            .kind(),
        io::ErrorKind::AlreadyExists
    );
    f.write_all(b"hello").unwrap();
    f.write_all_at(b"J", 0).unwrap();
    f.write_all_at(b"!", 7).unwrap();
    let mut buf = [0; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Jello\0\0!");
    f.set_len(3).unwrap();
    assert_eq!(fs.read(p("/./x")).unwrap(), b"Jel");
    let mut r = fs.open(p("/x"), &OpenOptions::new().read(true)).unwrap();
    let mut all = Vec::new();
    io::Read::read_to_end(&mut r, &mut all).unwrap();
    assert_eq!(all, b"Jel");
    assert!(r.write_all(b"no").is_err(), "read-only");
    let mut app = fs.open(p("/x"), &OpenOptions::new().append(true)).unwrap();
    app.write_all(b"ly").unwrap();
    app.write_all_at(b"?", 0).unwrap(); // O_APPEND: Linux appends positioned writes too
    assert_eq!(fs.read(p("/x")).unwrap(), b"Jelly?");
    fs.open(p("/x"), &OpenOptions::new().write(true).truncate(true))
        .unwrap();
    assert_eq!(fs.read(p("/x")).unwrap(), b"");
    fs.remove_file(p("/x")).unwrap();
    assert_eq!(
        fs.remove_file(p("/x")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert!(fs.read(p("/")).is_err());
}

/// A broken replacement: `skip` names the sync it leaves out.
fn replace(fs: &SimFs, contents: &[u8], skip: Option<&str>) -> io::Result<()> {
    if skip.is_none() {
        return write_atomically(fs, p("/d/state"), p("/d/.state.tmp"), contents, None);
    }
    let mut f = fs.open(
        p("/d/.state.tmp"),
        &OpenOptions::new().write(true).create(true).truncate(true),
    )?;
    f.write_all(contents)?;
    if skip != Some("file") {
        f.sync_all()?;
    }
    fs.rename(p("/d/.state.tmp"), p("/d/state"))?;
    if skip != Some("dir") {
        sync_parent(fs, p("/d/state"))?;
    }
    Ok(())
}

/// Writes versions 1..=3 with a crash at every step; after each power loss the file must hold
/// the last version reported written (or the one being written). Returns the runs (the crash
/// points and the run that completes) and the first violation.
fn every_crash_point(skip: Option<&str>) -> (u64, Option<String>) {
    let base = SimFs::new();
    base.create_dir_all(p("/d")).unwrap();
    replace(&base, b"0", None).unwrap();
    let mut broken = None;
    let points = base.crash_at_every_step(
        Crash::PowerLoss,
        |fs, n| {
            fs.stop_after(Some(n));
            let mut confirmed = b'0';
            for v in [b'1', b'2', b'3'] {
                if replace(fs, &[v], skip).is_err() {
                    break;
                }
                confirmed = v;
            }
            confirmed
        },
        |fs, confirmed, at| {
            let found = fs.read(p("/d/state")).unwrap_or_default();
            let next = confirmed + 1;
            let acceptable = found == [confirmed] || (at.is_some() && found == [next]);
            if !acceptable && broken.is_none() {
                broken = Some(format!(
                    "crash at {at:?}: found {found:?}, confirmed {}",
                    confirmed as char
                ));
            }
        },
    );
    (points, broken)
}

#[test]
fn write_atomically_survives_a_crash_at_every_step_and_a_missing_sync_does_not() {
    let (points, broken) = every_crash_point(None);
    assert_eq!(broken, None);
    // per version: create, write, fsync, rename, directory fsync; and the run that finishes
    assert_eq!(points, 3 * 5 + 1);
    let (_, broken) = every_crash_point(Some("file"));
    assert!(broken.unwrap().contains("found []"), "an empty file");
    let (_, broken) = every_crash_point(Some("dir"));
    assert!(broken.unwrap().contains("confirmed"), "the old version");
}

#[test]
fn a_durable_file_survives_a_power_loss_and_is_not_written_over_a_directory() {
    let fs = SimFs::with_durable_file(p("/a/b/state"), b"64 0\n").unwrap();
    assert_eq!(fs.durable_contents(p("/a/b/state")).unwrap(), b"64 0\n");
    fs.restart(Crash::PowerLoss);
    assert_eq!(fs.read(p("/a/b/state")).unwrap(), b"64 0\n");
    assert!(SimFs::with_durable_file(p("/"), b"x").is_err());
}

#[test]
fn a_fork_is_independent() {
    let fs = SimFs::new();
    create(&fs, "/a").write_all(b"1").unwrap();
    let copy = fs.fork();
    create(&copy, "/b");
    assert!(!fs.exists(p("/b")).unwrap());
    assert_eq!(copy.read(p("/a")).unwrap(), b"1");
    assert_eq!(copy.stats().steps, 1);
    fs.create_dir_all(p("/x/y")).unwrap();
    let mut names = fs.read_dir(p("/")).unwrap();
    names.sort();
    assert_eq!(names, vec![OsString::from("a"), OsString::from("x")]);
}
