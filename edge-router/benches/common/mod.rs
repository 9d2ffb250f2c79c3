//! What the edge router's benches share.

use std::net::{Ipv6Addr, SocketAddr};

/// The address of simulated device `n`: one per device in the plan's plant 12·line 305 subnet.
pub(crate) fn addr(n: u32) -> SocketAddr {
    let [a, b, c, d] = n.to_be_bytes();
    SocketAddr::new(
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x1200,
            0x305,
            0,
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
            1,
        )
        .into(),
        5683,
    )
}
