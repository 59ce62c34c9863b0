//! The rewrite engine: pure functions from a Kubernetes object and the [`Values`] to the
//! JSON patch that turns it into its federated form (the ConfigMap's rewritten keys, or the
//! Deployment's federation secret mounts). No I/O, no globals: the webhook
//! ([`crate::admission`]) and `promfed mutate` ([`crate::cli`]) share it.

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

use crate::config::Values;

pub mod checks;
pub mod configmap;
pub mod deployment;
pub mod fleet;
pub mod health;
pub mod rules;
pub mod scrape;

/// kube-apiserver refuses a ConfigMap whose `data` and `binaryData` (keys and values) add up to
/// more than this; a patch that crosses it would fail with an error that does not name promfed.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// Largest data value we parse. A ConfigMap is capped at 1 MiB by the API server; anything
/// bigger did not come from it.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

/// Which kind of object a mutation was decided for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Prometheus server ConfigMap (`prometheus.yml` and rule files).
    ConfigMap,
    /// The Prometheus server Deployment (federation secret mounts).
    Deployment,
}

/// What promfed decided for one object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mutation {
    /// `None` when the object is not one promfed rewrites (it passes through untouched).
    pub target: Option<Target>,
    /// Minimal RFC 6902 patch; empty when the object is already in its federated form.
    pub patch: json_patch::Patch,
    /// Non-fatal findings a user can act on.
    pub warnings: Vec<String>,
}

/// Why a matching object could not be rewritten. The message names the place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// A data key does not hold valid YAML of the expected shape.
    #[error("data key {key:?}: {message}")]
    Yaml { key: String, message: String },
    /// A rule's expression cannot be rewritten.
    #[error("data key {key:?}, group {group:?}, rule {rule:?}: {message}")]
    Rule {
        key: String,
        group: String,
        rule: String,
        message: String,
    },
    /// The object itself is malformed (e.g. `data` is not a string map).
    #[error("{0}")]
    Object(String),
    /// The Deployment cannot take the federation secret mounts.
    #[error("deployment {name}: {message}")]
    Deployment { name: String, message: String },
}

/// The result of rewriting one text document: `text` is `None` when nothing changes (the input
/// is then kept byte for byte, which is what makes the rewrite idempotent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Edit {
    pub text: Option<String>,
    pub warnings: Vec<String>,
}

impl Edit {
    fn unchanged(warnings: Vec<String>) -> Self {
        Self {
            text: None,
            warnings,
        }
    }
}

/// Parses one YAML document with the size limit applied first.
fn parse_yaml(text: &str) -> Result<serde_yaml::Value, String> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
            text.len()
        ));
    }
    crate::yaml::parse(text).map_err(|e| format!("not valid YAML: {e}"))
}

/// Decides the mutation of one Kubernetes object given as JSON (as in an AdmissionReview).
/// Objects that are not the configured Prometheus server ConfigMap pass with no patch.
pub fn mutate_object(
    object: &serde_json::Value,
    values: &Values,
) -> Result<Mutation, RewriteError> {
    let api_version = object.get("apiVersion").and_then(serde_json::Value::as_str);
    let kind = object.get("kind").and_then(serde_json::Value::as_str);
    match (api_version, kind) {
        (Some("v1"), Some("ConfigMap")) => mutate_configmap(object, values),
        (Some("apps/v1"), Some("Deployment")) => deployment::mutate_deployment(object, values),
        _ => Ok(Mutation::default()),
    }
}

fn mutate_configmap(object: &serde_json::Value, values: &Values) -> Result<Mutation, RewriteError> {
    let cm = ConfigMap::deserialize(object)
        .map_err(|e| RewriteError::Object(format!("not a valid ConfigMap: {e}")))?;
    if !configmap::matches(&cm, values) {
        return Ok(Mutation::default());
    }
    let rewrite = configmap::rewrite_configmap(&cm, values)?;
    if !rewrite.changed.is_empty() {
        check_configmap_size(&cm, &rewrite.changed)?;
    }
    let ops = rewrite
        .changed
        .into_iter()
        .map(|(key, text)| {
            crate::patch::replace(["data", key.as_str()], serde_json::Value::String(text))
        })
        .collect();
    Ok(Mutation {
        target: Some(Target::ConfigMap),
        patch: json_patch::Patch(ops),
        warnings: rewrite.warnings,
    })
}

/// Refuses a rewrite whose result the API server would not store, with a message that says why.
fn check_configmap_size(cm: &ConfigMap, changed: &[(String, String)]) -> Result<(), RewriteError> {
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
    if total > MAX_CONFIGMAP_BYTES {
        return Err(RewriteError::Object(format!(
            "the rewritten ConfigMap would hold {total} bytes of data, more than the API server's limit of \
             {MAX_CONFIGMAP_BYTES} bytes; shrink prometheus.yml or the rule files"
        )));
    }
    Ok(())
}
