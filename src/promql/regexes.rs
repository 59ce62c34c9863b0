//! Regex matchers without promql-parser's regex compilation.
//!
//! promql-parser 0.11 builds a full `regex::Regex` for every `=~`/`!~` matcher while parsing
//! (about 70 µs each, mostly DFA determinisation), yet the rewriter only ever reads the
//! matcher's text. So [`super::lex::prepare_marked`] hands the parser each regex matcher as
//! an equality matcher (`=~` -> `=`, `!~` -> `!=`) whose literal starts with a marker naming
//! its index, and [`restore`] turns the parsed matchers back into regex matchers with the
//! parser's own unquoted value. The real regex is then checked the way `regex::Regex::new`
//! checks it (syntax, then the Thompson NFA under the same size limit), without building the
//! search engines.
//!
//! Every doubt sends the caller back to the plain parse (the old path, with promql-parser's
//! exact errors): a marker seen twice or not at all (user text that looks like a marker), a
//! regex our check refuses (promql-parser may still accept it by escaping `{`), a selector
//! without metric name whose matchers might all match the empty string (the parser's check
//! ran on the equality stand-ins), or any parse error.
//!
//! The `regex::Regex` inside a restored [`MatchOp::Re`]/[`MatchOp::NotRe`] is a shared
//! stand-in, not the matcher's regex: code in this module tree reads `Matcher::value`, never
//! `Matcher::is_match` (trees never leave `crate::promql`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};
use regex_automata::nfa::thompson::{self, NFA, pikevm::PikeVM};
use regex_automata::util::syntax;

/// The marker as the parser returns it, unquoted: `\0promfed:<index>\0` + original value.
const MARK: &str = "\0promfed:";
/// The marker as written into a quoted literal (valid in `"` and `'` strings).
const MARK_ESCAPED: &str = "\\x00promfed:";
const MARK_END: char = '\0';
const MARK_END_ESCAPED: &str = "\\x00";

/// `regex::Regex`'s default NFA size limit (`RegexBuilder::size_limit`): regexes above it
/// are refused by `Regex::new`, so by promql-parser.
const NFA_SIZE_LIMIT: usize = 10 * (1 << 20);

/// Writes `literal` (a complete `"..."` or `'...'` string token) with the marker for regex
/// matcher number `index` put in front of its content.
pub(crate) fn push_marked_literal(out: &mut String, literal: &str, index: usize) {
    use std::fmt::Write as _;
    let (quote, rest) = literal.split_at(1);
    out.push_str(quote);
    out.push_str(MARK_ESCAPED);
    let _ = write!(out, "{index}{MARK_END_ESCAPED}");
    out.push_str(rest);
}

/// Turns the marked equality matchers of `expr` back into the regex matchers they stand
/// for (`negated[i]`: matcher `i` was `!~`) and checks each regex. `false` when the tree
/// cannot be trusted and the caller must parse the original text instead (see module docs).
pub(crate) fn restore(expr: &mut Expr, negated: &[bool]) -> bool {
    let Some(stand_in) = stand_in_regex() else {
        return false;
    };
    let mut seen = vec![false; negated.len()];
    let ok = for_each_selector(expr, &mut |vs| {
        restore_selector(vs, negated, &mut seen, stand_in)
    });
    ok && seen.iter().all(|s| *s)
}

fn restore_selector(
    vs: &mut VectorSelector,
    negated: &[bool],
    seen: &mut [bool],
    stand_in: &regex::Regex,
) -> bool {
    // Per matcher: whether it matches the empty string, when it is one we restored (the
    // stand-in regex cannot tell).
    let mut restored_empty = Vec::new();
    let matchers = vs
        .matchers
        .matchers
        .iter_mut()
        .chain(vs.matchers.or_matchers.iter_mut().flatten());
    for m in matchers {
        match restore_matcher(m, negated, seen, stand_in) {
            Ok(empty) => restored_empty.push(empty),
            Err(()) => return false,
        }
    }
    // The parser refuses a selector without metric name whose matchers all match the empty
    // string; it judged our equality stand-ins, so judge again with the real regexes.
    if vs.name.is_none() && restored_empty.iter().any(Option::is_some) {
        let all_empty = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .zip(&restored_empty)
            .all(|(m, empty)| empty.unwrap_or_else(|| m.is_match("")));
        if all_empty {
            return false;
        }
    }
    true
}

