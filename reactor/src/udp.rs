//! UDP: [`Reactor::listen_udp`], [`DatagramProtocol`] and [`UdpPort`]
//! (Twisted's `listenUDP`, `DatagramProtocol` and its port).
//!
//! ```
//! use std::net::{SocketAddr, UdpSocket};
//! use std::time::Duration;
//! use gyre_reactor::{DatagramProtocol, Reactor, UdpPort};
//!
//! /// Sends every datagram back where it came from (Twisted's UDP echo).
//! #[derive(Default)]
//! struct Echo(Option<UdpPort>);
//!
//! impl DatagramProtocol for Echo {
//!     fn start_protocol(&mut self, port: UdpPort) {
//!         self.0 = Some(port);
//!     }
//!     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
//!         if let Some(port) = &self.0 {
//!             let _ = port.write_to(data, from);
//!         }
//!     }
//! }
//!
//! let reactor = Reactor::builder().install_signal_handlers(false).build()?;
//! let port = reactor.listen_udp("127.0.0.1:0".parse()?, Echo::default())?;
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.send_to(b"ping", port.local_addr())?;
//! // The echo is written from inside `datagram_received`.
//! assert!(reactor.run_until(|| port.stats().received == 1, Duration::from_secs(5)).unwrap());
//! let mut buf = [0u8; 16];
//! let (n, from) = client.recv_from(&mut buf)?;
//! assert_eq!((&buf[..n], from), (&b"ping"[..], port.local_addr()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contract
//!
//! - **A datagram is delivered whole or not at all; it is never cut.** A
//!   port reads into a buffer one byte larger than its limit
//!   ([`UdpOptions::max_datagram`], default [`DEFAULT_MAX_DATAGRAM`], which
//!   is larger than any UDP payload), so a datagram that fills the buffer
//!   was larger than the limit and truncated by the kernel: it is dropped,
//!   counted ([`UdpStats::truncated`]), logged (at warn level the first
//!   time on a port, at debug level after that) and reported to
//!   [`DatagramProtocol::datagram_truncated`].
//! - **Reading is fair**: a readiness event reads at most 64 datagrams;
//!   if more wait, the port asks the poller to report it again and goes
//!   on at the next iteration, after other sources had their turn.
//! - **A write never blocks and never calls back into the protocol.**
//!   [`UdpPort::write_to`] hands the datagram to the kernel ([`Sent::Now`]);
//!   if the kernel's buffer is full it is copied into the port's send
//!   queue and sent when the socket is writable ([`Sent::Queued`]), in
//!   order; if the queue is full too it is dropped ([`Sent::Dropped`]),
//!   counted ([`UdpStats::dropped`]) and logged once per episode (when the
//!   queue fills, and with the count when it has drained). The queue is
//!   bounded by [`UdpOptions::send_queue`] (defaults
//!   [`DEFAULT_SEND_QUEUE_DATAGRAMS`] datagrams and
//!   [`DEFAULT_SEND_QUEUE_BYTES`] bytes). Twisted raises `EWOULDBLOCK` to
//!   the caller instead, which most callers drop anyway; a small queue
//!   rides out a burst. The errors the kernel gives for one datagram (too
//!   long, no route, broadcast not allowed) are returned by the write.
//! - **Connected UDP** ([`UdpPort::connect`]): only the peer's datagrams
//!   arrive, [`UdpPort::write`] sends to it, and when the peer's host
//!   answers "port unreachable" the protocol hears
//!   [`DatagramProtocol::connection_refused`], from the loop, whichever
//!   system call found the error (a write that finds it also returns the
//!   `ConnectionRefused` error for its own datagram). Unconnected ports
//!   never hear of refusals (the kernel does not tell them), as in Twisted.
//! - **A panic in `datagram_received` costs only that datagram**, as in
//!   Twisted: it is logged with the port and the sender, and the port
//!   reads on. A panic in `start_protocol` fails
//!   [`listen_udp`](Reactor::listen_udp) and closes the port; in the other
//!   methods it is logged.
//! - **Stopping** ([`UdpPort::stop_listening`]) closes the socket at once
//!   (queued datagrams get one last nonblocking try; the rest are dropped
//!   and logged); [`DatagramProtocol::stop_protocol`] comes from the loop,
//!   never on the caller's stack, and then the returned Deferred fires.
//!   At reactor shutdown every port still listening stops, and
//!   `stop_protocol` is called during the shutdown.
//! - Under a test schedule perturbation
//!   ([`ReactorBuilder::perturb`](crate::ReactorBuilder::perturb)), short
//!   reads and partial writes do not apply to datagrams (a datagram is
//!   read and written whole); shuffled events and sleeps do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};

use socket2::{Domain, SockRef, Socket, Type};

use crate::core::{guard, EventSource, Inner, Reactor, Readiness, SlotKind};
use crate::defer::{succeed, Deferred, Resolver};

/// The default largest datagram a port delivers
/// ([`UdpOptions::max_datagram`]): 65,535 bytes, more than any UDP payload
/// (65,507 over IPv4, 65,527 over IPv6), so by default nothing is too
/// large. It is also the most a port can be set to.
pub const DEFAULT_MAX_DATAGRAM: usize = 65_535;
/// The default most datagrams a port's send queue holds
/// ([`UdpOptions::send_queue`]).
pub const DEFAULT_SEND_QUEUE_DATAGRAMS: usize = 512;
/// The default most bytes a port's send queue holds (1 MiB;
/// [`UdpOptions::send_queue`]).
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;
/// Datagrams read per readiness event before the port yields.
const DATAGRAMS_PER_EVENT: usize = 64;

