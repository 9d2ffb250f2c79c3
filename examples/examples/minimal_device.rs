//! The smallest useful v6iot device: one observable counter, served over CoAP/UDP on IPv6.
//!
//! Needs: `v6iot-sdk` with its default `tokio` feature.
//!
//! Run: `cargo run -p v6iot-examples --example minimal_device -- [::1]:5684`
//! Then: `coap-client-notls -m get -s 5 coap://[::1]:5684/counter`

use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::coap::{
    App, Changed, Config, Device, Resource, ResourceId, ResourceTree, Response, content_format,
};
use v6iot_sdk::time::Instant;

/// The application state: a counter that ticks once a second.
struct Counter {
    count: u64,
    next_tick: Instant,
    id: Option<ResourceId>,
}

impl App for Counter {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.count += 1;
        self.next_tick = now + Duration::from_secs(1);
        self.id.map_or(Changed::NONE, |id| Changed::NONE.with(id))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "[::1]:5684".into());

    // 1. Describe the resources once; every device of this kind can share the tree.
    let mut tree = ResourceTree::new();
    let id = tree.add(
        Resource::new("counter")
            .rt("example.counter")
            .content_formats(&[content_format::TEXT_PLAIN])
            .observable()
            .get(|c: &mut Counter, _| {
                Response::content(content_format::TEXT_PLAIN, c.count.to_string().into_bytes())
                    .into()
            }),
    )?;

    // 2. Make the device: protocol state + tree + application state.
    let app = Counter {
        count: 0,
        next_tick: Instant::now() + Duration::from_secs(1),
        id: Some(id),
    };
    let mut device = Device::new(Config::default(), 1, Arc::new(tree), app);

    // 3. Run it on a UDP socket until Ctrl-C.
    let socket = tokio::net::UdpSocket::bind(&bind).await?;
    println!("serving coap://{}/counter", socket.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    v6iot_sdk::driver::run(
        &socket,
        &mut device,
        |event| println!("{event:?}"),
        shutdown,
    )
    .await?;
    Ok(())
}
