//! The TLS layer: [`TlsTransport`] (the backend the inner protocol writes
//! to), [`TlsProtocol`] (TLS from the first byte) and [`StartTls`]
//! (plaintext first, TLS after a switch).
//!
//! One `TlsTransport` owns the rustls connection, the inner protocol and the
//! TCP transport. The outer protocol ([`TlsProtocol`] or [`StartTls`]) is
//! what the reactor calls; it feeds the TCP bytes to rustls and calls the
//! inner protocol with the plaintext. The inner protocol's transport is the
//! `TlsTransport` itself: its writes are encrypted at once and the records
//! written to the TCP transport, so rustls never holds more than one
//! write's records, and flow control is the TCP transport's.
//!
//! The transport's methods never call the inner protocol (the
//! [`TransportBackend`] contract); the inner protocol is called only from
//! the outer protocol's methods, and, for data held back while the inner
//! protocol paused reading, from a zero-delay timer when a reactor was given.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use gyre_reactor::clock::{Clock, DelayedCall};
use gyre_reactor::{ConnectionLost, Producer, Protocol, Reactor, Transport, TransportBackend};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::CertificateDer;

use super::config::{parse_server_name, TlsError, TlsErrorKind};

/// The limit set with rustls's `set_buffer_limit` on every connection: the
/// most plaintext or TLS records rustls buffers before refusing more. The
/// layer drains rustls after every write, so the limit only caps one
/// encryption step; what is not yet sent waits in the TCP transport's
/// buffer, where producers see it.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// How long `lose_connection` waits for the peer's `close_notify` (or its
/// EOF) before closing the TCP connection anyway, when the layer has a
/// reactor (see [`TlsTransport`]).
pub const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake time-out [`listen_tls`](super::listen_tls) gives each
/// connection: a client that has not finished the handshake by then is
/// dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseKind {
    /// Our write side only (`half_close`).
    Half,
    /// The whole connection (`lose_connection`).
    Full,
}

/// Why the TLS layer gave up on a connection.
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
    during_handshake: bool,
}

impl Failure {
    fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

/// The transport a protocol running over TLS is given: writes are
/// encrypted, closes send `close_notify` first. Reach it (for the ALPN
/// protocol, the peer's certificates, or `start_tls`) with
/// [`Transport::backend`]:
///
/// ```no_run
/// use gyre_protocols::tls::TlsTransport;
/// use gyre_reactor::{Protocol, Transport};
///
/// struct ShowAlpn;
/// impl Protocol for ShowAlpn {
///     fn connection_made(&mut self, transport: Transport) {
///         if let Some(tls) = transport.backend::<TlsTransport>() {
///             println!("ALPN: {:?}", tls.alpn_protocol());
///         }
///     }
///     fn data_received(&mut self, _data: &[u8]) {}
/// }
/// ```
///
/// # Behaviour
///
/// - `write` encrypts at once and hands the records to the TCP transport.
///   Before the handshake has finished (only possible after
///   [`start_tls_client`]/[`start_tls_server`]) the plaintext waits here
///   and goes out, encrypted, when it finishes.
/// - `lose_connection` sends what is buffered, then `close_notify`, and
///   closes the TCP connection. With a reactor (as with [`connect_tls`],
///   [`listen_tls`], or [`TlsProtocol::with_reactor`]) it shuts the TCP
///   write side and reads on until the peer's `close_notify` or EOF (at most
///   [`CLOSE_NOTIFY_TIMEOUT`]), so that what the peer sends meanwhile (TLS
///   1.3 session tickets, say) does not turn the close into a reset;
///   plaintext arriving meanwhile is still delivered, as with TCP. Without
///   a reactor the TCP connection is closed as soon as it has flushed.
///   `half_close` sends `close_notify` and shuts the TCP write side;
///   `abort_connection` aborts the TCP connection.
///
/// [`connect_tls`]: super::connect_tls
/// [`listen_tls`]: super::listen_tls
/// - A peer's `close_notify` is the end of the stream: the protocol's
///   `eof_received` runs, and its answer is honoured (`false` closes, `true`
///   keeps our side open for writing). A TCP EOF without `close_notify` is
///   reported to `connection_lost` as [`ConnectionLost::Error`] of kind
///   `UnexpectedEof` (the stream may have been truncated).
/// - A TLS error after the handshake (a corrupt record, a fatal alert)
///   aborts the connection; `connection_lost` gets an `InvalidData` error
///   naming it.
/// - Flow control is the TCP transport's: `buffered_len` is the plaintext
///   waiting for the handshake plus the TCP transport's buffer, and
///   producers, write-buffer limits, `pause_reading` and `resume_reading`
///   pass through to the TCP transport. Plaintext already decrypted when the
///   protocol pauses is held and delivered on resume (from the loop, if the
///   layer was given a reactor; otherwise with the next bytes read).
pub struct TlsTransport {
    weak_self: Weak<TlsTransport>,
    tcp: RefCell<Option<Transport>>,
    /// `None`: plaintext pass-through ([`StartTls`] before the switch).
    tls: RefCell<Option<Connection>>,
    server_name: RefCell<Option<String>>,
    inner: RefCell<Option<Box<dyn Protocol>>>,
    inner_connected: Cell<bool>,
    handshake_done: Cell<bool>,
    /// Plaintext written before the handshake finished.
    pending_tx: RefCell<Vec<u8>>,
    /// Plaintext decrypted and not yet delivered (reading paused).
    pending_rx: RefCell<Vec<u8>>,
    /// TLS bytes handed back by the inner protocol at a `start_tls` switch.
    leftover: RefCell<Vec<u8>>,
    reading_paused: Cell<bool>,
    close_req: Cell<Option<CloseKind>>,
    close_done: Cell<Option<CloseKind>>,
    /// The peer's `close_notify` arrived.
    peer_closed: Cell<bool>,
    eof_delivered: Cell<bool>,
    inner_keep_open: Cell<bool>,
    aborted: Cell<bool>,
    failure: RefCell<Option<Failure>>,
    /// The reason the inner protocol is given instead of the TCP one.
    lost_override: RefCell<Option<ConnectionLost>>,
    /// The reason the inner protocol was given.
    final_reason: RefCell<Option<ConnectionLost>>,
    lost: Cell<bool>,
    clock: RefCell<Option<Clock>>,
    wake_scheduled: Cell<bool>,
    handshake_timeout: Cell<Option<Duration>>,
    timer: RefCell<Option<DelayedCall>>,
}

impl TlsTransport {
    fn new_rc(
        tls: Option<Connection>,
        server_name: Option<String>,
        inner: Box<dyn Protocol>,
    ) -> Rc<TlsTransport> {
        let tls = tls.map(|mut conn| {
            conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
            conn
        });
        Rc::new_cyclic(|weak| TlsTransport {
            weak_self: weak.clone(),
            tcp: RefCell::new(None),
            tls: RefCell::new(tls),
            server_name: RefCell::new(server_name),
            inner: RefCell::new(Some(inner)),
            inner_connected: Cell::new(false),
            handshake_done: Cell::new(false),
            pending_tx: RefCell::new(Vec::new()),
            pending_rx: RefCell::new(Vec::new()),
            leftover: RefCell::new(Vec::new()),
            reading_paused: Cell::new(false),
            close_req: Cell::new(None),
            close_done: Cell::new(None),
            peer_closed: Cell::new(false),
            eof_delivered: Cell::new(false),
            inner_keep_open: Cell::new(false),
            aborted: Cell::new(false),
            failure: RefCell::new(None),
            lost_override: RefCell::new(None),
            final_reason: RefCell::new(None),
            lost: Cell::new(false),
            clock: RefCell::new(None),
            wake_scheduled: Cell::new(false),
            handshake_timeout: Cell::new(None),
            timer: RefCell::new(None),
        })
    }

