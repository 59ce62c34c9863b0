//! Differential test of the rule contract, on real Prometheus servers.
//!
//! A rewritten rule, evaluated on the tools cluster (its own series labelled `<label>=<local>`
//! plus federated series labelled with other clusters' names), must record exactly what the
//! original rule records on a Prometheus that holds only the local series without the label,
//! plus `<label>=<local>` on every result series.
//!
//! Method: the series of `fixtures/differential/series.txt` become two TSDBs built with
//! `promtool tsdb create-blocks-from openmetrics`: A holds the local values without a cluster
//! label; B holds the same local values labelled `cluster="local"` and again labelled
//! `originCluster="shared \"tools\" \\ 1"`, plus different values of another cluster under both
//! labels. Each rule of `fixtures/differential/rules.yml` is run as an instant query (what a rule
//! evaluation computes) at [`EVAL_TIME`]: the original on A, the rewritten expression on B. Both
//! results get what rule evaluation gives them (`__name__` = the record name, the rule's label)
//! and must be equal as sets of (labels, value), values as Prometheus prints them (bit-exact,
//! `NaN` equal to `NaN`). A result whose label sets collide fails, as the rule would.
//!
//! Run: `cargo test --test differential -- --nocapture` (needs `prometheus` and `promtool`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::prom::{self, OpenMetrics, PromOptions, Prometheus, Sample};
use promfed::promql::{RewriteOptions, rewrite_expr};
use serde::Deserialize;

/// First sample: 2024-01-01T00:00:00Z. Fixed, so values and `@` timestamps are reproducible;
/// Prometheus's time retention counts from the newest block, not from the wall clock.
const BASE: i64 = 1_704_067_200;
/// Scrape interval of the generated data.
const STEP: i64 = 30;
/// Three hours of data: enough for `offset 1h`, `[2h]` ranges and `[1h:5m]` subqueries.
const SPAN: i64 = 3 * 3600;
/// When the rules are evaluated: a minute before the last sample.
const EVAL_TIME: i64 = BASE + SPAN - 60;

/// The other cluster's name, under either label.
const OTHER: &str = "other";

/// A way of naming the clusters: the label and the local cluster's name.
#[derive(Debug, Clone, Copy)]
struct Variant {
    label: &'static str,
    local: &'static str,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        label: "cluster",
        local: "local",
    },
    Variant {
        label: "originCluster",
        local: r#"shared "tools" \ 1"#,
    },
];

/// Rules the rewriter may refuse with a clear error instead of rewriting (the issue allows it:
/// promql-parser 0.11 does not parse backslashes in raw strings).
const MAY_BE_REFUSED: &[&str] = &["diff:raw_string_backslash"];

/// Rules whose result does not depend on the stored series, so the negative control (the
/// original expression run on B) cannot tell them apart. Every other rule must be told apart.
const DATA_INDEPENDENT: &[&str] = &[
    "diff:absent_of_aggregation",
    "diff:absent_of_filter",
    "diff:absent_with_labels",
    "diff:date_functions",
    "diff:hour",
    "diff:number_literal",
    "diff:or_vector_empty_left",
    "diff:subquery_of_labelless",
    "diff:sum_of_vector",
    "diff:time",
    "diff:time_arith",
    "diff:unary_minus_labelless",
    "diff:unless_on_empty",
    "diff:vector",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/differential")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// The rule corpus

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    record: String,
    expr: String,
}

