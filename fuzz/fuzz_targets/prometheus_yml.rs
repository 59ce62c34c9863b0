//! `rewrite::scrape::rewrite_prometheus_yml` on arbitrary text: never panics, and a rewritten
//! file is a fixed point.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use promfed::rewrite::scrape::rewrite_prometheus_yml;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else {
        return;
    };
    let values = common::example_values();
    let Ok(edit) = rewrite_prometheus_yml("prometheus.yml", text, &values) else {
        return;
    };
    if let Some(new) = edit.text {
        match rewrite_prometheus_yml("prometheus.yml", &new, &values) {
            Ok(again) => assert!(
                again.text.is_none(),
                "not a fixed point:\n--- input\n{text}\n--- once\n{new}\n--- twice\n{:?}",
                again.text
            ),
            Err(e) => panic!("own output rejected: {e}\n--- input\n{text}\n--- once\n{new}"),
        }
    }
});
