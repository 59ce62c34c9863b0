//! The values file: what promfed is told about the fleet.
//!
//! It accepts the seed's ytt `values.yaml` unchanged (the `#@data/values` comment and the `---`
//! document marker are plain YAML), so an admin can paste what they already have. Everything is
//! checked once, at load time, with messages that name the offending entry: a values file that
//! silently falls back to a default would label a whole fleet wrongly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::promql::is_label_name;

/// Default for `localClusterName`, as in the seed (`data.values.localClusterName or "local"`).
pub const DEFAULT_LOCAL_CLUSTER_NAME: &str = "local";
/// Default for `clusterLabelName`, as in the seed.
pub const DEFAULT_CLUSTER_LABEL_NAME: &str = "cluster";
/// The Prometheus server ConfigMap data key holding the main configuration.
pub const PROMETHEUS_YML: &str = "prometheus.yml";
/// Paths the TKG Prometheus pod already uses; federation secrets must not be mounted over them.
pub const RESERVED_MOUNT_PATHS: &[&str] = &["/etc/config", "/data"];

/// Labels `clusterLabelName` must not be, and why: the local relabel rule sets it on every
/// local target, which would overwrite these.
const RESERVED_LABELS: &[(&str, &str)] = &[
    ("job", "every target's job name"),
    ("instance", "every target's address"),
    ("le", "histogram bucket bounds"),
    ("quantile", "summary quantiles"),
];

/// Largest values file we accept. Values files are small; this bounds memory on a bad mount.
pub const MAX_VALUES_BYTES: usize = 1024 * 1024;

/// Errors of loading or validating a values file. Each names the offending entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read values file {path}: {error}")]
    Read {
        /// The values file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file's content is refused; the message names the key.
    #[error("values file {path}: {message}")]
    File {
        /// The values file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// Values (not from a file) are refused; the message names the key.
    #[error("values: {0}")]
    Invalid(String),
}

/// What to do when a matching object cannot be rewritten (broken YAML, unparsable rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse the object: an unlabelled tools Prometheus silently mixes clusters.
    #[default]
    Deny,
    /// Let it through unmodified, with a warning.
    Allow,
}

/// Which objects promfed rewrites: by name and a label subset (as the seed's `overlay.subset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMatch {
    /// `metadata.name` the object must have.
    #[serde(default = "default_object_name")]
    pub name: String,
    /// Labels the object must carry (others are allowed).
    #[serde(default = "default_object_labels")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ObjectMatch {
    fn default() -> Self {
        Self {
            name: default_object_name(),
            labels: default_object_labels(),
        }
    }
}

