//! An independent checker of the rewrite contract, for tests and for callers that want to
//! verify a rule they did not rewrite themselves.

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, LabelModifier};

use super::labels::lacks_label;
use super::print::print;
use super::{PromqlError, RewriteOptions};

/// Walks `e` and describes every place that breaks the contract for `opts.label`.
pub(crate) fn violations(
    e: &Expr,
    opts: &RewriteOptions,
    out: &mut Vec<String>,
    wrapped: bool,
) -> Result<(), PromqlError> {
    let label = opts.label.as_str();
    if let (true, false, Expr::Call(c)) = (opts.tag_labelless, wrapped, e) {
        let n = c.func.name;
        if n == "vector" || (c.args.args.is_empty() && super::rewrite::is_date_function(n)) {
            out.push(format!("label-less {n}() not tagged: {}", print(e)?));
        }
    }
    match e {
        Expr::VectorSelector(vs) => {
            if lacks_label(&vs.matchers, label) {
                out.push(format!("selector without {label} matcher: {}", print(e)?));
            }
        }
        Expr::MatrixSelector(ms) => {
            if lacks_label(&ms.vs.matchers, label) {
                out.push(format!("selector without {label} matcher: {}", print(e)?));
            }
        }
        Expr::Aggregate(a) => {
            let ok = match &a.modifier {
                Some(LabelModifier::Include(ls)) => ls.labels.iter().any(|l| l == label),
                Some(LabelModifier::Exclude(ls)) => !ls.labels.iter().any(|l| l == label),
                None => false,
            };
            if !ok {
                out.push(format!("aggregation drops {label}: {}", print(e)?));
            }
            if let Some(p) = &a.param {
                violations(p, opts, out, false)?;
            }
            violations(&a.expr, opts, out, false)?;
        }
        Expr::Binary(b) => {
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let ok = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(ls)) => ls.labels.iter().any(|l| l == label),
                Some(LabelModifier::Exclude(ls)) => !ls.labels.iter().any(|l| l == label),
                None => true,
            };
            if vectors && !ok {
                out.push(format!("vector matching ignores {label}: {}", print(e)?));
            }
            violations(&b.lhs, opts, out, false)?;
            violations(&b.rhs, opts, out, false)?;
        }
        Expr::Unary(u) => violations(&u.expr, opts, out, false)?,
        Expr::Paren(p) => violations(&p.expr, opts, out, false)?,
        Expr::Subquery(s) => violations(&s.expr, opts, out, false)?,
        Expr::Call(c) => {
            let name = c.func.name;
            let wrapper = name == "label_replace"
                && matches!(c.args.args.get(1).map(std::convert::AsRef::as_ref), Some(Expr::StringLiteral(s)) if s.val == label);
            for (i, arg) in c.args.args.iter().enumerate() {
                violations(arg, opts, out, wrapper && i == 0)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}
