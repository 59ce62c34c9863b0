//! Fleet mode: one rule, evaluated once on the tools cluster, alerting for every cluster.
//!
//! Contract: for the known clusters C, the rewritten expression evaluated on the union of every
//! cluster's series (each labelled `<label>=c`) yields exactly the union over c in C of the
//! original expression evaluated on a Prometheus holding only c's series, each result labelled
//! `<label>=c`.
//!
//! How: selectors are not pinned; aggregations and vector matching keep the label (the same
//! helpers as the local rewrite), so every labelled result is computed per cluster. What cannot
//! carry the label that way is expanded once per cluster, with the local rewrite pinning each
//! copy to its cluster, and the copies joined with `or` (their label sets differ by the cluster
//! label, so `or` is a disjoint union):
//! - label-less vectors: `vector(s)`, `absent(...)`, `absent_over_time(...)`, date functions
//!   without argument (and a rule whose result is a scalar, taken as `vector(<scalar>)`);
//! - vector expressions fed a scalar that depends on data (`x / scalar(sum(y))`,
//!   `topk(scalar(n), x)`): one `scalar` over all clusters would be `NaN`.
//!
//! C is known at rewrite time (from the values) and written into the expression, so it holds at
//! every evaluation, with no dependency on another rule group's timing. The output is a fixed
//! point: expanded copies are pinned (`absent(x{cluster="c"})`, `scalar(...{cluster="c"})`) or
//! wrapped in our `label_replace(X, "<label>", "c", "", "")`, which a second run recognises.

use promql_parser::label::MatchOp;
use promql_parser::parser::token::{T_COUNT_VALUES, T_LOR, TokenType};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    BinModifier, BinaryExpr, Call, Expr, FunctionArgs, ParenExpr, VectorMatchCardinality,
};

use super::labels::or_matchers_error;
use super::rewrite::{Rewriter, is_labelless, keep_in_grouping, keep_in_matching, label_replace};
use super::{PromqlError, RewriteOptions, Rewritten};

/// The fleet: the cluster label and every cluster name promfed knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// The cluster label name, e.g. `cluster`.
    pub label: String,
    /// Every known cluster (the local one and each federated one), without duplicates.
    pub clusters: Vec<String>,
}

/// Rewrites `src` for fleet mode (see the module docs for the contract).
pub fn rewrite_fleet_expr(src: &str, opts: &FleetOptions) -> Result<Rewritten, PromqlError> {
    check(opts)?;
    let mut expr = super::parse(src)?;
    let mut fleet = Fleet {
        opts,
        changed: false,
        warnings: Vec::new(),
    };
    if expr.value_type() == ValueType::Scalar {
        // A rule records a scalar as one series without labels: one per cluster, then.
        expr = Expr::Call(Call {
            func: vector_fn(),
            args: FunctionArgs::new_args(expr),
        });
        fleet.changed = true;
    }
    fleet.walk(&mut expr, true)?;
    fleet.warnings.dedup();
    if !fleet.changed {
        return Ok(Rewritten {
            expr: src.to_owned(),
            changed: false,
            warnings: fleet.warnings,
        });
    }
    let printed = super::print::print(&expr)?;
    if let Err(e) = super::lex::prepare(&printed) {
        // A second run would refuse its own output: refuse now, saying why.
        return Err(PromqlError::TooLarge(format!(
            "in fleet mode (label-less parts computed once for each of {} clusters) the expression \
             breaks a limit: {e}; split the rule or use local mode",
            opts.clusters.len()
        )));
    }
    Ok(Rewritten {
        changed: printed != src,
        expr: printed,
        warnings: fleet.warnings,
    })
}

fn check(opts: &FleetOptions) -> Result<(), PromqlError> {
    let Some(first) = opts.clusters.first() else {
        return Err(PromqlError::InvalidOption(
            "fleet mode needs at least one cluster".into(),
        ));
    };
    for (i, c) in opts.clusters.iter().enumerate() {
        if opts.clusters[..i].contains(c) {
            return Err(PromqlError::InvalidOption(format!(
                "cluster {c:?} is listed twice"
            )));
        }
    }
    super::check_options(&local_options(&opts.label, first))
}

