//! Stream connections, TCP and Unix-domain: the [`Conn`] behind a
//! [`Transport`], with its bounded write buffer, flow control, half-close,
//! lingering close and close bookkeeping. One implementation serves both
//! kinds of socket: it holds a [`Stream`], and the few places where the
//! kinds differ (`TCP_NODELAY`, how an abort is signalled, peer
//! credentials) are in that enum.
//!
//! # Contract
//!
//! These rules hold for every TCP and Unix-domain connection; the
//! [`Transport`] docs state them for protocol authors, and the conformance
//! suite checks them for every transport.
//!
//! - **Any readiness event may carry read data, EOF or an error, a connect
//!   completion included.** mio is edge-triggered: an edge that is not
//!   acted on is never announced again. So every event for a connection
//!   reads (until `WouldBlock`, the per-event budget, or a short read that
//!   proves the queue drained), and the event that completes a connect
//!   also reads at once, in the same dispatch, so a server that speaks
//!   first (or closes at once) is heard.
//! - **A read burst stops at the high-water mark.** Between two reads of one
//!   burst the reactor flushes the connections written to (its dirty list),
//!   which pauses their producers; a proxy whose reading side is the
//!   producer of its writing side therefore stops reading as soon as the
//!   writing side's buffer passes the mark. A write buffer never holds more
//!   than the high-water mark plus one read (64 KiB).
//! - **A drained buffer gives back memory beyond a small floor.** When the
//!   write buffer empties, its capacity is cut to
//!   [`WRITE_BUFFER_FLOOR`](crate::WRITE_BUFFER_FLOOR) (16 KiB), so idle
//!   connections that once carried megabytes hold almost nothing.
//! - **Reading stops at `lose_connection`.** Data that arrives after
//!   `lose_connection` (or after an `abort_connection`) is never delivered
//!   to the protocol (as in Twisted).
//! - **A close with unread input lingers; it never resets answers away.**
//!   Closing a socket that still has unread input makes Linux send RST and
//!   purge its send queue, losing answers written before the close (a Unix
//!   socket's peer gets `ECONNRESET` in place of its EOF). So
//!   `lose_connection` flushes, shuts the write side (FIN), then reads and
//!   discards input until the peer's EOF or the linger time-out
//!   ([`ReactorBuilder::linger_timeout`](crate::ReactorBuilder::linger_timeout),
//!   default 5 s, logged at debug level when hit), and only then closes the
//!   socket. `connection_lost` is delivered when the socket really closes,
//!   which is after the peer's EOF (or the time-out).
//! - **A reset after EOF is noticed.** After the peer's FIN the connection
//!   may stay open for a half-close; an error or reset reported later
//!   closes it with that error.
//!
//! # Structure
//!
//! A connection's life is two small state enums, one per direction
//! ([`ReadState`] and [`WriteState`], in the manner of async-io's `Source`
//! and tokio-rustls's `TlsState`), so an illegal combination (say, "paused"
//! and "closed" at once) cannot be written down.
//!
//! A `Conn` never calls into its protocol from a [`TransportBackend`] method.
//! Writes go to the buffer and mark the connection dirty; the reactor flushes
//! dirty connections after each phase of its loop (and between the reads of
//! a burst). Closing removes the socket and queues `connection_lost` for the
//! reactor to deliver after the current callback has returned.
//!
//! A layer above may register a write source
//! ([`Transport::set_write_source`]): every flush runs it first, while the
//! connection is still marked queued (so what it writes joins this flush
//! rather than queueing another), and `lose_connection`/`half_close` run it
//! before they change the write state. TLS uses it to encrypt one record
//! per flush instead of one per write.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};

use crate::address::{Address, UnixAddr};
use crate::clock::DelayedCall;
use crate::core::{guard, Inner, Readiness};
use crate::protocol::{ConnectionLost, Producer, Protocol};
use crate::stream::Stream;
use crate::transport::{
    Transport, TransportBackend, WriteSource, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
    WRITE_BUFFER_FLOOR,
};
use crate::unix::PeerCredentials;

