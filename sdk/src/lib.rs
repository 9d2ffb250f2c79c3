//! `v6iot-sdk`: the device side of v6iot.
//!
//! # Layers and the I/O boundary
//!
//! Everything in this crate except [`driver`], [`store`], the radios on sockets
//! (`radio::zep_udp`, `radio::linux`, `radio::pcap::PcapRadio`) and `lowpan::driver` is
//! *sans-IO*: plain data types and state machines that own no socket, task or clock. Time comes in as an argument (`now: Instant`), datagrams
//! come in through `handle_*` methods and go out through `poll_*` methods.
//!
//! | module | job |
//! |---|---|
//! | [`addr`] | the v6iot IPv6 address plan: site /48, plant and line subnet, class and serial interface ID, EUI-64 and 802.15.4 short forms |
//! | [`senml`] | SenML records (RFC 8428) in CBOR and JSON |
//! | [`coap`] | the CoAP device core: resource tree, discovery, Observe, Block-wise, reliability, deduplication |
//! | [`oscore`] | OSCORE (RFC 8613): security context derivation, protection and verification of requests and responses, replay window, persisted sender sequence numbers |
//! | [`uplink`] | registration with the edge router (RFC 9176 directory) and telemetry reports |
//! | [`store`] | file I/O for a device's OSCORE state (sequence-number mark and replay floor): [`store::MarkStore`], [`store::SequenceFile`], atomic durable writes |
//! | [`lowpan`] | 6LoWPAN: stateful IPHC with contexts, RFC 4944 fragmentation and bounded reassembly, neighbour discovery with 6CO, the adaptation layer, the 6LoWPAN device |
//! | [`radio`] | IEEE 802.15.4 radios: the [`radio::Radio`] trait, frames with and without FCS, MAC data frames, ZEP v2, pcap captures, in-memory radios; ZEP over UDP and the Linux raw socket (feature `std`) |
//! | [`driver`] | the I/O loop: a tokio UDP driver that runs a device core on a socket and writes its marks (feature `tokio`) |

extern crate alloc;

pub mod addr;
pub mod coap;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod lowpan;
pub mod oscore;
pub mod radio;
pub mod senml;
pub mod store;
pub mod uplink;
