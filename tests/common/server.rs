//! A real `promfed serve` on 127.0.0.1 (ports 0) with rcgen test certificates in a temp dir,
//! and clients that trust only the test CA. Waits are [`super::wait`]'s bounded polls.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use promfed::server::{self, Listeners, ServeError, Settings, TlsSource};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use super::wait::BOUND;

/// A test CA that signs serving certificates.
pub struct TestCa {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "promfed test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for 127.0.0.1/localhost, optionally with a given notAfter year.
    pub fn leaf(&self, not_after_year: Option<i32>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "promfed test webhook");
        if let Some(y) = not_after_year {
            params.not_after = rcgen::date_time_ymd(y, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Knobs of one test server.
pub struct Opts {
    pub values: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            values: Some(include_str!("../fixtures/admission/values.yaml").to_owned()),
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

pub struct TestServer {
    pub admission: SocketAddr,
    pub metrics: SocketAddr,
    pub ca: TestCa,
    pub leaf: Leaf,
    pub dir: tempfile::TempDir,
    /// The `..data`-style directory holding tls.crt/tls.key, as a Secret volume does.
    pub secret_dir: PathBuf,
    pub values_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
    generation: u32,
}

/// Writes files into a new timestamped dir and swaps the `..data` symlink to it, as the
/// kubelet's atomic writer does for Secret and ConfigMap volumes.
pub fn atomic_write(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let ts = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&ts).unwrap();
    for (name, content) in files {
        std::fs::write(ts.join(name), content).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Replaces a file in one step (a sibling written, then renamed over it), as a mounted volume's
/// swap is atomic for readers: a reload never sees the file half written.
pub fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl TestServer {
    pub async fn start(opts: Opts) -> Self {
        if std::env::var_os("PROMFED_TEST_LOG").is_some() {
            promfed::logging::init(promfed::logging::LogFormat::Text);
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let leaf = ca.leaf(None);
        let secret_dir = dir.path().join("tls");
        std::fs::create_dir_all(&secret_dir).unwrap();
        atomic_write(
            &secret_dir,
            0,
            &[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)],
        );
        let values_path = dir.path().join("values.yaml");
        if let Some(v) = &opts.values {
            std::fs::write(&values_path, v).unwrap();
        }
        let settings = Settings {
            values: opts.values.as_ref().map(|_| values_path.clone()),
            tls: TlsSource::Files {
                cert: secret_dir.join("tls.crt"),
                key: secret_dir.join("tls.key"),
            },
            max_body_bytes: opts.max_body_bytes,
            request_timeout: opts.request_timeout,
            shutdown_grace: opts.shutdown_grace,
            shutdown_delay: Duration::ZERO,
            reload_interval: Duration::from_millis(50),
            memo_bytes: 16 * 1024 * 1024,
        };
        let admission_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admission = admission_l.local_addr().unwrap();
        let metrics = metrics_l.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(
            Listeners {
                admission: admission_l,
                metrics: metrics_l,
            },
            settings,
            async move {
                let _ = rx.await;
            },
        ));
        let s = Self {
            admission,
            metrics,
            ca,
            leaf,
            dir,
            secret_dir,
            values_path,
            shutdown: Some(tx),
            handle: Some(handle),
            generation: 0,
        };
        let probe = plain_client();
        let url = format!("http://{}/readyz", s.metrics);
        wait_for("server ready", || async {
            matches!(probe.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        s
    }

    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.admission)
    }

    /// A client trusting only the test CA, offering h2 and http/1.1, TLS 1.2 and 1.3.
    pub fn client(&self) -> reqwest::Client {
        self.client_with(
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[b"h2", b"http/1.1"],
            true,
        )
    }

    pub fn client_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
        pool: bool,
    ) -> reqwest::Client {
        tls_client(&self.ca.cert_der, versions, alpn, pool)
    }

    /// POSTs `body` to /mutate; returns status and JSON body.
    pub async fn post(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client()
            .post(self.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "status {status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    pub async fn metrics_text(&self) -> String {
        metrics_at(self.metrics).await
    }

    /// Rotates the serving certificate the way a Secret volume does.
    pub fn rotate(&mut self, leaf: &Leaf) {
        self.generation += 1;
        atomic_write(
            &self.secret_dir,
            self.generation,
            &[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)],
        );
    }

    /// Asks the server to stop; returns the join handle of `serve`.
    pub fn trigger_shutdown(&mut self) -> JoinHandle<Result<(), ServeError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A reqwest client over [`client_tls`]; `pool: false` keeps no idle connection.
pub fn tls_client(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
    pool: bool,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(ca, versions, alpn))
        .tls_info(true)
        .no_proxy()
        .timeout(BOUND);
    if !pool {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

pub fn client_tls(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

/// reqwest is built without a bundled provider (no aws-lc); the process default is ring, as
/// in the binary.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn plain_client() -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .unwrap()
}

/// The text of `/metrics` on the metrics port at `addr`.
pub async fn metrics_at(addr: SocketAddr) -> String {
    plain_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `cond` until it holds ([`super::wait::wait_for_async`]); panics after [`BOUND`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    super::wait::wait_for_async(what, BOUND, || {
        let done = cond();
        async move { anyhow::Ok(done.await.then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("timed out waiting for: {e:#}"));
}

/// The value of one series in the text exposition, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
