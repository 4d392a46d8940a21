//! The sans-IO TLS state machine: one rustls connection and the life of a
//! TLS connection as enums, with no transport, no reactor and no shared
//! cells. [`TlsTransport`](super::TlsTransport) is the thin glue that feeds
//! it from a TCP transport and delivers its plaintext to a protocol.
//!
//! # What goes in, what comes out
//!
//! - [`TlsMachine::receive`]: ciphertext from the peer, in pieces of any
//!   size (one byte at a time works). It answers with a [`Received`]: whether
//!   the handshake finished during the call, and whether the connection
//!   failed. Everything else it produced waits in the machine:
//!   - ciphertext to send (handshake messages, alerts):
//!     [`TlsMachine::take_outgoing`];
//!   - plaintext for the application, then the peer's end of stream:
//!     [`TlsMachine::poll_read`].
//! - [`TlsMachine::receive_eof`]: the transport's end of stream, answered
//!   with an [`AtEof`] (a clean end after `close_notify`, an expected one
//!   after our close, a truncation, or a failed handshake).
//! - [`TlsMachine::write`]: plaintext to encrypt (held until the handshake
//!   is done), [`TlsMachine::close`]: send `close_notify`,
//!   [`TlsMachine::fail`]: give up for a reason found outside (a time-out, a
//!   lost connection).
//!
//! # States
//!
//! [`Phase`] is the connection's life: handshaking, established (with one
//! [`ReadState`] and one [`WriteState`], as async-io keeps one state per
//! direction and tokio-rustls's `TlsState` names the four combinations), or
//! failed (with its [`Failure`]). A failed connection has no direction
//! states to contradict it, and a handshaking one cannot have sent
//! `close_notify`.
//!
//! # Buffers
//!
//! - rustls buffers at most [`TLS_BUFFER_LIMIT`]
//!   of plaintext or records (`set_buffer_limit`); the machine drains it
//!   after every step, so the limit only bounds one step.
//! - Ciphertext to send and plaintext to deliver are kept in two working
//!   buffers that are handed out and given back
//!   ([`TlsMachine::restore_outgoing`], [`TlsMachine::restore_plaintext`]).
//!   A buffer given back empty keeps at most [`TLS_BUFFER_FLOOR`] bytes of
//!   capacity: after a burst has drained, the memory beyond the floor is
//!   returned to the allocator.
//! - Plaintext written before the handshake is done waits in a third buffer,
//!   released entirely once it has been encrypted.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

/// The limit set with rustls's `set_buffer_limit` on every connection: the
/// most plaintext or TLS records rustls buffers before refusing more. The
/// layer drains rustls after every write, so the limit only caps one
/// encryption step; what is not yet sent waits in the TCP transport's
/// buffer, where producers see it.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The capacity (in bytes) a drained working buffer of the TLS layer keeps:
/// enough for a typical small record or message without reallocating; the
/// memory beyond it is given back once a burst has drained. See
/// [`TlsTransport::buffer_capacity`](super::TlsTransport::buffer_capacity).
pub const TLS_BUFFER_FLOOR: usize = 4 * 1024;

/// Which side of the connection the machine is.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sends the ClientHello and verifies the server's certificate.
    Client,
    /// Answers a ClientHello with its certificate.
    Server,
}

/// A close asked for by the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseKind {
    /// Our write side only (`half_close`): the peer's stream should still
    /// end with its own `close_notify`.
    Half,
    /// The whole connection (`lose_connection`): after our `close_notify`,
    /// the peer's `close_notify` or a plain end of stream ends it.
    Full,
}

/// The connection's life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The handshake is under way.
    Handshaking,
    /// The handshake is done; each direction has its own state.
    Established {
        /// The peer's direction.
        read: ReadState,
        /// Ours.
        write: WriteState,
    },
    /// Given up (a TLS error, a truncated handshake, a time-out): nothing
    /// more is encrypted or decrypted.
    Failed(Failure),
}

