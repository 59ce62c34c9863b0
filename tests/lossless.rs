//! The lossless contract, proven with the real binaries: on a corpus of YAML forms
//! (tests/fixtures/lossless: every scalar style; numbers, booleans and nulls in YAML 1.1 and
//! 1.2 spellings as label/annotation values and as names; anchors, aliases, merge keys; block
//! scalars with every chomping indicator; comments everywhere; CRLF; BOM; document markers;
//! tabs and unicode), Prometheus 2.42 reads every rewritten rule exactly as it reads the
//! original (name, `for`, `keep_firing_for`, labels, annotations, group names and intervals)
//! apart from the intended edits: the expression and `labels.cluster`.
//!
//! - `promtool check rules` accepts original and rewritten file;
//! - one real `prometheus` loads both and `/api/v1/rules` is compared rule by rule;
//! - `promtool test rules` fires the alerts of both with the labels and annotations read from
//!   the original (plus `cluster="local"` for the rewritten file);
//! - the rewritten files are golden files (`UPDATE_GOLDEN=1` to accept a change; review the
//!   diff: only `expr` values and `cluster` labels may differ from the input), and a second
//!   rewrite changes nothing.

mod common;

use std::path::{Path, PathBuf};

use common::prom::{PromOptions, Prometheus, promtool};
use promfed::config::Values;
use promfed::rewrite::rules::rewrite_rule_file;
use serde_json::{Value as Json, json};

const CORPUS: &[&str] = &["scalars.yml", "anchors.yml", "crlf.yml"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lossless")
        .join(name)
}

fn values() -> Values {
    Values::from_yaml_str("localClusterName: local\n").unwrap()
}

/// `(original, rewritten)` text of a corpus file.
fn pair(name: &str) -> (String, String) {
    let orig = std::fs::read_to_string(fixture(name)).unwrap();
    let edit = rewrite_rule_file(name, &orig, &values())
        .unwrap_or_else(|e| panic!("{name}: promfed refuses a file promtool accepts: {e}"));
    let new = edit
        .text
        .unwrap_or_else(|| panic!("{name}: nothing rewritten"));
    (orig, new)
}

#[test]
fn rewritten_corpus_matches_golden_and_is_a_fixed_point() {
    for name in CORPUS {
        let (_, new) = pair(name);
        let golden = fixture(&format!("{name}.rewritten"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &new).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1)", golden.display()));
            assert!(
                want == new,
                "{name}: differs from {}:\n{new}",
                golden.display()
            );
        }
        let again = rewrite_rule_file(name, &new, &values()).unwrap();
        assert!(again.text.is_none(), "{name}: second rewrite changed it");
    }
}

#[test]
fn promtool_accepts_original_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    for name in CORPUS {
        let (orig, new) = pair(name);
        for (tag, text) in [("orig", &orig), ("new", &new)] {
            let path = dir.path().join(format!("{tag}-{name}"));
            std::fs::write(&path, text).unwrap();
            promtool()
                .check_rules(&path)
                .unwrap_or_else(|e| panic!("{tag} {name}: {e:#}"));
        }
    }
}

/// Rules as Prometheus reports them, without what changes on purpose or per evaluation.
fn stable(rule: &Json) -> Json {
    let mut r = rule.clone();
    let m = r.as_object_mut().unwrap();
    for k in [
        "query",
        "health",
        "evaluationTime",
        "lastEvaluation",
        "alerts",
        "state",
        "lastError",
    ] {
        m.remove(k);
    }
    r
}

