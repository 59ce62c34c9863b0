//! The command line: the binary's edge, where typed library errors become messages and exit codes.
//! Every subcommand is a thin shell over the library (the same engine serves `mutate` and `serve`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Values;

mod mutate;
mod serve;

pub use mutate::{OutputFormat, mutate_stream};
pub use serve::ServeArgs;

/// promfed: federate a fleet of TKG Prometheus servers into one tools-cluster Prometheus.
#[derive(Debug, Parser)]
#[command(name = "promfed", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rewrite Prometheus server ConfigMaps offline (a file, or a multi-document stream on stdin).
    Mutate(MutateArgs),
    /// Validate a values file.
    Check(CheckArgs),
    /// Run the mutating admission webhook over TLS.
    Serve(ServeArgs),
    /// Grafana dashboards: make any dashboard multi-cluster.
    #[command(subcommand)]
    Dashboards(crate::dashboards::DashboardsCommand),
    /// Generate the CA, webhook and federation certificates.
    Certs(crate::certs::CertsArgs),
}

#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// Values file (the seed's ytt data values work as they are); built-in defaults when absent.
    #[arg(long, env = "PROMFED_VALUES")]
    pub values: Option<PathBuf>,
    /// Output: the rewritten objects, or the RFC 6902 patch, or a unified diff of the changed keys.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Use the embedded example (a TKG-like ConfigMap, and the seed's values unless --values is given).
    #[arg(long, conflicts_with = "input")]
    pub example: bool,
    /// Input file with YAML or JSON documents; `-` or absent reads stdin.
    pub input: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Values file to validate.
    #[arg(long, env = "PROMFED_VALUES")]
    pub values: PathBuf,
}

/// The embedded example: a TKG-like Prometheus server ConfigMap.
pub const EXAMPLE_CONFIGMAP: &str = include_str!("../../examples/tkg-prometheus-configmap.yaml");
/// The embedded example values: the seed's `values.yaml`, verbatim.
pub const EXAMPLE_VALUES: &str = include_str!("../../examples/values.yaml");

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Mutate(args) => run_mutate(args),
        Command::Serve(args) => serve::run(args),
        Command::Dashboards(cmd) => Ok(crate::dashboards::run(cmd)?.into()),
        Command::Certs(args) => {
            crate::certs::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let values = Values::load(&args.values)?;
            for w in values.warnings() {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok (cluster label {:?} = {:?}, {} federation job(s), rule files {:?})",
                args.values.display(),
                values.cluster_label_name,
                values.local_cluster_name,
                values.additional_scrape_configs.len(),
                values.rule_files
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_mutate(args: MutateArgs) -> anyhow::Result<ExitCode> {
    let values = match (&args.values, args.example) {
        (Some(path), _) => Values::load(path)?,
        (None, true) => Values::from_yaml_str(EXAMPLE_VALUES).context("embedded example values")?,
        (None, false) => Values::default(),
    };
    let (name, input) = if args.example {
        ("example".to_owned(), EXAMPLE_CONFIGMAP.to_owned())
    } else {
        read_input(args.input.as_deref())?
    };
    let out =
        mutate_stream(&input, &values, args.output).with_context(|| format!("input {name}"))?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", out.text);
    Ok(ExitCode::SUCCESS)
}

fn read_input(path: Option<&std::path::Path>) -> anyhow::Result<(String, String)> {
    match path {
        None => read_stdin(),
        Some(p) if p.as_os_str() == "-" => read_stdin(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok((p.display().to_string(), text))
        }
    }
}

fn read_stdin() -> anyhow::Result<(String, String)> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read stdin")?;
    Ok(("<stdin>".to_owned(), text))
}
