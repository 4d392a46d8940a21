//! [`TlsError`], PEM parsing, and rustls client and server configurations
//! built on the ring provider.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What went wrong, for a [`TlsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// Malformed PEM (a section without its end, bad base64, ...).
    Pem,
    /// No certificate in PEM data that should hold one.
    NoCertificates,
    /// No private key in PEM data that should hold one.
    NoPrivateKey,
    /// A server name that is neither a DNS name nor an IP address.
    ServerName,
    /// rustls refused the configuration, a certificate or a key.
    Config,
    /// A file could not be read.
    Io,
    /// `start_tls` on a transport that cannot switch (not a [`StartTls`]
    /// transport, TLS already started, or closing).
    ///
    /// [`StartTls`]: super::StartTls
    StartTls,
    /// A certificate that cannot be parsed (see
    /// [`certificate_dns_names`]).
    Certificate,
}

/// An error setting up TLS: bad PEM, no key, a bad server name, a
/// configuration rustls refused, or a `start_tls` that cannot happen.
/// (Errors of a TLS *connection*, such as a certificate the client does not
/// accept, arrive as `io::Error`s: see [`connect_tls`](super::connect_tls).)
#[derive(Debug)]
pub struct TlsError {
    kind: TlsErrorKind,
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl TlsError {
    pub(crate) fn new(kind: TlsErrorKind, message: impl Into<String>) -> TlsError {
        TlsError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: TlsErrorKind,
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> TlsError {
        TlsError {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for TlsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl From<TlsError> for io::Error {
    /// An `InvalidInput` error (`Other` for a file that could not be read)
    /// carrying the TLS error.
    fn from(e: TlsError) -> io::Error {
        let kind = match e.kind {
            TlsErrorKind::Io => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// The crypto provider of every configuration made here: ring, never a
/// process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Validates a server name (a DNS name or an IP address) for SNI and
/// certificate verification.
pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|e| {
        TlsError::with_source(
            TlsErrorKind::ServerName,
            format!("invalid TLS server name {name:?}: {e}"),
            e,
        )
    })
}

/// Every certificate in `pem` (`-----BEGIN CERTIFICATE-----` sections, in
/// order; other sections are skipped). An error if the PEM is malformed or
/// holds no certificate.
///
/// ```
/// use gyre_protocols::tls::{parse_certs_pem, TlsErrorKind};
///
/// let err = parse_certs_pem(b"not a certificate").unwrap_err();
/// assert_eq!(err.kind(), TlsErrorKind::NoCertificates);
/// ```
pub fn parse_certs_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Pem,
                format!("malformed certificate PEM: {e}"),
                e,
            )
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(TlsError::new(
            TlsErrorKind::NoCertificates,
            "no certificate (-----BEGIN CERTIFICATE-----) found in the PEM data",
        ));
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8 `PRIVATE KEY`, PKCS#1
/// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`). An error if the PEM is
/// malformed or holds no key.
///
/// ```
/// use gyre_protocols::tls::{parse_key_pem, TlsErrorKind};
///
/// let err = parse_key_pem(b"").unwrap_err();
/// assert_eq!(err.kind(), TlsErrorKind::NoPrivateKey);
/// ```
pub fn parse_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::new(
            TlsErrorKind::NoPrivateKey,
            "no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found in the PEM data",
        ),
        e => TlsError::with_source(
            TlsErrorKind::Pem,
            format!("malformed private key PEM: {e}"),
            e,
        ),
    })
}

/// A client configuration trusting Mozilla's roots (webpki-roots) and
/// `extra_roots`, offering the `alpn` protocols (none: no ALPN). Hostname
/// verification and SNI are always on.
///
/// ```
/// use gyre_protocols::tls::client_config;
///
/// let config = client_config(&[], &[b"http/1.1"])?;
/// assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
/// # Ok::<(), gyre_protocols::tls::TlsError>(())
/// ```
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    add_roots(&mut roots, extra_roots)?;
    build_client_config(roots, alpn)
}

/// A client configuration trusting only `roots` (a private CA, a test CA),
/// not the public roots; otherwise as [`client_config`].
pub fn client_config_with_roots(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    add_roots(&mut store, roots)?;
    build_client_config(store, alpn)
}

/// [`client_config`] with the CA certificate(s) of a PEM file added to the
/// public roots.
pub fn client_config_from_pem_file(
    path: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| {
        TlsError::with_source(
            TlsErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
            e,
        )
    })?;
    let certs = parse_certs_pem(&pem).map_err(|e| TlsError {
        message: format!("{}: {}", path.display(), e.message),
        ..e
    })?;
    client_config(&certs, alpn)
}

