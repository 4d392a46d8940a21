//! Unix-domain stream sockets over real sockets in a temporary directory:
//! listening and connecting, addresses, stale socket files, the file mode,
//! removal when the port stops, peer credentials, the abstract namespace,
//! accept pausing and a full backlog. The transport's behaviours (writes,
//! half-close, lingering close, flow control, aborts) are the conformance
//! suite's `unix` kind (`tests/conformance.rs` at the workspace root).

mod common;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use gyre_reactor::address::NO_INET_ADDR;
use gyre_reactor::{
    factory_fn, Address, ConnectionLost, ListenOptions, ListeningPort, Reactor, UnixAddr,
    UnixListenOptions,
};

/// A fresh directory under the system's temporary directory, removed (with
/// what is in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gyre-unix-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create the test directory");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test (or test process) uses.
fn abstract_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("\0gyre-test-{}-{tag}-{n}", std::process::id())
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// A socket file with nothing listening on it, as a server that died
/// without cleaning up leaves behind: bound, then closed (closing a socket
/// does not remove its file).
fn leave_stale_file(path: &Path) {
    drop(std::os::unix::net::UnixListener::bind(path).expect("bind a socket to leave behind"));
    assert!(is_socket(path), "the stale socket file is there");
}

/// A port, the server side's records (one per connection) and the `peer`
/// each `build_protocol` was given.
type EchoPort = (
    ListeningPort,
    Shared<Vec<Shared<Seen>>>,
    Shared<Vec<SocketAddr>>,
);

/// Listens with an echoing [`Recorder`] per connection.
fn echo_port(
    reactor: &Reactor,
    path: impl AsRef<Path>,
    options: UnixListenOptions,
) -> io::Result<EchoPort> {
    let seen = shared(Vec::new());
    let peers = shared(Vec::new());
    let (s, p) = (seen.clone(), peers.clone());
    let port = reactor.listen_unix_with(
        path,
        factory_fn(move |peer| {
            p.borrow_mut().push(peer);
            let (recorder, log) = Recorder::new(true);
            s.borrow_mut().push(log);
            Some(recorder)
        }),
        options,
    )?;
    Ok((port, seen, peers))
}

/// Connects a recording client to `path`, returning its records and the
/// factory's log.
fn connect_client(
    reactor: &Reactor,
    path: impl AsRef<Path>,
) -> (Shared<Seen>, Shared<ClientLog>, gyre_reactor::Connector) {
    let (client, seen) = Recorder::new(false);
    let mut client = Some(client);
    let (factory, log) = test_client(move || client.take());
    let connector = reactor.connect_unix(path, factory, BOUND);
    (seen, log, connector)
}

/// Sends `message` from the client and waits for its echo.
fn round_trip(reactor: &Reactor, client: &Shared<Seen>, message: &[u8]) {
    wait(reactor, "the client's connection_made", || {
        client.borrow().transport.is_some()
    });
    let before = client.borrow().data.len();
    client.borrow().transport.as_ref().unwrap().write(message);
    wait(reactor, "the echo", || {
        client.borrow().data.len() >= before + message.len()
    });
    assert_eq!(&client.borrow().data[before..], message);
}

