//! Append throughput of the outbox (placeholder until the bench is written).

fn main() {}
