//! Table tests for the rewriter: every construct of the contract, escaping, warnings,
//! label-less wrappers, idempotence, limits and odd inputs.

use rstest::rstest;

use super::*;

fn opts() -> RewriteOptions {
    RewriteOptions {
        label: "cluster".into(),
        value: "local".into(),
        regex: false,
        tag_labelless: true,
    }
}

/// Rewrites and checks the invariants every output must satisfy: idempotent byte for
/// byte, contract respected, printer output stable under reformatting.
fn rw_with(src: &str, o: &RewriteOptions) -> Rewritten {
    let r = rewrite_expr(src, o).unwrap_or_else(|e| panic!("{src}: {e}"));
    let again = rewrite_expr(&r.expr, o).unwrap_or_else(|e| panic!("{}: {e}", r.expr));
    assert_eq!(again.expr, r.expr, "not idempotent for {src}");
    assert!(!again.changed, "second run changed {}", r.expr);
    let v = contract_violations(&r.expr, o).unwrap();
    assert!(v.is_empty(), "{src} -> {}: {v:?}", r.expr);
    if r.changed {
        assert_eq!(reformat(&r.expr).unwrap(), r.expr, "printer not stable");
    }
    r
}

fn rw(src: &str) -> String {
    rw_with(src, &opts()).expr
}

