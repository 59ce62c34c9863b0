//! A cheap, lexer-aware pre-pass run before `promql-parser`.
//!
//! It exists because the parser alone is not safe or faithful enough:
//! - nesting is bounded here, before anything recursive (parser checks, our walk, `Drop` of a
//!   deep tree) sees the expression;
//! - backtick raw strings are turned into equivalent double-quoted literals, since
//!   promql-parser 0.11 treats `\` inside them as an escape (``a=~`.*\d` `` fails to parse);
//! - durations without a unit (`[300]`, `offset 5`) are rejected: Prometheus 2.42 rejects
//!   them, and promql-parser panics on large ones (`[1e30]`);
//! - duration components above `u32::MAX` are rejected: promql-parser silently drops them
//!   (`[4294967296s1ms]` would become `[1ms]`);
//! - byte escapes above 0x7f (`"\xff"`, `"\377"`) are rejected: Go turns them into raw bytes
//!   (invalid UTF-8) while promql-parser turns them into characters, so no faithful printing
//!   exists.

use super::PromqlError;
use super::print::quote;

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 64 * 1024;
/// Deepest nesting accepted: open `(`, `{`, `[` plus the operators chained at each open level
/// (a chain `a + b + c` is a left-deep tree as deep as it is long).
pub const MAX_DEPTH: usize = 256;

/// Checks the limits and returns the text to hand to the parser.
pub(crate) fn prepare(src: &str) -> Result<String, PromqlError> {
    prepare_with(src, false).map(|p| p.text)
}

/// The parser's input with every regex matcher it can see replaced by a marked equality
/// matcher (see [`super::regexes`]), so that the parser does not compile regexes.
pub(crate) struct Marked {
    pub text: String,
    /// One entry per marked matcher, by marker index: true for `!~`, false for `=~`.
    pub negated: Vec<bool>,
}

/// [`prepare`], with the regex matchers marked (see [`Marked`]).
pub(crate) fn prepare_marked(src: &str) -> Result<Marked, PromqlError> {
    prepare_with(src, true)
}

