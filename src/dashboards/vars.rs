//! Grafana template variables inside PromQL.
//!
//! Grafana interpolates `$var`, `${var}`, `${var.field:format}`, `[[var]]`, `[[var:format]]` and
//! the built-ins (`$__interval`, `$__rate_interval`, `$__range`, `$__range_s`, ...) before the query
//! reaches Prometheus, so the stored text is usually not PromQL. To rewrite it on the syntax tree,
//! each variable outside a string literal is replaced by a placeholder that parses in its position,
//! and restored byte-exactly afterwards:
//!
//! - inside a range or subquery `[...]`, or after `offset`: a duration (a trailing unit, as in
//!   `[${days}d]`, is swallowed with the variable);
//! - inside `{...}` (a label name), in a `by/without/on/ignoring/group_left/group_right (...)` list,
//!   glued to identifier characters (`node_${x}_total`), or followed by `{`, `[` or `(`: an
//!   identifier;
//! - after `@`, a binary operator or `bool`, as a numeric argument of `topk`, `quantile`,
//!   `histogram_quantile`, `clamp_min`, ... or for the numeric built-ins (`$__range_s`,
//!   `$__interval_ms`, ...): a number;
//! - anywhere else: an identifier (a metric name is the common case).
//!
//! The last two are guesses; when the result does not parse, the guesses are flipped once.
//! Variables inside string literals (label values, regexes) are left as they are: strings are
//! opaque to PromQL, so they survive any rewrite untouched.
//!
//! Placeholders are chosen so that they cannot collide with the query: their prefix or value is
//! changed until no placeholder text occurs in the input, and they are printed the same way by
//! promql-parser's `Display` (canonical durations and integers), so a rewriter that re-prints the
//! tree keeps them intact.

use std::convert::Infallible;
use std::time::Duration;

use promql_parser::util::{display_duration, parse_duration};

/// Built-ins that Grafana expands to a plain number (seconds, milliseconds or a timestamp).
const NUMERIC_BUILTINS: &[&str] = &[
    "__range_s",
    "__range_ms",
    "__interval_ms",
    "__rate_interval_ms",
    "__from",
    "__to",
];

/// Keywords whose parenthesised list holds label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Function arguments (function, zero-based index) that are scalars.
const NUMERIC_ARGS: &[(&str, usize)] = &[
    ("topk", 0),
    ("bottomk", 0),
    ("limitk", 0),
    ("limit_ratio", 0),
    ("quantile", 0),
    ("quantile_over_time", 0),
    ("histogram_quantile", 0),
    ("histogram_fraction", 0),
    ("histogram_fraction", 1),
    ("clamp", 1),
    ("clamp", 2),
    ("clamp_min", 1),
    ("clamp_max", 1),
    ("round", 1),
    ("predict_linear", 1),
    ("holt_winters", 1),
    ("holt_winters", 2),
    ("double_exponential_smoothing", 1),
    ("double_exponential_smoothing", 2),
    ("vector", 0),
];

/// Most variables one expression may hold (placeholders have a fixed-width index).
const MAX_VARIABLES: usize = 10_000;

/// Why an expression could not be prepared for parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VarError {
    /// The expression does not parse even with every variable replaced.
    #[error("does not parse: {0}")]
    Parse(String),
    /// More variables than placeholders.
    #[error("more than {MAX_VARIABLES} Grafana variables in one expression")]
    TooMany,
    /// A placeholder did not survive the rewrite (the rewriter changed or dropped it).
    #[error("Grafana variable {0:?} was lost in the rewrite")]
    Lost(String),
}

/// Which kind of PromQL token a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration in `[...]` or after `offset`.
    Duration,
    /// A metric or label name (or a part of one).
    Identifier,
    /// A scalar.
    Number,
}

/// One Grafana variable found in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Byte range in the source, including a swallowed duration unit.
    pub span: std::ops::Range<usize>,
    /// The variable's name (`__interval`, `node`, ...).
    pub name: String,
    /// The placeholder kind chosen for its position.
    pub kind: Kind,
    /// Whether `kind` was a guess that may be flipped when parsing fails.
    pub guessed: bool,
}

