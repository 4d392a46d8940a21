//! gyre-reactor: a single-threaded, Twisted-style reactor on mio.
//!
//! - [`defer`]: Deferreds, typed callback chains that are also futures.
//! - [`clock`]: timers on a real or a manual clock.
//! - [`Protocol`], [`Factory`], [`Transport`]: the connection model.

pub mod clock;
pub mod defer;
mod protocol;
mod transport;

pub use protocol::{ConnectionLost, Factory, Producer, Protocol};
pub use transport::{Transport, TransportBackend, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