#[rstest]
// selectors
#[case("up", r#"up{cluster="local"}"#)]
#[case("node:cpu:rate5m", r#"node:cpu:rate5m{cluster="local"}"#)]
#[case(r#"up{job="a"}"#, r#"up{job="a", cluster="local"}"#)]
#[case(
    r#"{__name__=~"up|down"}"#,
    r#"{__name__=~"up|down", cluster="local"}"#
)]
#[case(r#"{job="a",}"#, r#"{job="a", cluster="local"}"#)]
#[case("rate(x[5m])", r#"rate(x{cluster="local"}[5m])"#)]
#[case("x offset 5m", r#"x{cluster="local"} offset 5m"#)]
#[case("x offset -5m", r#"x{cluster="local"} offset -5m"#)]
#[case("x @ 1609746000", r#"x{cluster="local"} @ 1609746000"#)]
#[case(
    "x @ 1609746000.5 offset 1h",
    r#"x{cluster="local"} @ 1609746000.5 offset 1h"#
)]
#[case("x offset 1h @ 100", r#"x{cluster="local"} @ 100 offset 1h"#)]
#[case("x @ start()", r#"x{cluster="local"} @ start()"#)]
#[case(
    "rate(x[5m] @ end() offset 1m)",
    r#"rate(x{cluster="local"}[5m] @ end() offset 1m)"#
)]
#[case("x @ -100", r#"x{cluster="local"} @ -100"#)]
// subqueries
#[case(
    "max_over_time(rate(x[5m])[1h:5m])",
    r#"max_over_time(rate(x{cluster="local"}[5m])[1h:5m])"#
)]
#[case("max_over_time(x[1h:])", r#"max_over_time(x{cluster="local"}[1h:])"#)]
#[case("x[1h:1m] offset 5m", r#"x{cluster="local"}[1h:1m] offset 5m"#)]
#[case("(x)[90m:] @ 100", r#"(x{cluster="local"})[1h30m:] @ 100"#)]
// durations
#[case("rate(x[1h30m])", r#"rate(x{cluster="local"}[1h30m])"#)]
#[case("rate(x[90m])", r#"rate(x{cluster="local"}[1h30m])"#)]
#[case("rate(x[500ms])", r#"rate(x{cluster="local"}[500ms])"#)]
#[case("rate(x[1d])", r#"rate(x{cluster="local"}[1d])"#)]
#[case("rate(x[7d])", r#"rate(x{cluster="local"}[1w])"#)]
#[case("rate(x[1y])", r#"rate(x{cluster="local"}[1y])"#)]
// aggregations
#[case("sum(x)", r#"sum by (cluster) (x{cluster="local"})"#)]
#[case("sum by () (x)", r#"sum by (cluster) (x{cluster="local"})"#)]
#[case("sum(x) by (job)", r#"sum by (job, cluster) (x{cluster="local"})"#)]
#[case(
    "sum by (job, cluster) (x)",
    r#"sum by (job, cluster) (x{cluster="local"})"#
)]
#[case(
    "sum without (instance) (x)",
    r#"sum without (instance) (x{cluster="local"})"#
)]
#[case(
    "sum without (cluster, instance) (x)",
    r#"sum without (instance) (x{cluster="local"})"#
)]
#[case("sum without (cluster) (x)", r#"sum without () (x{cluster="local"})"#)]
#[case("topk(5, x)", r#"topk by (cluster) (5, x{cluster="local"})"#)]
#[case(
    "bottomk by (job) (5, x)",
    r#"bottomk by (job, cluster) (5, x{cluster="local"})"#
)]
#[case(
    "quantile(0.9, x)",
    r#"quantile by (cluster) (0.9, x{cluster="local"})"#
)]
#[case(
    r#"count_values("v", x)"#,
    r#"count_values by (cluster) ("v", x{cluster="local"})"#
)]
#[case("stddev without (i) (x)", r#"stddev without (i) (x{cluster="local"})"#)]
#[case("stdvar(x)", r#"stdvar by (cluster) (x{cluster="local"})"#)]
#[case("group(x)", r#"group by (cluster) (x{cluster="local"})"#)]
#[case(
    "avg(min(max(x)))",
    r#"avg by (cluster) (min by (cluster) (max by (cluster) (x{cluster="local"})))"#
)]
#[case(
    "topk(scalar(y), x)",
    r#"topk by (cluster) (scalar(y{cluster="local"}), x{cluster="local"})"#
)]
// binary operators and vector matching
#[case("a / b", r#"a{cluster="local"} / b{cluster="local"}"#)]
#[case(
    "a / on (job) b",
    r#"a{cluster="local"} / on (job, cluster) b{cluster="local"}"#
)]
#[case(
    "a and on () b",
    r#"a{cluster="local"} and on (cluster) b{cluster="local"}"#
)]
#[case(
    "a / ignoring (cluster, x) b",
    r#"a{cluster="local"} / ignoring (x) b{cluster="local"}"#
)]
#[case(
    "a * on (i) group_left (n) b",
    r#"a{cluster="local"} * on (i, cluster) group_left (n) b{cluster="local"}"#
)]
#[case(
    "a * on (i) group_left (cluster, n) b",
    r#"a{cluster="local"} * on (i, cluster) group_left (n) b{cluster="local"}"#
)]
#[case(
    "a * on (i) group_right b",
    r#"a{cluster="local"} * on (i, cluster) group_right () b{cluster="local"}"#
)]
#[case(
    "a * ignoring (i) group_left (cluster) b",
    r#"a{cluster="local"} * ignoring (i) group_left (cluster) b{cluster="local"}"#
)]
#[case(
    "a + on () group_left () (b)",
    r#"a{cluster="local"} + on (cluster) group_left () (b{cluster="local"})"#
)]
#[case("a > bool 5", r#"a{cluster="local"} > bool 5"#)]
#[case(
    "a == bool on (x) b",
    r#"a{cluster="local"} == bool on (x, cluster) b{cluster="local"}"#
)]
#[case("1 + on () 2 * x", r#"1 + on () 2 * x{cluster="local"}"#)]
#[case(
    "a unless b or c",
    r#"a{cluster="local"} unless b{cluster="local"} or c{cluster="local"}"#
)]
#[case("a atan2 b", r#"a{cluster="local"} atan2 b{cluster="local"}"#)]
#[case("-x", r#"-x{cluster="local"}"#)]
#[case("-(x + 1)", r#"-(x{cluster="local"} + 1)"#)]
#[case("+x", r#"x{cluster="local"}"#)]
#[case("2 ^ -x ^ 2", r#"2 ^ -x{cluster="local"} ^ 2"#)]
#[case(
    "(a + b) * c",
    r#"(a{cluster="local"} + b{cluster="local"}) * c{cluster="local"}"#
)]
#[case("a - -1", r#"a{cluster="local"} - -1"#)]
// numbers
#[case("x > 1e-9", r#"x{cluster="local"} > 1e-9"#)]
#[case("x > 0x1F", r#"x{cluster="local"} > 31"#)]
#[case("x > 010", r#"x{cluster="local"} > 8"#)]
#[case("x > Inf", r#"x{cluster="local"} > Inf"#)]
#[case("x > -Inf", r#"x{cluster="local"} > -Inf"#)]
#[case("x != NaN", r#"x{cluster="local"} != NaN"#)]
#[case("x * 1e300", r#"x{cluster="local"} * 1e300"#)]
#[case("x * .5", r#"x{cluster="local"} * 0.5"#)]
// strings and escapes
#[case(r#"x{le=~"1(\\.0)?"}"#, r#"x{le=~"1(\\.0)?", cluster="local"}"#)]
#[case(r#"x{a='it"s'}"#, r#"x{a="it\"s", cluster="local"}"#)]
#[case(r"x{a=~`.*\d`}", r#"x{a=~".*\\d", cluster="local"}"#)]
#[case("x{a=`\\`}", r#"x{a="\\", cluster="local"}"#)]
#[case(r#"x{a="\u00e9\x41\101\t"}"#, "x{a=\"éAA\\t\", cluster=\"local\"}")]
#[case(r#"x{a="☃"}"#, r#"x{a="☃", cluster="local"}"#)]
#[case(
    r#"label_replace(x, "dst", "$1-{x}", "src", "(.*)")"#,
    r#"label_replace(x{cluster="local"}, "dst", "$1-{x}", "src", "(.*)")"#
)]
#[case(
    r#"label_join(x, "d", ",", "a", "b")"#,
    r#"label_join(x{cluster="local"}, "d", ",", "a", "b")"#
)]
// comments and whitespace
#[case("sum(x) # total\n", r#"sum by (cluster) (x{cluster="local"})"#)]
#[case("sum(\n  x\n)", r#"sum by (cluster) (x{cluster="local"})"#)]
// functions
#[case(
    "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))",
    r#"histogram_quantile(0.99, sum by (le, cluster) (rate(x_bucket{cluster="local"}[5m])))"#
)]
#[case("time() - x", r#"time() - x{cluster="local"}"#)]
#[case("hour(x)", r#"hour(x{cluster="local"})"#)]
#[case("clamp_max(x, 1)", r#"clamp_max(x{cluster="local"}, 1)"#)]
#[case(
    "predict_linear(x[1h], 3600)",
    r#"predict_linear(x{cluster="local"}[1h], 3600)"#
)]
#[case("sort_desc(x)", r#"sort_desc(x{cluster="local"})"#)]
#[case(
    "holt_winters(x[1h], 0.5, 0.5)",
    r#"holt_winters(x{cluster="local"}[1h], 0.5, 0.5)"#
)]
// keyword-named metrics
#[case("sum(by)", r#"sum by (cluster) (by{cluster="local"})"#)]
fn rewrites(#[case] src: &str, #[case] want: &str) {
    assert_eq!(rw(src), want, "input: {src}");
}

