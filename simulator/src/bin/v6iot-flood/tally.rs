//! What a run counts: answers by kind, timeouts, late answers, requests sent, CoAP codes and
//! the latency histogram. One `Tally` per generator thread, merged at the end.

use hdrhistogram::Histogram;

/// Latency histogram bounds, microseconds.
pub(crate) const HIST_MAX_US: u64 = 60_000_000;

/// What one thread counted (all its sockets).
pub(crate) struct Tally {
    /// 2.xx answers (any answer with `--any-answer`) in the measured period.
    pub(crate) ok: u64,
    /// Answers that completed no request as wanted: empty ACKs, CON/NON messages, non-2.xx
    /// codes, datagrams too short to be CoAP.
    pub(crate) other: u64,
    /// Resets (RST) to outstanding requests in the measured period.
    pub(crate) resets: u64,
    /// Requests unanswered within the timeout (or whose message ID came round first).
    pub(crate) timeouts: u64,
    /// Answers to requests no longer outstanding (expired or answered before).
    pub(crate) late: u64,
    /// Requests sent (warm-up included).
    pub(crate) sent: u64,
    /// OSCORE mode: a socket's pre-protected requests ran out.
    pub(crate) exhausted: bool,
    /// Answers by CoAP code (class << 5 | detail) in the measured period.
    pub(crate) codes: [u64; 256],
    /// Round-trip times of the `ok` answers, microseconds.
    pub(crate) latency_us: Histogram<u64>,
}

impl Tally {
    /// Nothing counted yet.
    pub(crate) fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            ok: 0,
            other: 0,
            resets: 0,
            timeouts: 0,
            late: 0,
            sent: 0,
            exhausted: false,
            codes: [0; 256],
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, 3)?,
        })
    }

    /// Adds what another thread counted.
    pub(crate) fn add(&mut self, o: &Tally) -> anyhow::Result<()> {
        self.ok += o.ok;
        self.other += o.other;
        self.resets += o.resets;
        self.timeouts += o.timeouts;
        self.late += o.late;
        self.sent += o.sent;
        self.exhausted |= o.exhausted;
        for (a, b) in self.codes.iter_mut().zip(o.codes.iter()) {
            *a += *b;
        }
        self.latency_us.add(&o.latency_us)?;
        Ok(())
    }

    /// The codes seen, as `2.04:n` strings in code order.
    pub(crate) fn code_list(&self) -> Vec<String> {
        self.codes
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(c, n)| format!("{}.{:02}:{n}", c >> 5, c & 31))
            .collect()
    }
}
