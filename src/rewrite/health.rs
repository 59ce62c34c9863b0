//! The federation-health rule group promfed adds to one rule file (opt-out in values).
//!
//! Per federated cluster it records the federation scrape's `up`, its duration as a fraction of
//! the scrape timeout, the samples it returned and the age of the cluster's newest federated
//! `up` sample, and alerts when the federation is down, close to its timeout, empty, or its
//! series go stale. Every series carries the cluster label (from the federation job's static
//! targets), so an Alertmanager `inhibit_rules` entry with `equal: [<label>]` can silence a
//! cluster's own alerts while its federation is down (chart README).
//!
//! The group is promfed's by its name: it is never rewritten, it is replaced when the values
//! change and removed when disabled, so a second run changes nothing.

use serde_yaml::{Mapping, Value};

use super::fleet::{duration_seconds, federation_targets};
use crate::config::Values;
use crate::promql::quote_string;

/// Name of the group promfed owns.
pub const GROUP_NAME: &str = "promfed-federation-health";

/// Prometheus's default scrape timeout, used when a federation job sets none.
const DEFAULT_TIMEOUT_SECONDS: f64 = 10.0;

/// Fraction of the scrape timeout past which a federation scrape counts as slow.
const SLOW_RATIO: f64 = 0.8;

/// True for the group promfed owns (the rule-file rewrite skips it).
pub fn is_ours(group_name: &str) -> bool {
    group_name == GROUP_NAME
}

/// What the rule file of data key `key` needs done to the health group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEdit {
    /// Nothing: absent and not wanted, or present exactly as wanted.
    Keep,
    /// Append this group to `groups`.
    Append(Value),
    /// Replace the existing group with this one (the values changed).
    Replace(Value),
    /// Remove the existing group (disabled, or no federation job any more).
    Remove,
}

/// Decides the health group's edit for data key `key`, given the group of that name found in
/// the file (as Prometheus reads it), if any: appended, replaced when it differs, removed when
/// disabled, and nothing on a second run.
pub fn plan_group(key: &str, current: Option<&Value>, values: &Values) -> GroupEdit {
    let want = (key == values.fleet.health.rule_file)
        .then(|| group(values))
        .flatten();
    match (current, want) {
        (Some(have), Some(w)) if *have == w => GroupEdit::Keep,
        (Some(_), Some(w)) => GroupEdit::Replace(w),
        (None, Some(w)) => GroupEdit::Append(w),
        (Some(_), None) => GroupEdit::Remove,
        (None, None) => GroupEdit::Keep,
    }
}

