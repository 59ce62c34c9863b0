//! Property tests of the whole ConfigMap rewrite: for random prometheus.yml and rule files,
//! mutating is a fixed point after one step, every local job carries the local rule,
//! every federation job appears exactly once and unlabelled, every rule is labelled, and a
//! local job sharing a federation job's name is refused, never dropped.

use promfed::config::Values;
use promfed::rewrite::mutate_object;
use proptest::prelude::*;
use serde_json::{Value as Json, json};
use serde_yaml::Value;

const VALUES: &str = "localClusterName: tools\nadditionalScrapeConfigs:\n- job_name: fed-a\n  metrics_path: /federate\n  honor_labels: true\n  static_configs:\n  - targets: ['a:9090']\n    labels: {cluster: a}\n- job_name: fed-b\n  static_configs:\n  - targets: ['b:9090']\n    labels: {cluster: b}\n";

/// Expressions of the kinds TKG rule files hold.
const EXPRS: &[&str] = &[
    "up",
    "sum(rate(http_requests_total[5m]))",
    "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))",
    "count(sum(node_cpu_seconds_total) by (instance, cpu))",
    "sum(up) or vector(0)",
    "a:b:c / on (instance) group_left (node) node_info",
    "histogram_quantile(0.99, sum by (le) (rate(x_bucket{le=~\"1(\\\\.0)?\"}[5m])))",
    "max_over_time(rate(x[1m])[10m:1m] offset 5m)",
    "absent(up{job=\"x\"})",
    "time() - node_boot_time_seconds",
];

fn relabel_rule() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(serde_yaml::from_str("{action: keep, source_labels: [__meta_x], regex: y}").unwrap()),
        Just(
            serde_yaml::from_str("{action: labelmap, regex: __meta_kubernetes_node_label_(.+)}")
                .unwrap()
        ),
        // The local rule itself, as a previous run (or a user) left it.
        Just(
            serde_yaml::from_str(
                "{source_labels: [__address__], target_label: cluster, replacement: tools}"
            )
            .unwrap()
        ),
        Just(serde_yaml::from_str("{target_label: env, replacement: prod}").unwrap()),
    ]
}

fn scrape_config() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("fed-a".to_owned()),
            Just("fed-b".to_owned()),
            "[a-z]{1,8}"
        ],
        prop::option::of(prop::collection::vec(relabel_rule(), 0..4)),
        any::<bool>(),
    )
        .prop_map(|(job, relabel, with_static)| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("job_name".into(), Value::from(job));
            if with_static {
                m.insert(
                    "static_configs".into(),
                    serde_yaml::from_str("[{targets: ['localhost:9090']}]").unwrap(),
                );
            }
            if let Some(r) = relabel {
                m.insert("relabel_configs".into(), Value::Sequence(r));
            }
            Value::Mapping(m)
        })
}

fn rule_file() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::collection::vec((0..EXPRS.len(), any::<bool>()), 0..5),
        0..3,
    )
    .prop_map(|groups| {
        let groups: Vec<Json> = groups
            .iter()
            .enumerate()
            .map(|(g, rules)| {
                let rules: Vec<Json> = rules
                    .iter()
                    .enumerate()
                    .map(|(r, (e, alert))| {
                        let kind = if *alert { "alert" } else { "record" };
                        json!({ kind: format!("r{g}_{r}"), "expr": EXPRS[*e] })
                    })
                    .collect();
                json!({"name": format!("g{g}"), "rules": rules})
            })
            .collect();
        serde_yaml::to_string(&json!({ "groups": groups })).unwrap()
    })
}

fn configmap(jobs: Vec<Value>, rules: String) -> Json {
    // Distinct job names only: Prometheus rejects duplicates anyway.
    let mut seen = std::collections::BTreeSet::new();
    let jobs: Vec<Value> = jobs
        .into_iter()
        .filter(|j| seen.insert(j["job_name"].as_str().unwrap().to_owned()))
        .collect();
    let prom = serde_yaml::to_string(
        &serde_json::json!({"global": {"scrape_interval": "1m"}, "scrape_configs": jobs}),
    )
    .unwrap();
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "prometheus-server", "labels": {"app": "prometheus", "component": "server"}},
        "data": {"prometheus.yml": prom, "recording_rules.yml": rules, "other": "keep {me}"}
    })
}

