//! Golden tests of `promfed mutate` on a realistic TKG-like ConfigMap with the seed's values
//! verbatim, plus real `promtool` checks of every rewritten file.
//!
//! Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 cargo test --test golden`
//! and review the diff.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use promfed::cli::{EXAMPLE_CONFIGMAP, EXAMPLE_VALUES, OutputFormat, mutate_stream};
use promfed::config::Values;
use serde_yaml::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

fn seed_values() -> Values {
    Values::from_yaml_str(EXAMPLE_VALUES).expect("the seed's values.yaml is accepted verbatim")
}

/// Compares with the golden file, or rewrites it when `UPDATE_GOLDEN` is set.
fn assert_golden(name: &str, actual: &str) {
    common::golden::assert_golden(&fixture(name), actual);
}

fn mutate(input: &str, format: OutputFormat) -> String {
    let out = mutate_stream(input, &seed_values(), format).expect("mutate succeeds");
    out.text
}

#[test]
fn tkg_configmap_matches_golden_yaml_and_patch() {
    assert_golden(
        "tkg-mutated.yaml",
        &mutate(EXAMPLE_CONFIGMAP, OutputFormat::Yaml),
    );
    assert_golden(
        "tkg-patch.json",
        &mutate(EXAMPLE_CONFIGMAP, OutputFormat::Patch),
    );
}

#[test]
fn mutating_the_output_again_changes_nothing() {
    let once = mutate(EXAMPLE_CONFIGMAP, OutputFormat::Yaml);
    let twice = mutate(&once, OutputFormat::Yaml);
    assert_eq!(once, twice, "second mutation must be byte-identical");
    assert_eq!(mutate(&once, OutputFormat::Patch).trim(), "[]");
}

