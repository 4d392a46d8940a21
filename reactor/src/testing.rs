//! In-memory transports for testing protocols without sockets.
//!
//! - [`StringTransport`] (Twisted's `StringTransport`): a transport that
//!   records what is written and how it was closed, for driving one protocol
//!   by hand (`protocol.data_received(...)`, then inspect
//!   [`value`](StringTransport::value)).
//! - [`Perturbation`]: seeded hostile schedules for a whole reactor
//!   ([`ReactorBuilder::perturb`](crate::ReactorBuilder::perturb)).
//! - [`connect_in_memory`] (Twisted's `iosim`): two protocols connected by an
//!   [`IoPump`] that moves bytes between them only when the test says so
//!   ([`pump`](IoPump::pump), [`flush`](IoPump::flush)), so a protocol's
//!   `write` never runs the peer's `data_received` on the writer's stack.
//!
//! Both honour the [`TransportBackend`] contract: no method calls back into a
//! protocol.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

pub use crate::perturb::Perturbation;
use crate::perturb::Perturber;
use crate::protocol::{ConnectionLost, Producer, Protocol};
use crate::transport::{Transport, TransportBackend, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};

fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

// ---------------------------------------------------------------------------
// StringTransport
// ---------------------------------------------------------------------------

/// The state behind a [`StringTransport`] and its [`Transport`] handles.
struct StringState {
    data: RefCell<Vec<u8>>,
    disconnecting: Cell<bool>,
    aborted: Cell<bool>,
    write_closed: Cell<bool>,
    reading_paused: Cell<bool>,
    producer: RefCell<Option<Rc<dyn Producer>>>,
    buffered: Cell<usize>,
    limits: Cell<(usize, usize)>,
    nodelay: Cell<bool>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl TransportBackend for StringState {
    fn write(&self, data: &[u8]) {
        if !self.aborted.get() {
            self.data.borrow_mut().extend_from_slice(data);
        }
    }

    fn lose_connection(&self) {
        self.disconnecting.set(true);
    }

    fn half_close(&self) {
        self.write_closed.set(true);
    }

    fn abort_connection(&self) {
        self.aborted.set(true);
        self.disconnecting.set(true);
    }

    fn is_closing(&self) -> bool {
        self.disconnecting.get()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    fn pause_reading(&self) {
        self.reading_paused.set(true);
    }

    fn resume_reading(&self) {
        self.reading_paused.set(false);
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.nodelay.set(on);
        Ok(())
    }

    fn buffered_len(&self) -> usize {
        self.buffered.get()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.limits.set((high, low));
    }

    fn register_producer(&self, producer: Rc<dyn Producer>) {
        // Drop the old one after the borrow ends: its destructor is user code.
        let old = self.producer.borrow_mut().replace(producer);
        drop(old);
    }

    fn unregister_producer(&self) {
        let old = self.producer.borrow_mut().take();
        drop(old);
    }
}

/// A transport that records everything written to it and every state change,
/// and delivers nothing (Twisted's `proto_helpers.StringTransport`).
///
/// Drive the protocol under test by calling its methods directly, and inspect
/// the transport afterwards. A `StringTransport` is a cheap `Clone` handle:
/// the test keeps one and gives the protocol [`transport`](Self::transport).
///
/// Semantics, as in Twisted:
/// - every write is appended to [`value`](Self::value), including writes made
///   after `lose_connection` or `half_close` (only the flags change); writes
///   after `abort_connection` are ignored;
/// - `lose_connection` sets [`disconnecting`](Self::disconnecting) and
///   nothing else: `connection_lost` is never called (call it yourself);
/// - `abort_connection` sets [`aborted`](Self::aborted) and `disconnecting`;
/// - `half_close` sets [`write_side_closed`](Self::write_side_closed);
/// - `pause_reading`/`resume_reading` toggle
///   [`reading_paused`](Self::reading_paused) (Twisted's `producerState`);
/// - `register_producer` replaces any registered producer (Twisted raises;
///   this trait cannot) and it is kept until unregistered: the transport never
///   pauses it by itself. Use [`set_buffered_len`](Self::set_buffered_len) and
///   call the [`producer`](Self::producer) yourself for flow-control tests;
/// - `peer_addr` is `192.168.1.1:54321` and `local_addr` `10.0.0.1:12345`
///   unless given to [`with_addresses`](Self::with_addresses).
///
/// ```
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: gyre_reactor::Transport) {
///         t.write(b"hello\r\n");
///         t.lose_connection();
///     }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let st = StringTransport::new();
/// Hello.connection_made(st.transport());
/// assert_eq!(st.value(), b"hello\r\n");
/// assert!(st.disconnecting());
/// ```
#[derive(Clone)]
pub struct StringTransport {
    state: Rc<StringState>,
}

impl StringTransport {
    /// A fresh transport with Twisted's default addresses (peer
    /// `192.168.1.1:54321`, local `10.0.0.1:12345`).
    pub fn new() -> StringTransport {
        StringTransport::with_addresses(addr(192, 168, 1, 1, 54321), addr(10, 0, 0, 1, 12345))
    }

    /// A fresh transport reporting these addresses.
    pub fn with_addresses(peer: SocketAddr, local: SocketAddr) -> StringTransport {
        StringTransport {
            state: Rc::new(StringState {
                data: RefCell::new(Vec::new()),
                disconnecting: Cell::new(false),
                aborted: Cell::new(false),
                write_closed: Cell::new(false),
                reading_paused: Cell::new(false),
                producer: RefCell::new(None),
                buffered: Cell::new(0),
                limits: Cell::new((DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER)),
                nodelay: Cell::new(true),
                peer: Some(peer),
                local: Some(local),
            }),
        }
    }

    /// A [`Transport`] handle writing into this recorder (give it to the
    /// protocol's `connection_made`).
    pub fn transport(&self) -> Transport {
        Transport::new(self.state.clone())
    }

    /// Everything written so far (since the last [`clear`](Self::clear) or
    /// [`take_value`](Self::take_value)).
    pub fn value(&self) -> Vec<u8> {
        self.state.data.borrow().clone()
    }

    /// Everything written so far, emptying the record.
    pub fn take_value(&self) -> Vec<u8> {
        std::mem::take(&mut *self.state.data.borrow_mut())
    }

    /// Forgets what was written (Twisted's `clear`).
    pub fn clear(&self) {
        self.state.data.borrow_mut().clear();
    }

    /// Whether `lose_connection` (or `abort_connection`) was called
    /// (Twisted's `disconnecting`).
    pub fn disconnecting(&self) -> bool {
        self.state.disconnecting.get()
    }

    /// Whether `abort_connection` was called.
    pub fn aborted(&self) -> bool {
        self.state.aborted.get()
    }

    /// Whether `half_close` was called.
    pub fn write_side_closed(&self) -> bool {
        self.state.write_closed.get()
    }

    /// Whether reading is paused (`pause_reading` called and not resumed).
    pub fn reading_paused(&self) -> bool {
        self.state.reading_paused.get()
    }

    /// The registered producer, if any.
    pub fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.state.producer.borrow().clone()
    }

    /// Sets what `buffered_len` reports (0 by default), to test code that
    /// looks at the write buffer.
    pub fn set_buffered_len(&self, n: usize) {
        self.state.buffered.set(n);
    }

    /// The write-buffer marks last set (high, low); the defaults are
    /// [`DEFAULT_HIGH_WATER`] and [`DEFAULT_LOW_WATER`].
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        self.state.limits.get()
    }

