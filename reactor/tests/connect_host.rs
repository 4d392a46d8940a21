//! `connect_tcp_host` and `connect_tcp_addrs`: the name is resolved on the
//! thread pool and the addresses are tried in turn until one connects,
//! over real loopback sockets.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::{any_port, closed_port, reactor, test_client, wait, Recorder, BOUND};
use gyre_reactor::defer::Cancelled;
use gyre_reactor::{factory_fn, ConnectorState};

#[test]
fn connect_tcp_host_resolves_localhost_and_connects() {
    let reactor = reactor();
    let (server, server_seen) = Recorder::new(false);
    let slot = std::cell::RefCell::new(Some(server));
    let port = reactor
        .listen_tcp(any_port(), factory_fn(move |_| slot.borrow_mut().take()))
        .expect("listen");
    let (client, client_seen) = Recorder::new(false);
    let mut client = Some(client);
    let (factory, log) = test_client(move || client.take());

    let d = reactor.connect_tcp_host("localhost", port.local_addr().port(), factory, BOUND);
    wait(&reactor, "the connection", || d.called());
    let connector = d.take_result().unwrap().expect("connected");
    assert_eq!(connector.state(), ConnectorState::Connected);
    let dest = connector.destination();
    assert!(dest.ip().is_loopback(), "{dest}");
    assert_eq!(dest.port(), port.local_addr().port());
    assert!(
        client_seen.borrow().transport.is_some(),
        "connection_made ran before the Deferred fired"
    );
    // localhost may resolve to ::1 first, where nothing listens: that
    // attempt failed and the next one connected; neither failure reached
    // the factory.
    let log = log.borrow();
    assert!(log.started >= 1);
    assert_eq!(log.built, 1);
    assert!(log.failed.is_empty(), "{:?}", log.failed);
    drop(log);
    wait(&reactor, "the server's side", || {
        server_seen.borrow().transport.is_some()
    });
}

#[test]
fn connect_tcp_addrs_tries_each_address_in_turn() {
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(common::Echo::default())))
        .expect("listen");
    let (refused_a, refused_b) = (closed_port(), closed_port());
    let (factory, log) = test_client(|| Some(common::Echo::default()));
    let d = reactor.connect_tcp_addrs(
        vec![refused_a, refused_b, port.local_addr()],
        factory,
        BOUND,
    );
    wait(&reactor, "the connection", || d.called());
    let connector = d.take_result().unwrap().expect("connected");
    assert_eq!(connector.destination(), port.local_addr());
    let log = log.borrow();
    assert_eq!(log.started, 3, "three attempts, in turn");
    assert_eq!(log.built, 1);
    assert!(log.failed.is_empty());
}

#[test]
fn connect_tcp_addrs_names_every_failure() {
    let reactor = reactor();
    let (a, b) = (closed_port(), closed_port());
    let (factory, log) = test_client(|| Some(common::Echo::default()));
    let d = reactor.connect_tcp_addrs(vec![a, b], factory, BOUND);
    wait(&reactor, "the failure", || d.called());
    let failure = d.take_result().unwrap().expect_err("nothing listens");
    let error = failure.downcast_ref::<io::Error>().expect("an io::Error");
    let msg = error.to_string();
    assert!(
        msg.contains(&a.to_string()) && msg.contains(&b.to_string()),
        "{msg}"
    );
    assert_eq!(log.borrow().started, 2);
    assert!(
        log.borrow().failed.is_empty(),
        "reported once, by the Deferred"
    );

    let (factory, _log) = test_client(|| Some(common::Echo::default()));
    let none: Vec<SocketAddr> = Vec::new();
    let d = reactor.connect_tcp_addrs(none, factory, BOUND);
    let failure = d.take_result().unwrap().expect_err("no address");
    assert_eq!(
        failure.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::InvalidInput)
    );
}

#[test]
fn cancelling_connect_tcp_host_tries_nothing() {
    // One pool thread: lookups finish in the order they were asked for.
    let reactor = gyre_reactor::Reactor::builder()
        .thread_pool_size(1)
        .install_signal_handlers(false)
        .build()
        .expect("reactor");
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(common::Echo::default())))
        .expect("listen");
    let (factory, log) = test_client(|| Some(common::Echo::default()));
    let d = reactor.connect_tcp_host("localhost", port.local_addr().port(), factory, BOUND);
    d.cancel();
    assert!(d.take_result().unwrap().unwrap_err().is::<Cancelled>());
    // Let the cancelled lookup finish (the one after it finishes later):
    // it must not start an attempt.
    let lookup = reactor.resolve("localhost", 1);
    wait(&reactor, "another lookup", || lookup.called());
    reactor.iterate(Some(Duration::ZERO)).expect("iterate");
    assert_eq!(log.borrow().started, 0);
    assert_eq!(reactor.stats().accepted, 0);
}
