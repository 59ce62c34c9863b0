//! The cost of the ConfigMap decision against the bare YAML round trip of the same data, and
//! how it grows with the ConfigMap's size. `cargo bench --bench rewrite`; the README reports
//! the figures and their ratio.
//!
//! - `decision`: a ~60 KB TKG UPDATE review (the example's `prometheus.yml` and ~100 recording
//!   rules of real-world shape, from tests/fixtures/differential) decoded from JSON, rewritten
//!   (`mutate_object`) and its patch serialised. Cold: every iteration gets a review whose every
//!   expression is new text (a PromQL comment with the iteration number), so nothing is
//!   remembered between iterations except promfed's regex-validity cache (a regex seen before
//!   is not checked again).
//! - `baseline`: the same review decoded from JSON, plus serde_yaml parse + serialise of the
//!   same two data keys: what a value-based rewrite costs before doing any work.
//! - `scaling/<KB>`: the decision for rule files from 10 KB to 600 KB (a 600 KB rule file grows
//!   to about 850 KB rewritten; more would exceed the API server's 1 MiB ConfigMap limit).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use promfed::cli::EXAMPLE_CONFIGMAP;
use promfed::config::Values;
use serde_json::json;

const DIFFERENTIAL: &str = include_str!("../tests/fixtures/differential/rules.yml");

/// Real-world recording-rule expressions (kube-prometheus / TKG shapes).
fn expressions() -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(DIFFERENTIAL).expect("fixture");
    doc["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect()
}

/// A rule file of about `bytes` bytes; `salt` makes every expression new text.
fn rule_file(exprs: &[String], bytes: usize, salt: usize) -> (String, usize) {
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

fn prometheus_yml() -> String {
    let cm: serde_yaml::Value = serde_yaml::from_str(EXAMPLE_CONFIGMAP).expect("example");
    cm["data"]["prometheus.yml"]
        .as_str()
        .expect("prometheus.yml")
        .to_owned()
}

/// An AdmissionReview (UPDATE) of the Prometheus server ConfigMap with the given data.
fn review(prom: &str, rules: &str) -> String {
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

/// The decision: decode, rewrite, serialise the patch.
fn decide(body: &str, values: &Values) -> usize {
    let review: serde_json::Value = serde_json::from_str(body).expect("review");
    let m = promfed::rewrite::mutate_object(&review["request"]["object"], values).expect("rewrite");
    serde_json::to_vec(&m.patch).expect("patch").len()
}

fn bench(c: &mut Criterion) {
    let values = Values::from_yaml_str(
        "localClusterName: shared-tools\nadditionalScrapeConfigs:\n- job_name: federation\n  metrics_path: /federate\n  static_configs:\n  - targets: ['prom.other:9090']\n    labels: {cluster: other}\n",
    )
    .expect("values");
    let exprs = expressions();
    let prom = prometheus_yml();
    // An UPDATE review carries the object twice (object, oldObject): ~60 KB in all.
    let target = 30 * 1024 - prom.len() - 1000;
    let (rules, count) = rule_file(&exprs, target, 0);
    let sample = review(&prom, &rules);
    println!(
        "review: {} bytes, prometheus.yml {} bytes, {count} recording rules in {} bytes",
        sample.len(),
        prom.len(),
        rules.len()
    );
    let salt = AtomicUsize::new(1);
    let fresh = || {
        let s = salt.fetch_add(1, Ordering::Relaxed);
        review(&prom, &rule_file(&exprs, target, s).0)
    };

    let mut g = c.benchmark_group("tkg-60kb");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("decision (cold)", |b| {
        b.iter_batched(
            fresh,
            |body| black_box(decide(&body, &values)),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("baseline: JSON decode + serde_yaml round trip", |b| {
        b.iter_batched(
            fresh,
            |body| {
                let review: serde_json::Value = serde_json::from_str(&body).expect("review");
                for key in ["prometheus.yml", "recording_rules.yml"] {
                    let text = review["request"]["object"]["data"][key]
                        .as_str()
                        .expect("key");
                    let v: serde_yaml::Value = serde_yaml::from_str(text).expect("parse");
                    black_box(serde_yaml::to_string(&v).expect("serialise"));
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();

    let mut g = c.benchmark_group("scaling");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    // Up to what still fits the API server's 1 MiB ConfigMap limit once rewritten.
    for kb in [10usize, 100, 600] {
        let body = review(&prom, &rule_file(&exprs, kb * 1024, 0).0);
        g.bench_with_input(BenchmarkId::from_parameter(kb), &body, |b, body| {
            b.iter(|| black_box(decide(body, &values)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