    /// The `TCP_NODELAY` setting last set (`true` by default, as for TCP).
    pub fn nodelay(&self) -> bool {
        self.state.nodelay.get()
    }
}

impl Default for StringTransport {
    fn default() -> Self {
        StringTransport::new()
    }
}

impl fmt::Debug for StringTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.state;
        f.debug_struct("StringTransport")
            .field("written", &s.data.borrow().len())
            .field("disconnecting", &s.disconnecting.get())
            .field("aborted", &s.aborted.get())
            .field("write_side_closed", &s.write_closed.get())
            .field("reading_paused", &s.reading_paused.get())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// In-memory pump
// ---------------------------------------------------------------------------

/// How many steps [`IoPump::flush`] takes before giving up (Twisted's 1000).
pub const FLUSH_LIMIT: usize = 1000;

/// The client side's address in an [`IoPump`] connection (the server's peer).
pub const PUMP_CLIENT_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 50000);
/// The server side's address in an [`IoPump`] connection (the client's peer).
pub const PUMP_SERVER_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7000);

/// One side's transport in an [`IoPump`]: its outgoing buffer and state.
struct PipeEnd {
    out: RefCell<Vec<u8>>,
    lose_requested: Cell<bool>,
    abort_requested: Cell<bool>,
    half_close_requested: Cell<bool>,
    /// Our EOF has been delivered to the peer.
    write_shut: Cell<bool>,
    /// `connection_lost` has been (or is being) delivered.
    closed: Cell<bool>,
    reading_paused: Cell<bool>,
    producer: RefCell<Option<Rc<dyn Producer>>>,
    producer_paused: Cell<bool>,
    limits: Cell<(usize, usize)>,
    nodelay: Cell<bool>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl PipeEnd {
    fn new(local: SocketAddr, peer: SocketAddr) -> PipeEnd {
        PipeEnd {
            out: RefCell::new(Vec::new()),
            lose_requested: Cell::new(false),
            abort_requested: Cell::new(false),
            half_close_requested: Cell::new(false),
            write_shut: Cell::new(false),
            closed: Cell::new(false),
            reading_paused: Cell::new(false),
            producer: RefCell::new(None),
            producer_paused: Cell::new(false),
            limits: Cell::new((DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER)),
            nodelay: Cell::new(true),
            local,
            peer,
        }
    }

    /// Writes are refused once a close or a half-close was asked for.
    fn write_open(&self) -> bool {
        !(self.closed.get()
            || self.lose_requested.get()
            || self.abort_requested.get()
            || self.half_close_requested.get())
    }

    /// Whether data addressed to this side can be delivered now.
    fn can_receive(&self) -> bool {
        !(self.closed.get()
            || self.reading_paused.get()
            || self.lose_requested.get()
            || self.abort_requested.get())
    }

    fn producer(&self) -> Option<Rc<dyn Producer>> {
        self.producer.borrow().clone()
    }

    /// Pauses the producer above the high-water mark.
    fn check_high_water(&self) {
        let (high, _) = self.limits.get();
        if self.out.borrow().len() > high && !self.producer_paused.get() {
            if let Some(p) = self.producer() {
                self.producer_paused.set(true);
                p.pause_producing();
            }
        }
    }

    /// Resumes a paused producer at or below the low-water mark.
    fn check_low_water(&self) {
        let (_, low) = self.limits.get();
        if self.producer_paused.get() && self.out.borrow().len() <= low && !self.closed.get() {
            self.producer_paused.set(false);
            if let Some(p) = self.producer() {
                p.resume_producing();
            }
        }
    }
}

impl TransportBackend for PipeEnd {
    fn write(&self, data: &[u8]) {
        if self.write_open() {
            self.out.borrow_mut().extend_from_slice(data);
        }
    }

