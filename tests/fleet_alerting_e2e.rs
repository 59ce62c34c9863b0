//! End to end fleet alerting (issue 17): real Prometheus servers federated over mTLS, the tools
//! Prometheus configured by promfed and sending to a real Alertmanager, all on 127.0.0.1.
//!
//! Workload clusters `other` and `random` (tests/common/fleet.rs) serve `/federate` over HTTPS
//! with client certificates. The tools cluster's ConfigMap gets an `alerting_rules.yml` written for
//! one cluster (no cluster label) and an `alerting` section; promfed rewrites it with the default
//! modes (alerting rules in fleet mode, the federation-health group appended). Alertmanager runs
//! the chart README's `inhibit_rules` example verbatim.
//! 1. Stop `other`'s exporter: exactly one `ExporterDown` arrives, for `cluster="other"`, with
//!    the cluster named in its annotation.
//! 2. Stop `random`'s Prometheus: `PromfedFederationDown{cluster="random"}` arrives, and
//!    `random`'s own `ExporterAbsent` arrives inhibited by it, while `other`'s alert stays active.
//!
//! Timing is short (1 s scrapes and evaluations, `for: 2s`), every wait bounded.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use common::alertmanager::Alertmanager;
use common::fleet::{
    Exporter, LOCAL, Pki, PromProc, PromSpec, Transport, Workload, exporter_text,
    mutate_with_library, start_workload, tools_configmap, wait_for, widgets,
};
use serde_json::Value;

/// Alerting rules as written for a single cluster.
const ALERTING_RULES: &str = r#"groups:
- name: workload
  rules:
  - alert: ExporterDown
    expr: up{job="exporter"} == 0
    for: 2s
    labels:
      severity: warning
    annotations:
      summary: 'exporter {{ $labels.instance }} of cluster {{ $labels.cluster }} is down'
  - alert: ExporterAbsent
    expr: absent(up{job="exporter"})
    for: 2s
    labels:
      severity: critical
  - alert: WidgetsPresent
    expr: sum(fleet_widgets) > 0
    for: 2s
    labels:
      severity: info
"#;

/// Bound for each phase (scrapes, federation, `for`, delivery to Alertmanager).
const PHASE: Duration = Duration::from_secs(60);

/// The `inhibit_rules` example of the chart README, between its markers.
fn chart_inhibit_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/promfed/README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let start = "<!-- inhibit-rules-example:start -->";
    let block = text
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- inhibit-rules-example:end -->"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("{path:?} lost the inhibit-rules example markers"));
    block
        .lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn alertmanager_config() -> String {
    format!(
        "route:\n  receiver: blackhole\n  group_by: [alertname, cluster]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: blackhole\n{}\n",
        chart_inhibit_rules()
    )
}

fn values_yaml(pki: &Pki, other: SocketAddr, random: SocketAddr) -> String {
    let certs = pki.client_dir.display();
    format!(
        r#"localClusterName: {LOCAL}
clusterLabelName: cluster
additionalScrapeConfigs:
- job_name: federation
  scrape_interval: 1s
  scrape_timeout: 1s
  static_configs:
  - targets: ['{other}']
    labels: {{cluster: other}}
  - targets: ['{random}']
    labels: {{cluster: random}}
  scheme: https
  metrics_path: /federate
  params:
    'match[]':
    - '{{__name__!=""}}'
  honor_labels: true
  tls_config:
    ca_file: {certs}/ca.crt
    cert_file: {certs}/tls.crt
    key_file: {certs}/tls.key
    server_name: prom-federation
fleet:
  health:
    for: 2s
    staleAfter: 30s
"#
    )
}

/// The tools ConfigMap with alerting rules and an Alertmanager, rewritten by promfed.
fn tools_files(
    prom: SocketAddr,
    exporter: SocketAddr,
    am: SocketAddr,
    values: &promfed::config::Values,
) -> Result<Vec<(String, String)>> {
    let mut cm = tools_configmap(prom, exporter);
    let yml = cm["data"]["prometheus.yml"]
        .as_str()
        .ok_or_else(|| anyhow!("no prometheus.yml"))?;
    let anchor = "rule_files:\n- recording_rules.yml\n";
    ensure!(yml.contains(anchor), "tools prometheus.yml changed shape");
    let yml = yml.replace(
        anchor,
        &format!(
            "{anchor}- alerting_rules.yml\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['{am}']\n"
        ),
    );
    cm["data"]["prometheus.yml"] = Value::String(yml);
    cm["data"]["alerting_rules.yml"] = Value::String(ALERTING_RULES.to_owned());
    let (mutated, warnings) = mutate_with_library(&cm, values)?;
    ensure!(warnings.is_empty(), "promfed warned: {warnings:?}");
    let data = mutated["data"]
        .as_object()
        .ok_or_else(|| anyhow!("mutated ConfigMap has no data"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect())
}

/// Alerts in Alertmanager named `name`, as (labels, state, inhibitedBy count, annotations).
struct AmAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: String,
    inhibited_by: usize,
}

fn am_alerts(am: &Alertmanager, name: &str) -> Result<Vec<AmAlert>> {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    Ok(am
        .alerts()?
        .iter()
        .map(|a| AmAlert {
            labels: strings(&a["labels"]),
            annotations: strings(&a["annotations"]),
            state: a["status"]["state"].as_str().unwrap_or_default().to_owned(),
            inhibited_by: a["status"]["inhibitedBy"].as_array().map_or(0, Vec::len),
        })
        .filter(|a| a.labels.get("alertname").map(String::as_str) == Some(name))
        .collect())
}

