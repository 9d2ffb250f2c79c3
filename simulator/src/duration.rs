//! Human durations on the command line: `250ms`, `2s`, `5m`, `1h`, or bare seconds (`1.5`).

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// No number where the duration starts.
    #[error("`{0}` is not a duration like 2s or 500ms")]
    NotANumber(String),
    /// A unit other than ms, s, m (min) or h.
    #[error("unknown unit `{unit}` in `{text}` (use ms, s, m or h)")]
    UnknownUnit {
        /// The unit given.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// Too long for a `Duration`.
    #[error("`{text}`: {error}")]
    OutOfRange {
        /// The whole text.
        text: String,
        /// Why.
        error: std::time::TryFromFloatSecsError,
    },
}

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            });
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| DurationError::OutOfRange {
        text: text.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("2x"),
            Err(DurationError::UnknownUnit {
                unit: "x".into(),
                text: "2x".into()
            })
        );
        assert_eq!(
            parse_duration(""),
            Err(DurationError::NotANumber(String::new()))
        );
        assert!(matches!(
            parse_duration("1e300"),
            Err(DurationError::UnknownUnit { .. })
        ));
        let e = parse_duration("99999999999999999999999h").unwrap_err();
        assert!(matches!(e, DurationError::OutOfRange { .. }), "{e}");
        assert!(
            e.to_string().starts_with("`99999999999999999999999h`: "),
            "{e}"
        );
    }
}