/// Restores `m` if it is marked: `Ok(Some(whether it matches the empty string))`;
/// `Ok(None)` when it is not marked; `Err` when the tree cannot be trusted.
fn restore_matcher(
    m: &mut Matcher,
    negated: &[bool],
    seen: &mut [bool],
    stand_in: &regex::Regex,
) -> Result<Option<bool>, ()> {
    let Some(rest) = m.value.strip_prefix(MARK) else {
        return Ok(None);
    };
    let (index, value) = rest.split_once(MARK_END).ok_or(())?;
    let index = index.parse::<usize>().map_err(|_| ())?;
    let negate = match (negated.get(index), &m.op, seen.get(index)) {
        (Some(false), MatchOp::Equal, Some(false)) => false,
        (Some(true), MatchOp::NotEqual, Some(false)) => true,
        _ => return Err(()),
    };
    let regex_matches_empty = check(value).ok_or(())?;
    seen[index] = true;
    m.value = value.to_owned();
    m.op = if negate {
        MatchOp::NotRe(stand_in.clone())
    } else {
        MatchOp::Re(stand_in.clone())
    };
    Ok(Some(regex_matches_empty != negate))
}

/// Regexes found valid, with whether they match the empty string, so that a rule file
/// sent again (kapp sends each UPDATE twice) or a regex repeated across rules is checked
/// once. Emptied when the regexes it holds exceed [`CACHE_BYTES`].
static CHECKED: Mutex<Option<Checked>> = Mutex::new(None);
const CACHE_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Checked {
    matches_empty: HashMap<String, bool>,
    bytes: usize,
}

/// `Some(matches the empty string)` when `regex::Regex::new` accepts the anchored regex
/// (see [`compile`]), `None` otherwise.
fn check(value: &str) -> Option<bool> {
    if let Ok(guard) = CHECKED.lock()
        && let Some(&empty) = guard.as_ref().and_then(|c| c.matches_empty.get(value))
    {
        return Some(empty);
    }
    let vm = PikeVM::new_from_nfa(compile(value)?).ok()?;
    let empty = vm.is_match(&mut vm.create_cache(), "");
    if let Ok(mut guard) = CHECKED.lock() {
        let checked = guard.get_or_insert_with(Checked::default);
        if checked.bytes + value.len() > CACHE_BYTES {
            *checked = Checked::default();
        }
        checked.bytes += value.len();
        checked.matches_empty.insert(value.to_owned(), empty);
    }
    Some(empty)
}

/// Compiles the fully anchored regex as promql-parser does (`^(?:value)$`) to a Thompson NFA
/// with `regex::Regex::new`'s syntax options and size limit. `None` when `Regex::new` would
/// fail on it (the caller then lets promql-parser decide, which also retries with `{`
/// escaped).
fn compile(value: &str) -> Option<NFA> {
    thread_local! {
        // A compiler allocates sizeable scratch tables; reuse them.
        static COMPILER: thompson::Compiler = {
            let mut c = thompson::Compiler::new();
            c.syntax(syntax::Config::new().utf8(true)).configure(
                thompson::Config::new()
                    .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                    .shrink(false),
            );
            c
        };
    }
    let anchored = format!("^(?:{})$", expand_go_quoting(value));
    COMPILER.with(|c| c.build(&anchored).ok())
}

