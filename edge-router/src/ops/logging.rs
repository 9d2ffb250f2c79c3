//! Logs: human-readable lines (the default) or JSON lines (`log.format = "json"` or
//! `--log-format json`), on standard error; levels per module from `[log]` (or `RUST_LOG`),
//! changed on SIGHUP through the [`LogReload`] handle.
//!
//! Secrets (master secrets, the seal key, MQTT passwords, the dashboard token) are never
//! given to a log macro: the types that hold them print `…` in `Debug`, and the e2e tests
//! grep what the edge logged for the secrets they used.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LogSection};

/// Changes the levels of the running process.
#[derive(Debug, Clone)]
pub struct LogReload {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    from_env: bool,
}

/// Why levels could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The directive does not parse.
    #[error("log levels `{directive}`: {reason}")]
    Directive {
        /// What was asked.
        directive: String,
        /// Why not.
        reason: String,
    },
    /// The subscriber is gone.
    #[error("the log filter cannot be changed: {0}")]
    Reload(String),
}

fn filter(directive: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(directive).map_err(|e| LogError::Directive {
        directive: directive.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs the global subscriber. `RUST_LOG`, when set, replaces `config`'s levels (and is
/// then kept across reloads).
///
/// # Errors
///
/// The levels do not parse.
pub fn init(config: &LogSection) -> Result<LogReload, LogError> {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let from_env = env.is_some();
    let directive = env.unwrap_or_else(|| config.directive());
    let (layer, handle) = reload::Layer::new(filter(&directive)?);
    let registry = tracing_subscriber::registry().with(layer);
    let stderr = std::io::stderr;
    match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(stderr),
            )
            .init(),
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    Ok(LogReload { handle, from_env })
}

impl LogReload {
    /// Sets the levels `config` names (unless `RUST_LOG` set them at start). Returns the
    /// directive in force.
    ///
    /// # Errors
    ///
    /// The levels do not parse, or the subscriber is gone.
    pub fn apply(&self, config: &LogSection) -> Result<Option<String>, LogError> {
        if self.from_env {
            return Ok(None);
        }
        let directive = config.directive();
        let f = filter(&directive)?;
        self.handle
            .reload(f)
            .map_err(|e| LogError::Reload(e.to_string()))?;
        Ok(Some(directive))
    }
}
