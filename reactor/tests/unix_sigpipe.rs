//! A write to a Unix socket whose peer has gone is an `EPIPE` error for
//! that connection, never a `SIGPIPE` that kills the process, even in a
//! program that restored `SIGPIPE`'s default action (as command-line tools
//! do to die quietly in a closed pipeline). Its own test binary: it changes
//! the process's signal disposition.

mod common;

use std::io;

use common::*;
use gyre_reactor::{factory_fn, ConnectionLost, Protocol, Transport};

/// Keeps its connection open after the peer's EOF (to write into a
/// broken pipe) and records what happens.
struct Stubborn(Shared<Seen>);

impl Protocol for Stubborn {
    fn connection_made(&mut self, transport: Transport) {
        self.0.borrow_mut().transport = Some(transport);
    }
    fn data_received(&mut self, _data: &[u8]) {}
    fn eof_received(&mut self) -> bool {
        self.0.borrow_mut().eofs += 1;
        true
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.0.borrow_mut().lost.push(reason);
    }
}

#[test]
fn writing_to_a_closed_unix_peer_is_an_error_not_a_signal() {
    // SAFETY: setting a signal's disposition to the default action; this
    // binary's only test.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(
        previous,
        libc::SIG_ERR,
        "signal: {}",
        io::Error::last_os_error()
    );

    let path = std::env::temp_dir().join(format!("gyre-sigpipe-{}.sock", std::process::id()));
    let reactor = reactor();
    let server = shared(Seen::default());
    let s = server.clone();
    let port = reactor
        .listen_unix(&path, factory_fn(move |_| Some(Stubborn(s.clone()))))
        .expect("listen_unix");
    let (client, client_seen) = Recorder::new(false);
    let mut client = Some(client);
    let (factory, _log) = test_client(move || client.take());
    reactor.connect_unix(&path, factory, BOUND);
    wait(&reactor, "both sides connected", || {
        server.borrow().transport.is_some() && client_seen.borrow().transport.is_some()
    });
    // The client goes away; the server hears EOF and keeps writing.
    let c = client_seen.borrow().transport.clone().unwrap();
    c.abort_connection();
    wait(&reactor, "the server's eof_received", || {
        server.borrow().eofs == 1
    });
    let t = server.borrow().transport.clone().unwrap();
    let chunk = vec![7u8; 64 * 1024];
    wait(&reactor, "the server's write failing", || {
        if server.borrow().lost.is_empty() {
            t.write(&chunk);
        }
        !server.borrow().lost.is_empty()
    });
    // Still alive to say so: the write was an error for this connection.
    let lost = &server.borrow().lost;
    assert!(
        matches!(&lost[..], [ConnectionLost::Error(e)] if e.kind() == io::ErrorKind::BrokenPipe),
        "the server was told {lost:?}"
    );
    drop(port.stop_listening());
    assert!(!path.exists());
}
