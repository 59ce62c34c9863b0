//! A recursive-descent fast path in front of promql-parser.
//!
//! Why: promql-parser's table-driven LR parser (lrpar) is most of the cost of a rule file's
//! rewrite (about 10 µs per real-world expression, half the admission decision). Rule files
//! use a small part of PromQL, so this parser handles that part directly and builds the very
//! same `promql_parser` syntax tree, through the crate's public types and the same checks its
//! grammar actions run (`check_ast`, arity and argument types, set-operator cardinality).
//!
//! Contract: [`parse`] returns `Some(tree)` only when promql-parser would return `Ok(tree)`
//! for the same text, equal in every field. Anything it is not sure of (a keyword used as a
//! metric name, `@ start()`, `fill`, quoted label names, a raw newline in a string, any error
//! at all) makes it return `None`, and the caller runs promql-parser, which then decides,
//! errors included. Tests hold it to this contract on every corpus the project has and on
//! generated expressions ([`super::check_fast_parser`]).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use promql_parser::label::{Labels, Matcher, Matchers};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_DIV, T_EQL, T_EQL_REGEX, T_EQLC,
    T_GROUP, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD, T_MUL,
    T_NEQ, T_NEQ_REGEX, T_POW, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUB, T_SUM, T_TOPK, TokenId,
    TokenType,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinModifier, BinaryExpr, Call, Expr, Function, FunctionArgs,
    LabelModifier, MatrixSelector, Offset, ParenExpr, SubqueryExpr, VectorMatchCardinality,
    VectorSelector,
};
use promql_parser::util::{parse_str_radix, unquote_string};

/// Parses `text` (already through [`super::lex`]'s pre-pass) the way promql-parser would,
/// or returns `None` to hand it to promql-parser.
pub(super) fn parse(text: &str) -> Option<Expr> {
    let mut p = Parser {
        b: text.as_bytes(),
        s: text,
        i: 0,
        depth: 0,
    };
    let e = p.expr(0)?;
    p.skip()?;
    (p.i == p.b.len()).then_some(e)
}

/// Functions the fast path knows, each with an argument list promql-parser accepts. Their
/// `Function` values are taken from promql-parser itself (by parsing these probes once), so
/// names, argument types and arity rules are exactly the crate's. A function missing here
/// simply goes to promql-parser. `exp`, `ln`, `log2` and `log10` are left out on purpose:
/// promql-parser skips their type checks for some constant arguments.
const PROBES: &[(&str, &str)] = &[
    ("abs", "x"),
    ("absent", "x"),
    ("absent_over_time", "x[1m]"),
    ("acos", "x"),
    ("acosh", "x"),
    ("asin", "x"),
    ("asinh", "x"),
    ("atan", "x"),
    ("atanh", "x"),
    ("avg_over_time", "x[1m]"),
    ("ceil", "x"),
    ("changes", "x[1m]"),
    ("clamp", "x, 1, 2"),
    ("clamp_max", "x, 1"),
    ("clamp_min", "x, 1"),
    ("cos", "x"),
    ("cosh", "x"),
    ("count_over_time", "x[1m]"),
    ("day_of_month", "x"),
    ("day_of_week", "x"),
    ("day_of_year", "x"),
    ("days_in_month", "x"),
    ("deg", "x"),
    ("delta", "x[1m]"),
    ("deriv", "x[1m]"),
    ("floor", "x"),
    ("histogram_count", "x"),
    ("histogram_fraction", "0, 1, x"),
    ("histogram_quantile", "0.9, x"),
    ("histogram_sum", "x"),
    ("holt_winters", "x[1m], 0.5, 0.5"),
    ("hour", "x"),
    ("idelta", "x[1m]"),
    ("increase", "x[1m]"),
    ("irate", "x[1m]"),
    ("label_join", "x, \"a\", \",\", \"b\""),
    ("label_replace", "x, \"a\", \"$1\", \"b\", \"(.*)\""),
    ("last_over_time", "x[1m]"),
    ("max_over_time", "x[1m]"),
    ("min_over_time", "x[1m]"),
    ("minute", "x"),
    ("month", "x"),
    ("pi", ""),
    ("predict_linear", "x[1m], 60"),
    ("present_over_time", "x[1m]"),
    ("quantile_over_time", "0.5, x[1m]"),
    ("rad", "x"),
    ("rate", "x[1m]"),
    ("resets", "x[1m]"),
    ("round", "x, 1"),
    ("scalar", "x"),
    ("sgn", "x"),
    ("sin", "x"),
    ("sinh", "x"),
    ("sort", "x"),
    ("sort_desc", "x"),
    ("sqrt", "x"),
    ("stddev_over_time", "x[1m]"),
    ("stdvar_over_time", "x[1m]"),
    ("sum_over_time", "x[1m]"),
    ("tan", "x"),
    ("tanh", "x"),
    ("time", ""),
    ("timestamp", "x"),
    ("vector", "1"),
    ("year", "x"),
];

