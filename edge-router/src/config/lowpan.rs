//! `[lowpan]` and `[[radio]]`: the border router's PANs (see [`crate::border`]).
//!
//! ```toml
//! [lowpan]                    # optional: defaults below
//! tun = "v6pan0"              # the TUN interface to the host; absent: no forwarding to the host
//! tun_router_address = true   # put each PAN's router address (/64) on the TUN: the kernel then
//!                             # routes the PAN's prefix to it and host programs reach the router
//! ra_interval_s = 60          # unsolicited Router Advertisements
//! router_lifetime_s = 1800
//! max_neighbours = 16384      # per PAN
//! neighbour_idle_s = 7200
//! reassembly_datagrams = 256  # per PAN, from all its devices ...
//! reassembly_per_source = 2   # ... at most this many from one device ...
//! reassembly_timeout_s = 60   # ... each completed within this time (RFC 4944)
//! pcap = "/var/lib/v6iot/pan.pcap"  # optional: every frame in and out (link type 195, FCS)
//!
//! [[radio]]                   # one per PAN
//! pan_id = 0xabcd
//! channel = 26                # 11–26
//! prefix = "2001:db8:1200:305::/64"
//! context_id = 0              # the 6LoWPAN context the prefix is advertised under
//! router_eui64 = "02:00:00:00:00:00:00:01"
//! zep_medium = "[::1]:17754"  # the simulated medium (ZEP v2 over UDP) ...
//! zep_listen = "[::1]:17755"  # ... and the router's own ZEP socket (default: any port)
//! # wpan = "wpan0"            # ... or a Linux 802.15.4 interface instead
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use v6iot_sdk::addr::Eui64;
use v6iot_sdk::lowpan::frag::ReassemblyConfig;
use v6iot_sdk::radio::mac::PanId;

use super::ConfigError;
use crate::border::BorderConfig;
use crate::border::neighbours::NeighbourConfig;
use crate::border::pan::PanConfig;
use v6iot_credentials::Ipv6Prefix;

/// `[lowpan]`: what all PANs share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowpanSection {
    /// The TUN interface's name; `None`: no host side.
    pub tun: Option<String>,
    /// Whether the router's PAN addresses are put on the TUN (with their /64).
    pub tun_router_address: bool,
    /// Seconds between unsolicited RAs.
    pub ra_interval_s: u64,
    /// Router lifetime in RAs, seconds.
    pub router_lifetime_s: u16,
    /// Neighbour table entries per PAN.
    pub max_neighbours: usize,
    /// Seconds a neighbour may stay silent before it is forgotten.
    pub neighbour_idle_s: u64,
    /// Datagrams reassembled at once per PAN.
    pub reassembly_datagrams: usize,
    /// Of which from one device.
    pub reassembly_per_source: usize,
    /// Seconds a datagram may take to arrive whole.
    pub reassembly_timeout_s: u64,
    /// A pcap capture of every frame in and out.
    pub pcap: Option<PathBuf>,
}

impl Default for LowpanSection {
    fn default() -> Self {
        LowpanSection {
            tun: None,
            tun_router_address: true,
            ra_interval_s: 60,
            router_lifetime_s: 1800,
            max_neighbours: 16_384,
            neighbour_idle_s: 7200,
            reassembly_datagrams: 256,
            reassembly_per_source: 2,
            reassembly_timeout_s: 60,
            pcap: None,
        }
    }
}

/// `[[radio]]`: one PAN and the radio it is on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioSection {
    /// The PAN ID.
    pub pan_id: u16,
    /// The 802.15.4 channel (11–26).
    #[serde(default = "default_channel")]
    pub channel: u8,
    /// The PAN's /64.
    pub prefix: String,
    /// The context ID of the prefix (0–15).
    #[serde(default)]
    pub context_id: u8,
    /// The router's extended address, `02:00:00:00:00:00:00:01`.
    pub router_eui64: String,
    /// The ZEP medium (hub or peer) frames go to.
    pub zep_medium: Option<SocketAddr>,
    /// The router's ZEP socket.
    pub zep_listen: Option<SocketAddr>,
    /// A Linux 802.15.4 interface instead of ZEP.
    pub wpan: Option<String>,
}

fn default_channel() -> u8 {
    26
}

