//! The downlink's admission, caps and journal bookkeeping, on virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::Packet;
use v6iot_sdk::oscore::{self, ContextConfig, ContextInput, MAX_SEQUENCE_NUMBER, SecurityContext};

use super::*;

const T0: u64 = 1_700_000_000_000;
const WINDOW: Duration = Duration::from_secs(20);

fn addr() -> SocketAddr {
    "[2001:db8::7]:5683".parse().unwrap()
}

fn cmd(device: &str, req: &str, payload: usize) -> DownlinkCommand {
    DownlinkCommand {
        device: device.into(),
        req: req.into(),
        method: "PUT".into(),
        path: "/actuators/valve".into(),
        payload: vec![b'x'; payload],
        content_format: Some(0),
        expires_unix_ms: T0 + 3_600_000,
        confirmable: true,
        observe: false,
        accept: None,
    }
}

/// A command with a 1-byte payload that expires at `expires_unix_ms`.
fn expiring(device: &str, req: &str, expires_unix_ms: u64) -> DownlinkCommand {
    DownlinkCommand {
        expires_unix_ms,
        ..cmd(device, req, 1)
    }
}

/// An always-on device (`awake`), or a queue-mode one whose window closed long ago.
fn reach(now: Instant, awake: bool) -> Option<Reachability> {
    Some(Reachability {
        address: addr().into(),
        queue_mode: !awake,
        last_uplink: if awake {
            now
        } else {
            now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
        },
    })
}

fn limits(per_device: usize, total: usize) -> CommandLimits {
    CommandLimits {
        max_per_device: per_device,
        max_total: total,
        ..CommandLimits::default()
    }
}

fn results(d: &mut Downlink) -> Vec<CommandResult> {
    std::iter::from_fn(|| d.poll_result()).collect()
}

fn transmits(d: &mut Downlink) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| d.poll_transmit())
        .map(|t| (t.to.remote, t.bytes))
        .collect()
}

/// A platform command at `now` (Unix time `T0`) for an always-on device (`awake`) or a
/// sleeping one.
fn take(d: &mut Downlink, now: Instant, c: DownlinkCommand, awake: bool, message_id: u16) {
    d.command(now, T0, c, reach(now, awake), WINDOW, message_id);
}

/// Writes every journal batch as the driver would, all durable; returns the batches.
fn write_all(d: &mut Downlink) -> Vec<JournalBatch> {
    let mut batches = Vec::new();
    while let Some(b) = d.poll_journal() {
        let rewritten = b.rewrite.is_some();
        d.journal_written(b.id, JournalWritten::Durable { rewritten });
        batches.push(b);
    }
    batches
}

#[test]
fn a_command_goes_out_only_once_its_journal_batch_is_durable() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]);
    take(&mut d, now, cmd("d1", "r1", 2), true, 1);
    assert!(transmits(&mut d).is_empty(), "held until durable");
    let batch = d.poll_journal().unwrap();
    assert_eq!(
        batch.entries,
        vec![JournalEntry::Queued(cmd("d1", "r1", 2))]
    );
    assert!(d.poll_journal().is_none(), "one batch at a time");
    // A second command while the first batch is being written waits for its own batch.
    take(&mut d, now, cmd("d1", "r2", 2), true, 2);
    let ready = d.journal_written(batch.id, JournalWritten::Durable { rewritten: false });
    assert_eq!(ready, vec!["d1".to_owned()]);
    d.try_send(now, T0, "d1", reach(now, true), WINDOW, 3);
    assert_eq!(transmits(&mut d).len(), 1, "r1 went out");
    let batch = d.poll_journal().unwrap();
    assert_eq!(
        batch.entries,
        vec![JournalEntry::Queued(cmd("d1", "r2", 2))]
    );
    // Unknown or repeated ids change nothing.
    assert!(
        d.journal_written(99, JournalWritten::Durable { rewritten: false })
            .is_empty()
    );
    assert_eq!(d.stats().accepted, 2);
}