/// How many reads one readiness event may do before the connection yields
/// to others (it is read again on the next iteration).
const READS_PER_EVENT: usize = 16;

/// Called once after `connection_lost`, for connectors and the like.
pub(crate) type LostHook = Box<dyn FnOnce(&ConnectionLost)>;

/// The read direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Reading, and delivering data to the protocol.
    Open,
    /// `pause_reading`: the socket is not read until `resume_reading`
    /// (only an error is still looked at).
    Paused,
    /// The peer's FIN was read. Nothing more can arrive but an error (a
    /// reset), which closes the connection.
    Eof,
    /// `lose_connection` was asked: input is read and thrown away, never
    /// delivered, so that the final close finds no unread input (and does
    /// not reset). Together with [`WriteState::HalfClosed`] this is the
    /// lingering close, bounded by the linger timer.
    Discarding,
    /// The socket is closed.
    Closed,
}

/// The write direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    /// Writes are buffered and flushed.
    Open,
    /// `lose_connection`: later writes are dropped; once the buffer is
    /// flushed the write side is shut and the connection lingers.
    Closing,
    /// `half_close`: later writes are dropped; once the buffer is flushed
    /// the write side is shut, and reading goes on.
    HalfClosing,
    /// Our FIN was sent.
    HalfClosed,
    /// The socket is closed.
    Closed,
}

/// Whether the kernel's send queue had room at the last write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendQueue {
    /// Writing may go on.
    Room,
    /// The kernel said `WouldBlock`: wait for a writable event.
    Full,
}

/// The registered producer, and whether we paused it.
enum ProducerState {
    None,
    Producing(Rc<dyn Producer>),
    Paused(Rc<dyn Producer>),
}

/// One stream connection (TCP or Unix-domain).
pub(crate) struct Conn {
    reactor: Weak<Inner>,
    pub(crate) token: Cell<usize>,
    stream: RefCell<Option<Stream>>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    wbuf: RefCell<WriteBuffer>,
    high_water: Cell<usize>,
    low_water: Cell<usize>,
    producer: RefCell<ProducerState>,
    peer: Address,
    local: Option<Address>,
    read: Cell<ReadState>,
    write: Cell<WriteState>,
    send_queue: Cell<SendQueue>,
    /// The linger time-out, while lingering.
    linger: RefCell<Option<DelayedCall>>,
    /// Already in the reactor's dirty list.
    queued_flush: Cell<bool>,
    /// Called at the start of every flush (a TLS layer's records).
    write_source: RefCell<Option<WriteSource>>,
    /// Already in the reactor's read-again list.
    queued_read: Cell<bool>,
    lost_reason: RefCell<Option<ConnectionLost>>,
    lost_hook: RefCell<Option<LostHook>>,
}

/// A write buffer that consumes from the front without moving bytes on
/// every write: `head` advances, and the vector is compacted when the
/// consumed part is large. Drained, it keeps at most
/// [`WRITE_BUFFER_FLOOR`] bytes of capacity.
#[derive(Default)]
struct WriteBuffer {
    data: Vec<u8>,
    head: usize,
}

impl WriteBuffer {
    fn len(&self) -> usize {
        self.data.len() - self.head
    }
    fn capacity(&self) -> usize {
        self.data.capacity()
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.head..]
    }
    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head >= self.data.len() {
            self.data.clear();
            self.head = 0;
            // Give back what a burst grew, keeping a floor so that small
            // messages never allocate.
            if self.data.capacity() > WRITE_BUFFER_FLOOR {
                self.data.shrink_to(WRITE_BUFFER_FLOOR);
            }
        } else if self.head > 64 * 1024 && self.head * 2 > self.data.len() {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }
    fn clear(&mut self) {
        self.data = Vec::new();
        self.head = 0;
    }
}