/// The user side of a UDP port (Twisted's `DatagramProtocol`).
///
/// The reactor calls these methods from its loop, never re-entrantly: a
/// [`UdpPort`] method called from inside them (`write_to`,
/// `stop_listening`) never calls back into the protocol on the same stack.
///
/// ```
/// use std::net::SocketAddr;
/// use gyre_reactor::{DatagramProtocol, UdpPort};
///
/// /// Counts datagrams and answers each with its length.
/// #[derive(Default)]
/// struct Lengths { port: Option<UdpPort>, seen: u64 }
///
/// impl DatagramProtocol for Lengths {
///     fn start_protocol(&mut self, port: UdpPort) { self.port = Some(port); }
///     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
///         self.seen += 1;
///         if let Some(port) = &self.port {
///             let _ = port.write_to(data.len().to_string().as_bytes(), from);
///         }
///     }
///     fn stop_protocol(&mut self) { println!("{} datagrams", self.seen); }
/// }
/// ```
pub trait DatagramProtocol: 'static {
    /// The port is listening (called once, from
    /// [`Reactor::listen_udp`]); keep `port` to write and stop. A panic
    /// here fails `listen_udp`.
    fn start_protocol(&mut self, port: UdpPort) {
        let _ = port;
    }

    /// A datagram arrived from `from`. `data` is borrowed from the
    /// reactor's read buffer and only valid during the call; copy what
    /// you keep. Every byte is the sender's: trust none of it.
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr);

    /// A datagram from `from` was larger than the port's limit
    /// ([`UdpOptions::max_datagram`], `limit` bytes): the kernel cut it,
    /// so it was dropped (never delivered cut). The default does nothing
    /// (the reactor counts and logs it).
    fn datagram_truncated(&mut self, from: SocketAddr, limit: usize) {
        let _ = (from, limit);
    }

    /// A connected port's peer refused a datagram (ICMP port unreachable:
    /// nothing listens there). Called from the loop; the port stays open,
    /// and later datagrams may get through if the peer starts listening.
    fn connection_refused(&mut self) {}

    /// The port stopped listening (called once, from the loop, after
    /// [`UdpPort::stop_listening`] or at reactor shutdown).
    fn stop_protocol(&mut self) {}
}

/// A boxed protocol is a protocol (for ports whose protocol type is chosen
/// at run time).
impl DatagramProtocol for Box<dyn DatagramProtocol> {
    fn start_protocol(&mut self, port: UdpPort) {
        (**self).start_protocol(port)
    }
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        (**self).datagram_received(data, from)
    }
    fn datagram_truncated(&mut self, from: SocketAddr, limit: usize) {
        (**self).datagram_truncated(from, limit)
    }
    fn connection_refused(&mut self) {
        (**self).connection_refused()
    }
    fn stop_protocol(&mut self) {
        (**self).stop_protocol()
    }
}

/// How a UDP port is set up, for [`Reactor::listen_udp_with`]; the default
/// is what [`Reactor::listen_udp`] does.
///
/// ```
/// use gyre_reactor::UdpOptions;
///
/// let options = UdpOptions::new()
///     .reuse_address(true)    // several ports on one multicast port number
///     .max_datagram(1500)     // larger datagrams are reported, not delivered
///     .send_queue(64, 64 * 1024);
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
pub struct UdpOptions {
    reuse_address: bool,
    max_datagram: usize,
    queue_datagrams: usize,
    queue_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            reuse_address: false,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            queue_datagrams: DEFAULT_SEND_QUEUE_DATAGRAMS,
            queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
        }
    }
}

impl UdpOptions {
    /// The defaults: no `SO_REUSEADDR`, [`DEFAULT_MAX_DATAGRAM`], a send
    /// queue of [`DEFAULT_SEND_QUEUE_DATAGRAMS`] datagrams and
    /// [`DEFAULT_SEND_QUEUE_BYTES`] bytes.
    ///
    /// ```
    /// use gyre_reactor::UdpOptions;
    /// let options = UdpOptions::new();
    /// # drop(options);
    /// ```
    pub fn new() -> UdpOptions {
        UdpOptions::default()
    }

    /// Sets `SO_REUSEADDR` before binding (default off), so that several
    /// ports (in this process or others that set it too) bind the same
    /// address and port: each gets every multicast datagram sent there
    /// (Twisted's `listenMulticast(..., listenMultiple=True)`).
    ///
    /// ```
    /// use gyre_reactor::UdpOptions;
    /// let options = UdpOptions::new().reuse_address(true);
    /// # drop(options);
    /// ```
    pub fn reuse_address(mut self, reuse: bool) -> Self {
        self.reuse_address = reuse;
        self
    }

    /// The largest datagram delivered, in bytes (default
    /// [`DEFAULT_MAX_DATAGRAM`], which is also the most it can be set to:
    /// larger values are lowered to it). A larger datagram is dropped and
    /// reported to [`DatagramProtocol::datagram_truncated`], never
    /// delivered cut.
    ///
    /// ```
    /// use gyre_reactor::UdpOptions;
    /// let options = UdpOptions::new().max_datagram(512); // DNS over UDP
    /// # drop(options);
    /// ```
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes.min(DEFAULT_MAX_DATAGRAM);
        self
    }

    /// Bounds the send queue that holds datagrams the kernel could not
    /// take at once (defaults [`DEFAULT_SEND_QUEUE_DATAGRAMS`] and
    /// [`DEFAULT_SEND_QUEUE_BYTES`]). A datagram that would exceed either
    /// bound is dropped and counted. `send_queue(0, 0)` drops at once
    /// whatever the kernel does not take (Twisted's behaviour, without the
    /// exception).
    ///
    /// ```
    /// use gyre_reactor::UdpOptions;
    /// let options = UdpOptions::new().send_queue(16, 16 * 1024);
    /// # drop(options);
    /// ```
    pub fn send_queue(mut self, datagrams: usize, bytes: usize) -> Self {
        self.queue_datagrams = datagrams;
        self.queue_bytes = bytes;
        self
    }
}

