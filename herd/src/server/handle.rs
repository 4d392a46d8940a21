//! [`HerdServer`]: the public handle of one running server: start, bind,
//! dial, inspect, stop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;

use gyre_reactor::defer::Deferred;
use gyre_reactor::{factory_fn, ListenOptions, PortEvent, Reactor};

use super::link::LinkCounts;
use super::lookup::PlacesLookup;
use super::options::ServerOptions;
use super::peering::PeerLinks;
use super::reload::PeerReload;
use super::state::{AcceptSlot, Life, Server};
use crate::command::{self, Command};
use crate::config::HerdConfig;
use crate::limits::{ConnectionLimits, RateLimiter, REFUSAL_NO_DESCRIPTORS};
use crate::links::Links;
use crate::log::ServerLog;
use crate::metrics::Metrics;
use crate::pki::{PeerCredentials, PkiError};
use crate::store::{Location, Store};

/// One server of the herd, running on a reactor: a cheap `Clone` handle.
///
/// The server runs until [`stop`](Self::stop) (or until the reactor shuts
/// down); dropping the handle does not stop it.
#[derive(Clone)]
pub struct HerdServer {
    pub(super) inner: Rc<Server>,
}

impl fmt::Debug for HerdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HerdServer")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.local_addr)
            .field("running", &self.inner.is_running())
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
        // Entries reach the file before anything sent in the same
        // iteration reaches a peer, with one write per iteration.
        log.flush_before_writes(reactor);
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
            life: RefCell::new(Life::Running),
            limits: RefCell::new(limits),
            rates: RefCell::new(rates),
            metrics: Metrics::new(),
            started: reactor.clock().now(),
            flood_scratch: Cell::new(String::new()),
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
            PeerLinks::Verified(creds) => inner.log.entry(format_args!(
                "peer links: mutual TLS; a neighbour must present a certificate from the herd CA naming it \
                 (this server presents certificate serial {})",
                creds.current().serial()
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

    /// Stores locations in bulk and returns how many were stored: each of
    /// `lines` is an AT line as a neighbour sends it (without its line
    /// end), checked and kept as one from a neighbour would be (a newer
    /// location per client wins; a client ID over
    /// [`ServerOptions::max_client_id_length`] or a time more than
    /// [`ServerOptions::max_time_ahead`] ahead is refused; a line that is
    /// not an AT line is skipped). For a program that seeds a server (from
    /// a snapshot, say) and for tests; it is not rate-limited, and it is
    /// logged as one summary entry, not line by line. Neighbours whose
    /// links are up get what was stored by a catch-up, paced by the link's
    /// write buffer like the one at link-up, not by one flood per line;
    /// links that come up later get it with the rest of the store.
    ///
    /// ```
    /// # use gyre_herd::{HerdConfig, HerdServer, PlacesLookup, ServerLog, ServerOptions};
    /// # use gyre_herd::places::PlacesAnswer;
    /// # use gyre_reactor::{defer::Deferred, Reactor};
    /// # struct NoPlaces;
    /// # impl PlacesLookup for NoPlaces {
    /// #     fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> { Deferred::new().1 }
    /// # }
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let config = HerdConfig::from_json(
    ///     r#"{"servers": [{"name": "A", "host": "127.0.0.1", "port": 0}]}"#)?;
    /// let server = HerdServer::bind(&reactor, "A", &config, NoPlaces,
    ///                               ServerLog::memory(), ServerOptions::default())?;
    /// let stored = server.load_locations([
    ///     &b"AT B +0.1 kiwi +34.06-118.44 1621464827.5"[..],
    ///     b"AT B +0.1 kiwi +34.06-118.44 1621464820", // older: not stored
    ///     b"not an AT line",
    /// ]);
    /// assert_eq!(stored, 1);
    /// assert!(server.location(b"kiwi").is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_locations<L: AsRef<[u8]>>(&self, lines: impl IntoIterator<Item = L>) -> usize {
        let server = &self.inner;
        let now_ns = command::unix_nanos((server.options.wall_clock)());
        let from = server.store.borrow().next_seq();
        let (mut stored, mut refused, mut skipped) = (0usize, 0usize, 0usize);
        for line in lines {
            let line = line.as_ref();
            let Ok(Command::At(at)) = command::parse(line) else {
                skipped += 1;
                continue;
            };
            if server
                .refuse_location(at.client, at.time_ns, now_ns)
                .is_some()
            {
                refused += 1;
                continue;
            }
            if server
                .store
                .borrow_mut()
                .offer(at.client, Location::from_at(&at))
            {
                stored += 1;
            }
        }
        let (len, evictions) = {
            let store = server.store.borrow();
            (store.len(), store.evictions())
        };
        server.log.entry(format_args!(
            "loaded {stored} location(s) in bulk ({refused} refused by the limits, {skipped} \
             not AT lines; store: {len} clients, {evictions} evicted so far)"
        ));
        if stored > 0 {
            server.links.catch_up_from(server, from);
        }
        stored
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

    /// What the link with `neighbour` carried so far: lines received and
    /// sent on its connection (`None` when the link is down). For
    /// diagnostics and tests: when both sides agree, nothing is in flight.
    pub fn link_counts(&self, neighbour: &str) -> Option<LinkCounts> {
        self.inner.links.counts(neighbour)
    }

    /// Whether it stopped: [`stop`](Self::stop) was called, or a
    /// [`drain`](Self::drain) ended.
    pub fn is_stopped(&self) -> bool {
        matches!(*self.inner.life.borrow(), Life::Stopped)
    }

    /// Whether a [`drain`](Self::drain) is under way.
    pub fn is_draining(&self) -> bool {
        matches!(*self.inner.life.borrow(), Life::Draining(_))
    }

    /// Stops the server: closes its port, stops dialling, and closes every
    /// connection (links and clients; answers not yet ready are dropped).
    /// A new server may then listen on the same port. A drain under way
    /// ends (its Deferred fires).
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Stops the server gracefully (SIGTERM in the herd program): stops
    /// accepting, dialling and reading, closes its links cleanly, answers
    /// every command already received (Places answers included), closes
    /// each client connection once it is answered, then
    /// [stops](Self::stop). The Deferred fires when every connection is
    /// closed, or when [`ServerOptions::drain_timeout`] passed (the rest is
    /// then closed without its answers, and that is logged). Calling it
    /// again joins the drain under way; after a stop it fires at once. The
    /// full contract is in the `drain` module's docs (`server/drain.rs`).
    ///
    /// ```no_run
    /// # use gyre_herd::HerdServer;
    /// # use gyre_reactor::{Phase, Reactor, SystemEvent};
    /// # fn f(reactor: &Reactor, server: HerdServer) {
    /// // The reactor's shutdown waits for it (up to its shutdown time-out).
    /// reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
    ///     Some(server.drain())
    /// });
    /// # }
    /// ```
    pub fn drain(&self) -> Deferred<()> {
        self.inner.drain()
    }

    /// Replaces the server's peer TLS credentials: every new handshake
    /// uses them, and every link that is up stays up only if its
    /// neighbour's certificate verifies under them (it is closed, logged,
    /// otherwise). An error, logged, if the server has no peer TLS
    /// (`PeerTls::Insecure`) or `creds` are for another server; the old
    /// credentials then stay. The full contract is in the `reload` module's
    /// docs (`server/reload.rs`).
    pub fn reload_peer_tls(&self, creds: PeerCredentials) -> Result<PeerReload, PkiError> {
        self.inner.reload_peer_tls(creds)
    }

    /// [`reload_peer_tls`](Self::reload_peer_tls) with this server's
    /// credentials read from the pki directory `dir` (`ca.pem`, `NAME.pem`,
    /// `NAME-key.pem`, as [`PeerCredentials::load`]): what the herd program
    /// does on SIGHUP with `--peer-tls DIR`. A file that is missing or
    /// corrupt is an error, logged, and the old credentials stay.
    pub fn reload_peer_tls_from(&self, dir: &Path) -> Result<PeerReload, PkiError> {
        self.inner.reload_peer_tls_from(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::PlacesAnswer;
    use gyre_reactor::defer::Deferred;

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