#[rstest]
#[case("vector(1)", r#"label_replace(vector(1), "cluster", "local", "", "")"#)]
#[case(
    "x or vector(0)",
    r#"x{cluster="local"} or label_replace(vector(0), "cluster", "local", "", "")"#
)]
#[case(
    "vector(scalar(x))",
    r#"label_replace(vector(scalar(x{cluster="local"})), "cluster", "local", "", "")"#
)]
#[case("hour()", r#"label_replace(hour(), "cluster", "local", "", "")"#)]
#[case("minute() + month() + year()", r#"label_replace(minute(), "cluster", "local", "", "") + label_replace(month(), "cluster", "local", "", "") + label_replace(year(), "cluster", "local", "", "")"#)]
#[case("day_of_month() > day_of_week() > day_of_year() > days_in_month()", r#"label_replace(day_of_month(), "cluster", "local", "", "") > label_replace(day_of_week(), "cluster", "local", "", "") > label_replace(day_of_year(), "cluster", "local", "", "") > label_replace(days_in_month(), "cluster", "local", "", "")"#)]
#[case("absent(x)", r#"absent(x{cluster="local"})"#)]
#[case(r#"absent(x{cluster="other"})"#, r#"absent(x{cluster="other"})"#)]
#[case(
    "absent(sum(x))",
    r#"label_replace(absent(sum by (cluster) (x{cluster="local"})), "cluster", "local", "", "")"#
)]
#[case(
    "absent((x))",
    r#"label_replace(absent((x{cluster="local"})), "cluster", "local", "", "")"#
)]
#[case(
    "absent(rate(x[5m]))",
    r#"label_replace(absent(rate(x{cluster="local"}[5m])), "cluster", "local", "", "")"#
)]
#[case(
    r#"absent(x{cluster!="a"})"#,
    r#"label_replace(absent(x{cluster!="a"}), "cluster", "local", "", "")"#
)]
#[case(
    "absent_over_time(x[5m])",
    r#"absent_over_time(x{cluster="local"}[5m])"#
)]
#[case("absent_over_time(sum(x)[5m:])", r#"label_replace(absent_over_time(sum by (cluster) (x{cluster="local"})[5m:]), "cluster", "local", "", "")"#)]
#[case(
    "sum(vector(1))",
    r#"sum by (cluster) (label_replace(vector(1), "cluster", "local", "", ""))"#
)]
#[case(
    r#"label_replace(vector(1), "cluster", "local", "", "")"#,
    r#"label_replace(vector(1), "cluster", "local", "", "")"#
)]
fn tags_labelless(#[case] src: &str, #[case] want: &str) {
    assert_eq!(rw(src), want, "input: {src}");
}

