//! The OSCORE state of a whole fleet in one state file (RFC 8613 Appendix B.1.1, B.1.2):
//! `v6iot-sim run --credentials` keeps it next to the CSV (or at `--seq-file`). One line per
//! device: its sender sequence-number mark and, once it accepted a protected request, its
//! replay floor (a line without a floor, as files before floors were kept, reads as floor 0).
//!
//! ```text
//! # v6iot-sim OSCORE sequence-number marks: device id, mark[, replay floor]
//! sim000000 65536
//! sim000001 65536 3
//! ```
//!
//! The file is rewritten whole and atomically ([`v6iot_sdk::store::write_atomically_in`]): once
//! at start with every device's next mark, then only when some device uses up half of its step —
//! with the fleet's generous step, rarely or never in a run — or accepts a protected request.
//! Devices share it through [`FleetMarkStore`] handles. The file I/O goes through
//! [`v6iot_durable::Fs`] ([`StdFs`] by default; the crash model in
//! `simulator/tests/fleet_marks_power_loss.rs`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use v6iot_durable::{Fs, StdFs};
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::store::{MarkStore, parse_state, write_atomically_in};

const HEADER: &str = "# v6iot-sim OSCORE sequence-number marks: device id, mark[, replay floor]";

/// Every device's last durable state, in a file on the file system `F`.
#[derive(Debug)]
pub struct FleetMarks<F: Fs = StdFs> {
    fs: F,
    path: PathBuf,
    marks: BTreeMap<String, DurableState>,
    writes: u64,
}

impl FleetMarks {
    /// Reads the state file at `path`; a missing file means no device ran yet.
    pub fn load(path: &Path) -> anyhow::Result<FleetMarks> {
        FleetMarks::load_in(StdFs, path)
    }
}

impl<F: Fs> FleetMarks<F> {
    /// [`FleetMarks::load`] on the file system `fs`.
    pub fn load_in(fs: F, path: &Path) -> anyhow::Result<FleetMarks<F>> {
        let mut marks = BTreeMap::new();
        let read = fs.read(path).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        });
        match read {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(id, state)| Some((id.to_owned(), parse_state(state)?)));
                    let Some((id, mark)) = parsed else {
                        anyhow::bail!(
                            "{} line {}: not `device-id mark [replay-floor]`; refusing to guess sequence numbers",
                            path.display(),
                            i + 1
                        );
                    };
                    marks.insert(id, mark);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        Ok(FleetMarks {
            fs,
            path: path.to_path_buf(),
            marks,
            writes: 0,
        })
    }

    /// The last durable mark of device `id` (0 if it never ran).
    pub fn get(&self, id: &str) -> u64 {
        self.state(id).sender_mark
    }

    /// The last durable state of device `id` (all zero if it never ran).
    pub fn state(&self, id: &str) -> DurableState {
        self.marks.get(id).copied().unwrap_or_default()
    }

    /// Raises the marks of several devices and writes the file once.
    pub fn set_all(&mut self, updates: impl IntoIterator<Item = (String, u64)>) -> io::Result<()> {
        for (id, mark) in updates {
            let m = self.marks.entry(id).or_default();
            m.sender_mark = m.sender_mark.max(mark);
        }
        self.write()
    }

    /// Raises device `id`'s mark and rewrites the file.
    pub fn set(&mut self, id: &str, mark: u64) -> io::Result<()> {
        self.set_all([(id.to_owned(), mark)])
    }

    /// Raises device `id`'s mark and replay floor and rewrites the file.
    pub fn set_state(&mut self, id: &str, state: DurableState) -> io::Result<()> {
        let m = self.marks.entry(id.to_owned()).or_default();
        *m = m.max(state);
        self.write()
    }

    /// How often the file was written.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self) -> io::Result<()> {
        let mut text = String::with_capacity(32 * (self.marks.len() + 1));
        text.push_str(HEADER);
        text.push('\n');
        for (id, state) in &self.marks {
            text.push_str(id);
            text.push(' ');
            text.push_str(&state.sender_mark.to_string());
            if state.replay_floor > 0 {
                text.push(' ');
                text.push_str(&state.replay_floor.to_string());
            }
            text.push('\n');
        }
        write_atomically_in(&self.fs, &self.path, text.as_bytes())?;
        self.writes += 1;
        Ok(())
    }
}

/// One device's view of the shared state file, for the SDK driver.
#[derive(Debug, Clone)]
pub struct FleetMarkStore<F: Fs = StdFs> {
    /// The fleet's marks.
    pub shared: Arc<Mutex<FleetMarks<F>>>,
    /// The device.
    pub id: String,
}

impl<F: Fs> MarkStore for FleetMarkStore<F> {
    fn store(&mut self, state: DurableState) -> io::Result<()> {
        let mut marks = self
            .shared
            .lock()
            .map_err(|_| io::Error::other("the fleet's mark state is poisoned"))?;
        marks.set_state(&self.id, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_reload_and_never_go_down() {
        let dir = std::env::temp_dir().join(format!("v6iot-fleet-marks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.csv.seq");
        let _ = std::fs::remove_file(&path);
        let mut m = FleetMarks::load(&path).unwrap();
        assert_eq!(m.get("a"), 0);
        m.set_all([("a".to_owned(), 100), ("b".to_owned(), 200)])
            .unwrap();
        m.set("a", 50).unwrap();
        let again = FleetMarks::load(&path).unwrap();
        assert_eq!((again.get("a"), again.get("b")), (100, 200));
        assert_eq!(m.writes(), 2);
        let floor = DurableState {
            sender_mark: 10,
            replay_floor: 7,
        };
        m.set_state("b", floor).unwrap();
        let again = FleetMarks::load(&path).unwrap();
        assert_eq!(again.state("b").replay_floor, 7);
        assert_eq!(again.get("b"), 200, "the mark never goes down");
        std::fs::write(&path, "a 5\nb 6 3\n").unwrap();
        let old_and_new = FleetMarks::load(&path).unwrap();
        assert_eq!(
            old_and_new.state("a"),
            DurableState {
                sender_mark: 5,
                replay_floor: 0
            }
        );
        assert_eq!(
            old_and_new.state("b"),
            DurableState {
                sender_mark: 6,
                replay_floor: 3
            }
        );
        std::fs::write(&path, "a x\n").unwrap();
        assert!(FleetMarks::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
