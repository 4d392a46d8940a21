//! Peer links: how a connection proves it is a neighbour. A dialled link
//! and a `PEER <name>` claim both switch to mutual TLS, and the connection
//! becomes a link only when the certificate names that neighbour.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use gyre_protocols::tls::{
    certificate_serial, start_tls_server, ClientConfig, ServerConfig, StartTls, TlsTransport,
};
use gyre_protocols::LineContext;
use rustls_pki_types::CertificateDer;

use super::conn::{Conn, Role};
#[cfg(doc)]
use super::options::ServerOptions;
use super::options::LINK_LINE_SLACK;
use super::state::Server;
use crate::command;
use crate::log::escape;
use crate::pki::{HerdCa, PeerCredentials, PeerSide, PeerTls};

impl Server {
    /// Calls [`verified`](Self::verified) when the TLS handshake of a link
    /// being verified is done (or failed).
    pub(super) fn await_verification(&self, conn: &Rc<Conn>) {
        let Some(transport) = conn.transport() else {
            return;
        };
        let Some(tls) = transport.backend::<TlsTransport>() else {
            return;
        };
        let server = self.me.clone();
        let watched = Rc::downgrade(conn);
        let t = transport.clone();
        // The credentials this handshake started with.
        let generation = match &self.peer_links {
            PeerLinks::Verified(creds) => creds.generation(),
            PeerLinks::Insecure => 0,
        };
        drop(tls.handshake_done().add_both(move |outcome| {
            let (Some(server), Some(conn)) = (server.upgrade(), watched.upgrade()) else {
                return Ok(());
            };
            match outcome {
                Ok(()) => {
                    let tls = t.backend::<TlsTransport>();
                    let names = tls
                        .as_ref()
                        .and_then(|tls| tls.peer_dns_names())
                        .unwrap_or_default();
                    let chain = tls
                        .and_then(|tls| tls.peer_certificates())
                        .unwrap_or_default();
                    if server.reloaded_since(&conn, generation, &chain) {
                        conn.close();
                        return Ok(());
                    }
                    server.verified(&conn, &names, &chain);
                }
                Err(failure) => server.log.entry(format_args!(
                    "link with {} not verified: {failure}",
                    conn.describe_peer()
                )),
            }
            Ok(())
        }));
    }