impl Conn {
    pub(crate) fn new(reactor: Weak<Inner>, stream: Stream, peer: Address) -> Conn {
        let local = stream.local_address().ok();
        Conn {
            reactor,
            token: Cell::new(usize::MAX),
            stream: RefCell::new(Some(stream)),
            protocol: RefCell::new(None),
            wbuf: RefCell::new(WriteBuffer::default()),
            high_water: Cell::new(DEFAULT_HIGH_WATER),
            low_water: Cell::new(DEFAULT_LOW_WATER),
            producer: RefCell::new(ProducerState::None),
            peer,
            local,
            read: Cell::new(ReadState::Open),
            write: Cell::new(WriteState::Open),
            send_queue: Cell::new(SendQueue::Room),
            linger: RefCell::new(None),
            queued_flush: Cell::new(false),
            write_source: RefCell::new(None),
            queued_read: Cell::new(false),
            lost_reason: RefCell::new(None),
            lost_hook: RefCell::new(None),
        }
    }

    /// How logs name the connection: the peer, or for a Unix peer with no
    /// address (the usual client), our own address.
    fn name(&self) -> ConnName<'_> {
        ConnName {
            peer: &self.peer,
            local: self.local.as_ref(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.write.get() == WriteState::Closed
    }

    pub(crate) fn set_lost_hook(&self, hook: LostHook) {
        *self.lost_hook.borrow_mut() = Some(hook);
    }

    /// Registers with mio (both directions, edge-triggered, once).
    pub(crate) fn register(&self, registry: &mio::Registry, token: usize) -> io::Result<()> {
        self.token.set(token);
        match self.stream.borrow_mut().as_mut() {
            Some(stream) => registry.register(
                stream,
                mio::Token(token),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            ),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed")),
        }
    }

    /// Hands the connection its protocol and calls `connection_made`.
    pub(crate) fn start(self: &Rc<Self>, protocol: Box<dyn Protocol>) {
        if let Some(stream) = self.stream.borrow().as_ref() {
            // TCP_NODELAY is on by default: a reactor writes whole messages.
            // (A Unix socket has no Nagle algorithm: nothing to do.)
            let _ = stream.set_nodelay(true);
        }
        *self.protocol.borrow_mut() = Some(protocol);
        let transport = self.transport();
        self.call_protocol("connection_made", move |p| p.connection_made(transport));
    }

    pub(crate) fn transport(self: &Rc<Self>) -> Transport {
        Transport::new(Rc::clone(self) as Rc<dyn TransportBackend>)
    }

    /// Runs a protocol method under the loop's panic guard (a panic aborts
    /// this connection only).
    fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) {
        let outcome = {
            let Ok(mut slot) = self.protocol.try_borrow_mut() else {
                // Cannot happen: the protocol is only borrowed here, and no
                // protocol method is called from inside another.
                log::error!("protocol for {} is busy; {what} not delivered", self.name());
                return;
            };
            let Some(protocol) = slot.as_mut() else {
                return;
            };
            guard(format_args!("{what} for {}", self.name()), || {
                f(&mut **protocol)
            })
        };
        if let Err(message) = outcome {
            log::error!("aborting the connection to {} after the panic", self.name());
            self.close_now(ConnectionLost::Panicked(message));
        }
    }

    /// One readiness event for this connection: flush if writable, read if
    /// readable, and look for an error the read side would not see (a reset
    /// after EOF, or while reading is paused).
    pub(crate) fn handle_event(self: &Rc<Self>, event: &Readiness, buf: &mut [u8]) {
        if event.writable || event.write_closed || event.error {
            self.handle_writable();
        }
        match self.read.get() {
            ReadState::Open | ReadState::Discarding => {
                if event.readable || event.read_closed || event.error {
                    self.handle_readable(buf, event.read_closed || event.error);
                }
            }
            ReadState::Eof if event.error || event.write_closed => self.check_error(),
            ReadState::Paused if event.error => self.check_error(),
            ReadState::Eof | ReadState::Paused | ReadState::Closed => {}
        }
    }

