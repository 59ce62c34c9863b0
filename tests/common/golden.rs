//! Golden files: one switch for every test, `UPDATE_GOLDEN=1`, rewrites them instead of comparing.

use std::path::Path;

/// The environment variable that turns comparisons into rewrites.
pub const UPDATE_ENV: &str = "UPDATE_GOLDEN";

/// True when the golden files are to be rewritten.
pub fn update_requested() -> bool {
    std::env::var_os(UPDATE_ENV).is_some()
}

/// Compares `actual` with the golden file at `path` (a unified diff on mismatch), or rewrites the
/// file when [`update_requested`].
pub fn assert_golden(path: &Path, actual: &str) {
    if update_requested() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with {UPDATE_ENV}=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("expected", "actual")
            .to_string();
        panic!(
            "{} differs from the golden file ({UPDATE_ENV}=1 to accept):\n{diff}",
            path.display()
        );
    }
}