#[test]
fn a_failed_batch_refuses_its_commands_and_writes_its_done_entries_again() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]);
    // r0 is durable, queued for a sleeping device; then it expires while r1 is being written.
    let r0 = expiring("d1", "r0", T0 + 10);
    take(&mut d, now, r0, false, 1);
    write_all(&mut d);
    take(&mut d, now, cmd("d1", "r1", 1), false, 2);
    d.expire_queued(T0 + 20);
    let batch = d.poll_journal().unwrap();
    assert_eq!(batch.entries.len(), 2, "{:?}", batch.entries);
    assert!(
        d.journal_written(batch.id, JournalWritten::Failed)
            .is_empty()
    );
    let r = results(&mut d);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].req.as_str(), r[0].status), ("r0", "expired"));
    assert_eq!((r[1].req.as_str(), r[1].status), ("r1", "rejected"));
    assert!(
        r[1].error.as_deref().unwrap().contains("not stored"),
        "{r:?}"
    );
    assert_eq!(d.pending(), 0, "the failed command is not kept");
    assert_eq!(d.stats().journal_failures, 1);
    // The next batch carries r0's done again (r0's queued line is durable: else a restart would
    // bring it back), and nothing for r1 (its line was never kept).
    let batch = d.poll_journal().unwrap();
    let done = |req: &str| JournalEntry::Done {
        device: "d1".into(),
        req: req.into(),
    };
    assert_eq!(batch.entries, vec![done("r0")]);
    assert_eq!(d.journal_sizes().1, 0, "nothing live");
    // While every write fails, what waits stays bounded: r0's done only.
    d.journal_written(batch.id, JournalWritten::Failed);
    for i in 0..100 {
        take(&mut d, now, cmd("d1", &format!("n{i}"), 1), false, 3);
        let b = d.poll_journal().unwrap();
        assert!(b.entries.len() <= 2, "{:?}", b.entries);
        d.journal_written(b.id, JournalWritten::Failed);
    }
    assert_eq!(d.pending(), 0);
}

#[test]
fn over_the_per_device_cap_commands_get_queue_full_and_are_not_remembered() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]).with_limits(limits(3, 100));
    for i in 0..10 {
        take(&mut d, now, cmd("d1", &format!("r{i}"), 1), false, i);
    }
    assert_eq!(d.pending(), 3);
    let r = results(&mut d);
    assert_eq!(r.len(), 7);
    for x in &r {
        assert_eq!(x.status, "rejected");
        let e = x.error.as_deref().unwrap();
        assert!(e.starts_with("queue full"), "{e}");
        assert!(e.contains("commands.max_queued_per_device"), "{e}");
    }
    assert_eq!(d.stats().queue_full, 7);
    assert_eq!(d.stats().accepted, 3);
    // Another device still has room.
    take(&mut d, now, cmd("d2", "a", 1), false, 20);
    assert_eq!(d.pending(), 4);
    // Once the device took its commands, the same request id is taken (not a duplicate).
    write_all(&mut d);
    for mid in 30..33 {
        d.try_send(now, T0, "d1", reach(now, true), WINDOW, mid);
        let sent = transmits(&mut d);
        assert_eq!(sent.len(), 1);
        let p = Packet::from_bytes(&sent[0].1).unwrap();
        let mut ack = Packet::new();
        ack.header.set_type(coap_lite::MessageType::Acknowledgement);
        ack.header.message_id = p.header.message_id;
        ack.header.code = MessageClass::Response(coap_lite::ResponseType::Changed);
        ack.set_token(p.get_token().to_vec());
        assert!(d.handle_response(addr(), &ack, None).is_some());
    }
    take(&mut d, now, cmd("d1", "r5", 1), false, 40);
    assert_eq!(d.duplicates, 0);
    assert_eq!(d.stats().accepted, 5);
}

#[test]
fn over_the_total_cap_commands_get_queue_full() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]).with_limits(limits(10, 5));
    for i in 0..8 {
        take(&mut d, now, cmd(&format!("d{i}"), "r", 1), false, i);
    }
    assert_eq!(d.pending(), 5);
    let r = results(&mut d);
    assert_eq!(r.len(), 3);
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("commands.max_queued_total")
    );
    // The edge's own requests are not on the caps' account.
    let mut own = cmd("d0", "_obs1:/x", 0);
    own.observe = true;
    take(&mut d, now, own, false, 9);
    assert_eq!(d.pending(), 6);
}

