//! The TLS layer's glue: [`TlsTransport`], the backend the inner protocol
//! writes to. The outer protocols that own it, [`TlsProtocol`] (TLS from the
//! first byte) and [`StartTls`] (plaintext first, TLS after a switch), are in
//! `protocol.rs`.
//!
//! [`TlsProtocol`]: super::TlsProtocol
//! [`StartTls`]: super::StartTls
//!
//! The TLS logic itself (the rustls connection, the handshake, each
//! direction's state, the buffers) is the sans-IO [`TlsMachine`] in
//! `machine.rs`. This file only connects it to the reactor: it feeds the
//! machine what the TCP transport delivers, writes the ciphertext the
//! machine returns to the TCP transport, delivers the machine's plaintext to
//! the inner protocol, and runs the timers (handshake time-out, the wait for
//! the peer's `close_notify`, the delivery of held data).
//!
//! One `TlsTransport` owns the machine, the inner protocol and the TCP
//! transport. The outer protocol ([`TlsProtocol`] or [`StartTls`]) is what
//! the reactor calls. The inner protocol's transport is the `TlsTransport`
//! itself. Its writes are gathered until the loop flushes the TCP
//! transport and encrypted then, as one record (as few as their size needs:
//! at most 16 KiB of plaintext waits, a record's worth), from the TCP
//! transport's write source ([`Transport::set_write_source`]); a TCP
//! backend without write sources gets each write encrypted at once. The
//! gathered bytes count in [`buffered_len`](Transport::buffered_len), a
//! close encrypts them before its `close_notify`, an abort drops them; flow
//! control is the TCP transport's.
//!
//! The transport's methods never call the inner protocol (the
//! [`TransportBackend`] contract); the inner protocol is called only from
//! the outer protocol's methods, and, for data held back while the inner
//! protocol paused reading, from a zero-delay timer when a reactor was given.
//! No borrow of the machine is held while the TCP transport or the inner
//! protocol is called.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use gyre_reactor::clock::{Clock, DelayedCall};
use gyre_reactor::defer::{Deferred, Failure as DeferredFailure, Resolver};
use gyre_reactor::{ConnectionLost, Producer, Protocol, Transport, TransportBackend};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::CertificateDer;

use super::config::{parse_server_name, TlsError, TlsErrorKind};
use super::machine::{AtEof, CloseKind, CloseStep, Failure, ReadEvent, TlsMachine};

/// How long `lose_connection` waits for the peer's `close_notify` (or its
/// EOF) before closing the TCP connection anyway, when the layer has a
/// reactor (see [`TlsTransport`]).
pub const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake time-out [`listen_tls`](super::listen_tls) gives each
/// connection: a client that has not finished the handshake by then is
/// dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The TCP connection underneath, as the glue sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not connected yet, or connected and running.
    Open,
    /// `abort_connection` was called; `connection_lost` is still to come.
    Aborted,
    /// `connection_lost` has run: nothing more happens.
    Lost,
}

/// Where the inner protocol is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InnerState {
    /// `connection_made` has not run (the handshake is under way).
    Waiting,
    /// `connection_made` has run.
    Connected,
}

/// Whether the inner protocol takes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Plaintext is delivered as it is decrypted.
    Flowing,
    /// `pause_reading`: plaintext is held in the machine until resumed.
    Paused,
}

