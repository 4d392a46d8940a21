//! Listening TCP ports: [`ListeningPort`] and the accept loop.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use socket2::{Domain, Socket, Type};

use crate::core::{Inner, Reactor, SlotKind};
use crate::defer::{succeed, Deferred};
use crate::factory::{Built, FactoryRef};
use crate::tcp::Conn;

/// Connections accepted per readiness event before yielding to other work.
const ACCEPTS_PER_EVENT: usize = 256;

pub(crate) struct Listener {
    reactor: Weak<Inner>,
    socket: RefCell<Option<mio::net::TcpListener>>,
    factory: FactoryRef,
    local: SocketAddr,
    token: Cell<usize>,
    /// An accepted connection whose factory could not be called yet (its
    /// cell was busy): accepting waits until it is built, so at most one
    /// waits, and it is retried from the loop.
    waiting: RefCell<Option<(mio::net::TcpStream, SocketAddr)>>,
}

/// A listening TCP port (Twisted's `IListeningPort`), from
/// [`Reactor::listen_tcp`]. Dropping the handle does not close the port;
/// [`stop_listening`](Self::stop_listening) does.
#[derive(Clone)]
pub struct ListeningPort {
    listener: Rc<Listener>,
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("local_addr", &self.listener.local)
            .finish()
    }
}

impl ListeningPort {
    /// The address the port is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local
    }

    /// Stops accepting and closes the port; connections already accepted
    /// stay up. The Deferred fires once the port is closed. Calling it again
    /// does nothing more.
    #[track_caller]
    pub fn stop_listening(&self) -> Deferred<()> {
        self.listener.stop();
        succeed(())
    }

    /// Whether the port is still listening.
    pub fn is_listening(&self) -> bool {
        self.listener.socket.borrow().is_some()
    }
}

/// Creates a nonblocking listening socket with `SO_REUSEADDR` and `backlog`.
fn bind(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

impl Reactor {
    /// Listens on `addr` (port 0 picks a free port), building a protocol
    /// with `factory` for each connection (Twisted's `listenTCP`). Uses the
    /// reactor's backlog (default 1024). An address in use is an error that
    /// names the address.
    pub fn listen_tcp(
        &self,
        addr: SocketAddr,
        factory: impl Into<FactoryRef>,
    ) -> io::Result<ListeningPort> {
        self.listen_tcp_with_backlog(addr, factory, self.inner.backlog)
    }

    /// [`listen_tcp`](Self::listen_tcp) with an explicit listen backlog.
    pub fn listen_tcp_with_backlog(
        &self,
        addr: SocketAddr,
        factory: impl Into<FactoryRef>,
        backlog: i32,
    ) -> io::Result<ListeningPort> {
        let mut socket = bind(addr, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let local = socket.local_addr()?;
        let factory = factory.into();
        let mut listener = None;
        let token = self.inner.insert_slot(|token| {
            let l = Rc::new(Listener {
                reactor: Rc::downgrade(&self.inner),
                socket: RefCell::new(None),
                factory: factory.clone(),
                local,
                token: Cell::new(token),
                waiting: RefCell::new(None),
            });
            listener = Some(Rc::clone(&l));
            SlotKind::Listener(l)
        });
        let listener = listener.ok_or_else(|| io::Error::other("slot not created"))?;
        if let Err(e) =
            self.inner
                .registry
                .register(&mut socket, mio::Token(token), mio::Interest::READABLE)
        {
            self.inner.remove_slot(token);
            return Err(e);
        }
        *listener.socket.borrow_mut() = Some(socket);
        factory.port_started(&Rc::downgrade(&self.inner));
        log::info!("listening on {local}");
        Ok(ListeningPort { listener })
    }
}

impl Listener {
    /// Accepts until WouldBlock (or the per-event budget, then yields and
    /// comes back next iteration through a zero-delay call).
    pub(crate) fn handle_readable(self: &Rc<Self>, reactor: &Reactor) {
        let waiting = self.waiting.borrow_mut().take();
        if let Some((stream, peer)) = waiting {
            if !self.start_connection(reactor, stream, peer) {
                return;
            }
        }
        for _ in 0..ACCEPTS_PER_EVENT {
            let accepted = match self.socket.borrow().as_ref() {
                Some(socket) => socket.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    reactor.inner.count_accept();
                    if !self.start_connection(reactor, stream, peer) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: log and try again later
                    // rather than spin.
                    log::error!("accept on {} failed: {e}", self.local);
                    let me = Rc::clone(self);
                    let r = reactor.clone();
                    reactor.call_later(std::time::Duration::from_millis(100), move || {
                        me.handle_readable(&r)
                    });
                    return;
                }
            }
        }
        let me = Rc::clone(self);
        let r = reactor.clone();
        reactor.call_soon(move || me.handle_readable(&r));
    }

    /// Builds the protocol and starts the connection. Returns `false` if
    /// the factory could not be called now: the connection then waits (and
    /// accepting with it) for a retry from the loop.
    fn start_connection(
        self: &Rc<Self>,
        reactor: &Reactor,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
    ) -> bool {
        let protocol = match self.factory.build(peer) {
            Built::Protocol(p) => p,
            Built::Refused => {
                log::debug!("factory on {} refused a connection from {peer}", self.local);
                return true;
            }
            Built::Busy => {
                log::debug!(
                    "factory on {} is busy; the connection from {peer} waits for it",
                    self.local
                );
                *self.waiting.borrow_mut() = Some((stream, peer));
                let me = Rc::downgrade(self);
                let r = Rc::downgrade(&reactor.inner);
                reactor.call_soon(move || {
                    let reactor = r.upgrade().and_then(|i| i.reactor());
                    if let (Some(me), Some(reactor)) = (me.upgrade(), reactor) {
                        me.handle_readable(&reactor);
                    }
                });
                return false;
            }
        };
        let conn = Rc::new(Conn::new(Rc::downgrade(&reactor.inner), stream, peer));
        let token = reactor
            .inner
            .insert_slot(|_| SlotKind::Conn(Rc::clone(&conn)));
        if let Err(e) = conn.register(&reactor.inner.registry, token) {
            log::error!("cannot register connection from {peer}: {e}");
            reactor.inner.remove_slot(token);
            return true;
        }
        conn.start(protocol);
        true
    }

    /// Closes the socket and releases the factory (once).
    pub(crate) fn stop(&self) {
        let socket = self.socket.borrow_mut().take();
        // A connection still waiting for the factory is dropped (closed).
        self.waiting.borrow_mut().take();
        if let Some(mut socket) = socket {
            if let Some(reactor) = self.reactor.upgrade() {
                let _ = reactor.registry.deregister(&mut socket);
                reactor.remove_slot(self.token.get());
            }
            drop(socket);
            log::info!("stopped listening on {}", self.local);
            self.factory.port_stopped(&self.reactor);
        }
    }
}
