//! Rollouts and node drains of real `promfed serve` processes behind a small round-robin TCP
//! balancer on 127.0.0.1 that, like a Service's endpoints and kube-proxy, keeps a terminating
//! replica in rotation for a lag after its SIGTERM. Clients reuse connections (HTTP/1.1
//! keep-alive and HTTP/2, a few requests per connection) and send a faithful TKG AdmissionReview
//! throughout; every answer is checked. Shared by `tests/rollout.rs` (assertions) and
//! `benches/faults.rs` (figures).
//!
//! Everything is bounded: each wait has [`BOUND`], clients stop on a flag, replicas that are
//! still running at the end are killed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promfed::certs::{Ca, LeafSpec};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Upper bound of every wait (readiness, exit).
pub const BOUND: Duration = Duration::from_secs(30);
/// The host name clients call; the webhook certificate is for `promfed.promfed.svc`, as in a
/// cluster, and the client resolves it to the balancer.
const HOST: &str = "promfed.promfed.svc";
const REVIEW: &str = include_str!("../fixtures/admission/configmap-create.json");
const VALUES: &str = include_str!("../fixtures/admission/values.yaml");
/// Requests a client sends on one connection before it opens a new one.
const PER_CONNECTION: u64 = 5;
/// Pause between two requests of one client (keeps the shared machine responsive).
const PAUSE: Duration = Duration::from_millis(15);

type Res<T> = Result<T, String>;

/// What happens to the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// Replace every replica, one after the other: start the new one, wait until it is ready and
    /// in rotation, SIGTERM the old one (`maxSurge: 1`, `maxUnavailable: 0`).
    Rolling,
    /// A node with both replicas is drained: a surge replica is ready and in rotation, then both
    /// old replicas get SIGTERM together.
    NodeDrain,
}

/// One run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The `promfed` binary.
    pub exe: PathBuf,
    /// What happens to the replicas.
    pub disruption: Disruption,
    /// `--shutdown-delay` of every replica.
    pub shutdown_delay: Duration,
    /// How long the balancer keeps a replica in rotation after its SIGTERM.
    pub lag: Duration,
    /// Concurrent clients; even ones speak HTTP/1.1, odd ones HTTP/2.
    pub clients: usize,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls sent.
    pub calls: u64,
    /// Calls that did not get a correct answer (error, wrong status, wrong uid, no patch).
    pub failed: u64,
    /// The first few failures, for the message.
    pub failures: Vec<String>,
    /// Connections the balancer sent to a replica after its SIGTERM.
    pub routed_to_terminating: u64,
    /// Exit status of every terminated replica (`None`: still running after [`BOUND`]).
    pub exits: Vec<Option<ExitStatus>>,
    /// Wall time of the run.
    pub took: Duration,
}

impl Report {
    /// Every terminated replica exited with status 0.
    pub fn clean_exits(&self) -> bool {
        self.exits.iter().all(|e| e.is_some_and(|s| s.success()))
    }
}

