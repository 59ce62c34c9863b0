//! TLS for the admission port: rustls with the ring provider (no OpenSSL, no aws-lc),
//! TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`. The serving certificate sits behind
//! [`CertResolver`] so a rotated Secret takes effect on the next handshake without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::{Ca, CertsError, DEFAULT_CA_DAYS, Leaf, LeafSpec};

/// Why a certificate or key could not be used. Each names the file or the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("certificate file {path}: no PEM CERTIFICATE block found ({message})")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        message: String,
    },
    /// The key file holds no PEM private key.
    #[error("key file {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found ({message})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        message: String,
    },
    /// The key does not belong to the certificate, or rustls cannot use the pair.
    #[error("certificate {cert} and key {key} cannot be used together: {message}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// The self-signed development certificate could not be made.
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] CertsError),
    /// rustls refused the server configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider promfed uses everywhere (ring), independent of any process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key, checked to belong together, with facts for logs and metrics.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain and signing key rustls serves.
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of the leaf as Unix time; `None` when the DER could not be read.
    pub not_after: Option<i64>,
    /// Serial number of the leaf in hex, for the log.
    pub serial: String,
}

/// Parses PEM certificate chain and PEM key (PKCS#8, PKCS#1 or SEC1). `cert_path`/`key_path`
/// only name the sources in errors.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
            message: "file is empty".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    let leaf = chain[0].clone();
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            message: e.to_string(),
        })?;
    let (serial, not_after) = leaf_facts(&leaf).unzip();
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
        serial: serial.unwrap_or_default(),
    })
}

/// Reads both files' bytes (the reloader compares them to notice a change).
pub fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

/// Hands every handshake the certificate in use now; [`CertResolver::set`] swaps it.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Replaces the certificate for all later handshakes; open connections keep theirs.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The certificate in use.
    pub fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The server side TLS configuration: TLS 1.3 and 1.2, no client auth, ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An in-memory CA and a leaf for `localhost`, `127.0.0.1` and `::1`, for a first try with no
/// certificate at hand; only the CA certificate ([`Leaf::ca_pem`]) is meant to leave the process.
/// Generated by [`crate::certs`], as `promfed certs` does: an ECDSA P-256 CA and a
/// [`LeafSpec::loopback`] server certificate it signed, valid for the default leaf lifetime.
pub fn self_signed() -> Result<Leaf, TlsError> {
    let ca = Ca::generate("promfed self-signed CA", DEFAULT_CA_DAYS)?;
    Ok(ca.issue(&LeafSpec::loopback())?)
}

/// Serial (hex) and `notAfter` (Unix time) of a leaf, for the log and the expiry metric;
/// `None` when x509-parser cannot read the certificate (rustls accepted it, so this is rare).
fn leaf_facts(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some((serial, cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_and_reads_expiry() {
        let s = self_signed().unwrap();
        let c = load_pem(
            s.cert_pem.as_bytes(),
            s.key_pem.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
        // The default leaf lifetime, from now.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expected = now + i64::from(crate::certs::DEFAULT_LEAF_DAYS) * 86_400;
        let not_after = c.not_after.unwrap();
        assert!(
            (not_after - expected).abs() < 600,
            "{not_after} vs {expected}"
        );
        assert!(!c.serial.is_empty());
    }

    #[test]
    fn leaf_facts_read_serial_and_both_time_encodings() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a".to_owned()]).unwrap();
        params.serial_number = Some(vec![0x01, 0xab, 0xcd].into());
        // 2033-05-18T03:33:20Z is Unix time 2e9; before 2050 X.509 encodes it as UTCTime.
        params.not_after = rcgen::date_time_ymd(2033, 5, 18) + time::Duration::seconds(12_800);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            leaf_facts(cert.der()),
            Some(("01abcd".to_owned(), 2_000_000_000))
        );
        // From 2050 on it is GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(4096, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(leaf_facts(cert.der()).map(|f| f.1), Some(67_090_118_400));
        assert_eq!(leaf_facts(&cert.der()[..40]), None);
        assert_eq!(leaf_facts(&[]), None);
    }

    #[test]
    fn key_of_another_cert_is_rejected() {
        let a = self_signed().unwrap();
        let b = self_signed().unwrap();
        let e = load_pem(
            a.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let e = load_pem(b"", b.key_pem.as_bytes(), Path::new("c"), Path::new("k")).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = load_pem(
            a.cert_pem.as_bytes(),
            b"nope",
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    }
}