/// The peer-to-us direction of an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// Records are decrypted into plaintext.
    Open,
    /// The peer's `close_notify` arrived; [`TlsMachine::poll_read`] reports
    /// the end of stream once the plaintext before it has been taken.
    CloseNotifyReceived,
    /// The end of stream after `close_notify` has been reported.
    Closed,
    /// The transport ended without `close_notify`: the stream may have been
    /// truncated.
    Truncated,
    /// The transport ended without `close_notify` after our full close:
    /// the expected answer to it, not a truncation.
    EndedAfterClose,
}

/// The us-to-peer direction of an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteState {
    /// Plaintext is encrypted and sent.
    Open,
    /// `close_notify` sent, for a close of this kind; writes are dropped.
    CloseNotifySent(CloseKind),
}

/// Why the machine gave up.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The `io::ErrorKind` the failure is reported with: `InvalidData` for
    /// TLS errors, `UnexpectedEof` for a peer that closed mid-handshake,
    /// `TimedOut` for a time-out.
    pub kind: io::ErrorKind,
    /// The reason, e.g. rustls's "invalid peer certificate: UnknownIssuer".
    pub reason: String,
    /// The rustls error, for failures rustls found (for tests and
    /// debugging; the glue reports `reason`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub tls_error: Option<rustls::Error>,
    /// Whether the handshake had not finished.
    pub during_handshake: bool,
}

/// What one [`TlsMachine::receive`] call changed, besides the buffers.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Received {
    /// The handshake finished during this call (the plaintext that came
    /// with it is delivered after it).
    pub handshake_done: bool,
    /// The connection failed during this call, after the plaintext already
    /// decrypted (which [`TlsMachine::poll_read`] still yields). The alert
    /// for the peer, if any, is in the outgoing buffer.
    pub failed: Option<Failure>,
}

/// What the transport's end of stream means.
#[derive(Debug)]
pub(crate) enum AtEof {
    /// The peer had ended its stream with `close_notify`; `reported` says
    /// whether [`TlsMachine::poll_read`] has given that end of stream yet.
    AfterCloseNotify {
        /// The end of stream was already returned by `poll_read`.
        reported: bool,
    },
    /// We had closed the whole connection: a plain end of stream is the
    /// expected answer.
    Expected,
    /// No `close_notify` after the handshake: the data may have been
    /// truncated (reported as `UnexpectedEof`).
    Truncated,
    /// The handshake had not finished: the machine failed with
    /// `UnexpectedEof`.
    Failed(Failure),
    /// The machine had already failed: nothing to do.
    Ignored,
}

/// The next thing for the application to read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadEvent {
    /// Plaintext, in order; give the buffer back with
    /// [`TlsMachine::restore_plaintext`] to reuse it.
    Data(Vec<u8>),
    /// The peer's `close_notify`, once, after all its plaintext.
    Eof,
}

/// What [`TlsMachine::close`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseStep {
    /// `close_notify` is in the outgoing buffer (or had been sent by an
    /// earlier half-close); `peer_closed` says whether the peer's
    /// `close_notify` had already arrived.
    Sent {
        /// The peer's `close_notify` had arrived.
        peer_closed: bool,
    },
    /// The handshake is under way: ask again once it is done.
    AfterHandshake,
    /// Nothing to do (already closed this way, or failed).
    Nothing,
}

/// One TLS connection, sans IO: ciphertext and plaintext in, ciphertext,
/// plaintext and events out. See the module documentation.
pub(crate) struct TlsMachine {
    conn: Connection,
    /// The name a client verifies the server's certificate against.
    server_name: Option<String>,
    phase: Phase,
    /// Plaintext written before the handshake finished.
    pending: Vec<u8>,
    /// Ciphertext to send.
    outgoing: Vec<u8>,
    /// Plaintext decrypted and not yet taken.
    plaintext: Vec<u8>,
}