    /// Closes with the socket's pending error, if it has one.
    fn check_error(&self) {
        let error = match self.stream.borrow().as_ref() {
            Some(stream) => match stream.take_error() {
                Ok(error) => error,
                Err(e) => Some(e),
            },
            None => return,
        };
        if let Some(e) = error {
            log::debug!(
                "connection to {} failed after EOF or pause: {e}",
                self.name()
            );
            self.close_now(ConnectionLost::Error(e));
        }
    }

    /// Reads until the socket is drained (or the per-event budget is
    /// spent), delivering data (or discarding it, when closing). `buf` is
    /// the reactor's shared read buffer.
    ///
    /// A read that returns less than it asked for has drained the kernel's
    /// receive queue, so with edge-triggered epoll the next byte brings a
    /// new event: the read that would only say WouldBlock is skipped (as
    /// tokio does), saving a system call per message. `until_would_block`
    /// turns this off for the cases where no fresh edge is guaranteed: the
    /// peer closed (its EOF must be read now), an error, a connect
    /// completion, or a read resumed after a pause.
    ///
    /// Before each further read of a burst the reactor's dirty connections
    /// are flushed, so a producer paused by that flush (a proxy's reading
    /// side) stops the burst at the high-water mark.
    pub(crate) fn handle_readable(self: &Rc<Self>, buf: &mut [u8], until_would_block: bool) {
        let reactor = self.reactor.upgrade();
        for _ in 0..READS_PER_EVENT {
            let deliver = match self.read.get() {
                ReadState::Open => true,
                ReadState::Discarding => false,
                ReadState::Paused | ReadState::Eof | ReadState::Closed => return,
            };
            let want = match &reactor {
                Some(reactor) => reactor.read_len(buf.len()),
                None => buf.len(),
            };
            let result = match self.stream.borrow().as_ref() {
                Some(stream) => stream.read(&mut buf[..want]),
                None => return,
            };
            match result {
                Ok(0) => {
                    self.on_eof();
                    return;
                }
                Ok(n) => {
                    if deliver {
                        let data = &buf[..n];
                        self.call_protocol("data_received", |p| p.data_received(data));
                    }
                    if n < want && !until_would_block {
                        return;
                    }
                    if deliver {
                        if let Some(reactor) = &reactor {
                            reactor.flush_dirty();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close_now(ConnectionLost::Error(e));
                    return;
                }
            }
        }
        // Budget spent with data possibly left: read again next iteration.
        self.queue_read();
    }

    /// The peer's FIN was read.
    fn on_eof(&self) {
        if self.read.replace(ReadState::Eof) == ReadState::Discarding {
            // Closing: the peer is done too. Close once our FIN is out; if
            // the buffer is still flushing, the flush closes.
            if self.write.get() == WriteState::HalfClosed {
                self.close_now(ConnectionLost::Done);
            }
            return;
        }
        let mut keep_open = false;
        self.call_protocol("eof_received", |p| keep_open = p.eof_received());
        match self.write.get() {
            WriteState::Closed => {}
            // Both directions are done.
            WriteState::HalfClosed => self.close_now(ConnectionLost::Done),
            _ if !keep_open => self.lose_connection(),
            _ => {}
        }
    }

    /// A writable event: the kernel has room again.
    pub(crate) fn handle_writable(self: &Rc<Self>) {
        self.send_queue.set(SendQueue::Room);
        self.flush();
    }

    /// Sends what is buffered until WouldBlock, then applies a pending
    /// half-close or close, and pauses or resumes the producer.
    pub(crate) fn flush(self: &Rc<Self>) {
        // While `queued_flush` is still set, what the source writes does not
        // queue this connection again: it goes out in this flush.
        self.run_write_source();
        self.queued_flush.set(false);
        let write = self.write.get();
        if matches!(write, WriteState::Closed | WriteState::HalfClosed) {
            return;
        }
        if self.send_queue.get() == SendQueue::Room {
            let reactor = self.reactor.upgrade();
            loop {
                let result = {
                    let wbuf = self.wbuf.borrow();
                    if wbuf.len() == 0 {
                        break;
                    }
                    let pending = wbuf.pending();
                    let offer = match &reactor {
                        Some(reactor) => reactor.write_len(pending.len()),
                        None => pending.len(),
                    };
                    match self.stream.borrow().as_ref() {
                        Some(stream) => stream.write(&pending[..offer]),
                        None => return,
                    }
                };
                match result {
                    Ok(0) => {
                        self.close_now(ConnectionLost::Error(io::ErrorKind::WriteZero.into()));
                        return;
                    }
                    Ok(n) => self.wbuf.borrow_mut().consume(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.send_queue.set(SendQueue::Full);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.close_now(ConnectionLost::Error(e));
                        return;
                    }
                }
            }
        }
        let buffered = self.wbuf.borrow().len();
        if buffered == 0 {
            match write {
                WriteState::Closing => {
                    self.shut_write();
                    self.linger_or_close();
                    return;
                }
                WriteState::HalfClosing => {
                    self.shut_write();
                    if self.read.get() == ReadState::Eof {
                        self.close_now(ConnectionLost::Done);
                        return;
                    }
                }
                _ => {}
            }
        }
        self.update_producer(buffered);
    }

    /// Sends our FIN.
    fn shut_write(&self) {
        self.write.set(WriteState::HalfClosed);
        if let Some(stream) = self.stream.borrow().as_ref() {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }

    /// After `lose_connection` has flushed and sent FIN: close now if the
    /// peer is done already, or linger (discarding input) until its EOF or
    /// the linger time-out.
    fn linger_or_close(self: &Rc<Self>) {
        let timeout = match (self.read.get(), self.reactor.upgrade()) {
            (ReadState::Discarding, Some(reactor)) => {
                let timeout = reactor.linger_timeout;
                if timeout.is_zero() {
                    None
                } else {
                    Some((reactor, timeout))
                }
            }
            _ => None,
        };
        let Some((reactor, timeout)) = timeout else {
            self.close_now(ConnectionLost::Done);
            return;
        };
        let weak = Rc::downgrade(self);
        let timer = reactor.clock.call_later(timeout, move || {
            if let Some(conn) = weak.upgrade() {
                if !conn.is_closed() {
                    log::debug!(
                        "linger time-out ({timeout:?}) hit for {}: the peer sent no EOF; closing",
                        conn.name()
                    );
                    conn.close_now(ConnectionLost::Done);
                }
            }
        });
        if let Some(old) = self.linger.borrow_mut().replace(timer) {
            let _ = old.cancel();
        }
    }

    fn update_producer(&self, buffered: usize) {
        let change = {
            let mut state = self.producer.borrow_mut();
            match &*state {
                ProducerState::Producing(p) if buffered > self.high_water.get() => {
                    let p = Rc::clone(p);
                    *state = ProducerState::Paused(Rc::clone(&p));
                    Some((p, true))
                }
                ProducerState::Paused(p) if buffered <= self.low_water.get() => {
                    let p = Rc::clone(p);
                    *state = ProducerState::Producing(Rc::clone(&p));
                    Some((p, false))
                }
                _ => None,
            }
        };
        match change {
            Some((producer, true)) => {
                let _ = guard(format_args!("pause_producing for {}", self.name()), || {
                    producer.pause_producing()
                });
            }
            Some((producer, false)) => {
                let _ = guard(format_args!("resume_producing for {}", self.name()), || {
                    producer.resume_producing()
                });
            }
            None => {}
        }
    }

    /// Runs the write source, if any (not on a closed connection).
    fn run_write_source(&self) {
        if self.write.get() == WriteState::Closed {
            return;
        }
        let source = self.write_source.borrow().clone();
        if let Some(source) = source {
            let _ = guard(format_args!("write source for {}", self.name()), || {
                source()
            });
        }
    }

    fn queue_flush(&self) {
        if !self.queued_flush.replace(true) {
            if let Some(reactor) = self.reactor.upgrade() {
                if let Some(me) = reactor.conn_by_token(self.token.get()) {
                    reactor.dirty.borrow_mut().push(me);
                    return;
                }
            }
            self.queued_flush.set(false);
        }
    }

    /// Reads again from the loop (the read-again list), until WouldBlock.
    pub(crate) fn queue_read(&self) {
        if !self.queued_read.replace(true) {
            if let Some(reactor) = self.reactor.upgrade() {
                if let Some(me) = reactor.conn_by_token(self.token.get()) {
                    reactor.read_again.borrow_mut().push(me);
                    return;
                }
            }
            self.queued_read.set(false);
        }
    }

    pub(crate) fn clear_queued_read(&self) {
        self.queued_read.set(false);
    }

    /// Closes the socket now and queues `connection_lost(reason)`.
    pub(crate) fn close_now(&self, reason: ConnectionLost) {
        if self.write.replace(WriteState::Closed) == WriteState::Closed {
            return;
        }
        // The source may hold the layer above; nothing more is written.
        drop(self.write_source.borrow_mut().take());
        self.read.set(ReadState::Closed);
        if let Some(timer) = self.linger.borrow_mut().take() {
            let _ = timer.cancel();
        }
        let stream = self.stream.borrow_mut().take();
        let reactor = self.reactor.upgrade();
        if let Some(mut stream) = stream {
            if let Some(reactor) = &reactor {
                let _ = reactor.registry.deregister(&mut stream);
            }
            if matches!(reason, ConnectionLost::Aborted) {
                // An abort tells the peer the close was not clean: over TCP
                // a zero linger makes the close send RST, not FIN, so the
                // peer sees a reset rather than an orderly end of stream.
                // (A Unix socket has no RST; see `stream`.)
                stream.prepare_abort();
            }
            drop(stream);
        }
        self.wbuf.borrow_mut().clear();
        *self.lost_reason.borrow_mut() = Some(reason);
        if let Some(reactor) = reactor {
            if let Some(me) = reactor.release_conn(self.token.get()) {
                reactor.lost.borrow_mut().push_back(me);
            }
        }
    }

    /// Delivers `connection_lost` (called by the reactor, from its loop)
    /// and drops the protocol, which breaks the protocol-transport cycle.
    pub(crate) fn deliver_lost(&self) {
        let reason = self
            .lost_reason
            .borrow_mut()
            .take()
            .unwrap_or(ConnectionLost::Done);
        let protocol = self.protocol.borrow_mut().take();
        let producer = std::mem::replace(&mut *self.producer.borrow_mut(), ProducerState::None);
        if let ProducerState::Producing(producer) | ProducerState::Paused(producer) = producer {
            let _ = guard(format_args!("stop_producing for {}", self.name()), || {
                producer.stop_producing()
            });
        }
        let hook = self.lost_hook.borrow_mut().take();
        let hook_reason = hook.as_ref().map(|_| reason.clone());
        if let Some(mut protocol) = protocol {
            log::debug!("connection to {} lost: {reason}", self.name());
            let _ = guard(format_args!("connection_lost for {}", self.name()), || {
                protocol.connection_lost(reason)
            });
            let _ = guard(
                format_args!("dropping the protocol for {}", self.name()),
                || drop(protocol),
            );
        }
        if let (Some(hook), Some(reason)) = (hook, hook_reason) {
            let _ = guard(
                format_args!("connection lost hook for {}", self.name()),
                || hook(&reason),
            );
        }
    }
}

/// [`Conn::name`]: formatted only when a log line is written.
struct ConnName<'a> {
    peer: &'a Address,
    local: Option<&'a Address>,
}

impl fmt::Display for ConnName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.peer, self.local) {
            (Address::Unix(UnixAddr::Unnamed), Some(local)) => {
                write!(f, "an unnamed peer of {local}")
            }
            (peer, _) => peer.fmt(f),
        }
    }
}

