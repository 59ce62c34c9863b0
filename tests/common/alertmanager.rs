//! A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1 for the alerting tests.
//!
//! Gossip is off (`--cluster.listen-address=`), so it binds only its HTTP port on loopback.
//! [`Alertmanager::alerts`] reads `/api/v2/alerts`, which lists every alert it received with its
//! status (`active`, or `suppressed` with `inhibitedBy`), whatever the receivers do.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::prom::{find_binary, free_port, http_get};

/// How long Alertmanager may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried when another process takes the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A running Alertmanager; killed when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` (or `$ALERTMANAGER`) with `config_yaml` and waits
    /// (bounded) until it is ready.
    pub fn start(config_yaml: &str) -> Result<Self> {
        let bin = find_binary("prometheus-alertmanager", "ALERTMANAGER").map_err(|e| {
            anyhow!("{e:#}; install Debian's package: apt-get install -y prometheus-alertmanager")
        })?;
        let mut last = anyhow!("no attempt made");
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::tempdir()?;
            let config = dir.path().join("alertmanager.yml");
            std::fs::write(&config, config_yaml)?;
            let log_path = dir.path().join("alertmanager.log");
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let log = File::create(&log_path)?;
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawning {}", bin.display()))?;
            let mut am = Self {
                child,
                addr,
                log_path,
                _dir: dir,
            };
            match am.wait_ready() {
                Ok(()) => return Ok(am),
                Err(e) => {
                    let tail = am.log_tail(20);
                    drop(am);
                    let e = e.context(format!("alertmanager log tail:\n{tail}"));
                    if !tail.contains("address already in use") {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("alertmanager exited before it was ready ({status})");
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("alertmanager not ready within {READY_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback address (for Prometheus's `alerting.alertmanagers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every alert Alertmanager holds (`/api/v2/alerts`, silenced and inhibited ones included).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let (status, body) = http_get(self.addr, "/api/v2/alerts")?;
        if status != 200 {
            bail!("GET /api/v2/alerts: HTTP {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body).context("/api/v2/alerts: bad JSON")?;
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("/api/v2/alerts is not a list: {body}"))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
