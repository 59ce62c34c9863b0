//! Shared by the fuzz targets: the values the inputs are rewritten with, and the fixed-point check.

#![allow(dead_code)]

use promfed::config::Values;

/// The seed's values (a federation job, cluster label `cluster`), as the examples use them.
pub fn example_values() -> Values {
    match Values::from_yaml_str(promfed::cli::EXAMPLE_VALUES) {
        Ok(v) => v,
        Err(e) => panic!("embedded example values do not load: {e}"),
    }
}

/// Fuzz input as text; non-UTF-8 input cannot reach the rewriters (ConfigMap data is a string).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