/// The known functions, as promql-parser defines them (see [`PROBES`]).
fn functions() -> &'static HashMap<&'static str, Function> {
    static TABLE: OnceLock<HashMap<&'static str, Function>> = OnceLock::new();
    TABLE.get_or_init(|| {
        PROBES
            .iter()
            .filter_map(|(name, args)| {
                match promql_parser::parser::parse(&format!("{name}({args})")) {
                    Ok(Expr::Call(c)) if c.func.name == *name => Some((*name, c.func)),
                    _ => None,
                }
            })
            .collect()
    })
}

/// Every word the lexer turns into something other than an identifier (compared without
/// regard to case, as the lexer does).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "smoothed",
    "anchored",
    "fill",
    "fill_left",
    "fill_right",
    "start",
    "end",
    "inf",
    "nan",
];

/// Keywords the grammar does not accept as a grouping label.
const NOT_LABELS: &[&str] = &["without", "smoothed", "anchored", "inf", "nan"];

/// Aggregators the fast path builds (`limitk`/`limit_ratio` are left to promql-parser).
const AGGREGATORS: &[(&str, TokenId)] = &[
    ("sum", T_SUM),
    ("avg", T_AVG),
    ("count", T_COUNT),
    ("min", T_MIN),
    ("max", T_MAX),
    ("group", T_GROUP),
    ("stddev", T_STDDEV),
    ("stdvar", T_STDVAR),
    ("topk", T_TOPK),
    ("bottomk", T_BOTTOMK),
    ("count_values", T_COUNT_VALUES),
    ("quantile", T_QUANTILE),
];

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Binding strength of the binary operators, weakest first; `^` is right-associative.
const POW_PREC: u8 = 6;

/// How deeply the fast path nests before it leaves an expression to promql-parser (whose LR
/// parser does not recurse): keeps its stack use small on any thread. Real rules nest far less.
const MAX_NESTING: usize = 48;