fn prepare_with(src: &str, mark: bool) -> Result<Marked, PromqlError> {
    if src.len() > MAX_EXPR_BYTES {
        return Err(PromqlError::TooLarge(format!(
            "expression is {} bytes long, the limit is {MAX_EXPR_BYTES}",
            src.len()
        )));
    }
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    // Open brackets, each with the number of operators seen at its level; index 0 is the top.
    let mut levels: Vec<(u8, usize)> = vec![(0, 0)];
    let mut depth = 0usize; // open brackets + operators of all open levels
    let mut after_offset = false;
    let mut negated = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let in_braces = levels.last().is_some_and(|l| l.0 == b'{');
        let in_brackets = levels.last().is_some_and(|l| l.0 == b'[');
        let start = i;
        let mut keep_offset = false;
        let mut op = false;
        match c {
            b'#' => {
                i = comment_end(b, i);
                keep_offset = after_offset;
            }
            b'"' | b'\'' => {
                i = scan_quoted(b, i)?;
                if in_braces && after_regex_op(&src[..start]) {
                    let literal = &src[start..i];
                    check_regex_weight(literal)?;
                    let terminated = literal.len() >= 2 && literal.ends_with(c as char);
                    if mark
                        && terminated
                        && let Some(neg) = regex_op_to_equality(&mut out)
                    {
                        super::regexes::push_marked_literal(&mut out, literal, negated.len());
                        negated.push(neg);
                        after_offset = false;
                        continue;
                    }
                }
            }
            b'`' => {
                let body_start = i + 1;
                match b[body_start..].iter().position(|&x| x == b'`') {
                    Some(len) => {
                        let quoted = quote(&src[body_start..body_start + len]);
                        if in_braces && after_regex_op(&src[..start]) {
                            check_regex_weight(&src[start..body_start + len + 1])?;
                            if mark && let Some(neg) = regex_op_to_equality(&mut out) {
                                super::regexes::push_marked_literal(
                                    &mut out,
                                    &quoted,
                                    negated.len(),
                                );
                                negated.push(neg);
                                i = body_start + len + 1;
                                after_offset = false;
                                continue;
                            }
                        }
                        out.push_str(&quoted);
                        i = body_start + len + 1;
                        after_offset = false;
                        continue;
                    }
                    // Unterminated: let the parser report it.
                    None => i = b.len(),
                }
            }
            b'(' | b'{' | b'[' => {
                levels.push((c, 0));
                depth += 1;
                i += 1;
            }
            b')' | b'}' | b']' => {
                if levels.len() > 1
                    && let Some((_, ops)) = levels.pop()
                {
                    depth = depth.saturating_sub(1 + ops);
                }
                i += 1;
            }
            b'0'..=b'9' | b'.' if c != b'.' || b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = scan_number_word(b, i);
                let word = &src[start..i];
                match duration_components(word) {
                    Some(parts) => {
                        if let Some(p) = parts.iter().find(|p| p.parse::<u32>().is_err()) {
                            return Err(PromqlError::Parse(format!(
                                "duration {word}: component {p} is too large"
                            )));
                        }
                    }
                    None if in_brackets || after_offset => {
                        return Err(PromqlError::Parse(format!(
                            "duration {word} has no unit (Prometheus 2.42 needs one, e.g. 5m)"
                        )));
                    }
                    None => {}
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || (c == b':' && !in_brackets) => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                if !in_braces {
                    let word = src[start..i].to_ascii_lowercase();
                    op = matches!(word.as_str(), "and" | "or" | "unless" | "atan2");
                    if word == "offset" {
                        out.push_str(&src[start..i]);
                        after_offset = true;
                        continue;
                    }
                }
            }
            b'+' | b'-' if !in_braces => {
                op = true;
                keep_offset = after_offset;
                i += 1;
            }
            b'*' | b'/' | b'%' | b'^' if !in_braces => {
                op = true;
                i += 1;
            }
            b'=' | b'!' | b'<' | b'>' if !in_braces => {
                op = true;
                i += 1;
                if b.get(i) == Some(&b'=') {
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                keep_offset = after_offset;
            }
            _ => {
                // Anything else (including non-ASCII outside strings) is copied; the parser
                // reports what is invalid. Step over a whole UTF-8 character.
                i += 1;
                while i < b.len() && !src.is_char_boundary(i) {
                    i += 1;
                }
            }
        }
        if op {
            if let Some(level) = levels.last_mut() {
                level.1 += 1;
            }
            depth += 1;
        }
        if depth > MAX_DEPTH {
            return Err(PromqlError::TooLarge(format!(
                "expression is nested deeper than {MAX_DEPTH} levels (brackets and chained operators)"
            )));
        }
        after_offset = keep_offset;
        out.push_str(&src[start..i]);
    }
    Ok(Marked { text: out, negated })
}

/// Turns the `=~` or `!~` that ends `out` (before trailing whitespace) into `=` or `!=`;
/// returns whether it was `!~`, or `None` (and leaves `out` alone) when `out` does not end
/// with one.
fn regex_op_to_equality(out: &mut String) -> Option<bool> {
    let end = out.trim_end().len();
    let negated = match out.get(..end)? {
        t if t.ends_with("=~") => false,
        t if t.ends_with("!~") => true,
        _ => return None,
    };
    out.replace_range(end - 2..end, if negated { "!=" } else { "=" });
    Some(negated)
}

/// Largest product of nested counted repetitions (`((a{100}){100})` is 10,000) accepted in
/// a regex matcher. promql-parser compiles every regex while parsing, and a regex such as
/// `(\w{1000}){1000}` takes the Rust regex compiler ~100 ms to refuse; many of them in one
/// expression would stall the webhook.
pub const MAX_REGEX_REPETITION: u64 = 10_000;

