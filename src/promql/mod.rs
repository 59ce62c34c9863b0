//! PromQL rewriting on the syntax tree: pins an expression to one cluster.
//!
//! Contract: evaluated on the central Prometheus, a rewritten expression computes what the
//! original computes on a Prometheus holding only the local series, plus the label
//! `<label>=<value>` on every result series. To that end every vector and matrix selector
//! gets the matcher (unless it already has one on the label), aggregations and vector
//! matching keep the label (`by`/`on` gain it, `without`/`ignoring` lose it) and, with
//! `tag_labelless`, label-less vectors (`vector(s)`, argument-less date functions, `absent`
//! of a non-selector) are wrapped in `label_replace(X, "<label>", "<value>", "", "")`.
//! Rewriting is idempotent byte for byte, and an expression that needs no change is returned
//! as its input text.
//!
//! Pipeline: `lex::prepare` (limits, raw strings, checks where promql-parser is unsafe or
//! unfaithful; regex matchers marked so the parser skips compiling them, see `regexes`) ->
//! `promql_parser::parser::parse` -> `rewrite::Rewriter` -> our printer.

mod check;
mod fast;
mod fleet;
mod labels;
mod lex;
mod print;
mod regexes;
mod rewrite;

use promql_parser::parser::Expr;

pub use fleet::{FleetOptions, rewrite_fleet_expr};
pub use labels::is_label_name;
pub use lex::{MAX_DEPTH, MAX_EXPR_BYTES, MAX_REGEX_REPETITION};
pub(crate) use lex::{comment_end, string_end};
pub use print::quote as quote_string;

/// How to pin an expression to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteOptions {
    /// The cluster label name, e.g. `cluster`.
    pub label: String,
    /// The value to match, e.g. `local` (or `$cluster` for dashboards).
    pub value: String,
    /// `=~` instead of `=` for the injected matcher (Grafana multi-select).
    pub regex: bool,
    /// Give label-less vectors (`vector(s)`, `absent(...)` of a non-selector, date functions
    /// without argument) the cluster label via `label_replace`, so `X or vector(0)` keeps one series.
    pub tag_labelless: bool,
}

/// Result of rewriting one expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The expression to use: the input text unchanged when nothing had to change.
    pub expr: String,
    /// True when `expr` differs from the input.
    pub changed: bool,
    /// Findings a user should know about (e.g. `label_replace` writing the cluster label).
    pub warnings: Vec<String>,
}

/// Why an expression could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PromqlError {
    /// Not PromQL, as Prometheus's parser would say (message from promql-parser).
    #[error("does not parse: {0}")]
    Parse(String),
    /// Past a size, nesting or regex-repetition limit that keeps the webhook's cost bounded.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Parses, but uses something we cannot rewrite faithfully for Prometheus 2.42.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The [`RewriteOptions`] themselves are unusable (e.g. an invalid label name).
    #[error("invalid rewrite options: {0}")]
    InvalidOption(String),
}

/// Pins `src` to one cluster (see the module docs for the contract).
pub fn rewrite_expr(src: &str, opts: &RewriteOptions) -> Result<Rewritten, PromqlError> {
    check_options(opts)?;
    let mut expr = parse(src)?;
    let mut rw = rewrite::Rewriter::new(opts);
    rw.walk(&mut expr, false)?;
    if !rw.changed {
        return Ok(Rewritten {
            expr: src.to_owned(),
            changed: false,
            warnings: rw.warnings,
        });
    }
    let printed = print::print(&expr)?;
    Ok(Rewritten {
        changed: printed != src,
        expr: printed,
        warnings: rw.warnings,
    })
}

/// Parses `src` and prints it back with our printer, without rewriting: shows how the
/// printer renders an expression (comments are dropped, formatting normalised).
pub fn reformat(src: &str) -> Result<String, PromqlError> {
    print::print(&parse(src)?)
}

