//! The command line: the binary's edge, where typed library errors become messages and exit codes.
//! Every subcommand is a thin shell over the library (the same engine serves `mutate` and `serve`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Values;

pub mod addr;
pub mod certs;
pub mod dashboards;
mod examples;
pub mod input;
mod mutate;
mod serve;

pub use mutate::{Input, OutputFormat, StreamError, StreamOutput, mutate_inputs, mutate_stream};
pub use serve::ServeArgs;

/// promfed: federate a fleet of TKG Prometheus servers into one tools-cluster Prometheus.
#[derive(Debug, Parser)]
#[command(name = "promfed", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rewrite Prometheus server ConfigMaps offline (files, directories, or a stream on stdin).
    Mutate(MutateArgs),
    /// Validate a values file.
    Check(CheckArgs),
    /// Run the mutating admission webhook over TLS.
    Serve(ServeArgs),
    /// Grafana dashboards: make any dashboard multi-cluster.
    #[command(subcommand)]
    Dashboards(dashboards::DashboardsCommand),
    /// Generate the CA, webhook and federation certificates.
    Certs(certs::CertsArgs),
    /// Print promfed's version.
    Version,
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

/// `promfed mutate`.
#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// Values file (the seed's ytt data values work as they are); built-in defaults when absent.
    #[arg(long, env = "PROMFED_VALUES")]
    pub values: Option<PathBuf>,
    /// Output: the rewritten objects, the RFC 6902 patch (against the input as `-o json` shows
    /// it: one object, or a v1 List of several), or a unified diff (exit code 1 when it is not
    /// empty, as `kubectl diff`).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Use the embedded example (a TKG-like ConfigMap, and the seed's values unless --values is given).
    #[arg(long, conflicts_with_all = ["input", "filename"])]
    pub example: bool,
    /// File or directory (its *.yaml, *.yml and *.json files, sorted) with YAML or JSON
    /// documents; `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub filename: Vec<PathBuf>,
    /// Input file, as -f; `-` or no input at all reads stdin.
    #[arg(conflicts_with = "filename")]
    pub input: Option<PathBuf>,
    /// Treat warnings as errors: print them and exit 1 without output.
    #[arg(long)]
    pub strict: bool,
}

/// `promfed check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Values file to validate; `-` reads stdin.
    #[arg(required_unless_present = "values", conflicts_with = "values")]
    pub file: Option<PathBuf>,
    /// Values file to validate (as the positional argument).
    #[arg(long, env = "PROMFED_VALUES", hide_env_values = true)]
    pub values: Option<PathBuf>,
    /// Treat warnings as errors (exit 1).
    #[arg(long)]
    pub strict: bool,
}

/// `promfed completion`.
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// The embedded example: a TKG-like Prometheus server ConfigMap.
pub const EXAMPLE_CONFIGMAP: &str = include_str!("../../examples/tkg-prometheus-configmap.yaml");
/// The embedded example values: the seed's `values.yaml`, verbatim.
pub const EXAMPLE_VALUES: &str = include_str!("../../examples/values.yaml");

/// The clap command with the examples of every subcommand's `--help`.
pub fn command() -> clap::Command {
    examples::apply(Cli::command())
}

/// The whole binary: parse the command line, run it, print an error once, pick the exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `kubectl diff` convention: 1 means "differences", so errors of `-o diff` exit 2.
    let error_code = match &cli.command {
        Command::Mutate(a) if a.output == OutputFormat::Diff => 2,
        _ => 1,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_report(&e));
            ExitCode::from(error_code)
        }
    }
}

/// The error and its causes joined with `: `, each said once: a cause whose text the message
/// above it already contains (thiserror's `{source}` in the message) is not repeated.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut above = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if above.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        above = text;
    }
    out
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Mutate(args) => run_mutate(args),
        Command::Serve(args) => serve::run(args),
        Command::Dashboards(cmd) => Ok(dashboards::run(cmd)?.into()),
        Command::Certs(args) => {
            certs::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => run_check(args),
        Command::Version => {
            println!("promfed {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion(args) => {
            clap_complete::generate(
                args.shell,
                &mut command(),
                "promfed",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.file.or(args.values) else {
        anyhow::bail!("give the values file to check, or - for stdin");
    };
    let input = read_one(&path)?;
    let name = input.name.as_deref().unwrap_or("<stdin>");
    let values = Values::from_file_bytes(Path::new(name), input.text.as_bytes())?;
    let warnings = values.warnings();
    if report_warnings(&warnings, args.strict) {
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{name}: ok (cluster label {:?} = {:?}, {} federation job(s), rule files {:?})",
        values.cluster_label_name,
        values.local_cluster_name,
        values.additional_scrape_configs.len(),
        values.rule_files
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints warnings on stderr; under `--strict` as errors. True when they must fail the run.
fn report_warnings(warnings: &[String], strict: bool) -> bool {
    let prefix = if strict { "error" } else { "warning" };
    for w in warnings {
        eprintln!("{prefix}: {w}");
    }
    if strict && !warnings.is_empty() {
        eprintln!("error: {} warning(s) and --strict: failing", warnings.len());
        return true;
    }
    false
}

fn run_mutate(args: MutateArgs) -> anyhow::Result<ExitCode> {
    let values = match (&args.values, args.example) {
        (Some(path), _) => Values::load(path)?,
        (None, true) => {
            eprintln!("note: no --values given: using the embedded example values (the seed's)");
            Values::from_yaml_str(EXAMPLE_VALUES).context("embedded example values")?
        }
        (None, false) => {
            let d = Values::default();
            eprintln!(
                "note: no --values given: using the built-in defaults (local targets labelled {}={:?}, \
                 no federation jobs, rule files {:?})",
                d.cluster_label_name, d.local_cluster_name, d.rule_files
            );
            d
        }
    };
    let inputs = if args.example {
        vec![Input {
            name: Some("example".to_owned()),
            text: EXAMPLE_CONFIGMAP.to_owned(),
        }]
    } else {
        let mut paths = args.filename;
        paths.extend(args.input);
        read_inputs(&paths)?
    };
    let out = mutate_inputs(&inputs, &values, args.output)?;
    if report_warnings(&out.warnings, args.strict) {
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", out.text);
    Ok(if args.output == OutputFormat::Diff && out.changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads every path (`-` is stdin; a directory gives its *.yaml, *.yml and *.json files in
/// name order, as `kubectl -f DIR`); no path at all reads stdin. Each input keeps its name.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    if paths.is_empty() {
        return Ok(vec![read_one(Path::new("-"))?]);
    }
    let mut inputs = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                anyhow::bail!(
                    "directory {} holds no *.yaml, *.yml or *.json file",
                    p.display()
                );
            }
            for f in files {
                inputs.push(read_one(&f)?);
            }
        } else {
            inputs.push(read_one(p)?);
        }
    }
    Ok(inputs)
}

/// Reads one file, or stdin for `-` (the one rule of [`input`]).
fn read_one(path: &Path) -> anyhow::Result<Input> {
    let read = input::read_input_or_stdin(Some(path))?;
    Ok(Input {
        name: Some(read.name),
        text: read.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {source}")]
    struct Bind {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn error_causes_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(Bind { source: io }).context("serve");
        assert_eq!(
            error_report(&e),
            "serve: cannot listen on 127.0.0.1:1: Address already in use"
        );
        // Causes not already in the message are kept.
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_report(&e), "outer: inner");
    }
}
