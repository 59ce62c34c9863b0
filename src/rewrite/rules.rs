//! Rule files: pin every rule to the local cluster and label its results.
//!
//! The contract: a rewritten rule evaluated on the tools cluster computes exactly what the
//! original computes on a single cluster, plus `<clusterLabelName>=<localClusterName>` on every
//! result. The expression work is [`crate::promql`]'s; here we walk groups and rules on the
//! document's span tree, read fields as Prometheus reads them, and splice exactly two kinds of
//! edit into the text: a rewritten `expr` value and `labels.<clusterLabelName>`. Every other
//! byte stays. Messages name the place (key, group, rule).

use serde_yaml::{Mapping, Value};

use super::fleet::RuleMode;
use super::health::{self, GroupEdit};
use super::{
    DocumentError, Edit, RewriteError, RuleError, Shape, describe, expect_map, list_or_null,
    parse_tree,
};
use crate::config::Values;
use crate::yaml::edit::Editor;
use crate::yaml::tree::NodeId;

/// Rewrites the text of one rule file held in ConfigMap data key `key`.
pub fn rewrite_rule_file(key: &str, text: &str, values: &Values) -> Result<Edit, RewriteError> {
    let doc_err = |source: DocumentError| RewriteError::Document {
        key: key.to_owned(),
        source: Box::new(source),
    };
    let tree = parse_tree(text).map_err(doc_err)?;
    // A file without groups (TKG ships `alerting_rules.yml` as `{}`) only gets the health group.
    let first_group = || match health::plan_group(key, None, values) {
        GroupEdit::Append(g) => Some(g),
        _ => None,
    };
    let Some(root) = tree.root.filter(|r| !tree.is_null(*r)) else {
        // An empty string or a comment-only file: keep it as it is, or add the health group below.
        let Some(g) = first_group() else {
            return Ok(Edit::unchanged(Vec::new()));
        };
        let mut lines = vec!["groups:".to_owned()];
        lines.extend(Editor::new(&tree).item_lines(&g, 0, 1));
        let eol = tree.eol();
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            eol
        };
        // `---`/`...` markers or a null document would swallow the new text: say so instead.
        if text.lines().any(|l| {
            l.trim() == "---" || l.trim() == "..." || l.trim() == "~" || l.trim() == "null"
        }) {
            return Ok(Edit::unchanged(vec![health_not_placed(key)]));
        }
        return Ok(Edit {
            text: Some(format!("{text}{sep}{}{eol}", lines.join(eol))),
            warnings: Vec::new(),
        });
    };
    expect_map(&tree, root, || "the document".to_owned()).map_err(|e| {
        doc_err(
            Shape {
                expected: "a mapping with groups",
                ..e
            }
            .into(),
        )
    })?;
    let Some(groups_entry) = tree.get(root, "groups") else {
        let Some(g) = first_group() else {
            return Ok(Edit::unchanged(Vec::new()));
        };
        if tree.is_alias(root) || tree.nodes[root].anchored {
            return Ok(Edit::unchanged(vec![health_not_placed(key)]));
        }
        let mut ed = Editor::new(&tree);
        if tree.map(root).is_some_and(<[_]>::is_empty) {
            // `{}`: the whole document becomes the group list.
            let mut lines = vec!["groups:".to_owned()];
            lines.extend(ed.item_lines(&g, 0, 1));
            let node = &tree.nodes[root];
            ed.splices
                .replace(node.body, node.end, lines.join(ed.eol()));
        } else {
            ed.add_entry(root, "groups", &Value::Sequence(vec![g]));
        }
        let text = ed.splices.apply(text).map_err(|e| doc_err(e.into()))?;
        return Ok(Edit {
            text,
            warnings: Vec::new(),
        });
    };
    let Some(groups) = list_or_null(&tree, groups_entry.value, || "groups".to_owned())
        .map_err(|e| doc_err(e.into()))?
    else {
        let Some(g) = first_group() else {
            return Ok(Edit::unchanged(Vec::new()));
        };
        // `groups:` with no value: give it the health group, in flow form.
        let mut ed = Editor::new(&tree);
        ed.replace_with_flow(groups_entry.value, &Value::Sequence(vec![g]));
        let text = ed.splices.apply(text).map_err(|e| doc_err(e.into()))?;
        return Ok(Edit {
            text,
            warnings: Vec::new(),
        });
    };
    let mode = RuleMode::new(key, values);
    // The health group promfed owns, if the file has it: (index, as Prometheus reads it).
    let mut ours: Option<(usize, Option<Value>)> = None;
    let mut ed = Editor::new(&tree);
    let mut warnings = Vec::new();
    for (gi, &group) in groups.iter().enumerate() {
        expect_map(&tree, group, || format!("groups[{gi}]")).map_err(|e| doc_err(e.into()))?;
        let group = tree.resolve(group);
        let gname = tree
            .get(group, "name")
            .and_then(|e| tree.go_str(e.value))
            .map_or_else(|| format!("groups[{gi}]"), str::to_owned);
        if health::is_ours(&gname) {
            // promfed's own group: never rewritten, replaced or removed as a whole below.
            let mut budget = COMPARE_BUDGET;
            ours = Some((gi, tree.to_value(group, &mut budget)));
            continue;
        }
        let Some(rules) = tree.get(group, "rules") else {
            continue;
        };
        let Some(rules) = list_or_null(&tree, rules.value, || format!("group {gname:?}: rules"))
            .map_err(|e| doc_err(e.into()))?
        else {
            continue;
        };
        for (ri, &rule) in rules.iter().enumerate() {
            let rule_err = |rname: &str, source: RuleError| RewriteError::Rule {
                key: key.to_owned(),
                group: gname.clone(),
                rule: rname.to_owned(),
                source: Box::new(source),
            };
            expect_map(&tree, rule, || "the rule".to_owned())
                .map_err(|e| rule_err(&format!("rules[{ri}]"), e.into()))?;
            let rule = tree.resolve(rule);
            let rname = ["record", "alert"]
                .iter()
                .find_map(|k| tree.get(rule, k).and_then(|e| tree.go_str(e.value)))
                .map_or_else(|| format!("rules[{ri}]"), str::to_owned);
            rewrite_rule(&mut ed, rule, &mode, values)
                .map_err(|source| rule_err(&rname, source))?
                .into_iter()
                .for_each(|w| {
                    warnings.push(format!(
                        "data key {key:?}, group {gname:?}, rule {rname:?}: {w}"
                    ));
                });
        }
    }
    let seq = tree.resolve(groups_entry.value);
    match health::plan_group(key, ours.as_ref().and_then(|(_, v)| v.as_ref()), values) {
        GroupEdit::Keep => {}
        GroupEdit::Append(g) => {
            if !ed.add_item(seq, &g) {
                warnings.push(health_not_placed(key));
            }
        }
        GroupEdit::Replace(g) => {
            if let Some((gi, _)) = ours {
                ed.replace_node(groups[gi], &g);
            }
        }
        GroupEdit::Remove => {
            if let Some((gi, _)) = ours
                && !ed.remove_item(seq, gi)
            {
                warnings.push(health_not_placed(key));
            }
        }
    }
    let text = ed.splices.apply(text).map_err(|e| doc_err(e.into()))?;
    Ok(Edit { text, warnings })
}

