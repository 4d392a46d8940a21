//! UDP over real loopback sockets (after Twisted's `test_udp.py`): an echo
//! round trip, connected UDP refused by a closed port, multicast on
//! loopback to two listeners on one port, oversized datagrams reported
//! and never delivered cut, a panic costing one datagram, stopping from
//! inside a callback, the write errors, and shutdown.

mod common;

use std::cell::Cell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;

use common::{any_port, reactor, shared, wait, Shared};
use gyre_reactor::{DatagramProtocol, Reactor, Sent, UdpOptions, UdpPort, DEFAULT_MAX_DATAGRAM};

/// What a [`Recorder`] heard.
#[derive(Default)]
struct Heard {
    port: Option<UdpPort>,
    datagrams: Vec<(Vec<u8>, SocketAddr)>,
    truncated: Vec<(SocketAddr, usize)>,
    refused: usize,
    started: usize,
    stopped: usize,
}

/// Records everything; echoes if asked; stops the port on `b"stop"`;
/// panics on `b"boom"`.
struct Recorder {
    heard: Shared<Heard>,
    echo: bool,
}

fn recorder(echo: bool) -> (Recorder, Shared<Heard>) {
    let heard = shared(Heard::default());
    (
        Recorder {
            heard: heard.clone(),
            echo,
        },
        heard,
    )
}

impl DatagramProtocol for Recorder {
    fn start_protocol(&mut self, port: UdpPort) {
        let mut heard = self.heard.borrow_mut();
        heard.started += 1;
        heard.port = Some(port);
    }

    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        if data == b"boom" {
            panic!("the protocol chokes on boom");
        }
        let port = {
            let mut heard = self.heard.borrow_mut();
            heard.datagrams.push((data.to_vec(), from));
            heard.port.clone()
        };
        if let Some(port) = port {
            if data == b"stop" {
                drop(port.stop_listening());
            } else if self.echo {
                port.write_to(data, from).expect("echo");
            }
        }
    }

    fn datagram_truncated(&mut self, from: SocketAddr, limit: usize) {
        self.heard.borrow_mut().truncated.push((from, limit));
    }

    fn connection_refused(&mut self) {
        self.heard.borrow_mut().refused += 1;
    }

    fn stop_protocol(&mut self) {
        let mut heard = self.heard.borrow_mut();
        heard.stopped += 1;
        heard.port = None;
    }
}

fn listen(reactor: &Reactor, echo: bool) -> (UdpPort, Shared<Heard>) {
    let (protocol, heard) = recorder(echo);
    let port = reactor
        .listen_udp(any_port(), protocol)
        .expect("listen_udp");
    (port, heard)
}

/// A loopback address nothing listens on for UDP (a port that was just
/// free).
fn closed_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind(any_port()).unwrap();
    socket.local_addr().unwrap()
}

#[test]
fn echo_round_trip() {
    let reactor = reactor();
    let (server, server_heard) = listen(&reactor, true);
    let (client, client_heard) = listen(&reactor, false);
    assert_eq!(server_heard.borrow().started, 1);

    assert_eq!(
        client.write_to(b"hello", server.local_addr()).unwrap(),
        Sent::Now
    );
    assert_eq!(
        client.write_to(b"", server.local_addr()).unwrap(),
        Sent::Now
    );
    wait(&reactor, "both echoes", || {
        client_heard.borrow().datagrams.len() == 2
    });
    assert_eq!(
        server_heard.borrow().datagrams,
        vec![
            (b"hello".to_vec(), client.local_addr()),
            (Vec::new(), client.local_addr())
        ]
    );
    assert_eq!(
        client_heard.borrow().datagrams,
        vec![
            (b"hello".to_vec(), server.local_addr()),
            (Vec::new(), server.local_addr())
        ],
        "datagram boundaries are kept, the empty one included"
    );
    assert_eq!(server.stats().received, 2);
    assert_eq!(server.stats().sent, 2);

    // A plain socket as the peer, too.
    let peer = UdpSocket::bind(any_port()).unwrap();
    peer.set_read_timeout(Some(common::BOUND)).unwrap();
    peer.send_to(b"from std", server.local_addr()).unwrap();
    wait(&reactor, "the server to echo", || server.stats().sent == 3);
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"from std"[..], server.local_addr()));
}

