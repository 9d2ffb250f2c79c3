//! The fleet's OSCORE state file against crashes at every step, on `v6iot_durable::SimFs` (a
//! disk that loses what was not synced): after a restart every device's state is the one of the
//! last write reported done (or of the write under way), never older, never unreadable.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use v6iot_durable::{Crash, SimFs};
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::store::MarkStore as _;
use v6iot_simulator::fleet_marks::{FleetMarkStore, FleetMarks};

const PATH: &str = "/fleet/creds.csv.seq";
const IDS: [&str; 3] = ["sim000000", "sim000001", "sim000002"];

/// A disk with the fleet's file from an earlier run, durable (written without the store).
fn prepared() -> SimFs {
    SimFs::with_durable_file(
        Path::new(PATH),
        b"sim000000 100\nsim000001 100\nsim000002 100 4\n",
    )
    .unwrap()
}

fn snapshot(marks: &FleetMarks<SimFs>) -> Vec<DurableState> {
    IDS.iter().map(|id| marks.state(id)).collect()
}

/// A run's writes: the marks at start, a device's floor through its store, one more mark.
/// Returns the states after the last write reported done, and after the one under way.
fn run(fs: &SimFs, steps: u64) -> (Vec<DurableState>, Option<Vec<DurableState>>) {
    let marks = FleetMarks::load_in(fs.clone(), Path::new(PATH)).unwrap();
    let shared = Arc::new(Mutex::new(marks));
    let mut confirmed = snapshot(&shared.lock().unwrap());
    fs.stop_after(Some(steps));
    let mut store = FleetMarkStore {
        shared: shared.clone(),
        id: IDS[1].to_owned(),
    };
    // the states after each write
    let state = DurableState::new;
    let expected = [
        [state(65636, 0), state(65636, 0), state(65636, 4)],
        [state(65636, 0), state(65636, 9), state(65636, 4)],
        [state(65636, 0), state(65636, 9), state(131172, 4)],
    ];
    for (i, after) in expected.into_iter().enumerate() {
        let result = match i {
            0 => shared
                .lock()
                .unwrap()
                .set_all(IDS.iter().map(|id| ((*id).to_owned(), 65636))),
            1 => store.store(state(65636, 9)),
            _ => shared.lock().unwrap().set(IDS[2], 131172),
        };
        if result.is_err() {
            return (confirmed, Some(after.to_vec()));
        }
        assert_eq!(snapshot(&shared.lock().unwrap()), after);
        confirmed = after.to_vec();
    }
    (confirmed, None)
}

fn every_crash_point(crash: Crash) -> u64 {
    prepared().crash_at_every_step(crash, run, |fs, (confirmed, in_flight), at| {
        assert_eq!(at.is_some(), in_flight.is_some());
        let again = FleetMarks::load_in(fs.clone(), Path::new(PATH))
            .unwrap_or_else(|e| panic!("crash at {at:?} ({crash:?}): {e:#}"));
        let found = snapshot(&again);
        assert!(
            found == confirmed || Some(&found) == in_flight.as_ref(),
            "crash at {at:?} ({crash:?}): found {found:?}, confirmed {confirmed:?}"
        );
        if in_flight.is_none() {
            assert_eq!(found[2], DurableState::new(131172, 4));
        }
    })
}

#[test]
fn the_fleet_file_survives_a_power_loss_at_every_step() {
    // three rewrites of five steps each (create, write, fsync, rename, directory fsync), and
    // the run that completes
    assert_eq!(every_crash_point(Crash::PowerLoss), 16);
}

#[test]
fn the_fleet_file_survives_a_process_kill_at_every_step() {
    assert_eq!(every_crash_point(Crash::ProcessKill), 16);
}