/// One `promfed serve` child process.
struct Replica {
    id: usize,
    child: Child,
    admission: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn spawn(env: &Env, id: usize, delay: Duration) -> Res<Replica> {
        let io = |e: std::io::Error| e.to_string();
        let (admission, metrics) = (free_port()?, free_port()?);
        let log = env.dir.join(format!("replica-{id}.log"));
        let out = std::fs::File::create(&log).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let child = Command::new(&env.exe)
            .arg("serve")
            .arg("--values")
            .arg(&env.values)
            .arg("--tls-cert")
            .arg(env.tls.join(promfed::certs::TLS_CERT))
            .arg("--tls-key")
            .arg(env.tls.join(promfed::certs::TLS_KEY))
            .args(["--listen", &admission.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--shutdown-delay", &format!("{}ms", delay.as_millis())])
            .args(["--shutdown-grace", "5s", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", env.exe.display()))?;
        Ok(Replica {
            id,
            child,
            admission,
            metrics,
            log,
        })
    }

    async fn wait_ready(&mut self, plain: &reqwest::Client) -> Res<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("replica {} exited before ready: {status}", self.id));
            }
            let url = format!("http://{}/readyz", self.metrics);
            if plain
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if start.elapsed() > BOUND {
                return Err(format!("replica {} not ready within {BOUND:?}", self.id));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn sigterm(&self) -> Res<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if ok {
            Ok(())
        } else {
            Err(format!("kill -TERM {} failed", self.child.id()))
        }
    }

    async fn wait_exit(&mut self) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < BOUND {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> Res<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

/// Files shared by the replicas, in a temporary directory.
struct Env {
    exe: PathBuf,
    dir: PathBuf,
    values: PathBuf,
    tls: PathBuf,
    ca: CertificateDer<'static>,
}

impl Env {
    fn new(exe: &Path, dir: &Path) -> Res<Env> {
        let s = |e: promfed::certs::CertsError| e.to_string();
        let ca = Ca::generate("promfed-rollout-ca", 1).map_err(s)?;
        let leaf = ca
            .issue(&LeafSpec::webhook("promfed", "promfed").map_err(s)?.days(1))
            .map_err(s)?;
        let tls = dir.join("tls");
        leaf.write(&tls, true).map_err(s)?;
        let values = dir.join("values.yaml");
        std::fs::write(&values, VALUES).map_err(|e| e.to_string())?;
        let ca =
            CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| e.to_string())?;
        Ok(Env {
            exe: exe.to_owned(),
            dir: dir.to_owned(),
            values,
            tls,
            ca,
        })
    }
}

/// A round-robin TCP balancer: each new connection goes to the next replica in rotation and
/// is copied byte for byte both ways. A connection it cannot pass on is closed, as a client
/// sees it when kube-proxy still points at a Pod that no longer listens.
struct Balancer {
    addr: SocketAddr,
    rotation: Arc<Mutex<Vec<(usize, SocketAddr)>>>,
    terminating: Arc<Mutex<HashSet<usize>>>,
    routed_to_terminating: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Balancer {
    async fn start() -> Res<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let rotation: Arc<Mutex<Vec<(usize, SocketAddr)>>> = Arc::default();
        let terminating: Arc<Mutex<HashSet<usize>>> = Arc::default();
        let routed_to_terminating = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let (rot, term, routed) = (
            rotation.clone(),
            terminating.clone(),
            routed_to_terminating.clone(),
        );
        tasks.spawn(async move {
            let next = AtomicUsize::new(0);
            let mut proxies = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let backend = {
                    let r = rot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (!r.is_empty()).then(|| r[next.fetch_add(1, Ordering::Relaxed) % r.len()])
                };
                let Some((id, to)) = backend else { continue };
                if term
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(&id)
                {
                    routed.fetch_add(1, Ordering::Relaxed);
                }
                proxies.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let mut client = client;
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                while proxies.try_join_next().is_some() {}
            }
        });
        Ok(Balancer {
            addr,
            rotation,
            terminating,
            routed_to_terminating,
            tasks,
        })
    }

    fn add(&self, r: &Replica) {
        self.rotation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((r.id, r.admission));
    }

    fn terminating(&self, r: &Replica) {
        self.terminating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(r.id);
    }

    fn remove(&self, r: &Replica) {
        self.rotation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(id, _)| *id != r.id);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Counts of all clients.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.len() < 10 {
            f.push(what);
        }
    }
}

/// A client TLS config trusting only `ca`, offering `alpn`.
pub fn client_tls(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Res<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

fn client(env: &Env, balancer: SocketAddr, h2: bool) -> Res<reqwest::Client> {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&env.ca, &[alpn])?)
        .resolve(HOST, balancer)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// One client: sends reviews until `stop`, a new connection every [`PER_CONNECTION`] calls
/// (or when the server closes one), checking every answer.
async fn run_client(
    env: Arc<Env>,
    balancer: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let h2 = n % 2 == 1;
    let proto = if h2 { "h2" } else { "http/1.1" };
    let url = format!("https://{HOST}:{}/mutate", balancer.port());
    let mut review: Value = match serde_json::from_str(REVIEW) {
        Ok(v) => v,
        Err(e) => return tally.fail(format!("fixture: {e}")),
    };
    let mut k = 0u64;
    let mut http = None;
    while !stop.load(Ordering::Relaxed) {
        if k.is_multiple_of(PER_CONNECTION) {
            http = None;
        }
        let c = match &http {
            Some(c) => c,
            None => match client(&env, balancer, h2) {
                Ok(c) => http.insert(c),
                Err(e) => return tally.fail(e),
            },
        };
        let uid = format!("rollout-{n}-{k}");
        review["request"]["uid"] = json!(uid);
        k += 1;
        tally.calls.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&review).unwrap_or_default();
        let sent = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                r.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok((200, b)) => {
                let v: Value = serde_json::from_slice(&b).unwrap_or_default();
                let r = &v["response"];
                if r["uid"] != json!(uid) || r["allowed"] != json!(true) || r["patch"].is_null() {
                    tally.fail(format!("{proto} {uid}: wrong answer"));
                }
            }
            Ok((status, _)) => tally.fail(format!("{proto} {uid}: status {status}")),
            Err(e) => {
                tally.fail(format!("{proto} {uid}: {e:?}"));
                http = None;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs one scenario end to end; the report says how many calls failed.
pub async fn run(s: &Scenario) -> Res<Report> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env = Arc::new(Env::new(&s.exe, dir.path())?);
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let balancer = Balancer::start().await?;
    let mut ids = 0..;
    let mut spawn = || Replica::spawn(&env, ids.next().unwrap_or_default(), s.shutdown_delay);

    let mut serving = vec![spawn()?, spawn()?];
    for r in &mut serving {
        r.wait_ready(&plain).await?;
        balancer.add(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = JoinSet::new();
    for n in 0..s.clients {
        clients.spawn(run_client(
            env.clone(),
            balancer.addr,
            n,
            stop.clone(),
            tally.clone(),
        ));
    }
    // Steady traffic on both replicas first.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut terminated: Vec<Replica> = Vec::new();
    let outcome: Res<()> = async {
        match s.disruption {
            Disruption::Rolling => {
                for _ in 0..serving.len() {
                    let mut new = spawn()?;
                    new.wait_ready(&plain).await?;
                    balancer.add(&new);
                    let old = serving.remove(0);
                    balancer.terminating(&old);
                    old.sigterm()?;
                    tokio::time::sleep(s.lag).await;
                    balancer.remove(&old);
                    terminated.push(old);
                    serving.push(new);
                }
            }
            Disruption::NodeDrain => {
                let mut surge = spawn()?;
                surge.wait_ready(&plain).await?;
                balancer.add(&surge);
                for old in &serving {
                    balancer.terminating(old);
                    old.sigterm()?;
                }
                tokio::time::sleep(s.lag).await;
                for old in serving.drain(..) {
                    balancer.remove(&old);
                    terminated.push(old);
                }
                serving.push(surge);
            }
        }
        Ok(())
    }
    .await;
    // Traffic goes on while the terminated replicas finish their delay and drain.
    let mut exits = Vec::new();
    for r in &mut terminated {
        exits.push(r.wait_exit().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    outcome?;
    let failures = tally
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let report = Report {
        calls: tally.calls.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        failures,
        routed_to_terminating: balancer.routed_to_terminating.load(Ordering::Relaxed),
        exits,
        took: started.elapsed(),
    };
    if !report.clean_exits() {
        let logs: Vec<String> = terminated.iter().map(Replica::log_tail).collect();
        return Err(format!(
            "a terminated replica did not exit cleanly: {:?}\n{}",
            report.exits,
            logs.join("\n---\n")
        ));
    }
    Ok(report)
}
