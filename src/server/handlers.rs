//! The two routers and their handlers: `POST /mutate` on the TLS port (body reading, the
//! rewrite off the I/O threads, metrics and the log line), `/healthz`, `/readyz` and `/metrics`
//! on the plain-HTTP port. Every way a review is not answered is one [`Rejection`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::core::admission::Operation;

use super::AppState;
use crate::admission::{self, AdmissionError, Outcome};
use crate::metrics::{OperationLabel, ResultLabel};

/// The admission router: `POST /mutate`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            close_when_shutting_down,
        ))
        .with_state(state)
}

/// From the shutdown signal on, HTTP/1.1 responses carry `Connection: close`: the client
/// retires the connection after this answer and opens its next one where the Service sends it,
/// instead of reusing one that is about to close. (HTTP/2 connections get GOAWAY instead.)
async fn close_when_shutting_down(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = req.version() < axum::http::Version::HTTP_2;
    let mut response = next.run(req).await;
    if http1 && state.is_shutting_down() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
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

/// A review that gets an HTTP error instead of an AdmissionReview. Knows its status, its
/// metric label and its log line; the JSON body is `{"error": .., "code": ..}`.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// The body is over `--max-body-bytes` (413).
    TooLarge { limit: usize },
    /// The body could not be read (400).
    Unreadable(String),
    /// The body is not an AdmissionReview v1 we can answer (400).
    Invalid(AdmissionError),
    /// The response could not be built (500).
    Internal(AdmissionError),
    /// The rewrite task panicked or was cancelled (500).
    TaskFailed(String),
    /// Not answered within `--request-timeout` (408).
    Timeout(Duration),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Unreadable(_) | Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Internal(_) | Rejection::TaskFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The `result` label of `promfed_admission_requests_total`.
    pub(crate) fn label(&self) -> ResultLabel {
        match self {
            Rejection::TooLarge { .. } => ResultLabel::too_large,
            Rejection::Unreadable(_) | Rejection::Invalid(_) => ResultLabel::invalid,
            Rejection::Internal(_) | Rejection::TaskFailed(_) => ResultLabel::error,
            Rejection::Timeout(_) => ResultLabel::timeout,
        }
    }

    /// What the client reads in `error` (never object contents).
    fn message(&self) -> String {
        match self {
            Rejection::TooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            Rejection::Unreadable(e) => format!("cannot read request body: {e}"),
            Rejection::Invalid(e) | Rejection::Internal(e) => e.to_string(),
            Rejection::TaskFailed(_) => "internal error".to_owned(),
            Rejection::Timeout(_) => "request not completed within the request timeout".to_owned(),
        }
    }

    fn log(&self) {
        match self {
            Rejection::TooLarge { limit } => {
                tracing::warn!(limit, "admission request body over the limit");
            }
            Rejection::Unreadable(e) => tracing::debug!(error = %e, "cannot read request body"),
            Rejection::Invalid(e) => tracing::warn!(error = %e, "malformed admission request"),
            Rejection::Internal(e) => {
                tracing::error!(error = %e, "cannot answer admission request");
            }
            Rejection::TaskFailed(e) => tracing::error!(error = %e, "admission task failed"),
            Rejection::Timeout(timeout) => {
                tracing::warn!(?timeout, "admission request timed out");
            }
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let body =
            serde_json::json!({ "error": self.message(), "code": status.as_u16() }).to_string();
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
    let answer = match tokio::time::timeout(state.request_timeout, handle_review(&state, req)).await
    {
        Ok(answer) => answer,
        Err(_) => Err(Rejection::Timeout(state.request_timeout)),
    };
    match answer {
        Ok(response) => response,
        Err(rejection) => {
            state
                .metrics
                .request(OperationLabel::UNKNOWN, rejection.label());
            rejection.log();
            rejection.into_response()
        }
    }
}

/// Reads at most `limit` bytes. A body over the limit is answered 413 at once, and the rest of
/// it is read and thrown away in the background (see [`discard`]): a client still sending gets
/// the 413 instead of a reset, over HTTP/1.1 and HTTP/2 alike.
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
    discard_for: Duration,
) -> Result<Vec<u8>, Rejection> {
    if declared.is_some_and(|n| n > limit as u64) {
        tokio::spawn(discard(body, limit, discard_for));
        return Err(Rejection::TooLarge { limit });
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    while let Some(frame) = next_frame(&mut body).await {
        let frame = frame.map_err(|e| Rejection::Unreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            tokio::spawn(discard(body, limit, discard_for));
            return Err(Rejection::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

async fn next_frame(
    body: &mut Body,
) -> Option<Result<hyper::body::Frame<axum::body::Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// Reads the rest of a refused body until its end, for at most `within` and at most
/// `max(4 × limit, 64 MiB)` bytes, then drops it.
///
/// Why: dropping an unfinished request body makes HTTP/2 reset the stream
/// (RST_STREAM) and HTTP/1.1 close the connection while the client is still sending; clients
/// such as curl then report a stream error or a reset instead of the 413 that was already sent.
/// Reading on until the client's end of stream lets the answer arrive as a normal response.
async fn discard(mut body: Body, limit: usize, within: Duration) {
    let cap = limit.saturating_mul(4).max(64 << 20);
    let mut read = 0usize;
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(frame)) = next_frame(&mut body).await {
            read += frame.data_ref().map_or(0, axum::body::Bytes::len);
            if read > cap {
                break;
            }
        }
    })
    .await;
}

async fn handle_review(state: &Arc<AppState>, req: Request) -> Result<Response, Rejection> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = read_body(
        req.into_body(),
        state.max_body_bytes,
        declared,
        state.request_timeout,
    )
    .await?;
    let started = Instant::now();
    let (values, memo) = state.values_and_memo();
    // The rewrite is CPU work (YAML and PromQL parsing); keep it off the I/O threads.
    let reviewed =
        tokio::task::spawn_blocking(move || admission::review_with(&body, &values, &memo))
            .await
            .map_err(|e| Rejection::TaskFailed(e.to_string()))?
            .map_err(|e| {
                if e.is_client_error() {
                    Rejection::Invalid(e)
                } else {
                    Rejection::Internal(e)
                }
            })?;
    let elapsed = started.elapsed();
    let (result, patch_bytes, reason) = match reviewed.outcome {
        Outcome::Patched { patch_bytes } => {
            state.metrics.patch_sent(patch_bytes);
            (ResultLabel::patched, patch_bytes, "")
        }
        Outcome::Unchanged => (ResultLabel::unchanged, 0, ""),
        Outcome::Skipped(why) => (ResultLabel::skipped, 0, why),
        Outcome::Denied => (ResultLabel::denied, 0, ""),
        Outcome::AllowedOnError => (ResultLabel::allowed_on_error, 0, ""),
    };
    state
        .metrics
        .request(operation_label(&reviewed.operation), result);
    state.metrics.rewrite_duration(elapsed.as_secs_f64());
    tracing::info_span!(
        "review",
        uid = %reviewed.uid,
        kind = %reviewed.kind,
        namespace = %reviewed.namespace,
        name = %reviewed.name,
        operation = ?reviewed.operation,
        dry_run = reviewed.dry_run,
    )
    .in_scope(|| {
        tracing::info!(
            outcome = reviewed.outcome.as_str(),
            reason,
            patch_bytes,
            duration_us = elapsed.as_micros() as u64,
            "admission review"
        );
    });
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        reviewed.body,
    )
        .into_response())
}