/// An expression with every Grafana variable replaced by a placeholder that parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    /// The PromQL text to parse and rewrite.
    pub text: String,
    /// (placeholder, original text) pairs, in order of appearance.
    replacements: Vec<(String, String)>,
}

impl Substituted {
    /// Whether the expression held any variable outside string literals.
    pub fn has_variables(&self) -> bool {
        !self.replacements.is_empty()
    }

    /// Puts the original variable text back into `rewritten` (the rewriter's output for
    /// [`Substituted::text`]). Fails when a placeholder went missing, so a mangled query is
    /// reported instead of written.
    pub fn restore(&self, rewritten: &str) -> Result<String, VarError> {
        let mut out = rewritten.to_owned();
        for (placeholder, original) in &self.replacements {
            if !out.contains(placeholder.as_str()) {
                return Err(VarError::Lost(original.clone()));
            }
            out = out.replace(placeholder.as_str(), original);
        }
        Ok(out)
    }

    /// Restores placeholders in a message (e.g. a parse error) without failing.
    pub fn restore_lossy(&self, message: &str) -> String {
        self.replacements
            .iter()
            .fold(message.to_owned(), |acc, (p, o)| acc.replace(p.as_str(), o))
    }
}

/// Finds the Grafana variables of `src` and classifies each by its position.
pub fn scan(src: &str) -> Vec<Variable> {
    Scanner::new(src).run()
}

/// Replaces every variable of `src` by a placeholder and checks that the result parses with
/// promql-parser; flips the guessed kinds once when it does not.
pub fn substitute(src: &str) -> Result<Substituted, VarError> {
    let vars = scan(src);
    if vars.len() > MAX_VARIABLES {
        return Err(VarError::TooMany);
    }
    let first = build(src, &vars);
    let first_err = match promql_parser::parser::parse(&first.text) {
        Ok(_) => return Ok(first),
        Err(e) => first.restore_lossy(&e),
    };
    // Flip one guess at a time (the usual case: one wrong guess), then all of them.
    let guessed: Vec<usize> = (0..vars.len()).filter(|&i| vars[i].guessed).collect();
    let mut attempts: Vec<Vec<usize>> = guessed.iter().map(|&i| vec![i]).collect();
    if guessed.len() > 1 {
        attempts.push(guessed.clone());
    }
    for flip in attempts {
        let mut flipped = vars.clone();
        for i in flip {
            flipped[i].kind = match flipped[i].kind {
                Kind::Identifier => Kind::Number,
                Kind::Number => Kind::Identifier,
                Kind::Duration => Kind::Duration,
            };
        }
        let candidate = build(src, &flipped);
        if promql_parser::parser::parse(&candidate.text).is_ok() {
            return Ok(candidate);
        }
    }
    Err(VarError::Parse(first_err.trim().to_owned()))
}

/// Builds the placeholder text for `vars` of `src`.
fn build(src: &str, vars: &[Variable]) -> Substituted {
    let gen_ = Generator::new(src, vars.len());
    let mut text = String::with_capacity(src.len() + vars.len() * 16);
    let mut replacements = Vec::with_capacity(vars.len());
    let mut at = 0;
    for (i, v) in vars.iter().enumerate() {
        text.push_str(&src[at..v.span.start]);
        let placeholder = gen_.placeholder(v.kind, i);
        text.push_str(&placeholder);
        replacements.push((placeholder, src[v.span.clone()].to_owned()));
        at = v.span.end;
    }
    text.push_str(&src[at..]);
    Substituted { text, replacements }
}

/// Makes placeholders that do not occur in the source.
struct Generator {
    ident_prefix: String,
    number_base: u64,
    duration_base: u64,
}

impl Generator {
    fn new(src: &str, count: usize) -> Self {
        let mut ident_prefix = String::from("promfedvar");
        while src.contains(&ident_prefix) {
            ident_prefix.push('x');
        }
        // Same digit count for every number placeholder, so none is a substring of another.
        let count = count as u64;
        let mut number_base: u64 = 73_100_000_000;
        while (0..count).any(|i| src.contains(&(number_base + i).to_string())) {
            number_base += 1_000_000;
        }
        let mut duration_base: u64 = 1_000;
        while (0..count).any(|i| src.contains(&duration_text(duration_base + i))) {
            duration_base += 10_000;
        }
        Self {
            ident_prefix,
            number_base,
            duration_base,
        }
    }

