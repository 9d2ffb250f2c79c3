//! Operating the edge router: what an operator watches and how the process lives.
//!
//! | module | job |
//! |---|---|
//! | [`metrics`] | `/metrics` (Prometheus text or OpenMetrics from `prometheus-client`): reads the counters the cores already keep |
//! | [`http`] | the listener: a small HTTP/1.1 server on tokio (bounded heads, counted refusals), the routes, the WebSocket upgrade |
//! | [`dashboard`] | the live page (embedded static files) and its WebSocket feed over a bounded, sans-IO model of the devices |
//! | [`live`] | the server loop's side: counters it learns from the cores' events, the copy `/metrics` reads, the board's updates |
//! | [`logging`] | human or JSON-lines logs, levels per module, reloaded on SIGHUP |

pub mod dashboard;
pub mod http;
pub mod live;
pub mod logging;
pub mod metrics;
