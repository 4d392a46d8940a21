//! Type-erased factories, and [`FactoryRef`] for sharing one factory
//! between several ports.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::protocol::{Factory, Protocol};

/// The object-safe face of a [`Factory`], as the reactor stores it.
pub(crate) trait DynFactory {
    fn build(&mut self, peer: SocketAddr) -> Option<Box<dyn Protocol>>;
    fn start(&mut self);
    fn stop(&mut self);
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
}

impl FactoryRef {
    /// Wraps a factory for sharing.
    pub fn new<F: Factory>(factory: F) -> FactoryRef {
        FactoryRef {
            inner: Rc::new(FactoryCell {
                factory: RefCell::new(Box::new(factory)),
                ports: Cell::new(0),
            }),
        }
    }

    /// How many ports use this factory now.
    pub fn ports(&self) -> usize {
        self.inner.ports.get()
    }

    /// A port started using the factory.
    pub(crate) fn port_started(&self) {
        let n = self.inner.ports.get();
        self.inner.ports.set(n + 1);
        if n == 0 {
            if let Ok(mut f) = self.inner.factory.try_borrow_mut() {
                f.start();
            }
        }
    }

    /// A port stopped using the factory.
    pub(crate) fn port_stopped(&self) {
        let n = self.inner.ports.get();
        if n == 0 {
            return;
        }
        self.inner.ports.set(n - 1);
        if n == 1 {
            if let Ok(mut f) = self.inner.factory.try_borrow_mut() {
                f.stop();
            }
        }
    }

    /// Builds a protocol for `peer`; `None` if the factory refused, or is
    /// busy (a factory method is running further up the stack).
    pub(crate) fn build(&self, peer: SocketAddr) -> Option<Box<dyn Protocol>> {
        self.inner.factory.try_borrow_mut().ok()?.build(peer)
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

impl<F: Factory> Factory for Rc<RefCell<F>> {
    type Protocol = F::Protocol;
    fn build_protocol(&mut self, peer: SocketAddr) -> Option<F::Protocol> {
        self.try_borrow_mut().ok()?.build_protocol(peer)
    }
    fn start_factory(&mut self) {
        if let Ok(mut f) = self.try_borrow_mut() {
            f.start_factory()
        }
    }
    fn stop_factory(&mut self) {
        if let Ok(mut f) = self.try_borrow_mut() {
            f.stop_factory()
        }
    }
}
