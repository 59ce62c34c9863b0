//! The dashboard walk: finds every Prometheus query of a Grafana dashboard and pins it to the
//! `$cluster` variable; adds the `clusterLabel` and `cluster` variables. Pure: JSON in, JSON out.

use serde_json::{Map, Value, json};

use super::DashboardError;
use super::vars::{self, VarError};
use crate::promql::{self, RewriteOptions};

/// Name of the hidden constant variable holding the cluster label name.
pub const CLUSTER_LABEL_VAR: &str = "clusterLabel";
/// Name of the cluster selection variable.
pub const CLUSTER_VAR: &str = "cluster";

/// How to convert a dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// The label that tells clusters apart (the values file's `clusterLabelName`).
    pub cluster_label: String,
    /// Multi-select cluster variable with "All"; matchers become `=~"$cluster"`.
    pub multi: bool,
    /// New dashboard uid (and `id` reset), so the copy can live beside the original.
    pub uid: Option<String>,
    /// New dashboard title.
    pub title: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            cluster_label: String::from("cluster"),
            multi: false,
            uid: None,
            title: None,
        }
    }
}

/// A query left unchanged because it could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is: the panel title (`Row / Panel`), `variable NAME` or `annotation NAME`.
    pub panel: String,
    /// The query text as found.
    pub query: String,
    /// Why it was left alone.
    pub reason: String,
}

/// The converted dashboard and what could not be converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The converted dashboard (wrapped as it came, if it came wrapped).
    pub dashboard: Value,
    /// Queries left unchanged (non-empty means exit code 2).
    pub skipped: Vec<Skipped>,
    /// Converted queries the rewriter had remarks about (e.g. `label_replace` writing the label).
    pub warnings: Vec<Skipped>,
}

/// Where a Prometheus query lives in a dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// A panel target's `expr`.
    Panel,
    /// The PromQL inside a templating variable (`label_values(<selector>, l)` or
    /// `query_result(<expr>)`).
    Variable,
    /// An annotation query's `expr`.
    Annotation,
}

/// One Prometheus query of a dashboard, as Grafana stores it (variables not interpolated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRef {
    /// Panel target, variable or annotation.
    pub kind: QueryKind,
    /// Panel title (`Row / Panel`), variable name or annotation name.
    pub location: String,
    /// The PromQL text.
    pub expr: String,
}

/// How a datasource reference is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ds {
    /// Prometheus, or assumed to be (the default datasource, an unknown name).
    Prometheus,
    /// `-- Mixed --`: each target names its own.
    Mixed,
    /// Anything else (Loki, `-- Grafana --`, `-- Dashboard --`, ...): left alone.
    Other,
}

/// What the dashboard says about its datasources: `datasource` variables and `__inputs`.
struct DsContext {
    /// (variable name, plugin id) of `datasource` variables.
    variables: Vec<(String, String)>,
    /// (input name, plugin id) of an exported dashboard's `__inputs`.
    inputs: Vec<(String, String)>,
}

/// Names of datasources that share Prometheus' `expr` field but speak another language.
const NON_PROMQL_NAME_HINTS: &[&str] = &[
    "loki",
    "tempo",
    "elastic",
    "influx",
    "graphite",
    "pyroscope",
];

