//! An NB-IoT device, sans-IO: the CoAP [`Device`] core (registration, telemetry, commands,
//! OSCORE — unchanged) carried by a [`Modem`] over AT commands, with [`PowerSaving`] deciding
//! when it listens and when it sleeps.
//!
//! Its only I/O is the modem's serial line: bytes in with [`NbiotDevice::handle_serial`], bytes
//! out with [`NbiotDevice::poll_serial`], time in with [`NbiotDevice::handle_timeout`] and out
//! with [`NbiotDevice::poll_timeout`]. Datagrams the core sends become `AT+NSOST`, datagrams
//! the modem announces are read with `AT+NSORF` and handed to the core.
//!
//! With PSM asked for, the device listens for the active time after each datagram, then
//! sleeps (its driver is woken only for the wake-up time or by the modem) until its next
//! report, registration update or periodic TAU; register it with binding `UQ`
//! ([`nbiot_uplink`]) so the edge router queues commands for its listening windows.
//!
//! Give the uplink to [`NbiotDevice::with_uplink`] rather than to the core: it starts once the
//! modem is ready, so the registration's Confirmable request does not wait in the modem's queue
//! while the modem attaches, its retransmission timer running (copies would go out together once
//! attached, and an attach slower than CoAP's whole retransmission schedule would fail the
//! registration before the first copy left).

use alloc::collections::VecDeque;
use alloc::string::String;
use core::net::SocketAddr;

use super::modem::{Modem, ModemConfig, ModemEvent, SendError};
use crate::coap::{App, Device, Event};
use crate::oscore::DurableState;
use crate::persist::{PersistFailed, StateStore};
use crate::time::Instant;
use crate::uplink::{Binding, PowerConfig, PowerSaving, UplinkConfig, WakeReason};

/// Events kept until taken; more drop the oldest.
const MAX_EVENTS: usize = 64;

/// What an NB-IoT device reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NbiotEvent {
    /// From the modem: ready, address changes, registration, power saving, failures.
    Modem(ModemEvent),
    /// From the CoAP core.
    Device(Event),
    /// The device went to sleep until this time (`None`: until traffic wakes it).
    Sleeping {
        /// The wake-up time.
        until: Option<Instant>,
    },
    /// The device woke up.
    Awake {
        /// Why.
        reason: WakeReason,
    },
    /// A datagram of the core could not be handed to the modem (CoAP retransmits).
    DatagramRefused(SendError),
}

/// An uplink configuration for an NB-IoT device: binding `UQ` (queue mode).
pub fn nbiot_uplink(server: SocketAddr, endpoint: impl Into<String>) -> UplinkConfig {
    UplinkConfig {
        binding: Binding::UQ,
        ..UplinkConfig::new(server, endpoint)
    }
}

/// A CoAP device on an NB-IoT modem. See the [module docs](self).
#[derive(Debug)]
pub struct NbiotDevice<S> {
    device: Device<S>,
    modem: Modem,
    power: Option<PowerSaving>,
    /// The uplink to start when the modem is first ready ([`NbiotDevice::with_uplink`]).
    uplink: Option<UplinkConfig>,
    events: VecDeque<NbiotEvent>,
    /// Events dropped because [`MAX_EVENTS`] waited.
    events_dropped: u64,
}

impl<S: App> NbiotDevice<S> {
    /// `device` on a modem set up per `config`, from `now`. With `config.psm` the device saves
    /// power with the timers asked for until the network says which it granted.
    pub fn new(now: Instant, device: Device<S>, config: ModemConfig) -> NbiotDevice<S> {
        let power = config.psm.map(|psm| {
            PowerSaving::new(
                now,
                PowerConfig {
                    active_time: psm.active_time.duration().unwrap_or_default(),
                    periodic_tau: psm.periodic_tau.duration(),
                },
            )
        });
        NbiotDevice {
            device,
            modem: Modem::new(now, config),
            power,
            uplink: None,
            events: VecDeque::new(),
            events_dropped: 0,
        }
    }

    /// Starts the core's uplink (registration, reports) with `config` once the modem is ready:
    /// attached, addressed, its socket open (see the [module docs](self)).
    #[must_use]
    pub fn with_uplink(mut self, config: UplinkConfig) -> Self {
        self.uplink = Some(config);
        self
    }

    /// Takes bytes the modem wrote on the serial line.
    pub fn handle_serial(&mut self, now: Instant, bytes: &[u8]) {
        self.modem.handle_serial(now, bytes);
        self.pump(now);
    }