    // ----- public queries -------------------------------------------------

    /// The ALPN protocol both sides agreed on, once the handshake is done.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.tls
            .borrow()
            .as_ref()
            .and_then(|c| c.alpn_protocol().map(<[u8]>::to_vec))
    }

    /// The peer's certificate chain (leaf first), once the handshake is
    /// done; on a server, `None` (client certificates are not asked for).
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.tls.borrow().as_ref().and_then(|c| {
            c.peer_certificates()
                .map(<[CertificateDer<'static>]>::to_vec)
        })
    }

    /// The TLS version negotiated, once known.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls
            .borrow()
            .as_ref()
            .and_then(|c| c.protocol_version())
    }

    /// The cipher suite negotiated, once known.
    pub fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.tls
            .borrow()
            .as_ref()
            .and_then(|c| c.negotiated_cipher_suite())
    }

    /// The name a client verified the server's certificate against (and
    /// sent as SNI); `None` on a server.
    pub fn server_name(&self) -> Option<String> {
        self.server_name.borrow().clone()
    }

    /// Whether TLS is on (always for [`TlsProtocol`]; after the switch for
    /// [`StartTls`]).
    pub fn is_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// Whether the TLS handshake has finished.
    pub fn is_handshake_complete(&self) -> bool {
        self.handshake_done.get()
    }

    /// Whether the peer's `close_notify` has arrived.
    pub fn received_close_notify(&self) -> bool {
        self.peer_closed.get()
    }

    /// The TCP transport underneath (writing to it bypasses TLS).
    pub fn tcp_transport(&self) -> Option<Transport> {
        self.tcp.borrow().clone()
    }

    /// Why the handshake failed, if it did: the error a
    /// [`connect_tls`](super::connect_tls) factory is given. Its message
    /// names the peer and the rustls error.
    pub fn handshake_error(&self) -> Option<io::Error> {
        self.failure
            .borrow()
            .as_ref()
            .filter(|f| f.during_handshake)
            .map(Failure::to_io)
    }

    /// The reason given to the inner protocol's `connection_lost`, once it
    /// was called.
    pub fn lost_reason(&self) -> Option<ConnectionLost> {
        self.final_reason.borrow().clone()
    }

    // ----- start_tls --------------------------------------------------------

    /// Switches a [`StartTls`] connection to TLS as the client: everything
    /// written from now on is encrypted (held until the handshake is done),
    /// and every byte read from now on goes to TLS. The ClientHello is
    /// sent at once. See [`StartTls`] for the flow.
    pub fn start_tls_client(
        &self,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<(), TlsError> {
        self.check_can_start()?;
        let name = parse_server_name(server_name)?;
        let conn = ClientConnection::new(config, name).map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("cannot start a TLS client: {e}"),
                e,
            )
        })?;
        self.install(Connection::Client(conn), Some(server_name.to_string()));
        Ok(())
    }

    /// Switches a [`StartTls`] connection to TLS as the server; as
    /// [`start_tls_client`](Self::start_tls_client).
    pub fn start_tls_server(&self, config: Arc<ServerConfig>) -> Result<(), TlsError> {
        self.check_can_start()?;
        let conn = ServerConnection::new(config).map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("cannot start a TLS server: {e}"),
                e,
            )
        })?;
        self.install(Connection::Server(conn), None);
        Ok(())
    }

    /// Gives back bytes the inner protocol received that belong to the TLS
    /// stream (after a `start_tls` switch made in the middle of a read,
    /// e.g. what a line receiver still buffers:
    /// `ctx.clear_line_buffer()`). They are fed to TLS before anything read
    /// later, when the current protocol call returns.
    pub fn push_back_received(&self, data: &[u8]) {
        if data.is_empty() || self.finished() {
            return;
        }
        self.leftover.borrow_mut().extend_from_slice(data);
        self.schedule_wake();
    }

    fn check_can_start(&self) -> Result<(), TlsError> {
        if self.tls.borrow().is_some() {
            return Err(TlsError::new(
                TlsErrorKind::StartTls,
                "TLS has already been started on this connection",
            ));
        }
        if self.tcp.borrow().is_none() || self.write_closed() {
            return Err(TlsError::new(
                TlsErrorKind::StartTls,
                "cannot start TLS: the connection is not open",
            ));
        }
        Ok(())
    }

    fn install(&self, mut conn: Connection, server_name: Option<String>) {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        *self.tls.borrow_mut() = Some(conn);
        *self.server_name.borrow_mut() = server_name;
        self.start_handshake_timer();
        self.flush_tls();
        if !self.leftover.borrow().is_empty() {
            self.schedule_wake();
        }
    }

    // ----- internals --------------------------------------------------------

    fn tcp(&self) -> Option<Transport> {
        self.tcp.borrow().clone()
    }

    fn tls_active(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// "name (address)" of the peer, for messages.
    fn peer_label(&self) -> String {
        let addr = self.tcp().and_then(|t| t.peer_addr());
        match (self.server_name.borrow().as_deref(), addr) {
            (Some(name), Some(addr)) => format!("{name} ({addr})"),
            (Some(name), None) => name.to_string(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "the peer".to_string(),
        }
    }

    /// Lost, aborted, or failed: nothing more happens on this connection.
    fn finished(&self) -> bool {
        self.lost.get() || self.aborted.get() || self.failure.borrow().is_some()
    }

    fn write_closed(&self) -> bool {
        self.finished() || self.close_req.get().is_some()
    }

    /// Calls the inner protocol (not if a call to it is already running).
    fn call_inner<R>(&self, f: impl FnOnce(&mut dyn Protocol) -> R) -> Option<R> {
        let Ok(mut guard) = self.inner.try_borrow_mut() else {
            log::error!("TLS: inner protocol for {} is busy", self.peer_label());
            return None;
        };
        let inner = guard.as_mut()?;
        Some(f(&mut **inner))
    }

    fn inner_busy(&self) -> bool {
        self.inner.try_borrow_mut().is_err()
    }

    /// Encrypts and writes `parts` (plaintext mode: writes them as they are).
    fn send(&self, parts: &[&[u8]]) {
        if self.write_closed() {
            return;
        }
        let Some(tcp) = self.tcp() else {
            return;
        };
        if !self.tls_active() {
            tcp.write_sequence(parts);
            return;
        }
        let mut out = Vec::new();
        {
            let mut tls = self.tls.borrow_mut();
            let Some(conn) = tls.as_mut() else {
                return;
            };
            let mut pending = self.pending_tx.borrow_mut();
            let mut rest = parts.iter();
            if pending.is_empty() && !conn.is_handshaking() {
                for part in rest.by_ref() {
                    let n = encrypt(conn, part, &mut out);
                    if n < part.len() {
                        pending.extend_from_slice(&part[n..]);
                        break;
                    }
                }
            }
            for part in rest {
                pending.extend_from_slice(part);
            }
        }
        if !out.is_empty() {
            tcp.write(&out);
        }
        if self.handshake_done.get() && !self.pending_tx.borrow().is_empty() {
            self.flush_tls();
        }
    }

    /// Encrypts plaintext held for the handshake (once it is done) and
    /// writes every TLS record rustls has queued to the TCP transport.
    fn flush_tls(&self) {
        let Some(tcp) = self.tcp() else {
            return;
        };
        let may_send_data = !self.finished() && self.close_done.get().is_none();
        let mut out = Vec::new();
        {
            let mut tls = self.tls.borrow_mut();
            let Some(conn) = tls.as_mut() else {
                return;
            };
            let mut pending = self.pending_tx.borrow_mut();
            if may_send_data && !pending.is_empty() && !conn.is_handshaking() {
                let n = encrypt(conn, &pending, &mut out);
                pending.drain(..n);
            }
            drain_tls(conn, &mut out);
        }
        if !out.is_empty() {
            tcp.write(&out);
        }
    }

    /// Bytes from the TCP transport.
    fn on_data_received(&self, data: &[u8]) {
        if self.finished() {
            return;
        }
        if !self.tls_active() {
            // Plaintext: the inner protocol may switch to TLS during this call.
            if self.inner_connected.get() {
                self.call_inner(|p| p.data_received(data));
            }
            if self.tls_active() && !self.finished() {
                let leftover = std::mem::take(&mut *self.leftover.borrow_mut());
                if !leftover.is_empty() {
                    self.receive_tls(&leftover);
                }
            }
            return;
        }
        let leftover = std::mem::take(&mut *self.leftover.borrow_mut());
        if leftover.is_empty() {
            self.receive_tls(data);
        } else {
            let mut all = leftover;
            all.extend_from_slice(data);
            self.receive_tls(&all);
        }
    }

    /// Decrypts TLS bytes, answers the handshake, delivers plaintext.
    fn receive_tls(&self, data: &[u8]) {
        let mut plain = Vec::new();
        let result = {
            let mut tls = self.tls.borrow_mut();
            let Some(conn) = tls.as_mut() else {
                return;
            };
            decrypt(conn, data, &mut plain)
        };
        // Handshake messages, and the alert of a failure.
        self.flush_tls();
        if !plain.is_empty() {
            let mut pending = self.pending_rx.borrow_mut();
            if pending.is_empty() {
                *pending = plain;
            } else {
                pending.extend_from_slice(&plain);
            }
        }
        match result {
            Ok(closed) => {
                if closed {
                    self.peer_closed.set(true);
                }
            }
            Err(e) => {
                self.deliver_ready();
                self.fail(e, true);
                return;
            }
        }
        if !self.handshake_done.get() {
            let handshaking = self
                .tls
                .borrow()
                .as_ref()
                .is_none_or(|c| c.is_handshaking());
            if !handshaking {
                self.on_handshake_done();
            } else if self.peer_closed.get() {
                self.fail(
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer sent close_notify during the handshake",
                    ),
                    true,
                );
                return;
            }
        }
        self.deliver_ready();
    }

    fn on_handshake_done(&self) {
        self.handshake_done.set(true);
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        log::debug!(
            "TLS handshake with {} done: {:?}, {:?}, ALPN {:?}",
            self.peer_label(),
            self.protocol_version(),
            self.cipher_suite().map(|s| s.suite()),
            self.alpn_protocol()
                .map(|p| String::from_utf8_lossy(&p).into_owned()),
        );
        // Plaintext written before the handshake (start_tls) goes first.
        self.flush_tls();
        if !self.inner_connected.get() {
            self.inner_connected.set(true);
            if let Some(me) = self.weak_self.upgrade() {
                let transport = Transport::new(me);
                self.call_inner(|p| p.connection_made(transport));
            }
        }
        if self.close_req.get().is_some() {
            self.do_close();
        }
    }

    /// Delivers held plaintext, then a held end of stream, unless paused.
    fn deliver_ready(&self) {
        if !self.inner_connected.get() || self.lost.get() || self.aborted.get() {
            return;
        }
        if self.reading_paused.get() || self.inner_busy() {
            return;
        }
        let data = std::mem::take(&mut *self.pending_rx.borrow_mut());
        if !data.is_empty() {
            self.call_inner(|p| p.data_received(&data));
        }
        if self.peer_closed.get()
            && !self.eof_delivered.get()
            && !self.reading_paused.get()
            && self.pending_rx.borrow().is_empty()
            && !self.lost.get()
            && !self.aborted.get()
        {
            self.deliver_eof();
        }
    }

    /// The peer's `close_notify`: the inner protocol's `eof_received`, and
    /// its answer.
    fn deliver_eof(&self) {
        self.eof_delivered.set(true);
        let keep_open = self.call_inner(|p| p.eof_received()).unwrap_or(false);
        self.inner_keep_open.set(keep_open);
        if self.finished() {
            return;
        }
        if self.close_done.get().is_some() {
            // We had already sent close_notify: both directions are done.
            if let Some(tcp) = self.tcp() {
                tcp.lose_connection();
            }
        } else if !keep_open {
            self.request_close(CloseKind::Full);
        }
    }

    /// The TCP connection's EOF; returns whether to keep its write side open.
    fn on_eof_received(&self) -> bool {
        if !self.tls_active() {
            if self.finished() || !self.inner_connected.get() {
                return false;
            }
            return self.call_inner(|p| p.eof_received()).unwrap_or(false);
        }
        if self.finished() {
            return false;
        }
        if self.peer_closed.get() {
            if self.eof_delivered.get() {
                return self.inner_keep_open.get();
            }
            // The end of stream is held (reading paused): keep the
            // connection until it has been delivered.
            return true;
        }
        if self.close_done.get() == Some(CloseKind::Full) {
            // We closed first and were waiting for the peer: its EOF will do.
            return false;
        }
        if !self.handshake_done.get() {
            self.fail(
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the handshake",
                ),
                false,
            );
            return false;
        }
        let message = format!(
            "TLS connection with {} closed without close_notify (the data may have been truncated)",
            self.peer_label()
        );
        log::debug!("{message}");
        *self.lost_override.borrow_mut() = Some(ConnectionLost::Error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            message,
        )));
        false
    }

    fn on_connection_made(&self, tcp: Transport) {
        *self.tcp.borrow_mut() = Some(tcp);
        if self.tls_active() {
            self.start_handshake_timer();
            // A client's ClientHello.
            self.flush_tls();
        } else {
            self.inner_connected.set(true);
            if let Some(me) = self.weak_self.upgrade() {
                let transport = Transport::new(me);
                self.call_inner(|p| p.connection_made(transport));
            }
        }
    }

    fn on_connection_lost(&self, reason: ConnectionLost) {
        if self.lost.replace(true) {
            return;
        }
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        if self.tls_active() && !self.handshake_done.get() && self.failure.borrow().is_none() {
            let kind = match &reason {
                ConnectionLost::Error(e) => e.kind(),
                ConnectionLost::Aborted => io::ErrorKind::ConnectionAborted,
                ConnectionLost::Shutdown => io::ErrorKind::Interrupted,
                ConnectionLost::Panicked(_) => io::ErrorKind::Other,
                ConnectionLost::Done => io::ErrorKind::UnexpectedEof,
            };
            let message = format!("TLS handshake with {} failed: {reason}", self.peer_label());
            log::debug!("{message}");
            if self.inner_connected.get() {
                *self.lost_override.borrow_mut() =
                    Some(ConnectionLost::Error(io::Error::new(kind, message.clone())));
            }
            *self.failure.borrow_mut() = Some(Failure {
                kind,
                message,
                during_handshake: true,
            });
        }
        let reason = match (self.lost_override.borrow_mut().take(), reason) {
            // A shutdown or a panic says more than our own diagnosis.
            (_, r @ (ConnectionLost::Shutdown | ConnectionLost::Panicked(_))) => r,
            (Some(over), _) => over,
            (None, r) => r,
        };
        *self.final_reason.borrow_mut() = Some(reason.clone());
        self.pending_tx.borrow_mut().clear();
        self.pending_rx.borrow_mut().clear();
        self.leftover.borrow_mut().clear();
        let inner = self.inner.try_borrow_mut().ok().and_then(|mut g| g.take());
        if let Some(mut inner) = inner {
            if self.inner_connected.get() {
                inner.connection_lost(reason);
            }
        }
    }

    /// Gives up: logs, records the failure for the inner protocol and the
    /// factory, and closes the TCP connection (after sending the alert,
    /// during a handshake) or aborts it.
    fn fail(&self, error: io::Error, send_alert: bool) {
        if self.failure.borrow().is_some() || self.lost.get() {
            return;
        }
        let during_handshake = !self.handshake_done.get();
        let message = if during_handshake {
            format!("TLS handshake with {} failed: {error}", self.peer_label())
        } else {
            format!(
                "TLS error on the connection with {}: {error}",
                self.peer_label()
            )
        };
        log::warn!("{message}");
        let kind = error.kind();
        if self.inner_connected.get() {
            *self.lost_override.borrow_mut() =
                Some(ConnectionLost::Error(io::Error::new(kind, message.clone())));
        }
        *self.failure.borrow_mut() = Some(Failure {
            kind,
            message,
            during_handshake,
        });
        self.pending_tx.borrow_mut().clear();
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        if let Some(tcp) = self.tcp() {
            if send_alert && during_handshake {
                self.flush_tls();
                tcp.lose_connection();
            } else {
                tcp.abort_connection();
            }
        }
    }

    fn request_close(&self, kind: CloseKind) {
        if self.finished() {
            return;
        }
        match (self.close_req.get(), kind) {
            (Some(CloseKind::Full), _) | (Some(CloseKind::Half), CloseKind::Half) => return,
            _ => {}
        }
        self.close_req.set(Some(kind));
        self.do_close();
    }

    /// Carries out the close asked for (after the handshake, with TLS).
    fn do_close(&self) {
        let Some(kind) = self.close_req.get() else {
            return;
        };
        let done = self.close_done.get();
        if done == Some(CloseKind::Full) || done == Some(kind) {
            return;
        }
        let Some(tcp) = self.tcp() else {
            return;
        };
        let tls = self.tls_active();
        if tls {
            if !self.handshake_done.get() {
                // Closed again once the handshake is done.
                return;
            }
            if done.is_none() {
                self.flush_tls();
                if let Some(conn) = self.tls.borrow_mut().as_mut() {
                    conn.send_close_notify();
                }
                self.close_done.set(Some(kind));
                self.flush_tls();
            }
        }
        self.close_done.set(Some(kind));
        let graceful = tls && !self.peer_closed.get();
        match kind {
            CloseKind::Full if graceful && self.clock.borrow().is_some() => {
                // Wait (reading) for the peer's close_notify or EOF, so that
                // records it sends meanwhile (session tickets, say) are read
                // and the TCP close is a FIN, not a reset.
                tcp.half_close();
                self.start_close_timer();
            }
            CloseKind::Full => tcp.lose_connection(),
            CloseKind::Half if !graceful && tls => tcp.lose_connection(),
            CloseKind::Half => tcp.half_close(),
        }
    }

    fn start_close_timer(&self) {
        let Some(clock) = self.clock.borrow().clone() else {
            return;
        };
        let weak = self.weak_self.clone();
        let call = clock.call_later(CLOSE_NOTIFY_TIMEOUT, move || {
            if let Some(me) = weak.upgrade() {
                if !me.lost.get() {
                    log::debug!(
                        "TLS: no close_notify from {} within {CLOSE_NOTIFY_TIMEOUT:?}; closing",
                        me.peer_label()
                    );
                    if let Some(tcp) = me.tcp() {
                        tcp.lose_connection();
                    }
                }
            }
        });
        if let Some(old) = self.timer.borrow_mut().replace(call) {
            let _ = old.cancel();
        }
    }

    fn start_handshake_timer(&self) {
        let Some(timeout) = self.handshake_timeout.get() else {
            return;
        };
        let Some(clock) = self.clock.borrow().clone() else {
            return;
        };
        let weak = self.weak_self.clone();
        let call = clock.call_later(timeout, move || {
            if let Some(me) = weak.upgrade() {
                if !me.handshake_done.get() && !me.lost.get() {
                    me.fail(
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no handshake within {timeout:?}"),
                        ),
                        false,
                    );
                }
            }
        });
        if let Some(old) = self.timer.borrow_mut().replace(call) {
            let _ = old.cancel();
        }
    }

    /// Delivers held data from the loop (needs a reactor's clock).
    fn schedule_wake(&self) {
        if self.wake_scheduled.get() {
            return;
        }
        let Some(clock) = self.clock.borrow().clone() else {
            return;
        };
        self.wake_scheduled.set(true);
        let weak = self.weak_self.clone();
        clock.call_later(Duration::ZERO, move || {
            if let Some(me) = weak.upgrade() {
                me.wake_scheduled.set(false);
                me.wake();
            }
        });
    }

    fn wake(&self) {
        if self.finished() || self.inner_busy() {
            return;
        }
        if self.tls_active() && !self.leftover.borrow().is_empty() {
            let leftover = std::mem::take(&mut *self.leftover.borrow_mut());
            self.receive_tls(&leftover);
        } else {
            self.deliver_ready();
        }
    }

    fn has_held_input(&self) -> bool {
        !self.pending_rx.borrow().is_empty()
            || !self.leftover.borrow().is_empty()
            || (self.peer_closed.get() && !self.eof_delivered.get())
    }
}