#[test]
fn connected_udp_to_a_closed_port_reports_connection_refused() {
    let reactor = reactor();
    let (client, heard) = listen(&reactor, false);
    let closed = closed_udp_port();
    client.connect(closed).unwrap();
    assert_eq!(client.connected_addr(), Some(closed));
    // The kernel answers the first datagram with "port unreachable"; the
    // refusal is found by the next read (an error event) or write.
    assert_eq!(client.write(b"anyone?").unwrap(), Sent::Now);
    wait(&reactor, "connection_refused", || {
        heard.borrow().refused >= 1
    });
    assert!(client.is_listening(), "a refusal does not stop the port");
    assert_eq!(heard.borrow().stopped, 0);

    // The port still works once something listens there.
    let (server, server_heard) = listen(&reactor, true);
    client.connect(server.local_addr()).unwrap();
    client.write(b"now?").unwrap();
    wait(&reactor, "the echo", || {
        !heard.borrow().datagrams.is_empty()
    });
    assert_eq!(heard.borrow().datagrams[0].0, b"now?");
    assert_eq!(server_heard.borrow().datagrams.len(), 1);
}

#[test]
fn an_unconnected_port_never_hears_of_refusals() {
    let reactor = reactor();
    let (client, heard) = listen(&reactor, false);
    let (witness, witness_heard) = listen(&reactor, false);
    client.write_to(b"lost", closed_udp_port()).unwrap();
    // A datagram to a live port after it: once it arrived, the ICMP
    // answer to the first had its chance to be reported.
    client.write_to(b"seen", witness.local_addr()).unwrap();
    wait(&reactor, "the witness datagram", || {
        witness_heard.borrow().datagrams.len() == 1
    });
    reactor
        .iterate(Some(std::time::Duration::ZERO))
        .expect("iterate");
    assert_eq!(heard.borrow().refused, 0);
    assert!(client.is_listening());
}

#[test]
fn multicast_on_loopback_reaches_two_listeners_on_one_port() {
    let reactor = reactor();
    let group = Ipv4Addr::new(239, 255, 71, 13);
    let options = UdpOptions::new().reuse_address(true);
    // Bound to the group address: only the group's datagrams arrive, and
    // nothing listens on another interface.
    let (first_protocol, first) = recorder(false);
    let a = reactor
        .listen_udp_with(
            SocketAddr::from((group, 0)),
            first_protocol,
            options.clone(),
        )
        .expect("first listener");
    let (second_protocol, second) = recorder(false);
    let b = reactor
        .listen_udp_with(a.local_addr(), second_protocol, options)
        .expect("second listener on the same port");
    assert_eq!(a.local_addr(), b.local_addr());
    for port in [&a, &b] {
        port.join_group(group, Ipv4Addr::LOCALHOST)
            .expect("join_group");
    }

    let (sender, _) = listen(&reactor, false);
    sender.set_multicast_interface(Ipv4Addr::LOCALHOST).unwrap();
    sender.set_multicast_loopback(true).unwrap();
    assert!(sender.multicast_loopback().unwrap());
    sender.set_multicast_ttl(1).unwrap();
    assert_eq!(sender.multicast_ttl().unwrap(), 1);
    let to = SocketAddr::from((group, a.local_addr().port()));
    assert_eq!(sender.write_to(b"to the group", to).unwrap(), Sent::Now);

    wait(&reactor, "the datagram at both listeners", || {
        first.borrow().datagrams.len() == 1 && second.borrow().datagrams.len() == 1
    });
    for heard in [&first, &second] {
        assert_eq!(
            heard.borrow().datagrams[0],
            (b"to the group".to_vec(), sender.local_addr())
        );
    }

    a.leave_group(group, Ipv4Addr::LOCALHOST)
        .expect("leave_group");
    assert!(
        a.leave_group(group, Ipv4Addr::LOCALHOST).is_err(),
        "left already"
    );
}

