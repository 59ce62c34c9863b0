//! `prometheus.yml`: label local scrapes and add the federation jobs.
//!
//! The seed appends the relabel rule blindly and extends `scrape_configs`, so a second run
//! doubles everything. Here the local rule is added only when it is not already there, and the
//! federation jobs promfed wrote are recognised by a marker comment promfed writes above each
//! (the rewrite keeps comments) or by being equal to the configured definition: those are
//! replaced in place by the configured definition, never labelled as local. A local job that
//! merely shares a federation job's `job_name` is never dropped: that is an error naming both.
//! Edits are spliced into the text ([`crate::yaml::edit`]); every other byte stays.

use serde_yaml::{Mapping, Value};

use super::{DocumentError, Edit, RewriteError, ScrapeError, expect_map, list_or_null, parse_tree};
use crate::config::Values;
use crate::yaml::edit::{Editor, dash_before, double, flow};
use crate::yaml::tree::{Kind, NodeId, Style, Tree};

/// The comment promfed writes on the line above each federation job it adds. Prometheus
/// ignores comments; promfed reads it to tell its own earlier output from a local job.
pub const FEDERATION_MARKER: &str =
    "# promfed: federation job from additionalScrapeConfigs, replaced on every rewrite";

/// Nodes visited when comparing a scrape config with its configured definition.
const COMPARE_BUDGET: usize = 100_000;

/// Rewrites the text of `prometheus.yml`. `key` is the ConfigMap data key, for messages.
pub fn rewrite_prometheus_yml(
    key: &str,
    text: &str,
    values: &Values,
) -> Result<Edit, RewriteError> {
    let doc_err = |source: DocumentError| RewriteError::Document {
        key: key.to_owned(),
        source: Box::new(source),
    };
    let tree = parse_tree(text).map_err(doc_err)?;
    let feds = &values.additional_scrape_configs;
    let mut warnings = Vec::new();
    let mut ed = Editor::new(&tree);
    let Some(root) = tree.root.filter(|r| !tree.is_null(*r)) else {
        // An empty prometheus.yml: Prometheus's defaults, no jobs to label.
        if feds.is_empty() {
            return Ok(Edit::unchanged(warnings));
        }
        let mut lines = vec!["scrape_configs:".to_owned()];
        lines.extend(federation_lines(&ed, feds.iter(), 0, 1));
        let mut out = text.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(ed.eol());
        }
        out.push_str(&lines.join(ed.eol()));
        out.push_str(ed.eol());
        return Ok(Edit {
            text: Some(out),
            warnings,
        });
    };
    expect_map(&tree, root, || "the top level".to_owned()).map_err(|e| doc_err(e.into()))?;
    if tree.get(root, "scrape_config_files").is_some() {
        warnings.push(format!(
            "{key}: scrape_config_files is set; jobs defined in those files are not labelled \
             {}={:?} and their series will look federated",
            values.cluster_label_name, values.local_cluster_name
        ));
    }
    let configs = tree.get(root, "scrape_configs");
    let list = match configs {
        None => None,
        Some(e) => list_or_null(&tree, e.value, || "scrape_configs".to_owned())
            .map_err(|e| doc_err(e.into()))?,
    };
    let Some(list) = list else {
        if feds.is_empty() {
            return Ok(Edit::unchanged(warnings));
        }
        let all = Value::Sequence(feds.iter().cloned().map(Value::Mapping).collect());
        match configs {
            // `scrape_configs:` with no value: the jobs in flow form (no room for the marker;
            // they are recognised by equality next time).
            Some(e) => ed.replace_with_flow(e.value, &all),
            None if tree.nodes[root].flow => ed.add_entry(root, "scrape_configs", &all),
            None => {
                let root_node = &tree.nodes[root];
                let col = tree.column(root_node.start);
                let mut lines = vec![format!("{}scrape_configs:", " ".repeat(col))];
                lines.extend(federation_lines(
                    &ed,
                    feds.iter(),
                    col + ed.layout.seq_step,
                    1,
                ));
                ed.lines_after(root_node.end, &lines);
            }
        }
        return finish(ed, text, warnings).map_err(doc_err);
    };
    let mut seen: Vec<Option<usize>> = vec![None; feds.len()];
    for (i, &sc) in list.iter().enumerate() {
        expect_map(&tree, sc, || format!("scrape_configs[{i}]")).map_err(|e| doc_err(e.into()))?;
        let job = tree
            .get(sc, "job_name")
            .and_then(|e| tree.go_str(e.value))
            .unwrap_or_default();
        let scrape_err = |source: ScrapeError| RewriteError::Scrape {
            key: key.to_owned(),
            job: job.to_owned(),
            source: Box::new(source),
        };
        let fed = feds
            .iter()
            .position(|f| f.get("job_name").and_then(Value::as_str) == Some(job));
        let Some(f) = fed else {
            // Only the parts that can set the cluster label are read back as values.
            let mut budget = COMPARE_BUDGET;
            let mut local = Mapping::new();
            for part in [
                "static_configs",
                "relabel_configs",
                "metric_relabel_configs",
            ] {
                if let Some(v) = tree
                    .get(sc, part)
                    .and_then(|e| tree.to_value(e.value, &mut budget))
                {
                    local.insert(Value::from(part), v);
                }
            }
            warnings.extend(super::checks::local_job_sets_cluster_label(
                job, &local, values,
            ));
            add_local_rule(&mut ed, sc, values).map_err(scrape_err)?;
            continue;
        };
        if let Some(first) = seen[f] {
            return Err(scrape_err(ScrapeError::FederationTwice {
                job: job.to_owned(),
                first,
                second: i,
            }));
        }
        seen[f] = Some(i);
        let mut budget = COMPARE_BUDGET;
        if tree.to_value(sc, &mut budget) == Some(Value::Mapping(feds[f].clone())) {
            continue;
        }
        if !has_marker(&tree, sc) {
            return Err(scrape_err(ScrapeError::Collision {
                job: job.to_owned(),
                local: i,
                federation: f,
                marker: FEDERATION_MARKER,
            }));
        }
        ed.replace_node(sc, &Value::Mapping(feds[f].clone()));
    }
    let missing: Vec<&Mapping> = feds
        .iter()
        .zip(&seen)
        .filter(|(_, s)| s.is_none())
        .map(|(f, _)| f)
        .collect();
    if !missing.is_empty() {
        let seq = configs.map(|e| tree.resolve(e.value));
        if let Some(seq) = seq {
            append_jobs(&mut ed, seq, list, &missing);
        }
    }
    finish(ed, text, warnings).map_err(doc_err)
}

