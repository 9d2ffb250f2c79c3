//! `v6iot-edge-router`: the plant-side edge router of v6iot.
//!
//! It will hold the 6LoWPAN border router, the CoAP ingress, the authentication gateway, the
//! device registry and audit trail, and the downlink queue (see `ARCHITECTURE.md`). This crate
//! is a placeholder until the data-path issue lands: it only reports its version.

/// The crate's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
