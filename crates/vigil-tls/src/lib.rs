//! Vigil's TLS: rustls server configurations from PEM files (with optional mutual TLS), the
//! PEM material a client needs, the identity a client certificate names, and a local
//! certificate authority for a site ([`pki`]).
//!
//! One crypto provider for the whole workspace: ring. [`install_default_provider`] makes it
//! the process default (reqwest's rustls backend needs one installed before a client is built).

pub mod pki;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Prefix of the SAN URI that names a gateway in its client certificate.
pub const GATEWAY_URI_PREFIX: &str = "urn:vigil:gateway:";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("invalid TLS settings: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{} already exists; remove it or choose another directory", .0.display())]
    Exists(PathBuf),
    #[error("invalid gateway id {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    Name(String),
}

/// The crypto provider of every TLS configuration Vigil builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider; harmless when one is installed already.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether the hub asks gateways for a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// A certificate is verified when presented; connections without one are allowed.
    Optional,
    /// Every connection must present a certificate signed by the client CA.
    Required,
}

/// The hub's TLS settings (`[hub.tls]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    /// The server certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that sign client certificates; needed unless `client_auth = "none"`.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

impl ServerTls {
    /// Checks what types cannot (files are read by [`server_config`]).
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty() {
            return Err(TlsError::Config(
                "hub.tls needs cert_file and key_file".into(),
            ));
        }
        if self.client_auth != ClientAuth::None && self.client_ca_file.is_none() {
            return Err(TlsError::Config(
                "hub.tls.client_auth needs hub.tls.client_ca_file".into(),
            ));
        }
        Ok(())
    }
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            detail: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    let detail = match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => format!("invalid PEM: {other:?}"),
    };
    TlsError::Pem {
        path: path.to_owned(),
        detail,
    }
}

/// The hub's rustls configuration: TLS 1.2 and 1.3 (rustls' safe defaults), ALPN http/1.1,
/// client certificates as `client_auth` says.
pub fn server_config(s: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    s.validate()?;
    let certs = load_certs(&s.cert_file)?;
    let key = load_key(&s.key_file)?;
    let provider = provider();
    let verifier: Arc<dyn ClientCertVerifier> = match (s.client_auth, &s.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => WebPkiClientVerifier::no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    detail: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if mode == ClientAuth::Optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?
        }
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The PEM text of a CA file, checked to hold at least one certificate.
pub fn read_ca_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    load_certs(path)?;
    read(path)
}

/// A client identity as one PEM text (certificate chain, then key), checked to parse.
pub fn read_identity_pem(cert: &Path, key: &Path) -> Result<Vec<u8>, TlsError> {
    load_certs(cert)?;
    load_key(key)?;
    let mut pem = read(cert)?;
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend(read(key)?);
    Ok(pem)
}

/// The gateway a verified client certificate names: its SAN URI `urn:vigil:gateway:<id>`,
/// else its subject common name. None when the certificate names none.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && let Some(id) = uri.strip_prefix(GATEWAY_URI_PREFIX)
                && !id.is_empty()
            {
                return Some(id.to_owned());
            }
        }
    }
    x509.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned)
}