fn clusters(alerts: &[AmAlert]) -> Vec<String> {
    let mut c: Vec<String> = alerts
        .iter()
        .map(|a| a.labels.get("cluster").cloned().unwrap_or_default())
        .collect();
    c.sort();
    c
}

#[test]
fn fleet_alerts_reach_alertmanager_per_cluster_and_federation_down_inhibits() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::generate(&root.path().join("pki")).unwrap_or_else(|e| panic!("{e:#}"));
    let start = |name: &str| {
        start_workload(name, None, "cluster", &pki, root.path().join(name))
            .unwrap_or_else(|e| panic!("workload {name}: {e:#}"))
    };
    let Workload {
        exporter: other_exporter,
        prom: other_prom,
        ..
    } = start("other");
    let Workload {
        exporter: _random_exporter,
        prom: random_prom,
        ..
    } = start("random");
    let am = Alertmanager::start(&alertmanager_config()).unwrap_or_else(|e| panic!("{e:#}"));
    let values_text = values_yaml(&pki, other_prom.addr(), random_prom.addr());
    let values =
        promfed::config::Values::from_yaml_str(&values_text).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = widgets(LOCAL);
    let tools_exporter =
        Exporter::start(exporter_text(a, b, false)).unwrap_or_else(|e| panic!("{e}"));
    let files = |addr: SocketAddr| tools_files(addr, tools_exporter.addr(), am.addr(), &values);
    let tools = PromProc::start(&PromSpec {
        name: LOCAL,
        dir: root.path().join("tools"),
        files: &files,
        web_config: None,
        extra_args: vec![],
        transport: Transport::Http,
    })
    .unwrap_or_else(|e| panic!("tools: {e:#}"));
    let diagnostics = |am: &Alertmanager| {
        format!(
            "{}\n=== alertmanager alerts: {:?}\n=== alertmanager log:\n{}\n=== alerting_rules.yml:\n{}",
            tools.diagnostics(),
            am.alerts(),
            am.log_tail(15),
            std::fs::read_to_string(tools.dir.join("alerting_rules.yml")).unwrap_or_default()
        )
    };

    // Baseline: both federations up, every exporter scraped, no workload alert.
    let baseline = wait_for(
        "both federations up, as recorded by the health group",
        PHASE,
        || {
            let up = tools.query("promfed:federation_up == 1")?;
            let exporters = tools.query(r#"up{job="exporter"} == 1"#)?;
            let widgets = am_alerts(&am, "WidgetsPresent")?;
            Ok((up.len() == 2 && exporters.len() == 3 && widgets.len() == 3).then_some(()))
        },
    );
    if let Err(e) = baseline {
        panic!("{e:#}\n{}", diagnostics(&am));
    }

    // 1. One workload cluster's target stops: exactly that cluster's alert.
    drop(other_exporter);
    let one = wait_for(
        "ExporterDown for cluster other in Alertmanager",
        PHASE,
        || {
            let down = am_alerts(&am, "ExporterDown")?;
            Ok((!down.is_empty()).then_some(down))
        },
    );
    let down = one.unwrap_or_else(|e| panic!("{e:#}\n{}", diagnostics(&am)));
    assert_eq!(clusters(&down), ["other"], "{}", diagnostics(&am));
    assert_eq!(down[0].state, "active");
    let summary = down[0]
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_default();
    assert!(
        summary.ends_with("of cluster other is down"),
        "the annotation names the cluster: {summary:?}"
    );
    let absent = am_alerts(&am, "ExporterAbsent").unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        absent.is_empty(),
        "no exporter is absent yet: {:?}",
        clusters(&absent)
    );

    // 2. A workload Prometheus stops: the federation alert, and that cluster's own alerts
    //    inhibited (its federated samples carry timestamps, so they are not marked stale and
    //    its alerts go on firing on the last values for the 5m lookback).
    drop(random_prom);
    let inhibited = wait_for(
        "PromfedFederationDown for random, and random's WidgetsPresent inhibited",
        PHASE,
        || {
            let fed = am_alerts(&am, "PromfedFederationDown")?;
            let widgets = am_alerts(&am, "WidgetsPresent")?;
            let random_inhibited = widgets.iter().any(|a| {
                a.labels.get("cluster").map(String::as_str) == Some("random") && a.inhibited_by > 0
            });
            Ok((!fed.is_empty() && random_inhibited).then_some((fed, widgets)))
        },
    );
    let (fed, widgets) = inhibited.unwrap_or_else(|e| panic!("{e:#}\n{}", diagnostics(&am)));
    assert_eq!(clusters(&fed), ["random"], "{}", diagnostics(&am));
    assert_eq!(
        fed[0].state, "active",
        "the federation alert itself is not inhibited"
    );
    assert_eq!(clusters(&widgets), ["other", "random", LOCAL]);
    for w in &widgets {
        let random = w.labels.get("cluster").map(String::as_str) == Some("random");
        let want = if random { "suppressed" } else { "active" };
        assert_eq!(w.state, want, "WidgetsPresent {:?}", w.labels);
    }
    let down = am_alerts(&am, "ExporterDown").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(clusters(&down), ["other"]);
    assert!(
        down.iter()
            .all(|a| a.state == "active" && a.inhibited_by == 0),
        "other's federation is up: its alert must stay active"
    );
    drop(other_prom);
}

/// The README example is valid Alertmanager configuration on its own (the e2e test above also
/// proves it inhibits).
#[test]
fn chart_inhibit_rules_example_is_a_valid_alertmanager_config() -> Result<()> {
    let am = Alertmanager::start(&alertmanager_config()).context("alertmanager rejects it")?;
    ensure!(am.alerts()?.is_empty());
    Ok(())
}
