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
//!   The decision runs with the server's rewrite memo at its default size, so cold pays for
//!   looking up and remembering. `decision (warm)`: the same review again (what every kapp
//!   sync sends), answered from the memo.
//! - An interleaved run prints the ratio once more, with every decision timed right next to
//!   a baseline, so that a drift in the machine's speed cannot favour either side.
//! - `baseline`: the same review decoded from JSON, plus serde_yaml parse + serialise of the
//!   same two data keys: what a value-based rewrite costs before doing any work.
//! - `scaling/<KB>`: the decision for rule files from 10 KB to 1 MiB. From about 700 KB on,
//!   the rewritten ConfigMap would exceed the API server's 1 MiB limit and the decision is a
//!   denial saying so, reached after the whole rewrite, so the work measured is the same.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};
use promfed::config::Values;
use promfed::rewrite::Memo;
use promfed::server::DEFAULT_MEMO_BYTES;

mod common;
use common::{expressions, prometheus_yml, review, rule_file, rules_bytes_for_60kb};

/// The decision: decode, rewrite (with the server's memo), serialise the patch.
fn decide(body: &str, values: &Values, memo: &Memo) -> usize {
    let review: serde_json::Value = serde_json::from_str(body).expect("review");
    match promfed::rewrite::mutate_object_with(&review["request"]["object"], values, memo) {
        Ok(m) => serde_json::to_vec(&m.patch).expect("patch").len(),
        // Past the 1 MiB limit: refused once rewritten.
        Err(e) => e.to_string().len(),
    }
}

/// The floor: the same review decoded, its two data keys parsed and serialised by serde_yaml.
fn baseline(body: &str) {
    let review: serde_json::Value = serde_json::from_str(body).expect("review");
    for key in ["prometheus.yml", "recording_rules.yml"] {
        let text = review["request"]["object"]["data"][key]
            .as_str()
            .expect("key");
        let v: serde_yaml::Value = serde_yaml::from_str(text).expect("parse");
        black_box(serde_yaml::to_string(&v).expect("serialise"));
    }
}

fn values() -> Values {
    Values::from_yaml_str(
        "localClusterName: shared-tools\nadditionalScrapeConfigs:\n- job_name: federation\n  metrics_path: /federate\n  static_configs:\n  - targets: ['prom.other:9090']\n    labels: {cluster: other}\n",
    )
    .expect("values")
}

fn bench(c: &mut Criterion) {
    let values = values();
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
    // The server's memo, at its default size: cold pays for looking up and remembering.
    let memo = Memo::new(DEFAULT_MEMO_BYTES);

    let mut g = c.benchmark_group("tkg-60kb");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("decision (cold)", |b| {
        b.iter_batched(
            fresh,
            |body| black_box(decide(&body, &values, &memo)),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("decision (warm: the same review again)", |b| {
        b.iter_batched(
            || sample.clone(),
            |body| black_box(decide(&body, &values, &memo)),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("baseline: JSON decode + serde_yaml round trip", |b| {
        b.iter_batched(fresh, |body| baseline(&body), BatchSize::SmallInput);
    });
    g.finish();

    let mut g = c.benchmark_group("scaling");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for kb in [10usize, 100, 300, 600, 1024] {
        let body = review(&prom, &rule_file(&exprs, kb * 1024, 0).0);
        g.bench_with_input(BenchmarkId::from_parameter(kb), &body, |b, body| {
            b.iter(|| black_box(decide(body, &values, &Memo::off())));
        });
    }
    g.finish();
}

/// The ratio again, with decision and baseline interleaved (pairs of fresh reviews timed one
/// after the other), so that a machine whose speed drifts during the run cannot favour
/// either side: criterion measures them one after the other.
fn interleaved_ratio() {
    let values = values();
    let exprs = expressions();
    let prom = prometheus_yml();
    let target = rules_bytes_for_60kb(&prom);
    let memo = Memo::new(DEFAULT_MEMO_BYTES);
    let rounds = 300;
    let mut ratios = Vec::with_capacity(rounds);
    let (mut d_total, mut b_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..rounds {
        let a = review(&prom, &rule_file(&exprs, target, 1_000_000 + 2 * i).0);
        let b = review(&prom, &rule_file(&exprs, target, 1_000_001 + 2 * i).0);
        let t = Instant::now();
        black_box(decide(&a, &values, &memo));
        let d = t.elapsed();
        let t = Instant::now();
        baseline(&b);
        let base = t.elapsed();
        ratios.push(d.as_secs_f64() / base.as_secs_f64());
        d_total += d;
        b_total += base;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "interleaved, {rounds} pairs of fresh ~60 KB reviews: decision (cold) {:.2} ms, baseline {:.2} ms, \
         ratio of totals {:.2}x, median pair ratio {:.2}x (p10 {:.2}x, p90 {:.2}x)",
        d_total.as_secs_f64() * 1000.0 / rounds as f64,
        b_total.as_secs_f64() * 1000.0 / rounds as f64,
        d_total.as_secs_f64() / b_total.as_secs_f64(),
        ratios[rounds / 2],
        ratios[rounds / 10],
        ratios[rounds * 9 / 10],
    );
}

criterion_group!(benches, bench);

fn main() {
    interleaved_ratio();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
