//! Prometheus-style printer for the promql-parser syntax tree.
//!
//! Our own, not the crate's `Display`: that one prints durations and strings in ways
//! Prometheus 2.42 does not always read back the same (see the module tests). Output style:
//! `sum by (job, cluster) (rate(x{job="a", cluster="local"}[5m]))`. Parentheses are printed
//! exactly where the parser kept a `Paren` node, so precedence is never re-derived.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinModifier, Expr, LabelModifier, Offset, VectorMatchCardinality,
    VectorSelector,
};

use super::PromqlError;
use super::labels::{is_label_name, or_matchers_error};

/// Largest `@` timestamp magnitude printed, in milliseconds (2^53: exact as an f64).
const MAX_AT_MS: u128 = 1 << 53;

/// Prints `expr` as PromQL text.
pub(crate) fn print(expr: &Expr) -> Result<String, PromqlError> {
    let mut out = String::new();
    expr_into(expr, &mut out)?;
    Ok(out)
}

fn expr_into(expr: &Expr, out: &mut String) -> Result<(), PromqlError> {
    match expr {
        Expr::Aggregate(a) => aggregate_into(a, out)?,
        Expr::Unary(u) => {
            out.push('-');
            expr_into(&u.expr, out)?;
        }
        Expr::Binary(b) => {
            expr_into(&b.lhs, out)?;
            out.push(' ');
            out.push_str(&b.op.to_string());
            if let Some(m) = &b.modifier {
                bin_modifier_into(m, out);
            }
            out.push(' ');
            expr_into(&b.rhs, out)?;
        }
        Expr::Paren(p) => {
            out.push('(');
            expr_into(&p.expr, out)?;
            out.push(')');
        }
        Expr::Subquery(s) => {
            expr_into(&s.expr, out)?;
            out.push('[');
            out.push_str(&duration(&s.range)?);
            out.push(':');
            if let Some(step) = &s.step {
                out.push_str(&duration(step)?);
            }
            out.push(']');
            at_offset_into(s.at.as_ref(), s.offset.as_ref(), out)?;
        }
        Expr::NumberLiteral(n) => out.push_str(&number(n.val)),
        Expr::StringLiteral(s) => out.push_str(&quote(&s.val)),
        Expr::VectorSelector(vs) => {
            selector_into(vs, out)?;
            at_offset_into(vs.at.as_ref(), vs.offset.as_ref(), out)?;
        }
        Expr::MatrixSelector(ms) => {
            selector_into(&ms.vs, out)?;
            out.push('[');
            out.push_str(&duration(&ms.range)?);
            out.push(']');
            at_offset_into(ms.vs.at.as_ref(), ms.vs.offset.as_ref(), out)?;
        }
        Expr::Call(c) => {
            out.push_str(c.func.name);
            out.push('(');
            for (i, arg) in c.args.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                expr_into(arg, out)?;
            }
            out.push(')');
        }
        Expr::Extension(_) => {
            return Err(PromqlError::Unsupported(
                "extension expressions cannot be printed".into(),
            ));
        }
    }
    Ok(())
}

fn aggregate_into(a: &AggregateExpr, out: &mut String) -> Result<(), PromqlError> {
    out.push_str(&a.op.to_string());
    match &a.modifier {
        Some(LabelModifier::Include(ls)) => {
            out.push_str(" by ");
            label_list_into(&ls.labels, out);
            out.push(' ');
        }
        Some(LabelModifier::Exclude(ls)) => {
            out.push_str(" without ");
            label_list_into(&ls.labels, out);
            out.push(' ');
        }
        None => {}
    }
    out.push('(');
    if let Some(p) = &a.param {
        expr_into(p, out)?;
        out.push_str(", ");
    }
    expr_into(&a.expr, out)?;
    out.push(')');
    Ok(())
}

