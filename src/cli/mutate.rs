//! `promfed mutate`: the engine over a stream of documents (a file, `helm template`, `ytt`).
//! Documents that are not rewritten are written back verbatim, comments included.

use serde_json::{Value, json};

use crate::config::Values;
use crate::rewrite::{Mutation, Target, mutate_object};

/// What `promfed mutate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The documents as YAML; untouched documents verbatim.
    Yaml,
    /// The documents as JSON (several become a `v1` `List`).
    Json,
    /// The RFC 6902 patch (several documents: one entry per rewritten object).
    Patch,
    /// A unified diff of what changes.
    Diff,
}

/// The printed result and the messages to show on stderr.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamOutput {
    /// What goes to stdout.
    pub text: String,
    /// Findings a user can act on (`--strict` turns them into errors).
    pub warnings: Vec<String>,
    /// True when some document changes (`-o diff` exits 1 then, as `kubectl diff`).
    pub changed: bool,
}

/// One named input: a file's text, or stdin's.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// File name for messages; `None` for a single anonymous stream.
    pub name: Option<String>,
    /// The whole text (a YAML stream, or JSON).
    pub text: String,
}

/// Why a stream could not be mutated; names the file, document and line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A document is neither valid YAML nor JSON.
    #[error("{at}: not valid {format}: {message}")]
    Parse {
        /// `file: document N (line L)`.
        at: String,
        /// What it was parsed as.
        format: &'static str,
        /// The parser's message, with file line numbers.
        message: String,
    },
    /// A matching object cannot be rewritten.
    #[error("{at} ({what}): {error}")]
    Rewrite {
        /// `file: document N (line L)`.
        at: String,
        /// `Kind namespace/name`.
        what: String,
        /// Why, naming the key, group and rule.
        error: Box<crate::rewrite::RewriteError>,
    },
    /// The engine's patch does not apply to its own input (a bug; never silently ignored).
    #[error("{at} ({what}): the patch does not apply: {message}")]
    Apply {
        /// `file: document N (line L)`.
        at: String,
        /// `Kind namespace/name`.
        what: String,
        /// json-patch's message.
        message: String,
    },
    /// The output cannot be rendered.
    #[error("cannot serialise the output: {0}")]
    Serialise(String),
}

/// One input document: where it came from, its verbatim text (YAML input only), its JSON form.
struct Doc {
    at: String,
    raw: Option<String>,
    value: Value,
}

/// The mutation of one document, applied.
struct Done {
    before: Value,
    after: Value,
    target: Option<Target>,
    /// The RFC 6902 operations, with paths relative to this document (List items prefixed).
    ops: Vec<Value>,
    raw: Option<String>,
}

/// Rewrites every matching object of `input` (YAML stream or JSON) and renders `format`.
pub fn mutate_stream(
    input: &str,
    values: &Values,
    format: OutputFormat,
) -> Result<StreamOutput, StreamError> {
    let input = Input {
        name: None,
        text: input.to_owned(),
    };
    mutate_inputs(std::slice::from_ref(&input), values, format)
}

/// Rewrites every matching object of every input, in order, as one stream.
pub fn mutate_inputs(
    inputs: &[Input],
    values: &Values,
    format: OutputFormat,
) -> Result<StreamOutput, StreamError> {
    let mut docs = Vec::new();
    for input in inputs {
        docs.extend(parse_stream(input)?);
    }
    let mut out = StreamOutput::default();
    let mut done = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut after = doc.value.clone();
        let mut target = None;
        let mut ops = Vec::new();
        let mut warnings = Vec::new();
        let is_list = doc.value.get("kind").and_then(Value::as_str) == Some("List");
        match after.get_mut("items") {
            // `kubectl get -o yaml` of several objects: rewrite each item in place; the patch
            // paths point into the List.
            Some(Value::Array(items)) if is_list => {
                for (n, item) in items.iter_mut().enumerate() {
                    let m = apply_one(&doc.at, item, values)?;
                    target = target.or(m.target);
                    warnings.extend(m.warnings);
                    ops.extend(ops_under(&m.patch, &format!("/items/{n}"))?);
                }
            }
            _ => {
                let m = apply_one(&doc.at, &mut after, values)?;
                target = m.target;
                warnings = m.warnings;
                ops = ops_under(&m.patch, "")?;
            }
        }
        out.warnings.extend(
            warnings
                .iter()
                .map(|w| format!("{} ({}): {w}", doc.at, describe(&doc.value))),
        );
        done.push(Done {
            before: doc.value,
            after,
            target,
            ops,
            raw: doc.raw,
        });
    }
    if done.iter().all(|d| d.target.is_none()) {
        out.warnings.push(no_match(&done, values));
    }
    out.changed = done.iter().any(|d| !d.ops.is_empty());
    out.text = match format {
        OutputFormat::Yaml => render_yaml(&done)?,
        OutputFormat::Json => render_json(&done)?,
        OutputFormat::Patch => render_patch(&done)?,
        OutputFormat::Diff => render_diff(&done)?,
    };
    Ok(out)
}

