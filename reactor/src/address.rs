//! [`Address`]: where a stream connection's ends are, TCP or Unix
//! (Twisted's `IPv4Address`/`IPv6Address` and `UNIXAddress`, tokio's
//! `SocketAddr` per socket type).
//!
//! # How addresses reach user code
//!
//! The reactor's first APIs speak [`SocketAddr`] ([`Transport::peer_addr`],
//! [`Factory::build_protocol`], [`ListeningPort::local_addr`],
//! [`Connector::destination`]), and they keep doing so for TCP, so TCP
//! code is unchanged. Each has an [`Address`] twin that also names a
//! Unix-domain socket: [`Transport::peer_address`],
//! [`Transport::local_address`], [`ListeningPort::local_address`],
//! [`Connector::destination_address`].
//!
//! For a Unix-domain connection the `SocketAddr` forms have no true
//! answer: [`Transport::peer_addr`] and [`Transport::local_addr`] are
//! `None`, and the APIs that must return a `SocketAddr` give
//! [`NO_INET_ADDR`] (`0.0.0.0:0`), in particular the `peer` passed to
//! [`Factory::build_protocol`]. A factory that serves Unix sockets learns
//! who connected from its protocol's transport
//! ([`Transport::peer_address`], [`Transport::peer_credentials`]) in
//! `connection_made`. A factory that keeps per-address limits sees every
//! Unix client as `0.0.0.0`: one bucket for the local machine.
//!
//! [`Transport::peer_addr`]: crate::Transport::peer_addr
//! [`Transport::local_addr`]: crate::Transport::local_addr
//! [`Transport::peer_address`]: crate::Transport::peer_address
//! [`Transport::local_address`]: crate::Transport::local_address
//! [`Transport::peer_credentials`]: crate::Transport::peer_credentials
//! [`Factory::build_protocol`]: crate::Factory::build_protocol
//! [`ListeningPort::local_addr`]: crate::ListeningPort::local_addr
//! [`ListeningPort::local_address`]: crate::ListeningPort::local_address
//! [`Connector::destination`]: crate::Connector::destination
//! [`Connector::destination_address`]: crate::Connector::destination_address

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The `SocketAddr` given where an API that predates Unix sockets needs one
/// for a Unix-domain connection or port: `0.0.0.0:0`, the unspecified
/// address. See the [module docs](crate::address) for where it appears and
/// what to use instead.
///
/// ```
/// use gyre_reactor::address::NO_INET_ADDR;
///
/// assert!(NO_INET_ADDR.ip().is_unspecified());
/// assert_eq!(NO_INET_ADDR.port(), 0);
/// ```
pub const NO_INET_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// One end of a stream connection: an internet (TCP) address or a
/// Unix-domain one.
///
/// Displayed as the `SocketAddr` for TCP (`127.0.0.1:7000`), and with a
/// `unix:` prefix for Unix (`unix:/run/app.sock`, `unix:@name` for an
/// abstract name, `unix:(unnamed)`).
///
/// ```
/// use gyre_reactor::{Address, UnixAddr};
///
/// let tcp = Address::from("127.0.0.1:7000".parse::<std::net::SocketAddr>()?);
/// assert_eq!(tcp.to_string(), "127.0.0.1:7000");
/// assert_eq!(tcp.inet(), Some("127.0.0.1:7000".parse()?));
///
/// let unix = Address::Unix(UnixAddr::new("/run/app.sock"));
/// assert_eq!(unix.to_string(), "unix:/run/app.sock");
/// assert_eq!(unix.inet(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddr),
}

impl Address {
    /// The internet address, if this is one.
    ///
    /// ```
    /// use gyre_reactor::{Address, UnixAddr};
    ///
    /// assert_eq!(Address::Unix(UnixAddr::Unnamed).inet(), None);
    /// ```
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(addr) => Some(*addr),
            Address::Unix(_) => None,
        }
    }

    /// The Unix-domain address, if this is one.
    ///
    /// ```
    /// use gyre_reactor::{Address, UnixAddr};
    /// use std::path::Path;
    ///
    /// let a = Address::Unix(UnixAddr::new("/tmp/s"));
    /// assert_eq!(a.unix().and_then(UnixAddr::path), Some(Path::new("/tmp/s")));
    /// ```
    pub fn unix(&self) -> Option<&UnixAddr> {
        match self {
            Address::Inet(_) => None,
            Address::Unix(addr) => Some(addr),
        }
    }

    /// The internet address, or [`NO_INET_ADDR`] for a Unix one: what the
    /// `SocketAddr` APIs are given.
    pub(crate) fn inet_or_none(&self) -> SocketAddr {
        self.inet().unwrap_or(NO_INET_ADDR)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Inet(addr)
    }
}

impl From<UnixAddr> for Address {
    fn from(addr: UnixAddr) -> Address {
        Address::Unix(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(addr) => write!(f, "unix:{addr}"),
        }
    }
}

