//! Per rule file mode (local, fleet or untouched) and the fleet the values describe.
//!
//! The values key `fleet` (all optional):
//! ```yaml
//! fleet:
//!   ruleFiles:                     # ConfigMap data key -> local | fleet | untouched
//!     alerting_rules.yml: fleet
//!   health: {enabled: true, ruleFile: alerting_rules.yml, for: 2m, staleAfter: 2m}
//! ```
//! A key listed in `fleet.ruleFiles` takes that mode; otherwise a key of the top-level
//! `ruleFiles` is local (the seed's meaning), `alerting_rules.yml` is fleet (the only mode that
//! alerts correctly for every cluster; see README "Fleet alerting"), and anything else is
//! untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::config::Values;
use crate::promql::{
    FleetOptions, PromqlError, RewriteOptions, Rewritten, rewrite_expr, rewrite_fleet_expr,
};

/// The data key whose mode defaults to fleet.
pub const ALERTING_RULES_KEY: &str = "alerting_rules.yml";

/// How the rules of one rule file are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Pinned to the local cluster, labelled `<label>=<local>` (the seed's contract).
    Local,
    /// Evaluated for every known cluster, each result labelled with its cluster.
    Fleet,
    /// Left as written.
    Untouched,
}

/// The values key `fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetValues {
    /// Mode per ConfigMap data key; overrides the defaults.
    #[serde(default)]
    pub rule_files: BTreeMap<String, FileMode>,
    /// The federation-health rule group.
    #[serde(default)]
    pub health: HealthValues,
}

/// The federation-health rule group promfed adds (see `rewrite::health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthValues {
    /// Opt-out switch.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The data key (a rule file Prometheus already loads) the group is appended to.
    #[serde(default = "alerting_rules_key")]
    pub rule_file: String,
    /// `for` of the health alerts.
    #[serde(default = "two_minutes", rename = "for")]
    pub for_: String,
    /// Age of a cluster's newest federated `up` sample past which its series count as stale.
    #[serde(default = "two_minutes")]
    pub stale_after: String,
}

impl Default for HealthValues {
    fn default() -> Self {
        Self {
            enabled: true,
            rule_file: alerting_rules_key(),
            for_: two_minutes(),
            stale_after: two_minutes(),
        }
    }
}

fn yes() -> bool {
    true
}
fn alerting_rules_key() -> String {
    ALERTING_RULES_KEY.to_owned()
}
fn two_minutes() -> String {
    "2m".to_owned()
}

impl FleetValues {
    /// Checks what Prometheus would otherwise reject later (durations) and impossible keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.rule_files.contains_key(crate::config::PROMETHEUS_YML) {
            return Err(format!(
                "fleet.ruleFiles: {} is the main configuration, not a rule file",
                crate::config::PROMETHEUS_YML
            ));
        }
        if self.rule_files.keys().any(String::is_empty) {
            return Err("fleet.ruleFiles has an empty key".to_owned());
        }
        let h = &self.health;
        if h.rule_file.is_empty() {
            return Err("fleet.health.ruleFile must not be empty".to_owned());
        }
        for (name, d) in [("for", &h.for_), ("staleAfter", &h.stale_after)] {
            if duration_seconds(d).is_none() {
                return Err(format!(
                    "fleet.health.{name}: {d:?} is not a Prometheus duration such as 30s, 2m or 1h30m"
                ));
            }
        }
        Ok(())
    }
}

/// The mode of data key `key` (module docs).
pub fn mode(values: &Values, key: &str) -> FileMode {
    if let Some(m) = values.fleet.rule_files.get(key) {
        return *m;
    }
    if values.rule_files.iter().any(|k| k == key) {
        FileMode::Local
    } else if key == ALERTING_RULES_KEY {
        FileMode::Fleet
    } else {
        FileMode::Untouched
    }
}

/// True when the values name `key` themselves (a `ruleFiles` list other than the default, or
/// `fleet.ruleFiles`), as opposed to a default (`recording_rules.yml`, and `alerting_rules.yml`
/// in fleet mode): only then is a ConfigMap without that key worth a warning (a typo).
pub fn named_rule_file(values: &Values, key: &str) -> bool {
    let own_list = values.rule_files != Values::default().rule_files;
    (own_list && values.rule_files.iter().any(|k| k == key))
        || values.fleet.rule_files.contains_key(key)
}