fn load_corpus() -> RuleFile {
    let path = fixture("rules.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn rewrite_options(v: Variant) -> RewriteOptions {
    RewriteOptions {
        label: v.label.to_owned(),
        value: v.local.to_owned(),
        regex: false,
        tag_labelless: true,
    }
}

/// One rule after rewriting: its new expression, or the rewriter's (allowed) refusal.
struct Rewrite {
    record: String,
    original: String,
    rewritten: Result<String, String>,
}

/// Rewrites the corpus for `v`; an error is a failure unless the rule is in [`MAY_BE_REFUSED`].
fn rewrite_corpus(corpus: &RuleFile, v: Variant) -> (Vec<(String, Vec<Rewrite>)>, Vec<String>) {
    let opts = rewrite_options(v);
    let mut failures = Vec::new();
    let groups = corpus
        .groups
        .iter()
        .map(|g| {
            let rules = g
                .rules
                .iter()
                .map(|r| {
                    let rewritten = rewrite_expr(&r.expr, &opts)
                        .map(|rw| rw.expr)
                        .map_err(|e| e.to_string());
                    if let Err(e) = &rewritten
                        && (!MAY_BE_REFUSED.contains(&r.record.as_str()) || e.trim().is_empty())
                    {
                        failures.push(format!(
                            "{} [{}]: rewrite failed: {e}\n  expr: {}",
                            r.record, v.label, r.expr
                        ));
                    }
                    Rewrite {
                        record: r.record.clone(),
                        original: r.expr.clone(),
                        rewritten,
                    }
                })
                .collect();
            (g.name.clone(), rules)
        })
        .collect();
    (groups, failures)
}

/// The rewritten rule file as promfed would write it (each rule labelled with the local name).
fn rewritten_rule_file(groups: &[(String, Vec<Rewrite>)], v: Variant) -> String {
    let groups: Vec<serde_json::Value> = groups
        .iter()
        .map(|(name, rules)| {
            let rules: Vec<serde_json::Value> = rules
                .iter()
                .filter_map(|r| {
                    let expr = r.rewritten.as_ref().ok()?;
                    Some(serde_json::json!({
                        "record": r.record,
                        "expr": expr,
                        "labels": { v.label: v.local },
                    }))
                })
                .collect();
            serde_json::json!({ "name": name, "rules": rules })
        })
        .collect();
    serde_yaml::to_string(&serde_json::json!({ "groups": groups }))
        .unwrap_or_else(|e| panic!("serialising the rewritten rules: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The data

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    CounterReset,
    Gauge,
    Const(f64),
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Both,
    Local,
    Other,
}

/// One line of `series.txt`, its label alternatives expanded: one label set per entry (for a
/// histogram, the label set of one histogram without `le`, plus the `le` values).
#[derive(Debug)]
struct Family {
    kind: Kind,
    scope: Scope,
    name: String,
    label_sets: Vec<Vec<(String, String)>>,
    les: Vec<String>,
}

fn parse_series_spec(text: &str) -> Vec<Family> {
    let mut families = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| -> ! { panic!("series.txt line {}: {what}: {line}", n + 1) };
        let mut words = line.split_whitespace();
        let (Some(kind), Some(scope), Some(name)) = (words.next(), words.next(), words.next())
        else {
            bad("expected KIND SCOPE NAME")
        };
        let kind = match kind {
            "counter" => Kind::Counter,
            "counter_reset" => Kind::CounterReset,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            k => match k.strip_prefix("const:").map(str::parse::<f64>) {
                Some(Ok(v)) => Kind::Const(v),
                _ => bad("unknown kind"),
            },
        };
        let scope = match scope {
            "both" => Scope::Both,
            "local" => Scope::Local,
            "other" => Scope::Other,
            _ => bad("unknown scope"),
        };
        let mut labels: Vec<(String, Vec<String>)> = words
            .map(|w| match w.split_once('=') {
                Some((k, vs)) => (k.to_owned(), vs.split('|').map(str::to_owned).collect()),
                None => bad("expected LABEL=V1|V2"),
            })
            .collect();
        let les = if kind == Kind::Histogram {
            match labels.pop() {
                Some((k, vs)) if k == "le" => vs,
                _ => bad("a histogram's last label must be le"),
            }
        } else {
            Vec::new()
        };
        let mut label_sets: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, vs) in &labels {
            label_sets = label_sets
                .iter()
                .flat_map(|set| {
                    vs.iter().map(move |v| {
                        let mut s = set.clone();
                        s.push((k.clone(), v.clone()));
                        s
                    })
                })
                .collect();
        }
        families.push(Family {
            kind,
            scope,
            name: name.to_owned(),
            label_sets,
            les,
        });
    }
    families
}

/// SplitMix64: small, deterministic, good enough to make every series (and cluster) differ.
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Self {
        // FNV-1a of the seed text.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (as f64: every value used is exact in binary floating point).
    fn below(&mut self, n: u64) -> f64 {
        // Values stay far below 2^53, so the conversion is exact.
        (self.next() % n) as f64
    }
}

const POINTS: usize = (SPAN / STEP) as usize + 1;

/// The values of one series (or, for a histogram, of each bucket, cumulative) over the span.
fn generate(kind: Kind, seed: &str, buckets: usize) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    match kind {
        Kind::Const(v) => vec![vec![v; POINTS]],
        Kind::Gauge => vec![(0..POINTS).map(|_| rng.below(6400) / 4.0 - 100.0).collect()],
        Kind::Counter | Kind::CounterReset => {
            let mut v = rng.below(1000);
            let series = (0..POINTS)
                .map(|i| {
                    if kind == Kind::CounterReset && i == POINTS / 2 {
                        v = 0.0;
                    }
                    v += rng.below(21);
                    v
                })
                .collect();
            vec![series]
        }
        Kind::Histogram => {
            let mut per_bucket = vec![0.0; buckets];
            let mut out = vec![Vec::with_capacity(POINTS); buckets];
            for _ in 0..POINTS {
                let mut cumulative = 0.0;
                for (b, total) in per_bucket.iter_mut().enumerate() {
                    // Few observations above the last finite bound, so quantiles interpolate
                    // (a quantile in the +Inf bucket is that bound, whatever the data).
                    *total += if b + 1 == buckets {
                        rng.below(2)
                    } else {
                        rng.below(21)
                    };
                    cumulative += *total;
                    out[b].push(cumulative);
                }
            }
            out
        }
    }
}

