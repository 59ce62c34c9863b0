//! The TLS admission port: the accept loop, one task per connection (TLS handshake, then
//! HTTP/1.1 or HTTP/2 as negotiated), and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::stopped;

/// The two moments of a shutdown, as seen by the connections.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    /// True from SIGTERM on: connections are retired (HTTP/2 gets GOAWAY; HTTP/1.1 responses
    /// say `Connection: close`, see `handlers`) while new ones are still accepted and served.
    pub(crate) retire: watch::Receiver<bool>,
    /// True once the shutdown delay is over: no new connections; in-flight requests finish.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Accepts TLS connections until `stop`; returns the open connections for draining.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    request_timeout: Duration,
    shutdown: Shutdown,
) -> JoinSet<()> {
    let mut conns = JoinSet::new();
    let mut stop = shutdown.stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(connection(tcp, peer, acceptor.clone(), router.clone(), request_timeout, shutdown.clone()));
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
/// as negotiated by ALPN. An HTTP/2 connection gets GOAWAY once shutdown has started and it has
/// carried a request (its client opens a new connection for later requests; streams already
/// sent are served); any connection finishes its requests in flight and closes on stop.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    request_timeout: Duration,
    shutdown: Shutdown,
) {
    let Shutdown {
        mut retire,
        mut stop,
    } = shutdown;
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
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    builder.http2().timer(TokioTimer::new());
    // With ALPN h2 the protocol is known: serve HTTP/2 at once (the auto builder, still reading
    // the preface, would drop the connection on a graceful shutdown instead of sending GOAWAY).
    let builder = if h2 { builder.http2_only() } else { builder };
    // Set by every request: the client has this connection in use.
    let used = Arc::new(Notify::new());
    let service = {
        let used = used.clone();
        router.map_request(move |req: axum::extract::Request<_>| {
            used.notify_one();
            req
        })
    };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    if h2 {
        // GOAWAY once shutdown has started and the connection has carried a request: a client
        // whose request races a GOAWAY on a connection it has used retries it on a new one, but
        // the first request of a brand-new connection would fail.
        let retired = async {
            stopped(&mut retire).await;
            used.notified().await;
        };
        tokio::select! {
            r = conn.as_mut() => return ended(peer, r),
            _ = retired => {}
            _ = stopped(&mut stop) => {}
        }
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => return ended(peer, r),
        _ = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    ended(peer, conn.await);
}

fn ended(peer: SocketAddr, r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Waits for the connections to finish their requests, for at most `grace`; then closes the rest.
pub(crate) async fn drain(mut conns: JoinSet<()>, grace: Duration) {
    let in_flight = conns.len();
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
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
}
