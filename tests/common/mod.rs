//! The one test-support library of the integration tests (include with `mod common;`):
//! [`admission`] builds AdmissionReviews, [`server`] runs `promfed serve` in process with a test
//! CA, [`fleet`] and [`prom`] run real Prometheus servers and [`alertmanager`] a real
//! Alertmanager (both through [`process`]), [`wait`] polls with a bound, and
//! [`golden`] compares with (or, under `UPDATE_GOLDEN=1`, rewrites) golden files.
//!
//! Each test crate uses only a subset of these helpers, so unused ones are not an error here.
#![allow(dead_code)]

pub mod admission;
pub mod alertmanager;
pub mod fleet;
pub mod golden;
pub mod process;
pub mod prom;
pub mod server;
pub mod wait;
