//! Differential test of the fleet contract (issue 17) on real Prometheus 2.42 servers.
//!
//! Three clusters (`shared-tools`, the local one, `alpha` and `beta`) each have exporters with
//! different series; `beta` has no kubelet and no `special_metric`, `alpha` has a target down.
//! - Reference: one Prometheus per cluster scrapes only that cluster's targets and evaluates the
//!   original rules of `fixtures/fleet_alerting/rules.yml`, each rule labelled `cluster=<c>`
//!   (the contract's "original rule on c's series, labelled c", literally).
//! - Fleet: one Prometheus scrapes every cluster's targets, each labelled `cluster=<c>` (the
//!   union a federation delivers), and evaluates the rules as promfed rewrites them in fleet mode.
//! - Negative control: the same union with the original rules, compared without the cluster
//!   label; every rule must differ there, or the data could not tell a rewrite from none.
//!
//! Compared, rule by rule, once the alerts have settled (bounded wait): the recorded series
//! (labels and values), `ALERTS` (labels and state), `ALERTS_FOR_STATE` (labels; the values are
//! each server's own activation times) and the alerts' rendered annotations.
//!
//! Run: `cargo test --test fleet_alerting -- --nocapture` (needs `prometheus` and `promtool`).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use common::fleet::{Exporter, wait_for};
use common::prom::{PromOptions, Prometheus, Sample, free_port, promtool};
use promfed::config::Values;
use promfed::rewrite::rules::rewrite_rule_file;
use serde_yaml::Value;

const LOCAL: &str = "shared-tools";
const CLUSTERS: [&str; 3] = [LOCAL, "alpha", "beta"];
const RULES: &str = include_str!("fixtures/fleet_alerting/rules.yml");
/// The data key the rules are rewritten under (fleet mode in [`values`]).
const KEY: &str = "fleet_rules.yml";
/// Bound for first scrapes, evaluations and the `for` of every alert.
const SETTLE: Duration = Duration::from_secs(60);

fn values() -> Values {
    let text = format!(
        "localClusterName: {LOCAL}\nadditionalScrapeConfigs:\n- job_name: federation\n  static_configs:\n  \
         - targets: ['alpha.example:9090']\n    labels: {{cluster: alpha}}\n  \
         - targets: ['beta.example:9090']\n    labels: {{cluster: beta}}\nfleet:\n  ruleFiles: {{{KEY}: fleet}}\n"
    );
    Values::from_yaml_str(&text).unwrap_or_else(|e| panic!("test values: {e}"))
}

/// The rule file as promfed rewrites it in fleet mode.
fn fleet_rules() -> String {
    let edit = rewrite_rule_file(KEY, RULES, &values()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        edit.warnings.is_empty(),
        "unexpected warnings: {:?}",
        edit.warnings
    );
    edit.text
        .unwrap_or_else(|| panic!("fleet mode changed nothing"))
}

/// The original rules with `labels.cluster: <c>` on every rule.
fn reference_rules(cluster: &str) -> String {
    let mut doc: Value = serde_yaml::from_str(RULES).unwrap_or_else(|e| panic!("{e}"));
    for g in doc["groups"].as_sequence_mut().into_iter().flatten() {
        for r in g["rules"].as_sequence_mut().into_iter().flatten() {
            let Value::Mapping(r) = r else { continue };
            let labels = r
                .entry("labels".into())
                .or_insert_with(|| Value::Mapping(Default::default()));
            if let Value::Mapping(l) = labels {
                l.insert("cluster".into(), cluster.into());
            }
        }
    }
    serde_yaml::to_string(&doc).unwrap_or_else(|e| panic!("{e}"))
}

