//! Fault harness (issue 7): the release `promfed serve` under sustained mixed traffic on
//! 127.0.0.1 while its certificate is rotated, its values file is broken and repaired, and it
//! finally gets SIGTERM with requests in flight.
//!
//! Last, rollouts (issue 15): real replicas behind a round-robin balancer that keeps a
//! terminating replica in rotation for 1.5 s after its SIGTERM (`tests/rollout/harness.rs`),
//! a rolling update of every replica and a node drain, with the default `--shutdown-delay` and
//! with `--shutdown-delay 0` as the control.
//!
//! Run: `cargo bench --bench faults` (about 90 s). Knobs: `FAULTS_PHASE_SECS` (default 10),
//! `FAULTS_RPS` (default 200 requests/s), `FAULTS_WORKERS` (default 8).
//!
//! The server is a child process (the real binary, real signals, real RSS from
//! `/proc/<pid>/status`). Traffic: valid AdmissionReviews of the realistic TKG ConfigMap
//! (CREATE and UPDATE with oldObject), non-matching ConfigMaps, broken `prometheus.yml`
//! (-> 200 `allowed: false`), malformed JSON (-> 400), oversize bodies (-> 413), over HTTP/2
//! and HTTP/1.1; beside it, slow clients that trickle their body or headers (-> 408 or
//! connection closed by the request timeout). Every answer is checked; the harness prints
//! every figure and exits non-zero when a check fails.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/rollout/harness.rs"]
mod harness;

use promfed::certs::{Ca, Leaf, LeafSpec, Usage};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `--request-timeout` given to the server: slow clients must be cut off after it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The server's documented default body limit (8 MiB); oversize bodies exceed it by 1 KiB.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Bound on every wait of the harness (readiness, reload observed, exit).
const BOUND: Duration = Duration::from_secs(30);
const BROKEN_VALUES: &str = "localClusterName: [unterminated\n";

type Res<T> = Result<T, String>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Certificates and files.

fn leaf(ca: &Ca) -> Res<Leaf> {
    let spec = LeafSpec {
        common_name: "promfed-faults".to_owned(),
        dns_names: vec!["localhost".to_owned()],
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        usage: Usage::Server,
        days: 2,
    };
    ca.issue(&spec).map_err(|e| e.to_string())
}

fn der(pem: &str) -> Res<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())
}

/// Replaces files the way a Kubernetes Secret/ConfigMap volume does: a new `..gen_N` directory,
/// then an atomic swap of the `..data` symlink the file symlinks point through.
fn volume_write(dir: &Path, generation: u32, files: &[(&str, &str)]) -> Res<()> {
    let io = |e: std::io::Error| e.to_string();
    let gen_dir = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&gen_dir).map_err(io)?;
    for (name, content) in files {
        std::fs::write(gen_dir.join(name), content).map_err(io)?;
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).map_err(io)?;
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).map_err(io)?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(io)
}

fn free_port() -> Res<SocketAddr> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    NonMatching,
    BrokenYaml,
    MalformedJson,
    Oversize,
}

const KINDS: [Kind; 5] = [
    Kind::Valid,
    Kind::NonMatching,
    Kind::BrokenYaml,
    Kind::MalformedJson,
    Kind::Oversize,
];