/// Lists the places where `src` breaks the contract for `opts` (selectors without a matcher
/// on the label, aggregations or `on`/`ignoring` that drop it, untagged label-less vectors
/// when `opts.tag_labelless`). Empty for every output of [`rewrite_expr`]. Independent of the
/// rewriter, so tests can use it as a judge.
pub fn contract_violations(src: &str, opts: &RewriteOptions) -> Result<Vec<String>, PromqlError> {
    let expr = parse(src)?;
    let mut out = Vec::new();
    check::violations(&expr, opts, &mut out, false)?;
    Ok(out)
}

fn check_options(opts: &RewriteOptions) -> Result<(), PromqlError> {
    if !is_label_name(&opts.label) || opts.label.starts_with("__") {
        return Err(PromqlError::InvalidOption(format!(
            "{:?} is not a usable label name",
            opts.label
        )));
    }
    Ok(())
}

/// Limits and pre-pass, then promql-parser. First with the regex matchers marked so that the
/// parser does not compile them ([`regexes`]: most of the cost of a parse); when that tree
/// cannot be trusted or does not parse, the plain parse decides, errors included.
fn parse(src: &str) -> Result<Expr, PromqlError> {
    register_prometheus_2_42_functions();
    let marked = lex::prepare_marked(src)?;
    if marked.text.trim().is_empty() {
        return Err(PromqlError::Parse("empty expression".into()));
    }
    if marked.negated.is_empty() {
        return parse_text(&marked.text);
    }
    if let Ok(mut expr) = parse_text(&marked.text)
        && regexes::restore(&mut expr, &marked.negated)
    {
        return Ok(expr);
    }
    parse_text(&lex::prepare(src)?)
}

/// Our fast path ([`fast`]), else promql-parser; under `catch_unwind` as a last resort: the
/// pre-pass avoids the panics we know of, this turns unknown ones into errors.
fn parse_text(text: &str) -> Result<Expr, PromqlError> {
    let parsed = std::panic::catch_unwind(|| {
        fast::parse(text).map_or_else(|| promql_parser::parser::parse(text), Ok)
    })
    .map_err(|_| PromqlError::Parse("the PromQL parser crashed on this input".into()))?;
    parsed.map_err(PromqlError::Parse)
}

/// Test hook for the fast path's contract: `Ok(true)` when [`fast`] parsed `src` (after the
/// pre-pass, with and without regex marking) to exactly promql-parser's tree, `Ok(false)` when
/// it left `src` to promql-parser, `Err` with both trees when it built something else, or
/// accepted what promql-parser refuses.
#[doc(hidden)]
pub fn check_fast_parser(src: &str) -> Result<bool, String> {
    register_prometheus_2_42_functions();
    let mut taken = false;
    for (i, text) in [lex::prepare_marked(src).map(|m| m.text), lex::prepare(src)]
        .into_iter()
        .enumerate()
    {
        let Ok(text) = text else { continue };
        let Some(got) = fast::parse(&text) else {
            continue;
        };
        taken |= i == 0;
        match promql_parser::parser::parse(&text) {
            // (Debug as well: NaN literals are never `==`.)
            Ok(want) if want == got || format!("{want:?}") == format!("{got:?}") => {}
            want => {
                return Err(format!(
                    "{text:?}: fast path {got:?}, promql-parser {want:?}"
                ));
            }
        }
    }
    Ok(taken)
}

/// promql-parser 0.11 follows Prometheus 3, which renamed `holt_winters` (still the name in
/// 2.42, our target) to `double_exponential_smoothing`; teach it the old name once.
fn register_prometheus_2_42_functions() {
    use promql_parser::parser::function::{Function, register_extra_functions};
    use promql_parser::parser::value::ValueType;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let holt_winters = Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        // Fails only if a later promql-parser makes it built-in, which is just as good.
        let _ = register_extra_functions(vec![holt_winters]);
    });
}

#[cfg(test)]
mod tests;
