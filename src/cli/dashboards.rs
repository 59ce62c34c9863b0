//! `promfed dashboards ...`: the command line and process I/O over the library's
//! [`crate::dashboards::convert`] (JSON in, JSON out, no I/O).

use std::io::{Read, Write};
use std::path::PathBuf;

use super::input::{InputError, read_input};
use crate::dashboards::{ConvertOptions, DashboardError, convert};

/// Errors of a `dashboards` run: the input, the output, or the conversion itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardsCliError {
    /// The dashboard file or stdin could not be read.
    #[error(transparent)]
    Read(#[from] InputError),
    /// The input, or the converted dashboard, is not JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file, `<stdin>` or `<output>`.
        path: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The converted dashboard could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The `--output` file or `<stdout>`.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The conversion refused the dashboard or the options.
    #[error(transparent)]
    Convert(#[from] DashboardError),
}

/// `promfed dashboards ...`
#[derive(Debug, clap::Subcommand)]
pub enum DashboardsCommand {
    /// Make a Grafana dashboard multi-cluster: add the `cluster` variable and pin every Prometheus
    /// query to it. Exit code 0: all converted; 2: some queries were left unchanged (listed on
    /// stderr); 1: error.
    Convert(ConvertArgs),
}

/// `promfed dashboards convert`: the options of [`ConvertOptions`] plus where to read and write.
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
pub fn run(cmd: DashboardsCommand) -> Result<Outcome, DashboardsCliError> {
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
) -> Result<Outcome, DashboardsCliError> {
    match cmd {
        DashboardsCommand::Convert(args) => run_convert(&args, stdin, stdout, stderr),
    }
}

fn run_convert(
    args: &ConvertArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Outcome, DashboardsCliError> {
    let input = read_input(args.input.as_deref(), stdin)?;
    let name = input.name;
    let value: serde_json::Value =
        serde_json::from_str(&input.text).map_err(|source| DashboardsCliError::Json {
            path: name.clone(),
            source,
        })?;
    let converted = convert(value, &ConvertOptions::from(args))?;
    let mut json = serde_json::to_string_pretty(&converted.dashboard).map_err(|source| {
        DashboardsCliError::Json {
            path: String::from("<output>"),
            source,
        }
    })?;
    json.push('\n');
    match &args.output {
        Some(p) => std::fs::write(p, json).map_err(|source| DashboardsCliError::Write {
            path: p.display().to_string(),
            source,
        })?,
        None => stdout
            .write_all(json.as_bytes())
            .map_err(|source| DashboardsCliError::Write {
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