/// One Prometheus loads every original and rewritten file; `/api/v1/rules` must agree rule by
/// rule apart from the intended edits. Then `promtool test rules` checks that alerts on `up`
/// fire in both with the labels and annotations Prometheus read from the original.
#[test]
fn prometheus_reads_rewritten_rules_as_the_originals() {
    let mut files = Vec::new();
    for name in CORPUS {
        let (orig, new) = pair(name);
        files.push((format!("orig-{name}"), orig));
        files.push((format!("new-{name}"), new));
    }
    let rule_files: Vec<String> = files.iter().map(|(n, _)| format!("  - {n}\n")).collect();
    let prom = Prometheus::start(&PromOptions {
        config_yaml: format!(
            "global:\n  evaluation_interval: 1h\nrule_files:\n{}",
            rule_files.concat()
        ),
        files: files.clone(),
        ..PromOptions::default()
    })
    .expect("prometheus starts with every original and rewritten file");
    let api = prom.get_json("/api/v1/rules").unwrap();
    let groups = api["data"]["groups"].as_array().unwrap();
    let by_file = |prefix: &str, name: &str| -> Vec<Json> {
        groups
            .iter()
            .filter(|g| {
                g["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(&format!("{prefix}-{name}")))
            })
            .cloned()
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut alerts_tested = 0;
    for name in CORPUS {
        let (orig, new) = (by_file("orig", name), by_file("new", name));
        assert!(!orig.is_empty(), "{name}: no groups loaded");
        assert_eq!(orig.len(), new.len(), "{name}: group count");
        for (og, ng) in orig.iter().zip(&new) {
            assert_eq!(og["name"], ng["name"], "{name}: group name");
            assert_eq!(og["interval"], ng["interval"], "{name}: group interval");
            let (or, nr) = (
                og["rules"].as_array().unwrap(),
                ng["rules"].as_array().unwrap(),
            );
            assert_eq!(or.len(), nr.len(), "{name}: rule count in {}", og["name"]);
            for (o, n) in or.iter().zip(nr) {
                let mut want = stable(o);
                want["labels"]
                    .as_object_mut()
                    .map(|l| l.insert("cluster".into(), json!("local")))
                    .unwrap_or_else(|| {
                        want["labels"] = json!({"cluster": "local"});
                        None
                    });
                assert_eq!(stable(n), want, "{name}: rule {}", o["name"]);
                let q = n["query"].as_str().unwrap();
                // Scalars such as `1` need no matcher; everything else is pinned.
                assert!(
                    q.contains("cluster=\"local\"") || (q == o["query"] && !q.contains('{')),
                    "{name}: {q}"
                );
            }
            alerts_tested += promtool_test(dir.path(), name, og, "orig", None);
            alerts_tested += promtool_test(dir.path(), name, og, "new", Some("local"));
        }
    }
    assert!(alerts_tested >= 10, "only {alerts_tested} alert tests ran");
}

/// Writes and runs a `promtool test rules` file for the alerts of group `g` (as read from the
/// original) whose query is `up == 0`, against the `{tag}-{name}` rule file. Returns how many
/// alerts it tested.
fn promtool_test(dir: &Path, name: &str, g: &Json, tag: &str, cluster: Option<&str>) -> usize {
    let alerts: Vec<&Json> = g["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "alerting" && r["query"] == "up == 0")
        .collect();
    if alerts.is_empty() {
        return 0;
    }
    let series_labels = match cluster {
        Some(c) => format!("{{job=\"a\", cluster=\"{c}\"}}"),
        None => "{job=\"a\"}".to_owned(),
    };
    let mut tests = Vec::new();
    for a in &alerts {
        let mut labels = a["labels"].as_object().cloned().unwrap_or_default();
        labels.retain(|_, v| v.as_str() != Some(""));
        labels.insert("job".into(), json!("a"));
        if let Some(c) = cluster {
            labels.insert("cluster".into(), json!(c));
        }
        tests.push(json!({
            "eval_time": "30m",
            "alertname": a["name"],
            "exp_alerts": [{"exp_labels": labels, "exp_annotations": a["annotations"]}],
        }));
    }
    // JSON is YAML: the test file needs no YAML emitter.
    let test = json!({
        "rule_files": [format!("{tag}-{name}")],
        "evaluation_interval": "1m",
        "group_eval_order": [g["name"]],
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": format!("up{series_labels}"), "values": "0x40"}],
            "alert_rule_test": tests,
        }],
    });
    let rules = std::fs::read_to_string(fixture(name)).unwrap();
    let text = if tag == "orig" {
        rules
    } else {
        rewrite_rule_file(name, &rules, &values())
            .unwrap()
            .text
            .unwrap()
    };
    std::fs::write(dir.join(format!("{tag}-{name}")), text).unwrap();
    let test_path = dir.join(format!("test-{tag}-{name}-{}.yml", alerts.len()));
    std::fs::write(&test_path, serde_json::to_string_pretty(&test).unwrap()).unwrap();
    let out = std::process::Command::new(&promtool().path)
        .arg("test")
        .arg("rules")
        .arg(&test_path)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules {tag} {name} group {}:\n{}{}",
        g["name"],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    alerts.len()
}
