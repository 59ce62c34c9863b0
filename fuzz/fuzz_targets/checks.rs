//! The properties the fuzz targets check, shared with `tests/regressions.rs` (which replays the
//! seed corpora and every minimised finding through them in the normal test suite). Each
//! function panics when its input breaks a property.

#![allow(dead_code)]

use promfed::config::Values;
use promfed::promql::{RewriteOptions, rewrite_expr};
use promfed::rewrite::mutate_object;
use promfed::rewrite::rules::rewrite_rule_file;
use promfed::rewrite::scrape::rewrite_prometheus_yml;
use serde_json::{Value, json};

/// The seed's values (a federation job, cluster label `cluster`), as the examples use them.
pub fn example_values() -> Values {
    match Values::from_yaml_str(promfed::cli::EXAMPLE_VALUES) {
        Ok(v) => v,
        Err(e) => panic!("embedded example values do not load: {e}"),
    }
}

/// Fuzz input as text; non-UTF-8 input cannot reach the rewriters (ConfigMap data is a string).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Values that exercise quoting in the injected matcher.
const VALUES: &[&str] = &["local", "$cluster", "a\"b\\c", "tools|x.*", ""];

/// `rewrite_expr`: first byte = options, rest = expression. A changed result parses and is a
/// fixed point.
pub fn promql_rewrite(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(src) = std::str::from_utf8(rest) else {
        return;
    };
    // The fast PromQL path builds promql-parser's exact tree, or leaves the text to it.
    if let Err(e) = promfed::promql::check_fast_parser(src) {
        panic!("fast PromQL parser disagrees with promql-parser: {e}");
    }
    let opts = RewriteOptions {
        label: if flags & 0x80 == 0 {
            "cluster"
        } else {
            "env_name"
        }
        .to_owned(),
        value: VALUES[usize::from(flags & 0x0f) % VALUES.len()].to_owned(),
        regex: flags & 0x10 != 0,
        tag_labelless: flags & 0x20 != 0,
    };
    let Ok(out) = rewrite_expr(src, &opts) else {
        return;
    };
    if !out.changed {
        assert_eq!(out.expr, src, "unchanged output must be the input itself");
        return;
    }
    if let Err(e) = promql_parser::parser::parse(&out.expr) {
        panic!("rewrite of {src:?} does not parse: {:?}: {e}", out.expr);
    }
    match rewrite_expr(&out.expr, &opts) {
        Ok(again) => assert!(
            !again.changed,
            "not a fixed point: {src:?} -> {:?} -> {:?}",
            out.expr, again.expr
        ),
        Err(e) => panic!("rewrite of {src:?} = {:?} is rejected: {e}", out.expr),
    }
}

/// `rewrite_rule_file`: a rewritten file is a fixed point.
pub fn rule_file(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let values = example_values();
    let Ok(edit) = rewrite_rule_file("recording_rules.yml", text, &values) else {
        return;
    };
    if let Some(new) = edit.text {
        match rewrite_rule_file("recording_rules.yml", &new, &values) {
            Ok(again) => assert!(
                again.text.is_none(),
                "not a fixed point:\n--- input\n{text}\n--- once\n{new}\n--- twice\n{:?}",
                again.text
            ),
            Err(e) => panic!("own output rejected: {e}\n--- input\n{text}\n--- once\n{new}"),
        }
    }
}

/// `rewrite_prometheus_yml`: a rewritten file is a fixed point.
pub fn prometheus_yml(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let values = example_values();
    let Ok(edit) = rewrite_prometheus_yml("prometheus.yml", text, &values) else {
        return;
    };
    if let Some(new) = edit.text {
        match rewrite_prometheus_yml("prometheus.yml", &new, &values) {
            Ok(again) => assert!(
                again.text.is_none(),
                "not a fixed point:\n--- input\n{text}\n--- once\n{new}\n--- twice\n{:?}",
                again.text
            ),
            Err(e) => panic!("own output rejected: {e}\n--- input\n{text}\n--- once\n{new}"),
        }
    }
}

const KEYS: &[&str] = &[
    "prometheus.yml",
    "recording_rules.yml",
    "alerting_rules.yml",
];

fn configmap_object(data: &[u8]) -> Option<Value> {
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data).ok();
    }
    let mut map = serde_json::Map::new();
    for (key, part) in KEYS.iter().zip(data.split(|b| *b == 0)) {
        map.insert((*key).to_owned(), Value::String(text(part)?.to_owned()));
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

/// `mutate_object` on the Prometheus server ConfigMap (see `configmap.rs` for the input
/// format): the patch touches only `/data/...`, applies, and leaves nothing to patch.
pub fn configmap(data: &[u8]) {
    let Some(mut object) = configmap_object(data) else {
        return;
    };
    let mut values = example_values();
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
}

/// Base64 decoding of the response patch, kept here so the target needs no extra crate.
fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `admission::review`: an answered review has the request's uid; its patch applies to
/// `request.object` and leaves nothing to patch.
pub fn admission(data: &[u8]) {
    let values = example_values();
    let Ok(reviewed) = promfed::admission::review(data, &values) else {
        return;
    };
    let answer: Value = match serde_json::from_slice(&reviewed.body) {
        Ok(v) => v,
        Err(e) => panic!("response is not JSON: {e}"),
    };
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        Value::from(reviewed.uid.as_str())
    );
    let Some(patch) = answer["response"]["patch"].as_str() else {
        return;
    };
    let Some(patch) = base64(patch) else {
        panic!("patch is not base64: {patch:?}");
    };
    let patch: json_patch::Patch = match serde_json::from_slice(&patch) {
        Ok(p) => p,
        Err(e) => panic!("patch is not an RFC 6902 patch: {e}"),
    };
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        panic!("answered a body that is not JSON");
    };
    let mut object = request["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut object, &patch) {
        panic!("patch does not apply to the request's object: {e}");
    }
    match mutate_object(&object, &values) {
        Ok(again) => assert!(
            again.patch.0.is_empty(),
            "not a fixed point: {:?}",
            again.patch
        ),
        Err(e) => panic!("patched object rejected: {e}"),
    }
}