    fn lose_connection(&self) {
        if !self.closed.get() {
            self.lose_requested.set(true);
        }
    }

    fn half_close(&self) {
        if !self.closed.get() {
            self.half_close_requested.set(true);
        }
    }

    fn abort_connection(&self) {
        if !self.closed.get() {
            self.abort_requested.set(true);
            self.out.borrow_mut().clear();
        }
    }

    fn is_closing(&self) -> bool {
        self.closed.get() || self.lose_requested.get() || self.abort_requested.get()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.local)
    }

    fn pause_reading(&self) {
        self.reading_paused.set(true);
    }

    fn resume_reading(&self) {
        self.reading_paused.set(false);
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.nodelay.set(on);
        Ok(())
    }

    fn buffered_len(&self) -> usize {
        self.out.borrow().len()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.limits.set((high, low.min(high)));
    }

    fn register_producer(&self, producer: Rc<dyn Producer>) {
        let old = self.producer.borrow_mut().replace(producer);
        self.producer_paused.set(false);
        drop(old);
    }

    fn unregister_producer(&self) {
        let old = self.producer.borrow_mut().take();
        self.producer_paused.set(false);
        drop(old);
    }
}

/// [`IoPump::flush`] did not reach a quiet state within [`FLUSH_LIMIT`]
/// steps (the protocols keep talking to each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSettled {
    /// Steps taken (all of which moved something).
    pub steps: usize,
}

impl fmt::Display for NotSettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in-memory connection still busy after {} pump steps",
            self.steps
        )
    }
}

impl std::error::Error for NotSettled {}

/// Two protocols connected in memory (Twisted's `iosim.IOPump`).
///
/// Each side's writes are buffered in its transport; nothing moves until the
/// test calls [`pump`](Self::pump) (one step) or [`flush`](Self::flush)
/// (steps until quiet). So `write` never runs the peer's `data_received` on
/// the writer's stack, as with the real reactor.
///
/// One step:
/// 1. an `abort_connection` on either side closes the connection: the
///    aborter's protocol gets [`ConnectionLost::Aborted`], the other
///    [`ConnectionLost::Error`] (`ConnectionReset`); buffered data is dropped;
/// 2. producers whose side has more than its high-water mark buffered are
///    paused;
/// 3. each side's buffered bytes are taken, then delivered to the other side
///    in one `data_received` call (client to server first), unless the
///    receiver paused reading (the bytes wait) or asked to close (the bytes
///    are dropped, as a closing socket stops reading); paused producers whose
///    side drained to its low-water mark are resumed;
/// 4. a `half_close` whose buffer is delivered gives the other side
///    `eof_received` (held while that side pauses reading); if it returns
///    `false` that side loses the connection;
/// 5. a `lose_connection` whose buffer is delivered closes the connection:
///    both protocols get [`ConnectionLost::Done`] (the closing side first),
///    once; the same happens when both sides have half-closed.
///
/// Writes after `lose_connection`, `half_close` or `abort_connection` are
/// dropped (as in Twisted's `FakeTransport`). Registered producers get
/// `stop_producing` when the connection closes, and are then forgotten.
/// Addresses are [`PUMP_CLIENT_ADDR`] and [`PUMP_SERVER_ADDR`].
///
/// ```
/// use gyre_reactor::testing::connect_in_memory;
/// use gyre_reactor::{Protocol, Transport};
///
/// #[derive(Default)]
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 { t.write(data); }
///     }
/// }
///
/// #[derive(Default)]
/// struct Client { got: Vec<u8> }
/// impl Protocol for Client {
///     fn connection_made(&mut self, t: Transport) { t.write(b"ping"); }
///     fn data_received(&mut self, data: &[u8]) { self.got.extend_from_slice(data); }
/// }
///
/// let pump = connect_in_memory(Client::default(), Echo::default());
/// assert!(pump.with_client(|c| c.got.is_empty())); // nothing moved yet
/// pump.flush().unwrap();
/// assert_eq!(pump.with_client(|c| c.got.clone()), b"ping");
/// ```
pub struct IoPump<C: Protocol, S: Protocol> {
    client: Rc<RefCell<C>>,
    server: Rc<RefCell<S>>,
    client_end: Rc<PipeEnd>,
    server_end: Rc<PipeEnd>,
    schedule: Option<Perturber>,
}

/// Connects `client` and `server` in memory and calls their
/// `connection_made` (server first, as Twisted's `iosim.connect`). Nothing is
/// delivered until the returned pump is pumped.
pub fn connect_in_memory<C: Protocol, S: Protocol>(client: C, server: S) -> IoPump<C, S> {
    connect(client, server, None)
}

