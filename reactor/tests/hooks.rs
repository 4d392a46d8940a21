//! The `before_writes` hook (the reactor's end-of-iteration hook): it runs
//! before bytes written in the same iteration reach a socket, so a log
//! flushed from it is never behind what a peer has received.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gyre_reactor::{factory_fn, Protocol, Transport};

/// A line server that "logs" every answer into a pending buffer before
/// writing it; the hook moves pending entries to the durable log.
struct Logged {
    transport: Option<Transport>,
    pending: Rc<RefCell<Vec<String>>>,
    partial: Vec<u8>,
}

impl Protocol for Logged {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            self.pending.borrow_mut().push(format!("sent {text}"));
            if let Some(t) = &self.transport {
                t.write(&line);
            }
        }
    }
}

/// Every answer a client receives is already in the durable log when it
/// arrives: 2,000 pipelined lines in bursts, each answer checked by the
/// client thread against the log the hook made durable.
#[test]
fn a_hook_runs_before_the_writes_of_its_iteration_reach_the_peer() {
    let reactor = reactor();
    let pending = Rc::new(RefCell::new(Vec::new()));
    let durable: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let hook_runs = Rc::new(Cell::new(0u64));
    {
        let pending = Rc::clone(&pending);
        let durable = Arc::clone(&durable);
        let hook_runs = Rc::clone(&hook_runs);
        reactor.before_writes(move || {
            hook_runs.set(hook_runs.get() + 1);
            let entries = std::mem::take(&mut *pending.borrow_mut());
            durable.lock().unwrap().extend(entries);
        });
    }
    let for_factory = Rc::clone(&pending);
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                Some(Logged {
                    transport: None,
                    pending: Rc::clone(&for_factory),
                    partial: Vec::new(),
                })
            }),
        )
        .unwrap();
    let addr = port.local_addr();
    let seen_by_client = Arc::clone(&durable);
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut missing = Vec::new();
        for burst in 0..100 {
            let mut out = Vec::new();
            for i in 0..20 {
                writeln!(out, "line {burst}-{i}").unwrap();
            }
            stream.write_all(&out).unwrap();
            for i in 0..20 {
                let mut answer = String::new();
                reader.read_line(&mut answer).unwrap();
                assert_eq!(answer, format!("line {burst}-{i}\n"));
                let entry = format!("sent line {burst}-{i}");
                if !seen_by_client.lock().unwrap().contains(&entry) {
                    missing.push(entry);
                }
            }
        }
        missing
    });
    let missing = client.wait(&reactor, "2,000 answers");
    assert!(
        missing.is_empty(),
        "answers received before their log entry was durable: {missing:?}"
    );
    assert_eq!(durable.lock().unwrap().len(), 2000);
    // Fewer hook runs than answers would show batching, but that depends
    // on the schedule; that it ran at all is what this test can assert.
    assert!(hook_runs.get() > 0);
}

/// A hook runs once at the end of an iteration that wrote nothing, and a
/// removed hook runs no more.
#[test]
fn a_hook_runs_every_iteration_until_removed() {
    let reactor = reactor();
    let runs = Rc::new(Cell::new(0u32));
    let counted = Rc::clone(&runs);
    let id = reactor.before_writes(move || counted.set(counted.get() + 1));
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(runs.get(), 2);
    assert!(reactor.remove_before_writes(id));
    assert!(!reactor.remove_before_writes(id));
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(runs.get(), 2);
}

/// A panicking hook costs only that call: the loop goes on, and so do the
/// other hooks.
#[test]
fn a_panicking_hook_costs_only_its_call() {
    let reactor = reactor();
    let runs = Rc::new(Cell::new(0u32));
    reactor.before_writes(|| panic!("hook bug"));
    let counted = Rc::clone(&runs);
    reactor.before_writes(move || counted.set(counted.get() + 1));
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(runs.get(), 2);
}