#[test]
fn an_oversized_datagram_is_reported_and_never_delivered_cut() {
    let reactor = reactor();
    let (protocol, heard) = recorder(false);
    let port = reactor
        .listen_udp_with(any_port(), protocol, UdpOptions::new().max_datagram(100))
        .expect("listen_udp_with");
    let client = UdpSocket::bind(any_port()).unwrap();
    client.send_to(&[1u8; 101], port.local_addr()).unwrap();
    client.send_to(&[2u8; 100], port.local_addr()).unwrap();
    client.send_to(&[3u8; 5000], port.local_addr()).unwrap();
    wait(&reactor, "three datagrams handled", || {
        let h = heard.borrow();
        h.datagrams.len() + h.truncated.len() == 3
    });
    let from = client.local_addr().unwrap();
    assert_eq!(heard.borrow().truncated, vec![(from, 100), (from, 100)]);
    assert_eq!(heard.borrow().datagrams, vec![(vec![2u8; 100], from)]);
    assert_eq!(port.stats().truncated, 2);
    assert_eq!(port.stats().received, 1);
}

#[test]
fn the_largest_ipv4_datagram_is_delivered_whole_by_default() {
    let reactor = reactor();
    let (port, heard) = listen(&reactor, false);
    let client = UdpSocket::bind(any_port()).unwrap();
    // 65,535 - 20 (IP header) - 8 (UDP header).
    let largest = vec![9u8; 65_507];
    assert!(largest.len() <= DEFAULT_MAX_DATAGRAM);
    client.send_to(&largest, port.local_addr()).unwrap();
    wait(&reactor, "the datagram", || {
        heard.borrow().datagrams.len() == 1
    });
    assert_eq!(heard.borrow().datagrams[0].0, largest);
    assert!(heard.borrow().truncated.is_empty());
}

#[test]
fn a_panic_in_datagram_received_costs_only_that_datagram() {
    let reactor = reactor();
    let (port, heard) = listen(&reactor, false);
    let client = UdpSocket::bind(any_port()).unwrap();
    client.send_to(b"before", port.local_addr()).unwrap();
    client.send_to(b"boom", port.local_addr()).unwrap();
    client.send_to(b"after", port.local_addr()).unwrap();
    wait(&reactor, "the datagram after the panic", || {
        heard.borrow().datagrams.len() == 2
    });
    let got: Vec<Vec<u8>> = heard
        .borrow()
        .datagrams
        .iter()
        .map(|d| d.0.clone())
        .collect();
    assert_eq!(got, vec![b"before".to_vec(), b"after".to_vec()]);
    assert!(port.is_listening());
    assert_eq!(heard.borrow().stopped, 0);
}

