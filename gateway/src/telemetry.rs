//! The gateway's own log: `tracing` to stderr, as text (colour only on a terminal) or as one
//! JSON object per line, `info` unless `RUST_LOG` says otherwise. Lines emitted inside a
//! connection carry its span (`session`, `client_ip`, `user`) and inside a command its
//! `command` id.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colour only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span and its parents.
    Json,
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
