//! `promfed certs ...`: the command line over [`crate::certs`], and the hints it prints
//! (which files were written, the `kubectl` command that turns them into a Secret).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::certs::{
    CA_CERT, Ca, CertsError, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, LeafSpec, MAX_DAYS, TLS_CERT,
    TLS_KEY, Usage,
};

/// `promfed certs`: generate the fleet's certificates.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// What to generate.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// The three things `promfed certs` makes.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a private CA (`ca.crt`, `ca.key`) that signs the other certificates.
    Ca(CaArgs),
    /// Issue the webhook's serving certificate (SANs `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`,
    /// `<svc>.<ns>.svc.cluster.local`).
    Webhook(WebhookArgs),
    /// Issue a federation certificate: the `/federate` server certificate of a workload cluster
    /// (`--server-name`), or the client certificate of the tools cluster (`--client`).
    Federation(FederationArgs),
}

/// Options every subcommand shares.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Directory to write into (created when missing).
    #[arg(long, env = "PROMFED_CERTS_OUT")]
    pub out: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long, env = "PROMFED_CERTS_FORCE")]
    pub force: bool,
    /// Validity in days, starting one hour ago (clock skew). Default: 3650 for a CA, 365 otherwise.
    #[arg(long, env = "PROMFED_CERTS_DAYS", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
    pub days: Option<u32>,
}

/// `promfed certs ca`.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// Common name of the CA.
    #[arg(long, env = "PROMFED_CERTS_CA_NAME", default_value = "promfed CA")]
    pub common_name: String,
    /// Where the files go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `promfed certs webhook`.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Directory holding the CA (`ca.crt`, `ca.key`), as written by `promfed certs ca`.
    #[arg(long, env = "PROMFED_CERTS_CA")]
    pub ca: PathBuf,
    /// Name of the webhook's Service.
    #[arg(long, env = "PROMFED_CERTS_SERVICE")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, env = "PROMFED_CERTS_NAMESPACE")]
    pub namespace: String,
    /// Where the files go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `promfed certs federation`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["server_name", "client"])))]
pub struct FederationArgs {
    /// Directory holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, env = "PROMFED_CERTS_CA")]
    pub ca: PathBuf,
    /// Issue a server certificate for this DNS name (the `tls_config.server_name` the tools
    /// cluster uses, e.g. `prom-federation`).
    #[arg(long, env = "PROMFED_CERTS_SERVER_NAME")]
    pub server_name: Option<String>,
    /// More DNS names for the server certificate (e.g. the ingress host). Refused with `--client`:
    /// a client certificate names no server.
    #[arg(
        long = "dns",
        env = "PROMFED_CERTS_DNS",
        value_delimiter = ',',
        requires = "server_name",
        conflicts_with = "client"
    )]
    pub dns: Vec<String>,
    /// IP addresses for the server certificate.
    #[arg(
        long = "ip",
        env = "PROMFED_CERTS_IP",
        value_delimiter = ',',
        requires = "server_name",
        conflicts_with = "client"
    )]
    pub ip: Vec<IpAddr>,
    /// Issue a client certificate with this common name (the tools cluster's identity).
    #[arg(long, env = "PROMFED_CERTS_CLIENT")]
    pub client: Option<String>,
    /// Where the files go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `promfed certs ...`, printing the files written and how to turn them into a Secret.
