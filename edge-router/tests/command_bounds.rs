//! Platform commands are bounded (THREATS.md §7): 100,000 commands for one sleeping
//! (queue-mode) device leave the queue at its cap, the journal on disk at its bound, and the
//! memory where it was; every command over the cap gets a `queue full` result. The journal is
//! rewritten while running with only the live commands, and what it holds survives a restart.
//!
//! The ingress core runs on virtual time with the real journal on disk (`CommandJournal`, each
//! batch appended and synced as the edge's writer does); the test plays the device and reads the
//! results the ingress hands to the outbox.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// The counting allocator below (what the memory bound is measured with) is the only unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::ingress::{
    CommandLimits, DownlinkCommand, Ingress, IngressConfig, JournalEntry, JournalWritten,
};
use v6iot_edge_router::journal::CommandJournal;

/// Bytes allocated and not freed, by this test binary.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; the counter only adds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests measure this binary's allocations: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const DEV: &str = "[2001:db8::42]:40000";
/// An always-on companion device.
const AWAKE: &str = "[2001:db8::43]:40000";
const T0: u64 = 1_700_000_000_000;

fn dev() -> SocketAddr {
    DEV.parse().unwrap()
}

/// The edge's ingress and its journal, driven as `server.rs` drives them (one batch at a time,
/// written and synced before it is reported).
struct Edge {
    ingress: Ingress,
    journal: CommandJournal,
    now: Instant,
    unix_ms: u64,
    /// Results the ingress handed to the outbox: (req, status, error).
    results: Vec<(String, String, String)>,
    /// Commands the device received (request ids are in the payload).
    delivered: Vec<String>,
    next_mid: u16,
    location: Vec<Vec<u8>>,
    /// The journal file right after each rewrite, and the live commands the core counted then.
    rewrites: Vec<(Vec<JournalEntry>, u64)>,
}

impl Edge {
    fn open(dir: &Path) -> Edge {
        let mut config = IngressConfig::new(Topics::new("v6iot", "s").unwrap());
        config.commands = CommandLimits::default();
        let mut ingress = Ingress::new(config, T0);
        let mut journal = CommandJournal::open(&dir.join("commands.jsonl")).unwrap();
        for c in journal.pending() {
            ingress.restore_command(c);
        }
        Edge {
            ingress,
            journal,
            now: Instant::now(),
            unix_ms: T0,
            results: Vec::new(),
            delivered: Vec::new(),
            next_mid: 1,
            location: Vec::new(),
            rewrites: Vec::new(),
        }
    }

