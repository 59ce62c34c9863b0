//! `promfed serve` at the process edge: its flags (clap), duration parsing, logging and runtime
//! set-up, binding the two ports and turning SIGTERM/SIGINT into the library's shutdown future.
//! The server itself is [`crate::server`] ([`Settings`] and [`crate::server::serve_loaded`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::logging::LogFormat;
use crate::server::{self, Listeners, Settings, TlsSource};

/// Flags of `promfed serve`; each is also read from a `PROMFED_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Values file (the seed's ytt data-values work as is); re-read when it changes.
    /// Without it the built-in defaults are used.
    #[arg(long, env = "PROMFED_VALUES")]
    pub values: Option<PathBuf>,
    /// PEM certificate chain of the webhook; re-read when it changes. Without it (and
    /// --tls-key) an in-memory self-signed certificate for localhost is used.
    #[arg(long, env = "PROMFED_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    #[arg(long, env = "PROMFED_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address of the TLS admission port.
    #[arg(long, env = "PROMFED_LISTEN", default_value = "0.0.0.0:8443", value_parser = super::addr::parse_listen)]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP port serving /healthz, /readyz and /metrics.
    #[arg(long, env = "PROMFED_METRICS_LISTEN", default_value = "0.0.0.0:8080", value_parser = super::addr::parse_listen)]
    pub metrics_listen: SocketAddr,
    /// Log line format.
    #[arg(long, env = "PROMFED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Largest request body accepted (an UPDATE carries object and oldObject, each up to 1 MiB).
    #[arg(long, env = "PROMFED_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time limit for one request, from the first header byte to the response (e.g. 10s, 500ms).
    #[arg(long, env = "PROMFED_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long new connections and requests are still served after SIGTERM/SIGINT, with
    /// /readyz failing: cover the time the Pod's endpoint takes to leave the Service (endpoint
    /// and kube-proxy propagation, typically 1-2 s). 0 stops accepting at once.
    #[arg(long, env = "PROMFED_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the shutdown delay is over.
    #[arg(long, env = "PROMFED_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How often the values file and the certificate are checked for changes.
    #[arg(long, env = "PROMFED_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// Bound of the rewrite memo in MiB (inputs and outputs held): kapp-controller sends the
    /// same ConfigMap on every sync, and a data key seen before is answered from the memo.
    /// 0 turns it off. Emptied when the values are reloaded.
    #[arg(long, env = "PROMFED_REWRITE_MEMO_MIB", default_value_t = crate::server::DEFAULT_MEMO_BYTES / (1024 * 1024))]
    pub rewrite_memo_mib: usize,
    /// Where the self-signed CA certificate (PEM) is written when no certificate is given.
    /// Default: promfed-ca.pem in the temporary directory.
    #[arg(long, env = "PROMFED_CA_OUT")]
    pub ca_out: Option<PathBuf>,
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl From<&ServeArgs> for Settings {
    fn from(a: &ServeArgs) -> Self {
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::SelfSigned {
                ca_out: a
                    .ca_out
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("promfed-ca.pem")),
            },
        };
        Settings {
            values: a.values.clone(),
            tls,
            max_body_bytes: a.max_body_bytes,
            request_timeout: a.request_timeout,
            shutdown_grace: a.shutdown_grace,
            shutdown_delay: a.shutdown_delay,
            reload_interval: a.reload_interval,
            memo_bytes: a.rewrite_memo_mib.saturating_mul(1024 * 1024),
        }
    }
}

/// Runs `promfed serve`: logging, the crypto provider and the tokio runtime, then [`serve`].
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.log_format);
    // One process-wide crypto provider; rustls is built with ring only (no OpenSSL).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT.
async fn first_signal(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Binds both ports, serves until SIGTERM/SIGINT, keeps serving for the shutdown delay, drains,
/// returns. A second signal during the delay or the drain exits at once with status 130.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the signal handler")?;
    let settings = Settings::from(&args);
    // Load values and certificate before binding: a bad mount fails fast with the file named.
    let loaded = server::load(&settings)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let listeners = Listeners {
        admission: bind(args.listen).await?,
        metrics: bind(args.metrics_listen).await?,
    };
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        first_signal(&mut term, &mut int).await;
        let _ = first_tx.send(());
        first_signal(&mut term, &mut int).await;
        tracing::warn!("second signal during shutdown: exiting now");
        std::process::exit(130);
    });
    server::serve_loaded(listeners, settings, loaded, async move {
        let _ = first_rx.await;
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
