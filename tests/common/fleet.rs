//! A federated fleet of real Prometheus servers on 127.0.0.1, for the end-to-end tests.
//!
//! - [`Pki`]: a CA, the workload clusters' `/federate` server certificate and the tools
//!   cluster's client certificate, made with `promfed::certs` (the code behind `promfed certs`).
//! - [`Exporter`]: a tiny HTTP endpoint serving fixed metrics text (changeable at run time).
//! - [`PromProc`]: a `prometheus` process over plain HTTP or HTTPS with client certificates;
//!   killed on drop; every wait bounded.
//! - [`Fleet`]: two workload clusters `other` and `random` (plus `labelled`, whose Prometheus
//!   carries the cluster label as an external label) and the tools cluster, whose configuration
//!   comes from promfed (the library, or a running `promfed serve`).
//!
//! HTTP is a few lines of blocking HTTP/1.0 over `std::net` (and rustls for HTTPS), bounded by
//! socket timeouts, as in [`super::prom`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use promfed::certs::{self, Ca, LeafSpec};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use super::process::ServerProcess;
use super::prom::{Sample, parse_http_answer, parse_result, prometheus_bin, url_encode};
use super::server::TestCa;
pub use super::wait::wait_for;

/// The tools cluster's name (`localClusterName`), as in the seed.
pub const LOCAL: &str = "shared-tools";
/// The name every workload's `/federate` certificate is issued for (the seed's `server_name`).
pub const SERVER_NAME: &str = "prom-federation";
/// The value the `labelled` workload's Prometheus puts in the cluster label itself.
pub const EXTERNAL_CLUSTER: &str = "elsewhere";

const RULES: &str = include_str!("../fixtures/fleet/recording_rules.yml");
const WORKLOAD_YML: &str = include_str!("../fixtures/fleet/workload-prometheus.yml");
const TOOLS_YML: &str = include_str!("../fixtures/fleet/tools-prometheus.yml");
const VALUES_YAML: &str = include_str!("../fixtures/fleet/values.yaml");

/// One HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Start-up of one Prometheus on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries when another process takes the port picked for a Prometheus.
const PORT_ATTEMPTS: usize = 5;

/// The certificates of the fleet, as files in the layout `promfed certs` writes.
#[derive(Debug)]
pub struct Pki {
    /// `ca.crt`, `ca.key`.
    pub ca_dir: PathBuf,
    /// The workloads' server certificate (`ca.crt` is the client CA they require).
    pub server_dir: PathBuf,
    /// The tools cluster's client certificate (`ca.crt` verifies the workloads).
    pub client_dir: PathBuf,
    /// A TLS client presenting the client certificate, trusting the CA.
    pub client: Arc<ClientConfig>,
    /// A TLS client trusting the CA but presenting no certificate.
    pub anonymous: Arc<ClientConfig>,
}

impl Pki {
    pub fn generate(root: &Path) -> Result<Self> {
        let ca_dir = root.join("ca");
        let server_dir = root.join("server");
        let client_dir = root.join("client");
        let ca = Ca::generate("fleet test CA", 1)?;
        ca.write(&ca_dir, false)?;
        // Loaded back from disk, as `promfed certs webhook|federation --ca DIR` does.
        let ca = Ca::load(&ca_dir)?;
        let ip = std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
        ca.issue(&LeafSpec::federation_server(SERVER_NAME, &[], &[ip])?.days(1))?
            .write(&server_dir, false)?;
        ca.issue(&LeafSpec::federation_client(LOCAL)?.days(1))?
            .write(&client_dir, false)?;
        let client = client_config(&client_dir, true)?;
        let anonymous = client_config(&client_dir, false)?;
        Ok(Self {
            ca_dir,
            server_dir,
            client_dir,
            client,
            anonymous,
        })
    }

