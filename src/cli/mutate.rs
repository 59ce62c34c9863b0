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

/// The printed result and the warnings to show on stderr.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamOutput {
    pub text: String,
    pub warnings: Vec<String>,
}

/// Why a stream could not be mutated; names the document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("document {index}: not valid {format}: {message}")]
    Parse {
        index: usize,
        format: &'static str,
        message: String,
    },
    #[error("document {index} ({what}): {error}")]
    Rewrite {
        index: usize,
        what: String,
        error: Box<crate::rewrite::RewriteError>,
    },
    #[error("document {index} ({what}): the patch does not apply: {message}")]
    Apply {
        index: usize,
        what: String,
        message: String,
    },
    #[error("cannot serialise the output: {0}")]
    Serialise(String),
}

/// One input document: its verbatim text (YAML input only) and its JSON form.
struct Doc {
    raw: Option<String>,
    value: Value,
}

/// The mutation of one document, applied.
struct Done {
    before: Value,
    after: Value,
    mutation: Mutation,
    raw: Option<String>,
}

/// Rewrites every matching object of `input` (YAML stream or JSON) and renders `format`.
pub fn mutate_stream(
    input: &str,
    values: &Values,
    format: OutputFormat,
) -> Result<StreamOutput, StreamError> {
    let docs = parse_stream(input)?;
    let mut out = StreamOutput::default();
    let mut done = Vec::with_capacity(docs.len());
    for (index, doc) in docs.into_iter().enumerate() {
        let index = index + 1;
        let items_list = doc.value.get("kind").and_then(Value::as_str) == Some("List");
        let mut after = doc.value.clone();
        let mut mutation = Mutation::default();
        if items_list {
            // `kubectl get -o yaml` of several objects: rewrite each item in place.
            if let Some(Value::Array(items)) = after.get_mut("items") {
                for item in items.iter_mut() {
                    let m = apply_one(index, item, values)?;
                    mutation.target = mutation.target.or(m.target);
                    mutation.warnings.extend(m.warnings);
                    mutation.patch.0.extend(m.patch.0);
                }
            }
        } else {
            mutation = apply_one(index, &mut after, values)?;
        }
        out.warnings.extend(
            mutation
                .warnings
                .iter()
                .map(|w| format!("document {index} ({}): {w}", describe(&doc.value))),
        );
        done.push(Done {
            before: doc.value,
            after,
            mutation,
            raw: doc.raw,
        });
    }
    out.text = match format {
        OutputFormat::Yaml => render_yaml(&done)?,
        OutputFormat::Json => render_json(&done)?,
        OutputFormat::Patch => render_patch(&done)?,
        OutputFormat::Diff => render_diff(&done)?,
    };
    Ok(out)
}

/// Mutates `doc` in place and returns the mutation that did it.
fn apply_one(index: usize, doc: &mut Value, values: &Values) -> Result<Mutation, StreamError> {
    let mutation = mutate_object(doc, values).map_err(|error| StreamError::Rewrite {
        index,
        what: describe(doc),
        error: Box::new(error),
    })?;
    json_patch::patch(doc, &mutation.patch.0).map_err(|e| StreamError::Apply {
        index,
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

fn parse_stream(input: &str) -> Result<Vec<Doc>, StreamError> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(input).map_err(|e| StreamError::Parse {
            index: 1,
            format: "JSON",
            message: e.to_string(),
        })?;
        return Ok(match v {
            Value::Array(items) => items
                .into_iter()
                .map(|value| Doc { raw: None, value })
                .collect(),
            value => vec![Doc { raw: None, value }],
        });
    }
    let mut docs = Vec::new();
    for (i, chunk) in split_documents(input).into_iter().enumerate() {
        let parse_err = |message: String| StreamError::Parse {
            index: i + 1,
            format: "YAML",
            message,
        };
        let y = crate::yaml::parse(chunk).map_err(parse_err)?;
        if y.is_null() {
            continue;
        }
        let value = serde_json::to_value(&y).map_err(|e| parse_err(e.to_string()))?;
        docs.push(Doc {
            raw: Some(chunk.to_owned()),
            value,
        });
    }
    Ok(docs)
}

/// Splits a YAML stream at `---` document markers (at column 0) and drops `...` end markers.
fn split_documents(input: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker {
            docs.push(&input[start..pos]);
            // Content after the marker on the same line (`--- !tag` or `--- {a: 1}`) stays with the document.
            start = pos + 3;
        } else if bare == "..." {
            docs.push(&input[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&input[start..]);
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
        let text = match (&d.raw, d.mutation.patch.0.is_empty()) {
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

fn render_patch(done: &[Done]) -> Result<String, StreamError> {
    let patch_json = |d: &Done| {
        serde_json::to_value(&d.mutation.patch).map_err(|e| StreamError::Serialise(e.to_string()))
    };
    match done {
        [one] => to_json(&patch_json(one)?),
        many => {
            let mut entries = Vec::new();
            for d in many.iter().filter(|d| !d.mutation.patch.0.is_empty()) {
                let s = |p: &str| d.before.pointer(p).cloned().unwrap_or(Value::Null);
                entries.push(json!({
                    "apiVersion": s("/apiVersion"),
                    "kind": s("/kind"),
                    "namespace": s("/metadata/namespace"),
                    "name": s("/metadata/name"),
                    "patch": patch_json(d)?,
                }));
            }
            to_json(&Value::Array(entries))
        }
    }
}

fn render_diff(done: &[Done]) -> Result<String, StreamError> {
    let mut out = String::new();
    for d in done.iter().filter(|d| !d.mutation.patch.0.is_empty()) {
        let what = describe(&d.before).replace(' ', "/");
        if d.mutation.target == Some(Target::ConfigMap)
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
                    // Diff against the re-serialised original so only what promfed changed shows,
                    // not the formatting the YAML round trip normalises (the patch carries that too).
                    let normalised = serde_yaml::from_str::<serde_yaml::Value>(old)
                        .ok()
                        .and_then(|v| serde_yaml::to_string(&v).ok());
                    out.push_str(&unified(
                        normalised.as_deref().unwrap_or(old),
                        new,
                        &format!("{what}/data/{key}"),
                    ));
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

    #[test]
    fn splits_at_markers_only() {
        let docs = split_documents("a: 1\n---\nb: |\n  ---x\n--- \nc: 3\n...\n");
        assert_eq!(docs, vec!["a: 1\n", "\nb: |\n  ---x\n", " \nc: 3\n", ""]);
    }

    #[test]
    fn other_documents_pass_verbatim() {
        let input = "# keep me\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata: {a: b}\n";
        let out = mutate_stream(input, &Values::default(), OutputFormat::Yaml).unwrap();
        assert_eq!(out.text, input);
    }

    #[test]
    fn bad_documents_are_named() {
        let e =
            mutate_stream("a: 1\n---\nb: [\n", &Values::default(), OutputFormat::Yaml).unwrap_err();
        assert!(
            e.to_string().starts_with("document 2: not valid YAML"),
            "{e}"
        );
    }
}