impl TransportBackend for Conn {
    fn set_write_source(&self, source: Option<WriteSource>) -> bool {
        *self.write_source.borrow_mut() = source;
        true
    }

    fn request_flush(&self) {
        if self.write.get() == WriteState::Open {
            self.queue_flush();
        }
    }

    fn write(&self, data: &[u8]) {
        if self.write.get() != WriteState::Open || data.is_empty() {
            return;
        }
        self.wbuf.borrow_mut().push(data);
        self.queue_flush();
    }

    fn write_sequence(&self, parts: &[&[u8]]) {
        if self.write.get() != WriteState::Open {
            return;
        }
        {
            let mut wbuf = self.wbuf.borrow_mut();
            for part in parts {
                wbuf.push(part);
            }
        }
        self.queue_flush();
    }

    fn lose_connection(&self) {
        let write = self.write.get();
        let read = self.read.get();
        if matches!(write, WriteState::Closed | WriteState::Closing)
            || read == ReadState::Discarding
        {
            return;
        }
        // What the layer above gathered was written before the close.
        if write == WriteState::Open {
            self.run_write_source();
        }
        self.write.set(WriteState::Closing);
        match read {
            // Reading stops here: input is discarded from now on.
            ReadState::Open => self.read.set(ReadState::Discarding),
            ReadState::Paused => {
                self.read.set(ReadState::Discarding);
                // Input may have queued up while paused, with no new edge.
                self.queue_read();
            }
            ReadState::Eof | ReadState::Discarding | ReadState::Closed => {}
        }
        self.queue_flush();
    }

