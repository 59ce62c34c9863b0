//! The `promfed` binary as a user runs it: exit codes, what goes to stdout and to stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_promfed");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promfed(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .env_remove("PROMFED_VALUES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promfed starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("promfed ends")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CM: &str = "examples/tkg-prometheus-configmap.yaml";
const VALUES: &str = "examples/values.yaml";

#[test]
fn version_and_completion() {
    let out = promfed(&["version"], "");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("promfed {}\n", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = promfed(&["completion", shell], "");
        let script = text(&out.stdout);
        assert!(
            out.status.success() && script.contains("mutate") && script.contains("filename"),
            "{shell}: {script:.300}"
        );
    }
}

#[test]
fn every_help_shows_examples() {
    for args in [
        &["--help"][..],
        &["mutate", "--help"],
        &["check", "--help"],
        &["serve", "--help"],
        &["certs", "federation", "--help"],
        &["dashboards", "convert", "--help"],
        &["completion", "--help"],
    ] {
        let out = promfed(args, "");
        assert!(
            text(&out.stdout).contains("\nExamples:\n  "),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn diff_exit_codes_follow_kubectl_diff() {
    let out = promfed(&["mutate", "--values", VALUES, "-f", CM, "-o", "diff"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("+++ b/ConfigMap/"));
    // The rewritten ConfigMap has nothing left to change.
    let mutated = promfed(&["mutate", "--values", VALUES, "-f", CM], "");
    assert!(mutated.status.success());
    let out = promfed(
        &["mutate", "--values", VALUES, "-f", "-", "-o", "diff"],
        &text(&mutated.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    // Errors are not "differences".
    let out = promfed(&["mutate", "-o", "diff", "-f", "-"], "a: [\n");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn defaults_and_no_match_are_said_on_stderr() {
    let out = promfed(&["mutate", "-f", CM], "");
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("note: no --values given: using the built-in defaults"),
        "{}",
        text(&out.stderr)
    );
    let renamed = std::fs::read_to_string(Path::new(ROOT).join(CM))
        .unwrap()
        .replacen("name: prometheus-server", "name: prometheus", 1);
    let out = promfed(&["mutate", "--values", VALUES], &renamed);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), renamed, "passes through unchanged");
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: no document matched")
            && err.contains("its name is \"prometheus\", not \"prometheus-server\""),
        "{err}"
    );
    // --strict: the warning fails the run, and nothing is printed.
    let out = promfed(&["mutate", "--strict", "--values", VALUES], &renamed);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("error: no document matched"));
}

#[test]
fn filename_takes_files_directories_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let cm = std::fs::read_to_string(Path::new(ROOT).join(CM)).unwrap();
    std::fs::write(dir.path().join("b.yaml"), &cm).unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let d = dir.path().to_str().unwrap();
    let out = promfed(
        &[
            "mutate", "--values", VALUES, "-f", d, "-f", "-", "-o", "json",
        ],
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Secret", "ConfigMap", "Service"],
        "name order, then stdin"
    );
    // Errors name the file.
    std::fs::write(dir.path().join("c.yaml"), "---\nx: 1\n---\ny: [\n").unwrap();
    let out = promfed(&["mutate", "-f", d], "");
    let err = text(&out.stderr);
    assert!(
        err.contains("c.yaml: document 2 (line 4): not valid YAML"),
        "{err}"
    );
}

#[test]
fn check_takes_a_positional_file_stdin_and_strict() {
    let out = promfed(&["check", VALUES], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("examples/values.yaml: ok"));
    let out = promfed(&["check", "-"], "localClusterName: tools\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("<stdin>: ok"));
    let out = promfed(&["check", "-"], "localClusterName: 42\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("localClusterName: invalid type"),
        "{}",
        text(&out.stderr)
    );
    // A federation file no federationSecrets entry mounts: a warning, an error under --strict.
    let seed = std::fs::read_to_string(Path::new(ROOT).join(VALUES)).unwrap();
    let unmounted =
        format!("{seed}federationSecrets:\n- secretName: fed\n  mountPath: /elsewhere\n");
    let out = promfed(&["check", "-"], &unmounted);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("warning: additionalScrapeConfigs job"));
    let out = promfed(&["check", "--strict", "-"], &unmounted);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
}

/// Starts `promfed serve` and collects its stderr lines until `until` matches one of them (or,
/// when `None`, the process ends by itself; at most 60 s without a line); the process is then
/// stopped.
fn serve_until(args: &[&str], until: Option<&str>) -> (Vec<String>, Option<i32>) {
    let ca = tempfile::tempdir().unwrap();
    let ca_out = ca.path().join("ca.pem");
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--ca-out")
        .arg(&ca_out)
        .env_remove("PROMFED_VALUES")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promfed serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let done = until.is_some_and(|u| line.contains(u));
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("promfed serve ends");
    (lines, status.code())
}

#[test]
fn serve_errors_once_plain_text_logs_and_host_names() {
    // Hold a port so the bind fails; `localhost` must resolve (not only IP literals).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let listen = format!("localhost:{port}");
    let (lines, code) = serve_until(
        &["--listen", &listen, "--metrics-listen", "localhost:0"],
        None,
    );
    let all = lines.join("\n");
    assert_eq!(code, Some(1), "{all}");
    let error = lines.iter().find(|l| l.starts_with("error:")).expect(&all);
    assert!(
        error.contains(&format!("127.0.0.1:{port}")),
        "localhost resolved to 127.0.0.1: {error}"
    );
    assert_eq!(
        error.matches("in use").count(),
        1,
        "the cause is said once: {error}"
    );
    assert!(
        !all.contains('\u{1b}'),
        "no ANSI colours in a pipe: {all:?}"
    );
    let loaded = lines
        .iter()
        .find(|l| l.contains("serving certificate loaded"))
        .expect(&all);
    let not_after = loaded.split("not_after=").nth(1).expect(loaded);
    assert!(
        not_after.len() >= 20 && not_after.as_bytes()[4] == b'-' && not_after[..20].ends_with('Z'),
        "RFC 3339, not an epoch: {loaded}"
    );
}

#[test]
fn serve_log_fields_are_plain_addresses() {
    let (lines, _) = serve_until(
        &["--listen", "localhost:0", "--metrics-listen", "localhost:0"],
        Some("promfed serving"),
    );
    let all = lines.join("\n");
    let serving = lines
        .iter()
        .find(|l| l.contains("promfed serving"))
        .expect(&all);
    assert!(
        serving.contains("admission=127.0.0.1:") && serving.contains("metrics=127.0.0.1:"),
        "{serving}"
    );
    assert!(!serving.contains("Some("), "{serving}");
}
