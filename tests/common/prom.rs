//! Real Prometheus and promtool for tests, on 127.0.0.1 only.
//!
//! - [`promtool`] / [`prometheus_bin`] find the binaries (`PROMTOOL` / `PROMETHEUS` override the
//!   `PATH` lookup) and fail with an install hint when they are missing: a test that needs them
//!   must fail, never skip silently.
//! - [`Promtool`] runs `check rules`, `check config` and `tsdb create-blocks-from openmetrics`.
//! - [`Prometheus`] starts a server on a free loopback port, waits (bounded) for `/-/ready`, runs
//!   instant queries (at a given time, or now; [`Prometheus::wait_for_series`] polls with a
//!   bound, e.g. for scrapes or federation), and kills the process when dropped.
//! - [`OpenMetrics`] writes backfill input with correctly escaped label values.
//!
//! The HTTP client is a few lines of blocking HTTP/1.0 over `std::net`: no async runtime, no TLS
//! provider, bounded by socket timeouts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::process::ServerProcess;

/// How long a single HTTP exchange with Prometheus may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to report ready (loading blocks on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "install Debian's package: apt-get install -y prometheus";

/// Finds an executable: the `env_override` variable if set, otherwise `name` on `PATH`.
pub fn find_binary(name: &str, env_override: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_override) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{env_override}={} is not a file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("`{name}` not found on PATH (or set {env_override}); {INSTALL_HINT}")
        })
}

/// The `promtool` binary; panics with an install hint when it is missing (tests must not skip).
pub fn promtool() -> Promtool {
    match find_binary("promtool", "PROMTOOL") {
        Ok(path) => Promtool { path },
        Err(e) => panic!("{e:#}"),
    }
}

/// The `prometheus` binary; panics with an install hint when it is missing.
pub fn prometheus_bin() -> PathBuf {
    find_binary("prometheus", "PROMETHEUS").unwrap_or_else(|e| panic!("{e:#}"))
}

/// A located `promtool`.
#[derive(Debug, Clone)]
pub struct Promtool {
    pub path: PathBuf,
}

impl Promtool {
    fn run(&self, args: &[&std::ffi::OsStr]) -> Result<Output> {
        Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.path.display()))
    }

    fn run_ok(&self, what: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
        let out = self.run(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("promtool {what} failed ({}):\n{text}", out.status);
        }
        Ok(text)
    }

    /// `promtool check rules FILE`: Ok with promtool's output, Err with it on rejection.
    pub fn check_rules(&self, file: &Path) -> Result<String> {
        self.run_ok(
            "check rules",
            &["check".as_ref(), "rules".as_ref(), file.as_os_str()],
        )
    }

    /// `promtool check config FILE` (also checks the rule files it references).
    pub fn check_config(&self, file: &Path) -> Result<String> {
        self.run_ok(
            "check config",
            &["check".as_ref(), "config".as_ref(), file.as_os_str()],
        )
    }

    /// `promtool tsdb create-blocks-from openmetrics INPUT OUT_DIR`: builds TSDB blocks that a
    /// [`Prometheus`] can serve with `storage_dir: Some(OUT_DIR)`.
    pub fn create_blocks(&self, input: &Path, out_dir: &Path) -> Result<String> {
        self.run_ok(
            "tsdb create-blocks-from openmetrics",
            &[
                "tsdb".as_ref(),
                "create-blocks-from".as_ref(),
                "openmetrics".as_ref(),
                input.as_os_str(),
                out_dir.as_os_str(),
            ],
        )
    }
}

/// Writes OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.
///
/// Samples of one series must be pushed in increasing time order; no metadata lines are written
/// (every family is of type unknown, which the backfiller accepts).
#[derive(Debug, Default)]
pub struct OpenMetrics {
    text: String,
}

impl OpenMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample; `labels` excludes `__name__`; `ts` is in seconds.
    pub fn sample(&mut self, name: &str, labels: &[(String, String)], value: f64, ts: i64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label_value(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {} {ts}", format_value(value));
    }

    /// The finished text, with the mandatory `# EOF` line.
    pub fn finish(mut self) -> String {
        self.text.push_str("# EOF\n");
        self.text
    }
}

/// Escapes a label value for the exposition formats (and PromQL double-quoted strings).
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's shortest round-trip representation: the backfilled float is bit-exact.
        format!("{v}")
    }
}

/// Picks a loopback port that is free right now. Prometheus cannot be handed a bound socket or
/// port 0, so [`Prometheus::start`] retries with another port if someone takes it meanwhile.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One series of a query result. Values stay Prometheus's strings: bit-exact, and `NaN` equals
/// `NaN`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: String,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}=\"{}\"", escape_label_value(v))?;
        }
        write!(f, "}} {}", self.value)
    }
}

/// What a server needs: its configuration and, optionally, existing TSDB blocks.
#[derive(Debug, Clone, Default)]
pub struct PromOptions {
    /// `prometheus.yml`; empty means a minimal config without scrape jobs.
    pub config_yaml: String,
    /// Extra files written beside the config (e.g. rule files it references), by relative name.
    pub files: Vec<(String, String)>,
    /// TSDB directory to serve (e.g. blocks from [`Promtool::create_blocks`]); a fresh temporary
    /// one when `None`. Prometheus writes its WAL and lock file there.
    pub storage_dir: Option<PathBuf>,
    /// Further command-line flags.
    pub extra_args: Vec<String>,
}