fn after_regex_op(before: &str) -> bool {
    let t = before.trim_end();
    t.ends_with("=~") || t.ends_with("!~")
}

/// Estimates the repetition product of a regex literal from its source text (escapes are
/// skipped in pairs, so the estimate errs on the high side) and rejects it above the limit.
fn check_regex_weight(literal: &str) -> Result<(), PromqlError> {
    let b = literal.as_bytes();
    // Per open group: (largest weight inside, weight of the last atom or group).
    let mut stack: Vec<(u64, u64)> = vec![(1, 1)];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 2;
                if let Some(top) = stack.last_mut() {
                    top.1 = 1;
                }
                continue;
            }
            b'(' => stack.push((1, 1)),
            b')' if stack.len() > 1 => {
                if let Some((inner, _)) = stack.pop()
                    && let Some(top) = stack.last_mut()
                {
                    top.1 = inner;
                    top.0 = top.0.max(inner);
                }
            }
            b'{' => {
                let close = b[i..].iter().position(|&c| c == b'}').map(|p| i + p);
                let count = close.and_then(|c| {
                    let body = std::str::from_utf8(&b[i + 1..c]).ok()?;
                    body.split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse::<u64>().ok())
                        .collect::<Option<Vec<_>>>()?
                        .into_iter()
                        .max()
                });
                if let (Some(n), Some(c), Some(top)) = (count, close, stack.last_mut()) {
                    top.1 = top.1.saturating_mul(n.max(1));
                    top.0 = top.0.max(top.1);
                    i = c;
                }
            }
            _ => {
                if let Some(top) = stack.last_mut() {
                    top.1 = 1;
                }
            }
        }
        i += 1;
    }
    let weight = stack.iter().map(|f| f.0).max().unwrap_or(1);
    if weight > MAX_REGEX_REPETITION {
        return Err(PromqlError::TooLarge(format!(
            "regex {literal} repeats up to {weight} times (nested counted repetitions); \
             the limit is {MAX_REGEX_REPETITION}"
        )));
    }
    Ok(())
}

/// Scans a `"` or `'` string starting at `i`; returns the index after it (or the end of
/// input when unterminated, leaving the error to the parser).
fn scan_quoted(b: &[u8], i: usize) -> Result<usize, PromqlError> {
    string_end(b, i, check_byte_escape)
}

/// The index after the PromQL string literal starting at `i` (`"` or `'` with backslash
/// escapes, `` ` `` raw), or the end of input when unterminated. `on_escape` sees the bytes
/// after each backslash. One scanner for the rewriter's pre-pass and the dashboard variable
/// finder, so both agree on where strings end.
pub(crate) fn string_end<E>(
    b: &[u8],
    i: usize,
    mut on_escape: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, E> {
    let quote_char = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote_char != b'`' => {
                on_escape(&b[j + 1..])?;
                j += 2;
            }
            x if x == quote_char => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Ok(b.len())
}

/// The index of the line break ending the PromQL comment that starts at `i` (`#`), or the end
/// of input.
pub(crate) fn comment_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
        i += 1;
    }
    i
}

/// Rejects `\xHH` and `\OOO` escapes above 0x7f (see the module docs).
fn check_byte_escape(rest: &[u8]) -> Result<(), PromqlError> {
    let value = match rest.first() {
        Some(b'x') => rest
            .get(1..3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok()),
        Some(b'0'..=b'7') => rest
            .get(0..3)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u32::from_str_radix(o, 8).ok()),
        _ => None,
    };
    match value {
        Some(v) if v > 0x7f => Err(PromqlError::Parse(format!(
            "string escape for byte 0x{v:02x} would produce invalid UTF-8 in Prometheus; \
             write the character itself or \\u{v:04x}"
        ))),
        _ => Ok(()),
    }
}

