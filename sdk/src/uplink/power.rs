//! Power saving of a queue-mode device (`b=UQ`), sans-IO: when it listens and when it sleeps.
//!
//! A device in power saving mode (NB-IoT PSM) is reachable only for its *active time* after
//! radio traffic; then the network stops paging it until its next uplink or its periodic TAU.
//! [`PowerSaving`] follows that: after every datagram sent or received the device listens for
//! the active time; once that has passed and nothing is in flight it sleeps until its next own
//! work (a report, a registration update, a retry) or its periodic TAU, whichever comes first.
//! Waking for the TAU, the device sends its registration update so the edge router gets a
//! listening window for queued commands ([`WakeReason::PeriodicTau`]).
//!
//! Sleep changes nothing in the device's state: OSCORE sequence numbers and replay window,
//! queued reports, the registration all stay as they are; asleep, the driver just does not wake
//! the core for anything but the wake-up time (a firmware would stop its clocks and the modem
//! would be in PSM). Traffic that arrives anyway wakes it ([`WakeReason::Traffic`]).

use core::time::Duration;

use crate::time::Instant;

/// How long to listen, how often to wake at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerConfig {
    /// Listening time after each exchange (T3324, the active time).
    pub active_time: Duration,
    /// The periodic TAU (T3412): the longest sleep; `None` when deactivated.
    pub periodic_tau: Option<Duration>,
}

/// Why the device woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// Its own work was due (a report, a registration update, a retry).
    Work,
    /// Its periodic TAU was due.
    PeriodicTau,
    /// A datagram came or went while it slept.
    Traffic,
}

/// What power saving counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PowerStats {
    /// Times the device went to sleep.
    pub sleeps: u64,
    /// Wake-ups for its own work.
    pub wakes_for_work: u64,
    /// Wake-ups for the periodic TAU.
    pub wakes_for_tau: u64,
    /// Wake-ups by traffic.
    pub wakes_by_traffic: u64,
    /// Time spent asleep (finished sleeps).
    pub asleep: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Listening until `until`; `passed` once that time has been handled.
    Awake { until: Instant, passed: bool },
    /// Asleep since `since`, until `until` (never, without work or TAU); `tau` when `until`
    /// is the TAU.
    Asleep {
        since: Instant,
        until: Option<Instant>,
        tau: bool,
    },
}

/// The listen/sleep decisions of one device. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PowerSaving {
    config: PowerConfig,
    state: State,
    /// The periodic TAU runs from the last radio activity.
    tau_from: Instant,
    stats: PowerStats,
}

impl PowerSaving {
    /// Awake from `now`, not yet listening (the first exchange starts the active time).
    pub fn new(now: Instant, config: PowerConfig) -> PowerSaving {
        PowerSaving {
            state: State::Awake {
                until: now,
                passed: true,
            },
            config,
            tau_from: now,
            stats: PowerStats::default(),
        }
    }

    /// The timers in force.
    pub fn config(&self) -> PowerConfig {
        self.config
    }

    /// Takes the timers the network granted (they may differ from those asked for).
    pub fn set_network_timers(
        &mut self,
        active_time: Option<Duration>,
        periodic_tau: Option<Duration>,
    ) {
        if let Some(a) = active_time {
            self.config.active_time = a;
        }
        self.config.periodic_tau = periodic_tau;
    }

    /// A datagram was sent or received at `now`: listen for the active time from now (waking
    /// up first if asleep; that wake-up is returned).
    pub fn activity(&mut self, now: Instant) -> Option<WakeReason> {
        let woke = self
            .is_asleep()
            .then(|| self.wake(now, WakeReason::Traffic));
        // Every exchange restarts the active time (T3324 runs from the last one).
        self.state = State::Awake {
            until: now + self.config.active_time,
            passed: false,
        };
        self.tau_from = now;
        woke
    }

    /// Goes to sleep if the listening time is over and the device is `idle` (nothing in
    /// flight); it sleeps until `next_work` or the periodic TAU, whichever is first. Returns the
    /// wake-up time (`Some(None)`: no wake-up is due at all) when it fell asleep.
    pub fn poll_sleep(
        &mut self,
        now: Instant,
        idle: bool,
        next_work: Option<Instant>,
    ) -> Option<Option<Instant>> {
        let State::Awake { until, .. } = self.state else {
            return None;
        };
        if !idle || until > now {
            return None;
        }
        let tau = self
            .config
            .periodic_tau
            .and_then(|t| self.tau_from.checked_add(t));
        let (wake, for_tau) = match (next_work, tau) {
            (Some(w), Some(t)) if t < w => (Some(t), true),
            (None, Some(t)) => (Some(t), true),
            (w, _) => (w, false),
        };
        self.state = State::Asleep {
            since: now,
            until: wake,
            tau: for_tau,
        };
        self.stats.sleeps += 1;
        Some(wake)
    }

