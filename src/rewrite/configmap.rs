//! The Prometheus server ConfigMap: which data keys change, and how.

use k8s_openapi::api::core::v1::ConfigMap;

use super::{RewriteError, fleet, rules, scrape};
use crate::config::{PROMETHEUS_YML, Values};

/// The outcome for one ConfigMap: the data keys that change (in a stable order) and warnings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigMapRewrite {
    /// `(data key, new text)`, `prometheus.yml` first, then rule files in `ruleFiles` order.
    pub changed: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// True when `cm` is the Prometheus server ConfigMap as configured by `match.configMap`.
pub fn matches(cm: &ConfigMap, values: &Values) -> bool {
    values
        .r#match
        .config_map
        .matches(cm.metadata.name.as_deref(), cm.metadata.labels.as_ref())
}

/// Rewrites `prometheus.yml` and the rule-file keys; every other key is left alone, byte for byte.
pub fn rewrite_configmap(
    cm: &ConfigMap,
    values: &Values,
) -> Result<ConfigMapRewrite, RewriteError> {
    let mut out = ConfigMapRewrite::default();
    let Some(data) = cm.data.as_ref() else {
        return Ok(out);
    };
    if let Some(text) = data.get(PROMETHEUS_YML) {
        let edit =
            scrape::rewrite_prometheus_yml(PROMETHEUS_YML, text, values).map_err(|message| {
                RewriteError::Yaml {
                    key: PROMETHEUS_YML.to_owned(),
                    message,
                }
            })?;
        out.warnings.extend(edit.warnings);
        if let Some(new) = edit.text {
            out.changed.push((PROMETHEUS_YML.to_owned(), new));
        }
    }
    out.warnings
        .extend(fleet::untouched_alerting_warnings(data, values));
    for key in &fleet::rule_file_keys(values) {
        let Some(text) = data.get(key) else { continue };
        let edit = rules::rewrite_rule_file(key, text, values)?;
        out.warnings.extend(edit.warnings);
        if let Some(new) = edit.text {
            out.changed.push((key.clone(), new));
        }
    }
    Ok(out)
}
