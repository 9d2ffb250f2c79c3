//! `v6iot-examples`: programs a device maker copies from, and the application they share.
//!
//! | example | runs on | shows |
//! |---|---|---|
//! | `examples/minimal_device.rs` | Linux, tokio | one observable resource, plain CoAP |
//! | `examples/oscore_sensor.rs` | Linux, tokio | the valve sensor with its credentials file: registers with the edge, reports SenML, takes a valve command, all over OSCORE |
//! | `examples/sans_io_sensor.rs` | Linux, no runtime | the same device driven by hand through the sans-IO API in a plain loop with `poll_timeout`: what a firmware author copies |
//! | `examples/platform.rs` | Linux, the platform side | subscribes to a device's telemetry over MQTT and sends it a command |
//! | `examples/nbiot_meter.rs` | Linux, tokio, a serial port | the valve sensor behind an NB-IoT modem driven over AT commands: IPv6 PDP context, PSM, `b=UQ` registration, reports and valve commands over OSCORE |
//! | `firmware/` (its own crate) | Cortex-M4 (`mps2-an386` under QEMU) | the same device core with `no_std`, against an edge stand-in |
//!
//! The library itself is `no_std` + `alloc` (feature `std`, on by default, is for the examples'
//! Linux helpers), so the firmware runs the very application the Linux examples run:
//! [`valve_sensor`]. A later example (a 6LoWPAN radio device) adds its own file next to these.

#![cfg_attr(not(test), no_std)]

extern crate alloc;
#[cfg(all(feature = "std", not(test)))]
extern crate std;

#[cfg(feature = "std")]
pub mod credentials;
pub mod valve_sensor;
