//! Text splices on a [`Tree`]'s source: the only bytes of a document promfed changes.
//!
//! Inserted text follows its surroundings: block entries take the indentation of their
//! siblings and the document's line break, flow collections get flow text, and every scalar
//! is written in a form that reads back as exactly the intended string in YAML 1.1 (Go's
//! `yaml.v2`, which reads `prometheus.yml`) and YAML 1.2 (`yaml.v3`, rule files; serde_yaml):
//! plain only when no reader could take it for anything else, quoted otherwise.

use serde_yaml::Value;

use super::tree::{Kind, NodeId, Style, Tree};

/// Two edits want to change overlapping text differently (a node shared through an anchor
/// that two places need to change in different ways).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two edits overlap at byte {at} (a node shared through an anchor needs different changes)")]
pub struct OverlapError {
    /// Where the second edit starts.
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Splice {
    start: usize,
    end: usize,
    /// Among insertions at one place, deeper (more indented) text goes first: it closes the
    /// inner collection before the outer one continues.
    depth: usize,
    text: String,
}

/// The edits planned for one document, applied at once by [`Splices::apply`].
#[derive(Debug, Default)]
pub struct Splices {
    list: Vec<Splice>,
}

impl Splices {
    /// Replaces `start..end` with `text`.
    pub fn replace(&mut self, start: usize, end: usize, text: String) {
        self.list.push(Splice {
            start,
            end,
            depth: 0,
            text,
        });
    }

    /// Inserts whole lines indented by `depth` columns at `at`.
    fn insert_lines(&mut self, at: usize, depth: usize, text: String) {
        self.list.push(Splice {
            start: at,
            end: at,
            depth,
            text,
        });
    }

    /// Inserts `text` at `at`.
    pub fn insert(&mut self, at: usize, text: String) {
        self.replace(at, at, text);
    }

    /// True when nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Applies the edits. Identical edits (the same shared node reached twice) count once.
    /// Returns `None` when the result equals `text`.
    pub fn apply(mut self, text: &str) -> Result<Option<String>, OverlapError> {
        // Stable: insertions at one place keep the order they were planned in.
        self.list
            .sort_by_key(|s| (s.start, s.end, std::cmp::Reverse(s.depth)));
        self.list.dedup();
        let mut out = String::with_capacity(text.len() + 256);
        let mut pos = 0;
        for s in &self.list {
            if s.start < pos || s.end < s.start || s.end > text.len() {
                return Err(OverlapError { at: s.start });
            }
            out.push_str(&text[pos..s.start]);
            out.push_str(&s.text);
            pos = s.end;
        }
        out.push_str(&text[pos..]);
        Ok((out != text).then_some(out))
    }
}

/// How a document indents nested collections, learnt from the document itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Columns a nested block mapping is indented by (default 2).
    pub map_step: usize,
    /// Columns a block sequence under a key is indented by (0: `key:\n- a`, 2: `key:\n  - a`).
    pub seq_step: usize,
}

impl Layout {
    /// Looks at the first nested block mapping and block sequence under a key.
    pub fn of(tree: &Tree) -> Self {
        let mut layout = Layout {
            map_step: 2,
            seq_step: 0,
        };
        let (mut map_seen, mut seq_seen) = (false, false);
        for node in &tree.nodes {
            let Kind::Map(entries) = &node.kind else {
                continue;
            };
            if node.flow {
                continue;
            }
            for (k, v) in entries {
                let child = &tree.nodes[*v];
                if child.flow || tree.is_alias(*v) {
                    continue;
                }
                let key_col = tree.column(tree.nodes[*k].start);
                match &child.kind {
                    Kind::Map(e) if !map_seen && !e.is_empty() => {
                        let col = tree.column(tree.nodes[e[0].0].start);
                        if col > key_col {
                            layout.map_step = col - key_col;
                            map_seen = true;
                        }
                    }
                    Kind::Seq(items) if !seq_seen && !items.is_empty() => {
                        if let Some(dash) = dash_before(tree, tree.nodes[items[0]].start) {
                            layout.seq_step = tree.column(dash).saturating_sub(key_col);
                            seq_seen = true;
                        }
                    }
                    _ => {}
                }
            }
            if map_seen && seq_seen {
                break;
            }
        }
        layout
    }
}

