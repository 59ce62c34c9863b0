//! YAML parsing with limits, for text that comes from a ConfigMap or a mounted values file.
//!
//! serde_yaml guards against "billion laughs" (nested aliases) and deep recursion, but two
//! shapes get through: one large anchored node aliased many times (each alias is a single
//! event, so the expansion is linear per alias yet unbounded in total), and very deep flow
//! nesting (`[[[[...`), where libyaml's scanner does work proportional to the depth for every
//! token before serde_yaml's recursion limit sees anything. Both are refused here, quickly and
//! with a message naming the limit.

pub mod edit;
pub mod tree;

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// Deepest bracket nesting accepted. serde_yaml refuses more than 128 levels of nesting of any
/// kind anyway; this bounds the scanner's cost before it gets there.
pub const MAX_FLOW_DEPTH: usize = 256;

/// How many bytes a document may expand to (strings, keys and a small cost per node), counting
/// every alias again. Far above any real configuration; far below what hurts.
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024 * 1024;

/// Approximate cost of one node besides its text.
const NODE_COST: usize = 32;

/// Parses one YAML document with the nesting and expansion limits applied.
pub fn parse(text: &str) -> Result<Value, String> {
    check_flow_depth(text)?;
    let budget = Budget {
        left: Cell::new(MAX_EXPANDED_BYTES),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    BoundedValue(&budget)
        .deserialize(de)
        .map_err(|e| e.to_string())
}

/// Counts the nesting of flow collections, roughly as YAML opens them: `[`/`{` at the start of
/// a value (line start, after `: `, `- `, `? `) or inside a flow collection; quoted strings and
/// comments skipped. A linear scan that ignores `[`/`{` in the middle of plain scalars, so
/// regexes such as `\\[` in expressions, however many, cost nothing.
fn check_flow_depth(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut value_start = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let after_blank = i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r');
        match c {
            b'\n' => value_start = true,
            b' ' | b'\t' | b'\r' => {}
            b'#' if after_blank => {
                i = memchr_newline(b, i);
                continue;
            }
            b'"' | b'\'' if depth > 0 || value_start => {
                i = quoted_end(b, i);
                value_start = false;
                continue;
            }
            b'[' | b'{' if depth > 0 || value_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "brackets nested deeper than {MAX_FLOW_DEPTH} levels (limit for YAML flow collections)"
                    ));
                }
                value_start = false;
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b'|' | b'>' if depth == 0 && value_start => {
                i = skip_block_scalar(b, i);
                continue;
            }
            b':' | b'-' | b'?' | b',' => {
                value_start = i + 1 >= b.len()
                    || matches!(b[i + 1], b' ' | b'\t' | b'\n' | b'\r')
                    || (depth > 0 && c == b',');
            }
            _ => value_start = false,
        }
        i += 1;
    }
    Ok(())
}

/// Index of the first line after the block scalar whose header is at `header`: the lines
/// after the header that are blank or indented deeper than the header's line.
fn skip_block_scalar(b: &[u8], header: usize) -> usize {
    let line_start = b[..header]
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(0, |p| p + 1);
    // The column of the key on the header's line (`- expr: |` counts up to `expr`).
    let indent = b[line_start..header]
        .iter()
        .take_while(|c| matches!(**c, b' ' | b'-'))
        .count();
    let mut i = memchr_newline(b, header);
    while i < b.len() {
        let next = i + 1;
        let spaces = b[next..].iter().take_while(|c| **c == b' ').count();
        let rest = b.get(next + spaces).copied();
        let blank = matches!(rest, None | Some(b'\n' | b'\r'));
        if !blank && spaces <= indent {
            return i;
        }
        i = memchr_newline(b, next);
    }
    b.len()
}

fn memchr_newline(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(b.len(), |p| from + p)
}

/// Index just after the YAML quoted scalar opening at `open` (`''` escapes in single quotes,
/// backslash escapes in double quotes); the end of input when unterminated. Shared by the
/// nesting pre-scan and the span tree.
pub(crate) fn quoted_end(b: &[u8], open: usize) -> usize {
    let Some(&q) = b.get(open) else { return open };
    let mut i = open + 1;
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

struct Budget {
    left: Cell<usize>,
}

impl Budget {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = bytes.saturating_add(NODE_COST);
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "document expands to more than {} MiB (limit; YAML aliases repeating a large node?)",
                MAX_EXPANDED_BYTES / (1024 * 1024)
            ))),
        }
    }
}

/// Builds a [`Value`] like serde_yaml's own `Deserialize`, charging the budget per node.
#[derive(Clone, Copy)]
struct BoundedValue<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(0)?;
        let mut out = Mapping::new();
        while let Some(k) = map.next_key_seed(self)? {
            let v = map.next_value_seed(self)?;
            // serde_yaml's own Value refuses duplicate keys the same way.
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!(
                    "duplicate mapping key {}",
                    serde_yaml::to_string(&k).unwrap_or_default().trim()
                )));
            }
            out.insert(k, v);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        let (tag, variant): (String, _) = data.variant()?;
        self.0.charge(tag.len())?;
        let value = variant.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_yaml() {
        let text = "a: 1\nb: [x, 'y', \"z\", 1.5, -2, true, ~]\nc: {d: &x [1, 2], e: *x}\nf: !tag v\ng: |\n  block\n";
        let ours = parse(text).unwrap();
        let theirs: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(parse("").unwrap(), Value::Null);
    }

    #[test]
    fn errors_like_serde_yaml() {
        assert!(parse("a: [\n").unwrap_err().contains("line"));
        assert!(parse("a: 1\na: 2\n").unwrap_err().contains("duplicate"));
    }

    #[test]
    fn alias_flood_is_refused() {
        let mut s = format!("big: &big \"{}\"\nl: [", "x".repeat(1 << 20));
        s.push_str(&vec!["*big"; 100].join(","));
        s.push_str("]\n");
        let e = parse(&s).unwrap_err();
        assert!(e.contains("expands to more than 64 MiB"), "{e}");
        // A handful of aliases to a small node is fine.
        assert!(parse("t: &t {ca_file: x}\na: {tls_config: *t}\nb: {tls_config: *t}\n").is_ok());
    }

    #[test]
    fn deep_flow_is_refused_before_scanning() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.contains("deeper than 256"), "{e}");
        // Balanced brackets in strings, many of them, are fine.
        let many = "- expr: sum(rate(x{a=\"b\"}[5m]))\n".repeat(10_000);
        assert!(parse(&many).is_ok());
        // Unbalanced brackets inside strings, block scalars and plain scalars do not count.
        let regexes =
            "- expr: x{a=~\"\\\\[\"}\n  b: '[{'\n  c: |\n    [[{\n  d: a[b{\n".repeat(1_000);
        assert!(parse(&regexes).is_ok(), "{:?}", parse(&regexes));
    }
}
