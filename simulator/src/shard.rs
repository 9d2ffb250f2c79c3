//! The fleet's multi-device driver: one OS thread drives many SDK [`Device`]s, each on its own
//! non-blocking UDP socket (its own source port, as the edge must see it), with one `epoll` set
//! for all the sockets and one timer heap for all the deadlines.
//!
//! It does what the SDK's tokio driver (`v6iot_sdk::driver`) does for one device — move
//! datagrams between the socket and the sans-IO core, wake the core at its deadline, write the
//! OSCORE sequence-number marks it asks for before confirming them — but one `epoll_wait` hands
//! it every socket that is ready, so a load generator pays one wake-up for many datagrams instead
//! of one task wake-up, timer and `select!` per datagram. All protocol decisions stay in the core.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use v6iot_sdk::coap::{App, Device};
use v6iot_sdk::store::MarkStore;

/// Largest datagram a member receives; CoAP over UDP stays far below it.
const MAX_DATAGRAM: usize = 64 * 1024;

/// How long a member waits before it tries again to store a mark that failed to store.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Ready sockets taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// The shortest time between two `epoll_wait`s while datagrams keep coming: a busy shard
/// sleeps out the rest of this after a pass, so that one wake-up takes a batch of datagrams
/// (about rate × `PACE` of them) instead of a few. Deadlines are met up to this late.
pub const PACE: Duration = Duration::from_millis(2);

/// One device of a shard: the sans-IO core, its socket and its mark store.
pub struct Member<S: App> {
    /// The device.
    pub device: Device<S>,
    socket: UdpSocket,
    /// The peer the socket is connected to: datagrams to it go out with `send`, which skips
    /// the address and route lookup of `send_to`.
    connected: Option<SocketAddr>,
    store: Box<dyn MarkStore + Send>,
    /// The earliest entry the timer heap holds for this member; entries that differ are stale.
    /// A later deadline is not pushed while an earlier entry is queued: when that entry comes
    /// due the member's real deadline is read again (so the heap holds about one entry per
    /// member, not one per change of deadline).
    queued: Option<Instant>,
    retry_store_at: Option<Instant>,
    /// The socket failed for good; the member is out of the loop.
    dead: bool,
}

impl<S: App> std::fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("socket", &self.socket)
            .field("queued", &self.queued)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl<S: App> Member<S> {
    /// `device` on `socket` (made non-blocking here; connected or not), writing its marks to
    /// `store`.
    pub fn new(
        device: Device<S>,
        socket: UdpSocket,
        store: Box<dyn MarkStore + Send>,
    ) -> io::Result<Member<S>> {
        socket.set_nonblocking(true)?;
        let connected = socket.peer_addr().ok();
        Ok(Member {
            device,
            socket,
            connected,
            store,
            queued: None,
            retry_store_at: None,
            dead: false,
        })
    }
}

/// What a shard counted besides what its devices count.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    /// `epoll_wait` calls that returned.
    pub waits: u64,
    /// Pauses of [`PACE`] taken while busy.
    pub pauses: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams dropped because the send failed (the core retransmits Confirmable ones).
    pub send_failures: u64,
    /// Members whose socket failed for good.
    pub dead: u64,
}

