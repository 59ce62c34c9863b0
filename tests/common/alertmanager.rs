//! A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1 for the alerting tests.
//!
//! Gossip is off (`--cluster.listen-address=`), so it binds only its HTTP port on loopback.
//! [`Alertmanager::alerts`] reads `/api/v2/alerts`, which lists every alert it received with its
//! status (`active`, or `suppressed` with `inhibitedBy`), whatever the receivers do.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::process::ServerProcess;
use super::prom::{find_binary, http_get};

/// How long Alertmanager may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Alertmanager; killed when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    proc: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` (or `$ALERTMANAGER`) with `config_yaml` and waits
    /// (bounded) until it is ready.
    pub fn start(config_yaml: &str) -> Result<Self> {
        let bin = find_binary("prometheus-alertmanager", "ALERTMANAGER").map_err(|e| {
            anyhow!("{e:#}; install Debian's package: apt-get install -y prometheus-alertmanager")
        })?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, config_yaml)?;
        let data = dir.path().join("data");
        let proc = ServerProcess::start(
            "alertmanager",
            dir.path().join("alertmanager.log"),
            READY_TIMEOUT,
            |addr| {
                let mut cmd = Command::new(&bin);
                cmd.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.path={}", data.display()))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--cluster.listen-address=");
                Ok(cmd)
            },
            |addr| matches!(http_get(addr, "/-/ready"), Ok((200, _))),
        )?;
        Ok(Self { proc, _dir: dir })
    }

    /// The loopback address (for Prometheus's `alerting.alertmanagers`).
    pub fn addr(&self) -> SocketAddr {
        self.proc.addr()
    }

    /// Every alert Alertmanager holds (`/api/v2/alerts`, silenced and inhibited ones included).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let (status, body) = http_get(self.addr(), "/api/v2/alerts")?;
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
        self.proc.log_tail(n)
    }
}