impl ObjectMatch {
    /// True when `name` and `labels` satisfy this match.
    pub fn matches(&self, name: Option<&str>, labels: Option<&BTreeMap<String, String>>) -> bool {
        if name != Some(self.name.as_str()) {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// Which Deployment carries the Prometheus server, and its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentMatch {
    /// `metadata.name` the Deployment must have.
    #[serde(default = "default_object_name")]
    pub name: String,
    /// Labels the Deployment must carry (others are allowed).
    #[serde(default = "default_object_labels")]
    pub labels: BTreeMap<String, String>,
    /// Name of the Prometheus container inside the pod template.
    #[serde(default = "default_object_name")]
    pub container: String,
}

impl Default for DeploymentMatch {
    fn default() -> Self {
        Self {
            name: default_object_name(),
            labels: default_object_labels(),
            container: default_object_name(),
        }
    }
}

impl DeploymentMatch {
    /// The name/label part of this match.
    pub fn object(&self) -> ObjectMatch {
        ObjectMatch {
            name: self.name.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// The `match` section: which ConfigMap and which Deployment are the Prometheus server's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    /// The Prometheus server ConfigMap.
    #[serde(default)]
    pub config_map: ObjectMatch,
    /// The Prometheus server Deployment.
    #[serde(default)]
    pub deployment: DeploymentMatch,
}

/// A Secret with federation credentials to mount into the Prometheus container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FederationSecret {
    /// Name of the Secret, in the Prometheus namespace.
    pub secret_name: String,
    /// Absolute directory it is mounted at, read-only.
    pub mount_path: String,
    /// Optional `items` of the Secret volume source, passed through as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<SecretItem>>,
    /// Optional `defaultMode` of the Secret volume source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
}

/// One `items[]` entry of a Secret volume (key to path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretItem {
    /// Key in the Secret.
    pub key: String,
    /// File name under the mount path.
    pub path: String,
    /// File mode bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// The validated values file. Construct with [`Values::from_yaml_str`] or [`Values::load`];
/// `Values::default()` is the seed's defaults with no federation targets.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Values {
    /// Value of the cluster label on everything scraped or recorded locally.
    pub local_cluster_name: String,
    /// Name of the label that tells the clusters apart.
    pub cluster_label_name: String,
    /// Federation scrape configs, kept as YAML so every Prometheus field passes through.
    pub additional_scrape_configs: Vec<Mapping>,
    /// ConfigMap data keys holding rule files.
    pub rule_files: Vec<String>,
    /// What the webhook does with an object it cannot rewrite.
    pub on_error: OnError,
    /// Which objects are the Prometheus server's.
    pub r#match: Match,
    /// Secrets mounted into the Prometheus container.
    pub federation_secrets: Vec<FederationSecret>,
    /// Fleet alerting: rule file modes and the federation-health group (issue 17).
    pub fleet: crate::rewrite::fleet::FleetValues,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            local_cluster_name: DEFAULT_LOCAL_CLUSTER_NAME.to_owned(),
            cluster_label_name: DEFAULT_CLUSTER_LABEL_NAME.to_owned(),
            additional_scrape_configs: Vec::new(),
            rule_files: default_rule_files(),
            on_error: OnError::Deny,
            r#match: Match::default(),
            federation_secrets: Vec::new(),
            fleet: Default::default(),
        }
    }
}

/// Raw shape of the file; `null` everywhere means "use the default", as ytt's `or` does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawValues {
    local_cluster_name: Option<String>,
    cluster_label_name: Option<String>,
    additional_scrape_configs: Option<Vec<Value>>,
    rule_files: Option<Vec<String>>,
    on_error: Option<OnError>,
    r#match: Option<Match>,
    federation_secrets: Option<Vec<FederationSecret>>,
    fleet: Option<crate::rewrite::fleet::FleetValues>,
}

fn default_object_name() -> String {
    "prometheus-server".to_owned()
}

fn default_object_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), "prometheus".to_owned()),
        ("component".to_owned(), "server".to_owned()),
    ])
}

fn default_rule_files() -> Vec<String> {
    vec!["recording_rules.yml".to_owned()]
}

