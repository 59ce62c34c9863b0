//! Every fuzz finding, kept in the normal suite: minimised inputs live in
//! `tests/fixtures/regressions/<target>/` and are replayed, together with the committed seed
//! corpora (`fuzz/corpus/<target>/`), through the very checks the fuzz targets run
//! (`fuzz/fuzz_targets/checks.rs`: no panic, rewrites are fixed points, patches apply). So a
//! finding stays fixed without nightly, cargo-fuzz or libFuzzer.

use std::path::{Path, PathBuf};

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

/// Runs `check` on every file of the seed corpus and of the findings of `target`; fails
/// naming each input that breaks it.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [
        root.join("fuzz/corpus").join(target),
        root.join("tests/fixtures/regressions").join(target),
    ];
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no seeds for {target}: run python3 fuzz/make_corpus.py"
    );
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg:.2000}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs of {target} fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn promql_rewrite() {
    replay("promql_rewrite", checks::promql_rewrite);
}

#[test]
fn rule_file() {
    replay("rule_file", checks::rule_file);
}

#[test]
fn prometheus_yml() {
    replay("prometheus_yml", checks::prometheus_yml);
}

#[test]
fn configmap() {
    replay("configmap", checks::configmap);
}

#[test]
fn admission() {
    replay("admission", checks::admission);
}
