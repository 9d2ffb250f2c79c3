//! `v6iot-sim merge A.json B.json …`: the shards of one run as one report. Counts add up,
//! histograms merge bucket by bucket (percentiles of the merge, not averages of percentiles),
//! timelines add up interval by interval, the devices' digests XOR to the unsharded run's.
//! Reports of different scenarios (fingerprints), or a shard given twice, are refused.

use std::collections::BTreeSet;

use super::build::{throughput, total_of};
use super::{Checks, FleetReport, Report, SCHEMA};
use crate::histogram::LatencyHistogram;

/// Why reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no reports to merge")]
    Empty,
    /// A report of another schema.
    #[error("report {index}: schema `{schema}`, not {SCHEMA}")]
    Schema {
        /// Which report (0-based).
        index: usize,
        /// Its schema.
        schema: String,
    },
    /// Reports of different scenarios or seeds.
    #[error(
        "report {index} is of scenario {theirs}, the first of {ours} (another scenario, seed or settings)"
    )]
    Scenario {
        /// Which report.
        index: usize,
        /// The first report's fingerprint.
        ours: String,
        /// This one's.
        theirs: String,
    },
    /// Two reports cover the same shard.
    #[error("report {index} repeats shard {shard}")]
    Repeated {
        /// Which report.
        index: usize,
        /// The shard.
        shard: u32,
    },
    /// Reports split the scenario differently.
    #[error("report {index} is of a run split into {theirs} shards, the first into {ours}")]
    Count {
        /// Which report.
        index: usize,
        /// The first report's count.
        ours: u32,
        /// This one's.
        theirs: u32,
    },
}

/// Merges shard reports of one run into one report.
pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
    let first = reports.first().ok_or(MergeError::Empty)?;
    let mut shards = BTreeSet::new();
    for (index, r) in reports.iter().enumerate() {
        if r.schema != SCHEMA {
            return Err(MergeError::Schema {
                index,
                schema: r.schema.clone(),
            });
        }
        if r.scenario != first.scenario {
            return Err(MergeError::Scenario {
                index,
                ours: first.scenario.fingerprint.clone(),
                theirs: r.scenario.fingerprint.clone(),
            });
        }
        if r.shards.count != first.shards.count {
            return Err(MergeError::Count {
                index,
                ours: first.shards.count,
                theirs: r.shards.count,
            });
        }
        for s in &r.shards.included {
            if !shards.insert(*s) {
                return Err(MergeError::Repeated { index, shard: *s });
            }
        }
    }
    let mut fleets: Vec<FleetReport> = Vec::new();
    let mut digest = 0u64;
    let mut merged = first.clone();
    merged.timeline = Default::default();
    merged.simulators.clear();
    merged.faults.clear();
    merged.warnings.clear();
    let mut problems = Vec::new();
    for r in reports {
        digest ^= u64::from_str_radix(&r.shards.devices_digest, 16).unwrap_or(0);
        merged.timeline.merge(&r.timeline);
        merged.simulators.extend(r.simulators.iter().cloned());
        merged.started_unix = merged.started_unix.min(r.started_unix);
        merged.ended_s = merged.ended_s.max(r.ended_s);
        merged.settled_s = merged.settled_s.max(r.settled_s);
        for f in &r.faults {
            if !merged.faults.contains(f) {
                merged.faults.push(f.clone());
            }
        }
        let shard_names: Vec<String> = r.shards.included.iter().map(u32::to_string).collect();
        for w in &r.warnings {
            merged
                .warnings
                .push(format!("shard {}: {w}", shard_names.join(",")));
        }
        problems.extend(r.checks.problems.iter().cloned());
        for f in &r.fleets {
            match fleets.iter_mut().find(|m| m.name == f.name) {
                Some(m) => merge_fleet(m, f),
                None => fleets.push(f.clone()),
            }
        }
    }
    merged.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for f in &mut fleets {
        f.throughput_per_s = throughput(f.delivered, first.scenario.duration_s);
    }
    merged.total = total_of(&fleets, first.scenario.duration_s);
    merged.fleets = fleets;
    merged.shards.included = shards.into_iter().collect();
    merged.shards.devices_digest = format!("{digest:016x}");
    if merged.shards.included.len() < merged.shards.count as usize {
        merged.warnings.push(format!(
            "only shards {:?} of {} are in this report",
            merged.shards.included, merged.shards.count
        ));
    }
    for fr in merged.fleets.iter().chain(std::iter::once(&merged.total)) {
        if !fr.adds_up() {
            problems.push(format!(
                "fleet {}: the merged classes do not add up to made",
                fr.name
            ));
        }
    }
    merged.checks = Checks {
        consistent: reports.iter().all(|r| r.checks.consistent) && problems.is_empty(),
        problems,
    };
    Ok(merged)
}

fn merge_fleet(m: &mut FleetReport, f: &FleetReport) {
    m.add_counts(f);
    let mut latency = LatencyHistogram::from_report(&m.latency);
    latency.merge(&LatencyHistogram::from_report(&f.latency));
    m.latency = latency.to_report();
    let mut registration = LatencyHistogram::from_report(&m.registration);
    registration.merge(&LatencyHistogram::from_report(&f.registration));
    m.registration = registration.to_report();
}
