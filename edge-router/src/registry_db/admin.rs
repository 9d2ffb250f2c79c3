//! What the `v6iot-edge devices …` and `audit …` subcommands do, for the binary's command line
//! (`src/bin/v6iot-edge/registry_cli.rs`: arguments and printing) and for tests.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A text that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 time like 2026-05-01T12:00:00Z: {source}")]
pub struct TimeArgError {
    /// The text given.
    pub text: String,
    /// Why it does not parse.
    pub source: time::error::Parse,
}

/// Parses an RFC 3339 time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00.5+02:00`).
///
/// # Errors
///
/// [`TimeArgError`], quoting the text.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, TimeArgError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|source| TimeArgError {
        text: text.to_owned(),
        source,
    })
}

/// A time as RFC 3339, UTC.
#[must_use]
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
