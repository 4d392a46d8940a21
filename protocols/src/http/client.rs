//! [`HttpClient`]: nonblocking HTTP/1.1 and HTTPS requests on a reactor,
//! with a keep-alive connection pool (Twisted's `Agent` with an
//! `HTTPConnectionPool`).
//!
//! A request goes through these steps, each a Deferred or a protocol
//! callback on the reactor's loop, never blocking it:
//!
//! 1. an idle kept-alive connection to the same (scheme, host, port) is
//!    taken from the pool, if there is one;
//! 2. otherwise the host is resolved on the reactor's thread pool
//!    ([`Reactor::resolve`]; skipped for IP literals) and the addresses are
//!    tried in order with the connect time-out; for `https`, a
//!    [`TlsProtocol`](crate::tls::TlsProtocol) wraps the connection, with
//!    the URL's host as the server name;
//! 3. the request is written and the response parsed by a
//!    [`ResponseParser`] as it arrives;
//! 4. the connection goes back to the pool if both sides allow it, and the
//!    Deferred fires with the [`Response`].
//!
//! A request on a pooled connection that the server had closed (it closes
//! before a single byte of the response) is sent once more on a new
//! connection when that is safe: an idempotent method. Twisted's
//! `_RetryingHTTP11ClientProtocol` does the same for GET, HEAD, OPTIONS,
//! DELETE and TRACE; PUT is retried here too, as its body is in memory and
//! can be sent again. A request on a new connection is never retried.
//!
//! Not supported: following redirects (a 3xx is returned as it is),
//! proxies, decoding `Content-Encoding`, streaming request or response
//! bodies, HTTP/2.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use gyre_reactor::clock::DelayedCall;
use gyre_reactor::defer::{fail, Deferred, Failure, Outcome, Resolver, TimedOut};
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};

use super::error::HttpError;
use super::message::{Prepared, Request, Response};
use super::parser::{Event, Header, ParserLimits, ResponseHead, ResponseParser};
use super::url::Scheme;
use crate::tls::{CertificateDer, TlsError, TlsProtocol, TlsTransport};

/// Keep-alive pool settings of an [`HttpClientConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Idle connections kept per (scheme, host, port); 0 disables keep-alive
    /// reuse. Default 4.
    pub max_idle_per_host: usize,
    /// An idle connection is closed after this long unused. Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections open at once per (scheme, host, port), idle and
    /// connecting ones included (a value of 0 is taken as 1). A request
    /// that finds none idle and the limit reached waits for one, first come
    /// first served: it gets the next connection that finishes a kept-alive
    /// response, or a new one when one closes. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_HOST`].
    pub max_connections_per_host: usize,
    /// Most requests waiting for a connection per (scheme, host, port).
    /// Past it a request fails at once with
    /// [`HttpError::TooManyWaiting`], logged (a warning at the 1st, 10th,
    /// 100th, ... refusal). Waiting counts against the request time-out.
    /// Default [`DEFAULT_MAX_WAITING_PER_HOST`].
    pub max_waiting_per_host: usize,
}

/// The default [`PoolConfig::max_connections_per_host`]: 16.
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 16;
/// The default [`PoolConfig::max_waiting_per_host`]: 256.
pub const DEFAULT_MAX_WAITING_PER_HOST: usize = 256;
/// The default [`HttpClientConfig::max_resolving`]: 32.
pub const DEFAULT_MAX_RESOLVING: usize = 32;

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_idle_per_host: 4,
            idle_timeout: Duration::from_secs(60),
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            max_waiting_per_host: DEFAULT_MAX_WAITING_PER_HOST,
        }
    }
}

/// Settings of an [`HttpClient`].
///
/// ```
/// use gyre_protocols::http::{HttpClientConfig, PoolConfig};
/// use std::time::Duration;
///
/// let config = HttpClientConfig {
///     request_timeout: Duration::from_secs(5),
///     pool: PoolConfig { max_idle_per_host: 8, ..PoolConfig::default() },
///     ..HttpClientConfig::default()
/// };
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct HttpClientConfig {
    /// Largest response body accepted. Default 16 MiB.
    pub max_body: u64,
    /// Largest response head (status line and headers) accepted. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields accepted in the head. Default 100.
    pub max_headers: usize,
    /// Time-out of each TCP connection attempt. Default 10 s.
    pub connect_timeout: Duration,
    /// Time-out of the whole request, from the call to the complete
    /// response (resolving, connecting, TLS, sending, receiving). Default 30 s.
    pub request_timeout: Duration,
    /// The keep-alive pool and the per-host connection limit.
    pub pool: PoolConfig,
    /// Most host name lookups in flight at once on the reactor's thread
    /// pool (IP literals are not looked up). Past it a request fails at once
    /// with [`HttpError::ResolverBusy`], logged (a warning at the 1st, 10th,
    /// 100th, ... refusal), so a flood of requests cannot queue unbounded
    /// DNS jobs. Default [`DEFAULT_MAX_RESOLVING`].
    pub max_resolving: usize,
    /// The TLS settings of `https` requests. Default: the webpki (Mozilla)
    /// roots, ALPN `http/1.1`. The client speaks HTTP/1.1 only: do not offer
    /// `h2` through ALPN here.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        let limits = ParserLimits::default();
        HttpClientConfig {
            max_body: limits.max_body,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            pool: PoolConfig::default(),
            max_resolving: DEFAULT_MAX_RESOLVING,
            tls: default_tls_config(),
        }
    }
}

