//! gyre-reactor: a single-threaded, Twisted-style reactor on mio.
//!
//! - [`Reactor`]: the event loop: TCP listen and connect, timers, threads,
//!   signals, life-cycle triggers.
//! - [`Protocol`], [`Factory`], [`ClientFactory`], [`Transport`]: the
//!   connection model.
//! - [`defer`]: Deferreds, typed callback chains that are also futures.
//! - [`clock`]: timers on a real or a manual clock.
//! - [`testing`]: in-memory transports for testing protocols without sockets.

#![forbid(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("gyre-reactor packs a slot index and a generation into a 64-bit mio token");

/// The crate README's example, compiled as a doc test so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod clock;
mod connector;
mod core;
pub mod defer;
mod factory;
mod listener;
mod perturb;
mod protocol;
mod reconnect;
mod signals;
mod tcp;
pub mod testing;
mod threads;
mod transport;

pub use crate::core::{
    Phase, Reactor, ReactorBuilder, ReactorError, ReactorStats, SystemEvent, TriggerId,
    DEFAULT_LINGER_TIMEOUT,
};
pub use connector::{ClientFactory, Connector, ConnectorState, DEFAULT_CONNECT_TIMEOUT};
pub use factory::{factory_fn, FactoryRef, FnFactory};
pub use listener::ListeningPort;
pub use protocol::{ConnectionLost, Factory, Producer, Protocol};
pub use reconnect::{Reconnect, ReconnectingClientFactory};
pub use threads::{ReactorGone, ThreadHandle};
pub use transport::{
    Transport, TransportBackend, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, WRITE_BUFFER_FLOOR,
};
