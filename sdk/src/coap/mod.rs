//! The sans-IO CoAP device core (being written).
