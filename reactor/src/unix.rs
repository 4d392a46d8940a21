//! Unix-domain stream sockets: [`Reactor::listen_unix`],
//! [`Reactor::connect_unix`], [`UnixListenOptions`] and
//! [`PeerCredentials`] (Twisted's `listenUNIX` and `connectUNIX`).
//!
//! A Unix connection is the same [`Transport`] as a TCP
//! one, built by the same [`Factory`](crate::Factory) or
//! [`ClientFactory`]: one connection type serves
//! both, so the bounded write buffer, backpressure, half-close, lingering
//! close, read bursts stopping at the high-water mark, producers and the
//! panic guard are the same code (and pass the same conformance suite).
//! A listening Unix port is a [`ListeningPort`],
//! with the same accept pausing and descriptor-exhaustion handling.
//!
//! ```
//! use gyre_reactor::{factory_fn, ClientFactory, Factory, Protocol, Reactor, Transport};
//! use std::{cell::RefCell, net::SocketAddr, rc::Rc, time::Duration};
//!
//! /// Echoes every byte back.
//! #[derive(Default)]
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) { if let Some(t) = &self.0 { t.write(data) } }
//! }
//!
//! /// Says hello and keeps what comes back.
//! struct Hello(Rc<RefCell<Vec<u8>>>);
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, t: Transport) { t.write(b"hello"); }
//!     fn data_received(&mut self, data: &[u8]) { self.0.borrow_mut().extend_from_slice(data) }
//! }
//! struct HelloFactory(Rc<RefCell<Vec<u8>>>);
//! impl Factory for HelloFactory {
//!     type Protocol = Hello;
//!     fn build_protocol(&mut self, _: SocketAddr) -> Option<Hello> { Some(Hello(self.0.clone())) }
//! }
//! impl ClientFactory for HelloFactory {}
//!
//! let reactor = Reactor::builder().install_signal_handlers(false).build()?;
//! let path = std::env::temp_dir().join(format!("gyre-doc-echo-{}.sock", std::process::id()));
//! let port = reactor.listen_unix(&path, factory_fn(|_| Some(Echo::default())))?;
//! let got = Rc::new(RefCell::new(Vec::new()));
//! reactor.connect_unix(&path, HelloFactory(got.clone()), Duration::from_secs(5));
//! assert!(reactor.run_until(|| got.borrow().len() == 5, Duration::from_secs(10))?);
//! assert_eq!(&*got.borrow(), b"hello");
//! drop(port.stop_listening());
//! assert!(!path.exists(), "stopping removes the socket file");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contract
//!
//! - **Addresses.** A path names a socket file; a path whose first byte is
//!   NUL (`"\0name"`) names a socket in Linux's abstract namespace, which
//!   has no file (Twisted's and Python's convention). See
//!   [`UnixAddr`]. How a Unix peer appears to APIs that
//!   speak [`SocketAddr`](std::net::SocketAddr) (a factory's `peer` is
//!   [`NO_INET_ADDR`](crate::address::NO_INET_ADDR)) is in
//!   [`address`](crate::address); [`Transport::peer_address`] and
//!   [`Transport::peer_credentials`] say who connected.
//! - **A stale socket file is replaced; a live one is refused.** A socket
//!   file outlives a process that died without removing it, and `bind`
//!   then fails with "address in use". [`Reactor::listen_unix`] then
//!   probes the path with a nonblocking connect: refused means nothing is
//!   listening, so the file is removed (logged at info level) and bound
//!   again; accepted (or "try again", a full backlog) means a live
//!   listener, and `listen_unix` fails with an `AddrInUse` error that says
//!   so. The probe is an empty connection the live listener accepts and
//!   sees closed. A path that exists and is not a socket (a regular file,
//!   a directory, a symbolic link) is never removed: `AddrInUse` again.
//!   [`UnixListenOptions::replace_stale`] turns replacing off. Two servers
//!   started on one path at the same instant can both take a file for
//!   stale; if that matters, hold a lock file (Twisted's `wantPID`).
//! - **The file mode is set before anyone can connect.**
//!   [`UnixListenOptions::mode`] is applied (`chmod`) between `bind` and
//!   `listen`, so no connection is accepted under the umask's mode. A mode
//!   with an abstract name is an `InvalidInput` error (there is no file).
//! - **The socket file is removed when the port stops listening**
//!   ([`ListeningPort::stop_listening`],
//!   reactor shutdown, or dropping the reactor), and only if it is still
//!   ours: its device and inode are recorded at `bind` and compared first,
//!   so a file another server bound at the same path since is left alone.
//!   The path is made absolute at `bind`, so a later `chdir` does not
//!   misdirect the removal.
//! - **Peer credentials** ([`Transport::peer_credentials`]) are the
//!   kernel's record (`SO_PEERCRED`) of the peer process's pid, uid and
//!   gid when the connection was made (for a client: the listener's, when
//!   it called `listen`). The peer cannot forge them. Linux only; an
//!   `Unsupported` error elsewhere and for TCP.
//! - **An abort has no RST.** A Unix socket cannot signal a reset: the
//!   peer of [`abort_connection`](crate::Transport::abort_connection) reads
//!   EOF (and closes with [`Done`](crate::ConnectionLost::Done)) unless
//!   the aborting side had unread input, in which case the peer gets a
//!   `ConnectionReset` error, as over TCP. Buffered data is dropped in both
//!   cases. Everything else ([`Transport`]'s contract)
//!   holds as for TCP.
//! - **Connecting** is immediate on a Unix socket: the connect completes
//!   or fails at once (refused: nothing listening; not found: no such
//!   file). A listener whose backlog is full makes it fail with
//!   `WouldBlock` ("the listener's backlog is full") rather than wait; the
//!   connector reports every failure to
//!   [`ClientFactory::client_connection_failed`]
//!   from the loop, so a [`ReconnectingClientFactory`](crate::ReconnectingClientFactory)
//!   retries it like any other.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::address::{Address, UnixAddr};
use crate::connector::{ClientFactory, Connector};
use crate::core::Reactor;
use crate::factory::FactoryRef;
use crate::listener::{Acceptor, ListenOptions, ListeningPort};

