//! Helpers shared by the integration tests (include with `mod common;`).
//!
//! Each test crate uses only a subset of these helpers, so unused ones are not an error here.
#![allow(dead_code)]

pub mod alertmanager;
pub mod fleet;
pub mod prom;