fn finish(ed: Editor, text: &str, warnings: Vec<String>) -> Result<Edit, DocumentError> {
    let text = ed.splices.apply(text)?;
    Ok(Edit { text, warnings })
}

/// The marker and block lines of each job, dashes at `dash_col`.
fn federation_lines<'m>(
    ed: &Editor,
    jobs: impl Iterator<Item = &'m Mapping>,
    dash_col: usize,
    gap: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    for job in jobs {
        lines.push(format!("{}{FEDERATION_MARKER}", " ".repeat(dash_col)));
        lines.extend(ed.item_lines(&Value::Mapping(job.clone()), dash_col, gap));
    }
    lines
}

/// Appends the federation jobs not yet present to `scrape_configs` (a non-alias list).
fn append_jobs(ed: &mut Editor, seq: NodeId, items: &[NodeId], jobs: &[&Mapping]) {
    let tree = ed.tree;
    let block_first = items
        .first()
        .filter(|_| !tree.nodes[seq].flow)
        .and_then(|first| Some((*first, dash_before(tree, tree.nodes[*first].start)?)));
    match (block_first, items.last()) {
        (Some((first, dash)), Some(last)) if !tree.nodes[first].flow => {
            let gap = tree.nodes[first].start - dash - 1;
            let lines = federation_lines(ed, jobs.iter().copied(), tree.column(dash), gap);
            ed.lines_after(tree.nodes[*last].end, &lines);
        }
        _ => {
            let items: Vec<String> = jobs
                .iter()
                .map(|j| flow(&Value::Mapping((*j).clone())))
                .collect();
            ed.add_flow_text(seq, items.join(", "));
        }
    }
}

