//! Rule files: pin every rule to the local cluster and label its results.
//!
//! The contract: a rewritten rule evaluated on the tools cluster computes exactly what the
//! original computes on a single cluster, plus `<clusterLabelName>=<localClusterName>` on every
//! result. The expression work is [`crate::promql`]'s; here we walk groups and rules, set the
//! label, and name the place (key, group, rule) in every message.

use serde_yaml::Value;

use super::{Edit, RewriteError, health, parse_yaml};
use crate::config::{Values, describe};
use crate::rewrite::fleet::RuleMode;

/// Rewrites the text of one rule file held in ConfigMap data key `key`.
pub fn rewrite_rule_file(key: &str, text: &str, values: &Values) -> Result<Edit, RewriteError> {
    let yaml_err = |message: String| RewriteError::Yaml {
        key: key.to_owned(),
        message,
    };
    let mut doc = parse_yaml(text).map_err(yaml_err)?;
    let groups = match &mut doc {
        // `{}`, an empty string or a comment-only file: nothing to do, keep it as it is.
        Value::Null => return Ok(Edit::unchanged(Vec::new())),
        Value::Mapping(m) => match m.get_mut("groups") {
            None | Some(Value::Null) => return Ok(Edit::unchanged(Vec::new())),
            Some(Value::Sequence(g)) => g,
            Some(other) => {
                return Err(yaml_err(format!(
                    "groups must be a list, found {}",
                    describe(other)
                )));
            }
        },
        other => {
            return Err(yaml_err(format!(
                "expected a mapping with groups, found {}",
                describe(other)
            )));
        }
    };
    let mode = RuleMode::new(key, values);
    let mut changed = false;
    let mut warnings = Vec::new();
    for (gi, group) in groups.iter_mut().enumerate() {
        let Value::Mapping(group) = group else {
            return Err(yaml_err(format!(
                "groups[{gi}] must be a mapping, found {}",
                describe(group)
            )));
        };
        let gname = group
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("groups[{gi}]"), str::to_owned);
        if health::is_ours(&gname) {
            continue;
        }
        let rules = match group.get_mut("rules") {
            None | Some(Value::Null) => continue,
            Some(Value::Sequence(r)) => r,
            Some(other) => {
                return Err(yaml_err(format!(
                    "group {gname:?}: rules must be a list, found {}",
                    describe(other)
                )));
            }
        };
        for (ri, rule) in rules.iter_mut().enumerate() {
            let rule_err = |rname: &str, message: String| RewriteError::Rule {
                key: key.to_owned(),
                group: gname.clone(),
                rule: rname.to_owned(),
                message,
            };
            let Value::Mapping(rule) = rule else {
                return Err(rule_err(
                    &format!("rules[{ri}]"),
                    format!("must be a mapping, found {}", describe(rule)),
                ));
            };
            let rname = ["record", "alert"]
                .iter()
                .find_map(|k| rule.get(*k).and_then(Value::as_str))
                .map_or_else(|| format!("rules[{ri}]"), str::to_owned);
            let expr = match rule.get("expr") {
                Some(Value::String(s)) => s.clone(),
                // YAML scalars such as `expr: 1` are valid rule expressions too.
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(rule_err(
                        &rname,
                        format!("expr must be a string, found {}", describe(other)),
                    ));
                }
                None => return Err(rule_err(&rname, "has no expr".to_owned())),
            };
            let out = mode
                .rewrite(&expr)
                .map_err(|e| rule_err(&rname, format!("expression {e}")))?;
            warnings.extend(
                out.warnings
                    .into_iter()
                    .map(|w| format!("data key {key:?}, group {gname:?}, rule {rname:?}: {w}")),
            );
            if out.changed {
                rule.insert("expr".into(), Value::String(out.expr));
                changed = true;
            }
            if mode.labels_rules() {
                changed |= set_label(rule, values).map_err(|m| rule_err(&rname, m))?;
            } else if let Some(w) = mode.rule_label_warning(rule.get("labels")) {
                warnings.push(format!(
                    "data key {key:?}, group {gname:?}, rule {rname:?}: {w}"
                ));
            }
        }
    }
    changed |= health::ensure_group(key, groups, values);
    if !changed {
        return Ok(Edit::unchanged(warnings));
    }
    let text =
        serde_yaml::to_string(&doc).map_err(|e| yaml_err(format!("cannot serialise: {e}")))?;
    Ok(Edit {
        text: Some(text),
        warnings,
    })
}

/// Sets `labels.<clusterLabelName>` to the local name. Returns whether it changed.
fn set_label(rule: &mut serde_yaml::Mapping, values: &Values) -> Result<bool, String> {
    let labels = rule
        .entry(Value::String("labels".to_owned()))
        .or_insert(Value::Null);
    if labels.is_null() {
        *labels = Value::Mapping(serde_yaml::Mapping::new());
    }
    let Value::Mapping(labels) = labels else {
        return Err(format!(
            "labels must be a mapping, found {}",
            describe(labels)
        ));
    };
    let want = Value::String(values.local_cluster_name.clone());
    if labels.get(values.cluster_label_name.as_str()) == Some(&want) {
        return Ok(false);
    }
    labels.insert(Value::String(values.cluster_label_name.clone()), want);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Edit, RewriteError> {
        rewrite_rule_file("recording_rules.yml", text, &Values::default())
    }

    #[test]
    fn empty_files_stay_as_they_are() {
        for text in ["", "{}", "groups: []\n", "# only a comment\n", "groups:\n"] {
            let e = run(text).unwrap();
            assert!(e.text.is_none(), "{text:?}");
        }
    }

    #[test]
    fn every_rule_gets_the_label_and_second_run_is_a_no_op() {
        let text = "groups:\n- name: g\n  rules:\n  - record: a\n    expr: vector(1)\n  - alert: B\n    expr: up == 0\n    labels: {severity: page}\n";
        let once = run(text).unwrap().text.unwrap();
        let doc: Value = serde_yaml::from_str(&once).unwrap();
        for r in doc["groups"][0]["rules"].as_sequence().unwrap() {
            assert_eq!(r["labels"]["cluster"], Value::from("local"), "{once}");
        }
        assert_eq!(
            doc["groups"][0]["rules"][1]["labels"]["severity"],
            Value::from("page")
        );
        assert!(run(&once).unwrap().text.is_none(), "idempotent");
    }

    #[test]
    fn errors_name_key_group_and_rule() {
        let e = run("groups:\n- name: g1\n  rules:\n  - record: r1\n    expr: sum(\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"recording_rules.yml\"") && e.contains("\"g1\"") && e.contains("\"r1\""),
            "{e}"
        );
        let e = run("groups:\n- name: g1\n  rules:\n  - record: r1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no expr"), "{e}");
        let e = run("groups: {a: 1}\n").unwrap_err().to_string();
        assert!(e.contains("groups must be a list"), "{e}");
        let e = run("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    labels: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels must be a mapping"), "{e}");
        let e = run("groups: [\n").unwrap_err().to_string();
        assert!(
            e.contains("recording_rules.yml") && e.contains("YAML"),
            "{e}"
        );
    }
}
