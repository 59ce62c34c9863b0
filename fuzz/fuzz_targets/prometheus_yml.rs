//! `rewrite::scrape::rewrite_prometheus_yml` on arbitrary text: never panics, and a rewritten
//! file is a fixed point.

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::prometheus_yml(data));