/// True when the line above scrape config `sc` (a list item) is [`FEDERATION_MARKER`].
fn has_marker(tree: &Tree, sc: NodeId) -> bool {
    let node = &tree.nodes[sc];
    let item_start = dash_before(tree, node.start).unwrap_or(node.start);
    let line = tree.line_start(item_start);
    if line == 0 {
        return false;
    }
    let prev = tree.line_start(line - 1);
    tree.text[prev..line].trim() == FEDERATION_MARKER
}

/// The seed's rule: `{source_labels: [__address__], target_label: <label>, replacement: <local>}`.
fn local_rule(values: &Values) -> Value {
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
    Value::Mapping(m)
}

/// Appends the local rule to `relabel_configs` unless an equivalent one is there.
fn add_local_rule(ed: &mut Editor, sc: NodeId, values: &Values) -> Result<(), ScrapeError> {
    let tree = ed.tree;
    let sc = tree.resolve(sc);
    let rule = local_rule(values);
    let Some(relabel) = tree.get(sc, "relabel_configs") else {
        ed.add_entry(sc, "relabel_configs", &Value::Sequence(vec![rule]));
        return Ok(());
    };
    let Some(rules) = list_or_null(tree, relabel.value, || "relabel_configs".to_owned())? else {
        if relabel.merged {
            ed.add_entry(sc, "relabel_configs", &Value::Sequence(vec![rule]));
        } else {
            ed.replace_with_flow(relabel.value, &Value::Sequence(vec![rule]));
        }
        return Ok(());
    };
    if rules.iter().any(|r| is_local_rule(tree, *r, values)) {
        return Ok(());
    }
    if relabel.merged || tree.is_alias(relabel.value) {
        // Shared with other places: this job gets its own copy with the rule appended.
        let mut items: Vec<String> = rules.iter().map(|r| flow_copy(tree, *r)).collect();
        items.push(flow(&rule));
        let own = format!("[{}]", items.join(", "));
        if relabel.merged {
            // An own key overrides the merged one; written in flow form, valid in any context.
            let col_text = format!("relabel_configs: {own}");
            let node = &tree.nodes[sc];
            if node.flow {
                let last = tree.map(sc).and_then(|e| e.last()).map(|(_, v)| *v);
                if let Some(last) = last {
                    ed.splices
                        .insert(tree.nodes[last].end, format!(", {col_text}"));
                }
            } else if let Some((k, _)) = tree.map(sc).and_then(|e| e.first()) {
                let col = tree.column(tree.nodes[*k].start);
                ed.lines_after(node.end, &[format!("{}{col_text}", " ".repeat(col))]);
            }
        } else {
            let alias = &tree.nodes[relabel.value];
            ed.splices.replace(alias.start, alias.end, own);
        }
        return Ok(());
    }
    ed.add_item(tree.resolve(relabel.value), &rule);
    Ok(())
}