/// Appends every series of `families` that belongs to `cluster` ("local" or [`OTHER`]), with
/// `extra` (the cluster label, if any) added to its labels. Values depend on the cluster only,
/// so the local series hold the same values in A and in B, whatever label they carry.
fn write_cluster(
    om: &mut OpenMetrics,
    families: &[Family],
    cluster: &str,
    extra: Option<(&str, &str)>,
) {
    for f in families {
        let wanted = match f.scope {
            Scope::Both => true,
            Scope::Local => cluster != OTHER,
            Scope::Other => cluster == OTHER,
        };
        if !wanted {
            continue;
        }
        for set in &f.label_sets {
            let id: String = set.iter().map(|(k, v)| format!(",{k}={v}")).collect();
            let seed = format!("{cluster}/{}{id}", f.name);
            let les: Vec<Option<&String>> = if f.les.is_empty() {
                vec![None]
            } else {
                f.les.iter().map(Some).collect()
            };
            let values = generate(f.kind, &seed, les.len());
            for (le, series) in les.iter().zip(&values) {
                let mut labels = set.clone();
                if let Some(le) = le {
                    labels.push(("le".to_owned(), (*le).clone()));
                }
                if let Some((k, v)) = extra {
                    labels.push((k.to_owned(), v.to_owned()));
                }
                for (i, value) in series.iter().enumerate() {
                    om.sample(&f.name, &labels, *value, BASE + STEP * i as i64);
                }
            }
        }
    }
}