/// The group for `values`; `None` when disabled or there is no federation job.
pub fn group(values: &Values) -> Option<Value> {
    let h = &values.fleet.health;
    if !h.enabled {
        return None;
    }
    let label = values.cluster_label_name.as_str();
    let mut jobs: Vec<(String, f64)> = Vec::new();
    for sc in &values.additional_scrape_configs {
        let Some(job) = sc.get("job_name").and_then(Value::as_str) else {
            continue;
        };
        let secs = |k: &str| sc.get(k).and_then(Value::as_str).and_then(duration_seconds);
        let timeout = secs("scrape_timeout").unwrap_or_else(|| {
            secs("scrape_interval")
                .map_or(DEFAULT_TIMEOUT_SECONDS, |i| i.min(DEFAULT_TIMEOUT_SECONDS))
        });
        jobs.push((job.to_owned(), timeout));
    }
    if jobs.is_empty() {
        return None;
    }
    let mut clusters: Vec<String> = Vec::new();
    for (_, c) in federation_targets(values) {
        if !clusters.contains(&c) {
            clusters.push(c);
        }
    }
    let q = |s: &str| quote_string(s);
    let per_job = |metric: &str, suffix: &dyn Fn(f64) -> String| {
        jobs.iter()
            .map(|(j, t)| format!("{metric}{{job={}}}{}", q(j), suffix(*t)))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let not_federation: String = jobs
        .iter()
        .map(|(j, _)| format!(", job!={}", q(j)))
        .collect();
    let age = clusters
        .iter()
        .map(|c| {
            format!(
                "time() - max by ({label}) (timestamp(up{{{label}={}{not_federation}}}))",
                q(c)
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    let stale = duration_seconds(&h.stale_after).unwrap_or(120.0);
    let mut rules = vec![
        record("promfed:federation_up", per_job("up", &|_| String::new())),
        record(
            "promfed:federation_scrape_timeout_ratio",
            per_job("scrape_duration_seconds", &|t| format!(" / {t}")),
        ),
        record(
            "promfed:federation_samples_scraped",
            per_job("scrape_samples_scraped", &|_| String::new()),
        ),
    ];
    if !age.is_empty() {
        rules.push(record("promfed:federation_newest_sample_age_seconds", age));
    }
    let l = format!("{{{{ $labels.{label} }}}}");
    rules.extend([
        alert(
            "PromfedFederationDown",
            "promfed:federation_up == 0",
            &h.for_,
            "critical",
            format!("Federation of cluster {l} is down"),
            format!(
                "The tools Prometheus cannot scrape {{{{ $labels.instance }}}} (job {{{{ $labels.job }}}}): \
                 no series, and no correct alerts, for cluster {l}."
            ),
        ),
        alert(
            "PromfedFederationSlow",
            &format!("promfed:federation_scrape_timeout_ratio > {SLOW_RATIO}"),
            &h.for_,
            "warning",
            format!("Federation of cluster {l} is close to its scrape timeout"),
            format!(
                "The federation scrape of {{{{ $labels.instance }}}} takes {{{{ $value | humanizePercentage }}}} \
                 of its timeout; past it, cluster {l} goes dark."
            ),
        ),
        alert(
            "PromfedFederationEmpty",
            "promfed:federation_samples_scraped == 0 and promfed:federation_up == 1",
            &h.for_,
            "warning",
            format!("Federation of cluster {l} returns no samples"),
            format!(
                "{{{{ $labels.instance }}}} answers /federate with nothing: check its match[] selectors and \
                 that cluster {l}'s Prometheus scrapes anything."
            ),
        ),
    ]);
    if !clusters.is_empty() {
        rules.push(alert(
            "PromfedFederationStale",
            // Only while the federation answers: when it is down, its samples (they carry
            // timestamps, so Prometheus never marks them stale) age too, and Down says it.
            &format!(
                "promfed:federation_newest_sample_age_seconds > {stale} and on ({label}) \
                 promfed:federation_up == 1"
            ),
            &h.for_,
            "warning",
            format!("Series of cluster {l} are going stale"),
            format!(
                "The newest federated `up` sample of cluster {l} is {{{{ $value | humanizeDuration }}}} old: \
                 its Prometheus has stopped scraping or federation lags."
            ),
        ));
    }
    let mut g = Mapping::new();
    g.insert("name".into(), GROUP_NAME.into());
    g.insert("rules".into(), Value::Sequence(rules));
    Some(Value::Mapping(g))
}

fn record(name: &str, expr: String) -> Value {
    let mut r = Mapping::new();
    r.insert("record".into(), name.into());
    r.insert("expr".into(), expr.into());
    Value::Mapping(r)
}

fn alert(
    name: &str,
    expr: &str,
    for_: &str,
    severity: &str,
    summary: String,
    description: String,
) -> Value {
    let mut labels = Mapping::new();
    labels.insert("severity".into(), severity.into());
    let mut annotations = Mapping::new();
    annotations.insert("summary".into(), summary.into());
    annotations.insert("description".into(), description.into());
    let mut r = Mapping::new();
    r.insert("alert".into(), name.into());
    r.insert("expr".into(), expr.into());
    r.insert("for".into(), for_.into());
    r.insert("labels".into(), Value::Mapping(labels));
    r.insert("annotations".into(), Value::Mapping(annotations));
    Value::Mapping(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(extra: &str) -> Values {
        Values::from_yaml_str(&format!(
            "localClusterName: tools\nadditionalScrapeConfigs:\n- job_name: federation\n  scrape_timeout: 5s\n  \
             static_configs:\n  - targets: [a:9090]\n    labels: {{cluster: a}}\n  - targets: [b:9090]\n    \
             labels: {{cluster: b}}\n{extra}"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(g: &Value) -> Vec<String> {
        g["rules"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("record").or(r.get("alert")))
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn group_has_records_and_alerts_per_cluster() {
        let g = group(&values("")).unwrap();
        assert_eq!(
            names(&g),
            [
                "promfed:federation_up",
                "promfed:federation_scrape_timeout_ratio",
                "promfed:federation_samples_scraped",
                "promfed:federation_newest_sample_age_seconds",
                "PromfedFederationDown",
                "PromfedFederationSlow",
                "PromfedFederationEmpty",
                "PromfedFederationStale",
            ]
        );
        let text = serde_yaml::to_string(&g).unwrap();
        assert!(
            text.contains("scrape_duration_seconds{job=\"federation\"} / 5"),
            "{text}"
        );
        assert!(
            text.contains("up{cluster=\"b\", job!=\"federation\"}"),
            "{text}"
        );
        assert!(
            text.contains("> 120 and on (cluster) promfed:federation_up == 1"),
            "stale only while the federation answers: {text}"
        );
    }

    #[test]
    fn plan_appends_replaces_removes_and_is_idempotent() {
        let v = values("");
        let GroupEdit::Append(g) = plan_group("alerting_rules.yml", None, &v) else {
            panic!("not appended")
        };
        assert_eq!(
            plan_group("alerting_rules.yml", Some(&g), &v),
            GroupEdit::Keep
        );
        assert_eq!(plan_group("recording_rules.yml", None, &v), GroupEdit::Keep);
        let changed = values("fleet:\n  health: {for: 5s}\n");
        assert!(matches!(
            plan_group("alerting_rules.yml", Some(&g), &changed),
            GroupEdit::Replace(_)
        ));
        let off = values("fleet:\n  health: {enabled: false}\n");
        assert_eq!(
            plan_group("alerting_rules.yml", Some(&g), &off),
            GroupEdit::Remove
        );
        assert!(
            group(&Values::default()).is_none(),
            "no federation job, no group"
        );
    }
}
