//! TCP connections: the [`Conn`] behind a [`Transport`], with its bounded
//! write buffer, flow control, half-close and close bookkeeping.
//!
//! A `Conn` never calls into its protocol from a [`TransportBackend`] method.
//! Writes go to the buffer and mark the connection dirty; the reactor flushes
//! dirty connections after each phase of its loop. Closing removes the
//! socket at once and queues `connection_lost` for the reactor to deliver
//! after the current callback has returned.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use mio::net::TcpStream;

use crate::core::Inner;
use crate::defer::panic_message;
use crate::protocol::{ConnectionLost, Producer, Protocol};
use crate::transport::{Transport, TransportBackend, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};

/// How many reads one readiness event may do before the connection yields
/// to others (it is read again on the next iteration).
const READS_PER_EVENT: usize = 16;

/// Called once after `connection_lost`, for connectors and the like.
pub(crate) type LostHook = Box<dyn FnOnce(&ConnectionLost)>;

/// One TCP connection.
pub(crate) struct Conn {
    reactor: Weak<Inner>,
    pub(crate) token: Cell<usize>,
    stream: RefCell<Option<TcpStream>>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    wbuf: RefCell<WriteBuffer>,
    high_water: Cell<usize>,
    low_water: Cell<usize>,
    producer: RefCell<Option<Rc<dyn Producer>>>,
    producer_paused: Cell<bool>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    reading_paused: Cell<bool>,
    /// The kernel said WouldBlock on write; wait for a writable event.
    write_blocked: Cell<bool>,
    /// `lose_connection` was asked for: close when the buffer is empty.
    disconnecting: Cell<bool>,
    /// `half_close` was asked for: shut the write side when the buffer is empty.
    half_closing: Cell<bool>,
    write_shut: Cell<bool>,
    read_eof: Cell<bool>,
    closed: Cell<bool>,
    /// Already in the reactor's dirty list.
    queued_flush: Cell<bool>,
    /// Already in the reactor's read-again list.
    queued_read: Cell<bool>,
    lost_reason: RefCell<Option<ConnectionLost>>,
    lost_hook: RefCell<Option<LostHook>>,
}

/// A write buffer that consumes from the front without moving bytes on
/// every write: `head` advances, and the vector is compacted when the
/// consumed part is large.
#[derive(Default)]
struct WriteBuffer {
    data: Vec<u8>,
    head: usize,
}

