//! Label facts about the syntax tree shared by the rewriters, the contract checker and the
//! printer (kept out of the printer, which only prints).

use promql_parser::label::Matchers;

use super::PromqlError;

/// The error for `{a="x" or b="y"}`: promql-parser accepts it, Prometheus 2.42 does not.
pub(crate) fn or_matchers_error() -> PromqlError {
    PromqlError::Unsupported("`or` between label matchers is not Prometheus 2.42 syntax".into())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, the label names Prometheus 2.42 accepts unquoted.
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when `m` contains no matcher on `label`; used by the walkers.
pub(crate) fn lacks_label(m: &Matchers, label: &str) -> bool {
    !m.matchers
        .iter()
        .chain(m.or_matchers.iter().flatten())
        .any(|x| x.name == label)
}