/// A Unix-domain socket address: a path in the file system, a name in
/// Linux's abstract namespace, or nothing (a client socket that never
/// bound one, which is what an accepted connection's peer usually is).
///
/// [`UnixAddr::new`] reads a path the way Twisted and Python do: a path
/// whose first byte is NUL (`"\0name"`) names an abstract socket.
///
/// ```
/// use gyre_reactor::UnixAddr;
///
/// assert_eq!(UnixAddr::new("/run/app.sock"), UnixAddr::Path("/run/app.sock".into()));
/// assert_eq!(UnixAddr::new("\0app"), UnixAddr::Abstract(b"app".to_vec()));
/// assert_eq!(UnixAddr::new("\0app").to_string(), "@app");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file at this path.
    Path(PathBuf),
    /// A name in the abstract namespace (Linux only): no file, gone when
    /// the last socket bound to it closes. The bytes exclude the leading
    /// NUL and may hold any byte.
    Abstract(Vec<u8>),
    /// No address: an unbound socket.
    Unnamed,
}

impl UnixAddr {
    /// The address `path` names: [`Abstract`](UnixAddr::Abstract) if it
    /// starts with a NUL byte (the rest is the name), else
    /// [`Path`](UnixAddr::Path). An empty path is `Path("")`, which
    /// listening and connecting refuse.
    ///
    /// ```
    /// use gyre_reactor::UnixAddr;
    /// use std::path::Path;
    ///
    /// assert_eq!(UnixAddr::new(Path::new("relative.sock")).path(), Some(Path::new("relative.sock")));
    /// assert_eq!(UnixAddr::new("\0").abstract_name(), Some(&b""[..]));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> UnixAddr {
        let path = path.as_ref();
        match path.as_os_str().as_bytes() {
            [0, name @ ..] => UnixAddr::Abstract(name.to_vec()),
            _ => UnixAddr::Path(path.to_path_buf()),
        }
    }

    /// The path, for a [`Path`](UnixAddr::Path) address.
    ///
    /// ```
    /// use gyre_reactor::UnixAddr;
    ///
    /// assert_eq!(UnixAddr::Unnamed.path(), None);
    /// ```
    pub fn path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(path) => Some(path),
            _ => None,
        }
    }

    /// The name, for an [`Abstract`](UnixAddr::Abstract) address.
    ///
    /// ```
    /// use gyre_reactor::UnixAddr;
    ///
    /// assert_eq!(UnixAddr::new("\0gyre").abstract_name(), Some(&b"gyre"[..]));
    /// ```
    pub fn abstract_name(&self) -> Option<&[u8]> {
        match self {
            UnixAddr::Abstract(name) => Some(name),
            _ => None,
        }
    }

    /// Reads std's address (what `accept`, `getsockname` and
    /// `getpeername` give).
    pub(crate) fn from_std(addr: &std::os::unix::net::SocketAddr) -> UnixAddr {
        if let Some(path) = addr.as_pathname() {
            return UnixAddr::Path(path.to_path_buf());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = addr.as_abstract_name() {
                return UnixAddr::Abstract(name.to_vec());
            }
        }
        UnixAddr::Unnamed
    }

    /// std's address, to connect to. An empty path, a path too long for
    /// `sun_path`, an unnamed address, and an abstract name off Linux are
    /// errors that say so.
    pub(crate) fn to_std(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        match self {
            UnixAddr::Path(path) if path.as_os_str().is_empty() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix socket path must not be empty",
            )),
            UnixAddr::Path(path) => std::os::unix::net::SocketAddr::from_pathname(path),
            #[cfg(target_os = "linux")]
            UnixAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(target_os = "linux"))]
            UnixAddr::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract Unix socket names exist on Linux only",
            )),
            UnixAddr::Unnamed => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an unnamed Unix address cannot be connected to or bound",
            )),
        }
    }
}

impl fmt::Display for UnixAddr {
    /// The path, `@` and the name (non-printable bytes escaped, as `ss`
    /// shows them), or `(unnamed)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(path) => path.display().fmt(f),
            UnixAddr::Abstract(name) => write!(f, "@{}", name.escape_ascii()),
            UnixAddr::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays() {
        assert_eq!(
            Address::Unix(UnixAddr::Abstract(b"a\nb".to_vec())).to_string(),
            "unix:@a\\nb"
        );
        assert_eq!(
            Address::Unix(UnixAddr::Unnamed).to_string(),
            "unix:(unnamed)"
        );
        assert_eq!(
            Address::Inet("[::1]:80".parse().unwrap()).to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn to_std_refuses_what_cannot_be_dialled() {
        assert_eq!(
            UnixAddr::new("").to_std().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            UnixAddr::Unnamed.to_std().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let long = "x".repeat(200);
        assert!(UnixAddr::new(long).to_std().is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_round_trip() {
        let addr = UnixAddr::new("\0gyre-test").to_std().unwrap();
        assert_eq!(
            UnixAddr::from_std(&addr),
            UnixAddr::Abstract(b"gyre-test".to_vec())
        );
    }

    #[test]
    fn inet_or_none() {
        assert_eq!(
            Address::Unix(UnixAddr::Unnamed).inet_or_none(),
            NO_INET_ADDR
        );
    }
}