impl WriteBuffer {
    fn len(&self) -> usize {
        self.data.len() - self.head
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.head..]
    }
    fn push(&mut self, bytes: &[u8]) {
        if self.head > 0 && self.head == self.data.len() {
            self.data.clear();
            self.head = 0;
        }
        self.data.extend_from_slice(bytes);
    }
    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.data.len() {
            self.data.clear();
            self.head = 0;
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
    pub(crate) fn new(reactor: Weak<Inner>, stream: TcpStream, peer: SocketAddr) -> Conn {
        let local = stream.local_addr().ok();
        Conn {
            reactor,
            token: Cell::new(usize::MAX),
            stream: RefCell::new(Some(stream)),
            protocol: RefCell::new(None),
            wbuf: RefCell::new(WriteBuffer::default()),
            high_water: Cell::new(DEFAULT_HIGH_WATER),
            low_water: Cell::new(DEFAULT_LOW_WATER),
            producer: RefCell::new(None),
            producer_paused: Cell::new(false),
            peer,
            local,
            reading_paused: Cell::new(false),
            write_blocked: Cell::new(false),
            disconnecting: Cell::new(false),
            half_closing: Cell::new(false),
            write_shut: Cell::new(false),
            read_eof: Cell::new(false),
            closed: Cell::new(false),
            queued_flush: Cell::new(false),
            queued_read: Cell::new(false),
            lost_reason: RefCell::new(None),
            lost_hook: RefCell::new(None),
        }
    }

    /// A close or half-close was asked for: later writes are dropped (as by
    /// the in-memory transports), so what the peer gets does not depend on
    /// how far the flush had got.
    fn write_closing(&self) -> bool {
        self.disconnecting.get() || self.half_closing.get() || self.write_shut.get()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
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
            let _ = stream.set_nodelay(true);
        }
        *self.protocol.borrow_mut() = Some(protocol);
        let transport = self.transport();
        self.call_protocol("connection_made", move |p| p.connection_made(transport));
    }

    pub(crate) fn transport(self: &Rc<Self>) -> Transport {
        Transport::new(Rc::clone(self) as Rc<dyn TransportBackend>)
    }

    /// Runs a protocol method, catching a panic (which aborts this
    /// connection only).
    fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn Protocol)) {
        let panicked = {
            let Ok(mut guard) = self.protocol.try_borrow_mut() else {
                log::error!("protocol for {} is busy; {what} not delivered", self.peer);
                return;
            };
            let Some(protocol) = guard.as_mut() else {
                return;
            };
            match catch_unwind(AssertUnwindSafe(|| f(&mut **protocol))) {
                Ok(()) => None,
                Err(payload) => Some(panic_message(&*payload)),
            }
        };
        if let Some(message) = panicked {
            log::error!(
                "protocol for {} panicked in {what}: {message}; aborting the connection",
                self.peer
            );
            self.close_now(ConnectionLost::Panicked(message));
        }
    }

    /// Reads until the socket is drained (or the per-event budget is
    /// spent), delivering data. `buf` is the reactor's shared read buffer.
    ///
    /// A read that fills less than `buf` has drained the kernel's receive
    /// queue, so with edge-triggered epoll the next byte brings a new event:
    /// the read that would only say WouldBlock is skipped (as tokio does),
    /// saving a system call per message. `until_would_block` turns this off
    /// for the cases where no fresh edge is guaranteed: the peer closed (its
    /// EOF must be read now), an error, or a read resumed after a pause.
    pub(crate) fn handle_readable(self: &Rc<Self>, buf: &mut [u8], until_would_block: bool) {
        for _ in 0..READS_PER_EVENT {
            if self.closed.get() || self.reading_paused.get() || self.read_eof.get() {
                return;
            }
            let want = match self.reactor.upgrade() {
                Some(reactor) => reactor.read_len(buf.len()),
                None => buf.len(),
            };
            let result = match self.stream.borrow().as_ref() {
                Some(mut stream) => stream.read(&mut buf[..want]),
                None => return,
            };
            match result {
                Ok(0) => {
                    self.read_eof.set(true);
                    self.on_eof();
                    return;
                }
                Ok(n) => {
                    let data = &buf[..n];
                    self.call_protocol("data_received", |p| p.data_received(data));
                    if n < want && !until_would_block {
                        return;
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

    fn on_eof(&self) {
        let mut keep_open = false;
        self.call_protocol("eof_received", |p| keep_open = p.eof_received());
        if self.closed.get() {
            return;
        }
        if self.write_shut.get() {
            // Both directions are done.
            self.close_now(ConnectionLost::Done);
        } else if !keep_open {
            self.lose_connection();
        }
    }

    /// A writable event: the kernel has room again.
    pub(crate) fn handle_writable(self: &Rc<Self>) {
        self.write_blocked.set(false);
        self.flush();
    }

    /// Sends what is buffered until WouldBlock, then applies pending
    /// half-close or close, and pauses or resumes the producer.
    pub(crate) fn flush(self: &Rc<Self>) {
        self.queued_flush.set(false);
        if self.closed.get() {
            return;
        }
        if !self.write_blocked.get() {
            loop {
                let result = {
                    let wbuf = self.wbuf.borrow();
                    if wbuf.len() == 0 {
                        break;
                    }
                    let pending = wbuf.pending();
                    let offer = match self.reactor.upgrade() {
                        Some(reactor) => reactor.write_len(pending.len()),
                        None => pending.len(),
                    };
                    match self.stream.borrow().as_ref() {
                        Some(mut stream) => stream.write(&pending[..offer]),
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
                        self.write_blocked.set(true);
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
            if self.disconnecting.get() {
                self.close_now(ConnectionLost::Done);
                return;
            }
            if self.half_closing.get() && !self.write_shut.get() {
                self.write_shut.set(true);
                if let Some(stream) = self.stream.borrow().as_ref() {
                    let _ = stream.shutdown(Shutdown::Write);
                }
                if self.read_eof.get() {
                    self.close_now(ConnectionLost::Done);
                    return;
                }
            }
        }
        self.update_producer(buffered);
    }

    fn update_producer(&self, buffered: usize) {
        let producer = self.producer.borrow().clone();
        let Some(producer) = producer else {
            return;
        };
        if !self.producer_paused.get() && buffered > self.high_water.get() {
            self.producer_paused.set(true);
            guard_user("pause_producing", self.peer, || producer.pause_producing());
        } else if self.producer_paused.get() && buffered <= self.low_water.get() {
            self.producer_paused.set(false);
            guard_user("resume_producing", self.peer, || {
                producer.resume_producing()
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

    fn queue_read(&self) {
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
        if self.closed.replace(true) {
            return;
        }
        let stream = self.stream.borrow_mut().take();
        let reactor = self.reactor.upgrade();
        if let Some(mut stream) = stream {
            if let Some(reactor) = &reactor {
                let _ = reactor.registry.deregister(&mut stream);
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
        let producer = self.producer.borrow_mut().take();
        if let Some(producer) = producer {
            guard_user("stop_producing", self.peer, || producer.stop_producing());
        }
        let hook = self.lost_hook.borrow_mut().take();
        let hook_reason = hook.as_ref().map(|_| reason.clone());
        if let Some(mut protocol) = protocol {
            log::debug!("connection to {} lost: {reason}", self.peer);
            guard_user("connection_lost", self.peer, || {
                protocol.connection_lost(reason)
            });
            drop(protocol);
        }
        if let (Some(hook), Some(reason)) = (hook, hook_reason) {
            guard_user("connection lost hook", self.peer, || hook(&reason));
        }
    }
}

/// Runs user code from the loop, logging (not propagating) a panic.
pub(crate) fn guard_user(what: &str, peer: SocketAddr, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        log::error!("{what} for {peer} panicked: {}", panic_message(&*payload));
    }
}

impl TransportBackend for Conn {
    fn write(&self, data: &[u8]) {
        if self.closed.get() || self.write_closing() || data.is_empty() {
            return;
        }
        self.wbuf.borrow_mut().push(data);
        self.queue_flush();
    }

    fn write_sequence(&self, parts: &[&[u8]]) {
        if self.closed.get() || self.write_closing() {
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
        if self.closed.get() {
            return;
        }
        self.disconnecting.set(true);
        self.queue_flush();
    }

    fn half_close(&self) {
        if self.closed.get() {
            return;
        }
        self.half_closing.set(true);
        self.queue_flush();
    }

    fn abort_connection(&self) {
        self.close_now(ConnectionLost::Aborted);
    }

    fn is_closing(&self) -> bool {
        self.closed.get() || self.disconnecting.get()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    fn pause_reading(&self) {
        self.reading_paused.set(true);
    }

    fn resume_reading(&self) {
        if self.reading_paused.replace(false) && !self.closed.get() {
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

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.high_water.set(high);
        self.low_water.set(low.min(high));
    }

    fn register_producer(&self, producer: Rc<dyn Producer>) {
        *self.producer.borrow_mut() = Some(producer);
        self.producer_paused.set(false);
        // Tell it to pause from the loop if the buffer is already full.
        self.queue_flush();
    }

    fn unregister_producer(&self) {
        self.producer.borrow_mut().take();
        self.producer_paused.set(false);
    }
}
