//! Load test of `promfed serve` over TLS on 127.0.0.1: a bounded, open-loop tokio client that
//! sends a realistic UPDATE review (a TKG Prometheus ConfigMap as object and oldObject) at a
//! fixed rate, then a short closed-loop run at full speed. The review is the ~60 KB one of the
//! rewrite bench (171 real-world recording rules, see benches/common), or with
//! PROMFED_LOAD_REVIEW=small the ~28 KB admission fixture. It prints throughput,
//! p50/p90/p99/max latency, errors, and the server's peak RSS
//! (VmHWM) and CPU time, read from /proc of the server process.
//!
//! The server runs as a separate process, the release `promfed serve`, so its RSS and CPU
//! time are its own.
//!
//! `cargo bench --bench load`; knobs (environment): PROMFED_LOAD_RATE (requests/s, 500),
//! PROMFED_LOAD_SECS (10), PROMFED_LOAD_CONCURRENCY (max requests in flight, 64),
//! PROMFED_LOAD_HTTP (1 or 2; 2 is what kube-apiserver negotiates, default 2),
//! PROMFED_LOAD_REVIEW (`small` for the 28 KB fixture). The server inherits the environment:
//! PROMFED_REWRITE_MEMO_MIB=0 makes it rewrite every review (cold), as with no memo.
//! Latency is measured from the moment a request was scheduled, so a server that falls
//! behind shows it (no coordinated omission).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::sync::Semaphore;

mod common;

const SMALL_REVIEW: &str = include_str!("../tests/fixtures/admission/configmap-update.json");
const VALUES: &str = include_str!("../tests/fixtures/admission/values.yaml");
/// Hard bound on the whole run, whatever the knobs say.
const MAX_RUN: Duration = Duration::from_secs(120);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(parent());
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Certs {
    ca_der: rustls_pki_types::CertificateDer<'static>,
}

fn write_certs(dir: &Path) -> Certs {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "promfed load CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    Certs {
        ca_der: ca_cert.der().clone(),
    }
}

/// Starts the release `promfed serve` as a child process; returns it and a description.
fn spawn_server(dir: &Path, admission: SocketAddr, metrics: SocketAddr) -> (Child, &'static str) {
    let log = std::fs::File::create(dir.join("server.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_promfed"))
        .arg("serve")
        .env("PROMFED_VALUES", dir.join("values.yaml"))
        .env("PROMFED_TLS_CERT", dir.join("tls.crt"))
        .env("PROMFED_TLS_KEY", dir.join("tls.key"))
        .env("PROMFED_LISTEN", admission.to_string())
        .env("PROMFED_METRICS_LISTEN", metrics.to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn server");
    (child, "release binary `promfed serve` (child process)")
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User+system CPU seconds of `pid` (clock ticks assumed 100 Hz, as on Linux x86_64/arm64).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn client(ca: &rustls_pki_types::CertificateDer<'static>, http: u8) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("ca");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = if http == 2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

struct Summary {
    sent: usize,
    errors: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn print(label: &str, mut s: Summary) {
    s.latencies.sort();
    println!(
        "{label}: {} requests in {:.2}s = {:.0} req/s; errors {}; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        s.sent,
        s.wall.as_secs_f64(),
        s.sent as f64 / s.wall.as_secs_f64(),
        s.errors,
        pct(&s.latencies, 0.50),
        pct(&s.latencies, 0.90),
        pct(&s.latencies, 0.99),
        pct(&s.latencies, 1.0),
    );
}

/// The floor of the stack, in its own thread and runtime (two workers, as `promfed serve` on
/// two cores): the same certificate, rustls, hyper and axum as promfed, answering every
/// `POST /mutate` (body read in full) with the fixed response promfed gives for the review,
/// without any review. What the load generator and the stacks cost on this machine.
fn spawn_floor_server(dir: &Path, answer: Vec<u8>) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_file_iter(dir.join("tls.crt"))
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("tls.key")).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let answer = axum::body::Bytes::from(answer);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let router = axum::Router::new().route(
                "/mutate",
                axum::routing::post(move |_body: axum::body::Bytes| {
                    let answer = answer.clone();
                    async move { ([("content-type", "application/json")], answer) }
                }),
            );
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(router),
                        )
                        .await;
                });
            }
        });
    });
    addr
}

async fn one(client: &reqwest::Client, url: &str, body: &axum::body::Bytes) -> bool {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| b.len() > 1000),
        _ => false,
    }
}

/// Open loop: one request every 1/rate s, at most `concurrency` in flight.
async fn fixed_rate(
    client: &reqwest::Client,
    url: &str,
    body: &axum::body::Bytes,
    rate: u32,
    secs: u64,
    concurrency: usize,
) -> Summary {
    let total = (u64::from(rate) * secs) as usize;
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut errors = 0;
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.spawn(async move {
            let ok = one(&client, &url, &body).await;
            drop(permit);
            (ok, scheduled.elapsed())
        });
        if start.elapsed() > MAX_RUN {
            break;
        }
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((true, l)) => latencies.push(l),
            _ => errors += 1,
        }
    }
    Summary {
        sent: latencies.len() + errors,
        errors,
        wall: start.elapsed(),
        latencies,
    }
}

/// Closed loop: `concurrency` workers back to back for `secs`.
async fn flat_out(
    client: &reqwest::Client,
    url: &str,
    body: &axum::body::Bytes,
    secs: u64,
    concurrency: usize,
) -> Summary {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < end {
                let t = Instant::now();
                if one(&client, &url, &body).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, e)) = r {
            latencies.extend(l);
            errors += e;
        }
    }
    Summary {
        sent: latencies.len() + errors,
        errors,
        wall: start.elapsed(),
        latencies,
    }
}