impl Values {
    /// Reads and validates a values file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_file_bytes(path, &bytes)
    }

    /// Parses the bytes read from the values file at `path` (the reloader compares bytes before
    /// parsing); errors name the file.
    pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| file_error(format!("not UTF-8: {e}")))?;
        Self::from_yaml_str(text).map_err(|e| {
            file_error(match e {
                ConfigError::Invalid(m) => m,
                other => other.to_string(),
            })
        })
    }

    /// Parses and validates values from YAML text (the seed's ytt data-values file works as is).
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_VALUES_BYTES {
            return Err(ConfigError::Invalid(format!(
                "file is {} bytes, more than the limit of {MAX_VALUES_BYTES}",
                text.len()
            )));
        }
        let doc: Value = crate::yaml::parse(text)
            .map_err(|e| ConfigError::Invalid(format!("not valid YAML: {e}")))?;
        let map = match doc {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "expected a mapping of keys at the top level, found {}",
                    describe(&other)
                )));
            }
        };
        check_known_keys(&map)?;
        // The path makes `localClusterName: 42` say which key holds the integer.
        let raw: RawValues =
            serde_path_to_error::deserialize(Value::Mapping(map)).map_err(|e| {
                let path = e.path().to_string();
                ConfigError::Invalid(format!("{path}: {}", e.into_inner()))
            })?;
        let mut additional = Vec::new();
        for (i, sc) in raw
            .additional_scrape_configs
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match sc {
                Value::Mapping(m) => additional.push(m),
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "additionalScrapeConfigs[{i}]: expected a scrape config mapping, found {}",
                        describe(&other)
                    )));
                }
            }
        }
        let values = Values {
            local_cluster_name: raw
                .local_cluster_name
                .unwrap_or_else(|| DEFAULT_LOCAL_CLUSTER_NAME.to_owned()),
            cluster_label_name: raw
                .cluster_label_name
                .unwrap_or_else(|| DEFAULT_CLUSTER_LABEL_NAME.to_owned()),
            additional_scrape_configs: additional,
            rule_files: raw.rule_files.unwrap_or_else(default_rule_files),
            on_error: raw.on_error.unwrap_or_default(),
            r#match: raw.r#match.unwrap_or_default(),
            federation_secrets: raw.federation_secrets.unwrap_or_default(),
            fleet: raw.fleet.unwrap_or_default(),
        };
        values.validate()?;
        Ok(values)
    }

    /// Findings that are not errors: files the federation jobs read (`tls_config.ca_file`,
    /// `basic_auth.password_file`, ...) that none of `federationSecrets` mounts. Prometheus starts
    /// without such a file, logs once and never scrapes the job, so a typo here silently drops a
    /// cluster. Only checked when `federationSecrets` is used (else the files come from elsewhere).
    pub fn warnings(&self) -> Vec<String> {
        if self.federation_secrets.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for sc in &self.additional_scrape_configs {
            let job = sc
                .get("job_name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut files = Vec::new();
            collect_files(&Value::Mapping(sc.clone()), "", &mut files);
            for (key, path) in files {
                let mounted = self
                    .federation_secrets
                    .iter()
                    .any(|s| path.starts_with(&format!("{}/", s.mount_path.trim_end_matches('/'))));
                if !mounted {
                    out.push(format!(
                        "additionalScrapeConfigs job {job:?}: {key} {path:?} is not under any federationSecrets \
                         mountPath; Prometheus will not scrape this job unless the file exists in its pod"
                    ));
                }
            }
        }
        out
    }

    /// Checks every rule the rest of promfed relies on. Returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !is_label_name(&self.cluster_label_name) {
            return bad(format!(
                "clusterLabelName {:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                self.cluster_label_name
            ));
        }
        if self.cluster_label_name.starts_with("__") {
            return bad(format!(
                "clusterLabelName {:?} starts with \"__\", which Prometheus reserves for internal labels \
                 that are dropped after relabelling",
                self.cluster_label_name
            ));
        }
        if let Some((_, why)) = RESERVED_LABELS
            .iter()
            .find(|(l, _)| *l == self.cluster_label_name)
        {
            return bad(format!(
                "clusterLabelName {:?} is a label Prometheus already uses ({why}); the local relabel rule \
                 would overwrite it on every local target. Pick another name, e.g. \"cluster\"",
                self.cluster_label_name
            ));
        }
        if self.local_cluster_name.is_empty() {
            return bad("localClusterName must not be empty".to_owned());
        }
        let mut jobs = BTreeSet::new();
        for (i, sc) in self.additional_scrape_configs.iter().enumerate() {
            let job = match sc.get("job_name") {
                Some(Value::String(j)) if !j.is_empty() => j.clone(),
                Some(_) => {
                    return bad(format!(
                        "additionalScrapeConfigs[{i}]: job_name must be a non-empty string"
                    ));
                }
                None => return bad(format!("additionalScrapeConfigs[{i}] has no job_name")),
            };
            if !jobs.insert(job.clone()) {
                return bad(format!(
                    "additionalScrapeConfigs[{i}]: job_name {job:?} is used twice; job names must be unique"
                ));
            }
            self.validate_static_configs(i, &job, sc)?;
        }
        let mut keys = BTreeSet::new();
        for (i, key) in self.rule_files.iter().enumerate() {
            if key.is_empty() {
                return bad(format!("ruleFiles[{i}] is empty"));
            }
            if key == PROMETHEUS_YML {
                return bad(format!(
                    "ruleFiles[{i}]: {PROMETHEUS_YML} is the main configuration, not a rule file"
                ));
            }
            if !keys.insert(key) {
                return bad(format!("ruleFiles[{i}]: {key:?} is listed twice"));
            }
        }
        validate_match(
            "match.configMap",
            &self.r#match.config_map.name,
            &self.r#match.config_map.labels,
        )?;
        validate_match(
            "match.deployment",
            &self.r#match.deployment.name,
            &self.r#match.deployment.labels,
        )?;
        if self.r#match.deployment.container.is_empty() {
            return bad("match.deployment.container must not be empty".to_owned());
        }
        self.fleet.validate().map_err(ConfigError::Invalid)?;
        self.validate_federation_secrets()
    }

    fn validate_static_configs(
        &self,
        i: usize,
        job: &str,
        sc: &Mapping,
    ) -> Result<(), ConfigError> {
        let label = &self.cluster_label_name;
        let at = format!("additionalScrapeConfigs[{i}] (job {job:?})");
        // Only static_configs can carry the cluster label per target; discovered targets would
        // be appended unlabelled and mix with the local series.
        if let Some(sd) = sc
            .iter()
            .filter(|(_, v)| !v.is_null())
            .filter_map(|(k, _)| k.as_str())
            .find(|k| k.ends_with("_sd_configs"))
        {
            return Err(ConfigError::Invalid(format!(
                "{at}: {sd} is not supported in a federation job: its targets would carry no {label:?} \
                 label. List the federated Prometheus servers in static_configs, each with labels: \
                 {{{label}: <cluster name>}}"
            )));
        }
        let statics = match sc.get("static_configs") {
            None | Some(Value::Null) => {
                return Err(ConfigError::Invalid(format!(
                    "{at}: has no static_configs; every federation target must be listed there with \
                     labels: {{{label}: <cluster name>}}"
                )));
            }
            Some(Value::Sequence(s)) => s,
            Some(_) => {
                return Err(ConfigError::Invalid(format!(
                    "{at}: static_configs must be a list"
                )));
            }
        };
        for (j, st) in statics.iter().enumerate() {
            let targets = flow_list(st.get("targets"));
            let value = st.get("labels").and_then(|l| l.get(label.as_str()));
            match value {
                Some(Value::String(v)) if v == &self.local_cluster_name => {
                    return Err(ConfigError::Invalid(format!(
                        "scrape config {job:?} for targets {targets} (static_configs[{j}]) labels its targets \
                         {label}={v:?}, which is localClusterName: federated series would mix with local ones"
                    )));
                }
                Some(Value::String(v)) if !v.is_empty() => {}
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "scrape config {job:?} for targets {targets} (static_configs[{j}]) does not have a \
                         non-empty label {label:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_federation_secrets(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        let mut paths: Vec<(usize, String)> = Vec::new();
        for (i, s) in self.federation_secrets.iter().enumerate() {
            let at = format!("federationSecrets[{i}] (secret {:?})", s.secret_name);
            if !is_dns1123_subdomain(&s.secret_name) {
                return Err(ConfigError::Invalid(format!(
                    "{at}: secretName is not a valid DNS-1123 name (lower case alphanumerics, '-' and '.', \
                     at most 253 characters)"
                )));
            }
            if !names.insert(s.secret_name.clone()) {
                return Err(ConfigError::Invalid(format!("{at}: secret listed twice")));
            }
            let p = &s.mount_path;
            if !p.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "{at}: mountPath {p:?} is not absolute"
                )));
            }
            if normalize_path(p).as_deref() != Some(p.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{at}: mountPath {p:?} is not normalized (no trailing '/', '//', '.' or '..')"
                )));
            }
            for reserved in RESERVED_MOUNT_PATHS {
                if path_overlaps(p, reserved) {
                    return Err(ConfigError::Invalid(format!(
                        "{at}: mountPath {p:?} overlaps {reserved}, which the Prometheus pod already uses"
                    )));
                }
            }
            for (j, other) in &paths {
                if path_overlaps(p, other) {
                    return Err(ConfigError::Invalid(format!(
                        "{at}: mountPath {p:?} overlaps federationSecrets[{j}]'s {other:?}"
                    )));
                }
            }
            if let Some(mode) = s.default_mode.filter(|m| !(0..=0o777).contains(m)) {
                return Err(ConfigError::Invalid(format!(
                    "{at}: defaultMode {mode} is not within 0..=0777"
                )));
            }
            paths.push((i, p.clone()));
        }
        Ok(())
    }
}

