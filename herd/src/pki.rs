//! The herd's keys and certificates (see the herd README's Security
//! section): a herd CA, and one key and certificate per server naming it,
//! with which neighbours authenticate each other over mutual TLS.
//!
//! - [`HerdCa`]: makes a CA ([`HerdCa::generate`]), issues a server's
//!   certificate ([`HerdCa::issue`]), and saves or loads itself.
//! - [`init`] and [`add`]: what `herd pki init DIR` and `herd pki add NAME`
//!   write: `DIR/ca.pem` and `DIR/ca-key.pem` (the CA; keep `ca-key.pem`
//!   off the servers), and `DIR/NAME.pem` and `DIR/NAME-key.pem` per
//!   server (each server needs `ca.pem` and its own two files).
//! - [`PeerCredentials`]: one server's view: the CA it trusts and its own
//!   certificate and key, as TLS configurations.
//! - [`PeerTls`]: how a server's links are authenticated
//!   ([`ServerOptions::peer_tls`](crate::ServerOptions::peer_tls)).
//!
//! A server's certificate names the server in its subjectAltName (a DNS
//! name: so a server name used with peer TLS must be a valid DNS name,
//! letters, digits, `-` and `.`), is usable by a TLS client and a TLS
//! server, and is valid from last year for [`SERVER_CERT_YEARS`] years.
//!
//! ```
//! use gyre_herd::pki::{HerdCa, PeerCredentials};
//!
//! let ca = HerdCa::generate()?;
//! let alford = ca.issue("Alford")?;
//! let creds = PeerCredentials::from_pem("Alford", ca.cert_pem(), &alford.cert_pem, &alford.key_pem)?;
//! assert_eq!(creds.name(), "Alford");
//! assert!(ca.issue("not a name").is_err());
//! # Ok::<(), gyre_herd::pki::PkiError>(())
//! ```

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use gyre_protocols::tls::{
    certificate_dns_names, certificate_serial, mutual_tls_client_config, mutual_tls_server_config,
    parse_certs_pem, parse_key_pem, ClientConfig, ServerConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::HerdConfig;

/// The CA certificate's file name in a pki directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a pki directory (needed only to add servers).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How many years a server certificate is valid (from the start of last
/// year).
pub const SERVER_CERT_YEARS: i64 = 5;
/// How many years the CA certificate is valid (from the start of last year).
pub const CA_CERT_YEARS: i64 = 20;

/// A server's certificate file name in a pki directory: `NAME.pem`.
pub fn cert_file(name: &str) -> String {
    format!("{name}.pem")
}

/// A server's key file name in a pki directory: `NAME-key.pem`.
pub fn key_file(name: &str) -> String {
    format!("{name}-key.pem")
}

/// An error making, reading or writing keys and certificates.
#[derive(Debug)]
pub struct PkiError(String);

impl PkiError {
    pub(crate) fn new(message: impl Into<String>) -> PkiError {
        PkiError(message.into())
    }
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for PkiError {}

impl From<PkiError> for io::Error {
    fn from(e: PkiError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.0)
    }
}

fn rcgen_error(what: &str, e: rcgen::Error) -> PkiError {
    PkiError::new(format!("{what}: {e}"))
}

/// Checks that `name` can name a server in a certificate: a DNS name (not
/// an IP address). This also makes it a safe file name.
pub fn check_server_name(name: &str) -> Result<(), PkiError> {
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        _ => Err(PkiError::new(format!(
            "server name {name:?} cannot be put in a certificate: peer TLS needs server names \
             that are DNS names (letters, digits, '-' and '.')"
        ))),
    }
}

/// A key and certificate in PEM, as [`HerdCa::issue`] makes them.
#[derive(Clone)]
pub struct ServerKeys {
    /// The certificate, then the CA's (the chain a server presents).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys").finish_non_exhaustive()
    }
}

/// The herd's certificate authority.
pub struct HerdCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for HerdCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HerdCa").finish_non_exhaustive()
    }
}

/// January 1st of the year `years` from the current one.
fn start_of_year(years: i64) -> time::OffsetDateTime {
    let now = time::OffsetDateTime::from(SystemTime::now());
    let year = (i64::from(now.year()) + years).clamp(1950, 9999) as i32;
    rcgen::date_time_ymd(year, 1, 1)
}