/// The operations of `patch` as JSON, with `prefix` put before every path.
fn ops_under(patch: &json_patch::Patch, prefix: &str) -> Result<Vec<Value>, StreamError> {
    let Value::Array(mut ops) =
        serde_json::to_value(patch).map_err(|e| StreamError::Serialise(e.to_string()))?
    else {
        return Err(StreamError::Serialise("a patch is not a list".to_owned()));
    };
    prefix_paths(&mut ops, prefix);
    Ok(ops)
}

/// Puts `prefix` before the `path` (and `from`) of every operation.
fn prefix_paths(ops: &mut [Value], prefix: &str) {
    for op in ops {
        for key in ["path", "from"] {
            if let Some(Value::String(p)) = op.get_mut(key) {
                *p = format!("{prefix}{p}");
            }
        }
    }
}

/// Mutates `doc` in place and returns the mutation that did it.
fn apply_one(at: &str, doc: &mut Value, values: &Values) -> Result<Mutation, StreamError> {
    let mutation = mutate_object(doc, values).map_err(|error| StreamError::Rewrite {
        at: at.to_owned(),
        what: describe(doc),
        error: Box::new(error),
    })?;
    json_patch::patch(doc, &mutation.patch.0).map_err(|e| StreamError::Apply {
        at: at.to_owned(),
        what: describe(doc),
        message: e.to_string(),
    })?;
    Ok(mutation)
}

