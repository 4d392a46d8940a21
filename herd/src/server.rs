//! [`HerdServer`]: one server of the herd, on a reactor.
//!
//! A server listens on one port for clients and neighbours alike and runs
//! one [`LineReceiver`] (`\n` lines, a `\r` before the `\n` dropped) per
//! connection, under a STARTTLS layer. A connection is a client connection
//! until its first line is `PEER <name>` for a configured neighbour and the
//! TLS handshake that follows proves, by a certificate from the herd CA,
//! that it is that neighbour ([`ServerOptions::peer_tls`]); then it is a
//! link (see `links.rs`), and so is every connection the server dials
//! itself once the neighbour's certificate is verified.
//!
//! # Client connections
//!
//! - Answers go out in the order the commands came: each command takes a
//!   place in the connection's queue of answers, and the queue is written
//!   from its front as answers become ready (a `WHATSAT` waits for its
//!   Places Deferred; an `IAMAT` behind it waits its turn).
//! - At most [`ServerOptions::max_pending_answers`] answers wait at once;
//!   then the server stops reading that connection until the queue drains.
//!   It also stops reading while the connection's write buffer is above its
//!   high-water mark (a client that does not read its answers).
//! - Half-close: at the client's EOF, a final line without `\n` (a trailing
//!   `\r` dropped) is still a command; the server keeps its write side open,
//!   answers everything queued, Places lookups included, and then closes.
//! - A line longer than [`ServerOptions::max_line_length`] ends the input
//!   as EOF does: the answers to the earlier commands are written, then the
//!   connection is closed. No `?` answer is written for it (the rest of an
//!   over-long line cannot be told from a next command), and it is logged.
//! - An `AT` line from a client, or a `PEER` line that is not its first
//!   line, does not name a neighbour, or is not followed by a TLS
//!   handshake, is an invalid command (`? line`), logged.
//!
//! # Link connections
//!
//! Lines on a link are never answered (two servers must not bounce `?`
//! lines at each other): an `AT` line is offered to the store, and flooded
//! on if it is new; anything else is logged and dropped. Link connections
//! take lines up to `max_line_length` plus [`LINK_LINE_SLACK`] bytes, so
//! that the AT line made from the longest IAMAT a client may send still
//! fits.
//!
//! ```no_run
//! use gyre_herd::{HerdConfig, HerdServer, ServerLog, ServerOptions};
//! use gyre_herd::places::{LocalPlacesService, PlacesClient};
//! use gyre_reactor::Reactor;
//!
//! // A herd whose servers listen on free ports: bind all, then dial.
//! let reactor = Reactor::new()?;
//! let local = LocalPlacesService::start(&reactor, "127.0.0.1:0".parse()?)?;
//! let places = PlacesClient::new(&reactor, local.client_config())?;
//! let mut config = HerdConfig::from_json(r#"{"servers": [
//!     {"name": "A", "host": "127.0.0.1", "port": 0},
//!     {"name": "B", "host": "127.0.0.1", "port": 0}], "links": [["A", "B"]]}"#)?;
//! let mut servers = Vec::new();
//! for name in ["A", "B"] {
//!     let server = HerdServer::bind(&reactor, name, &config, places.clone(),
//!                                   ServerLog::memory(), ServerOptions::default())?;
//!     config.set_port(name, server.local_addr().port())?;
//!     servers.push(server);
//! }
//! for server in &servers {
//!     server.connect_neighbours(&config)?;
//! }
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime};

use gyre_protocols::tls::{start_tls_client, start_tls_server, StartTls, TlsTransport};
use gyre_protocols::{LineContext, LineControl, LineHandler, LineReceiver};
use gyre_reactor::clock::DelayedCall;
use gyre_reactor::defer::{Backoff, Deferred};
use gyre_reactor::{
    factory_fn, ConnectionLost, ListenOptions, ListeningPort, PortEvent, Producer, Reactor,
    Transport,
};

use crate::command::{self, Command, IAmAt, WhatsAt};
use crate::config::HerdConfig;
use crate::limits::{
    Admission, ConnectionLimits, Rate, RateLimiter, RateVerdict, DEFAULT_IAMAT_RATE,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_NEW_CLIENT_RATE,
    DEFAULT_RATE_TABLE_SIZE, REFUSAL_NO_DESCRIPTORS, REFUSAL_PER_ADDRESS,
};
use crate::links::Links;
use crate::log::{escape, ServerLog};
use crate::pki::{HerdCa, PeerTls, PEER_HANDSHAKE_TIMEOUT};
use crate::places::{PlacesAnswer, PlacesClient};
use crate::store::{Location, Store};

/// The default longest line a client may send, in bytes (without its `\n`).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;
/// How much longer than a client's longest line a link's lines may be: an
/// AT line is an IAMAT's fields plus `AT`, a server name (at most 64
/// bytes) and a time difference (at most 32).
pub const LINK_LINE_SLACK: usize = 1024;
/// The default most answers one client connection may have waiting.
pub const DEFAULT_MAX_PENDING_ANSWERS: usize = 64;
/// The default [`ServerOptions::max_clients`]: a million locations, a few
/// hundred MB at most.
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;
/// The default [`ServerOptions::max_client_id_length`], in bytes.
pub const DEFAULT_MAX_CLIENT_ID_LENGTH: usize = 256;
/// The default [`ServerOptions::max_time_ahead`]: ten minutes.
pub const DEFAULT_MAX_TIME_AHEAD: Duration = Duration::from_secs(600);
/// The default [`ServerOptions::max_store_bytes`]: 256 MiB.
pub const DEFAULT_MAX_STORE_BYTES: usize = 256 * 1024 * 1024;
/// The default [`ServerOptions::client_idle_timeout`]: two minutes.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default time-out of one attempt to dial a neighbour.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a server asks "what is near this point?". Implemented for
/// [`PlacesClient`]; tests implement it with a fake. A lookup never fails:
/// every error is an answer whose JSON says so (a failed Deferred is still
/// answered, with `UNKNOWN_ERROR`).
pub trait PlacesLookup: 'static {
    /// Places within `radius_m` metres of (`lat`, `lon`), at most
    /// `max_results` of them.
    fn nearby(&self, lat: f64, lon: f64, radius_m: f64, max_results: u32)
        -> Deferred<PlacesAnswer>;
}

impl PlacesLookup for PlacesClient {
    fn nearby(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        max_results: u32,
    ) -> Deferred<PlacesAnswer> {
        PlacesClient::nearby(self, lat, lon, radius_m, max_results)
    }
}

impl<T: PlacesLookup + ?Sized> PlacesLookup for Rc<T> {
    fn nearby(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        max_results: u32,
    ) -> Deferred<PlacesAnswer> {
        (**self).nearby(lat, lon, radius_m, max_results)
    }
}