    /// When [`PowerSaving::handle_timeout`] is due: the end of listening, or the wake-up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Awake { until, passed } => (!passed).then_some(until),
            State::Asleep { until, .. } => until,
        }
    }

    /// Lets time pass; returns why the device woke, if it did.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<WakeReason> {
        match self.state {
            State::Awake {
                until,
                passed: false,
            } if until <= now => {
                self.state = State::Awake {
                    until,
                    passed: true,
                };
                None
            }
            State::Asleep {
                until: Some(until),
                tau,
                ..
            } if until <= now => {
                let reason = if tau {
                    WakeReason::PeriodicTau
                } else {
                    WakeReason::Work
                };
                Some(self.wake(now, reason))
            }
            _ => None,
        }
    }

    fn wake(&mut self, now: Instant, reason: WakeReason) -> WakeReason {
        if let State::Asleep { since, .. } = self.state {
            self.stats.asleep += now - since;
        }
        match reason {
            WakeReason::Work => self.stats.wakes_for_work += 1,
            WakeReason::PeriodicTau => self.stats.wakes_for_tau += 1,
            WakeReason::Traffic => self.stats.wakes_by_traffic += 1,
        }
        // Awake, but not listening: traffic (the report that woke it) starts the active time.
        self.state = State::Awake {
            until: now,
            passed: true,
        };
        reason
    }

    /// Asleep now.
    pub fn is_asleep(&self) -> bool {
        matches!(self.state, State::Asleep { .. })
    }

    /// What it counted.
    pub fn stats(&self) -> &PowerStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn config() -> PowerConfig {
        PowerConfig {
            active_time: Duration::from_secs(20),
            periodic_tau: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn listens_for_the_active_time_after_traffic_then_sleeps_until_its_work() {
        let mut p = PowerSaving::new(at(0), config());
        p.activity(at(0));
        assert_eq!(
            p.poll_sleep(at(5), true, Some(at(300))),
            None,
            "still listening"
        );
        p.activity(at(10));
        assert_eq!(p.poll_timeout(), Some(at(30)));
        assert_eq!(p.handle_timeout(at(30)), None);
        assert_eq!(
            p.poll_timeout(),
            None,
            "the end of listening is handled once"
        );
        assert_eq!(
            p.poll_sleep(at(30), false, Some(at(300))),
            None,
            "busy: stays awake"
        );
        assert_eq!(
            p.poll_sleep(at(31), true, Some(at(300))),
            Some(Some(at(300)))
        );
        assert!(p.is_asleep());
        assert_eq!(p.poll_timeout(), Some(at(300)));
        assert_eq!(p.handle_timeout(at(299)), None);
        assert_eq!(p.handle_timeout(at(300)), Some(WakeReason::Work));
        assert!(!p.is_asleep());
        assert_eq!(p.stats().asleep, Duration::from_secs(269));
        // Awake for its work, the report that follows starts a new active time.
        p.activity(at(300));
        assert_eq!(p.poll_sleep(at(319), true, None), None);
        assert_eq!(p.poll_sleep(at(320), true, None), Some(Some(at(3900))));
    }

    #[test]
    fn the_periodic_tau_wakes_it_when_it_comes_before_the_work() {
        let mut p = PowerSaving::new(at(0), config());
        p.activity(at(0));
        assert_eq!(
            p.poll_sleep(at(20), true, Some(at(10_000))),
            Some(Some(at(3600)))
        );
        assert_eq!(p.handle_timeout(at(3600)), Some(WakeReason::PeriodicTau));
        // No work and no TAU: it sleeps with no wake-up at all.
        p.set_network_timers(Some(Duration::from_secs(2)), None);
        p.activity(at(3600));
        assert_eq!(p.poll_sleep(at(3602), true, None), Some(None));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!((p.stats().sleeps, p.stats().wakes_for_tau), (2, 1));
    }

    #[test]
    fn traffic_wakes_a_sleeping_device_and_opens_its_active_time() {
        let mut p = PowerSaving::new(at(0), config());
        p.activity(at(0));
        let _ = p.poll_sleep(at(20), true, Some(at(600)));
        assert_eq!(p.activity(at(100)), Some(WakeReason::Traffic));
        assert_eq!(p.activity(at(101)), None, "awake already");
        assert_eq!(p.poll_timeout(), Some(at(121)));
        assert_eq!(p.stats().wakes_by_traffic, 1);
    }
}