/// [`connect_in_memory`] under a seeded schedule perturbation: the pump's
/// counterpart of [`ReactorBuilder::perturb`](crate::ReactorBuilder::perturb),
/// so that a protocol (or a conformance suite) sees the same hostile
/// schedules in memory as over sockets. What each setting of `schedule`
/// does to a [`pump`](IoPump::pump) step:
///
/// - `short_reads(n)`: each direction moves a random 1..=n bytes of what is
///   buffered (one `data_received` per step and direction);
/// - `partial_writes()`: each direction moves a random 1..=len prefix of
///   the `len` bytes buffered, so buffers drain slowly and producers see
///   every level;
/// - `shuffle_events()`: the two directions are handled (data, then EOF)
///   in a random order instead of client to server first;
/// - `sleep_before_poll(_)`: each direction is held back for the step with
///   probability 1/2 (the duration is ignored; nothing sleeps), so writes,
///   EOF and close pile up and arrive together, as coalesced readiness does.
///
/// Every choice comes from `schedule`'s seed: the same seed and the same
/// protocols give the same run. A held-back step still counts as "moved"
/// for [`pump`](IoPump::pump)'s result, so [`flush`](IoPump::flush) goes on.
///
/// ```
/// use gyre_reactor::testing::{connect_in_memory_perturbed, Perturbation};
/// use gyre_reactor::{Protocol, Transport};
///
/// #[derive(Default)]
/// struct Sink { got: Vec<u8>, calls: usize }
/// impl Protocol for Sink {
///     fn data_received(&mut self, data: &[u8]) {
///         self.got.extend_from_slice(data);
///         self.calls += 1;
///     }
/// }
/// struct Talker;
/// impl Protocol for Talker {
///     fn connection_made(&mut self, t: Transport) { t.write(&[7; 100]); }
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let schedule = Perturbation::new(42).short_reads(8).shuffle_events();
/// let pump = connect_in_memory_perturbed(Talker, Sink::default(), schedule);
/// pump.flush().unwrap();
/// assert_eq!(pump.with_server(|s| s.got.clone()), vec![7; 100]);
/// assert!(pump.with_server(|s| s.calls) >= 100 / 8);
/// ```
pub fn connect_in_memory_perturbed<C: Protocol, S: Protocol>(
    client: C,
    server: S,
    schedule: Perturbation,
) -> IoPump<C, S> {
    connect(client, server, Some(Perturber::new(schedule)))
}

fn connect<C: Protocol, S: Protocol>(
    client: C,
    server: S,
    schedule: Option<Perturber>,
) -> IoPump<C, S> {
    let pump = IoPump {
        client: Rc::new(RefCell::new(client)),
        server: Rc::new(RefCell::new(server)),
        client_end: Rc::new(PipeEnd::new(PUMP_CLIENT_ADDR, PUMP_SERVER_ADDR)),
        server_end: Rc::new(PipeEnd::new(PUMP_SERVER_ADDR, PUMP_CLIENT_ADDR)),
        schedule,
    };
    let st = pump.server_transport();
    pump.server.borrow_mut().connection_made(st);
    let ct = pump.client_transport();
    pump.client.borrow_mut().connection_made(ct);
    pump
}