/// The series of cluster number `i`.
fn node_metrics(i: u32, cluster: &str) -> String {
    let mut s = String::from("# TYPE node_memory_bytes gauge\n");
    let _ = writeln!(s, "node_memory_bytes{{node=\"n1\"}} {}", 1000 + 100 * i);
    let _ = writeln!(s, "node_memory_bytes{{node=\"n2\"}} {}", 3000 - 7 * i);
    s.push_str("# TYPE kube_pod_info gauge\n");
    let mut nodes = vec!["n1", "n2"];
    if cluster == "beta" {
        nodes.push("n3");
    }
    for n in nodes {
        let _ = writeln!(s, "kube_pod_info{{node=\"{n}\",pod=\"{cluster}-{n}\"}} 1");
    }
    s.push_str("# TYPE widgets gauge\n");
    for (kind, v) in [("a", 10 + i), ("b", 20 - 3 * i), ("c", 5 * i + 1)] {
        let _ = writeln!(s, "widgets{{kind=\"{kind}\"}} {v}");
    }
    if cluster != "beta" {
        let _ = writeln!(
            s,
            "# TYPE special_metric gauge\nspecial_metric{{x=\"1\"}} {}",
            7 + i
        );
    }
    s
}

/// One cluster's targets: `(job, targets)`.
struct ClusterTargets {
    jobs: Vec<(&'static str, Vec<String>)>,
    _exporters: Vec<Exporter>,
}

fn start_targets(i: u32, cluster: &str) -> Result<ClusterTargets> {
    let node = Exporter::start(node_metrics(i, cluster))?;
    let kubelet = Exporter::start("# TYPE kubelet_running gauge\nkubelet_running 1\n".into())?;
    let api_server = Exporter::start("# TYPE api_ready gauge\napi_ready 1\n".into())?;
    let mut api = vec![api_server.addr().to_string()];
    if cluster == "alpha" {
        // Nothing listens there: a target that is down on both sides.
        api.push(format!("127.0.0.1:{}", free_port()?));
    }
    let mut jobs = vec![("node", vec![node.addr().to_string()]), ("api", api)];
    if cluster != "beta" {
        jobs.push(("kubelet", vec![kubelet.addr().to_string()]));
    }
    Ok(ClusterTargets {
        jobs,
        _exporters: vec![node, kubelet, api_server],
    })
}

const GLOBAL: &str = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n";

/// A cluster's own Prometheus: its targets, no cluster label.
fn cluster_config(t: &ClusterTargets) -> String {
    let mut s = format!("{GLOBAL}scrape_configs:\n");
    for (job, targets) in &t.jobs {
        let _ = writeln!(
            s,
            "- job_name: {job}\n  static_configs:\n  - targets: {targets:?}"
        );
    }
    s
}

/// The union: every cluster's targets labelled with its cluster, job names as in the cluster.
fn union_config(all: &[(&str, ClusterTargets)]) -> String {
    let mut s = format!("{GLOBAL}scrape_configs:\n");
    for (cluster, t) in all {
        for (job, targets) in &t.jobs {
            let _ = writeln!(
                s,
                "- job_name: {job}-{cluster}\n  static_configs:\n  - targets: {targets:?}\n    \
                 labels: {{cluster: {cluster}}}\n  relabel_configs:\n  - target_label: job\n    replacement: {job}"
            );
        }
    }
    s
}

fn start(config: String, rules: String) -> Result<Prometheus> {
    Prometheus::start(&PromOptions {
        config_yaml: config,
        files: vec![("rules.yml".to_owned(), rules)],
        ..PromOptions::default()
    })
}

/// Series per rule: recorded series by record name, `ALERTS/<alert>`, `ALERTS_FOR_STATE/<alert>`
/// (values blanked), `annotations/<alert>` (annotations as `annotation_<name>` labels, the state
/// as value). Sorted lists, so duplicates count.
type Snapshot = BTreeMap<String, Vec<Sample>>;

fn snapshot(p: &Prometheus) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    let mut add = |key: String, s: Sample| out.entry(key).or_default().push(s);
    for s in p.query_now(r#"{__name__=~"diff:.+"}"#)? {
        add(s.labels.get("__name__").cloned().unwrap_or_default(), s);
    }
    for metric in ["ALERTS", "ALERTS_FOR_STATE"] {
        for mut s in p.query_now(metric)? {
            let alert = s.labels.get("alertname").cloned().unwrap_or_default();
            if metric == "ALERTS_FOR_STATE" {
                s.value.clear();
            }
            add(format!("{metric}/{alert}"), s);
        }
    }
    let alerts = p.get_json("/api/v1/alerts")?;
    for a in alerts["data"]["alerts"].as_array().into_iter().flatten() {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in a["labels"].as_object().into_iter().flatten() {
            labels.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
        for (k, v) in a["annotations"].as_object().into_iter().flatten() {
            labels.insert(
                format!("annotation_{k}"),
                v.as_str().unwrap_or_default().to_owned(),
            );
        }
        let alert = labels.get("alertname").cloned().unwrap_or_default();
        let state = a["state"].as_str().unwrap_or_default().to_owned();
        add(
            format!("annotations/{alert}"),
            Sample {
                labels,
                value: state,
            },
        );
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

fn union(snaps: &[Snapshot]) -> Snapshot {
    let mut out = Snapshot::new();
    for s in snaps {
        for (k, v) in s {
            out.entry(k.clone()).or_default().extend(v.iter().cloned());
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn without_cluster(s: &Snapshot) -> Snapshot {
    s.iter()
        .map(|(k, v)| {
            let mut v: Vec<Sample> = v
                .iter()
                .map(|x| {
                    let mut x = x.clone();
                    x.labels.remove("cluster");
                    x
                })
                .collect();
            v.sort();
            (k.clone(), v)
        })
        .collect()
}

/// Rules (keys) whose series differ, with both sides.
fn differences(want: &Snapshot, got: &Snapshot) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let show = |v: Option<&Vec<Sample>>| -> String {
        v.map(|v| v.iter().map(|s| format!("\n      {s}")).collect())
            .unwrap_or_else(|| "\n      (none)".to_owned())
    };
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "{k}\n    expected:{}\n    fleet:{}",
                show(want.get(k)),
                show(got.get(k))
            )
        })
        .collect()
}

/// Every alert of the corpus that fires on some cluster, firing in the reference.
const FIRING: [&str; 4] = [
    "KubeletMissing",
    "TargetsDown",
    "SpecialMissingOrZero",
    "Watchdog",
];

fn settled(expected: &Snapshot) -> bool {
    FIRING.iter().all(|a| {
        expected.get(&format!("ALERTS/{a}")).is_some_and(|v| {
            !v.is_empty()
                && v.iter()
                    .all(|s| s.labels.get("alertstate").map(String::as_str) == Some("firing"))
        })
    })
}

#[test]
fn fleet_rules_equal_the_originals_per_cluster_on_real_prometheus() {
    let fleet = fleet_rules();
    let all: Vec<(&str, ClusterTargets)> = CLUSTERS
        .iter()
        .zip(0u32..)
        .map(|(c, i)| {
            (
                *c,
                start_targets(i, c).unwrap_or_else(|e| panic!("{c}: {e:#}")),
            )
        })
        .collect();
    let union_yml = union_config(&all);
    let started = std::thread::scope(|s| {
        let refs: Vec<_> = all
            .iter()
            .map(|(c, t)| s.spawn(move || start(cluster_config(t), reference_rules(c))))
            .collect();
        let fleet_prom = s.spawn(|| start(union_yml.clone(), fleet.clone()));
        let negative = s.spawn(|| start(union_yml.clone(), RULES.to_owned()));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Prometheus>>| {
            h.join()
                .map_err(|_| anyhow!("start thread panicked"))
                .and_then(|r| r)
        };
        let refs: Result<Vec<Prometheus>> = refs.into_iter().map(join).collect();
        (refs, join(fleet_prom), join(negative))
    });
    let (refs, fleet_prom, negative) = match started {
        (Ok(r), Ok(f), Ok(n)) => (r, f, n),
        (r, f, n) => panic!(
            "starting the servers: {:?} / {:?} / {:?}",
            r.err(),
            f.err(),
            n.err()
        ),
    };

    let mut last = (Snapshot::new(), Snapshot::new());
    let outcome = wait_for(
        "the fleet rules to match the per-cluster originals",
        SETTLE,
        || {
            let expected = union(
                &refs
                    .iter()
                    .map(snapshot)
                    .collect::<Result<Vec<_>>>()
                    .context("reference snapshot")?,
            );
            let got = snapshot(&fleet_prom).context("fleet snapshot")?;
            let ok = settled(&expected) && expected == got;
            last = (expected, got);
            Ok(ok.then_some(()))
        },
    );
    let (expected, got) = &last;
    if let Err(e) = outcome {
        panic!(
            "{e:#}\n\n{}\n\nfleet rules:\n{fleet}\nfleet log:\n{}",
            differences(expected, got).join("\n"),
            fleet_prom.log_tail(15)
        );
    }
    let rules: usize = RULES.matches("- record:").count() + RULES.matches("- alert:").count();
    let recorded = expected.keys().filter(|k| k.starts_with("diff:")).count();
    assert_eq!(
        recorded + FIRING.len(),
        rules,
        "every rule must record or fire on some cluster, or it proves nothing: {:?}",
        expected.keys().collect::<Vec<_>>()
    );

    // Negative control: the original rules on the union, the cluster label ignored.
    let neg = without_cluster(&snapshot(&negative).unwrap_or_else(|e| panic!("{e:#}")));
    let want = without_cluster(expected);
    let undetected: Vec<&String> = want
        .keys()
        .filter(|k| want.get(*k) == neg.get(*k))
        .collect();
    assert!(
        undetected.is_empty(),
        "negative control: the original rules on the union give the expected series for {undetected:?}"
    );
    eprintln!(
        "fleet_alerting: {} rule outputs equal on {} clusters",
        expected.len(),
        CLUSTERS.len()
    );
}

#[test]
fn fleet_rules_pass_promtool_and_a_second_run_changes_nothing() {
    let fleet = fleet_rules();
    let again = rewrite_rule_file(KEY, &fleet, &values()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.text, None, "second run must change nothing");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join(KEY);
    std::fs::write(&path, &fleet).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = promtool().check_rules(&path) {
        panic!("promtool rejects the fleet rules: {e:#}\n{fleet}");
    }
}

#[test]
fn the_health_group_passes_promtool_and_is_idempotent() {
    let v = values();
    let text = "groups:\n- name: user\n  rules:\n  - alert: A\n    expr: up == 0\n";
    let once = rewrite_rule_file("alerting_rules.yml", text, &v)
        .unwrap_or_else(|e| panic!("{e}"))
        .text
        .unwrap_or_else(|| panic!("no health group added"));
    assert!(once.contains("promfed-federation-health"), "{once}");
    let again =
        rewrite_rule_file("alerting_rules.yml", &once, &v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.text, None, "second run must change nothing:\n{once}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("alerting_rules.yml");
    std::fs::write(&path, &once).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = promtool().check_rules(&path) {
        panic!("promtool rejects the health group: {e:#}\n{once}");
    }
}

/// The differential corpus of the local contract (122 rules of every shape), in fleet mode:
/// every rule the local rewrite accepts is accepted, reaches a fixed point in one run, and
/// `promtool` accepts the whole file.
#[test]
fn the_whole_differential_corpus_rewrites_in_fleet_mode() {
    let text = include_str!("fixtures/differential/rules.yml");
    let v = values();
    let key = KEY;
    let once = rewrite_rule_file(key, text, &v).unwrap_or_else(|e| panic!("{e}"));
    let out = once
        .text
        .unwrap_or_else(|| panic!("fleet mode changed nothing in the corpus"));
    let again = rewrite_rule_file(key, &out, &v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.text, None, "second run must change nothing");
    // The corpus's only warning is its rule that writes the cluster label.
    assert!(
        once.warnings.len() == 1 && once.warnings[0].contains("diff:label_replace_writes_cluster"),
        "{:?}",
        once.warnings
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join(key);
    std::fs::write(&path, &out).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = promtool().check_rules(&path) {
        panic!("promtool rejects the fleet-mode corpus: {e:#}");
    }
}

#[test]
fn a_fleet_rule_that_sets_the_cluster_label_is_named() {
    let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    labels:\n      cluster: x\n";
    let out = rewrite_rule_file(KEY, text, &values()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.warnings.len() == 1
            && out.warnings[0].contains("group \"g\", rule \"A\"")
            && out.warnings[0].contains("cannot hold"),
        "{:?}",
        out.warnings
    );
}
