//! Findings about the user's own Prometheus configuration that the rewrite does not change but
//! that change meaning on the tools cluster. Warnings, not errors: each may be intended.

use serde_yaml::{Mapping, Value};

use crate::config::{PROMETHEUS_YML, Values};

/// A local scrape config that sets the cluster label itself (a `static_configs` label or a
/// relabel rule's `target_label`) to something else than `localClusterName`: promfed's rule,
/// appended last, overwrites it on every target, so what the job meant by it is lost.
pub fn local_job_sets_cluster_label(job: &str, sc: &Mapping, values: &Values) -> Vec<String> {
    let label = values.cluster_label_name.as_str();
    let local = values.local_cluster_name.as_str();
    let mut out = Vec::new();
    let mut say = |place: String, what: String| {
        out.push(format!(
            "{PROMETHEUS_YML}: scrape config {job:?} {place} sets the label {label:?} ({what}); promfed's \
             relabel rule overwrites it with {label}={local:?} on every target of the job. Rename \
             clusterLabelName or drop that label from the job"
        ));
    };
    if let Some(Value::Sequence(statics)) = sc.get("static_configs") {
        for (i, st) in statics.iter().enumerate() {
            match st.get("labels").and_then(|l| l.get(label)) {
                Some(Value::String(v)) if v == local => {}
                Some(v) => say(
                    format!("static_configs[{i}].labels"),
                    format!("to {}", scalar(v)),
                ),
                None => {}
            }
        }
    }
    for key in ["relabel_configs", "metric_relabel_configs"] {
        let Some(Value::Sequence(rules)) = sc.get(key) else {
            continue;
        };
        for (i, r) in rules.iter().enumerate() {
            if r.get("target_label").and_then(Value::as_str) != Some(label) {
                continue;
            }
            // promfed's own rule (or anyone's) writing the local name changes nothing.
            let constant_local = r.get("replacement").and_then(Value::as_str) == Some(local)
                && r.get("source_labels").is_none_or(|s| {
                    matches!(s, Value::Sequence(s) if s.len() == 1 && s[0].as_str() == Some("__address__"))
                });
            if !constant_local {
                let what = match r.get("replacement") {
                    Some(v) => format!("replacement {}", scalar(v)),
                    None => "from its source labels".to_owned(),
                };
                say(format!("{key}[{i}]"), what);
            }
        }
    }
    out
}

/// A YAML scalar as written, for messages.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> Vec<String> {
        let sc: Mapping = serde_yaml::from_str(yaml).unwrap();
        local_job_sets_cluster_label("node", &sc, &Values::default())
    }

    #[test]
    fn a_job_setting_the_cluster_label_is_named() {
        let w = job("static_configs:\n- targets: [a]\n  labels: {cluster: mgmt}\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("scrape config \"node\" static_configs[0].labels sets the label \"cluster\" (to \"mgmt\")"),
            "{w:?}"
        );
        let w = job(
            "relabel_configs:\n- source_labels: [__meta_kubernetes_namespace]\n  target_label: cluster\n",
        );
        assert!(
            w[0].contains("relabel_configs[0] sets the label \"cluster\" (from its source labels)"),
            "{w:?}"
        );
        let w = job("metric_relabel_configs:\n- target_label: cluster\n  replacement: x\n");
        assert!(
            w[0].contains("metric_relabel_configs[0]") && w[0].contains("replacement \"x\""),
            "{w:?}"
        );
    }

    #[test]
    fn the_local_value_and_promfeds_own_rule_are_fine() {
        assert!(
            job("static_configs:\n- targets: [a]\n  labels: {cluster: local, env: x}\n").is_empty()
        );
        assert!(job("relabel_configs:\n- source_labels: [__address__]\n  target_label: cluster\n  replacement: local\n").is_empty());
        assert!(job("relabel_configs:\n- target_label: other\n  replacement: x\n").is_empty());
    }
}