/// Where a PAN's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RadioLink {
    /// ZEP v2 over UDP.
    Zep {
        /// The medium.
        medium: SocketAddr,
        /// The router's socket.
        listen: SocketAddr,
        /// The channel in ZEP headers.
        channel: u8,
    },
    /// A Linux `wpan` interface.
    Wpan(String),
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl RadioSection {
    fn prefix(&self) -> Result<Ipv6Prefix, ConfigError> {
        let p: Ipv6Prefix = self
            .prefix
            .parse()
            .map_err(|e| invalid("radio.prefix", format!("{e}")))?;
        if p.prefix_len() != 64 {
            return Err(invalid("radio.prefix", "a PAN's prefix is a /64"));
        }
        Ok(p)
    }

    fn eui64(&self) -> Result<Eui64, ConfigError> {
        self.router_eui64
            .parse()
            .map_err(|e| invalid("radio.router_eui64", format!("{e}")))
    }

    /// Where this PAN's frames go.
    ///
    /// # Errors
    ///
    /// Neither or both of `zep_medium` and `wpan`.
    pub fn link(&self) -> Result<RadioLink, ConfigError> {
        match (&self.zep_medium, &self.wpan) {
            (Some(medium), None) => Ok(RadioLink::Zep {
                medium: *medium,
                listen: self.zep_listen.unwrap_or(if medium.is_ipv6() {
                    SocketAddr::from(([0_u16; 8], 0))
                } else {
                    SocketAddr::from(([0_u8; 4], 0))
                }),
                channel: self.channel,
            }),
            (None, Some(name)) => Ok(RadioLink::Wpan(name.clone())),
            _ => Err(invalid(
                "radio.zep_medium",
                "each [[radio]] has either zep_medium or wpan",
            )),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.prefix()?;
        self.eui64()?;
        self.link()?;
        if !(11..=26).contains(&self.channel) {
            return Err(invalid("radio.channel", "802.15.4 channels are 11 to 26"));
        }
        if self.context_id > 15 {
            return Err(invalid("radio.context_id", "context IDs are 0 to 15"));
        }
        if self.pan_id == 0xffff {
            return Err(invalid("radio.pan_id", "0xffff is the broadcast PAN ID"));
        }
        Ok(())
    }
}

/// Checks the radios and the section.
pub(super) fn check(lowpan: &LowpanSection, radios: &[RadioSection]) -> Result<(), ConfigError> {
    for r in radios {
        r.check()?;
    }
    for (i, a) in radios.iter().enumerate() {
        for b in radios.iter().skip(i + 1) {
            if a.prefix()? == b.prefix()? {
                return Err(invalid("radio.prefix", "two PANs with one prefix"));
            }
        }
    }
    if lowpan.ra_interval_s == 0 || lowpan.reassembly_timeout_s == 0 {
        return Err(invalid(
            "lowpan.ra_interval_s",
            "intervals and timeouts are at least 1 s",
        ));
    }
    if lowpan.max_neighbours == 0 || lowpan.reassembly_datagrams == 0 {
        return Err(invalid(
            "lowpan.max_neighbours",
            "tables hold at least one entry",
        ));
    }
    Ok(())
}

/// The border router's configuration of these sections (`None` without radios).
///
/// # Errors
///
/// What [`check`] refuses.
pub fn border_config(
    lowpan: &LowpanSection,
    radios: &[RadioSection],
) -> Result<Option<BorderConfig>, ConfigError> {
    if radios.is_empty() {
        return Ok(None);
    }
    check(lowpan, radios)?;
    let mut pans = Vec::new();
    for r in radios {
        let mut pan = PanConfig::new(PanId(r.pan_id), r.prefix()?.network(), r.eui64()?);
        pan.context_id = r.context_id;
        pan.router_lifetime_s = lowpan.router_lifetime_s;
        pan.ra_interval = Duration::from_secs(lowpan.ra_interval_s);
        pan.neighbours = NeighbourConfig {
            max_entries: lowpan.max_neighbours,
            idle: Duration::from_secs(lowpan.neighbour_idle_s),
        };
        pan.reassembly = ReassemblyConfig {
            max_datagrams: lowpan.reassembly_datagrams,
            max_per_source: lowpan.reassembly_per_source.max(1),
            timeout: Duration::from_secs(lowpan.reassembly_timeout_s),
        };
        pans.push(pan);
    }
    let mut config = BorderConfig::new(pans);
    config.host = lowpan.tun.is_some();
    config.host_owns_router_address = lowpan.tun.is_some() && lowpan.tun_router_address;
    Ok(Some(config))
}
