//! The command journal against crashes at every step, on `v6iot_durable::SimFs` (a disk that
//! loses what was not synced): after a restart the journal holds exactly the commands of the
//! batches reported durable (plus, at most, a prefix of the batch being written) — a command
//! the edge was allowed to send is never forgotten, a finished one never comes back — and a
//! second crash while the journal is reopened changes nothing.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use v6iot_durable::{Crash, SimFs};
use v6iot_edge_router::ingress::{DownlinkCommand, JournalBatch, JournalEntry, JournalWritten};
use v6iot_edge_router::journal::CommandJournal;

const PATH: &str = "/var/lib/v6iot/commands.jsonl";

fn cmd(req: &str) -> DownlinkCommand {
    DownlinkCommand {
        device: "valve-7".into(),
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

fn queued(req: &str) -> JournalEntry {
    JournalEntry::Queued(cmd(req))
}

fn done(req: &str) -> JournalEntry {
    JournalEntry::Done {
        device: "valve-7".into(),
        req: req.into(),
    }
}

/// What the downlink hands the writer: appends, a rewrite with only the live commands, and
/// appends after it (they go to the file the rewrite renamed into place).
fn batches() -> Vec<JournalBatch> {
    let batch = |id, entries, rewrite| JournalBatch {
        id,
        entries,
        rewrite,
    };
    vec![
        batch(1, vec![queued("a"), queued("b")], None),
        batch(2, vec![done("old"), queued("c")], None),
        batch(3, vec![done("a")], Some(vec![cmd("b"), cmd("c")])),
        batch(4, vec![queued("d"), done("b")], None),
        batch(5, vec![queued("e")], None),
    ]
}

/// The pending commands (request ids, in queue order) after `entries`, from `["old"]`.
fn model<'a>(entries: impl IntoIterator<Item = &'a JournalEntry>) -> Vec<String> {
    let mut live = vec!["old".to_owned()];
    for e in entries {
        match e {
            JournalEntry::Queued(c) => live.push(c.req.clone()),
            JournalEntry::Done { req, .. } => live.retain(|r| r != req),
        }
    }
    live
}

/// A disk with the journal of an earlier run (one command, `old`), durable (written without
/// the journal, so that a broken journal cannot weaken the starting point).
fn prepared() -> SimFs {
    let mut line = serde_json::to_vec(&queued("old")).unwrap();
    line.push(b'\n');
    SimFs::with_durable_file(Path::new(PATH), &line).unwrap()
}

fn pending_reqs(journal: &mut CommandJournal<SimFs>) -> Vec<String> {
    journal.pending().into_iter().map(|c| c.req).collect()
}

/// Opens the journal, then writes [`batches`] with the process dying after `steps` steps.
/// Returns how many batches were reported durable.
fn write_until_crash(fs: &SimFs, steps: u64) -> usize {
    let mut journal = CommandJournal::open_in(fs.clone(), Path::new(PATH)).unwrap();
    assert_eq!(pending_reqs(&mut journal), ["old"]);
    fs.stop_after(Some(steps));
    let mut durable = 0;
    for b in batches() {
        match journal.write(&b) {
            Ok(JournalWritten::Durable { .. }) => durable += 1,
            Ok(JournalWritten::Failed) | Err(_) => break,
        }
    }
    durable
}

/// Checks that `read` is what the durable batches left, or that plus a prefix of the entries
/// of the batch under way.
fn check(read: &[String], durable: usize, at: Option<&str>) {
    let all = batches();
    let before: Vec<&JournalEntry> = all[..durable].iter().flat_map(|b| &b.entries).collect();
    let in_flight = all.get(durable).map_or(&[][..], |b| &b.entries[..]);
    let allowed: Vec<Vec<String>> = (0..=in_flight.len())
        .map(|k| model(before.iter().copied().chain(&in_flight[..k])))
        .collect();
    assert!(
        allowed.iter().any(|a| a == read),
        "crash at {at:?} after {durable} durable batches: the journal holds {read:?}, expected one of {allowed:?}"
    );
}

/// Crashes at every step of the workload (then, for each, at every step of the reopening);
/// returns the number of runs (crash points + the run that completes).
fn every_crash_point(crash: Crash) -> u64 {
    prepared().crash_at_every_step(crash, write_until_crash, |fs, durable, at| {
        assert_eq!(at.is_some(), durable < batches().len());
        // the restart itself may crash, at any step of its rewrite: nothing may change
        let mut first: Option<Vec<String>> = None;
        for reopen_steps in 0.. {
            let again = fs.fork();
            again.stop_after(Some(reopen_steps));
            let opened = CommandJournal::open_in(again.clone(), Path::new(PATH));
            again.restart(crash);
            let read = pending_reqs(&mut CommandJournal::open_in(again, Path::new(PATH)).unwrap());
            check(&read, durable, at);
            if let Some(f) = &first {
                assert_eq!(&read, f, "a crash while reopening changed the journal");
            }
            first = Some(read);
            if opened.is_ok() {
                break;
            }
        }
        if at.is_none() {
            assert_eq!(first.unwrap(), ["c", "d", "e"]);
        }
    })
}

#[test]
fn durable_batches_survive_a_power_loss_at_every_step() {
    // five appends (write, fdatasync) and one rewrite (create, write, fsync, rename,
    // directory fsync), and the run that completes
    assert_eq!(every_crash_point(Crash::PowerLoss), 16);
}

#[test]
fn durable_batches_survive_a_process_kill_at_every_step() {
    assert_eq!(every_crash_point(Crash::ProcessKill), 16);
}
