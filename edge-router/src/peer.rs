//! Where a device is, as the edge sees it: the device's address and port, and the edge's own
//! address the device reached. An edge on `[::]` with several addresses (a global one, a ULA, an
//! NB-IoT ingress prefix, IPv4) must answer from the address a request arrived at, and send its
//! own requests to a device from the address the device last used: a client that sent to one of
//! them never sees an answer from another (RFC 7252 §5.3.2: a response comes from the
//! request's destination).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One end of a UDP path: the device's address and port, and the edge's address it reached.
///
/// Tables are keyed by `remote` (what a device sends from); `local` only says where the edge's
/// datagrams to it leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The device's address and port: the source of its datagrams, the destination of the
    /// edge's. IPv4 devices on the dual-stack socket appear IPv4-mapped.
    pub remote: SocketAddr,
    /// The edge's address the device sent to: the source of the edge's datagrams to it. `None`
    /// where the socket has one address anyway (bound to a specific address, or in tests): the
    /// kernel's choice is then the right one.
    pub local: Option<IpAddr>,
}

impl Peer {
    /// `remote`, reached at the edge's `local` address.
    pub fn via(remote: SocketAddr, local: IpAddr) -> Peer {
        Peer {
            remote,
            local: Some(local),
        }
    }
}

impl From<SocketAddr> for Peer {
    /// A peer whose datagrams leave from the socket's own address.
    fn from(remote: SocketAddr) -> Peer {
        Peer {
            remote,
            local: None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(local) => write!(f, "{} via {local}", self.remote),
            None => write!(f, "{}", self.remote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_both_ends() {
        let remote: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let local: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(
            Peer::via(remote, local).to_string(),
            "[2001:db8::7]:4000 via fd00::1"
        );
        assert_eq!(Peer::from(remote).to_string(), "[2001:db8::7]:4000");
    }
}