/// Runs every member until `stop`, then hands the members back (their devices hold the
/// counters). Protocol events are logged at debug level.
pub fn run<S: App>(
    mut members: Vec<Member<S>>,
    stop: Instant,
) -> io::Result<(Vec<Member<S>>, ShardStats)> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, m) in members.iter().enumerate() {
        epoll.add(
            m.socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
        )?;
    }
    let mut stats = ShardStats::default();
    let mut timers: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
    let mut due = Vec::new();
    let now = Instant::now();
    for (i, m) in members.iter_mut().enumerate() {
        flush(m, i, now, &mut timers, &mut stats);
    }
    // When the last wait returned datagrams, the shard was busy then.
    let mut busy_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        // Every deadline that has come, each member once per pass: one that asks to be woken
        // again at once (or in the past) waits for the next pass, after the sockets.
        due.clear();
        while let Some(&Reverse((t, i))) = timers.peek() {
            if t > now {
                break;
            }
            timers.pop();
            due.push((t, i));
        }
        for &(t, i) in &due {
            let Some(m) = members.get_mut(i) else {
                continue;
            };
            if m.queued != Some(t) || m.dead {
                continue; // stale: an earlier entry replaced it
            }
            m.queued = None;
            if deadline(m).is_some_and(|d| d <= now) {
                m.device.handle_timeout(now);
                flush(m, i, now, &mut timers, &mut stats);
            } else {
                arm(m, i, &mut timers); // the deadline moved later since this entry
            }
        }
        let next = timers.peek().map_or(stop, |r| r.0.0.min(stop));
        // Busy: let datagrams gather for the rest of the pace before looking at the sockets.
        if let Some(rest) =
            busy_since.and_then(|b| (b + PACE).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(rest.min(stop.saturating_duration_since(Instant::now())));
            stats.pauses += 1;
        }
        let woke_at = Instant::now();
        let wait = next.saturating_duration_since(woke_at);
        // Whole milliseconds, rounded up so a deadline is never polled for early in a loop.
        let ms = wait.as_micros().div_ceil(1000).min(1000) as u16;
        let n = match epoll.wait(&mut events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        stats.waits += 1;
        let now = Instant::now();
        busy_since = (n > 0).then_some(now);
        for ev in events.get(..n).unwrap_or_default() {
            let i = ev.data() as usize;
            let Some(m) = members.get_mut(i) else {
                continue;
            };
            if m.dead {
                continue;
            }
            // One datagram per ready socket and wait: a device has one request in flight, so
            // there is rarely a second, and level-triggered `epoll` reports the socket again
            // if there is (reading on until `EWOULDBLOCK` would cost a failing call per socket).
            match m.socket.recv_from(&mut buf) {
                Ok((len, peer)) => {
                    stats.received += 1;
                    if let Some(bytes) = buf.get(..len) {
                        m.device.handle_datagram(now, peer, bytes);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if v6iot_sdk::driver::is_transient(&e) => {
                    tracing::debug!(error = %e, "transient receive error");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "device socket failed; the device stops");
                    m.dead = true;
                    stats.dead += 1;
                    let _ = epoll.delete(m.socket.as_fd());
                }
            }
            if !m.dead {
                flush(m, i, now, &mut timers, &mut stats);
            }
        }
    }
    Ok((members, stats))
}

/// Takes everything the member's device has to hand out after an input: events, OSCORE state
/// to store, datagrams to send; then arms its next deadline.
fn flush<S: App>(
    m: &mut Member<S>,
    i: usize,
    now: Instant,
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    stats: &mut ShardStats,
) {
    while let Some(event) = m.device.poll_event() {
        tracing::debug!(?event, "device event");
    }
    if m.retry_store_at.is_some_and(|t| t <= now) {
        m.retry_store_at = None;
    }
    if m.retry_store_at.is_none() {
        while let Some(state) = m.device.state_to_persist() {
            match m.store.store(state) {
                Ok(()) => m.device.state_persisted(now, state),
                Err(e) => {
                    tracing::error!(?state, error = %e, "cannot store the OSCORE state (sequence-number mark, replay floor); messages wait");
                    m.retry_store_at = Some(now + STORE_RETRY);
                    break;
                }
            }
        }
    }
    while let Some(t) = m.device.poll_transmit() {
        let sent = if m.connected == Some(t.destination) {
            m.socket.send(&t.contents)
        } else {
            m.socket.send_to(&t.contents, t.destination)
        };
        match sent {
            Ok(_) => stats.sent += 1,
            Err(e) => {
                stats.send_failures += 1;
                tracing::warn!(peer = %t.destination, error = %e, "send failed; datagram dropped");
            }
        }
    }
    arm(m, i, timers);
}

