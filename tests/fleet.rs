//! End to end with real Prometheus (issue 4): a federated fleet on 127.0.0.1, mTLS as in the seed.
//!
//! Workload clusters `other` and `random` (and `labelled`, whose Prometheus sets the cluster label
//! itself as an external label) run real `prometheus` servers that scrape themselves and a test
//! exporter, evaluate the same recording rules (no cluster labels), and serve `/federate` over
//! HTTPS requiring a client certificate. The tools cluster's ConfigMap is rewritten by promfed
//! (through a running `promfed serve` for `cluster`, the library for `originCluster`) and run
//! by a real Prometheus. Everything below is asserted through Prometheus's HTTP API with exact
//! values. One fleet per label name; the two run in parallel.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use common::fleet::{
    EXTERNAL_CLUSTER, FLEET_SERIES_PER_CLUSTER, Fleet, LOCAL, Via, exporter_text, request,
    wait_for, widgets,
};
use common::prom::{Sample, promtool};

/// Every cluster value the tools cluster should hold series for.
const CLUSTERS: &[&str] = &[LOCAL, "other", "random", EXTERNAL_CLUSTER];
/// Targets on the tools cluster: itself, its exporter, three federation targets.
const TOOLS_TARGETS: usize = 5;
/// Bound for the fleet to reach its steady state (first scrapes, first rule evaluations).
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn fleet_with_cluster_label_through_promfed_serve() {
    run_fleet("cluster", Via::Server);
}

#[test]
fn fleet_with_origin_cluster_label() {
    run_fleet("originCluster", Via::Library);
}

fn run_fleet(label: &str, via: Via) {
    let fleet = match Fleet::start(label, via) {
        Ok(f) => f,
        Err(e) => panic!("starting the fleet ({label}, {via:?}): {e:#}"),
    };
    if let Err(e) = check_fleet(&fleet) {
        panic!(
            "fleet with clusterLabelName {label} ({via:?}): {e:#}\n{}",
            fleet.diagnostics()
        );
    }
}

fn check_fleet(f: &Fleet) -> Result<()> {
    check_generated_files(f)?;
    settle(f)?;
    every_series_has_a_cluster(f)?;
    local_and_federated_series_are_labelled(f)?;
    recording_rules(f)?;
    nothing_collides(f)?;
    federation_requires_a_client_certificate(f)?;
    workloads_record_without_cluster_labels(f)?;
    honor_labels_lets_the_source_win(f)?;
    shipped_dashboards_show_one_cluster_each(f).context("shipped dashboards")?;
    vanished_series_linger_on_the_tools_cluster(f).context("staleness over /federate")
}