/// What [`UdpPort::write_to`] did with a datagram.
///
/// ```
/// use std::net::SocketAddr;
/// use gyre_reactor::{DatagramProtocol, Reactor, Sent};
///
/// struct Ignore;
/// impl DatagramProtocol for Ignore {
///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
/// }
///
/// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
/// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
/// match port.write_to(b"hello", port.local_addr())? {
///     Sent::Now | Sent::Queued => {}
///     Sent::Dropped => eprintln!("the send queue is full"),
///     _ => {}
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Handed to the kernel.
    Now,
    /// The kernel's buffer was full: queued, sent when the socket is
    /// writable.
    Queued,
    /// The kernel's buffer and the send queue were full: dropped (counted
    /// in [`UdpStats::dropped`]).
    Dropped,
}

/// A UDP port's counters, from [`UdpPort::stats`] (they stay readable after
/// the port stopped).
///
/// ```
/// use gyre_reactor::UdpStats;
/// let stats = UdpStats::default();
/// assert_eq!(stats.received + stats.truncated, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams delivered to `datagram_received`.
    pub received: u64,
    /// Datagrams dropped for being larger than the limit.
    pub truncated: u64,
    /// Datagrams handed to the kernel (at once or from the queue).
    pub sent: u64,
    /// Datagrams dropped because the send queue was full, or because the
    /// kernel refused them when sent from the queue.
    pub dropped: u64,
    /// Datagrams waiting in the send queue now.
    pub queued: usize,
}

/// Whether the port is connected (`connect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Any,
    Connected(SocketAddr),
}

/// Where a queued datagram goes.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The connected peer (`write`).
    Peer,
    /// An explicit address (`write_to`).
    To(SocketAddr),
}

/// The socket, while the port listens.
enum PortState {
    Open(mio::net::UdpSocket),
    Closed,
}

/// Where the protocol is.
enum ProtocolSlot {
    /// Between callbacks.
    Idle(Box<dyn DatagramProtocol>),
    /// Taken out for a callback.
    Busy,
    /// `stop_protocol` was delivered (or `start_protocol` failed): gone.
    Done,
}

/// What the poller reports for the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registered {
    /// Readable only: nothing waits in the send queue.
    Read,
    /// Readable and writable: datagrams wait in the send queue.
    ReadWrite,
}

/// Whether datagrams are being dropped for a full send queue (logged once
/// per episode).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dropping {
    No,
    /// Since the queue filled, this many were dropped.
    Since(u64),
}

struct SendQueue {
    datagrams: VecDeque<(Vec<u8>, Target)>,
    bytes: usize,
    dropping: Dropping,
}

/// One UDP port: the slot's [`EventSource`].
struct Port {
    reactor: Weak<Inner>,
    local: SocketAddr,
    token: Cell<usize>,
    state: RefCell<PortState>,
    peer: Cell<Peer>,
    registered: Cell<Registered>,
    protocol: RefCell<ProtocolSlot>,
    queue: RefCell<SendQueue>,
    options: UdpOptions,
    stats: Rc<Cell<UdpStats>>,
    /// Whether an oversized datagram was logged at warn level already.
    truncation_logged: Cell<bool>,
    /// Deferreds of `stop_listening`, fired after `stop_protocol`.
    stop_waiters: RefCell<Vec<Resolver<()>>>,
    self_weak: Weak<Port>,
}

/// A UDP port (Twisted's UDP `Port`), from [`Reactor::listen_udp`]: writes
/// datagrams, connects, joins multicast groups, stops. A cheap `Clone`
/// that does not keep the port open (the reactor does, until
/// [`stop_listening`](Self::stop_listening)), so a protocol keeps one
/// without a reference cycle.
///
/// ```
/// use std::net::SocketAddr;
/// use gyre_reactor::{DatagramProtocol, Reactor, Sent};
///
/// struct Ignore;
/// impl DatagramProtocol for Ignore {
///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
/// }
///
/// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
/// let a = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
/// let b = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
/// assert_eq!(a.write_to(b"hello", b.local_addr())?, Sent::Now);
/// a.stop_listening();
/// assert!(!a.is_listening());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct UdpPort {
    port: Weak<Port>,
    local: SocketAddr,
    stats: Rc<Cell<UdpStats>>,
}

impl fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpPort")
            .field("local_addr", &self.local)
            .field("listening", &self.is_listening())
            .finish()
    }
}

