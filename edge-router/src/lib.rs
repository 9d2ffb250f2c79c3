//! `v6iot-edge-router`: the plant-side edge router of v6iot.
//!
//! # Layers and the I/O boundary
//!
//! | module | job |
//! |---|---|
//! | [`border`] | sans-IO 6LoWPAN border router: PANs on 802.15.4 radios (RAs with PIO and 6CO, NS/NA, neighbour table, reassembly from many devices), forwarding to and from the host's TUN, CoAP to the router handed to the gateway |
//! | [`config`] | the TOML configuration, with errors that name the key |
//! | [`journal`] | the command queue's journal on disk (JSON lines, synced per batch on the blocking pool, rewritten on open and while running) |
//! | [`registry_worker`] | the registry's thread: OSCORE state batches before audit rows (bounded, drops counted), audit checkpoints, reloads when another process changed the registry |
//! | [`server`] | the I/O: CoAP socket, outbox, MQTT bridge around the ingress |
//! | [`registry_db`] | the device registry in SQLite: OSCORE identities (kid, sealed master secret, salt), class, allowed prefixes, state; CSV import |
//! | [`audit`] | the append-only, hash-chained audit trail in the registry's file: events, `verify`, `who_had(address, time)`, per-device history |
//! | [`gateway`] | sans-IO authentication gateway in front of the ingress: OSCORE contexts by kid, verify/protect, address binding, replay floors and sender marks to persist, refusals as security events |
//! | [`ingress`] | sans-IO CoAP ingress: device directory (RFC 9176 registrations), telemetry normalisation, deduplication, acknowledge-after-durable |
//! | [`peer`] | [`Peer`]: a device's address and port with the edge's address it reached (answers and requests leave from there) |
//!
//! The binary `v6iot-edge` (src/bin/v6iot-edge/) owns the sockets, the outbox files and the MQTT
//! connection; the cores above only see datagrams, times and results.

pub mod audit;
pub mod border;
pub mod config;
pub mod gateway;
pub mod ingress;
pub mod journal;
pub mod ops;
pub mod peer;
pub mod registry_db;
pub mod registry_worker;
pub mod seal;
pub mod server;

pub use peer::Peer;

/// The crate's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
