//! Queue-mode devices (`b=UQ`, NB-IoT in PSM) as the edge sees them, sans-IO: awake while
//! their listening window after an uplink lasts, asleep after it, and when they are next
//! expected.
//!
//! Every uplink of a queue-mode device opens a window of the ingress's `listen_window`. When it
//! closes the device is *sleeping* (the ingress publishes the retained status `sleeping` with the
//! next expected wake-up); its next uplink wakes it (status `registered` again). The next
//! wake-up is known once the device has woken twice: the previous wake-up plus the time between
//! the last two (devices that report on a schedule wake on it).
//!
//! Bounds: one entry per registered queue-mode device (the ingress removes it with the
//! registration), and at most one live timer entry per device (a later window end is not queued
//! while an earlier entry is: when that comes due the device's real window end is read again).
//! Entries left by removed devices are dropped when they come due, and the whole heap is
//! rebuilt from the live entries once it holds more than `2 × devices + 64`, so a device that
//! deregisters and registers again in a loop cannot grow it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use foldhash::HashMap;

/// Stale timer entries tolerated above two per device before the heap is rebuilt.
const STALE_SLACK: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Sleeper {
    window_end: Instant,
    /// The earliest timer entry queued for this device, if any.
    queued: Option<Instant>,
    asleep: bool,
    /// When its current (or last) wake-up began.
    woke_at: Instant,
    /// The time between its last two wake-ups.
    period: Option<Duration>,
}

/// The sleep state of every registered queue-mode device. See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Sleepers {
    devices: HashMap<String, Sleeper>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// How many of `devices` are asleep (kept at each change, read by the metrics).
    asleep: usize,
}

impl Sleepers {
    /// An uplink of queue-mode `device` at `now`: its window runs until `now + window`. True
    /// when it was asleep (it woke up).
    pub(super) fn uplink(&mut self, now: Instant, device: &str, window: Duration) -> bool {
        let window_end = now + window;
        let (woke, queue) = match self.devices.get_mut(device) {
            Some(s) => {
                let woke = std::mem::take(&mut s.asleep);
                if woke {
                    self.asleep -= 1;
                    s.period = Some(now.saturating_duration_since(s.woke_at));
                    s.woke_at = now;
                }
                s.window_end = window_end;
                let queue = s.queued.is_none();
                if queue {
                    s.queued = Some(window_end);
                }
                (woke, queue)
            }
            None => {
                self.devices.insert(
                    device.to_owned(),
                    Sleeper {
                        window_end,
                        queued: Some(window_end),
                        asleep: false,
                        woke_at: now,
                        period: None,
                    },
                );
                (false, true)
            }
        };
        if queue {
            self.timers.push(Reverse((window_end, device.to_owned())));
            if self.timers.len() > 2 * self.devices.len() + STALE_SLACK {
                self.compact();
            }
        }
        woke
    }

    /// Queue-mode `device` registered (again) at `now`: awake, its wake-up period unknown.
    /// Its timer entry, if any, stays (the uplink that follows moves its window end).
    pub(super) fn registered(&mut self, now: Instant, device: &str) {
        if let Some(s) = self.devices.get_mut(device) {
            if std::mem::take(&mut s.asleep) {
                self.asleep -= 1;
            }
            s.period = None;
            s.woke_at = now;
        }
    }

    /// Keeps only the live timer entries (one per device at most).
    fn compact(&mut self) {
        let devices = &self.devices;
        self.timers
            .retain(|Reverse((at, d))| devices.get(d).is_some_and(|s| s.queued == Some(*at)));
    }

    /// The next device whose window has closed by `now`, with its next expected wake-up.
    pub(super) fn poll_asleep(&mut self, now: Instant) -> Option<(String, Option<Instant>)> {
        loop {
            let Reverse((at, _)) = self.timers.peek()?;
            if *at > now {
                return None;
            }
            let Reverse((at, device)) = self.timers.pop()?;
            let Some(s) = self.devices.get_mut(&device) else {
                continue; // removed meanwhile
            };
            if s.queued != Some(at) {
                continue; // a stale entry of a device removed and registered again
            }
            if s.window_end > now {
                // An uplink moved the window end later: wait for it.
                s.queued = Some(s.window_end);
                self.timers.push(Reverse((s.window_end, device)));
                continue;
            }
            s.queued = None;
            if !std::mem::replace(&mut s.asleep, true) {
                self.asleep += 1;
            }
            let next = s.period.map(|p| s.woke_at + p);
            return Some((device, next));
        }
    }

    /// When [`Sleepers::poll_asleep`] has something.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Forgets `device` (deregistered, expired, removed).
    pub(super) fn remove(&mut self, device: &str) {
        if self.devices.remove(device).is_some_and(|s| s.asleep) {
            self.asleep -= 1;
        }
    }

    /// Queue-mode devices followed: (awake, asleep).
    pub(super) fn states(&self) -> (usize, usize) {
        (self.devices.len().saturating_sub(self.asleep), self.asleep)
    }

