//! The OSCORE state file against crashes at every step, on `v6iot_durable::SimFs` (a disk that
//! loses what was not synced): a state `SequenceFile::store` reported written is what a
//! restart reads (or the one being written, never an older one, never a torn file), and a
//! sender sequence whose marks go through the file never hands out a number twice across power
//! losses (RFC 8613 Appendix B.1.1).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use v6iot_durable::{Crash, SimFs};
use v6iot_sdk::oscore::{DurableState, SenderSequence};
use v6iot_sdk::store::{MarkStore as _, SequenceFile};

const PATH: &str = "/var/lib/device/oscore.state";

/// A disk with the device's directory and a first state (mark 64), durable (written without
/// the store, so that a broken store cannot weaken the starting point).
fn prepared() -> SimFs {
    let fs = SimFs::with_durable_file(Path::new(PATH), b"64 0\n").unwrap();
    assert_eq!(fs.durable_contents(Path::new(PATH)).unwrap(), b"64 0\n");
    fs
}

/// Stores four states with the process dying after `steps` steps; returns the last state
/// reported written and the one being written when it died.
fn store_until_crash(fs: &SimFs, steps: u64) -> (DurableState, Option<DurableState>) {
    let (mut file, mut confirmed) = SequenceFile::open_in(fs.clone(), PATH).unwrap();
    fs.stop_after(Some(steps));
    for s in [
        DurableState::new(128, 0),
        DurableState::new(128, 7),
        DurableState::new(192, 9),
        DurableState::new(256, 9),
    ] {
        if file.store(s).is_err() {
            return (confirmed, Some(s));
        }
        confirmed = s;
    }
    (confirmed, None)
}

fn every_crash_point(crash: Crash) -> u64 {
    prepared().crash_at_every_step(
        crash,
        store_until_crash,
        |fs, (confirmed, in_flight), at| {
            assert_eq!(at.is_some(), in_flight.is_some());
            let read = SequenceFile::open_in(fs.clone(), PATH)
                .map(|(_, s)| s)
                .unwrap_or_else(|e| panic!("crash at {at:?} ({crash:?}): unreadable: {e}"));
            assert!(
                read == confirmed || Some(read) == in_flight,
                "crash at {at:?} ({crash:?}): read {read:?}, confirmed {confirmed:?}"
            );
            if in_flight.is_none() {
                assert_eq!(read, DurableState::new(256, 9));
            }
        },
    )
}

#[test]
fn a_stored_state_survives_a_power_loss_at_every_step() {
    // four stores of five steps each (create, write, fsync, rename, directory fsync), and the
    // run that completes
    assert_eq!(every_crash_point(Crash::PowerLoss), 21);
}

#[test]
fn a_stored_state_survives_a_process_kill_at_every_step() {
    assert_eq!(every_crash_point(Crash::ProcessKill), 21);
}

/// Takes 40 sequence numbers, persisting each mark the sequence asks for through the state
/// file before using numbers below it; the disk loses power after `steps` steps, the device
/// restarts from the file and goes on. Returns the numbers used (in order) and the crashes.
fn numbers_across_a_power_loss(steps: u64) -> (Vec<u64>, u64) {
    let fs = prepared();
    let (mut file, stored) = SequenceFile::open_in(fs.clone(), PATH).unwrap();
    let mut seq = SenderSequence::restore(stored.sender_mark, 8);
    let mut used = Vec::new();
    fs.stop_after(Some(steps));
    let mut crashes = 0;
    while used.len() < 40 {
        if let Some(mark) = seq.mark_to_persist() {
            match file.store(DurableState::new(mark, 0)) {
                Ok(()) => seq.persisted(mark),
                Err(_) => {
                    // the device dies with the disk; it comes back from what the file holds
                    fs.restart(Crash::PowerLoss);
                    crashes += 1;
                    let (f, stored) = SequenceFile::open_in(fs.clone(), PATH).unwrap();
                    file = f;
                    seq = SenderSequence::restore(stored.sender_mark, 8);
                    continue;
                }
            }
        }
        if let Ok(n) = seq.take() {
            used.push(n);
        }
    }
    (used, crashes)
}

#[test]
fn sequence_numbers_never_repeat_across_a_power_loss_at_any_step() {
    let mut crashed_runs = 0;
    for steps in 0..60 {
        let (used, crashes) = numbers_across_a_power_loss(steps);
        let mut sorted = used.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            used.len(),
            "a number used twice with a crash after {steps} steps: {used:?}"
        );
        crashed_runs += crashes;
    }
    // 40 numbers from 64 at step 8 ask for six marks (72, 80, … 112, each when four numbers
    // are left) of five steps each: each of those 30 points crashes once
    assert_eq!(crashed_runs, 30);
}
