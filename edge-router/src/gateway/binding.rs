//! Address binding: the address and port each authenticated device was last verified at, both
//! ways. The edge sends a device's requests (commands, observations) to its bound address, and
//! finds the context for a request to an address by the device bound there.

use foldhash::HashMap;
use std::net::SocketAddr;

/// What [`Bindings::bind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// The device was already bound to this address.
    Same,
    /// The device had no address yet.
    New,
    /// The device moved from this address.
    Moved(SocketAddr),
}

/// Devices by address and addresses by device.
#[derive(Debug, Default)]
pub(super) struct Bindings {
    by_device: HashMap<String, SocketAddr>,
    by_address: HashMap<SocketAddr, String>,
}

impl Bindings {
    /// Binds `device` to `address` (taking the address from any other device bound there).
    pub(super) fn bind(&mut self, device: &str, address: SocketAddr) -> Bound {
        match self.by_device.get(device) {
            Some(a) if *a == address => return Bound::Same,
            _ => {}
        }
        if let Some(other) = self.by_address.insert(address, device.to_owned())
            && other != device
        {
            self.by_device.remove(&other);
        }
        match self.by_device.insert(device.to_owned(), address) {
            None => Bound::New,
            Some(old) => {
                if self.by_address.get(&old).is_some_and(|d| d == device) {
                    self.by_address.remove(&old);
                }
                Bound::Moved(old)
            }
        }
    }

    /// The device bound to `address`.
    pub(super) fn device_at(&self, address: SocketAddr) -> Option<&str> {
        self.by_address.get(&address).map(String::as_str)
    }

    /// Forgets `device`'s binding.
    pub(super) fn remove(&mut self, device: &str) {
        if let Some(a) = self.by_device.remove(device)
            && self.by_address.get(&a).is_some_and(|d| d == device)
        {
            self.by_address.remove(&a);
        }
    }

    /// Devices bound.
    pub(super) fn len(&self) -> usize {
        self.by_device.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_moves_and_takes_over() {
        let a: SocketAddr = "[::1]:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut s = Bindings::default();
        assert_eq!(s.bind("d1", a), Bound::New);
        assert_eq!(s.bind("d1", a), Bound::Same);
        assert_eq!(s.bind("d1", b), Bound::Moved(a));
        assert_eq!(s.device_at(a), None);
        assert_eq!(s.device_at(b), Some("d1"));
        // d2 gets d1's address (NAT reuse): d1 is no longer bound anywhere.
        assert_eq!(s.bind("d2", b), Bound::New);
        assert_eq!(s.device_at(b), Some("d2"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.bind("d1", a), Bound::New);
        s.remove("d1");
        assert_eq!(s.device_at(a), None);
        assert_eq!(s.len(), 1);
    }
}
