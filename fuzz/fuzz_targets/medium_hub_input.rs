//! Fuzzes the simulator's ZEP medium hub (`v6iot_simulator::medium::Hub`): the input is a run of
//! datagrams from up to 16 source addresses, each `[source, time step, length, bytes…]`, into a
//! hub with a table of 4 remote participants (the first byte picks the ideal medium or the
//! airtime model). Nothing may panic; the table holds its bound; every datagram the hub sends is
//! good ZEP v2 data with a good FCS; every datagram in is counted once, as taken or as dropped.

#![no_main]

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use v6iot_medium::phy::AirtimeConfig;
use v6iot_medium::{Hub, HubConfig, Medium, MediumConfig};
use v6iot_sdk::radio::zep;
use v6iot_sdk::time::Instant;

const MAX_REMOTE: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let medium = Medium::new(MediumConfig {
        seed: u64::from(mode),
        capture: true,
        max_pending: 64,
        airtime: (mode & 1 == 1).then(AirtimeConfig::default),
        ..MediumConfig::default()
    });
    let mut hub = Hub::new(
        medium,
        HubConfig {
            max_remote: MAX_REMOTE,
            idle_timeout: Duration::from_millis(50),
            ..HubConfig::default()
        },
    );
    let mut now = Instant::ZERO;
    let mut sent = 0_u64;
    while let [src, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*step));
        hub.handle_timeout(now);
        let from = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 17_000 + u16::from(src & 15));
        hub.handle_datagram(now, from, datagram);
        sent += 1;
        while let Some((_, out)) = hub.poll_datagram() {
            assert!(
                zep::decode(out.as_bytes()).is_ok(),
                "the hub sends good ZEP"
            );
        }
        while hub.poll_on_air().is_some() {}
        assert!(hub.stats().remote as usize <= MAX_REMOTE);
        assert!(hub.medium().participants() <= MAX_REMOTE);
    }
    hub.handle_timeout(now + Duration::from_secs(10));
    while hub.poll_datagram().is_some() {}
    assert_eq!(hub.stats().datagrams_in, sent);
});
