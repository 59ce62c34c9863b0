//! The `Examples:` section of every `--help`, kept in one table so each subcommand, wherever its
//! arguments are defined, gets one (a test checks that none is missing).

/// `(subcommand path, examples)`; the path is the subcommand names joined by spaces.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "Examples:
  # What the webhook would change in a ConfigMap (exit code 1 when something changes)
  promfed mutate --values examples/values.yaml -f examples/tkg-prometheus-configmap.yaml -o diff
  # Validate a values file before handing it to the chart
  promfed check examples/values.yaml
  # Run the webhook locally, with a self-signed certificate for localhost
  promfed serve --values examples/values.yaml --listen localhost:8443 --metrics-listen localhost:8080",
    ),
    (
        "mutate",
        "Examples:
  # The rewritten ConfigMap, as the webhook would store it
  promfed mutate --values examples/values.yaml -f examples/tkg-prometheus-configmap.yaml
  # A unified diff of the live ConfigMap (exit code 0: no change, 1: changes, as kubectl diff)
  kubectl -n tanzu-system-monitoring get configmap prometheus-server -o yaml \\
    | promfed mutate --values examples/values.yaml -f - -o diff
  # A rendered chart or a directory of manifests; only the Prometheus server objects change
  helm template prometheus ./prometheus-chart | promfed mutate --values examples/values.yaml
  promfed mutate --values examples/values.yaml -f manifests/ -f extra.yaml
  # The RFC 6902 patch the webhook would answer with
  promfed mutate --values examples/values.yaml -f examples/tkg-prometheus-configmap.yaml -o patch
  # The embedded example, no files needed
  promfed mutate --example -o diff",
    ),
    (
        "check",
        "Examples:
  promfed check examples/values.yaml
  # Warnings (e.g. a federation file no federationSecrets entry mounts) fail the check too
  promfed check --strict examples/values.yaml
  # The chart's `config:` block (yq v4), from stdin
  yq '.config' my-chart-values.yaml | promfed check -",
    ),
    (
        "serve",
        "Examples:
  # Locally: a self-signed certificate for localhost; its CA is written to --ca-out
  promfed serve --values examples/values.yaml --listen localhost:8443 \\
    --metrics-listen localhost:8080 --ca-out /tmp/promfed-ca.pem
  curl --cacert /tmp/promfed-ca.pem -H 'Content-Type: application/json' \\
    --data @tests/fixtures/admission/configmap-create.json https://localhost:8443/mutate
  # In a pod (the chart does this), with the certificate from a Secret
  promfed serve --values /etc/promfed/values.yaml --tls-cert /tls/tls.crt --tls-key /tls/tls.key",
    ),
    (
        "dashboards",
        "Examples:
  promfed dashboards convert charts/promfed/dashboards/kubernetes-apiserver.json > multi.json",
    ),
    (
        "dashboards convert",
        "Examples:
  promfed dashboards convert charts/promfed/dashboards/kubernetes-apiserver.json > multi.json
  # A copy beside the original, with a cluster multi-select
  promfed dashboards convert --multi --uid apiserver-fleet --title 'API server (fleet)' \\
    -o multi.json charts/promfed/dashboards/kubernetes-apiserver.json",
    ),
    (
        "certs",
        "Examples:
  promfed certs ca --out certs/ca
  promfed certs webhook --ca certs/ca --service promfed --namespace promfed-system --out certs/webhook
  promfed certs federation --ca certs/ca --client tools-cluster --out certs/client",
    ),
    (
        "certs ca",
        "Examples:
  promfed certs ca --out certs/ca
  promfed certs ca --out certs/ca --common-name 'fleet CA' --days 1825",
    ),
    (
        "certs webhook",
        "Examples:
  promfed certs webhook --ca certs/ca --service promfed --namespace promfed-system --out certs/webhook",
    ),
    (
        "certs federation",
        "Examples:
  # The /federate server certificate of a workload cluster
  promfed certs federation --ca certs/ca --server-name prom-federation --dns prom.wl1.example.com \\
    --out certs/wl1
  # The tools cluster's client certificate
  promfed certs federation --ca certs/ca --client tools-cluster --out certs/client",
    ),
    (
        "version",
        "Examples:
  promfed version",
    ),
    (
        "completion",
        "Examples:
  # bash, for this shell / for every shell
  source <(promfed completion bash)
  promfed completion bash | sudo tee /etc/bash_completion.d/promfed >/dev/null
  # zsh
  promfed completion zsh > \"${fpath[1]}/_promfed\"",
    ),
];

/// Sets the examples of `cmd` and of all its subcommands.
pub fn apply(cmd: clap::Command) -> clap::Command {
    apply_at(cmd, "")
}

fn apply_at(mut cmd: clap::Command, path: &str) -> clap::Command {
    if let Some((_, text)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
        cmd = cmd.after_help(*text);
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(name, |s| apply_at(s, &sub_path));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    fn missing(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        if cmd.get_after_help().is_none() {
            out.push(if path.is_empty() {
                "promfed".into()
            } else {
                path.into()
            });
        }
        for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let p = format!("{path} {}", s.get_name()).trim().to_owned();
            missing(s, &p, out);
        }
    }

    #[test]
    fn every_help_has_examples() {
        let cmd = super::apply(crate::cli::Cli::command());
        let mut out = Vec::new();
        missing(&cmd, "", &mut out);
        assert!(out.is_empty(), "no examples in the --help of {out:?}");
    }

    #[test]
    fn every_example_path_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (_, text) in super::EXAMPLES {
            for word in text.split_whitespace() {
                let word = word.trim_start_matches('@');
                let repo_path = ["examples/", "charts/", "tests/fixtures/"]
                    .iter()
                    .any(|p| word.starts_with(p));
                if repo_path {
                    assert!(
                        root.join(word).exists(),
                        "example path {word} does not exist"
                    );
                }
            }
        }
    }
}