pub fn run(args: CertsArgs) -> Result<(), CertsError> {
    match args.command {
        CertsCommand::Ca(a) => {
            let days = a.output.days.unwrap_or(DEFAULT_CA_DAYS);
            let ca = Ca::generate(&a.common_name, days)?;
            let written = ca.write(&a.output.out, a.output.force)?;
            report(&written);
            println!(
                "next: promfed certs webhook --ca {0} ... and promfed certs federation --ca {0} ...",
                a.output.out.display()
            );
        }
        CertsCommand::Webhook(a) => {
            let ca = Ca::load(&a.ca)?;
            let spec = LeafSpec::webhook(&a.service, &a.namespace)?
                .days(a.output.days.unwrap_or(DEFAULT_LEAF_DAYS));
            let written = ca.issue(&spec)?.write(&a.output.out, a.output.force)?;
            report(&written);
            let dir = a.output.out.display();
            println!(
                "next: kubectl -n {ns} create secret tls {svc}-tls --cert={dir}/{TLS_CERT} --key={dir}/{TLS_KEY}\n\
                 caBundle for the MutatingWebhookConfiguration: base64 -w0 {dir}/{CA_CERT}",
                ns = a.namespace,
                svc = a.service,
            );
        }
        CertsCommand::Federation(a) => {
            let ca = Ca::load(&a.ca)?;
            let spec = match (&a.server_name, &a.client) {
                (Some(name), None) => LeafSpec::federation_server(name, &a.dns, &a.ip)?,
                // clap refuses this too; checked again so no caller's names are dropped silently.
                (None, Some(_)) if !a.dns.is_empty() || !a.ip.is_empty() => {
                    let names: Vec<String> = (a.dns.iter().cloned())
                        .chain(a.ip.iter().map(IpAddr::to_string))
                        .collect();
                    return Err(CertsError::Invalid {
                        what: "--dns/--ip with --client",
                        value: names.join(","),
                        message: "a client certificate carries no server names; \
                                  use --dns and --ip with --server-name"
                            .to_owned(),
                    });
                }
                (None, Some(name)) => LeafSpec::federation_client(name)?,
                // clap's required, exclusive group rules both other cases out.
                _ => {
                    return Err(CertsError::Invalid {
                        what: "arguments",
                        value: String::new(),
                        message: "give exactly one of --server-name and --client".to_owned(),
                    });
                }
            }
            .days(a.output.days.unwrap_or(DEFAULT_LEAF_DAYS));
            let written = ca.issue(&spec)?.write(&a.output.out, a.output.force)?;
            report(&written);
            println!("{}", federation_hint(spec.usage, &a.output.out));
        }
    }
    Ok(())
}

/// The Secret the tools cluster's `federationSecrets` mounts (client certificate and CA), as
/// the READMEs and the chart README name it.
pub const FEDERATION_CLIENT_SECRET: &str = "prometheus-federation-certs";
/// The Secret a workload cluster's ingress (or Prometheus) serves `/federate` with.
pub const FEDERATION_SERVER_SECRET: &str = "prometheus-federation-server";

/// The `kubectl` command that puts a federation certificate written to `dir` into its Secret.
fn federation_hint(usage: Usage, dir: &Path) -> String {
    let secret = match usage {
        Usage::Client => FEDERATION_CLIENT_SECRET,
        Usage::Server => FEDERATION_SERVER_SECRET,
    };
    let dir = dir.display();
    format!(
        "next: kubectl -n tanzu-system-monitoring create secret generic {secret} \
         --from-file={dir}/{CA_CERT} --from-file={dir}/{TLS_CERT} --from-file={dir}/{TLS_KEY}"
    )
}

