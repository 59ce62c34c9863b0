//! PromQL rewriting on the syntax tree (stub: implemented by the PromQL work).

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
    #[error("does not parse: {0}")]
    Parse(String),
    #[error("too large: {0}")]
    TooLarge(String),
}

/// Pins `src` to one cluster (see the crate README's "Rule rewriting" contract).
pub fn rewrite_expr(src: &str, opts: &RewriteOptions) -> Result<Rewritten, PromqlError> {
    let _ = opts;
    Ok(Rewritten { expr: src.to_owned(), changed: false, warnings: Vec::new() })
}