#[cfg(doc)]
use crate::Transport;

/// Who is on the other end of a Unix-domain connection, as the kernel
/// recorded it (`SO_PEERCRED`); from [`Transport::peer_credentials`].
///
/// ```
/// use gyre_reactor::PeerCredentials;
///
/// fn is_root(peer: &PeerCredentials) -> bool {
///     peer.uid == 0
/// }
/// # let _ = is_root;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The peer's process id when it connected (or listened). The process
    /// may have exited since, and its pid been reused.
    pub pid: u32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// The error for a transport without peer credentials.
pub(crate) fn credentials_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials exist for Unix-domain sockets only",
    )
}

/// `SO_PEERCRED` for a connected Unix socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(stream: &mio::net::UnixStream) -> io::Result<PeerCredentials> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(PeerCredentials {
        pid: cred.pid.as_raw_nonzero().get().unsigned_abs(),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// `SO_PEERCRED` is Linux's; elsewhere, say so.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_credentials(_stream: &mio::net::UnixStream) -> io::Result<PeerCredentials> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are implemented on Linux only",
    ))
}

/// How a Unix port listens: the socket file's mode, what to do with a
/// stale socket file, and the [`ListenOptions`] every port has (backlog,
/// spare descriptor, refusal line, exhaustion back-off). For
/// [`Reactor::listen_unix_with`]; the default is what
/// [`Reactor::listen_unix`] does: the umask's mode, a stale file replaced,
/// the default `ListenOptions`.
///
/// ```no_run
/// use gyre_reactor::{factory_fn, ListenOptions, Protocol, Reactor, UnixListenOptions};
///
/// struct Discard;
/// impl Protocol for Discard { fn data_received(&mut self, _: &[u8]) {} }
///
/// let reactor = Reactor::new()?;
/// let options = UnixListenOptions::new()
///     .mode(0o660) // owner and group may connect
///     .listen_options(ListenOptions::new().backlog(64));
/// reactor.listen_unix_with("/run/myapp/control.sock", factory_fn(|_| Some(Discard)), options)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct UnixListenOptions {
    mode: Option<u32>,
    replace_stale: bool,
    listen: ListenOptions,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        UnixListenOptions {
            mode: None,
            replace_stale: true,
            listen: ListenOptions::default(),
        }
    }
}

impl UnixListenOptions {
    /// The defaults (see the type's docs).
    ///
    /// ```
    /// let options = gyre_reactor::UnixListenOptions::new();
    /// # drop(options);
    /// ```
    pub fn new() -> UnixListenOptions {
        UnixListenOptions::default()
    }

