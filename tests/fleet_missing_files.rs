//! What real Prometheus does when a federation scrape config names TLS files that are not there
//! (issue 9): the reason promfed mounts the federation Secret into the Prometheus Deployment.
//!
//! Observed with Debian's Prometheus 2.42 and asserted here:
//! - at start-up, a missing `ca_file` (or `cert_file`/`key_file`) does not stop Prometheus: it
//!   becomes ready, scrapes its other jobs, logs `error creating new scrape pool ... unable to load
//!   specified CA cert` once, and the federation job has no target at all: no `up` series, nothing
//!   in `/api/v1/targets`. The fleet silently goes missing;
//! - files that appear later change nothing by themselves (the pool is not retried); a
//!   configuration reload (`POST /-/reload`) creates the pool and federation starts;
//! - files that vanish from a running pool (and a reload) turn the target down: `up` 0 and the
//!   target's `lastError` says `unable to load specified CA cert`.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::fleet::{LOCAL, Pki, PromProc, PromSpec, Transport, start_workload, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// The tools cluster's config: a local job and the seed's federation job, its TLS files under
/// `certs` (the mount path of the federation Secret).
fn tools_config(own: std::net::SocketAddr, target: &str, certs: &Path) -> String {
    let c = certs.display();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
         - job_name: prometheus\n  static_configs:\n  - targets: ['{own}']\n\
         - job_name: federation\n  scheme: https\n  metrics_path: /federate\n  params:\n    'match[]':\n    - '{{job=\"exporter\"}}'\n\
         \x20 honor_labels: true\n  tls_config:\n    ca_file: {c}/ca.crt\n    cert_file: {c}/tls.crt\n    key_file: {c}/tls.key\n    server_name: prom-federation\n\
         \x20 static_configs:\n  - targets: ['{target}']\n    labels: {{cluster: other}}\n"
    )
}

fn start_tools(dir: &Path, target: String, certs: &Path) -> Result<PromProc> {
    let certs = certs.to_owned();
    let files = move |addr| {
        Ok(vec![(
            "prometheus.yml".to_owned(),
            tools_config(addr, &target, &certs),
        )])
    };
    PromProc::start(&PromSpec {
        name: LOCAL,
        dir: dir.to_owned(),
        files: &files,
        web_config: None,
        extra_args: vec!["--web.enable-lifecycle".to_owned()],
        transport: Transport::Http,
    })
}

/// Writes the Secret's keys into `mount` the way the kubelet does: a timestamped directory, a
/// `..data` symlink to it, and one symlink per key through `..data`.
fn materialize_secret(from: &Path, mount: &Path) -> Result<()> {
    let version = mount.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&version)?;
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(from.join(key), version.join(key)).with_context(|| key.to_owned())?;
    }
    symlink(
        version.file_name().unwrap_or_default(),
        mount.join("..data"),
    )?;
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        symlink(Path::new("..data").join(key), mount.join(key))?;
    }
    Ok(())
}

