//! `promfed serve`: the admission webhook over TLS, plus probes and metrics on a plain-HTTP
//! port.
//!
//! Layout: the command line (`crate::cli`) turns its flags into [`Settings`], binds, and calls
//! [`serve_loaded`]; tests call [`serve`] directly with listeners bound to port 0. By concern:
//! `state` ([`AppState`], readiness), `handlers` ([`app`], the admission router; [`probes`],
//! the metrics-port router; body reading and rejections), `connections` (accept loop,
//! per-connection serving, drain), `reload` and `tls`.

mod connections;
mod handlers;
pub(crate) mod reload;
mod state;
pub(crate) mod tls;

pub use handlers::{app, probes};
pub use state::{AppState, DEFAULT_MEMO_BYTES};
pub use tls::TlsError;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Values};
use crate::metrics::Metrics;
use tls::CertResolver;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, re-read when they change.
    Files {
        /// PEM certificate chain.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
    /// Generated at start; the CA certificate is written to `ca_out`.
    SelfSigned {
        /// Where the CA certificate (PEM) goes, for clients to trust.
        ca_out: PathBuf,
    },
}

/// Everything [`serve`] needs besides the sockets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The values file, re-read when it changes; `None`: the built-in defaults.
    pub values: Option<PathBuf>,
    /// The serving certificate.
    pub tls: TlsSource,
    /// Largest request body answered; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time limit of one request (TLS handshake, headers, body, answer); past it, 408.
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish once the shutdown delay is over.
    pub shutdown_grace: Duration,
    /// How long new connections and requests are still served after the shutdown signal,
    /// with `/readyz` failing: the time the endpoint takes to leave every Service's rotation.
    pub shutdown_delay: Duration,
    /// How often the values file and the certificate are checked for changes.
    pub reload_interval: Duration,
    /// Bound of the rewrite memo in bytes (0: none); see [`crate::rewrite::memo`].
    pub memo_bytes: usize,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The values file cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate or key cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The self-signed CA certificate cannot be written.
    #[error("cannot write the self-signed CA certificate to {path}: {source}")]
    WriteCa {
        /// Where it was to go.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The accept loop panicked.
    #[error("server task failed: {0}")]
    Task(String),
}

/// The two sockets the server answers on.
#[derive(Debug)]
pub struct Listeners {
    /// TLS admission port.
    pub admission: TcpListener,
    /// Plain-HTTP probes and metrics port.
    pub metrics: TcpListener,
}

/// Values, certificate and metrics, loaded once before anything is served.
#[derive(Debug)]
pub struct Loaded {
    values: Values,
    cert: tls::LoadedCert,
    watched: reload::Watched,
    metrics: Arc<Metrics>,
}

/// Loads the values file and the certificate (or generates the self-signed one and writes its
/// CA). The command line calls it before binding, so a bad mount fails fast with the file named.
pub fn load(settings: &Settings) -> Result<Loaded, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let mut watched = reload::Watched::default();
    let values = match &settings.values {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                error: source,
            })?;
            let values = Values::from_file_bytes(path, &bytes)?;
            tracing::info!(path = %path.display(), "values file loaded");
            watched.values = Some(reload::ValuesFile {
                path: path.clone(),
                last: bytes,
            });
            values
        }
        None => {
            tracing::info!("no values file given; using the built-in defaults");
            Values::default()
        }
    };
    let cert = match &settings.tls {
        TlsSource::Files { cert, key } => {
            let pair = tls::read_pair(cert, key)?;
            let loaded = tls::load_pem(&pair.0, &pair.1, cert, key)?;
            watched.cert = Some(reload::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
                last: pair,
            });
            loaded
        }
        TlsSource::SelfSigned { ca_out } => {
            let generated = tls::self_signed()?;
            std::fs::write(ca_out, &generated.ca_pem).map_err(|source| ServeError::WriteCa {
                path: ca_out.clone(),
                source,
            })?;
            tracing::warn!(
                ca_file = %ca_out.display(),
                "no --tls-cert/--tls-key given: serving a self-signed certificate for localhost, \
                 127.0.0.1 and ::1; its CA certificate is in ca_file (for curl --cacert)"
            );
            tls::load_pem(
                generated.cert_pem.as_bytes(),
                generated.key_pem.as_bytes(),
                ca_out,
                ca_out,
            )?
        }
    };
    if let Some(t) = cert.not_after {
        metrics.set_certificate_expiry(t);
    }
    tracing::info!(serial = %cert.serial, not_after = %crate::logging::rfc3339(cert.not_after), "serving certificate loaded");
    Ok(Loaded {
        values,
        cert,
        watched,
        metrics,
    })
}

/// Loads values and certificate (failing before serving anything if either is unusable),
/// serves until `shutdown` completes; then fails `/readyz`, keeps serving for `shutdown_delay`
/// (retiring connections), stops accepting and drains in-flight requests for at most
/// `shutdown_grace`.
pub async fn serve(
    listeners: Listeners,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let loaded = load(&settings)?;
    serve_loaded(listeners, settings, loaded, shutdown).await
}

/// [`serve`] with values and certificate already [`load`]ed.
pub async fn serve_loaded(
    listeners: Listeners,
    settings: Settings,
    loaded: Loaded,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Loaded {
        values,
        cert,
        watched,
        metrics,
    } = loaded;
    let resolver = Arc::new(CertResolver::new(cert.key));
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));

    let state = Arc::new(
        AppState::new(
            values,
            metrics,
            settings.max_body_bytes,
            settings.request_timeout,
        )
        .with_memo_bytes(settings.memo_bytes),
    );
    state.set_ready();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (retire_tx, retire_rx) = watch::channel(false);
    let (stop_probes_tx, mut stop_probes_rx) = watch::channel(false);
    let reloader = tokio::spawn(reload::run(
        watched,
        state.clone(),
        resolver,
        settings.reload_interval,
        stop_rx.clone(),
    ));
    let metrics_addr = listeners.metrics.local_addr().ok();
    let probes_server = {
        let router = probes(state.clone());
        let listener = listeners.metrics;
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped(&mut stop_probes_rx).await })
                .await
        })
    };
    tracing::info!(
        admission = %crate::logging::addr(listeners.admission.local_addr().ok()),
        metrics = %crate::logging::addr(metrics_addr),
        "promfed serving: POST /mutate over TLS; /healthz, /readyz, /metrics over HTTP"
    );
    let accept = tokio::spawn(connections::accept_loop(
        listeners.admission,
        acceptor,
        app(state.clone()),
        settings.request_timeout,
        connections::Shutdown {
            retire: retire_rx,
            stop: stop_rx,
        },
    ));

    shutdown.await;
    // Not ready at once, so the endpoint leaves the Services; but calls routed here meanwhile
    // are still served: connections are accepted for the delay and only retired (GOAWAY,
    // `Connection: close`), so clients move to another replica without a failed call.
    state.begin_shutdown();
    let _ = retire_tx.send(true);
    tracing::info!(
        delay = ?settings.shutdown_delay,
        grace = ?settings.shutdown_grace,
        "shutdown requested: not ready; still serving for the delay, then draining"
    );
    tokio::time::sleep(settings.shutdown_delay).await;
    tracing::info!(grace = ?settings.shutdown_grace, "shutdown delay over: no new connections, draining");
    let _ = stop_tx.send(true);
    let conns = accept.await.map_err(|e| ServeError::Task(e.to_string()))?;
    connections::drain(conns, settings.shutdown_grace).await;
    let _ = stop_probes_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), probes_server).await;
    let _ = reloader.await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone, which also means stop).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
