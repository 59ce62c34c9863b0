//! The cost of the PromQL rewriter alone, on the rule expressions of the example ConfigMap:
//! `cargo bench --bench promql`. Splits `rewrite_expr` from the bare promql-parser parse so a
//! regression can be placed.

use criterion::{Criterion, criterion_group, criterion_main};
use promfed::cli::EXAMPLE_CONFIGMAP;
use promfed::promql::{RewriteOptions, rewrite_expr};
use std::hint::black_box;

/// Every `expr` of the example's rule file.
fn example_exprs() -> Vec<String> {
    let cm: serde_yaml::Value = serde_yaml::from_str(EXAMPLE_CONFIGMAP).expect("example");
    let text = cm["data"]["recording_rules.yml"]
        .as_str()
        .expect("rules key");
    let rules: serde_yaml::Value = serde_yaml::from_str(text).expect("rules");
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            out.push(r["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let exprs = example_exprs();
    let opts = RewriteOptions {
        label: "cluster".into(),
        value: "local".into(),
        regex: false,
        tag_labelless: true,
    };
    let with_regex: Vec<&String> = exprs.iter().filter(|e| e.contains("=~")).collect();
    c.bench_function(
        &format!("promql: rewrite_expr x{} (example rules)", exprs.len()),
        |b| {
            b.iter(|| {
                for e in &exprs {
                    black_box(rewrite_expr(black_box(e), &opts).expect("rewrite"));
                }
            });
        },
    );
    c.bench_function(
        &format!("promql: rewrite_expr x{} (rules with =~)", with_regex.len()),
        |b| {
            b.iter(|| {
                for e in &with_regex {
                    black_box(rewrite_expr(black_box(e), &opts).expect("rewrite"));
                }
            });
        },
    );
    // One rule with two regex matchers: seen before (checked regexes are cached) and never
    // seen (each iteration brings new regexes, so they are checked in full).
    let rule = |n: u64| {
        format!(
            r#"sum by (verb) (rate(apiserver_request_total{{verb=~"LIST|GET|V{n}",code=~"5..|{n}"}}[5m]))"#
        )
    };
    let warm = rule(0);
    c.bench_function("promql: rewrite_expr, rule with 2 known regexes", |b| {
        b.iter(|| black_box(rewrite_expr(black_box(&warm), &opts).expect("rewrite")));
    });
    let mut n = 0;
    c.bench_function("promql: rewrite_expr, rule with 2 new regexes", |b| {
        b.iter(|| {
            n += 1;
            black_box(rewrite_expr(&rule(n), &opts).expect("rewrite"))
        });
    });
    c.bench_function(
        &format!("promql-parser: parse x{} (example rules)", exprs.len()),
        |b| {
            b.iter(|| {
                for e in &exprs {
                    let _ = black_box(promql_parser::parser::parse(black_box(e)));
                }
            });
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