    /// Prometheus `--web.config.file` content: HTTPS, client certificate required.
    pub fn web_config(&self) -> String {
        let d = self.server_dir.display();
        format!(
            "tls_server_config:\n  cert_file: {d}/{c}\n  key_file: {d}/{k}\n  client_ca_file: {d}/{ca}\n  \
             client_auth_type: RequireAndVerifyClientCert\n",
            c = certs::TLS_CERT,
            k = certs::TLS_KEY,
            ca = certs::CA_CERT,
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `dir/ca.crt`, presenting `dir/tls.{crt,key}` when `with_cert`.
pub fn client_config(dir: &Path, with_cert: bool) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join(certs::CA_CERT))? {
        roots.add(cert?)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = CertificateDer::pem_file_iter(dir.join(certs::TLS_CERT))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(dir.join(certs::TLS_KEY))?;
        builder.with_client_auth_cert(chain, key)?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// How to reach a server: plain HTTP, or HTTPS with a client configuration and server name.
#[derive(Clone)]
pub enum Transport {
    Http,
    Https {
        config: Arc<ClientConfig>,
        server_name: String,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Http => f.write_str("Http"),
            Transport::Https { server_name, .. } => write!(f, "Https({server_name})"),
        }
    }
}

/// One blocking HTTP/1.0 request; returns status and body. HTTP/1.0 so the answer is neither
/// chunked nor kept alive: the body ends where the connection does.
pub fn request(
    addr: SocketAddr,
    transport: &Transport,
    method: &str,
    path_and_query: &str,
    body: Option<(&str, &[u8])>,
) -> Result<(u16, String)> {
    let tcp = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(HTTP_TIMEOUT))?;
    tcp.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut head = format!("{method} {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some((content_type, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    head.push_str("\r\n");
    let payload = body.map(|(_, b)| b).unwrap_or_default();
    let raw = match transport {
        Transport::Http => exchange(tcp, head.as_bytes(), payload)?,
        Transport::Https {
            config,
            server_name,
        } => {
            let name = ServerName::try_from(server_name.clone())?;
            let conn = rustls::ClientConnection::new(config.clone(), name)?;
            exchange(
                rustls::StreamOwned::new(conn, tcp),
                head.as_bytes(),
                payload,
            )?
        }
    };
    parse_http_answer(addr, &raw)
}

fn exchange(mut s: impl Read + Write, head: &[u8], body: &[u8]) -> Result<Vec<u8>> {
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        // A TLS peer that closes without close_notify: the answer is complete when it has a
        // head (HTTP/1.0 bodies end with the connection).
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e).context("reading the answer"),
    }
}

/// A metrics endpoint served from a thread; its text can be replaced while it runs.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Exporter {
    pub fn start(body: String) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let body = Arc::new(Mutex::new(body));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (body.clone(), stop.clone());
        let handle = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let text = b.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    let _ = serve_metrics(conn, &text);
                }
            }
        });
        Ok(Self {
            addr,
            body,
            stop,
            handle: Some(handle),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_body(&self, body: String) {
        *self.body.lock().unwrap_or_else(PoisonError::into_inner) = body;
    }
}

fn serve_metrics(mut conn: TcpStream, text: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(HTTP_TIMEOUT))?;
    conn.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What to start: the files of a Prometheus (made once its address is known) and how to reach it.
pub struct PromSpec<'a> {
    pub name: &'a str,
    /// Directory for config, rules, data and log (the caller owns and removes it).
    pub dir: PathBuf,
    /// Files to write into `dir` given the server's own address; `prometheus.yml` is the config.
    pub files: &'a (dyn Fn(SocketAddr) -> Result<Vec<(String, String)>> + Sync),
    /// `--web.config.file` content, if any.
    pub web_config: Option<String>,
    pub extra_args: Vec<String>,
    pub transport: Transport,
}

/// A running `prometheus`; killed when dropped.
#[derive(Debug)]
pub struct PromProc {
    pub name: String,
    proc: ServerProcess,
    pub dir: PathBuf,
    transport: Transport,
}

