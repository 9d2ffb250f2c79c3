//! Free loopback ports. A port is free when the kernel hands it out for port 0; it is never
//! handed out twice in one process, because the kernel may give a port that was just released
//! again, and two listeners of one test (or of two tests running at once) then collided
//! ("Address already in use" from mosquitto in CI).

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

/// Calls `pick` until it returns a port this process has not been given yet, and returns it.
pub fn unique_port(mut pick: impl FnMut() -> u16) -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = pick();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A TCP port free on `[::1]`.
pub fn free_tcp_port() -> u16 {
    unique_port(|| {
        TcpListener::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A UDP port free on `[::1]`.
pub fn free_udp_port() -> u16 {
    unique_port(|| {
        UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A TCP port free on both 127.0.0.1 and `::1` (as far as one can know).
pub fn free_tcp_port_on_both() -> u16 {
    unique_port(|| {
        for _ in 0..100 {
            let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            if TcpListener::bind(("::1", port)).is_ok() {
                return port;
            }
        }
        panic!("no port free on both loopback addresses");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_never_given_twice() {
        // Ports 1 and 2 (never handed out for port 0): the same one three times, then another.
        let mut offers = [1, 1, 1, 2].into_iter();
        let first = unique_port(|| offers.next().unwrap());
        let second = unique_port(|| offers.next().unwrap());
        assert_eq!((first, second), (1, 2));
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = [free_tcp_port(), free_udp_port(), free_tcp_port_on_both()];
        assert!(ports.iter().all(|&p| p != 0));
        TcpListener::bind(("::1", ports[2])).unwrap();
        TcpListener::bind(("127.0.0.1", ports[2])).unwrap();
    }
}
