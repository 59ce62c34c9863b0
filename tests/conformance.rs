//! "Prometheus accepts it => promfed accepts it": a few hundred expressions and rule files go
//! to the real `promtool check rules` and to promfed. The test fails on any file promtool
//! accepts and promfed refuses (unless listed in [`EXCEPTIONS`], mirrored in the README with
//! the reason), and on any rewritten file promtool refuses.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::prom::promtool;
use promfed::config::Values;
use promfed::rewrite::rules::rewrite_rule_file;
use promfed::yaml::edit::double;

/// Files promtool accepts that promfed refuses on purpose: `(file name, reason)`.
const EXCEPTIONS: &[(&str, &str)] = &[];

const TRICKY: &str = include_str!("fixtures/promql/tricky.promql");
const DIFFERENTIAL: &str = include_str!("fixtures/differential/rules.yml");
const FLEET_ALERTING: &str = include_str!("fixtures/fleet_alerting/rules.yml");

fn values() -> Values {
    Values::from_yaml_str("localClusterName: local\n").unwrap()
}

/// Generated expressions: functions, aggregations, operators, modifiers and the forms the
/// issue names (Go `\Q...\E`, large `@` timestamps, numbers beyond 64 bits, `\\[`).
fn generated() -> Vec<String> {
    let selectors = [
        "x",
        "x{a=\"b\"}",
        "x{a=~\"\\\\Q[a.b]\\\\E.*\"}",
        "x{a!~\"\\\\[(x|y)\\\\]\"}",
        "{__name__=~\"x_.*\", job!=\"\"}",
        "x{cluster=\"other\"}",
    ];
    let range_fns = [
        "rate",
        "irate",
        "increase",
        "delta",
        "deriv",
        "avg_over_time",
        "max_over_time",
        "quantile_over_time(0.5, ",
        "changes",
        "resets",
        "present_over_time",
        "last_over_time",
    ];
    let aggs = [
        "sum", "avg", "min", "max", "count", "stddev", "stdvar", "group",
    ];
    let mut out = Vec::new();
    for s in selectors {
        for f in range_fns {
            if f.ends_with(", ") {
                out.push(format!("{f}{s}[5m])"));
            } else {
                out.push(format!("{f}({s}[5m])"));
            }
        }
        for a in aggs {
            out.push(format!("{a}({s})"));
            out.push(format!("{a} by (job) ({s})"));
            out.push(format!("{a} without (instance) ({s})"));
        }
        out.push(format!("topk(3, {s})"));
        out.push(format!("quantile by (le) (0.9, {s})"));
        out.push(format!("count_values(\"v\", {s})"));
        out.push(format!("{s} offset 1h"));
        out.push(format!("{s} @ 1700000000"));
        out.push(format!("{s} @ 99999999999"));
        out.push(format!("rate({s}[5m] @ 1e10)"));
        out.push(format!("{s} > 123456789012345678901234567890"));
        out.push(format!("{s} / on (job) group_left (node) y"));
        out.push(format!("{s} * ignoring (instance) y"));
        out.push(format!("{s} and on (job) y"));
        out.push(format!("{s} unless y"));
        out.push(format!("{s} or vector(0)"));
        out.push(format!("absent({s})"));
        out.push(format!(
            "label_replace({s}, \"d\", \"$1\", \"a\", \"(.*)\")"
        ));
        out.push(format!("max_over_time(rate({s}[1m])[10m:1m])"));
        out.push(format!(
            "histogram_quantile(0.9, sum by (le) (rate({s}[5m])))"
        ));
        out.push(format!("holt_winters({s}[10m], 0.5, 0.5)"));
    }
    out.extend(
        [
            "vector(1)",
            "time()",
            "hour()",
            "scalar(x)",
            "1",
            "-1.5e3",
            "0x1F",
            "Inf",
            "NaN",
            "sort_desc(sum by (job) (up))",
            "x ^ 2 % 3",
            "x == bool 1",
            "-x",
            "((x))",
            "x{a=\"\\\\[\"} + y{b=\"\\\\{\"}",
        ]
        .map(str::to_owned),
    );
    out
}

/// A rule file holding one recording rule with `expr`.
fn rule_file(expr: &str) -> String {
    format!(
        "groups:\n- name: g\n  rules:\n  - record: r\n    expr: {}\n",
        double(expr)
    )
}