/// Which side of an [`IoPump`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl<C: Protocol, S: Protocol> IoPump<C, S> {
    fn end(&self, side: Side) -> &Rc<PipeEnd> {
        match side {
            Side::Client => &self.client_end,
            Side::Server => &self.server_end,
        }
    }

    fn data_received(&self, side: Side, data: &[u8]) {
        match side {
            Side::Client => self.client.borrow_mut().data_received(data),
            Side::Server => self.server.borrow_mut().data_received(data),
        }
    }

    fn eof_received(&self, side: Side) -> bool {
        match side {
            Side::Client => self.client.borrow_mut().eof_received(),
            Side::Server => self.server.borrow_mut().eof_received(),
        }
    }

    fn connection_lost(&self, side: Side, reason: ConnectionLost) {
        match side {
            Side::Client => self.client.borrow_mut().connection_lost(reason),
            Side::Server => self.server.borrow_mut().connection_lost(reason),
        }
    }

    /// Closes both sides: marks them closed, drops buffers and producers,
    /// then tells `first` and then the other side (each once).
    fn close(&self, first: Side, first_reason: ConnectionLost, other_reason: ConnectionLost) {
        if self.client_end.closed.get() && self.server_end.closed.get() {
            return;
        }
        let second = match first {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        let mut producers = Vec::new();
        for side in [first, second] {
            let end = self.end(side);
            end.closed.set(true);
            end.out.borrow_mut().clear();
            producers.push(end.producer.borrow_mut().take());
        }
        for (side, (reason, producer)) in [first, second]
            .into_iter()
            .zip([first_reason, other_reason].into_iter().zip(producers))
        {
            if let Some(p) = producer {
                p.stop_producing();
            }
            self.connection_lost(side, reason);
        }
    }

    /// Moves data once each way and handles closes (see the type's docs for
    /// the exact order). Returns whether anything happened: bytes moved, an
    /// EOF was delivered, or the connection closed.
    pub fn pump(&self) -> bool {
        if self.is_closed() {
            return false;
        }
        // 1. Aborts.
        for side in [Side::Client, Side::Server] {
            if self.end(side).abort_requested.get() {
                let reset = io::Error::new(io::ErrorKind::ConnectionReset, "aborted by peer");
                self.close(side, ConnectionLost::Aborted, ConnectionLost::Error(reset));
                return true;
            }
        }
        // 2. Producers over the high-water mark.
        self.client_end.check_high_water();
        self.server_end.check_high_water();

        // Under a schedule: the order of the directions, and which of them
        // are held back this step (indexed by the sending side).
        let mut order = [(Side::Client, Side::Server), (Side::Server, Side::Client)];
        let mut held = [false, false];
        if let Some(schedule) = &self.schedule {
            schedule.order(&mut order);
            for (i, (side, _)) in order.iter().enumerate() {
                let end = self.end(*side);
                let pending = !end.out.borrow().is_empty()
                    || (end.half_close_requested.get() && !end.write_shut.get())
                    || end.lose_requested.get();
                held[i] = pending && schedule.hold_back();
            }
        }
        let mut moved = held.contains(&true);

        // 3. Data, taken both ways first, then delivered.
        let take = |from: &PipeEnd, to: &PipeEnd| -> Vec<u8> {
            if from.out.borrow().is_empty() {
                return Vec::new();
            }
            if to.can_receive() {
                let mut out = from.out.borrow_mut();
                let n = match &self.schedule {
                    Some(schedule) => schedule.read_len(schedule.write_len(out.len())),
                    None => out.len(),
                };
                if n == out.len() {
                    std::mem::take(&mut *out)
                } else {
                    out.drain(..n).collect()
                }
            } else if to.closed.get() || to.lose_requested.get() || to.abort_requested.get() {
                // The receiver stopped reading for good: the bytes are lost.
                from.out.borrow_mut().clear();
                Vec::new()
            } else {
                Vec::new() // paused: wait
            }
        };
        let mut taken = Vec::with_capacity(2);
        for (i, (from, to)) in order.into_iter().enumerate() {
            if !held[i] {
                taken.push((to, take(self.end(from), self.end(to))));
            }
        }
        for (to, data) in taken {
            if !data.is_empty() && !self.end(to).closed.get() {
                moved = true;
                self.data_received(to, &data);
            }
        }
        self.client_end.check_low_water();
        self.server_end.check_low_water();

        // 4. Half-closes whose data is delivered.
        for (i, (side, other)) in order.into_iter().enumerate() {
            let (end, peer) = (self.end(side), self.end(other));
            if !held[i]
                && end.half_close_requested.get()
                && !end.write_shut.get()
                && !end.closed.get()
                && end.out.borrow().is_empty()
                && !peer.reading_paused.get()
            {
                end.write_shut.set(true);
                moved = true;
                if !peer.lose_requested.get() && !peer.abort_requested.get() {
                    let keep_open = self.eof_received(other);
                    if !keep_open {
                        peer.lose_connection();
                    }
                }
            }
        }

        // 5. Closes whose data is delivered.
        for (i, (side, _)) in order.into_iter().enumerate() {
            let end = self.end(side);
            if end.abort_requested.get() {
                // Aborted during this step: handled at the next step.
                moved = true;
                continue;
            }
            if !held[i]
                && end.lose_requested.get()
                && !end.closed.get()
                && end.out.borrow().is_empty()
            {
                self.close(side, ConnectionLost::Done, ConnectionLost::Done);
                return true;
            }
        }
        if self.client_end.write_shut.get() && self.server_end.write_shut.get() {
            self.close(Side::Client, ConnectionLost::Done, ConnectionLost::Done);
            return true;
        }
        moved
    }

    /// Pumps until a step moves nothing. Returns whether anything moved, or
    /// [`NotSettled`] if [`FLUSH_LIMIT`] steps all moved something (the
    /// protocols ping-pong forever).
    pub fn flush(&self) -> Result<bool, NotSettled> {
        let mut any = false;
        for _ in 0..FLUSH_LIMIT {
            if !self.pump() {
                return Ok(any);
            }
            any = true;
        }
        Err(NotSettled { steps: FLUSH_LIMIT })
    }

    /// Runs `f` on the client protocol.
    ///
    /// # Panics
    /// If called from inside one of the client's own methods (its `RefCell`
    /// is borrowed then).
    pub fn with_client<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut self.client.borrow_mut())
    }

    /// Runs `f` on the server protocol.
    ///
    /// # Panics
    /// If called from inside one of the server's own methods.
    pub fn with_server<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.server.borrow_mut())
    }

    /// A shared handle on the client protocol.
    pub fn client(&self) -> Rc<RefCell<C>> {
        self.client.clone()
    }

    /// A shared handle on the server protocol.
    pub fn server(&self) -> Rc<RefCell<S>> {
        self.server.clone()
    }

    /// The client's transport (as given to its `connection_made`), to write
    /// or close from the test.
    pub fn client_transport(&self) -> Transport {
        Transport::new(self.client_end.clone())
    }

    /// The server's transport.
    pub fn server_transport(&self) -> Transport {
        Transport::new(self.server_end.clone())
    }

    /// Whether the connection has closed (both sides got `connection_lost`).
    pub fn is_closed(&self) -> bool {
        self.client_end.closed.get() && self.server_end.closed.get()
    }

    /// Bytes the client wrote that the server has not received yet.
    pub fn client_pending(&self) -> usize {
        self.client_end.out.borrow().len()
    }

    /// Bytes the server wrote that the client has not received yet.
    pub fn server_pending(&self) -> usize {
        self.server_end.out.borrow().len()
    }
}