#[test]
fn echo_over_a_socket_file_with_addresses() {
    let dir = TempDir::new("echo");
    let path = dir.join("echo.sock");
    let reactor = reactor();
    let (port, servers, peers) =
        echo_port(&reactor, &path, UnixListenOptions::new()).expect("listen_unix");
    assert!(is_socket(&path), "listen_unix creates the socket file");
    assert_eq!(
        port.local_address(),
        Address::Unix(UnixAddr::Path(path.clone()))
    );
    assert_eq!(port.local_addr(), NO_INET_ADDR);

    let (client, log, connector) = connect_client(&reactor, &path);
    assert_eq!(
        connector.destination_address(),
        Address::Unix(UnixAddr::Path(path.clone()))
    );
    assert_eq!(connector.destination(), NO_INET_ADDR);
    round_trip(&reactor, &client, b"hello over a Unix socket");
    round_trip(&reactor, &client, &pattern(300_000));

    // The client's transport: the peer is the path it dialled, it has no
    // address of its own, and no internet addresses.
    let t = client.borrow().transport.clone().unwrap();
    assert_eq!(
        t.peer_address(),
        Some(Address::Unix(UnixAddr::Path(path.clone())))
    );
    assert_eq!(t.local_address(), Some(Address::Unix(UnixAddr::Unnamed)));
    assert_eq!((t.peer_addr(), t.local_addr()), (None, None));
    assert!(
        t.set_nodelay(true).is_ok(),
        "set_nodelay does nothing and succeeds"
    );
    // The server's: an unnamed peer, on the port's path; the factory was
    // given the placeholder address.
    let server = servers.borrow()[0].clone();
    let st = server.borrow().transport.clone().unwrap();
    assert_eq!(st.peer_address(), Some(Address::Unix(UnixAddr::Unnamed)));
    assert_eq!(st.local_address(), Some(port.local_address()));
    assert_eq!(*peers.borrow(), [NO_INET_ADDR]);

    t.lose_connection();
    wait(&reactor, "connection_lost on both sides", || {
        !client.borrow().lost.is_empty() && !server.borrow().lost.is_empty()
    });
    assert!(matches!(client.borrow().lost[..], [ConnectionLost::Done]));
    assert!(matches!(server.borrow().lost[..], [ConnectionLost::Done]));
    wait(&reactor, "client_connection_lost", || {
        log.borrow().lost.len() == 1
    });
    assert_eq!(log.borrow().built, 1);

    drop(port.stop_listening());
    assert!(!path.exists(), "stop_listening removes the socket file");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("stale.sock");
    leave_stale_file(&path);
    let reactor = reactor();
    let (port, _servers, _) =
        echo_port(&reactor, &path, UnixListenOptions::new()).expect("listen over a stale file");
    let (client, _, _) = connect_client(&reactor, &path);
    round_trip(&reactor, &client, b"served from the replaced file");
    drop(port.stop_listening());
    assert!(!path.exists());
}

#[test]
fn a_stale_socket_file_is_refused_when_replacing_is_off() {
    let dir = TempDir::new("stale-kept");
    let path = dir.join("stale.sock");
    leave_stale_file(&path);
    let reactor = reactor();
    let options = UnixListenOptions::new().replace_stale(false);
    let err = echo_port(&reactor, &path, options).err().expect("an error");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("stale socket file"), "{err}");
    assert!(is_socket(&path), "the stale file is left alone");
}

#[test]
fn a_live_listeners_path_is_refused_and_left_alone() {
    let dir = TempDir::new("live");
    let path = dir.join("live.sock");
    let reactor = reactor();
    let (first, servers, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    let err = echo_port(&reactor, &path, UnixListenOptions::new())
        .err()
        .expect("a second listener on a live path");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("another listener"),
        "the error names the path and why: {message}"
    );
    // The live listener still has its file and serves (its accept of the
    // probe connection is harmless: the probe closed at once).
    assert!(is_socket(&path));
    let (client, _, _) = connect_client(&reactor, &path);
    round_trip(&reactor, &client, b"still served");
    assert!(first.is_listening());
    assert!(!servers.borrow().is_empty());
}

#[test]
fn a_path_that_is_not_a_socket_is_never_removed() {
    let dir = TempDir::new("regular");
    let path = dir.join("precious.txt");
    fs::write(&path, b"keep me").unwrap();
    let reactor = reactor();
    let err = echo_port(&reactor, &path, UnixListenOptions::new())
        .err()
        .expect("listening over a regular file");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn the_file_mode_is_applied() {
    let dir = TempDir::new("mode");
    let reactor = reactor();
    for (name, mode) in [("owner.sock", 0o600), ("group.sock", 0o660)] {
        let path = dir.join(name);
        let (port, _, _) =
            echo_port(&reactor, &path, UnixListenOptions::new().mode(mode)).expect("listen");
        let got = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "mode of {name}: {got:o}");
        // The owner (this process) may still connect.
        let (client, _, _) = connect_client(&reactor, &path);
        round_trip(&reactor, &client, name.as_bytes());
        drop(port.stop_listening());
    }
}