impl Kind {
    /// The mix: per 200 requests, 1 oversize, 9 malformed, 20 broken, 40 non-matching, 130 valid.
    fn of(n: u64) -> Kind {
        match n % 200 {
            0 => Kind::Oversize,
            1..=9 => Kind::MalformedJson,
            10..=29 => Kind::BrokenYaml,
            30..=69 => Kind::NonMatching,
            _ => Kind::Valid,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid (patched)",
            Kind::NonMatching => "non-matching",
            Kind::BrokenYaml => "broken YAML (deny)",
            Kind::MalformedJson => "malformed JSON (400)",
            Kind::Oversize => "oversize (413)",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
    /// Latency of these is the figure that matters (what kube-apiserver waits for).
    fn timed(self) -> bool {
        matches!(self, Kind::Valid | Kind::NonMatching | Kind::BrokenYaml)
    }
}

struct Bodies {
    configmap: Value,
    oversize: Vec<u8>,
}

impl Bodies {
    fn new() -> Res<Self> {
        let text = include_str!("../examples/tkg-prometheus-configmap.yaml");
        let configmap: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut oversize = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"big","pad":""#.to_vec();
        oversize.resize(MAX_BODY + 1024, b'x');
        oversize.extend_from_slice(b"\"}}");
        Ok(Self {
            configmap,
            oversize,
        })
    }

    fn review(&self, uid: &str, object: Value, update: bool) -> Vec<u8> {
        let old = if update { object.clone() } else { Value::Null };
        let op = if update { "UPDATE" } else { "CREATE" };
        let gvk = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        let gvr = json!({"group": "", "version": "v1", "resource": "configmaps"});
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk,
                "requestResource": gvr, "name": object["metadata"]["name"],
                "namespace": "tanzu-system-monitoring", "operation": op,
                "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
                "object": object, "oldObject": old, "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": format!("{}Options", if update {"Update"} else {"Create"})}
            }
        }))
        .unwrap_or_default()
    }

    fn body(&self, kind: Kind, uid: &str, n: u64) -> Vec<u8> {
        match kind {
            Kind::Valid => self.review(uid, self.configmap.clone(), n.is_multiple_of(2)),
            Kind::NonMatching => {
                let mut cm = self.configmap.clone();
                cm["metadata"]["name"] = json!("grafana-dashboards");
                self.review(uid, cm, false)
            }
            Kind::BrokenYaml => {
                let mut cm = self.configmap.clone();
                cm["data"]["prometheus.yml"] = json!("scrape_configs: [\n  - job_name: x\n");
                self.review(uid, cm, true)
            }
            Kind::MalformedJson => b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ".to_vec(),
            Kind::Oversize => self.oversize.clone(),
        }
    }
}