struct Parser<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
    /// Open [`Parser::expr`] calls.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips blanks and `#` comments (outside braces and brackets).
    fn skip(&mut self) -> Option<()> {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'#' {
                self.i = super::comment_end(self.b, self.i);
            } else {
                break;
            }
        }
        Some(())
    }

    /// Skips blanks only: inside braces and brackets a comment goes to promql-parser.
    fn skip_blanks(&mut self) -> Option<()> {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'#' {
                return None;
            } else {
                break;
            }
        }
        Some(())
    }

    /// The word (identifier or keyword) at the cursor, without consuming it.
    fn word_at(&self) -> Option<&'a str> {
        let start = self.i;
        if !self.peek().is_some_and(is_word_start) {
            return None;
        }
        let mut end = start + 1;
        while end < self.b.len() && is_word_byte(self.b[end]) {
            end += 1;
        }
        Some(&self.s[start..end])
    }

    /// Consumes the word at the cursor if it is `kw` (any case).
    fn keyword(&mut self, kw: &str) -> bool {
        match self.word_at() {
            Some(w) if w.eq_ignore_ascii_case(kw) => {
                self.i += w.len();
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// Operator-precedence parsing of binary expressions binding at least `min_prec`.
    fn expr(&mut self, min_prec: u8) -> Option<Expr> {
        if self.depth >= MAX_NESTING {
            return None;
        }
        self.depth += 1;
        let e = self.binary(min_prec);
        self.depth -= 1;
        e
    }

    fn binary(&mut self, min_prec: u8) -> Option<Expr> {
        let mut lhs = self.unary()?;
        loop {
            let save = self.i;
            self.skip()?;
            let Some((op, prec, len)) = self.binary_op() else {
                self.i = save;
                return Some(lhs);
            };
            if prec < min_prec {
                self.i = save;
                return Some(lhs);
            }
            self.i += len;
            let modifier = self.bin_modifier()?;
            let rhs = self.expr(if op == T_POW { prec } else { prec + 1 })?;
            lhs = check_binary(BinaryExpr {
                op: TokenType::new(op),
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                modifier,
            })?;
        }
    }

    /// The binary operator at the cursor: (token, precedence, length).
    fn binary_op(&self) -> Option<(TokenId, u8, usize)> {
        let next = self.b.get(self.i + 1).copied();
        Some(match self.peek()? {
            b'+' => (T_ADD, 4, 1),
            b'-' => (T_SUB, 4, 1),
            b'*' => (T_MUL, 5, 1),
            b'/' => (T_DIV, 5, 1),
            b'%' => (T_MOD, 5, 1),
            b'^' => (T_POW, POW_PREC, 1),
            b'=' if next == Some(b'=') => (T_EQLC, 3, 2),
            b'!' if next == Some(b'=') => (T_NEQ, 3, 2),
            b'<' if next == Some(b'=') => (T_LTE, 3, 2),
            b'<' => (T_LSS, 3, 1),
            b'>' if next == Some(b'=') => (T_GTE, 3, 2),
            b'>' => (T_GTR, 3, 1),
            _ => {
                let w = self.word_at()?;
                let (op, prec) = [
                    ("or", T_LOR, 1),
                    ("and", T_LAND, 2),
                    ("unless", T_LUNLESS, 2),
                    ("atan2", T_ATAN2, 5),
                ]
                .into_iter()
                .find(|(k, ..)| k.eq_ignore_ascii_case(w))
                .map(|(_, op, prec)| (op, prec))?;
                (op, prec, w.len())
            }
        })
    }

    /// `bool`, `on`/`ignoring (...)`, `group_left`/`group_right [(...)]`, in grammar order.
    fn bin_modifier(&mut self) -> Option<Option<BinModifier>> {
        let mut m: Option<BinModifier> = None;
        self.skip()?;
        if self.keyword("bool") {
            m = Some(BinModifier::default().with_return_bool(true));
            self.skip()?;
        }
        let matching = if self.keyword("on") {
            Some(LabelModifier::Include(self.grouping()?))
        } else if self.keyword("ignoring") {
            Some(LabelModifier::Exclude(self.grouping()?))
        } else {
            None
        };
        if matching.is_some() {
            m = Some(m.unwrap_or_default().with_matching(matching));
            self.skip()?;
            let card = if self.keyword("group_left") {
                Some(VectorMatchCardinality::ManyToOne as fn(Labels) -> _)
            } else if self.keyword("group_right") {
                Some(VectorMatchCardinality::OneToMany as fn(Labels) -> _)
            } else {
                None
            };
            if let Some(card) = card {
                self.skip()?;
                let labels = if self.peek() == Some(b'(') {
                    self.grouping()?
                } else {
                    Labels::new(vec![])
                };
                m = Some(m.unwrap_or_default().with_card(card(labels)));
            }
        }
        self.skip()?;
        match self.word_at() {
            Some(w)
                if [
                    "group_left",
                    "group_right",
                    "fill",
                    "fill_left",
                    "fill_right",
                ]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(w)) =>
            {
                None
            }
            _ => Some(m),
        }
    }

    /// `-x`/`+x`: binds looser than `^` and tighter than `*` (the grammar's `%prec MUL`).
    fn unary(&mut self) -> Option<Expr> {
        self.skip()?;
        match self.peek()? {
            b'-' => {
                self.i += 1;
                let e = self.expr(POW_PREC)?;
                match e.value_type() {
                    ValueType::Scalar | ValueType::Vector => Some(-e),
                    _ => None,
                }
            }
            b'+' => {
                self.i += 1;
                self.expr(POW_PREC)
            }
            _ => self.postfix(),
        }
    }

    /// A primary expression with its ranges, subqueries and offsets.
    fn postfix(&mut self) -> Option<Expr> {
        let mut e = self.primary()?;
        loop {
            let save = self.i;
            self.skip()?;
            if self.peek() == Some(b'[') {
                self.i += 1;
                e = self.range_or_subquery(e)?;
            } else if self.peek() == Some(b'@') {
                // `@ <number>` (`start()`/`end()` go to promql-parser).
                self.i += 1;
                let neg = self.sign()?;
                let n = self.number()?;
                let at = AtModifier::try_from(if neg { -n } else { n }).ok()?;
                e = with_modifier(e, Modifier::At(at))?;
            } else if self.keyword("offset") {
                let neg = self.sign()?;
                let d = self.duration()?;
                let off = if neg { Offset::Neg(d) } else { Offset::Pos(d) };
                e = with_modifier(e, Modifier::Offset(off))?;
            } else {
                self.i = save;
                return Some(e);
            }
        }
    }

    /// An optional `+` or `-` (true for `-`) with the blanks around it.
    fn sign(&mut self) -> Option<bool> {
        self.skip()?;
        let neg = match self.peek()? {
            b'-' => true,
            b'+' => false,
            _ => return Some(false),
        };
        self.i += 1;
        self.skip()?;
        Some(neg)
    }

    /// After `[`: `d]` (a range) or `d:[d]]` (a subquery).
    fn range_or_subquery(&mut self, e: Expr) -> Option<Expr> {
        self.skip_blanks()?;
        let range = self.duration()?;
        self.skip_blanks()?;
        match self.peek()? {
            b']' => {
                self.i += 1;
                match e {
                    Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => {
                        Some(Expr::MatrixSelector(MatrixSelector { vs, range }))
                    }
                    _ => None,
                }
            }
            b':' => {
                self.i += 1;
                self.skip_blanks()?;
                let step = if self.peek()?.is_ascii_digit() {
                    Some(self.duration()?)
                } else {
                    None
                };
                self.skip_blanks()?;
                self.expect(b']')?;
                (e.value_type() == ValueType::Vector).then(|| {
                    Expr::Subquery(SubqueryExpr {
                        expr: Box::new(e),
                        offset: None,
                        at: None,
                        range,
                        step,
                    })
                })
            }
            _ => None,
        }
    }

    /// A duration such as `5m` or `1h30m` (a unit is required, as Prometheus 2.42 requires),
    /// valued as promql-parser's `parse_duration` values it: units in the order
    /// `y w d h m s ms`, each at most once, each count a `u32`, the sum above zero. (Its
    /// regex is a tenth of a rule's parse; the differential tests hold the two together.)
    fn duration(&mut self) -> Option<Duration> {
        const UNITS: [(&[u8], u64); 7] = [
            (b"y", 365 * 24 * 3600 * 1000),
            (b"w", 7 * 24 * 3600 * 1000),
            (b"d", 24 * 3600 * 1000),
            (b"h", 3600 * 1000),
            (b"m", 60 * 1000),
            (b"s", 1000),
            (b"ms", 1),
        ];
        let mut next_unit = 0;
        let mut total = Duration::ZERO;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let count: u32 = self.s[start..self.i].parse().ok()?;
            let rest = &self.b[self.i..];
            // `ms` before `m`: the longest unit that matches here.
            let (u, millis) = UNITS
                .iter()
                .enumerate()
                .filter(|(_, (name, _))| rest.starts_with(name))
                .max_by_key(|(_, (name, _))| name.len())
                .map(|(u, (name, millis))| {
                    self.i += name.len();
                    (u, *millis)
                })?;
            if u < next_unit {
                return None;
            }
            next_unit = u + 1;
            let part = Duration::from_millis(millis).checked_mul(count)?;
            total = total.checked_add(part)?;
        }
        if total.is_zero() || self.peek().is_some_and(|c| is_label_byte(c) || c == b'.') {
            return None;
        }
        Some(total)
    }

    fn primary(&mut self) -> Option<Expr> {
        self.skip()?;
        let c = self.peek()?;
        match c {
            b'(' => {
                self.i += 1;
                let e = self.expr(0)?;
                self.skip()?;
                self.expect(b')')?;
                Some(Expr::Paren(ParenExpr { expr: Box::new(e) }))
            }
            b'{' => self.selector(None),
            b'"' | b'\'' => Some(Expr::from(self.string()?)),
            b'0'..=b'9' | b'.' => self.number(),
            c if is_word_start(c) => {
                let w = self.word_at()?;
                if let Some(&(_, op)) = AGGREGATORS.iter().find(|(k, _)| *k == w) {
                    self.i += w.len();
                    return self.aggregate(op);
                }
                if w.eq_ignore_ascii_case("inf") || w.eq_ignore_ascii_case("nan") {
                    self.i += w.len();
                    return parse_str_radix(w).ok().map(Expr::from);
                }
                if is_keyword(w) {
                    return None;
                }
                self.i += w.len();
                self.skip()?;
                match self.peek() {
                    Some(b'(') => self.call(w),
                    Some(b'{') => self.selector(Some(w)),
                    _ => Some(Expr::VectorSelector(VectorSelector::new(
                        Some(w.to_owned()),
                        Matchers::empty(),
                    ))),
                }
            }
            _ => None,
        }
    }

    /// A number as the lexer scans it, valued by promql-parser's own `parse_str_radix`.
    fn number(&mut self) -> Option<Expr> {
        let start = self.i;
        if self.b[self.i..].starts_with(b"0x") || self.b[self.i..].starts_with(b"0X") {
            self.i += 2;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.i += 1;
            }
            if self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
            {
                return None;
            }
            return parse_str_radix(&self.s[start..self.i]).ok().map(Expr::from);
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i > s
        };
        let int = digits(self);
        if self.peek() == Some(b'x') || self.peek() == Some(b'X') {
            return None;
        }
        let mut frac = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            frac = digits(self);
        }
        if !int && !frac {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            return None;
        }
        parse_str_radix(&self.s[start..self.i]).ok().map(Expr::from)
    }

    /// A `"..."` or `'...'` literal with common escapes, unquoted as promql-parser does.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        let q = self.peek()?;
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => {
                    // The lexer's escapes; `unquote_string` then gives the value.
                    let e = *self.b.get(self.i + 1)?;
                    if e != q && !b"abfnrtv\\01234567xuU".contains(&e) {
                        return None;
                    }
                    self.i += 2;
                }
                b'\n' => return None,
                c if c == q => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        unquote_string(&self.s[start..self.i]).ok()
    }

    /// `{name op "value", ...}` after an optional metric name.
    fn selector(&mut self, name: Option<&str>) -> Option<Expr> {
        self.expect(b'{')?;
        let mut matchers = Vec::new();
        loop {
            self.skip_blanks()?;
            if self.peek()? == b'}' {
                self.i += 1;
                break;
            }
            let start = self.i;
            if !self
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            {
                return None;
            }
            while self.peek().is_some_and(is_label_byte) {
                self.i += 1;
            }
            let label = &self.s[start..self.i];
            // `or` is an operator inside braces; `__name__` must not repeat a metric name.
            if label.eq_ignore_ascii_case("or") || (label == "__name__" && name.is_some()) {
                return None;
            }
            self.skip_blanks()?;
            let next = self.b.get(self.i + 1).copied();
            let (op, len) = match (self.peek()?, next) {
                (b'=', Some(b'~')) => (T_EQL_REGEX, 2),
                (b'!', Some(b'~')) => (T_NEQ_REGEX, 2),
                (b'!', Some(b'=')) => (T_NEQ, 2),
                (b'=', _) => (T_EQL, 1),
                _ => return None,
            };
            self.i += len;
            self.skip_blanks()?;
            if !matches!(self.peek()?, b'"' | b'\'') {
                return None;
            }
            let value = self.string()?;
            matchers.push(Matcher::new_matcher(op, label.to_owned(), value).ok()?);
            self.skip_blanks()?;
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.skip_blanks()?;
                    if self.peek()? == b',' {
                        return None;
                    }
                }
                b'}' => {}
                _ => return None,
            }
        }
        let matchers = Matchers::new(matchers);
        if name.is_none() && matchers.is_empty_matchers() {
            return None;
        }
        Some(Expr::VectorSelector(VectorSelector::new(
            name.map(str::to_owned),
            matchers,
        )))
    }

    /// `(label, ...)` of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    fn grouping(&mut self) -> Option<Labels> {
        self.skip()?;
        self.expect(b'(')?;
        let mut labels = Vec::new();
        loop {
            self.skip()?;
            if self.peek()? == b')' {
                self.i += 1;
                break;
            }
            let w = self.word_at()?;
            if w.contains(':') || NOT_LABELS.iter().any(|k| k.eq_ignore_ascii_case(w)) {
                return None;
            }
            labels.push(w);
            self.i += w.len();
            self.skip()?;
            match self.peek()? {
                b',' => self.i += 1,
                b')' => {}
                _ => return None,
            }
        }
        Some(Labels::new(labels))
    }

    /// `(expr, ...)`: the arguments of a call or an aggregation.
    #[allow(clippy::vec_box)] // the shape of `FunctionArgs::args`
    fn args(&mut self) -> Option<Vec<Box<Expr>>> {
        self.skip()?;
        self.expect(b'(')?;
        let mut args = Vec::new();
        self.skip()?;
        if self.peek()? == b')' {
            self.i += 1;
            return Some(args);
        }
        loop {
            args.push(Box::new(self.expr(0)?));
            self.skip()?;
            match self.peek()? {
                b',' => self.i += 1,
                b')' => {
                    self.i += 1;
                    return Some(args);
                }
                _ => return None,
            }
        }
    }

    /// `sum by (l) (x)`, `sum (x) by (l)`, `topk(3, x)`, ...
    fn aggregate(&mut self, op: TokenId) -> Option<Expr> {
        self.skip()?;
        let mut modifier = self.aggregate_modifier()?;
        self.skip()?;
        if self.peek()? != b'(' {
            return None;
        }
        let mut args = self.args()?;
        if modifier.is_none() {
            let save = self.i;
            self.skip()?;
            modifier = self.aggregate_modifier()?;
            if modifier.is_none() {
                self.i = save;
            }
        }
        let op = TokenType::new(op);
        let with_param = op.is_aggregator_with_param();
        if args.len() != if with_param { 2 } else { 1 } {
            return None;
        }
        let expr = args.pop()?;
        let param = args.pop();
        if expr.value_type() != ValueType::Vector {
            return None;
        }
        let param_type = param.as_ref().map(|p| p.value_type());
        match op.id() {
            T_TOPK | T_BOTTOMK | T_QUANTILE if param_type != Some(ValueType::Scalar) => {
                return None;
            }
            T_COUNT_VALUES if param_type != Some(ValueType::String) => return None,
            _ => {}
        }
        Some(Expr::Aggregate(AggregateExpr {
            op,
            expr,
            param,
            modifier,
        }))
    }

    fn aggregate_modifier(&mut self) -> Option<Option<LabelModifier>> {
        Some(if self.keyword("by") {
            Some(LabelModifier::Include(self.grouping()?))
        } else if self.keyword("without") {
            Some(LabelModifier::Exclude(self.grouping()?))
        } else {
            None
        })
    }

    /// `name(args)` for a function in [`PROBES`], with promql-parser's arity and type checks.
    fn call(&mut self, name: &str) -> Option<Expr> {
        let func = functions().get(name)?.clone();
        let args = self.args()?;
        let (n, actual) = (func.arg_types.len(), args.len());
        let arity_ok = match func.variadic {
            0 => n == actual,
            v => {
                let min = n.saturating_sub(1);
                min <= actual && (v < 0 || actual <= min + usize::try_from(v).ok()?)
            }
        };
        if !arity_ok {
            return None;
        }
        for (i, a) in args.iter().enumerate() {
            let want = func.arg_types.get(i).or(func.arg_types.last())?;
            if a.value_type() != *want {
                return None;
            }
        }
        Some(Expr::Call(Call {
            func,
            args: FunctionArgs { args },
        }))
    }
}