#[test]
fn peer_credentials_are_this_process() {
    let dir = TempDir::new("cred");
    let path = dir.join("cred.sock");
    let reactor = reactor();
    let (_port, servers, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    let (client, _, _) = connect_client(&reactor, &path);
    round_trip(&reactor, &client, b"who am I");
    let me = (
        std::process::id(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let server = servers.borrow()[0].clone();
    let on_server = server
        .borrow()
        .transport
        .clone()
        .unwrap()
        .peer_credentials();
    let on_client = client
        .borrow()
        .transport
        .clone()
        .unwrap()
        .peer_credentials();
    for (side, creds) in [("server", on_server), ("client", on_client)] {
        let creds = creds.unwrap_or_else(|e| panic!("{side}'s peer_credentials: {e}"));
        assert_eq!(
            (creds.pid, creds.uid, creds.gid),
            me,
            "{side} sees {creds:?}"
        );
    }
}

#[test]
fn tcp_transports_have_no_peer_credentials() {
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Echo::default())))
        .unwrap();
    let (client, _, _) = {
        let (client, seen) = Recorder::new(false);
        let mut client = Some(client);
        let (factory, log) = test_client(move || client.take());
        let connector = reactor.connect_tcp(port.local_addr(), factory, BOUND);
        (seen, log, connector)
    };
    wait(&reactor, "the TCP connection", || {
        client.borrow().transport.is_some()
    });
    let t = client.borrow().transport.clone().unwrap();
    let err = t
        .peer_credentials()
        .expect_err("TCP has no peer credentials");
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert_eq!(t.peer_address(), t.peer_addr().map(Address::Inet));
}

#[test]
fn abstract_namespace_listen_and_connect() {
    let name = abstract_name("echo");
    let reactor = reactor();
    let (port, servers, _) = echo_port(&reactor, &name, UnixListenOptions::new()).unwrap();
    let expected = Address::Unix(UnixAddr::Abstract(name.as_bytes()[1..].to_vec()));
    assert_eq!(port.local_address(), expected);
    let (client, _, _) = connect_client(&reactor, &name);
    round_trip(&reactor, &client, b"no file at all");
    assert_eq!(
        client.borrow().transport.as_ref().unwrap().peer_address(),
        Some(expected.clone())
    );
    let server = servers.borrow()[0].clone();
    assert_eq!(
        server.borrow().transport.as_ref().unwrap().local_address(),
        Some(expected)
    );

    // In use while listening (never "stale": there is no file to remove).
    let err = echo_port(&reactor, &name, UnixListenOptions::new())
        .err()
        .expect("in use");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    // A mode makes no sense without a file.
    let other = abstract_name("mode");
    let err = echo_port(&reactor, &other, UnixListenOptions::new().mode(0o600))
        .err()
        .expect("a mode with an abstract name");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    // Free again once the port stops.
    drop(port.stop_listening());
    let (again, _, _) = echo_port(&reactor, &name, UnixListenOptions::new()).expect("listen again");
    drop(again.stop_listening());
}