/// Encrypts as much of `data` as rustls takes, appending the records to
/// `out`; returns how many bytes were taken.
fn encrypt(conn: &mut Connection, data: &[u8], out: &mut Vec<u8>) -> usize {
    let mut taken = 0;
    while taken < data.len() {
        match conn.writer().write(&data[taken..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => taken += n,
        }
        drain_tls(conn, out);
    }
    drain_tls(conn, out);
    taken
}

/// Moves every queued TLS record into `out`.
fn drain_tls(conn: &mut Connection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        match conn.write_tls(out) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Feeds `data` to rustls and appends the plaintext it yields to `plain`.
/// Returns whether the peer's `close_notify` has arrived; an `InvalidData`
/// error for a TLS error (rustls has queued the alert).
fn decrypt(conn: &mut Connection, mut data: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
    let mut closed = false;
    loop {
        if !data.is_empty() {
            match conn.read_tls(&mut data) {
                // After close_notify nothing more is read: drop the rest.
                Ok(0) => data = &[],
                Ok(_) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            let start = plain.len();
            plain.resize(start + available, 0);
            let mut filled = 0;
            while filled < available {
                match conn.reader().read(&mut plain[start + filled..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
            }
            plain.truncate(start + filled);
        }
        if state.peer_has_closed() {
            closed = true;
        }
        if data.is_empty() {
            return Ok(closed);
        }
    }
}

impl TransportBackend for TlsTransport {
    fn write(&self, data: &[u8]) {
        if !data.is_empty() {
            self.send(&[data]);
        }
    }

    fn write_sequence(&self, parts: &[&[u8]]) {
        self.send(parts);
    }

    fn lose_connection(&self) {
        self.request_close(CloseKind::Full);
    }

    fn half_close(&self) {
        self.request_close(CloseKind::Half);
    }

    fn abort_connection(&self) {
        if self.lost.get() || self.aborted.replace(true) {
            return;
        }
        self.pending_tx.borrow_mut().clear();
        if let Some(tcp) = self.tcp() {
            tcp.abort_connection();
        }
    }

    fn is_closing(&self) -> bool {
        self.close_req.get() == Some(CloseKind::Full)
            || self.finished()
            || self.tcp().is_some_and(|t| t.is_closing())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp().and_then(|t| t.peer_addr())
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp().and_then(|t| t.local_addr())
    }

    fn pause_reading(&self) {
        self.reading_paused.set(true);
        if let Some(tcp) = self.tcp() {
            tcp.pause_reading();
        }
    }

    fn resume_reading(&self) {
        let was_paused = self.reading_paused.replace(false);
        if let Some(tcp) = self.tcp() {
            tcp.resume_reading();
        }
        if was_paused && self.has_held_input() {
            self.schedule_wake();
        }
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self.tcp() {
            Some(tcp) => tcp.set_nodelay(on),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection has no TCP transport yet",
            )),
        }
    }

    fn buffered_len(&self) -> usize {
        self.pending_tx.borrow().len() + self.tcp().map_or(0, |t| t.buffered_len())
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        if let Some(tcp) = self.tcp() {
            tcp.set_write_buffer_limits(high, low);
        }
    }

    fn register_producer(&self, producer: Rc<dyn Producer>) {
        if let Some(tcp) = self.tcp() {
            tcp.register_producer(producer);
        }
    }

    fn unregister_producer(&self) {
        if let Some(tcp) = self.tcp() {
            tcp.unregister_producer();
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Breaks the inner protocol <-> transport cycle when the outer protocol goes.
fn release_inner(shared: &TlsTransport) {
    let inner = shared
        .inner
        .try_borrow_mut()
        .ok()
        .and_then(|mut g| g.take());
    drop(inner);
}

/// A [`Protocol`] that runs `inner` over TLS on the transport it is given
/// (TLS from the first byte; see [`StartTls`] for a switch mid-connection).
///
/// The inner protocol's `connection_made` runs when the handshake has
/// finished, with a [`TlsTransport`]; if the handshake fails it never runs
/// (nor `connection_lost`): the failure is logged, the TCP connection is
/// closed after the TLS alert, and [`TlsTransport::handshake_error`] says
/// why (a [`connect_tls`](super::connect_tls) factory is told through
/// `client_connection_failed`).
///
/// ```
/// use gyre_protocols::tls::{client_config, TlsProtocol};
/// use gyre_reactor::{Protocol, Transport};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: Transport) {
///         t.write(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         print!("{}", String::from_utf8_lossy(data));
///     }
/// }
///
/// let tls = TlsProtocol::client(Hello, "example.com", client_config(&[], &[])?)?;
/// // reactor.connect_protocol(addr, tls), or connect_tls(...) with a factory.
/// # drop(tls);
/// # Ok::<(), gyre_protocols::tls::TlsError>(())
/// ```
pub struct TlsProtocol {
    shared: Rc<TlsTransport>,
}

impl TlsProtocol {
    /// `inner` over TLS as the client of `server_name` (a DNS name or an IP
    /// address: sent as SNI, and the certificate must be valid for it).
    pub fn client(
        inner: impl Protocol,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsProtocol, TlsError> {
        let name = parse_server_name(server_name)?;
        let conn = ClientConnection::new(config, name).map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("cannot start a TLS client: {e}"),
                e,
            )
        })?;
        Ok(TlsProtocol {
            shared: TlsTransport::new_rc(
                Some(Connection::Client(conn)),
                Some(server_name.to_string()),
                Box::new(inner),
            ),
        })
    }

    /// `inner` over TLS as the server.
    pub fn server(
        inner: impl Protocol,
        config: Arc<ServerConfig>,
    ) -> Result<TlsProtocol, TlsError> {
        let conn = ServerConnection::new(config).map_err(|e| {
            TlsError::with_source(
                TlsErrorKind::Config,
                format!("cannot start a TLS server: {e}"),
                e,
            )
        })?;
        Ok(TlsProtocol {
            shared: TlsTransport::new_rc(Some(Connection::Server(conn)), None, Box::new(inner)),
        })
    }

    /// Runs on `reactor`: plaintext held while the inner protocol paused
    /// reading is delivered from its loop as soon as reading resumes, and a
    /// handshake time-out can be set.
    pub fn with_reactor(self, reactor: &Reactor) -> TlsProtocol {
        *self.shared.clock.borrow_mut() = Some(reactor.clock().clone());
        self
    }

    pub(crate) fn with_clock(self, clock: Clock) -> TlsProtocol {
        *self.shared.clock.borrow_mut() = Some(clock);
        self
    }

    /// Drops the connection if the handshake has not finished within
    /// `timeout` of connecting (needs [`with_reactor`](Self::with_reactor)).
    pub fn with_handshake_timeout(self, timeout: Duration) -> TlsProtocol {
        self.shared.handshake_timeout.set(Some(timeout));
        self
    }

    /// The TLS layer's state (handshake result, ALPN, certificates, the
    /// reason given to the inner protocol).
    pub fn tls_transport(&self) -> Rc<TlsTransport> {
        Rc::clone(&self.shared)
    }
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.shared.on_connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.shared.on_data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.shared.on_eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.shared.on_connection_lost(reason);
    }
}

impl Drop for TlsProtocol {
    fn drop(&mut self) {
        release_inner(&self.shared);
    }
}

/// A [`Protocol`] that runs `inner` in plaintext until it switches the
/// connection to TLS (STARTTLS, as in SMTP, IMAP, XMPP, LDAP...).
///
/// Install it from the start: `StartTls::new(inner)`. The inner protocol's
/// `connection_made` runs at once with a [`TlsTransport`] in plaintext mode;
/// bytes pass through unchanged. The usual flow, in plaintext:
///
/// 1. the client writes its STARTTLS command (`STARTTLS\r\n`);
/// 2. the server reads it, writes its go-ahead (`OK\r\n`), and then calls
///    [`start_tls_server`]`(&transport, config)`: the go-ahead was written
///    before the switch, so it goes out in plaintext;
/// 3. the client reads the go-ahead and calls
///    [`start_tls_client`]`(&transport, "server.name", config)`, which sends
///    the ClientHello.
///
/// From the switch on, every write is encrypted (writes made before the
/// handshake finishes are held, then sent encrypted) and every byte read
/// goes to TLS; a handshake failure reaches the inner protocol's
/// `connection_lost` as an `InvalidData` error naming it. Bytes the inner
/// protocol had already received past the switch point (a client that sent
/// its ClientHello straight after the command) belong to TLS: hand them
/// back with [`TlsTransport::push_back_received`]. The inner protocol's
/// `connection_made` is not called again;
/// [`TlsTransport::is_handshake_complete`] tells whether the handshake is
/// done.
///
/// ```
/// use std::sync::Arc;
/// use gyre_protocols::tls::{start_tls_server, StartTls};
/// use gyre_reactor::{Protocol, Transport};
///
/// struct Server {
///     transport: Option<Transport>,
///     config: Arc<gyre_protocols::tls::ServerConfig>,
/// }
/// impl Protocol for Server {
///     fn connection_made(&mut self, t: Transport) { self.transport = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         let Some(t) = &self.transport else { return };
///         if data == b"STARTTLS\r\n" {
///             t.write(b"OK\r\n"); // plaintext
///             if start_tls_server(t, self.config.clone()).is_err() {
///                 t.lose_connection();
///             }
///         } else {
///             t.write(data); // encrypted once TLS is on
///         }
///     }
/// }
/// # fn wrap(server: Server) -> StartTls { StartTls::new(server) }
/// ```
pub struct StartTls {
    shared: Rc<TlsTransport>,
}

impl StartTls {
    /// `inner` in plaintext until `start_tls_client`/`start_tls_server`.
    pub fn new(inner: impl Protocol) -> StartTls {
        StartTls {
            shared: TlsTransport::new_rc(None, None, Box::new(inner)),
        }
    }

    /// As [`TlsProtocol::with_reactor`].
    pub fn with_reactor(self, reactor: &Reactor) -> StartTls {
        *self.shared.clock.borrow_mut() = Some(reactor.clock().clone());
        self
    }

    /// Drops the connection if a handshake has not finished within
    /// `timeout` of the switch (needs [`with_reactor`](Self::with_reactor)).
    pub fn with_handshake_timeout(self, timeout: Duration) -> StartTls {
        self.shared.handshake_timeout.set(Some(timeout));
        self
    }

    /// The layer's state, as [`TlsProtocol::tls_transport`].
    pub fn tls_transport(&self) -> Rc<TlsTransport> {
        Rc::clone(&self.shared)
    }
}

impl Protocol for StartTls {
    fn connection_made(&mut self, transport: Transport) {
        self.shared.on_connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.shared.on_data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.shared.on_eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.shared.on_connection_lost(reason);
    }
}

impl Drop for StartTls {
    fn drop(&mut self) {
        release_inner(&self.shared);
    }
}

fn not_start_tls() -> TlsError {
    TlsError::new(
        TlsErrorKind::StartTls,
        "start_tls needs the transport of a protocol run by StartTls",
    )
}

/// Switches the [`StartTls`] connection behind `transport` (the inner
/// protocol's transport) to TLS as the client of `server_name`.
pub fn start_tls_client(
    transport: &Transport,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<(), TlsError> {
    transport
        .backend::<TlsTransport>()
        .ok_or_else(not_start_tls)?
        .start_tls_client(server_name, config)
}

/// Switches the [`StartTls`] connection behind `transport` (the inner
/// protocol's transport) to TLS as the server.
pub fn start_tls_server(transport: &Transport, config: Arc<ServerConfig>) -> Result<(), TlsError> {
    transport
        .backend::<TlsTransport>()
        .ok_or_else(not_start_tls)?
        .start_tls_server(config)
}