/// Node `id` as flow text that reads back the same: flow nodes and one-line scalars verbatim,
/// block collections rebuilt in flow form, block scalars double-quoted, aliases kept.
fn flow_copy(tree: &Tree, id: NodeId) -> String {
    let node = &tree.nodes[id];
    match &node.kind {
        Kind::Alias(_) => tree.text[node.start..node.end].to_owned(),
        Kind::Scalar { value, style, .. } if style.is_block() => double(value),
        Kind::Scalar {
            style: Style::Plain,
            value,
            ..
        } if value.contains([',', '[', ']', '{', '}'])
            || tree.text[node.body..node.end].contains('\n') =>
        {
            double(value)
        }
        _ if node.flow || matches!(node.kind, Kind::Scalar { .. }) => {
            tree.text[node.body..node.end].to_owned()
        }
        Kind::Seq(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| flow_copy(tree, *i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", flow_copy(tree, *k), flow_copy(tree, *v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Scalar { .. } => tree.text[node.body..node.end].to_owned(),
    }
}

/// True for the seed's rule, also when spelled with Prometheus's defaults made explicit.
fn is_local_rule(tree: &Tree, r: NodeId, values: &Values) -> bool {
    let Some(entries) = tree.map(r) else {
        return false;
    };
    let r = tree.resolve(r);
    let str_is =
        |k: &str, want: &str| tree.get(r, k).and_then(|e| tree.go_str(e.value)) == Some(want);
    let optional_is = |k: &str, default: &str| tree.get(r, k).is_none() || str_is(k, default);
    let sources_ok = tree
        .get(r, "source_labels")
        .and_then(|e| tree.seq(e.value))
        .is_some_and(|s| s.len() == 1 && tree.go_str(s[0]) == Some("__address__"));
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
        && entries
            .iter()
            .all(|(k, _)| tree.go_str(*k).is_some_and(|k| known.contains(&k)))
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
    fn marked_federation_job_is_replaced_in_place() {
        let v = values(FED);
        let text = format!(
            "scrape_configs:\n{FEDERATION_MARKER}\n- job_name: federation\n  metrics_path: /old\n- job_name: local\n"
        );
        let once = run(&text, &v);
        let out = parsed(&once);
        let jobs = out["scrape_configs"].as_sequence().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["metrics_path"], Value::from("/federate"));
        assert!(run(once.text.as_deref().unwrap(), &v).text.is_none());
    }

    #[test]
    fn local_job_with_a_federation_job_name_is_never_dropped() {
        let v = values(FED);
        let text = "scrape_configs:\n- job_name: federation\n  metrics_path: /local\n";
        let e = rewrite_prometheus_yml("prometheus.yml", text, &v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("scrape_configs[0] is a local job")
                && e.contains("additionalScrapeConfigs[0]")
                && e.contains("\"federation\""),
            "{e}"
        );
        // Equal to the configured definition (promfed's output before markers): kept as is.
        let equal = "scrape_configs:\n- job_name: federation\n  metrics_path: /federate\n  static_configs:\n  - targets: ['a:9090']\n    labels: {cluster: a}\n";
        assert!(run(equal, &v).text.is_none());
    }

    #[test]
    fn only_the_edits_change_and_they_follow_the_surroundings() {
        let v = values(FED);
        let text = "# top\r\nglobal: {scrape_interval: 1m} # keep\r\nscrape_configs:\r\n  - job_name: a # c\r\n    static_configs: [{targets: [x], labels: {q: 0.50}}]\r\n\r\n  - job_name: b\r\n    relabel_configs:\r\n      - {action: keep, regex: '0.50'}\r\n# tail\r\n";
        let out = run(text, &v).text.unwrap();
        let want = format!(
            "# top\r\nglobal: {{scrape_interval: 1m}} # keep\r\nscrape_configs:\r\n  - job_name: a # c\r\n    static_configs: [{{targets: [x], labels: {{q: 0.50}}}}]\r\n    relabel_configs:\r\n      - source_labels: [__address__]\r\n        target_label: cluster\r\n        replacement: tools\r\n\r\n  - job_name: b\r\n    relabel_configs:\r\n      - {{action: keep, regex: '0.50'}}\r\n      - {{source_labels: [__address__], target_label: cluster, replacement: tools}}\r\n  {FEDERATION_MARKER}\r\n  - job_name: federation\r\n    metrics_path: /federate\r\n    static_configs:\r\n      - targets: ['a:9090']\r\n        labels:\r\n          cluster: a\r\n# tail\r\n"
        );
        assert_eq!(out, want);
        assert!(run(&out, &v).text.is_none(), "idempotent");
        let flow = run(
            "scrape_configs: []\n",
            &values(&format!(
                "{FED}- job_name: second\n  static_configs: [{{targets: ['b:9090'], labels: {{cluster: b}}}}]\n"
            )),
        )
        .text
        .unwrap();
        assert_eq!(
            flow,
            "scrape_configs: [{job_name: federation, metrics_path: /federate, static_configs: [{targets: ['a:9090'], labels: {cluster: a}}]}, {job_name: second, static_configs: [{targets: ['b:9090'], labels: {cluster: b}}]}]\n"
        );
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
        let err = |t: &str| {
            rewrite_prometheus_yml("prometheus.yml", t, &v)
                .unwrap_err()
                .to_string()
        };
        assert!(err("- a\n").contains("top level must be a mapping"));
        assert!(err("scrape_configs: {}\n").contains("scrape_configs must be a list"));
        assert!(err("scrape_configs: [3]\n").contains("scrape_configs[0]"));
        assert!(
            err("scrape_configs:\n- job_name: j\n  relabel_configs: x\n")
                .contains("scrape config \"j\": relabel_configs must be a list")
        );
        assert!(err("scrape_configs: [\n").contains("YAML"));
    }
}
