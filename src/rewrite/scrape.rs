//! `prometheus.yml`: label local scrapes and add the federation jobs.
//!
//! The seed appends the relabel rule blindly and extends `scrape_configs`, so a second run
//! doubles everything. Here the federation jobs are recognised by `job_name` (replaced in place
//! by their configured definition, never labelled as local) and the local rule is added only
//! when it is not already there; that makes the rewrite a fixed point.

use serde_yaml::{Mapping, Value};

use super::{Edit, parse_yaml};
use crate::config::{Values, describe};

/// Rewrites the text of `prometheus.yml`. `key` is the ConfigMap data key, for messages.
pub fn rewrite_prometheus_yml(key: &str, text: &str, values: &Values) -> Result<Edit, String> {
    let mut doc = parse_yaml(text)?;
    let mut warnings = Vec::new();
    if doc.is_null() {
        // An empty prometheus.yml: Prometheus's defaults, no jobs to label.
        if values.additional_scrape_configs.is_empty() {
            return Ok(Edit::unchanged(warnings));
        }
        doc = Value::Mapping(Mapping::new());
    }
    let root = match &mut doc {
        Value::Mapping(m) => m,
        other => {
            return Err(format!(
                "expected a mapping at the top level, found {}",
                describe(other)
            ));
        }
    };
    if root.contains_key("scrape_config_files") {
        warnings.push(format!(
            "{key}: scrape_config_files is set; jobs defined in those files are not labelled \
             {}={:?} and their series will look federated",
            values.cluster_label_name, values.local_cluster_name
        ));
    }
    let mut changed = false;
    let configs = root
        .entry(Value::String("scrape_configs".to_owned()))
        .or_insert(Value::Null);
    if configs.is_null() {
        if values.additional_scrape_configs.is_empty() {
            return Ok(Edit::unchanged(warnings));
        }
        *configs = Value::Sequence(Vec::new());
        changed = true;
    }
    let Value::Sequence(list) = configs else {
        return Err(format!(
            "scrape_configs must be a list, found {}",
            describe(configs)
        ));
    };
    let rule = local_rule(values);
    let mut seen_federation = vec![false; values.additional_scrape_configs.len()];
    for (i, sc) in list.iter_mut().enumerate() {
        let Value::Mapping(sc_map) = sc else {
            return Err(format!(
                "scrape_configs[{i}] must be a mapping, found {}",
                describe(sc)
            ));
        };
        let job = sc_map
            .get("job_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(f) = values
            .additional_scrape_configs
            .iter()
            .position(|fed| fed.get("job_name").and_then(Value::as_str) == Some(job.as_str()))
        {
            // The federation job itself: the configured definition wins; never label it local.
            if seen_federation[f] {
                return Err(format!(
                    "scrape_configs[{i}]: federation job {job:?} appears twice"
                ));
            }
            seen_federation[f] = true;
            if sc_map != &values.additional_scrape_configs[f] {
                *sc_map = values.additional_scrape_configs[f].clone();
                changed = true;
            }
            continue;
        }
        warnings.extend(super::checks::local_job_sets_cluster_label(
            &job, sc_map, values,
        ));
        changed |= add_local_rule(sc_map, &rule, values)
            .map_err(|e| format!("scrape config {job:?}: {e}"))?;
    }
    for (f, fed) in values.additional_scrape_configs.iter().enumerate() {
        if !seen_federation[f] {
            list.push(Value::Mapping(fed.clone()));
            changed = true;
        }
    }
    if !changed {
        return Ok(Edit::unchanged(warnings));
    }
    let text = serde_yaml::to_string(&doc).map_err(|e| format!("cannot serialise: {e}"))?;
    Ok(Edit {
        text: Some(text),
        warnings,
    })
}

/// The seed's rule: `{source_labels: [__address__], target_label: <label>, replacement: <local>}`.
fn local_rule(values: &Values) -> Mapping {
    let mut m = Mapping::new();
    m.insert(
        "source_labels".into(),
        Value::Sequence(vec![Value::String("__address__".to_owned())]),
    );
    m.insert(
        "target_label".into(),
        Value::String(values.cluster_label_name.clone()),
    );
    m.insert(
        "replacement".into(),
        Value::String(values.local_cluster_name.clone()),
    );
    m
}

/// Appends the local rule to `relabel_configs` unless an equivalent one is there. Returns whether it changed.
fn add_local_rule(sc: &mut Mapping, rule: &Mapping, values: &Values) -> Result<bool, String> {
    let relabel = sc
        .entry(Value::String("relabel_configs".to_owned()))
        .or_insert(Value::Null);
    if relabel.is_null() {
        *relabel = Value::Sequence(Vec::new());
    }
    let Value::Sequence(rules) = relabel else {
        return Err(format!(
            "relabel_configs must be a list, found {}",
            describe(relabel)
        ));
    };
    if rules.iter().any(|r| is_local_rule(r, values)) {
        return Ok(false);
    }
    rules.push(Value::Mapping(rule.clone()));
    Ok(true)
}

/// True for the seed's rule, also when spelled with Prometheus's defaults made explicit.
fn is_local_rule(r: &Value, values: &Values) -> bool {
    let Value::Mapping(m) = r else { return false };
    let str_is = |k: &str, want: &str| m.get(k).and_then(Value::as_str) == Some(want);
    let optional_is = |k: &str, default: &str| m.get(k).is_none() || str_is(k, default);
    let sources_ok = matches!(m.get("source_labels"), Some(Value::Sequence(s))
        if s.len() == 1 && s[0].as_str() == Some("__address__"));
    let known = [
        "source_labels",
        "target_label",
        "replacement",
        "action",
        "regex",
        "separator",
    ];
    sources_ok
        && str_is("target_label", &values.cluster_label_name)
        && str_is("replacement", &values.local_cluster_name)
        && optional_is("action", "replace")
        && optional_is("regex", "(.*)")
        && optional_is("separator", ";")
        && m.keys()
            .all(|k| k.as_str().is_some_and(|k| known.contains(&k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(extra: &str) -> Values {
        Values::from_yaml_str(&format!("localClusterName: tools\n{extra}")).unwrap()
    }

    const FED: &str = "additionalScrapeConfigs:\n- job_name: federation\n  metrics_path: /federate\n  static_configs:\n  - targets: ['a:9090']\n    labels: {cluster: a}\n";

    fn run(text: &str, v: &Values) -> Edit {
        rewrite_prometheus_yml("prometheus.yml", text, v).unwrap()
    }

    fn parsed(e: &Edit) -> Value {
        serde_yaml::from_str(e.text.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn labels_every_local_job_and_keeps_order() {
        let v = values("");
        let text = "global: {scrape_interval: 1m}\nscrape_configs:\n- job_name: a\n  static_configs: [{targets: [x]}]\n- job_name: b\n  relabel_configs:\n  - action: keep\n    source_labels: [__meta_x]\n    regex: y\n";
        let out = parsed(&run(text, &v));
        let jobs = out["scrape_configs"].as_sequence().unwrap();
        for job in jobs {
            let last = job["relabel_configs"]
                .as_sequence()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(last["target_label"], Value::from("cluster"));
            assert_eq!(last["replacement"], Value::from("tools"));
        }
        assert_eq!(jobs[1]["relabel_configs"].as_sequence().unwrap().len(), 2);
        let keys: Vec<_> = out.as_mapping().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            vec![Value::from("global"), Value::from("scrape_configs")]
        );
    }

    #[test]
    fn idempotent_and_federation_not_labelled() {
        let v = values(FED);
        let once = run("scrape_configs:\n- job_name: prometheus\n", &v);
        let text = once.text.clone().unwrap();
        let out = parsed(&once);
        let fed = &out["scrape_configs"][1];
        assert_eq!(fed["job_name"], Value::from("federation"));
        assert!(fed.get("relabel_configs").is_none());
        let twice = run(&text, &v);
        assert!(twice.text.is_none(), "second run must change nothing");
    }

    #[test]
    fn existing_federation_job_is_replaced_in_place() {
        let v = values(FED);
        let text =
            "scrape_configs:\n- job_name: federation\n  metrics_path: /old\n- job_name: local\n";
        let out = parsed(&run(text, &v));
        let jobs = out["scrape_configs"].as_sequence().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["metrics_path"], Value::from("/federate"));
    }

    #[test]
    fn equivalent_rule_is_not_added_again() {
        let v = values("");
        let text = "scrape_configs:\n- job_name: a\n  relabel_configs:\n  - source_labels: [__address__]\n    target_label: cluster\n    replacement: tools\n    action: replace\n";
        assert!(run(text, &v).text.is_none());
    }

    #[test]
    fn missing_or_null_scrape_configs() {
        let v = values("");
        assert!(run("global: {}\n", &v).text.is_none());
        assert!(run("", &v).text.is_none());
        let v = values(FED);
        let out = parsed(&run("global: {}\nscrape_configs:\n", &v));
        assert_eq!(out["scrape_configs"].as_sequence().unwrap().len(), 1);
        let out = parsed(&run("", &v));
        assert_eq!(out["scrape_configs"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn scrape_config_files_warns() {
        let e = run("scrape_config_files: [/etc/x/*.yml]\n", &values(""));
        assert!(
            e.warnings[0].contains("scrape_config_files"),
            "{:?}",
            e.warnings
        );
    }

    #[test]
    fn bad_shapes_name_the_place() {
        let v = values("");
        let err = |t: &str| rewrite_prometheus_yml("prometheus.yml", t, &v).unwrap_err();
        assert!(err("- a\n").contains("mapping at the top level"));
        assert!(err("scrape_configs: {}\n").contains("scrape_configs must be a list"));
        assert!(err("scrape_configs: [3]\n").contains("scrape_configs[0]"));
        assert!(
            err("scrape_configs:\n- job_name: j\n  relabel_configs: x\n")
                .contains("scrape config \"j\": relabel_configs")
        );
        assert!(err("scrape_configs: [\n").contains("YAML"));
    }
}
