//! A simulated NB-IoT device as a shard drives it: the SDK's [`NbiotDevice`] (the CoAP core
//! on its AT driver, with power saving — the code a real meter runs) wired to an emulated
//! modem and carrier ([`Cellular`]) in memory, instead of over a serial line.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use v6iot_sdk::coap::App;
use v6iot_sdk::nbiot::{NbiotDevice, NbiotEvent};
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::time::Instant;

use super::carrier::Cellular;
use crate::link::AddressRequest;
use crate::shard::NodeCore;

/// Round trips of serial bytes between the device and its modem in one step at most (each
/// answer may prompt a command; the bring-up is the longest chain, a dozen).
const MAX_SERIAL_ROUNDS: usize = 64;

/// One NB-IoT device of a fleet: device core, modem emulator and carrier link.
#[derive(Debug)]
pub struct NbiotNode<S> {
    /// The device (the SDK's code).
    pub device: NbiotDevice<S>,
    /// Its modem and radio path (the simulator's).
    pub cellular: Cellular,
    events: VecDeque<NbiotEvent>,
}

impl<S: App> NbiotNode<S> {
    /// `device` on `cellular`, powered on at `now`: what the device wrote when it was made
    /// (the first command of its modem's bring-up) reaches the modem at once, as a driver's
    /// first write does.
    pub fn new(now: Instant, device: NbiotDevice<S>, cellular: Cellular) -> NbiotNode<S> {
        let mut node = NbiotNode {
            device,
            cellular,
            events: VecDeque::new(),
        };
        node.settle(now);
        node
    }

    /// Moves serial bytes both ways until neither side has more (bounded).
    fn settle(&mut self, now: Instant) {
        for _ in 0..MAX_SERIAL_ROUNDS {
            let mut moved = false;
            while let Some(bytes) = self.device.poll_serial() {
                self.cellular.handle_serial(now, &bytes);
                moved = true;
            }
            while let Some(bytes) = self.cellular.poll_serial() {
                self.device.handle_serial(now, &bytes);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = self.device.poll_event() {
            if self.events.len() < 64 {
                self.events.push_back(e);
            }
        }
    }
}

impl<S: App> NodeCore for NbiotNode<S> {
    type Event = NbiotEvent;

    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.cellular.handle_datagram(now, peer, bytes);
        self.settle(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.cellular.poll_timeout().is_some_and(|t| t <= now) {
            self.cellular.handle_timeout(now);
        }
        if self.device.poll_timeout().is_some_and(|t| t <= now) {
            self.device.handle_timeout(now);
        }
        self.settle(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.device.poll_timeout(), self.cellular.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.cellular.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<NbiotEvent> {
        self.events.pop_front()
    }

    fn state_to_persist(&self) -> Option<DurableState> {
        self.device.state_to_persist()
    }

    fn state_persisted(&mut self, now: Instant, state: DurableState) {
        self.device.state_persisted(now, state);
        self.settle(now);
    }

    fn poll_address_request(&mut self) -> Option<AddressRequest> {
        self.cellular.poll_address_request()
    }

    fn handle_address(&mut self, now: Instant, address: Option<IpAddr>) {
        if let Some(IpAddr::V6(a)) = address {
            self.cellular.handle_address(now, a);
            self.settle(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use v6iot_sdk::coap::{Config, Device, ResourceTree};
    use v6iot_sdk::nbiot::{ModemConfig, PsmRequest, T3324, T3412, nbiot_uplink};

    use super::*;
    use crate::nbiot::carrier::{CarrierLink, Latency};
    use crate::nbiot::emulator::{EmulatorConfig, ModemEmulator};
    use v6iot_medium::rng::Rng;

    /// Reports nothing for a minute.
    struct Quiet(Instant);

    impl App for Quiet {
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.0)
        }
    }

    /// A device in deep coverage (its CoAP retransmission waits 12 s) with nothing of its own
    /// due for a minute: powered on, its modem's bring-up starts at once and it is attached
    /// when the modem is (2 s), with no AT command timing out. (The node used to leave the
    /// bring-up's first command unsent until some other deadline came: 5 s later the command
    /// timed out and the bring-up started over 10 s after that.)
    #[test]
    fn a_device_powered_on_brings_its_modem_up_at_once() {
        let start = Instant::from_millis(1000);
        let edge: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        let core = Device::new(
            Config {
                ack_timeout: Duration::from_secs(12),
                ..Config::default()
            },
            1,
            Arc::new(ResourceTree::new()),
            Quiet(start + Duration::from_secs(60)),
        )
        .with_uplink(start, nbiot_uplink(edge, "nb000001"));
        let modem = ModemConfig {
            psm: Some(PsmRequest {
                periodic_tau: T3412::encode(Duration::from_secs(600)).unwrap(),
                active_time: T3324::encode(Duration::from_secs(20)).unwrap(),
            }),
            ..ModemConfig::new("v6iot.sim")
        };
        let link = CarrierLink::new(Latency::fixed(Duration::from_secs(3)), 0.0, Rng::new(1));
        let cellular = Cellular::new(ModemEmulator::new(EmulatorConfig::default()), link);
        let mut node = NbiotNode::new(start, NbiotDevice::new(start, core, modem), cellular);
        let mut ready_at = None;
        for _ in 0..100 {
            let Some(now) = node.poll_timeout() else {
                break;
            };
            if now > start + Duration::from_secs(30) {
                break;
            }
            node.handle_timeout(now);
            if node.poll_address_request().is_some() {
                node.handle_address(now, Some("2001:db8:100::1".parse().unwrap()));
            }
            if ready_at.is_none() && node.device.modem().is_ready() {
                ready_at = Some(now);
            }
        }
        assert_eq!(node.device.modem().client_stats().timeouts, 0);
        assert_eq!(ready_at, Some(start + Duration::from_secs(2)));
    }
}