/// A server's settings beyond its configuration. The defaults are what
/// HERD.md asks for; tests change them (a slow back-off, a fixed clock).
#[derive(Clone)]
pub struct ServerOptions {
    /// The back-off between attempts to dial a neighbour that is down
    /// (default: 100 ms doubling to at most 1 s, ± 20 % jitter, forever).
    pub backoff: Backoff,
    /// The time-out of one attempt to dial a neighbour (default 5 s).
    pub connect_timeout: Duration,
    /// The longest line a client may send (default 64 KiB).
    pub max_line_length: usize,
    /// The most answers a client connection may have waiting before the
    /// server stops reading it (default 64).
    pub max_pending_answers: usize,
    /// Where the server's receive times come from (default
    /// [`SystemTime::now`]).
    pub wall_clock: Rc<dyn Fn() -> SystemTime>,
    /// The most clients whose location the server keeps (default
    /// 1,000,000); past it, the client with the oldest location is
    /// forgotten (see [`Store::with_limit`](crate::store::Store::with_limit)).
    pub max_clients: usize,
    /// The most bytes the store may hold, as
    /// [`Store::bytes`](crate::store::Store::bytes) counts them (default
    /// [`DEFAULT_MAX_STORE_BYTES`]); past it, the oldest locations are
    /// evicted. Evictions are logged at the 1st, 10th, 100th, ... one.
    pub max_store_bytes: usize,
    /// The longest client ID accepted, in bytes (default
    /// [`DEFAULT_MAX_CLIENT_ID_LENGTH`]). A longer one in an IAMAT gets
    /// `? ` and is logged; in an AT from a neighbour it is ignored and
    /// logged. It bounds what one store entry costs.
    pub max_client_id_length: usize,
    /// How far ahead of this server's clock a client's time may be (default
    /// [`DEFAULT_MAX_TIME_AHEAD`]). A time further ahead would pin the
    /// client's location for good (nothing later could replace it), so an
    /// IAMAT with one gets `? ` and an AT with one is ignored, both logged.
    pub max_time_ahead: Duration,
    /// How long a client connection may go without sending a complete line
    /// while it has no answer pending (default
    /// [`DEFAULT_CLIENT_IDLE_TIMEOUT`]); then it is closed (after what was
    /// already written) and logged. Partial lines do not count as activity,
    /// so a client trickling bytes without a newline (slow-loris) is closed
    /// too. Links to neighbours have no idle time-out.
    pub client_idle_timeout: Duration,
    /// How links to neighbours are authenticated (default
    /// [`PeerTls::InProcess`]: mutual TLS with a CA made in memory for this
    /// process). See [`PeerTls`] and the herd README's Security section.
    pub peer_tls: PeerTls,
    /// The most connections accepted and open at once, clients and
    /// neighbours that dialled in (default
    /// [`DEFAULT_MAX_CONNECTIONS`],
    /// 10,000). At the limit the server stops accepting (new connections
    /// wait in the kernel's backlog; the loop does no work for them) until
    /// one closes. Logged once when accepting pauses and once when it
    /// resumes.
    pub max_connections: usize,
    /// The most connections open at once from one source address (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`],
    /// 64). One more is sent
    /// [`REFUSAL_PER_ADDRESS`] and
    /// closed at once; logged once per episode (until one of that
    /// address's connections closes).
    pub max_connections_per_address: usize,
    /// IAMATs per source address (default
    /// [`DEFAULT_IAMAT_RATE`]: 50/s,
    /// bursts of 200). One over it is answered `? ` + the line and changes
    /// nothing; logged once per episode (until one is allowed again).
    pub iamat_rate: Rate,
    /// IAMATs per source address that name a client this server does not
    /// know yet (default
    /// [`DEFAULT_NEW_CLIENT_RATE`]:
    /// 5/s, bursts of 100), so that one address cannot churn the store and
    /// evict everyone else's locations. Refused and logged as
    /// [`iamat_rate`](Self::iamat_rate).
    pub new_client_rate: Rate,
    /// How many source addresses the rate limits remember (default
    /// [`DEFAULT_RATE_TABLE_SIZE`],
    /// 4096); past it, an idle address (full buckets) is forgotten, else the
    /// least recently seen.
    pub rate_table_size: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            backoff: Backoff::default()
                .initial(Duration::from_millis(100))
                .factor(2.0)
                .max_delay(Duration::from_secs(1))
                .max_retries(None)
                .jitter(0.2),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_pending_answers: DEFAULT_MAX_PENDING_ANSWERS,
            wall_clock: Rc::new(SystemTime::now),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            max_client_id_length: DEFAULT_MAX_CLIENT_ID_LENGTH,
            max_time_ahead: DEFAULT_MAX_TIME_AHEAD,
            client_idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            peer_tls: PeerTls::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            iamat_rate: DEFAULT_IAMAT_RATE,
            new_client_rate: DEFAULT_NEW_CLIENT_RATE,
            rate_table_size: DEFAULT_RATE_TABLE_SIZE,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_line_length", &self.max_line_length)
            .field("max_pending_answers", &self.max_pending_answers)
            .field("max_clients", &self.max_clients)
            .field("max_store_bytes", &self.max_store_bytes)
            .field("max_client_id_length", &self.max_client_id_length)
            .field("max_time_ahead", &self.max_time_ahead)
            .field("client_idle_timeout", &self.client_idle_timeout)
            .field("peer_tls", &self.peer_tls)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("iamat_rate", &self.iamat_rate)
            .field("new_client_rate", &self.new_client_rate)
            .field("rate_table_size", &self.rate_table_size)
            .finish_non_exhaustive()
    }
}

/// One server of the herd, running on a reactor: a cheap `Clone` handle.
///
/// The server runs until [`stop`](Self::stop) (or until the reactor shuts
/// down); dropping the handle does not stop it.
#[derive(Clone)]
pub struct HerdServer {
    inner: Rc<Server>,
}

impl fmt::Debug for HerdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HerdServer")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.local_addr)
            .field("stopped", &self.inner.stopped.get())
            .finish()
    }
}

impl HerdServer {
    /// Starts the server called `name` of `config`: listens on its port,
    /// then dials its neighbours (see [`bind`](Self::bind) and
    /// [`connect_neighbours`](Self::connect_neighbours)), with the default
    /// [`ServerOptions`].
    pub fn start(
        reactor: &Reactor,
        name: &str,
        config: &HerdConfig,
        places: impl PlacesLookup,
        log: ServerLog,
    ) -> io::Result<HerdServer> {
        let server =
            HerdServer::bind(reactor, name, config, places, log, ServerOptions::default())?;
        if let Err(e) = server.connect_neighbours(config) {
            server.stop();
            return Err(e);
        }
        Ok(server)
    }