/// The error of an operation on a port that stopped.
fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the UDP port has stopped")
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl UdpPort {
    /// The address the port is bound to (with the real port when 0 was
    /// asked). Still answers after the port stopped.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert_ne!(port.local_addr().port(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the port is still listening.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert!(port.is_listening());
    /// port.stop_listening();
    /// assert!(!port.is_listening());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_listening(&self) -> bool {
        self.live().is_some()
    }

    /// The port's counters.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.write_to(b"to myself", port.local_addr())?;
    /// assert_eq!(port.stats().sent, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> UdpStats {
        self.stats.get()
    }

    /// Sends `data` as one datagram to `addr`; see the module docs for
    /// what happens when the kernel's buffer is full ([`Sent`]). Never
    /// calls back into the protocol.
    ///
    /// Errors: the port stopped (`NotConnected`); `addr` is of the other
    /// address family, or differs from the connected peer
    /// (`InvalidInput`); what the kernel says of this datagram (too long,
    /// no route, `ConnectionRefused` for a connected port whose peer
    /// refused an earlier one).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor, Sent};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(port.write_to(b"hi", peer.local_addr()?)?, Sent::Now);
    /// let mut buf = [0u8; 8];
    /// assert_eq!(peer.recv(&mut buf)?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_to(&self, data: &[u8], addr: SocketAddr) -> io::Result<Sent> {
        self.live().ok_or_else(closed)?.send(data, Target::To(addr))
    }

    /// Sends `data` as one datagram to the connected peer
    /// ([`connect`](Self::connect)); `NotConnected` if the port is not
    /// connected. Otherwise as [`write_to`](Self::write_to).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor, Sent};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert!(port.write(b"to whom?").is_err());
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// port.connect(peer.local_addr()?)?;
    /// assert_eq!(port.write(b"to you")?, Sent::Now);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write(&self, data: &[u8]) -> io::Result<Sent> {
        self.live().ok_or_else(closed)?.send(data, Target::Peer)
    }

    /// Connects the port to `addr` (Twisted's `connect`): only datagrams
    /// from `addr` arrive from now on, [`write`](Self::write) sends there,
    /// and a refusal by `addr`'s host reaches
    /// [`DatagramProtocol::connection_refused`]. Connecting again moves the
    /// port to the new peer. `addr` must be of the port's address family.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// let peer: SocketAddr = "127.0.0.1:5353".parse()?;
    /// port.connect(peer)?;
    /// assert_eq!(port.connected_addr(), Some(peer));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        let port = self.live().ok_or_else(closed)?;
        port.check_family(addr)?;
        port.with_socket(|s| s.connect(addr))?;
        port.peer.set(Peer::Connected(addr));
        log::debug!("UDP port {} connected to {addr}", self.local);
        Ok(())
    }

    /// The connected peer, if [`connect`](Self::connect) was called.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert_eq!(port.connected_addr(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connected_addr(&self) -> Option<SocketAddr> {
        match self.live()?.peer.get() {
            Peer::Any => None,
            Peer::Connected(addr) => Some(addr),
        }
    }

    /// Joins the IPv4 multicast `group` on the interface with address
    /// `interface` (`Ipv4Addr::UNSPECIFIED`: the kernel's choice; Twisted's
    /// `joinGroup`). Datagrams sent to the group and the port's port number
    /// then arrive here; bind the port to the group address (or to
    /// `0.0.0.0`) to receive them. An IPv4 port only.
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let group = Ipv4Addr::new(239, 255, 0, 42);
    /// let port = reactor.listen_udp(SocketAddr::from((group, 0)), Ignore)?;
    /// port.join_group(group, Ipv4Addr::LOCALHOST)?;
    /// port.leave_group(group, Ipv4Addr::LOCALHOST)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_group(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        let port = self.v4("join_group")?;
        port.with_socket(|s| s.join_multicast_v4(&group, &interface))
    }

    /// Leaves an IPv4 multicast group joined with
    /// [`join_group`](Self::join_group) (Twisted's `leaveGroup`).
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("0.0.0.0:0".parse()?, Ignore)?;
    /// let group = Ipv4Addr::new(239, 255, 0, 43);
    /// // Leaving a group never joined is an error.
    /// assert!(port.leave_group(group, Ipv4Addr::LOCALHOST).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leave_group(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        let port = self.v4("leave_group")?;
        port.with_socket(|s| s.leave_multicast_v4(&group, &interface))
    }

    /// Joins the IPv6 multicast `group` on the interface with index
    /// `interface` (0: the kernel's choice). An IPv6 port only.
    ///
    /// ```no_run
    /// use std::net::{Ipv6Addr, SocketAddr};
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("[::]:0".parse()?, Ignore)?;
    /// port.join_group_v6("ff02::1:3".parse()?, 0)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_group_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        let port = self.v6("join_group_v6")?;
        port.with_socket(|s| s.join_multicast_v6(&group, interface))
    }

    /// Leaves an IPv6 multicast group joined with
    /// [`join_group_v6`](Self::join_group_v6).
    ///
    /// ```no_run
    /// use std::net::{Ipv6Addr, SocketAddr};
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let port = reactor.listen_udp("[::]:0".parse()?, Ignore)?;
    /// port.leave_group_v6("ff02::1:3".parse()?, 0)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leave_group_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        let port = self.v6("leave_group_v6")?;
        port.with_socket(|s| s.leave_multicast_v6(&group, interface))
    }

    /// Sets the time-to-live (IPv4) or hop limit (IPv6) of unicast
    /// datagrams the port sends.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.set_ttl(8)?;
    /// assert_eq!(port.ttl()?, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.set_ttl(ttl)
            } else {
                SockRef::from(s).set_unicast_hops_v6(ttl)
            }
        })
    }

    /// The time-to-live (IPv4) or hop limit (IPv6) of unicast datagrams.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert!(port.ttl()? > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ttl(&self) -> io::Result<u32> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.ttl()
            } else {
                SockRef::from(s).unicast_hops_v6()
            }
        })
    }

    /// Sets the time-to-live (IPv4) or hop limit (IPv6) of multicast
    /// datagrams (default 1: the local network; Twisted's `setTTL`).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.set_multicast_ttl(2)?;
    /// assert_eq!(port.multicast_ttl()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_multicast_ttl(&self, ttl: u32) -> io::Result<()> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.set_multicast_ttl_v4(ttl)
            } else {
                SockRef::from(s).set_multicast_hops_v6(ttl)
            }
        })
    }

    /// The time-to-live (IPv4) or hop limit (IPv6) of multicast datagrams.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert_eq!(port.multicast_ttl()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn multicast_ttl(&self) -> io::Result<u32> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.multicast_ttl_v4()
            } else {
                SockRef::from(s).multicast_hops_v6()
            }
        })
    }

    /// Whether multicast datagrams this port sends are also delivered to
    /// listeners on this host (default on; Twisted's `setLoopbackMode`).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.set_multicast_loopback(false)?;
    /// assert!(!port.multicast_loopback()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_multicast_loopback(&self, on: bool) -> io::Result<()> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.set_multicast_loop_v4(on)
            } else {
                s.set_multicast_loop_v6(on)
            }
        })
    }

    /// Whether multicast loopback is on.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert!(port.multicast_loopback()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn multicast_loopback(&self) -> io::Result<bool> {
        let v4 = self.local.is_ipv4();
        self.live().ok_or_else(closed)?.with_socket(|s| {
            if v4 {
                s.multicast_loop_v4()
            } else {
                s.multicast_loop_v6()
            }
        })
    }

    /// Sends multicast datagrams out of the interface with address
    /// `interface` (Twisted's `setOutgoingInterface`); for example
    /// `Ipv4Addr::LOCALHOST` keeps them on this host. An IPv4 port only.
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.set_multicast_interface(Ipv4Addr::LOCALHOST)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_multicast_interface(&self, interface: Ipv4Addr) -> io::Result<()> {
        let port = self.v4("set_multicast_interface")?;
        port.with_socket(|s| SockRef::from(s).set_multicast_if_v4(&interface))
    }

    /// Allows sending to broadcast addresses (`SO_BROADCAST`, default off;
    /// Twisted's `setBroadcastAllowed`).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// port.set_broadcast(true)?;
    /// assert!(port.broadcast()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.live()
            .ok_or_else(closed)?
            .with_socket(|s| s.set_broadcast(on))
    }

    /// Whether sending to broadcast addresses is allowed.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use gyre_reactor::{DatagramProtocol, Reactor};
    /// # struct Ignore;
    /// # impl DatagramProtocol for Ignore { fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {} }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Ignore)?;
    /// assert!(!port.broadcast()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn broadcast(&self) -> io::Result<bool> {
        self.live()
            .ok_or_else(closed)?
            .with_socket(|s| s.broadcast())
    }

    /// Stops listening (Twisted's `stopListening`): the socket is closed at
    /// once (queued datagrams get one last try), and
    /// [`DatagramProtocol::stop_protocol`] is called from the loop, never
    /// on this stack; the Deferred fires after it. Calling it again, or on
    /// a stopped port, does nothing more (the Deferred fires when the
    /// first one does).
    ///
    /// ```
    /// use std::{cell::Cell, net::SocketAddr, rc::Rc, time::Duration};
    /// use gyre_reactor::{DatagramProtocol, Reactor};
    ///
    /// struct Note(Rc<Cell<bool>>);
    /// impl DatagramProtocol for Note {
    ///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    ///     fn stop_protocol(&mut self) { self.0.set(true) }
    /// }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let stopped = Rc::new(Cell::new(false));
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Note(stopped.clone()))?;
    /// let done = port.stop_listening();
    /// assert!(!stopped.get(), "not on the caller's stack");
    /// assert!(reactor.run_until(|| done.called(), Duration::from_secs(5)).unwrap());
    /// assert!(stopped.get());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn stop_listening(&self) -> Deferred<()> {
        match self.port.upgrade() {
            Some(port) => port.stop_listening(),
            None => succeed(()),
        }
    }

    fn live(&self) -> Option<Rc<Port>> {
        self.port.upgrade().filter(|p| p.is_open())
    }

    fn v4(&self, what: &str) -> io::Result<Rc<Port>> {
        if !self.local.is_ipv4() {
            return Err(invalid(format!("{what} needs an IPv4 port")));
        }
        self.live().ok_or_else(closed)
    }

    fn v6(&self, what: &str) -> io::Result<Rc<Port>> {
        if !self.local.is_ipv6() {
            return Err(invalid(format!("{what} needs an IPv6 port")));
        }
        self.live().ok_or_else(closed)
    }
}

