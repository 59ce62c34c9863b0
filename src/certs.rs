//! The certificates a federated fleet needs, generated with rcgen.
//!
//! One private CA signs three kinds of leaf: the webhook's serving certificate (the API server
//! checks it against the `caBundle`), the `/federate` server certificate of a workload cluster,
//! and the client certificate the tools cluster presents to it. Every output directory holds
//! `ca.crt`, `tls.crt` and `tls.key`, the key names `kubectl create secret tls|generic` and the
//! seed's `/etc/prometheus/addCerts/federation/{ca.crt,tls.crt,tls.key}` expect, so the files
//! drop into a Secret as they are. Keys are written `0600` and nothing is overwritten without
//! `--force`: silently replacing a CA key would orphan every certificate it signed.
//!
//! This is the library API ([`Ca`], [`LeafSpec`], [`Leaf`]); the `promfed certs` command line
//! and its hints are in [`crate::cli::certs`].

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::is_dns1123_subdomain;

/// File name of the CA certificate in every output directory.
pub const CA_CERT: &str = "ca.crt";
/// File name of the CA private key (only in the CA directory).
pub const CA_KEY: &str = "ca.key";
/// File name of a leaf certificate.
pub const TLS_CERT: &str = "tls.crt";
/// File name of a leaf private key.
pub const TLS_KEY: &str = "tls.key";

/// Default lifetime of a CA, in days (10 years: rotating a CA touches every cluster).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default lifetime of a leaf certificate, in days.
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Longest lifetime accepted, in days; beyond it the date arithmetic is no longer meaningful.
pub const MAX_DAYS: u32 = 36_500;

/// Errors of generating, loading or writing certificates. Each names the file or the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// An output file exists and `--force` was not given.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A CA certificate or key could not be read as one.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The CA key is not the key of the CA certificate: leaves it signed would not verify.
    #[error(
        "{key} is not the private key of {cert}: the two files do not belong together, and \
         certificates signed with this key would not verify against {cert}"
    )]
    KeyMismatch {
        /// The CA certificate.
        cert: PathBuf,
        /// The CA key.
        key: PathBuf,
    },
    /// A name, a lifetime or an argument combination is not acceptable.
    #[error("invalid {what} {value:?}: {message}")]
    Invalid {
        /// What the value is (`service`, `DNS name`, ...).
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        message: String,
    },
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A CA: its certificate (PEM) and the key that signs leaves.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    /// Leaves the key out: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Generates a new CA (ECDSA P-256) that may sign end-entity certificates only (path length 0).
    pub fn generate(common_name: &str, days: u32) -> Result<Self, CertsError> {
        check_days(days)?;
        if common_name.trim().is_empty() {
            return Err(invalid("CA common name", common_name, "must not be empty"));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from PEM text. The key must be PKCS#8 (`-----BEGIN PRIVATE KEY-----`), as
    /// `promfed certs ca` and `openssl genpkey` write it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertsError> {
        Self::from_pem_named(cert_pem, key_pem, Path::new(CA_CERT), Path::new(CA_KEY))
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertsError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        Self::from_pem_named(&cert_pem, &key_pem, &cert_path, &key_path)
    }

    fn from_pem_named(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, CertsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertsError::Parse {
            path: key_path.to_owned(),
            message: format!("not a PKCS#8 private key: {e}"),
        })?;
        let not_a_ca = |e: &dyn std::fmt::Display| CertsError::Parse {
            path: cert_path.to_owned(),
            message: format!("not a CA certificate: {e}"),
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| not_a_ca(&e))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| not_a_ca(&e))?;
        // rcgen signs with whatever key it is given: a key of another CA would yield leaves
        // whose signature no peer can verify, found only at the first handshake.
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| not_a_ca(&e))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.crt` and `ca.key` (0600) into `dir`; refuses existing files unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertsError> {
        write_files(
            dir,
            force,
            &[
                (CA_CERT, &self.cert_pem, false),
                (CA_KEY, &self.key_pem, true),
            ],
        )
    }

    /// Signs a new leaf with a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, CertsError> {
        check_days(spec.days)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name);
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|n| {
                n.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| invalid("DNS name", n, &e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        params
            .subject_alt_names
            .extend(spec.ips.iter().copied().map(SanType::IpAddress));
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys sign; they never encipher, so digitalSignature is the whole key usage.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match spec.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, spec.days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

/// What a leaf certificate is for: it decides the extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (`serverAuth`): the webhook, a workload cluster's `/federate`.
    Server,
    /// TLS client (`clientAuth`): the tools cluster scraping `/federate`.
    Client,
}

/// The subject of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names (what TLS clients verify).
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Server or client certificate.
    pub usage: Usage,
    /// Validity in days, starting one hour ago.
    pub days: u32,
}

impl LeafSpec {
    /// The webhook's serving certificate: the API server calls `<svc>.<ns>.svc`; the other names
    /// cover in-cluster callers that use a shorter or the fully qualified form.
    pub fn webhook(service: &str, namespace: &str) -> Result<Self, CertsError> {
        check_dns_label("service", service)?;
        check_dns_label("namespace", namespace)?;
        Ok(Self {
            common_name: format!("{service}.{namespace}.svc"),
            dns_names: webhook_dns_names(service, namespace),
            ips: Vec::new(),
            usage: Usage::Server,
            days: DEFAULT_LEAF_DAYS,
        })
    }

    /// A workload cluster's `/federate` server certificate for `server_name` (what the tools
    /// cluster puts in `tls_config.server_name`), plus further DNS names and IPs.
    pub fn federation_server(
        server_name: &str,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<Self, CertsError> {
        let mut dns_names = vec![server_name.to_owned()];
        for name in dns {
            if !dns_names.contains(name) {
                dns_names.push(name.clone());
            }
        }
        for name in &dns_names {
            check_dns_name(name)?;
        }
        Ok(Self {
            common_name: server_name.to_owned(),
            dns_names,
            ips: ips.to_vec(),
            usage: Usage::Server,
            days: DEFAULT_LEAF_DAYS,
        })
    }

    /// The tools cluster's client certificate; `name` becomes the common name.
    pub fn federation_client(name: &str) -> Result<Self, CertsError> {
        if name.trim().is_empty() {
            return Err(invalid("client name", name, "must not be empty"));
        }
        Ok(Self {
            common_name: name.to_owned(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            days: DEFAULT_LEAF_DAYS,
        })
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`: what `promfed serve` presents
    /// when no certificate is given, for a first try on one machine.
    pub fn loopback() -> Self {
        Self {
            common_name: "localhost".to_owned(),
            dns_names: vec!["localhost".to_owned()],
            ips: vec![
                IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
            usage: Usage::Server,
            days: DEFAULT_LEAF_DAYS,
        }
    }

    /// Sets the validity in days.
    pub fn days(mut self, days: u32) -> Self {
        self.days = days;
        self
    }
}