fn bin_modifier_into(m: &BinModifier, out: &mut String) {
    if m.return_bool {
        out.push_str(" bool");
    }
    match &m.matching {
        Some(LabelModifier::Include(ls)) => {
            out.push_str(" on ");
            label_list_into(&ls.labels, out);
        }
        Some(LabelModifier::Exclude(ls)) => {
            out.push_str(" ignoring ");
            label_list_into(&ls.labels, out);
        }
        None => {}
    }
    let group = match &m.card {
        VectorMatchCardinality::ManyToOne(ls) => Some(("group_left", ls)),
        VectorMatchCardinality::OneToMany(ls) => Some(("group_right", ls)),
        _ => None,
    };
    if let Some((kw, ls)) = group {
        // Always with its list: `group_left (x)` would read a following `(x)` operand as
        // the list.
        out.push(' ');
        out.push_str(kw);
        out.push(' ');
        label_list_into(&ls.labels, out);
    }
    // Experimental syntax of newer Prometheus; printed as parsed, never produced by us.
    let fill = &m.fill_values;
    match (fill.lhs, fill.rhs) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            let _ = write!(out, " fill ({})", number(l));
        }
        (l, r) => {
            if let Some(l) = l {
                let _ = write!(out, " fill_left ({})", number(l));
            }
            if let Some(r) = r {
                let _ = write!(out, " fill_right ({})", number(r));
            }
        }
    }
}

fn label_list_into(labels: &[String], out: &mut String) {
    out.push('(');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        label_name_into(l, out);
    }
    out.push(')');
}

/// A label name as an identifier, or quoted when it is not one (newer Prometheus syntax,
/// only ever printed when the input had it).
fn label_name_into(name: &str, out: &mut String) {
    if is_label_name(name) {
        out.push_str(name);
    } else {
        out.push_str(&quote(name));
    }
}

fn selector_into(vs: &VectorSelector, out: &mut String) -> Result<(), PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(or_matchers_error());
    }
    if let Some(name) = &vs.name {
        out.push_str(name);
    }
    if !vs.matchers.matchers.is_empty() || vs.name.is_none() {
        out.push('{');
        for (i, m) in vs.matchers.matchers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            matcher_into(m, out);
        }
        out.push('}');
    }
    Ok(())
}

fn matcher_into(m: &Matcher, out: &mut String) {
    label_name_into(&m.name, out);
    out.push_str(match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    });
    out.push_str(&quote(&m.value));
}

fn at_offset_into(
    at: Option<&AtModifier>,
    offset: Option<&Offset>,
    out: &mut String,
) -> Result<(), PromqlError> {
    match at {
        Some(AtModifier::Start) => out.push_str(" @ start()"),
        Some(AtModifier::End) => out.push_str(" @ end()"),
        Some(AtModifier::At(t)) => {
            out.push_str(" @ ");
            out.push_str(&timestamp(*t)?);
        }
        None => {}
    }
    match offset {
        Some(Offset::Pos(d)) => {
            out.push_str(" offset ");
            out.push_str(&duration(d)?);
        }
        Some(Offset::Neg(d)) => {
            out.push_str(" offset -");
            out.push_str(&duration(d)?);
        }
        None => {}
    }
    Ok(())
}

/// Seconds since the epoch with up to millisecond precision, as Prometheus reads `@`.
fn timestamp(t: SystemTime) -> Result<String, PromqlError> {
    let (neg, d) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (false, d),
        Err(e) => (true, e.duration()),
    };
    let ms = d.as_millis();
    if ms > MAX_AT_MS || !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(PromqlError::Unsupported(format!(
            "@ timestamp {}{}s is out of range",
            if neg { "-" } else { "" },
            d.as_secs_f64()
        )));
    }
    let sign = if neg && ms > 0 { "-" } else { "" };
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        Ok(format!("{sign}{secs}"))
    } else {
        let frac = format!("{frac:03}");
        Ok(format!("{sign}{secs}.{}", frac.trim_end_matches('0')))
    }
}

