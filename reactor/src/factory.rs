//! Type-erased factories, and [`FactoryRef`] for sharing one factory
//! between several ports.
//!
//! Neither a factory nor a connector callback is ever lost: the reactor
//! asks [`Factory::ready_for_calls`] before calling in, and a call the
//! factory cannot take now (its cell is borrowed by user code) waits in a
//! queue and is delivered from the loop, in order, once it can.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use crate::address::Address;
use crate::core::{guard, Inner};
use crate::protocol::{Factory, Protocol};

/// The object-safe face of a [`Factory`], as the reactor stores it.
pub(crate) trait DynFactory {
    fn build(&mut self, peer: SocketAddr) -> Option<Box<dyn Protocol>>;
    fn start(&mut self);
    fn stop(&mut self);
    fn ready(&self) -> bool;
}

impl<F: Factory> DynFactory for F {
    fn build(&mut self, peer: SocketAddr) -> Option<Box<dyn Protocol>> {
        self.build_protocol(peer)
            .map(|p| Box::new(p) as Box<dyn Protocol>)
    }
    fn start(&mut self) {
        self.start_factory()
    }
    fn stop(&mut self) {
        self.stop_factory()
    }
    fn ready(&self) -> bool {
        self.ready_for_calls()
    }
}

/// What [`FactoryRef::build`] got.
pub(crate) enum Built {
    /// A protocol for the connection.
    Protocol(Box<dyn Protocol>),
    /// The factory refused the connection (or panicked, logged).
    Refused,
    /// The factory cannot be called now; try again from the loop.
    Busy,
}

/// A life-cycle call waiting for a busy factory.
#[derive(Clone, Copy, Debug)]
enum Lifecycle {
    Start,
    Stop,
}

/// A factory shared by every port that listens with it: `start_factory`
/// runs when the first port starts, `stop_factory` when the last one stops.
/// Any [`Factory`] converts into one, so `listen_tcp(addr, MyFactory)` works;
/// clone a `FactoryRef` to use one factory on several ports.
///
/// ```
/// use gyre_reactor::{FactoryRef, Protocol, Factory};
/// use std::net::SocketAddr;
///
/// struct Discard;
/// impl Protocol for Discard {
///     fn data_received(&mut self, _data: &[u8]) {}
/// }
/// struct DiscardFactory;
/// impl Factory for DiscardFactory {
///     type Protocol = Discard;
///     fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Discard> {
///         Some(Discard)
///     }
/// }
///
/// let shared = FactoryRef::new(DiscardFactory);
/// let also = shared.clone(); // listen on two ports with `shared` and `also`
/// # drop(also);
/// ```
#[derive(Clone)]
pub struct FactoryRef {
    inner: Rc<FactoryCell>,
}

struct FactoryCell {
    factory: RefCell<Box<dyn DynFactory>>,
    ports: Cell<usize>,
    /// `start_factory`/`stop_factory` calls the factory could not take yet.
    pending: RefCell<VecDeque<Lifecycle>>,
    /// A retry of `pending` is queued on the loop.
    retry_queued: Cell<bool>,
}

impl FactoryRef {
    /// Wraps a factory for sharing.
    pub fn new<F: Factory>(factory: F) -> FactoryRef {
        FactoryRef {
            inner: Rc::new(FactoryCell {
                factory: RefCell::new(Box::new(factory)),
                ports: Cell::new(0),
                pending: RefCell::new(VecDeque::new()),
                retry_queued: Cell::new(false),
            }),
        }
    }

    /// How many ports use this factory now.
    pub fn ports(&self) -> usize {
        self.inner.ports.get()
    }

    /// A port started using the factory.
    pub(crate) fn port_started(&self, reactor: &Weak<Inner>) {
        let n = self.inner.ports.get();
        self.inner.ports.set(n + 1);
        if n == 0 {
            self.inner.pending.borrow_mut().push_back(Lifecycle::Start);
            self.deliver(reactor);
        }
    }

    /// A port stopped using the factory.
    pub(crate) fn port_stopped(&self, reactor: &Weak<Inner>) {
        let n = self.inner.ports.get();
        if n == 0 {
            return;
        }
        self.inner.ports.set(n - 1);
        if n == 1 {
            self.inner.pending.borrow_mut().push_back(Lifecycle::Stop);
            self.deliver(reactor);
        }
    }

