//! Reading a command's input: one rule for every subcommand, so `-` means stdin everywhere and
//! every error names what could not be read.

use std::io::Read;
use std::path::Path;

/// The name shown for standard input in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// A command's input text and the name messages call it by (the path, or `<stdin>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The path as given, or [`STDIN_NAME`].
    pub name: String,
    /// The whole input.
    pub text: String,
}

/// The input could not be read; names the file or `<stdin>`.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {name}: {source}")]
pub struct InputError {
    /// The path as given, or [`STDIN_NAME`].
    pub name: String,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

/// True when `path` means standard input: absent, or `-` (as kubectl and most Unix tools do).
pub fn is_stdin(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p.as_os_str() == "-")
}

/// Reads `path`, or all of `stdin` when [`is_stdin`]. `stdin` is a parameter so tests can feed it.
pub fn read_input(path: Option<&Path>, stdin: &mut dyn Read) -> Result<Input, InputError> {
    match path {
        Some(p) if !is_stdin(Some(p)) => {
            let name = p.display().to_string();
            match std::fs::read_to_string(p) {
                Ok(text) => Ok(Input { name, text }),
                Err(source) => Err(InputError { name, source }),
            }
        }
        _ => {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => Ok(Input {
                    name: STDIN_NAME.to_owned(),
                    text,
                }),
                Err(source) => Err(InputError {
                    name: STDIN_NAME.to_owned(),
                    source,
                }),
            }
        }
    }
}

/// [`read_input`] on the process' standard input.
pub fn read_input_or_stdin(path: Option<&Path>) -> Result<Input, InputError> {
    read_input(path, &mut std::io::stdin().lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_and_absent_read_stdin_and_files_are_named() {
        for path in [None, Some(Path::new("-"))] {
            let got = read_input(path, &mut "a: 1\n".as_bytes()).unwrap();
            assert_eq!(got.name, STDIN_NAME);
            assert_eq!(got.text, "a: 1\n");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.yaml");
        std::fs::write(&file, "b: 2\n").unwrap();
        let got = read_input(Some(&file), &mut "unused".as_bytes()).unwrap();
        assert_eq!(got.text, "b: 2\n");
        assert_eq!(got.name, file.display().to_string());

        let missing = dir.path().join("missing.yaml");
        let e = read_input(Some(&missing), &mut "".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
        let e = read_input(None, &mut [0xffu8, 0xfe].as_slice()).unwrap_err();
        assert!(e.to_string().starts_with("cannot read <stdin>"), "{e}");
    }
}
