//! The Prometheus server ConfigMap: which data keys change, and the patch that changes them.
//! The same shape as [`super::deployment`]: `matches`, then `mutate_configmap` from the
//! object to a [`Mutation`].

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

use super::{Memo, Mutation, RewriteError, Target, fleet, rules, scrape};
use crate::config::{PROMETHEUS_YML, Values};

/// True when `cm` is the Prometheus server ConfigMap as configured by `match.configMap`.
pub fn matches(cm: &ConfigMap, values: &Values) -> bool {
    values
        .r#match
        .config_map
        .matches(cm.metadata.name.as_deref(), cm.metadata.labels.as_ref())
}

/// Decides the patch for a ConfigMap object (already known to be `v1` `ConfigMap`): one
/// `replace` per data key whose text changes; objects that do not match pass with no patch.
pub fn mutate_configmap(
    object: &serde_json::Value,
    values: &Values,
    memo: &Memo,
) -> Result<Mutation, RewriteError> {
    let cm = ConfigMap::deserialize(object)
        .map_err(|e| RewriteError::Object(format!("not a valid ConfigMap: {e}")))?;
    if !matches(&cm, values) {
        return Ok(Mutation::default());
    }
    let (changed, warnings) = rewrite_data(&cm, values, memo)?;
    if !changed.is_empty() {
        check_size(&cm, &changed)?;
    }
    let ops = changed
        .into_iter()
        .map(|(key, text)| {
            crate::patch::replace(["data", key.as_str()], serde_json::Value::String(text))
        })
        .collect();
    Ok(Mutation {
        target: Some(Target::ConfigMap),
        patch: json_patch::Patch(ops),
        warnings,
    })
}

/// `(data key, new text)` for `prometheus.yml` and the rule-file keys that change, in that
/// order (rule files in `ruleFiles` order), and the warnings. Every other key is left alone.
type Changed = Vec<(String, String)>;

fn rewrite_data(
    cm: &ConfigMap,
    values: &Values,
    memo: &Memo,
) -> Result<(Changed, Vec<String>), RewriteError> {
    let mut changed = Vec::new();
    let mut warnings = Vec::new();
    let empty = std::collections::BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    if let Some(text) = data.get(PROMETHEUS_YML) {
        let edit = memo.get_or_rewrite(PROMETHEUS_YML, text, || {
            scrape::rewrite_prometheus_yml(PROMETHEUS_YML, text, values)
        })?;
        warnings.extend(edit.warnings);
        if let Some(new) = edit.text {
            changed.push((PROMETHEUS_YML.to_owned(), new));
        }
    }
    warnings.extend(fleet::untouched_alerting_warnings(data, values));
    for key in &fleet::rule_file_keys(values) {
        let Some(text) = data.get(key) else {
            // Only a key the user named can be a typo; the default fleet file may be absent.
            if fleet::named_rule_file(values, key) {
                warnings.push(missing_rule_file(key, data.keys()));
            }
            continue;
        };
        let edit =
            memo.get_or_rewrite(key, text, || rules::rewrite_rule_file(key, text, values))?;
        warnings.extend(edit.warnings);
        if let Some(new) = edit.text {
            changed.push((key.clone(), new));
        }
    }
    Ok((changed, warnings))
}

/// The warning for a `ruleFiles` entry the ConfigMap does not have (a typo, most likely).
fn missing_rule_file<'k>(key: &str, have: impl Iterator<Item = &'k String>) -> String {
    let nearest = have
        .filter(|k| k.as_str() != PROMETHEUS_YML)
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let hint = nearest.map_or_else(String::new, |(_, k)| format!(" (did you mean {k:?}?)"));
    format!(
        "ruleFiles names data key {key:?}, which this ConfigMap does not have{hint}: no rules \
         under that name are rewritten"
    )
}

/// Refuses a rewrite whose result the API server would not store, with a message that says why.
fn check_size(cm: &ConfigMap, changed: &[(String, String)]) -> Result<(), RewriteError> {
    let data = cm.data.as_ref();
    let mut total: usize = data
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = changed
                .iter()
                .find(|(ck, _)| ck == k)
                .map_or(v.as_str(), |(_, new)| new);
            k.len() + v.len()
        })
        .sum();
    total += cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len())
        .sum::<usize>();
    if total > super::MAX_CONFIGMAP_BYTES {
        return Err(RewriteError::Object(format!(
            "the rewritten ConfigMap would hold {total} bytes of data, more than the API server's limit of \
             {} bytes; shrink prometheus.yml or the rule files",
            super::MAX_CONFIGMAP_BYTES
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rule_file_is_a_warning_with_a_suggestion() {
        let values = Values::from_yaml_str("ruleFiles: [recording_rule.yml]\n").unwrap();
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "prometheus-server", "labels": {"app": "prometheus", "component": "server"}},
            "data": {"recording_rules.yml": "groups: []\n"}
        });
        let m = mutate_configmap(&cm, &values, &Memo::off()).unwrap();
        assert!(m.patch.0.is_empty());
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(
            m.warnings[0].contains("\"recording_rule.yml\"")
                && m.warnings[0].contains("did you mean \"recording_rules.yml\""),
            "{:?}",
            m.warnings
        );
        // The defaults name no key themselves: a ConfigMap without them is no typo.
        let m = mutate_configmap(&cm, &Values::default(), &Memo::off()).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let none = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "prometheus-server", "labels": {"app": "prometheus", "component": "server"}},
            "data": {"prometheus.yml": "scrape_configs: []\n"}
        });
        let m = mutate_configmap(&none, &Values::default(), &Memo::off()).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }
}
