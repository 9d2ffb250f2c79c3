//! The carrier model, sans-IO: what lies between an emulated modem and the IP network —
//! latency by coverage class, loss, and reachability only while the modem is awake — and
//! [`Cellular`], one [`ModemEmulator`] behind its [`CarrierLink`], the unit both the pty path and
//! the simulated fleet drive.
//!
//! | coverage class | one-way latency (uniform) | typical of |
//! |---|---|---|
//! | CE0 | 0.1–0.5 s | good coverage |
//! | CE1 | 0.5–2 s | indoors |
//! | CE2 | 2–6 s | deep indoor, basements (repetitions: seconds, not milliseconds) |
//!
//! Loss drops a datagram in either direction with the fleet's probability. A downlink datagram
//! reaches the modem only if it is awake when the datagram arrives (after the latency): one
//! sent to a device in PSM is lost, as a real network does not page it. Randomness is seeded
//! per device, so a run is repeatable.
//!
//! [`Cellular`] plays the modem's deadlines and the link's arrivals in the order of their
//! times, whenever its driver gets to them: a datagram that reached the cell before the modem
//! entered PSM is delivered even when the driver looks only after both (a busy simulator
//! thread is late by up to seconds), and one that arrives after is refused.

/// Deadlines and arrivals played in one call at most (a modem whose timers are all zero would
/// otherwise never let time pass).
const MAX_STEPS: usize = 256;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use v6iot_medium::rng::Rng;
/// The carrier's generator under its former name (`SplitMix64(seed)`): the medium's [`Rng`].
pub use v6iot_medium::rng::Rng as SplitMix64;
use v6iot_sdk::time::Instant;

use super::emulator::{EmulatorConfig, EmulatorEvent, ModemEmulator, Uplink};
use crate::link::AddressRequest;

/// Datagrams in flight per direction per device; more are dropped (counted).
pub const MAX_IN_FLIGHT: usize = 32;

/// An NB-IoT coverage enhancement class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// CE0, normal coverage.
    Ce0,
    /// CE1, extended.
    Ce1,
    /// CE2, extreme.
    Ce2,
}

impl Coverage {
    /// The one-way latency range of the class (see the module docs).
    pub fn latency(self) -> Latency {
        let (min, max) = match self {
            Coverage::Ce0 => (100, 500),
            Coverage::Ce1 => (500, 2000),
            Coverage::Ce2 => (2000, 6000),
        };
        Latency {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        }
    }

    /// `ce0`, `ce1`, `ce2`.
    pub fn parse(s: &str) -> Option<Coverage> {
        match s.to_ascii_lowercase().as_str() {
            "ce0" => Some(Coverage::Ce0),
            "ce1" => Some(Coverage::Ce1),
            "ce2" => Some(Coverage::Ce2),
            _ => None,
        }
    }
}

/// A one-way latency range; each datagram takes a uniform draw from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl Latency {
    /// Always `d`.
    pub fn fixed(d: Duration) -> Latency {
        Latency { min: d, max: d }
    }
}

/// The coverage of a fleet's devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CoverageMix {
    /// Every device in one class.
    All(Coverage),
    /// 70 % CE0, 20 % CE1, 10 % CE2 (device by device, seeded).
    Mixed,
    /// Every device with this latency (tests).
    Fixed(Latency),
}

impl CoverageMix {
    /// `ce0`, `ce1`, `ce2` or `mixed`.
    pub fn parse(s: &str) -> Option<CoverageMix> {
        if s.eq_ignore_ascii_case("mixed") {
            return Some(CoverageMix::Mixed);
        }
        Coverage::parse(s).map(CoverageMix::All)
    }
}

/// The carrier of a fleet: per-fleet settings from which each device's link is made.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierPlan {
    /// Coverage classes.
    pub coverage: CoverageMix,
    /// Probability that a datagram is lost, each direction.
    pub loss: f64,
    /// The emulated modems' behaviour (attach delay, re-addressing after sleep, granted timers).
    pub emulator: EmulatorConfig,
    /// The share of devices (0 to 1, chosen by the seed) that get a new address after every
    /// sleep, besides all of them when `emulator.readdress_after_sleep` is set.
    pub readdress_share: f64,
    /// Seed of every device's randomness (device n uses `seed + n`).
    pub seed: u64,
}