fn validate_match(
    at: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::Invalid(format!("{at}.name must not be empty")));
    }
    if let Some(k) = labels.keys().find(|k| k.is_empty()) {
        return Err(ConfigError::Invalid(format!(
            "{at}.labels has an empty key {k:?}"
        )));
    }
    Ok(())
}

/// The keys the values file knows, nested: unknown keys anywhere are errors naming their path.
/// `Free` is a mapping whose keys are the user's (labels, Prometheus scrape configs).
enum Shape {
    Keys(&'static [(&'static str, Shape)]),
    ListOf(&'static Shape),
    Free,
}

const OBJECT_MATCH: Shape = Shape::Keys(&[("name", Shape::Free), ("labels", Shape::Free)]);
const DEPLOYMENT_MATCH: Shape = Shape::Keys(&[
    ("name", Shape::Free),
    ("labels", Shape::Free),
    ("container", Shape::Free),
]);
const SECRET_ITEM: Shape = Shape::Keys(&[
    ("key", Shape::Free),
    ("path", Shape::Free),
    ("mode", Shape::Free),
]);
const FEDERATION_SECRET: Shape = Shape::Keys(&[
    ("secretName", Shape::Free),
    ("mountPath", Shape::Free),
    ("items", Shape::ListOf(&SECRET_ITEM)),
    ("defaultMode", Shape::Free),
]);
const VALUES_SHAPE: Shape = Shape::Keys(&[
    ("localClusterName", Shape::Free),
    ("clusterLabelName", Shape::Free),
    ("additionalScrapeConfigs", Shape::Free),
    ("ruleFiles", Shape::Free),
    ("onError", Shape::Free),
    (
        "match",
        Shape::Keys(&[
            ("configMap", OBJECT_MATCH),
            ("deployment", DEPLOYMENT_MATCH),
        ]),
    ),
    ("federationSecrets", Shape::ListOf(&FEDERATION_SECRET)),
    (
        "fleet",
        Shape::Keys(&[
            ("ruleFiles", Shape::Free),
            (
                "health",
                Shape::Keys(&[
                    ("enabled", Shape::Free),
                    ("ruleFile", Shape::Free),
                    ("for", Shape::Free),
                    ("staleAfter", Shape::Free),
                ]),
            ),
        ]),
    ),
]);

