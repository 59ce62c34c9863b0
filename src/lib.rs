//! promfed: turns a TKG Prometheus into the central, multi-cluster Prometheus of a fleet.
//!
//! Data flow, one module each:
//! AdmissionReview ([`admission`]) -> object ([`rewrite`]: ConfigMap keys `prometheus.yml`
//! ([`rewrite::scrape`]) and rule files ([`rewrite::rules`], built on [`promql`]), or the
//! Prometheus Deployment ([`rewrite::deployment`])) -> JSON patch ([`patch`]) -> response.
//! [`server`] serves it over TLS; [`cli`] offers the same engine offline.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod dashboards;
pub mod logging;
pub mod metrics;
pub mod object_ref;
pub mod patch;
pub mod promql;
pub mod rewrite;
pub mod server;
pub mod yaml;