/// The SANs of the webhook's serving certificate.
pub fn webhook_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A signed leaf: certificate, key and the CA that signed it, all PEM.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate of the CA that signed it.
    pub ca_pem: String,
}

impl std::fmt::Debug for Leaf {
    /// Leaves the key out: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (0600); refuses existing files unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertsError> {
        write_files(
            dir,
            force,
            &[
                (CA_CERT, &self.ca_pem, false),
                (TLS_CERT, &self.cert_pem, false),
                (TLS_KEY, &self.key_pem, true),
            ],
        )
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn check_days(days: u32) -> Result<(), CertsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(invalid(
            "validity",
            &days.to_string(),
            &format!("days must be between 1 and {MAX_DAYS}"),
        ));
    }
    Ok(())
}

fn invalid(what: &'static str, value: &str, message: &str) -> CertsError {
    CertsError::Invalid {
        what,
        value: value.to_owned(),
        message: message.to_owned(),
    }
}

/// Kubernetes Service and namespace names are DNS-1123 labels: a DNS-1123 subdomain (one rule
/// for the whole crate, [`crate::config::is_dns1123_subdomain`]) of one part, at most 63 long.
fn check_dns_label(what: &'static str, value: &str) -> Result<(), CertsError> {
    let ok = value.len() <= 63 && !value.contains('.') && is_dns1123_subdomain(value);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            what,
            value,
            "must be a DNS-1123 label (lower-case letters, digits, '-', at most 63 characters)",
        ))
    }
}

