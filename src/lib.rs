//! gyre: a Twisted-style event-driven networking library.
//!
//! This facade re-exports the workspace's crates:
//! - [`reactor`]: the event loop, transports, timers, Deferreds and threads;
//! - [`protocols`]: framing, TLS and the HTTP client;
//! - [`herd`]: the herd application servers.

pub use gyre_herd as herd;
pub use gyre_protocols as protocols;
pub use gyre_reactor as reactor;

/// The README's example, compiled as a doc test so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
