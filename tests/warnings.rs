//! Warnings that reach the user through both doors: the webhook's AdmissionReview `warnings`
//! and `promfed mutate`'s stderr (the same engine decides both).

use promfed::cli::{OutputFormat, mutate_stream};
use promfed::config::Values;
use serde_json::{Value, json};

const ALERTS: &str =
    "groups:\n- name: node\n  rules:\n  - alert: NodeDown\n    expr: up{job=\"node\"} == 0\n";
const PROM: &str = "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['n:9100']\n    labels: {cluster: mgmt}\n";

fn configmap() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "prometheus-server", "namespace": "tanzu-system-monitoring",
                     "labels": {"app": "prometheus", "component": "server"}},
        "data": {"prometheus.yml": PROM, "alerting_rules.yml": ALERTS},
    })
}

fn review_warnings(values: &Values) -> Vec<String> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b7f5d9a-3c21-4c3e-8a41-6f1e9b522d6c",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "prometheus-server",
            "namespace": "tanzu-system-monitoring",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": configmap(),
            "dryRun": false,
        },
    });
    let out = promfed::admission::review(review.to_string().as_bytes(), values).expect("review");
    let resp: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    resp["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn cli_warnings(values: &Values) -> Vec<String> {
    let yaml = serde_yaml::to_string(&configmap()).unwrap();
    mutate_stream(&yaml, values, OutputFormat::Yaml)
        .unwrap()
        .warnings
}

/// A tools cluster: one federation job, so rules that are not rewritten mix clusters.
const TOOLS: &str = "additionalScrapeConfigs:\n- job_name: fed-a\n  static_configs:\n  - targets: ['a:9090']\n    labels: {cluster: a}\n";

#[test]
fn untouched_alerts_and_a_job_setting_the_cluster_label() {
    let untouched = Values::from_yaml_str(&format!(
        "{TOOLS}fleet:\n  ruleFiles: {{alerting_rules.yml: untouched}}\n"
    ))
    .unwrap();
    for (door, warnings) in [
        ("webhook", review_warnings(&untouched)),
        ("cli", cli_warnings(&untouched)),
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(
                "data key \"alerting_rules.yml\" holds alerting rules that promfed leaves untouched"
            )),
            "{door}: {warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains(
                "scrape config \"node\" static_configs[0].labels sets the label \"cluster\" (to \"mgmt\")"
            )),
            "{door}: {warnings:?}"
        );
    }
    // By default alerting_rules.yml is rewritten in fleet mode, and with it in ruleFiles it is
    // pinned to the local cluster: nothing to say about its alerts either way.
    let fleet = Values::from_yaml_str(TOOLS).unwrap();
    let listed = Values::from_yaml_str(&format!(
        "{TOOLS}ruleFiles: [recording_rules.yml, alerting_rules.yml]\n"
    ))
    .unwrap();
    for values in [fleet, listed] {
        assert!(
            !review_warnings(&values)
                .iter()
                .any(|w| w.contains("leaves untouched")),
        );
    }
}