/// The data keys promfed rewrites, in a stable order: `ruleFiles` first, then the other keys
/// in local or fleet mode (`alerting_rules.yml` by default).
pub fn rule_file_keys(values: &Values) -> Vec<String> {
    let mut keys: Vec<String> = values.rule_files.clone();
    keys.push(ALERTING_RULES_KEY.to_owned());
    keys.extend(values.fleet.rule_files.keys().cloned());
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        if !out.contains(&k) && mode(values, &k) != FileMode::Untouched {
            out.push(k);
        }
    }
    out
}

/// C: the local cluster, then every cluster label value of the federation jobs' static
/// targets, each once.
pub fn known_clusters(values: &Values) -> Vec<String> {
    let mut out = vec![values.local_cluster_name.clone()];
    for (_, cluster) in federation_targets(values) {
        if !out.contains(&cluster) {
            out.push(cluster);
        }
    }
    out
}

/// `(job_name, cluster)` for every static target group of the federation jobs.
pub fn federation_targets(values: &Values) -> Vec<(String, String)> {
    let label = values.cluster_label_name.as_str();
    let mut out = Vec::new();
    for sc in &values.additional_scrape_configs {
        let Some(job) = sc.get("job_name").and_then(Value::as_str) else {
            continue;
        };
        let Some(Value::Sequence(statics)) = sc.get("static_configs") else {
            continue;
        };
        for st in statics {
            if let Some(c) = st
                .get("labels")
                .and_then(|l| l.get(label))
                .and_then(Value::as_str)
            {
                out.push((job.to_owned(), c.to_owned()));
            }
        }
    }
    out
}

/// How the rules of one file are rewritten: built once per file by the rule-file rewrite.
#[derive(Debug, Clone)]
pub enum RuleMode {
    /// The local contract, and every rule labelled `<label>=<local>`.
    Local(RewriteOptions),
    /// The fleet contract; rules get no cluster label (their results carry their own).
    Fleet(FleetOptions),
}

impl RuleMode {
    /// The mode for data key `key` (an untouched key is never rewritten, see [`rule_file_keys`];
    /// it gets the local mode here so a direct call keeps today's behaviour).
    pub fn new(key: &str, values: &Values) -> Self {
        let label = values.cluster_label_name.clone();
        if mode(values, key) == FileMode::Fleet {
            return Self::Fleet(FleetOptions {
                label,
                clusters: known_clusters(values),
            });
        }
        Self::Local(RewriteOptions {
            label,
            value: values.local_cluster_name.clone(),
            regex: false,
            tag_labelless: true,
        })
    }

    /// Rewrites one rule expression.
    pub fn rewrite(&self, expr: &str) -> Result<Rewritten, PromqlError> {
        match self {
            Self::Local(o) => rewrite_expr(expr, o),
            Self::Fleet(o) => rewrite_fleet_expr(expr, o),
        }
    }

    /// Whether every rule gets `labels.<label>: <local>` (local mode only).
    pub fn labels_rules(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    /// In fleet mode, a rule that sets the cluster label itself overrides every result's
    /// cluster (results of different clusters then collide): the finding, if so.
    pub fn rule_label_warning(&self, labels: Option<&Value>) -> Option<String> {
        let Self::Fleet(o) = self else { return None };
        let v = labels?.get(o.label.as_str())?;
        Some(format!(
            "sets labels.{}: {} itself; in fleet mode every result carries its own cluster, which \
             this overrides: the contract cannot hold",
            o.label,
            serde_yaml::to_string(v).unwrap_or_default().trim()
        ))
    }
}

/// Warnings for a tools cluster (one with federation jobs): alerting rules promfed leaves
/// untouched mix every cluster's series (`absent(...)` never fires while any cluster has the
/// series), and a federation-health group that has nowhere to go.
pub fn untouched_alerting_warnings(
    data: &BTreeMap<String, String>,
    values: &Values,
) -> Vec<String> {
    if values.additional_scrape_configs.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let h = &values.fleet.health;
    if h.enabled {
        let key = &h.rule_file;
        let why = if mode(values, key) == FileMode::Untouched {
            Some("its mode is untouched")
        } else if !data.contains_key(key) {
            Some("the ConfigMap has no such key")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(format!(
                "the federation-health rule group is not added to data key {key:?}: {why}; set \
                 fleet.health.ruleFile to a rule file prometheus.yml loads"
            ));
        }
    }
    for (key, text) in data {
        if key == crate::config::PROMETHEUS_YML || mode(values, key) != FileMode::Untouched {
            continue;
        }
        if has_alerting_rules(text) {
            out.push(format!(
                "data key {key:?} holds alerting rules that promfed leaves untouched: on this tools \
                 cluster they mix every cluster's series; set fleet.ruleFiles.{key}: fleet to alert per cluster"
            ));
        }
    }
    out
}

/// True when `text` parses as a rule file with at least one `alert:` rule.
fn has_alerting_rules(text: &str) -> bool {
    let Ok(doc) = crate::yaml::parse(text) else {
        return false;
    };
    doc.get("groups")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("rules").and_then(Value::as_sequence))
        .flatten()
        .any(|r| r.get("alert").is_some())
}