impl PromProc {
    /// Starts the server and waits (bounded) for `/-/ready`, retrying on another port when the
    /// picked one was taken meanwhile.
    pub fn start(spec: &PromSpec<'_>) -> Result<Self> {
        let bin = prometheus_bin();
        std::fs::create_dir_all(&spec.dir)?;
        let command = |addr: SocketAddr| -> Result<Command> {
            for (name, content) in (spec.files)(addr)? {
                std::fs::write(spec.dir.join(&name), content)
                    .with_context(|| format!("{}: writing {name}", spec.name))?;
            }
            let mut cmd = Command::new(&bin);
            cmd.arg(format!(
                "--config.file={}",
                spec.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                spec.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .args(&spec.extra_args);
            if let Some(web) = &spec.web_config {
                let path = spec.dir.join("web.yml");
                std::fs::write(&path, web)?;
                cmd.arg(format!("--web.config.file={}", path.display()));
            }
            Ok(cmd)
        };
        let ready = |addr: SocketAddr| {
            matches!(
                request(addr, &spec.transport, "GET", "/-/ready", None),
                Ok((200, _))
            )
        };
        let proc = ServerProcess::start(
            spec.name,
            spec.dir.join("prometheus.log"),
            READY_TIMEOUT,
            command,
            ready,
        )?;
        Ok(PromProc {
            name: spec.name.to_owned(),
            proc,
            dir: spec.dir.clone(),
            transport: spec.transport.clone(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.proc.addr()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn get(&self, path_and_query: &str) -> Result<(u16, String)> {
        request(self.addr(), &self.transport, "GET", path_and_query, None)
    }

    /// POST `/-/reload` (needs `--web.enable-lifecycle`).
    pub fn reload(&self) -> Result<(u16, String)> {
        request(self.addr(), &self.transport, "POST", "/-/reload", None)
    }

    /// Instant query at the server's "now".
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("{}: query {expr:?}: HTTP {status}: {body}", self.name))?;
        if json["status"] != "success" {
            bail!("{}: query {expr:?}: HTTP {status}: {body}", self.name);
        }
        parse_result(&json["data"])
            .map(|mut out| {
                out.sort();
                out
            })
            .with_context(|| format!("{}: query {expr:?}: {body}", self.name))
    }

    /// The whole log.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// `/api/v1/targets`, compacted to one line per target.
    pub fn targets(&self) -> String {
        let Ok((_, body)) = self.get("/api/v1/targets") else {
            return "(targets unavailable)".to_owned();
        };
        let Ok(json) = serde_json::from_str::<Value>(&body) else {
            return body;
        };
        let mut out = String::new();
        for t in json["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "  {} {} health={} labels={} error={}\n",
                t["scrapePool"], t["scrapeUrl"], t["health"], t["labels"], t["lastError"]
            ));
        }
        out
    }

    /// What helps when an assertion fails: the log tail, the targets, the configuration.
    pub fn diagnostics(&self) -> String {
        let config = std::fs::read_to_string(self.dir.join("prometheus.yml")).unwrap_or_default();
        format!(
            "=== {} ({}) log tail:\n{}\n=== {} targets:\n{}=== {} prometheus.yml:\n{}\n",
            self.name,
            self.addr(),
            self.log_tail(25),
            self.name,
            self.targets(),
            self.name,
            config
        )
    }
}

/// A metrics text for one cluster: `fleet_widgets` of two kinds (values differ per cluster),
/// `fleet_owner_info` (the same everywhere, the right side of a join), and `ephemeral_gauge`
/// (removed later to show staleness over federation).
pub fn exporter_text(a: u32, b: u32, ephemeral: bool) -> String {
    let mut s = format!(
        "# TYPE fleet_widgets gauge\nfleet_widgets{{kind=\"a\"}} {a}\nfleet_widgets{{kind=\"b\"}} {b}\n\
         # TYPE fleet_owner_info gauge\nfleet_owner_info{{kind=\"a\",owner=\"alice\"}} 1\n\
         fleet_owner_info{{kind=\"b\",owner=\"bob\"}} 1\n"
    );
    if ephemeral {
        s.push_str("# TYPE ephemeral_gauge gauge\nephemeral_gauge 1\n");
    }
    s.push_str(&dashboard_metrics(a));
    s
}

/// A few series of the metrics the shipped dashboards query (node-exporter, cAdvisor,
/// kube-state-metrics, API server, promfed), with values that differ per cluster, so the
/// dashboards' queries return data in the fleet.
fn dashboard_metrics(scale: u32) -> String {
    let n = f64::from(scale);
    format!(
        "# TYPE node_cpu_seconds_total counter\n\
         node_cpu_seconds_total{{node=\"node-1\",cpu=\"0\",mode=\"idle\"}} {idle}\n\
         node_cpu_seconds_total{{node=\"node-1\",cpu=\"0\",mode=\"user\"}} {n}\n\
         # TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes{{node=\"node-1\"}} {mem}\n\
         # TYPE node_memory_MemAvailable_bytes gauge\nnode_memory_MemAvailable_bytes{{node=\"node-1\"}} {avail}\n\
         # TYPE node_filesystem_size_bytes gauge\nnode_filesystem_size_bytes{{node=\"node-1\",device=\"/dev/sda1\",mountpoint=\"/\",fstype=\"ext4\"}} {mem}\n\
         # TYPE node_filesystem_avail_bytes gauge\nnode_filesystem_avail_bytes{{node=\"node-1\",device=\"/dev/sda1\",mountpoint=\"/\",fstype=\"ext4\"}} {avail}\n\
         # TYPE node_load1 gauge\nnode_load1{{node=\"node-1\"}} {n}\n\
         # TYPE kube_node_info gauge\nkube_node_info{{node=\"node-1\"}} 1\n\
         # TYPE kube_pod_info gauge\nkube_pod_info{{namespace=\"default\",pod=\"web-1\",node=\"node-1\"}} 1\n\
         # TYPE container_cpu_usage_seconds_total counter\n\
         container_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web-1\",container=\"web\",image=\"nginx\",node=\"node-1\"}} {n}\n\
         # TYPE container_memory_working_set_bytes gauge\n\
         container_memory_working_set_bytes{{namespace=\"default\",pod=\"web-1\",container=\"web\",image=\"nginx\",node=\"node-1\"}} {avail}\n\
         # TYPE workqueue_depth gauge\nworkqueue_depth{{name=\"crd\"}} {n}\n\
         # TYPE promfed_admission_requests_total counter\n\
         promfed_admission_requests_total{{operation=\"CREATE\",result=\"patched\"}} {n}\n",
        idle = n * 100.0,
        mem = n * 1e9,
        avail = n * 1e8,
    )
}

/// Widget values `(kind a, kind b)` per cluster.
pub const WIDGETS: &[(&str, u32, u32)] = &[
    (LOCAL, 7, 30),
    ("other", 3, 10),
    ("random", 5, 20),
    (EXTERNAL_CLUSTER, 100, 200),
];

/// Widgets of one cluster.
pub fn widgets(cluster: &str) -> (u32, u32) {
    WIDGETS
        .iter()
        .find(|(c, _, _)| *c == cluster)
        .map(|(_, a, b)| (*a, *b))
        .unwrap_or_default()
}

/// Series each cluster produces under the `fleet` prefix: 4 exported + 8 recorded.
pub const FLEET_SERIES_PER_CLUSTER: usize = 12;

/// How the tools cluster gets its configuration from promfed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `promfed::rewrite::mutate_object` and json_patch, in process.
    Library,
    /// An AdmissionReview sent over TLS to `promfed serve` (in process, on port 0).
    Server,
}

/// A workload cluster: its exporter and Prometheus.
#[derive(Debug)]
pub struct Workload {
    pub cluster: String,
    pub exporter: Exporter,
    pub prom: PromProc,
}

/// The whole fleet. Fields drop in declaration order: Prometheus processes before exporters.
pub struct Fleet {
    pub label: String,
    pub tools: PromProc,
    pub tools_exporter: Exporter,
    pub workloads: Vec<Workload>,
    pub pki: Pki,
    /// The tools cluster's ConfigMap before and after promfed.
    pub configmap: Value,
    pub mutated: Value,
    pub values_yaml: String,
    pub warnings: Vec<String>,
    pub root: tempfile::TempDir,
}

impl Fleet {
    /// Starts the workloads in parallel, then the tools cluster configured by promfed with
    /// `clusterLabelName: label`.
    pub fn start(label: &str, via: Via) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let pki = Pki::generate(&root.path().join("pki"))?;
        let specs = [
            ("other", None),
            ("random", None),
            ("labelled", Some(EXTERNAL_CLUSTER)),
        ];
        let workloads = thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .map(|(name, external)| {
                    let pki = &pki;
                    let dir = root.path().join(name);
                    s.spawn(move || start_workload(name, *external, label, pki, dir))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("workload thread panicked"))?)
                .collect::<Result<Vec<_>>>()
        })?;
        let (a, b) = widgets(LOCAL);
        let tools_exporter = Exporter::start(exporter_text(a, b, true))?;
        let addr_of = |name: &str| {
            workloads
                .iter()
                .find(|w| w.cluster == name)
                .map(|w| w.prom.addr().to_string())
                .unwrap_or_default()
        };
        let values_yaml = VALUES_YAML
            .replace("@LABEL@", label)
            .replace("@OTHER@", &addr_of("other"))
            .replace("@RANDOM@", &addr_of("random"))
            .replace("@LABELLED@", &addr_of("labelled"))
            .replace("@CERTS@", &pki.client_dir.display().to_string());
        let values = promfed::config::Values::from_yaml_str(&values_yaml)?;
        let exporter_addr = tools_exporter.addr();
        let outcome: Mutex<Option<(Value, Value, Vec<String>)>> = Mutex::new(None);
        let files = |addr: SocketAddr| -> Result<Vec<(String, String)>> {
            let configmap = tools_configmap(addr, exporter_addr);
            let (mutated, warnings) = match via {
                Via::Library => mutate_with_library(&configmap, &values)?,
                Via::Server => {
                    mutate_with_server(&configmap, &values_yaml, &root.path().join("serve"))?
                }
            };
            let data = mutated["data"]
                .as_object()
                .ok_or_else(|| anyhow!("mutated ConfigMap has no data: {mutated}"))?;
            let files = data
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            *outcome.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((configmap, mutated, warnings));
            Ok(files)
        };
        let tools = PromProc::start(&PromSpec {
            name: LOCAL,
            dir: root.path().join("tools"),
            files: &files,
            web_config: None,
            extra_args: vec![],
            transport: Transport::Http,
        })?;
        let (configmap, mutated, warnings) = outcome
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .ok_or_else(|| anyhow!("tools configuration was never generated"))?;
        Ok(Self {
            label: label.to_owned(),
            tools,
            tools_exporter,
            workloads,
            pki,
            configmap,
            mutated,
            values_yaml,
            warnings,
            root,
        })
    }

    pub fn workload(&self, cluster: &str) -> Result<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.cluster == cluster)
            .ok_or_else(|| anyhow!("no workload {cluster}"))
    }

    /// Everything that helps when an assertion fails.
    pub fn diagnostics(&self) -> String {
        let mut out = self.tools.diagnostics();
        out.push_str(&format!(
            "=== values:\n{}\n=== promfed warnings: {:?}\n",
            self.values_yaml, self.warnings
        ));
        for w in &self.workloads {
            out.push_str(&format!(
                "=== {} ({}) log tail:\n{}\n",
                w.cluster,
                w.prom.addr(),
                w.prom.log_tail(10)
            ));
        }
        out
    }

    /// The data keys of the mutated ConfigMap (the files the tools Prometheus runs from).
    pub fn generated_files(&self) -> Vec<PathBuf> {
        self.mutated["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| self.tools.dir.join(k))
            .collect()
    }
}

