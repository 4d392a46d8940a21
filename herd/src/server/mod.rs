//! [`HerdServer`]: one server of the herd, on a reactor.
//!
//! A server listens on one port for clients and neighbours alike and runs
//! one [`LineReceiver`](gyre_protocols::LineReceiver) (`\n` lines, a `\r` before the `\n` dropped) per
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
//! on if it is new; the keep-alive `PING` is counted by the link's
//! heartbeat (not logged); anything else is logged and dropped. Link connections
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
//!
//! The module has one job per file: [`options`](ServerOptions) (settings
//! and defaults), `lookup` (asking Places), `handle` ([`HerdServer`]),
//! `state` (the shared state and a connection's life cycle), `peering`
//! (verifying links), `commands` (what each line does), `conn` (a
//! connection's answer queue and flow), `link` (a link's catch-up, floods and heartbeat), `handler` (the line
//! handler),
//! `answer` (the WHATSAT answer's layout), `drain` (the graceful stop,
//! [`HerdServer::drain`]) and `reload` (reloading the peer TLS
//! credentials, [`HerdServer::reload_peer_tls`]). The wire protocol itself is in
//! `herd/PROTOCOL.md`.

mod answer;
mod commands;
mod conn;
mod drain;
mod handle;
mod handler;
mod link;
mod lookup;
mod options;
mod peering;
mod reload;
mod state;
mod status;

pub use answer::whatsat_answer;
pub(crate) use conn::{Conn, Role};
pub use handle::HerdServer;
pub use link::LinkCounts;
pub use lookup::PlacesLookup;
pub use options::{
    ServerOptions, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LINK_DEAD_AFTER, DEFAULT_LINK_HEARTBEAT_INTERVAL, DEFAULT_LINK_HIGH_WATER,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_CLIENT_ID_LENGTH, DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_PENDING_ANSWERS, DEFAULT_MAX_STORE_BYTES, DEFAULT_MAX_TIME_AHEAD, LINK_LINE_SLACK,
};
pub(crate) use peering::{HerdProtocol, PeerLinks};
pub use reload::PeerReload;
pub(crate) use state::Server;
pub use status::MAX_CLIENTS_SHOWN;