    /// Listens on the address `config` gives `name` (port 0: a free port;
    /// see [`local_addr`](Self::local_addr)) and serves clients, and
    /// neighbours that dial in; does not dial out yet.
    pub fn bind(
        reactor: &Reactor,
        name: &str,
        config: &HerdConfig,
        places: impl PlacesLookup,
        log: ServerLog,
        options: ServerOptions,
    ) -> io::Result<HerdServer> {
        let spec = config.server(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the herd has no server named {name:?}"),
            )
        })?;
        let addr = spec.addr();
        let peer_links = PeerLinks::for_server(name, &options.peer_tls)?;
        let neighbours: Vec<String> = config
            .neighbours(name)
            .into_iter()
            .map(str::to_string)
            .collect();
        // Bind first, so the server knows its real address; the accept
        // factory reaches the server through a slot filled right after.
        let slot: AcceptSlot = Rc::new(RefCell::new(None));
        let factory_slot = Rc::clone(&slot);
        // Out of descriptors, the port refuses with a line and the spare
        // descriptor; the episode goes to this server's log once.
        let port_log = log.clone();
        let listen = ListenOptions::new()
            .refusal_line(REFUSAL_NO_DESCRIPTORS)
            .on_event(move |event| match event {
                PortEvent::Exhausted { error } => port_log.entry(format_args!(
                    "out of resources accepting connections ({error}): refusing new clients \
                     with {:?} and retrying with back-off (logged once per episode)",
                    REFUSAL_NO_DESCRIPTORS.trim_end()
                )),
                PortEvent::Recovered {
                    refused, attempts, ..
                } => port_log.entry(format_args!(
                    "accepting connections again ({refused} refused, {attempts} failed attempts)"
                )),
                _ => {}
            });
        let port = reactor.listen_tcp_with(
            addr,
            factory_fn(move |peer| {
                let server = factory_slot.borrow().clone()?;
                server.accept(peer)
            }),
            listen,
        )?;
        let store = Store::with_limits(options.max_clients, options.max_store_bytes);
        let limits =
            ConnectionLimits::new(options.max_connections, options.max_connections_per_address);
        let rates = RateLimiter::new(
            options.iamat_rate,
            options.new_client_rate,
            options.rate_table_size,
        );
        let inner = Rc::new_cyclic(|me| Server {
            name: name.to_string(),
            reactor: reactor.clone(),
            local_addr: port.local_addr(),
            log,
            options,
            store: RefCell::new(store),
            places: Box::new(places),
            links: Links::new(name, &neighbours),
            peer_links,
            port: RefCell::new(Some(port)),
            accept_slot: Rc::clone(&slot),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            stopped: Cell::new(false),
            limits: RefCell::new(limits),
            rates: RefCell::new(rates),
            me: me.clone(),
        });
        // The listening port's factory keeps the server alive (as a
        // reactor keeps a Twisted factory alive) until `stop` empties it.
        *slot.borrow_mut() = Some(Rc::clone(&inner));
        inner.log.entry(format_args!(
            "server {} listening on {} (neighbours: {})",
            inner.name,
            inner.local_addr,
            if neighbours.is_empty() {
                "none".to_string()
            } else {
                neighbours.join(", ")
            }
        ));
        match &inner.peer_links {
            PeerLinks::Verified(_) => inner.log.entry(format_args!(
                "peer links: mutual TLS; a neighbour must present a certificate from the herd CA naming it"
            )),
            PeerLinks::Insecure => {
                log::warn!(
                    "{}: peer links are NOT authenticated (--insecure-peer-links): anyone can claim to be a neighbour and forge locations",
                    inner.name
                );
                inner.log.entry(format_args!(
                    "WARNING: peer links are NOT authenticated (--insecure-peer-links): anyone can claim to be a neighbour and forge locations"
                ));
            }
        }
        Ok(HerdServer { inner })
    }

    /// Dials every neighbour at the address `config` gives it (a config
    /// with the real ports, when servers bound port 0), at once, and keeps
    /// re-dialling any neighbour whose link is down, with back-off, until
    /// [`stop`](Self::stop). An error if `config` lacks a neighbour.
    pub fn connect_neighbours(&self, config: &HerdConfig) -> io::Result<()> {
        self.inner.links.connect_all(&self.inner, config)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address it listens on (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Its log.
    pub fn log(&self) -> &ServerLog {
        &self.inner.log
    }

    /// The stored AT line for `client` (no line end), if any.
    pub fn location(&self, client: &[u8]) -> Option<Vec<u8>> {
        self.inner
            .store
            .borrow()
            .get(client)
            .map(|l| l.at_line().to_vec())
    }

    /// How many clients it knows a location for.
    pub fn known_clients(&self) -> usize {
        self.inner.store.borrow().len()
    }

    /// The store's size in bytes, as its byte limit counts them.
    pub fn store_bytes(&self) -> usize {
        self.inner.store.borrow().bytes()
    }

    /// The neighbours whose link is up now, sorted.
    pub fn links_up(&self) -> Vec<String> {
        self.inner.links.up()
    }

    /// Bytes written to the link with `neighbour` and not yet taken by the
    /// kernel (`None` when the link is down). For diagnostics and tests.
    pub fn link_buffered_len(&self, neighbour: &str) -> Option<usize> {
        self.inner.links.buffered_len(neighbour)
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Stops the server: closes its port, stops dialling, and closes every
    /// connection (links and clients; answers not yet ready are dropped).
    /// A new server may then listen on the same port.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

/// The accept factory's strong reference to its server (emptied by `stop`,
/// which breaks the server → port → factory → server cycle).
type AcceptSlot = Rc<RefCell<Option<Rc<Server>>>>;

/// The server's state, shared by its connections, links and timers.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) reactor: Reactor,
    local_addr: SocketAddr,
    pub(crate) log: ServerLog,
    pub(crate) options: ServerOptions,
    pub(crate) store: RefCell<Store>,
    places: Box<dyn PlacesLookup>,
    pub(crate) links: Links,
    /// How links are authenticated.
    pub(crate) peer_links: PeerLinks,
    port: RefCell<Option<ListeningPort>>,
    /// What the accept factory holds: this server, until `stop`.
    accept_slot: AcceptSlot,
    /// Every open connection, by id (to close them on `stop`).
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    stopped: Cell<bool>,
    /// Accepted connections against the connection limits.
    limits: RefCell<ConnectionLimits>,
    /// The per-address IAMAT rate limits.
    rates: RefCell<RateLimiter>,
    me: Weak<Server>,
}

impl Server {
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    pub(crate) fn weak(&self) -> Weak<Server> {
        self.me.clone()
    }

    fn stop(&self) {
        if self.stopped.replace(true) {
            return;
        }
        if let Some(port) = self.port.borrow_mut().take() {
            drop(port.stop_listening());
        }
        self.links.stop();
        let conns: Vec<Rc<Conn>> = self.conns.borrow_mut().drain().map(|(_, c)| c).collect();
        for conn in conns {
            conn.close();
        }
        self.log.entry(format_args!("server {} stopped", self.name));
        // Break the server → port → factory → server cycle. (The caller,
        // a `HerdServer`, still holds the server, so `self` stays valid.)
        let me = self.accept_slot.borrow_mut().take();
        drop(me);
    }

    /// A protocol for a connection a client or neighbour opened.
    fn accept(&self, peer: SocketAddr) -> Option<HerdProtocol> {
        if self.stopped.get() {
            return None;
        }
        let protocol = self.new_protocol(peer, Role::Client);
        let id = self.next_conn.get() - 1;
        let admission = self.limits.borrow_mut().admit(id, peer);
        match admission {
            Admission::Accept { pause: false } => {}
            Admission::Accept { pause: true } => {
                if let Some(port) = self.port.borrow().as_ref() {
                    port.pause_accepting();
                }
                self.log.entry(format_args!(
                    "{} connections open, the limit (max_connections): accepting paused until one closes",
                    self.options.max_connections
                ));
            }
            Admission::RefuseAddress { first } => {
                if first {
                    self.log.entry(format_args!(
                        "{} connections open from {}, the limit (max_connections_per_address): \
                         refusing more from it until one closes (logged once)",
                        self.options.max_connections_per_address,
                        peer.ip()
                    ));
                }
            }
        }
        Some(protocol)
    }

    /// Refuses a connection accepted past its address's limit, if `conn` is
    /// one: writes the refusal line and closes it. Returns whether it was.
    fn refuse_if_over(&self, conn: &Rc<Conn>) -> bool {
        if !self.limits.borrow_mut().take_refusal(conn.id) {
            return false;
        }
        let transport = conn.transport.borrow().clone();
        if let Some(t) = transport {
            t.write(REFUSAL_PER_ADDRESS.as_bytes());
            t.lose_connection();
        }
        true
    }

    /// An accepted connection closed: resumes accepting below the total
    /// limit, and ends its address's episode of refusals.
    fn release_accepted(&self, conn: &Rc<Conn>) {
        let released = self.limits.borrow_mut().release(conn.id);
        if let Some(refused) = released.address_episode_ended {
            self.log.entry(format_args!(
                "accepting connections from {} again ({refused} refused)",
                conn.peer.ip()
            ));
        }
        if released.resume && !self.stopped.get() {
            let total = self.limits.borrow().total();
            if let Some(port) = self.port.borrow().as_ref() {
                port.resume_accepting();
            }
            self.log.entry(format_args!(
                "{total} connections open, below the limit (max_connections): accepting again"
            ));
        }
    }

    /// A protocol for a connection with this role.
    pub(crate) fn new_protocol(&self, peer: SocketAddr, role: Role) -> HerdProtocol {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let max = match role {
            Role::Client | Role::Claimed { .. } => self.options.max_line_length,
            Role::Verifying { .. } | Role::Link { .. } => {
                self.options.max_line_length + LINK_LINE_SLACK
            }
        };
        let conn = Rc::new(Conn {
            id,
            server: self.me.clone(),
            peer,
            transport: RefCell::new(None),
            control: RefCell::new(None),
            role: RefCell::new(role),
            lines: Cell::new(0),
            answers: RefCell::new(VecDeque::new()),
            next_answer: Cell::new(0),
            input_done: Cell::new(false),
            write_paused: Cell::new(false),
            read_paused: Cell::new(false),
            link_congested: Cell::new(false),
            link_resync: Cell::new(false),
            max_pending: self.options.max_pending_answers.max(1),
            last_line_at: Cell::new(self.reactor.clock().now()),
            idle_timer: RefCell::new(None),
        });
        let lines = LineReceiver::new(ConnHandler { conn })
            .with_delimiter(b"\n")
            .with_max_length(max);
        StartTls::new(lines)
            .with_reactor(&self.reactor)
            .with_handshake_timeout(PEER_HANDSHAKE_TIMEOUT)
    }

    fn connection_made(&self, conn: &Rc<Conn>) {
        if self.stopped.get() {
            conn.close();
            return;
        }
        if self.refuse_if_over(conn) {
            return;
        }
        self.conns.borrow_mut().insert(conn.id, Rc::clone(conn));
        let role = conn.role.borrow().clone();
        match role {
            Role::Client => {
                self.log
                    .entry(format_args!("new connection from {}", conn.peer));
                conn.last_line_at.set(self.reactor.clock().now());
                self.watch_idle(conn, self.options.client_idle_timeout);
            }
            Role::Link { neighbour, dialled } => {
                self.log.entry(format_args!(
                    "new connection to neighbour {neighbour} at {}",
                    conn.peer
                ));
                let hello = format!("PEER {}", self.name);
                conn.write_logged(hello.as_bytes());
                self.links.register(self, conn, &neighbour, dialled);
            }
            Role::Verifying { neighbour, .. } => {
                self.log.entry(format_args!(
                    "new connection to neighbour {neighbour} at {}: verifying it over TLS",
                    conn.peer
                ));
                let hello = format!("PEER {}", self.name);
                conn.write_logged(hello.as_bytes());
                // The ClientHello follows the PEER line at once; the
                // neighbour's certificate must name `neighbour`.
                let started = match (&self.peer_links, conn.transport()) {
                    (PeerLinks::Verified(creds), Some(t)) => {
                        start_tls_client(&t, &neighbour, creds.client_config())
                            .map_err(|e| e.to_string())
                    }
                    _ => Err("no TLS credentials".to_string()),
                };
                match started {
                    Ok(()) => self.await_verification(conn),
                    Err(e) => {
                        self.log.entry(format_args!(
                            "cannot start TLS with neighbour {neighbour} at {}: {e}",
                            conn.peer
                        ));
                        conn.close();
                    }
                }
            }
            Role::Claimed { .. } => {}
        }
    }

    /// Calls [`verified`](Self::verified) when the TLS handshake of a link
    /// being verified is done (or failed).
    fn await_verification(&self, conn: &Rc<Conn>) {
        let Some(transport) = conn.transport() else {
            return;
        };
        let Some(tls) = transport.backend::<TlsTransport>() else {
            return;
        };
        let server = self.me.clone();
        let watched = Rc::downgrade(conn);
        let t = transport.clone();
        drop(tls.handshake_done().add_both(move |outcome| {
            let (Some(server), Some(conn)) = (server.upgrade(), watched.upgrade()) else {
                return Ok(());
            };
            match outcome {
                Ok(()) => {
                    let names = t
                        .backend::<TlsTransport>()
                        .and_then(TlsTransport::peer_dns_names)
                        .unwrap_or_default();
                    server.verified(&conn, &names);
                }
                Err(failure) => server.log.entry(format_args!(
                    "link with {} not verified: {failure}",
                    conn.describe_peer()
                )),
            }
            Ok(())
        }));
    }

    /// The TLS handshake of a link being verified is done: the peer holds
    /// a key whose certificate chains to the herd CA, and `names` are the
    /// names in it. It becomes the link if they include, exactly, the
    /// neighbour it must be; otherwise it is refused and closed.
    fn verified(&self, conn: &Rc<Conn>, names: &[String]) {
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
            self.log.entry(format_args!(
                "verified neighbour {neighbour} at {} by its certificate",
                conn.peer
            ));
            *conn.role.borrow_mut() = Role::Link {
                neighbour: neighbour.clone(),
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
    fn after_peer_line(&self, conn: &Rc<Conn>, ctx: &LineContext<'_>, data: &[u8]) {
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

    /// Checks `conn` for idleness after `delay`: a client with no answer
    /// pending that sent no complete line for the idle time-out is closed;
    /// otherwise the check is scheduled again for when it could be.
    fn watch_idle(&self, conn: &Rc<Conn>, delay: Duration) {
        let server = self.me.clone();
        let watched = Rc::downgrade(conn);
        let timer = self.reactor.call_later(delay, move || {
            let (Some(server), Some(conn)) = (server.upgrade(), watched.upgrade()) else {
                return;
            };
            server.idle_check(&conn);
        });
        *conn.idle_timer.borrow_mut() = Some(timer);
    }

    fn idle_check(&self, conn: &Rc<Conn>) {
        conn.idle_timer.borrow_mut().take();
        if conn.is_link() || conn.is_closing() {
            return;
        }
        let timeout = self.options.client_idle_timeout;
        if !conn.answers.borrow().is_empty() {
            // Waiting for us (a Places answer), not idle.
            self.watch_idle(conn, timeout);
            return;
        }
        let idle = self
            .reactor
            .clock()
            .now()
            .saturating_duration_since(conn.last_line_at.get());
        if idle >= timeout {
            self.log.entry(format_args!(
                "closing connection from {}: no command for {}s (the idle time-out)",
                conn.peer,
                timeout.as_secs_f64()
            ));
            conn.close();
        } else {
            self.watch_idle(conn, timeout - idle);
        }
    }

    fn connection_lost(&self, conn: &Rc<Conn>, reason: &ConnectionLost) {
        if let Some(timer) = conn.idle_timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        let known = self.conns.borrow_mut().remove(&conn.id).is_some();
        self.release_accepted(conn);
        if !known {
            // Refused at once (or made after `stop`): nothing to report.
            return;
        }
        conn.answers.borrow_mut().clear();
        let role = conn.role.borrow().clone();
        match role {
            Role::Client | Role::Claimed { .. } => self.log.entry(format_args!(
                "dropped connection from {}: {reason}",
                conn.peer
            )),
            Role::Verifying {
                neighbour, dialled, ..
            } => {
                self.log.entry(format_args!(
                    "dropped connection with {} before its link was verified: {reason}",
                    conn.describe_peer()
                ));
                if dialled {
                    self.links.verification_failed(self, &neighbour);
                }
            }
            Role::Link { neighbour, .. } => {
                self.log.entry(format_args!(
                    "dropped connection with neighbour {neighbour} at {}: {reason}",
                    conn.peer
                ));
                self.links.unregister(self, conn, &neighbour);
            }
        }
    }

    /// One line (without `\n`; a `\r` before it is dropped here).
    fn line_received(&self, conn: &Rc<Conn>, ctx: Option<&LineContext<'_>>, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = conn.lines.get() == 0;
        conn.lines.set(conn.lines.get() + 1);
        let role = conn.role.borrow().clone();
        match role {
            Role::Link { neighbour, .. } => {
                self.log.entry(format_args!(
                    "received from {neighbour} ({}): {}",
                    conn.peer,
                    escape(line)
                ));
                self.link_line(conn, &neighbour, line);
            }
            Role::Claimed { .. } | Role::Verifying { .. } => {
                self.log.entry(format_args!(
                    "ignored a line from {} before its link was verified: {}",
                    conn.describe_peer(),
                    escape(line)
                ));
            }
            Role::Client => {
                conn.last_line_at.set(self.reactor.clock().now());
                self.log.entry(format_args!(
                    "received from {}: {}",
                    conn.peer,
                    escape(line)
                ));
                self.client_line(conn, ctx, line, first);
            }
        }
    }

    fn client_line(
        &self,
        conn: &Rc<Conn>,
        ctx: Option<&LineContext<'_>>,
        line: &[u8],
        first: bool,
    ) {
        match command::parse(line) {
            Ok(Command::IAmAt(iamat)) => self.iamat(conn, line, &iamat),
            Ok(Command::WhatsAt(whatsat)) => self.whatsat(conn, line, &whatsat),
            Ok(Command::Peer(name)) if first => match self.links.neighbour_named(name) {
                Some(neighbour) if matches!(self.peer_links, PeerLinks::Verified(_)) => {
                    // Wait for the next bytes: the neighbour's TLS handshake
                    // (see `after_peer_line`).
                    *conn.role.borrow_mut() = Role::Claimed {
                        neighbour,
                        line: line.to_vec(),
                    };
                    match ctx {
                        Some(ctx) => ctx.set_raw_mode(),
                        None => self.claim_ended(conn),
                    }
                }
                Some(neighbour) => {
                    *conn.role.borrow_mut() = Role::Link {
                        neighbour: neighbour.clone(),
                        dialled: false,
                    };
                    if let Some(ctx) = ctx {
                        ctx.set_max_length(self.options.max_line_length + LINK_LINE_SLACK);
                    }
                    self.links.register(self, conn, &neighbour, false);
                }
                None => self.invalid(conn, line, "PEER names no neighbour"),
            },
            Ok(Command::Peer(_)) => self.invalid(conn, line, "PEER after the first line"),
            Ok(Command::At(_)) => self.invalid(conn, line, "AT from a client"),
            Err(e) => self.invalid(conn, line, &e.to_string()),
        }
    }

    /// A connection that sent `PEER <neighbour>` ended its input before any
    /// TLS handshake: the PEER line is invalid.
    fn claim_ended(&self, conn: &Rc<Conn>) {
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

    fn invalid(&self, conn: &Rc<Conn>, line: &[u8], why: &str) {
        self.log
            .entry(format_args!("invalid command from {} ({why})", conn.peer));
        let mut answer = Vec::new();
        command::invalid_answer(line, &mut answer);
        conn.push_ready(answer);
    }

    /// Why a location report (IAMAT, or AT from a neighbour) is refused,
    /// if it is: a client ID over the limit, or a time too far ahead of
    /// `now_ns`.
    fn refuse_location(&self, client: &[u8], time_ns: i128, now_ns: i128) -> Option<String> {
        if client.len() > self.options.max_client_id_length {
            return Some(format!(
                "client ID of {} bytes, over the limit of {}",
                client.len(),
                self.options.max_client_id_length
            ));
        }
        let ahead = self.options.max_time_ahead;
        let ahead_ns = i128::try_from(ahead.as_nanos()).unwrap_or(i128::MAX);
        if time_ns > now_ns.saturating_add(ahead_ns) {
            return Some(format!(
                "time more than {}s ahead of this server's clock",
                ahead.as_secs()
            ));
        }
        None
    }

    fn iamat(&self, conn: &Rc<Conn>, line: &[u8], iamat: &IAmAt<'_>) {
        let received_ns = command::unix_nanos((self.options.wall_clock)());
        if let Some(why) = self.refuse_location(iamat.client, iamat.time_ns, received_ns) {
            self.invalid(conn, line, &why);
            return;
        }
        if !self.rate_allows(conn, line, iamat.client) {
            return;
        }
        let mut at_line = Vec::new();
        iamat.write_at_line(
            self.name.as_bytes(),
            received_ns - iamat.time_ns,
            &mut at_line,
        );
        let location = Location::new(at_line.clone(), iamat.time_ns, iamat.coordinates);
        self.offer(iamat.client, location, None);
        at_line.push(b'\n');
        conn.push_ready(at_line);
    }

    /// Applies the per-address IAMAT rate limits; a refused IAMAT is
    /// answered `? ` + the line here (logged once per episode).
    fn rate_allows(&self, conn: &Rc<Conn>, line: &[u8], client: &[u8]) -> bool {
        let new_client = self.store.borrow().get(client).is_none();
        let now = self.reactor.clock().now();
        let ip = conn.peer.ip();
        let verdict = self.rates.borrow_mut().check(ip, new_client, now);
        match verdict {
            RateVerdict::Allowed { episode_ended } => {
                if let Some(refused) = episode_ended {
                    self.log.entry(format_args!(
                        "IAMATs from {ip} allowed again ({refused} refused by the rate limit)"
                    ));
                }
                true
            }
            RateVerdict::Refused { first, which } => {
                if first {
                    let rate = if which == "IAMAT" {
                        self.options.iamat_rate
                    } else {
                        self.options.new_client_rate
                    };
                    self.log.entry(format_args!(
                        "rate limit for {which}s from {ip} hit ({}/s, bursts of {}): \
                         answering `?` (logged once until one is allowed again)",
                        rate.per_second, rate.burst
                    ));
                }
                let mut answer = Vec::new();
                command::invalid_answer(line, &mut answer);
                conn.push_ready(answer);
                false
            }
        }
    }

    fn whatsat(&self, conn: &Rc<Conn>, line: &[u8], whatsat: &WhatsAt<'_>) {
        let stored = self.store.borrow().get(whatsat.client).cloned();
        let Some(location) = stored else {
            self.invalid(conn, line, "WHATSAT for an unknown client");
            return;
        };
        let id = conn.push_pending();
        let c = location.coordinates();
        let radius_m = whatsat.radius_km * 1000.0;
        let client = escape(whatsat.client);
        self.log.entry(format_args!(
            "Places request for {client} from {}: lat {} lon {} radius {radius_m} m, at most {}",
            conn.peer, c.lat, c.lon, whatsat.max_results
        ));
        let answer = self
            .places
            .nearby(c.lat, c.lon, radius_m, whatsat.max_results);
        let conn = Rc::clone(conn);
        let server = self.me.clone();
        drop(answer.add_both(move |outcome| {
            let answer = outcome.unwrap_or_else(|failure| failed_answer(&failure.to_string()));
            if let Some(server) = server.upgrade() {
                server.log.entry(format_args!(
                    "Places answer for {client}: {} in {:.3} s: {}",
                    answer.status,
                    answer.elapsed.as_secs_f64(),
                    answer.summary
                ));
            }
            conn.fill(id, whatsat_answer(location.at_line(), &answer.json));
            Ok(())
        }));
    }

    fn link_line(&self, conn: &Rc<Conn>, neighbour: &str, line: &[u8]) {
        match command::parse(line) {
            Ok(Command::At(at)) => {
                let now_ns = command::unix_nanos((self.options.wall_clock)());
                match self.refuse_location(at.client, at.time_ns, now_ns) {
                    None => self.offer(at.client, Location::from_at(&at), Some(neighbour)),
                    Some(why) => self.log.entry(format_args!(
                        "ignored an AT from neighbour {neighbour} ({}): {why}",
                        conn.peer
                    )),
                }
            }
            Ok(_) => self.log.entry(format_args!(
                "ignored a line from neighbour {neighbour} ({}): not an AT line",
                conn.peer
            )),
            Err(e) => self.log.entry(format_args!(
                "ignored a line from neighbour {neighbour} ({}): {e}",
                conn.peer
            )),
        }
    }

    /// Stores `location` if it is newer, and floods it to every neighbour
    /// but `from`.
    fn offer(&self, client: &[u8], location: Location, from: Option<&str>) {
        let line = location.at_line().to_vec();
        let (stored, evictions, len, bytes) = {
            let mut store = self.store.borrow_mut();
            let before = store.evictions();
            let stored = store.offer(client, location);
            let after = store.evictions();
            // Log the 1st, 10th, 100th, ... eviction: the limit being hit is
            // visible without one log line per evicted client.
            let logged = (before + 1..=after).rfind(|n| is_power_of_ten(*n));
            (stored, logged, store.len(), store.bytes())
        };
        if let Some(n) = evictions {
            self.log.entry(format_args!(
                "store full ({len} clients, {bytes} bytes; limits {} clients, {} bytes): \
                 {n} oldest location(s) evicted so far",
                self.options.max_clients, self.options.max_store_bytes
            ));
        }
        if stored {
            self.log.entry(format_args!(
                "new location for {}: {}",
                escape(client),
                escape(&line)
            ));
            self.links.flood(&line, from);
        } else {
            self.log.entry(format_args!(
                "not newer than the stored location for {}: not stored nor forwarded",
                escape(client)
            ));
        }
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

/// The answer when the Places Deferred failed (the client still gets one).
fn failed_answer(message: &str) -> PlacesAnswer {
    let json = serde_json::json!({
        "html_attributions": [],
        "results": [],
        "status": "UNKNOWN_ERROR",
        "error_message": message,
    });
    PlacesAnswer {
        json: serde_json::to_string_pretty(&json).unwrap_or_default(),
        status: "UNKNOWN_ERROR".to_string(),
        elapsed: Duration::ZERO,
        summary: format!("the Places lookup failed: {message}"),
    }
}

/// A WHATSAT answer: the stored AT line, `\n`, the JSON with every run of
/// newlines collapsed to one and none at either end, then `\n\n`.
///
/// ```
/// use gyre_herd::server::whatsat_answer;
/// assert_eq!(
///     whatsat_answer(b"AT A +0.1 k +1+2 5", "\n{\n\n  \"results\": []\n}\n\n"),
///     b"AT A +0.1 k +1+2 5\n{\n  \"results\": []\n}\n\n"
/// );
/// ```
pub fn whatsat_answer(at_line: &[u8], json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(at_line.len() + json.len() + 3);
    out.extend_from_slice(at_line);
    out.push(b'\n');
    let mut newline = false;
    let mut started = false;
    for &b in json.trim_matches('\n').as_bytes() {
        if b == b'\n' {
            newline = true;
            continue;
        }
        if newline && started {
            out.push(b'\n');
        }
        newline = false;
        started = true;
        out.push(b);
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// The protocol of every connection of a server: its lines, run by a
/// [`StartTls`] layer (plaintext until a link switches to TLS).
pub(crate) type HerdProtocol = StartTls;

/// How a server authenticates its links, resolved from
/// [`ServerOptions::peer_tls`] at start-up.
pub(crate) enum PeerLinks {
    /// Mutual TLS with these credentials.
    Verified(crate::pki::PeerCredentials),
    /// `PEER <name>` is believed.
    Insecure,
}

impl PeerLinks {
    fn for_server(name: &str, tls: &PeerTls) -> io::Result<PeerLinks> {
        Ok(match tls {
            PeerTls::Verified(creds) if creds.name() == name => PeerLinks::Verified(creds.clone()),
            PeerTls::Verified(creds) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the peer TLS credentials are for {:?}, not for {name:?}",
                        creds.name()
                    ),
                ))
            }
            PeerTls::InProcess => PeerLinks::Verified(HerdCa::in_process()?.credentials(name)?),
            PeerTls::Insecure => PeerLinks::Insecure,
        })
    }
}

/// What a connection is for. A connection is a link only once its peer is
/// verified (or, with insecure peer links, once it said `PEER`).
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// A client (or a connection that has not named itself a neighbour).
    Client,
    /// Its first line was `line`, `PEER <neighbour>`; the bytes that follow
    /// tell whether a TLS handshake starts (the receiver is in raw mode).
    Claimed { neighbour: String, line: Vec<u8> },
    /// A TLS handshake is under way, on a connection we dialled to
    /// `neighbour`, or on one that claimed to be it with `line`; nothing is
    /// sent on it and it displaces no link until its certificate is checked.
    Verifying {
        neighbour: String,
        dialled: bool,
        line: Option<Vec<u8>>,
    },
    /// A link to `neighbour`, opened by us (`dialled`) or by it.
    Link { neighbour: String, dialled: bool },
}

/// One connection's state, shared by its line handler, its Places
/// callbacks and the links table. Borrows of its cells are never held
/// across a call out.
pub(crate) struct Conn {
    id: u64,
    server: Weak<Server>,
    peer: SocketAddr,
    transport: RefCell<Option<Transport>>,
    control: RefCell<Option<LineControl>>,
    role: RefCell<Role>,
    /// Lines received so far.
    lines: Cell<u64>,
    /// Answers in command order; `None` while not ready.
    answers: RefCell<VecDeque<(u64, Option<Vec<u8>>)>>,
    next_answer: Cell<u64>,
    /// EOF, or an over-long line: no more commands; close once answered.
    input_done: Cell<bool>,
    /// The transport's write buffer is above its high-water mark.
    write_paused: Cell<bool>,
    /// We paused the line receiver.
    read_paused: Cell<bool>,
    /// A link whose write buffer is above its high-water mark: floods skip
    /// it (see [`LinkFlow`]).
    link_congested: Cell<bool>,
    /// A flood skipped this link: send it the whole store when it drains.
    link_resync: Cell<bool>,
    max_pending: usize,
    /// When the last complete line arrived (or the connection opened), for
    /// the idle time-out.
    last_line_at: Cell<Instant>,
    /// The pending idle check of a client connection.
    idle_timer: RefCell<Option<DelayedCall>>,
}

impl Conn {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's transport, while it is open.
    fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    /// Whether a close was asked for (or happened).
    fn is_closing(&self) -> bool {
        self.transport
            .borrow()
            .as_ref()
            .is_none_or(|t| t.is_closing())
    }

    /// Closes the connection after what is buffered is sent.
    pub(crate) fn close(&self) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.lose_connection();
        }
    }

    /// Writes raw bytes (no logging).
    pub(crate) fn write(&self, data: &[u8]) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.write(data);
        }
    }

    /// Writes `line` and `\n`, and logs it.
    pub(crate) fn write_logged(&self, line: &[u8]) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.write_sequence(&[line, b"\n"]);
        }
        if let Some(server) = self.server.upgrade() {
            server.log.entry(format_args!(
                "sent to {}: {}",
                self.describe_peer(),
                escape(line)
            ));
        }
    }

    /// `Ball (127.0.0.1:5000)` for a link, the address for a client.
    pub(crate) fn describe_peer(&self) -> String {
        match &*self.role.borrow() {
            Role::Link { neighbour, .. } => format!("{neighbour} ({})", self.peer),
            Role::Verifying {
                neighbour,
                dialled: true,
                ..
            } => format!("{neighbour}? ({}, not verified yet)", self.peer),
            Role::Claimed { neighbour, .. }
            | Role::Verifying {
                neighbour,
                dialled: false,
                ..
            } => format!("{} (claims to be {neighbour})", self.peer),
            Role::Client => self.peer.to_string(),
        }
    }

    /// Queues an answer that is ready now.
    fn push_ready(&self, answer: Vec<u8>) {
        let id = self.next_answer.get();
        self.next_answer.set(id + 1);
        self.answers.borrow_mut().push_back((id, Some(answer)));
        self.flush_answers();
    }

    /// Queues a place for an answer to come; returns its id for `fill`.
    fn push_pending(&self) -> u64 {
        let id = self.next_answer.get();
        self.next_answer.set(id + 1);
        self.answers.borrow_mut().push_back((id, None));
        self.update_flow();
        id
    }

    /// The answer `id` is ready.
    fn fill(&self, id: u64, answer: Vec<u8>) {
        {
            let mut answers = self.answers.borrow_mut();
            match answers.iter_mut().find(|(i, _)| *i == id) {
                Some(slot) => slot.1 = Some(answer),
                // The connection closed meanwhile.
                None => return,
            }
        }
        self.flush_answers();
    }

    /// Writes the ready answers at the front of the queue; closes if the
    /// input is done and nothing is left to answer.
    fn flush_answers(&self) {
        loop {
            let next = {
                let mut answers = self.answers.borrow_mut();
                match answers.front() {
                    Some((_, Some(_))) => answers.pop_front().and_then(|(_, a)| a),
                    _ => None,
                }
            };
            let Some(answer) = next else {
                break;
            };
            self.write(&answer);
            if let Some(server) = self.server.upgrade() {
                let shown = match answer.iter().position(|&b| b == b'\n') {
                    Some(end) if end + 1 < answer.len() => format!(
                        "{} + Places JSON ({} bytes)",
                        escape(&answer[..end]),
                        answer.len() - end - 1
                    ),
                    Some(end) => escape(&answer[..end]),
                    None => escape(&answer),
                };
                server
                    .log
                    .entry(format_args!("sent to {}: {shown}", self.peer));
            }
        }
        self.maybe_finish();
        self.update_flow();
    }

    /// After the input ended, closes once every answer is written.
    fn maybe_finish(&self) {
        if self.input_done.get() && self.answers.borrow().is_empty() {
            self.close();
        }
    }

    /// Pauses reading while too many answers wait, the write buffer is
    /// full, or the input is done; resumes otherwise.
    fn update_flow(&self) {
        let want_pause = self.input_done.get()
            || self.write_paused.get()
            || self.answers.borrow().len() >= self.max_pending;
        if want_pause == self.read_paused.get() {
            return;
        }
        self.read_paused.set(want_pause);
        let control = self.control.borrow().clone();
        if let Some(control) = control {
            if want_pause {
                control.pause_producing();
            } else {
                control.resume_producing();
            }
        }
    }

    fn is_link(&self) -> bool {
        matches!(*self.role.borrow(), Role::Link { .. })
    }

    /// Bytes written and not yet taken by the kernel.
    pub(crate) fn buffered_len(&self) -> usize {
        let transport = self.transport.borrow().clone();
        transport.map_or(0, |t| t.buffered_len())
    }

    /// Whether floods skip this link for now (its peer is not reading).
    pub(crate) fn skip_flood(&self) -> bool {
        if self.link_congested.get() {
            if !self.link_resync.replace(true) {
                if let Some(server) = self.server.upgrade() {
                    server.log.entry(format_args!(
                        "{} is not reading ({} bytes unsent): new locations wait until it drains, then it gets the whole store",
                        self.describe_peer(),
                        self.buffered_len()
                    ));
                }
            }
            return true;
        }
        false
    }

    /// Makes this link connection's write buffer bounded: once it is above
    /// the transport's high-water mark, floods skip it, and when it drains
    /// it is sent the whole store, which holds the latest of everything it
    /// missed (a neighbour takes only locations newer than its own, so
    /// nothing is lost and nothing is applied twice).
    pub(crate) fn watch_link_buffer(self: &Rc<Self>) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            // Replaces a client's WriteFlow: a link never pauses its reading.
            self.write_paused.set(false);
            t.register_producer(Rc::new(LinkFlow {
                conn: Rc::downgrade(self),
            }));
            self.update_flow();
        }
    }
}