fn report(written: &[PathBuf]) {
    for path in written {
        println!("wrote {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::certs::Leaf;
    use crate::certs::testing::{verify_client, verify_server};

    #[test]
    fn cli_parses_the_documented_forms() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct T {
            #[command(flatten)]
            certs: CertsArgs,
        }
        let t = T::try_parse_from([
            "certs",
            "federation",
            "--ca",
            "ca",
            "--server-name",
            "prom-federation",
            "--ip",
            "127.0.0.1",
            "--out",
            "o",
        ])
        .unwrap();
        assert!(matches!(
            t.certs.command,
            CertsCommand::Federation(FederationArgs {
                server_name: Some(_),
                client: None,
                ..
            })
        ));
        // One of --server-name and --client, not both, not none.
        assert!(
            T::try_parse_from([
                "certs",
                "federation",
                "--ca",
                "ca",
                "--server-name",
                "a",
                "--client",
                "b",
                "--out",
                "o"
            ])
            .is_err()
        );
        assert!(T::try_parse_from(["certs", "federation", "--ca", "ca", "--out", "o"]).is_err());
        // Issue 16: `--dns` (or `--ip`) beside `--client` used to be dropped without a word.
        for extra in [["--dns", "x"], ["--ip", "10.0.0.1"]] {
            let mut argv = vec!["certs", "federation", "--ca", "ca", "--client", "tools"];
            argv.extend(extra);
            argv.extend(["--out", "o"]);
            let e = T::try_parse_from(argv).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
            let e = e.to_string();
            assert!(e.contains(extra[0]) && e.contains("--client"), "{e}");
        }
        assert!(
            T::try_parse_from(["certs", "ca", "--out", "o", "--days", "0"]).is_err(),
            "zero days"
        );
    }

    #[test]
    fn run_refuses_server_names_on_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        Ca::generate("fleet", 30)
            .unwrap()
            .write(&dir.path().join("ca"), false)
            .unwrap();
        let e = run(CertsArgs {
            command: CertsCommand::Federation(FederationArgs {
                ca: dir.path().join("ca"),
                server_name: None,
                dns: vec!["x".into()],
                ip: vec!["10.0.0.1".parse().unwrap()],
                client: Some("tools".into()),
                output: OutputArgs {
                    out: dir.path().join("client"),
                    force: false,
                    days: None,
                },
            }),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--dns/--ip with --client") && e.contains("\"x,10.0.0.1\""),
            "{e}"
        );
        assert!(!dir.path().join("client").exists(), "nothing written");
    }

    #[test]
    fn webhook_refuses_a_ca_folder_whose_files_do_not_belong_together() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        Ca::generate("fleet", 30)
            .unwrap()
            .write(&ca_dir, false)
            .unwrap();
        let other = dir.path().join("other");
        Ca::generate("other", 30)
            .unwrap()
            .write(&other, false)
            .unwrap();
        std::fs::copy(
            other.join(crate::certs::CA_KEY),
            ca_dir.join(crate::certs::CA_KEY),
        )
        .unwrap();
        let e = run(CertsArgs {
            command: CertsCommand::Webhook(WebhookArgs {
                ca: ca_dir.clone(),
                service: "promfed".into(),
                namespace: "promfed".into(),
                output: OutputArgs {
                    out: dir.path().join("webhook"),
                    force: false,
                    days: None,
                },
            }),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&ca_dir.join(CA_CERT).display().to_string())
                && e.contains(&ca_dir.join(crate::certs::CA_KEY).display().to_string())
                && e.contains("do not belong together"),
            "{e}"
        );
        assert!(!dir.path().join("webhook").exists(), "nothing written");
    }

    #[test]
    fn one_name_for_the_federation_secret_in_hints_and_docs() {
        let hint = federation_hint(Usage::Client, Path::new("pki/client"));
        assert!(
            hint.contains(&format!(
                "create secret generic {FEDERATION_CLIENT_SECRET} "
            )),
            "{hint}"
        );
        let hint = federation_hint(Usage::Server, Path::new("pki/server"));
        assert!(hint.contains(FEDERATION_SERVER_SECRET), "{hint}");
        // Every federation Secret the docs create or mount is one of the two names.
        for (doc, text) in [
            ("README.md", include_str!("../../README.md")),
            ("certs/README.md", include_str!("../../certs/README.md")),
            (
                "charts/promfed/README.md",
                include_str!("../../charts/promfed/README.md"),
            ),
        ] {
            for (i, line) in text.lines().enumerate() {
                for marker in ["create secret generic ", "secretName: "] {
                    let Some((_, rest)) = line.split_once(marker) else {
                        continue;
                    };
                    let name = rest.split_whitespace().next().unwrap_or("");
                    if name.starts_with("prometheus-federation") {
                        assert!(
                            [FEDERATION_CLIENT_SECRET, FEDERATION_SERVER_SECRET].contains(&name),
                            "{doc}:{}: federation Secret {name:?}",
                            i + 1
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn run_writes_a_working_set() {
        let dir = tempfile::tempdir().unwrap();
        let out = |s: &str| OutputArgs {
            out: dir.path().join(s),
            force: false,
            days: None,
        };
        run(CertsArgs {
            command: CertsCommand::Ca(CaArgs {
                common_name: "fleet".into(),
                output: out("ca"),
            }),
        })
        .unwrap();
        run(CertsArgs {
            command: CertsCommand::Webhook(WebhookArgs {
                ca: dir.path().join("ca"),
                service: "promfed".into(),
                namespace: "promfed".into(),
                output: out("webhook"),
            }),
        })
        .unwrap();
        run(CertsArgs {
            command: CertsCommand::Federation(FederationArgs {
                ca: dir.path().join("ca"),
                server_name: None,
                dns: vec![],
                ip: vec![],
                client: Some("tools".into()),
                output: out("client"),
            }),
        })
        .unwrap();
        let ca = Ca::load(&dir.path().join("ca")).unwrap();
        let read = |d: &str, f: &str| std::fs::read_to_string(dir.path().join(d).join(f)).unwrap();
        let webhook = Leaf {
            cert_pem: read("webhook", TLS_CERT),
            key_pem: read("webhook", TLS_KEY),
            ca_pem: read("webhook", CA_CERT),
        };
        verify_server(&ca, &webhook, "promfed.promfed.svc").unwrap();
        let client = Leaf {
            cert_pem: read("client", TLS_CERT),
            key_pem: read("client", TLS_KEY),
            ca_pem: read("client", CA_CERT),
        };
        verify_client(&ca, &client).unwrap();
        assert_eq!(client.ca_pem, ca.cert_pem());
        // The key parses as what rustls (and Go's crypto/tls) load.
        rustls_pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    }
}