    /// Whether the credentials were reloaded while the TLS handshake of
    /// `conn` (begun under credentials `generation`) was under way and its
    /// peer's `chain` does not verify under the new ones: then it must not
    /// become a link (logged; the caller closes it).
    fn reloaded_since(
        &self,
        conn: &Rc<Conn>,
        generation: u64,
        chain: &[CertificateDer<'static>],
    ) -> bool {
        let PeerLinks::Verified(creds) = &self.peer_links else {
            return false;
        };
        if creds.generation() == generation {
            return false;
        }
        let (neighbour, side) = match &*conn.role.borrow() {
            Role::Verifying {
                neighbour, dialled, ..
            } => (neighbour.clone(), PeerSide::of(*dialled)),
            _ => return false,
        };
        match creds.current().verify_peer(chain, &neighbour, side) {
            Ok(()) => false,
            Err(e) => {
                self.log.entry(format_args!(
                    "link with {} not verified: the peer TLS credentials were reloaded during its handshake and its certificate does not verify under them: {e}",
                    conn.describe_peer()
                ));
                true
            }
        }
    }

    /// The TLS handshake of a link being verified is done: the peer holds
    /// a key whose certificate (`chain`, leaf first) chains to the herd CA,
    /// and `names` are the names in it. It becomes the link if they
    /// include, exactly, the neighbour it must be; otherwise it is refused
    /// and closed.
    pub(super) fn verified(
        &self,
        conn: &Rc<Conn>,
        names: &[String],
        chain: &[CertificateDer<'static>],
    ) {
        let (neighbour, dialled, line) = match &*conn.role.borrow() {
            Role::Verifying {
                neighbour,
                dialled,
                line,
            } => (neighbour.clone(), *dialled, line.clone()),
            _ => return,
        };
        if conn.is_closing() {
            return;
        }
        if names.contains(&neighbour) {
            let serial = chain
                .first()
                .and_then(|leaf| certificate_serial(leaf).ok())
                .unwrap_or_else(|| "unknown".to_string());
            self.log.entry(format_args!(
                "verified neighbour {neighbour} at {} by its certificate (serial {serial})",
                conn.peer
            ));
            *conn.role.borrow_mut() = Role::Link {
                neighbour: neighbour.as_str().into(),
                dialled,
            };
            self.links.register(self, conn, &neighbour, dialled);
            return;
        }
        self.log.entry(format_args!(
            "refused a link with {} at {}: its certificate names {names:?}, not {neighbour:?}",
            if dialled {
                "neighbour"
            } else {
                "a connection claiming to be"
            },
            conn.peer
        ));
        if let Some(line) = line {
            // Told over TLS: the peer proved it is some server of the herd.
            let mut answer = Vec::new();
            command::invalid_answer(&line, &mut answer);
            conn.write(&answer);
            self.log.entry(format_args!(
                "sent to {}: {}",
                conn.peer,
                escape(answer.strip_suffix(b"\n").unwrap_or(&answer))
            ));
        }
        conn.close();
    }

    /// The first bytes after a `PEER <neighbour>` line (the receiver is in
    /// raw mode): a TLS handshake record starts the verification of the
    /// link; anything else means the PEER line came from a plain client,
    /// so it is invalid (`? PEER ...`) and the connection stays a client's,
    /// its next bytes read as commands.
    pub(super) fn after_peer_line(&self, conn: &Rc<Conn>, ctx: &LineContext<'_>, data: &[u8]) {
        let (neighbour, line) = match &*conn.role.borrow() {
            Role::Claimed { neighbour, line } => (neighbour.clone(), line.clone()),
            _ => return,
        };
        /// The first byte of a TLS handshake record (a ClientHello).
        const TLS_HANDSHAKE: u8 = 0x16;
        let creds = match &self.peer_links {
            PeerLinks::Verified(creds) => Some(creds.server_config()),
            PeerLinks::Insecure => None,
        };
        if let (Some(TLS_HANDSHAKE), Some(config)) = (data.first().copied(), creds) {
            let transport = ctx.transport().clone();
            if let Err(e) = start_tls_server(&transport, config) {
                self.log
                    .entry(format_args!("cannot start TLS with {}: {e}", conn.peer));
                conn.close();
                return;
            }
            *conn.role.borrow_mut() = Role::Verifying {
                neighbour: neighbour.clone(),
                dialled: false,
                line: Some(line),
            };
            if let Some(tls) = transport.backend::<TlsTransport>() {
                tls.push_back_received(data);
            }
            ctx.set_line_mode(&[]);
            ctx.set_max_length(self.options.max_line_length + LINK_LINE_SLACK);
            self.log.entry(format_args!(
                "{} claims to be neighbour {neighbour}: verifying its certificate over TLS",
                conn.peer
            ));
            self.await_verification(conn);
            return;
        }
        *conn.role.borrow_mut() = Role::Client;
        self.invalid(
            conn,
            &line,
            "PEER not followed by a TLS handshake: not a verified link",
        );
        ctx.set_line_mode(data);
    }

    /// A connection that sent `PEER <neighbour>` ended its input before any
    /// TLS handshake: the PEER line is invalid.
    pub(super) fn claim_ended(&self, conn: &Rc<Conn>) {
        let line = match &*conn.role.borrow() {
            Role::Claimed { line, .. } => line.clone(),
            _ => return,
        };
        *conn.role.borrow_mut() = Role::Client;
        self.invalid(
            conn,
            &line,
            "PEER not followed by a TLS handshake: not a verified link",
        );
    }
}

/// The protocol of every connection of a server: its lines, run by a
/// [`StartTls`] layer (plaintext until a link switches to TLS).
pub(crate) type HerdProtocol = StartTls;

/// How a server authenticates its links, resolved from
/// [`ServerOptions::peer_tls`] at start-up.
pub(crate) enum PeerLinks {
    /// Mutual TLS with these credentials (replaced by a reload).
    Verified(CurrentCredentials),
    /// `PEER <name>` is believed.
    Insecure,
}

/// A server's peer TLS credentials now: every new handshake, dialled or
/// accepted, takes its configuration from here, so a reload (see
/// `reload.rs`) applies to every handshake that starts after it.
pub(crate) struct CurrentCredentials {
    current: RefCell<PeerCredentials>,
    /// How many times they were replaced.
    generation: Cell<u64>,
}

impl CurrentCredentials {
    fn new(creds: PeerCredentials) -> CurrentCredentials {
        CurrentCredentials {
            current: RefCell::new(creds),
            generation: Cell::new(0),
        }
    }

    /// The credentials now.
    pub(crate) fn current(&self) -> PeerCredentials {
        self.current.borrow().clone()
    }

    /// How many times they were replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Replaces them.
    pub(super) fn replace(&self, creds: PeerCredentials) {
        *self.current.borrow_mut() = creds;
        self.generation.set(self.generation.get() + 1);
    }

    /// The TLS client configuration of a link dialled now.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.current.borrow().client_config()
    }

    /// The TLS server configuration of a link accepted now.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.current.borrow().server_config()
    }
}

impl PeerSide {
    /// The side a neighbour played on a link we `dialled` (or not).
    pub(super) fn of(dialled: bool) -> PeerSide {
        if dialled {
            PeerSide::Server
        } else {
            PeerSide::Client
        }
    }
}

impl PeerLinks {
    pub(super) fn for_server(name: &str, tls: &PeerTls) -> io::Result<PeerLinks> {
        Ok(match tls {
            PeerTls::Verified(creds) if creds.name() == name => {
                PeerLinks::Verified(CurrentCredentials::new(creds.clone()))
            }
            PeerTls::Verified(creds) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the peer TLS credentials are for {:?}, not for {name:?}",
                        creds.name()
                    ),
                ))
            }
            PeerTls::InProcess => PeerLinks::Verified(CurrentCredentials::new(
                HerdCa::in_process()?.credentials(name)?,
            )),
            PeerTls::Insecure => PeerLinks::Insecure,
        })
    }
}