impl TlsMachine {
    /// A client of `server_name` (already parsed; `label` is how it was
    /// written, kept for messages and queries).
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        label: &str,
    ) -> Result<TlsMachine, rustls::Error> {
        let conn = ClientConnection::new(config, name)?;
        Ok(TlsMachine::new(
            Connection::Client(conn),
            Some(label.to_string()),
        ))
    }

    /// A server.
    pub fn server(config: Arc<ServerConfig>) -> Result<TlsMachine, rustls::Error> {
        let conn = ServerConnection::new(config)?;
        Ok(TlsMachine::new(Connection::Server(conn), None))
    }

    fn new(mut conn: Connection, server_name: Option<String>) -> TlsMachine {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let mut machine = TlsMachine {
            conn,
            server_name,
            phase: Phase::Handshaking,
            pending: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
        };
        // A client's ClientHello.
        machine.drain_records();
        machine
    }

    // ----- queries ----------------------------------------------------------

    /// Client or server.
    #[cfg(test)]
    pub fn role(&self) -> Role {
        match self.conn {
            Connection::Client(_) => Role::Client,
            Connection::Server(_) => Role::Server,
        }
    }

    /// The connection's life.
    #[cfg(test)]
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The name a client verifies the server against; `None` on a server.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether the handshake finished (also when the connection failed
    /// after it).
    pub fn is_handshake_complete(&self) -> bool {
        match &self.phase {
            Phase::Handshaking => false,
            Phase::Established { .. } => true,
            Phase::Failed(f) => !f.during_handshake,
        }
    }

    /// The failure, once failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.phase {
            Phase::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// Whether the peer's `close_notify` has arrived.
    pub fn received_close_notify(&self) -> bool {
        matches!(
            self.phase,
            Phase::Established {
                read: ReadState::CloseNotifyReceived | ReadState::Closed,
                ..
            }
        )
    }

    /// Whether our `close_notify` has been sent.
    pub fn sent_close_notify(&self) -> bool {
        matches!(
            self.phase,
            Phase::Established {
                write: WriteState::CloseNotifySent(_),
                ..
            }
        )
    }

    /// Whether the transport ended without `close_notify` after the
    /// handshake (and not as the answer to our full close).
    pub fn is_truncated(&self) -> bool {
        matches!(
            self.phase,
            Phase::Established {
                read: ReadState::Truncated,
                ..
            }
        )
    }

    /// The ALPN protocol both sides agreed on.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The peer's certificate chain (leaf first), once known.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.conn
            .peer_certificates()
            .map(<[CertificateDer<'static>]>::to_vec)
    }

    /// The TLS version negotiated, once known.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The cipher suite negotiated, once known.
    pub fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// Plaintext written and not yet encrypted (waiting for the handshake).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether ciphertext is waiting in the outgoing buffer.
    #[cfg(test)]
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether [`poll_read`](Self::poll_read) has something to give.
    pub fn has_read_pending(&self) -> bool {
        !self.plaintext.is_empty()
            || matches!(
                self.phase,
                Phase::Established {
                    read: ReadState::CloseNotifyReceived,
                    ..
                }
            )
    }

    /// The capacity of the write-side buffers (plaintext waiting for the
    /// handshake, ciphertext to send): at most [`TLS_BUFFER_FLOOR`] once
    /// drained and given back.
    pub fn write_capacity(&self) -> usize {
        self.pending.capacity() + self.outgoing.capacity()
    }

    /// The capacity of the read-side buffer (plaintext to deliver): at
    /// most [`TLS_BUFFER_FLOOR`] once drained and given back.
    pub fn read_capacity(&self) -> usize {
        self.plaintext.capacity()
    }

    // ----- input ------------------------------------------------------------

    /// Feeds ciphertext from the peer (any amount, any split).
    pub fn receive(&mut self, mut data: &[u8]) -> Received {
        let mut received = Received::default();
        if matches!(self.phase, Phase::Failed(_)) {
            return received;
        }
        loop {
            if !data.is_empty() {
                match self.conn.read_tls(&mut data) {
                    // After close_notify nothing more is read: drop the rest.
                    Ok(0) => data = &[],
                    Ok(_) => {}
                    Err(e) => {
                        received.failed =
                            Some(self.fail_with(io::ErrorKind::InvalidData, e.to_string(), None));
                        break;
                    }
                }
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // rustls has queued the alert for the peer.
                    self.drain_records();
                    received.failed =
                        Some(self.fail_with(io::ErrorKind::InvalidData, e.to_string(), Some(e)));
                    break;
                }
            };
            self.take_rustls_plaintext(state.plaintext_bytes_to_read());
            if matches!(self.phase, Phase::Handshaking) && !self.conn.is_handshaking() {
                self.phase = Phase::Established {
                    read: ReadState::Open,
                    write: WriteState::Open,
                };
                received.handshake_done = true;
                // Plaintext written before the handshake goes first.
                self.drain_records();
                let pending = std::mem::take(&mut self.pending);
                self.encrypt(&pending);
            }
            if state.peer_has_closed() {
                match &mut self.phase {
                    Phase::Established { read, .. } => {
                        if *read == ReadState::Open {
                            *read = ReadState::CloseNotifyReceived;
                        }
                    }
                    Phase::Handshaking => {
                        self.drain_records();
                        received.failed = Some(self.fail_with(
                            io::ErrorKind::UnexpectedEof,
                            "the peer sent close_notify during the handshake".into(),
                            None,
                        ));
                        break;
                    }
                    Phase::Failed(_) => {}
                }
            }
            if data.is_empty() {
                break;
            }
        }
        self.drain_records();
        received
    }

    /// The transport's end of stream.
    pub fn receive_eof(&mut self) -> AtEof {
        match &mut self.phase {
            Phase::Failed(_) => AtEof::Ignored,
            Phase::Handshaking => AtEof::Failed(self.fail_with(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the handshake".into(),
                None,
            )),
            Phase::Established { read, write } => match (*read, *write) {
                (ReadState::CloseNotifyReceived, _) => AtEof::AfterCloseNotify { reported: false },
                (ReadState::Closed, _) => AtEof::AfterCloseNotify { reported: true },
                (ReadState::Truncated, _) => AtEof::Truncated,
                (ReadState::EndedAfterClose, _) => AtEof::Expected,
                (ReadState::Open, WriteState::CloseNotifySent(CloseKind::Full)) => {
                    *read = ReadState::EndedAfterClose;
                    AtEof::Expected
                }
                (ReadState::Open, _) => {
                    *read = ReadState::Truncated;
                    AtEof::Truncated
                }
            },
        }
    }

    /// Gives up for a reason found outside the machine (a time-out, a lost
    /// connection); `None` if it had already failed. Nothing more is sent.
    pub fn fail(&mut self, kind: io::ErrorKind, reason: String) -> Option<Failure> {
        if matches!(self.phase, Phase::Failed(_)) {
            return None;
        }
        Some(self.fail_with(kind, reason, None))
    }

    fn fail_with(
        &mut self,
        kind: io::ErrorKind,
        reason: String,
        tls_error: Option<rustls::Error>,
    ) -> Failure {
        let reason = match &tls_error {
            Some(e) => super::hint::with_hint(reason, e),
            None => reason,
        };
        let failure = Failure {
            kind,
            reason,
            tls_error,
            during_handshake: !self.is_handshake_complete(),
        };
        self.phase = Phase::Failed(failure.clone());
        self.pending = Vec::new();
        failure
    }

    // ----- output -----------------------------------------------------------

    /// The next plaintext or end of stream for the application, in order.
    pub fn poll_read(&mut self) -> Option<ReadEvent> {
        if !self.plaintext.is_empty() {
            return Some(ReadEvent::Data(std::mem::take(&mut self.plaintext)));
        }
        match &mut self.phase {
            Phase::Established { read, .. } if *read == ReadState::CloseNotifyReceived => {
                *read = ReadState::Closed;
                Some(ReadEvent::Eof)
            }
            _ => None,
        }
    }

    /// Gives a plaintext buffer from [`poll_read`](Self::poll_read) back for
    /// reuse (emptied, and cut down to [`TLS_BUFFER_FLOOR`]).
    pub fn restore_plaintext(&mut self, buf: Vec<u8>) {
        restore(&mut self.plaintext, buf);
    }

    /// The ciphertext to send, all of it (empty if none).
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Gives a buffer from [`take_outgoing`](Self::take_outgoing) back for
    /// reuse (emptied, and cut down to [`TLS_BUFFER_FLOOR`]).
    pub fn restore_outgoing(&mut self, buf: Vec<u8>) {
        restore(&mut self.outgoing, buf);
    }

    /// Encrypts `parts` (held until the handshake is done). Dropped after
    /// `close_notify` or a failure.
    pub fn write(&mut self, parts: &[&[u8]]) {
        match self.phase {
            Phase::Handshaking => {
                for part in parts {
                    self.pending.extend_from_slice(part);
                }
            }
            Phase::Established {
                write: WriteState::Open,
                ..
            } => self.encrypt_parts(parts),
            _ => {}
        }
    }

    /// Sends `close_notify` (after any plaintext held for the handshake).
    /// A full close after a half-close sends nothing more.
    pub fn close(&mut self, kind: CloseKind) -> CloseStep {
        let Phase::Established { read, write } = &mut self.phase else {
            return match self.phase {
                Phase::Handshaking => CloseStep::AfterHandshake,
                _ => CloseStep::Nothing,
            };
        };
        let peer_closed = matches!(*read, ReadState::CloseNotifyReceived | ReadState::Closed);
        match (*write, kind) {
            (WriteState::Open, _) => {
                *write = WriteState::CloseNotifySent(kind);
                self.conn.send_close_notify();
                self.drain_records();
                CloseStep::Sent { peer_closed }
            }
            (WriteState::CloseNotifySent(CloseKind::Half), CloseKind::Full) => {
                *write = WriteState::CloseNotifySent(CloseKind::Full);
                CloseStep::Sent { peer_closed }
            }
            (WriteState::CloseNotifySent(_), _) => CloseStep::Nothing,
        }
    }

    /// Frees every buffer (the connection is gone).
    pub fn discard_buffers(&mut self) {
        self.pending = Vec::new();
        self.outgoing = Vec::new();
        self.plaintext = Vec::new();
    }

    // ----- rustls plumbing --------------------------------------------------

    /// Encrypts all of `data` into the outgoing buffer, one step of at most
    /// [`TLS_BUFFER_LIMIT`] at a time.
    /// Encrypts `parts` as one write: a line and its `\n` make one record
    /// (up to the record size), not one record each.
    fn encrypt_parts(&mut self, parts: &[&[u8]]) {
        let (first, second) = match parts {
            [] => return,
            [one] => return self.encrypt(one),
            [first, second] => (*first, *second),
            _ => {
                let joined = parts.concat();
                return self.encrypt(&joined);
            }
        };
        let slices = [io::IoSlice::new(first), io::IoSlice::new(second)];
        let taken = self.conn.writer().write_vectored(&slices).unwrap_or(0);
        self.drain_records();
        // What rustls did not take (its buffer limit) goes the usual way.
        let (rest_of_first, rest_of_second) = if taken < first.len() {
            (&first[taken..], second)
        } else {
            (&[][..], &second[(taken - first.len()).min(second.len())..])
        };
        self.encrypt(rest_of_first);
        self.encrypt(rest_of_second);
    }

    fn encrypt(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.conn.writer().write(data) {
                Ok(0) | Err(_) => break,
                Ok(n) => data = &data[n..],
            }
            self.drain_records();
        }
        self.drain_records();
    }

    /// Moves every record rustls has queued into the outgoing buffer.
    fn drain_records(&mut self) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.outgoing) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Moves `available` bytes of plaintext out of rustls.
    fn take_rustls_plaintext(&mut self, available: usize) {
        if available == 0 {
            return;
        }
        let start = self.plaintext.len();
        self.plaintext.resize(start + available, 0);
        let mut filled = 0;
        while filled < available {
            match self
                .conn
                .reader()
                .read(&mut self.plaintext[start + filled..])
            {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        self.plaintext.truncate(start + filled);
    }
}

/// Puts `buf` back into `slot` (if the slot has not been refilled since),
/// emptied and with at most [`TLS_BUFFER_FLOOR`] of capacity.
pub(super) fn restore(slot: &mut Vec<u8>, mut buf: Vec<u8>) {
    buf.clear();
    buf.shrink_to(TLS_BUFFER_FLOOR);
    if slot.is_empty() && slot.capacity() < buf.capacity() {
        *slot = buf;
    } else if slot.is_empty() {
        slot.shrink_to(TLS_BUFFER_FLOOR);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