/// Unknown keys are errors, at any depth, with their path and the closest known key suggested.
fn check_known_keys(map: &Mapping) -> Result<(), ConfigError> {
    let Shape::Keys(known) = VALUES_SHAPE else {
        return Ok(());
    };
    check_keys(map, known, "")
}

fn check_shape(v: &Value, shape: &Shape, at: &str) -> Result<(), ConfigError> {
    match (shape, v) {
        (Shape::Keys(known), Value::Mapping(m)) => check_keys(m, known, at),
        (Shape::ListOf(inner), Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_shape(item, inner, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        // Wrong types are reported by the typed parse, with their path.
        _ => Ok(()),
    }
}

fn check_keys(m: &Mapping, known: &[(&str, Shape)], at: &str) -> Result<(), ConfigError> {
    for (key, child) in m {
        let Value::String(k) = key else {
            let place = if at.is_empty() { "top level" } else { at };
            return Err(ConfigError::Invalid(format!(
                "{place}: keys must be strings, found {}",
                describe(key)
            )));
        };
        let here = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match known.iter().find(|(name, _)| name == k) {
            Some((_, inner)) => check_shape(child, inner, &here)?,
            None => {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                return Err(ConfigError::Invalid(format!(
                    "unknown key {here:?}{}",
                    suggest(k, &names)
                )));
            }
        }
    }
    Ok(())
}

/// `; did you mean "x"?` for a near miss, else the list of known keys.
fn suggest(key: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&key.to_lowercase(), &k.to_lowercase()),
                k,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 3 => format!("; did you mean {k:?}?"),
        _ => format!("; known keys here are {}", known.join(", ")),
    }
}

