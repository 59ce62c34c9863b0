//! One YAML document as a tree of nodes that know their byte spans in the source text.
//!
//! The rewrite edits text, not values: it finds the few nodes it must change here and splices
//! new text at their spans ([`super::edit`]), so every other byte (comments, quoting, flow or
//! block style, number spellings, CRLF, BOM, document markers) stays as the user wrote it.
//! Aliases are kept as references (never expanded here), so alias floods cost nothing; the
//! parser (saphyr-parser, a YAML 1.2 event parser reporting spans) refuses flow nesting deeper
//! than 256 levels on its own, after scanning only that far.
//!
//! Reading values follows Prometheus (Go `yaml.v2`/`yaml.v3` decoding into Go strings): a
//! scalar is its source text as written, whatever it would resolve to (`0.50` is `"0.50"`),
//! a plain `~`/`null`/empty scalar is the empty string, and merge keys (`<<: *base`) supply
//! the keys a mapping does not set itself.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Index of a node in [`Tree::nodes`].
pub type NodeId = usize;

/// How many merge sources (`<<`) are followed in a chain before giving up.
const MAX_MERGE_DEPTH: usize = 32;

/// How a scalar is written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `plain`
    Plain,
    /// `'single'`
    Single,
    /// `"double"`
    Double,
    /// `|` block
    Literal,
    /// `>` block
    Folded,
}

impl Style {
    /// True for `|` and `>` scalars.
    pub fn is_block(self) -> bool {
        matches!(self, Style::Literal | Style::Folded)
    }
}

/// What a node is.
#[derive(Debug, Clone)]
pub enum Kind<'a> {
    /// A scalar with its value (escapes and folding applied) and whether it carries a tag.
    Scalar {
        /// The scalar's value.
        value: Cow<'a, str>,
        /// How it is written.
        style: Style,
        /// True when the scalar has an explicit tag (`!!str`, `!custom`).
        tagged: bool,
    },
    /// A sequence of nodes.
    Seq(Vec<NodeId>),
    /// A mapping: `(key, value)` pairs in source order.
    Map(Vec<(NodeId, NodeId)>),
    /// `*name`: the anchored node it refers to (defined earlier, never an alias itself).
    Alias(NodeId),
}

/// One node and where it is in the source.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// What the node is.
    pub kind: Kind<'a>,
    /// Byte offset where the node's text starts, anchor and tag included (for block scalars,
    /// where the content starts; for block collections, where their first entry starts).
    pub start: usize,
    /// Byte offset where the value starts, after anchor and tag.
    pub body: usize,
    /// Byte offset just after the node: the closing quote or bracket, the last character of
    /// the last entry of a block collection, or, for block scalars, the start of the line after
    /// their last (possibly blank) line.
    pub end: usize,
    /// True for `[...]` and `{...}` collections.
    pub flow: bool,
    /// True when the node carries an anchor (`&name`).
    pub anchored: bool,
}

/// How many bytes a document may expand to when every alias is counted again (strings plus a
/// small cost per node): what Go's YAML decoders would build. Far above any real configuration.
pub const MAX_EXPANDED_BYTES: u64 = super::MAX_EXPANDED_BYTES as u64;

/// Approximate cost of one node besides its text.
const NODE_COST: u64 = 32;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid YAML: {message} at line {line} column {column}")]
pub struct SyntaxError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The parser's message.
    pub message: String,
}

/// The first document of a YAML text (the one Prometheus reads), with spans.
#[derive(Debug, Clone)]
pub struct Tree<'a> {
    /// The source text.
    pub text: &'a str,
    /// All nodes; children refer to each other by index.
    pub nodes: Vec<Node<'a>>,
    /// The document's root; `None` for an empty or comment-only text.
    pub root: Option<NodeId>,
}

/// Converts the parser's character offsets to byte offsets.
enum Offsets {
    Ascii,
    Table(Vec<u32>),
}

impl Offsets {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            return Offsets::Ascii;
        }
        let mut t: Vec<u32> = text.char_indices().map(|(i, _)| i as u32).collect();
        t.push(text.len() as u32);
        Offsets::Table(t)
    }

    fn byte(&self, char_index: usize) -> usize {
        match self {
            Offsets::Ascii => char_index,
            Offsets::Table(t) => t
                .get(char_index)
                .map_or_else(|| t.last().copied().unwrap_or(0) as usize, |b| *b as usize),
        }
    }
}

/// A collection being built.
struct Frame {
    id: NodeId,
    anchor: usize,
    pending_key: Option<NodeId>,
}