impl<C: Protocol, S: Protocol> fmt::Debug for IoPump<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoPump")
            .field("client_pending", &self.client_pending())
            .field("server_pending", &self.server_pending())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records everything that happens to it; optionally echoes.
    #[derive(Default)]
    struct Recorder {
        transport: Option<Transport>,
        received: Vec<u8>,
        lost: Vec<String>,
        eofs: usize,
        keep_open_on_eof: bool,
        echo: bool,
        greeting: Option<&'static [u8]>,
    }

    impl Protocol for Recorder {
        fn connection_made(&mut self, transport: Transport) {
            if let Some(g) = self.greeting {
                transport.write(g);
            }
            self.transport = Some(transport);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.received.extend_from_slice(data);
            if self.echo {
                if let Some(t) = &self.transport {
                    t.write(data);
                }
            }
        }
        fn eof_received(&mut self) -> bool {
            self.eofs += 1;
            self.keep_open_on_eof
        }
        fn connection_lost(&mut self, reason: ConnectionLost) {
            self.lost.push(match reason {
                ConnectionLost::Done => "done".into(),
                ConnectionLost::Aborted => "aborted".into(),
                ConnectionLost::Error(e) => format!("error:{:?}", e.kind()),
                other => other.to_string(),
            });
        }
    }

    fn t(r: &mut Recorder) -> Transport {
        r.transport.clone().expect("connected")
    }

    #[test]
    fn string_transport_records_writes_and_state() {
        let st = StringTransport::new();
        let t = st.transport();
        t.write(b"ab");
        t.write_sequence(&[b"c", b"de"]);
        assert_eq!(st.value(), b"abcde");
        assert_eq!(st.take_value(), b"abcde");
        assert!(st.value().is_empty());
        assert!(!st.disconnecting() && !t.is_closing());
        t.half_close();
        assert!(st.write_side_closed());
        t.lose_connection();
        assert!(st.disconnecting() && t.is_closing() && !st.aborted());
        t.write(b"after lose"); // recorded, as in Twisted
        assert_eq!(st.value(), b"after lose");
        t.abort_connection();
        assert!(st.aborted());
        t.write(b"after abort"); // ignored
        assert_eq!(st.value(), b"after lose");
        st.clear();
        assert!(st.value().is_empty());
    }

    #[test]
    fn string_transport_flow_control_and_addresses() {
        struct P(Cell<u32>);
        impl Producer for P {
            fn pause_producing(&self) {
                self.0.set(self.0.get() + 1);
            }
            fn resume_producing(&self) {}
        }
        let st = StringTransport::new();
        let t = st.transport();
        assert_eq!(t.peer_addr(), Some(addr(192, 168, 1, 1, 54321)));
        assert_eq!(t.local_addr(), Some(addr(10, 0, 0, 1, 12345)));
        assert!(!st.reading_paused());
        t.pause_reading();
        assert!(st.reading_paused());
        t.resume_reading();
        assert!(!st.reading_paused());
        assert_eq!(
            st.write_buffer_limits(),
            (DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER)
        );
        t.set_write_buffer_limits(10, 20);
        assert_eq!(st.write_buffer_limits(), (10, 10));
        assert_eq!(t.buffered_len(), 0);
        st.set_buffered_len(99);
        assert_eq!(t.buffered_len(), 99);
        t.set_nodelay(false).unwrap();
        assert!(!st.nodelay());
        assert!(st.producer().is_none());
        let p = Rc::new(P(Cell::new(0)));
        t.register_producer(p.clone());
        st.producer().expect("registered").pause_producing();
        assert_eq!(p.0.get(), 1);
        t.unregister_producer();
        assert!(st.producer().is_none());

        let a = addr(1, 2, 3, 4, 5);
        let b = addr(5, 6, 7, 8, 9);
        let st = StringTransport::with_addresses(a, b);
        assert_eq!(st.transport().peer_addr(), Some(a));
        assert_eq!(st.transport().local_addr(), Some(b));
        assert!(format!("{st:?}").contains("StringTransport"));
    }

    /// Counts how deep `data_received` calls nest and echoes every byte.
    struct DepthEcho {
        transport: Option<Transport>,
        depth: Rc<Cell<u32>>,
        max_depth: Rc<Cell<u32>>,
        calls: u32,
        greet: bool,
    }

    impl Protocol for DepthEcho {
        fn connection_made(&mut self, transport: Transport) {
            if self.greet {
                transport.write(b"ping");
            }
            self.transport = Some(transport);
        }
        fn data_received(&mut self, data: &[u8]) {
            // Shared between both sides: a nested delivery to the peer would
            // show up as depth 2.
            self.depth.set(self.depth.get() + 1);
            self.max_depth
                .set(self.max_depth.get().max(self.depth.get()));
            self.calls += 1;
            if let Some(t) = &self.transport {
                t.write(data);
            }
            self.depth.set(self.depth.get() - 1);
        }
    }

    #[test]
    fn write_never_delivers_on_the_writers_stack() {
        let depth = Rc::new(Cell::new(0));
        let max_depth = Rc::new(Cell::new(0));
        let make = |greet| DepthEcho {
            transport: None,
            depth: depth.clone(),
            max_depth: max_depth.clone(),
            calls: 0,
            greet,
        };
        let pump = connect_in_memory(make(true), make(false));
        assert_eq!(pump.client_pending(), 4);
        for _ in 0..10 {
            assert!(pump.pump());
        }
        assert_eq!(max_depth.get(), 1);
        // Each step moves the ping once: 10 deliveries split between sides.
        let total = pump.with_client(|c| c.calls) + pump.with_server(|s| s.calls);
        assert_eq!(total, 10);
        // Two echoes talk forever: flush reports that it did not settle.
        assert_eq!(pump.flush(), Err(NotSettled { steps: FLUSH_LIMIT }));
        assert!(NotSettled { steps: 1 }.to_string().contains("1 pump steps"));
        assert_eq!(max_depth.get(), 1);
    }

    #[test]
    fn flush_delivers_both_ways_and_reports_quiet() {
        let client = Recorder {
            greeting: Some(b"hello"),
            ..Recorder::default()
        };
        let server = Recorder {
            echo: true,
            ..Recorder::default()
        };
        let pump = connect_in_memory(client, server);
        assert_eq!(pump.flush(), Ok(true));
        assert_eq!(pump.with_server(|s| s.received.clone()), b"hello");
        assert_eq!(pump.with_client(|c| c.received.clone()), b"hello");
        assert_eq!(pump.flush(), Ok(false));
        assert!(!pump.is_closed());
        let ct = pump.client_transport();
        assert_eq!(ct.peer_addr(), Some(PUMP_SERVER_ADDR));
        assert_eq!(ct.local_addr(), Some(PUMP_CLIENT_ADDR));
        assert_eq!(pump.server().borrow().received, b"hello");
        assert!(pump.client().borrow().lost.is_empty());
        assert!(format!("{pump:?}").contains("IoPump"));
    }

    #[test]
    fn lose_connection_flushes_then_closes_both_once() {
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_client(|c| {
            let t = t(c);
            t.write(b"last words");
            t.lose_connection();
            t.write(b"dropped"); // after lose_connection
            assert!(t.is_closing());
        });
        assert!(pump.pump()); // delivers, then closes
        assert_eq!(pump.with_server(|s| s.received.clone()), b"last words");
        assert!(pump.is_closed());
        assert_eq!(pump.with_client(|c| c.lost.clone()), ["done"]);
        assert_eq!(pump.with_server(|s| s.lost.clone()), ["done"]);
        // Nothing more happens, and connection_lost is not repeated.
        pump.with_server(|s| t(s).lose_connection());
        assert_eq!(pump.flush(), Ok(false));
        assert_eq!(pump.with_server(|s| s.lost.len()), 1);
        assert_eq!(pump.with_client(|c| c.lost.len()), 1);
    }

    #[test]
    fn lose_connection_with_nothing_buffered_closes_on_next_pump() {
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_server(|s| t(s).lose_connection());
        assert!(pump.with_server(|s| s.lost.is_empty()));
        assert_eq!(pump.flush(), Ok(true));
        assert_eq!(pump.with_server(|s| s.lost.clone()), ["done"]);
        assert_eq!(pump.with_client(|c| c.lost.clone()), ["done"]);
    }

    #[test]
    fn abort_reports_aborted_and_reset() {
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_client(|c| {
            let t = t(c);
            t.write(b"never delivered");
            t.abort_connection();
        });
        pump.with_server(|s| t(s).write(b"also dropped"));
        assert!(pump.pump());
        assert!(pump.is_closed());
        assert_eq!(pump.with_client(|c| c.lost.clone()), ["aborted"]);
        assert_eq!(
            pump.with_server(|s| s.lost.clone()),
            ["error:ConnectionReset"]
        );
        assert!(pump.with_server(|s| s.received.is_empty()));
        assert!(pump.with_client(|c| c.received.is_empty()));
        assert!(!pump.pump());
    }

    #[test]
    fn half_close_gives_eof_and_default_closes() {
        // The server returns false from eof_received: it loses the connection.
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_client(|c| {
            let t = t(c);
            t.write(b"request");
            t.half_close();
            t.write(b"ignored");
        });
        pump.flush().unwrap();
        assert_eq!(
            pump.with_server(|s| (s.received.clone(), s.eofs)),
            (b"request".to_vec(), 1)
        );
        assert!(pump.is_closed());
        assert_eq!(pump.with_client(|c| c.lost.clone()), ["done"]);
        assert_eq!(pump.with_server(|s| s.lost.clone()), ["done"]);
    }

    #[test]
    fn half_close_keep_open_lets_the_peer_answer() {
        let server = Recorder {
            keep_open_on_eof: true,
            ..Recorder::default()
        };
        let pump = connect_in_memory(Recorder::default(), server);
        pump.with_client(|c| {
            let t = t(c);
            t.write(b"q");
            t.half_close();
        });
        pump.flush().unwrap();
        assert_eq!(pump.with_server(|s| s.eofs), 1);
        assert!(!pump.is_closed());
        // The server answers and closes; the client still reads.
        pump.with_server(|s| {
            let t = t(s);
            t.write(b"answer");
            t.lose_connection();
        });
        pump.flush().unwrap();
        assert_eq!(pump.with_client(|c| c.received.clone()), b"answer");
        assert!(pump.is_closed());
        assert_eq!(pump.with_client(|c| c.lost.clone()), ["done"]);
        assert_eq!(pump.with_client(|c| c.eofs), 0);
    }

    #[test]
    fn both_half_closed_closes() {
        let keep = || Recorder {
            keep_open_on_eof: true,
            ..Recorder::default()
        };
        let pump = connect_in_memory(keep(), keep());
        pump.with_client(|c| t(c).half_close());
        pump.with_server(|s| t(s).half_close());
        pump.flush().unwrap();
        assert!(pump.is_closed());
        assert_eq!(
            pump.with_client(|c| (c.eofs, c.lost.clone())),
            (1, vec!["done".to_string()])
        );
        assert_eq!(
            pump.with_server(|s| (s.eofs, s.lost.clone())),
            (1, vec!["done".to_string()])
        );
    }

    #[test]
    fn pause_reading_holds_delivery() {
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_server(|s| t(s).pause_reading());
        pump.with_client(|c| t(c).write(b"held"));
        assert_eq!(pump.flush(), Ok(false));
        assert!(pump.with_server(|s| s.received.is_empty()));
        assert_eq!(pump.client_pending(), 4);
        assert_eq!(pump.client_transport().buffered_len(), 4);
        // A close waits for the held bytes too.
        pump.with_client(|c| t(c).lose_connection());
        assert_eq!(pump.flush(), Ok(false));
        assert!(!pump.is_closed());
        pump.with_server(|s| t(s).resume_reading());
        assert_eq!(pump.flush(), Ok(true));
        assert_eq!(pump.with_server(|s| s.received.clone()), b"held");
        assert!(pump.is_closed());
    }

    #[test]
    fn data_to_a_closing_side_is_dropped() {
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        pump.with_client(|c| t(c).lose_connection());
        pump.with_server(|s| t(s).write(b"too late"));
        pump.flush().unwrap();
        assert!(pump.with_client(|c| c.received.is_empty()));
        assert!(pump.is_closed());
    }

    #[test]
    fn perturbed_pump_is_seeded_and_delivers_everything_in_order() {
        let run = |schedule: Perturbation| {
            let client = Recorder {
                greeting: Some(b"0123456789abcdefghijklmnopqrstuvwxyz"),
                ..Recorder::default()
            };
            let server = Recorder {
                echo: true,
                keep_open_on_eof: true,
                ..Recorder::default()
            };
            let pump = connect_in_memory_perturbed(client, server, schedule);
            pump.with_client(|c| t(c).half_close());
            pump.flush().unwrap();
            pump.with_server(|s| t(s).lose_connection());
            pump.flush().unwrap();
            assert!(pump.is_closed());
            let calls = pump.with_server(|s| (s.received.clone(), s.eofs, s.lost.clone()));
            assert_eq!(calls.0, b"0123456789abcdefghijklmnopqrstuvwxyz");
            assert_eq!((calls.1, calls.2), (1, vec!["done".to_string()]));
            assert_eq!(
                pump.with_client(|c| c.received.clone()),
                b"0123456789abcdefghijklmnopqrstuvwxyz"
            );
            format!("{pump:?}")
        };
        for seed in 0..20 {
            let all = Perturbation::new(seed)
                .short_reads(5)
                .partial_writes()
                .shuffle_events()
                .sleep_before_poll(std::time::Duration::from_secs(1));
            run(all.clone());
            run(Perturbation::new(seed).short_reads(1));
            run(Perturbation::new(seed).sleep_before_poll(std::time::Duration::ZERO));
        }
    }

    #[test]
    fn producer_paused_above_high_water_and_resumed_after_drain() {
        #[derive(Default)]
        struct Counts {
            paused: Cell<u32>,
            resumed: Cell<u32>,
            stopped: Cell<u32>,
        }
        impl Producer for Counts {
            fn pause_producing(&self) {
                self.paused.set(self.paused.get() + 1);
            }
            fn resume_producing(&self) {
                self.resumed.set(self.resumed.get() + 1);
            }
            fn stop_producing(&self) {
                self.stopped.set(self.stopped.get() + 1);
            }
        }
        let pump = connect_in_memory(Recorder::default(), Recorder::default());
        let p = Rc::new(Counts::default());
        let ct = pump.client_transport();
        ct.set_write_buffer_limits(4, 2);
        ct.register_producer(p.clone());
        ct.write(b"12345"); // above high water
        pump.with_server(|s| t(s).pause_reading());
        assert!(!pump.pump());
        assert_eq!((p.paused.get(), p.resumed.get()), (1, 0));
        assert!(!pump.pump()); // still paused, not paused twice
        assert_eq!(p.paused.get(), 1);
        pump.with_server(|s| t(s).resume_reading());
        assert!(pump.pump());
        assert_eq!((p.paused.get(), p.resumed.get()), (1, 1));
        ct.lose_connection();
        pump.flush().unwrap();
        assert_eq!(p.stopped.get(), 1);
        assert_eq!(Rc::strong_count(&p), 1, "producer released on close");
    }
}
