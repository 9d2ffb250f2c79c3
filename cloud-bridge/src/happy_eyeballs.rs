//! Happy Eyeballs v2 (RFC 8305) for the bridge's TCP connections.
//!
//! The sans-IO part decides the order and timing of connection attempts: [`interleave`] sorts
//! the resolved addresses IPv6 first and then alternates the families (§4, "First Address
//! Family Count" 1), and [`Schedule`] says when the next attempt starts: one
//! [`CONNECTION_ATTEMPT_DELAY`] after the previous one, or at once when an attempt fails (§5).
//! Attempts that are running go on when the next starts; the first to succeed wins.
//!
//! [`connect`] and [`connect_host`] drive that schedule with tokio: they return the winning
//! `TcpStream` itself (not just its address), and drop (close) every other attempt.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// RFC 8305 §8's recommended Connection Attempt Delay.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// RFC 8305 §8: the delay must not be below 10 ms (100 ms recommended as a floor).
pub const MIN_CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(10);

/// Orders addresses for connection attempts: IPv6 first, then the families alternate
/// (v6, v4, v6, v4, …); what is left of the longer family follows in its order. Within a family
/// the resolver's order is kept; duplicates are dropped.
pub fn interleave(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut v6 = VecDeque::new();
    let mut v4 = VecDeque::new();
    let mut seen = Vec::new();
    for addr in addrs {
        if seen.contains(&addr) {
            continue;
        }
        seen.push(addr);
        if addr.is_ipv6() {
            v6.push_back(addr);
        } else {
            v4.push_back(addr);
        }
    }
    let mut out = Vec::with_capacity(seen.len());
    loop {
        match (v6.pop_front(), v4.pop_front()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// When to start which connection attempt (sans-IO: time is passed in).
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use v6iot_cloud_bridge::happy_eyeballs::Schedule;
/// let t0 = Instant::now();
/// let addrs = ["127.0.0.1:1883".parse().unwrap(), "[::1]:1883".parse().unwrap()];
/// let mut s = Schedule::new(addrs, Duration::from_millis(250), t0);
/// assert_eq!(s.poll_start(t0), Some("[::1]:1883".parse().unwrap()));
/// assert_eq!(s.poll_start(t0), None); // the IPv4 attempt waits
/// assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(250)));
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    pending: VecDeque<SocketAddr>,
    delay: Duration,
    next_start: Instant,
    running: usize,
}

impl Schedule {
    /// A schedule over `addrs` (put in [`interleave`] order), whose first attempt may start at
    /// `now`. `delay` is raised to [`MIN_CONNECTION_ATTEMPT_DELAY`] if below.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, delay: Duration, now: Instant) -> Self {
        Schedule {
            pending: interleave(addrs).into(),
            delay: delay.max(MIN_CONNECTION_ATTEMPT_DELAY),
            next_start: now,
            running: 0,
        }
    }

    /// The address to try now, if an attempt is due; the next one is then due one delay later.
    pub fn poll_start(&mut self, now: Instant) -> Option<SocketAddr> {
        if now < self.next_start {
            return None;
        }
        let addr = self.pending.pop_front()?;
        self.running += 1;
        self.next_start = now + self.delay;
        Some(addr)
    }

    /// An attempt failed at `now`: the next attempt is due at once (RFC 8305 §5).
    pub fn attempt_failed(&mut self, now: Instant) {
        self.running = self.running.saturating_sub(1);
        self.next_start = self.next_start.min(now);
    }

    /// When the next attempt is due, if any address is left to try.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.pending.is_empty()).then_some(self.next_start)
    }

    /// Attempts started and not yet failed.
    pub fn running(&self) -> usize {
        self.running
    }

    /// True when every address has been tried and every attempt has failed.
    pub fn is_exhausted(&self) -> bool {
        self.pending.is_empty() && self.running == 0
    }
}

/// Resolves `host` (a name or an IP literal, without brackets) and [`connect`]s.
pub async fn connect_host(
    host: &str,
    port: u16,
    delay: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve `{host}`: {e}")))?
        .collect();
    connect(addrs, delay).await
}