#[test]
fn stopping_from_inside_a_callback_calls_stop_protocol_once_from_the_loop() {
    let reactor = reactor();
    let (port, heard) = listen(&reactor, false);
    let client = UdpSocket::bind(any_port()).unwrap();
    client.send_to(b"stop", port.local_addr()).unwrap();
    client
        .send_to(b"never delivered", port.local_addr())
        .unwrap();
    wait(&reactor, "stop_protocol", || heard.borrow().stopped == 1);
    assert!(!port.is_listening());
    assert_eq!(heard.borrow().datagrams.len(), 1, "nothing after the stop");
    let err = port
        .write_to(b"x", client.local_addr().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    // Stopping again does nothing more, and its Deferred has fired.
    assert!(port.stop_listening().called());
    assert_eq!(heard.borrow().stopped, 1);
    // The port number is free again.
    UdpSocket::bind(port.local_addr()).expect("the port was closed");
}

#[test]
fn stop_listening_fires_its_deferred_after_stop_protocol() {
    let reactor = reactor();
    let (port, heard) = listen(&reactor, false);
    let done = port.stop_listening();
    assert!(!port.is_listening(), "the socket closes at once");
    assert_eq!(
        heard.borrow().stopped,
        0,
        "stop_protocol is not on this stack"
    );
    let seen_stopped = Rc::new(Cell::new(0));
    let seen = seen_stopped.clone();
    let h = heard.clone();
    let done = done.add_callback(move |()| {
        seen.set(h.borrow().stopped);
        Ok(())
    });
    wait(&reactor, "the Deferred", || done.called());
    assert_eq!(seen_stopped.get(), 1);
}

#[test]
fn write_errors_are_returned_not_hidden() {
    let reactor = reactor();
    let (port, _heard) = listen(&reactor, false);
    let (other, _) = listen(&reactor, false);

    let unconnected = port.write(b"to whom?").unwrap_err();
    assert_eq!(unconnected.kind(), io::ErrorKind::NotConnected);

    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    let family = port.write_to(b"x", v6).unwrap_err();
    assert_eq!(family.kind(), io::ErrorKind::InvalidInput);
    assert!(port.connect(v6).is_err());

    let too_long = port
        .write_to(&vec![0u8; 70_000], other.local_addr())
        .unwrap_err();
    assert!(
        too_long.to_string().to_lowercase().contains("too long"),
        "{too_long}"
    );

    port.connect(other.local_addr()).unwrap();
    let elsewhere = port.write_to(b"x", closed_udp_port()).unwrap_err();
    assert_eq!(elsewhere.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(port.write_to(b"x", other.local_addr()).unwrap(), Sent::Now);
    assert_eq!(port.write(b"y").unwrap(), Sent::Now);
}

#[test]
fn socket_options_read_back() {
    let reactor = reactor();
    let (port, _) = listen(&reactor, false);
    port.set_ttl(17).unwrap();
    assert_eq!(port.ttl().unwrap(), 17);
    port.set_broadcast(true).unwrap();
    assert!(port.broadcast().unwrap());
    port.set_multicast_loopback(false).unwrap();
    assert!(!port.multicast_loopback().unwrap());
    let v6_only = port
        .join_group_v6("ff02::1:3".parse().unwrap(), 0)
        .unwrap_err();
    assert_eq!(v6_only.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn an_address_in_use_is_an_error_that_names_it() {
    let reactor = reactor();
    let (port, _) = listen(&reactor, false);
    let (protocol, _) = recorder(false);
    let err = reactor
        .listen_udp(port.local_addr(), protocol)
        .expect_err("the address is taken");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains(&port.local_addr().to_string()),
        "{err}"
    );
}

#[test]
fn a_panic_in_start_protocol_fails_listen_udp() {
    struct Fails;
    impl DatagramProtocol for Fails {
        fn start_protocol(&mut self, _: UdpPort) {
            panic!("cannot start");
        }
        fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    }
    let reactor = reactor();
    let err = reactor.listen_udp(any_port(), Fails).unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");
}

#[test]
fn shutdown_stops_ports_and_calls_stop_protocol() {
    let reactor = reactor();
    let (port, heard) = listen(&reactor, false);
    let r = reactor.clone();
    reactor.call_soon(move || r.stop().unwrap());
    reactor.run().expect("run");
    assert!(!port.is_listening());
    assert_eq!(heard.borrow().stopped, 1);
}

#[test]
fn ipv6_echo_round_trip_and_hop_limits() {
    let v6_loopback: SocketAddr = "[::1]:0".parse().unwrap();
    if let Err(e) = UdpSocket::bind(v6_loopback) {
        // A kernel without IPv6 on loopback: nothing to test here.
        eprintln!("skipping: cannot bind [::1]: {e}");
        return;
    }
    let reactor = reactor();
    let (server_protocol, server_heard) = recorder(true);
    let server = reactor.listen_udp(v6_loopback, server_protocol).unwrap();
    let (client_protocol, client_heard) = recorder(false);
    let client = reactor.listen_udp(v6_loopback, client_protocol).unwrap();
    client.write_to(b"over six", server.local_addr()).unwrap();
    wait(&reactor, "the IPv6 echo", || {
        client_heard.borrow().datagrams.len() == 1
    });
    assert_eq!(
        client_heard.borrow().datagrams[0],
        (b"over six".to_vec(), server.local_addr())
    );
    assert_eq!(server_heard.borrow().datagrams.len(), 1);

    // The hop limits, and an IPv4 destination refused by family.
    client.set_ttl(9).unwrap();
    assert_eq!(client.ttl().unwrap(), 9);
    client.set_multicast_ttl(3).unwrap();
    assert_eq!(client.multicast_ttl().unwrap(), 3);
    let v4 = client
        .write_to(b"x", "127.0.0.1:9".parse().unwrap())
        .unwrap_err();
    assert_eq!(v4.kind(), io::ErrorKind::InvalidInput);
    let v4_only = client
        .join_group(Ipv4Addr::new(239, 255, 0, 1), Ipv4Addr::LOCALHOST)
        .unwrap_err();
    assert_eq!(v4_only.kind(), io::ErrorKind::InvalidInput);
}