/// The federation job's targets as `(health, lastError)`.
fn federation_targets(tools: &PromProc) -> Result<Vec<(String, String)>> {
    let (_, body) = tools.get("/api/v1/targets")?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    Ok(json["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["scrapePool"] == "federation")
        .map(|t| {
            (
                t["health"].as_str().unwrap_or_default().to_owned(),
                t["lastError"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// The timestamp of the latest local scrape: Prometheus's own clock, to wait for its progress.
fn last_local_scrape(tools: &PromProc) -> Result<f64> {
    let s = tools.query("timestamp(up{job=\"prometheus\"})")?;
    match s.first() {
        Some(s) => Ok(s.value.parse()?),
        None => bail!("no local scrape yet"),
    }
}

/// Waits until the local job is scraped and the scrape-pool error is logged; returns that line.
fn scrape_pool_error(tools: &PromProc) -> Result<String> {
    const NEEDLE: &str = "error creating new scrape pool";
    wait_for("local scrapes and the scrape-pool error", WAIT, || {
        let local_up = tools.query("up{job=\"prometheus\"} == 1")?.len();
        let logged = tools.log().contains(NEEDLE);
        Ok((local_up == 1 && logged).then_some(()))
    })?;
    let log = tools.log();
    Ok(log
        .lines()
        .find(|l| l.contains(NEEDLE))
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn missing_ca_file_at_start_up_then_reload_then_removed() {
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut tools_slot: Option<PromProc> = None;
    let result = (|| -> Result<()> {
        let pki = Pki::generate(&root.path().join("pki"))?;
        let other = start_workload("other", None, "cluster", &pki, root.path().join("other"))?;
        // The mount path exists in the pod only once the Secret is mounted; here it is absent.
        let mount = root.path().join("addCerts").join("federation");
        let tools = tools_slot.insert(start_tools(
            &root.path().join("tools"),
            other.prom.addr().to_string(),
            &mount,
        )?);

        // 1. Start-up without the files: ready, local job scraped, federation pool never created.
        let line = scrape_pool_error(tools)?;
        let ca = mount.join("ca.crt");
        ensure!(
            line.contains("level=error")
                && line.contains("scrape_pool=federation")
                && line.contains(&format!(
                    "unable to load specified CA cert {}",
                    ca.display()
                ))
                && line.contains("no such file or directory"),
            "unexpected log line: {line}"
        );
        ensure!(
            tools.query("up{job=\"federation\"}")?.is_empty(),
            "federation has an up series"
        );
        ensure!(
            federation_targets(tools)?.is_empty(),
            "federation has targets"
        );

        // 2. The files appear (as the kubelet writes a Secret volume): nothing changes by itself.
        materialize_secret(&pki.client_dir, &mount)?;
        let appeared = last_local_scrape(tools)?;
        // Past Prometheus's 5 s scrape-manager reload throttle, by its own scrape clock.
        wait_for("seven more local scrapes", WAIT, || {
            Ok((last_local_scrape(tools)? > appeared + 7.0).then_some(()))
        })?;
        ensure!(
            tools.query("up{job=\"federation\"}")?.is_empty(),
            "federation started without a reload"
        );

        // 3. A configuration reload creates the pool: federation over mTLS works.
        let (status, body) = tools.reload()?;
        ensure!(status == 200, "reload: HTTP {status}: {body}");
        wait_for("federation up after the reload", WAIT, || {
            Ok((tools.query("up{job=\"federation\"} == 1")?.len() == 1).then_some(()))
        })?;
        wait_for("federated series arrive", WAIT, || {
            let s = tools.query("fleet_widgets{cluster=\"other\"}")?;
            Ok((s.len() == 2).then_some(()))
        })?;

        // 4. The files vanish (Secret deleted, mount gone) and the config is reloaded: the target
        //    stays, but every scrape fails.
        std::fs::remove_dir_all(&mount)?;
        let (status, body) = tools.reload()?;
        ensure!(status == 200, "reload: HTTP {status}: {body}");
        wait_for("federation down with the CA error", WAIT, || {
            let up = tools.query("up{job=\"federation\"}")?;
            let targets = federation_targets(tools)?;
            let down = up.len() == 1
                && up[0].value == "0"
                && targets.len() == 1
                && targets[0].0 == "down"
                && targets[0].1.contains("unable to load specified CA cert");
            Ok(down.then_some(()))
        })?;
        drop(other);
        Ok(())
    })();
    if let Err(e) = result {
        let diag = tools_slot
            .as_ref()
            .map(PromProc::diagnostics)
            .unwrap_or_default();
        panic!("{e:#}\n{diag}");
    }
}

#[test]
fn missing_client_cert_at_start_up() {
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut tools_slot: Option<PromProc> = None;
    let result = (|| -> Result<()> {
        let pki = Pki::generate(&root.path().join("pki"))?;
        // Only the CA is there: a Secret created from ca.crt alone.
        let mount = root.path().join("federation");
        std::fs::create_dir_all(&mount)?;
        std::fs::copy(pki.client_dir.join("ca.crt"), mount.join("ca.crt"))?;
        // Nothing listens there: the pool is never created, so it is never scraped.
        let tools = tools_slot.insert(start_tools(
            &root.path().join("tools"),
            "127.0.0.1:9".to_owned(),
            &mount,
        )?);
        let line = scrape_pool_error(tools)?;
        ensure!(
            line.contains("scrape_pool=federation")
                && line.contains(&mount.join("tls.crt").display().to_string()),
            "unexpected log line: {line}"
        );
        ensure!(
            tools.query("up{job=\"federation\"}")?.is_empty(),
            "federation has an up series"
        );
        ensure!(
            federation_targets(tools)?.is_empty(),
            "federation has targets"
        );
        Ok(())
    })();
    if let Err(e) = result {
        let diag = tools_slot
            .as_ref()
            .map(PromProc::diagnostics)
            .unwrap_or_default();
        panic!("{e:#}\n{diag}");
    }
}
