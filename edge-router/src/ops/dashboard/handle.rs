//! The board on a thread of its own, so that the data path never waits for a dashboard
//! query: the server loop hands its changes ([`Update`]) to a bounded queue without
//! waiting (a full queue drops the change and counts it), and the feeds' reads queue behind
//! them and are answered on the board's thread. A filtered, sorted query over 100,000
//! devices (up to about 20 ms) delays only the changes queued behind it, never the loop.
//!
//! Bounded: at most [`UPDATE_QUEUE`] changes and reads waiting; the board's own bounds are
//! in [`super::board`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::board::{Board, Update};

/// Changes and reads waiting for the board's thread at most.
pub const UPDATE_QUEUE: usize = 65_536;

/// A read run on the board's thread.
type Read = Box<dyn FnOnce(&Board) + Send>;

enum Msg {
    Update(Update),
    Read(Read),
}

/// What happened to the data path's changes (exported as `v6iot_dashboard_updates_total`).
#[derive(Debug, Default)]
pub struct BoardStats {
    queued: AtomicU64,
    dropped: AtomicU64,
}

impl BoardStats {
    /// Changes queued for the board.
    #[must_use]
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Changes dropped: the queue was full or the board's thread had ended.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The data path's and the feeds' side of the board's thread (cheap to clone; the thread
/// ends when the last handle is dropped).
#[derive(Clone)]
pub struct BoardHandle {
    tx: mpsc::Sender<Msg>,
    stats: Arc<BoardStats>,
}

impl std::fmt::Debug for BoardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardHandle")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl BoardHandle {
    /// Moves `board` to a thread of its own, with at most `capacity` changes and reads
    /// waiting (at least one).
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn spawn(mut board: Board, capacity: usize) -> std::io::Result<BoardHandle> {
        let (tx, mut rx) = mpsc::channel::<Msg>(capacity.max(1));
        std::thread::Builder::new()
            .name("v6iot-board".into())
            .spawn(move || {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Update(u) => board.apply(u),
                        Msg::Read(read) => read(&board),
                    }
                }
            })?;
        Ok(BoardHandle {
            tx,
            stats: Arc::default(),
        })
    }

    /// Queues `update` without ever waiting; `false` (and counted as dropped) when the queue
    /// is full or the board's thread has ended.
    pub fn update(&self, update: Update) -> bool {
        let queued = self.tx.try_send(Msg::Update(update)).is_ok();
        let counter = if queued {
            &self.stats.queued
        } else {
            &self.stats.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        queued
    }

    /// Runs `read` on the board's thread after the changes queued before it; `None` when the
    /// board's thread has ended. Waits (asynchronously) for room in the queue.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Board) -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        let read: Read = Box::new(move |board| {
            // the reader may have gone (its session closed): nothing to answer then
            let _ = answer.send(read(board));
        });
        self.tx.send(Msg::Read(read)).await.ok()?;
        answered.await.ok()
    }

    /// The changes' counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<BoardStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::net::SocketAddr;
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;
    use crate::ops::dashboard::board::Query;

    fn registered(i: u32) -> Update {
        Update::Registered {
            id: format!("dev-{i:06}"),
            address: SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16], 5683)),
            transport: "udp",
            unix_ms: u64::from(i),
        }
    }

    /// Holds a read open on the board's thread until the returned sender releases it (or a
    /// minute passes); the receiver says whether it was released (`true`) or gave up.
    fn hold(board: &BoardHandle) -> (std_mpsc::Sender<()>, std_mpsc::Receiver<bool>) {
        let (started_tx, started_rx) = std_mpsc::channel();
        let (release_tx, release_rx) = std_mpsc::channel::<()>();
        let (held_tx, held_rx) = std_mpsc::channel();
        let read: Read = Box::new(move |b: &Board| {
            started_tx.send(b.len()).unwrap();
            let released = release_rx.recv_timeout(Duration::from_secs(60)).is_ok();
            held_tx.send(released).unwrap();
        });
        board.tx.try_send(Msg::Read(read)).unwrap();
        started_rx.recv().unwrap();
        (release_tx, held_rx)
    }

    /// A dashboard query in progress (held open on the board's thread, deterministically)
    /// does not hold up the data path: its changes are all queued while the query runs, and
    /// the query ends only when the test releases it, after those changes. (Broken once on
    /// purpose: an `update` that waited until the board had applied it, as the lock did,
    /// waited for the held query until it gave up, and this test failed.)
    #[test]
    fn the_data_path_never_waits_for_a_query() {
        let board = BoardHandle::spawn(Board::new(100_000), 1_000).unwrap();
        let (release, held) = hold(&board);
        // the query is in progress now; the data path reports 1,000 changes
        for i in 0..1_000 {
            assert!(board.update(registered(i)), "change {i} not queued");
        }
        assert_eq!(
            (board.stats().queued(), board.stats().dropped()),
            (1_000, 0)
        );
        // (gone only if the query already gave up, which the next line reports)
        let _ = release.send(());
        assert!(
            held.recv().unwrap(),
            "the data path waited for the query to give up"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let view = rt
            .block_on(board.read(|b| b.view(&Query::default(), 0, None)))
            .unwrap();
        assert_eq!((view.devices, view.page.total), (1_000, 1_000));
    }

    /// At its bound: with the board's thread busy, [`UPDATE_QUEUE`] changes are queued, the
    /// ones past it dropped and counted, and every queued one is applied.
    #[test]
    fn a_full_queue_drops_and_counts_changes() {
        let board = BoardHandle::spawn(Board::new(100_000), UPDATE_QUEUE).unwrap();
        let (release, held) = hold(&board);
        let n = UPDATE_QUEUE as u32 + 10;
        let accepted = (0..n).filter(|&i| board.update(registered(i))).count();
        assert_eq!(accepted, UPDATE_QUEUE);
        let queued = UPDATE_QUEUE as u64;
        assert_eq!(
            (board.stats().queued(), board.stats().dropped()),
            (queued, 10)
        );
        release.send(()).unwrap();
        assert!(held.recv().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (len, first) = rt
            .block_on(board.read(|b| {
                let page = b.query(&Query {
                    limit: 1,
                    ..Query::default()
                });
                (b.len(), page.rows[0].id.clone())
            }))
            .unwrap();
        assert_eq!((len, first.as_str()), (UPDATE_QUEUE, "dev-000000"));
    }

    /// Records are read as SenML on the board's thread; states touch shown devices only;
    /// security events arrive in order.
    #[test]
    fn changes_are_applied_in_order() {
        let board = BoardHandle::spawn(Board::new(10), UPDATE_QUEUE).unwrap();
        let peer = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9], 5683));
        assert!(board.update(registered(1)));
        assert!(board.update(Update::Record {
            id: "dev-000001".into(),
            unix_ms: 5,
            payload: br#"[{"n":"temperature","u":"Cel","v":21.5}]"#.to_vec(),
        }));
        assert!(board.update(Update::Record {
            id: "dev-000001".into(),
            unix_ms: 6,
            payload: b"not senml".to_vec(),
        }));
        assert!(board.update(Update::States(vec![
            ("dev-000001".into(), "quarantined"),
            ("dev-000002".into(), "revoked"),
        ])));
        assert!(board.update(Update::Security {
            unix_ms: 7,
            cause: "plain".into(),
            peer,
            device: None,
        }));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let view = rt
            .block_on(board.read(|b| {
                let q = Query {
                    limit: 10,
                    ..Query::default()
                };
                b.view(&q, 0, Some("dev-000001"))
            }))
            .unwrap();
        assert_eq!(view.devices, 1);
        let row = &view.page.rows[0];
        assert_eq!(
            (row.state, row.last_value.as_str(), row.last_seen_ms),
            ("quarantined", "temperature=21.5 Cel", 5)
        );
        assert_eq!(view.spark, Some(vec![(5, 21.5)]));
        assert_eq!(view.events.len(), 1);
        assert_eq!(view.events[0].cause, "plain");
    }
}