    /// Bytes to write to the modem.
    #[must_use]
    pub fn poll_serial(&mut self) -> Option<alloc::vec::Vec<u8>> {
        self.modem.poll_serial()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NbiotEvent> {
        self.events.pop_front()
    }

    /// When [`NbiotDevice::handle_timeout`] is due. Asleep, only the wake-up and the modem's
    /// own deadlines count (the core's housekeeping waits for the wake-up); so while the uplink
    /// given to [`NbiotDevice::with_uplink`] waits for the modem (the application's reports
    /// wait with it instead of being made with nowhere to go).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let core = self
            .core_runs()
            .then(|| self.device.poll_timeout())
            .flatten();
        let power = self.power.as_ref().and_then(PowerSaving::poll_timeout);
        [self.modem.poll_timeout(), power, core]
            .into_iter()
            .flatten()
            .min()
    }

    /// Lets time pass for the modem, the power saving and (awake) the core.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.modem.handle_timeout(now);
        if let Some(reason) = self.power.as_mut().and_then(|p| p.handle_timeout(now)) {
            self.event(NbiotEvent::Awake { reason });
            if reason == WakeReason::PeriodicTau {
                self.device.refresh_registration(now);
            }
        }
        if self.core_runs() {
            self.device.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Whether the core's own timers run: awake, and its uplink started if one waits.
    fn core_runs(&self) -> bool {
        !self.is_asleep() && self.uplink.is_none()
    }

    /// Moves datagrams between the modem and the core, then decides whether to sleep.
    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.modem.poll_event() {
            if let (
                ModemEvent::NetworkTimers {
                    active_time,
                    periodic_tau,
                },
                Some(p),
            ) = (&e, self.power.as_mut())
            {
                p.set_network_timers(*active_time, *periodic_tau);
            }
            if matches!(e, ModemEvent::Ready { .. })
                && let Some(config) = self.uplink.take()
            {
                self.device.start_uplink(now, config);
            }
            self.event(NbiotEvent::Modem(e));
        }
        while let Some((from, bytes)) = self.modem.poll_datagram() {
            self.activity(now);
            self.device.handle_datagram(now, from, &bytes);
        }
        while let Some(t) = self.device.poll_transmit() {
            match self.modem.send(now, t.destination, &t.contents) {
                Ok(()) => self.activity(now),
                Err(e) => self.event(NbiotEvent::DatagramRefused(e)),
            }
        }
        while let Some(e) = self.device.poll_event() {
            self.event(NbiotEvent::Device(e));
        }
        self.maybe_sleep(now);
    }

    fn activity(&mut self, now: Instant) {
        if let Some(reason) = self.power.as_mut().and_then(|p| p.activity(now)) {
            self.event(NbiotEvent::Awake { reason });
        }
    }

    /// Sleeps once the modem is ready and idle, nothing is in flight, and the active time is
    /// over: until the next work of the application, registration or reporter.
    fn maybe_sleep(&mut self, now: Instant) {
        let Some(power) = self.power.as_mut() else {
            return;
        };
        let idle = self.modem.is_ready()
            && self.modem.is_idle()
            && self.device.endpoint().pending_requests() == 0;
        let next_work = [
            self.device.app().poll_timeout(),
            self.device.registration().and_then(|r| r.poll_timeout()),
            self.device.reporter().and_then(|r| r.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(until) = power.poll_sleep(now, idle, next_work) {
            self.event(NbiotEvent::Sleeping { until });
        }
    }

    fn event(&mut self, e: NbiotEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// The OSCORE state to write durably now (see [`Device::state_to_persist`]).
    #[must_use]
    pub fn state_to_persist(&self) -> Option<DurableState> {
        self.device.state_to_persist()
    }

    /// Confirms that `state` is durable (see [`Device::state_persisted`]); what was waiting
    /// for it goes out.
    pub fn state_persisted(&mut self, now: Instant, state: DurableState) {
        self.device.state_persisted(now, state);
        self.pump(now);
    }

    /// Writes every OSCORE state the core asks for to `store` and confirms it (see
    /// [`Device::persist`]); what waited for it goes to the modem.
    pub fn persist<M: StateStore + ?Sized>(
        &mut self,
        now: Instant,
        store: &mut M,
    ) -> Result<(), PersistFailed<M::Error>> {
        let result = self.device.persist(now, store);
        self.pump(now);
        result
    }

    /// Asleep now.
    pub fn is_asleep(&self) -> bool {
        self.power.as_ref().is_some_and(PowerSaving::is_asleep)
    }

    /// The CoAP core.
    pub fn device(&self) -> &Device<S> {
        &self.device
    }

    /// The CoAP core, mutably (to queue reports, change resources). Call
    /// [`NbiotDevice::handle_timeout`] afterwards so what it sends reaches the modem.
    pub fn device_mut(&mut self) -> &mut Device<S> {
        &mut self.device
    }

    /// The modem layer (its address, state and counters).
    pub fn modem(&self) -> &Modem {
        &self.modem
    }

    /// The power saving state, if PSM was asked for.
    pub fn power(&self) -> Option<&PowerSaving> {
        self.power.as_ref()
    }

    /// Events dropped because too many waited.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }
}
