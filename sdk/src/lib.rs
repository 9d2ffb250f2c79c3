//! `v6iot-sdk`: the device side of v6iot.
//!
//! # Layers and the I/O boundary
//!
//! Everything in this crate except `driver`, `store`, the radios on sockets (`radio::zep_udp`,
//! `radio::linux`, `radio::pcap::PcapRadio`), `lowpan::driver` and `nbiot::driver` is *sans-IO*: plain data types
//! and state machines that own no socket, task or clock. Time comes in as an argument (`now:`
//! [`time::Instant`]), datagrams come in through `handle_*` methods and go out through `poll_*`
//! methods.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `std` | yes | `time::Instant::now` and the bridge to `std::time::Instant`; `store` (OSCORE state in files); the radios on sockets and `lowpan::driver` |
//! | `tokio` | yes | `driver`, the tokio UDP driver, and `nbiot::driver`, the modem's driver over a serial stream (implies `std`) |
//!
//! With `default-features = false` the crate is the sans-IO core alone.
//!
//! | module | job |
//! |---|---|
//! | [`addr`] | the v6iot IPv6 address plan: site /48, plant and line subnet, class and serial interface ID, EUI-64 and 802.15.4 short forms |
//! | [`senml`] | SenML records (RFC 8428) in CBOR and JSON |
//! | [`coap`] | the CoAP device core: resource tree, discovery, Observe, Block-wise, reliability, deduplication |
//! | [`nbiot`] | NB-IoT: the modem over AT commands (3GPP TS 27.007, HiSilicon sockets), PSM/eDRX timer encodings, [`nbiot::NbiotDevice`] (the CoAP core on the modem, with power saving); its tokio driver over any serial stream (feature `tokio`) |
//! | [`oscore`] | OSCORE (RFC 8613): security context derivation, protection and verification of requests and responses, replay window, persisted sender sequence numbers |
//! | `net` | which UDP socket errors a driver goes on after (`net::is_transient`, feature `std`) |
//! | [`persist`] | the persistence interface of OSCORE state: the [`persist::StateStore`] trait a driver writes the sequence-number mark and replay floor through |
//! | [`time`] | the monotonic [`time::Instant`] every core takes (microseconds since a start the driver picks) and its bridge to `std` |
//! | [`uplink`] | registration with the edge router (RFC 9176 directory) and telemetry reports |
//! | [`lowpan`] | 6LoWPAN: stateful IPHC with contexts, RFC 4944 fragmentation and bounded reassembly, neighbour discovery with 6CO, the adaptation layer, the 6LoWPAN device |
//! | [`radio`] | IEEE 802.15.4 radios: the [`radio::Radio`] trait, frames with and without FCS, MAC data frames, ZEP v2, pcap captures, in-memory radios; ZEP over UDP and the Linux raw socket (feature `std`) |
//! | `store` | file I/O for a device's OSCORE state (sequence-number mark and replay floor): `store::MarkStore`, `store::SequenceFile`, atomic durable writes |
//! | `driver` | the I/O loop: a tokio UDP driver that runs a device core on a socket and writes its marks (feature `tokio`) |

// The crate is `no_std` + `alloc` outside its own unit tests (which use std's test harness);
// `std` comes in only with its feature, for the modules gated on it.
#![cfg_attr(not(test), no_std)]

extern crate alloc;
#[cfg(all(feature = "std", not(test)))]
extern crate std;

pub mod addr;
pub mod coap;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod lowpan;
pub mod nbiot;
#[cfg(feature = "std")]
pub mod net;
pub mod oscore;
pub mod persist;
pub mod radio;
pub mod senml;
#[cfg(feature = "std")]
pub mod store;
pub mod time;
pub mod uplink;