impl CarrierPlan {
    /// Device `n`'s carrier link.
    pub fn link(&self, n: u64) -> CarrierLink {
        let mut rng = Rng::new(
            self.seed
                .wrapping_add(n)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let latency = match self.coverage {
            CoverageMix::All(c) => c.latency(),
            CoverageMix::Fixed(l) => l,
            CoverageMix::Mixed => match rng.below(10) {
                0..=6 => Coverage::Ce0.latency(),
                7 | 8 => Coverage::Ce1.latency(),
                _ => Coverage::Ce2.latency(),
            },
        };
        CarrierLink::new(latency, self.loss, rng)
    }

    /// Device `n`: its modem behind its link.
    pub fn cellular(&self, n: u64) -> Cellular {
        let mut config = self.emulator.clone();
        if self.readdress_share > 0.0 {
            let mut rng = Rng::new(self.seed ^ n.wrapping_mul(0xd6e8_feb8_6659_fd93));
            config.readdress_after_sleep |= rng.chance(self.readdress_share);
        }
        Cellular::new(ModemEmulator::new(config), self.link(n))
    }
}

/// What a carrier link counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CarrierStats {
    /// Uplink datagrams lost.
    pub lost_up: u64,
    /// Downlink datagrams lost.
    pub lost_down: u64,
    /// Datagrams dropped because [`MAX_IN_FLIGHT`] were in flight.
    pub overflow: u64,
}

/// One device's radio path: datagrams delayed (in order) and sometimes lost.
#[derive(Debug, Clone)]
pub struct CarrierLink {
    latency: Latency,
    loss: f64,
    rng: Rng,
    up: VecDeque<(Instant, Uplink)>,
    down: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    stats: CarrierStats,
}

impl CarrierLink {
    /// A link with this latency and loss.
    pub fn new(latency: Latency, loss: f64, rng: Rng) -> CarrierLink {
        CarrierLink {
            latency,
            loss,
            rng,
            up: VecDeque::new(),
            down: VecDeque::new(),
            stats: CarrierStats::default(),
        }
    }

    /// The latency range.
    pub fn latency(&self) -> Latency {
        self.latency
    }

    /// What it counted.
    pub fn stats(&self) -> &CarrierStats {
        &self.stats
    }

    /// When this datagram arrives, or `None` when it is lost. Datagrams never overtake each
    /// other on one link.
    fn arrival(&mut self, now: Instant, last: Option<Instant>) -> Option<Instant> {
        if self.rng.chance(self.loss) {
            return None;
        }
        let spread = self.latency.max.saturating_sub(self.latency.min);
        let jitter = spread.mul_f64(self.rng.unit());
        let at = now + self.latency.min + jitter;
        Some(last.map_or(at, |l| at.max(l)))
    }

    /// A datagram from the modem towards the network.
    pub fn uplink(&mut self, now: Instant, uplink: Uplink) {
        if self.up.len() >= MAX_IN_FLIGHT {
            self.stats.overflow += 1;
            return;
        }
        match self.arrival(now, self.up.back().map(|x| x.0)) {
            Some(at) => self.up.push_back((at, uplink)),
            None => self.stats.lost_up += 1,
        }
    }

    /// A datagram from the network towards the modem.
    pub fn downlink(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.down.len() >= MAX_IN_FLIGHT {
            self.stats.overflow += 1;
            return;
        }
        match self.arrival(now, self.down.back().map(|x| x.0)) {
            Some(at) => self.down.push_back((at, from, bytes.to_vec())),
            None => self.stats.lost_down += 1,
        }
    }

    /// The next arrival.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.up.front().map(|x| x.0), self.down.front().map(|x| x.0)]
            .into_iter()
            .flatten()
            .min()
    }

    /// An uplink datagram that has arrived at the network by `now`.
    pub fn poll_up(&mut self, now: Instant) -> Option<Uplink> {
        (self.up.front()?.0 <= now)
            .then(|| self.up.pop_front().map(|x| x.1))
            .flatten()
    }

    /// A downlink datagram that has reached the modem's cell by `now`.
    pub fn poll_down(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        (self.down.front()?.0 <= now)
            .then(|| self.down.pop_front().map(|(_, from, bytes)| (from, bytes)))
            .flatten()
    }
}

