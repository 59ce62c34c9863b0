//! `promfed dashboards convert` on fixtures of every shape, and the chart's shipped dashboards.
//!
//! The shipped dashboards are the converter's output for the single-cluster sources in
//! `tests/fixtures/dashboards/shipped-src/`. After changing a source (or the converter), rewrite
//! them with `UPDATE_GOLDEN=1 cargo test --test dashboards shipped` (the golden-file switch of
//! every test, [`common::golden`]).

use promfed::cli::dashboards::{ConvertArgs, DashboardsCommand, run_with};
mod common;

use promfed::dashboards::vars;
use promfed::dashboards::{ConvertOptions, QueryKind, convert, list_queries};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

const VARIABLES: &str = include_str!("fixtures/dashboards/variables.json");
const OLD_ROWS: &str = include_str!("fixtures/dashboards/old-rows.json");
const NESTED: &str = include_str!("fixtures/dashboards/nested-rows.json");

/// (file name, single-cluster source, shipped dashboard).
const SHIPPED: &[(&str, &str, &str)] = &[
    (
        "tkg-cluster-monitoring.json",
        include_str!("fixtures/dashboards/shipped-src/tkg-cluster-monitoring.json"),
        include_str!("../charts/promfed/dashboards/tkg-cluster-monitoring.json"),
    ),
    (
        "kubernetes-apiserver.json",
        include_str!("fixtures/dashboards/shipped-src/kubernetes-apiserver.json"),
        include_str!("../charts/promfed/dashboards/kubernetes-apiserver.json"),
    ),
    (
        "promfed.json",
        include_str!("fixtures/dashboards/shipped-src/promfed.json"),
        include_str!("../charts/promfed/dashboards/promfed.json"),
    ),
];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn opts(label: &str, multi: bool) -> ConvertOptions {
    ConvertOptions {
        cluster_label: label.to_owned(),
        multi,
        ..ConvertOptions::default()
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

/// Checks the syntax tree: every selector carries `<label>="$cluster"` (`=~` when `regex`), every
/// `by`/`on` list keeps the label and no `without`/`ignoring` list drops it.
struct Pinned<'a> {
    label: &'a str,
    regex: bool,
    problems: Vec<String>,
}

impl Pinned<'_> {
    fn check_matchers(&mut self, vs: &parser::VectorSelector) {
        let groups = std::iter::once(&vs.matchers.matchers).chain(vs.matchers.or_matchers.iter());
        for group in groups {
            let ok = group.iter().any(|m| {
                m.name == self.label
                    && m.value == "$cluster"
                    && match m.op {
                        MatchOp::Equal => !self.regex,
                        MatchOp::Re(_) => self.regex,
                        _ => false,
                    }
            });
            if !ok {
                self.problems
                    .push(format!("selector without the cluster matcher: {vs}"));
            }
        }
    }

    fn check_modifier(&mut self, m: &LabelModifier, what: &str) {
        let has = m.labels().labels.iter().any(|l| l == self.label);
        match m {
            LabelModifier::Include(_) if !has => self
                .problems
                .push(format!("{what} list without {}", self.label)),
            LabelModifier::Exclude(_) if has => self
                .problems
                .push(format!("{what} list drops {}", self.label)),
            _ => {}
        }
    }
}