/// A duration as Prometheus prints it (`1h30m`, `500ms`, `1d`, `2w`, `1y`).
pub(crate) fn duration(d: &Duration) -> Result<String, PromqlError> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(PromqlError::Unsupported(format!(
            "duration {d:?} is not a whole number of milliseconds"
        )));
    }
    let mut ms = d.as_millis();
    if ms == 0 {
        return Ok("0s".into());
    }
    let mut s = String::new();
    const DAY: u128 = 24 * 60 * 60 * 1000;
    // Years and weeks only when exact, like Prometheus (90d reads better than 12w6d).
    for (unit, mult, exact) in [
        ("y", 365 * DAY, true),
        ("w", 7 * DAY, true),
        ("d", DAY, false),
        ("h", 60 * 60 * 1000, false),
        ("m", 60 * 1000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ] {
        if exact && !ms.is_multiple_of(mult) {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            let _ = write!(s, "{v}{unit}");
            ms -= v * mult;
        }
    }
    Ok(s)
}

/// A float that Prometheus (Go `strconv.ParseFloat`) reads back as the same value.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Inf" } else { "-Inf" }.into();
    }
    // Rust prints the shortest digits that round-trip; use an exponent for very small or
    // large magnitudes, like Go's `%v`.
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A Go-compatible double-quoted PromQL string: `\\`, `\"`, `\n`... and `\x`/`\u` escapes
/// for control and invisible characters (and U+FFFD, which the Prometheus lexer rejects
/// when it appears literally).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_unicode_escape(c) => {
                if (c as u32) <= 0xffff {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn needs_unicode_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{fff9}'..='\u{fffd}'
            | '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..='\u{10ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(1.0, "1")]
    #[case(-1.5, "-1.5")]
    #[case(0.1, "0.1")]
    #[case(1e-9, "1e-9")]
    #[case(1e300, "1e300")]
    #[case(-0.0, "-0")]
    #[case(f64::NAN, "NaN")]
    #[case(f64::INFINITY, "Inf")]
    #[case(f64::NEG_INFINITY, "-Inf")]
    #[case(123456789.125, "123456789.125")]
    fn numbers(#[case] v: f64, #[case] want: &str) {
        assert_eq!(number(v), want);
        if v.is_finite() {
            assert_eq!(want.parse::<f64>().unwrap().to_bits(), v.to_bits());
        }
    }

    #[rstest]
    #[case(5 * 60 * 1000, "5m")]
    #[case(90 * 60 * 1000, "1h30m")]
    #[case(500, "500ms")]
    #[case(24 * 3600 * 1000, "1d")]
    #[case(14 * 24 * 3600 * 1000, "2w")]
    #[case(90 * 24 * 3600 * 1000, "90d")]
    #[case(365 * 24 * 3600 * 1000, "1y")]
    #[case(3_661_001, "1h1m1s1ms")]
    #[case(0, "0s")]
    fn durations(#[case] ms: u64, #[case] want: &str) {
        assert_eq!(duration(&Duration::from_millis(ms)).unwrap(), want);
    }

    #[test]
    fn sub_millisecond_duration_is_an_error() {
        assert!(duration(&Duration::from_nanos(1_500_000)).is_err());
    }

    #[rstest]
    #[case("local", r#""local""#)]
    #[case(r"1(\.0)?", r#""1(\\.0)?""#)]
    #[case("a\"b", r#""a\"b""#)]
    #[case("a\nb\tc\r", r#""a\nb\tc\r""#)]
    #[case("\u{1b}[0m\u{7f}\u{0}", r#""\x1b[0m\x7f\x00""#)]
    #[case("\u{85}\u{2028}\u{feff}\u{fffd}", r#""\u0085\u2028\ufeff\ufffd""#)]
    #[case("ünïcødé ☃ 日本", "\"ünïcødé ☃ 日本\"")]
    #[case("`'", "\"`'\"")]
    fn quoting(#[case] s: &str, #[case] want: &str) {
        assert_eq!(quote(s), want);
    }

    #[rstest]
    #[case(0, "0")]
    #[case(1_609_746_000_000, "1609746000")]
    #[case(1_500, "1.5")]
    #[case(1_001, "1.001")]
    fn timestamps(#[case] ms: u64, #[case] want: &str) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(timestamp(t).unwrap(), want);
    }

    #[test]
    fn negative_timestamp() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_millis(100_250);
        assert_eq!(timestamp(t).unwrap(), "-100.25");
    }
}
