//! `promfed serve`: the admission webhook over TLS, plus probes and metrics on a plain-HTTP
//! port.
//!
//! Layout: the command line (`crate::cli`) turns its flags into [`Settings`], binds, and calls
//! [`serve_loaded`]; tests call [`serve`] directly with listeners bound to port 0. [`app`] is the admission router,
//! [`probes`] the metrics-port router; both take the shared [`AppState`].

pub mod reload;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kube::core::admission::Operation;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Outcome};
use crate::config::{ConfigError, Values};
use crate::metrics::{Metrics, OperationLabel, ResultLabel};
use tls::{CertResolver, TlsError};

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated at start; the CA certificate is written to `ca_out`.
    SelfSigned { ca_out: PathBuf },
}

/// Everything [`serve`] needs besides the sockets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub values: Option<PathBuf>,
    pub tls: TlsSource,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write the self-signed CA certificate to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server task failed: {0}")]
    Task(String),
}

/// State shared by the handlers, the reloader and the probes.
#[derive(Debug)]
pub struct AppState {
    values: RwLock<Arc<Values>>,
    pub metrics: Arc<Metrics>,
    max_body_bytes: usize,
    request_timeout: Duration,
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(
        values: Values,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            values: RwLock::new(Arc::new(values)),
            metrics,
            max_body_bytes,
            request_timeout,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The values in use now (a reload swaps them for later requests only).
    pub fn values(&self) -> Arc<Values> {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_values(&self, values: Values) {
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(values);
    }

    /// Marks configuration and certificate as loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the start of shutdown; `/readyz` fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The admission router: `POST /mutate`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .with_state(state)
}

/// The metrics-port router: `/healthz`, `/readyz`, `/metrics`.
pub fn probes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": status.as_u16() }).to_string();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn operation_label(op: &Operation) -> OperationLabel {
    match op {
        Operation::Create => OperationLabel::CREATE,
        Operation::Update => OperationLabel::UPDATE,
        Operation::Delete => OperationLabel::DELETE,
        Operation::Connect => OperationLabel::CONNECT,
    }
}

async fn mutate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let _in_flight = state.metrics.in_flight();
    match tokio::time::timeout(state.request_timeout, handle_review(&state, req)).await {
        Ok(response) => response,
        Err(_) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::timeout);
            tracing::warn!(timeout = ?state.request_timeout, "admission request timed out");
            json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request not completed within the request timeout",
            )
        }
    }
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `limit` bytes. Past the limit the rest is read and discarded (up to another
/// `limit` bytes), so that an HTTP/1.1 client still writing its body gets the 413 instead of a
/// connection reset.
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Vec<u8>, BodyError> {
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    let mut discarded = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !too_large && buf.len() + data.len() > limit {
            too_large = true;
            buf = Vec::new();
        }
        if too_large {
            discarded += data.len();
            if discarded > limit {
                break;
            }
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if too_large {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf)
    }
}

async fn handle_review(state: &Arc<AppState>, req: Request) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(req.into_body(), state.max_body_bytes, declared).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::too_large);
            tracing::warn!(
                limit = state.max_body_bytes,
                "admission request body over the limit"
            );
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body is larger than the limit of {} bytes",
                    state.max_body_bytes
                ),
            );
        }
        Err(BodyError::Read(e)) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::invalid);
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            );
        }
    };
    let started = Instant::now();
    let values = state.values();
    // The rewrite is CPU work (YAML and PromQL parsing); keep it off the I/O threads.
    let result = tokio::task::spawn_blocking(move || admission::review(&body, &values)).await;
    let elapsed = started.elapsed();
    let reviewed = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_client_error() => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::invalid);
            tracing::warn!(error = %e, "malformed admission request");
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Ok(Err(e)) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::error);
            tracing::error!(error = %e, "cannot answer admission request");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        Err(e) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, ResultLabel::error);
            tracing::error!(error = %e, "admission task failed");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let result = match reviewed.outcome {
        Outcome::Patched { patch_bytes } => {
            state.metrics.patch_sent(patch_bytes);
            ResultLabel::patched
        }
        Outcome::Unchanged => ResultLabel::unchanged,
        Outcome::Skipped(_) => ResultLabel::skipped,
        Outcome::Denied => ResultLabel::denied,
        Outcome::AllowedOnError => ResultLabel::allowed_on_error,
    };
    state
        .metrics
        .request(operation_label(&reviewed.operation), result);
    state.metrics.rewrite_duration(elapsed.as_secs_f64());
    let patch_bytes = match reviewed.outcome {
        Outcome::Patched { patch_bytes } => patch_bytes,
        _ => 0,
    };
    let reason = match reviewed.outcome {
        Outcome::Skipped(why) => why,
        _ => "",
    };
    reviewed.span.in_scope(|| {
        tracing::info!(
            outcome = reviewed.outcome.as_str(),
            reason,
            patch_bytes,
            duration_us = elapsed.as_micros() as u64,
            "admission review"
        );
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        reviewed.body,
    )
        .into_response()
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
    tracing::info!(serial = %cert.serial, not_after = cert.not_after, "serving certificate loaded");
    Ok(Loaded {
        values,
        cert,
        watched,
        metrics,
    })
}

/// Loads values and certificate (failing before serving anything if either is unusable),
/// serves until `shutdown` completes, then stops accepting and drains in-flight requests for
/// at most `shutdown_grace`.
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

    let state = Arc::new(AppState::new(
        values,
        metrics,
        settings.max_body_bytes,
        settings.request_timeout,
    ));
    state.set_ready();

    let (stop_tx, stop_rx) = watch::channel(false);
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
        admission = ?listeners.admission.local_addr().ok(),
        metrics = ?metrics_addr,
        "promfed serving: POST /mutate over TLS; /healthz, /readyz, /metrics over HTTP"
    );
    let accept = tokio::spawn(accept_loop(
        listeners.admission,
        acceptor,
        app(state.clone()),
        settings.request_timeout,
        stop_rx,
    ));

    shutdown.await;
    tracing::info!(grace = ?settings.shutdown_grace, "shutdown requested: no new connections, draining");
    state.begin_shutdown();
    let _ = stop_tx.send(true);
    let mut conns = accept.await.map_err(|e| ServeError::Task(e.to_string()))?;
    let in_flight = conns.len();
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(connections = in_flight, "drained"),
        Err(_) => {
            tracing::warn!(
                remaining = conns.len(),
                "shutdown grace elapsed; closing remaining connections"
            );
            conns.shutdown().await;
        }
    }
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

/// Accepts TLS connections until `stop`; returns the open connections for draining.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    request_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut conns = JoinSet::new();
    let for_conns = stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(connection(tcp, peer, acceptor.clone(), router.clone(), request_timeout, for_conns.clone()));
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    conns
}

/// One connection: TLS handshake (bounded by the request timeout), then HTTP/1.1 or HTTP/2
/// as negotiated; on stop, finishes the requests in flight and closes.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    request_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        r = tokio::time::timeout(request_timeout, acceptor.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error while draining");
    }
}