/// Grafana's variables as Grafana would send them for one selected cluster: `$cluster` is the
/// cluster, the interval built-ins get plausible durations, every other variable is "All" (`.*`).
fn grafana_substitute(expr: &str, cluster: &str) -> String {
    let value = |name: &str| -> String {
        match name.split(':').next().unwrap_or_default() {
            "cluster" => cluster.to_owned(),
            "__rate_interval" => "1m".to_owned(),
            "__interval" => "15s".to_owned(),
            "__range" => "5m".to_owned(),
            "__range_s" => "300".to_owned(),
            "__interval_ms" => "15000".to_owned(),
            _ => ".*".to_owned(),
        }
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(body) = tail.strip_prefix("${") {
            match body.find('}') {
                Some(end) => (&body[..end], end + 3),
                None => ("", 0),
            }
        } else if let Some(body) = tail.strip_prefix("[[") {
            match body.find("]]") {
                Some(end) => (&body[..end], end + 4),
                None => ("", 0),
            }
        } else if let Some(body) = tail.strip_prefix('$') {
            let end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            (&body[..end], end + 1)
        } else {
            ("", 0)
        };
        if name.is_empty() {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        } else {
            out.push_str(&value(name));
            rest = &tail[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Issue 6 in the fleet: for each cluster value, every query of every shipped dashboard runs
/// without error on the tools cluster and returns series of that cluster only; enough of them
/// return data for each cluster to make that mean something.
fn shipped_dashboards_show_one_cluster_each(f: &Fleet) -> Result<()> {
    // The shipped dashboards are converted for the label `cluster`.
    if f.label != "cluster" {
        return Ok(());
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/promfed/dashboards");
    let mut with_data: BTreeMap<&str, usize> = BTreeMap::new();
    let mut queries_run = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let queries = promfed::dashboards::list_queries(&dashboard)?;
        for q in queries {
            // The `cluster` variable itself lists every cluster; that is its job.
            if q.location == "cluster" {
                continue;
            }
            for cluster in CLUSTERS {
                let expr = grafana_substitute(&q.expr, cluster);
                let samples = f
                    .tools
                    .query(&expr)
                    .with_context(|| format!("{} / {}: {expr}", path.display(), q.location))?;
                queries_run += 1;
                let foreign: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| {
                        !s.labels.is_empty()
                            && s.labels.get("cluster").map(String::as_str) != Some(cluster)
                    })
                    .collect();
                ensure!(
                    foreign.is_empty(),
                    "{} / {} for cluster {cluster}: series of another cluster: {:?} ({expr})",
                    path.display(),
                    q.location,
                    foreign.first()
                );
                if !samples.is_empty() {
                    *with_data.entry(cluster).or_default() += 1;
                }
            }
        }
    }
    for cluster in CLUSTERS {
        let n = with_data.get(cluster).copied().unwrap_or_default();
        ensure!(
            n >= 15,
            "only {n} dashboard queries returned data for cluster {cluster} ({queries_run} run): {with_data:?}"
        );
    }
    eprintln!("shipped dashboards: {queries_run} queries run, with data per cluster {with_data:?}");
    Ok(())
}

/// `promtool check config` (which also loads the rule files) and `check rules` accept what
/// promfed generated.
fn check_generated_files(f: &Fleet) -> Result<()> {
    let promtool = promtool();
    let config = f.tools.dir.join("prometheus.yml");
    promtool.check_config(&config)?;
    let mut rule_files = 0;
    for path in f.generated_files() {
        if path.file_name().is_some_and(|n| n != "prometheus.yml") {
            promtool.check_rules(&path)?;
            rule_files += 1;
        }
    }
    ensure!(rule_files == 1, "expected one rule file, got {rule_files}");
    let text = std::fs::read_to_string(&config)?;
    ensure!(
        text.contains("/federate") && text.contains("honor_labels: true"),
        "the federation job is missing from the generated config"
    );
    Ok(())
}

/// Series per cluster value under the `fleet` prefix, as the tools cluster sees them.
fn fleet_counts(f: &Fleet) -> Result<BTreeMap<String, String>> {
    let l = &f.label;
    Ok(f.tools
        .query(&format!("count by ({l}) ({{__name__=~\"fleet.*\"}})"))?
        .into_iter()
        .map(|s| (s.labels.get(l).cloned().unwrap_or_default(), s.value))
        .collect())
}

/// Waits (bounded) until every target is up and every cluster's series and rule results are
/// there. The counts themselves are asserted again in [`nothing_collides`].
fn settle(f: &Fleet) -> Result<()> {
    let want: BTreeMap<String, String> = CLUSTERS
        .iter()
        .map(|c| ((*c).to_owned(), FLEET_SERIES_PER_CLUSTER.to_string()))
        .collect();
    wait_for("the fleet settles", SETTLE, || {
        let l = &f.label;
        let local = f.tools.query(&format!("up{{{l}=\"{LOCAL}\"}} == 1"))?.len();
        let federation = f.tools.query("up{job=\"federation\"} == 1")?.len();
        let up = local + federation;
        let counts = fleet_counts(f)?;
        if up == TOOLS_TARGETS && counts == want {
            Ok(Some(()))
        } else {
            bail!(
                "{up} of {TOOLS_TARGETS} targets up; fleet series per cluster {counts:?}, want {want:?}"
            )
        }
    })
}

/// No series on the tools cluster lacks the cluster label.
fn every_series_has_a_cluster(f: &Fleet) -> Result<()> {
    let l = &f.label;
    let unlabelled = f.tools.query(&format!("{{__name__=~\".+\", {l}=\"\"}}"))?;
    ensure!(
        unlabelled.is_empty(),
        "{} series without {l}, e.g. {}",
        unlabelled.len(),
        unlabelled
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    Ok(())
}

/// Which cluster values the series scraped from these instances carry. The tools cluster's own
/// series about its federation targets (`up`, `scrape_*` of job `federation`) are left out.
fn clusters_of(f: &Fleet, instances: &[String]) -> Result<Vec<String>> {
    let l = &f.label;
    let re = instances
        .iter()
        .map(|i| i.replace('.', "\\\\."))
        .collect::<Vec<_>>()
        .join("|");
    Ok(f.tools
        .query(&format!(
            "count by ({l}) ({{instance=~\"{re}\", job!=\"federation\"}})"
        ))?
        .into_iter()
        .map(|s| s.labels.get(l).cloned().unwrap_or_default())
        .collect())
}

/// Local scrapes carry `<label>="shared-tools"`; federated series carry their cluster's name.
fn local_and_federated_series_are_labelled(f: &Fleet) -> Result<()> {
    let local = [
        f.tools.addr().to_string(),
        f.tools_exporter.addr().to_string(),
    ];
    let got = clusters_of(f, &local)?;
    ensure!(
        got == [LOCAL],
        "local series carry {got:?}, want only {LOCAL}"
    );
    for cluster in ["other", "random"] {
        let w = f.workload(cluster)?;
        let instances = [w.prom.addr().to_string(), w.exporter.addr().to_string()];
        let got = clusters_of(f, &instances)?;
        ensure!(
            got == [cluster],
            "series scraped on {cluster} carry {got:?} on the tools cluster, want only {cluster}"
        );
    }
    Ok(())
}

/// `(cluster, kind, owner) -> value` of a query, every other label dropped.
type ByCluster = BTreeMap<(String, String, String), String>;

/// A query's [`ByCluster`] view.
fn by_cluster(f: &Fleet, samples: &[Sample]) -> ByCluster {
    let get = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    samples
        .iter()
        .map(|s| {
            (
                (get(s, &f.label), get(s, "kind"), get(s, "owner")),
                s.value.clone(),
            )
        })
        .collect()
}

fn expect(entries: Vec<(&str, &str, &str, String)>) -> ByCluster {
    entries
        .into_iter()
        .map(|(c, k, o, v)| ((c.to_owned(), k.to_owned(), o.to_owned()), v))
        .collect()
}

/// Each recording rule, on the tools cluster: the local result is computed from local series
/// only and carries `<label>="shared-tools"` (and nothing else); the workloads' results arrive
/// with their cluster's name. Exact values.
fn recording_rules(f: &Fleet) -> Result<()> {
    let l = &f.label;
    let per_cluster = |value: &dyn Fn(u32, u32) -> String| {
        CLUSTERS
            .iter()
            .map(|c| {
                let (a, b) = widgets(c);
                (*c, "", "", value(a, b))
            })
            .collect::<Vec<_>>()
    };
    let cases: Vec<(&str, ByCluster)> = vec![
        (
            "fleet:widgets:sum",
            expect(per_cluster(&|a, b| (a + b).to_string())),
        ),
        (
            "fleet:widgets:sum_by_kind",
            expect(
                CLUSTERS
                    .iter()
                    .flat_map(|c| {
                        let (a, b) = widgets(c);
                        [(*c, "a", "", a.to_string()), (*c, "b", "", b.to_string())]
                    })
                    .collect(),
            ),
        ),
        (
            "fleet:widgets:mean",
            expect(per_cluster(&|a, b| (f64::from(a + b) / 2.0).to_string())),
        ),
        (
            "fleet:widgets:sum_or_zero",
            expect(per_cluster(&|a, b| (a + b).to_string())),
        ),
        (
            "fleet:gadgets:sum_or_zero",
            expect(per_cluster(&|_, _| "0".to_owned())),
        ),
        (
            "fleet:widgets:sum_by_owner",
            expect(
                CLUSTERS
                    .iter()
                    .flat_map(|c| {
                        let (a, b) = widgets(c);
                        [
                            (*c, "a", "alice", a.to_string()),
                            (*c, "b", "bob", b.to_string()),
                        ]
                    })
                    .collect(),
            ),
        ),
    ];
    for (record, want) in cases {
        let samples = f.tools.query(record)?;
        let got = by_cluster(f, &samples);
        ensure!(
            samples.len() == want.len() && got == want,
            "{record}: got {got:?} ({} series), want {want:?}",
            samples.len()
        );
        // The local results carry exactly the rule's own labels plus the cluster label.
        for s in samples
            .iter()
            .filter(|s| s.labels.get(l).map(String::as_str) == Some(LOCAL))
        {
            let extra: Vec<_> = s
                .labels
                .keys()
                .filter(|k| !["__name__", l.as_str(), "kind", "owner"].contains(&k.as_str()))
                .collect();
            ensure!(
                extra.is_empty(),
                "{record}: local result {s} has extra labels {extra:?}"
            );
        }
    }
    Ok(())
}

/// Nothing collides: every cluster contributes exactly its own series, none merged.
fn nothing_collides(f: &Fleet) -> Result<()> {
    let counts = fleet_counts(f)?;
    let want: BTreeMap<String, String> = CLUSTERS
        .iter()
        .map(|c| ((*c).to_owned(), FLEET_SERIES_PER_CLUSTER.to_string()))
        .collect();
    ensure!(
        counts == want,
        "fleet series per cluster {counts:?}, want {want:?}"
    );
    let widgets = f.tools.query("fleet_widgets")?;
    ensure!(
        widgets.len() == 2 * CLUSTERS.len(),
        "{} fleet_widgets series, want {}",
        widgets.len(),
        2 * CLUSTERS.len()
    );
    // The `up` of the federation job: one per workload, named by its target label.
    let up = f.tools.query("up{job=\"federation\"}")?;
    let mut names: Vec<_> = up
        .iter()
        .map(|s| s.labels.get(&f.label).cloned().unwrap_or_default())
        .collect();
    names.sort();
    ensure!(
        names == ["labelled", "other", "random"],
        "federation targets {names:?}"
    );
    Ok(())
}

/// The workloads' `/federate` refuses a TLS client without a certificate.
fn federation_requires_a_client_certificate(f: &Fleet) -> Result<()> {
    let w = f.workload("other")?;
    let transport = common::fleet::Transport::Https {
        config: f.pki.anonymous.clone(),
        server_name: common::fleet::SERVER_NAME.to_owned(),
    };
    let path = "/federate?match[]=%7B__name__%3D~%22fleet.*%22%7D";
    if let Ok((status, _)) = request(w.prom.addr(), &transport, "GET", path, None) {
        bail!("/federate without a client certificate answered HTTP {status}");
    }
    let (status, body) = w.prom.get(path)?;
    ensure!(
        status == 200,
        "/federate with the client certificate: HTTP {status}"
    );
    ensure!(
        body.lines().filter(|l| l.starts_with("fleet")).count() == FLEET_SERIES_PER_CLUSTER,
        "/federate of other:\n{body}"
    );
    Ok(())
}

/// The workloads evaluate the same rules without any cluster label (as the seed says).
fn workloads_record_without_cluster_labels(f: &Fleet) -> Result<()> {
    for cluster in ["other", "random"] {
        let (a, b) = widgets(cluster);
        let got = f.workload(cluster)?.prom.query("fleet:widgets:sum")?;
        let want = vec![Sample {
            labels: BTreeMap::from([("__name__".to_owned(), "fleet:widgets:sum".to_owned())]),
            value: (a + b).to_string(),
        }];
        ensure!(
            got == want,
            "{cluster}: fleet:widgets:sum is {got:?}, want {want:?}"
        );
    }
    Ok(())
}

/// What federation cannot do: with `honor_labels: true`, a cluster label already present in the
/// federated data (here the `labelled` workload's `external_labels`) wins over the target label.
/// Only the federation job's own `up` carries the configured name.
fn honor_labels_lets_the_source_win(f: &Fleet) -> Result<()> {
    let w = f.workload("labelled")?;
    let instances = [w.prom.addr().to_string(), w.exporter.addr().to_string()];
    let got = clusters_of(f, &instances)?;
    ensure!(
        got == [EXTERNAL_CLUSTER],
        "labelled's series carry {got:?}, want {EXTERNAL_CLUSTER} (its external label)"
    );
    let up = f.tools.query(&format!(
        "up{{job=\"federation\", instance=\"{}\"}}",
        w.prom.addr()
    ))?;
    let names: Vec<_> = up
        .iter()
        .map(|s| s.labels.get(&f.label).cloned().unwrap_or_default())
        .collect();
    ensure!(
        names == ["labelled"],
        "up of the labelled target carries {names:?}"
    );
    Ok(())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `/federate` carries no staleness: a series that vanishes on a workload stays visible on the
/// tools cluster (for the 5 min lookback), while a vanished local series goes at once.
/// Runs last: it changes the exporters.
fn vanished_series_linger_on_the_tools_cluster(f: &Fleet) -> Result<()> {
    let l = &f.label;
    let other = f.workload("other")?;
    let query_other = format!("ephemeral_gauge{{{l}=\"other\"}}");
    let query_local = format!("ephemeral_gauge{{{l}=\"{LOCAL}\"}}");
    ensure!(
        f.tools.query(&query_other)?.len() == 1,
        "no ephemeral_gauge from other"
    );
    ensure!(
        f.tools.query(&query_local)?.len() == 1,
        "no local ephemeral_gauge"
    );

    let (a, b) = widgets("other");
    other.exporter.set_body(exporter_text(a, b, false));
    let (a, b) = widgets(LOCAL);
    f.tools_exporter.set_body(exporter_text(a, b, false));

    // On `other` itself the series goes stale at its next scrape.
    wait_for(
        "ephemeral_gauge goes stale on other",
        Duration::from_secs(20),
        || {
            Ok(other
                .prom
                .query("ephemeral_gauge")?
                .is_empty()
                .then_some(()))
        },
    )?;
    let gone_at = now_secs();
    // Locally scraped: stale on the tools cluster right away.
    wait_for(
        "local ephemeral_gauge goes stale",
        Duration::from_secs(20),
        || Ok(f.tools.query(&query_local)?.is_empty().then_some(())),
    )?;
    // A federation scrape of `other` that started after the series was gone there.
    let up = format!("timestamp(up{{job=\"federation\", {l}=\"other\"}})");
    wait_for(
        "a federation scrape after the removal",
        Duration::from_secs(20),
        || {
            let t = f.tools.query(&up)?;
            let ts: f64 = t
                .first()
                .map(|s| s.value.parse())
                .transpose()?
                .unwrap_or(0.0);
            Ok((ts > gone_at + 1.0).then_some(()))
        },
    )?;
    let still = f.tools.query(&query_other)?;
    ensure!(
        still.len() == 1 && still[0].value == "1",
        "the vanished federated series should linger on the tools cluster, got {still:?}"
    );
    Ok(())
}