/// The member's next deadline: its device's, or the retry of a mark that failed to store.
fn deadline<S: App>(m: &Member<S>) -> Option<Instant> {
    match (m.device.poll_timeout(), m.retry_store_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Queues the member's deadline unless an entry at or before it is queued already.
fn arm<S: App>(m: &mut Member<S>, i: usize, timers: &mut BinaryHeap<Reverse<(Instant, usize)>>) {
    if let Some(t) = deadline(m)
        && m.queued.is_none_or(|q| t < q)
    {
        m.queued = Some(t);
        timers.push(Reverse((t, i)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{self, FleetCounters, FleetPlan, FleetSensor, WallClock};
    use std::sync::Arc;
    use v6iot_sdk::store::NoStore;
    use v6iot_sdk::uplink::Binding;

    /// A plain stand-in edge on its own thread: answers every registration with 2.01 and every
    /// report with 2.04 (piggybacked), until `stop`; returns the reports it answered.
    fn stand_in_edge(
        socket: UdpSocket,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
        use std::sync::atomic::Ordering;
        std::thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut reports = 0;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let p = Packet::from_bytes(&buf[..len]).unwrap();
                let path: Vec<Vec<u8>> = p
                    .get_option(CoapOption::UriPath)
                    .map(|l| l.iter().cloned().collect())
                    .unwrap_or_default();
                let mut r = Packet::new();
                r.header.set_type(MessageType::Acknowledgement);
                r.header.message_id = p.header.message_id;
                r.set_token(p.get_token().to_vec());
                let code = match (p.header.code, path.as_slice()) {
                    (MessageClass::Request(RequestType::Post), [rd]) if rd == b"rd" => {
                        r.add_option(CoapOption::LocationPath, b"rd".to_vec());
                        r.add_option(
                            CoapOption::LocationPath,
                            peer.port().to_string().into_bytes(),
                        );
                        ResponseType::Created
                    }
                    (MessageClass::Request(RequestType::Post), [t]) if t == b"t" => {
                        reports += 1;
                        ResponseType::Changed
                    }
                    _ => ResponseType::NotFound,
                };
                r.header.code = MessageClass::Response(code);
                socket.send_to(&r.to_bytes().unwrap(), peer).unwrap();
            }
            reports
        })
    }

    /// The plan's devices, each on its own socket bound to `bind` (connected to `edge` if given).
    fn fleet_members(
        plan: &FleetPlan,
        start: Instant,
        counters: &Arc<FleetCounters>,
        bind: &str,
        edge: Option<SocketAddr>,
    ) -> Vec<Member<FleetSensor>> {
        let tree = fleet::tree().unwrap();
        (0..plan.devices)
            .map(|n| {
                let device = fleet::device(
                    plan,
                    n,
                    start,
                    tree.clone(),
                    counters.clone(),
                    WallClock::now(),
                    None,
                );
                let socket = UdpSocket::bind(bind).unwrap();
                if let Some(edge) = edge {
                    socket.connect(edge).unwrap();
                }
                Member::new(device, socket, Box::new(NoStore)).unwrap()
            })
            .collect()
    }

    /// Devices on sockets connected to a live edge: every report made is sent and acknowledged
    /// exactly once, and a busy shard takes its datagrams in batches (far fewer waits than
    /// datagrams, pauses taken).
    #[test]
    fn connected_devices_report_exactly_and_a_busy_shard_batches_its_wake_ups() {
        let edge_socket = UdpSocket::bind("[::1]:0").unwrap();
        let edge = edge_socket.local_addr().unwrap();
        let stop_edge = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = stand_in_edge(edge_socket, stop_edge.clone());
        let plan = FleetPlan {
            edge,
            devices: 50,
            rate: 5000.0,
            duration: Duration::from_millis(800),
            id_prefix: "b".into(),
            binding: Binding::U,
        };
        let counters = Arc::new(FleetCounters::default());
        let start = Instant::now();
        let members = fleet_members(&plan, start, &counters, "[::1]:0", Some(edge));
        assert!(members.iter().all(|m| m.connected == Some(edge)));
        // Reports stop at 800 ms; the last answers are in well before 1.3 s.
        let (members, stats) = run(members, start + Duration::from_millis(1300)).unwrap();
        stop_edge.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = answered.join().unwrap();
        let mut total = v6iot_sdk::uplink::ReportStats::default();
        for m in &members {
            assert_eq!(
                m.device.reporter().unwrap().queued(),
                0,
                "nothing left behind"
            );
            fleet::add_stats(&mut total, m.device.reporter().unwrap().stats());
        }
        let made = counters.made.load(std::sync::atomic::Ordering::Relaxed);
        // 5000/s from 200 ms (after registering) to 800 ms: about 3000 reports.
        assert!((2500..=3100).contains(&made), "{made}");
        assert_eq!(total.queued, made);
        assert_eq!((total.acked, total.sent, answered), (made, made, made));
        assert_eq!((total.timeouts, total.rejected, total.busy), (0, 0, 0));
        assert_eq!(stats.send_failures, 0);
        assert_eq!(stats.received, stats.sent, "one answer per request");
        assert!(stats.pauses > 0, "{stats:?}");
        assert!(
            stats.waits * 4 < stats.received,
            "one wait per few datagrams, not per datagram: {stats:?}"
        );
    }

    /// Devices whose edge never answers (their datagrams go to a closed port) keep retrying
    /// registration; the shard still sends, counts, and returns at `stop`.
    #[test]
    fn runs_many_devices_until_stop_with_no_edge() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let edge = closed.local_addr().unwrap();
        drop(closed);
        let plan = FleetPlan {
            edge,
            devices: 3,
            rate: 30.0,
            duration: Duration::from_millis(300),
            id_prefix: "t".into(),
            binding: Binding::U,
        };
        let counters = Arc::new(FleetCounters::default());
        let start = Instant::now();
        let members = fleet_members(&plan, start, &counters, "127.0.0.1:0", None);
        let stop = start + Duration::from_millis(600);
        let (members, stats) = run(members, stop).unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(members.len(), 3);
        // Each device sent its registration at least once, and nothing came back.
        assert!(stats.sent >= 3, "{stats:?}");
        assert_eq!(stats.received, 0, "{stats:?}");
        assert!(members.iter().all(|m| {
            m.device
                .registration()
                .is_some_and(|r| r.registrations() == 0)
        }));
    }
}