#[test]
fn labelless_untouched_without_tag_option() {
    let o = RewriteOptions {
        tag_labelless: false,
        ..opts()
    };
    assert_eq!(
        rw_with("x or vector(0)", &o).expr,
        r#"x{cluster="local"} or vector(0)"#
    );
    let r = rw_with("vector(1)", &o);
    assert!(!r.changed);
}

#[rstest]
// an existing matcher on the label, whatever its operator, is the author's choice
#[case(r#"x{cluster="a"}"#)]
#[case(r#"x{cluster=~".+"}"#)]
#[case(r#"x{cluster!="local"}"#)]
#[case(r#"sum by (cluster) (x{cluster="local"})"#)]
#[case(r#"sum by(cluster)(x{cluster="local"})"#)]
#[case(r#"sum without (job) (x{cluster="local"})"#)]
#[case("1 + 2")]
#[case("time()")]
#[case("pi()")]
#[case(r#""a string""#)]
#[case("scalar(x{cluster='local'})")]
#[case("  x{cluster='x'}  # comment kept, input returned as is")]
fn unchanged_inputs_are_returned_verbatim(#[case] src: &str) {
    let r = rewrite_expr(src, &opts()).unwrap();
    assert!(!r.changed, "{src} -> {}", r.expr);
    assert_eq!(r.expr, src);
}

#[rstest]
#[case(r"a\b", r#"x{cluster="a\\b"}"#)]
#[case(r#"a"b"#, r#"x{cluster="a\"b"}"#)]
#[case("a\nb", r#"x{cluster="a\nb"}"#)]
#[case("ünï", r#"x{cluster="ünï"}"#)]
fn value_is_escaped(#[case] value: &str, #[case] want: &str) {
    let o = RewriteOptions {
        value: value.into(),
        ..opts()
    };
    assert_eq!(rw_with("x", &o).expr, want);
}

#[test]
fn dollar_in_value_is_literal_in_label_replace() {
    let o = RewriteOptions {
        value: "a$1b".into(),
        ..opts()
    };
    assert_eq!(
        rw_with("vector(1)", &o).expr,
        r#"label_replace(vector(1), "cluster", "a$$1b", "", "")"#
    );
}

#[test]
fn regex_option_uses_regex_matcher() {
    let o = RewriteOptions {
        value: "$cluster".into(),
        regex: true,
        ..opts()
    };
    assert_eq!(
        rw_with("sum(rate(x[5m]))", &o).expr,
        r#"sum by (cluster) (rate(x{cluster=~"$cluster"}[5m]))"#
    );
    // with =~, absent() of a selector carries no label: tagged
    assert_eq!(
        rw_with("absent(x)", &o).expr,
        r#"label_replace(absent(x{cluster=~"$cluster"}), "cluster", "$$cluster", "", "")"#
    );
    let bad = RewriteOptions {
        value: "(".into(),
        ..o
    };
    assert!(matches!(
        rewrite_expr("x", &bad),
        Err(PromqlError::InvalidOption(_))
    ));
}