/// Renders a YAML list of scalars as `[a, b]` for messages (like the seed's assert).
fn flow_list(v: Option<&Value>) -> String {
    let items: Vec<String> = match v {
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            })
            .collect(),
        Some(other) => vec![
            serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ],
        None => Vec::new(),
    };
    format!("[{}]", items.join(", "))
}

/// A short description of a YAML value's type, for error messages.
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Kubernetes DNS-1123 subdomain (the rule for Secret names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Lexically normalizes an absolute path; `None` when it climbs above `/`.
fn normalize_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    // `Path::components` silently drops `.`, `//` and a trailing `/`; compare textually.
    let joined = format!("/{}", parts.join("/"));
    if p.contains("/./")
        || p.ends_with("/.")
        || p.contains("//")
        || (p.len() > 1 && p.ends_with('/'))
    {
        return Some(format!("{joined}\u{0}"));
    }
    Some(joined)
}

/// Collects `(dotted.key, path)` of every string setting whose key ends in `_file`.
fn collect_files(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                let here = if at.is_empty() {
                    k.to_owned()
                } else {
                    format!("{at}.{k}")
                };
                match child {
                    Value::String(path) if k.ends_with("_file") => out.push((here, path.clone())),
                    _ => collect_files(child, &here, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|c| collect_files(c, at, out)),
        _ => {}
    }
}

