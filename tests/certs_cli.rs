//! `promfed certs` as a user runs it: the real binary, its exit codes, stderr and hints
//! (issue 16's certificate items).

use std::path::Path;
use std::process::{Command, Output};

fn promfed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promfed"))
        .args(args)
        .env_remove("PROMFED_CERTS_DNS")
        .env_remove("PROMFED_CERTS_IP")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ca(dir: &Path) -> String {
    let out = dir.display().to_string();
    let o = promfed(&["certs", "ca", "--out", &out]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    out
}

#[test]
fn a_ca_folder_with_the_key_of_another_ca_is_refused_naming_both_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = ca(&tmp.path().join("ca"));
    ca(&tmp.path().join("other"));
    std::fs::copy(
        tmp.path().join("other/ca.key"),
        tmp.path().join("ca/ca.key"),
    )
    .unwrap();
    let out = tmp.path().join("webhook");
    let o = promfed(&[
        "certs",
        "webhook",
        "--ca",
        &ca_dir,
        "--service",
        "promfed",
        "--namespace",
        "promfed-system",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    for file in ["ca/ca.crt", "ca/ca.key"] {
        assert!(err.contains(file), "{err}");
    }
    assert!(err.contains("do not belong together"), "{err}");
    assert!(!out.exists(), "no leaf written");
}

#[test]
fn dns_and_ip_with_client_are_refused_and_the_hint_names_the_federation_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = ca(&tmp.path().join("ca"));
    let out = tmp.path().join("client").display().to_string();
    for extra in [["--dns", "prom.example"], ["--ip", "10.0.0.1"]] {
        let mut args = vec!["certs", "federation", "--ca", &ca_dir, "--client", "tools"];
        args.extend(extra);
        args.extend(["--out", &out]);
        let o = promfed(&args);
        assert_eq!(o.status.code(), Some(2), "usage error");
        let err = text(&o.stderr);
        assert!(err.contains(extra[0]) && err.contains("--client"), "{err}");
        assert!(!tmp.path().join("client").exists(), "nothing written");
    }
    let o = promfed(&[
        "certs",
        "federation",
        "--ca",
        &ca_dir,
        "--client",
        "tools",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let hint = text(&o.stdout);
    assert!(
        hint.contains("create secret generic prometheus-federation-certs "),
        "{hint}"
    );
}
