//! gyre-herd: the herd of location-flooding application servers (see the
//! project's HERD.md), built on the gyre reactor.
//!
//! - [`command`]: the wire commands (`IAMAT`, `WHATSAT`, `AT`, `PEER`),
//!   parsed sans-IO, and the answers' formats.
//! - [`config`]: the herd's servers and links ([`HerdConfig`]).
//! - [`store`]: each client's latest location, and the rule that makes
//!   floods end and the herd converge.
//! - [`server`]: [`HerdServer`], one server of the herd on a reactor.
//! - `links` (inside [`server`]'s workings): one TCP connection per link,
//!   dialled and re-dialled, shared by both directions.
//! - [`log`]: [`ServerLog`], each server's `NAME.log`.
//! - [`pki`]: the herd CA and the servers' certificates, with which
//!   neighbours authenticate each other ([`PeerTls`]).
//! - [`places`]: the Places service clients and the local Places service.
//! - [`program`]: the herd program's options and start-up (`examples/herd.rs`).
//!
//! Starting the default herd, all five servers in one process:
//!
//! ```no_run
//! use gyre_herd::{HerdConfig, HerdServer, ServerLog};
//! use gyre_herd::places::{LocalPlacesService, PlacesClient};
//! use gyre_reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let local = LocalPlacesService::start(&reactor, "127.0.0.1:0".parse()?)?;
//! let places = PlacesClient::new(&reactor, local.client_config())?;
//! let config = HerdConfig::default();
//! let mut servers = Vec::new();
//! for spec in config.servers() {
//!     let log = ServerLog::open("logs", &spec.name)?;
//!     servers.push(HerdServer::start(&reactor, &spec.name, &config, places.clone(), log)?);
//! }
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

/// The crate README's example, compiled as a doc test so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod command;
pub mod config;
pub mod limits;
mod links;
pub mod log;
pub mod metrics;
pub mod pki;
pub mod places;
pub mod program;
pub mod server;
pub mod status;
pub mod store;

pub use config::{ConfigError, HerdConfig, ServerSpec};
pub use log::ServerLog;
pub use pki::{PeerCredentials, PeerTls};
pub use server::{HerdServer, PlacesLookup, ServerOptions};