async fn parent() {
    let rate: u32 = env_or("PROMFED_LOAD_RATE", 500);
    let secs: u64 = env_or("PROMFED_LOAD_SECS", 10);
    let concurrency: usize = env_or("PROMFED_LOAD_CONCURRENCY", 64);
    let http: u8 = env_or("PROMFED_LOAD_HTTP", 2);
    let review_text = match std::env::var("PROMFED_LOAD_REVIEW").as_deref() {
        Ok("small") => SMALL_REVIEW.to_owned(),
        _ => common::review_60kb(0),
    };
    let review_bytes = review_text.as_bytes();
    // What one review costs without any network, for comparison with the latencies below.
    let values = promfed::config::Values::from_yaml_str(VALUES).expect("values");
    let mut costs: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let r = promfed::admission::review(review_bytes, &values).expect("review");
            assert!(r.body.len() > 1000);
            t.elapsed()
        })
        .collect();
    costs.sort();
    println!(
        "in-process admission::review of the {} B review, cold (no memo): p50 {:.2} ms, p99 {:.2} ms (one core, no TLS/HTTP)",
        review_bytes.len(),
        pct(&costs, 0.5),
        pct(&costs, 0.99)
    );
    let memo = promfed::rewrite::Memo::new(promfed::server::DEFAULT_MEMO_BYTES);
    let mut warm: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let r = promfed::admission::review_with(review_bytes, &values, &memo).expect("review");
            assert!(r.body.len() > 1000);
            t.elapsed()
        })
        .collect();
    warm.sort();
    println!(
        "  warm (the same review again, answered from the rewrite memo): p50 {:.2} ms, p99 {:.2} ms",
        pct(&warm, 0.5),
        pct(&warm, 0.99)
    );
    let review: serde_json::Value = serde_json::from_str(&review_text).expect("review");
    let object = &review["request"]["object"];
    let mut engine: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let m = promfed::rewrite::mutate_object(object, &values).expect("rewrite");
            assert!(!m.patch.0.is_empty());
            t.elapsed()
        })
        .collect();
    engine.sort();
    println!(
        "  of which rewrite::mutate_object: p50 {:.2} ms, p99 {:.2} ms",
        pct(&engine, 0.5),
        pct(&engine, 0.99)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("values.yaml"), VALUES).expect("values");
    let certs = write_certs(dir.path());
    let (admission, metrics) = (free_port(), free_port());
    let (mut child, what) = spawn_server(dir.path(), admission, metrics);
    let pid = child.id();

    let probe = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = probe.get(format!("http://{metrics}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        if Instant::now() > ready_by || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            let _ = child.kill();
            panic!("server did not become ready:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_idle = proc_status(pid, "VmRSS:").unwrap_or(0);
    println!(
        "server: {what}, pid {pid}; RSS after start {:.1} MiB; rewrite memo {} MiB (PROMFED_REWRITE_MEMO_MIB; 0 = every review rewritten)",
        rss_idle as f64 / 1024.0,
        std::env::var("PROMFED_REWRITE_MEMO_MIB").unwrap_or_else(|_| "default 16".into())
    );
    println!(
        "load: {} B UPDATE review (object + oldObject), HTTP/{http}, TLS 1.3, {rate} req/s for {secs}s, max {concurrency} in flight; client on the same 2 cores",
        review_bytes.len()
    );

    let client = client(&certs.ca_der, http);
    let url = format!("https://{admission}/mutate");
    let body = axum::body::Bytes::from(review_text.clone());
    // Warm-up: connections and allocator.
    for _ in 0..50 {
        one(&client, &url, &body).await;
    }
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let fixed = fixed_rate(&client, &url, &body, rate, secs, concurrency).await;
    let cpu1 = cpu_seconds(pid).unwrap_or(0.0);
    let wall = fixed.wall.as_secs_f64();
    print(&format!("fixed rate {rate}/s"), fixed);
    println!(
        "server CPU during fixed rate: {:.2} s over {wall:.2} s wall = {:.0}% of one core",
        cpu1 - cpu0,
        (cpu1 - cpu0) / wall * 100.0
    );
    // The same load against the floor server: what is left is the stacks and the machine.
    let answer = promfed::admission::review(review_bytes, &values)
        .expect("review")
        .body;
    let floor_addr = spawn_floor_server(dir.path(), answer);
    let floor_url = format!("https://{floor_addr}/mutate");
    for _ in 0..50 {
        one(&client, &floor_url, &body).await;
    }
    let floor = fixed_rate(&client, &floor_url, &body, rate, secs, concurrency).await;
    print(
        &format!("floor (same TLS and HTTP stacks, fixed answer, no review) at {rate}/s"),
        floor,
    );
    let flat_secs = secs.clamp(1, 5);
    let flat = flat_out(&client, &url, &body, flat_secs, concurrency.min(32)).await;
    print(&format!("flat out, {} workers", concurrency.min(32)), flat);

    let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);
    println!("server peak RSS (VmHWM): {:.1} MiB", hwm as f64 / 1024.0);
    // Graceful stop (SIGTERM), bounded; then make sure it is gone.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop_by = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            _ if Instant::now() > stop_by => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    match status {
        Some(s) => println!("server exit after SIGTERM: {s}"),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            println!("server did not stop within 10 s of SIGTERM; killed");
        }
    }
}