impl HttpClientConfig {
    /// The default settings, trusting `roots` (a private or test CA) **in
    /// addition to** Mozilla's roots, with ALPN still `http/1.1`.
    ///
    /// A rustls configuration built by hand for extra roots easily loses
    /// the ALPN setting the client needs (a server that speaks several
    /// protocols then may not pick HTTP/1.1); this builds it right. An
    /// error if a certificate cannot be a trust anchor.
    ///
    /// ```no_run
    /// use gyre_protocols::http::{HttpClient, HttpClientConfig};
    /// use gyre_protocols::tls::parse_certs_pem;
    /// use gyre_reactor::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let ca = parse_certs_pem(&std::fs::read("ca.pem")?)?;
    /// let client = HttpClient::with_config(&reactor, HttpClientConfig::with_extra_roots(&ca)?);
    /// let response = client.get("https://service.internal:8443/health");
    /// # drop(response);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_extra_roots(roots: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        Ok(HttpClientConfig {
            tls: crate::tls::client_config(roots, &[HTTP_11_ALPN])?,
            ..HttpClientConfig::default()
        })
    }

    /// The default settings, trusting **only** `roots` (not Mozilla's),
    /// with ALPN `http/1.1`: for a client that talks only to services of a
    /// private CA. An error if a certificate cannot be a trust anchor.
    ///
    /// ```
    /// use gyre_protocols::http::HttpClientConfig;
    /// use gyre_protocols::tls::CertificateDer;
    ///
    /// let garbage = CertificateDer::from(vec![0u8; 4]);
    /// assert!(HttpClientConfig::with_only_roots(&[garbage]).is_err());
    /// ```
    pub fn with_only_roots(roots: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        Ok(HttpClientConfig {
            tls: crate::tls::client_config_with_roots(roots, &[HTTP_11_ALPN])?,
            ..HttpClientConfig::default()
        })
    }
}

/// The ALPN protocol name the client offers: it speaks HTTP/1.1 only.
pub const HTTP_11_ALPN: &[u8] = b"http/1.1";

/// The default TLS client settings: the webpki roots, ALPN `http/1.1`.
pub fn default_tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        // The ring provider supports both default versions; should that ever
        // change, fall back to the process-wide default provider.
        Err(_) => rustls::ClientConfig::builder(),
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![HTTP_11_ALPN.to_vec()];
    Arc::new(config)
}

/// Counters of an [`HttpClient`], for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connection attempts started.
    pub connections_opened: u64,
    /// Requests sent on a pooled connection.
    pub connections_reused: u64,
    /// Requests sent again after a pooled connection turned out closed.
    pub retries: u64,
    /// Requests that waited for a connection because their host was at
    /// [`PoolConfig::max_connections_per_host`].
    pub waited: u64,
    /// Requests refused with [`HttpError::TooManyWaiting`] or
    /// [`HttpError::ResolverBusy`].
    pub refused: u64,
}

/// A nonblocking HTTP/1.1 and HTTPS client on a [`Reactor`]: a cheap
/// `Clone`, `!Send` handle (clones share the pool).
///
/// Every request returns a [`Deferred`] that fires with the complete
/// [`Response`] (any status: a 404 is a response, not an error), or fails
/// with an [`HttpError`] in its [`Failure`]. Cancelling the Deferred aborts
/// the request's connection; it then fails with
/// [`Cancelled`](gyre_reactor::defer::Cancelled).
///
/// ```no_run
/// use gyre_protocols::http::HttpClient;
/// use gyre_reactor::Reactor;
/// use std::time::Duration;
///
/// let reactor = Reactor::new()?;
/// let client = HttpClient::new(&reactor);
/// let response = client.get("https://example.com/");
/// reactor.run_until(|| response.called(), Duration::from_secs(30))?;
/// match response.take_result() {
///     Some(Ok(r)) => println!("{} {}", r.status, r.text()),
///     Some(Err(failure)) => eprintln!("failed: {failure}"),
///     None => eprintln!("no answer in time"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct HttpClient {
    inner: Rc<ClientInner>,
}

type PoolKey = (Scheme, String, u16);

struct ClientInner {
    reactor: Reactor,
    config: HttpClientConfig,
    limits: ParserLimits,
    /// Idle kept-alive connections, oldest first.
    pool: RefCell<HashMap<PoolKey, Vec<Rc<Conn>>>>,
    /// Open connections and waiting requests per host.
    hosts: RefCell<HashMap<PoolKey, HostSlots>>,
    /// Host name lookups in flight.
    resolving: Cell<usize>,
    stats: Cell<ClientStats>,
}