#[test]
fn a_command_that_cannot_fit_the_path_is_refused_with_its_size() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]);
    // The payload bound: a device's block size.
    take(&mut d, now, cmd("d1", "big", 1025), true, 1);
    let r = results(&mut d);
    let e = r[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("too large") && e.contains("commands.max_payload_bytes"),
        "{e}"
    );
    // The message bound: a long path makes a request of 1024 payload bytes too large.
    let mut long = cmd("d1", "long", 1024);
    long.path = format!("/{}", "p".repeat(200));
    take(&mut d, now, long, true, 2);
    let r = results(&mut d);
    let e = r[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("too large") && e.contains("commands.max_message_bytes"),
        "{e}"
    );
    assert_eq!(d.stats().too_large, 2);
    // Exactly at the bound is taken, one byte more is not.
    let with_query = |req: &str, q: usize| {
        let mut c = cmd("d1", req, 0);
        c.path = format!("/actuators/valve?{}", "q".repeat(q));
        c
    };
    let size = |c: &DownlinkCommand| encode_request(c, 0, &[0; 8]).unwrap().len();
    let q = (0..1200)
        .find(|&q| size(&with_query("at", q)) + OSCORE_REQUEST_OVERHEAD == 1152)
        .unwrap();
    let at = with_query("at", q);
    take(&mut d, now, at.clone(), true, 3);
    assert!(results(&mut d).is_empty());
    take(&mut d, now, with_query("over", q + 1), true, 4);
    assert_eq!(results(&mut d).len(), 1);
}

#[test]
fn the_allow_list_refuses_other_devices_but_not_the_edges_own_requests() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]).with_limits(CommandLimits {
        allow: Some(DeviceAllowList::new(&["valve-*", "pump-3"]).unwrap()),
        ..CommandLimits::default()
    });
    for (device, taken) in [
        ("valve-1", true),
        ("valve-", true),
        ("pump-3", true),
        ("pump-30", false),
        ("heater", false),
    ] {
        take(&mut d, now, cmd(device, "r", 1), false, 1);
        let r = results(&mut d);
        assert_eq!(r.is_empty(), taken, "{device}: {r:?}");
        if !taken {
            let e = r[0].error.as_deref().unwrap();
            assert_eq!(
                e,
                format!("not allowed: device `{device}` is not in commands.allow_devices")
            );
        }
    }
    assert_eq!(d.stats().not_allowed, 2);
    take(&mut d, now, cmd("heater", "_obs1:/t", 0), false, 1);
    assert!(results(&mut d).is_empty());
    // Registered or not: a device off the list is "not allowed" (nothing about it is told).
    d.command(now, T0, cmd("ghost", "r", 1), None, WINDOW, 1);
    let r = results(&mut d);
    assert!(
        r[0].error.as_deref().unwrap().starts_with("not allowed"),
        "{r:?}"
    );
    for bad in ["", "*x", "a*b", "**"] {
        assert!(DeviceAllowList::new(&[bad]).is_err(), "{bad}");
    }
}

#[test]
fn the_journal_is_rewritten_with_only_live_commands_when_dead_lines_outweigh_them() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]).with_limits(limits(10_000, 10_000));
    // 3,000 commands for an always-on device, each answered: dead lines pile up.
    let mut rewrites = Vec::new();
    let mut max_lines = 0;
    for i in 0..3000_u32 {
        take(&mut d, now, cmd("d1", &format!("r{i}"), 1), true, i as u16);
        take(&mut d, now, cmd("d2", &format!("w{i}"), 1), false, 0);
        for b in write_all(&mut d) {
            if let Some(live) = b.rewrite {
                rewrites.push(live);
            }
        }
        d.try_send(now, T0, "d1", reach(now, true), WINDOW, i as u16);
        for (_, bytes) in transmits(&mut d) {
            let p = Packet::from_bytes(&bytes).unwrap();
            let mut ack = Packet::new();
            ack.header.set_type(coap_lite::MessageType::Acknowledgement);
            ack.header.message_id = p.header.message_id;
            ack.header.code = MessageClass::Response(coap_lite::ResponseType::Changed);
            ack.set_token(p.get_token().to_vec());
            d.handle_response(addr(), &ack, None).unwrap();
        }
        let (lines, live) = d.journal_sizes();
        assert_eq!(live as usize, d.pending());
        max_lines = max_lines.max(lines);
        // Never more than the bound the module docs state (one batch here is ≤ 3 lines).
        assert!(
            lines <= (2 * live).max(MIN_REWRITE_LINES) + 3,
            "{lines} lines, {live} live"
        );
    }
    assert!(!rewrites.is_empty());
    assert_eq!(d.stats().journal_rewrites as usize, rewrites.len());
    // A rewrite holds exactly the live commands: every one of d2's waiting ones, in order, and
    // d1's latest (not yet answered when the batch was made); none of d1's answered ones.
    let last = rewrites.last().unwrap();
    let d2: Vec<&str> = last
        .iter()
        .filter(|c| c.device == "d2")
        .map(|c| c.req.as_str())
        .collect();
    let expected: Vec<String> = (0..d2.len()).map(|i| format!("w{i}")).collect();
    assert_eq!(d2, expected);
    let d1: Vec<&str> = last
        .iter()
        .filter(|c| c.device == "d1")
        .map(|c| c.req.as_str())
        .collect();
    assert_eq!(d1, vec![format!("r{}", d2.len() - 1)], "only the live one");
    assert!(max_lines >= MIN_REWRITE_LINES);
}

