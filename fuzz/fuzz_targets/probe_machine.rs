//! Fuzzes the probe's state machine (`v6iot_sdk::coap::probe::Probe`, the core of `v6iot-sim
//! probe`) as a probed endpoint would drive it: arbitrary datagrams at arbitrary times, with or
//! without OSCORE. Whatever comes, nothing panics and, once the endpoint falls silent, the probe
//! ends within a bounded number of timeouts with exactly one result for every check.
//!
//! Input: a 4-byte header, then operations until the input ends.
//! * header: flags (bit 0: OSCORE with the RFC 8613 Appendix C.1 client context; bit 1: the
//!   target is an IPv6 address), the first transmission's timeout in units of 10 ms, the
//!   Observe wait in units of 10 ms (255 for either: `Duration::MAX`), and `max_blocks`;
//! * `0x00 len_hi len_lo bytes…`: a datagram from the endpoint (as many bytes as are left);
//! * `0x01 len_hi len_lo bytes…`: the same, as an answer to the last datagram the probe sent:
//!   its message ID, and its token in place of the datagram's own token when that has one;
//! * `0x02 len_hi len_lo bytes…`: like `0x01`, the bytes as the inner response to the last
//!   request the probe protected, protected by the endpoint's context (OSCORE only);
//! * `0x03 ms_hi ms_lo`: time passes, then the probe's timeout is handled;
//! * anything else: time jumps to the probe's next deadline.
//!
//! After every operation the probe's datagrams are taken. With `PROBE_MACHINE_PRINT` set the
//! results are printed (what a seed reaches).

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::coap::probe::{CheckId, Probe, ProbeConfig};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, RequestInfo, SecurityContext, protect_response, unprotect_request,
};
use v6iot_sdk::time::Instant;

/// Timeouts the probe may take, silent, before it must have ended.
const MAX_TIMEOUTS: usize = 10_000;

/// The probe's (client) and the endpoint's (server) contexts of RFC 8613 Appendix C.1.
fn contexts() -> &'static (SecurityContext, SecurityContext) {
    static CTX: OnceLock<(SecurityContext, SecurityContext)> = OnceLock::new();
    CTX.get_or_init(|| {
        let make = |sender: Vec<u8>, recipient: Vec<u8>| {
            let input = ContextInput {
                master_secret: (1..=16).collect(),
                master_salt: vec![0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40],
                id_context: None,
                sender_id: sender,
                recipient_id: recipient,
            };
            let mut ctx = SecurityContext::new(&input, ContextConfig::default()).unwrap();
            let mark = ctx.mark_to_persist().unwrap();
            ctx.persisted(mark);
            ctx
        };
        (make(vec![], vec![1]), make(vec![1], vec![]))
    })
}

fn millis(units: u8) -> Duration {
    match units {
        255 => Duration::MAX,
        n => Duration::from_millis(u64::from(n) * 10),
    }
}

/// The endpoint's side of one run: the clock, what the probe sent last.
struct Run {
    probe: Probe,
    now: Instant,
    last: Vec<u8>,
    server: Option<SecurityContext>,
    protected: Option<RequestInfo>,
}

impl Run {
    fn take_transmits(&mut self) {
        while let Some(d) = self.probe.poll_transmit(self.now) {
            if let (Some(server), Ok(p)) = (self.server.as_mut(), wire::parse(&d))
                && let Ok((_, info)) = unprotect_request(server, &p)
            {
                self.protected = Some(info);
            }
            self.last = d;
        }
    }

    fn timeout_at(&mut self, t: Instant) {
        self.now = self.now.max(t);
        self.probe.handle_timeout(self.now);
    }

    /// `bytes` with the message ID of the last datagram sent and, if it has a token, its token.
    fn as_answer(&self, bytes: &[u8]) -> Vec<u8> {
        let (Some(&first), Some(code), Some(last_first), Some(mid)) = (
            bytes.first(),
            bytes.get(1),
            self.last.first(),
            self.last.get(2..4),
        ) else {
            return bytes.to_vec();
        };
        let tkl = usize::from(first & 0x0f);
        let last_tkl = usize::from(last_first & 0x0f);
        let (Some(rest), Some(token)) = (bytes.get(4 + tkl..), self.last.get(4..4 + last_tkl))
        else {
            return bytes.to_vec();
        };
        let (first, token) = if tkl == 0 {
            (first, &[][..])
        } else {
            (first & 0xf0 | (last_first & 0x0f), token)
        };
        [&[first, *code][..], mid, token, rest].concat()
    }

    /// `inner` protected as the endpoint's response to the last protected request.
    fn protect(&mut self, inner: &[u8]) -> Option<Vec<u8>> {
        let packet = wire::parse(inner).ok()?;
        let (server, info) = (self.server.as_mut()?, self.protected.as_mut()?);
        wire::encode(&protect_response(server, &packet, info, false).ok()?)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, timeout, observe, max_blocks], mut ops)) = data.split_first_chunk::<4>()
    else {
        return;
    };
    let config = ProbeConfig {
        timeout: millis(timeout),
        observe_wait: millis(observe),
        max_blocks: u32::from(max_blocks),
        ..ProbeConfig::default()
    };
    let mut probe = Probe::new(config, flags & 2 != 0, 7);
    let oscore = flags & 1 != 0;
    if oscore {
        probe = probe.with_oscore(contexts().0.clone());
    }
    let mut run = Run {
        probe,
        now: Instant::ZERO,
        last: Vec::new(),
        server: oscore.then(|| contexts().1.clone()),
        protected: None,
    };
    run.take_transmits();
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let arg = match ops.split_first_chunk::<2>() {
            Some((&n, rest)) if op <= 3 => {
                ops = rest;
                u16::from_be_bytes(n)
            }
            _ => 0,
        };
        match op {
            0..=2 => {
                let (bytes, rest) = ops.split_at(usize::from(arg).min(ops.len()));
                ops = rest;
                let datagram = match op {
                    0 => Some(bytes.to_vec()),
                    1 => Some(run.as_answer(bytes)),
                    _ => run.protect(&run.as_answer(bytes)),
                };
                if let Some(d) = datagram {
                    run.probe.handle_datagram(run.now, &d);
                }
            }
            3 => {
                let t = run
                    .now
                    .checked_add(Duration::from_millis(u64::from(arg)))
                    .unwrap_or(Instant::MAX);
                run.timeout_at(t);
            }
            _ => {
                if let Some(t) = run.probe.poll_timeout() {
                    run.timeout_at(t);
                }
            }
        }
        run.take_transmits();
    }
    // The endpoint falls silent: the probe must end, with one verdict per check.
    for _ in 0..MAX_TIMEOUTS {
        run.take_transmits();
        if run.probe.is_done() {
            break;
        }
        let deadline = run.probe.poll_timeout();
        assert!(deadline.is_some(), "not done, but no deadline");
        if let Some(t) = deadline {
            run.timeout_at(t);
        }
    }
    assert!(
        run.probe.is_done(),
        "not done after {MAX_TIMEOUTS} timeouts"
    );
    let results = run.probe.results();
    if std::env::var_os("PROBE_MACHINE_PRINT").is_some() {
        // what a seed reaches: `PROBE_MACHINE_PRINT=1 …/probe_machine fuzz/corpus/probe_machine/X`
        eprintln!("{results:#?}");
    }
    for check in CheckId::ALL {
        let n = results.iter().filter(|r| r.check == check).count();
        assert_eq!(n, 1, "{check:?}: {n} results in {results:?}");
    }
    assert_eq!(results.len(), CheckId::ALL.len(), "{results:?}");
});