/// The layer's timers (all need a reactor's clock).
#[derive(Default)]
struct Timers {
    clock: Option<Clock>,
    handshake_timeout: Option<Duration>,
    /// The handshake time-out, or the wait for the peer's `close_notify`.
    pending: Option<DelayedCall>,
    /// A zero-delay call that delivers held input is scheduled.
    wake_scheduled: bool,
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
///   plaintext arriving meanwhile is decrypted and dropped: reading stops
///   at `lose_connection`, as with TCP. Without
///   a reactor the TCP connection is closed as soon as it has flushed.
///   `half_close` sends `close_notify` and shuts the TCP write side;
///   `abort_connection` aborts the TCP connection.
///
/// [`connect_tls`]: super::connect_tls
/// [`listen_tls`]: super::listen_tls
/// [`start_tls_client`]: super::start_tls_client
/// [`start_tls_server`]: super::start_tls_server
/// [`TlsProtocol::with_reactor`]: super::TlsProtocol::with_reactor
/// - A peer's `close_notify` is the end of the stream: the protocol's
///   `eof_received` runs, and its answer is honoured (`false` closes, `true`
///   keeps our side open for writing). A TCP EOF without `close_notify` is
///   reported to `connection_lost` as [`ConnectionLost::Error`] of kind
///   `UnexpectedEof` (the stream may have been truncated); a TCP error (a
///   reset) is reported as that error.
/// - A TLS error after the handshake (a corrupt record, a fatal alert)
///   aborts the connection; `connection_lost` gets an `InvalidData` error
///   naming it.
/// - Flow control is the TCP transport's: `buffered_len` is the plaintext
///   waiting for the handshake plus the TCP transport's buffer, and
///   producers, write-buffer limits, `pause_reading` and `resume_reading`
///   pass through to the TCP transport. Plaintext already decrypted when the
///   protocol pauses is held and delivered on resume (from the loop, if the
///   layer was given a reactor; otherwise with the next bytes read).
/// - Memory: the layer's own buffers give back what they hold beyond
///   [`TLS_BUFFER_FLOOR`](super::TLS_BUFFER_FLOOR) once drained (see
///   [`buffer_capacity`](Self::buffer_capacity)).
pub struct TlsTransport {
    weak_self: Weak<TlsTransport>,
    tcp: RefCell<Option<Transport>>,
    /// The peer's address, noted at `connection_made` (for messages).
    peer_addr: Cell<Option<SocketAddr>>,
    /// `None`: plaintext pass-through (`StartTls` before the switch).
    machine: RefCell<Option<TlsMachine>>,
    inner: RefCell<Option<Box<dyn Protocol>>>,
    inner_state: Cell<InnerState>,
    link: Cell<Link>,
    reading: Cell<Reading>,
    /// The close the application asked for (carried out by the machine
    /// once the handshake is done).
    close_req: Cell<Option<CloseKind>>,
    /// TLS bytes handed back by the inner protocol at a `start_tls` switch.
    leftover: RefCell<Vec<u8>>,
    /// The reason the inner protocol was given.
    final_reason: RefCell<Option<ConnectionLost>>,
    timers: RefCell<Timers>,
    /// Who waits for the handshake (see [`handshake_done`](Self::handshake_done)).
    handshake_waiters: RefCell<Vec<Resolver<()>>>,
    /// Whether writes wait for the loop's flush (see [`Coalescing`]).
    coalescing: Cell<Coalescing>,
    /// Plaintext written since the last flush, encrypted as one record (or
    /// as few as its size needs) by the TCP transport's write source.
    unsent: RefCell<Vec<u8>>,
}

/// Whether the application's writes are gathered until the loop flushes
/// the connection (one TLS record per flush, not one per write: a server
/// that writes many short lines in one callback sends a fraction of the
/// records, each with its 22 bytes of framing and its AEAD set-up), or
/// encrypted as they come.
///
/// Gathering needs a TCP transport that runs a write source
/// ([`Transport::set_write_source`]); a backend that does not (a test's
/// fake transport) gets every write encrypted at once, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coalescing {
    /// Encrypt each write as it comes.
    Off,
    /// Gather writes; the write source encrypts them at the flush.
    UntilFlush,
}

/// Gathered plaintext is encrypted at once when it reaches this size (one
/// full TLS record), so a callback that writes a lot in one go neither
/// holds it all as plaintext nor waits for the flush to start.
const COALESCE_MAX: usize = 16 * 1024;

impl TlsTransport {
    pub(super) fn new_rc(
        machine: Option<TlsMachine>,
        inner: Box<dyn Protocol>,
    ) -> Rc<TlsTransport> {
        Rc::new_cyclic(|weak| TlsTransport {
            weak_self: weak.clone(),
            tcp: RefCell::new(None),
            peer_addr: Cell::new(None),
            machine: RefCell::new(machine),
            inner: RefCell::new(Some(inner)),
            inner_state: Cell::new(InnerState::Waiting),
            link: Cell::new(Link::Open),
            reading: Cell::new(Reading::Flowing),
            close_req: Cell::new(None),
            leftover: RefCell::new(Vec::new()),
            final_reason: RefCell::new(None),
            timers: RefCell::new(Timers::default()),
            handshake_waiters: RefCell::new(Vec::new()),
            coalescing: Cell::new(Coalescing::Off),
            unsent: RefCell::new(Vec::new()),
        })
    }