fn add_roots(store: &mut RootCertStore, roots: &[CertificateDer<'static>]) -> Result<(), TlsError> {
    for (i, cert) in roots.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!(
                    "certificate {} cannot be used as a trust anchor: {e}",
                    i + 1
                ),
                e,
            )
        })?;
    }
    Ok(())
}

fn build_client_config(
    roots: RootCertStore,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server configuration presenting the certificate chain in `chain_pem`
/// (leaf first) with the private key in `key_pem`, accepting the `alpn`
/// protocols (in order of preference; none: no ALPN). No client
/// certificates are asked for.
pub fn server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = parse_certs_pem(chain_pem)?;
    let key = parse_key_pem(key_pem)?;
    server_config_from_der(chain, key, alpn)
}

/// [`server_config`] from DER certificates and key.
pub fn server_config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("certificate chain or private key rejected: {e}"),
                e,
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn config_error(e: rustls::Error) -> TlsError {
    TlsError::with_source(
        TlsErrorKind::Config,
        format!("TLS configuration rejected: {e}"),
        e,
    )
}

/// A server configuration that, as [`server_config_from_der`], presents
/// `chain` (leaf first) with `key`, and also **requires** a client
/// certificate that chains to one of `client_roots` (and is valid now, with
/// the TLS client usage or no extended key usage): mutual TLS. A client
/// without one, or with one from another CA, or expired, fails the
/// handshake. Which name the certificate carries is the application's
/// business: read it after the handshake with
/// [`TlsTransport::peer_dns_names`](super::TlsTransport::peer_dns_names).
pub fn mutual_tls_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    add_roots(&mut roots, client_roots)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| {
                TlsError::with_source(
                    TlsErrorKind::Config,
                    format!("cannot verify client certificates: {e}"),
                    e,
                )
            })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("certificate chain or private key rejected: {e}"),
                e,
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that, as [`client_config_with_roots`], trusts
/// only `roots`, and presents the certificate `chain` (leaf first) with
/// `key` when the server asks for one: the client side of mutual TLS.
pub fn mutual_tls_client_config(
    roots: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    add_roots(&mut store, roots)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(store)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("client certificate chain or private key rejected: {e}"),
                e,
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The DNS names of a certificate's subjectAltName extension, exactly as
/// written in it (no case folding), in order; empty when it has none. An
/// error if the certificate cannot be parsed.
///
/// This only reads the certificate: it says nothing about whether it is
/// trusted. Use it on a certificate that the handshake verified (a peer's
/// leaf certificate, from
/// [`TlsTransport::peer_certificates`](super::TlsTransport::peer_certificates)).
///
/// ```
/// use gyre_protocols::tls::{certificate_dns_names, CertificateDer, TlsErrorKind};
///
/// let err = certificate_dns_names(&CertificateDer::from(vec![1, 2, 3])).unwrap_err();
/// assert_eq!(err.kind(), TlsErrorKind::Certificate);
/// ```
pub fn certificate_dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        TlsError::new(
            TlsErrorKind::Certificate,
            format!("malformed certificate: {e}"),
        )
    })?;
    let san = parsed.subject_alternative_name().map_err(|e| {
        TlsError::new(
            TlsErrorKind::Certificate,
            format!("malformed subjectAltName extension: {e}"),
        )
    })?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some((*name).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// A certificate's serial number, as colon-separated lowercase hex bytes
/// (`"3f:09:a1"`, the form `openssl x509 -serial` prints without colons),
/// to tell certificates apart in logs. An error if the certificate cannot
/// be parsed. Like [`certificate_dns_names`], it says nothing about trust.
///
/// ```
/// use gyre_protocols::tls::{certificate_serial, CertificateDer, TlsErrorKind};
///
/// let err = certificate_serial(&CertificateDer::from(vec![1, 2, 3])).unwrap_err();
/// assert_eq!(err.kind(), TlsErrorKind::Certificate);
/// ```
pub fn certificate_serial(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        TlsError::new(
            TlsErrorKind::Certificate,
            format!("malformed certificate: {e}"),
        )
    })?;
    let hex: Vec<String> = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex.join(":"))
}