/// `Kind namespace/name` of an object, for messages.
fn describe(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str);
    crate::object_ref::describe(
        s("/kind").unwrap_or("object"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// Says that nothing matched and why the closest object missed (its name, a label, its kind),
/// so a renamed or relabelled ConfigMap does not pass through unnoticed.
fn no_match(done: &[Done], values: &Values) -> String {
    let objects: Vec<&Value> = done
        .iter()
        .flat_map(|d| match d.before.get("items") {
            Some(Value::Array(items))
                if d.before.get("kind").and_then(Value::as_str) == Some("List") =>
            {
                items.iter().collect()
            }
            _ => vec![&d.before],
        })
        .collect();
    let head = "no document matched match.configMap or match.deployment, nothing was rewritten";
    let cm = values.r#match.config_map.clone();
    let dep = values.r#match.deployment.object();
    let mut best: Option<(usize, String)> = None;
    for o in &objects {
        let s = |p: &str| o.pointer(p).and_then(Value::as_str);
        let wanted = match (s("/apiVersion"), s("/kind")) {
            (Some("v1"), Some("ConfigMap")) => ("match.configMap", &cm),
            (Some("apps/v1"), Some("Deployment")) => ("match.deployment", &dep),
            _ => continue,
        };
        let mut why = Vec::new();
        let name = s("/metadata/name").unwrap_or_default();
        if name != wanted.1.name {
            why.push(format!("its name is {name:?}, not {:?}", wanted.1.name));
        }
        for (k, v) in &wanted.1.labels {
            match o.pointer("/metadata/labels").and_then(|l| l.get(k)) {
                None => why.push(format!("it has no label {k}={v}")),
                Some(have) if have.as_str() != Some(v.as_str()) => {
                    why.push(format!("its label {k} is {have}, not {v:?}"));
                }
                Some(_) => {}
            }
        }
        let score = why.len();
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((
                score,
                format!(
                    "{head}; nearest miss: {} ({}): {}",
                    describe(o),
                    wanted.0,
                    why.join(", ")
                ),
            ));
        }
    }
    if let Some((_, message)) = best {
        return message;
    }
    if objects.is_empty() {
        return format!("{head}: the input holds no documents");
    }
    let kinds: Vec<String> = objects.iter().take(5).map(|o| describe(o)).collect();
    format!(
        "{head}: no v1 ConfigMap or apps/v1 Deployment in the input (found {}{})",
        kinds.join(", "),
        if objects.len() > 5 { ", ..." } else { "" }
    )
}

fn parse_stream(input: &Input) -> Result<Vec<Doc>, StreamError> {
    let file = input
        .name
        .as_deref()
        .map(|n| format!("{n}: "))
        .unwrap_or_default();
    let text = &input.text;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON, unless it is flow-style YAML (`{apiVersion: v1, ...}`): then the YAML path below.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            let docs = match v {
                Value::Array(items) => items,
                value => vec![value],
            };
            return Ok(docs
                .into_iter()
                .enumerate()
                .map(|(i, value)| Doc {
                    at: format!("{file}document {}", i + 1),
                    raw: None,
                    value,
                })
                .collect());
        }
    }
    let mut docs = Vec::new();
    for (line, chunk) in split_documents(text) {
        // The document's line is that of its first non-blank character (not the `---` marker).
        let blank = chunk.len() - chunk.trim_start().len();
        let first = line + chunk[..blank].matches('\n').count();
        let at = format!("{file}document {} (line {first})", docs.len() + 1);
        // Parse at the chunk's place in the file so the parser's line numbers are file lines.
        let placed = format!("{}{chunk}", "\n".repeat(line - 1));
        let y = crate::yaml::parse(&placed).map_err(|message| StreamError::Parse {
            at: at.clone(),
            format: "YAML",
            message,
        })?;
        if y.is_null() {
            continue;
        }
        let value = serde_json::to_value(&y).map_err(|e| StreamError::Parse {
            at: at.clone(),
            format: "YAML",
            message: e.to_string(),
        })?;
        docs.push(Doc {
            at,
            raw: Some(chunk.to_owned()),
            value,
        });
    }
    Ok(docs)
}

/// Splits a YAML stream at `---` document markers (at column 0) and drops `...` end markers.
/// Each document comes with the file line (from 1) its text starts on (a marker's own line,
/// whose rest belongs to the document).
fn split_documents(input: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut pos = 0;
    for (n, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker {
            docs.push((start_line, &input[start..pos]));
            // Content after the marker on the same line (`--- !tag` or `--- {a: 1}`) stays with the document.
            start = pos + 3;
            start_line = n + 1;
        } else if bare == "..." {
            docs.push((start_line, &input[start..pos]));
            start = pos + line.len();
            start_line = n + 2;
        }
        pos += line.len();
    }
    docs.push((start_line, &input[start..]));
    docs
}

fn to_yaml(v: &Value) -> Result<String, StreamError> {
    serde_yaml::to_string(v).map_err(|e| StreamError::Serialise(e.to_string()))
}

fn to_json(v: &Value) -> Result<String, StreamError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| StreamError::Serialise(e.to_string()))
}

fn render_yaml(done: &[Done]) -> Result<String, StreamError> {
    let mut parts = Vec::with_capacity(done.len());
    for d in done {
        let text = match (&d.raw, d.ops.is_empty()) {
            (Some(raw), true) => {
                let raw = raw.trim_start_matches(['\n', '\r']);
                if raw.ends_with('\n') {
                    raw.to_owned()
                } else {
                    format!("{raw}\n")
                }
            }
            _ => to_yaml(&d.after)?,
        };
        parts.push(text);
    }
    Ok(parts.join("---\n"))
}