/// One emulated modem behind its carrier link: serial bytes on one side, datagrams from and to
/// the device's address on the other. Sans-IO.
#[derive(Debug)]
pub struct Cellular {
    /// The modem.
    pub modem: ModemEmulator,
    /// Its radio path.
    pub carrier: CarrierLink,
    address_request: Option<AddressRequest>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Cellular {
    /// `modem` behind `carrier`.
    pub fn new(modem: ModemEmulator, carrier: CarrierLink) -> Cellular {
        Cellular {
            modem,
            carrier,
            address_request: None,
            out: VecDeque::new(),
        }
    }

    /// Bytes from the device's MCU (or a terminal).
    pub fn handle_serial(&mut self, now: Instant, bytes: &[u8]) {
        self.advance(now);
        self.modem.handle_serial(now, bytes);
        self.pump(now);
    }

    /// Bytes for the device's serial line.
    pub fn poll_serial(&mut self) -> Option<Vec<u8>> {
        self.modem.poll_serial()
    }

    /// A datagram from the network for the device's address.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.advance(now);
        self.carrier.downlink(now, from, bytes);
        self.pump(now);
    }

    /// A datagram to send from the device's address.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The modem wants an address from the link (see [`EmulatorEvent::NeedAddress`]).
    pub fn poll_address_request(&mut self) -> Option<AddressRequest> {
        self.address_request.take()
    }

    /// The link's answer to [`Cellular::poll_address_request`].
    pub fn handle_address(&mut self, now: Instant, address: Ipv6Addr) {
        self.advance(now);
        self.modem.assign_address(now, address);
        self.pump(now);
    }

