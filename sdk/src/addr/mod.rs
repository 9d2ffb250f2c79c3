//! The v6iot IPv6 address plan (being written).