impl HerdCa {
    /// A new CA ("gyre herd CA"), with a new key, valid from the start of
    /// last year for [`CA_CERT_YEARS`] years.
    pub fn generate() -> Result<HerdCa, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| rcgen_error("CA parameters", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "gyre herd CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = start_of_year(-1);
        params.not_after = start_of_year(CA_CERT_YEARS - 1);
        let key = KeyPair::generate().map_err(|e| rcgen_error("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| rcgen_error("self-signing the CA", e))?;
        Ok(HerdCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its certificate and key, in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<HerdCa, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| rcgen_error("the CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| rcgen_error("the CA certificate", e))?;
        let key_pem = issuer.key().serialize_pem();
        Ok(HerdCa {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem,
        })
    }

    /// The CA of a pki directory (`ca.pem` and `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<HerdCa, PkiError> {
        let cert = read(&dir.join(CA_CERT_FILE))?;
        let key = read(&dir.join(CA_KEY_FILE))?;
        HerdCa::from_pem(&cert, &key)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        first_cert(&self.cert_pem, "the CA certificate")
    }

    /// A key and certificate for the server `name`, valid from the start
    /// of last year for [`SERVER_CERT_YEARS`] years.
    pub fn issue(&self, name: &str) -> Result<ServerKeys, PkiError> {
        self.issue_valid(
            name,
            start_of_year(-1).into(),
            start_of_year(SERVER_CERT_YEARS - 1).into(),
        )
    }

    /// A key and certificate for the server `name`, valid from
    /// `not_before` to `not_after` (tests make expired ones).
    pub fn issue_valid(
        &self,
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<ServerKeys, PkiError> {
        check_server_name(name)?;
        let mut params = CertificateParams::new(vec![name.to_string()])
            .map_err(|e| rcgen_error("certificate parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().map_err(|e| rcgen_error("server key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| rcgen_error("signing the certificate", e))?;
        Ok(ServerKeys {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` into `dir` (created if needed);
    /// refuses to overwrite an existing CA.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PkiError::new(format!("cannot create {}: {e}", dir.display())))?;
        write_new(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write_new(&dir.join(CA_KEY_FILE), &self.key_pem, true)
    }

    /// A CA made once per process, in memory: what servers with
    /// [`PeerTls::InProcess`] share.
    pub fn in_process() -> Result<HerdCa, PkiError> {
        static PEMS: OnceLock<Result<(String, String), String>> = OnceLock::new();
        let pems = PEMS.get_or_init(|| {
            HerdCa::generate()
                .map(|ca| (ca.cert_pem, ca.key_pem))
                .map_err(|e| e.0)
        });
        match pems {
            Ok((cert, key)) => HerdCa::from_pem(cert, key),
            Err(e) => Err(PkiError::new(e.clone())),
        }
    }

    /// The credentials of the server `name`, with a new certificate from
    /// this CA.
    pub fn credentials(&self, name: &str) -> Result<PeerCredentials, PkiError> {
        let keys = self.issue(name)?;
        PeerCredentials::from_pem(name, &self.cert_pem, &keys.cert_pem, &keys.key_pem)
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path)
        .map_err(|e| PkiError::new(format!("cannot read {}: {e}", path.display())))
}

/// Writes a new file (never over an existing one); `secret`: readable by
/// its owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|e| {
        PkiError::new(if e.kind() == io::ErrorKind::AlreadyExists {
            format!("{} already exists: not overwriting it", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        })
    })?;
    file.write_all(contents.as_bytes())
        .map_err(|e| PkiError::new(format!("cannot write {}: {e}", path.display())))
}

fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
    parse_certs_pem(pem.as_bytes())
        .map_err(|e| PkiError::new(format!("{what}: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::new(format!("{what}: no certificate")))
}

/// `herd pki init DIR`: a new CA in `dir`, and a key and certificate for
/// every server of `config`. Returns the files written. Refuses to
/// overwrite an existing CA or server file.
pub fn init(dir: &Path, config: &HerdConfig) -> Result<Vec<PathBuf>, PkiError> {
    for server in config.servers() {
        check_server_name(&server.name)?;
    }
    let ca = HerdCa::generate()?;
    ca.save(dir)?;
    let mut written = vec![dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE)];
    for server in config.servers() {
        written.extend(write_server(&ca, dir, &server.name)?);
    }
    Ok(written)
}

/// `herd pki add NAME --dir DIR`: a key and certificate for the server
/// `name` from the CA in `dir`. Returns the files written.
pub fn add(dir: &Path, name: &str) -> Result<Vec<PathBuf>, PkiError> {
    check_server_name(name)?;
    let ca = HerdCa::load(dir)?;
    write_server(&ca, dir, name)
}

fn write_server(ca: &HerdCa, dir: &Path, name: &str) -> Result<Vec<PathBuf>, PkiError> {
    let keys = ca.issue(name)?;
    let cert = dir.join(cert_file(name));
    let key = dir.join(key_file(name));
    write_new(&cert, &keys.cert_pem, false)?;
    write_new(&key, &keys.key_pem, true)?;
    Ok(vec![cert, key])
}

/// One server's peer-link credentials: the herd CA it trusts, and its own
/// certificate (naming it) and key, as the TLS configurations of both ends
/// of a link, and the checks that tell whether a neighbour's certificate
/// is still trusted under them ([`verify_peer`](Self::verify_peer)). Cheap
/// to clone.
#[derive(Clone)]
pub struct PeerCredentials {
    name: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Checks a certificate a neighbour presented as a TLS server.
    as_server: Arc<WebPkiServerVerifier>,
    /// Checks a certificate a neighbour presented as a TLS client.
    as_client: Arc<dyn ClientCertVerifier>,
    /// The serial number of this server's own certificate.
    serial: String,
}

impl fmt::Debug for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCredentials")
            .field("name", &self.name)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Which end of a link's TLS handshake a neighbour played, which says how
/// its certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSide {
    /// We dialled it: it presented its certificate as a TLS server's (the
    /// certificate must name it and allow the server usage).
    Server,
    /// It dialled us: it presented its certificate as a TLS client's (the
    /// client usage).
    Client,
}

impl PeerCredentials {
    /// The credentials of the server `name`: the herd CA certificate,
    /// `name`'s certificate chain and key, in PEM. An error if the
    /// certificate does not name `name` (in its subjectAltName, exactly).
    pub fn from_pem(
        name: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<PeerCredentials, PkiError> {
        check_server_name(name)?;
        let ca = first_cert(ca_pem, "the herd CA certificate")?;
        let chain = parse_certs_pem(cert_pem.as_bytes())
            .map_err(|e| PkiError::new(format!("{name}'s certificate: {e}")))?;
        let key = parse_key_pem(key_pem.as_bytes())
            .map_err(|e| PkiError::new(format!("{name}'s key: {e}")))?;
        let names = chain
            .first()
            .map(certificate_dns_names)
            .transpose()
            .map_err(|e| PkiError::new(format!("{name}'s certificate: {e}")))?
            .unwrap_or_default();
        if !names.iter().any(|n| n == name) {
            return Err(PkiError::new(format!(
                "the certificate given for {name} names {names:?}, not {name:?}"
            )));
        }
        let client = mutual_tls_client_config(
            std::slice::from_ref(&ca),
            chain.clone(),
            key.clone_key(),
            &[],
        )
        .map_err(|e| PkiError::new(format!("{name}'s TLS client configuration: {e}")))?;
        let serial = chain
            .first()
            .map(certificate_serial)
            .transpose()
            .map_err(|e| PkiError::new(format!("{name}'s certificate: {e}")))?
            .unwrap_or_default();
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| PkiError::new(format!("the herd CA certificate: {e}")))?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let as_server =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| PkiError::new(format!("verifying neighbours' certificates: {e}")))?;
        let as_client = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| PkiError::new(format!("verifying neighbours' certificates: {e}")))?;
        let server = mutual_tls_server_config(chain, key, &[ca], &[])
            .map_err(|e| PkiError::new(format!("{name}'s TLS server configuration: {e}")))?;
        Ok(PeerCredentials {
            name: name.to_string(),
            server,
            client,
            as_server,
            as_client,
            serial,
        })
    }

    /// The credentials of the server `name` from a pki directory: `ca.pem`,
    /// `NAME.pem` and `NAME-key.pem` (as `herd pki init` writes them).
    pub fn load(dir: &Path, name: &str) -> Result<PeerCredentials, PkiError> {
        check_server_name(name)?;
        let ca = read(&dir.join(CA_CERT_FILE))?;
        let cert = read(&dir.join(cert_file(name)))?;
        let key = read(&dir.join(key_file(name)))?;
        PeerCredentials::from_pem(name, &ca, &cert, &key)
    }

    /// The server these credentials are for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The serial number of this server's own certificate (colon-separated
    /// hex), to tell certificates apart in logs.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Whether `chain` (leaf first), the certificates a neighbour presented
    /// on a link, is trusted under these credentials now: it chains to this
    /// CA, is valid now, allows the usage of its `side` of the handshake,
    /// and its leaf names `neighbour` exactly. Used when the credentials are
    /// reloaded, for the links that are already up (a TLS handshake checks
    /// this itself).
    pub fn verify_peer(
        &self,
        chain: &[CertificateDer<'static>],
        neighbour: &str,
        side: PeerSide,
    ) -> Result<(), PkiError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| PkiError::new("no certificate"))?;
        let now = UnixTime::now();
        match side {
            PeerSide::Server => {
                let name = ServerName::try_from(neighbour.to_string())
                    .map_err(|e| PkiError::new(format!("{neighbour:?}: {e}")))?;
                self.as_server
                    .verify_server_cert(leaf, intermediates, &name, &[], now)
                    .map(drop)
            }
            PeerSide::Client => self
                .as_client
                .verify_client_cert(leaf, intermediates, now)
                .map(drop),
        }
        .map_err(|e| PkiError::new(e.to_string()))?;
        let names = certificate_dns_names(leaf).map_err(|e| PkiError::new(e.to_string()))?;
        if !names.iter().any(|n| n == neighbour) {
            return Err(PkiError::new(format!(
                "the certificate names {names:?}, not {neighbour:?}"
            )));
        }
        Ok(())
    }

    /// The TLS server configuration of a link this server accepts (client
    /// certificates from the herd CA required).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The TLS client configuration of a link this server dials (trusts
    /// only the herd CA, presents this server's certificate).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }
}

/// How a server's links to its neighbours are authenticated.
#[derive(Clone, Debug, Default)]
pub enum PeerTls {
    /// Mutual TLS with these credentials (from `--peer-tls DIR`, or a CA
    /// the program made).
    Verified(PeerCredentials),
    /// Mutual TLS with a certificate issued at start-up by a CA made in
    /// memory once per process ([`HerdCa::in_process`]): servers of one
    /// process link with each other, nothing outside it can. The default.
    #[default]
    InProcess,
    /// No authentication: a connection whose first line is `PEER <a
    /// neighbour>` is that neighbour (the course's behaviour; anyone can
    /// forge locations). Warned about in the log at start-up.
    Insecure,
}

/// How long a neighbour has to finish the TLS handshake of a link once it
/// started it (after its `PEER` line).
pub const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let ca = HerdCa::generate().unwrap();
        let ball = ca.issue("Ball").unwrap();
        let e = PeerCredentials::from_pem("Alford", ca.cert_pem(), &ball.cert_pem, &ball.key_pem)
            .unwrap_err();
        assert!(e.to_string().contains("names [\"Ball\"]"), "{e}");
        // Names are compared exactly: DNS matching would ignore case.
        let e = PeerCredentials::from_pem("BALL", ca.cert_pem(), &ball.cert_pem, &ball.key_pem)
            .unwrap_err();
        assert!(e.to_string().contains("not \"BALL\""), "{e}");
    }

    #[test]
    fn a_neighbours_chain_verifies_only_under_its_ca_with_its_name_and_dates() {
        let ca = HerdCa::generate().unwrap();
        let alford = ca.credentials("Alford").unwrap();
        let chain = |keys: &ServerKeys| parse_certs_pem(keys.cert_pem.as_bytes()).unwrap();
        let ball = chain(&ca.issue("Ball").unwrap());
        for side in [PeerSide::Server, PeerSide::Client] {
            alford.verify_peer(&ball, "Ball", side).unwrap();
            let e = alford.verify_peer(&ball, "Welsh", side).unwrap_err();
            assert!(!e.to_string().is_empty());
            let other = HerdCa::generate().unwrap();
            let stranger = chain(&other.issue("Ball").unwrap());
            assert!(alford.verify_peer(&stranger, "Ball", side).is_err());
            let year = |y: i32| SystemTime::from(rcgen::date_time_ymd(y, 1, 1));
            let expired = chain(&ca.issue_valid("Ball", year(2019), year(2020)).unwrap());
            assert!(alford.verify_peer(&expired, "Ball", side).is_err());
            assert!(alford.verify_peer(&[], "Ball", side).is_err());
        }
        // Two certificates for one server tell apart by their serials.
        assert_ne!(alford.serial(), ca.credentials("Alford").unwrap().serial());
    }

    #[test]
    fn init_and_add_write_files_that_load() {
        let dir = std::env::temp_dir().join(format!(
            "gyre-pki-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let written = init(&dir, &HerdConfig::default()).unwrap();
        assert_eq!(written.len(), 2 + 2 * 5);
        PeerCredentials::load(&dir, "Welsh").unwrap();
        assert!(init(&dir, &HerdConfig::default())
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        add(&dir, "Zed").unwrap();
        PeerCredentials::load(&dir, "Zed").unwrap();
        assert!(add(&dir, "Zed").is_err(), "not overwritten");
        assert!(add(&dir, "../x").is_err(), "not a DNS name");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is private");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
