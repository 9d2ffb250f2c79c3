//! The command queue's journal on disk: one JSON line per [`JournalEntry`], so commands for
//! queue-mode devices survive a restart.
//!
//! - [`CommandJournal::open`] reads what is pending and rewrites the file with only that.
//! - [`CommandJournal::write`] appends a [`JournalBatch`]'s entries and syncs them
//!   (`fdatasync`); when the batch carries a rewrite (the downlink asks for one when dead lines
//!   outweigh live ones) it then replaces the file with only the live commands.
//! - Every rewrite goes to `commands.jsonl.tmp` (mode 0600), is synced, renamed over the
//!   journal, and the directory is synced, so a crash leaves the old file or the new one.
//! - A failed append is cut off again (the file is truncated to its last good length and
//!   synced), so the next append does not continue a torn line.
//! - [`JournalWriter`] runs the writes on tokio's blocking pool, one batch at a time: the data
//!   path never waits on the disk, and a command waits for its batch (see
//!   [`crate::ingress::downlink`]) instead.
//! - The file I/O goes through [`v6iot_durable::Fs`]: [`StdFs`] by default, the crash model
//!   ([`v6iot_durable::SimFs`]) in `tests/journal_power_loss.rs`.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use v6iot_durable::{Fs, FsFile as _, OpenOptions, StdFs};

use crate::ingress::{DownlinkCommand, JournalBatch, JournalEntry, JournalWritten};

/// An open journal, on the file system `F`.
#[derive(Debug)]
pub struct CommandJournal<F: Fs = StdFs> {
    fs: F,
    path: PathBuf,
    file: F::File,
    pending: Vec<DownlinkCommand>,
    /// Bytes up to the end of the last synced append.
    good_len: u64,
    /// An append failed and its bytes may still be there: cut before the next.
    torn: bool,
}

impl CommandJournal {
    /// Opens (or creates) the journal at `path`, reads what is pending, and rewrites the file with
    /// only that. Unreadable lines (a torn last write) are skipped and logged.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or the new one written, synced and renamed.
    pub fn open(path: &Path) -> io::Result<CommandJournal> {
        CommandJournal::open_in(StdFs, path)
    }
}