/// The `-` introducing the block sequence item that starts at `item_start`.
pub fn dash_before(tree: &Tree, item_start: usize) -> Option<usize> {
    let b = tree.text.as_bytes();
    let mut p = item_start;
    while p > 0 && matches!(b[p - 1], b' ' | b'\t') {
        p -= 1;
    }
    (p > 0 && b[p - 1] == b'-').then(|| p - 1)
}

/// Plans text insertions after existing nodes.
pub struct Editor<'t, 'a> {
    /// The document.
    pub tree: &'t Tree<'a>,
    /// The planned edits.
    pub splices: Splices,
    /// Its indentation habits.
    pub layout: Layout,
    eol: &'static str,
}

impl<'t, 'a> Editor<'t, 'a> {
    /// An editor with no edits planned.
    pub fn new(tree: &'t Tree<'a>) -> Self {
        Self {
            tree,
            splices: Splices::default(),
            layout: Layout::of(tree),
            eol: tree.eol(),
        }
    }

    /// The document's line break.
    pub fn eol(&self) -> &'static str {
        self.eol
    }

    /// Inserts whole lines (already indented) after the line where `end` lies, or at `end`
    /// when it is the start of a line (after a block scalar).
    pub fn lines_after(&mut self, end: usize, lines: &[String]) {
        let text = self.tree.text;
        let body = lines.join(self.eol);
        let depth = lines
            .first()
            .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
        if end > 0 && text.as_bytes()[end - 1] == b'\n' {
            self.splices
                .insert_lines(end, depth, format!("{body}{}", self.eol));
            return;
        }
        let at = match text[end..].find('\n') {
            Some(i) if i > 0 && text.as_bytes()[end + i - 1] == b'\r' => end + i - 1,
            Some(i) => end + i,
            None => text.len(),
        };
        self.splices
            .insert_lines(at, depth, format!("{}{body}", self.eol));
    }

    /// Adds `key: value` to mapping `map` (not an alias), after its last entry.
    pub fn add_entry(&mut self, map: NodeId, key: &str, value: &Value) {
        let tree = self.tree;
        let node = &tree.nodes[map];
        let Kind::Map(entries) = &node.kind else {
            return;
        };
        if node.flow {
            let item = format!("{}: {}", scalar(key, true), flow(value));
            self.add_flow_item(map, entries.last().map(|(_, v)| *v), item);
            return;
        }
        let Some((first_key, last_value)) = entries
            .first()
            .map(|(k, _)| *k)
            .zip(entries.last().map(|(_, v)| *v))
        else {
            return;
        };
        let col = tree.column(tree.nodes[first_key].start);
        let lines = self.entry_lines(key, value, col);
        let end = tree.nodes[last_value].end;
        self.lines_after(end, &lines);
    }

    /// Appends `item` to sequence `seq` (not an alias), after its last item.
    pub fn add_item(&mut self, seq: NodeId, item: &Value) -> bool {
        let tree = self.tree;
        let node = &tree.nodes[seq];
        let Kind::Seq(items) = &node.kind else {
            return false;
        };
        if node.flow {
            self.add_flow_item(seq, items.last().copied(), flow(item));
            return true;
        }
        let Some((first, last)) = items.first().zip(items.last()) else {
            return false;
        };
        let Some(dash) = dash_before(tree, tree.nodes[*first].start) else {
            return false;
        };
        let dash_col = tree.column(dash);
        let gap = tree.nodes[*first].start - dash - 1;
        // Items written as flow mappings (`- {a: b}`) get a flow mapping too.
        let first_flow = tree.nodes[*first].flow;
        let lines = if first_flow || !is_nonempty_collection(item) {
            vec![format!(
                "{}-{}{}",
                " ".repeat(dash_col),
                " ".repeat(gap),
                flow_or_scalar(item)
            )]
        } else {
            self.item_lines(item, dash_col, gap)
        };
        self.lines_after(tree.nodes[*last].end, &lines);
        true
    }

    /// The lines of a block sequence item `- ...` with its dash at `dash_col`.
    pub fn item_lines(&self, item: &Value, dash_col: usize, gap: usize) -> Vec<String> {
        let inner = dash_col + 1 + gap;
        let mut lines = Vec::new();
        block_lines(item, inner, self.layout, &mut lines);
        if let Some(first) = lines.first_mut() {
            *first = format!(
                "{}-{}{}",
                " ".repeat(dash_col),
                " ".repeat(gap),
                first.trim_start_matches(' ')
            );
        }
        lines
    }

    fn entry_lines(&self, key: &str, value: &Value, col: usize) -> Vec<String> {
        let mut lines = Vec::new();
        entry_into(&scalar(key, false), value, col, self.layout, &mut lines);
        lines
    }

    /// Adds `item` (flow text; several items joined by `, ` are fine) at the end of flow
    /// collection `coll`.
    pub fn add_flow_text(&mut self, coll: NodeId, item: String) {
        let last = match &self.tree.nodes[coll].kind {
            Kind::Seq(items) => items.last().copied(),
            Kind::Map(entries) => entries.last().map(|(_, v)| *v),
            _ => None,
        };
        self.add_flow_item(coll, last, item);
    }

    fn add_flow_item(&mut self, coll: NodeId, last: Option<NodeId>, item: String) {
        let node = &self.tree.nodes[coll];
        match last {
            Some(last) => self
                .splices
                .insert(self.tree.nodes[last].end, format!(", {item}")),
            None => self.splices.insert(node.end.saturating_sub(1), item),
        }
    }

    /// Replaces the value of scalar or alias `id` with `value` (anchor and tag kept; block
    /// scalars keep their header and indentation when the new value is one clean line).
    pub fn replace_scalar(&mut self, id: NodeId, value: &str, in_flow: bool) {
        let tree = self.tree;
        let node = &tree.nodes[id];
        let text = tree.text;
        match &node.kind {
            Kind::Scalar { style, .. } if style.is_block() => {
                let content_end = trim_ws_end(text, node.body, node.end);
                let clean = !value.is_empty()
                    && !value.contains(['\n', '\r'])
                    && !value.starts_with([' ', '\t'])
                    && !value.ends_with([' ', '\t'])
                    && value.chars().all(|c| !c.is_control() || c == '\t');
                if clean && content_end > node.body {
                    self.splices
                        .replace(node.body, content_end, value.to_owned());
                } else {
                    // Replace the header too: the first `|`/`>` before the content.
                    let header = text[..node.body].rfind(['|', '>']).unwrap_or(node.body);
                    self.splices
                        .replace(header, content_end, scalar(value, in_flow));
                }
            }
            Kind::Scalar {
                style, value: old, ..
            } => {
                let new = styled_scalar(value, *style, in_flow);
                if node.body == node.end && old.is_empty() {
                    // An empty value: its span sits before the `:`; write after it.
                    let at = text[node.end..]
                        .find(':')
                        .map_or(node.end, |i| node.end + i + 1);
                    self.splices.insert(at, format!(" {new}"));
                } else {
                    self.splices.replace(node.body, node.end, new);
                }
            }
            _ => {
                let new = scalar(value, in_flow);
                self.splices.replace(node.body, node.end, new);
            }
        }
    }

    /// Replaces node `id` with `value`: a block collection in block form at its own indentation,
    /// anything else (flow, alias) in flow form.
    pub fn replace_node(&mut self, id: NodeId, value: &Value) {
        let tree = self.tree;
        let node = &tree.nodes[id];
        if node.flow || tree.is_alias(id) || !matches!(node.kind, Kind::Map(_) | Kind::Seq(_)) {
            self.replace_with_flow(id, value);
            return;
        }
        let col = tree.column(node.body);
        let mut lines = Vec::new();
        block_lines(value, col, self.layout, &mut lines);
        let text = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    l.trim_start_matches(' ')
                } else {
                    l.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(self.eol);
        self.splices.replace(node.body, node.end, text);
    }

    /// Removes item `index` of sequence `seq` (not an alias): its lines in a block sequence, or
    /// the sequence written again in flow form without it. False when it cannot be done.
    pub fn remove_item(&mut self, seq: NodeId, index: usize) -> bool {
        let tree = self.tree;
        let node = &tree.nodes[seq];
        let Kind::Seq(items) = &node.kind else {
            return false;
        };
        let Some(&item) = items.get(index) else {
            return false;
        };
        if node.flow {
            let mut budget = 1_000_000;
            let rest: Option<Vec<Value>> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, id)| tree.to_value(*id, &mut budget))
                .collect();
            let Some(rest) = rest else { return false };
            self.replace_with_flow(seq, &Value::Sequence(rest));
            return true;
        }
        let Some(dash) = dash_before(tree, tree.nodes[item].start) else {
            return false;
        };
        let text = tree.text;
        let start = tree.line_start(dash);
        if text[start..dash].trim() != "" {
            // Something else on the dash's line (`key: - x` cannot happen; be safe anyway).
            return false;
        }
        // To the end of the item's last line (comment lines before the next item are its own).
        let e = tree.nodes[item].end;
        let end = Some(if e > 0 && text.as_bytes()[e - 1] == b'\n' {
            e
        } else {
            text[e..].find('\n').map_or(text.len(), |i| e + i + 1)
        });
        let Some(end) = end.filter(|e| *e > start) else {
            return false;
        };
        self.splices.replace(start, end, String::new());
        true
    }

    /// Replaces node `id` (any kind; anchor and tag kept) with `value`, in flow form.
    pub fn replace_with_flow(&mut self, id: NodeId, value: &Value) {
        let node = &self.tree.nodes[id];
        if node.body == node.end {
            let at = self.tree.text[node.end..]
                .find(':')
                .map_or(node.end, |i| node.end + i + 1);
            self.splices.insert(at, format!(" {}", flow(value)));
        } else {
            self.splices.replace(node.body, node.end, flow(value));
        }
    }
}