#[test]
fn untouched_keys_and_metadata_are_preserved() {
    let out: Value = serde_yaml::from_str(&mutate(EXAMPLE_CONFIGMAP, OutputFormat::Yaml)).unwrap();
    let orig: Value = serde_yaml::from_str(EXAMPLE_CONFIGMAP).unwrap();
    assert_eq!(out["metadata"], orig["metadata"]);
    // Neither in ruleFiles (default: recording_rules.yml only) nor alerting_rules.yml (fleet
    // mode by default), so byte for byte the same.
    for key in ["alerts", "rules"] {
        assert_eq!(out["data"][key], orig["data"][key], "{key}");
    }
    let prom: Value =
        serde_yaml::from_str(out["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    let orig_prom: Value =
        serde_yaml::from_str(orig["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    for key in ["global", "rule_files", "alerting"] {
        assert_eq!(prom[key], orig_prom[key], "{key}");
    }
    let jobs = prom["scrape_configs"].as_sequence().unwrap();
    let orig_jobs = orig_prom["scrape_configs"].as_sequence().unwrap();
    assert_eq!(
        jobs.len(),
        orig_jobs.len() + 1,
        "one federation job appended"
    );
    for (job, orig_job) in jobs.iter().zip(orig_jobs) {
        let mut stripped = job.clone();
        let rules = stripped["relabel_configs"].as_sequence_mut().unwrap();
        let last = rules.pop().unwrap();
        assert_eq!(last["target_label"], Value::from("cluster"));
        assert_eq!(last["replacement"], Value::from("shared-tools"));
        assert_eq!(last["source_labels"][0], Value::from("__address__"));
        // Everything else of the job is as it was (an absent/null relabel_configs becomes a list).
        let mut orig_job = orig_job.clone();
        if orig_job.get("relabel_configs").is_none_or(Value::is_null) {
            orig_job["relabel_configs"] = Value::Sequence(vec![]);
        }
        assert_eq!(stripped, orig_job);
    }
    let fed = jobs.last().unwrap();
    assert_eq!(fed["job_name"], Value::from("federation"));
    assert!(
        fed.get("relabel_configs").is_none(),
        "the federation job is not labelled local"
    );
}

#[test]
fn alerting_rules_are_rewritten_when_listed() {
    let values = Values::from_yaml_str(
        "ruleFiles: [recording_rules.yml, alerting_rules.yml, alerts, rules]\n",
    )
    .unwrap();
    let out = mutate_stream(EXAMPLE_CONFIGMAP, &values, OutputFormat::Yaml).unwrap();
    let doc: Value = serde_yaml::from_str(&out.text).unwrap();
    let alerts: Value =
        serde_yaml::from_str(doc["data"]["alerting_rules.yml"].as_str().unwrap()).unwrap();
    for rule in alerts["groups"][0]["rules"].as_sequence().unwrap() {
        assert_eq!(rule["labels"]["cluster"], Value::from("local"));
        assert!(
            rule["expr"]
                .as_str()
                .unwrap()
                .contains(r#"cluster="local""#),
            "{:?}",
            rule["expr"]
        );
    }
    // `{}` rule files stay exactly as they were.
    assert_eq!(doc["data"]["alerts"], Value::from("{}\n"));
}

#[test]
fn multi_document_stream_passes_other_documents_verbatim() {
    let other = "# a comment that must survive\napiVersion: v1\nkind: Service\nmetadata:\n  name: prometheus-server\n";
    let input = format!("{other}---\n{EXAMPLE_CONFIGMAP}");
    let out = mutate(&input, OutputFormat::Yaml);
    assert!(out.starts_with(other), "{}", &out[..200.min(out.len())]);
    assert_eq!(
        out.matches("\n---\n").count() + usize::from(out.starts_with("---\n")),
        1
    );
    assert!(out.contains("replacement: shared-tools"));
}

// ---- real Prometheus: promtool check config / check rules -------------------------------------

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("promtool not found on PATH: install Debian's prometheus package (apt-get install -y prometheus); .ci/test does this")
    })
}

fn run_promtool(args: &[&std::ffi::OsStr]) {
    let out = Command::new(promtool())
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {:?} failed:\n{}\n{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's Prometheus is built without Kubernetes service discovery (`kubernetes_sd_configs` is
/// "field not found"), and promtool checks that referenced files exist. So, in a copy only, swap
/// every `kubernetes_sd_configs` for a static loopback target and point `*_file` settings and
/// `rule_files` at files in `dir`. The rewritten parts promfed adds are untouched by this.
fn make_checkable(prom: &mut Value, dir: &Path, rule_files: &[PathBuf]) {
    fn walk(v: &mut Value, dir: &Path) {
        match v {
            Value::Mapping(m) => {
                if m.remove("kubernetes_sd_configs").is_some() && !m.contains_key("static_configs")
                {
                    m.insert(
                        "static_configs".into(),
                        serde_yaml::from_str("[{targets: ['127.0.0.1:9']}]").unwrap(),
                    );
                }
                for (k, child) in m.iter_mut() {
                    let is_file = k.as_str().is_some_and(|k| k.ends_with("_file"));
                    if is_file && child.is_string() {
                        let name = k.as_str().unwrap().to_owned();
                        *child = Value::from(dir.join(name).to_str().unwrap());
                    } else {
                        walk(child, dir);
                    }
                }
            }
            Value::Sequence(s) => s.iter_mut().for_each(|c| walk(c, dir)),
            _ => {}
        }
    }
    walk(prom, dir);
    prom["rule_files"] = Value::Sequence(
        rule_files
            .iter()
            .map(|p| Value::from(p.to_str().unwrap()))
            .collect(),
    );
    // A real certificate/key pair for the tls_config files, and a token file.
    let ca = rcgen::generate_simple_self_signed(vec!["prom-federation".to_owned()]).unwrap();
    for (name, body) in [
        ("ca_file", ca.cert.pem()),
        ("cert_file", ca.cert.pem()),
        ("key_file", ca.signing_key.serialize_pem()),
        ("bearer_token_file", "token\n".to_owned()),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

#[test]
fn promtool_accepts_every_rewritten_file() {
    let values = Values::from_yaml_str(&format!(
        "{EXAMPLE_VALUES}ruleFiles: [recording_rules.yml, alerting_rules.yml, alerts, rules]\n"
    ))
    .unwrap();
    let out = mutate_stream(EXAMPLE_CONFIGMAP, &values, OutputFormat::Yaml).unwrap();
    let doc: Value = serde_yaml::from_str(&out.text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rule_paths = Vec::new();
    for key in [
        "recording_rules.yml",
        "alerting_rules.yml",
        "alerts",
        "rules",
    ] {
        let path = dir.path().join(key);
        std::fs::write(&path, doc["data"][key].as_str().unwrap()).unwrap();
        rule_paths.push(path);
    }
    let mut prom: Value =
        serde_yaml::from_str(doc["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    make_checkable(&mut prom, dir.path(), &rule_paths);
    let prom_path = dir.path().join("prometheus.yml");
    std::fs::write(&prom_path, serde_yaml::to_string(&prom).unwrap()).unwrap();
    run_promtool(&["check".as_ref(), "config".as_ref(), prom_path.as_os_str()]);
    for p in &rule_paths {
        run_promtool(&["check".as_ref(), "rules".as_ref(), p.as_os_str()]);
    }
}

#[test]
fn stream_with_deployment_mounts_federation_secrets() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: prometheus-server\n  namespace: tanzu-system-monitoring\n  labels: {app: prometheus, component: server}\nspec:\n  selector: {matchLabels: {app: prometheus}}\n  template:\n    metadata: {labels: {app: prometheus}}\n    spec:\n      containers:\n      - name: prometheus-server\n        image: prometheus\n";
    let values = Values::from_yaml_str(&format!(
        "{EXAMPLE_VALUES}federationSecrets:\n- secretName: prometheus-federation\n  mountPath: /etc/prometheus/addCerts/federation\n"
    ))
    .unwrap();
    let input = format!("{EXAMPLE_CONFIGMAP}---\n{deployment}");
    let out = mutate_stream(&input, &values, OutputFormat::Yaml)
        .unwrap()
        .text;
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let pod = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        Value::from("prometheus-federation")
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        Value::from("/etc/prometheus/addCerts/federation")
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["readOnly"],
        Value::from(true)
    );
    // The whole stream is a fixed point.
    assert_eq!(
        mutate_stream(&out, &values, OutputFormat::Yaml)
            .unwrap()
            .text,
        out
    );
    let patch = mutate_stream(&out, &values, OutputFormat::Patch)
        .unwrap()
        .text;
    assert_eq!(patch.trim(), "[]");
}
