//! `v6iot-simulator`: simulated devices on the real v6iot SDK core.
//!
//! # Layers and the I/O boundary
//!
//! | module | job |
//! |---|---|
//! | [`sensor`] | the simulated sensor node: its resource tree and state, a sans-IO [`v6iot_sdk::coap::App`] |
//! | [`demo`] | (feature `demo`, default) the all-in-one demo: embedded broker, edge router, fleet, summary |
//! | [`duration`] | parsing of human durations (`2s`, `500ms`) for the command line |
//! | [`fleet`] | fleet devices: the reporting sensor app and its uplink, sans-IO |
//! | [`credentials`] | OSCORE credentials from the credentials CSV: one security context per device |
//! | [`fleet_marks`] | the OSCORE sequence-number marks of a whole fleet in one state file |
//! | [`broker`] | (feature `demo`, default) an embedded MQTT broker (rumqttd) for the demo and tests |
//! | [`collector`] | matches deliveries at the broker to reports; latency histogram |
//! | [`subscriber`] | the collector's MQTT subscriber: a sans-IO core on rumqttc's codecs and a blocking driver on its own thread |
//! | [`shard`] | the multi-device driver: many devices' cores, their timers and mark stores in one thread, over a [`link`] |
//! | [`link`] | I/O: a shard's datagrams — a socket per device in one `epoll` set, or one socket with an IPv6 address per device (AnyIP, `IPV6_PKTINFO`) |
//! | [`nbiot`] | NB-IoT: the modem emulator and carrier model (sans-IO), the fleet's NB-IoT devices, the emulator on a pty |
//! | [`load`] | I/O: runs a fleet on sockets (in shard threads), subscribes at the broker, builds the run report |
//! | [`medium`] | the simulated 802.15.4 medium: a sans-IO core (channels, links, deliveries) and its ZEP hub; `v6iot-sim medium` |
//! | [`provision`] | fresh OSCORE credentials for a fleet, as the registry's credentials CSV |
//!
//! The edge router (with its SQLite registry and HTTP listener) and the embedded broker come in
//! only with the `demo` feature (default on): without it (`--no-default-features`) the
//! simulator and `v6iot-flood` build from the SDK, `v6iot-credentials` and the MQTT client.
//!
//! The I/O is in [`load`] and [`link`] (a fleet's sockets), [`medium::driver`] (the medium's ZEP socket and capture), [`subscriber`] (the MQTT subscriber's thread) and in the binary
//! `v6iot-sim` (src/main.rs), which runs single devices on the SDK's tokio driver.

#[cfg(feature = "demo")]
pub mod broker;
pub mod collector;
pub mod credentials;
#[cfg(feature = "demo")]
pub mod demo;
pub mod duration;
pub mod faults;
pub mod fleet;
pub mod fleet_marks;
pub mod histogram;
pub mod link;
pub mod linkmodel;
pub mod load;
pub mod nbiot;
pub mod plan;
pub mod provision;
/// The simulated 802.15.4 medium, the `v6iot-medium` crate (`v6iot-sim medium` serves it).
pub use v6iot_medium as medium;
pub mod report;
pub mod resources;
pub mod scenario;
pub mod sensor;
pub mod shard;
pub mod standin;
pub mod subscriber;
pub mod timeline;
pub mod timer_wheel;