fn is_nonempty_collection(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        _ => false,
    }
}

fn trim_ws_end(text: &str, start: usize, mut end: usize) -> usize {
    let b = text.as_bytes();
    while end > start && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// `value` in the style it had (`old`) when that style can hold it exactly, otherwise the
/// simplest form that can.
pub fn styled_scalar(value: &str, old: Style, in_flow: bool) -> String {
    match old {
        Style::Single if single_ok(value) => single(value),
        Style::Double => double(value),
        _ => scalar(value, in_flow),
    }
}

/// The simplest scalar text that reads back as exactly the string `s` in YAML 1.1 and 1.2.
pub fn scalar(s: &str, in_flow: bool) -> String {
    if plain_ok(s, in_flow) {
        s.to_owned()
    } else if single_ok(s) {
        single(s)
    } else {
        double(s)
    }
}

/// True when `s` can be written plain and still be read as that very string by every reader.
/// (One pass over the bytes: it runs for every key and value promfed writes.)
pub fn plain_ok(s: &str, in_flow: bool) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first)
        || matches!(first, b' ' | b'\t')
        || matches!(last, b' ' | b'\t' | b':')
        || looks_numeric(s)
    {
        return false;
    }
    let mut prev = 0u8;
    for &c in b {
        let bad = match c {
            b'\t' => true,
            b' ' => prev == b':',
            b'#' => prev == b' ',
            b',' | b'[' | b']' | b'{' | b'}' | b':' => in_flow,
            c => c < 0x20 || c == 0x7f,
        };
        if bad {
            return false;
        }
        prev = c;
    }
    if !s.is_ascii() && s.chars().any(needs_escape) {
        return false;
    }
    // Booleans, nulls and the like of YAML 1.1 (Go yaml.v2) and 1.2.
    ![
        "~", "null", "true", "false", "yes", "no", "y", "n", "on", "off", "=", ".inf", "+.inf",
        ".nan",
    ]
    .iter()
    .any(|w| w.eq_ignore_ascii_case(s))
}

