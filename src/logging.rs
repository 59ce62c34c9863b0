//! Log setup. Text for people at a terminal, JSON for log pipelines; the filter comes from
//! `RUST_LOG` (default `info`) so an operator can turn on `debug` for one module without a
//! rebuild.

use std::io::IsTerminal;

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
        .with_ansi(colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ))
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

/// Colours only for a person at a terminal: a pipe or a log collector gets plain text, and
/// `NO_COLOR` (no-color.org) turns them off everywhere.
fn colours(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

/// A Unix time as RFC 3339 in UTC (`2026-12-01T20:30:15Z`), for log fields people read;
/// `unknown` when absent or out of range.
pub fn rfc3339(epoch_seconds: Option<i64>) -> String {
    let Some(t) = epoch_seconds.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return "unknown".to_owned();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A socket address for a log field: `127.0.0.1:8443`, or `unknown` (never `Some(...)`).
pub fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(67_090_118_400)), "4096-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(1_764_621_015)), "2025-12-01T20:30:15Z");
        assert_eq!(rfc3339(None), "unknown");
        assert_eq!(rfc3339(Some(i64::MAX)), "unknown");
    }

    #[test]
    fn colours_only_at_a_terminal() {
        assert!(colours(true, false));
        assert!(!colours(false, false));
        assert!(!colours(true, true));
    }
}