impl<F: Fs> CommandJournal<F> {
    /// [`CommandJournal::open`] on the file system `fs`.
    ///
    /// # Errors
    ///
    /// As [`CommandJournal::open`].
    pub fn open_in(fs: F, path: &Path) -> io::Result<CommandJournal<F>> {
        if let Some(dir) = path.parent() {
            fs.create_dir_all(dir)?;
        }
        let mut queued: Vec<DownlinkCommand> = Vec::new();
        let mut done: HashSet<(String, String)> = HashSet::new();
        match fs.open(path, &OpenOptions::new().read(true)) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
                    let line = line?;
                    match serde_json::from_slice::<JournalEntry>(&line) {
                        Ok(JournalEntry::Queued(c)) => queued.push(c),
                        Ok(JournalEntry::Done { device, req }) => {
                            done.insert((device, req));
                        }
                        Err(e) => {
                            tracing::warn!(line = n + 1, error = %e, "skipping an unreadable command journal line")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        queued.retain(|c| !done.contains(&(c.device.clone(), c.req.clone())));
        let good_len = replace_file(&fs, path, &queued)?;
        let file = fs.open(path, &OpenOptions::new().append(true))?;
        Ok(CommandJournal {
            fs,
            path: path.to_owned(),
            file,
            pending: queued,
            good_len,
            torn: false,
        })
    }

    /// The commands that were queued and not finished when the journal was opened.
    pub fn pending(&mut self) -> Vec<DownlinkCommand> {
        std::mem::take(&mut self.pending)
    }

    /// Writes `batch`: its entries appended and synced, then its rewrite if it has one. Returns
    /// the outcome for [`crate::ingress::Ingress::handle_journal_written`]; a failed rewrite is
    /// logged and leaves the journal as appended (`rewritten: false`).
    ///
    /// # Errors
    ///
    /// When the entries could not be appended and synced (then the batch is not durable).
    pub fn write(&mut self, batch: &JournalBatch) -> io::Result<JournalWritten> {
        self.append(&batch.entries)?;
        let rewritten = match &batch.rewrite {
            None => false,
            Some(live) => match self.rewrite(live) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "command journal rewrite failed; it goes on growing until the next one");
                    false
                }
            },
        };
        Ok(JournalWritten::Durable { rewritten })
    }

    /// Appends `entries` and syncs (nothing to do when empty).
    fn append(&mut self, entries: &[JournalEntry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.torn {
            self.cut_back()?;
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.good_len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                if let Err(cut) = self.cut_back() {
                    tracing::warn!(path = %self.path.display(), error = %cut,
                        "cannot cut a failed command journal append off (again before the next)");
                }
                Err(e)
            }
        }
    }

    /// Truncates the file to its last good length, synced.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.good_len)?;
        self.file.sync_all()?;
        self.torn = false;
        Ok(())
    }

    /// Replaces the journal with `live` (each as a `queued` line).
    fn rewrite(&mut self, live: &[DownlinkCommand]) -> io::Result<()> {
        self.good_len = replace_file(&self.fs, &self.path, live)?;
        // The rename is done: from here on appends must go to the new file.
        self.file = self.fs.open(&self.path, &OpenOptions::new().append(true))?;
        self.torn = false;
        Ok(())
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `commands` as `queued` lines to `{path}.tmp` (mode 0600), syncs it, renames it to
/// `path` and syncs the directory. Returns the file's length.
fn replace_file<F: Fs>(fs: &F, path: &Path, commands: &[DownlinkCommand]) -> io::Result<u64> {
    let mut buf = Vec::new();
    for c in commands {
        serde_json::to_writer(&mut buf, &JournalEntry::Queued(c.clone()))
            .map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    v6iot_durable::write_atomically(fs, path, &tmp, &buf, Some(0o600))?;
    Ok(buf.len() as u64)
}

/// The journal's writer thread side: runs [`CommandJournal::write`] on tokio's blocking pool,
/// one batch at a time, and hands the outcome back to the loop.
#[derive(Debug)]
pub struct JournalWriter<F: Fs = StdFs> {
    idle: Option<CommandJournal<F>>,
    running: Option<tokio::task::JoinHandle<Done<F>>>,
}

type Done<F> = (CommandJournal<F>, u64, io::Result<JournalWritten>);

/// The writer's task ended without handing the journal back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterGone {
    /// The write panicked.
    #[error("the command journal's writer stopped: {0}")]
    Panicked(#[from] tokio::task::JoinError),
    /// The journal was not there to hand back.
    #[error("the command journal's writer has no journal")]
    Lost,
}

impl<F: Fs> JournalWriter<F> {
    /// A writer for `journal`.
    pub fn new(journal: CommandJournal<F>) -> JournalWriter<F> {
        JournalWriter {
            idle: Some(journal),
            running: None,
        }
    }

    /// Whether a new batch can start.
    pub fn is_idle(&self) -> bool {
        self.idle.is_some()
    }

    /// Starts writing `batch` on the blocking pool. Call only when [`is_idle`](Self::is_idle);
    /// otherwise the batch is reported failed at once.
    pub fn start(&mut self, batch: JournalBatch) {
        match self.idle.take() {
            Some(mut journal) => {
                self.running = Some(tokio::task::spawn_blocking(move || {
                    let result = journal.write(&batch);
                    (journal, batch.id, result)
                }));
            }
            None => {
                tracing::error!(batch = batch.id, "internal: a journal batch while one runs");
            }
        }
    }

    /// The outcome of the batch that runs (never resolves while none does). A failed write is
    /// logged here and reported as [`JournalWritten::Failed`].
    ///
    /// # Errors
    ///
    /// [`WriterGone`] when the write panicked.
    pub async fn finished(&mut self) -> Result<(u64, JournalWritten), WriterGone> {
        let Some(handle) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let joined = handle.await;
        self.running = None;
        let (journal, id, result) = joined?;
        self.idle = Some(journal);
        Ok((id, outcome(id, result)))
    }

    /// Waits for the batch that runs, if any, and hands the journal back (with that batch's
    /// outcome), for the last writes at shutdown.
    ///
    /// # Errors
    ///
    /// [`WriterGone`] when the write panicked.
    pub async fn stop(
        mut self,
    ) -> Result<(CommandJournal<F>, Option<(u64, JournalWritten)>), WriterGone> {
        let last = if self.running.is_some() {
            Some(self.finished().await?)
        } else {
            None
        };
        let journal = self.idle.ok_or(WriterGone::Lost)?;
        Ok((journal, last))
    }
}

/// The outcome of a write, logged when it failed.
pub fn outcome(id: u64, result: io::Result<JournalWritten>) -> JournalWritten {
    result.unwrap_or_else(|e| {
        tracing::error!(batch = id, error = %e,
            "command journal write failed: its commands are not stored and get an error result");
        JournalWritten::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(req: &str) -> DownlinkCommand {
        DownlinkCommand {
            device: "d".into(),
            req: req.into(),
            method: "PUT".into(),
            path: "/actuators/valve".into(),
            payload: b"on".to_vec(),
            content_format: Some(0),
            expires_unix_ms: 1,
            confirmable: true,
            observe: false,
            accept: None,
        }
    }

    fn batch(
        id: u64,
        entries: Vec<JournalEntry>,
        rewrite: Option<Vec<DownlinkCommand>>,
    ) -> JournalBatch {
        JournalBatch {
            id,
            entries,
            rewrite,
        }
    }

    fn done(req: &str) -> JournalEntry {
        JournalEntry::Done {
            device: "d".into(),
            req: req.into(),
        }
    }

    #[test]
    fn pending_survives_reopen_and_done_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        let mut j = CommandJournal::open(&path).unwrap();
        assert!(j.pending().is_empty());
        let queued = vec![
            JournalEntry::Queued(cmd("a")),
            JournalEntry::Queued(cmd("b")),
        ];
        assert_eq!(
            j.write(&batch(1, queued, None)).unwrap(),
            JournalWritten::Durable { rewritten: false }
        );
        j.write(&batch(2, vec![done("a")], None)).unwrap();
        drop(j);
        // A torn last line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"que")
            .unwrap();
        let mut j = CommandJournal::open(&path).unwrap();
        assert_eq!(j.pending(), vec![cmd("b")]);
        drop(j);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1,
            "compacted"
        );
    }

    #[test]
    fn a_rewrite_leaves_only_the_live_commands_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        let mut j = CommandJournal::open(&path).unwrap();
        let entries = (0..10)
            .map(|i| JournalEntry::Queued(cmd(&i.to_string())))
            .collect();
        j.write(&batch(1, entries, None)).unwrap();
        let dones = (0..8).map(|i| done(&i.to_string())).collect();
        let live = vec![cmd("8"), cmd("9")];
        assert_eq!(
            j.write(&batch(2, dones, Some(live.clone()))).unwrap(),
            JournalWritten::Durable { rewritten: true }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        j.write(&batch(
            3,
            vec![JournalEntry::Queued(cmd("10")), done("8")],
            None,
        ))
        .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
        assert!(!path.with_extension("jsonl.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(j);
        let mut j = CommandJournal::open(&path).unwrap();
        assert_eq!(j.pending(), vec![cmd("9"), cmd("10")]);
    }

    #[tokio::test]
    async fn the_writer_runs_batches_off_the_loop_and_hands_the_journal_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        let mut w = JournalWriter::new(CommandJournal::open(&path).unwrap());
        assert!(w.is_idle());
        w.start(batch(7, vec![JournalEntry::Queued(cmd("a"))], None));
        assert!(!w.is_idle());
        assert_eq!(
            w.finished().await.unwrap(),
            (7, JournalWritten::Durable { rewritten: false })
        );
        assert!(w.is_idle());
        w.start(batch(8, vec![done("a")], Some(Vec::new())));
        let (mut journal, last) = w.stop().await.unwrap();
        assert_eq!(last, Some((8, JournalWritten::Durable { rewritten: true })));
        assert!(journal.pending().is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_append_is_reported_and_cut_off_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        let mut j = CommandJournal::open(&path).unwrap();
        j.write(&batch(1, vec![JournalEntry::Queued(cmd("a"))], None))
            .unwrap();
        let good = std::fs::read(&path).unwrap();
        // A handle that cannot write stands in for a disk that fails.
        j.file = std::fs::File::open("/dev/null").unwrap();
        assert!(
            j.write(&batch(2, vec![JournalEntry::Queued(cmd("b"))], None))
                .is_err()
        );
        assert_eq!(
            outcome(2, Err(io::Error::other("x"))),
            JournalWritten::Failed
        );
        j.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // Half a line left by the failed write is cut before the next append.
        j.file.write_all(b"{\"op\":\"queued\",\"dev").unwrap();
        j.torn = true;
        j.write(&batch(3, vec![done("a")], None)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(std::str::from_utf8(&good).unwrap()));
        assert_eq!(text.lines().count(), 2, "{text}");
        drop(j);
        let mut j = CommandJournal::open(&path).unwrap();
        assert!(j.pending().is_empty());
    }
}
