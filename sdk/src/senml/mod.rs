//! SenML records, RFC 8428 (being written).