#[test]
fn expiry_walks_the_queues_only_when_a_command_is_due() {
    let now = Instant::now();
    let mut d = Downlink::new([1; 16]);
    let c = expiring("d1", "r", T0 + 1000);
    take(&mut d, now, c, false, 1);
    assert_eq!(d.next_expiry_ms, T0 + 1000);
    d.expire_queued(T0 + 999);
    assert_eq!(d.pending(), 1);
    d.expire_queued(T0 + 1000);
    assert_eq!(d.pending(), 0);
    assert_eq!(d.next_expiry_ms, u64::MAX);
    assert_eq!(results(&mut d)[0].status, "expired");
}

/// [`OSCORE_REQUEST_OVERHEAD`] covers what protecting adds, for the largest requests the edge
/// sends: with and without Observe, payload and options, and a 5-byte Partial IV.
#[test]
fn oscore_overhead_is_bounded() {
    let input = ContextInput {
        master_secret: vec![7; 16],
        master_salt: Vec::new(),
        id_context: None,
        sender_id: Vec::new(),
        recipient_id: vec![1, 2, 3],
    };
    let mut ctx =
        SecurityContext::restore(&input, ContextConfig::default(), MAX_SEQUENCE_NUMBER - 10)
            .unwrap();
    ctx.persisted(MAX_SEQUENCE_NUMBER);
    let mut most = 0;
    for (payload, observe, path) in [
        (0, false, "/a"),
        (0, true, "/a"),
        (1024, false, "/actuators/valve?x=1&y=2"),
        (1000, true, "/s/t?q"),
    ] {
        let mut c = cmd("d", "r", payload);
        c.observe = observe;
        c.accept = observe.then_some(112);
        c.path = path.into();
        let plain = encode_request(&c, 0xffff, &[0xee; 8]).unwrap();
        let packet = Packet::from_bytes(&plain).unwrap();
        let (protected, _) = oscore::protect_request(&mut ctx, &packet).unwrap();
        let bytes = protected.to_bytes().unwrap();
        most = most.max(bytes.len() - plain.len());
        assert!(
            bytes.len() <= plain.len() + OSCORE_REQUEST_OVERHEAD,
            "{} > {} + {OSCORE_REQUEST_OVERHEAD}",
            bytes.len(),
            plain.len()
        );
    }
    assert!(most > 12, "the test protects something: {most}");
}

// ----- empty ACK/RST and tokens (issue 10, point 4) -----

/// Device `i`'s address: one per device.
fn peer(i: u32) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i));
    SocketAddr::new(std::net::IpAddr::V6(ip), 5683)
}

fn reach_at(address: SocketAddr, now: Instant) -> Option<Reachability> {
    Some(Reachability {
        address: address.into(),
        queue_mode: false,
        last_uplink: now,
    })
}

