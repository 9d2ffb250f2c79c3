//! 6LoWPAN in the simulator: a fleet of the SDK's 6LoWPAN devices (`v6iot-sim run --transport
//! lowpan`, a scenario fleet with `transport = "lowpan"`) on the shard core, through the
//! `v6iot-medium` hub to the edge's border router.
//!
//! | module | job |
//! |---|---|
//! | [`node`] | a fleet's 6LoWPAN device: the SDK's `LowpanDevice` (the CoAP core on 802.15.4) as a shard drives it, its frames as the shard's datagrams |
//! | [`air`] | I/O: the shard's link for 6LoWPAN members — an in-process medium ([`v6iot_medium::Hub`], one filtered participant per device) on one shared ZEP socket, to the router or to a `v6iot-sim medium` process; the capture |
//! | [`cli`] | the `--transport lowpan` options of `v6iot-sim run` |
//! | [`report`] | the `lowpan` section of the report: the devices' frames and drops, the medium's transmissions, retries and drops by cause |
//!
//! Every device joins the PAN as a [`v6iot_medium::core::Reception::Filtered`] participant of
//! the shard's own medium; the router (in-process mode) or the external medium (remote mode)
//! is the medium's ZEP peer. Devices form their addresses from the RA's prefix and their
//! extended address, which the fleet's address pool sets: device `n` at interface id
//! `offset + n + 1` of the pool's /64, so the edge's address binding sees the planned address
//! and IPHC elides it on air.

pub mod air;
pub mod cli;
pub mod node;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;

use v6iot_sdk::addr::Eui64;

/// The ZEP port (Wireshark's).
pub const ZEP_PORT: u16 = 17754;

/// Where a fleet's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediumAt {
    /// The medium runs inside the simulator (the airtime model, the capture of every frame);
    /// the border router's ZEP socket is its peer.
    InProcess {
        /// The router's ZEP socket (`zep_listen` of its `[[radio]]`).
        router: SocketAddr,
    },
    /// A `v6iot-sim medium` process: the fleet is one ZEP participant of it (run that medium
    /// ideal: its airtime model would see the whole fleet as one radio).
    Remote(SocketAddr),
}

/// How a 6LoWPAN fleet runs (`[fleet.lowpan]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LowpanPlan {
    /// The PAN id.
    pub pan: u16,
    /// The 2.4 GHz channel (11–26).
    pub channel: u8,
    /// The fleet's ZEP socket (the router's `zep_medium` in-process mode).
    pub listen: SocketAddr,
    /// Where the frames go.
    pub medium: MediumAt,
    /// The airtime model of the in-process medium (CSMA/CA, collisions, ACKs, retries).
    pub airtime: bool,
    /// Probability that a frame is lost on a link (each reception draws).
    pub loss: f64,
    /// Devices hear each other too (off: a star, devices hear only the router).
    pub flat: bool,
    /// The router's CoAP port.
    pub router_port: u16,
    /// A pcap (link type 195) of everything on the in-process medium's air.
    pub pcap: Option<PathBuf>,
}

impl LowpanPlan {
    /// Defaults for PAN `pan` on `channel` with the router's ZEP socket at `router`: the fleet on
    /// `[::1]:17754`, ideal star medium, CoAP on 5683, no capture.
    pub fn new(pan: u16, channel: u8, router: SocketAddr) -> LowpanPlan {
        LowpanPlan {
            pan,
            channel,
            listen: SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), ZEP_PORT),
            medium: MediumAt::InProcess { router },
            airtime: false,
            loss: 0.0,
            flat: false,
            router_port: 5683,
            pcap: None,
        }
    }
}

/// The extended address of a device whose interface id is `iid`: the IID with the U/L bit
/// flipped (RFC 4291 appendix A), so SLAAC from it gives back `iid`.
pub fn eui64_for(iid: u64) -> Eui64 {
    Eui64((iid ^ (0x02 << 56)).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use v6iot_sdk::addr::InterfaceId;

    use super::*;

    #[test]
    fn the_extended_address_gives_back_the_planned_interface_id() {
        for iid in [1_u64, 2, 0x1234_5678, u64::MAX] {
            let e = eui64_for(iid);
            assert_eq!(InterfaceId::from_eui64(e).0, iid, "{e}");
        }
        assert_eq!(eui64_for(1).0, [2, 0, 0, 0, 0, 0, 0, 1]);
    }
}