    /// The next of the modem's and the carrier's deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.modem.poll_timeout(), self.carrier.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Lets time pass for both.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.pump(now);
    }

    /// Plays what fell due by `now` in the order of its times, each at its own time: the
    /// modem's deadlines (attach done, PSM entered, TAU) and the link's arrivals.
    fn advance(&mut self, now: Instant) {
        for _ in 0..MAX_STEPS {
            let modem = self.modem.poll_timeout().filter(|t| *t <= now);
            let link = self.carrier.poll_timeout().filter(|t| *t <= now);
            match (modem, link) {
                (Some(m), Some(l)) if l <= m => self.pump(l),
                (Some(m), _) => {
                    self.modem.handle_timeout(m);
                    self.pump(m);
                }
                (None, Some(l)) => self.pump(l),
                (None, None) => return,
            }
        }
    }

    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.modem.poll_event() {
            if let EmulatorEvent::NeedAddress { fresh } = event {
                self.address_request = Some(if fresh {
                    AddressRequest::Fresh
                } else {
                    AddressRequest::Current
                });
            }
        }
        while let Some(uplink) = self.modem.poll_uplink() {
            self.carrier.uplink(now, uplink);
        }
        while let Some((from, bytes)) = self.carrier.poll_down(now) {
            // Refusals (asleep, no socket) are counted by the modem.
            let _ = self.modem.handle_downlink(now, from, &bytes);
        }
        while let Some(uplink) = self.carrier.poll_up(now) {
            self.out.push_back((uplink.to, uplink.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn latency_by_class_in_order_and_seeded() {
        for (coverage, lo, hi) in [
            (Coverage::Ce0, 100, 500),
            (Coverage::Ce1, 500, 2000),
            (Coverage::Ce2, 2000, 6000),
        ] {
            let plan = CarrierPlan {
                coverage: CoverageMix::All(coverage),
                loss: 0.0,
                emulator: EmulatorConfig::default(),
                readdress_share: 0.0,
                seed: 7,
            };
            let mut link = plan.link(3);
            let to: SocketAddr = "[::1]:1".parse().unwrap();
            for i in 0..100u8 {
                link.uplink(t(0), Uplink { to, bytes: vec![i] });
                if link.up.len() == MAX_IN_FLIGHT {
                    break;
                }
            }
            let mut last = t(0);
            let mut got = Vec::new();
            while let Some(at) = link.poll_timeout() {
                assert!(at >= last, "in order");
                let u = link.poll_up(at).unwrap();
                assert!((t(lo)..=t(hi)).contains(&at), "{coverage:?} {at:?}");
                got.push(u.bytes[0]);
                last = at;
            }
            assert_eq!(got, (0..MAX_IN_FLIGHT as u8).collect::<Vec<_>>());
            assert_eq!(link.stats().overflow, 0);
            // The same seed gives the same draws.
            let mut a = plan.link(3);
            let mut b = plan.link(3);
            a.uplink(t(0), Uplink { to, bytes: vec![] });
            b.uplink(t(0), Uplink { to, bytes: vec![] });
            assert_eq!(a.poll_timeout(), b.poll_timeout());
        }
    }

    #[test]
    fn loss_drops_about_its_share_and_counts_it() {
        let mut link = CarrierLink::new(Latency::fixed(Duration::ZERO), 0.25, Rng::new(1));
        let from: SocketAddr = "[::1]:1".parse().unwrap();
        let mut arrived = 0;
        for _ in 0..4000 {
            link.downlink(t(0), from, b"x");
            while link.poll_down(t(0)).is_some() {
                arrived += 1;
            }
        }
        let lost = link.stats().lost_down;
        assert_eq!(arrived + lost, 4000);
        assert!((800..1200).contains(&lost), "{lost}");
    }

    /// Sends a command line to `c`'s modem, returns what it wrote.
    fn at(c: &mut Cellular, now: Instant, line: &str) -> String {
        c.handle_serial(now, format!("{line}\r").as_bytes());
        String::from_utf8(c.poll_serial().unwrap_or_default()).unwrap()
    }

    /// A modem behind a 500 ms link, PSM with 10 s of active time, attached at 2 s, socket 0
    /// open, its last datagram sent at 3 s: it enters PSM at 13 s.
    fn awake_until_13_s() -> Cellular {
        let link = CarrierLink::new(Latency::fixed(Duration::from_millis(500)), 0.0, Rng::new(1));
        let mut c = Cellular::new(ModemEmulator::new(EmulatorConfig::default()), link);
        for line in [
            "ATE0",
            "AT+CGDCONT=1,\"IPV6\",\"iot\"",
            "AT+CPSMS=1,,,\"00111000\",\"00000101\"",
            "AT+CGATT=1",
        ] {
            assert!(at(&mut c, t(0), line).ends_with("OK\r\n"), "{line}");
        }
        c.handle_timeout(t(2000));
        assert_eq!(c.poll_address_request(), Some(AddressRequest::Current));
        c.handle_address(t(2000), "2001:db8:100::7".parse().unwrap());
        assert!(at(&mut c, t(2000), "AT+NSOCR=DGRAM,17,5683,1").ends_with("OK\r\n"));
        assert!(at(&mut c, t(3000), "AT+NSOST=0,2001:db8::1,5683,1,41").ends_with("OK\r\n"));
        assert!(c.modem.is_reachable());
        c
    }

    /// The driver of a busy simulator thread looks at a device late, after both a datagram
    /// reached the cell (at 12.9 s) and the modem's active time ended (13 s): the datagram
    /// came first, so it is delivered (and the active time runs again from 12.9 s); one that
    /// reaches the cell after the modem entered PSM is refused, however late the driver looks.
    #[test]
    fn deadlines_and_arrivals_play_in_the_order_of_their_times_when_the_driver_is_late() {
        let mut c = awake_until_13_s();
        let edge: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        c.handle_datagram(t(12_400), edge, b"in time");
        c.handle_timeout(t(15_000));
        assert_eq!(c.poll_transmit().map(|x| x.1), Some(b"A".to_vec()));
        let stats = *c.modem.stats();
        assert_eq!((stats.downlinks, stats.unreachable), (1, 0), "{stats:?}");
        assert!(c.modem.is_reachable(), "awake until 22.9 s");
        let urc = String::from_utf8(c.poll_serial().unwrap()).unwrap();
        assert_eq!(urc, "\r\n+NSONMI: 0,7\r\n");

        // Sent at 22.5 s, at the cell at 23 s: PSM came at 22.9 s.
        c.handle_datagram(t(22_500), edge, b"late");
        c.handle_timeout(t(30_000));
        let stats = *c.modem.stats();
        assert_eq!(
            (stats.downlinks, stats.unreachable, stats.sleeps),
            (1, 1, 1),
            "{stats:?}"
        );
        assert!(c.modem.is_sleeping());
    }

    #[test]
    fn a_mixed_fleet_has_every_class() {
        let plan = CarrierPlan {
            coverage: CoverageMix::Mixed,
            loss: 0.0,
            emulator: EmulatorConfig::default(),
            readdress_share: 0.0,
            seed: 1,
        };
        let mut ce2 = 0;
        let mut ce0 = 0;
        for n in 0..1000 {
            match plan.link(n).latency().min.as_millis() {
                100 => ce0 += 1,
                2000 => ce2 += 1,
                _ => {}
            }
        }
        assert!((600..800).contains(&ce0), "{ce0}");
        assert!((50..150).contains(&ce2), "{ce2}");
    }
}
