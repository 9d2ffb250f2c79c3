//! A simulated 6LoWPAN device as a shard drives it: the SDK's [`LowpanDevice`] (router
//! discovery, SLAAC, stateful IPHC, fragmentation, and the CoAP device core — the code a real
//! node runs). Its "datagrams" for the shard are whole MAC frames (no FCS): the shard's link
//! for 6LoWPAN members ([`super::air::MediumLink`]) puts them on the medium and hands back what
//! the medium delivers to the device.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use v6iot_sdk::coap::{App, Device};
use v6iot_sdk::lowpan::device::{LowpanConfig, LowpanDevice, UplinkTarget};
use v6iot_sdk::lowpan::driver::DriverEvent;
use v6iot_sdk::oscore::DurableState;
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::PanId;
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::UplinkConfig;

use super::{LowpanPlan, eui64_for};
use crate::shard::NodeCore;

/// The "destination" of a frame a device hands the shard: the radio (the link takes it).
pub const RADIO: SocketAddr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));

/// Events kept for the log at most between two polls.
const MAX_EVENTS: usize = 64;

/// One 6LoWPAN device of a fleet.
#[derive(Debug)]
pub struct LowpanNode<S> {
    /// The device (the SDK's code).
    pub device: LowpanDevice<S>,
    events: VecDeque<DriverEvent>,
}

impl<S: App> LowpanNode<S> {
    /// Device with interface id `iid` of plan `plan`, its CoAP core `core` with `uplink` (sent
    /// to the router once attached), soliciting a router from `now`.
    pub fn new(
        plan: &LowpanPlan,
        iid: u64,
        now: Instant,
        core: Device<S>,
        uplink: UplinkConfig,
    ) -> LowpanNode<S> {
        let config = LowpanConfig::new(PanId(plan.pan), eui64_for(iid));
        let device = LowpanDevice::new(now, config, core).with_uplink(
            uplink,
            UplinkTarget::Router {
                port: plan.router_port,
            },
        );
        LowpanNode {
            device,
            events: VecDeque::new(),
        }
    }

    fn collect_events(&mut self) {
        while let Some(e) = self.device.poll_event() {
            if self.events.len() < MAX_EVENTS {
                self.events.push_back(DriverEvent::Network(e));
            }
        }
    }
}

impl<S: App> NodeCore for LowpanNode<S> {
    type Event = DriverEvent;

    fn handle_datagram(&mut self, now: Instant, _peer: SocketAddr, bytes: &[u8]) {
        // The link hands over frames the medium carried, so they parse; a bad one is the
        // device's to count.
        if let Ok(frame) = MacFrame::new(bytes) {
            self.device.handle_frame(now, frame);
        }
        self.collect_events();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.device.handle_timeout(now);
        self.collect_events();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.device.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.device
            .poll_transmit()
            .map(|f| (RADIO, f.as_bytes().to_vec()))
    }

    fn poll_event(&mut self) -> Option<DriverEvent> {
        if let Some(e) = self.device.coap_mut().poll_event() {
            return Some(DriverEvent::Coap(e));
        }
        self.events.pop_front()
    }

    fn state_to_persist(&self) -> Option<DurableState> {
        self.device.coap().state_to_persist()
    }

    fn state_persisted(&mut self, now: Instant, state: DurableState) {
        self.device.coap_mut().state_persisted(now, state);
        self.device.flush();
    }
}
