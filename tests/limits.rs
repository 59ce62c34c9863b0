//! Limits: inputs built to exhaust stack, memory or time are rejected with a clear error.
//!
//! A webhook with `failurePolicy: Fail` must survive whatever the API server forwards: a 1 MiB
//! rule file, a PromQL expression nested 10,000 levels, YAML whose anchors and aliases expand
//! exponentially (billion laughs) or quadratically (one big anchor aliased many times), deep
//! YAML/JSON nesting. An overflowing stack or a failed allocation aborts the whole process, so
//! each case runs in a child process: this test binary re-run with one case selected
//! ([`isolated_case`]), under a 1 GiB address-space cap (`ulimit -v`) and on a thread with the
//! 2 MiB stack of a tokio worker. The parent reports how the child ended (exit code, signal)
//! with its output, so a crash names the case instead of killing every test in the file.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use promfed::admission::review;
use promfed::config::Values;
use promfed::promql::{RewriteOptions, rewrite_expr};
use promfed::rewrite::rules::rewrite_rule_file;
use promfed::rewrite::scrape::rewrite_prometheus_yml;
use promfed::rewrite::{MAX_DOCUMENT_BYTES, mutate_object};
use serde_json::{Value as Json, json};

/// Environment variable selecting the case a child runs.
const CASE_ENV: &str = "PROMFED_LIMITS_CASE";
/// Address-space cap of a child, in KiB (1 GiB): far above what any legitimate case needs
/// (a 2 MiB document parses into a few tens of MiB), far below what the bombs expand to.
const CHILD_MEMORY_KIB: u64 = 1024 * 1024;
/// Stack of the thread a case runs on: tokio's default worker stack, where the server runs it.
const CASE_STACK_BYTES: usize = 2 * 1024 * 1024;
/// CPU-time cap of a child, in seconds (`ulimit -t`, SIGXCPU past it): a resource bound like
/// the memory cap, not a timing assertion. Every case is a few milliseconds to a few seconds of
/// work in a debug build; inputs whose cost grows quadratically run for hours.
const CHILD_CPU_SECS: u64 = 30;
/// Hang guard (wall clock, for a child blocked without using CPU); killed after it.
const CHILD_DEADLINE: Duration = Duration::from_secs(300);
/// One MiB, the API server's limit for a whole ConfigMap.
const MIB: usize = 1024 * 1024;

fn values() -> Values {
    Values::from_yaml_str(promfed::cli::EXAMPLE_VALUES).unwrap()
}

fn rule_opts() -> RewriteOptions {
    RewriteOptions {
        label: "cluster".to_owned(),
        value: "local".to_owned(),
        regex: false,
        tag_labelless: true,
    }
}

