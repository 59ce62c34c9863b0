//! promfed: turns a TKG Prometheus into the central, multi-cluster Prometheus of a fleet.
//!
//! The data flow, one module (or folder) each:
//!
//! - [`admission`]: AdmissionReview v1 in, decision out, AdmissionReview v1 back (pure).
//! - [`rewrite`]: the engine, pure functions from an object and the [`config::Values`] to a
//!   JSON patch: the ConfigMap ([`rewrite::configmap`]: `prometheus.yml` through
//!   [`rewrite::scrape`], rule files through [`rewrite::rules`] in local or fleet mode
//!   ([`rewrite::fleet`]), plus the federation-health group) or the Deployment
//!   ([`rewrite::deployment`]).
//! - [`promql`]: the syntax-tree rewrite of expressions and a Prometheus-compatible printer.
//! - [`yaml`]: a span tree of the document and text splices, so only the edits change bytes.
//! - [`config`]: the values file (the seed's `values.yaml` as is).
//! - [`server`]: the webhook over TLS (state, handlers, connections, reload), with [`metrics`]
//!   and [`logging`].
//! - [`cli`]: the binary's edge: every clap type and all process I/O.
//! - [`certs`] and [`dashboards`]: certificate and Grafana dashboard tooling.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod dashboards;
pub mod logging;
pub mod metrics;
pub(crate) mod object_ref;
pub(crate) mod patch;
pub mod promql;
pub mod rewrite;
pub mod server;
pub mod yaml;
