//! `v6iot-examples`: programs a device maker copies from. Each lives in `examples/` of this
//! crate and says at its top which features of `v6iot-sdk` it needs.
