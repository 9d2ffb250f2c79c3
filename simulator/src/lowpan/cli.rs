//! The 6LoWPAN options of `v6iot-sim run` (`--transport lowpan …`) and the [`LowpanPlan`] they
//! make.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{LowpanPlan, MediumAt, ZEP_PORT};

/// `v6iot-sim run`'s 6LoWPAN options.
#[derive(Debug, Clone, Args)]
pub struct LowpanArgs {
    /// 6LoWPAN: the PAN id (the router's `[[radio]] pan_id`), decimal or 0x-hex.
    #[arg(long, default_value = "0xabcd", value_parser = parse_pan)]
    pub pan_id: u16,
    /// 6LoWPAN: the channel (11–26, the router's `[[radio]] channel`).
    #[arg(long, default_value_t = 26)]
    pub channel: u8,
    /// 6LoWPAN: the fleet's ZEP socket (the router's `zep_medium`).
    #[arg(long, default_value_t = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), ZEP_PORT))]
    pub zep_listen: SocketAddr,
    /// 6LoWPAN: the router's ZEP socket (its `zep_listen`): the fleet runs the medium itself.
    #[arg(long, default_value = "[::1]:17755", conflicts_with = "medium")]
    pub router_zep: SocketAddr,
    /// 6LoWPAN: a `v6iot-sim medium` process at this address instead of the in-process medium
    /// (run it ideal: it sees the whole fleet as one radio).
    #[arg(long)]
    pub medium: Option<SocketAddr>,
    /// 6LoWPAN: the airtime model (250 kbit/s, CSMA/CA, collisions, ACKs and retries).
    #[arg(long)]
    pub airtime: bool,
    /// 6LoWPAN: the probability that a frame is lost on a link.
    #[arg(long, default_value_t = 0.0)]
    pub frame_loss: f64,
    /// 6LoWPAN: devices hear each other (default: a star, they hear only the router).
    #[arg(long)]
    pub flat: bool,
    /// 6LoWPAN: write a pcap (link type 195, with FCS) of everything on air here.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
}

fn parse_pan(text: &str) -> Result<u16, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text}: {e}"))
}

impl LowpanArgs {
    /// The plan these flags describe.
    pub fn plan(&self) -> LowpanPlan {
        LowpanPlan {
            listen: self.zep_listen,
            medium: match self.medium {
                Some(m) => MediumAt::Remote(m),
                None => MediumAt::InProcess {
                    router: self.router_zep,
                },
            },
            airtime: self.airtime,
            loss: self.frame_loss,
            flat: self.flat,
            pcap: self.pcap.clone(),
            ..LowpanPlan::new(self.pan_id, self.channel, self.router_zep)
        }
    }
}
