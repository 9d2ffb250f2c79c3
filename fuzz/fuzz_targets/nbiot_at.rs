//! Fuzzes the NB-IoT modem driver's side of the AT dialogue: the modem (bring-up, registration,
//! address, HiSilicon sockets, on the command/URC client and the line reader) answered with
//! arbitrary bytes, in arbitrary chunks, with time moving (timeouts, probes, recovery) and
//! datagrams to send; and every line of the input through the line classifier and the field
//! parsers (`+CEREG`, `+CGPADDR`, hex). Nothing may panic; everything the driver writes must be
//! one printable command line ending in CR, and its bounds hold whatever the modem sends.

#![no_main]

use core::time::Duration;

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::nbiot::at::{self, LineReader, MAX_PENDING_LINES};
use v6iot_sdk::nbiot::modem::MAX_OUTGOING;
use v6iot_sdk::nbiot::{Modem, ModemConfig, PsmRequest, T3324, T3412};
use v6iot_sdk::time::Instant;

fn modem(now: Instant) -> Modem {
    let config = ModemConfig {
        psm: Some(PsmRequest {
            periodic_tau: T3412::encode(Duration::from_secs(3600)).expect("a valid timer"),
            active_time: T3324::encode(Duration::from_secs(20)).expect("a valid timer"),
        }),
        ..ModemConfig::new("fuzz")
    };
    Modem::new(now, config)
}

/// What the driver writes is a run of command lines, each printable and ending in CR. One
/// write can hold more than one line when time passed before the caller drained the previous
/// (a command timed out unwritten and the driver probed again): that is buffering, not two
/// commands in flight — the client starts a command only when the previous one has ended.
fn check_writes(m: &mut Modem) {
    while let Some(w) = m.poll_serial() {
        assert!(w.ends_with(b"\r"), "a command line ends in CR: {w:?}");
        for line in w[..w.len() - 1].split(|b| *b == b'\r') {
            assert!(
                !line.is_empty() && line.iter().all(|b| (0x20..0x7f).contains(b)),
                "printable, non-empty command lines: {w:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The line parsers on every line of the input.
    let mut lines = LineReader::new();
    lines.handle_bytes(data);
    let mut n = 0;
    while let Some(line) = lines.poll_line() {
        n += 1;
        let _ = at::classify(&line, Some("+CEREG:"));
        let _ = at::classify(&line, None);
        let _ = at::parse_registration_read(&line);
        let _ = at::parse_cgpaddr(&line);
        let _ = at::parse_registration(&at::fields(&line));
        if let Some(bytes) = at::unhex(&line) {
            assert_eq!(
                at::hex(&bytes).to_ascii_uppercase(),
                line.to_ascii_uppercase()
            );
        }
    }
    assert!(n <= MAX_PENDING_LINES);

    // The modem, answered by the input: each op byte picks what happens next.
    let mut now = Instant::ZERO;
    let mut m = modem(now);
    check_writes(&mut m);
    let mut rest = data;
    while let [op, tail @ ..] = rest {
        let len = usize::from(op >> 3) + 1;
        let (chunk, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        match op & 7 {
            0..=3 => m.handle_serial(now, chunk),
            4 => {
                // Time moves to the next deadline (or a little).
                now = m
                    .poll_timeout()
                    .filter(|t| *t > now)
                    .unwrap_or(now + Duration::from_millis(u64::from(*op) * 10));
                m.handle_timeout(now);
            }
            5 => {
                let to = "[2001:db8::1]:5683".parse().unwrap();
                let _ = m.send(now, to, chunk);
            }
            6 => now += Duration::from_secs(u64::from(*op)),
            _ => m.handle_timeout(now),
        }
        check_writes(&mut m);
        while m.poll_datagram().is_some() {}
        while m.poll_event().is_some() {}
        assert!(m.outgoing() <= MAX_OUTGOING, "outgoing bounded");
    }
});