/// Races TCP connections to `addrs` on the RFC 8305 schedule and returns the first that
/// succeeds, with its address. The error names every address that failed and why.
pub async fn connect(
    addrs: impl IntoIterator<Item = SocketAddr>,
    delay: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut schedule = Schedule::new(addrs, delay, Instant::now());
    if schedule.is_exhausted() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to connect to",
        ));
    }
    let mut attempts = JoinSet::new();
    let mut failures: Vec<String> = Vec::new();
    let mut last_kind = io::ErrorKind::Other;
    loop {
        while let Some(addr) = schedule.poll_start(Instant::now()) {
            tracing::debug!(%addr, "connection attempt");
            attempts.spawn(async move { (addr, attempt(addr).await) });
        }
        if schedule.is_exhausted() {
            return Err(io::Error::new(
                last_kind,
                format!("no address answered: {}", failures.join("; ")),
            ));
        }
        let wake = schedule.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(done) = attempts.join_next() => match done {
                Ok((addr, Ok(stream))) => return Ok((stream, addr)),
                Ok((addr, Err(e))) => {
                    tracing::debug!(%addr, error = %e, "connection attempt failed");
                    last_kind = e.kind();
                    failures.push(format!("{addr}: {e}"));
                    schedule.attempt_failed(Instant::now());
                }
                Err(e) => {
                    failures.push(format!("attempt task: {e}"));
                    schedule.attempt_failed(Instant::now());
                }
            },
            () = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

async fn attempt(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn interleaves_ipv6_first() {
        let got = interleave([
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
            a("10.0.0.3:1"),
            a("[2001:db8::1]:1"),
            a("[2001:db8::2]:1"),
        ]);
        assert_eq!(
            got,
            [
                a("[2001:db8::1]:1"),
                a("10.0.0.1:1"),
                a("[2001:db8::2]:1"),
                a("10.0.0.2:1"),
                a("10.0.0.3:1"),
            ]
        );
    }

    #[test]
    fn interleave_handles_one_family_and_duplicates() {
        assert_eq!(
            interleave([a("10.0.0.1:1"), a("10.0.0.1:1"), a("10.0.0.2:1")]),
            [a("10.0.0.1:1"), a("10.0.0.2:1")]
        );
        assert_eq!(
            interleave([a("[::1]:1"), a("[::2]:1")]),
            [a("[::1]:1"), a("[::2]:1")]
        );
        assert!(interleave([]).is_empty());
    }

    #[test]
    fn attempts_start_one_delay_apart() {
        let t0 = Instant::now();
        let d = Duration::from_millis(250);
        let mut s = Schedule::new([a("127.0.0.1:1"), a("[::1]:1"), a("127.0.0.2:1")], d, t0);
        assert_eq!(s.poll_start(t0), Some(a("[::1]:1")));
        assert_eq!(s.poll_start(t0 + Duration::from_millis(249)), None);
        assert_eq!(s.poll_timeout(), Some(t0 + d));
        assert_eq!(s.poll_start(t0 + d), Some(a("127.0.0.1:1")));
        assert_eq!(s.poll_timeout(), Some(t0 + 2 * d));
        assert_eq!(s.poll_start(t0 + 2 * d), Some(a("127.0.0.2:1")));
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll_start(t0 + 10 * d), None);
        assert_eq!(s.running(), 3);
        assert!(!s.is_exhausted());
        for _ in 0..3 {
            s.attempt_failed(t0 + 3 * d);
        }
        assert!(s.is_exhausted());
    }

    #[test]
    fn a_failure_starts_the_next_attempt_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            [a("[::1]:1"), a("127.0.0.1:1")],
            Duration::from_millis(250),
            t0,
        );
        assert_eq!(s.poll_start(t0), Some(a("[::1]:1")));
        let t_fail = t0 + Duration::from_millis(3);
        s.attempt_failed(t_fail);
        assert_eq!(s.poll_timeout(), Some(t_fail));
        assert_eq!(s.poll_start(t_fail), Some(a("127.0.0.1:1")));
        // a failure does not postpone an attempt that is already due
        let mut s = Schedule::new([a("[::1]:1"), a("127.0.0.1:1")], Duration::ZERO, t0);
        assert_eq!(s.poll_start(t0), Some(a("[::1]:1")));
        assert_eq!(s.poll_timeout(), Some(t0 + MIN_CONNECTION_ATTEMPT_DELAY));
        s.attempt_failed(t0 + Duration::from_secs(1));
        assert_eq!(s.poll_timeout(), Some(t0 + MIN_CONNECTION_ATTEMPT_DELAY));
    }

    #[test]
    fn an_empty_schedule_is_exhausted() {
        let s = Schedule::new([], CONNECTION_ATTEMPT_DELAY, Instant::now());
        assert!(s.is_exhausted());
        assert_eq!(s.poll_timeout(), None);
    }
}