fn mutate(cm: &Json, values: &Values) -> Json {
    let m = mutate_object(cm, values).expect("rewrite");
    let mut out = cm.clone();
    json_patch::patch(&mut out, &m.patch.0).expect("patch applies");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn one_step_reaches_a_fixed_point(jobs in prop::collection::vec(scrape_config(), 0..6), rules in rule_file()) {
        let values = Values::from_yaml_str(VALUES).unwrap();
        let cm = configmap(jobs, rules);
        let input: Value = serde_yaml::from_str(cm["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
        let collides = input["scrape_configs"].as_sequence().into_iter().flatten()
            .any(|j| j["job_name"].as_str().is_some_and(|n| n.starts_with("fed-")));
        if collides {
            // A local job with a federation job's name (not promfed's marked output, not equal
            // to the definition) is never replaced: the rewrite refuses, naming both.
            let e = mutate_object(&cm, &values).unwrap_err().to_string();
            prop_assert!(e.contains("is a local job with the job_name of federation job"), "{}", e);
            return Ok(());
        }
        let once = mutate(&cm, &values);
        let again = mutate_object(&once, &values).unwrap();
        prop_assert!(again.patch.0.is_empty(), "second run patched: {:?}", again.patch);
        prop_assert_eq!(&once["data"]["other"], &cm["data"]["other"]);

        let prom: Value = serde_yaml::from_str(once["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
        let jobs = prom["scrape_configs"].as_sequence().unwrap();
        for fed in ["fed-a", "fed-b"] {
            let n = jobs.iter().filter(|j| j["job_name"].as_str() == Some(fed)).count();
            prop_assert_eq!(n, 1, "federation job {} once", fed);
        }
        for job in jobs {
            let name = job["job_name"].as_str().unwrap();
            let locals = job.get("relabel_configs").and_then(Value::as_sequence).map_or(0, |r| {
                r.iter().filter(|r| r["target_label"].as_str() == Some("cluster") && r["replacement"].as_str() == Some("tools")).count()
            });
            // A local job has the rule (a user's duplicate copies are left as they were);
            // a federation job never has it.
            if name.starts_with("fed-") {
                prop_assert_eq!(locals, 0, "federation job {} labelled local", name);
            } else {
                prop_assert!(locals >= 1, "local job {} not labelled", name);
            }
        }
        let rules: Value = serde_yaml::from_str(once["data"]["recording_rules.yml"].as_str().unwrap()).unwrap();
        for group in rules["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                prop_assert_eq!(&rule["labels"]["cluster"], &Value::from("tools"));
                prop_assert!(rule["expr"].as_str().unwrap().contains("cluster=\"tools\""), "{:?}", rule["expr"]);
            }
        }
    }
}

/// Scalars Prometheus reads as text, in several spellings and styles.
const SCALARS: &[&str] = &[
    "0.50",
    "True",
    "yes",
    "~",
    "''",
    "'it''s'",
    "\"a\\tb\"",
    "0x1F",
    "1e3",
    "page",
    "ünï",
    "\"\"",
];

/// One rule in block or flow style, with optional labels/annotations and comments.
fn styled_rule() -> impl Strategy<Value = (bool, String)> {
    (
        any::<bool>(),
        0..EXPRS.len(),
        prop::option::of(prop::collection::vec((0..4usize, 0..SCALARS.len()), 0..3)),
        prop::option::of(prop::collection::vec((0..4usize, 0..SCALARS.len()), 0..2)),
        any::<bool>(),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(
            |(flow, e, labels, annotations, alert, comment, expr_style)| {
                let names = ["a", "b", "cluster", "severity"];
                let map = |m: &Option<Vec<(usize, usize)>>| -> Option<Vec<(String, String)>> {
                    m.as_ref().map(|v| {
                        let mut seen = std::collections::BTreeSet::new();
                        v.iter()
                            .filter(|(k, _)| seen.insert(*k))
                            .map(|(k, s)| (names[*k].to_owned(), SCALARS[*s].to_owned()))
                            .collect()
                    })
                };
                let kind = if alert { "alert" } else { "record" };
                let expr = EXPRS[e];
                let quoted = match expr_style {
                    0 if !flow => expr.to_owned(),
                    1 => format!("'{}'", expr.replace('\'', "''")),
                    _ => format!("{:?}", expr),
                };
                let c = if comment { " # c" } else { "" };
                let (labels, annotations) = (map(&labels), map(&annotations));
                let text = if flow {
                    let mut parts = vec![format!("{kind}: r"), format!("expr: {quoted}")];
                    for (key, m) in [("labels", &labels), ("annotations", &annotations)] {
                        if let Some(m) = m {
                            let inner: Vec<String> =
                                m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                            parts.push(format!("{key}: {{{}}}", inner.join(", ")));
                        }
                    }
                    format!("  - {{{}}}{c}\n", parts.join(", "))
                } else {
                    let mut t = format!("  - {kind}: r{c}\n    expr: {quoted}{c}\n");
                    for (key, m) in [("labels", &labels), ("annotations", &annotations)] {
                        if let Some(m) = m {
                            if m.is_empty() {
                                t.push_str(&format!("    {key}:{c}\n"));
                            } else {
                                t.push_str(&format!("    {key}:{c}\n"));
                                for (k, v) in m {
                                    t.push_str(&format!("      {k}: {v}{c}\n"));
                                }
                            }
                        }
                    }
                    t
                };
                (alert, text)
            },
        )
}

/// Label or annotation pairs, sorted.
type Pairs = Vec<(String, String)>;

/// `(record or alert, labels, annotations, expr)` of every rule, read as Prometheus reads them.
fn go_view(text: &str) -> Vec<(String, Pairs, Pairs, String)> {
    use promfed::yaml::tree::Tree;
    let t = Tree::parse(text).unwrap();
    let root = t.root.unwrap();
    let mut out = Vec::new();
    for g in t.seq(t.get(root, "groups").unwrap().value).unwrap() {
        for r in t.seq(t.get(*g, "rules").unwrap().value).unwrap_or(&[]) {
            let s = |k: &str| {
                t.get(*r, k)
                    .and_then(|e| t.go_str(e.value))
                    .unwrap_or("")
                    .to_owned()
            };
            let m = |k: &str| {
                let mut v: Pairs = t
                    .get(*r, k)
                    .filter(|e| !t.is_null(e.value))
                    .map(|e| t.string_map(e.value))
                    .unwrap_or_default();
                v.sort();
                v
            };
            out.push((
                s("record") + &s("alert"),
                m("labels"),
                m("annotations"),
                s("expr"),
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the YAML style, the rewrite changes only `expr` and `labels.cluster` as
    /// Prometheus reads them, and a second rewrite changes nothing.
    #[test]
    fn styled_rule_files_change_only_expr_and_cluster(rules in prop::collection::vec(styled_rule(), 1..5), crlf in any::<bool>()) {
        let body: String = rules.iter().map(|(_, t)| t.as_str()).collect();
        let mut text = format!("# head\ngroups:\n- name: g # c\n  rules:\n{body}");
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let values = Values::from_yaml_str(VALUES).unwrap();
        let edit = promfed::rewrite::rules::rewrite_rule_file("r.yml", &text, &values)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let new = edit.text.unwrap();
        let again = promfed::rewrite::rules::rewrite_rule_file("r.yml", &new, &values).unwrap();
        prop_assert!(again.text.is_none(), "not a fixed point:\n{}", new);
        let opts = promfed::promql::RewriteOptions {
            label: "cluster".into(), value: "tools".into(), regex: false, tag_labelless: true,
        };
        for (o, n) in go_view(&text).into_iter().zip(go_view(&new)) {
            prop_assert_eq!(&o.0, &n.0);
            prop_assert_eq!(&o.2, &n.2, "annotations:\n{}\n---\n{}", text, new);
            let mut want = o.1.clone();
            want.retain(|(k, _)| k != "cluster");
            want.push(("cluster".into(), "tools".into()));
            want.sort();
            prop_assert_eq!(&n.1, &want, "labels:\n{}\n---\n{}", text, new);
            prop_assert_eq!(&n.3, &promfed::promql::rewrite_expr(&o.3, &opts).unwrap().expr);
        }
    }
}