#[test]
fn other_label_name() {
    let o = RewriteOptions {
        label: "k8s_cluster".into(),
        ..opts()
    };
    assert_eq!(
        rw_with("sum(x) / on() count(y)", &o).expr,
        r#"sum by (k8s_cluster) (x{k8s_cluster="local"}) / on (k8s_cluster) count by (k8s_cluster) (y{k8s_cluster="local"})"#
    );
}

#[rstest]
#[case("")]
#[case("__name__")]
#[case("a-b")]
#[case("1a")]
fn bad_label_option(#[case] label: &str) {
    let o = RewriteOptions {
        label: label.into(),
        ..opts()
    };
    assert!(matches!(
        rewrite_expr("x", &o),
        Err(PromqlError::InvalidOption(_))
    ));
}

#[rstest]
#[case(
    r#"label_replace(x, "cluster", "$1", "instance", "(.*)")"#,
    "label_replace"
)]
#[case(r#"label_join(x, "cluster", ",", "a")"#, "label_join")]
#[case(
    r#"label_replace(vector(1), "cluster", "other", "", "")"#,
    "label_replace"
)]
#[case(r#"count_values("cluster", x)"#, "count_values")]
// Reading the label: it now holds the local name where the original read the series' own value.
#[case(
    r#"label_replace(x, "dst", "$1", "cluster", "(.*)")"#,
    "label_replace reads"
)]
#[case(r#"label_join(x, "dst", ",", "a", "cluster")"#, "label_join reads")]
fn warnings(#[case] src: &str, #[case] what: &str) {
    let r = rw_with(src, &opts());
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].starts_with(what), "{:?}", r.warnings);
    // also on the (unchanged) second run
    let again = rewrite_expr(&r.expr, &opts()).unwrap();
    assert_eq!(again.warnings, r.warnings);
}

#[rstest]
#[case(r#"label_replace(vector(1), "cluster", "local", "", "")"#)]
#[case(r#"count_values("v", x)"#)]
fn no_warnings(#[case] src: &str) {
    assert!(rw_with(src, &opts()).warnings.is_empty());
}

#[rstest]
#[case("")]
#[case("   ")]
#[case("# only a comment")]
#[case("sum(")]
#[case("x{")]
#[case("x[5m")]
#[case("rate(x)")]
#[case("x{a=`unterminated}")]
#[case("x{a=\"unterminated}")]
#[case("x{a=\"new\nline\"}")]
#[case("foo[300]")]
#[case("foo[1e30]")]
#[case("foo[1e30:1s]")]
#[case("foo offset 1e30")]
#[case("foo[4294967296s1ms]")]
#[case(r#"foo{a="\xff"}"#)]
#[case("x @ 1e300")]
#[case("x @ NaN")]
#[case("{}")]
#[case(r#"{a=~".*"}"#)]
#[case("ünïcødé")]
#[case("x{a=\"b\" or c=\"d\"}")]
#[case("\u{0}")]
#[case(")")]
#[case("]]]")]
#[case("x offset")]
#[case("@")]
#[case("-")]
#[case("x[5m][5m]")]
#[case("sum by (a) by (b) (x)")]
#[case("a + on(x) group_left(x) b")]
#[case("1 < 2")]
fn odd_inputs_are_errors_not_panics(#[case] src: &str) {
    assert!(rewrite_expr(src, &opts()).is_err(), "{src:?} accepted");
}