/// True when `msg` says which limit was hit, in words a user can act on.
fn names_a_limit(msg: &str) -> bool {
    let m = msg.to_lowercase();
    [
        "limit",
        "deeper",
        "depth",
        "exceed",
        "too large",
        "too big",
        "nested",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn expect_limit_error<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    r: Result<T, E>,
) -> Result<String, String> {
    match r {
        Ok(v) => Err(format!(
            "{what}: accepted, expected a limit error; got {:.300}",
            format!("{v:?}")
        )),
        Err(e) => {
            let msg = e.to_string();
            if names_a_limit(&msg) {
                Ok(format!("{what}: rejected: {msg:.300}"))
            } else {
                Err(format!(
                    "{what}: rejected without naming a limit: {msg:.500}"
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input builders.

/// `depth` nested parentheses around `up`.
fn nested_parens(depth: usize) -> String {
    format!("{}up{}", "(".repeat(depth), ")".repeat(depth))
}

/// `depth` nested aggregations: `sum(sum(...(up)...))`.
fn nested_calls(depth: usize) -> String {
    format!("{}up{}", "sum(".repeat(depth), ")".repeat(depth))
}

/// A flat chain `up + up + ... + up`: a left-deep tree as deep as it is long.
fn binary_chain(terms: usize) -> String {
    vec!["up"; terms].join(" + ")
}

/// A right-nested chain `a+(a+(...up))`, compact so 10,000 levels stay under the byte limit.
fn right_nested(depth: usize) -> String {
    format!("{}up{}", "a+(".repeat(depth), ")".repeat(depth))
}

/// `depth` unary minus signs before `up`.
fn unary_chain(depth: usize) -> String {
    format!("{}up", "-".repeat(depth))
}

/// Nested subqueries `max_over_time((max_over_time((up)[5m:]))[5m:])`.
fn nested_subqueries(depth: usize) -> String {
    format!(
        "{}up{}",
        "max_over_time((".repeat(depth),
        ")[5m:])".repeat(depth)
    )
}

/// A rule file holding one recording rule with `expr`.
fn rule_file_with(expr: &str) -> String {
    let quoted = serde_json::to_string(expr).unwrap();
    format!("groups:\n- name: deep\n  rules:\n  - record: deep:rule\n    expr: {quoted}\n")
}

/// Ordinary recording rules until the file reaches `bytes`.
fn big_rule_file(bytes: usize) -> (String, usize) {
    let mut text = String::from("groups:\n");
    let mut rules = 0;
    let mut group = 0;
    while text.len() < bytes {
        text.push_str(&format!("- name: group-{group}\n  rules:\n"));
        for _ in 0..50 {
            text.push_str(&format!(
                "  - record: job:http_requests:rate5m_{rules}\n    expr: sum by (job, code) (rate(http_requests_total{{job=\"api-{rules}\",code=~\"5..\"}}[5m])) / sum by (job) (rate(http_requests_total{{job=\"api-{rules}\"}}[5m]))\n    labels:\n      team: t{group}\n"
            ));
            rules += 1;
        }
        group += 1;
    }
    (text, rules)
}

/// The classic billion laughs: 9 levels of 10 aliases each, 10^9 strings once expanded.
fn billion_laughs(top_key: &str) -> String {
    let mut s = String::from("a0: &a0 \"lol\"\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.push_str(&format!("{top_key}: [*a9]\n"));
    s
}

/// The quadratic variant no repetition counter catches: one anchored string of `anchor_bytes`
/// aliased `aliases` times. Each alias is one parser event, so the expansion
/// (`anchor_bytes * aliases`) stays far below serde_yaml's limit of 100 jumps per event.
fn alias_flood(anchor_bytes: usize, aliases: usize, top_key: &str) -> String {
    let mut s = format!("big: &big \"{}\"\n{top_key}: [", "x".repeat(anchor_bytes));
    s.push_str(&vec!["*big"; aliases].join(","));
    s.push_str("]\n");
    s
}

/// Flow nesting that fits a 1 MiB ConfigMap and the 1 MiB values file: 1,000,000 bytes of
/// brackets. libyaml's scanner does work proportional to the flow depth for every token, so
/// this costs O(depth^2) before serde_yaml's recursion limit (128) ever sees an event.
const DEEP_YAML: usize = 500_000;

/// A list nested `depth` levels deep (`[[[...]]]`) under `key`.
fn deep_yaml(depth: usize, key: &str) -> String {
    format!("{key}: {}x{}\n", "[".repeat(depth), "]".repeat(depth))
}

/// The Prometheus server ConfigMap (matching the default `match.configMap`) with `data`.
fn configmap(data: &[(&str, &str)]) -> Json {
    let data: serde_json::Map<String, Json> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Json::String((*v).to_owned())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "prometheus-server",
            "namespace": "tanzu-system-monitoring",
            "labels": {"app": "prometheus", "component": "server"}
        },
        "data": data
    })
}

/// An AdmissionReview v1 CREATE of `object`, shaped like kube-apiserver's.
fn admission_review(object: Json) -> Vec<u8> {
    let review =
        common::admission::review("0b5a2a4e-1c1d-4c1e-9a3f-limits", "CREATE", &object, None);
    serde_json::to_vec(&review).unwrap()
}

/// Runs `body` through the admission handler and expects `allowed: false` naming a limit.
fn expect_denied_review(what: &str, body: &[u8]) -> Result<String, String> {
    let reviewed = review(body, &values()).map_err(|e| format!("{what}: HTTP 400: {e}"))?;
    let answer: Json = serde_json::from_slice(&reviewed.body).map_err(|e| e.to_string())?;
    let response = &answer["response"];
    let message = response["status"]["message"].as_str().unwrap_or_default();
    if response["allowed"] != Json::Bool(false) {
        return Err(format!(
            "{what}: allowed, expected a denial naming a limit: {:.300}",
            response.to_string()
        ));
    }
    if !names_a_limit(message) {
        return Err(format!(
            "{what}: denied without naming a limit: {message:.500}"
        ));
    }
    Ok(format!("{what}: denied: {message:.300}"))
}

// ---------------------------------------------------------------------------------------------
// The cases. Each returns a one-line summary, or why it failed.

type Case = fn() -> Result<String, String>;

const CASES: &[(&str, Case)] = &[
    ("promql_parens_10000", || {
        expect_limit_error("parens", rewrite_expr(&nested_parens(10_000), &rule_opts()))
    }),
    ("promql_calls_10000", || {
        expect_limit_error("sum(", rewrite_expr(&nested_calls(10_000), &rule_opts()))
    }),
    ("promql_binary_chain_10000", || {
        expect_limit_error("a+b+...", rewrite_expr(&binary_chain(10_000), &rule_opts()))
    }),
    ("promql_right_nested_10000", || {
        expect_limit_error(
            "a+(b+(...))",
            rewrite_expr(&right_nested(10_000), &rule_opts()),
        )
    }),
    ("promql_unary_10000", || {
        expect_limit_error("----x", rewrite_expr(&unary_chain(10_000), &rule_opts()))
    }),
    ("promql_subqueries_10000", || {
        expect_limit_error(
            "subqueries",
            rewrite_expr(&nested_subqueries(10_000), &rule_opts()),
        )
    }),
    ("promql_one_mib_expression", || {
        // 1 MiB of one flat expression, the whole ConfigMap budget in one rule.
        let expr = binary_chain(MIB / 5);
        expect_limit_error("1 MiB expr", rewrite_expr(&expr, &rule_opts()))
    }),
    ("promql_moderate_nesting_is_accepted", || {
        // The limit must not bite real rules: 32 levels of each shape still rewrite.
        for (shape, expr) in [
            ("parens", nested_parens(32)),
            ("calls", nested_calls(32)),
            ("chain", binary_chain(32)),
            ("right", right_nested(32)),
            ("subqueries", nested_subqueries(16)),
        ] {
            let out = rewrite_expr(&expr, &rule_opts()).map_err(|e| format!("{shape}: {e}"))?;
            if !out.changed {
                return Err(format!("{shape}: not rewritten"));
            }
        }
        Ok("32 levels of parens, calls, chains; 16 subqueries: rewritten".to_owned())
    }),
    ("rule_file_nested_10000", || {
        let text = rule_file_with(&nested_parens(10_000));
        let r = rewrite_rule_file("recording_rules.yml", &text, &values());
        let msg = match &r {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        if !(msg.contains("recording_rules.yml") && msg.contains("deep:rule")) {
            return Err(format!("error must name key and rule: {msg:.300}"));
        }
        expect_limit_error("rule file, 10,000 parens", r)
    }),
    ("admission_nested_10000", || {
        let rules = rule_file_with(&nested_calls(10_000));
        let cm = configmap(&[("recording_rules.yml", &rules)]);
        expect_denied_review("AdmissionReview, 10,000 nested sum(", &admission_review(cm))
    }),
    ("rule_file_one_mib", || {
        // A legitimate 1 MiB rule file (the API server's ConfigMap limit) is rewritten, and
        // every rule gets the label.
        let (text, rules) = big_rule_file(MIB);
        let start = Instant::now();
        let edit = rewrite_rule_file("recording_rules.yml", &text, &values())
            .map_err(|e| format!("1 MiB rule file rejected: {e}"))?;
        let out = edit.text.ok_or("1 MiB rule file: nothing rewritten")?;
        let labelled = out.matches("cluster: shared-tools").count();
        if labelled != rules {
            return Err(format!("{labelled} of {rules} rules labelled"));
        }
        Ok(format!(
            "{} bytes, {rules} rules rewritten in {:?} ({} bytes out)",
            text.len(),
            start.elapsed(),
            out.len()
        ))
    }),
    ("rule_file_over_document_limit", || {
        let (text, _) = big_rule_file(MAX_DOCUMENT_BYTES + 1);
        expect_limit_error(
            "rule file over MAX_DOCUMENT_BYTES",
            rewrite_rule_file("recording_rules.yml", &text, &values()),
        )
    }),
    ("prometheus_yml_over_document_limit", || {
        let mut text = String::from("scrape_configs:\n");
        while text.len() <= MAX_DOCUMENT_BYTES {
            text.push_str("- job_name: j\n  static_configs: [{targets: ['localhost:9090']}]\n");
        }
        expect_limit_error(
            "prometheus.yml over MAX_DOCUMENT_BYTES",
            rewrite_prometheus_yml("prometheus.yml", &text, &values()),
        )
    }),
    ("billion_laughs_prometheus_yml", || {
        expect_limit_error(
            "prometheus.yml",
            rewrite_prometheus_yml(
                "prometheus.yml",
                &billion_laughs("scrape_configs"),
                &values(),
            ),
        )
    }),
    ("billion_laughs_rule_file", || {
        expect_limit_error(
            "rule file",
            rewrite_rule_file("recording_rules.yml", &billion_laughs("groups"), &values()),
        )
    }),
    ("billion_laughs_values", || {
        expect_limit_error(
            "values file",
            Values::from_yaml_str(&billion_laughs("additionalScrapeConfigs")),
        )
    }),
    ("billion_laughs_admission", || {
        let cm = configmap(&[("prometheus.yml", &billion_laughs("scrape_configs"))]);
        expect_denied_review("AdmissionReview", &admission_review(cm))
    }),
    ("alias_flood_prometheus_yml", || {
        // 400 KiB anchored once, aliased 100,000 times: a 0.9 MiB ConfigMap expanding to 40 GiB.
        let text = alias_flood(400 * 1024, 100_000, "scrape_configs");
        expect_limit_error(
            "prometheus.yml",
            rewrite_prometheus_yml("prometheus.yml", &text, &values()),
        )
    }),
    ("alias_flood_rule_file", || {
        let text = alias_flood(400 * 1024, 100_000, "groups");
        expect_limit_error(
            "rule file",
            rewrite_rule_file("recording_rules.yml", &text, &values()),
        )
    }),
    ("alias_flood_values", || {
        // Under the 1 MiB values-file cap: 400 KiB aliased 100,000 times.
        let text = alias_flood(400 * 1024, 100_000, "additionalScrapeConfigs");
        expect_limit_error("values file", Values::from_yaml_str(&text))
    }),
    ("alias_flood_admission", || {
        let text = alias_flood(400 * 1024, 100_000, "scrape_configs");
        let cm = configmap(&[("prometheus.yml", &text)]);
        expect_denied_review("AdmissionReview", &admission_review(cm))
    }),
    ("deep_yaml_prometheus_yml", || {
        expect_limit_error(
            "prometheus.yml",
            rewrite_prometheus_yml(
                "prometheus.yml",
                &deep_yaml(DEEP_YAML, "scrape_configs"),
                &values(),
            ),
        )
    }),
    ("deep_yaml_rule_file", || {
        expect_limit_error(
            "rule file",
            rewrite_rule_file(
                "recording_rules.yml",
                &deep_yaml(DEEP_YAML, "groups"),
                &values(),
            ),
        )
    }),
    ("deep_yaml_values", || {
        expect_limit_error(
            "values file",
            Values::from_yaml_str(&deep_yaml(DEEP_YAML, "additionalScrapeConfigs")),
        )
    }),
    ("deep_json_admission", || {
        // 100,000 nested arrays as the object: not JSON serde_json agrees to decode (HTTP 400).
        let mut body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        body.extend(std::iter::repeat_n(b']', 100_000));
        body.extend(b"}}");
        expect_limit_error("AdmissionReview", review(&body, &values()).map(|r| r.uid))
    }),
    ("deep_json_object_in_configmap", || {
        // Nesting within serde_json's limit but inside an object the engine walks.
        let mut deep = json!("x");
        for _ in 0..120 {
            deep = json!({ "a": deep });
        }
        let mut cm = configmap(&[("prometheus.yml", "scrape_configs: []\n")]);
        cm["metadata"]["annotations"] = json!({ "deep": deep });
        let body = admission_review(cm);
        match review(&body, &values()) {
            Ok(r) => Ok(format!("120-deep object answered ({})", r.outcome.as_str())),
            Err(e) => Ok(format!("120-deep object rejected: {e}")),
        }
    }),
    ("rewritten_configmap_fits_the_api_server_limit", || {
        // A 1 MiB prometheus.yml of tiny jobs: each gets the local relabel rule, so the
        // rewritten data would be several MiB, which kube-apiserver refuses to store (its
        // ConfigMap limit is 1 MiB) with an error that does not name promfed. Expect either a
        // clear denial from promfed or a result that fits.
        let mut text = String::from("scrape_configs:\n");
        let mut n = 0;
        while text.len() < MIB - 64 {
            text.push_str(&format!("- job_name: j{n}\n"));
            n += 1;
        }
        let cm = configmap(&[("prometheus.yml", &text)]);
        match mutate_object(&cm, &values()) {
            Err(e) if names_a_limit(&e.to_string()) => {
                Ok(format!("{n} jobs: denied clearly: {e:.300}"))
            }
            Err(e) => Err(format!("{n} jobs: denied without naming a limit: {e:.300}")),
            Ok(m) => {
                let mut patched = cm.clone();
                json_patch::patch(&mut patched, &m.patch).map_err(|e| e.to_string())?;
                let size: usize = patched["data"]
                    .as_object()
                    .map(|d| {
                        d.iter()
                            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                            .sum()
                    })
                    .unwrap_or_default();
                if size > MIB {
                    Err(format!(
                        "{n} jobs: {} bytes in, patched ConfigMap data is {size} bytes, over the \
                         API server's 1 MiB limit, and promfed did not say so",
                        text.len()
                    ))
                } else {
                    Ok(format!("{n} jobs: patched data {size} bytes"))
                }
            }
        }
    }),
];

// ---------------------------------------------------------------------------------------------
// Child side.

/// The child side: runs the case named in `PROMFED_LIMITS_CASE` on a 2 MiB-stack thread.
/// Without the variable (a normal `cargo test` run) there is nothing to do.
#[test]
fn isolated_case() {
    let Ok(name) = std::env::var(CASE_ENV) else {
        return;
    };
    let case = CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no case {name:?}"));
    let start = Instant::now();
    let outcome = std::thread::Builder::new()
        .name(name.clone())
        .stack_size(CASE_STACK_BYTES)
        .spawn(case)
        .unwrap()
        .join()
        .unwrap_or_else(|_| Err("the case panicked".to_owned()));
    match outcome {
        Ok(summary) => println!("CASE {name} ok in {:?}: {summary}", start.elapsed()),
        Err(why) => panic!("CASE {name} failed after {:?}: {why}", start.elapsed()),
    }
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// Runs case `name` in a child under the memory cap and fails with the child's story.
fn run_isolated(name: &str) {
    assert!(CASES.iter().any(|(n, _)| *n == name), "unknown case {name}");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {CHILD_MEMORY_KIB} && ulimit -t {CHILD_CPU_SECS} && exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args([
            "isolated_case",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, name)
        .env_remove("RUST_MIN_STACK")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let report = |s: &str| {
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    match status {
        Some(s) if s.success() && stdout.contains(&format!("CASE {name} ok")) => {
            let line = stdout
                .lines()
                .find_map(|l| l.find("CASE ").map(|i| &l[i..]))
                .unwrap_or_default();
            println!("{line}");
        }
        Some(s) => {
            let how = match (s.code(), s.signal()) {
                (_, Some(6)) => {
                    "killed by SIGABRT: a stack overflow or a failed allocation under the \
                     1 GiB cap, i.e. unbounded memory"
                        .to_owned()
                }
                (_, Some(11)) => "killed by SIGSEGV (stack overflow)".to_owned(),
                (_, Some(24 | 9)) => format!(
                    "killed by SIGXCPU/SIGKILL: more than {CHILD_CPU_SECS} s of CPU, i.e. \
                     unbounded time"
                ),
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(c), None) => format!("exited with {c}"),
                (None, None) => "ended".to_owned(),
            };
            panic!(
                "case {name}: child {how}\n--- stdout\n{}\n--- stderr\n{}",
                report(&stdout),
                report(&stderr)
            );
        }
        None => panic!(
            "case {name}: still running after {CHILD_DEADLINE:?} (a hang), killed\n--- stderr\n{}",
            report(&stderr)
        ),
    }
}

macro_rules! isolated_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_isolated(stringify!($name));
            }
        )*
        /// Every case has a test, so none is silently skipped.
        #[test]
        fn every_case_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (case, _) in CASES {
                assert!(tested.contains(case), "case {case} has no test");
            }
        }
    };
}

isolated_tests!(
    promql_parens_10000,
    promql_calls_10000,
    promql_binary_chain_10000,
    promql_right_nested_10000,
    promql_unary_10000,
    promql_subqueries_10000,
    promql_one_mib_expression,
    promql_moderate_nesting_is_accepted,
    rule_file_nested_10000,
    admission_nested_10000,
    rule_file_one_mib,
    rule_file_over_document_limit,
    prometheus_yml_over_document_limit,
    billion_laughs_prometheus_yml,
    billion_laughs_rule_file,
    billion_laughs_values,
    billion_laughs_admission,
    alias_flood_prometheus_yml,
    alias_flood_rule_file,
    alias_flood_values,
    alias_flood_admission,
    deep_yaml_prometheus_yml,
    deep_yaml_rule_file,
    deep_yaml_values,
    deep_json_admission,
    deep_json_object_in_configmap,
    rewritten_configmap_fits_the_api_server_limit,
);