    /// The socket file's permission bits (default: what the umask leaves),
    /// set before the socket listens. Connecting needs write permission on
    /// the file, so `0o600` admits the owner only and `0o660` the group
    /// too. Only the permission bits (`0o7777`) are used.
    ///
    /// ```
    /// let options = gyre_reactor::UnixListenOptions::new().mode(0o600);
    /// # drop(options);
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode & 0o7777);
        self
    }

    /// Whether a stale socket file at the path (one nothing listens on) is
    /// removed and bound again (default: yes). With `false`, it is an
    /// `AddrInUse` error, as a live listener is. See the
    /// [contract](crate::unix#contract).
    ///
    /// ```
    /// let options = gyre_reactor::UnixListenOptions::new().replace_stale(false);
    /// # drop(options);
    /// ```
    pub fn replace_stale(mut self, replace: bool) -> Self {
        self.replace_stale = replace;
        self
    }

    /// The options every listening port has: backlog, the spare descriptor
    /// and its refusal line, the back-off when out of descriptors, the
    /// episode hook (default: [`ListenOptions::default`]).
    ///
    /// ```
    /// use gyre_reactor::{ListenOptions, UnixListenOptions};
    ///
    /// let options = UnixListenOptions::new()
    ///     .listen_options(ListenOptions::new().refusal_line("busy\n"));
    /// # drop(options);
    /// ```
    pub fn listen_options(mut self, options: ListenOptions) -> Self {
        self.listen = options;
        self
    }
}

impl Reactor {
    /// Listens on the Unix-domain socket `path`, building a protocol with
    /// `factory` for each connection (Twisted's `listenUNIX`). A path that
    /// starts with a NUL byte names a socket in Linux's abstract namespace.
    /// A stale socket file left by a dead server is replaced; a live
    /// listener's path is an `AddrInUse` error; the file is removed when
    /// the port stops. See the [contract](crate::unix#contract).
    ///
    /// ```
    /// use gyre_reactor::{factory_fn, Address, Protocol, Reactor, UnixAddr};
    ///
    /// struct Discard;
    /// impl Protocol for Discard { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let name = format!("\0gyre-doc-listen-{}", std::process::id());
    /// let port = reactor.listen_unix(&name, factory_fn(|_| Some(Discard)))?;
    /// assert_eq!(port.local_address(), Address::Unix(UnixAddr::new(&name)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_unix(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<FactoryRef>,
    ) -> io::Result<ListeningPort> {
        self.listen_unix_with(path, factory, UnixListenOptions::default())
    }

    /// [`listen_unix`](Self::listen_unix) with [`UnixListenOptions`]: the
    /// file mode, stale-file handling, backlog and the rest.
    ///
    /// ```
    /// use gyre_reactor::{factory_fn, Protocol, Reactor, UnixListenOptions};
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// struct Discard;
    /// impl Protocol for Discard { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let path = std::env::temp_dir().join(format!("gyre-doc-mode-{}.sock", std::process::id()));
    /// let options = UnixListenOptions::new().mode(0o600);
    /// let port = reactor.listen_unix_with(&path, factory_fn(|_| Some(Discard)), options)?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    /// drop(port.stop_listening());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_unix_with(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<FactoryRef>,
        options: UnixListenOptions,
    ) -> io::Result<ListeningPort> {
        let addr = UnixAddr::new(path);
        let backlog = options.listen.backlog.unwrap_or(self.inner.backlog);
        let (listener, file) = bind(&addr, &options, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on unix:{addr}: {e}")))?;
        let local = match listener.local_addr() {
            Ok(local) => Address::Unix(UnixAddr::from_std(&local)),
            Err(_) => Address::Unix(addr),
        };
        self.start_listener(
            Acceptor::Unix(listener, file),
            local,
            factory,
            options.listen,
        )
    }

    /// Connects to the Unix-domain socket `path` (a leading NUL byte names
    /// an abstract socket), building the protocol with `factory` once
    /// connected (Twisted's `connectUNIX`). Every failure (nothing
    /// listening, no such file, no permission, a full backlog) reaches
    /// `client_connection_failed`, from the loop. A Unix connect completes
    /// at once, so `timeout` only bounds the time until the loop notices.
    ///
    /// ```no_run
    /// use gyre_reactor::{ClientFactory, Factory, Protocol, Reactor, Transport};
    /// use std::{net::SocketAddr, time::Duration};
    ///
    /// struct Status;
    /// impl Protocol for Status {
    ///     fn connection_made(&mut self, t: Transport) { t.write(b"status\n"); }
    ///     fn data_received(&mut self, data: &[u8]) { print!("{}", String::from_utf8_lossy(data)); }
    /// }
    /// struct StatusFactory;
    /// impl Factory for StatusFactory {
    ///     type Protocol = Status;
    ///     fn build_protocol(&mut self, _: SocketAddr) -> Option<Status> { Some(Status) }
    /// }
    /// impl ClientFactory for StatusFactory {}
    ///
    /// let reactor = Reactor::new()?;
    /// reactor.connect_unix("/run/myapp/control.sock", StatusFactory, Duration::from_secs(5));
    /// reactor.run()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_unix(
        &self,
        path: impl AsRef<Path>,
        factory: impl ClientFactory,
        timeout: Duration,
    ) -> Connector {
        self.connect_address(Address::Unix(UnixAddr::new(path)), factory, timeout)
    }
}