pub fn start_workload(
    name: &str,
    external: Option<&str>,
    label: &str,
    pki: &Pki,
    dir: PathBuf,
) -> Result<Workload> {
    let cluster = external.unwrap_or(name);
    let (a, b) = widgets(cluster);
    let exporter = Exporter::start(exporter_text(a, b, true))?;
    let exporter_addr = exporter.addr();
    let external_labels = match external {
        Some(v) => format!("  external_labels:\n    {label}: {v}"),
        None => String::new(),
    };
    let certs = pki.client_dir.display().to_string();
    let files = move |addr: SocketAddr| -> Result<Vec<(String, String)>> {
        Ok(vec![
            (
                "prometheus.yml".to_owned(),
                WORKLOAD_YML
                    .replace("@EXTERNAL_LABELS@", &external_labels)
                    .replace("@SELF@", &addr.to_string())
                    .replace("@EXPORTER@", &exporter_addr.to_string())
                    .replace("@CERTS@", &certs),
            ),
            ("recording_rules.yml".to_owned(), RULES.to_owned()),
        ])
    };
    let prom = PromProc::start(&PromSpec {
        name,
        dir,
        files: &files,
        web_config: Some(pki.web_config()),
        extra_args: vec![],
        transport: Transport::Https {
            config: pki.client.clone(),
            server_name: SERVER_NAME.to_owned(),
        },
    })?;
    Ok(Workload {
        cluster: name.to_owned(),
        exporter,
        prom,
    })
}