/// A running `prometheus` on 127.0.0.1; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    proc: ServerProcess,
    addr: SocketAddr,
    // Holds the config, log and default storage until the process is gone.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts a server and waits (bounded) until `/-/ready` answers 200.
    pub fn start(opts: &PromOptions) -> Result<Self> {
        let bin = find_binary("prometheus", "PROMETHEUS")?;
        let dir = tempfile::tempdir().context("creating a temp dir for prometheus")?;
        let config_path = dir.path().join("prometheus.yml");
        let config = if opts.config_yaml.trim().is_empty() {
            "global:\n  scrape_interval: 1m\n"
        } else {
            opts.config_yaml.as_str()
        };
        std::fs::write(&config_path, config)?;
        for (name, content) in &opts.files {
            std::fs::write(dir.path().join(name), content)
                .with_context(|| format!("writing {name}"))?;
        }
        let storage = match &opts.storage_dir {
            Some(p) => p.clone(),
            None => dir.path().join("data"),
        };
        let proc = ServerProcess::start(
            "prometheus",
            dir.path().join("prometheus.log"),
            READY_TIMEOUT,
            |addr| {
                let mut cmd = Command::new(&bin);
                cmd.arg(format!("--config.file={}", config_path.display()))
                    .arg(format!("--storage.tsdb.path={}", storage.display()))
                    .arg(format!("--web.listen-address={addr}"))
                    .args(&opts.extra_args);
                Ok(cmd)
            },
            |addr| matches!(http_get(addr, "/-/ready"), Ok((200, _))),
        )?;
        Ok(Prometheus {
            addr: proc.addr(),
            proc,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The last `n` lines of the server's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// GETs `path_and_query` and returns the decoded JSON body of a 2xx answer.
    pub fn get_json(&self, path_and_query: &str) -> Result<Value> {
        let (status, body) = http_get(self.addr, path_and_query)?;
        if !(200..300).contains(&status) {
            bail!("GET {path_and_query}: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path_and_query}: bad JSON"))
    }

    /// Instant query at `time` (Unix seconds): what a rule evaluation at that time computes.
    /// A scalar result becomes one series without labels, as rule evaluation turns it.
    pub fn query(&self, expr: &str, time: f64) -> Result<Vec<Sample>> {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            url_encode(expr),
            format_value(time)
        );
        let (status, body) = http_get(self.addr, &path)?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {expr:?}: HTTP {status}, not JSON: {body}"))?;
        if json["status"] != "success" {
            bail!(
                "query {expr:?}: HTTP {status}: {}: {}",
                json["errorType"],
                json["error"]
            );
        }
        parse_result(&json["data"]).with_context(|| format!("query {expr:?}: {body}"))
    }

    /// Instant query at the current wall-clock time.
    pub fn query_now(&self, expr: &str) -> Result<Vec<Sample>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("clock before 1970")?;
        self.query(expr, now.as_secs_f64())
    }

    /// Polls [`Self::query_now`] every 250 ms until it returns at least one series (e.g. after
    /// the first scrape or federation round), or fails after `timeout` with the last answer.
    pub fn wait_for_series(&self, expr: &str, timeout: Duration) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.query_now(expr);
            if let Ok(samples) = &last
                && !samples.is_empty()
            {
                return last;
            }
            if Instant::now() >= deadline {
                let last = match last {
                    Ok(_) => "an empty result".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "{expr:?} returned no series within {timeout:?}; last: {last}\nlog tail:\n{}",
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Decodes the `data` of a `/api/v1/query` answer (scalar or vector).
pub fn parse_result(data: &Value) -> Result<Vec<Sample>> {
    let value_of = |pair: &Value| -> Result<String> {
        pair.get(1)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("bad sample value {pair}"))
    };
    match data["resultType"].as_str() {
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value_of(&data["result"])?,
        }]),
        Some("vector") => {
            let items = data["result"]
                .as_array()
                .ok_or_else(|| anyhow!("vector result is not a list"))?;
            items
                .iter()
                .map(|item| {
                    let labels = item["metric"]
                        .as_object()
                        .ok_or_else(|| anyhow!("series without metric: {item}"))?
                        .iter()
                        .map(|(k, v)| {
                            let v = v
                                .as_str()
                                .ok_or_else(|| anyhow!("label {k} not a string"))?;
                            Ok((k.clone(), v.to_owned()))
                        })
                        .collect::<Result<_>>()?;
                    Ok(Sample {
                        labels,
                        value: value_of(&item["value"])?,
                    })
                })
                .collect()
        }
        other => bail!("unsupported result type {other:?}"),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Blocking HTTP/1.0 GET (so the answer is neither chunked nor kept alive), bounded by
/// [`HTTP_TIMEOUT`]. Returns the status code and the body.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer from {addr}"))?;
    parse_http_answer(addr, &raw)
}

/// Splits a whole HTTP/1.0 answer into its status code and body.
pub fn parse_http_answer(addr: SocketAddr, raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer from {addr}: {text}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line from {addr}: {head}"))?;
    Ok((status, body.to_owned()))
}
