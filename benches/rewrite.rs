//! The cost of the ConfigMap rewrite against the bare YAML round trip of the same data keys.
//! `cargo bench --bench rewrite`; the README reports both and their ratio.

use criterion::{Criterion, criterion_group, criterion_main};
use promfed::cli::{EXAMPLE_CONFIGMAP, EXAMPLE_VALUES};
use promfed::config::Values;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let values = Values::from_yaml_str(EXAMPLE_VALUES).expect("seed values");
    let yaml: serde_yaml::Value = serde_yaml::from_str(EXAMPLE_CONFIGMAP).expect("example");
    let object = serde_json::to_value(&yaml).expect("json");
    let keys: Vec<String> = ["prometheus.yml", "recording_rules.yml"]
        .iter()
        .map(|k| object["data"][k].as_str().expect("key").to_owned())
        .collect();

    c.bench_function("rewrite: mutate_object(TKG ConfigMap)", |b| {
        b.iter(|| {
            promfed::rewrite::mutate_object(black_box(&object), black_box(&values))
                .expect("rewrite")
        })
    });
    c.bench_function("baseline: parse + serialise the same YAML keys", |b| {
        b.iter(|| {
            for text in &keys {
                let v: serde_yaml::Value = serde_yaml::from_str(black_box(text)).expect("parse");
                black_box(serde_yaml::to_string(&v).expect("serialise"));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