#[test]
fn the_socket_file_is_removed_only_if_still_ours() {
    let dir = TempDir::new("ours");
    let path = dir.join("ours.sock");
    let reactor = reactor();
    let (port, _, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    // Someone moves our file away and binds another socket at the path.
    fs::rename(&path, dir.join("moved.sock")).unwrap();
    let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(port.stop_listening());
    assert!(is_socket(&path), "the other socket's file is left alone");
    drop(theirs);
}

#[test]
fn the_socket_file_is_removed_when_the_reactor_is_dropped() {
    let dir = TempDir::new("drop");
    let path = dir.join("drop.sock");
    let reactor = reactor();
    let (port, _, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    drop(port);
    assert!(
        is_socket(&path),
        "dropping the handle does not close the port"
    );
    drop(reactor);
    assert!(
        !path.exists(),
        "dropping the reactor closes the port and removes its file"
    );
}

#[test]
fn connect_failures_reach_the_factory_from_the_loop() {
    let dir = TempDir::new("fail");
    let stale = dir.join("stale.sock");
    leave_stale_file(&stale);
    let too_long = format!("/{}", "x".repeat(200));
    let reactor = reactor();
    let cases = [
        (dir.join("missing.sock"), io::ErrorKind::NotFound),
        (stale, io::ErrorKind::ConnectionRefused),
        (PathBuf::from(too_long), io::ErrorKind::InvalidInput),
    ];
    for (path, kind) in cases {
        let (_client, log, _connector) = connect_client(&reactor, &path);
        assert!(
            log.borrow().failed.is_empty(),
            "reported from the loop, not on the caller's stack"
        );
        wait(&reactor, "client_connection_failed", || {
            log.borrow().failed.len() == 1
        });
        let log = log.borrow();
        assert_eq!(
            log.failed[0].kind(),
            kind,
            "{}: {}",
            path.display(),
            log.failed[0]
        );
        assert_eq!(log.built, 0);
    }
}

#[test]
fn an_overlong_path_is_a_clear_listen_error() {
    let reactor = reactor();
    let path = format!("/tmp/{}", "y".repeat(200));
    let err = echo_port(&reactor, &path, UnixListenOptions::new())
        .err()
        .expect("too long");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string().contains("cannot listen on unix:/tmp/yyy"),
        "{err}"
    );
}

#[test]
fn paused_accepting_holds_connections_in_the_backlog() {
    let dir = TempDir::new("pause");
    let path = dir.join("pause.sock");
    let reactor = reactor();
    let (port, servers, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    port.pause_accepting();
    let (client, _, _) = connect_client(&reactor, &path);
    // A Unix connect completes in the kernel's backlog: the client is up,
    // the paused server has not accepted.
    wait(&reactor, "the client's connection_made", || {
        client.borrow().transport.is_some()
    });
    assert!(servers.borrow().is_empty(), "accepted while paused");
    port.resume_accepting();
    round_trip(&reactor, &client, b"after resume");
    assert_eq!(servers.borrow().len(), 1);
}

#[test]
fn a_full_backlog_fails_the_connect_and_is_a_live_listener() {
    let dir = TempDir::new("backlog");
    let path = dir.join("backlog.sock");
    let reactor = reactor();
    let options = UnixListenOptions::new()
        .listen_options(ListenOptions::new().backlog(1).spare_descriptor(false));
    let (port, servers, _) = echo_port(&reactor, &path, options).unwrap();
    port.pause_accepting();
    // Fill the backlog (nothing accepts while paused).
    let mut waiting = Vec::new();
    loop {
        match mio::net::UnixStream::connect(&path) {
            Ok(stream) => waiting.push(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(waiting.len() < 1000, "the backlog never filled");
    }
    let (_client, log, _) = connect_client(&reactor, &path);
    wait(&reactor, "client_connection_failed", || {
        log.borrow().failed.len() == 1
    });
    let failure = log.borrow().failed[0].to_string();
    assert_eq!(
        log.borrow().failed[0].kind(),
        io::ErrorKind::WouldBlock,
        "{failure}"
    );
    assert!(failure.contains("backlog is full"), "{failure}");
    // A full backlog is a live listener, not a stale file.
    let err = echo_port(&reactor, &path, UnixListenOptions::new())
        .err()
        .expect("in use");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    // Once accepting again, everything that waited is served.
    port.resume_accepting();
    let n = waiting.len();
    wait(&reactor, "the waiting connections accepted", || {
        servers.borrow().len() == n
    });
}

#[test]
fn a_reconnecting_factory_retries_until_the_server_appears() {
    use gyre_reactor::defer::{Backoff, BackoffState};
    use gyre_reactor::{ConnectorState, ReconnectingClientFactory};
    use std::time::Duration;

    let dir = TempDir::new("reconnect");
    let path = dir.join("later.sock");
    let (manual, reactor) = manual_reactor();
    let backoff = Backoff::default()
        .initial(Duration::from_secs(1))
        .max_delay(Duration::from_secs(1))
        .jitter(0.0);
    let (client, log) = test_client(|| Some(Echo::default()));
    let factory =
        ReconnectingClientFactory::with_state(client, BackoffState::with_seed(backoff, 1));
    let control = factory.control();
    let connector = reactor.connect_unix(&path, factory, BOUND);
    wait(
        &reactor,
        "the first failure and its retry scheduled",
        || control.pending_retry().is_some(),
    );
    assert_eq!(log.borrow().failed[0].kind(), io::ErrorKind::NotFound);
    let (_port, servers, _) = echo_port(&reactor, &path, UnixListenOptions::new()).unwrap();
    // The retry fires on the manual clock.
    manual.advance(Duration::from_secs(1));
    wait(&reactor, "the retry accepted", || {
        servers.borrow().len() == 1
    });
    wait(&reactor, "the client connected", || {
        connector.state() == ConnectorState::Connected
    });
    assert_eq!(log.borrow().built, 1);
    control.stop_trying();
}
