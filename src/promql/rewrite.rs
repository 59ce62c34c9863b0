//! The syntax-tree walk that pins an expression to one cluster (contract in `mod.rs`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::function::{Function, FunctionArgs};
use promql_parser::parser::token::{T_COUNT_VALUES, T_EQL_REGEX};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    Call, Expr, LabelModifier, StringLiteral, VectorMatchCardinality, VectorSelector,
};

use super::labels::{lacks_label, or_matchers_error};
use super::{PromqlError, RewriteOptions};

/// Date functions that, called without argument, return one series without labels.
const DATE_FUNCTIONS: [&str; 8] = [
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

pub(crate) struct Rewriter<'a> {
    opts: &'a RewriteOptions,
    /// The replacement argument of our `label_replace` wrapper (`$` doubled: Go's
    /// `Regexp.Expand` would otherwise read `$name` as a capture group).
    replacement: String,
    /// The matcher to add, built on first use (with `regex`, building compiles the regex:
    /// once per expression rather than once per selector).
    matcher: Option<Matcher>,
    pub changed: bool,
    pub warnings: Vec<String>,
}

impl<'a> Rewriter<'a> {
    pub fn new(opts: &'a RewriteOptions) -> Self {
        Self {
            opts,
            replacement: opts.value.replace('$', "$$"),
            matcher: None,
            changed: false,
            warnings: Vec::new(),
        }
    }

    /// Rewrites `e` in place. `wrapped`: `e` is the first argument of our own
    /// `label_replace` wrapper, so it must not be wrapped again.
    pub fn walk(&mut self, e: &mut Expr, wrapped: bool) -> Result<(), PromqlError> {
        match e {
            Expr::VectorSelector(vs) => self.pin(vs)?,
            Expr::MatrixSelector(ms) => self.pin(&mut ms.vs)?,
            Expr::Aggregate(a) => {
                if let Some(p) = a.param.as_deref_mut() {
                    if a.op.id() == T_COUNT_VALUES {
                        self.check_count_values(p);
                    }
                    self.walk(p, false)?;
                }
                self.walk(&mut a.expr, false)?;
                self.keep_in_grouping(&mut a.modifier);
            }
            Expr::Binary(b) => {
                self.walk(&mut b.lhs, false)?;
                self.walk(&mut b.rhs, false)?;
                let vectors = b.lhs.value_type() == ValueType::Vector
                    && b.rhs.value_type() == ValueType::Vector;
                if let (true, Some(m)) = (vectors, b.modifier.as_mut()) {
                    self.keep_in_matching(&mut m.matching, &mut m.card);
                }
            }
            Expr::Unary(u) => self.walk(&mut u.expr, false)?,
            Expr::Paren(p) => self.walk(&mut p.expr, false)?,
            Expr::Subquery(s) => self.walk(&mut s.expr, false)?,
            Expr::Call(c) => {
                let ours = self.writes_label(c);
                for (i, arg) in c.args.args.iter_mut().enumerate() {
                    self.walk(arg, ours && i == 0)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
            Expr::Extension(_) => {
                return Err(PromqlError::Unsupported("extension expressions".into()));
            }
        }
        if self.opts.tag_labelless && !wrapped && self.is_labelless(e) {
            self.wrap(e);
        }
        Ok(())
    }

    /// Adds the cluster matcher unless the selector already has one on the label.
    fn pin(&mut self, vs: &mut VectorSelector) -> Result<(), PromqlError> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(or_matchers_error());
        }
        if lacks_label(&vs.matchers, &self.opts.label) {
            let m = match &self.matcher {
                Some(m) => m.clone(),
                None => self.matcher.insert(self.build_matcher()?).clone(),
            };
            vs.matchers.matchers.push(m);
            self.changed = true;
        }
        Ok(())
    }

    fn build_matcher(&self) -> Result<Matcher, PromqlError> {
        if !self.opts.regex {
            return Ok(Matcher::new(
                MatchOp::Equal,
                &self.opts.label,
                &self.opts.value,
            ));
        }
        Matcher::new_matcher(
            T_EQL_REGEX,
            self.opts.label.clone(),
            self.opts.value.clone(),
        )
        .map_err(|e| {
            PromqlError::InvalidOption(format!(
                "value {:?} is not a valid regex: {e}",
                self.opts.value
            ))
        })
    }

    fn keep_in_grouping(&mut self, modifier: &mut Option<LabelModifier>) {
        self.changed |= keep_in_grouping(modifier, &self.opts.label);
    }

    fn keep_in_matching(
        &mut self,
        matching: &mut Option<LabelModifier>,
        card: &mut VectorMatchCardinality,
    ) {
        self.changed |= keep_in_matching(matching, card, &self.opts.label);
    }

    fn check_count_values(&mut self, param: &Expr) {
        if matches!(param, Expr::StringLiteral(s) if s.val == self.opts.label) {
            self.warnings.push(format!(
                "count_values writes the label {:?} itself; its results may not carry {}={:?}",
                self.opts.label, self.opts.label, self.opts.value
            ));
        }
    }