/// Whole files in forms the issue names.
fn special_files() -> Vec<(String, String)> {
    let regex_rule =
        "  - record: r:re\n    expr: sum(rate(x{path=~\"/api/\\\\[v1\\\\]/.*\"}[5m]))\n";
    let mut long = String::from("groups:\n- name: long\n  rules:\n");
    for i in 0..400 {
        long.push_str(&regex_rule.replace("r:re", &format!("r:re{i}")));
    }
    let mut many_groups = String::from("groups:\n");
    for i in 0..300 {
        many_groups.push_str(&format!(
            "- name: g{i}\n  rules:\n  - record: r\n    expr: x{{a=~'[[{{'}}\n    labels: {{l: '[{{'}}\n"
        ));
    }
    vec![
        ("merge-keys.yml".into(), "groups:\n- name: g\n  rules:\n  - &r\n    alert: A\n    expr: up == 0\n    labels: &l {s: page}\n  - <<: *r\n    alert: B\n  - alert: C\n    expr: up == 1\n    labels: {<<: *l, t: x}\n".into()),
        ("big-int-labels.yml".into(), "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    labels: {big: 123456789012345678901234567890, neg: -99999999999999999999999}\n".into()),
        ("trailing-doc.yml".into(), "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n---\n".into()),
        ("trailing-doc-content.yml".into(), "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n---\nanything: [\n".into()),
        ("bom.yml".into(), "\u{feff}groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n".into()),
        ("long-regexes.yml".into(), long),
        ("brackets-in-strings.yml".into(), many_groups),
        ("tabs.yml".into(), "groups:\n- name: g\n  rules:\n  - record: r\n    expr: \"up\\t+\\t1\"\n    labels: {t: \"a\\tb\"}\n".into()),
        ("empty.yml".into(), "".into()),
        ("comment-only.yml".into(), "# nothing\n".into()),
        ("empty-groups.yml".into(), "groups: []\n".into()),
        ("null-groups.yml".into(), "groups:\n".into()),
        ("flow.yml".into(), "{groups: [{name: g, rules: [{record: r, expr: up}]}]}\n".into()),
        ("quoted-keys.yml".into(), "\"groups\":\n- 'name': g\n  \"rules\":\n  - \"record\": r\n    'expr': up\n".into()),
        ("block-expr.yml".into(), "groups:\n- name: g\n  rules:\n  - record: r\n    expr: |\n      sum(\n        rate(x[5m])  # comment in PromQL\n      )\n".into()),
        ("crlf.yml".into(), "groups:\r\n- name: g\r\n  rules:\r\n  - record: r\r\n    expr: up\r\n".into()),
        ("doc-markers.yml".into(), "---\ngroups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n...\n".into()),
    ]
}

/// Runs `promtool check rules` on many files at once; `file name -> accepted`.
fn promtool_verdicts(dir: &Path, names: &[String]) -> BTreeMap<String, (bool, String)> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(200) {
        let output = std::process::Command::new(&promtool().path)
            .arg("check")
            .arg("rules")
            .args(chunk)
            .current_dir(dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for name in chunk {
            let marker = format!("Checking {name}\n");
            let Some(at) = text.find(&marker) else {
                panic!("promtool said nothing about {name}:\n{text}");
            };
            let rest = &text[at + marker.len()..];
            let block = rest.split("Checking ").next().unwrap_or_default();
            out.insert(
                name.clone(),
                (block.trim_start().starts_with("SUCCESS"), block.to_owned()),
            );
        }
    }
    out
}

/// Every expression of the corpus: tricky ones, real-world rules, generated forms.
fn corpus() -> Vec<String> {
    let mut exprs: Vec<String> = TRICKY
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    exprs.extend(real_world());
    exprs.extend(generated());
    exprs
}

/// The recording and alerting rules of the differential and fleet-alerting fixtures.
fn real_world() -> Vec<String> {
    let mut exprs = Vec::new();
    for text in [DIFFERENTIAL, FLEET_ALERTING] {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        for g in doc["groups"].as_sequence().into_iter().flatten() {
            for r in g["rules"].as_sequence().into_iter().flatten() {
                if let Some(e) = r["expr"].as_str() {
                    exprs.push(e.to_owned());
                }
            }
        }
    }
    exprs
}

/// The fast PromQL parser builds exactly promql-parser's tree whenever it takes an expression
/// (and takes nothing promql-parser refuses); it takes nearly all real-world rules, so the
/// admission path rarely pays for the LR parser.
#[test]
fn fast_parser_agrees_with_promql_parser_on_the_corpus() {
    let mut wrong = Vec::new();
    for e in corpus() {
        if let Err(why) = promfed::promql::check_fast_parser(&e) {
            wrong.push(why);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let real = real_world();
    let taken = real
        .iter()
        .filter(|e| promfed::promql::check_fast_parser(e) == Ok(true))
        .count();
    assert!(real.len() >= 100, "only {} real-world rules", real.len());
    // Declined today: only rules using what the fast path leaves alone on purpose.
    assert!(
        taken * 100 >= real.len() * 95,
        "fast path took only {taken} of {} real-world rules",
        real.len()
    );
}

#[test]
fn what_promtool_accepts_promfed_accepts_and_rewrites_into_what_promtool_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, String)> = Vec::new();
    let exprs = corpus();
    for (i, e) in exprs.iter().enumerate() {
        files.push((format!("expr-{i:03}.yml"), rule_file(e)));
    }
    files.extend(special_files());
    assert!(files.len() >= 300, "only {} files", files.len());
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let verdicts = promtool_verdicts(dir.path(), &names);

    let mut refused = Vec::new();
    let mut rewritten = Vec::new();
    let mut accepted = 0;
    for (name, text) in &files {
        if !verdicts[name].0 {
            continue;
        }
        accepted += 1;
        match rewrite_rule_file(name, text, &values()) {
            Err(e) if !EXCEPTIONS.iter().any(|(n, _)| n == name) => {
                refused.push(format!(
                    "{name}: {e}\n{}",
                    text.chars().take(300).collect::<String>()
                ));
            }
            Err(_) => {}
            Ok(edit) => {
                if let Some(new) = edit.text {
                    let out = format!("new-{name}");
                    std::fs::write(dir.path().join(&out), new).unwrap();
                    rewritten.push(out);
                }
            }
        }
    }
    assert!(accepted >= 280, "promtool accepted only {accepted} files");
    assert!(
        refused.is_empty(),
        "promtool accepts, promfed refuses:\n{}",
        refused.join("\n\n")
    );
    let bad: Vec<String> = promtool_verdicts(dir.path(), &rewritten)
        .into_iter()
        .filter(|(_, (ok, _))| !ok)
        .map(|(n, (_, why))| {
            let text = std::fs::read_to_string(dir.path().join(&n)).unwrap();
            format!("{n}: {why}\n{text:.400}")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "promfed rewrote into what promtool refuses:\n{}",
        bad.join("\n\n")
    );
}