/// Tracks a link's write buffer (see [`Conn::watch_link_buffer`]).
struct LinkFlow {
    conn: Weak<Conn>,
}

impl Producer for LinkFlow {
    fn pause_producing(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.link_congested.set(true);
        }
    }

    fn resume_producing(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        conn.link_congested.set(false);
        if conn.link_resync.replace(false) {
            if let Some(server) = conn.server.upgrade() {
                server.links.send_store(&server, &conn);
            }
        }
    }
}

/// Pauses the line receiver while the transport's write buffer is full (a
/// client that does not read its answers).
struct WriteFlow {
    conn: Weak<Conn>,
}

impl Producer for WriteFlow {
    fn pause_producing(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.write_paused.set(true);
            conn.update_flow();
        }
    }

    fn resume_producing(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.write_paused.set(false);
            conn.update_flow();
        }
    }
}

/// The line handler of every connection of a server.
pub(crate) struct ConnHandler {
    conn: Rc<Conn>,
}

impl ConnHandler {
    fn server(&self) -> Option<Rc<Server>> {
        self.conn.server.upgrade()
    }
}

impl LineHandler for ConnHandler {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let transport = ctx.transport().clone();
        *self.conn.transport.borrow_mut() = Some(transport.clone());
        *self.conn.control.borrow_mut() = Some(ctx.control());
        if !self.conn.is_link() {
            // Links are not flow-controlled: two servers that both stopped
            // reading because both write buffers are full would wait forever.
            transport.register_producer(Rc::new(WriteFlow {
                conn: Rc::downgrade(&self.conn),
            }));
        }
        match self.server() {
            Some(server) => server.connection_made(&self.conn),
            None => ctx.lose_connection(),
        }
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        if self.conn.input_done.get() {
            return;
        }
        if let Some(server) = self.server() {
            server.line_received(&self.conn, Some(ctx), line);
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        if let Some(server) = self.server() {
            server.after_peer_line(&self.conn, ctx, data);
        }
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        if let Some(server) = self.server() {
            server.log.entry(format_args!(
                "line from {} longer than {} bytes ({} bytes buffered): closing after the earlier answers",
                self.conn.describe_peer(),
                ctx.max_length(),
                data.len()
            ));
        }
        self.conn.input_done.set(true);
        if self.conn.is_link() {
            ctx.lose_connection();
            return;
        }
        self.conn.update_flow();
        self.conn.maybe_finish();
    }