/// Scans a number or duration word starting at `i` (a digit, or `.` before a digit).
fn scan_number_word(b: &[u8], mut i: usize) -> usize {
    let hex = b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X'));
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            i += 1;
            // `1e-9`: the sign belongs to the number, unless this is hex (`0x1e-5` subtracts).
            if !hex
                && (c == b'e' || c == b'E')
                && matches!(b.get(i), Some(b'+' | b'-'))
                && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

/// Splits a Prometheus duration (`1h30m`, `500ms`) into its numeric parts; `None` when
/// `word` is not a duration (a plain number).
fn duration_components(word: &str) -> Option<Vec<&str>> {
    let b = word.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &word[start..i];
        match (b.get(i), b.get(i + 1)) {
            (Some(b'm'), Some(b's')) => i += 2,
            (Some(b's' | b'm' | b'h' | b'd' | b'w' | b'y'), _) => i += 1,
            _ => return None,
        }
        parts.push(digits);
    }
    (!parts.is_empty()).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("foo", "foo")]
    #[case(r"a{b=~`.*\d`}", r#"a{b=~".*\\d"}"#)]
    #[case("a{b=~`x\"y`}", r#"a{b=~"x\"y"}"#)]
    #[case("a{b=`x`} # `c`", r#"a{b="x"} # `c`"#)]
    #[case(r#"a{b="`x`"}"#, r#"a{b="`x`"}"#)]
    #[case(r"a{b='`'}", r"a{b='`'}")]
    #[case("x offset 5m", "x offset 5m")]
    #[case("x > 5", "x > 5")]
    #[case("1e-9 + 0x1e-5", "1e-9 + 0x1e-5")]
    fn prepares(#[case] src: &str, #[case] want: &str) {
        assert_eq!(prepare(src).unwrap(), want);
    }

    #[rstest]
    #[case("foo[300]")]
    #[case("foo[1e30]")]
    #[case("foo[5m:30]")]
    #[case("foo offset 5")]
    #[case("foo offset -1e30")]
    #[case("foo[4294967296s1ms]")]
    #[case(r#"foo{a="\xff"}"#)]
    #[case(r#"foo{a="\377"}"#)]
    fn rejects(#[case] src: &str) {
        assert!(matches!(prepare(src), Err(PromqlError::Parse(_))), "{src}");
    }

    #[rstest]
    #[case(r#"x{a=~"((a{100}){100}){100}"}"#)]
    #[case(r#"x{a=~"(\\w{1000}){1000}"}"#)]
    #[case("x{a!~`(a{1,200}b){51}`}")]
    fn rejects_huge_regex_repetitions(#[case] src: &str) {
        assert!(
            matches!(prepare(src), Err(PromqlError::TooLarge(_))),
            "{src}"
        );
    }

    #[rstest]
    #[case(r#"x{a=~"(a{100}){100}"}"#)]
    #[case(r#"x{a=~"[0-9]{1,5}\\.[0-9]{1,3}"}"#)]
    #[case(r#"x{a="((a{100}){100}){100}"}"#)]
    #[case(r#"x{a=~"a{b}{1000}"}"#)]
    fn accepts_moderate_regexes(#[case] src: &str) {
        assert!(prepare(src).is_ok(), "{src}");
    }

    #[test]
    fn depth_limits() {
        let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(prepare(&deep), Err(PromqlError::TooLarge(_))));
        let chain = vec!["x"; 300].join(" + ");
        assert!(matches!(prepare(&chain), Err(PromqlError::TooLarge(_))));
        let minus = format!("{}x", "-".repeat(1000));
        assert!(matches!(prepare(&minus), Err(PromqlError::TooLarge(_))));
        let ok = format!("{}x{}", "(".repeat(200), ")".repeat(200));
        assert!(prepare(&ok).is_ok());
        let long = "x".repeat(MAX_EXPR_BYTES + 1);
        assert!(matches!(prepare(&long), Err(PromqlError::TooLarge(_))));
    }
}