/// The tools cluster's Prometheus server ConfigMap, shaped like the TKG extension's.
pub fn tools_configmap(prom: SocketAddr, exporter: SocketAddr) -> Value {
    let yml = TOOLS_YML
        .replace("@SELF@", &prom.to_string())
        .replace("@EXPORTER@", &exporter.to_string());
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "prometheus-server",
            "namespace": "tanzu-system-monitoring",
            "labels": {"app": "prometheus", "component": "server"},
        },
        "data": {
            "prometheus.yml": yml,
            "recording_rules.yml": RULES,
        },
    })
}

/// Rewrites `configmap` with the library and applies the patch.
pub fn mutate_with_library(
    configmap: &Value,
    values: &promfed::config::Values,
) -> Result<(Value, Vec<String>)> {
    let mutation = promfed::rewrite::mutate_object(configmap, values)?;
    if mutation.target.is_none() {
        bail!("promfed did not recognise the tools ConfigMap");
    }
    let mut doc = configmap.clone();
    json_patch::patch(&mut doc, &mutation.patch)?;
    Ok((doc, mutation.warnings))
}

/// Rewrites `configmap` through a running `promfed serve`: started in process on port 0 with a
/// serving certificate from the tests' one [`TestCa`], sent an AdmissionReview v1 over TLS; the returned
/// base64 JSONPatch is applied. The server is shut down before returning.
pub fn mutate_with_server(
    configmap: &Value,
    values_yaml: &str,
    dir: &Path,
) -> Result<(Value, Vec<String>)> {
    std::fs::create_dir_all(dir)?;
    let values_path = dir.join("values.yaml");
    std::fs::write(&values_path, values_yaml)?;
    let ca = TestCa::new();
    let leaf = ca.leaf(None);
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    for (name, pem) in [
        (certs::CA_CERT, &ca.cert_pem),
        (certs::TLS_CERT, &leaf.cert_pem),
        (certs::TLS_KEY, &leaf.key_pem),
    ] {
        std::fs::write(tls_dir.join(name), pem)?;
    }
    let client = client_config(&tls_dir, false)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (listeners, admission_addr) = rt.block_on(async {
        let admission = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let metrics = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = admission.local_addr()?;
        anyhow::Ok((promfed::server::Listeners { admission, metrics }, addr))
    })?;
    let settings = promfed::server::Settings {
        values: Some(values_path),
        tls: promfed::server::TlsSource::Files {
            cert: tls_dir.join(certs::TLS_CERT),
            key: tls_dir.join(certs::TLS_KEY),
        },
        max_body_bytes: 8 * 1024 * 1024,
        request_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(2),
        shutdown_delay: Duration::ZERO,
        reload_interval: Duration::from_secs(60),
        memo_bytes: 16 * 1024 * 1024,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(promfed::server::serve(listeners, settings, async move {
        let _ = stop_rx.await;
    }));

    let review = super::admission::review("fleet-0001", "CREATE", configmap, None);
    let body = serde_json::to_vec(&review)?;
    let transport = Transport::Https {
        config: client,
        server_name: "localhost".to_owned(),
    };
    // The listener is bound already; the server answers once it has loaded values and cert.
    let answer = wait_for(
        "promfed serve answers",
        Duration::from_secs(20),
        || match request(
            admission_addr,
            &transport,
            "POST",
            "/mutate?timeout=10s",
            Some(("application/json", &body)),
        ) {
            Ok(a) => Ok(Some(a)),
            Err(e) => Err(e),
        },
    );
    let _ = stop_tx.send(());
    let served = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await });
    rt.shutdown_timeout(Duration::from_secs(2));
    let (status, text) = answer?;
    match served {
        Ok(Ok(Ok(()))) => {}
        other => bail!("promfed serve did not stop cleanly: {other:?}"),
    }
    if status != 200 {
        bail!("promfed serve: HTTP {status}: {text}");
    }
    let review: Value = serde_json::from_str(&text)?;
    let response = &review["response"];
    if response["uid"] != "fleet-0001" || response["allowed"] != true {
        bail!("promfed serve did not allow the ConfigMap: {text}");
    }
    if response["patchType"] != "JSONPatch" {
        bail!("promfed serve returned no JSONPatch: {text}");
    }
    // Kubernetes reads `patch` as Go `[]byte`: a base64 string, or (as kube-core writes it) an
    // array of byte values; Go's JSON decoder accepts both.
    let patch_bytes = match &response["patch"] {
        Value::String(b64) => base64_decode(b64)?,
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| anyhow!("patch byte {b} out of range"))
            })
            .collect::<Result<Vec<u8>>>()?,
        _ => bail!("no patch in {text}"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes)?;
    let mut doc = configmap.clone();
    json_patch::patch(&mut doc, &patch)?;
    let warnings = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    Ok((doc, warnings))
}

/// Standard base64 (with padding), as Kubernetes encodes `patch`.
pub fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => bail!("not base64: byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Ok(out)
}