/// A command in flight to each of `n` devices `d0`, `d1`, … (device i at `peer(i)`, its
/// request with message ID i), once the journal is durable.
fn commands_in_flight(n: u32, now: Instant) -> Downlink {
    let mut d = Downlink::new([7; 16]).with_limits(limits(64, n as usize + 1));
    for i in 0..n {
        let device = format!("d{i}");
        let reach = reach_at(peer(i), now);
        d.command(now, T0, cmd(&device, "r1", 4), reach, WINDOW, i as u16);
    }
    while let Some(b) = d.poll_journal() {
        let outcome = JournalWritten::Durable {
            rewritten: b.rewrite.is_some(),
        };
        for device in d.journal_written(b.id, outcome) {
            let i: u32 = device.trim_start_matches('d').parse().unwrap();
            d.try_send(now, T0, &device, reach_at(peer(i), now), WINDOW, i as u16);
        }
    }
    assert_eq!(d.in_flight(), n as usize);
    d
}

/// xorshift64: repeatable "random" spoofed messages.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_empty_acks_among_100_000_commands_in_flight_cost_one_lookup_each() {
    const IN_FLIGHT: u32 = 100_000;
    let now = Instant::now();
    let mut d = commands_in_flight(IN_FLIGHT, now);
    assert_eq!(transmits(&mut d).len(), IN_FLIGHT as usize);
    // 10,000 spoofed empty ACKs: a real device's address, a random message ID.
    let mut rng = 0x9e37_79b9_7f4a_7c15;
    let mut matched = 0u64;
    for _ in 0..10_000 {
        let r = xorshift(&mut rng);
        let p = peer((r % u64::from(IN_FLIGHT)) as u32);
        if d.handle_empty(now, p, (r >> 32) as u16, false).is_some() {
            matched += 1;
        }
    }
    // Bounded work: at most one exchange looked at per message, not 100,000.
    assert!(d.exchanges_examined <= 10_000, "{}", d.exchanges_examined);
    assert_eq!(d.exchanges_examined, matched);
    // The genuine ACKs are found, each with one lookup.
    let before = d.exchanges_examined;
    for i in (0..IN_FLIGHT).step_by(1000) {
        assert_eq!(
            d.handle_empty(now, peer(i), i as u16, false),
            Some(format!("d{i}"))
        );
    }
    assert_eq!(d.exchanges_examined - before, 100);
    // An ACK stops retransmitting; the command stays in flight for its separate response.
    assert_eq!(d.in_flight(), IN_FLIGHT as usize);
    assert_eq!(d.by_message_id.len(), d.in_flight.len());
}

#[test]
fn the_index_follows_exchanges_that_end() {
    let now = Instant::now();
    let mut d = commands_in_flight(2, now);
    // A Reset ends d0's exchange: the index forgets it.
    assert_eq!(d.handle_empty(now, peer(0), 0, true), Some("d0".into()));
    assert_eq!(d.handle_empty(now, peer(0), 0, true), None);
    assert_eq!(d.by_message_id.len(), 1);
    // d1 times out after its retransmissions: forgotten too.
    let mut t = now;
    for _ in 0..=MAX_RETRANSMIT {
        t += Duration::from_secs(100);
        d.handle_timeout(t);
    }
    assert_eq!(d.in_flight(), 0);
    assert!(d.by_message_id.is_empty() && d.by_token.is_empty());
    let statuses: Vec<_> = results(&mut d).iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["reset", "timeout"]);
}

#[test]
fn tokens_are_unpredictable_and_do_not_depend_on_the_message_ids() {
    let now = Instant::now();
    let token_of = |key: [u8; 16], mid: u16| {
        let mut d = Downlink::new(key);
        d.command(
            now,
            T0,
            cmd("a", "_r1", 4),
            reach_at(peer(1), now),
            WINDOW,
            mid,
        );
        d.in_flight["a"].token
    };
    assert_eq!(token_of([1; 16], 5), token_of([1; 16], 6));
    assert_ne!(token_of([1; 16], 5), token_of([2; 16], 5));
    let mut tokens = Tokens {
        key: [3; 16],
        counter: 0,
    };
    let a = tokens.next();
    let b = tokens.next();
    // Not a fixed step from one to the next.
    let step = u64::from_be_bytes(b).wrapping_sub(u64::from_be_bytes(a));
    let c = tokens.next();
    assert_ne!(
        u64::from_be_bytes(b).wrapping_add(step),
        u64::from_be_bytes(c)
    );
}
