//! `promql::rewrite_expr` on arbitrary text: never panics, and whatever it returns as changed
//! parses again and is a fixed point (a second rewrite changes nothing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use promfed::promql::{RewriteOptions, rewrite_expr};

/// Values that exercise quoting in the injected matcher.
const VALUES: &[&str] = &["local", "$cluster", "a\"b\\c", "tools|x.*", ""];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(src) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = RewriteOptions {
        label: if flags & 0x80 == 0 {
            "cluster"
        } else {
            "env_name"
        }
        .to_owned(),
        value: VALUES[usize::from(flags & 0x0f) % VALUES.len()].to_owned(),
        regex: flags & 0x10 != 0,
        tag_labelless: flags & 0x20 != 0,
    };
    let Ok(out) = rewrite_expr(src, &opts) else {
        return;
    };
    if !out.changed {
        assert_eq!(out.expr, src, "unchanged output must be the input itself");
        return;
    }
    if let Err(e) = promql_parser::parser::parse(&out.expr) {
        panic!("rewrite of {src:?} does not parse: {:?}: {e}", out.expr);
    }
    match rewrite_expr(&out.expr, &opts) {
        Ok(again) => assert!(
            !again.changed,
            "not a fixed point: {src:?} -> {:?} -> {:?}",
            out.expr, again.expr
        ),
        Err(e) => panic!("rewrite of {src:?} = {:?} is rejected: {e}", out.expr),
    }
});