/// A name TLS clients can verify: a syntactically valid DNS name, not an IP address.
fn check_dns_name(name: &str) -> Result<(), CertsError> {
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(invalid(
            "DNS name",
            name,
            "is an IP address; pass it with --ip",
        )),
        Err(e) => Err(invalid("DNS name", name, &e.to_string())),
    }
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes all files or none of them: existing files are checked before the first write, and
/// each file goes to a temporary name first and is renamed into place, so a reader (or a crash)
/// never sees half a key.
fn write_files(
    dir: &Path,
    force: bool,
    files: &[(&str, &str, bool)],
) -> Result<Vec<PathBuf>, CertsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CertsError::Io { path, source }
    };
    if !force {
        for (name, _, _) in files {
            let path = dir.join(name);
            if path.symlink_metadata().is_ok() {
                return Err(CertsError::Exists { path });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    for (name, contents, secret) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if *secret { 0o600 } else { 0o644 });
        }
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        // `mode` only applies when the file is created; a stale temporary file keeps its own.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if *secret { 0o600 } else { 0o644 };
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io(&tmp))?;
        }
        file.write_all(contents.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// What real TLS peers (rustls' WebPKI verifiers) say about issued certificates, for the tests
/// here and in [`crate::cli::certs`].
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::{Ca, Leaf};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    pub(crate) fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(ca_pem: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca_pem)).unwrap();
        Arc::new(roots)
    }

    /// What a TLS client that trusts `ca` says about `leaf` presented as server `name`.
    pub(crate) fn verify_server(ca: &Ca, leaf: &Leaf, name: &str) -> Result<(), rustls::Error> {
        verify_server_pem(ca.cert_pem(), &leaf.cert_pem, name)
    }

    /// [`verify_server`] on PEM text.
    pub(crate) fn verify_server_pem(
        ca_pem: &str,
        cert_pem: &str,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
            .build()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&der(cert_pem), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// What a TLS server that requires client certificates from `ca` says about `leaf`.
    pub(crate) fn verify_client(ca: &Ca, leaf: &Leaf) -> Result<(), rustls::Error> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(ca.cert_pem()), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&der(&leaf.cert_pem), &[], UnixTime::now())
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use super::testing::{der, verify_client, verify_server};
    use super::*;

    fn sans(pem: &str) -> Vec<String> {
        let d = der(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&d).unwrap();
        let Some(ext) = cert.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_owned(),
                GeneralName::IPAddress(b) => format!("ip:{b:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn webhook_cert_has_the_service_sans_and_verifies_as_server() {
        let ca = Ca::generate("test CA", 30).unwrap();
        let leaf = ca
            .issue(&LeafSpec::webhook("promfed", "promfed-system").unwrap())
            .unwrap();
        assert_eq!(
            sans(&leaf.cert_pem),
            [
                "promfed",
                "promfed.promfed-system",
                "promfed.promfed-system.svc",
                "promfed.promfed-system.svc.cluster.local"
            ]
        );
        for name in webhook_dns_names("promfed", "promfed-system") {
            verify_server(&ca, &leaf, &name).unwrap();
        }
        let wrong = verify_server(&ca, &leaf, "promfed.other.svc").unwrap_err();
        assert!(
            matches!(wrong, rustls::Error::InvalidCertificate(_)),
            "{wrong:?}"
        );
        // serverAuth only: it is no client certificate.
        assert!(verify_client(&ca, &leaf).is_err());
    }

    #[test]
    fn federation_server_and_client_have_their_key_usages() {
        let ca = Ca::generate("test CA", 30).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let server = ca
            .issue(
                &LeafSpec::federation_server(
                    "prom-federation",
                    &["prom.other.example".to_owned()],
                    &[ip],
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(
            sans(&server.cert_pem),
            ["prom-federation", "prom.other.example", "ip:[127, 0, 0, 1]"]
        );
        verify_server(&ca, &server, "prom-federation").unwrap();
        verify_server(&ca, &server, "prom.other.example").unwrap();
        verify_server(&ca, &server, "127.0.0.1").unwrap();
        assert!(verify_client(&ca, &server).is_err());

        let client = ca
            .issue(&LeafSpec::federation_client("shared-tools").unwrap())
            .unwrap();
        verify_client(&ca, &client).unwrap();
        assert!(verify_server(&ca, &client, "shared-tools").is_err());

        let d = der(&client.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&d).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "shared-tools"
        );
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let ca = Ca::generate("test CA", 30).unwrap();
        let other = Ca::generate("other CA", 30).unwrap();
        let client = ca
            .issue(&LeafSpec::federation_client("tools").unwrap())
            .unwrap();
        assert!(verify_client(&other, &client).is_err());
        let server = ca
            .issue(&LeafSpec::federation_server("prom-federation", &[], &[]).unwrap())
            .unwrap();
        assert!(verify_server(&other, &server, "prom-federation").is_err());
    }

    #[test]
    fn ca_is_a_constrained_ca_with_the_requested_validity() {
        let ca = Ca::generate("fleet CA", 10).unwrap();
        let d = der(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&d).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let v = cert.validity();
        let span = v.not_after.timestamp() - v.not_before.timestamp();
        assert_eq!(span, 10 * 86_400 + 3600);
    }

    #[test]
    fn written_ca_loads_back_and_signs_verifiable_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", 30).unwrap();
        ca.write(dir.path(), false).unwrap();
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let leaf = loaded
            .issue(&LeafSpec::federation_client("tools").unwrap())
            .unwrap();
        // Verified against the original CA certificate: the loaded issuer is the same CA.
        verify_client(&ca, &leaf).unwrap();
        assert_eq!(leaf.ca_pem, ca.cert_pem());
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private_and_nothing_is_overwritten_without_force() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", 30).unwrap();
        let leaf = ca
            .issue(&LeafSpec::federation_client("tools").unwrap())
            .unwrap();
        let out = dir.path().join("client");
        let written = leaf.write(&out, false).unwrap();
        assert_eq!(
            written,
            [out.join(CA_CERT), out.join(TLS_CERT), out.join(TLS_KEY)]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.join(TLS_KEY)), 0o600);
        assert_eq!(mode(&out.join(TLS_CERT)), 0o644);

        let again = ca
            .issue(&LeafSpec::federation_client("tools").unwrap())
            .unwrap();
        let err = again.write(&out, false).unwrap_err();
        assert!(matches!(&err, CertsError::Exists { path } if path == &out.join(CA_CERT)));
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join(TLS_CERT)).unwrap(),
            leaf.cert_pem
        );

        std::fs::set_permissions(out.join(TLS_KEY), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        again.write(&out, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(TLS_CERT)).unwrap(),
            again.cert_pem
        );
        assert_eq!(mode(&out.join(TLS_KEY)), 0o600);
        let ca_dir = dir.path().join("ca");
        ca.write(&ca_dir, false).unwrap();
        assert_eq!(mode(&ca_dir.join(CA_KEY)), 0o600);
    }

    #[test]
    fn a_ca_folder_whose_key_belongs_to_another_ca_is_refused() {
        // Issue 16: ca.crt of one CA beside ca.key of another used to load, and leaves signed
        // with it failed to verify only at the first handshake.
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("fleet CA", 30).unwrap();
        let other = Ca::generate("other CA", 30).unwrap();
        ca.write(dir.path(), false).unwrap();
        std::fs::write(dir.path().join(CA_KEY), &other.key_pem).unwrap();
        let e = Ca::load(dir.path()).unwrap_err();
        assert!(matches!(e, CertsError::KeyMismatch { .. }), "{e:?}");
        let e = e.to_string();
        let (crt, key) = (dir.path().join(CA_CERT), dir.path().join(CA_KEY));
        assert!(
            e.contains(&crt.display().to_string()) && e.contains(&key.display().to_string()),
            "{e}"
        );
        // The matching pair still loads, and what it signs verifies.
        std::fs::write(dir.path().join(CA_KEY), &ca.key_pem).unwrap();
        let leaf = Ca::load(dir.path())
            .unwrap()
            .issue(&LeafSpec::federation_client("tools").unwrap())
            .unwrap();
        verify_client(&ca, &leaf).unwrap();
    }

    #[test]
    fn bad_input_is_named() {
        let e = LeafSpec::webhook("Promfed", "ns").unwrap_err().to_string();
        assert!(
            e.contains("service \"Promfed\"") && e.contains("DNS-1123"),
            "{e}"
        );
        let e = LeafSpec::webhook("promfed", "").unwrap_err().to_string();
        assert!(e.contains("namespace"), "{e}");
        for bad in ["-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(LeafSpec::webhook(bad, "ns").is_err(), "{bad:?}");
        }
        LeafSpec::webhook(&"a".repeat(63), "0-ns").unwrap();
        let e = LeafSpec::federation_server("10.0.0.1", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ip"), "{e}");
        let e = LeafSpec::federation_server("bad name", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"bad name\""), "{e}");
        assert!(Ca::generate("x", 0).is_err());
        assert!(Ca::generate("x", MAX_DAYS + 1).is_err());
        let e = Ca::from_pem("nonsense", "nonsense")
            .unwrap_err()
            .to_string();
        assert!(e.contains(CA_KEY), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(CA_CERT), "{e}");
    }
}
