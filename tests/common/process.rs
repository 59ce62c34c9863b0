//! A real server binary (`prometheus`, `prometheus-alertmanager`) started on a free loopback
//! port, with its output in a log file; killed when dropped.
//!
//! A port picked free can be taken by another test before the child binds it, so a start that
//! fails with "address already in use" in the log is retried on a new port, a bounded number
//! of times. Readiness is polled with a bound, and every failure carries the log tail.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::prom::free_port;

/// Ports tried when another process takes the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A running child process serving on `addr`.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Runs `command(addr)` for a free loopback `addr`, output to `log_path`, and waits until
    /// `ready(addr)` (polled every 100 ms for at most `timeout`).
    pub fn start(
        name: &str,
        log_path: PathBuf,
        timeout: Duration,
        mut command: impl FnMut(SocketAddr) -> Result<Command>,
        ready: impl Fn(SocketAddr) -> bool,
    ) -> Result<Self> {
        let mut last = anyhow!("no attempt made");
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let mut cmd = command(addr)?;
            let log = File::create(&log_path)?;
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("{name}: spawning {:?}", cmd.get_program()))?;
            let mut proc = Self {
                name: name.to_owned(),
                child,
                addr,
                log_path: log_path.clone(),
            };
            match proc.wait_ready(timeout, &ready) {
                Ok(()) => return Ok(proc),
                Err(e) => {
                    let tail = proc.log_tail(30);
                    drop(proc);
                    let e = e.context(format!("{name} log tail:\n{tail}"));
                    if !tail.contains("address already in use") {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn wait_ready(&mut self, timeout: Duration, ready: impl Fn(SocketAddr) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited before it was ready ({status})", self.name);
            }
            if ready(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} not ready within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