/// Nodes visited at most when reading promfed's own group back for comparison.
const COMPARE_BUDGET: usize = 100_000;

/// The warning when the `groups` list has a shape promfed cannot splice the health group into.
fn health_not_placed(key: &str) -> String {
    format!(
        "data key {key:?}: the {:?} rule group could not be updated (groups is an alias or an \
         empty list); write at least one group in block or flow form",
        health::GROUP_NAME
    )
}

/// Plans the edits of one rule (a mapping, aliases followed); returns the expression's warnings.
fn rewrite_rule(
    ed: &mut Editor,
    rule: NodeId,
    mode: &RuleMode,
    values: &Values,
) -> Result<Vec<String>, RuleError> {
    let tree = ed.tree;
    let expr = tree.get(rule, "expr").ok_or(RuleError::NoExpr)?;
    let Some(src) = tree.go_str(expr.value) else {
        return Err(Shape {
            at: "expr".to_owned(),
            expected: "a string",
            found: describe(tree, expr.value),
        }
        .into());
    };
    let mut out = mode.rewrite(src).map_err(RuleError::Expr)?;
    let in_flow = tree.nodes[rule].flow;
    if out.changed {
        if expr.merged {
            // From a merge source: an own `expr` overrides it, the source stays as it is.
            ed.add_entry(rule, "expr", &Value::String(out.expr));
        } else {
            ed.replace_scalar(expr.value, &out.expr, in_flow);
        }
    }
    if mode.labels_rules() {
        set_label(ed, rule, values)?;
    } else {
        // Fleet mode: each result carries its own cluster; a rule that sets the label breaks that.
        let mut budget = COMPARE_BUDGET;
        let labels = tree
            .get(rule, "labels")
            .and_then(|e| tree.to_value(e.value, &mut budget));
        out.warnings
            .extend(mode.rule_label_warning(labels.as_ref()));
    }
    Ok(out.warnings)
}