/// Checks one answer against the documented behaviour of its kind.
fn check(kind: Kind, uid: &str, status: u16, body: &[u8]) -> Res<()> {
    let want = match kind {
        Kind::MalformedJson => 400,
        Kind::Oversize => 413,
        _ => 200,
    };
    if status != want {
        return Err(format!("{}: status {status}, want {want}", kind.name()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{}: body is not JSON: {e}", kind.name()))?;
    if want != 200 {
        return Ok(());
    }
    let r = &v["response"];
    if r["uid"] != json!(uid) {
        return Err(format!("{}: uid {} != {uid}", kind.name(), r["uid"]));
    }
    let ok = match kind {
        Kind::Valid => {
            r["allowed"] == json!(true)
                && r["patchType"] == json!("JSONPatch")
                && r["patch"].as_str().is_some_and(|p| !p.is_empty())
        }
        Kind::NonMatching => r["allowed"] == json!(true) && r.get("patch").is_none(),
        Kind::BrokenYaml => {
            r["allowed"] == json!(false)
                && r["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("prometheus.yml"))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{}: unexpected response {r}", kind.name()))
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics.

#[derive(Default)]
struct KindStats {
    sent: u64,
    correct: u64,
    failed: u64,
}

#[derive(Default)]
struct PhaseStats {
    kinds: [KindStats; 5],
    latencies_us: Vec<u64>,
    failures: Vec<String>,
}

impl PhaseStats {
    fn record(&mut self, kind: Kind, latency: Duration, outcome: Res<()>) {
        let k = &mut self.kinds[kind.index()];
        k.sent += 1;
        match outcome {
            Ok(()) => {
                k.correct += 1;
                if kind.timed() {
                    self.latencies_us
                        .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                }
            }
            Err(e) => {
                k.failed += 1;
                if self.failures.len() < 5 {
                    self.failures.push(e);
                }
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// The server child and its RSS.

struct Server {
    child: Child,
    admission: SocketAddr,
    metrics: SocketAddr,
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn metrics_text(client: &reqwest::Client, addr: SocketAddr) -> Res<String> {
    let r = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    r.text().await.map_err(|e| e.to_string())
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// Clients.

fn https_client(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(harness::client_tls(ca, alpn)?)
        .no_proxy()
        .timeout(BOUND)
        .build()
        .map_err(|e| e.to_string())
}

/// A raw TLS connection (HTTP/1.1), for slow clients, in-flight requests and certificate probes.
async fn raw_tls(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Res<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

fn request_head(len: usize) -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Reads a whole `Connection: close` response; returns status and body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Res<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut buf))
        .await
        .map_err(|_| "no response within the bound".to_owned())?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {:?}", &text[..text.len().min(80)]))?;
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| buf[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

/// One slow client: headers and part of the body, then one byte every 250 ms (or, with
/// `headers_only`, half the headers and one header byte every 250 ms). The server must end it
/// (408, or closing the connection) after about the request timeout. Returns how long it took.
async fn slow_client(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    headers_only: bool,
) -> Res<Duration> {
    let mut s = raw_tls(connector, addr).await?;
    let start = Instant::now();
    let head = request_head(100_000);
    let first: &[u8] = if headers_only {
        &head.as_bytes()[..20]
    } else {
        head.as_bytes()
    };
    s.write_all(first).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let limit = REQUEST_TIMEOUT * 3;
    let mut next = first.len();
    loop {
        if start.elapsed() > limit {
            return Err(format!("slow client not cut off after {limit:?}"));
        }
        // The rest of the headers byte by byte (they stay valid), or body bytes.
        let byte: &[u8] = if headers_only {
            let b = &head.as_bytes()[next.min(head.len() - 1)..][..1];
            next += 1;
            b
        } else {
            b"{"
        };
        let _ = s.write_all(byte).await; // fails once the server has closed: fine
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    if !(got.is_empty() || text.starts_with("HTTP/1.1 408")) {
        return Err(format!(
            "slow client: unexpected answer {:?}",
            &text[..text.len().min(60)]
        ));
    }
    if took + Duration::from_millis(300) < REQUEST_TIMEOUT {
        return Err(format!("slow client cut off after only {took:?}"));
    }
    Ok(took)
}

/// The leaf certificate a brand-new connection is served.
async fn served_cert(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Res<CertificateDer<'static>> {
    let s = raw_tls(connector, addr).await?;
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| "no peer certificate".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Load.

struct Load {
    bodies: Arc<Bodies>,
    h2: reqwest::Client,
    h1: reqwest::Client,
    url: String,
    counter: Arc<AtomicU64>,
}

impl Load {
    async fn one(&self, stats: &Mutex<PhaseStats>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::of(n);
        let uid = format!("faults-{n:08}");
        let body = self.bodies.body(kind, &uid, n);
        let client = if n.is_multiple_of(3) {
            &self.h1
        } else {
            &self.h2
        };
        let start = Instant::now();
        let outcome = match client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(b) => check(kind, &uid, status, &b),
                    Err(e) => Err(format!("{}: reading body: {e}", kind.name())),
                }
            }
            Err(e) => Err(format!("{}: {e:?}", kind.name())),
        };
        let latency = start.elapsed();
        if let Ok(mut s) = stats.lock() {
            s.record(kind, latency, outcome);
        }
    }

    /// Sends at `rps` from `workers` tasks for `secs`.
    async fn run(self: &Arc<Self>, rps: u64, workers: u64, secs: u64) -> PhaseStats {
        let stats = Arc::new(Mutex::new(PhaseStats::default()));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let period = Duration::from_secs_f64(workers as f64 / rps.max(1) as f64);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let (load, stats) = (self.clone(), stats.clone());
            tasks.spawn(async move {
                // Spread the workers over one period so the rate is smooth.
                tokio::time::sleep(period.mul_f64(w as f64 / workers as f64)).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    tick.tick().await;
                    load.one(&stats).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Arc::try_unwrap(stats)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Main.

struct PhaseReport {
    name: &'static str,
    stats: PhaseStats,
    rss_end_kib: u64,
    rss_max_kib: u64,
    note: String,
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse. reqwest without a bundled
    // provider needs one installed even for plain HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run().await {
        Ok(true) => println!("\nRESULT: PASS"),
        Ok(false) => {
            println!("\nRESULT: FAIL (see the checks above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("\nRESULT: ERROR: {e}");
            std::process::exit(2);
        }
    }
}

async fn run() -> Res<bool> {
    let phase_secs = env_num("FAULTS_PHASE_SECS", 10);
    let rps = env_num("FAULTS_RPS", 200);
    let workers = env_num("FAULTS_WORKERS", 8);
    let io = |e: std::io::Error| e.to_string();

    let dir = tempfile::tempdir().map_err(io)?;
    let tls_dir = dir.path().join("tls");
    let values_dir = dir.path().join("values");
    std::fs::create_dir_all(&tls_dir).map_err(io)?;
    std::fs::create_dir_all(&values_dir).map_err(io)?;
    let ca = Ca::generate("promfed-faults-ca", 2).map_err(|e| e.to_string())?;
    let ca_der = der(ca.cert_pem())?;
    let first = leaf(&ca)?;
    volume_write(
        &tls_dir,
        0,
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    )?;
    let good_values = include_str!("../examples/values.yaml");
    volume_write(&values_dir, 0, &[("values.yaml", good_values)])?;

    let (admission, metrics) = (free_port()?, free_port()?);
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).map_err(io)?;
    let log2 = log.try_clone().map_err(io)?;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_promfed"));
    let child = Command::new(&exe)
        .arg("serve")
        .arg("--values")
        .arg(values_dir.join("values.yaml"))
        .arg("--tls-cert")
        .arg(tls_dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(tls_dir.join("tls.key"))
        .args(["--listen", &admission.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--request-timeout", "2s", "--reload-interval", "250ms"])
        .args(["--shutdown-grace", "10s", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io)?;
    let mut server = Server {
        child,
        admission,
        metrics,
    };
    let pid = server.child.id();
    println!(
        "promfed serve: pid {pid}, admission https://{admission}/mutate, metrics http://{metrics}"
    );
    println!(
        "settings: {phase_secs}s per phase, {rps} requests/s from {workers} workers, request timeout {REQUEST_TIMEOUT:?}, body limit {MAX_BODY} bytes"
    );
    let result = drive(
        &mut server,
        &ca,
        &ca_der,
        &tls_dir,
        &values_dir,
        phase_secs,
        rps,
        workers,
    )
    .await;
    if let Ok(None) = server.child.try_wait() {
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
    let result = match result {
        Ok(ok) => rollouts(&exe).await.map(|r| ok && r),
        e => e,
    };
    if !matches!(result, Ok(true)) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("--- server log (last 20 lines)");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    server: &mut Server,
    ca: &Ca,
    ca_der: &CertificateDer<'static>,
    tls_dir: &Path,
    values_dir: &Path,
    phase_secs: u64,
    rps: u64,
    workers: u64,
) -> Res<bool> {
    let pid = server.child.id();
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .map_err(|e| e.to_string())?;
    // Readiness, bounded.
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("server exited before ready: {status}"));
        }
        let ready = plain
            .get(format!("http://{}/readyz", server.metrics))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if start.elapsed() > BOUND {
            return Err("server not ready within the bound".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "ready after {:?}; RSS {:.1} MiB",
        start.elapsed(),
        mib(rss_kib(pid, "VmRSS:").unwrap_or(0))
    );

    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(harness::client_tls(ca_der, &[b"http/1.1"])?));
    let load = Arc::new(Load {
        bodies: Arc::new(Bodies::new()?),
        h2: https_client(ca_der, &[b"h2"])?,
        h1: https_client(ca_der, &[b"http/1.1"])?,
        url: format!("https://{}/mutate", server.admission),
        counter: Arc::new(AtomicU64::new(0)),
    });

    // RSS sampler: the maximum since the last reset.
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss_max, sampling) = (rss_max.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid, "VmRSS:") {
                    rss_max.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Slow clients all along: alternately a trickled body and trickled headers.
    let slow_stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let (connector, addr, stop) = (connector.clone(), server.admission, slow_stop.clone());
        tokio::spawn(async move {
            let mut results: Vec<Res<Duration>> = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                results.push(slow_client(&connector, addr, i % 2 == 1).await);
                i += 1;
            }
            results
        })
    };

    // Warm-up: not reported; brings allocator and connection pools to their steady state.
    let _ = load.run(rps, workers, 3).await;

    let mut phases: Vec<PhaseReport> = Vec::new();
    let mut ok = true;
    let phase_names = [
        "baseline",
        "cert rotation",
        "broken values",
        "good values again",
        "baseline again",
    ];
    for (i, name) in phase_names.into_iter().enumerate() {
        rss_max.store(0, Ordering::Relaxed);
        let load2 = load.clone();
        let traffic = tokio::spawn(async move { load2.run(rps, workers, phase_secs).await });
        let t0 = Instant::now();
        let note = match i {
            1 => {
                let next = leaf(ca)?;
                let want = der(&next.cert_pem)?;
                let old = served_cert(&connector, server.admission).await?;
                volume_write(
                    tls_dir,
                    1,
                    &[("tls.crt", &next.cert_pem), ("tls.key", &next.key_pem)],
                )?;
                let mut seen = None;
                while t0.elapsed() < BOUND {
                    match served_cert(&connector, server.admission).await {
                        Ok(c) if c == want => {
                            seen = Some(t0.elapsed());
                            break;
                        }
                        Ok(c) if c == old => {}
                        Ok(_) => {
                            return Err("served a certificate that is neither old nor new".into());
                        }
                        Err(e) => {
                            return Err(format!("probe connection failed during rotation: {e}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match seen {
                    Some(t) => format!(
                        "new connections see the new certificate {:.0} ms after the swap",
                        t.as_secs_f64() * 1000.0
                    ),
                    None => {
                        ok = false;
                        "FAIL: new certificate never served".to_owned()
                    }
                }
            }
            2 | 3 => {
                let (series, content) = if i == 2 {
                    (
                        "promfed_config_reload_failures_total{kind=\"values\"}",
                        BROKEN_VALUES,
                    )
                } else {
                    (
                        "promfed_config_reloads_total{kind=\"values\"}",
                        include_str!("../examples/values.yaml"),
                    )
                };
                let before = counter(&metrics_text(&plain, server.metrics).await?, series);
                volume_write(
                    values_dir,
                    u32::try_from(i).unwrap_or(9),
                    &[("values.yaml", content)],
                )?;
                let mut after = before;
                while t0.elapsed() < BOUND {
                    after = counter(&metrics_text(&plain, server.metrics).await?, series);
                    if after > before {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if after > before {
                    format!(
                        "{series} {before} -> {after} after {:.0} ms",
                        t0.elapsed().as_secs_f64() * 1000.0
                    )
                } else {
                    ok = false;
                    format!("FAIL: {series} stayed at {before}")
                }
            }
            _ => String::new(),
        };
        let stats = traffic.await.map_err(|e| e.to_string())?;
        phases.push(PhaseReport {
            name,
            stats,
            rss_end_kib: rss_kib(pid, "VmRSS:").unwrap_or(0),
            rss_max_kib: rss_max.load(Ordering::Relaxed),
            note,
        });
    }
    slow_stop.store(true, Ordering::Relaxed);
    let slow_results = slow.await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid, "VmRSS:").unwrap_or(0);
    let hwm = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let final_metrics = metrics_text(&plain, server.metrics)
        .await
        .unwrap_or_default();

    // SIGTERM with requests in flight: each connection has sent all but the last 100 bytes
    // of a valid review; the rest goes out after the signal.
    let in_flight = 8;
    let mut conns = Vec::new();
    for k in 0..in_flight {
        let uid = format!("inflight-{k}");
        let body = load
            .bodies
            .review(&uid, load.bodies.configmap.clone(), false);
        let mut s = raw_tls(&connector, server.admission).await?;
        let head = request_head(body.len());
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let split = body.len() - 100;
        s.write_all(&body[..split])
            .await
            .map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        conns.push((uid, s, body[split..].to_vec()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term_at = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !kill.success() {
        return Err("kill -TERM failed".to_owned());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut completed = 0;
    let mut inflight_failures = Vec::new();
    for (uid, mut s, rest) in conns {
        let r = async {
            s.write_all(&rest).await.map_err(|e| e.to_string())?;
            let (status, body) = read_response(&mut s).await?;
            check(Kind::Valid, &uid, status, &body)
        }
        .await;
        match r {
            Ok(()) => completed += 1,
            Err(e) => inflight_failures.push(e),
        }
    }
    let exit = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break Some(status);
        }
        if term_at.elapsed() > BOUND {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let shutdown_took = term_at.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;

    // ---- Report.
    println!("\n== traffic per phase ({phase_secs} s each, after a 3 s warm-up)");
    println!(
        "{:<18} {:>6} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  note",
        "phase", "sent", "correct", "failed", "req/s", "p50 ms", "p99 ms", "max ms", "RSS MiB"
    );
    let mut totals = [(0u64, 0u64, 0u64); 5];
    for p in &mut phases {
        p.stats.latencies_us.sort_unstable();
        let sent: u64 = p.stats.kinds.iter().map(|k| k.sent).sum();
        let correct: u64 = p.stats.kinds.iter().map(|k| k.correct).sum();
        let failed: u64 = p.stats.kinds.iter().map(|k| k.failed).sum();
        for (t, k) in totals.iter_mut().zip(&p.stats.kinds) {
            t.0 += k.sent;
            t.1 += k.correct;
            t.2 += k.failed;
        }
        let l = &p.stats.latencies_us;
        println!(
            "{:<18} {:>6} {:>8} {:>6} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1}  {}",
            p.name,
            sent,
            correct,
            failed,
            sent as f64 / phase_secs as f64,
            percentile(l, 0.50),
            percentile(l, 0.99),
            l.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
            mib(p.rss_max_kib),
            p.note
        );
        for f in &p.stats.failures {
            println!("    failure: {f}");
        }
        if failed > 0 {
            ok = false;
        }
    }
    println!(
        "(latency of valid, non-matching and broken-YAML reviews, client side, TLS on loopback; RSS = peak VmRSS in the phase)"
    );
    println!("\n== answers per kind (all phases)");
    for kind in KINDS {
        let (sent, correct, failed) = totals[kind.index()];
        println!(
            "{:<22} sent {sent:>6}  answered as documented {correct:>6}  failed {failed}",
            kind.name()
        );
    }
    let (sent, correct, failed) = totals
        .iter()
        .fold((0, 0, 0), |a, t| (a.0 + t.0, a.1 + t.1, a.2 + t.2));
    println!(
        "{:<22} sent {sent:>6}  answered as documented {correct:>6}  failed {failed}",
        "TOTAL"
    );

    let slow_ok: Vec<Duration> = slow_results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let slow_bad: Vec<&String> = slow_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    let slow_max = slow_ok.iter().max().copied().unwrap_or_default();
    println!(
        "\n== slow clients: {} sent, {} cut off by the server (408 or close) after {:.2}..{:.2} s, {} failed",
        slow_results.len(),
        slow_ok.len(),
        slow_ok
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        slow_max.as_secs_f64(),
        slow_bad.len()
    );
    for e in slow_bad.iter().take(5) {
        println!("    failure: {e}");
    }
    if !slow_bad.is_empty() || slow_ok.is_empty() {
        ok = false;
    }

    println!("\n== memory");
    let first = phases.first().map_or(0, |p| p.rss_end_kib);
    let again = phases.last().map_or(0, |p| p.rss_end_kib);
    let delta = again as f64 / 1024.0 - first as f64 / 1024.0;
    println!("peak RSS (VmHWM) before SIGTERM: {:.1} MiB", mib(hwm));
    println!(
        "RSS at end of 'baseline': {:.1} MiB; at end of 'baseline again': {:.1} MiB (delta {delta:+.1} MiB); idle 2 s later: {:.1} MiB",
        mib(first),
        mib(again),
        mib(rss_idle)
    );
    // The two last phases run after every fault with equal traffic: RSS must not creep.
    let n = phases.len();
    let tail_delta = if n >= 2 {
        mib(phases[n - 1].rss_end_kib) - mib(phases[n - 2].rss_end_kib)
    } else {
        0.0
    };
    println!(
        "RSS at end of '{}' vs '{}' (equal traffic, after all faults): delta {tail_delta:+.1} MiB",
        phases.get(n.saturating_sub(2)).map_or("", |p| p.name),
        phases.last().map_or("", |p| p.name)
    );
    let leak_ok = delta.abs() <= 5.0 && tail_delta.abs() <= 2.0;
    println!(
        "no leak (first and last equal phases within 5 MiB, last two within 2 MiB): {}",
        if leak_ok { "yes" } else { "NO" }
    );
    ok &= leak_ok;

    println!("\n== server metrics at the end");
    for l in final_metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("promfed_admission_requests_total")
                || l.starts_with("promfed_config_reload")
                || l.starts_with("promfed_patches_sent_total"))
    }) {
        println!("{l}");
    }

    println!("\n== SIGTERM with {in_flight} requests in flight");
    println!("completed with 200 and a patch: {completed}/{in_flight}");
    for e in &inflight_failures {
        println!("    failure: {e}");
    }
    match exit {
        Some(s) => {
            println!(
                "exit: {s} after {:.0} ms",
                shutdown_took.as_secs_f64() * 1000.0
            );
            ok &= s.code() == Some(0);
        }
        None => {
            println!("FAIL: still running {BOUND:?} after SIGTERM");
            ok = false;
        }
    }
    ok &= completed == in_flight;
    Ok(ok)
}

/// The rollout scenarios: with the default shutdown delay (must fail no call) and with none
/// (the control: shows what the delay prevents).
async fn rollouts(exe: &Path) -> Res<bool> {
    let clients = usize::try_from(env_num("FAULTS_ROLLOUT_CLIENTS", 4)).unwrap_or(4);
    let lag = Duration::from_millis(1500);
    println!(
        "\n== rollouts: 2 replicas, balancer keeps a terminating replica in rotation for {lag:?}, {clients} clients (HTTP/1.1 and HTTP/2, {} calls per connection)",
        5
    );
    println!(
        "{:<12} {:>15} {:>7} {:>7} {:>16} {:>8}",
        "disruption", "shutdown delay", "calls", "failed", "conns to term.", "took s"
    );
    let mut ok = true;
    for disruption in [harness::Disruption::Rolling, harness::Disruption::NodeDrain] {
        for delay in [Duration::from_secs(5), Duration::ZERO] {
            let scenario = harness::Scenario {
                exe: exe.to_owned(),
                disruption,
                shutdown_delay: delay,
                lag,
                clients,
            };
            let r = harness::run(&scenario).await?;
            println!(
                "{:<12} {:>15} {:>7} {:>7} {:>16} {:>8.1}",
                format!("{disruption:?}"),
                format!("{delay:?}"),
                r.calls,
                r.failed,
                r.routed_to_terminating,
                r.took.as_secs_f64()
            );
            for f in r.failures.iter().take(3) {
                println!("    failure: {f}");
            }
            if !delay.is_zero() && r.failed > 0 {
                ok = false;
            }
        }
    }
    println!("(the 0 s rows are the control: without the delay, calls routed during the lag fail)");
    Ok(ok)
}