    fn placeholder(&self, kind: Kind, i: usize) -> String {
        let i64_ = i as u64;
        match kind {
            Kind::Identifier => format!("{}{:04}", self.ident_prefix, i),
            Kind::Number => (self.number_base + i64_).to_string(),
            Kind::Duration => duration_text(self.duration_base + i64_),
        }
    }
}

/// A duration in promql-parser's canonical form (`1000d13h7m11s917ms`): printing the parsed
/// duration gives the same text back, whatever the rewriter does with the tree.
fn duration_text(days: u64) -> String {
    let ms = (((days * 24 + 13) * 60 + 7) * 60 + 11) * 1000 + 917;
    display_duration(&Duration::from_millis(ms))
}

/// Checks that a placeholder duration round-trips through promql-parser (used by tests).
pub fn duration_round_trips(text: &str) -> bool {
    parse_duration(text).is_ok_and(|d| display_duration(&d) == text)
}

#[derive(Debug, Clone)]
enum Ctx {
    /// `label_list`: the parens of `by`/`on`/...; `owner`: the aggregation a `by (...)` list
    /// belongs to (`topk by (x) (...)`), which owns the next parens.
    Paren {
        func: Option<String>,
        label_list: bool,
        owner: Option<String>,
        arg: usize,
    },
    Brace,
    Bracket,
}

#[derive(Debug, Clone, PartialEq)]
enum Prev {
    Start,
    Ident(String),
    Operator,
    At,
    Open,
    Comma,
    Other,
}

