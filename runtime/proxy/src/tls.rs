//! TLS with rustls (the ring provider): the client side toward HTTPS upstreams (the system's
//! roots or `SSL_CERT_FILE`, an extra CA bundle, an optional client certificate), the server side
//! toward clients (a certificate and key from PEM files), and the words for what went wrong.
//!
//! There is deliberately no way to turn certificate verification off: an upstream with a private
//! CA is reached by naming that CA (`upstream_ca`).

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why a TLS configuration could not be built (from the files the configuration names).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading certificates from {path}: {source}")]
    Certificates { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("reading the private key from {path}: {source}")]
    Key { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("a CA certificate in {path} is not usable: {source}")]
    BadCa { path: PathBuf, source: rustls::Error },
    #[error("the certificate {cert} and key {key} do not make a usable identity: {source}")]
    Identity { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("no trusted roots: the system has none (and SSL_CERT_FILE names none) and no upstream_ca is given")]
    NoRoots,
}

/// A certificate chain and its private key, as paths to PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider for connections to upstreams, asking for AES-128-GCM first (as browsers do):
/// it is about a third cheaper than AES-256-GCM, and decrypting a fast upstream is most of what
/// TLS costs the proxy (see the README's figures).
fn upstream_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let aes128 = |suite: &rustls::SupportedCipherSuite| {
        matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    };
    // A stable sort keeps the rest in ring's order.
    provider.cipher_suites.sort_by_key(|suite| !aes128(suite));
    Arc::new(provider)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::Certificates { path: path.into(), source })?;
    if certificates.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: path.into() });
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsSetupError::Key { path: path.into(), source })
}

/// The system's roots (or those of `SSL_CERT_FILE` / `SSL_CERT_DIR`), read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!("reading the system's CA certificates: {error}");
        }
        tracing::debug!(roots = found.certs.len(), "loaded the system's CA certificates");
        found.certs
    })
}

/// The client configuration for an HTTPS upstream: the system's roots plus `extra_ca`, and a
/// client certificate if `identity` is given. ALPN is set by the connector (h2, http/1.1).
pub(super) fn client_config(
    extra_ca: Option<&Path>,
    identity: Option<&Identity>,
) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // A system bundle often holds a few certificates rustls cannot use; the rest still count.
    let (_added, _ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = extra_ca {
        for certificate in certificates(path)? {
            roots.add(certificate).map_err(|source| TlsSetupError::BadCa { path: path.into(), source })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    let builder = ClientConfig::builder_with_provider(upstream_provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder
            .with_client_auth_cert(certificates(&id.cert)?, private_key(&id.key)?)
            .map_err(|source| TlsSetupError::Identity { cert: id.cert.clone(), key: id.key.clone(), source }),
    }
}

/// A client configuration for a connector that never makes TLS connections (a plain-HTTP
/// upstream): no roots, so the system's are not read for it.
pub(super) fn unused_client_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// The server configuration for clients: the certificate chain and key of `identity`, ALPN h2
/// and http/1.1.
pub(super) fn server_config(identity: &Identity) -> Result<ServerConfig, TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certificates(&identity.cert)?, private_key(&identity.key)?)
        .map_err(|source| TlsSetupError::Identity { cert: identity.cert.clone(), key: identity.key.clone(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What a TLS failure means, in the words an operator needs, if `error` (or one of its sources)
/// is one: an unknown issuer, a name mismatch, an expired certificate, a refused handshake.
pub(super) fn describe(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(words(tls));
        }
        // `io::Error::source` skips the error it wraps (which may be another io::Error): go
        // into it instead.
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

fn words(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    match error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            Cert::UnknownIssuer => {
                "unknown issuer: the upstream's certificate is not signed by a trusted CA (name its CA with upstream_ca)"
                    .into()
            }
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                format!("name mismatch: the upstream's certificate is not valid for the upstream's host ({problem:?})")
            }
            Cert::Expired | Cert::ExpiredContext { .. } => format!("expired: the upstream's certificate ({problem:?})"),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                format!("not yet valid: the upstream's certificate ({problem:?})")
            }
            Cert::Revoked => "revoked: the upstream's certificate".into(),
            Cert::BadSignature => "bad signature on the upstream's certificate".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert @ (Alert::CertificateRequired | Alert::HandshakeFailure | Alert::BadCertificate
        | Alert::UnknownCA | Alert::AccessDenied)) => format!(
            "the upstream refused the handshake ({alert:?}): it may want a client certificate it trusts \
             (upstream_client_cert / upstream_client_key)"
        ),
        other => format!("TLS error: {other}"),
    }
}
