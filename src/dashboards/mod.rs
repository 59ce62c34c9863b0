//! Multi-cluster Grafana dashboards: `promfed dashboards convert` pins every Prometheus query of
//! a dashboard to a `$cluster` variable, with the same syntax-tree rules as the rule rewrite
//! ([`crate::promql::rewrite_expr`]), so one dashboard serves the whole fleet.
//!
//! Rules, in short:
//! - `clusterLabel` (hidden constant, the label name) and `cluster` (`label_values(up, <label>)`,
//!   refreshed on load, sorted; multi-select with "All" under `--multi`) become the first
//!   templating variables; existing variables of those names are replaced. A `datasource`
//!   variable of type prometheus that `cluster` uses is moved in front of them.
//! - Prometheus queries of panels (`panels[]`, collapsed rows' `panels[]`, old `rows[].panels[]`),
//!   of query variables (`label_values(...)`, `query_result(...)`) and of annotations get
//!   `<label>="$cluster"` (`=~` under `--multi`). Grafana variables survive ([`vars`]).
//! - Datasources: an object's `type` decides; `-- Mixed --` defers to each target; `-- Grafana --`
//!   and `-- Dashboard --` are left alone; `$var` names are looked up in `datasource` variables and
//!   `__inputs`; a plain name, or none (the default datasource), counts as Prometheus unless the
//!   name hints at Loki, Tempo, Elasticsearch, InfluxDB, Graphite or Pyroscope.
//! - A query that does not parse is left unchanged and reported; the exit code is then 2.
//! - `uid` and `title` are kept unless `--uid`/`--title` are given (`--uid` also clears `id`, so
//!   Grafana imports the copy beside the original).
//! - Idempotent: converting a converted dashboard changes nothing.

use std::io::{Read, Write};
use std::path::PathBuf;

mod convert;
pub mod vars;

pub use convert::{
    CLUSTER_LABEL_VAR, CLUSTER_VAR, ConvertOptions, Converted, QueryKind, QueryRef, Skipped,
    convert, list_queries,
};

/// Errors that stop a conversion (skipped queries are not errors: see [`Outcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("not a Grafana dashboard: {0}")]
    NotADashboard(String),
    #[error("invalid --cluster-label {0:?}: a Prometheus label name is [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabel(String),
    #[error("invalid --uid {0:?}: Grafana uids are 1-40 characters of [a-zA-Z0-9_-]")]
    InvalidUid(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// `promfed dashboards ...`
#[derive(Debug, clap::Subcommand)]
pub enum DashboardsCommand {
    /// Make a Grafana dashboard multi-cluster: add the `cluster` variable and pin every Prometheus
    /// query to it. Exit code 0: all converted; 2: some queries were left unchanged (listed on
    /// stderr); 1: error.
    Convert(ConvertArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// The label that tells the clusters apart (the values file's `clusterLabelName`).
    #[arg(long, env = "PROMFED_CLUSTER_LABEL", default_value = "cluster")]
    pub cluster_label: String,
    /// Multi-select cluster variable with an "All" option (matchers use `=~"$cluster"`).
    #[arg(long, env = "PROMFED_DASHBOARD_MULTI")]
    pub multi: bool,
    /// Set the dashboard uid (and clear `id`), so the converted copy can live beside the original.
    #[arg(long, env = "PROMFED_DASHBOARD_UID")]
    pub uid: Option<String>,
    /// Set the dashboard title.
    #[arg(long, env = "PROMFED_DASHBOARD_TITLE")]
    pub title: Option<String>,
    /// Write the converted dashboard here instead of stdout.
    #[arg(long, short, env = "PROMFED_DASHBOARD_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Dashboard JSON file (as exported, or as the HTTP API returns it); `-` or absent reads stdin.
    pub input: Option<PathBuf>,
}

impl From<&ConvertArgs> for ConvertOptions {
    fn from(a: &ConvertArgs) -> Self {
        Self {
            cluster_label: a.cluster_label.clone(),
            multi: a.multi,
            uid: a.uid.clone(),
            title: a.title.clone(),
        }
    }
}

/// How a successful run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Queries left unchanged.
    pub skipped: usize,
}

impl Outcome {
    /// 0 when everything was converted, 2 when some query was left unchanged.
    pub fn exit_code(self) -> u8 {
        if self.skipped == 0 { 0 } else { 2 }
    }
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        std::process::ExitCode::from(o.exit_code())
    }
}

/// Runs a `dashboards` subcommand on the process' stdin/stdout/stderr.
pub fn run(cmd: DashboardsCommand) -> Result<Outcome, DashboardError> {
    run_with(
        cmd,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run`] with explicit streams (for tests).
pub fn run_with(
    cmd: DashboardsCommand,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Outcome, DashboardError> {
    match cmd {
        DashboardsCommand::Convert(args) => run_convert(&args, stdin, stdout, stderr),
    }
}

fn run_convert(
    args: &ConvertArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Outcome, DashboardError> {
    let (name, text) = match args.input.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| DashboardError::Read {
                path: name.clone(),
                source,
            })?;
            (name, text)
        }
        _ => {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| DashboardError::Read {
                    path: String::from("<stdin>"),
                    source,
                })?;
            (String::from("<stdin>"), text)
        }
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| DashboardError::Json {
            path: name.clone(),
            source,
        })?;
    let converted = convert(value, &ConvertOptions::from(args))?;
    let mut json = serde_json::to_string_pretty(&converted.dashboard).map_err(|source| {
        DashboardError::Json {
            path: String::from("<output>"),
            source,
        }
    })?;
    json.push('\n');
    match &args.output {
        Some(p) => std::fs::write(p, json).map_err(|source| DashboardError::Write {
            path: p.display().to_string(),
            source,
        })?,
        None => stdout
            .write_all(json.as_bytes())
            .map_err(|source| DashboardError::Write {
                path: String::from("<stdout>"),
                source,
            })?,
    }
    // Reporting is best effort: a closed stderr must not turn a finished conversion into an error.
    for s in &converted.warnings {
        let _ = writeln!(
            stderr,
            "{name}: warning: {}: {}: {}",
            s.panel, s.reason, s.query
        );
    }
    for s in &converted.skipped {
        let _ = writeln!(
            stderr,
            "{name}: skipped: {}: {}: {}",
            s.panel, s.reason, s.query
        );
    }
    if !converted.skipped.is_empty() {
        let _ = writeln!(
            stderr,
            "{name}: {} query(ies) left unchanged",
            converted.skipped.len()
        );
    }
    Ok(Outcome {
        skipped: converted.skipped.len(),
    })
}
