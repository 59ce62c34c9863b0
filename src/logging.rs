//! Log setup. Text for people at a terminal, JSON for log pipelines; the filter comes from
//! `RUST_LOG` (default `info`) so an operator can turn on `debug` for one module without a
//! rebuild.

use tracing_subscriber::EnvFilter;

/// Output format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable, one line per event.
    #[default]
    Text,
    /// One JSON object per event, with the span fields (uid, kind, namespace, name, operation).
    Json,
}

/// Installs the global tracing subscriber. A second call is a no-op (tests may call it many
/// times), so this never fails.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