#[test]
fn raw_string_with_backslashes_and_quotes() {
    assert_eq!(
        rw(r#"x{a=~`"\d+\.\d"`}"#),
        r#"x{a=~"\"\\d+\\.\\d\"", cluster="local"}"#
    );
    // a `#` inside strings is not a comment; a backtick inside a comment is not a string
    assert_eq!(rw("x{a=\"#`\"} # `"), r##"x{a="#`", cluster="local"}"##);
}

#[test]
fn limits() {
    let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(
        rewrite_expr(&deep, &opts()),
        Err(PromqlError::TooLarge(_))
    ));
    let long = format!("x{{a=\"{}\"}}", "y".repeat(MAX_EXPR_BYTES));
    assert!(matches!(
        rewrite_expr(&long, &opts()),
        Err(PromqlError::TooLarge(_))
    ));
    // The deepest accepted expressions go through parse, walk, print and drop.
    let parens = format!(
        "{}x{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    let r = rw(&parens);
    assert!(r.contains(r#"x{cluster="local"}"#));
    let chain = vec!["x"; MAX_DEPTH / 2].join(" + ");
    assert!(rw(&chain).starts_with(r#"x{cluster="local"} + "#));
    let nested_sums = format!(
        "{}x{}",
        "sum(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(rw(&nested_sums).starts_with("sum by (cluster) (sum by (cluster) ("));
}

#[test]
fn kube_prometheus_rule() {
    let src =
        r"cluster:node_cpu:sum_rate5m / count(sum(node_cpu_seconds_total) BY (instance, cpu))";
    assert_eq!(
        rw(src),
        r#"cluster:node_cpu:sum_rate5m{cluster="local"} / count by (cluster) (sum by (instance, cpu, cluster) (node_cpu_seconds_total{cluster="local"}))"#
    );
    let src = r#"histogram_quantile(0.99, sum by (le, resource) (rate(apiserver_request_duration_seconds_bucket{job="apiserver",verb=~"LIST|GET",le=~"1(\\.0)?"}[5m])))"#;
    assert_eq!(
        rw(src),
        r#"histogram_quantile(0.99, sum by (le, resource, cluster) (rate(apiserver_request_duration_seconds_bucket{job="apiserver", verb=~"LIST|GET", le=~"1(\\.0)?", cluster="local"}[5m])))"#
    );
}

#[test]
fn reformat_keeps_unrewritten_expression() {
    assert_eq!(reformat("sum(x)by(a)").unwrap(), "sum by (a) (x)");
    assert_eq!(
        reformat("a+on(b)group_left c").unwrap(),
        "a + on (b) group_left () c"
    );
}

#[test]
fn contract_violations_finds_problems() {
    let v = contract_violations("sum(x) / on() vector(1)", &opts()).unwrap();
    assert_eq!(v.len(), 4, "{v:?}");
}

/// Every function of Prometheus 2.42 parses and its selectors get the matcher.
#[rstest]
#[case("abs(x)")]
#[case("absent(x)")]
#[case("absent_over_time(x[5m])")]
#[case("acos(x) + acosh(x) + asin(x) + asinh(x) + atan(x) + atanh(x)")]
#[case("avg_over_time(x[5m]) + count_over_time(x[5m]) + last_over_time(x[5m])")]
#[case("max_over_time(x[5m]) + min_over_time(x[5m]) + present_over_time(x[5m])")]
#[case("quantile_over_time(0.5, x[5m]) + stddev_over_time(x[5m]) + stdvar_over_time(x[5m])")]
#[case("sum_over_time(x[5m]) + changes(x[5m]) + resets(x[5m]) + delta(x[5m]) + idelta(x[5m])")]
#[case("deriv(x[5m]) + increase(x[5m]) + irate(x[5m]) + rate(x[5m])")]
#[case("ceil(x) + floor(x) + round(x) + round(x, 5) + exp(x) + ln(x) + log2(x) + log10(x)")]
#[case("clamp(x, 0, 1) + clamp_max(x, 1) + clamp_min(x, 0)")]
#[case(
    "cos(x) + cosh(x) + sin(x) + sinh(x) + tan(x) + tanh(x) + deg(x) + rad(x) + sgn(x) + sqrt(x)"
)]
#[case(
    "days_in_month(x) + day_of_month(x) + day_of_week(x) + day_of_year(x) + hour(x) + minute(x) + month(x) + year(x)"
)]
#[case(
    "histogram_count(x) + histogram_sum(x) + histogram_fraction(0, 1, x) + histogram_quantile(0.9, x)"
)]
#[case("holt_winters(x[5m], 0.5, 0.5)")]
#[case(r#"label_replace(x, "a", "$1", "b", "(.*)") + label_join(x, "a", ",", "b", "c")"#)]
#[case("predict_linear(x[5m], 60) + scalar(x) + pi() + time() + timestamp(x)")]
#[case("sort(x) + sort_desc(x) + vector(1)")]
fn prometheus_2_42_functions(#[case] src: &str) {
    let out = rw(src);
    assert!(out.contains(r#"x{cluster="local"}"#), "{out}");
}