/// Could a YAML 1.1 or 1.2 reader take `s` for a number (decimal, hex, octal, binary, float,
/// sexagesimal `1:20`, with `_` separators)? Conservative: any such character soup counts.
fn looks_numeric(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '.')
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "xXoO._+-:".contains(c))
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{85}')
}

fn single_ok(s: &str) -> bool {
    !s.chars().any(|c| needs_escape(c) || c == '\t')
}

fn single(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `s` double-quoted, escaping what YAML requires and every control character.
pub fn double(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A scalar value of configuration (read by serde_yaml) written back.
fn value_scalar(v: &Value, in_flow: bool) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s, in_flow),
        Value::Tagged(t) => format!("{} {}", t.tag, flow(&t.value)),
        Value::Sequence(_) | Value::Mapping(_) => flow(v),
    }
}

fn flow_or_scalar(v: &Value) -> String {
    flow(v)
}

/// `v` in flow style (`{a: b, c: [d]}`).
pub fn flow(v: &Value) -> String {
    match v {
        Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Mapping(m) => {
            let entries: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", value_scalar(k, true), flow(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        other => value_scalar(other, true),
    }
}

/// One block mapping entry `key: value` (`key` already written as a scalar), the key at column
/// `indent`: a scalar value on the key's line, a collection on the lines below.
fn entry_into(key: &str, val: &Value, indent: usize, layout: Layout, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match val {
        Value::Mapping(inner) if !inner.is_empty() => {
            out.push(format!("{pad}{key}:"));
            block_lines(val, indent + layout.map_step, layout, out);
        }
        // Lists of scalars stay on the key's line (`source_labels: [a, b]`).
        Value::Sequence(inner) if !inner.is_empty() && inner.iter().any(is_nonempty_collection) => {
            out.push(format!("{pad}{key}:"));
            block_lines(val, indent + layout.seq_step, layout, out);
        }
        other => out.push(format!("{pad}{key}: {}", value_scalar(other, false))),
    }
}

/// `v` in block style, each line indented by `indent` columns (mappings and sequences only;
/// scalars and empty collections take one line).
pub fn block_lines(v: &Value, indent: usize, layout: Layout, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, val) in m {
                entry_into(&value_scalar(k, false), val, indent, layout, out);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            for item in items {
                if is_nonempty_collection(item) && !matches!(item, Value::Sequence(_)) {
                    let start = out.len();
                    block_lines(item, indent + 2, layout, out);
                    if let Some(first) = out.get_mut(start) {
                        *first = format!("{pad}- {}", first.trim_start_matches(' '));
                    }
                } else {
                    out.push(format!("{pad}- {}", value_scalar(item, false)));
                }
            }
        }
        other => out.push(format!("{pad}{}", value_scalar(other, false))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_back(s: &str) {
        for in_flow in [false, true] {
            let text = if in_flow {
                format!("{{k: {}}}", scalar(s, true))
            } else {
                format!("k: {}\n", scalar(s, false))
            };
            let v: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(v["k"], Value::String(s.to_owned()), "{text:?}");
            let t = Tree::parse(&text).unwrap();
            let k = t.get(t.root.unwrap(), "k").unwrap().value;
            assert_eq!(t.go_str(k), Some(s), "{text:?}");
        }
    }

    #[test]
    fn scalars_read_back_exactly() {
        for s in [
            "tools",
            "0.50",
            "True",
            "yes",
            "No",
            "~",
            "null",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "#c",
            "-x",
            "- x",
            "x-",
            "1e3",
            "0x1F",
            "it's",
            "say \"hi\"",
            "tab\there",
            "line\nbreak",
            "\u{feff}bom",
            "ünï",
            "{a}",
            "a,b",
            "*x",
            "&a",
            "!t",
            "%p",
            "@a",
            "`b",
            "|",
            ">",
            "=",
            "<<",
            "1:20",
            "0b101",
            "1_000",
            ".5",
            "+1",
            ".Inf",
            "1 - x",
            "sum(rate(x{a=\"b\"}[5m]))",
            "\\Q[\\E",
            "end:",
        ] {
            reads_back(s);
        }
        assert_eq!(scalar("tools", false), "tools");
        assert_eq!(scalar("0.50", false), "'0.50'");
    }

    #[test]
    fn splices_dedup_and_refuse_overlaps() {
        let mut s = Splices::default();
        s.insert(1, "X".into());
        s.insert(1, "X".into());
        s.replace(2, 3, "Y".into());
        assert_eq!(s.apply("abcd").unwrap().as_deref(), Some("aXbYd"));
        let mut s = Splices::default();
        s.replace(0, 3, "Z".into());
        s.replace(1, 2, "W".into());
        assert!(s.apply("abcd").is_err());
        assert_eq!(Splices::default().apply("same").unwrap(), None);
    }

    #[test]
    fn entries_and_items_follow_their_surroundings() {
        let text = "a:\r\n  b: 1 # c\r\n  l:\r\n    - x\r\nf: {g: 1}\r\ns: [1]\r\n";
        let t = Tree::parse(text).unwrap();
        let root = t.root.unwrap();
        let mut e = Editor::new(&t);
        let a = t.get(root, "a").unwrap().value;
        e.add_entry(a, "new", &Value::String("0.50".into()));
        let l = t.get(a, "l").unwrap().value;
        let mut item = serde_yaml::Mapping::new();
        item.insert("k".into(), "v".into());
        item.insert("m".into(), Value::Sequence(vec!["z".into()]));
        e.add_item(l, &Value::Mapping(item));
        e.add_entry(t.get(root, "f").unwrap().value, "h", &Value::Bool(true));
        e.add_item(t.get(root, "s").unwrap().value, &Value::from(2));
        let out = e.splices.apply(text).unwrap().unwrap();
        assert_eq!(
            out,
            "a:\r\n  b: 1 # c\r\n  l:\r\n    - x\r\n    - k: v\r\n      m: [z]\r\n  new: '0.50'\r\nf: {g: 1, h: true}\r\ns: [1, 2]\r\n"
        );
    }
}
