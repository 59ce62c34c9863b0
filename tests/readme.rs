//! The README's examples must work as pasted: every repository path they name exists.

use std::path::Path;

const ROOTS: &[&str] = &[
    "examples/",
    "charts/",
    "tests/",
    "certs/",
    "src/",
    "benches/",
    ".ci/",
];

#[test]
fn every_path_the_readme_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut missing = Vec::new();
    for (n, line) in readme.lines().enumerate() {
        for word in line.split(|c: char| c.is_whitespace() || "`()[]<>\"'=,@".contains(c)) {
            let word = word.trim_end_matches(['.', ':', ';', ',']);
            let word = word.strip_prefix("./").unwrap_or(word);
            let placeholder = word.contains(['*', '{', '$', '<']);
            if ROOTS.iter().any(|r| word.starts_with(r))
                && !placeholder
                && !root.join(word).exists()
            {
                missing.push(format!("README.md:{}: {word}", n + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}