/// Go's RE2 syntax (what Prometheus compiles) has `\\Q...\\E` literal quoting, which the
/// `regex` crate lacks: the quoted text is escaped instead, for checking only (the matcher
/// keeps the user's text). A `\\Q` without `\\E` quotes to the end, as in Go.
fn expand_go_quoting(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains("\\Q") {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    let mut rest = value;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.chars().next() {
            Some('Q') => {
                let quoted = &after[1..];
                let (lit, tail) = quoted.split_once("\\E").unwrap_or((quoted, ""));
                out.push_str(&regex::escape(lit));
                rest = tail;
            }
            Some(c) => {
                out.push('\\');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('\\');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The regex put inside restored matchers (see module docs); built once.
fn stand_in_regex() -> Option<&'static regex::Regex> {
    static STAND_IN: OnceLock<Option<regex::Regex>> = OnceLock::new();
    STAND_IN
        .get_or_init(|| regex::Regex::new("^(?:)$").ok())
        .as_ref()
}

/// Calls `f` on every vector selector of `e` (matrix selectors included) until it returns
/// false; returns whether all calls returned true.
fn for_each_selector(e: &mut Expr, f: &mut impl FnMut(&mut VectorSelector) -> bool) -> bool {
    match e {
        Expr::VectorSelector(vs) => f(vs),
        Expr::MatrixSelector(ms) => f(&mut ms.vs),
        Expr::Aggregate(a) => {
            a.param
                .as_deref_mut()
                .is_none_or(|p| for_each_selector(p, f))
                && for_each_selector(&mut a.expr, f)
        }
        Expr::Binary(b) => for_each_selector(&mut b.lhs, f) && for_each_selector(&mut b.rhs, f),
        Expr::Unary(u) => for_each_selector(&mut u.expr, f),
        Expr::Paren(p) => for_each_selector(&mut p.expr, f),
        Expr::Subquery(s) => for_each_selector(&mut s.expr, f),
        Expr::Call(c) => c.args.args.iter_mut().all(|a| for_each_selector(a, f)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("LIST|GET", true)]
    #[case(r"1(\.0)?", true)]
    #[case(".*", true)]
    #[case("(", false)]
    #[case("a{2}{", false)]
    #[case(r"\w{1000}{1000}", false)]
    #[case(r"\w{100}", true)]
    // Over the NFA size limit.
    #[case(r"\w{1000}", false)]
    // Accepted by Rust's regex only as `a\{b}`, which promql-parser retries: not ours to decide.
    #[case("a{b}", false)]
    fn compiles_like_regex_new(#[case] re: &str, #[case] ok: bool) {
        assert_eq!(compile(re).is_some(), ok, "{re}");
        assert_eq!(
            regex::Regex::new(&format!("^(?:{re})$")).is_ok(),
            ok,
            "regex::Regex::new disagrees on {re}"
        );
    }

    #[test]
    fn check_answers_the_same_from_the_cache() {
        for _ in 0..2 {
            assert_eq!(check("x?"), Some(true));
            assert_eq!(check("x+"), Some(false));
            assert_eq!(check("("), None);
        }
    }

    #[test]
    fn marked_literal_keeps_the_quote() {
        let mut out = String::new();
        push_marked_literal(&mut out, r#""a\"b""#, 7);
        assert_eq!(out, r#""\x00promfed:7\x00a\"b""#);
        let mut out = String::new();
        push_marked_literal(&mut out, "'x'", 0);
        assert_eq!(out, r"'\x00promfed:0\x00x'");
    }

    /// The fast path's tree, when it is taken.
    fn fast(src: &str) -> Option<Expr> {
        let marked = crate::promql::lex::prepare_marked(src).ok()?;
        let mut expr = crate::promql::parse_text(&marked.text).ok()?;
        restore(&mut expr, &marked.negated).then_some(expr)
    }

    fn plain(src: &str) -> Result<Expr, crate::promql::PromqlError> {
        crate::promql::parse_text(&crate::promql::lex::prepare(src)?)
    }

    fn printed(e: &Expr) -> String {
        crate::promql::print::print(e).unwrap()
    }

    #[rstest]
    #[case(r#"up{job=~"a|b"}"#)]
    #[case(r#"up{job!~"a|b", instance=~".+"}"#)]
    #[case(r#"{__name__=~"up|down"}"#)]
    #[case(r#"{__name__=~"up|down", job!~""}"#)]
    #[case(r#"sum(rate(x{code=~"5.."}[5m])) / sum(rate(x{code!~'2..'}[5m]))"#)]
    #[case(r#"x{le=~"1(\\.0)?", a=~'it\'s', b=~"q\"uote\n"}"#)]
    #[case(r"x{a=~`raw\d+`, b!~`x`}")]
    #[case(r#"x{a =~ "s p a c e", b !~ 'c'}"#)]
    #[case(r#"x{a=~"ünï|☃"}"#)]
    #[case(r#"count_values("v", x{a=~"b"}) + max_over_time(topk(1, y{c!~"d"})[5m:] offset 1m)"#)]
    #[case(r#"label_replace(x{a=~"b"}, "c", "$1", "a", "(.*)")"#)]
    // The pre-pass does not see a regex after a comment; the parser compiles that one.
    #[case("{a=~ # c\n \".*\", b=~\"x\"}")]
    // A regex that looks like a marker is still just a value.
    #[case(r#"x{a=~"\x00promfed:0\x00"}"#)]
    fn fast_path_is_taken_and_equals_plain_parse(#[case] src: &str) {
        let fast = fast(src).unwrap_or_else(|| panic!("fast path refused {src}"));
        let plain = plain(src).unwrap();
        assert_eq!(printed(&fast), printed(&plain), "{src}");
        assert_eq!(matchers(fast), matchers(plain), "{src}");
    }

    /// Every matcher of `e` as (name, operator, value).
    fn matchers(mut e: Expr) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for_each_selector(&mut e, &mut |vs| {
            for m in &vs.matchers.matchers {
                out.push((m.name.clone(), m.op.to_string(), m.value.clone()));
            }
            true
        });
        out
    }

    #[rstest]
    // The parser's empty-matcher check must see the real regexes.
    #[case(r#"{a=~".*"}"#)]
    #[case(r#"{a!~""}"#)]
    #[case(r#"{a=~"x*", b!~"y"}"#)]
    #[case("{a=~ # c\n \".*\", b=~\"x?\"}")]
    // Errors that quote the value.
    #[case(r#"foo{__name__=~"bar"}"#)]
    #[case(r#"x{a=~"("}"#)]
    // Only promql-parser's `{` escaping makes this compile.
    #[case(r#"x{a=~"a{b}"}"#)]
    // User text that looks like a marker.
    #[case(r#"x{a="\x00promfed:0\x00", b=~"c"}"#)]
    #[case(r#"x{a!="\x00promfed:0\x00y", b=~"c"}"#)]
    #[case(r#"x{a=~"b"} + y{c="\x00promfed:1\x00"}"#)]
    fn doubtful_cases_fall_back_to_the_plain_parse(#[case] src: &str) {
        assert!(fast(src).is_none(), "fast path taken for {src}");
        let got = crate::promql::parse(src).map(|e| printed(&e));
        let want = plain(src).map(|e| printed(&e));
        assert_eq!(got, want, "{src}");
    }

    proptest::proptest! {
        /// Whatever the regex text, the fast path yields the plain parse's result.
        #[test]
        fn same_result_as_the_plain_parse(
            name in proptest::option::of("[a-z_]{1,3}"),
            matchers in proptest::collection::vec(
                (
                    "[a-c]|__name__",
                    proptest::sample::select(vec!["=~", "!~", "=", "!="]),
                    proptest::sample::select(vec!["\"", "'", "`"]),
                    r#"([a-c.*+?|(){}\[\]^$ ,0-9-]|\\[dwsb.x]|\\\\|\\"|\\'|\\x00|é|☃){0,8}"#,
                ),
                0..4,
            ),
        ) {
            let body: Vec<String> = matchers
                .iter()
                .map(|(l, op, q, v)| format!("{l}{op}{q}{v}{q}"))
                .collect();
            let src = format!("{}{{{}}}", name.unwrap_or_default(), body.join(", "));
            let got = crate::promql::parse(&src).map(|e| (printed(&e), matchers_of(e)));
            let want = plain(&src).map(|e| (printed(&e), matchers_of(e)));
            proptest::prop_assert_eq!(got, want, "{}", src);
        }
    }

    fn matchers_of(e: Expr) -> Vec<(String, String, String)> {
        matchers(e)
    }
}

#[cfg(test)]
mod go_quoting_tests {
    use super::*;

    #[test]
    fn go_literal_quoting_is_accepted_and_kept() {
        assert_eq!(expand_go_quoting(r"a\Q[.]\Eb\Q+"), r"a\[\.\]b\+");
        assert_eq!(expand_go_quoting(r"\\Q"), r"\\Q");
        let opts = crate::promql::RewriteOptions {
            label: "cluster".into(),
            value: "c".into(),
            regex: false,
            tag_labelless: true,
        };
        let out = crate::promql::rewrite_expr(r#"x{a=~"\\Q[a.b]\\E.*"}"#, &opts).unwrap();
        assert_eq!(out.expr, r#"x{a=~"\\Q[a.b]\\E.*", cluster="c"}"#);
    }
}
