//! The command queue's journal: one JSON line per [`JournalEntry`], synced after each batch, so
//! commands for queue-mode devices survive a restart. Compacted on open to what is still pending.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::ingress::{DownlinkCommand, JournalEntry};

/// An open journal.
#[derive(Debug)]
pub struct CommandJournal {
    path: PathBuf,
    file: File,
    pending: Vec<DownlinkCommand>,
}

impl CommandJournal {
    /// Opens (or creates) the journal at `path`, reads what is pending, and rewrites the file with
    /// only that. Unreadable lines (a torn last write) are skipped and logged.
    pub fn open(path: &Path) -> std::io::Result<CommandJournal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut queued: Vec<DownlinkCommand> = Vec::new();
        let mut done: HashSet<(String, String)> = HashSet::new();
        if let Ok(f) = File::open(path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                match serde_json::from_str::<JournalEntry>(&line) {
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
        queued.retain(|c| !done.contains(&(c.device.clone(), c.req.clone())));
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for c in &queued {
                let line = serde_json::to_string(&JournalEntry::Queued(c.clone()))
                    .map_err(std::io::Error::other)?;
                writeln!(f, "{line}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(CommandJournal {
            path: path.to_owned(),
            file,
            pending: queued,
        })
    }

    /// The commands that were queued and not finished when the journal was opened.
    pub fn pending(&mut self) -> Vec<DownlinkCommand> {
        std::mem::take(&mut self.pending)
    }

    /// Appends `entries` and syncs (nothing to do when empty).
    pub fn write(&mut self, entries: &[JournalEntry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
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

    #[test]
    fn pending_survives_reopen_and_done_is_dropped() {
        let dir = std::env::temp_dir().join(format!("v6iot-journal-{}", std::process::id()));
        let path = dir.join("commands.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let mut j = CommandJournal::open(&path).unwrap();
        assert!(j.pending().is_empty());
        j.write(&[
            JournalEntry::Queued(cmd("a")),
            JournalEntry::Queued(cmd("b")),
        ])
        .unwrap();
        j.write(&[JournalEntry::Done {
            device: "d".into(),
            req: "a".into(),
        }])
        .unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
