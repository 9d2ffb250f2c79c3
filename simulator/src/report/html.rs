//! The self-contained HTML report (`v6iot-sim run --html FILE`, `v6iot-sim merge --html FILE`):
//! one page, no scripts and no external resources — the plots are SVG drawn with `plotters` and
//! written into the page. Plots: reports per second over time (made, acknowledged, delivered)
//! and registrations per second, with the faults marked; latency (p50, p99) over time; the
//! latency distribution (a histogram of every delivered report's latency, log-spaced bins); the
//! simulator's CPU and memory. Then
//! per fleet what became of its reports, the faults, warnings and consistency problems.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{FleetReport, Report};

/// Width and height of each plot, pixels.
const PLOT: (u32, u32) = (900, 280);

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = escape(&format!("v6iot-sim report: {}", report.scenario.name));
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        page,
        "<p>{}</p>",
        escape(&report.summary()).replace('\n', "<br>")
    );
    let _ = writeln!(
        page,
        "<p>seed {} · fingerprint {} · shards {:?} of {} · {} devices · reporting {:.0} s, drain up to {:.0} s, waited {:.1} s (up to {:.0} s) for deliveries after the devices stopped, ended at {:.1} s</p>",
        report.scenario.seed,
        escape(&report.scenario.fingerprint),
        report.shards.included,
        report.shards.count,
        report.scenario.devices,
        report.scenario.duration_s,
        report.scenario.drain_s,
        report.settled_s,
        report.scenario.settle_s,
        report.ended_s
    );
    for (id, title, svg) in [
        ("throughput", "Reports per second", throughput_plot(report)),
        ("latency", "Latency (ms)", latency_plot(report)),
        (
            "histogram",
            "Latency distribution (delivered reports)",
            histogram_plot(&report.total.latency),
        ),
        (
            "resources",
            "Simulator CPU (cores) and memory (MB)",
            resources_plot(report),
        ),
    ] {
        let _ = writeln!(
            page,
            "<h2>{title}</h2>\n<div class=\"plot\" id=\"plot-{id}\">{}</div>",
            svg.unwrap_or_else(|e| format!("<p>plot failed: {}</p>", escape(&e)))
        );
    }
    fleets_table(&mut page, report);
    faults_table(&mut page, report);
    list(&mut page, "Warnings", &report.warnings);
    list(&mut page, "Consistency problems", &report.checks.problems);
    page.push_str("</body></html>\n");
    page
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}.plot svg{border:1px solid #ddd}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a plot: its name, colour and points.
struct Line {
    name: &'static str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Draws `lines` over time as SVG, with the report's faults as shaded spans.
/// What every plot's chart starts from: its margin and label areas.
fn chart_on<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(root);
    builder
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60);
    builder
}

