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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate file {path}: no PEM CERTIFICATE block found ({message})")]
    NoCertificate { path: PathBuf, message: String },
    #[error("key file {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found ({message})")]
    NoKey { path: PathBuf, message: String },
    #[error("certificate {cert} and key {key} cannot be used together: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] CertsError),
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
    let facts = der::leaf_facts(&leaf);
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after: facts.as_ref().map(|f| f.not_after),
        serial: facts.map(|f| f.serial_hex).unwrap_or_default(),
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

/// Just enough DER to read a certificate's serial and `notAfter` for logs and the expiry
/// metric, without pulling in a full X.509 parser.
mod der {
    pub struct LeafFacts {
        pub serial_hex: String,
        pub not_after: i64,
    }

    /// One TLV: (tag, content, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&len0, rest) = rest.split_first()?;
        let (len, rest) = if len0 < 0x80 {
            (usize::from(len0), rest)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    pub fn leaf_facts(cert: &[u8]) -> Option<LeafFacts> {
        let (0x30, cert, _) = tlv(cert)? else {
            return None;
        };
        let (0x30, tbs, _) = tlv(cert)? else {
            return None;
        };
        let (mut tag, mut content, mut rest) = tlv(tbs)?;
        if tag == 0xa0 {
            (tag, content, rest) = tlv(rest)?; // explicit version
        }
        if tag != 0x02 {
            return None;
        }
        let serial_hex = content
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let (_, _, rest) = tlv(rest)?; // signature algorithm
        let (_, _, rest) = tlv(rest)?; // issuer
        let (0x30, validity, _) = tlv(rest)? else {
            return None;
        };
        let (_, _, after) = tlv(validity)?; // notBefore
        let (tag, time, _) = tlv(after)?;
        Some(LeafFacts {
            serial_hex,
            not_after: parse_time(tag, time)?,
        })
    }

    /// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix time.
    fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
        let t = std::str::from_utf8(t).ok()?.strip_suffix('Z')?;
        let (year, rest) = match tag {
            0x17 if t.len() == 12 => {
                let yy: i64 = t.get(..2)?.parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &t[2..])
            }
            0x18 if t.len() == 14 => (t.get(..4)?.parse().ok()?, &t[4..]),
            _ => return None,
        };
        let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
        let (mo, d, h, mi, s) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
        Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times() {
            assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
            assert_eq!(parse_time(0x17, b"330518033320Z"), Some(2_000_000_000));
            assert_eq!(parse_time(0x18, b"20330518033320Z"), Some(2_000_000_000));
            assert_eq!(parse_time(0x18, b"40960101000000Z"), Some(67_090_118_400));
            assert_eq!(parse_time(0x17, b"garbage"), None);
        }

        #[test]
        fn truncated_der_is_none() {
            assert!(leaf_facts(&[0x30, 0x82, 0x01]).is_none());
            assert!(leaf_facts(&[]).is_none());
        }
    }
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
