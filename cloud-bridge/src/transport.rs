//! One connection to the platform: resolve, race TCP (Happy Eyeballs), then TLS if the URL
//! asks for it. Shared by the MQTT publisher and the WebSocket sink.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::endpoint::Endpoint;
use crate::event::BridgeError;
use crate::happy_eyeballs;
use crate::tls::TlsOptions;

/// Why one connection could not be made (each names the endpoint, for logs and events).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP and TLS together took longer than the connect timeout.
    #[error("connecting to {authority} timed out after {after:?}")]
    Timeout {
        /// `host:port`.
        authority: String,
        /// The connect timeout.
        after: Duration,
    },
    /// No address answered (Happy Eyeballs names each and why), or the name did not resolve.
    #[error("TCP to {authority}: {error}")]
    Tcp {
        /// `host:port`.
        authority: String,
        /// What the attempts ended with.
        error: std::io::Error,
    },
    /// The TLS handshake failed (a certificate refused, a protocol error, the peer gone).
    #[error("TLS handshake with {name} at {addr}: {error}")]
    Tls {
        /// The server name checked.
        name: String,
        /// The address connected to.
        addr: SocketAddr,
        /// rustls' reason.
        error: std::io::Error,
    },
}

/// A byte stream to the platform (TCP or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to one endpoint, again and again.
#[derive(Clone)]
pub(crate) struct Connector {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    attempt_delay: Duration,
    timeout: Duration,
}

impl Connector {
    /// Checks the TLS files now, so that a bad configuration fails at start, not at each retry.
    pub(crate) fn new(
        endpoint: Endpoint,
        tls: &TlsOptions,
        attempt_delay: Duration,
        timeout: Duration,
    ) -> Result<Self, BridgeError> {
        let tls = if endpoint.scheme.is_tls() {
            let config = tls.client_config()?;
            let name = tls.server_name(&endpoint.host)?;
            Some((TlsConnector::from(config), name))
        } else {
            if tls.ca_file.is_some() || tls.client_cert.is_some() {
                tracing::warn!(
                    url_host = %endpoint.host,
                    "TLS files are configured but the URL is not mqtts:// or wss://; they are unused"
                );
            }
            None
        };
        Ok(Connector {
            endpoint,
            tls,
            attempt_delay,
            timeout: timeout.max(Duration::from_millis(100)),
        })
    }

    /// The endpoint connected to.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// One connection (TCP, then TLS when configured), within the connect timeout.
    pub(crate) async fn connect(&self) -> Result<(Box<dyn Io>, SocketAddr), ConnectError> {
        match tokio::time::timeout(self.timeout, self.connect_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                authority: self.endpoint.authority(),
                after: self.timeout,
            }),
        }
    }

    async fn connect_inner(&self) -> Result<(Box<dyn Io>, SocketAddr), ConnectError> {
        let host = &self.endpoint.host;
        let (tcp, addr) =
            happy_eyeballs::connect_host(host, self.endpoint.port, self.attempt_delay)
                .await
                .map_err(|error| ConnectError::Tcp {
                    authority: self.endpoint.authority(),
                    error,
                })?;
        let Some((connector, name)) = &self.tls else {
            return Ok((Box::new(tcp), addr));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|error| ConnectError::Tls {
                name: name.to_str().into_owned(),
                addr,
                error,
            })?;
        Ok((Box::new(tls), addr))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field(
                "tls",
                &self.tls.as_ref().map(|(_, n)| n.to_str().into_owned()),
            )
            .finish()
    }
}