/// True when one path equals the other or is nested inside it.
fn path_overlaps(a: &str, b: &str) -> bool {
    let nested =
        |x: &str, y: &str| x == y || x.starts_with(&format!("{}/", y.trim_end_matches('/')));
    nested(a, b) || nested(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"#@data/values
---
localClusterName: shared-tools
clusterLabelName: cluster
additionalScrapeConfigs:
- job_name: "federation"
  static_configs:
  - targets: [ prom.other.cluster.local ]
    labels:  { cluster: other }
  - targets: [ prom.random.cluster.local ]
    labels:  { cluster: random }
  scheme: https
  metrics_path: /federate
  params:
    'match[]':
    - '{__name__!=""}'
  honor_labels: true
  tls_config:
    ca_file: /etc/prometheus/addCerts/federation/ca.crt
    cert_file: /etc/prometheus/addCerts/federation/tls.crt
    key_file: /etc/prometheus/addCerts/federation/tls.key
    server_name: prom-federation
"#;

    fn err(text: &str) -> String {
        Values::from_yaml_str(text)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn seed_values_are_accepted_unchanged() {
        let v = Values::from_yaml_str(SEED).unwrap();
        assert_eq!(v.local_cluster_name, "shared-tools");
        assert_eq!(v.cluster_label_name, "cluster");
        assert_eq!(v.additional_scrape_configs.len(), 1);
        assert_eq!(v.rule_files, vec!["recording_rules.yml"]);
        assert_eq!(v.on_error, OnError::Deny);
    }

    #[test]
    fn empty_and_null_mean_defaults() {
        assert_eq!(Values::from_yaml_str("").unwrap(), Values::default());
        assert_eq!(
            Values::from_yaml_str("#@data/values\n---\n").unwrap(),
            Values::default()
        );
        let v = Values::from_yaml_str(
            "localClusterName:\nclusterLabelName: ~\nadditionalScrapeConfigs:\n",
        )
        .unwrap();
        assert_eq!(v, Values::default());
    }

    #[test]
    fn typo_suggests_the_known_key() {
        let e = err("localClustername: tools\n");
        assert!(
            e.contains("unknown key \"localClustername\"")
                && e.contains("did you mean \"localClusterName\""),
            "{e}"
        );
        let e = err("frobnicate: 1\n");
        assert!(e.contains("known keys here are"), "{e}");
    }

    #[test]
    fn nested_typos_name_their_path_and_suggest() {
        let e = err("match:\n  configmap: {}\n");
        assert!(
            e.contains("unknown key \"match.configmap\"")
                && e.contains("did you mean \"configMap\""),
            "{e}"
        );
        let e = err("match:\n  deployment:\n    containr: x\n");
        assert!(
            e.contains("\"match.deployment.containr\"") && e.contains("\"container\""),
            "{e}"
        );
        let e = err("federationSecrets:\n- secretName: a\n  mountpath: /x\n");
        assert!(
            e.contains("\"federationSecrets[0].mountpath\"") && e.contains("\"mountPath\""),
            "{e}"
        );
        // Labels and scrape configs are the user's own keys: never flagged.
        assert!(Values::from_yaml_str("match:\n  configMap:\n    labels: {anything: x}\n").is_ok());
    }

    #[test]
    fn wrong_types_name_their_key_path() {
        let e = err("localClusterName: 42\n");
        assert!(
            e.starts_with("values: localClusterName: invalid type"),
            "{e}"
        );
        let e = err("match:\n  configMap:\n    name: [a]\n");
        assert!(
            e.starts_with("values: match.configMap.name: invalid type"),
            "{e}"
        );
        let e = err("federationSecrets:\n- secretName: a\n  mountPath: /x\n  defaultMode: rw\n");
        assert!(
            e.contains("federationSecrets[0].defaultMode: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn cluster_label_name_must_not_be_a_prometheus_label() {
        for l in ["job", "instance", "le", "quantile"] {
            let e = err(&format!("clusterLabelName: {l}\n"));
            assert!(
                e.contains(&format!(
                    "clusterLabelName \"{l}\" is a label Prometheus already uses"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn federation_jobs_need_static_configs() {
        let e = err(
            "additionalScrapeConfigs:\n- job_name: fed\n  kubernetes_sd_configs: [{role: pod}]\n",
        );
        assert!(
            e.contains(
                "additionalScrapeConfigs[0] (job \"fed\"): kubernetes_sd_configs is not supported"
            ),
            "{e}"
        );
        let e = err("additionalScrapeConfigs:\n- job_name: fed\n  metrics_path: /federate\n");
        assert!(
            e.contains("(job \"fed\"): has no static_configs")
                && e.contains("{cluster: <cluster name>}"),
            "{e}"
        );
        // Discovery next to correct static_configs still leaves discovered targets unlabelled.
        let e = err(
            "additionalScrapeConfigs:\n- job_name: fed\n  static_configs: [{targets: [a], labels: {cluster: a}}]\n  dns_sd_configs: [{names: [x]}]\n",
        );
        assert!(e.contains("dns_sd_configs is not supported"), "{e}");
    }

    #[test]
    fn cluster_label_name_must_be_a_label_name() {
        assert!(err("clusterLabelName: 1cluster\n").contains("not a valid Prometheus label name"));
        assert!(
            err("clusterLabelName: my-cluster\n").contains("not a valid Prometheus label name")
        );
        assert!(err("clusterLabelName: __cluster\n").contains("starts with \"__\""));
        assert!(Values::from_yaml_str("clusterLabelName: originCluster\n").is_ok());
    }

    #[test]
    fn local_cluster_name_must_not_be_empty() {
        assert!(err("localClusterName: ''\n").contains("localClusterName must not be empty"));
    }

    #[test]
    fn scrape_configs_need_job_names_unique() {
        assert!(
            err("additionalScrapeConfigs:\n- static_configs: []\n")
                .contains("additionalScrapeConfigs[0] has no job_name")
        );
        let job_a = "- job_name: a\n  static_configs: [{targets: [x], labels: {cluster: x}}]\n";
        let e = err(&format!("additionalScrapeConfigs:\n{job_a}{job_a}"));
        assert!(
            e.contains("additionalScrapeConfigs[1]") && e.contains("used twice"),
            "{e}"
        );
        assert!(
            err("additionalScrapeConfigs:\n- 3\n")
                .contains("additionalScrapeConfigs[0]: expected a scrape config mapping")
        );
    }

    #[test]
    fn static_configs_need_the_cluster_label() {
        let e = err(
            "additionalScrapeConfigs:\n- job_name: fed\n  static_configs:\n  - targets: [a:9090]\n    labels: {env: x}\n",
        );
        assert!(
            e.contains("scrape config \"fed\" for targets [a:9090]")
                && e.contains("label \"cluster\""),
            "{e}"
        );
        let e = err(
            "clusterLabelName: originCluster\nadditionalScrapeConfigs:\n- job_name: fed\n  static_configs:\n  - targets: [a]\n    labels: {cluster: x}\n",
        );
        assert!(e.contains("label \"originCluster\""), "{e}");
        let e = err(
            "localClusterName: tools\nadditionalScrapeConfigs:\n- job_name: fed\n  static_configs:\n  - targets: [a]\n    labels: {cluster: tools}\n",
        );
        assert!(e.contains("which is localClusterName"), "{e}");
    }

    #[test]
    fn rule_files_are_checked() {
        assert!(err("ruleFiles: [prometheus.yml]\n").contains("main configuration"));
        assert!(err("ruleFiles: [a, a]\n").contains("listed twice"));
        let v = Values::from_yaml_str("ruleFiles: [recording_rules.yml, alerting_rules.yml]\n")
            .unwrap();
        assert_eq!(v.rule_files.len(), 2);
    }

    #[test]
    fn on_error_and_match() {
        let v = Values::from_yaml_str("onError: allow\nmatch:\n  configMap:\n    labels: {app.kubernetes.io/name: prometheus}\n").unwrap();
        assert_eq!(v.on_error, OnError::Allow);
        assert_eq!(v.r#match.config_map.name, "prometheus-server");
        assert!(err("onError: maybe\n").contains("unknown variant"));
        assert!(err("onError: maybe\n").starts_with("values: onError: unknown variant"));
    }

    #[test]
    fn federation_secrets_are_checked() {
        let ok = "federationSecrets:\n- secretName: fed-certs\n  mountPath: /etc/prometheus/addCerts/federation\n";
        assert_eq!(
            Values::from_yaml_str(ok).unwrap().federation_secrets.len(),
            1
        );
        let cases = [
            ("- secretName: Fed_Certs\n  mountPath: /a\n", "DNS-1123"),
            ("- secretName: a\n  mountPath: rel/path\n", "not absolute"),
            ("- secretName: a\n  mountPath: /a/../b\n", "not normalized"),
            ("- secretName: a\n  mountPath: /a/\n", "not normalized"),
            (
                "- secretName: a\n  mountPath: /etc/config/x\n",
                "overlaps /etc/config",
            ),
            ("- secretName: a\n  mountPath: /data\n", "overlaps /data"),
            (
                "- secretName: a\n  mountPath: /x\n- secretName: b\n  mountPath: /x/y\n",
                "federationSecrets[1]",
            ),
            (
                "- secretName: a\n  mountPath: /x\n- secretName: a\n  mountPath: /y\n",
                "listed twice",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&format!("federationSecrets:\n{yaml}"));
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn unmounted_federation_files_are_warned_about() {
        let with = |mount: &str| {
            Values::from_yaml_str(&format!(
                "{SEED}federationSecrets:\n- secretName: fed\n  mountPath: {mount}\n"
            ))
            .unwrap()
        };
        assert!(
            with("/etc/prometheus/addCerts/federation")
                .warnings()
                .is_empty()
        );
        let w = with("/etc/prometheus/addcerts/federation").warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].contains(
                "\"federation\": tls_config.ca_file \"/etc/prometheus/addCerts/federation/ca.crt\""
            ),
            "{w:?}"
        );
        // Without federationSecrets the files are mounted some other way: nothing to say.
        assert!(Values::from_yaml_str(SEED).unwrap().warnings().is_empty());
    }

    #[test]
    fn object_match_is_a_label_subset() {
        let m = ObjectMatch::default();
        let mut labels = default_object_labels();
        labels.insert("extra".into(), "x".into());
        assert!(m.matches(Some("prometheus-server"), Some(&labels)));
        assert!(!m.matches(Some("other"), Some(&labels)));
        labels.remove("app");
        assert!(!m.matches(Some("prometheus-server"), Some(&labels)));
        assert!(!m.matches(Some("prometheus-server"), None));
    }
}