    /// Moves journal batches, results and datagrams until nothing is left; a device answers
    /// every command it gets with 2.04 (the edge sends to a queue-mode device only in its
    /// listening window).
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.ingress.poll_journal() {
                let outcome = self.journal.write(&b).unwrap();
                if outcome == (JournalWritten::Durable { rewritten: true }) {
                    let live = self.ingress.journal_sizes().1;
                    self.rewrites.push((self.journal_lines(), live));
                }
                self.ingress
                    .handle_journal_written(self.now, self.unix_ms, b.id, outcome);
                moved = true;
            }
            while self.ingress.poll_event().is_some() {}
            while let Some(a) = self.ingress.poll_append() {
                if a.message.topic.contains("/cmd/") {
                    let v: serde_json::Value = serde_json::from_slice(&a.message.payload).unwrap();
                    self.results.push((
                        v["req"].as_str().unwrap().to_owned(),
                        v["status"].as_str().unwrap().to_owned(),
                        v["error"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                moved = true;
            }
            while let Some((to, bytes)) = self.ingress.poll_transmit() {
                let to = to.remote;
                assert!(to == dev() || to == AWAKE.parse().unwrap(), "{to}");
                let p = Packet::from_bytes(&bytes).unwrap();
                if let MessageClass::Response(ResponseType::Created) = p.header.code {
                    self.location = p
                        .get_option(CoapOption::LocationPath)
                        .map(|l| l.iter().cloned().collect())
                        .unwrap_or_default();
                }
                if p.header.get_type() == MessageType::Confirmable {
                    if to == dev() {
                        self.delivered
                            .push(String::from_utf8(p.payload.clone()).unwrap());
                    }
                    let mut ack = Packet::new();
                    ack.header.set_type(MessageType::Acknowledgement);
                    ack.header.message_id = p.header.message_id;
                    ack.header.code = MessageClass::Response(ResponseType::Changed);
                    ack.set_token(p.get_token().to_vec());
                    self.ingress.handle_datagram(
                        self.now,
                        self.unix_ms,
                        to,
                        &ack.to_bytes().unwrap(),
                    );
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn request(&mut self, from: SocketAddr, path: &[&[u8]], query: &[&str], payload: &[u8]) {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = self.next_mid;
        self.next_mid += 1;
        p.set_token(vec![7, self.next_mid as u8]);
        for seg in path {
            p.add_option(CoapOption::UriPath, seg.to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = payload.to_vec();
        self.ingress
            .handle_datagram(self.now, self.unix_ms, from, &p.to_bytes().unwrap());
    }

    /// The device registers in queue mode (`b=UQ`) and goes to sleep (its window closes).
    fn register(&mut self) {
        self.request(
            dev(),
            &[b"rd"],
            &["ep=sleepy", "b=UQ", "lt=86400"],
            b"</valve>",
        );
        self.settle();
        assert!(!self.location.is_empty(), "registered");
        self.advance(Duration::from_secs(60));
    }

    /// The device wakes: a registration update opens its listening window; it takes and answers
    /// every command that waits, and sleeps again.
    fn wake(&mut self) {
        let location = self.location.clone();
        let path: Vec<&[u8]> = location.iter().map(Vec::as_slice).collect();
        self.request(dev(), &path, &[], b"");
        self.settle();
        self.advance(Duration::from_secs(60));
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.unix_ms += by.as_millis() as u64;
        self.ingress.handle_timeout(self.now, self.unix_ms);
        self.settle();
    }

    fn command(&mut self, req: &str) {
        let c = DownlinkCommand {
            device: "sleepy".into(),
            req: req.into(),
            method: "PUT".into(),
            path: "/valve".into(),
            payload: req.as_bytes().to_vec(),
            content_format: Some(0),
            expires_unix_ms: self.unix_ms + 7 * 24 * 3_600_000,
            confirmable: true,
            observe: false,
            accept: None,
        };
        self.ingress.handle_command(self.now, self.unix_ms, c);
        self.settle();
    }

    /// The journal file's lines.
    fn journal_lines(&self) -> Vec<JournalEntry> {
        std::fs::read_to_string(self.journal.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn a_hundred_thousand_commands_for_a_sleeping_device_stay_under_the_caps() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::open(dir.path());
    edge.register();
    let cap = CommandLimits::default().max_per_device;
    let max_message = CommandLimits::default().max_message_bytes;

    let mut live_before = 0;
    for i in 0..100_000 {
        edge.command(&format!("c{i}"));
        if i == 999 {
            edge.results.clear();
            edge.results.shrink_to_fit();
            live_before = LIVE.load(Ordering::Relaxed);
        }
        if i >= 1000 && i % 1000 == 999 {
            // Refused commands leave nothing behind: not in a queue, a table or the journal.
            edge.results.clear();
            edge.results.shrink_to_fit();
            let grown = LIVE.load(Ordering::Relaxed) - live_before;
            assert!(
                grown < 64 * 1024,
                "memory grew by {grown} bytes at command {i}"
            );
        }
    }
    // The queue holds exactly the cap; so does the journal, each line bounded by the size limit.
    assert_eq!(edge.ingress.pending_commands(), cap);
    let lines = edge.journal_lines();
    assert_eq!(lines.len(), cap);
    let bytes = std::fs::metadata(edge.journal.path()).unwrap().len();
    assert!(
        bytes <= (cap * (4 * max_message + 256)) as u64,
        "{bytes} bytes"
    );
    assert_eq!(edge.ingress.journal_sizes(), (cap as u64, cap as u64));
    let stats = *edge.ingress.command_stats();
    assert_eq!(
        (stats.accepted, stats.queue_full),
        (cap as u64, 100_000 - cap as u64)
    );

    // Every command over the cap got its `queue full` result (counted over the whole run on a
    // fresh edge below, as the results above were dropped to measure memory).
    drop(edge);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::open(dir.path());
    edge.register();
    for i in 0..10_000 {
        edge.command(&format!("c{i}"));
    }
    let full: Vec<_> = edge
        .results
        .iter()
        .filter(|(_, status, error)| status == "rejected" && error.starts_with("queue full"))
        .collect();
    assert_eq!(full.len(), 10_000 - cap);
    assert_eq!(edge.results.len(), 10_000 - cap, "no other result");
    assert_eq!(full[0].0, format!("c{cap}"), "the first over the cap");
    // The device wakes and takes the queued ones, in order.
    edge.wake();
    let expected: Vec<String> = (0..cap).map(|i| format!("c{i}")).collect();
    assert_eq!(edge.delivered, expected);
    assert_eq!(edge.ingress.pending_commands(), 0);
}

#[test]
fn the_journal_is_rewritten_while_running_with_only_live_commands_and_survives_a_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::open(dir.path());
    edge.register();
    let cap = CommandLimits::default().max_per_device;
    let mut n = 0;
    let mut rewrites_seen = 0;
    for _round in 0..30 {
        for _ in 0..cap {
            edge.command(&format!("c{n}"));
            n += 1;
        }
        edge.wake();
        assert_eq!(edge.ingress.pending_commands(), 0);
        // The core's count and the file agree, and the bound holds.
        let lines = edge.journal_lines().len() as u64;
        let (counted, live) = edge.ingress.journal_sizes();
        assert_eq!(lines, counted);
        assert_eq!(live, 0);
        assert!(lines <= 1024 + 2 * cap as u64, "{lines} lines");
        let rewrites = edge.ingress.command_stats().journal_rewrites;
        if rewrites > rewrites_seen {
            rewrites_seen = rewrites;
        }
    }
    assert!(
        rewrites_seen >= 2,
        "rewritten while running: {rewrites_seen}"
    );
    assert_eq!(edge.delivered.len(), n);

    // Fill the queue again and deliver part of it: then grow dead lines until a rewrite comes
    // while commands are live, and check the file holds exactly those.
    for _ in 0..cap {
        edge.command(&format!("c{n}"));
        n += 1;
    }
    let before = edge.ingress.command_stats().journal_rewrites;
    let mut extra = 0;
    while edge.ingress.command_stats().journal_rewrites == before {
        // Commands for an always-on companion device answered at once add dead lines only.
        edge.companion(&format!("x{extra}"));
        extra += 1;
        assert!(extra < 5000, "no rewrite came");
    }
    // Right after each rewrite the file held only `queued` lines, exactly as many as were live.
    for (file, live) in &edge.rewrites {
        assert!(file.iter().all(|l| matches!(l, JournalEntry::Queued(_))));
        assert_eq!(file.len() as u64, *live);
    }
    let (file, _) = edge.rewrites.last().unwrap();
    let sleepy: Vec<String> = file
        .iter()
        .filter_map(|l| match l {
            JournalEntry::Queued(c) if c.device == "sleepy" => Some(c.req.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (n - cap..n).map(|i| format!("c{i}")).collect();
    assert_eq!(sleepy, expected, "the waiting ones, in order");
    assert!(
        file.len() <= cap + 1,
        "and at most the companion's one in flight"
    );

    // A restart: the journal brings back exactly the waiting commands, and they are delivered.
    drop(edge);
    let mut edge = Edge::open(dir.path());
    assert_eq!(edge.ingress.pending_commands(), cap);
    assert_eq!(edge.ingress.journal_sizes(), (cap as u64, cap as u64));
    edge.register();
    edge.wake();
    assert_eq!(edge.delivered, expected);
    let ok = edge.results.iter().filter(|(_, s, _)| s == "ok").count();
    assert_eq!(ok, cap);
}

impl Edge {
    /// A command for `awake`, an always-on device at the same address that answers at once
    /// (registered on first use).
    fn companion(&mut self, req: &str) {
        if self.ingress.directory().get("awake").is_none() {
            let keep = self.location.clone();
            let awake = AWAKE.parse().unwrap();
            self.request(
                awake,
                &[b"rd"],
                &["ep=awake", "b=U", "lt=86400"],
                b"</valve>",
            );
            self.settle();
            self.location = keep;
        }
        let c = DownlinkCommand {
            device: "awake".into(),
            req: req.into(),
            method: "PUT".into(),
            path: "/valve".into(),
            payload: req.as_bytes().to_vec(),
            content_format: Some(0),
            expires_unix_ms: self.unix_ms + 60_000,
            confirmable: true,
            observe: false,
            accept: None,
        };
        self.ingress.handle_command(self.now, self.unix_ms, c);
        self.settle();
    }
}
