//! The ~60 KB TKG review the benchmarks share (the reference size): the example's
//! `prometheus.yml` and ~170 recording rules of real-world shape (the expressions of
//! tests/fixtures/differential), as an UPDATE AdmissionReview carrying the ConfigMap twice
//! (object and oldObject), the way kube-apiserver sends it.

#![allow(dead_code)] // each bench uses a part

use promfed::cli::EXAMPLE_CONFIGMAP;
use serde_json::json;

const DIFFERENTIAL: &str = include_str!("../../tests/fixtures/differential/rules.yml");

/// Real-world recording-rule expressions (kube-prometheus / TKG shapes).
pub fn expressions() -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(DIFFERENTIAL).expect("fixture");
    doc["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect()
}

/// A rule file of about `bytes` bytes; `salt` makes every expression new text (a PromQL
/// comment), so nothing can be remembered between two files of different salt.
pub fn rule_file(exprs: &[String], bytes: usize, salt: usize) -> (String, usize) {
    let mut out = String::from("groups:\n- name: bench\n  rules:\n");
    let mut n = 0;
    while out.len() < bytes {
        let e = &exprs[n % exprs.len()];
        out.push_str(&format!(
            "  - record: bench:rule_{n}\n    expr: |\n      {}\n      # {salt}\n    labels:\n      team: platform\n",
            e.replace('\n', "\n      ")
        ));
        n += 1;
    }
    (out, n)
}

/// The example ConfigMap's `prometheus.yml` (TKG's scrape configs).
pub fn prometheus_yml() -> String {
    let cm: serde_yaml::Value = serde_yaml::from_str(EXAMPLE_CONFIGMAP).expect("example");
    cm["data"]["prometheus.yml"]
        .as_str()
        .expect("prometheus.yml")
        .to_owned()
}

/// An AdmissionReview (UPDATE) of the Prometheus server ConfigMap with the given data.
pub fn review(prom: &str, rules: &str) -> String {
    let object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "prometheus-server", "namespace": "tanzu-system-monitoring",
            "labels": {"app": "prometheus", "component": "server"}
        },
        "data": {"prometheus.yml": prom, "recording_rules.yml": rules}
    });
    serde_json::to_string(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b", "operation": "UPDATE", "name": "prometheus-server",
            "namespace": "tanzu-system-monitoring",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "userInfo": {"username": "bench"},
            "object": object, "oldObject": object,
        }
    }))
    .expect("json")
}

/// Rule-file bytes that make the review about 60 KB (object and oldObject).
pub fn rules_bytes_for_60kb(prom: &str) -> usize {
    30 * 1024 - prom.len() - 1000
}

/// The ~60 KB review with rule-file salt `salt`.
pub fn review_60kb(salt: usize) -> String {
    let prom = prometheus_yml();
    let (rules, _) = rule_file(&expressions(), rules_bytes_for_60kb(&prom), salt);
    review(&prom, &rules)
}