/// Creates, binds (replacing a stale file), sets the mode of, and listens
/// on a nonblocking Unix socket.
fn bind(
    addr: &UnixAddr,
    options: &UnixListenOptions,
    backlog: i32,
) -> io::Result<(mio::net::UnixListener, Option<SocketFile>)> {
    let sockaddr = match addr {
        UnixAddr::Path(path) if path.as_os_str().is_empty() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix socket path must not be empty",
            ))
        }
        UnixAddr::Path(path) => SockAddr::unix(path)?,
        UnixAddr::Abstract(name) => {
            if !cfg!(target_os = "linux") {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract Unix socket names exist on Linux only",
                ));
            }
            if options.mode.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a file mode applies to a socket file, not to an abstract name",
                ));
            }
            // socket2 reads a leading NUL as an abstract name.
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))?
        }
        UnixAddr::Unnamed => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot listen on an unnamed Unix address",
            ))
        }
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.bind(&sockaddr) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => match addr {
            UnixAddr::Path(path) => {
                clear_stale(path, options.replace_stale)?;
                socket.bind(&sockaddr)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "the abstract name is in use by another socket",
                ))
            }
        },
        Err(e) => return Err(e),
    }
    // From here on the file is ours: dropping `file` (on any error below)
    // removes it.
    let file = match addr {
        UnixAddr::Path(path) => SocketFile::new(path),
        _ => None,
    };
    if let (Some(mode), UnixAddr::Path(path)) = (options.mode, addr) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set mode {mode:o}: {e}")))?;
    }
    socket.listen(backlog)?;
    let std_listener = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket));
    Ok((mio::net::UnixListener::from_std(std_listener), file))
}

/// `bind` found `path` in use: removes it if it is a socket file nothing
/// listens on (and `replace` allows), else says why not.
fn clear_stale(path: &Path, replace: bool) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Removed meanwhile: bind again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "the path exists and is not a socket; it is left alone",
        ));
    }
    // A nonblocking connect answers at once: accepted or "try again" (a
    // full backlog) is a live listener, refused is a stale file.
    match mio::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another listener is accepting connections on it",
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another listener is on it (its backlog is full)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            if !replace {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a stale socket file (nothing listens on it) is in the way, \
                     and UnixListenOptions::replace_stale is off",
                ));
            }
            match fs::remove_file(path) {
                Ok(()) => {
                    log::info!(
                        "removed the stale socket file {} (nothing listened on it)",
                        path.display()
                    );
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale socket file: {e}"),
                )),
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("the path is in use and probing it failed: {e}"),
        )),
    }
}

/// The socket file a port bound: removed when the port closes (dropped),
/// if it is still the same file (device and inode).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Records the file just bound at `path` (made absolute, so a later
    /// `chdir` does not misdirect the removal). `None` if it cannot be
    /// looked at (then it is not removed either; logged).
    fn new(path: &Path) -> Option<SocketFile> {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        match fs::symlink_metadata(&absolute) {
            Ok(meta) => Some(SocketFile {
                path: absolute,
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            Err(e) => {
                log::warn!(
                    "cannot look at the socket file {} just bound ({e}); it will not be removed",
                    path.display()
                );
                None
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Ok(()) => log::debug!("removed the socket file {path}"),
                    Err(e) => log::warn!("cannot remove the socket file {path}: {e}"),
                }
            }
            Ok(_) => log::info!(
                "not removing the socket file {path}: another socket was bound there since"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::debug!("the socket file {path} was already removed")
            }
            Err(e) => log::warn!("cannot look at the socket file {path}: {e}; left in place"),
        }
    }
}
