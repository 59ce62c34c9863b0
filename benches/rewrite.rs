//! The cost of the ConfigMap decision against the bare YAML round trip of the same data, and
//! how it grows with the ConfigMap's size. `cargo bench --bench rewrite`; the README reports
//! the figures and their ratio.
//!
//! - `decision`: a ~60 KB TKG UPDATE review (the example's `prometheus.yml` and 171 recording
//!   rules of real-world shape, from tests/fixtures/differential) decoded from JSON, rewritten
//!   (`mutate_object`) and its patch serialised. Cold: every iteration gets a review whose every
//!   expression is new text (a PromQL comment with the iteration number), so nothing is
//!   remembered between iterations except promfed's regex-validity cache (a regex seen before
//!   is not checked again).
//! - `baseline`: the same review decoded from JSON, plus serde_yaml parse + serialise of the
//!   same two data keys: what a value-based rewrite costs before doing any work.
//! - `scaling/<KB>`: the decision for rule files from 10 KB to 1 MiB. From about 700 KB on,
//!   the rewritten ConfigMap would exceed the API server's 1 MiB limit and the decision is a
//!   denial saying so, reached after the whole rewrite, so the work measured is the same.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use promfed::config::Values;

mod common;
use common::{expressions, prometheus_yml, review, rule_file, rules_bytes_for_60kb};

/// The decision: decode, rewrite, serialise the patch.
fn decide(body: &str, values: &Values) -> usize {
    let review: serde_json::Value = serde_json::from_str(body).expect("review");
    match promfed::rewrite::mutate_object(&review["request"]["object"], values) {
        Ok(m) => serde_json::to_vec(&m.patch).expect("patch").len(),
        // Past the 1 MiB limit: refused once rewritten.
        Err(e) => e.to_string().len(),
    }
}

fn bench(c: &mut Criterion) {
    let values = Values::from_yaml_str(
        "localClusterName: shared-tools\nadditionalScrapeConfigs:\n- job_name: federation\n  metrics_path: /federate\n  static_configs:\n  - targets: ['prom.other:9090']\n    labels: {cluster: other}\n",
    )
    .expect("values");
    let exprs = expressions();
    let prom = prometheus_yml();
    // An UPDATE review carries the object twice (object, oldObject): ~60 KB in all.
    let target = rules_bytes_for_60kb(&prom);
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
    for kb in [10usize, 100, 300, 600, 1024] {
        let body = review(&prom, &rule_file(&exprs, kb * 1024, 0).0);
        g.bench_with_input(BenchmarkId::from_parameter(kb), &body, |b, body| {
            b.iter(|| black_box(decide(body, &values)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