fn local_options(label: &str, cluster: &str) -> RewriteOptions {
    RewriteOptions {
        label: label.to_owned(),
        value: cluster.to_owned(),
        regex: false,
        tag_labelless: true,
    }
}

struct Fleet<'a> {
    opts: &'a FleetOptions,
    changed: bool,
    warnings: Vec<String>,
}

impl Fleet<'_> {
    /// Rewrites `e` in place. `bare`: `e` may be replaced by an `or` chain without
    /// parentheses (the root, a function argument, an aggregation's operand).
    fn walk(&mut self, e: &mut Expr, bare: bool) -> Result<(), PromqlError> {
        if self.needs_expansion(e) {
            return self.expand(e, bare);
        }
        let label = self.opts.label.as_str();
        match e {
            Expr::VectorSelector(vs) => no_or_matchers(vs)?,
            Expr::MatrixSelector(ms) => no_or_matchers(&ms.vs)?,
            Expr::Aggregate(a) => {
                if let Some(p) = a.param.as_deref_mut() {
                    if a.op.id() == T_COUNT_VALUES
                        && matches!(p, Expr::StringLiteral(s) if s.val == label)
                    {
                        self.warn(format!(
                            "count_values writes the label {label:?} itself: the contract cannot hold"
                        ));
                    }
                    self.walk(p, true)?;
                }
                self.walk(&mut a.expr, true)?;
                self.changed |= keep_in_grouping(&mut a.modifier, label);
            }
            Expr::Binary(b) => {
                self.walk(&mut b.lhs, false)?;
                self.walk(&mut b.rhs, false)?;
                let vectors = b.lhs.value_type() == ValueType::Vector
                    && b.rhs.value_type() == ValueType::Vector;
                if let (true, Some(m)) = (vectors, b.modifier.as_mut()) {
                    self.changed |= keep_in_matching(&mut m.matching, &mut m.card, label);
                }
            }
            Expr::Unary(u) => self.walk(&mut u.expr, false)?,
            Expr::Paren(p) => self.walk(&mut p.expr, true)?,
            Expr::Subquery(s) => self.walk(&mut s.expr, false)?,
            Expr::Call(c) => {
                if self.is_our_wrapper(c) {
                    return Ok(());
                }
                self.check_label_functions(c);
                for arg in &mut c.args.args {
                    self.walk(arg, true)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
            Expr::Extension(_) => {
                return Err(PromqlError::Unsupported("extension expressions".into()));
            }
        }
        Ok(())
    }

    /// True for the nodes that must be computed once per cluster (module docs).
    fn needs_expansion(&self, e: &Expr) -> bool {
        let label = self.opts.label.as_str();
        match e {
            Expr::Call(c) if self.is_our_wrapper(c) => false,
            Expr::Call(c) => {
                is_labelless(e, label)
                    || (e.value_type() == ValueType::Vector
                        && c.args.args.iter().any(|a| data_scalar(a, label)))
            }
            Expr::Aggregate(a) => a.param.as_deref().is_some_and(|p| data_scalar(p, label)),
            Expr::Binary(b) => {
                e.value_type() == ValueType::Vector
                    && (data_scalar(&b.lhs, label) || data_scalar(&b.rhs, label))
            }
            _ => false,
        }
    }

    /// Replaces `e` by `local(e, c1) or local(e, c2) or ...`.
    fn expand(&mut self, e: &mut Expr, bare: bool) -> Result<(), PromqlError> {
        let n = self.opts.clusters.len();
        if n > super::MAX_DEPTH {
            // The `or` chain counts as nesting: a second run would refuse it.
            return Err(PromqlError::TooLarge(format!(
                "in fleet mode label-less parts are computed once per cluster, and {n} clusters \
                 nest deeper than the limit of {}; use local mode for this rule file",
                super::MAX_DEPTH
            )));
        }
        let original = std::mem::replace(e, Expr::from(0.0));
        let mut union: Option<Expr> = None;
        for (i, cluster) in self.opts.clusters.iter().enumerate() {
            let lopts = local_options(&self.opts.label, cluster);
            let mut copy = original.clone();
            let mut rw = Rewriter::new(&lopts);
            rw.walk(&mut copy, false)?;
            if i == 0 {
                self.warnings.extend(rw.warnings);
            }
            union = Some(match union {
                None => copy,
                Some(lhs) => Expr::Binary(BinaryExpr {
                    op: TokenType::new(T_LOR),
                    lhs: Box::new(lhs),
                    rhs: Box::new(copy),
                    modifier: Some(
                        BinModifier::default().with_card(VectorMatchCardinality::ManyToMany),
                    ),
                }),
            });
        }
        let Some(union) = union else {
            return Err(PromqlError::InvalidOption(
                "fleet mode needs at least one cluster".into(),
            ));
        };
        let several = self.opts.clusters.len() > 1;
        *e = if several && !bare {
            Expr::Paren(ParenExpr {
                expr: Box::new(union),
            })
        } else {
            union
        };
        self.changed = true;
        Ok(())
    }

    /// `label_replace(X, "<label>", "<c>", "", "")` for a known cluster c: a copy this rewrite
    /// made (already pinned to c), left alone.
    fn is_our_wrapper(&self, c: &Call) -> bool {
        if c.func.name != "label_replace" || c.args.args.len() != 5 {
            return false;
        }
        let s = |i: usize| match c.args.args.get(i).map(std::convert::AsRef::as_ref) {
            Some(Expr::StringLiteral(s)) => Some(s.val.as_str()),
            _ => None,
        };
        s(1) == Some(self.opts.label.as_str())
            && s(3) == Some("")
            && s(4) == Some("")
            && self
                .opts
                .clusters
                .iter()
                .any(|cl| s(2) == Some(cl.replace('$', "$$").as_str()))
    }

    /// `label_replace`/`label_join` that write or read the cluster label break the contract:
    /// on one cluster the label does not exist.
    fn check_label_functions(&mut self, c: &Call) {
        let name = c.func.name;
        let strings: Vec<Option<&str>> = c
            .args
            .args
            .iter()
            .map(|a| match a.as_ref() {
                Expr::StringLiteral(s) => Some(s.val.as_str()),
                _ => None,
            })
            .collect();
        let label = Some(self.opts.label.as_str());
        let (writes, reads) = match name {
            "label_replace" => (
                strings.get(1) == Some(&label),
                strings.get(3) == Some(&label),
            ),
            "label_join" => (
                strings.get(1) == Some(&label),
                strings.iter().skip(3).any(|s| *s == label),
            ),
            _ => return,
        };
        let l = &self.opts.label;
        if writes {
            self.warn(format!(
                "{name} writes the label {l:?} itself: the contract cannot hold"
            ));
        }
        if reads {
            self.warn(format!(
                "{name} reads the label {l:?}, which a single cluster's series do not have: the \
                 contract cannot hold"
            ));
        }
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

/// A scalar whose value depends on stored series, read across clusters (`scalar(x)`, and
/// arithmetic on it). Constants, `time()` and scalars whose selectors all match one cluster
/// with `=` (our pinned copies) do not count.
fn data_scalar(e: &Expr, label: &str) -> bool {
    if e.value_type() != ValueType::Scalar {
        return false;
    }
    match e {
        Expr::Paren(p) => data_scalar(&p.expr, label),
        Expr::Unary(u) => data_scalar(&u.expr, label),
        Expr::Binary(b) => data_scalar(&b.lhs, label) || data_scalar(&b.rhs, label),
        Expr::Call(c) if c.func.name == "scalar" => !c.args.args.iter().all(|a| pinned(a, label)),
        Expr::Call(c) => c.args.args.iter().any(|a| data_scalar(a, label)),
        _ => false,
    }
}

/// True when every selector in `e` matches `label` with `=`.
fn pinned(e: &Expr, label: &str) -> bool {
    let vs_pinned = |vs: &promql_parser::parser::VectorSelector| {
        vs.matchers
            .matchers
            .iter()
            .any(|m| m.name == label && m.op == MatchOp::Equal)
    };
    match e {
        Expr::VectorSelector(vs) => vs_pinned(vs),
        Expr::MatrixSelector(ms) => vs_pinned(&ms.vs),
        Expr::Aggregate(a) => {
            a.param.as_deref().is_none_or(|p| pinned(p, label)) && pinned(&a.expr, label)
        }
        Expr::Binary(b) => pinned(&b.lhs, label) && pinned(&b.rhs, label),
        Expr::Unary(u) => pinned(&u.expr, label),
        Expr::Paren(p) => pinned(&p.expr, label),
        Expr::Subquery(s) => pinned(&s.expr, label),
        Expr::Call(c) => c.args.args.iter().all(|a| pinned(a, label)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::Extension(_) => false,
    }
}

fn no_or_matchers(vs: &promql_parser::parser::VectorSelector) -> Result<(), PromqlError> {
    if vs.matchers.or_matchers.is_empty() {
        Ok(())
    } else {
        Err(or_matchers_error())
    }
}

fn vector_fn() -> promql_parser::parser::Function {
    let mut f = label_replace();
    f.name = "vector";
    f.arg_types = vec![ValueType::Scalar];
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FleetOptions {
        FleetOptions {
            label: "cluster".into(),
            clusters: vec!["tools".into(), "a".into(), "b".into()],
        }
    }

    fn fleet(src: &str) -> Rewritten {
        let out = rewrite_fleet_expr(src, &opts()).unwrap_or_else(|e| panic!("{src}: {e}"));
        let again =
            rewrite_fleet_expr(&out.expr, &opts()).unwrap_or_else(|e| panic!("{}: {e}", out.expr));
        assert!(
            !again.changed,
            "not idempotent: {} -> {}",
            out.expr, again.expr
        );
        assert_eq!(again.expr, out.expr);
        out
    }

    #[test]
    fn labelled_results_keep_the_label_and_selectors_stay_unpinned() {
        let cases = [
            (
                "count by (job) (up == 0) / count by (job) (up)",
                "count by (job, cluster) (up == 0) / count by (job, cluster) (up)",
            ),
            ("sum(rate(x[5m]))", "sum by (cluster) (rate(x[5m]))"),
            (
                "a * on (instance) group_left (node) b",
                "a * on (instance, cluster) group_left (node) b",
            ),
            ("a / ignoring (cluster, x) b", "a / ignoring (x) b"),
        ];
        for (src, want) in cases {
            assert_eq!(fleet(src).expr, want, "{src}");
        }
        let untouched = fleet("up{job=\"a\"} == 0");
        assert!(!untouched.changed);
    }

    #[test]
    fn labelless_results_come_once_per_cluster() {
        assert_eq!(
            fleet("absent(up{job=\"kubelet\"})").expr,
            "absent(up{job=\"kubelet\", cluster=\"tools\"}) or absent(up{job=\"kubelet\", cluster=\"a\"}) \
             or absent(up{job=\"kubelet\", cluster=\"b\"})"
        );
        assert_eq!(
            fleet("sum(x) or vector(0)").expr,
            "sum by (cluster) (x) or (label_replace(vector(0), \"cluster\", \"tools\", \"\", \"\") or \
             label_replace(vector(0), \"cluster\", \"a\", \"\", \"\") or label_replace(vector(0), \
             \"cluster\", \"b\", \"\", \"\"))"
        );
        let one = FleetOptions {
            label: "cluster".into(),
            clusters: vec!["only".into()],
        };
        let out = rewrite_fleet_expr("1", &one).unwrap();
        assert_eq!(
            out.expr,
            "label_replace(vector(1), \"cluster\", \"only\", \"\", \"\")"
        );
        for src in [
            "time() - 5",
            "hour()",
            "absent_over_time(x[5m])",
            "vector(scalar(sum(x)))",
            "vector(time())",
        ] {
            let out = fleet(src);
            assert_eq!(out.expr.matches(" or ").count(), 2, "{src}: {}", out.expr);
        }
    }

    #[test]
    fn data_scalars_expand_their_vector_parent() {
        let out = fleet("sum(a) / scalar(sum(b))");
        assert_eq!(
            out.expr,
            "sum by (cluster) (a{cluster=\"tools\"}) / scalar(sum by (cluster) (b{cluster=\"tools\"})) or \
             sum by (cluster) (a{cluster=\"a\"}) / scalar(sum by (cluster) (b{cluster=\"a\"})) or \
             sum by (cluster) (a{cluster=\"b\"}) / scalar(sum by (cluster) (b{cluster=\"b\"}))"
        );
        assert!(
            fleet("topk(scalar(n), x)")
                .expr
                .contains("n{cluster=\"b\"}")
        );
        // Constant scalars need nothing.
        assert_eq!(fleet("x * 2 + time()").expr, "x * 2 + time()");
    }

    #[test]
    fn contract_breakers_are_named() {
        for src in [
            "label_replace(up, \"x\", \"$1\", \"cluster\", \"(.*)\")",
            "label_join(up, \"x\", \",\", \"job\", \"cluster\")",
            "label_replace(up, \"cluster\", \"x\", \"\", \"\")",
            "count_values(\"cluster\", up)",
        ] {
            let out = fleet(src);
            assert!(
                out.warnings.iter().any(|w| w.contains("cannot hold")),
                "{src}: {:?}",
                out.warnings
            );
        }
    }

    #[test]
    fn an_expansion_past_the_limits_is_refused_not_written() {
        let fleet = |n: usize| FleetOptions {
            label: "cluster".into(),
            clusters: (0..n).map(|i| format!("cluster-{i}")).collect(),
        };
        let e = rewrite_fleet_expr("absent(up{job=\"kubelet\"})", &fleet(300)).unwrap_err();
        assert!(matches!(e, PromqlError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("300 clusters"), "{e}");
        // Within the nesting limit but past the size limit.
        let long = format!("absent(up{{job=\"{}\"}})", "k".repeat(400));
        let e = rewrite_fleet_expr(&long, &fleet(200)).unwrap_err();
        assert!(e.to_string().contains("200 clusters"), "{e}");
        // Labelled expressions do not grow with the fleet.
        assert!(rewrite_fleet_expr("sum(up)", &fleet(300)).is_ok());
        let ok = rewrite_fleet_expr("absent(up)", &fleet(100)).unwrap();
        assert!(!rewrite_fleet_expr(&ok.expr, &fleet(100)).unwrap().changed);
    }

    /// Expressions mixing every construct the fleet rewrite treats differently.
    fn arb_vector() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("m{job=\"a\"}".to_owned()),
            Just("vector(1)".to_owned()),
            Just("absent(m)".to_owned()),
            Just("absent_over_time(m[5m])".to_owned()),
            Just("rate(c[5m])".to_owned()),
            Just("hour()".to_owned()),
            Just("n".to_owned()),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|x| format!("sum by (job) ({x})")),
                inner.clone().prop_map(|x| format!("count({x})")),
                inner.clone().prop_map(|x| format!("absent({x})")),
                inner.clone().prop_map(|x| format!("-({x})")),
                inner.clone().prop_map(|x| format!("{x} / scalar(sum(n))")),
                inner
                    .clone()
                    .prop_map(|x| format!("topk(scalar(count(n)), {x})")),
                inner
                    .clone()
                    .prop_map(|x| format!("max_over_time(({x})[10m:1m])")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} + on (job) {b}")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) * ignoring (x) ({b})")),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever it is given, the fleet rewrite reaches a fixed point in one run and its
        /// output parses (the second run parses it).
        #[test]
        fn fleet_rewrite_is_a_fixed_point(src in arb_vector()) {
            let Ok(out) = rewrite_fleet_expr(&src, &opts()) else {
                // Only many-to-many joins the parser refuses, same as without the fleet.
                proptest::prop_assert!(super::super::parse(&src).is_err(), "{}", src);
                return Ok(());
            };
            let again = rewrite_fleet_expr(&out.expr, &opts());
            proptest::prop_assert!(again.is_ok(), "{} -> {} -> {:?}", src, out.expr, again);
            let again = again.unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert!(!again.changed, "{} -> {} -> {}", src, out.expr, again.expr);
            proptest::prop_assert_eq!(&again.expr, &out.expr);
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = opts();
        o.clusters.push("a".into());
        assert!(rewrite_fleet_expr("up", &o).is_err());
        o.clusters.clear();
        assert!(rewrite_fleet_expr("up", &o).is_err());
        let o = FleetOptions {
            label: "__x".into(),
            clusters: vec!["a".into()],
        };
        assert!(rewrite_fleet_expr("up", &o).is_err());
    }
}