/// Builds the TSDB blocks of A (single cluster, no label) and B (the fleet, both variants).
fn build_tsdbs(dir: &Path) -> (PathBuf, PathBuf) {
    let spec_path = fixture("series.txt");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", spec_path.display()));
    let families = parse_series_spec(&spec);

    let mut a = OpenMetrics::new();
    write_cluster(&mut a, &families, "local", None);
    let mut b = OpenMetrics::new();
    for v in VARIANTS {
        write_cluster(&mut b, &families, "local", Some((v.label, v.local)));
        write_cluster(&mut b, &families, OTHER, Some((v.label, OTHER)));
    }

    let promtool = prom::promtool();
    let build = |name: &str, text: String| {
        let input = dir.join(format!("{name}.om"));
        std::fs::write(&input, text).unwrap_or_else(|e| panic!("writing {name}.om: {e}"));
        let out = dir.join(format!("tsdb-{name}"));
        promtool
            .create_blocks(&input, &out)
            .unwrap_or_else(|e| panic!("building TSDB {name}: {e:#}"));
        out
    };
    (build("a", a.finish()), build("b", b.finish()))
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// What rule evaluation makes of a query result: `__name__` becomes the record name and the
/// rule's label is set; label sets that then collide are an error, as in Prometheus.
fn as_recorded(
    samples: &[Sample],
    record: &str,
    v: Variant,
) -> Result<BTreeMap<BTreeMap<String, String>, String>, String> {
    let mut out = BTreeMap::new();
    for s in samples {
        let mut labels = s.labels.clone();
        labels.insert("__name__".to_owned(), record.to_owned());
        labels.insert(v.label.to_owned(), v.local.to_owned());
        let shown = Sample {
            labels: labels.clone(),
            value: s.value.clone(),
        };
        if let Some(earlier) = out.insert(labels, s.value.clone()) {
            return Err(format!(
                "label sets collide once the rule's labels are applied: {shown} (and {earlier})"
            ));
        }
    }
    Ok(out)
}

/// At most this many series of each listing go into a failure report.
const SHOWN: usize = 12;

fn show(samples: &[Sample]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    listing(sorted.iter().map(|x| format!("      {x}")))
}

/// Lines, capped at [`SHOWN`], each ending in a newline; `(empty)` for none.
fn listing(lines: impl Iterator<Item = String>) -> String {
    let lines: Vec<String> = lines.collect();
    let mut s = String::new();
    for l in lines.iter().take(SHOWN) {
        let _ = writeln!(s, "{l}");
    }
    if lines.len() > SHOWN {
        let _ = writeln!(s, "      ... {} more", lines.len() - SHOWN);
    }
    if lines.is_empty() {
        s.push_str("      (empty)\n");
    }
    s
}

/// Evaluates one rule on both servers; `None` when the contract holds, else a full report.
fn compare_rule(
    a: &Prometheus,
    b: &Prometheus,
    v: Variant,
    record: &str,
    original: &str,
    rewritten: &str,
) -> Option<String> {
    let t = EVAL_TIME as f64;
    let head = format!(
        "{record} [{}={:?}]\n  original:  {original}\n  rewritten: {rewritten}\n",
        v.label, v.local
    );
    let on_a = match a.query(original, t) {
        Ok(s) => s,
        Err(e) => return Some(format!("{head}  A rejected the original: {e:#}\n")),
    };
    if on_a.is_empty() {
        return Some(format!(
            "{head}  the original records nothing on A: fix the corpus or the data\n"
        ));
    }
    let on_b = match b.query(rewritten, t) {
        Ok(s) => s,
        Err(e) => return Some(format!("{head}  B rejected the rewritten rule: {e:#}\n")),
    };
    let both = format!(
        "    A (original, one cluster):\n{}    B (rewritten, fleet):\n{}",
        show(&on_a),
        show(&on_b)
    );
    let rec_a = match as_recorded(&on_a, record, v) {
        Ok(r) => r,
        Err(e) => return Some(format!("{head}  on A: {e}\n{both}")),
    };
    let rec_b = match as_recorded(&on_b, record, v) {
        Ok(r) => r,
        Err(e) => return Some(format!("{head}  on B: {e}\n{both}")),
    };
    if rec_a == rec_b {
        return None;
    }
    let to_set = |m: &BTreeMap<BTreeMap<String, String>, String>| -> BTreeSet<Sample> {
        m.iter()
            .map(|(labels, value)| Sample {
                labels: labels.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let (sa, sb) = (to_set(&rec_a), to_set(&rec_b));
    let diff = listing(
        sa.difference(&sb)
            .map(|x| format!("    only on A: {x}"))
            .chain(sb.difference(&sa).map(|x| format!("    only on B: {x}"))),
    );
    Some(format!("{head}  recorded series differ:\n{diff}{both}"))
}

/// Starts the two servers side by side (each waits for its own readiness).
fn start_servers(tsdb_a: PathBuf, tsdb_b: PathBuf) -> (Prometheus, Prometheus) {
    let start = |storage: PathBuf| {
        Prometheus::start(&PromOptions {
            storage_dir: Some(storage),
            // The data is from 2024: make sure no retention rule ever counts from the wall clock.
            extra_args: vec!["--storage.tsdb.retention.time=100y".to_owned()],
            ..PromOptions::default()
        })
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(tsdb_a));
        let b = s.spawn(|| start(tsdb_b));
        (a.join(), b.join())
    });
    match (a, b) {
        (Ok(Ok(a)), Ok(Ok(b))) => (a, b),
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => panic!("starting prometheus: {e:#}"),
        _ => panic!("a prometheus start thread panicked"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn corpus_is_large_and_valid_for_promtool() {
    let corpus = load_corpus();
    let n: usize = corpus.groups.iter().map(|g| g.rules.len()).sum();
    assert!(n >= 30, "the corpus must hold 30+ rules, has {n}");
    let mut names = BTreeSet::new();
    for r in corpus.groups.iter().flat_map(|g| &g.rules) {
        assert!(names.insert(&r.record), "duplicate record {}", r.record);
    }
    prom::promtool()
        .check_rules(&fixture("rules.yml"))
        .unwrap_or_else(|e| panic!("the corpus itself is invalid: {e:#}"));
}

#[test]
fn rewritten_corpus_passes_promtool_check_rules() {
    let corpus = load_corpus();
    let promtool = prom::promtool();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut failures = Vec::new();
    for (i, v) in VARIANTS.into_iter().enumerate() {
        let (groups, rewrite_failures) = rewrite_corpus(&corpus, v);
        failures.extend(rewrite_failures);
        let text = rewritten_rule_file(&groups, v);
        let path = dir.path().join(format!("rewritten-{i}.yml"));
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        if let Err(e) = promtool.check_rules(&path) {
            failures.push(format!(
                "[{}={:?}] promtool rejects the rewritten rules: {e:#}\n{text}",
                v.label, v.local
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rewriter_warns_about_a_rule_that_writes_the_cluster_label() {
    let corpus = load_corpus();
    let rule = corpus
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .find(|r| r.record == "diff:label_replace_writes_cluster")
        .unwrap_or_else(|| panic!("the corpus lost diff:label_replace_writes_cluster"));
    let out = rewrite_expr(&rule.expr, &rewrite_options(VARIANTS[0]))
        .unwrap_or_else(|e| panic!("rewriting {}: {e}", rule.expr));
    assert!(
        !out.warnings.is_empty(),
        "no warning for a label_replace that writes the cluster label: {}",
        rule.expr
    );
}

#[test]
fn harness_reports_a_server_that_fails_to_start() {
    let err = Prometheus::start(&PromOptions {
        config_yaml: "scrape_configs: [{job_name: \"x\", unknown_field: 1}]\n".to_owned(),
        ..PromOptions::default()
    })
    .err()
    .unwrap_or_else(|| panic!("prometheus started with an invalid config"));
    let msg = format!("{err:#}");
    assert!(
        msg.contains("exited before it was ready") && msg.contains("unknown_field"),
        "the error should say the server died and show its log: {msg}"
    );
}

#[test]
fn rewritten_rules_record_what_the_originals_record_on_one_cluster() {
    let started = Instant::now();
    let corpus = load_corpus();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (tsdb_a, tsdb_b) = build_tsdbs(dir.path());
    let built = started.elapsed();
    let (a, b) = start_servers(tsdb_a, tsdb_b);
    let ready = started.elapsed();

    let mut failures = Vec::new();
    let mut compared = 0;
    let mut refused = Vec::new();
    for v in VARIANTS {
        let (groups, rewrite_failures) = rewrite_corpus(&corpus, v);
        failures.extend(rewrite_failures);
        for r in groups.iter().flat_map(|(_, rules)| rules) {
            let Ok(rewritten) = &r.rewritten else {
                refused.push(format!("{} [{}]", r.record, v.label));
                continue;
            };
            compared += 1;
            if let Some(f) = compare_rule(&a, &b, v, &r.record, &r.original, rewritten) {
                failures.push(f);
            }
        }
    }

    // Negative control: the original expressions on B must fail the comparison, or the data
    // cannot tell a correct rewrite from none at all.
    let v = VARIANTS[0];
    let mut undetected = Vec::new();
    for r in corpus.groups.iter().flat_map(|g| &g.rules) {
        if compare_rule(&a, &b, v, &r.record, &r.expr, &r.expr).is_none() {
            undetected.push(r.record.as_str());
        }
    }
    undetected.sort_unstable();
    if undetected != DATA_INDEPENDENT {
        failures.push(format!(
            "negative control: without rewriting, exactly the data-independent rules may pass;\n  \
             passed:   {undetected:?}\n  expected: {DATA_INDEPENDENT:?}"
        ));
    }

    eprintln!(
        "differential: {compared} rule evaluations compared over {} variants, refused: {refused:?}; \
         data built in {built:.1?}, servers ready at {ready:.1?}, done in {:.1?}",
        VARIANTS.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        panic!(
            "{} of {compared} rule evaluations break the contract:\n\n{}\n\
             --- prometheus A log tail ---\n{}\n--- prometheus B log tail ---\n{}",
            failures.len(),
            failures.join("\n"),
            a.log_tail(15),
            b.log_tail(15)
        );
    }
}
