//! `rewrite::mutate_object` on the Prometheus server ConfigMap: never panics, the patch applies
//! to the object, touches only `/data/...`, and the patched object needs no further patch.
//!
//! Input: either a whole JSON object (first byte `{`: object decoding is fuzzed too), or the
//! data keys `prometheus.yml`, `recording_rules.yml` and `alerting_rules.yml` separated by NUL
//! bytes, put into a ConfigMap that matches the default `match.configMap`.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use promfed::rewrite::mutate_object;
use serde_json::{Value, json};

const KEYS: &[&str] = &[
    "prometheus.yml",
    "recording_rules.yml",
    "alerting_rules.yml",
];

fn configmap(data: &[u8]) -> Option<Value> {
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data).ok();
    }
    let mut map = serde_json::Map::new();
    for (key, part) in KEYS.iter().zip(data.split(|b| *b == 0)) {
        map.insert(
            (*key).to_owned(),
            Value::String(common::text(part)?.to_owned()),
        );
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "prometheus-server",
            "namespace": "tanzu-system-monitoring",
            "labels": {"app": "prometheus", "component": "server"}
        },
        "data": map
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some(mut object) = configmap(data) else {
        return;
    };
    let mut values = common::example_values();
    values.rule_files = vec![
        "recording_rules.yml".to_owned(),
        "alerting_rules.yml".to_owned(),
    ];
    let Ok(mutation) = mutate_object(&object, &values) else {
        return;
    };
    if mutation.patch.0.is_empty() {
        return;
    }
    for op in &mutation.patch.0 {
        let path = op.path().to_string();
        assert!(path.starts_with("/data/"), "patch touches {path}");
    }
    if let Err(e) = json_patch::patch(&mut object, &mutation.patch) {
        panic!("patch does not apply: {e}: {:?}", mutation.patch);
    }
    match mutate_object(&object, &values) {
        Ok(again) => assert!(
            again.patch.0.is_empty(),
            "not a fixed point: second patch {:?}",
            again.patch
        ),
        Err(e) => panic!("patched object rejected: {e}"),
    }
});
