//! Pausing and resuming a listening port over real loopback sockets.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::{any_port, reactor, std_connect, wait};
use gyre_reactor::{factory_fn, Protocol};

struct Nothing;
impl Protocol for Nothing {
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn a_paused_port_accepts_nothing_and_costs_no_iterations_then_resume_drains_the_backlog() {
    let reactor = reactor();
    let built = Rc::new(Cell::new(0usize));
    let b = Rc::clone(&built);
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                b.set(b.get() + 1);
                Some(Nothing)
            }),
        )
        .unwrap();
    let addr = port.local_addr();
    port.pause_accepting();
    assert!(port.is_paused());
    // Connects complete in the kernel's backlog.
    let clients: Vec<_> = (0..50).map(|_| std_connect(addr)).collect();
    // The loop gets no event for the paused port: each iteration waits for
    // its whole time bound instead of spinning on the listener.
    let before = reactor.stats();
    for _ in 0..3 {
        reactor
            .iterate(Some(std::time::Duration::from_millis(20)))
            .unwrap();
    }
    let after = reactor.stats();
    assert_eq!(after.iterations - before.iterations, 3);
    assert_eq!(after.accepted, 0);
    assert_eq!(built.get(), 0);

    // Edge-triggered: resuming must accept what waited, with no new edge.
    port.resume_accepting();
    assert!(!port.is_paused());
    wait(&reactor, "the 50 waiting connections", || built.get() == 50);
    assert_eq!(reactor.stats().accepted, 50);
    drop(clients);
}

#[test]
fn a_factory_may_pause_its_own_port_while_accepting() {
    let reactor = reactor();
    let built = Rc::new(Cell::new(0usize));
    let slot: Rc<std::cell::RefCell<Option<gyre_reactor::ListeningPort>>> = Rc::default();
    let (b, s) = (Rc::clone(&built), Rc::clone(&slot));
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                b.set(b.get() + 1);
                if b.get() == 5 {
                    if let Some(port) = s.borrow().as_ref() {
                        port.pause_accepting();
                    }
                }
                Some(Nothing)
            }),
        )
        .unwrap();
    *slot.borrow_mut() = Some(port.clone());
    let addr = port.local_addr();
    let clients: Vec<_> = (0..20).map(|_| std_connect(addr)).collect();
    wait(&reactor, "five connections", || built.get() == 5);
    for _ in 0..3 {
        reactor
            .iterate(Some(std::time::Duration::from_millis(10)))
            .unwrap();
    }
    assert_eq!(built.get(), 5, "accepting went on after the pause");
    port.resume_accepting();
    wait(&reactor, "the other 15", || built.get() == 20);
    drop(clients);
}
