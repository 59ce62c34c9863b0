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
//!
//! The command line (`ConvertArgs`, reading the file or stdin, exit codes) is in
//! [`crate::cli::dashboards`]; this module does no I/O.

mod convert;
pub mod vars;

pub use convert::{
    CLUSTER_LABEL_VAR, CLUSTER_VAR, ConvertOptions, Converted, QueryKind, QueryRef, Skipped,
    convert, list_queries,
};

/// Errors that stop a conversion (skipped queries are not errors: see [`Converted::skipped`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The JSON is no dashboard (no object, or none of `panels`, `rows`, `templating`).
    #[error("not a Grafana dashboard: {0}")]
    NotADashboard(String),
    /// [`ConvertOptions::cluster_label`] is no Prometheus label name.
    #[error("invalid --cluster-label {0:?}: a Prometheus label name is [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabel(String),
    /// [`ConvertOptions::uid`] is no Grafana uid.
    #[error("invalid --uid {0:?}: Grafana uids are 1-40 characters of [a-zA-Z0-9_-]")]
    InvalidUid(String),
}