fn plot(report: &Report, lines: &[Line], y_desc: &str) -> Result<String, String> {
    let x_max = report
        .timeline
        .buckets
        .last()
        .map_or(1.0, |b| b.t_s + report.timeline.bucket_s)
        .max(1.0);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = chart_on(&root)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds from the start")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        let shade = RGBColor(230, 60, 60).mix(0.15);
        for f in &report.faults {
            let end = (f.at_s + f.length_s.max(report.timeline.bucket_s / 4.0)).min(x_max);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(f.at_s, 0.0), (end, y_max)],
                    shade.filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        for line in lines {
            let colour = line.colour;
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Per-bucket values as points at the buckets' middles.
fn series(
    report: &Report,
    value: impl Fn(&crate::timeline::BucketReport) -> f64,
) -> Vec<(f64, f64)> {
    let w = report.timeline.bucket_s;
    report
        .timeline
        .buckets
        .iter()
        .map(|b| (b.t_s + w / 2.0, value(b)))
        .collect()
}

fn throughput_plot(report: &Report) -> Result<String, String> {
    let w = report.timeline.bucket_s.max(f64::MIN_POSITIVE);
    let lines = [
        Line {
            name: "made",
            colour: RGBColor(120, 120, 120),
            points: series(report, |b| b.counts.made as f64 / w),
        },
        Line {
            name: "acknowledged",
            colour: RGBColor(31, 119, 180),
            points: series(report, |b| b.counts.acknowledged as f64 / w),
        },
        Line {
            name: "delivered",
            colour: RGBColor(44, 160, 44),
            points: series(report, |b| b.counts.delivered as f64 / w),
        },
        Line {
            name: "registrations",
            colour: RGBColor(140, 86, 75),
            points: series(report, |b| b.counts.registered as f64 / w),
        },
    ];
    plot(report, &lines, "reports/s")
}

fn latency_plot(report: &Report) -> Result<String, String> {
    let lines = [
        Line {
            name: "p50",
            colour: RGBColor(31, 119, 180),
            points: series(report, |b| b.latency.p50_ms),
        },
        Line {
            name: "p99",
            colour: RGBColor(214, 39, 40),
            points: series(report, |b| b.latency.p99_ms),
        },
    ];
    plot(report, &lines, "ms")
}

/// Bins of the latency histogram: log-spaced between the smallest and largest latency.
const HISTOGRAM_BINS: usize = 40;

/// The histogram's bar colour.
pub const HISTOGRAM_COLOUR: RGBColor = RGBColor(23, 190, 207);

/// `buckets_us` regrouped into [`HISTOGRAM_BINS`] log-spaced bins: `(low ms, high ms, count)`.
fn latency_bins(h: &crate::histogram::HistogramReport) -> Vec<(f64, f64, u64)> {
    let ms = |us: u64| (us as f64 / 1000.0).max(0.001);
    let (Some(first), Some(last)) = (h.buckets_us.first(), h.buckets_us.last()) else {
        return Vec::new();
    };
    let (lo, hi) = (ms(first.0).log10(), (ms(last.0) * 1.01).log10());
    let width = ((hi - lo) / HISTOGRAM_BINS as f64).max(1e-6);
    let mut bins: Vec<(f64, f64, u64)> = (0..HISTOGRAM_BINS)
        .map(|i| {
            let a = lo + width * i as f64;
            (10f64.powf(a), 10f64.powf(a + width), 0)
        })
        .collect();
    for &(us, count) in &h.buckets_us {
        let i = ((ms(us).log10() - lo) / width) as usize;
        if let Some(bin) = bins.get_mut(i.min(HISTOGRAM_BINS - 1)) {
            bin.2 += count;
        }
    }
    bins
}

/// The latency distribution as SVG bars on a logarithmic latency axis.
fn histogram_plot(h: &crate::histogram::HistogramReport) -> Result<String, String> {
    let bins = latency_bins(h);
    let x_lo = bins.first().map_or(0.1, |b| b.0);
    let x_hi = bins.last().map_or(1.0, |b| b.1).max(x_lo * 1.5);
    let y_max = bins.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = chart_on(&root)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "latency, ms (p50 {:.2}, p99 {:.2}, p99.9 {:.2})",
                h.p50_ms, h.p99_ms, h.p999_ms
            ))
            .y_desc("reports")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bins.iter().filter(|b| b.2 > 0).map(|&(a, b, n)| {
                Rectangle::new([(a, 0.0), (b, n as f64)], HISTOGRAM_COLOUR.filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn resources_plot(report: &Report) -> Result<String, String> {
    let w = report.timeline.bucket_s.max(f64::MIN_POSITIVE);
    let lines = [
        Line {
            name: "CPU (cores)",
            colour: RGBColor(255, 127, 14),
            points: series(report, |b| b.cpu_s / w),
        },
        Line {
            name: "RSS (GB)",
            colour: RGBColor(148, 103, 189),
            points: series(report, |b| b.rss_bytes as f64 / 1e9),
        },
    ];
    plot(report, &lines, "cores, GB")
}

fn fleets_table(page: &mut String, report: &Report) {
    page.push_str("<h2>Fleets</h2>\n<table><tr><th>fleet</th><th>transport</th><th>devices</th><th>registered</th><th>made</th><th>sent</th><th>acknowledged</th><th>delivered</th><th>duplicates</th><th>unsent at end</th><th>lost</th><th>refused</th><th>report 5.03</th><th>registration attempts</th><th>registration 5.03</th><th>registrations refused</th><th>registrations unanswered</th><th>retransmissions</th><th>latency p50 / p99 ms</th><th>registration p50 / p99 ms</th></tr>\n");
    let row = |page: &mut String, f: &FleetReport| {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} / {:.1}</td><td>{:.0} / {:.0}</td></tr>",
            escape(&f.name),
            escape(&f.transport),
            f.devices,
            f.registered,
            f.made,
            f.sent,
            f.acknowledged,
            f.delivered,
            f.duplicates,
            f.unsent_at_end,
            f.lost,
            f.refused,
            f.busy_503,
            f.registration_attempts,
            f.registration_busy_503,
            f.registration_refused,
            f.registration_unanswered,
            f.retransmissions,
            f.latency.p50_ms,
            f.latency.p99_ms,
            f.registration.p50_ms,
            f.registration.p99_ms
        );
    };
    for f in &report.fleets {
        row(page, f);
    }
    row(page, &report.total);
    page.push_str("</table>\n");
}

fn faults_table(page: &mut String, report: &Report) {
    if report.faults.is_empty() {
        return;
    }
    page.push_str("<h2>Faults</h2>\n<table><tr><th>at (s)</th><th>kind</th><th>length (s)</th><th>what was done</th><th>ok</th></tr>\n");
    for f in &report.faults {
        let _ = writeln!(
            page,
            "<tr><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            f.at_s,
            escape(&f.kind),
            f.length_s,
            escape(&f.detail),
            if f.ok { "yes" } else { "no" }
        );
    }
    page.push_str("</table>\n");
}

fn list(page: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(page, "<h2>{title}</h2>\n<ul>");
    for i in items {
        let _ = writeln!(page, "<li>{}</li>", escape(i));
    }
    page.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::LatencyHistogram;

    #[test]
    fn latency_bins_keep_every_sample_in_log_spaced_bins() {
        let mut h = LatencyHistogram::new();
        for (ms, n) in [(1u64, 500u64), (10, 300), (1000, 200), (20_000, 1)] {
            h.record_us(ms * 1000, n);
        }
        let bins = latency_bins(&h.to_report());
        assert_eq!(bins.len(), HISTOGRAM_BINS);
        assert_eq!(bins.iter().map(|b| b.2).sum::<u64>(), 1001);
        assert!(bins[0].0 <= 1.0 && bins[HISTOGRAM_BINS - 1].1 >= 20_000.0);
        // Log spacing: every bin spans the same ratio.
        let ratio = bins[0].1 / bins[0].0;
        assert!(bins.iter().all(|b| (b.1 / b.0 - ratio).abs() < 1e-6));
        assert_eq!(bins[0].2, 500);
        assert!(latency_bins(&LatencyHistogram::new().to_report()).is_empty());
        assert!(histogram_plot(&LatencyHistogram::new().to_report()).is_ok());
    }
}
