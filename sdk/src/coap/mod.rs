//! The sans-IO CoAP device core (RFC 7252 on coap-lite), with discovery (RFC 6690),
//! Observe (RFC 7641), Block-wise transfers (RFC 7959) and No-Response (RFC 7967).
//!
//! # Layers
//!
//! | module | job |
//! |---|---|
//! | [`wire`] | checked parsing of datagrams, option values, Block values |
//! | [`config`] | RFC 7252 transmission parameters and memory bounds |
//! | [`resource`] | the resource tree, handlers, requests and replies, `/.well-known/core` with its filters |
//! | [`link`] | CoRE link format (RFC 6690): the writer and the reader |
//! | [`probe`] | the client-side checks of another endpoint's IPv6 and CoAP behaviour (`v6iot-sim probe`'s core) |
//! | [`endpoint`] | the protocol state machine of one device: reliability, dedup, Observe, Block-wise |
//! | [`device`] | an [`Endpoint`], a shared [`ResourceTree`] and the application's state, as one unit |
//!
//! # I/O boundary
//!
//! Nothing here opens a socket, spawns a task or reads a clock. A driver (see
//! `v6iot_sdk::driver`, or the simulator) hands datagrams and the current time in and takes
//! datagrams and the next wake-up time out:
//!
//! ```
//! use std::{net::SocketAddr, sync::Arc};
//! use v6iot_sdk::time::Instant;
//! use v6iot_sdk::coap::{Config, Device, NoTimers, Resource, ResourceTree, Response, content_format};
//!
//! let mut tree = ResourceTree::<NoTimers>::new();
//! tree.add(Resource::new("hello").content_formats(&[content_format::TEXT_PLAIN])
//!     .get(|_, _| Response::content(content_format::TEXT_PLAIN, b"world".to_vec()).into()))
//!     .unwrap();
//! let mut device = Device::new(Config::default(), 1, Arc::new(tree), NoTimers);
//!
//! let client: SocketAddr = "[::1]:40000".parse().unwrap();
//! // CON GET /hello, message ID 0x1234, token 0x77
//! let get = [0x41, 0x01, 0x12, 0x34, 0x77, 0xb5, b'h', b'e', b'l', b'l', b'o'];
//! device.handle_datagram(Instant::ZERO, client, &get); // any monotonic time: the driver's clock
//! let reply = device.poll_transmit().unwrap();
//! assert_eq!(reply.destination, client);
//! assert_eq!(&reply.contents[..5], &[0x61, 0x45, 0x12, 0x34, 0x77]); // ACK 2.05, same ID and token
//! assert!(reply.contents.ends_with(b"world"));
//! ```

pub mod config;
pub mod device;
pub mod endpoint;
pub mod link;
pub mod probe;
pub mod resource;
pub mod wire;

pub use config::Config;
pub use device::{App, Device, NoTimers};
pub use endpoint::{
    ClientRequest, ClientResponse, Endpoint, Event, ObserveEnd, OscoreStats, RequestId,
    RequestOutcome, SeparateError, Stats, Transmit,
};
pub use resource::{
    Changed, Code, Handler, LinkAttrs, Method, Reply, Request, Resource, ResourceId, ResourceTree,
    Response, Ticket, TreeError, content_format,
};