    fn eof_received(&mut self, ctx: &mut LineContext<'_>) -> bool {
        let rest = ctx.clear_line_buffer();
        if let Some(server) = self.server() {
            server.claim_ended(&self.conn);
            server.log.entry(format_args!(
                "end of input from {}",
                self.conn.describe_peer()
            ));
            if !self.conn.input_done.get() && !rest.is_empty() {
                // A final line without `\n` is still a command. (Complete
                // lines are all delivered before EOF is read; split anyway.)
                for line in rest.split(|&b| b == b'\n') {
                    if !line.is_empty() {
                        server.line_received(&self.conn, None, line);
                    }
                }
            }
        }
        self.conn.input_done.set(true);
        if self.conn.is_link() {
            return false;
        }
        self.conn.update_flow();
        self.conn.maybe_finish();
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        if let Some(server) = self.server() {
            server.connection_lost(&self.conn, &reason);
        }
        self.conn.transport.borrow_mut().take();
        self.conn.control.borrow_mut().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten() {
        let hits: Vec<u64> = (0..=10_000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(hits, [1, 10, 100, 1000, 10_000]);
    }

    fn answer(json: &str) -> String {
        String::from_utf8(whatsat_answer(b"AT A +0.1 k +1+2 5", json)).unwrap()
    }

    #[test]
    fn whatsat_answer_collapses_newlines() {
        assert_eq!(answer("{}"), "AT A +0.1 k +1+2 5\n{}\n\n");
        assert_eq!(
            answer("{\n\"a\": 1\n}\n"),
            "AT A +0.1 k +1+2 5\n{\n\"a\": 1\n}\n\n"
        );
        assert_eq!(
            answer("\n\n{\n\n\n\"a\":\n\n1}\n\n\n"),
            "AT A +0.1 k +1+2 5\n{\n\"a\":\n1}\n\n"
        );
        // Spaces are kept, even on a line of their own.
        assert_eq!(answer("{\n  \n}"), "AT A +0.1 k +1+2 5\n{\n  \n}\n\n");
    }

    #[test]
    fn a_failed_lookup_has_a_google_status_and_a_message() {
        let a = failed_answer("boom \"quoted\"");
        assert_eq!(a.status, "UNKNOWN_ERROR");
        let v: serde_json::Value = serde_json::from_str(&a.json).unwrap();
        assert_eq!(v["status"], "UNKNOWN_ERROR");
        assert_eq!(v["error_message"], "boom \"quoted\"");
        assert_eq!(v["results"], serde_json::json!([]));
    }

    #[test]
    fn default_options_follow_herd_md() {
        let o = ServerOptions::default();
        assert_eq!(o.backoff.max_delay, Duration::from_secs(1));
        assert_eq!(o.backoff.max_retries, None);
        assert!(o.backoff.jitter > 0.0);
        assert_eq!(o.max_line_length, DEFAULT_MAX_LINE_LENGTH);
        assert!(format!("{o:?}").contains("max_pending_answers"));
    }

    #[test]
    fn unknown_server_name_is_an_error() {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        struct NoPlaces;
        impl PlacesLookup for NoPlaces {
            fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
                // Never fires: nobody keeps the resolver.
                Deferred::new().1
            }
        }
        let e = HerdServer::start(
            &reactor,
            "Nobody",
            &HerdConfig::default(),
            NoPlaces,
            ServerLog::discard(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("Nobody"));
    }
}