/// Sets `labels.<clusterLabelName>` to the local name, keeping every other label as
/// Prometheus reads it.
fn set_label(ed: &mut Editor, rule: NodeId, values: &Values) -> Result<(), RuleError> {
    let tree = ed.tree;
    let (name, want) = (&values.cluster_label_name, &values.local_cluster_name);
    let one = || {
        let mut m = Mapping::new();
        m.insert(Value::String(name.clone()), Value::String(want.clone()));
        Value::Mapping(m)
    };
    let Some(labels) = tree.get(rule, "labels") else {
        ed.add_entry(rule, "labels", &one());
        return Ok(());
    };
    if tree.is_null(labels.value) {
        if labels.merged {
            ed.add_entry(rule, "labels", &one());
        } else {
            ed.replace_with_flow(labels.value, &one());
        }
        return Ok(());
    }
    expect_map(tree, labels.value, || "labels".to_owned())?;
    let target = tree.resolve(labels.value);
    let have = tree.get(target, name);
    if have.is_some_and(|e| tree.go_str(e.value) == Some(want.as_str())) {
        return Ok(());
    }
    if labels.merged || tree.is_alias(labels.value) {
        // Shared with other places: give this rule its own copy, as Go reads it, plus the label.
        let mut m = Mapping::new();
        for (k, v) in tree.string_map(target) {
            m.insert(Value::String(k), Value::String(v));
        }
        m.insert(Value::String(name.clone()), Value::String(want.clone()));
        if labels.merged {
            ed.add_entry(rule, "labels", &Value::Mapping(m));
        } else {
            ed.replace_with_flow(labels.value, &Value::Mapping(m));
        }
        return Ok(());
    }
    match have {
        Some(e) if !e.merged => {
            if tree.map(e.value).is_some() || tree.seq(e.value).is_some() {
                ed.replace_with_flow(e.value, &Value::String(want.clone()));
            } else {
                ed.replace_scalar(e.value, want, tree.nodes[target].flow);
            }
        }
        // Absent, or from a merge source: an own key overrides it.
        _ => ed.add_entry(target, name, &Value::String(want.clone())),
    }
    Ok(())
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

    #[test]
    fn only_expr_and_the_label_change() {
        let text = "\u{feff}# head\ngroups:\n  - name: 1.10 # number as name\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)   # c\n        labels:\n          quantile: 0.50\n          page: True\n      - alert: A\n        expr: |-\n          up == 0\n        for: 5m\n        annotations: {summary: 'x: y'}\n      - {record: r, expr: 'vector(1)', labels: {}}\n---\n";
        let out = run(text).unwrap().text.unwrap();
        let want = "\u{feff}# head\ngroups:\n  - name: 1.10 # number as name\n    rules:\n      - record: job:up:sum\n        expr: sum by (job, cluster) (up{cluster=\"local\"})   # c\n        labels:\n          quantile: 0.50\n          page: True\n          cluster: local\n      - alert: A\n        expr: |-\n          up{cluster=\"local\"} == 0\n        for: 5m\n        annotations: {summary: 'x: y'}\n        labels:\n          cluster: local\n      - {record: r, expr: 'label_replace(vector(1), \"cluster\", \"local\", \"\", \"\")', labels: {cluster: local}}\n---\n";
        assert_eq!(out, want);
        assert!(run(&out).unwrap().text.is_none(), "idempotent");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = "groups:\n- name: g\n  rules:\n  - &base\n    record: a\n    expr: x\n    labels: &l {team: t}\n  - <<: *base\n    record: b\n  - record: c\n    expr: y\n    labels: *l\n  - record: d\n    expr: z\n    labels: {<<: *l, cluster: other}\n";
        let out = run(text).unwrap().text.unwrap();
        let t = crate::yaml::tree::Tree::parse(&out).unwrap();
        let root = t.root.unwrap();
        let rules = t
            .seq(
                t.get(
                    t.seq(t.get(root, "groups").unwrap().value).unwrap()[0],
                    "rules",
                )
                .unwrap()
                .value,
            )
            .unwrap()
            .to_vec();
        for (r, expr) in rules.iter().zip([
            "x{cluster=\"local\"}",
            "x{cluster=\"local\"}",
            "y{cluster=\"local\"}",
            "z{cluster=\"local\"}",
        ]) {
            assert_eq!(
                t.go_str(t.get(*r, "expr").unwrap().value),
                Some(expr),
                "{out}"
            );
            let labels = t.string_map(t.get(*r, "labels").unwrap().value);
            assert!(labels.contains(&("team".into(), "t".into())), "{out}");
            assert!(
                labels.contains(&("cluster".into(), "local".into())),
                "{out}"
            );
        }
        assert!(run(&out).unwrap().text.is_none(), "idempotent:\n{out}");
    }

    #[test]
    fn reading_the_cluster_label_warns_naming_the_rule() {
        let text = "groups:\n- name: g\n  rules:\n  - record: r:copy\n    expr: label_replace(x, \"y\", \"$1\", \"cluster\", \"(.*)\")\n";
        let w = run(text).unwrap().warnings;
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("data key \"recording_rules.yml\", group \"g\", rule \"r:copy\": label_replace reads the label \"cluster\""),
            "{w:?}"
        );
    }

    #[test]
    fn a_file_without_groups_gets_the_health_group_once() {
        let v = Values::from_yaml_str(
            "additionalScrapeConfigs:\n- job_name: federation\n  static_configs:\n  - targets: [a:9090]\n    labels: {cluster: a}\n",
        )
        .unwrap();
        // TKG ships alerting_rules.yml as `{}`; an empty or comment-only file and `groups:` too.
        for text in ["{}\n", "{}", "", "# no alerts yet\n", "groups:\n", "x: 1\n"] {
            let e = rewrite_rule_file("alerting_rules.yml", text, &v).unwrap();
            let out = e.text.unwrap_or_else(|| panic!("{text:?}: unchanged"));
            let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
            let groups = doc["groups"].as_sequence().unwrap();
            assert_eq!(groups.len(), 1, "{text:?}: {out}");
            assert_eq!(groups[0]["name"], Value::from(health::GROUP_NAME), "{out}");
            if text.starts_with('#') || text == "x: 1\n" {
                assert!(out.starts_with(text), "kept: {out}");
            }
            let again = rewrite_rule_file("alerting_rules.yml", &out, &v).unwrap();
            assert!(
                again.text.is_none(),
                "{text:?}: not idempotent: {:?}",
                again.text
            );
        }
        // Not the health group's file, or no federation job: nothing to add.
        let e = rewrite_rule_file("recording_rules.yml", "{}\n", &v).unwrap();
        assert!(e.text.is_none());
        let e = rewrite_rule_file("alerting_rules.yml", "{}\n", &Values::default()).unwrap();
        assert!(e.text.is_none());
    }
}
