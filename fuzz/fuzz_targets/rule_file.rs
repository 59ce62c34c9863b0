//! `rewrite::rules::rewrite_rule_file` on arbitrary text: never panics, and a rewritten file is a
//! fixed point (kapp compares the second admission's answer with the first).

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::rule_file(data));