/// Seconds of a Prometheus duration (`1h30m`, `30s`, `500ms`); `None` when it is not one.
pub fn duration_seconds(d: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 7] = [
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
        ("w", 604_800.0),
        ("y", 31_536_000.0),
    ];
    let mut rest = d;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 15 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))?;
        rest = &rest[unit.len()..];
        total += n * scale;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(extra: &str) -> Values {
        Values::from_yaml_str(&format!(
            "localClusterName: tools\nadditionalScrapeConfigs:\n- job_name: federation\n  \
             static_configs:\n  - targets: [a:9090]\n    labels: {{cluster: a}}\n  - targets: [b:9090]\n    \
             labels: {{cluster: b}}\n{extra}"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn modes_default_to_the_seed_meaning_and_fleet_alerting() {
        let v = values("");
        assert_eq!(mode(&v, "recording_rules.yml"), FileMode::Local);
        assert_eq!(mode(&v, ALERTING_RULES_KEY), FileMode::Fleet);
        assert_eq!(mode(&v, "alerts"), FileMode::Untouched);
        assert_eq!(
            rule_file_keys(&v),
            ["recording_rules.yml", "alerting_rules.yml"]
        );
        assert_eq!(known_clusters(&v), ["tools", "a", "b"]);
        let v = values("ruleFiles: [alerting_rules.yml]\nfleet:\n  ruleFiles: {alerts: fleet}\n");
        assert_eq!(mode(&v, ALERTING_RULES_KEY), FileMode::Local);
        assert_eq!(rule_file_keys(&v), ["alerting_rules.yml", "alerts"]);
        let v = values("fleet:\n  ruleFiles: {alerting_rules.yml: untouched}\n");
        assert_eq!(rule_file_keys(&v), ["recording_rules.yml"]);
    }

    #[test]
    fn untouched_alerting_rules_on_a_tools_cluster_warn() {
        let v = values("fleet:\n  ruleFiles: {alerting_rules.yml: untouched}\n");
        let data = BTreeMap::from([
            (
                ALERTING_RULES_KEY.to_owned(),
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n".to_owned(),
            ),
            ("other".to_owned(), "not: [rules".to_owned()),
        ]);
        let w = untouched_alerting_warnings(&data, &v);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("federation-health") && w[0].contains("untouched"),
            "{w:?}"
        );
        assert!(w[1].contains("holds alerting rules"), "{w:?}");
        assert!(untouched_alerting_warnings(&data, &values("")).is_empty());
        let w = untouched_alerting_warnings(&BTreeMap::new(), &values(""));
        assert!(w.len() == 1 && w[0].contains("no such key"), "{w:?}");
        let off = values("fleet:\n  health: {enabled: false}\n");
        assert!(untouched_alerting_warnings(&BTreeMap::new(), &off).is_empty());
    }

    #[test]
    fn bad_fleet_values_are_refused_with_the_place() {
        for (extra, want) in [
            ("fleet:\n  health: {for: soon}\n", "fleet.health.for"),
            ("fleet:\n  ruleFiles: {a: global}\n", "unknown variant"),
            (
                "fleet:\n  ruleFiles: {prometheus.yml: fleet}\n",
                "main configuration",
            ),
            (
                "fleet:\n  helth: {}\n",
                "unknown key \"fleet.helth\"; did you mean \"health\"?",
            ),
        ] {
            let e = Values::from_yaml_str(extra)
                .err()
                .unwrap_or_else(|| panic!("accepted {extra}"))
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_seconds("1h30m"), Some(5400.0));
        assert_eq!(duration_seconds("500ms"), Some(0.5));
        assert_eq!(duration_seconds("2s"), Some(2.0));
        for bad in ["", "5", "m", "1.5m", "-1s", "1x"] {
            assert_eq!(duration_seconds(bad), None, "{bad}");
        }
    }
}