    /// For `label_replace`/`label_join` writing our label: true when the call is exactly our
    /// wrapper (`label_replace(X, "<label>", "<value>", "", "")`), otherwise a warning.
    fn writes_label(&mut self, c: &Call) -> bool {
        let name = c.func.name;
        if name != "label_replace" && name != "label_join" {
            return false;
        }
        let str_arg = |i: usize| match c.args.args.get(i).map(std::convert::AsRef::as_ref) {
            Some(Expr::StringLiteral(s)) => Some(s.val.as_str()),
            _ => None,
        };
        let sources = if name == "label_replace" {
            3..4
        } else {
            3..c.args.args.len()
        };
        if sources
            .into_iter()
            .any(|i| str_arg(i) == Some(self.opts.label.as_str()))
        {
            self.warnings.push(format!(
                "{name} reads the label {:?}, which the rewrite adds to every selected series: it now \
                 reads {:?} where the original read the series' own value (usually none)",
                self.opts.label, self.opts.value
            ));
        }
        if str_arg(1) != Some(self.opts.label.as_str()) {
            return false;
        }
        if name == "label_replace"
            && c.args.args.len() == 5
            && str_arg(2) == Some(self.replacement.as_str())
            && str_arg(3) == Some("")
            && str_arg(4) == Some("")
        {
            return true;
        }
        self.warnings.push(format!(
            "{name} writes the label {:?} itself; its results may not carry {}={:?}",
            self.opts.label, self.opts.label, self.opts.value
        ));
        false
    }

    fn is_labelless(&self, e: &Expr) -> bool {
        is_labelless(e, &self.opts.label)
    }

    fn wrap(&mut self, e: &mut Expr) {
        let inner = std::mem::replace(e, Expr::from(0.0));
        let s = |v: &str| Expr::StringLiteral(StringLiteral { val: v.to_owned() });
        let args = FunctionArgs::new_args(inner)
            .append_args(s(&self.opts.label))
            .append_args(s(&self.replacement))
            .append_args(s(""))
            .append_args(s(""));
        *e = Expr::Call(Call {
            func: label_replace(),
            args,
        });
        self.changed = true;
    }
}

/// `by`: add the label (a missing or empty `by` becomes `by (<label>)`); `without`: remove it.
/// Returns whether something changed.
pub(crate) fn keep_in_grouping(modifier: &mut Option<LabelModifier>, label: &str) -> bool {
    match modifier {
        None => {
            *modifier = Some(LabelModifier::Include(promql_parser::label::Labels {
                labels: vec![label.to_owned()],
            }));
            true
        }
        Some(LabelModifier::Include(ls)) => {
            if ls.labels.iter().any(|l| l == label) {
                return false;
            }
            ls.labels.push(label.to_owned());
            true
        }
        Some(LabelModifier::Exclude(ls)) => remove(&mut ls.labels, label),
    }
}

/// `on`: add the label (and drop it from `group_left/right`, which Prometheus forbids
/// alongside `on`; both sides carry the same value); `ignoring`: remove it. Returns whether
/// something changed.
pub(crate) fn keep_in_matching(
    matching: &mut Option<LabelModifier>,
    card: &mut VectorMatchCardinality,
    label: &str,
) -> bool {
    match matching {
        Some(LabelModifier::Include(ls)) => {
            let mut changed = false;
            if !ls.labels.iter().any(|l| l == label) {
                ls.labels.push(label.to_owned());
                changed = true;
            }
            if let VectorMatchCardinality::ManyToOne(g) | VectorMatchCardinality::OneToMany(g) =
                card
            {
                changed |= remove(&mut g.labels, label);
            }
            changed
        }
        Some(LabelModifier::Exclude(ls)) => remove(&mut ls.labels, label),
        None => false,
    }
}

/// Vector producers whose result has no labels at all (`absent` of a bare selector takes its
/// labels from the selector's equality matchers, so it is label-less only without one on
/// `label`).
pub(crate) fn is_labelless(e: &Expr, label: &str) -> bool {
    let Expr::Call(c) = e else { return false };
    let first = c.args.args.first().map(std::convert::AsRef::as_ref);
    let has_equal = |vs: &VectorSelector| {
        vs.matchers
            .matchers
            .iter()
            .any(|m| m.name == label && m.op == MatchOp::Equal)
    };
    match c.func.name {
        "vector" => true,
        n if is_date_function(n) => c.args.args.is_empty(),
        "absent" => !matches!(first, Some(Expr::VectorSelector(vs)) if has_equal(vs)),
        "absent_over_time" => !matches!(first, Some(Expr::MatrixSelector(ms)) if has_equal(&ms.vs)),
        _ => false,
    }
}

pub(crate) fn is_date_function(name: &str) -> bool {
    DATE_FUNCTIONS.contains(&name)
}

pub(crate) fn label_replace() -> Function {
    Function::new(
        "label_replace",
        vec![
            ValueType::Vector,
            ValueType::String,
            ValueType::String,
            ValueType::String,
            ValueType::String,
        ],
        0,
        ValueType::Vector,
        false,
    )
}

/// Removes every `label` from `labels`; true when something was removed.
fn remove(labels: &mut Vec<String>, label: &str) -> bool {
    let before = labels.len();
    labels.retain(|l| l != label);
    labels.len() != before
}
