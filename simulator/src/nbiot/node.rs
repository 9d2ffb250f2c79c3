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
    /// `device` on `cellular`.
    pub fn new(device: NbiotDevice<S>, cellular: Cellular) -> NbiotNode<S> {
        NbiotNode {
            device,
            cellular,
            events: VecDeque::new(),
        }
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