impl DsContext {
    fn new(dashboard: &Map<String, Value>) -> Self {
        let pairs = |list: Option<&Value>, kind_key: &str, kind_val: Option<&str>, plugin: &str| {
            list.and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter(|v| {
                            kind_val
                                .is_none_or(|k| v.get(kind_key).and_then(Value::as_str) == Some(k))
                        })
                        .filter_map(|v| {
                            Some((
                                v.get("name")?.as_str()?.to_owned(),
                                v.get(plugin)?.as_str()?.to_owned(),
                            ))
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        Self {
            variables: pairs(
                dashboard.get("templating").and_then(|t| t.get("list")),
                "type",
                Some("datasource"),
                "query",
            ),
            inputs: pairs(
                dashboard.get("__inputs"),
                "type",
                Some("datasource"),
                "pluginId",
            ),
        }
    }

    fn classify(&self, ds: Option<&Value>) -> Ds {
        match ds {
            None | Some(Value::Null) => Ds::Prometheus,
            Some(Value::String(s)) => self.classify_name(s),
            Some(Value::Object(o)) => {
                let uid = o.get("uid").and_then(Value::as_str);
                match o.get("type").and_then(Value::as_str) {
                    Some("prometheus") => Ds::Prometheus,
                    Some("datasource") if uid == Some("-- Mixed --") => Ds::Mixed,
                    Some(_) => Ds::Other,
                    None => uid.map_or(Ds::Prometheus, |u| self.classify_name(u)),
                }
            }
            Some(_) => Ds::Other,
        }
    }

    fn classify_name(&self, name: &str) -> Ds {
        match name {
            "-- Mixed --" => return Ds::Mixed,
            "-- Grafana --" | "-- Dashboard --" | "grafana" => return Ds::Other,
            _ => {}
        }
        if let Some(var) = variable_name(name) {
            let plugin = self
                .variables
                .iter()
                .chain(&self.inputs)
                .find(|(n, _)| n == var)
                .map(|(_, p)| p.as_str());
            return match plugin {
                Some("prometheus") => Ds::Prometheus,
                Some(_) => Ds::Other,
                None => Ds::Prometheus,
            };
        }
        let lower = name.to_ascii_lowercase();
        if NON_PROMQL_NAME_HINTS.iter().any(|h| lower.contains(h)) {
            Ds::Other
        } else {
            Ds::Prometheus
        }
    }

    /// The datasource for the `cluster` variable: a Prometheus `datasource` variable, else the
    /// first Prometheus datasource a panel names, else the default (null).
    fn cluster_datasource(&self, dashboard: &Map<String, Value>) -> (Value, Option<String>) {
        if let Some((name, _)) = self.variables.iter().find(|(_, p)| p == "prometheus") {
            return (
                json!({ "type": "prometheus", "uid": format!("${{{name}}}") }),
                Some(name.clone()),
            );
        }
        for (panel, _) in each_panel(dashboard) {
            let candidates = std::iter::once(panel.get("datasource")).chain(
                panel
                    .get("targets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|t| t.get("datasource")),
            );
            for ds in candidates.flatten() {
                if !ds.is_null() && self.classify(Some(ds)) == Ds::Prometheus {
                    return (ds.clone(), None);
                }
            }
        }
        (Value::Null, None)
    }
}

/// `$x` or `${x}` -> `x`.
fn variable_name(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('$')?;
    let name = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(rest);
    let name = name.split([':', '.']).next().unwrap_or(name);
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(name)
}

/// A panel's place: its JSON pointer below the dashboard object and its location for messages
/// (`Row / Panel`).
struct PanelAt {
    pointer: String,
    location: String,
}

/// Every panel, in document order: `panels[]`, panels nested in collapsed rows, and the old
/// `rows[].panels[]` layout. The one walker: readers use [`each_panel`], writers index with
/// [`panel_mut`] (a conversion changes targets only, so the pointers stay valid).
fn panels(dashboard: &Map<String, Value>) -> Vec<PanelAt> {
    fn walk(panels: &[Value], base: &str, parent: &str, out: &mut Vec<PanelAt>) {
        for (i, p) in panels.iter().enumerate() {
            let Some(obj) = p.as_object() else { continue };
            let pointer = format!("{base}/{i}");
            let location = location(parent, obj);
            let inner = obj.get("panels").and_then(Value::as_array);
            let (inner_base, inner_parent) = (format!("{pointer}/panels"), location.clone());
            out.push(PanelAt { pointer, location });
            if let Some(inner) = inner {
                walk(inner, &inner_base, &inner_parent, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(panels) = dashboard.get("panels").and_then(Value::as_array) {
        walk(panels, "/panels", "", &mut out);
    }
    for (i, row) in dashboard
        .get("rows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(row) = row.as_object() else { continue };
        if let Some(panels) = row.get("panels").and_then(Value::as_array) {
            walk(
                panels,
                &format!("/rows/{i}/panels"),
                &location("", row),
                &mut out,
            );
        }
    }
    out
}

/// Splits `/key/rest` into `key` and `/rest`: a pointer below the dashboard object.
fn split_pointer(pointer: &str) -> Option<(&str, &str)> {
    let rest = pointer.strip_prefix('/')?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash..]))
}

/// Every panel with its location (see [`panels`]).
fn each_panel(
    dashboard: &Map<String, Value>,
) -> impl Iterator<Item = (&Map<String, Value>, String)> {
    panels(dashboard).into_iter().filter_map(|at| {
        let (key, rest) = split_pointer(&at.pointer)?;
        let panel = dashboard.get(key)?.pointer(rest)?.as_object()?;
        Some((panel, at.location))
    })
}

/// The panel at a pointer from [`panels`], to change it.
fn panel_mut<'a>(
    dashboard: &'a mut Map<String, Value>,
    pointer: &str,
) -> Option<&'a mut Map<String, Value>> {
    let (key, rest) = split_pointer(pointer)?;
    dashboard.get_mut(key)?.pointer_mut(rest)?.as_object_mut()
}

fn location(parent: &str, panel: &Map<String, Value>) -> String {
    let title = match panel.get("title").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => t.to_owned(),
        _ => match panel.get("id") {
            Some(id) if !id.is_null() => format!("(untitled panel {id})"),
            _ => String::from("(untitled panel)"),
        },
    };
    if parent.is_empty() {
        title
    } else {
        format!("{parent} / {title}")
    }
}

/// The dashboard object, also when wrapped as the HTTP API returns it (`{"dashboard": {...}}`).
fn dashboard_object(value: &mut Value) -> Result<&mut Map<String, Value>, DashboardError> {
    let is_wrapped = value.as_object().is_some_and(|o| {
        o.get("dashboard").is_some_and(Value::is_object) && !o.contains_key("panels")
    });
    let target = if is_wrapped {
        &mut value["dashboard"]
    } else {
        value
    };
    let obj = target.as_object_mut().ok_or_else(|| {
        DashboardError::NotADashboard(String::from("the top level is not a JSON object"))
    })?;
    if !obj.contains_key("panels") && !obj.contains_key("rows") && !obj.contains_key("templating") {
        return Err(DashboardError::NotADashboard(String::from(
            "no `panels`, `rows` or `templating` (is this a Grafana dashboard?)",
        )));
    }
    Ok(obj)
}

/// Converts one Grafana dashboard: see the module and crate docs for the rules.
pub fn convert(mut dashboard: Value, opts: &ConvertOptions) -> Result<Converted, DashboardError> {
    if !promql::is_label_name(&opts.cluster_label) {
        return Err(DashboardError::InvalidLabel(opts.cluster_label.clone()));
    }
    if let Some(uid) = &opts.uid {
        let ok = !uid.is_empty()
            && uid.len() <= 40
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(DashboardError::InvalidUid(uid.clone()));
        }
    }
    let conv = ExprConverter::new(opts);
    let obj = dashboard_object(&mut dashboard)?;
    let ctx = DsContext::new(obj);
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();

    // Panels (and their targets).
    for at in panels(obj) {
        let Some(panel) = panel_mut(obj, &at.pointer) else {
            continue;
        };
        let (panel_ds, loc) = (ctx.classify(panel.get("datasource")), &at.location);
        let Some(targets) = panel.get_mut("targets").and_then(Value::as_array_mut) else {
            continue;
        };
        for target in targets.iter_mut().filter_map(Value::as_object_mut) {
            let ds = match target.get("datasource") {
                Some(d) if !d.is_null() => ctx.classify(Some(d)),
                _ if panel_ds == Ds::Mixed => Ds::Prometheus,
                _ => panel_ds,
            };
            if ds != Ds::Prometheus {
                continue;
            }
            conv.convert_field(target, "expr", loc, &mut skipped, &mut warnings);
        }
    }

    // Annotations.
    if let Some(list) = obj
        .get_mut("annotations")
        .and_then(|a| a.get_mut("list"))
        .and_then(Value::as_array_mut)
    {
        for ann in list.iter_mut().filter_map(Value::as_object_mut) {
            if ann.get("builtIn").and_then(Value::as_i64) == Some(1)
                || ctx.classify(ann.get("datasource")) != Ds::Prometheus
            {
                continue;
            }
            let loc = format!(
                "annotation {}",
                ann.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("(unnamed)")
            );
            conv.convert_field(ann, "expr", &loc, &mut skipped, &mut warnings);
            if let Some(target) = ann.get_mut("target").and_then(Value::as_object_mut) {
                conv.convert_field(target, "expr", &loc, &mut skipped, &mut warnings);
            }
        }
    }

    // Templating: convert query variables, then put clusterLabel and cluster first.
    let (cluster_ds, ds_var) = ctx.cluster_datasource(obj);
    let templating = obj
        .entry("templating")
        .or_insert_with(|| json!({ "list": [] }));
    if !templating.is_object() {
        *templating = json!({ "list": [] });
    }
    let list_value = templating
        .as_object_mut()
        .map(|t| t.entry("list").or_insert_with(|| json!([])))
        .ok_or_else(|| {
            DashboardError::NotADashboard(String::from("`templating` is not an object"))
        })?;
    if !list_value.is_array() {
        *list_value = json!([]);
    }
    let old: Vec<Value> = list_value
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut front = Vec::new();
    let mut rest = Vec::new();
    for mut var in old {
        let name = var
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name == CLUSTER_VAR || name == CLUSTER_LABEL_VAR {
            continue;
        }
        if ds_var.as_deref() == Some(name.as_str()) {
            front.push(var);
            continue;
        }
        if var.get("type").and_then(Value::as_str) == Some("query")
            && ctx.classify(var.get("datasource")) == Ds::Prometheus
            && let Some(obj) = var.as_object_mut()
        {
            conv.convert_variable(obj, &name, &mut skipped, &mut warnings);
        }
        rest.push(var);
    }
    front.push(cluster_label_variable(&opts.cluster_label));
    front.push(cluster_variable(
        &opts.cluster_label,
        opts.multi,
        cluster_ds,
    ));
    front.extend(rest);
    *list_value = Value::Array(front);

    if let Some(uid) = &opts.uid {
        obj.insert(String::from("uid"), Value::String(uid.clone()));
        obj.insert(String::from("id"), Value::Null);
    }
    if let Some(title) = &opts.title {
        obj.insert(String::from("title"), Value::String(title.clone()));
    }
    Ok(Converted {
        dashboard,
        skipped,
        warnings,
    })
}

/// The hidden constant `clusterLabel`: custom panels can write `by (${clusterLabel})`.
fn cluster_label_variable(label: &str) -> Value {
    json!({
        "type": "constant",
        "name": CLUSTER_LABEL_VAR,
        "label": "Cluster label",
        "description": "Label that tells the clusters of the fleet apart (promfed's clusterLabelName).",
        "hide": 2,
        "query": label,
        "current": { "selected": false, "text": label, "value": label },
        "options": [ { "selected": true, "text": label, "value": label } ],
        "skipUrlSync": false
    })
}

/// The `cluster` selection variable, refreshed on dashboard load and sorted.
fn cluster_variable(label: &str, multi: bool, datasource: Value) -> Value {
    let query = format!("label_values(up, {label})");
    json!({
        "type": "query",
        "name": CLUSTER_VAR,
        "label": "Cluster",
        "description": "The fleet's clusters (values of the cluster label on `up`).",
        "datasource": datasource,
        "definition": query,
        "query": query,
        "refresh": 1,
        "sort": 1,
        "regex": "",
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
        "skipUrlSync": false
    })
}

/// Converts single expressions; shared by panels, variables and annotations.
struct ExprConverter {
    rewrite: RewriteOptions,
    /// The tail of the rewriter's `label_replace(..., "<label>", "$$cluster", "", "")` wrapper
    /// for label-less vectors, and the form a dashboard needs (see [`ExprConverter::expr`]).
    wrapper_promql: String,
    wrapper_grafana: String,
}

/// Why one expression was not converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ExprError {
    #[error(transparent)]
    Vars(#[from] VarError),
    #[error(transparent)]
    Promql(#[from] promql::PromqlError),
    #[error("{0}")]
    Other(String),
}

impl ExprConverter {
    fn new(opts: &ConvertOptions) -> Self {
        let label = &opts.cluster_label;
        Self {
            rewrite: RewriteOptions {
                label: label.clone(),
                value: format!("${CLUSTER_VAR}"),
                regex: opts.multi,
                tag_labelless: !opts.multi,
            },
            wrapper_promql: format!(r#", "{label}", "$${CLUSTER_VAR}", "", "")"#),
            wrapper_grafana: format!(r#", "{label}", "${CLUSTER_VAR}", "", "")"#),
        }
    }

    /// Rewrites `src`, returning the new text and the rewriter's warnings.
    ///
    /// The rewriter tags label-less vectors with `label_replace(v, "<label>", "$$cluster", "",
    /// "")`: `$$` is a literal `$` for Prometheus. In a dashboard Grafana substitutes `$cluster`
    /// first (and would turn `$$cluster` into `$<name>`, a capture-group reference that expands
    /// to nothing), so the dashboard form is `"$cluster"`. The wrapper is mapped to the
    /// rewriter's form before rewriting (so it is recognised as done: idempotence) and back after.
    fn expr(&self, src: &str) -> Result<(String, Vec<String>), ExprError> {
        // A query that already holds the PromQL form keeps it: the mapping must be reversible.
        let map = !src.contains(&self.wrapper_promql);
        let sub = vars::substitute(src)?;
        let text = if map {
            sub.text
                .replace(&self.wrapper_grafana, &self.wrapper_promql)
        } else {
            sub.text.clone()
        };
        let out = promql::rewrite_expr(&text, &self.rewrite)?;
        if !out.changed {
            return Ok((src.to_owned(), out.warnings));
        }
        let mut restored = sub.restore(&out.expr)?;
        if map {
            restored = restored.replace(&self.wrapper_promql, &self.wrapper_grafana);
        }
        let warnings = out.warnings.iter().map(|w| sub.restore_lossy(w)).collect();
        Ok((restored, warnings))
    }

    /// Rewrites the string field `key` of `obj` in place, recording what happened.
    fn convert_field(
        &self,
        obj: &mut Map<String, Value>,
        key: &str,
        loc: &str,
        skipped: &mut Vec<Skipped>,
        warnings: &mut Vec<Skipped>,
    ) {
        let Some(Value::String(src)) = obj.get(key) else {
            return;
        };
        if src.trim().is_empty() {
            return;
        }
        let src = src.clone();
        match self.expr(&src) {
            Ok((new, notes)) => {
                for reason in notes {
                    warnings.push(Skipped {
                        panel: loc.to_owned(),
                        query: src.clone(),
                        reason,
                    });
                }
                if new != src {
                    obj.insert(key.to_owned(), Value::String(new));
                }
            }
            Err(e) => skipped.push(Skipped {
                panel: loc.to_owned(),
                query: src,
                reason: e.to_string(),
            }),
        }
    }

    /// Converts a query variable's `query` (string or `{ "query": ... }` object) and keeps
    /// `definition` in step.
    fn convert_variable(
        &self,
        var: &mut Map<String, Value>,
        name: &str,
        skipped: &mut Vec<Skipped>,
        warnings: &mut Vec<Skipped>,
    ) {
        let loc = format!("variable {name}");
        let src = match var.get("query") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => match o.get("query") {
                Some(Value::String(s)) => s.clone(),
                _ => return,
            },
            _ => return,
        };
        if src.trim().is_empty() {
            return;
        }
        let new = match self.variable_query(&src) {
            Ok((new, notes)) => {
                warnings.extend(notes.into_iter().map(|reason| Skipped {
                    panel: loc.clone(),
                    query: src.clone(),
                    reason,
                }));
                new
            }
            Err(e) => {
                skipped.push(Skipped {
                    panel: loc,
                    query: src,
                    reason: e.to_string(),
                });
                return;
            }
        };
        if new == src {
            return;
        }
        match var.get_mut("query") {
            Some(Value::Object(o)) => {
                o.insert(String::from("query"), Value::String(new.clone()));
            }
            Some(q) => *q = Value::String(new.clone()),
            None => {}
        }
        if var.get("definition").and_then(Value::as_str) == Some(src.as_str()) {
            var.insert(String::from("definition"), Value::String(new));
        }
    }

    /// Grafana's Prometheus variable queries: `label_values([selector,] label)`,
    /// `query_result(expr)`; `label_names()` and `metrics(regex)` are not per series and stay.
    fn variable_query(&self, src: &str) -> Result<(String, Vec<String>), ExprError> {
        let trimmed = src.trim();
        if let Some(args) = call_args(trimmed, "label_values") {
            let (selector, label) = match split_last_arg(args) {
                Some((sel, label)) => (sel.trim(), label.trim()),
                None => ("", args.trim()),
            };
            if selector.is_empty() {
                // Label only: scope it with a selector on the cluster label alone.
                let op = if self.rewrite.regex { "=~" } else { "=" };
                let sel = format!("{{{}{op}\"{}\"}}", self.rewrite.label, self.rewrite.value);
                return Ok((format!("label_values({sel}, {label})"), Vec::new()));
            }
            let (new, notes) = self.expr(selector)?;
            if new == selector {
                return Ok((src.to_owned(), notes));
            }
            return Ok((format!("label_values({new}, {label})"), notes));
        }
        if let Some(inner) = call_args(trimmed, "query_result") {
            let (new, notes) = self.expr(inner.trim())?;
            if new == inner.trim() {
                return Ok((src.to_owned(), notes));
            }
            return Ok((format!("query_result({new})"), notes));
        }
        if call_args(trimmed, "label_names").is_some() || call_args(trimmed, "metrics").is_some() {
            return Ok((src.to_owned(), Vec::new()));
        }
        Err(ExprError::Other(String::from(
            "not a Grafana Prometheus variable query (label_values, query_result, label_names, metrics)",
        )))
    }
}

/// `name( args )` -> `args`.
fn call_args<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Splits `a, b` at the last comma outside strings, braces and parentheses.
fn split_last_arg(args: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut last = None;
    let bytes = args.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' && q != b'`' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'"' | b'\'' | b'`' => quote = Some(b),
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' => depth -= 1,
                b',' if depth == 0 => last = Some(i),
                _ => {}
            },
        }
        i += 1;
    }
    last.map(|i| (&args[..i], &args[i + 1..]))
}