/// An `offset` or `@` after an expression.
enum Modifier {
    Offset(Offset),
    At(AtModifier),
}

/// promql-parser's `offset_expr` and `at_expr`: each modifier at most once, on a selector or a
/// subquery.
fn with_modifier(mut e: Expr, m: Modifier) -> Option<Expr> {
    let (offset, at) = match &mut e {
        Expr::VectorSelector(vs) => (&mut vs.offset, &mut vs.at),
        Expr::MatrixSelector(ms) => (&mut ms.vs.offset, &mut ms.vs.at),
        Expr::Subquery(s) => (&mut s.offset, &mut s.at),
        _ => return None,
    };
    match m {
        Modifier::Offset(o) if offset.is_none() => *offset = Some(o),
        Modifier::At(a) if at.is_none() => *at = Some(a),
        _ => return None,
    }
    Some(e)
}

/// promql-parser's `check_ast_for_binary_expr`, declining where it would fail.
fn check_binary(mut ex: BinaryExpr) -> Option<Expr> {
    let (lt, rt) = (ex.lhs.value_type(), ex.rhs.value_type());
    let scalar_or_vector = |t| matches!(t, ValueType::Scalar | ValueType::Vector);
    if !scalar_or_vector(lt) || !scalar_or_vector(rt) {
        return None;
    }
    if ex.return_bool() && !ex.op.is_comparison_operator() {
        return None;
    }
    if ex.op.is_comparison_operator()
        && lt == ValueType::Scalar
        && rt == ValueType::Scalar
        && !ex.return_bool()
    {
        return None;
    }
    if ex.is_matching_on()
        && ex.is_labels_joint()
        && ex.intersect_labels().is_some_and(|l| !l.is_empty())
    {
        return None;
    }
    if ex.op.is_set_operator() {
        if lt == ValueType::Scalar || rt == ValueType::Scalar {
            return None;
        }
        match &mut ex.modifier {
            Some(m) => match m.card {
                VectorMatchCardinality::OneToMany(_) | VectorMatchCardinality::ManyToOne(_) => {
                    return None;
                }
                VectorMatchCardinality::OneToOne => m.card = VectorMatchCardinality::ManyToMany,
                VectorMatchCardinality::ManyToMany => {}
            },
            None => {
                ex.modifier =
                    Some(BinModifier::default().with_card(VectorMatchCardinality::ManyToMany));
            }
        }
    }
    if (lt != ValueType::Vector || rt != ValueType::Vector) && ex.is_matching_labels_not_empty() {
        return None;
    }
    Some(Expr::Binary(ex))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path and promql-parser agree, and the fast path took the expression.
    #[track_caller]
    fn fast(src: &str) {
        super::super::register_prometheus_2_42_functions();
        let want = promql_parser::parser::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let got = parse(src).unwrap_or_else(|| panic!("fast path declined {src}"));
        assert_eq!(got, want, "{src}");
    }

    /// The fast path declines; promql-parser decides.
    #[track_caller]
    fn declined(src: &str) {
        super::super::register_prometheus_2_42_functions();
        assert!(parse(src).is_none(), "fast path took {src}");
    }

    #[test]
    fn every_probe_resolves() {
        super::super::register_prometheus_2_42_functions();
        let missing: Vec<_> = PROBES
            .iter()
            .filter(|(n, _)| !functions().contains_key(n))
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
    }

    #[test]
    fn same_trees_as_promql_parser() {
        for src in [
            "up",
            "up{job=\"a\", instance!='b',}",
            "{job=~\"a.*\"}",
            "sum by (job, le,) (rate(x_bucket{a=\"b\"}[5m]))",
            "sum(rate(x[5m])) without (instance)",
            "topk(3, x)",
            "quantile(0.9, x)",
            "count_values(\"v\", x)",
            "histogram_quantile(0.99, sum by (le) (rate(x[5m])))",
            "a + b * c ^ d ^ e - f / g % h",
            "a or b and c unless d",
            "a > bool 1",
            "1 == bool 2",
            "a * on (job) group_left (node) b",
            "a * on (job) group_left b",
            "a / ignoring (instance) group_right () b",
            "a and on () b",
            "-a ^ 2",
            "-1",
            "- -1.5e3",
            "+x",
            "2 ^ -1 ^ 2",
            "a * -b + c",
            "x offset 5m",
            "x offset -1h30m",
            "rate(x[5m] offset 1w)",
            "max_over_time(rate(x[1m])[10m:1m])",
            "max_over_time(rate(x[1m])[10m:])",
            "max_over_time(rate(x[1m])[10m:] offset 5m)",
            "label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\")",
            "vector(1)",
            "time() - x",
            "day_of_week()",
            "round(x)",
            "(x) # comment\n+ y",
            "x:y:z",
            "x atan2 y",
            "sum by (group, on, bool) (x)",
            "x{a=\"\\\"q\\\" \\\\ \\n\"}",
            "5.",
            ".5",
            "clamp(x, 0, 1)",
            "absent(x{a=\"b\"})",
            "holt_winters(x[10m], 0.5, 0.5)",
            "x[5m:1m]",
            "sum by(job)(x)",
            "x{order=\"a\"}",
            "x @ 1704074400",
            "x[5m] @ -1.5",
            "x offset 10m @ + 100",
            "sum(x)[10m:1m] @ 100",
            "0x1F + 010 + 0X1f",
            "x > bool -Inf",
            "clamp_max(x, +inf)",
            "{__name__=~\"x.*\", a=\"b\"}",
            "x{a=\"\\x41\\u00e9\\101\"}",
            "infinity + nano",
            "rate(x[1y2w3d4h5m6s7ms])",
            "x offset 4294967295ms",
            "rate(x[90s])",
            "rate(x[1h1m])",
        ] {
            fast(src);
        }
        let nested = format!(
            "{}x{}",
            "(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        fast(&nested);
        declined(&format!("({nested})"));
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for src in [
            "x @ start()",
            "x @ 5m",
            "x @ Inf",
            "x @ 1 @ 2",
            "0x1F.5",
            "sum",
            "x{\"a\"=\"b\"}",
            "x{a=\"a\nb\"}",
            "x{__name__=\"y\"}",
            "x{a='\\\"'}",
            "exp(1)",
            "limitk(1, x)",
            "x * fill(0) y",
            "x[5m] offset 1m [5m]",
            "sum(x) offset 5m",
            "rate(x)",
            "x + \"a\"",
            "1 > 2",
            "x and 1",
            "x * on (a) group_left (a) y",
            "{}",
            "{a=\"\"}",
            "unknown_fn(x)",
            "f(x,)",
            "x y",
            "",
            "SUM(x)",
            "x offset 5",
            "rate(x[1m1h])",
            "rate(x[1m1m])",
            "rate(x[0s])",
            "rate(x[1d1y])",
            "rate(x[5x])",
            "rate(x[4294967296s])",
        ] {
            declined(src);
        }
    }
}