    /// Whether `device` is asleep.
    pub(super) fn is_asleep(&self, device: &str) -> bool {
        self.devices.get(device).is_some_and(|s| s.asleep)
    }

    /// Devices followed, timer entries queued.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.devices.len(), self.timers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(20);

    #[test]
    fn sleeps_after_its_window_and_knows_its_period_after_two_wake_ups() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut z = Sleepers::default();
        assert!(!z.uplink(at(0), "m", WINDOW));
        assert!(!z.uplink(at(5), "m", WINDOW), "still awake");
        assert_eq!(z.poll_timeout(), Some(at(20)));
        assert_eq!(z.poll_asleep(at(20)), None, "the window moved to 25 s");
        assert_eq!(z.states(), (1, 0));
        assert_eq!(z.poll_asleep(at(25)), Some(("m".into(), None)));
        assert!(z.is_asleep("m"));
        assert_eq!(z.states(), (0, 1));
        assert_eq!(z.poll_asleep(at(26)), None);
        // Wakes at 300 s: the period is 300 s; the next wake-up expected at 600 s.
        assert!(z.uplink(at(300), "m", WINDOW));
        assert!(!z.is_asleep("m"));
        assert_eq!(z.states(), (1, 0));
        assert_eq!(z.poll_asleep(at(320)), Some(("m".into(), Some(at(600)))));
        // Removed: nothing more about it.
        z.remove("m");
        assert_eq!(z.sizes().0, 0);
        assert_eq!(
            z.states(),
            (0, 0),
            "an asleep device removed is no longer counted"
        );
        assert!(!z.is_asleep("m"));
    }

    /// The bound: however many uplinks, one timer entry per device.
    #[test]
    fn one_timer_entry_per_device_however_many_uplinks() {
        let t0 = Instant::now();
        let mut z = Sleepers::default();
        for i in 0..1000u64 {
            for d in 0..50 {
                z.uplink(t0 + Duration::from_millis(i), &format!("d{d}"), WINDOW);
            }
        }
        assert_eq!(z.sizes(), (50, 50));
        let mut asleep = 0;
        while z.poll_asleep(t0 + Duration::from_secs(60)).is_some() {
            asleep += 1;
        }
        assert_eq!(asleep, 50);
        assert_eq!(z.sizes(), (50, 0));
        assert_eq!(z.states(), (0, 50));
    }

    /// The bound on stale entries: a device removed and added again in a loop (deregistering
    /// and registering) leaves at most `2 × devices + STALE_SLACK` timer entries.
    #[test]
    fn removing_and_adding_again_in_a_loop_keeps_the_heap_bounded() {
        let t0 = Instant::now();
        let mut z = Sleepers::default();
        z.uplink(t0, "steady", WINDOW);
        let mut most = 0;
        for i in 0..10_000u64 {
            z.remove("m");
            z.uplink(t0 + Duration::from_millis(i), "m", WINDOW);
            most = most.max(z.sizes().1);
        }
        assert_eq!(z.sizes().0, 2);
        assert!(most <= 2 * 2 + STALE_SLACK + 1, "{most} timer entries");
        // Both still fall asleep, once each.
        let mut asleep = Vec::new();
        while let Some((d, _)) = z.poll_asleep(t0 + Duration::from_secs(60)) {
            asleep.push(d);
        }
        asleep.sort();
        assert_eq!(asleep, ["m", "steady"]);
    }

    /// Registering again resets the wake-up period and wakes the device without a timer entry
    /// of its own.
    #[test]
    fn registering_again_forgets_the_period() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut z = Sleepers::default();
        z.uplink(at(0), "m", WINDOW);
        assert!(z.poll_asleep(at(20)).is_some());
        assert!(z.uplink(at(300), "m", WINDOW));
        assert_eq!(z.poll_asleep(at(320)), Some(("m".into(), Some(at(600)))));
        z.registered(at(400), "m");
        assert!(!z.is_asleep("m"));
        assert_eq!(
            z.states(),
            (1, 0),
            "a registration wakes it in the count too"
        );
        assert!(!z.uplink(at(400), "m", WINDOW), "the registration woke it");
        assert_eq!(z.sizes(), (1, 1));
        assert_eq!(z.poll_asleep(at(420)), Some(("m".into(), None)));
    }

    #[test]
    fn a_stale_entry_of_a_removed_device_is_ignored() {
        let t0 = Instant::now();
        let mut z = Sleepers::default();
        z.uplink(t0, "m", WINDOW);
        z.remove("m");
        z.uplink(t0 + Duration::from_secs(10), "m", WINDOW);
        // The first entry (20 s) is stale; the device sleeps at 30 s, once.
        assert_eq!(z.poll_asleep(t0 + Duration::from_secs(21)), None);
        assert!(z.poll_asleep(t0 + Duration::from_secs(30)).is_some());
        assert_eq!(z.poll_asleep(t0 + Duration::from_secs(31)), None);
    }
}