    /// Delivers the queued life-cycle calls the factory can take now; if it
    /// is busy, tries again from the loop.
    fn deliver(&self, reactor: &Weak<Inner>) {
        loop {
            let mut factory = match self.inner.factory.try_borrow_mut() {
                Ok(f) if f.ready() => f,
                _ => {
                    self.retry_soon(reactor);
                    return;
                }
            };
            let Some(call) = self.inner.pending.borrow_mut().pop_front() else {
                return;
            };
            let _ = guard(format_args!("{call:?} of a factory"), || match call {
                Lifecycle::Start => factory.start(),
                Lifecycle::Stop => factory.stop(),
            });
        }
    }

    fn retry_soon(&self, reactor: &Weak<Inner>) {
        if self.inner.retry_queued.replace(true) {
            return;
        }
        let Some(r) = reactor.upgrade().and_then(|i| i.reactor()) else {
            log::warn!("a factory call could not be delivered: the reactor is gone");
            return;
        };
        let me = self.clone();
        let weak = reactor.clone();
        r.call_soon(move || {
            me.inner.retry_queued.set(false);
            me.deliver(&weak);
        });
    }

    /// Builds a protocol for `peer`, unless the factory cannot take the
    /// call now (then the caller tries again from the loop) or it still
    /// owes earlier life-cycle calls. A Unix peer reaches the factory as
    /// [`NO_INET_ADDR`](crate::address::NO_INET_ADDR).
    pub(crate) fn build(&self, peer: &Address) -> Built {
        if !self.inner.pending.borrow().is_empty() {
            return Built::Busy;
        }
        let mut factory = match self.inner.factory.try_borrow_mut() {
            Ok(f) if f.ready() => f,
            _ => return Built::Busy,
        };
        match guard(format_args!("build_protocol for {peer}"), || {
            factory.build(peer.inet_or_none())
        }) {
            Ok(Some(protocol)) => Built::Protocol(protocol),
            Ok(None) | Err(_) => Built::Refused,
        }
    }
}

impl<F: Factory> From<F> for FactoryRef {
    fn from(factory: F) -> FactoryRef {
        FactoryRef::new(factory)
    }
}

impl fmt::Debug for FactoryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactoryRef")
            .field("ports", &self.ports())
            .finish()
    }
}

/// A factory made from a closure: `factory_fn(|peer| Some(MyProtocol::new()))`.
///
/// ```
/// use gyre_reactor::{factory_fn, Protocol};
///
/// struct Discard;
/// impl Protocol for Discard {
///     fn data_received(&mut self, _data: &[u8]) {}
/// }
/// let factory = factory_fn(|_peer| Some(Discard));
/// # drop(factory);
/// ```
pub fn factory_fn<P, F>(build: F) -> FnFactory<F>
where
    P: Protocol,
    F: FnMut(SocketAddr) -> Option<P> + 'static,
{
    FnFactory { build }
}

/// The [`Factory`] returned by [`factory_fn`].
pub struct FnFactory<F> {
    build: F,
}

impl<P, F> Factory for FnFactory<F>
where
    P: Protocol,
    F: FnMut(SocketAddr) -> Option<P> + 'static,
{
    type Protocol = P;
    fn build_protocol(&mut self, peer: SocketAddr) -> Option<P> {
        (self.build)(peer)
    }
}

/// A factory in a shared cell, so user code can reach it too. While user
/// code holds the cell, [`ready_for_calls`](Factory::ready_for_calls) says
/// `false` and the reactor delivers its calls later: none is lost.
impl<F: Factory> Factory for Rc<RefCell<F>> {
    type Protocol = F::Protocol;
    fn build_protocol(&mut self, peer: SocketAddr) -> Option<F::Protocol> {
        match self.try_borrow_mut() {
            Ok(mut f) => f.build_protocol(peer),
            Err(_) => {
                busy_cell("build_protocol");
                None
            }
        }
    }
    fn start_factory(&mut self) {
        match self.try_borrow_mut() {
            Ok(mut f) => f.start_factory(),
            Err(_) => busy_cell("start_factory"),
        }
    }
    fn stop_factory(&mut self) {
        match self.try_borrow_mut() {
            Ok(mut f) => f.stop_factory(),
            Err(_) => busy_cell("stop_factory"),
        }
    }
    fn ready_for_calls(&self) -> bool {
        self.try_borrow_mut()
            .map(|f| f.ready_for_calls())
            .unwrap_or(false)
    }
}

/// The reactor never calls a busy cell (it asks `ready_for_calls` first);
/// only user code calling a factory method directly while holding the cell
/// gets here.
pub(crate) fn busy_cell(what: &str) {
    log::error!("{what} called on a factory cell that is borrowed; the call is dropped");
}
