//! `v6iot-simulator`: simulated devices on the real v6iot SDK core.