    fn half_close(&self) {
        if self.write.get() == WriteState::Open {
            self.run_write_source();
            self.write.set(WriteState::HalfClosing);
            self.queue_flush();
        }
    }

    fn abort_connection(&self) {
        self.close_now(ConnectionLost::Aborted);
    }

    fn is_closing(&self) -> bool {
        matches!(self.write.get(), WriteState::Closing | WriteState::Closed)
            || self.read.get() == ReadState::Discarding
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.inet()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local.as_ref().and_then(Address::inet)
    }

    fn peer_address(&self) -> Option<Address> {
        Some(self.peer.clone())
    }

    fn local_address(&self) -> Option<Address> {
        self.local.clone()
    }

    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        match self.stream.borrow().as_ref() {
            Some(stream) => stream.peer_credentials(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )),
        }
    }

    fn pause_reading(&self) {
        if self.read.get() == ReadState::Open {
            self.read.set(ReadState::Paused);
        }
    }

    fn resume_reading(&self) {
        if self.read.get() == ReadState::Paused {
            self.read.set(ReadState::Open);
            // Edges may have come and gone while paused: try a read.
            self.queue_read();
        }
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self.stream.borrow().as_ref() {
            Some(stream) => stream.set_nodelay(on),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )),
        }
    }

    fn buffered_len(&self) -> usize {
        self.wbuf.borrow().len()
    }

    fn buffer_capacity(&self) -> usize {
        self.wbuf.borrow().capacity()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.high_water.set(high);
        self.low_water.set(low.min(high));
    }

    fn register_producer(&self, producer: Rc<dyn Producer>) {
        *self.producer.borrow_mut() = ProducerState::Producing(producer);
        // Tell it to pause from the loop if the buffer is already full.
        self.queue_flush();
    }

    fn unregister_producer(&self) {
        *self.producer.borrow_mut() = ProducerState::None;
    }
}