impl ExprVisitor for Pinned<'_> {
    type Error = ();
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        match e {
            Expr::VectorSelector(vs) => self.check_matchers(vs),
            Expr::MatrixSelector(ms) => self.check_matchers(&ms.vs),
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    self.check_modifier(m, "aggregation");
                }
            }
            Expr::Binary(b) => {
                if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                    self.check_modifier(m, "vector matching");
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Problems of one Grafana expression (empty: parses and is pinned everywhere).
fn pin_problems(expr: &str, label: &str, regex: bool) -> Vec<String> {
    let sub = match vars::substitute(expr) {
        Ok(s) => s,
        Err(e) => return vec![format!("does not parse after substitution: {e}")],
    };
    let tree = match parser::parse(&sub.text) {
        Ok(t) => t,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut v = Pinned {
        label,
        regex,
        problems: Vec::new(),
    };
    let _ = walk_expr(&mut v, &tree);
    v.problems
}

/// Asserts that every Prometheus query of `dashboard` is pinned to `$cluster`.
fn assert_all_pinned(dashboard: &Value, label: &str, regex: bool) -> usize {
    let queries = list_queries(dashboard).unwrap();
    let mut failures = Vec::new();
    for q in &queries {
        if q.kind == QueryKind::Variable && q.location == "cluster" {
            continue;
        }
        for p in pin_problems(&q.expr, label, regex) {
            failures.push(format!("{:?} {}: {p}\n    {}", q.kind, q.location, q.expr));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    queries.len()
}

/// Grafana variable texts of an expression, sorted (the multiset must survive a conversion).
fn variable_texts(expr: &str) -> Vec<String> {
    let mut v: Vec<String> = vars::scan(expr)
        .into_iter()
        .map(|v| expr[v.span].to_owned())
        .collect();
    v.sort();
    v
}

fn templating(d: &Value) -> &Vec<Value> {
    d["templating"]["list"].as_array().unwrap()
}

fn find_panel<'a>(panels: &'a Value, title: &str) -> Option<&'a Value> {
    panels.as_array()?.iter().find_map(|p| {
        if p["title"] == title {
            Some(p)
        } else {
            find_panel(&p["panels"], title)
        }
    })
}

#[test]
fn every_variable_syntax_survives_and_every_selector_is_pinned() {
    let input = json(VARIABLES);
    let out = convert(input.clone(), &ConvertOptions::default()).unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let before = list_queries(&input).unwrap();
    let after = list_queries(&out.dashboard).unwrap();
    // The converted dashboard has the extra `cluster` variable query.
    assert_eq!(after.len(), before.len() + 1);
    for (b, a) in before
        .iter()
        .zip(after.iter().filter(|q| q.location != "cluster"))
    {
        assert_eq!(b.location, a.location);
        assert_eq!(
            variable_texts(&b.expr),
            variable_texts(&a.expr),
            "{} -> {}",
            b.expr,
            a.expr
        );
    }
    assert_all_pinned(&out.dashboard, "cluster", false);
    // Text inside strings and comments is untouched.
    let strings = find_panel(&out.dashboard["panels"], "Strings stay opaque").unwrap();
    let a = strings["targets"][0]["expr"].as_str().unwrap();
    assert!(a.contains(r#""$1""#) && a.contains("$job"), "{a}");
    // The new-style variable query object and its definition move together.
    let pod = &templating(&out.dashboard)[3];
    assert_eq!(pod["name"], "pod");
    assert_eq!(pod["query"]["query"], pod["definition"]);
    assert!(
        pod["definition"].as_str().unwrap().contains("$cluster"),
        "{pod}"
    );
}

#[test]
fn non_prometheus_panels_are_left_alone() {
    for (fixture, titles) in [
        (VARIABLES, &["Logs next door"][..]),
        (OLD_ROWS, &["Read me", "Annotations from Grafana"][..]),
        (NESTED, &["Reused", "Grafana testdata"][..]),
    ] {
        let input = json(fixture);
        let out = convert(input.clone(), &ConvertOptions::default()).unwrap();
        for title in titles {
            let panels = |d: &Value| {
                let mut all = vec![d["panels"].clone()];
                for r in d["rows"].as_array().into_iter().flatten() {
                    all.push(r["panels"].clone());
                }
                all.iter().find_map(|p| find_panel(p, title).cloned())
            };
            assert_eq!(panels(&input), panels(&out.dashboard), "{title}");
            assert!(panels(&input).is_some(), "{title}");
        }
    }
    // In a mixed panel only the Prometheus target changes.
    let out = convert(json(NESTED), &ConvertOptions::default()).unwrap();
    let mixed = find_panel(&out.dashboard["panels"], "Mixed sources").unwrap();
    let original = json(NESTED);
    let mixed_in = find_panel(&original["panels"], "Mixed sources").unwrap();
    assert_ne!(mixed["targets"][0], mixed_in["targets"][0]);
    assert_eq!(mixed["targets"][1], mixed_in["targets"][1]);
    assert_eq!(mixed["targets"][2], mixed_in["targets"][2]);
    // Loki annotation untouched, Prometheus annotation converted, built-in untouched.
    let ann = |d: &Value, i: usize| d["annotations"]["list"][i].clone();
    assert_eq!(ann(&out.dashboard, 0), ann(&original, 0));
    assert_ne!(ann(&out.dashboard, 1), ann(&original, 1));
    assert_eq!(ann(&out.dashboard, 2), ann(&original, 2));
}

#[test]
fn old_rows_layout_nested_rows_variables_and_annotations_are_converted() {
    let out = convert(json(OLD_ROWS), &ConvertOptions::default()).unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    // 2 panel targets, label_values + query_result, 1 annotation, our own `cluster`.
    assert_eq!(assert_all_pinned(&out.dashboard, "cluster", false), 6);
    let list = templating(&out.dashboard);
    // `label_values(label)` gets a selector of its own; `metrics(...)` stays as it is.
    assert_eq!(
        list[2]["query"],
        r#"label_values({cluster="$cluster"}, kubernetes_io_hostname)"#
    );
    assert_eq!(list[4]["query"], "metrics(container_.*)");

    let out = convert(json(NESTED), &ConvertOptions::default()).unwrap();
    // Targets up, Mixed (prometheus target), Broken B, Deep (nested twice), job, annotation.
    let n = list_queries(&out.dashboard).unwrap();
    let deep = n
        .iter()
        .find(|q| q.location == "Collapsed row / (untitled panel 7) / Deep")
        .unwrap();
    assert!(
        pin_problems(&deep.expr, "cluster", false).is_empty(),
        "{}",
        deep.expr
    );
}

#[test]
fn cluster_variables_come_first_and_replace_existing_ones() {
    let out = convert(json(NESTED), &ConvertOptions::default()).unwrap();
    let list = templating(&out.dashboard);
    let names: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    // The datasource variable `cluster` uses moves in front; the old `cluster` is replaced.
    assert_eq!(
        names,
        ["datasource", "clusterLabel", "cluster", "job", "weird"]
    );
    assert_eq!(list[1]["type"], "constant");
    assert_eq!(list[1]["hide"], 2);
    assert_eq!(list[1]["query"], "cluster");
    let cluster = &list[2];
    assert_eq!(cluster["query"], "label_values(up, cluster)");
    assert_eq!(
        cluster["datasource"],
        serde_json::json!({"type": "prometheus", "uid": "${datasource}"})
    );
    assert_eq!(cluster["refresh"], 1);
    assert_eq!(cluster["sort"], 1);
    assert_eq!(cluster["multi"], false);
    assert_eq!(cluster["includeAll"], false);

    // Without a datasource variable, the first Prometheus datasource a panel names is used.
    let out = convert(json(OLD_ROWS), &ConvertOptions::default()).unwrap();
    assert_eq!(templating(&out.dashboard)[1]["datasource"], "Prometheus");
    let out = convert(json(VARIABLES), &ConvertOptions::default()).unwrap();
    assert_eq!(templating(&out.dashboard)[1]["datasource"], "${DS_PROM}");
    // No templating at all: created.
    let out = convert(
        serde_json::json!({"panels": []}),
        &ConvertOptions::default(),
    )
    .unwrap();
    assert_eq!(templating(&out.dashboard).len(), 2);
}

#[test]
fn unparsable_queries_are_reported_left_unchanged_and_set_exit_code_2() {
    let input = json(NESTED);
    let out = convert(input.clone(), &ConvertOptions::default()).unwrap();
    let places: Vec<&str> = out.skipped.iter().map(|s| s.panel.as_str()).collect();
    assert_eq!(
        places,
        ["Collapsed row / Broken query", "variable weird"],
        "{:?}",
        out.skipped
    );
    assert_eq!(out.skipped[0].query, "sum(rate(http_requests_total[5m])");
    assert!(
        out.skipped[0].reason.contains("parse"),
        "{}",
        out.skipped[0].reason
    );
    let broken = find_panel(&out.dashboard["panels"], "Broken query").unwrap();
    assert_eq!(
        broken["targets"][0]["expr"],
        "sum(rate(http_requests_total[5m])"
    );
    // ... while the next target of the same panel is converted.
    assert!(
        broken["targets"][1]["expr"]
            .as_str()
            .unwrap()
            .contains("$cluster")
    );

    let cmd = DashboardsCommand::Convert(ConvertArgs {
        cluster_label: "cluster".into(),
        multi: false,
        uid: None,
        title: None,
        output: None,
        input: None,
    });
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let outcome = run_with(cmd, &mut NESTED.as_bytes(), &mut stdout, &mut stderr).unwrap();
    assert_eq!(outcome.skipped, 2);
    assert_eq!(outcome.exit_code(), 2);
    let stderr = String::from_utf8(stderr).unwrap();
    assert!(stderr.contains("Collapsed row / Broken query"), "{stderr}");
    assert!(stderr.contains("variable weird"), "{stderr}");
    let stdout = String::from_utf8(stdout).unwrap();
    assert_eq!(stdout, pretty(&out.dashboard));

    // All converted: exit code 0.
    let cmd = DashboardsCommand::Convert(ConvertArgs {
        cluster_label: "cluster".into(),
        multi: false,
        uid: None,
        title: None,
        output: None,
        input: None,
    });
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let outcome = run_with(cmd, &mut OLD_ROWS.as_bytes(), &mut stdout, &mut stderr).unwrap();
    assert_eq!(
        outcome.exit_code(),
        0,
        "{}",
        String::from_utf8_lossy(&stderr)
    );
}

#[test]
fn label_less_vectors_get_the_grafana_variable_as_cluster_label() {
    // Grafana interpolates `$cluster` before Prometheus sees the query: the label_replace
    // replacement must be `$cluster`, not the PromQL-escaped `$$cluster`.
    let d = serde_json::json!({ "panels": [ { "title": "p", "targets": [ { "expr": "sum(up) or vector(0)" } ] } ] });
    let out = convert(d, &ConvertOptions::default()).unwrap();
    let expr = out.dashboard["panels"][0]["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        expr.contains(r#"label_replace(vector(0), "cluster", "$cluster", "", "")"#),
        "{expr}"
    );
    assert!(!expr.contains("$$"), "{expr}");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let again = convert(out.dashboard.clone(), &ConvertOptions::default()).unwrap();
    assert_eq!(again.dashboard, out.dashboard);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

#[test]
fn conversion_is_idempotent() {
    for fixture in [VARIABLES, OLD_ROWS, NESTED] {
        for (label, multi) in [
            ("cluster", false),
            ("cluster", true),
            ("originCluster", false),
        ] {
            let o = opts(label, multi);
            let once = convert(json(fixture), &o).unwrap();
            let twice = convert(once.dashboard.clone(), &o).unwrap();
            assert_eq!(
                pretty(&once.dashboard),
                pretty(&twice.dashboard),
                "{label} {multi}"
            );
            assert_eq!(once.skipped, twice.skipped);
        }
    }
}

#[test]
fn multi_makes_a_multi_select_with_all_and_regex_matchers() {
    let out = convert(json(VARIABLES), &opts("cluster", true)).unwrap();
    let cluster = &templating(&out.dashboard)[1];
    assert_eq!(cluster["multi"], true);
    assert_eq!(cluster["includeAll"], true);
    assert_all_pinned(&out.dashboard, "cluster", true);
    let out = convert(json(OLD_ROWS), &opts("cluster", true)).unwrap();
    assert_eq!(
        templating(&out.dashboard)[2]["query"],
        r#"label_values({cluster=~"$cluster"}, kubernetes_io_hostname)"#
    );
}

#[test]
fn cluster_label_option() {
    let out = convert(json(OLD_ROWS), &opts("originCluster", false)).unwrap();
    let list = templating(&out.dashboard);
    assert_eq!(list[0]["name"], "clusterLabel");
    assert_eq!(list[0]["query"], "originCluster");
    assert_eq!(list[1]["query"], "label_values(up, originCluster)");
    assert_all_pinned(&out.dashboard, "originCluster", false);
    assert!(convert(json(OLD_ROWS), &opts("origin-cluster", false)).is_err());
}

#[test]
fn uid_and_title_are_kept_unless_set() {
    let out = convert(json(VARIABLES), &ConvertOptions::default()).unwrap();
    assert_eq!(out.dashboard["uid"], "var-syntaxes");
    assert_eq!(out.dashboard["title"], "Variable syntaxes");
    assert_eq!(out.dashboard["id"], 17);
    let o = ConvertOptions {
        uid: Some("var-syntaxes-mc".into()),
        title: Some("Variable syntaxes (fleet)".into()),
        ..ConvertOptions::default()
    };
    let out = convert(json(VARIABLES), &o).unwrap();
    assert_eq!(out.dashboard["uid"], "var-syntaxes-mc");
    assert_eq!(out.dashboard["title"], "Variable syntaxes (fleet)");
    assert_eq!(out.dashboard["id"], Value::Null);
    let bad = ConvertOptions {
        uid: Some("no spaces please".into()),
        ..ConvertOptions::default()
    };
    assert!(convert(json(VARIABLES), &bad).is_err());
}

#[test]
fn api_wrapped_dashboards_and_garbage() {
    let wrapped = serde_json::json!({ "dashboard": json(OLD_ROWS), "meta": { "slug": "x" } });
    let out = convert(wrapped, &ConvertOptions::default()).unwrap();
    assert_eq!(out.dashboard["meta"]["slug"], "x");
    assert_eq!(
        templating(&out.dashboard["dashboard"])[0]["name"],
        "clusterLabel"
    );
    assert!(convert(serde_json::json!([1, 2]), &ConvertOptions::default()).is_err());
    assert!(convert(serde_json::json!({"a": 1}), &ConvertOptions::default()).is_err());
}

#[test]
fn shipped_dashboards_are_the_converters_fixed_points() {
    for (name, source, shipped) in SHIPPED {
        let generated = convert(json(source), &ConvertOptions::default()).unwrap();
        assert!(
            generated.skipped.is_empty(),
            "{name}: {:?}",
            generated.skipped
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("charts/promfed/dashboards")
            .join(name);
        common::golden::assert_golden(&path, &pretty(&generated.dashboard));
        if common::golden::update_requested() {
            continue;
        }
        let again = convert(json(shipped), &ConvertOptions::default()).unwrap();
        assert_eq!(
            &pretty(&again.dashboard),
            shipped,
            "{name} is not a fixed point"
        );
    }
}

#[test]
fn shipped_dashboards_are_valid_and_pinned() {
    for (name, _, shipped) in SHIPPED {
        let d = json(shipped);
        assert!(d["schemaVersion"].as_u64().unwrap() >= 39, "{name}");
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u.len() <= 40),
            "{name}"
        );
        let list = templating(&d);
        let names: Vec<&str> = list
            .iter()
            .take(3)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["datasource", "clusterLabel", "cluster"], "{name}");
        let n = assert_all_pinned(&d, "cluster", false);
        assert!(n >= 10, "{name}: only {n} queries");
        // Unique panel ids, and every non-row panel has a Prometheus target.
        let mut ids = Vec::new();
        fn walk(ps: &Value, ids: &mut Vec<u64>) {
            for p in ps.as_array().into_iter().flatten() {
                ids.push(p["id"].as_u64().unwrap());
                if p["type"] != "row" {
                    assert!(
                        p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                        "{p}"
                    );
                }
                walk(&p["panels"], ids);
            }
        }
        walk(&d["panels"], &mut ids);
        let total = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total, "{name}: duplicate panel ids");
    }
}