/// One host's connection slots.
#[derive(Default)]
struct HostSlots {
    /// Connections counted against the limit (connecting, busy or idle),
    /// plus requests holding a slot while they resolve.
    open: usize,
    /// Requests waiting for a connection, first come first served.
    waiting: VecDeque<Rc<Exchange>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("idle_connections", &self.idle_connections())
            .field("stats", &self.stats())
            .finish()
    }
}

impl HttpClient {
    /// A client with the default settings.
    pub fn new(reactor: &Reactor) -> HttpClient {
        HttpClient::with_config(reactor, HttpClientConfig::default())
    }

    /// A client with `config`.
    pub fn with_config(reactor: &Reactor, config: HttpClientConfig) -> HttpClient {
        let limits = ParserLimits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_body: config.max_body,
            ..ParserLimits::default()
        };
        HttpClient {
            inner: Rc::new(ClientInner {
                reactor: reactor.clone(),
                config,
                limits,
                pool: RefCell::new(HashMap::new()),
                hosts: RefCell::new(HashMap::new()),
                resolving: Cell::new(0),
                stats: Cell::new(ClientStats::default()),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HttpClientConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.get()
    }

    /// Idle connections in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.borrow().values().map(Vec::len).sum()
    }

    /// Connections counted against
    /// [`PoolConfig::max_connections_per_host`] now, all hosts together
    /// (connecting, busy and idle ones).
    pub fn open_connections(&self) -> usize {
        self.inner.hosts.borrow().values().map(|h| h.open).sum()
    }

    /// Requests waiting for a connection now, all hosts together.
    pub fn waiting_requests(&self) -> usize {
        self.inner
            .hosts
            .borrow()
            .values()
            .map(|h| h.waiting.len())
            .sum()
    }

    /// Host name lookups in flight now.
    pub fn resolving(&self) -> usize {
        self.inner.resolving.get()
    }

    /// Closes every idle connection in the pool.
    pub fn close_idle(&self) {
        let idle: Vec<Rc<Conn>> = self
            .inner
            .pool
            .borrow_mut()
            .drain()
            .flat_map(|(_, conns)| conns)
            .collect();
        for conn in idle {
            conn.close();
        }
    }

    /// Sends `request`; fires with the response. See the [type docs](Self).
    #[track_caller]
    pub fn request(&self, request: Request) -> Deferred<Response> {
        let prepared = match request.prepare() {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let url = &prepared.url;
        let key = (url.scheme(), url.host().to_string(), url.port());
        let client = self.clone();
        let location = std::panic::Location::caller();
        // The canceller reaches the exchange through a weak reference, set
        // once the exchange exists.
        let for_cancel: Rc<RefCell<Weak<Exchange>>> = Rc::default();
        let (result, returned) = {
            let for_cancel = Rc::clone(&for_cancel);
            Deferred::with_canceller(move |_| {
                let ex = for_cancel.borrow().upgrade();
                if let Some(ex) = ex {
                    ex.abandon();
                }
            })
        };
        let exchange = Rc::new_cyclic(|weak: &Weak<Exchange>| {
            *for_cancel.borrow_mut() = weak.clone();
            let for_timer = weak.clone();
            let timeout = client.inner.config.request_timeout;
            let timer = client.inner.reactor.call_later(timeout, move || {
                if let Some(ex) = for_timer.upgrade() {
                    ex.timer.borrow_mut().take();
                    ex.abandon();
                    ex.finish(Err(HttpError::TimedOut(TimedOut(timeout)).into()));
                }
            });
            Exchange {
                client,
                key,
                prepared,
                result,
                stage: RefCell::new(Stage::Start),
                timer: RefCell::new(Some(timer)),
                retried: Cell::new(false),
                slot: Cell::new(false),
            }
        });
        log::debug!(
            "{} {} (requested at {location})",
            request.method,
            exchange.prepared.url.without_query()
        );
        exchange.start();
        returned
    }

    /// `GET url`.
    #[track_caller]
    pub fn get(&self, url: &str) -> Deferred<Response> {
        self.request(Request::get(url))
    }

    /// `POST url` with `json` as the body (`Content-Type: application/json`).
    #[track_caller]
    pub fn post_json(&self, url: &str, json: &serde_json::Value) -> Deferred<Response> {
        self.request(Request::post(url).json(json))
    }
}

impl ClientInner {
    fn count(&self, f: impl FnOnce(&mut ClientStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    fn max_connections(&self) -> usize {
        self.config.pool.max_connections_per_host.max(1)
    }

    /// Counts a refusal and logs it at the 1st, 10th, 100th, ... one.
    fn refused(&self, why: &HttpError) {
        self.count(|s| s.refused += 1);
        let n = self.stats.get().refused;
        let mut m = n;
        while m >= 10 && m % 10 == 0 {
            m /= 10;
        }
        if m == 1 {
            log::warn!("HTTP request refused ({n} so far): {why}");
        }
    }

    /// Takes a connection slot for `key` if one is free and nobody waits
    /// for one (`jump_queue`: even if others wait, for a retry).
    fn try_acquire(&self, key: &PoolKey, jump_queue: bool) -> bool {
        let max = self.max_connections();
        let mut hosts = self.hosts.borrow_mut();
        let host = hosts.entry(key.clone()).or_default();
        if host.open < max && (jump_queue || host.waiting.is_empty()) {
            host.open += 1;
            true
        } else {
            false
        }
    }

    /// Gives a connection slot of `key` back; waiting requests get it on
    /// the next loop turn.
    fn release_slot(self: &Rc<Self>, key: &PoolKey) {
        let wake = {
            let Ok(mut hosts) = self.hosts.try_borrow_mut() else {
                return;
            };
            let Some(host) = hosts.get_mut(key) else {
                return;
            };
            host.open = host.open.saturating_sub(1);
            let wake = !host.waiting.is_empty();
            if host.open == 0 && !wake {
                hosts.remove(key);
            }
            wake
        };
        if wake {
            let weak = Rc::downgrade(self);
            let key = key.clone();
            self.reactor.call_soon(move || {
                if let Some(client) = weak.upgrade() {
                    client.wake(&key);
                }
            });
        }
    }

    /// Starts waiting requests of `key` while slots are free.
    fn wake(self: &Rc<Self>, key: &PoolKey) {
        let max = self.max_connections();
        loop {
            let next = {
                let mut hosts = self.hosts.borrow_mut();
                let Some(host) = hosts.get_mut(key) else {
                    return;
                };
                if host.open >= max {
                    return;
                }
                match host.waiting.pop_front() {
                    Some(ex) if ex.is_done() => Some((ex, false)),
                    Some(ex) => {
                        host.open += 1;
                        Some((ex, true))
                    }
                    None => None,
                }
            };
            match next {
                None => return,
                Some((_, false)) => continue,
                Some((ex, true)) => {
                    ex.slot.set(true);
                    ex.connect_new();
                }
            }
        }
    }

    /// The next live request waiting for a connection to `key`.
    fn next_waiting(&self, key: &PoolKey) -> Option<Rc<Exchange>> {
        let mut hosts = self.hosts.borrow_mut();
        let host = hosts.get_mut(key)?;
        while let Some(ex) = host.waiting.pop_front() {
            if !ex.is_done() {
                return Some(ex);
            }
        }
        None
    }

    /// A usable idle connection for `key`, taken out of the pool.
    fn take_idle(&self, key: &PoolKey) -> Option<Rc<Conn>> {
        let mut pool = self.pool.borrow_mut();
        let conns = pool.get_mut(key)?;
        let mut found = None;
        while let Some(conn) = conns.pop() {
            if conn.usable() {
                found = Some(conn);
                break;
            }
        }
        if conns.is_empty() {
            pool.remove(key);
        }
        drop(pool);
        let conn = found?;
        if let Some(timer) = conn.st.borrow_mut().idle_timer.take() {
            let _ = timer.cancel();
        }
        Some(conn)
    }

    /// Puts a connection whose response is complete into the pool, or
    /// closes it if the pool is full.
    fn release(&self, conn: &Rc<Conn>) {
        if let Some(next) = self.next_waiting(&conn.key) {
            // A request waits for this host: it gets the connection.
            self.count(|s| s.connections_reused += 1);
            *next.stage.borrow_mut() = Stage::Connection {
                conn: Rc::clone(conn),
                attempt: None,
                addr: None,
                rest: Vec::new(),
            };
            conn.send(next);
            return;
        }
        let max = self.config.pool.max_idle_per_host;
        if max == 0 {
            conn.close();
            return;
        }
        let evicted = {
            let mut pool = self.pool.borrow_mut();
            let conns = pool.entry(conn.key.clone()).or_default();
            conns.push(Rc::clone(conn));
            if conns.len() > max {
                Some(conns.remove(0))
            } else {
                None
            }
        };
        if let Some(old) = evicted {
            old.close();
        }
        let weak = Rc::downgrade(conn);
        let timer = self
            .reactor
            .call_later(self.config.pool.idle_timeout, move || {
                if let Some(conn) = weak.upgrade() {
                    conn.st.borrow_mut().idle_timer.take();
                    conn.forget_in_pool();
                    conn.close();
                }
            });
        conn.st.borrow_mut().idle_timer = Some(timer);
    }
}

/// Where a request is.
enum Stage {
    Start,
    /// Waiting for a connection slot (in its host's `waiting` queue).
    Waiting,
    /// Resolving; holds the resolve Deferred's watching link (cancelling it
    /// cancels the resolve) once it is made.
    Resolving(Option<Deferred<()>>),
    /// Connecting (then `attempt` is the link watching the connect
    /// Deferred; cancelling it cancels the connect), or sent on `conn`.
    Connection {
        conn: Rc<Conn>,
        attempt: Option<Deferred<()>>,
        addr: Option<SocketAddr>,
        /// Addresses to try next if this one fails to connect.
        rest: Vec<SocketAddr>,
    },
    Done,
}

/// One request in flight, from the call to its Deferred firing.
struct Exchange {
    client: HttpClient,
    key: PoolKey,
    prepared: Prepared,
    result: Resolver<Response>,
    stage: RefCell<Stage>,
    timer: RefCell<Option<DelayedCall>>,
    retried: Cell<bool>,
    /// Holds a connection slot not yet handed to a connection (while
    /// resolving, between connection attempts).
    slot: Cell<bool>,
}

impl Exchange {
    fn reactor(&self) -> &Reactor {
        &self.client.inner.reactor
    }

    fn is_done(&self) -> bool {
        matches!(*self.stage.borrow(), Stage::Done)
    }

    fn start(self: &Rc<Self>) {
        let client = &self.client.inner;
        if let Some(conn) = client.take_idle(&self.key) {
            client.count(|s| s.connections_reused += 1);
            *self.stage.borrow_mut() = Stage::Connection {
                conn: Rc::clone(&conn),
                attempt: None,
                addr: None,
                rest: Vec::new(),
            };
            conn.send(Rc::clone(self));
        } else if client.try_acquire(&self.key, false) {
            self.slot.set(true);
            self.connect_new();
        } else {
            self.wait_for_slot(false);
        }
    }

    /// Queues for a connection slot (`front`: a retry, ahead of the others
    /// and past the bound), or fails if too many wait.
    fn wait_for_slot(self: &Rc<Self>, front: bool) {
        let client = &self.client.inner;
        let limit = client.config.pool.max_waiting_per_host;
        let queued = {
            let mut hosts = client.hosts.borrow_mut();
            let host = hosts.entry(self.key.clone()).or_default();
            if front {
                host.waiting.push_front(Rc::clone(self));
                true
            } else if host.waiting.len() < limit {
                host.waiting.push_back(Rc::clone(self));
                true
            } else {
                false
            }
        };
        if queued {
            client.count(|s| s.waited += 1);
            *self.stage.borrow_mut() = Stage::Waiting;
        } else {
            let e = HttpError::TooManyWaiting {
                host: self.key.1.clone(),
                limit,
            };
            client.refused(&e);
            self.finish(Err(e.into()));
        }
    }

    /// Gives back the connection slot this request holds, if any.
    fn give_up_slot(&self) {
        if self.slot.replace(false) {
            self.client.inner.release_slot(&self.key);
        }
    }

    /// Resolves (unless the host is an IP address) and connects.
    fn connect_new(self: &Rc<Self>) {
        let url = &self.prepared.url;
        if let Some(ip) = url.ip() {
            self.connect_to(vec![SocketAddr::new(ip, url.port())]);
            return;
        }
        let client = &self.client.inner;
        let limit = client.config.max_resolving;
        if client.resolving.get() >= limit {
            let e = HttpError::ResolverBusy { limit };
            client.refused(&e);
            self.finish(Err(e.into()));
            return;
        }
        client.resolving.set(client.resolving.get() + 1);
        let ticket = ResolveTicket(Rc::downgrade(client));
        let resolving = self.reactor().resolve(url.host(), url.port());
        *self.stage.borrow_mut() = Stage::Resolving(None);
        let me = Rc::clone(self);
        // The chain's end fires with `()`; it is kept only to cancel.
        let link = resolving.add_both(move |addrs| {
            drop(ticket);
            me.resolved(addrs);
            Ok(())
        });
        if let Stage::Resolving(slot @ None) = &mut *self.stage.borrow_mut() {
            *slot = Some(link);
        }
    }

    fn resolved(self: &Rc<Self>, addrs: Outcome<Vec<SocketAddr>>) {
        if !matches!(*self.stage.borrow(), Stage::Resolving(_)) {
            return; // Abandoned meanwhile.
        }
        let host = self.prepared.url.host().to_string();
        match addrs {
            Ok(addrs) if !addrs.is_empty() => self.connect_to(addrs),
            Ok(_) => self.finish(Err(HttpError::Resolve {
                host,
                source: Arc::new(io::Error::new(io::ErrorKind::NotFound, "no addresses")),
            }
            .into())),
            Err(failure) => {
                let source = match failure.downcast::<io::Error>() {
                    Ok(e) => e,
                    Err(other) => io::Error::other(other.to_string()),
                };
                self.finish(Err(HttpError::Resolve {
                    host,
                    source: Arc::new(source),
                }
                .into()))
            }
        }
    }

    /// Connects to the first of `addrs`, keeping the others to try next.
    fn connect_to(self: &Rc<Self>, mut addrs: Vec<SocketAddr>) {
        let client = &self.client.inner;
        let addr = addrs.remove(0);
        let conn = Rc::new(Conn::new(client, self.key.clone()));
        // The connection now holds this request's slot.
        conn.slot.set(self.slot.replace(false));
        conn.st.borrow_mut().exchange = Some(Rc::clone(self));
        conn.reset_for(&self.prepared);
        client.count(|s| s.connections_opened += 1);
        let timeout = client.config.connect_timeout;
        let http = HttpConnection {
            conn: Rc::clone(&conn),
            outer: self.key.0 == Scheme::Http,
        };
        let attempt = match self.key.0 {
            Scheme::Http => client
                .reactor
                .connect_protocol_with_timeout(addr, http, timeout),
            Scheme::Https => {
                let host = self.prepared.url.host();
                match tls_layer(http, host, &client.config.tls, &client.reactor) {
                    Ok((layer, tls)) => {
                        let watched = TcpWatch {
                            inner: layer,
                            conn: Rc::clone(&conn),
                            tls,
                        };
                        client
                            .reactor
                            .connect_protocol_with_timeout(addr, watched, timeout)
                    }
                    Err(e) => {
                        conn.st.borrow_mut().exchange = None;
                        self.finish(Err(e.into()));
                        return;
                    }
                }
            }
        };
        *self.stage.borrow_mut() = Stage::Connection {
            conn: Rc::clone(&conn),
            attempt: None,
            addr: Some(addr),
            rest: addrs,
        };
        let me = Rc::clone(self);
        let watched = Rc::clone(&conn);
        // The chain's end fires with `()`; it is kept only to cancel.
        let link = attempt.add_both(move |connected| {
            if let Err(failure) = connected {
                me.connect_failed(&watched, failure);
            }
            Ok(())
        });
        if let Stage::Connection {
            conn: current,
            attempt: slot @ None,
            ..
        } = &mut *self.stage.borrow_mut()
        {
            if Rc::ptr_eq(current, &conn) && !link.called() {
                *slot = Some(link);
            }
        }
    }

    fn connect_failed(self: &Rc<Self>, conn: &Rc<Conn>, failure: Failure) {
        let (addr, rest) = match &mut *self.stage.borrow_mut() {
            Stage::Connection {
                conn: current,
                addr,
                rest,
                ..
            } if Rc::ptr_eq(current, conn) => (*addr, std::mem::take(rest)),
            // Abandoned, or an attempt from before a retry.
            _ => return,
        };
        // The slot goes back to this request, for the next address.
        if conn.slot.replace(false) {
            self.slot.set(true);
        }
        conn.abort();
        if !rest.is_empty() {
            log::debug!("connect to {addr:?} failed ({failure}); trying the next address");
            self.connect_to(rest);
            return;
        }
        let source = match failure.downcast::<io::Error>() {
            Ok(e) => e,
            Err(other) => io::Error::other(other.to_string()),
        };
        self.finish(Err(HttpError::Connect {
            addr: addr.map_or_else(|| self.key.1.clone(), |a| a.to_string()),
            source: Arc::new(source),
        }
        .into()));
    }

    /// Sends the request again on a new connection.
    fn retry(self: &Rc<Self>) {
        if self.is_done() {
            return;
        }
        self.retried.set(true);
        self.client.inner.count(|s| s.retries += 1);
        log::debug!(
            "{}: the pooled connection was closed before any response; retrying on a new one",
            self.prepared.url.without_query()
        );
        if self.client.inner.try_acquire(&self.key, true) {
            self.slot.set(true);
            self.connect_new();
        } else {
            self.wait_for_slot(true);
        }
    }

    /// Stops everything in flight (cancel, time-out); fires nothing.
    fn abandon(&self) {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        let stage = self.stage.replace(Stage::Done);
        self.give_up_slot();
        match stage {
            Stage::Waiting => {
                let mut hosts = self.client.inner.hosts.borrow_mut();
                if let Some(host) = hosts.get_mut(&self.key) {
                    host.waiting.retain(|w| !std::ptr::eq(Rc::as_ptr(w), self));
                }
            }
            Stage::Resolving(Some(d)) => d.cancel(),
            Stage::Resolving(None) => {}
            Stage::Connection { conn, attempt, .. } => {
                conn.abort();
                if let Some(attempt) = attempt {
                    attempt.cancel();
                }
            }
            Stage::Start | Stage::Done => {}
        }
    }

    /// Fires the Deferred (unless cancelled or timed out already).
    fn finish(&self, outcome: Outcome<Response>) {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        let old = self.stage.replace(Stage::Done);
        self.give_up_slot();
        drop(old);
        if !self.result.called() {
            let _ = self.result.resolve(outcome);
        }
    }
}

/// One connection to a server, shared by the protocol (owned by the
/// reactor), the exchange using it, and the pool.
struct Conn {
    client: Weak<ClientInner>,
    key: PoolKey,
    /// Counted against its host's connection limit (until it closes).
    slot: Cell<bool>,
    st: RefCell<ConnState>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.give_up_slot();
    }
}

/// One host name lookup counted in [`ClientInner::resolving`], until
/// dropped (when the lookup's callback runs, or is dropped unrun).
struct ResolveTicket(Weak<ClientInner>);

impl Drop for ResolveTicket {
    fn drop(&mut self) {
        if let Some(client) = self.0.upgrade() {
            client
                .resolving
                .set(client.resolving.get().saturating_sub(1));
        }
    }
}

struct ConnState {
    /// The transport the HTTP protocol writes to (TLS or TCP).
    transport: Option<Transport>,
    /// The TCP transport underneath (the same one for plain HTTP).
    tcp: Option<Transport>,
    /// The HTTP protocol's `connection_made` happened (after TLS's handshake).
    made: bool,
    /// `connection_lost` happened.
    lost: bool,
    /// We closed or aborted it: never reuse.
    retired: bool,
    /// At least one response completed on it.
    reused: bool,
    exchange: Option<Rc<Exchange>>,
    parser: ResponseParser,
    /// Bytes arrived for the current exchange.
    got_bytes: bool,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    trailers: Vec<Header>,
    idle_timer: Option<DelayedCall>,
}

/// What feeding the parser came to.
enum Fed {
    More,
    Complete { keep_alive: bool },
    Failed(HttpError),
}

impl Conn {
    fn new(client: &Rc<ClientInner>, key: PoolKey) -> Conn {
        Conn {
            client: Rc::downgrade(client),
            key,
            slot: Cell::new(false),
            st: RefCell::new(ConnState {
                transport: None,
                tcp: None,
                made: false,
                lost: false,
                retired: false,
                reused: false,
                exchange: None,
                parser: ResponseParser::with_limits(client.limits),
                got_bytes: false,
                head: None,
                body: Vec::new(),
                trailers: Vec::new(),
                idle_timer: None,
            }),
        }
    }

    /// Gives back this connection's slot, if it holds one.
    fn give_up_slot(&self) {
        if self.slot.replace(false) {
            if let Some(client) = self.client.upgrade() {
                client.release_slot(&self.key);
            }
        }
    }

    fn usable(&self) -> bool {
        let st = self.st.borrow();
        st.made
            && !st.lost
            && !st.retired
            && st.exchange.is_none()
            && st.transport.as_ref().is_some_and(|t| !t.is_closing())
    }

    fn reset_for(&self, prepared: &Prepared) {
        let mut st = self.st.borrow_mut();
        st.parser.reset(prepared.head_request);
        st.got_bytes = false;
        st.head = None;
        st.body = Vec::new();
        st.trailers = Vec::new();
    }

    /// Sends `exchange`'s request on this (pooled, connected) connection.
    fn send(&self, exchange: Rc<Exchange>) {
        self.reset_for(&exchange.prepared);
        let transport = {
            let mut st = self.st.borrow_mut();
            st.exchange = Some(Rc::clone(&exchange));
            st.transport.clone()
        };
        if let Some(t) = transport {
            t.write(&exchange.prepared.bytes);
        }
    }

    /// The TCP connection is up (outermost protocol's `connection_made`).
    fn tcp_made(&self, transport: &Transport) {
        let retired = {
            let mut st = self.st.borrow_mut();
            st.tcp = Some(transport.clone());
            st.retired
        };
        if retired {
            transport.abort_connection();
        }
    }

    /// The HTTP protocol's `connection_made`: write the request.
    fn made(&self, transport: Transport) {
        let (retired, exchange) = {
            let mut st = self.st.borrow_mut();
            st.made = true;
            st.transport = Some(transport.clone());
            (st.retired, st.exchange.clone())
        };
        match exchange {
            Some(ex) if !retired => transport.write(&ex.prepared.bytes),
            _ => self.abort(),
        }
    }

    fn data(self: &Rc<Self>, data: &[u8]) {
        let (exchange, fed) = {
            let mut guard = self.st.borrow_mut();
            let st = &mut *guard;
            let Some(exchange) = st.exchange.clone() else {
                drop(guard);
                // Bytes nobody asked for (on an idle connection): the
                // connection is out of step; drop it.
                log::debug!("unexpected data on an idle HTTP connection; closing it");
                self.forget_in_pool();
                self.abort();
                return;
            };
            if !data.is_empty() {
                st.got_bytes = true;
            }
            let mut input = data;
            let fed = loop {
                match st.parser.parse(&mut input) {
                    Ok(Some(Event::Informational(_))) => {}
                    Ok(Some(Event::Head(head))) => st.head = Some(head),
                    Ok(Some(Event::Data(piece))) => st.body.extend_from_slice(piece),
                    Ok(Some(Event::Trailers(trailers))) => st.trailers = trailers,
                    Ok(Some(Event::End)) => {
                        break Fed::Complete {
                            keep_alive: st.parser.keep_alive()
                                && input.is_empty()
                                && !exchange.prepared.close,
                        }
                    }
                    Ok(None) => break Fed::More,
                    Err(e) => break Fed::Failed(e),
                }
            };
            (exchange, fed)
        };
        match fed {
            Fed::More => {}
            Fed::Complete { keep_alive } => {
                let response = self.take_response();
                if keep_alive && response.is_ok() {
                    self.st.borrow_mut().reused = true;
                    if let Some(client) = self.client.upgrade() {
                        client.release(self);
                    } else {
                        self.close();
                    }
                } else {
                    self.close();
                }
                exchange.finish(response.map_err(Failure::new));
            }
            Fed::Failed(e) => {
                self.abort();
                exchange.finish(Err(e.into()));
            }
        }
    }

    /// Detaches the exchange and builds its response.
    fn take_response(&self) -> Result<Response, HttpError> {
        let mut st = self.st.borrow_mut();
        st.exchange = None;
        let head = st.head.take().ok_or_else(|| {
            HttpError::ClosedBeforeResponse("the response ended without a head".to_string())
        })?;
        Ok(Response {
            status: head.status,
            reason: head.reason,
            version: head.version,
            headers: head.headers,
            body: std::mem::take(&mut st.body),
            trailers: std::mem::take(&mut st.trailers),
        })
    }

    /// `connection_lost` (from the HTTP protocol or, under TLS, from the TCP
    /// level, with the TLS layer's handshake error if any; the first call
    /// counts).
    fn lost(self: &Rc<Self>, reason: ConnectionLost, handshake_error: Option<io::Error>) {
        let (exchange, made, reused, got_bytes, finished) = {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            if let Some(timer) = st.idle_timer.take() {
                let _ = timer.cancel();
            }
            let exchange = st.exchange.take();
            let finished = match (&exchange, st.made) {
                (Some(_), true) => Some(st.parser.finish()),
                _ => None,
            };
            (exchange, st.made, st.reused, st.got_bytes, finished)
        };
        self.forget_in_pool();
        self.give_up_slot();
        let Some(exchange) = exchange else {
            return;
        };
        let outcome = match finished {
            // A body delimited by the close, and the close was orderly.
            Some(Ok(Some(Event::End))) if reason.is_clean() => self.take_response(),
            Some(Ok(_)) => Err(HttpError::ClosedMidBody {
                received: self.st.borrow().parser.body_received(),
                expected: None,
            }),
            Some(Err(HttpError::ClosedBeforeResponse(what))) => {
                if reused && !got_bytes && exchange.prepared.idempotent && !exchange.retried.get() {
                    exchange.retry();
                    return;
                }
                Err(HttpError::ClosedBeforeResponse(format!(
                    "{what} ({reason})"
                )))
            }
            Some(Err(e)) => Err(e),
            // Under TLS, the HTTP protocol is made after the handshake.
            None if !made => Err(HttpError::Tls(match handshake_error {
                Some(e) => e.to_string(),
                None => format!("the connection closed during the TLS handshake ({reason})"),
            })),
            None => Err(HttpError::ClosedBeforeResponse(reason.to_string())),
        };
        exchange.finish(outcome.map_err(Failure::new));
    }

    fn forget_in_pool(self: &Rc<Self>) {
        let Some(client) = self.client.upgrade() else {
            return;
        };
        let mut pool = client.pool.borrow_mut();
        if let Some(conns) = pool.get_mut(&self.key) {
            conns.retain(|c| !Rc::ptr_eq(c, self));
            if conns.is_empty() {
                pool.remove(&self.key);
            }
        }
    }

    /// Closes after flushing (a complete response, pool eviction, expiry).
    fn close(&self) {
        let transport = {
            let mut st = self.st.borrow_mut();
            st.retired = true;
            st.exchange = None;
            if let Some(timer) = st.idle_timer.take() {
                let _ = timer.cancel();
            }
            st.transport.clone().or_else(|| st.tcp.clone())
        };
        self.give_up_slot();
        if let Some(t) = transport {
            t.lose_connection();
        }
    }

    /// Drops the connection now (errors, cancel, time-out).
    fn abort(&self) {
        let (transport, tcp) = {
            let mut st = self.st.borrow_mut();
            st.retired = true;
            st.exchange = None;
            if let Some(timer) = st.idle_timer.take() {
                let _ = timer.cancel();
            }
            (st.transport.clone(), st.tcp.clone())
        };
        self.give_up_slot();
        for t in [transport, tcp].into_iter().flatten() {
            t.abort_connection();
        }
    }
}

/// The HTTP protocol of one connection: a thin layer feeding [`Conn`].
struct HttpConnection {
    conn: Rc<Conn>,
    /// Directly on TCP (no TLS underneath).
    outer: bool,
}

impl Protocol for HttpConnection {
    fn connection_made(&mut self, transport: Transport) {
        if self.outer {
            self.conn.tcp_made(&transport);
        }
        self.conn.made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.conn.data(data);
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.conn.lost(reason, None);
    }
}

/// Wraps the TLS layer to see the TCP connection itself: its transport (to
/// abort it during the handshake) and its end, which may come without the
/// HTTP protocol ever being made (a failed handshake).
struct TcpWatch<P> {
    inner: P,
    conn: Rc<Conn>,
    tls: Rc<TlsTransport>,
}

impl<P: Protocol> Protocol for TcpWatch<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.conn.tcp_made(&transport);
        self.inner.connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.inner.eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.inner.connection_lost(reason.clone());
        self.conn.lost(reason, self.tls.handshake_error());
    }
}

/// The TLS layer for an `https` connection, and its state (for the
/// handshake error).
fn tls_layer(
    http: HttpConnection,
    host: &str,
    config: &Arc<rustls::ClientConfig>,
    reactor: &Reactor,
) -> Result<(TlsProtocol, Rc<TlsTransport>), HttpError> {
    let tls = TlsProtocol::client(http, host, Arc::clone(config))
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_reactor(reactor);
    let state = tls.tls_transport();
    Ok((tls, state))
}
