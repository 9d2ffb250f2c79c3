//! NB-IoT in the simulator: the modem emulator, the carrier model, and the fleet's NB-IoT
//! devices.
//!
//! | module | job |
//! |---|---|
//! | [`emulator`] | the modem emulator (sans-IO): AT commands in, responses and URCs out; attach, carrier address, PSM and TAU, sockets |
//! | [`carrier`] | the carrier model (sans-IO): latency by coverage class (CE0/CE1/CE2), loss, reachability only while awake; [`carrier::Cellular`], a modem behind its link |
//! | [`fleet`] | the NB-IoT fleet of `v6iot-sim run --transport nbiot`: its devices' settings, and platform commands for a share of them with their results |
//! | [`node`] | a fleet's NB-IoT device: the SDK's `NbiotDevice` wired to a `Cellular` in memory, driven by a shard |
//! | [`pty`] | I/O: the emulator on a pty (for the SDK's driver, or a person at a serial terminal), with its datagrams on an address pool; an async serial stream over a pty's device end |
//!
//! There is no open-source NB-IoT modem emulator; this one speaks the dialect of
//! `v6iot_sdk::nbiot` (3GPP TS 27.007 and the HiSilicon socket set) and is its reference.

pub mod carrier;
pub mod cli;
pub mod emulator;
pub mod fleet;
pub mod node;
pub mod pty;
