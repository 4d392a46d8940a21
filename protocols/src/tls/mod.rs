//! TLS over any transport: rustls's sans-IO connection placed between a
//! transport and a protocol, so any protocol runs unchanged over TLS.
//!
//! - Configurations: [`client_config`] (Mozilla's roots plus yours),
//!   [`client_config_with_roots`] (yours only), [`client_config_from_pem_file`],
//!   [`server_config`]; mutual TLS through [`mutual_tls_server_config`]
//!   (client certificates required, verified against your CA) and
//!   [`mutual_tls_client_config`] (presents one), and the verified peer's
//!   names through [`TlsTransport::peer_dns_names`] /
//!   [`certificate_dns_names`] (and [`certificate_serial`], for logs); PEM through [`parse_certs_pem`] and [`parse_key_pem`].
//!   All use rustls's ring provider (never a process-wide default); hostname
//!   verification and SNI are always on; ALPN is a parameter.
//! - [`connect_tls`] and [`listen_tls`]: TLS clients and servers on the
//!   reactor, with factories as for TCP. A failed handshake reaches a client
//!   factory as `client_connection_failed` with an error naming the rustls
//!   reason (see [`connect_tls`]). [`connect_tls_protocol`] is the Deferred
//!   form: it fires with the transport once the handshake is done.
//! - [`TlsProtocol`]: the protocol that does it, usable with any transport
//!   (e.g. `reactor.connect_protocol(addr, TlsProtocol::client(..)?)`).
//! - [`StartTls`] with [`start_tls_client`] / [`start_tls_server`]: a
//!   plaintext connection switched to TLS midway.
//! - [`TlsTransport`]: the transport the protocol is given; find it with
//!   `transport.backend::<TlsTransport>()` for the negotiated ALPN protocol,
//!   the peer's certificates, or the TCP transport.
//!
//! - Errors carry a plain-words hint for the common certificate mistakes
//!   (a CA served as a leaf, a name mismatch, an unknown issuer, ...): see
//!   [`hint`].
//! - Memory: rustls buffers at most [`TLS_BUFFER_LIMIT`] per step, and the
//!   layer's own buffers give back what they hold beyond
//!   [`TLS_BUFFER_FLOOR`] once a burst has drained
//!   ([`TlsTransport::buffer_capacity`] shows it).
//!
//! Inside, the TLS logic is a sans-IO state machine (the rustls connection,
//! the handshake, one state per direction, the buffers), unit-tested without
//! sockets; [`TlsTransport`] is the thin glue between it, the TCP transport
//! and the inner protocol.
//!
//! The inner protocol's `connection_made` runs once the handshake is done,
//! so everything it writes is encrypted. Closing sends `close_notify`; a
//! peer's `close_notify` is its end of stream (`eof_received`); a TCP close
//! without one is an `UnexpectedEof` error in `connection_lost`.
//!
//! ```no_run
//! use std::time::Duration;
//! use gyre_protocols::tls::{client_config_with_roots, connect_tls, listen_tls,
//!                           parse_certs_pem, server_config};
//! use gyre_reactor::{factory_fn, ClientFactory, Factory, Protocol, Reactor, Transport};
//!
//! #[derive(Default)]
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) {
//!         if let Some(t) = &self.0 { t.write(data) }
//!     }
//! }
//!
//! struct Hello;
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, t: Transport) { t.write(b"hello"); }
//!     fn data_received(&mut self, data: &[u8]) { println!("{:?}", data); }
//! }
//! struct HelloFactory;
//! impl Factory for HelloFactory {
//!     type Protocol = Hello;
//!     fn build_protocol(&mut self, _: std::net::SocketAddr) -> Option<Hello> { Some(Hello) }
//! }
//! impl ClientFactory for HelloFactory {}
//!
//! let reactor = Reactor::new()?;
//! let (chain, key, ca) = (std::fs::read("chain.pem")?, std::fs::read("key.pem")?,
//!                         std::fs::read("ca.pem")?);
//! let port = listen_tls(&reactor, "127.0.0.1:0".parse()?, server_config(&chain, &key, &[])?,
//!                       factory_fn(|_| Some(Echo::default())))?;
//! let client = client_config_with_roots(&parse_certs_pem(&ca)?, &[])?;
//! connect_tls(&reactor, port.local_addr(), "localhost", client, HelloFactory,
//!             Duration::from_secs(10))?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod hint;
mod machine;
mod net;
mod protocol;
mod session;

pub use config::{
    certificate_dns_names, certificate_serial, client_config, client_config_from_pem_file,
    client_config_with_roots, mutual_tls_client_config, mutual_tls_server_config, parse_certs_pem,
    parse_key_pem, server_config, server_config_from_der, TlsError, TlsErrorKind,
};
pub use hint::{
    hint, HINT_BAD_SIGNATURE, HINT_CA_USED_AS_END_ENTITY, HINT_EXPIRED, HINT_NAME_MISMATCH,
    HINT_PEER_REJECTED, HINT_UNKNOWN_ISSUER,
};
pub use machine::{TLS_BUFFER_FLOOR, TLS_BUFFER_LIMIT};
pub use net::{connect_tls, connect_tls_protocol, listen_tls, TlsClientFactory, TlsServerFactory};
pub use protocol::{start_tls_client, start_tls_server, StartTls, TlsProtocol};
pub use rustls::{ClientConfig, ServerConfig};
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use session::{TlsTransport, CLOSE_NOTIFY_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};

#[cfg(test)]
mod tests;