/// Whether an error a UDP read returned concerns one earlier datagram (an
/// ICMP report the kernel queued), so that reading may go on.
fn reported_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

impl Port {
    fn is_open(&self) -> bool {
        matches!(&*self.state.borrow(), PortState::Open(_))
    }

    fn count(&self, f: impl FnOnce(&mut UdpStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Runs `f` on the socket (no user code runs inside).
    fn with_socket<T>(
        &self,
        f: impl FnOnce(&mio::net::UdpSocket) -> io::Result<T>,
    ) -> io::Result<T> {
        match &*self.state.borrow() {
            PortState::Open(socket) => f(socket),
            PortState::Closed => Err(closed()),
        }
    }

    fn check_family(&self, addr: SocketAddr) -> io::Result<()> {
        if addr.is_ipv4() != self.local.is_ipv4() {
            return Err(invalid(format!(
                "cannot send to {addr} from the {} port {}",
                if self.local.is_ipv4() { "IPv4" } else { "IPv6" },
                self.local
            )));
        }
        Ok(())
    }

    /// Calls the protocol under the guard, with it taken out of its slot;
    /// if the port stopped meanwhile, delivers `stop_protocol` right after.
    /// Returns the guard's outcome (`Err` with the panic message).
    fn call_protocol(
        &self,
        what: fmt::Arguments<'_>,
        f: impl FnOnce(&mut dyn DatagramProtocol),
    ) -> Result<(), String> {
        let taken = std::mem::replace(&mut *self.protocol.borrow_mut(), ProtocolSlot::Busy);
        let mut protocol = match taken {
            ProtocolSlot::Idle(p) => p,
            other => {
                *self.protocol.borrow_mut() = other;
                return Ok(());
            }
        };
        let outcome = guard(format_args!("{what} on UDP port {}", self.local), || {
            f(&mut *protocol)
        });
        if self.is_open() {
            *self.protocol.borrow_mut() = ProtocolSlot::Idle(protocol);
        } else {
            self.deliver_stop(protocol);
        }
        outcome
    }

    /// Calls `stop_protocol`, drops the protocol, fires the waiters.
    fn deliver_stop(&self, mut protocol: Box<dyn DatagramProtocol>) {
        *self.protocol.borrow_mut() = ProtocolSlot::Done;
        let _ = guard(
            format_args!("stop_protocol on UDP port {}", self.local),
            || protocol.stop_protocol(),
        );
        let _ = guard(
            format_args!("dropping the protocol of UDP port {}", self.local),
            || drop(protocol),
        );
        let waiters = std::mem::take(&mut *self.stop_waiters.borrow_mut());
        for waiter in waiters {
            let _ = waiter.callback(());
        }
    }

    /// Delivers a pending `stop_protocol` if the protocol is between
    /// callbacks (if it is in one, `call_protocol` delivers it after).
    fn stop_pending(&self) {
        let taken = std::mem::replace(&mut *self.protocol.borrow_mut(), ProtocolSlot::Busy);
        match taken {
            ProtocolSlot::Idle(protocol) => self.deliver_stop(protocol),
            other => *self.protocol.borrow_mut() = other,
        }
    }

    #[track_caller]
    fn stop_listening(self: &Rc<Self>) -> Deferred<()> {
        if matches!(&*self.protocol.borrow(), ProtocolSlot::Done) {
            return succeed(());
        }
        let (resolver, deferred) = Deferred::new();
        self.stop_waiters.borrow_mut().push(resolver);
        if self.close() {
            let me = Rc::clone(self);
            match self.reactor.upgrade().and_then(|i| i.reactor()) {
                Some(reactor) => reactor.call_soon(move || me.stop_pending()),
                None => self.stop_pending(),
            }
        }
        deferred
    }

    /// Closes the socket: deregisters it, frees the slot, gives queued
    /// datagrams one last try. Returns whether it was open.
    fn close(&self) -> bool {
        let state = std::mem::replace(&mut *self.state.borrow_mut(), PortState::Closed);
        let PortState::Open(mut socket) = state else {
            return false;
        };
        if let Some(reactor) = self.reactor.upgrade() {
            if let Err(e) = reactor.registry.deregister(&mut socket) {
                log::debug!("cannot deregister UDP port {}: {e}", self.local);
            }
            reactor.remove_slot(self.token.get());
        }
        let (sent, dropped) = {
            let mut queue = self.queue.borrow_mut();
            let mut sent = 0u64;
            while let Some((data, target)) = queue.datagrams.pop_front() {
                let result = match target {
                    Target::Peer => socket.send(&data),
                    Target::To(addr) => socket.send_to(&data, addr),
                };
                match result {
                    Ok(_) => sent += 1,
                    Err(_) => {
                        queue.datagrams.push_front((data, target));
                        break;
                    }
                }
            }
            let dropped = queue.datagrams.len() as u64;
            queue.datagrams.clear();
            queue.bytes = 0;
            (sent, dropped)
        };
        self.count(|s| {
            s.sent += sent;
            s.dropped += dropped;
            s.queued = 0;
        });
        if dropped > 0 {
            log::warn!(
                "UDP port {} stopped with {dropped} datagram(s) still queued: dropped",
                self.local
            );
        }
        drop(socket);
        log::info!("UDP port {} stopped listening", self.local);
        true
    }

    fn send(self: &Rc<Self>, data: &[u8], target: Target) -> io::Result<Sent> {
        let peer = self.peer.get();
        match (target, peer) {
            (Target::Peer, Peer::Any) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!(
                        "UDP port {} is not connected: use write_to, or connect first",
                        self.local
                    ),
                ))
            }
            (Target::To(addr), Peer::Connected(to)) if addr != to => {
                return Err(invalid(format!(
                    "UDP port {} is connected to {to}: cannot send to {addr}",
                    self.local
                )))
            }
            (Target::To(addr), _) => self.check_family(addr)?,
            (Target::Peer, Peer::Connected(_)) => {}
        }
        if !self.queue.borrow().datagrams.is_empty() {
            // Keep the order: behind what waits.
            return Ok(self.enqueue(data, target));
        }
        loop {
            let result = self.with_socket(|socket| match target {
                Target::Peer => socket.send(data),
                Target::To(addr) => socket.send_to(data, addr),
            });
            match result {
                Ok(_) => {
                    self.count(|s| s.sent += 1);
                    return Ok(Sent::Now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(self.enqueue(data, target));
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        self.refused_from_loop();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A write found the peer's refusal: tell the protocol from the loop
    /// (a write never calls back into it).
    fn refused_from_loop(self: &Rc<Self>) {
        if !matches!(self.peer.get(), Peer::Connected(_)) {
            return;
        }
        let me = Rc::downgrade(self);
        if let Some(reactor) = self.reactor.upgrade().and_then(|i| i.reactor()) {
            reactor.call_soon(move || {
                if let Some(me) = me.upgrade() {
                    let _ = me.call_protocol(format_args!("connection_refused"), |p| {
                        p.connection_refused()
                    });
                }
            });
        }
    }

    /// Queues a datagram the kernel could not take, or drops it if the
    /// queue is full.
    fn enqueue(&self, data: &[u8], target: Target) -> Sent {
        let was_empty = {
            let mut queue = self.queue.borrow_mut();
            let full = queue.datagrams.len() >= self.options.queue_datagrams
                || queue.bytes.saturating_add(data.len()) > self.options.queue_bytes;
            if full {
                queue.dropping = match queue.dropping {
                    Dropping::No => {
                        log::warn!(
                            "UDP port {}: send queue full ({} datagrams, {} bytes; limits {} and {}): \
                             dropping datagrams until it drains",
                            self.local,
                            queue.datagrams.len(),
                            queue.bytes,
                            self.options.queue_datagrams,
                            self.options.queue_bytes
                        );
                        Dropping::Since(1)
                    }
                    Dropping::Since(n) => Dropping::Since(n + 1),
                };
                drop(queue);
                self.count(|s| s.dropped += 1);
                return Sent::Dropped;
            }
            let was_empty = queue.datagrams.is_empty();
            queue.datagrams.push_back((data.to_vec(), target));
            queue.bytes += data.len();
            let queued = queue.datagrams.len();
            drop(queue);
            self.count(|s| s.queued = queued);
            was_empty
        };
        if was_empty {
            self.set_registered(Registered::ReadWrite);
        }
        Sent::Queued
    }

    /// Registers for writability (datagrams wait) or not.
    fn set_registered(&self, want: Registered) {
        if self.registered.get() == want {
            return;
        }
        let interest = match want {
            Registered::Read => mio::Interest::READABLE,
            Registered::ReadWrite => mio::Interest::READABLE | mio::Interest::WRITABLE,
        };
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let mut state = self.state.borrow_mut();
        let PortState::Open(socket) = &mut *state else {
            return;
        };
        match reactor
            .registry
            .reregister(socket, mio::Token(self.token.get()), interest)
        {
            Ok(()) => self.registered.set(want),
            Err(e) => log::error!("cannot reregister UDP port {}: {e}", self.local),
        }
    }

    /// Asks the poller to report the socket's readiness again (datagrams
    /// left after the per-event budget).
    fn rearm(&self) {
        let interest = match self.registered.get() {
            Registered::Read => mio::Interest::READABLE,
            Registered::ReadWrite => mio::Interest::READABLE | mio::Interest::WRITABLE,
        };
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let mut state = self.state.borrow_mut();
        if let PortState::Open(socket) = &mut *state {
            if let Err(e) =
                reactor
                    .registry
                    .reregister(socket, mio::Token(self.token.get()), interest)
            {
                log::error!("cannot rearm UDP port {}: {e}", self.local);
            }
        }
    }

    /// Sends what waits in the queue, from the loop (writable).
    fn flush(&self) {
        if !self.is_open() {
            return;
        }
        let mut refused = false;
        let mut sent = 0u64;
        let mut failed = 0u64;
        let drained = loop {
            let mut queue = self.queue.borrow_mut();
            let Some((data, target)) = queue.datagrams.front() else {
                break true;
            };
            let result = self.with_socket(|socket| match *target {
                Target::Peer => socket.send(data),
                Target::To(addr) => socket.send_to(data, addr),
            });
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                outcome => {
                    if let Some((data, _)) = queue.datagrams.pop_front() {
                        queue.bytes -= data.len();
                    }
                    match outcome {
                        Ok(_) => sent += 1,
                        Err(e) => {
                            failed += 1;
                            refused |= e.kind() == io::ErrorKind::ConnectionRefused;
                            log::debug!(
                                "UDP port {}: a queued datagram was refused by the kernel: {e}",
                                self.local
                            );
                        }
                    }
                }
            }
        };
        let (queued, episode) = {
            let mut queue = self.queue.borrow_mut();
            let episode = if drained {
                std::mem::replace(&mut queue.dropping, Dropping::No)
            } else {
                Dropping::No
            };
            (queue.datagrams.len(), episode)
        };
        self.count(|s| {
            s.sent += sent;
            s.dropped += failed;
            s.queued = queued;
        });
        if let Dropping::Since(n) = episode {
            log::warn!(
                "UDP port {}: send queue drained; {n} datagram(s) were dropped while it was full",
                self.local
            );
        }
        if drained {
            self.set_registered(Registered::Read);
        }
        if refused && matches!(self.peer.get(), Peer::Connected(_)) {
            let _ = self.call_protocol(format_args!("connection_refused"), |p| {
                p.connection_refused()
            });
        }
    }

    /// Reads datagrams until `WouldBlock` or the per-event budget, and
    /// delivers them.
    fn read(&self, buf: &mut [u8]) {
        // One byte more than the limit: a datagram that fills the buffer
        // was larger than the limit (and cut by the kernel).
        let cap = (self.options.max_datagram + 1).min(buf.len());
        let limit = cap.saturating_sub(1);
        let mut all_failed = true;
        let mut last_error = None;
        for _ in 0..DATAGRAMS_PER_EVENT {
            let received = self.with_socket(|socket| socket.recv_from(&mut buf[..cap]));
            match received {
                Ok((n, from)) if n > limit => {
                    all_failed = false;
                    self.count(|s| s.truncated += 1);
                    if !self.truncation_logged.replace(true) {
                        log::warn!(
                            "UDP port {}: a datagram from {from} is larger than the limit of {limit} \
                             bytes: dropped (further ones are logged at debug level)",
                            self.local
                        );
                    } else {
                        log::debug!(
                            "UDP port {}: a datagram from {from} is larger than {limit} bytes: dropped",
                            self.local
                        );
                    }
                    let _ = self
                        .call_protocol(format_args!("datagram_truncated from {from}"), |p| {
                            p.datagram_truncated(from, limit)
                        });
                }
                Ok((n, from)) => {
                    all_failed = false;
                    self.count(|s| s.received += 1);
                    let data = &buf[..n];
                    // A panic costs only this datagram (logged by the guard).
                    let _ = self
                        .call_protocol(format_args!("datagram_received from {from}"), |p| {
                            p.datagram_received(data, from)
                        });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !self.is_open() => return,
                Err(e) if reported_error(&e) => {
                    all_failed = false;
                    if matches!(self.peer.get(), Peer::Connected(_)) {
                        let _ = self.call_protocol(format_args!("connection_refused"), |p| {
                            p.connection_refused()
                        });
                    } else {
                        log::debug!("UDP port {}: ignoring a reported error: {e}", self.local);
                    }
                }
                Err(e) => {
                    log::debug!("UDP port {}: read failed: {e}", self.local);
                    last_error = Some(e);
                }
            }
            if !self.is_open() {
                return;
            }
        }
        if all_failed {
            // Every read of the batch failed: wait for the next readiness
            // rather than spin on an error that does not go away.
            if let Some(e) = last_error {
                log::warn!(
                    "UDP port {}: reading keeps failing ({e}); waiting for the next event",
                    self.local
                );
            }
            return;
        }
        // The budget is spent and datagrams may wait: come back after the
        // other sources had their turn.
        self.rearm();
    }
}

impl EventSource for Port {
    fn handle_event(&self, _reactor: &Reactor, event: &Readiness, buf: &mut [u8]) {
        if event.readable || event.error || event.read_closed {
            self.read(buf);
        }
        let waiting = !self.queue.borrow().datagrams.is_empty();
        if waiting && self.is_open() && (event.writable || event.error) {
            self.flush();
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        self.close();
        self.stop_pending();
    }
}

/// Creates a nonblocking UDP socket bound to `addr`.
fn bind(addr: SocketAddr, reuse_address: bool) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if reuse_address {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

impl Reactor {
    /// Listens for datagrams on `addr` (port 0 picks a free port) with
    /// `protocol` (Twisted's `listenUDP`), with the default [`UdpOptions`].
    /// Calls [`DatagramProtocol::start_protocol`] before returning. An
    /// address in use is an error that names the address. See the
    /// [module docs](crate::udp) for the contract.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use gyre_reactor::{DatagramProtocol, Reactor};
    ///
    /// struct Print;
    /// impl DatagramProtocol for Print {
    ///     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
    ///         println!("{from}: {}", String::from_utf8_lossy(data));
    ///     }
    /// }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_udp("127.0.0.1:0".parse()?, Print)?;
    /// println!("listening on {}", port.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_udp(
        &self,
        addr: SocketAddr,
        protocol: impl DatagramProtocol,
    ) -> io::Result<UdpPort> {
        self.listen_udp_with(addr, protocol, UdpOptions::default())
    }

    /// [`listen_udp`](Self::listen_udp) with [`UdpOptions`]: address reuse
    /// (several ports on one multicast port number), the largest datagram
    /// delivered, the send queue's bounds.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use gyre_reactor::{DatagramProtocol, Reactor, UdpOptions};
    ///
    /// struct Ignore;
    /// impl DatagramProtocol for Ignore {
    ///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let options = UdpOptions::new().reuse_address(true);
    /// let first = reactor.listen_udp_with("127.0.0.1:0".parse()?, Ignore, options.clone())?;
    /// let second = reactor.listen_udp_with(first.local_addr(), Ignore, options)?;
    /// assert_eq!(first.local_addr(), second.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_udp_with(
        &self,
        addr: SocketAddr,
        protocol: impl DatagramProtocol,
        options: UdpOptions,
    ) -> io::Result<UdpPort> {
        let mut socket = bind(addr, options.reuse_address).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for UDP on {addr}: {e}"))
        })?;
        let local = socket.local_addr()?;
        let stats = Rc::new(Cell::new(UdpStats::default()));
        let port = Rc::new_cyclic(|weak| Port {
            reactor: Rc::downgrade(&self.inner),
            local,
            token: Cell::new(0),
            state: RefCell::new(PortState::Closed),
            peer: Cell::new(Peer::Any),
            registered: Cell::new(Registered::Read),
            protocol: RefCell::new(ProtocolSlot::Idle(Box::new(protocol))),
            queue: RefCell::new(SendQueue {
                datagrams: VecDeque::new(),
                bytes: 0,
                dropping: Dropping::No,
            }),
            options,
            stats: Rc::clone(&stats),
            truncation_logged: Cell::new(false),
            stop_waiters: RefCell::new(Vec::new()),
            self_weak: weak.clone(),
        });
        let slot: Rc<dyn EventSource> = Rc::clone(&port) as Rc<dyn EventSource>;
        let token = self.inner.insert_slot(|_| SlotKind::Source(slot));
        port.token.set(token);
        if let Err(e) =
            self.inner
                .registry
                .register(&mut socket, mio::Token(token), mio::Interest::READABLE)
        {
            self.inner.remove_slot(token);
            return Err(e);
        }
        *port.state.borrow_mut() = PortState::Open(socket);
        log::info!("listening for UDP on {local}");
        let handle = UdpPort {
            port: Weak::clone(&port.self_weak),
            local,
            stats,
        };
        let started = handle.clone();
        if let Err(message) = port.call_protocol(format_args!("start_protocol"), move |p| {
            p.start_protocol(started)
        }) {
            port.close();
            let failed = std::mem::replace(&mut *port.protocol.borrow_mut(), ProtocolSlot::Done);
            drop(failed);
            return Err(io::Error::other(format!(
                "start_protocol on UDP port {local} panicked: {message}"
            )));
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    //! The send queue, which loopback cannot fill on demand (the kernel
    //! hands a loopback datagram to the receiver, or drops it, at once):
    //! datagrams are queued as a full kernel buffer would, then flushed by
    //! the real writable event.

    use super::*;
    use std::time::Duration;

    struct Ignore;
    impl DatagramProtocol for Ignore {
        fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    }

    #[test]
    fn a_full_send_queue_drops_counts_and_drains_in_order() {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let options = UdpOptions::new().send_queue(2, 1000);
        let handle = reactor
            .listen_udp_with("127.0.0.1:0".parse().unwrap(), Ignore, options)
            .unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let to = Target::To(peer.local_addr().unwrap());
        let port = handle.port.upgrade().unwrap();

        // As if the kernel had said WouldBlock twice.
        assert_eq!(port.enqueue(b"first", to), Sent::Queued);
        assert!(port.registered.get() == Registered::ReadWrite);
        assert_eq!(port.enqueue(b"second", to), Sent::Queued);
        // Full by count: dropped, and a write goes behind the queue too.
        assert_eq!(port.enqueue(b"third", to), Sent::Dropped);
        let addr = peer.local_addr().unwrap();
        assert_eq!(handle.write_to(b"fourth", addr).unwrap(), Sent::Dropped);
        assert_eq!(handle.stats().dropped, 2);
        assert_eq!(handle.stats().queued, 2);

        // The writable event flushes the queue, in order.
        assert!(reactor
            .run_until(|| handle.stats().queued == 0, Duration::from_secs(20))
            .unwrap());
        assert!(port.registered.get() == Registered::Read);
        let mut buf = [0u8; 16];
        for expected in [&b"first"[..], b"second"] {
            let n = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], expected);
        }
        assert_eq!(handle.stats().sent, 2);

        // Drained: writes go straight to the kernel again.
        assert_eq!(handle.write_to(b"fifth", addr).unwrap(), Sent::Now);
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"fifth");

        // Full by bytes.
        assert_eq!(port.enqueue(&[0u8; 600], to), Sent::Queued);
        assert_eq!(port.enqueue(&[0u8; 600], to), Sent::Dropped);
        assert_eq!(handle.stats().dropped, 3);

        // Stopping gives queued datagrams one last try.
        drop(handle.stop_listening());
        assert_eq!(handle.stats().queued, 0);
        let mut big = [0u8; 1024];
        assert_eq!(peer.recv(&mut big).unwrap(), 600);
    }
}
