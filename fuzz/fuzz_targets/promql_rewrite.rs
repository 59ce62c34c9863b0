//! `promql::rewrite_expr` on arbitrary text: never panics, and whatever it returns as changed
//! parses again and is a fixed point (a second rewrite changes nothing); the fast PromQL
//! parser builds promql-parser's exact tree or declines.

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::promql_rewrite(data));