fn render_json(done: &[Done]) -> Result<String, StreamError> {
    match done {
        [one] => to_json(&one.after),
        many => to_json(&json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": many.iter().map(|d| d.after.clone()).collect::<Vec<_>>(),
        })),
    }
}

/// One RFC 6902 patch, always a bare array, against the input as `-o json` shows it: the
/// object itself for one document, a `v1` `List` (paths `/items/N/...`) for several.
fn render_patch(done: &[Done]) -> Result<String, StreamError> {
    let ops: Vec<Value> = match done {
        [one] => one.ops.clone(),
        many => {
            let mut all = Vec::new();
            for (n, d) in many.iter().enumerate() {
                let mut ops = d.ops.clone();
                prefix_paths(&mut ops, &format!("/items/{n}"));
                all.extend(ops);
            }
            all
        }
    };
    to_json(&Value::Array(ops))
}

fn render_diff(done: &[Done]) -> Result<String, StreamError> {
    let mut out = String::new();
    for d in done.iter().filter(|d| !d.ops.is_empty()) {
        let what = describe(&d.before).replace(' ', "/");
        if d.target == Some(Target::ConfigMap)
            && d.before.get("kind").and_then(Value::as_str) == Some("ConfigMap")
        {
            let data_before = d.before.get("data").and_then(Value::as_object);
            let data_after = d.after.get("data").and_then(Value::as_object);
            for (key, new) in data_after.into_iter().flatten() {
                let old = data_before
                    .and_then(|m| m.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let new = new.as_str().unwrap_or("");
                if old != new {
                    // The rewrite keeps every byte it does not edit, so the plain text diff
                    // shows exactly promfed's edits.
                    out.push_str(&unified(old, new, &format!("{what}/data/{key}")));
                }
            }
        } else {
            out.push_str(&unified(&to_yaml(&d.before)?, &to_yaml(&d.after)?, &what));
        }
    }
    Ok(out)
}

fn unified(old: &str, new: &str, name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: prometheus-server\n  labels: {app: prometheus, component: server}\ndata:\n  prometheus.yml: |\n    scrape_configs:\n    - job_name: a\n      static_configs: [{targets: ['x:1']}]\n";

    fn run(input: &str, format: OutputFormat) -> StreamOutput {
        mutate_stream(input, &Values::default(), format).unwrap()
    }

    #[test]
    fn splits_at_markers_only() {
        let docs = split_documents("a: 1\n---\nb: |\n  ---x\n--- \nc: 3\n...\n");
        assert_eq!(
            docs,
            vec![
                (1, "a: 1\n"),
                (2, "\nb: |\n  ---x\n"),
                (5, " \nc: 3\n"),
                (8, "")
            ]
        );
    }

    #[test]
    fn other_documents_pass_verbatim() {
        let input = "# keep me\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata: {a: b}\n";
        let out = run(input, OutputFormat::Yaml);
        assert_eq!(out.text, input);
        assert!(!out.changed);
    }

    #[test]
    fn bad_documents_are_named_with_file_lines() {
        let e = mutate_stream("a: 1\n---\nb: [\n", &Values::default(), OutputFormat::Yaml)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("document 2 (line 3): not valid YAML"), "{e}");
        // A `---`-led stream (helm template): the leading empty document is not counted, and
        // the parser's line number is the file's.
        let e = mutate_stream(
            "---\n# Source: x\na: 1\n---\nb: 2\n---\nc: [\n",
            &Values::default(),
            OutputFormat::Yaml,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("document 3 (line 7): not valid YAML"), "{e}");
        assert!(e.contains("line 8"), "file line of the error: {e}");
        let named = Input {
            name: Some("x.yaml".to_owned()),
            text: "a: [\n".to_owned(),
        };
        let e = mutate_inputs(&[named], &Values::default(), OutputFormat::Yaml)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.yaml: document 1 (line 1): not valid YAML"),
            "{e}"
        );
    }

    #[test]
    fn rewrite_errors_use_the_same_document_numbers() {
        let bad = CM.replace(
            "static_configs: [{targets: ['x:1']}]",
            "static_configs: 3\n    - x",
        );
        let e = mutate_stream(
            &format!("---\na: 1\n---\n{bad}"),
            &Values::default(),
            OutputFormat::Yaml,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("document 2 (line 4) (ConfigMap prometheus-server)"),
            "{e}"
        );
    }

    #[test]
    fn flow_style_yaml_is_yaml_not_refused_json() {
        let input = "{apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
        let out = run(input, OutputFormat::Yaml);
        assert_eq!(out.text, input);
        let flow_cm = "{apiVersion: v1, kind: ConfigMap, metadata: {name: prometheus-server, labels: {app: prometheus, component: server}}, data: {prometheus.yml: 'scrape_configs: [{job_name: a}]'}}\n";
        assert!(run(flow_cm, OutputFormat::Patch).changed);
        // Real JSON stays JSON.
        let out = run(
            "{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"s\"}}",
            OutputFormat::Json,
        );
        assert!(out.text.contains("\"kind\": \"Secret\""), "{}", out.text);
    }

    #[test]
    fn patch_on_a_list_points_into_the_list() {
        let cm: Value = serde_yaml::from_str(CM).unwrap();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, cm]});
        let out = run(&list.to_string(), OutputFormat::Patch);
        let patch: json_patch::Patch = serde_json::from_str(&out.text).unwrap();
        let Value::Array(ops) = serde_json::from_str::<Value>(&out.text).unwrap() else {
            panic!("not an array: {}", out.text)
        };
        assert!(
            ops.iter()
                .all(|op| op["path"].as_str().unwrap().starts_with("/items/1/data/")),
            "{}",
            out.text
        );
        // It applies to the List and gives what -o json gives.
        let mut applied = list.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        let json: Value =
            serde_json::from_str(&run(&list.to_string(), OutputFormat::Json).text).unwrap();
        assert_eq!(applied, json);
    }

    #[test]
    fn patch_has_one_shape_for_one_or_many_documents() {
        let one: Value = serde_json::from_str(&run(CM, OutputFormat::Patch).text).unwrap();
        let stream = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\n{CM}");
        let many_text = run(&stream, OutputFormat::Patch).text;
        let many: Value = serde_json::from_str(&many_text).unwrap();
        assert!(one.is_array() && many.is_array(), "{one} {many}");
        assert!(
            one[0]["path"].as_str().unwrap().starts_with("/data/"),
            "{one}"
        );
        assert!(
            many[0]["path"]
                .as_str()
                .unwrap()
                .starts_with("/items/1/data/"),
            "{many}"
        );
        // The many-document patch applies to the stream as -o json shows it unmodified.
        let before = json!({"apiVersion": "v1", "kind": "List", "items": [
            serde_yaml::from_str::<Value>("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n").unwrap(),
            serde_yaml::from_str::<Value>(CM).unwrap(),
        ]});
        let mut applied = before;
        json_patch::patch(
            &mut applied,
            &serde_json::from_value::<json_patch::Patch>(many).unwrap(),
        )
        .unwrap();
        let after: Value = serde_json::from_str(&run(&stream, OutputFormat::Json).text).unwrap();
        assert_eq!(applied, after);
    }

    #[test]
    fn no_match_says_why_the_nearest_miss_failed() {
        let renamed = CM.replace("name: prometheus-server", "name: prometheus");
        let out = run(&renamed, OutputFormat::Yaml);
        assert_eq!(out.text, renamed, "passes through unchanged");
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        let w = &out.warnings[0];
        assert!(
            w.starts_with("no document matched")
                && w.contains("nearest miss: ConfigMap prometheus (match.configMap): its name is \"prometheus\", not \"prometheus-server\""),
            "{w}"
        );
        let unlabelled = CM.replace(", component: server", "");
        let w = &run(&unlabelled, OutputFormat::Yaml).warnings[0];
        assert!(w.contains("it has no label component=server"), "{w}");
        let w = &run(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
            OutputFormat::Yaml,
        )
        .warnings[0];
        assert!(
            w.contains("no v1 ConfigMap or apps/v1 Deployment in the input (found Secret s)"),
            "{w}"
        );
        assert!(run(CM, OutputFormat::Yaml).warnings.is_empty());
    }
}