struct Scanner<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Ctx>,
    prev: Prev,
    /// The identifier before a `by`/`without` keyword just read (the aggregation's name).
    before_keyword: Option<String>,
    found: Vec<Variable>,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Scanner<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            stack: Vec::new(),
            prev: Prev::Start,
            before_keyword: None,
            found: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Variable> {
        while self.pos < self.bytes.len() {
            let b = self.bytes[self.pos];
            match b {
                b'"' | b'\'' | b'`' => {
                    self.skip_string();
                    self.prev = Prev::Other;
                }
                b'#' => self.pos = crate::promql::comment_end(self.bytes, self.pos),
                b'$' | b'[' if self.variable_at(self.pos).is_some() => {
                    if let Some((end, name)) = self.variable_at(self.pos) {
                        self.record(self.pos, end, name);
                    }
                }
                b'(' => {
                    let (func, label_list) = match &self.prev {
                        Prev::Ident(id) => {
                            let lower = id.to_ascii_lowercase();
                            let ll = LABEL_LIST_KEYWORDS.contains(&lower.as_str());
                            (Some(lower), ll)
                        }
                        _ => (None, false),
                    };
                    let owner = if label_list {
                        self.before_keyword.take()
                    } else {
                        None
                    };
                    self.stack.push(Ctx::Paren {
                        func,
                        label_list,
                        owner,
                        arg: 0,
                    });
                    self.prev = Prev::Open;
                    self.pos += 1;
                }
                b'{' => {
                    self.stack.push(Ctx::Brace);
                    self.prev = Prev::Open;
                    self.pos += 1;
                }
                b'[' => {
                    self.stack.push(Ctx::Bracket);
                    self.prev = Prev::Open;
                    self.pos += 1;
                }
                b')' | b'}' | b']' => {
                    self.prev = match self.stack.pop() {
                        Some(Ctx::Paren { owner: Some(f), .. }) => Prev::Ident(f),
                        _ => Prev::Other,
                    };
                    self.pos += 1;
                }
                b',' => {
                    if let Some(Ctx::Paren { arg, .. }) = self.stack.last_mut() {
                        *arg += 1;
                    }
                    self.prev = Prev::Comma;
                    self.pos += 1;
                }
                b'@' => {
                    self.prev = Prev::At;
                    self.pos += 1;
                }
                b if b.is_ascii_whitespace() => self.pos += 1,
                b if is_ident_byte(b) || b == b'.' => {
                    let start = self.pos;
                    while self.pos < self.bytes.len()
                        && (is_ident_byte(self.bytes[self.pos]) || self.bytes[self.pos] == b'.')
                    {
                        self.pos += 1;
                    }
                    let word = &self.src[start..self.pos];
                    let lower = word.to_ascii_lowercase();
                    self.before_keyword = match &self.prev {
                        Prev::Ident(f) if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) => {
                            Some(f.to_ascii_lowercase())
                        }
                        _ => None,
                    };
                    self.prev = if word.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                        Prev::Other
                    } else {
                        Prev::Ident(word.to_owned())
                    };
                }
                _ => {
                    // Operators (and bytes PromQL does not know: the parser reports those).
                    self.prev = Prev::Operator;
                    self.pos += self.src[self.pos..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                }
            }
        }
        self.found
    }

    /// Skips a string literal starting at `self.pos` (unterminated: to the end).
    fn skip_string(&mut self) {
        let end = crate::promql::string_end(self.bytes, self.pos, |_| Ok::<(), Infallible>(()));
        self.pos = end.unwrap_or_else(|never| match never {});
    }

    /// Grafana's variable syntaxes at `at`: returns the end of the match and the name.
    fn variable_at(&self, at: usize) -> Option<(usize, String)> {
        let rest = &self.bytes[at..];
        let word_end = |from: usize| {
            let mut i = from;
            while i < rest.len() && is_word_byte(rest[i]) {
                i += 1;
            }
            i
        };
        if rest.starts_with(b"${") {
            let name_end = word_end(2);
            if name_end == 2 {
                return None;
            }
            let close = rest[name_end..].iter().position(|&b| b == b'}')? + name_end;
            let between = &rest[name_end..close];
            // `${var.field:format}`: a field path after `.`, a format after `:`.
            if !between.is_empty() && between[0] != b'.' && between[0] != b':' {
                return None;
            }
            let name = std::str::from_utf8(&rest[2..name_end]).ok()?.to_owned();
            return Some((at + close + 1, name));
        }
        if rest.starts_with(b"$") {
            let name_end = word_end(1);
            if name_end == 1 {
                return None;
            }
            let name = std::str::from_utf8(&rest[1..name_end]).ok()?.to_owned();
            return Some((at + name_end, name));
        }
        if rest.starts_with(b"[[") {
            let name_end = word_end(2);
            if name_end == 2 {
                return None;
            }
            let mut end = name_end;
            if rest.get(end) == Some(&b':') {
                let fmt_end = word_end(end + 1);
                if fmt_end == end + 1 {
                    return None;
                }
                end = fmt_end;
            }
            if !rest[end..].starts_with(b"]]") {
                return None;
            }
            let name = std::str::from_utf8(&rest[2..name_end]).ok()?.to_owned();
            return Some((at + end + 2, name));
        }
        None
    }

    fn record(&mut self, start: usize, end: usize, name: String) {
        let mut end = end;
        let top = self.stack.last().cloned();
        let after_offset = matches!(&self.prev, Prev::Ident(w) if w.eq_ignore_ascii_case("offset"));
        let glued_before = start > 0 && is_ident_byte(self.bytes[start - 1]);
        let glued_after = end < self.bytes.len() && is_ident_byte(self.bytes[end]);
        let next = self.src[end..].trim_start().bytes().next();
        let (kind, guessed) = if matches!(top, Some(Ctx::Bracket)) || after_offset {
            // A unit written after the variable belongs to the duration: `[${days}d]`.
            while end < self.bytes.len() && self.bytes[end].is_ascii_alphabetic() {
                end += 1;
            }
            (Kind::Duration, false)
        } else if matches!(self.prev, Prev::At) {
            (Kind::Number, false)
        } else if matches!(top, Some(Ctx::Brace))
            || matches!(
                top,
                Some(Ctx::Paren {
                    label_list: true,
                    ..
                })
            )
            || glued_before
            || glued_after
            || matches!(next, Some(b'{' | b'[' | b'('))
        {
            (Kind::Identifier, false)
        } else if NUMERIC_BUILTINS.contains(&name.as_str()) {
            (Kind::Number, false)
        } else if matches!(&top, Some(Ctx::Paren { func: Some(f), arg, .. })
            if NUMERIC_ARGS.contains(&(f.as_str(), *arg)))
            || matches!(self.prev, Prev::Operator)
            || matches!(&self.prev, Prev::Ident(w) if w.eq_ignore_ascii_case("bool"))
        {
            (Kind::Number, true)
        } else {
            (Kind::Identifier, true)
        };
        self.found.push(Variable {
            span: start..end,
            name,
            kind,
            guessed,
        });
        self.pos = end;
        self.prev = match kind {
            Kind::Identifier => Prev::Ident(String::from("promfedvar")),
            Kind::Number | Kind::Duration => Prev::Other,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(String, Kind)> {
        scan(src)
            .into_iter()
            .map(|v| (src[v.span].to_owned(), v.kind))
            .collect()
    }

    #[test]
    fn classifies_positions() {
        use Kind::*;
        let k = kinds(
            r#"sum by ($group) (rate(${metric}{job="$job",$lbl=~"x"}[$__rate_interval] offset $off)) > $thr"#,
        );
        assert_eq!(
            k,
            vec![
                ("$group".into(), Identifier),
                ("${metric}".into(), Identifier),
                ("$lbl".into(), Identifier),
                ("$__rate_interval".into(), Duration),
                ("$off".into(), Duration),
                ("$thr".into(), Number),
            ]
        );
        let k = kinds("topk by (a) ($n, x) + quantile without (b) ($q, y)");
        assert_eq!(k, vec![("$n".into(), Number), ("$q".into(), Number)]);
        let k = kinds("topk([[n]], node_${x}_total[${d}d:[[step:raw]]]) / $__range_s @ $__to");
        assert_eq!(
            k,
            vec![
                ("[[n]]".into(), Number),
                ("${x}".into(), Identifier),
                ("${d}d".into(), Duration),
                ("[[step:raw]]".into(), Duration),
                ("$__range_s".into(), Number),
                ("$__to".into(), Number),
            ]
        );
    }

    #[test]
    fn strings_and_comments_are_opaque() {
        assert!(scan(r#"x{a="$a", b=~'${b:regex}', c=`[[c]]`} # $d"#).is_empty());
        assert!(scan(r#"label_replace(x, "d", "$1", "s", "(.*)")"#).is_empty());
    }

    #[test]
    fn substitutes_parses_and_restores_exactly() {
        for src in [
            "rate(x[$__rate_interval])",
            "sum(increase(x[${__range}]))/$__range_s",
            "${metric:raw}",
            "topk($n, x) > $thr",
            "sum without ([[l]]) (x) * on ($a) group_left ($b) y",
            "histogram_quantile(${q}, sum by (le) (rate(h_bucket[$__interval:$__interval])))",
            "max_over_time(x[${w}w] offset ${o}m)",
            "promfedvar0000 + $a",
            "73100000000 + $a",
        ] {
            let s = substitute(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(!s.text.contains('$'), "{}", s.text);
            assert_eq!(s.restore(&s.text).unwrap(), src);
        }
    }

    #[test]
    fn placeholders_avoid_the_input() {
        let s = substitute(r#"promfedvar0000 + ${a}{job="x"}"#).unwrap();
        assert!(
            s.text.starts_with("promfedvar0000 + promfedvarx0000{"),
            "{}",
            s.text
        );
        let s = substitute("73100000000 + $a").unwrap();
        assert_eq!(s.text.matches("73100000000").count(), 1, "{}", s.text);
    }

    #[test]
    fn flips_a_wrong_guess() {
        // `$x` after an operator is guessed a number; `sort` needs a vector.
        let s = substitute("sort(-$x)").unwrap();
        assert!(s.text.contains("promfedvar"), "{}", s.text);
    }

    #[test]
    fn duration_placeholders_are_canonical() {
        for d in [1_000, 1_001, 11_000, 99_999] {
            assert!(
                duration_round_trips(&duration_text(d)),
                "{}",
                duration_text(d)
            );
        }
    }

    #[test]
    fn unparsable_reports_with_original_names() {
        let e = substitute("sum(rate(x[$__interval])").unwrap_err();
        assert!(matches!(e, VarError::Parse(_)), "{e}");
    }

    #[test]
    fn lost_placeholder_is_an_error() {
        let s = substitute("x > $thr").unwrap();
        assert!(matches!(s.restore("x > 1"), Err(VarError::Lost(_))));
    }
}
