//! Reloading a server's peer TLS credentials (the herd program does it on
//! SIGHUP): [`HerdServer::reload_peer_tls`](super::HerdServer::reload_peer_tls)
//! and [`reload_peer_tls_from`](super::HerdServer::reload_peer_tls_from).
//!
//! # The contract
//!
//! - The new credentials (CA, certificate, key) are used for **every
//!   handshake that starts after the reload**, dialled or accepted.
//! - **Every link that is up is checked again**: the certificate its
//!   neighbour presented in its handshake must verify under the new
//!   credentials as a new handshake would check it (it chains to the new
//!   CA, is valid now, allows the usage of its side of the handshake, and
//!   names the neighbour exactly). A link that passes stays up, untouched:
//!   nothing is renegotiated, so until that link is next made the neighbour
//!   still knows this server by the certificate it presented then. A link
//!   that fails is closed (logged) and re-dialled with the new credentials,
//!   so it comes back only if its neighbour is trusted under them: this is
//!   how a neighbour is revoked without a restart (give the herd a new CA
//!   and re-issue the certificates of the servers it still trusts).
//! - A handshake under way during the reload is checked again when it
//!   ends, under the new credentials, before it becomes a link.
//! - A reload that fails (a missing or corrupt file, a certificate for
//!   another name, a server without peer TLS) changes nothing: the old
//!   credentials stay in use, and the error is logged and returned.
//! - Every reload is logged with the serial number of the certificate now
//!   presented, and which links stayed up and which were closed.

use std::fmt;
use std::path::Path;
use std::rc::Rc;

use gyre_protocols::tls::TlsTransport;

use super::conn::{Conn, Role};
use super::peering::PeerLinks;
use super::state::Server;
use crate::pki::{PeerCredentials, PeerSide, PkiError};

/// What a successful reload of the peer TLS credentials did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReload {
    /// The serial number of the certificate the server now presents.
    pub serial: String,
    /// The neighbours whose links stayed up (their certificates verify
    /// under the new credentials), sorted.
    pub kept: Vec<String>,
    /// The neighbours whose links were closed (their certificates no
    /// longer verify), sorted.
    pub closed: Vec<String>,
}

impl fmt::Display for PeerReload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "now presenting certificate serial {}; links still verified and kept up: {}; \
             links no longer verified and closed: {}",
            self.serial,
            list(&self.kept),
            list(&self.closed)
        )
    }
}

impl Server {
    /// Loads this server's credentials from the pki directory `dir` and
    /// reloads them (see the module docs).
    pub(super) fn reload_peer_tls_from(&self, dir: &Path) -> Result<PeerReload, PkiError> {
        let from = format!("from {}", dir.display());
        let loaded = PeerCredentials::load(dir, &self.name);
        self.reload_logged(loaded, &from)
    }

    /// Reloads `creds` (see the module docs).
    pub(super) fn reload_peer_tls(&self, creds: PeerCredentials) -> Result<PeerReload, PkiError> {
        self.reload_logged(Ok(creds), "given")
    }

    /// Reloads, and logs the outcome either way.
    fn reload_logged(
        &self,
        creds: Result<PeerCredentials, PkiError>,
        from: &str,
    ) -> Result<PeerReload, PkiError> {
        match creds.and_then(|creds| self.reload(creds)) {
            Ok(report) => {
                self.log.entry(format_args!(
                    "peer TLS credentials reloaded ({from}): {report}"
                ));
                log::info!("{}: peer TLS credentials reloaded: {report}", self.name);
                Ok(report)
            }
            Err(e) => {
                let serial = match &self.peer_links {
                    PeerLinks::Verified(current) => current.current().serial().to_string(),
                    PeerLinks::Insecure => "none".to_string(),
                };
                self.log.entry(format_args!(
                    "reloading the peer TLS credentials ({from}) failed: {e}; keeping the old ones \
                     (certificate serial {serial})"
                ));
                log::error!(
                    "{}: reloading the peer TLS credentials failed: {e}; keeping the old ones",
                    self.name
                );
                Err(e)
            }
        }
    }

    fn reload(&self, creds: PeerCredentials) -> Result<PeerReload, PkiError> {
        let PeerLinks::Verified(current) = &self.peer_links else {
            return Err(PkiError::new(
                "peer links are not authenticated (--insecure-peer-links): no credentials to reload",
            ));
        };
        if creds.name() != self.name {
            return Err(PkiError::new(format!(
                "the credentials are for {:?}, not {:?}",
                creds.name(),
                self.name
            )));
        }
        current.replace(creds.clone());
        let links: Vec<(Rc<Conn>, Rc<str>, bool)> = self
            .conns
            .borrow()
            .values()
            .filter_map(|conn| match &*conn.role.borrow() {
                Role::Link { neighbour, dialled } => {
                    Some((Rc::clone(conn), neighbour.clone(), *dialled))
                }
                _ => None,
            })
            .collect();
        let mut report = PeerReload {
            serial: creds.serial().to_string(),
            kept: Vec::new(),
            closed: Vec::new(),
        };
        for (conn, neighbour, dialled) in links {
            if conn.is_closing() {
                continue;
            }
            let transport = conn.transport();
            let chain = transport
                .as_ref()
                .and_then(|t| t.backend::<TlsTransport>())
                .and_then(|tls| tls.peer_certificates());
            let verdict = match chain {
                Some(chain) => creds.verify_peer(&chain, &neighbour, PeerSide::of(dialled)),
                None => Err(PkiError::new("the link presented no certificate")),
            };
            match verdict {
                Ok(()) => report.kept.push(neighbour.to_string()),
                Err(e) => {
                    self.log.entry(format_args!(
                        "link to {neighbour} ({}): its certificate does not verify under the \
                         reloaded credentials ({e}): closing it",
                        conn.peer
                    ));
                    conn.close();
                    report.closed.push(neighbour.to_string());
                }
            }
        }
        report.kept.sort();
        report.kept.dedup();
        report.closed.sort();
        report.closed.dedup();
        Ok(report)
    }
}
