//! The self-contained HTML report (work in progress).

use super::Report;

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    format!("<!doctype html><title>{}</title>", report.scenario.name)
}
