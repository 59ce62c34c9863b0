//! The `promfed` binary: everything happens in [`promfed::cli`].

fn main() -> std::process::ExitCode {
    promfed::cli::main()
}