/// Every Prometheus query of a dashboard: panel targets (all layouts), the PromQL inside query
/// variables, and annotation queries. For end-to-end checks against a real Prometheus.
pub fn list_queries(dashboard: &Value) -> Result<Vec<QueryRef>, DashboardError> {
    let mut copy = dashboard.clone();
    let obj = dashboard_object(&mut copy)?;
    let ctx = DsContext::new(obj);
    let mut out = Vec::new();
    for (panel, loc) in each_panel(obj) {
        let panel_ds = ctx.classify(panel.get("datasource"));
        for t in panel
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ds = match t.get("datasource") {
                Some(d) if !d.is_null() => ctx.classify(Some(d)),
                _ if panel_ds == Ds::Mixed => Ds::Prometheus,
                _ => panel_ds,
            };
            if let (Ds::Prometheus, Some(expr)) = (ds, t.get("expr").and_then(Value::as_str))
                && !expr.trim().is_empty()
            {
                out.push(QueryRef {
                    kind: QueryKind::Panel,
                    location: loc.clone(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for var in obj
        .get("templating")
        .and_then(|t| t.get("list"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if var.get("type").and_then(Value::as_str) != Some("query")
            || ctx.classify(var.get("datasource")) != Ds::Prometheus
        {
            continue;
        }
        let q = match var.get("query") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o.get("query").and_then(Value::as_str).unwrap_or(""),
            _ => "",
        }
        .trim();
        let expr = if let Some(args) = call_args(q, "label_values") {
            split_last_arg(args).map(|(sel, _)| sel.trim())
        } else {
            call_args(q, "query_result").map(str::trim)
        };
        if let Some(expr) = expr.filter(|e| !e.is_empty()) {
            let name = var.get("name").and_then(Value::as_str).unwrap_or("");
            out.push(QueryRef {
                kind: QueryKind::Variable,
                location: name.to_owned(),
                expr: expr.to_owned(),
            });
        }
    }
    for ann in obj
        .get("annotations")
        .and_then(|a| a.get("list"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ann.get("builtIn").and_then(Value::as_i64) == Some(1)
            || ctx.classify(ann.get("datasource")) != Ds::Prometheus
        {
            continue;
        }
        if let Some(expr) = ann
            .get("expr")
            .and_then(Value::as_str)
            .filter(|e| !e.trim().is_empty())
        {
            let name = ann.get("name").and_then(Value::as_str).unwrap_or("");
            out.push(QueryRef {
                kind: QueryKind::Annotation,
                location: name.to_owned(),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_label_values() {
        assert_eq!(
            split_last_arg(r#"up{a=~"x,y"}, job"#),
            Some((r#"up{a=~"x,y"}"#, " job"))
        );
        assert_eq!(split_last_arg("job"), None);
        assert_eq!(
            call_args("label_values( x , y )", "label_values"),
            Some(" x , y ")
        );
    }

    #[test]
    fn variable_names() {
        assert_eq!(variable_name("${DS_PROMETHEUS}"), Some("DS_PROMETHEUS"));
        assert_eq!(variable_name("$datasource"), Some("datasource"));
        assert_eq!(variable_name("Prometheus"), None);
    }

    #[test]
    fn the_cluster_label_is_checked_as_a_prometheus_label_name() {
        let d = json!({ "panels": [] });
        for bad in ["1x", "a-b", ""] {
            let o = ConvertOptions {
                cluster_label: bad.into(),
                ..ConvertOptions::default()
            };
            assert!(
                matches!(convert(d.clone(), &o), Err(DashboardError::InvalidLabel(l)) if l == bad),
                "{bad:?}"
            );
        }
        let o = ConvertOptions {
            cluster_label: "originCluster".into(),
            ..ConvertOptions::default()
        };
        convert(d, &o).unwrap();
    }
}
