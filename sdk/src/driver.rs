//! The tokio UDP driver (being written).
