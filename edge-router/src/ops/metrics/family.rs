//! One metric family read from a source (the edge's snapshot, a PAN's counters): a name, a
//! help text, counters or gauges, at most one label of its own and a function from the
//! source to its samples. The edge's families and the border router's are tables of these,
//! written by the one [`Family::encode`].

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Out;

/// One family's samples: (its label's value, count); the value is unused without a label.
pub(super) type Rows = Vec<(&'static str, u64)>;

/// Labels a caller puts on every sample of one source (the PAN's index), before the
/// family's own.
pub(super) type Outer<'a> = &'a [(&'static str, &'a str)];

/// A family of counters or gauges over a source `S` (see the module docs).
pub(super) struct Family<S> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
    rows: fn(&S) -> Rows,
}

/// The one sample of a family without a label.
pub(super) fn one(n: u64) -> Rows {
    vec![("", n)]
}

impl<S> Family<S> {
    /// A counter (one sample per source).
    pub(super) const fn counter(
        name: &'static str,
        help: &'static str,
        rows: fn(&S) -> Rows,
    ) -> Family<S> {
        Family::new(name, help, MetricType::Counter, None, rows)
    }

    /// Counters by `label`.
    pub(super) const fn counters(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: fn(&S) -> Rows,
    ) -> Family<S> {
        Family::new(name, help, MetricType::Counter, Some(label), rows)
    }

    /// A gauge (one sample per source).
    pub(super) const fn gauge(
        name: &'static str,
        help: &'static str,
        rows: fn(&S) -> Rows,
    ) -> Family<S> {
        Family::new(name, help, MetricType::Gauge, None, rows)
    }

    /// Gauges by `label`.
    pub(super) const fn gauges(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: fn(&S) -> Rows,
    ) -> Family<S> {
        Family::new(name, help, MetricType::Gauge, Some(label), rows)
    }

    const fn new(
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        label: Option<&'static str>,
        rows: fn(&S) -> Rows,
    ) -> Family<S> {
        Family {
            name,
            help,
            kind,
            label,
            rows,
        }
    }

    /// Writes the family once, with the samples of every source under its `outer` labels.
    pub(super) fn encode(
        &self,
        out: &mut Out<'_>,
        sources: &[(Outer<'_>, &S)],
    ) -> std::fmt::Result {
        let mut e = out
            .0
            .encode_descriptor(self.name, self.help, None, self.kind)?;
        for (outer, s) in sources {
            for (value, n) in (self.rows)(s) {
                let mut labels = outer.to_vec();
                if let Some(label) = self.label {
                    labels.push((label, value));
                }
                let sample = e.encode_family(&labels)?;
                match self.kind {
                    MetricType::Gauge => ConstGauge::new(n as i64).encode(sample)?,
                    _ => ConstCounter::new(n).encode(sample)?,
                }
            }
        }
        Ok(())
    }

    /// Writes the family for one source with no outer labels.
    pub(super) fn encode_one(&self, out: &mut Out<'_>, s: &S) -> std::fmt::Result {
        self.encode(out, &[(&[], s)])
    }
}