    // ----- public queries -------------------------------------------------

    /// Reads the machine (`None` in plaintext mode).
    fn with_machine<R>(&self, f: impl FnOnce(&TlsMachine) -> Option<R>) -> Option<R> {
        self.machine.borrow().as_ref().and_then(f)
    }

    /// The ALPN protocol both sides agreed on, once the handshake is done.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.with_machine(TlsMachine::alpn_protocol)
    }

    /// The peer's certificate chain (leaf first), once the handshake is
    /// done (and verified it); on a server, `None` unless its configuration
    /// asks for client certificates
    /// ([`mutual_tls_server_config`](super::mutual_tls_server_config)).
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.with_machine(TlsMachine::peer_certificates)
    }

    /// The DNS names (subjectAltName) of the peer's verified leaf
    /// certificate, exactly as written in it, once the handshake is done;
    /// `None` before, or without a peer certificate (see
    /// [`certificate_dns_names`](super::certificate_dns_names)). This is
    /// how a server using client certificates learns who the client is:
    /// the handshake proved the certificate chains to a trusted CA and that
    /// the peer holds its key, and the names say whom it was issued to.
    pub fn peer_dns_names(&self) -> Option<Vec<String>> {
        if !self.is_handshake_complete() {
            return None;
        }
        let certs = self.peer_certificates()?;
        let leaf = certs.first()?;
        super::config::certificate_dns_names(leaf).ok()
    }

    /// A Deferred that fires when the TLS handshake has finished (at once
    /// if it has), or fails with the reason if the handshake fails or the
    /// connection is lost first. With [`StartTls`](super::StartTls) this is
    /// how the inner protocol hears that the switch is complete and the
    /// peer verified ([`peer_dns_names`](Self::peer_dns_names) is then
    /// known); it fires from the loop, before any plaintext that arrived
    /// with the end of the handshake is delivered. Before a `start_tls`
    /// switch it waits for one.
    pub fn handshake_done(&self) -> Deferred<()> {
        if self.is_handshake_complete() {
            return gyre_reactor::defer::succeed(());
        }
        if let Some(error) = self.handshake_error() {
            return gyre_reactor::defer::fail(DeferredFailure::new(error));
        }
        if self.link.get() == Link::Lost {
            return gyre_reactor::defer::fail(DeferredFailure::new(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection closed before the TLS handshake finished",
            )));
        }
        let (resolver, deferred) = Deferred::new();
        self.handshake_waiters.borrow_mut().push(resolver);
        deferred
    }

    /// Fires every [`handshake_done`](Self::handshake_done) Deferred
    /// (no borrow held while their callbacks run).
    fn fire_handshake_waiters(&self, outcome: Result<(), io::Error>) {
        let waiters = std::mem::take(&mut *self.handshake_waiters.borrow_mut());
        for waiter in waiters {
            let _ = match &outcome {
                Ok(()) => waiter.callback(()),
                Err(e) => waiter.errback(DeferredFailure::new(io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))),
            };
        }
    }

    /// The TLS version negotiated, once known.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.with_machine(TlsMachine::protocol_version)
    }

    /// The cipher suite negotiated, once known.
    pub fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.with_machine(TlsMachine::cipher_suite)
    }

    /// The name a client verified the server's certificate against (and
    /// sent as SNI); `None` on a server.
    pub fn server_name(&self) -> Option<String> {
        self.with_machine(|m| m.server_name().map(str::to_string))
    }

    /// Whether TLS is on (always for [`TlsProtocol`](super::TlsProtocol);
    /// after the switch for [`StartTls`](super::StartTls)).
    pub fn is_tls(&self) -> bool {
        self.machine.borrow().is_some()
    }

    /// Whether the TLS handshake has finished.
    pub fn is_handshake_complete(&self) -> bool {
        self.with_machine(|m| Some(m.is_handshake_complete()))
            .unwrap_or(false)
    }

    /// Whether the peer's `close_notify` has arrived.
    pub fn received_close_notify(&self) -> bool {
        self.with_machine(|m| Some(m.received_close_notify()))
            .unwrap_or(false)
    }

    /// The TCP transport underneath (writing to it bypasses TLS).
    pub fn tcp_transport(&self) -> Option<Transport> {
        self.tcp.borrow().clone()
    }

    /// Why the handshake failed, if it did: the error a
    /// [`connect_tls`](super::connect_tls) factory is given. Its message
    /// names the peer and the rustls error.
    pub fn handshake_error(&self) -> Option<io::Error> {
        let failure = self.with_machine(|m| m.failure().cloned())?;
        failure
            .during_handshake
            .then(|| io::Error::new(failure.kind, self.describe(&failure)))
    }

    /// The reason given to the inner protocol's `connection_lost`, once it
    /// was called.
    pub fn lost_reason(&self) -> Option<ConnectionLost> {
        self.final_reason.borrow().clone()
    }

    /// The capacity, in bytes, of the layer's own write buffers (plaintext
    /// waiting for the handshake, ciphertext on its way to the TCP
    /// transport); the TCP transport's buffer and rustls's internal buffers
    /// (which rustls trims itself) are not counted. Once a burst has
    /// drained it is at most [`TLS_BUFFER_FLOOR`](super::TLS_BUFFER_FLOOR).
    /// For diagnostics and tests.
    pub fn buffer_capacity(&self) -> usize {
        self.with_machine(|m| Some(m.write_capacity())).unwrap_or(0)
    }

    /// The capacity, in bytes, of the layer's read buffer (plaintext
    /// decrypted and not yet delivered); at most
    /// [`TLS_BUFFER_FLOOR`](super::TLS_BUFFER_FLOOR) once delivered. For
    /// diagnostics and tests.
    pub fn read_buffer_capacity(&self) -> usize {
        self.leftover.borrow().capacity()
            + self.with_machine(|m| Some(m.read_capacity())).unwrap_or(0)
    }

    // ----- start_tls --------------------------------------------------------

    /// Switches a [`StartTls`](super::StartTls) connection to TLS as the client: everything
    /// written from now on is encrypted (held until the handshake is done),
    /// and every byte read from now on goes to TLS. The ClientHello is
    /// sent at once. See [`StartTls`](super::StartTls) for the flow.
    pub fn start_tls_client(
        &self,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<(), TlsError> {
        self.check_can_start()?;
        self.install(client_machine(server_name, config)?);
        Ok(())
    }

    /// Switches a [`StartTls`](super::StartTls) connection to TLS as the server; as
    /// [`start_tls_client`](Self::start_tls_client).
    pub fn start_tls_server(&self, config: Arc<ServerConfig>) -> Result<(), TlsError> {
        self.check_can_start()?;
        self.install(server_machine(config)?);
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
        if self.is_tls() {
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

    fn install(&self, machine: TlsMachine) {
        *self.machine.borrow_mut() = Some(machine);
        self.start_handshake_timer();
        self.flush();
        if !self.leftover.borrow().is_empty() {
            self.schedule_wake();
        }
    }

    // ----- internals --------------------------------------------------------

    fn tcp(&self) -> Option<Transport> {
        self.tcp.borrow().clone()
    }

    /// "name (address)" of the peer, for messages.
    fn peer_label(&self) -> String {
        let name = self.server_name();
        match (name, self.peer_addr.get()) {
            (Some(name), Some(addr)) => format!("{name} ({addr})"),
            (Some(name), None) => name,
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "the peer".to_string(),
        }
    }

    /// A failure's message, naming the peer.
    fn describe(&self, failure: &Failure) -> String {
        if failure.during_handshake {
            format!(
                "TLS handshake with {} failed: {}",
                self.peer_label(),
                failure.reason
            )
        } else {
            format!(
                "TLS error on the connection with {}: {}",
                self.peer_label(),
                failure.reason
            )
        }
    }

    fn failed(&self) -> bool {
        self.with_machine(|m| Some(m.failure().is_some()))
            .unwrap_or(false)
    }

    /// Lost, aborted, or failed: nothing more happens on this connection.
    fn finished(&self) -> bool {
        self.link.get() != Link::Open || self.failed()
    }

    fn write_closed(&self) -> bool {
        self.finished() || self.close_req.get().is_some()
    }

    fn inner_connected(&self) -> bool {
        self.inner_state.get() == InnerState::Connected
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

    /// Runs the inner protocol's `connection_made` with this transport.
    fn connect_inner(&self) {
        self.inner_state.set(InnerState::Connected);
        if let Some(me) = self.weak_self.upgrade() {
            let transport = Transport::new(me);
            self.call_inner(|p| p.connection_made(transport));
        }
    }

    /// Encrypts and writes `parts` (plaintext mode: writes them as they are).
    fn send(&self, parts: &[&[u8]]) {
        if self.write_closed() {
            return;
        }
        let Some(tcp) = self.tcp() else {
            return;
        };
        if self.machine.borrow().is_none() {
            tcp.write_sequence(parts);
            return;
        }
        if self.coalescing.get() == Coalescing::UntilFlush {
            let (was_empty, full) = {
                let mut unsent = self.unsent.borrow_mut();
                let was_empty = unsent.is_empty();
                for part in parts {
                    unsent.extend_from_slice(part);
                }
                (was_empty, unsent.len() >= COALESCE_MAX)
            };
            if full {
                self.write_unsent();
            } else if was_empty {
                tcp.request_flush();
            }
            return;
        }
        if let Some(m) = self.machine.borrow_mut().as_mut() {
            m.write(parts);
        }
        self.flush();
    }

    /// Encrypts the gathered plaintext and hands the records to the TCP
    /// transport (the write source's job; also before a close, so that
    /// `close_notify` follows the data).
    fn write_unsent(&self) {
        let unsent = std::mem::take(&mut *self.unsent.borrow_mut());
        if unsent.is_empty() {
            return;
        }
        if let Some(m) = self.machine.borrow_mut().as_mut() {
            m.write(&[&unsent]);
        }
        self.flush();
        // Kept for the next flush, within the buffers' floor.
        super::machine::restore(&mut self.unsent.borrow_mut(), unsent);
    }

    /// Writes the ciphertext the machine has ready to the TCP transport.
    fn flush(&self) {
        let Some(tcp) = self.tcp() else {
            return;
        };
        let Some(out) = self
            .machine
            .borrow_mut()
            .as_mut()
            .map(TlsMachine::take_outgoing)
        else {
            return;
        };
        if !out.is_empty() {
            tcp.write(&out);
        }
        if let Some(m) = self.machine.borrow_mut().as_mut() {
            m.restore_outgoing(out);
        }
    }

    /// Bytes from the TCP transport.
    pub(super) fn on_data_received(&self, data: &[u8]) {
        if self.finished() {
            return;
        }
        if !self.is_tls() {
            // Plaintext: the inner protocol may switch to TLS during this call.
            if self.inner_connected() && self.close_req.get() != Some(CloseKind::Full) {
                self.call_inner(|p| p.data_received(data));
            }
            if self.is_tls() && !self.finished() {
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

    /// Feeds TLS bytes to the machine, sends its answer, delivers plaintext.
    fn receive_tls(&self, data: &[u8]) {
        let Some(received) = self.machine.borrow_mut().as_mut().map(|m| m.receive(data)) else {
            return;
        };
        // Handshake messages, and the alert of a failure.
        self.flush();
        if received.handshake_done {
            self.on_handshake_done();
        }
        self.deliver_ready();
        if let Some(failure) = received.failed {
            self.on_failure(&failure, true);
        }
    }

    fn on_handshake_done(&self) {
        self.cancel_timer();
        log::debug!(
            "TLS handshake with {} done: {:?}, {:?}, ALPN {:?}",
            self.peer_label(),
            self.protocol_version(),
            self.cipher_suite().map(|s| s.suite()),
            self.alpn_protocol()
                .map(|p| String::from_utf8_lossy(&p).into_owned()),
        );
        if !self.inner_connected() {
            self.connect_inner();
        }
        self.fire_handshake_waiters(Ok(()));
        if self.close_req.get().is_some() {
            self.do_close();
        }
    }

    /// Delivers held plaintext, then a held end of stream, unless paused.
    fn deliver_ready(&self) {
        loop {
            if !self.inner_connected() || self.link.get() != Link::Open {
                return;
            }
            if self.reading.get() == Reading::Paused || self.inner_busy() {
                return;
            }
            let event = self
                .machine
                .borrow_mut()
                .as_mut()
                .and_then(|m| m.poll_read());
            match event {
                Some(ReadEvent::Data(data)) => {
                    // Reading stops at lose_connection (as over TCP): what
                    // the peer sends while we close is decrypted (rustls
                    // must see its close_notify) and dropped.
                    if self.close_req.get() != Some(CloseKind::Full) {
                        self.call_inner(|p| p.data_received(&data));
                    }
                    if let Some(m) = self.machine.borrow_mut().as_mut() {
                        m.restore_plaintext(data);
                    }
                }
                Some(ReadEvent::Eof) => {
                    self.deliver_eof();
                    return;
                }
                None => return,
            }
        }
    }

    /// The peer's `close_notify`: the inner protocol's `eof_received`, and
    /// its answer.
    fn deliver_eof(&self) {
        let keep_open = if self.close_req.get() == Some(CloseKind::Full) {
            false
        } else {
            self.call_inner(|p| p.eof_received()).unwrap_or(false)
        };
        if self.finished() {
            return;
        }
        if self.with_machine(|m| Some(m.sent_close_notify())) == Some(true) {
            // We had already sent close_notify: both directions are done.
            if let Some(tcp) = self.tcp() {
                tcp.lose_connection();
            }
        } else if !keep_open {
            self.request_close(CloseKind::Full);
        }
    }

    /// The TCP connection's EOF; returns whether to keep its write side open.
    pub(super) fn on_eof_received(&self) -> bool {
        if self.finished() {
            return false;
        }
        let Some(at_eof) = self.machine.borrow_mut().as_mut().map(|m| m.receive_eof()) else {
            // Plaintext mode.
            if !self.inner_connected() {
                return false;
            }
            return self.call_inner(|p| p.eof_received()).unwrap_or(false);
        };
        match at_eof {
            // The end of stream is held (reading paused): keep the
            // connection until it has been delivered.
            AtEof::AfterCloseNotify { reported: false } => true,
            // The inner protocol's answer to it: still open unless it closed.
            AtEof::AfterCloseNotify { reported: true } => self.close_req.get().is_none(),
            // We closed first and were waiting for the peer: its EOF will do.
            AtEof::Expected | AtEof::Ignored => false,
            AtEof::Truncated => {
                log::debug!("{}", self.truncation_message());
                false
            }
            AtEof::Failed(failure) => {
                self.on_failure(&failure, false);
                false
            }
        }
    }

    fn truncation_message(&self) -> String {
        format!(
            "TLS connection with {} closed without close_notify (the data may have been truncated)",
            self.peer_label()
        )
    }

    pub(super) fn on_connection_made(&self, tcp: Transport) {
        self.peer_addr.set(tcp.peer_addr());
        let weak = self.weak_self.clone();
        let source = Rc::new(move || {
            if let Some(me) = weak.upgrade() {
                me.write_unsent();
            }
        });
        if tcp.set_write_source(Some(source)) {
            self.coalescing.set(Coalescing::UntilFlush);
        }
        *self.tcp.borrow_mut() = Some(tcp);
        if self.is_tls() {
            self.start_handshake_timer();
            // A client's ClientHello.
            self.flush();
        } else {
            self.connect_inner();
        }
    }

    pub(super) fn on_connection_lost(&self, reason: ConnectionLost) {
        if self.link.replace(Link::Lost) == Link::Lost {
            return;
        }
        self.cancel_timer();
        let handshake_failure = {
            let mut machine = self.machine.borrow_mut();
            machine
                .as_mut()
                .filter(|m| !m.is_handshake_complete())
                .and_then(|m| {
                    let kind = match &reason {
                        ConnectionLost::Error(e) => e.kind(),
                        ConnectionLost::Aborted => io::ErrorKind::ConnectionAborted,
                        ConnectionLost::Shutdown => io::ErrorKind::Interrupted,
                        ConnectionLost::Panicked(_) => io::ErrorKind::Other,
                        ConnectionLost::Done => io::ErrorKind::UnexpectedEof,
                    };
                    m.fail(kind, reason.to_string())
                })
        };
        if let Some(failure) = &handshake_failure {
            log::debug!("{}", self.describe(failure));
        }
        // Our own diagnosis, unless a shutdown or a panic says more.
        let ours = if self.inner_connected() {
            let failure = self.with_machine(|m| m.failure().cloned());
            match failure {
                Some(f) => Some(io::Error::new(f.kind, self.describe(&f))),
                // A clean TCP close without close_notify: truncation. (A
                // TCP error, such as a reset, is more specific and wins.)
                None if matches!(reason, ConnectionLost::Done)
                    && self.with_machine(|m| Some(m.is_truncated())) == Some(true) =>
                {
                    Some(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        self.truncation_message(),
                    ))
                }
                None => None,
            }
        } else {
            None
        };
        let reason = match (ours, reason) {
            (_, r @ (ConnectionLost::Shutdown | ConnectionLost::Panicked(_))) => r,
            (Some(error), _) => ConnectionLost::Error(error),
            (None, r) => r,
        };
        *self.final_reason.borrow_mut() = Some(reason.clone());
        if !self.handshake_waiters.borrow().is_empty() {
            let error = self.handshake_error().unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("the connection closed before the TLS handshake finished: {reason}"),
                )
            });
            self.fire_handshake_waiters(Err(error));
        }
        if let Some(m) = self.machine.borrow_mut().as_mut() {
            m.discard_buffers();
        }
        *self.leftover.borrow_mut() = Vec::new();
        let inner = self.inner.try_borrow_mut().ok().and_then(|mut g| g.take());
        if let Some(mut inner) = inner {
            if self.inner_connected() {
                inner.connection_lost(reason);
            }
        }
    }

    /// The machine gave up: logs, and closes the TCP connection (after the
    /// TLS alert, during a handshake) or aborts it. The failure reaches the
    /// inner protocol and the factory from `connection_lost`.
    fn on_failure(&self, failure: &Failure, send_alert: bool) {
        if self.link.get() == Link::Lost {
            return;
        }
        log::warn!("{}", self.describe(failure));
        self.cancel_timer();
        if let Some(tcp) = self.tcp() {
            if send_alert && failure.during_handshake {
                self.flush();
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
        // What was written before the close goes before close_notify.
        self.write_unsent();
        self.close_req.set(Some(kind));
        self.do_close();
    }

    /// Carries out the close asked for (with TLS, once the handshake is done).
    fn do_close(&self) {
        let Some(kind) = self.close_req.get() else {
            return;
        };
        let Some(tcp) = self.tcp() else {
            return;
        };
        let Some(step) = self.machine.borrow_mut().as_mut().map(|m| m.close(kind)) else {
            // Plaintext mode.
            match kind {
                CloseKind::Full => tcp.lose_connection(),
                CloseKind::Half => tcp.half_close(),
            }
            return;
        };
        let CloseStep::Sent { peer_closed } = step else {
            // Nothing to do, or again once the handshake is done.
            return;
        };
        self.flush();
        let has_clock = self.timers.borrow().clock.is_some();
        match kind {
            CloseKind::Full if !peer_closed && has_clock => {
                // Wait (reading) for the peer's close_notify or EOF, so that
                // records it sends meanwhile (session tickets, say) are read
                // and the TCP close is a FIN, not a reset.
                tcp.half_close();
                self.start_close_timer();
            }
            CloseKind::Full => tcp.lose_connection(),
            CloseKind::Half if peer_closed => tcp.lose_connection(),
            CloseKind::Half => tcp.half_close(),
        }
    }

    // ----- timers -----------------------------------------------------------

    fn set_timer(&self, after: Duration, f: impl FnOnce(&TlsTransport) + 'static) {
        let Some(clock) = self.timers.borrow().clock.clone() else {
            return;
        };
        let weak = self.weak_self.clone();
        let call = clock.call_later(after, move || {
            if let Some(me) = weak.upgrade() {
                f(&me);
            }
        });
        let old = self.timers.borrow_mut().pending.replace(call);
        if let Some(old) = old {
            let _ = old.cancel();
        }
    }

    fn cancel_timer(&self) {
        let timer = self.timers.borrow_mut().pending.take();
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
    }

    fn start_close_timer(&self) {
        self.set_timer(CLOSE_NOTIFY_TIMEOUT, |me| {
            if me.link.get() != Link::Lost {
                log::debug!(
                    "TLS: no close_notify from {} within {CLOSE_NOTIFY_TIMEOUT:?}; closing",
                    me.peer_label()
                );
                if let Some(tcp) = me.tcp() {
                    tcp.lose_connection();
                }
            }
        });
    }

    fn start_handshake_timer(&self) {
        let Some(timeout) = self.timers.borrow().handshake_timeout else {
            return;
        };
        self.set_timer(timeout, move |me| {
            if me.link.get() == Link::Lost || me.is_handshake_complete() {
                return;
            }
            let failure = me.machine.borrow_mut().as_mut().and_then(|m| {
                m.fail(
                    io::ErrorKind::TimedOut,
                    format!("no handshake within {timeout:?}"),
                )
            });
            if let Some(failure) = failure {
                me.on_failure(&failure, false);
            }
        });
    }

    /// Delivers held data from the loop (needs a reactor's clock).
    fn schedule_wake(&self) {
        let clock = {
            let mut timers = self.timers.borrow_mut();
            if timers.wake_scheduled {
                return;
            }
            let Some(clock) = timers.clock.clone() else {
                return;
            };
            timers.wake_scheduled = true;
            clock
        };
        let weak = self.weak_self.clone();
        clock.call_later(Duration::ZERO, move || {
            if let Some(me) = weak.upgrade() {
                me.timers.borrow_mut().wake_scheduled = false;
                me.wake();
            }
        });
    }

    fn wake(&self) {
        if self.finished() || self.inner_busy() {
            return;
        }
        if self.is_tls() && !self.leftover.borrow().is_empty() {
            let leftover = std::mem::take(&mut *self.leftover.borrow_mut());
            self.receive_tls(&leftover);
        } else {
            self.deliver_ready();
        }
    }

    fn has_held_input(&self) -> bool {
        !self.leftover.borrow().is_empty()
            || self
                .with_machine(|m| Some(m.has_read_pending()))
                .unwrap_or(false)
    }

    /// Drops the inner protocol, breaking the inner protocol <-> transport
    /// cycle when the outer protocol goes (not if it is running).
    pub(super) fn release_inner(&self) {
        let inner = self.inner.try_borrow_mut().ok().and_then(|mut g| g.take());
        drop(inner);
    }

    pub(super) fn set_clock(&self, clock: Clock) {
        self.timers.borrow_mut().clock = Some(clock);
    }

    pub(super) fn set_handshake_timeout(&self, timeout: Duration) {
        self.timers.borrow_mut().handshake_timeout = Some(timeout);
    }
}

/// A client machine for `server_name`, or the configuration error.
pub(super) fn client_machine(
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsMachine, TlsError> {
    let name = parse_server_name(server_name)?;
    TlsMachine::client(config, name, server_name).map_err(|e| {
        TlsError::with_source(
            TlsErrorKind::Config,
            format!("cannot start a TLS client: {e}"),
            e,
        )
    })
}

/// A server machine, or the configuration error.
pub(super) fn server_machine(config: Arc<ServerConfig>) -> Result<TlsMachine, TlsError> {
    TlsMachine::server(config).map_err(|e| {
        TlsError::with_source(
            TlsErrorKind::Config,
            format!("cannot start a TLS server: {e}"),
            e,
        )
    })
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
        if self.link.get() != Link::Open {
            return;
        }
        self.link.set(Link::Aborted);
        self.unsent.borrow_mut().clear();
        if let Some(m) = self.machine.borrow_mut().as_mut() {
            m.discard_buffers();
        }
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

    fn peer_address(&self) -> Option<gyre_reactor::Address> {
        self.tcp().and_then(|t| t.peer_address())
    }

    fn local_address(&self) -> Option<gyre_reactor::Address> {
        self.tcp().and_then(|t| t.local_address())
    }

    fn peer_credentials(&self) -> io::Result<gyre_reactor::PeerCredentials> {
        match self.tcp() {
            Some(inner) => inner.peer_credentials(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection has no transport yet",
            )),
        }
    }

    fn pause_reading(&self) {
        self.reading.set(Reading::Paused);
        if let Some(tcp) = self.tcp() {
            tcp.pause_reading();
        }
    }

    fn resume_reading(&self) {
        let was_paused = self.reading.replace(Reading::Flowing) == Reading::Paused;
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
        self.unsent.borrow().len()
            + self.with_machine(|m| Some(m.pending_len())).unwrap_or(0)
            + self.tcp().map_or(0, |t| t.buffered_len())
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