impl<'a> Tree<'a> {
    /// Parses the first document of `text`. Later documents (a trailing `---`, say) are not
    /// read, as Prometheus does not read them either.
    pub fn parse(text: &'a str) -> Result<Self, SyntaxError> {
        let offsets = Offsets::new(text);
        let mut tree = Tree {
            text,
            nodes: Vec::new(),
            root: None,
        };
        let mut stack: Vec<Frame> = Vec::new();
        let mut anchors: HashMap<usize, NodeId> = HashMap::new();
        let mut started = false;
        // What each node would expand to, aliases repeated (Go's decoders expand them).
        let mut expanded: Vec<u64> = Vec::new();
        let too_big = |span: saphyr_parser::Span| SyntaxError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message: format!(
                "document expands to more than {} MiB (limit; YAML aliases repeating a large node?)",
                MAX_EXPANDED_BYTES / (1024 * 1024)
            ),
        };
        for ev in Parser::new_from_str(text) {
            let (event, span) = ev.map_err(|e| SyntaxError {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                message: e.info().to_owned(),
            })?;
            let start = offsets.byte(span.start.index());
            let end = offsets.byte(span.end.index());
            let id = tree.nodes.len();
            match event {
                Event::DocumentStart(_) if started => break,
                Event::DocumentStart(_) => started = true,
                Event::DocumentEnd | Event::StreamEnd => {
                    if started {
                        break;
                    }
                }
                Event::Scalar(value, style, anchor, tag) => {
                    expanded.push(NODE_COST + value.len() as u64);
                    let style = match style {
                        ScalarStyle::Plain => Style::Plain,
                        ScalarStyle::SingleQuoted => Style::Single,
                        ScalarStyle::DoubleQuoted => Style::Double,
                        ScalarStyle::Literal => Style::Literal,
                        ScalarStyle::Folded => Style::Folded,
                    };
                    // saphyr's spans of quoted scalars run on over blanks and a comment
                    // after them; the closing quote ends the node.
                    let (body, end) = match style {
                        Style::Literal | Style::Folded => {
                            (start, trim_end(text, start, end, b" \t"))
                        }
                        Style::Single | Style::Double => {
                            let body = skip_properties(text, start, end);
                            (
                                body,
                                super::quoted_end(text.as_bytes(), body).min(end).max(body),
                            )
                        }
                        Style::Plain => (skip_properties(text, start, end), end),
                    };
                    tree.nodes.push(Node {
                        kind: Kind::Scalar {
                            value,
                            style,
                            tagged: tag.is_some(),
                        },
                        start,
                        body,
                        end,
                        flow: false,
                        anchored: anchor != 0,
                    });
                    if anchor != 0 {
                        anchors.insert(anchor, id);
                    }
                    tree.attach(&mut stack, id);
                }
                Event::Alias(anchor) => {
                    let Some(target) = anchors.get(&anchor).copied() else {
                        return Err(SyntaxError {
                            line: span.start.line(),
                            column: span.start.col() + 1,
                            message: "alias to an unknown anchor (or to a node containing it)"
                                .to_owned(),
                        });
                    };
                    expanded.push(expanded[target]);
                    tree.nodes.push(Node {
                        kind: Kind::Alias(target),
                        start,
                        body: start,
                        end,
                        flow: false,
                        anchored: false,
                    });
                    tree.attach(&mut stack, id);
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    let kind = if matches!(event, Event::SequenceStart(..)) {
                        Kind::Seq(Vec::new())
                    } else {
                        Kind::Map(Vec::new())
                    };
                    // A flow collection's span ends with its bracket; a block collection's
                    // span is empty or holds only its anchor and tag.
                    expanded.push(NODE_COST);
                    let opening = trim_end(text, start, end, b" \t\r\n");
                    let flow =
                        opening > start && matches!(text.as_bytes()[opening - 1], b'[' | b'{');
                    let body = if flow { opening - 1 } else { start };
                    tree.nodes.push(Node {
                        kind,
                        start,
                        body,
                        end: start,
                        flow,
                        anchored: anchor != 0,
                    });
                    stack.push(Frame {
                        id,
                        anchor,
                        pending_key: None,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(frame) = stack.pop() else { continue };
                    let size = match &tree.nodes[frame.id].kind {
                        Kind::Seq(items) => items.iter().map(|c| expanded[*c]).sum::<u64>(),
                        Kind::Map(e) => e.iter().map(|(k, v)| expanded[*k] + expanded[*v]).sum(),
                        _ => 0,
                    };
                    expanded[frame.id] = expanded[frame.id].saturating_add(size);
                    if expanded[frame.id] > MAX_EXPANDED_BYTES {
                        return Err(too_big(span));
                    }
                    let (first_start, last_end) = match &tree.nodes[frame.id].kind {
                        Kind::Seq(items) => (
                            items.first().map(|c| tree.nodes[*c].start),
                            items.last().map(|c| tree.nodes[*c].end),
                        ),
                        Kind::Map(entries) => (
                            entries.first().map(|(k, _)| tree.nodes[*k].start),
                            entries.last().map(|(_, v)| tree.nodes[*v].end),
                        ),
                        _ => (None, None),
                    };
                    let node = &mut tree.nodes[frame.id];
                    if node.flow {
                        // The span may run on over a comment after the bracket.
                        let b = text.as_bytes();
                        let mut close = start;
                        while close < end && !matches!(b[close], b']' | b'}') {
                            close += 1;
                        }
                        node.end = (close + 1).min(end);
                    } else {
                        node.end = last_end.unwrap_or(node.start);
                        node.start = node.start.min(first_start.unwrap_or(node.start));
                    }
                    // Registered at the end so that a node cannot contain an alias to itself.
                    if frame.anchor != 0 {
                        anchors.insert(frame.anchor, frame.id);
                    }
                    tree.attach(&mut stack, frame.id);
                }
                Event::StreamStart | Event::Nothing => {}
            }
        }
        Ok(tree)
    }

    fn attach(&mut self, stack: &mut [Frame], id: NodeId) {
        let Some(frame) = stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(id);
            }
            return;
        };
        match &mut self.nodes[frame.id].kind {
            Kind::Seq(items) => items.push(id),
            Kind::Map(entries) => match frame.pending_key.take() {
                None => frame.pending_key = Some(id),
                Some(k) => entries.push((k, id)),
            },
            _ => {}
        }
    }

    /// The node behind `id`, following an alias.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        match self.nodes[id].kind {
            Kind::Alias(target) => target,
            _ => id,
        }
    }

    /// The node `id` after following an alias.
    pub fn node(&self, id: NodeId) -> &Node<'a> {
        &self.nodes[self.resolve(id)]
    }

    /// True for an alias node.
    pub fn is_alias(&self, id: NodeId) -> bool {
        matches!(self.nodes[id].kind, Kind::Alias(_))
    }

    /// The text of `id` as Prometheus reads it into a Go string: the scalar as written, `""`
    /// for a plain null. `None` for collections.
    pub fn go_str(&self, id: NodeId) -> Option<&str> {
        match &self.node(id).kind {
            Kind::Scalar {
                value,
                style: Style::Plain,
                tagged: false,
            } if is_null(value) => Some(""),
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True for a plain null (`~`, `null`, empty) or an absent node.
    pub fn is_null(&self, id: NodeId) -> bool {
        matches!(&self.node(id).kind, Kind::Scalar { value, style: Style::Plain, tagged: false } if is_null(value))
    }

    /// The entries of a mapping (after following an alias); `None` when it is not one.
    pub fn map(&self, id: NodeId) -> Option<&[(NodeId, NodeId)]> {
        match &self.node(id).kind {
            Kind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The items of a sequence (after following an alias); `None` when it is not one.
    pub fn seq(&self, id: NodeId) -> Option<&[NodeId]> {
        match &self.node(id).kind {
            Kind::Seq(i) => Some(i),
            _ => None,
        }
    }

    /// Looks `key` up in mapping `map`: its own entries first, then its merge sources.
    pub fn get(&self, map: NodeId, key: &str) -> Option<Entry> {
        self.get_depth(map, key, 0)
    }

    fn get_depth(&self, map: NodeId, key: &str, depth: usize) -> Option<Entry> {
        let entries = self.map(map)?;
        if let Some((k, v)) = entries
            .iter()
            .find(|(k, _)| !self.is_merge_key(*k) && self.go_str(*k) == Some(key))
        {
            return Some(Entry {
                key: *k,
                value: *v,
                merged: depth > 0,
            });
        }
        if depth >= MAX_MERGE_DEPTH {
            return None;
        }
        self.merge_sources(map)
            .into_iter()
            .find_map(|src| self.get_depth(src, key, depth + 1))
            .map(|e| Entry { merged: true, ..e })
    }

    /// The mappings a mapping merges in (`<<: *a` or `<<: [*a, *b]`), highest precedence first.
    pub fn merge_sources(&self, map: NodeId) -> Vec<NodeId> {
        let Some(entries) = self.map(map) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            if !self.is_merge_key(*k) {
                continue;
            }
            match &self.node(*v).kind {
                Kind::Map(_) => out.push(*v),
                Kind::Seq(items) => out.extend(items.iter().copied()),
                _ => {}
            }
        }
        out
    }

    /// True for a `<<` key (plain, untagged).
    pub fn is_merge_key(&self, id: NodeId) -> bool {
        matches!(&self.nodes[id].kind, Kind::Scalar { value, style: Style::Plain, tagged: false } if value == "<<")
    }

    /// All `(key, value)` pairs of a mapping as Go reads them into `map[string]string`,
    /// merge sources included (own keys win, then earlier sources). Values that are not
    /// scalars are skipped.
    pub fn string_map(&self, map: NodeId) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        self.collect_strings(map, &mut out, 0);
        out
    }

    fn collect_strings(&self, map: NodeId, out: &mut Vec<(String, String)>, depth: usize) {
        let Some(entries) = self.map(map) else { return };
        for (k, v) in entries {
            if self.is_merge_key(*k) {
                continue;
            }
            if let (Some(k), Some(v)) = (self.go_str(*k), self.go_str(*v))
                && !out.iter().any(|(have, _)| have == k)
            {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
        if depth < MAX_MERGE_DEPTH {
            for src in self.merge_sources(map) {
                self.collect_strings(src, out, depth + 1);
            }
        }
    }

    /// The line break the text uses (`\r\n` when its first line break is one).
    pub fn eol(&self) -> &'static str {
        match self.text.find('\n') {
            Some(i) if i > 0 && self.text.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        }
    }

    /// Byte offset of the start of the line holding `pos`.
    pub fn line_start(&self, pos: usize) -> usize {
        self.text[..pos].rfind('\n').map_or(0, |i| i + 1)
    }

    /// The column (in characters) of byte offset `pos`.
    pub fn column(&self, pos: usize) -> usize {
        self.text[self.line_start(pos)..pos].chars().count()
    }

    /// Converts a node to a serde_yaml value (YAML 1.2 core schema, as serde_yaml reads it),
    /// following aliases, to compare it with configuration read by serde_yaml. `budget` bounds
    /// the nodes visited (aliases repeat their target).
    pub fn to_value(&self, id: NodeId, budget: &mut usize) -> Option<serde_yaml::Value> {
        use serde_yaml::Value;
        *budget = budget.checked_sub(1)?;
        Some(match &self.node(id).kind {
            Kind::Scalar {
                value,
                style: Style::Plain,
                tagged: false,
            } if plain_is_string(value) => Value::String(value.to_string()),
            Kind::Scalar {
                value,
                style: Style::Plain,
                tagged: false,
            } => serde_yaml::from_str::<Value>(value).unwrap_or(Value::String(value.to_string())),
            Kind::Scalar { value, .. } => Value::String(value.to_string()),
            Kind::Seq(items) => Value::Sequence(
                items
                    .iter()
                    .map(|i| self.to_value(*i, budget))
                    .collect::<Option<_>>()?,
            ),
            Kind::Map(entries) => {
                let mut m = serde_yaml::Mapping::new();
                for (k, v) in entries {
                    m.insert(self.to_value(*k, budget)?, self.to_value(*v, budget)?);
                }
                Value::Mapping(m)
            }
            Kind::Alias(_) => return None,
        })
    }
}

/// True for a plain scalar that serde_yaml (YAML 1.2 core schema) can only read as a string: it
/// starts with a letter, `_` or `/` and is none of the null, boolean or special-float words. Such
/// scalars (most of a Prometheus config) skip a whole serde_yaml parse each in [`Tree::to_value`].
fn plain_is_string(s: &str) -> bool {
    let Some(first) = s.bytes().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'/') {
        return false;
    }
    !matches!(
        s,
        "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
    ) && !["inf", "infinity", "nan"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

/// Where [`Tree::get`] found a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The key node.
    pub key: NodeId,
    /// The value node (possibly an alias).
    pub value: NodeId,
    /// True when the key comes from a merge source, not from the mapping itself.
    pub merged: bool,
}

/// The plain scalars YAML reads as null.
pub fn is_null(plain: &str) -> bool {
    matches!(plain, "" | "~" | "null" | "Null" | "NULL")
}

/// `end` moved back over the given trailing bytes (never before `start`).
fn trim_end(text: &str, start: usize, mut end: usize, bytes: &[u8]) -> usize {
    let b = text.as_bytes();
    while end > start && bytes.contains(&b[end - 1]) {
        end -= 1;
    }
    end
}

/// Skips `&anchor` and `!tag` properties (and the blanks after them) at the start of a scalar.
fn skip_properties(text: &str, mut pos: usize, end: usize) -> usize {
    let b = text.as_bytes();
    while pos < end && (b[pos] == b'&' || b[pos] == b'!') {
        while pos < end && !b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        while pos < end && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span<'t>(t: &'t Tree, id: NodeId) -> &'t str {
        &t.text[t.nodes[id].start..t.nodes[id].end]
    }

    #[test]
    fn spans_cover_what_was_written() {
        let text = "\u{feff}# c\r\n---\r\na: &x 'q''s' # c\r\nb: {c: \"d\", e: [1, 2]}\r\nf:\r\n- g: |+\r\n    lit\r\n\r\n  h: 0.50\r\ni: *x\r\n...\r\n--- ignored: [\r\n";
        let t = Tree::parse(text).unwrap();
        let root = t.root.unwrap();
        assert_eq!(span(&t, t.get(root, "a").unwrap().value), "&x 'q''s'");
        assert_eq!(t.go_str(t.get(root, "a").unwrap().value), Some("q's"));
        assert_eq!(
            span(&t, t.get(root, "b").unwrap().value),
            "{c: \"d\", e: [1, 2]}"
        );
        let f = t.get(root, "f").unwrap().value;
        let item = t.seq(f).unwrap()[0];
        let g = t.get(item, "g").unwrap().value;
        assert_eq!(
            t.go_str(g),
            Some("lit\r\n\r\n").map(|s| s.replace('\r', "")).as_deref()
        );
        assert!(span(&t, g).ends_with("lit\r\n\r\n"));
        assert_eq!(t.go_str(t.get(item, "h").unwrap().value), Some("0.50"));
        assert_eq!(span(&t, item), "g: |+\r\n    lit\r\n\r\n  h: 0.50");
        assert_eq!(t.go_str(t.get(root, "i").unwrap().value), Some("q's"));
        assert_eq!(t.eol(), "\r\n");
    }

    #[test]
    fn unicode_offsets_are_bytes() {
        let t = Tree::parse("é: «ü»\nk: v\n").unwrap();
        let v = t.get(t.root.unwrap(), "k").unwrap().value;
        assert_eq!(span(&t, v), "v");
    }

    #[test]
    fn merge_keys_supply_missing_keys() {
        let t = Tree::parse("b: &b {x: 1, y: 2}\nm: {<<: *b, y: 3}\n").unwrap();
        let m = t.get(t.root.unwrap(), "m").unwrap().value;
        let x = t.get(m, "x").unwrap();
        assert!(x.merged);
        assert_eq!(t.go_str(x.value), Some("1"));
        assert_eq!(t.go_str(t.get(m, "y").unwrap().value), Some("3"));
        assert_eq!(
            t.string_map(m),
            vec![("y".into(), "3".into()), ("x".into(), "1".into())]
        );
    }

    #[test]
    fn self_alias_and_deep_flow_are_errors() {
        assert!(Tree::parse("a: &a [*a]\n").is_err());
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(Tree::parse(&deep).is_err());
        let flood = format!(
            "big: &b \"{}\"\nl: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*b"; 100].join(",")
        );
        let e = Tree::parse(&flood).unwrap_err();
        assert!(e.message.contains("expands to more than 64 MiB"), "{e}");
        assert!(Tree::parse("").unwrap().root.is_none());
        assert!(Tree::parse("# only\n").unwrap().root.is_none());
    }

    #[test]
    fn the_string_fast_path_agrees_with_serde_yaml() {
        for w in [
            "kubernetes-pods",
            "__address__",
            "/federate",
            "https",
            "a b",
            "yes",
            "No",
            "on",
            "y",
            "infinite",
            "nano",
            "Inf",
            "inf",
            "NaN",
            "nan",
            "Infinity",
            "null",
            "Null",
            "NULL",
            "true",
            "True",
            "TRUE",
            "false",
            "FALSE",
            "tRUE",
            "x1e3",
            "e3",
            "_1",
        ] {
            let serde: serde_yaml::Value =
                serde_yaml::from_str(w).unwrap_or(serde_yaml::Value::String(w.into()));
            if plain_is_string(w) {
                assert_eq!(serde, serde_yaml::Value::String(w.into()), "{w}");
            }
        }
    }
}
