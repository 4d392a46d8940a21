//! A transport's write source (`Transport::set_write_source`): a layer
//! above gathers what it is given in a callback and writes it from the
//! source, which the loop runs just before the socket write, after the
//! `before_writes` hooks; a close runs it first.

mod common;

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use common::*;
use gyre_reactor::{factory_fn, Protocol, Transport};

/// What happened, in order: "hook" (a `before_writes` hook ran) and
/// "source N" (the source wrote a chunk of N pieces).
type Events = Rc<RefCell<Vec<String>>>;

/// On each input, gathers five pieces and asks for a flush; the source
/// writes them as one `[...]` chunk. With `close`, closes right after.
struct Gathering {
    gathered: Rc<RefCell<Vec<Vec<u8>>>>,
    events: Events,
    close: bool,
    transport: Option<Transport>,
}

impl Protocol for Gathering {
    fn connection_made(&mut self, transport: Transport) {
        let gathered = Rc::clone(&self.gathered);
        let events = Rc::clone(&self.events);
        let out = transport.clone();
        let supported = transport.set_write_source(Some(Rc::new(move || {
            let pieces = std::mem::take(&mut *gathered.borrow_mut());
            if pieces.is_empty() {
                return;
            }
            events.borrow_mut().push(format!("source {}", pieces.len()));
            out.write(b"[");
            for piece in &pieces {
                out.write(piece);
            }
            out.write(b"]");
        })));
        assert!(supported, "a TCP connection runs a write source");
        self.transport = Some(transport);
    }

    fn data_received(&mut self, _data: &[u8]) {
        let Some(t) = &self.transport else {
            return;
        };
        for i in 0..5 {
            self.gathered.borrow_mut().push(format!("{i}").into_bytes());
        }
        t.request_flush();
        if self.close {
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _reason: gyre_reactor::ConnectionLost) {
        // The source holds its transport: break the cycle.
        if let Some(t) = self.transport.take() {
            t.set_write_source(None);
        }
    }
}

fn serve(close: bool) -> (gyre_reactor::Reactor, gyre_reactor::ListeningPort, Events) {
    let reactor = reactor();
    let events: Events = Rc::default();
    {
        let events = Rc::clone(&events);
        reactor.before_writes(move || {
            let mut events = events.borrow_mut();
            if events.last().map(String::as_str) != Some("hook") {
                events.push("hook".into());
            }
        });
    }
    let for_factory = Rc::clone(&events);
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                Some(Gathering {
                    gathered: Rc::default(),
                    events: Rc::clone(&for_factory),
                    close,
                    transport: None,
                })
            }),
        )
        .unwrap();
    (reactor, port, events)
}

#[test]
fn what_a_callback_gathers_goes_out_as_one_chunk_after_the_hooks() {
    let (reactor, port, events) = serve(false);
    let addr = port.local_addr();
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        std::io::Write::write_all(&mut stream, b"a").unwrap();
        read_n(&mut stream, 7)
    });
    let got = client.wait(&reactor, "the chunk");
    assert_eq!(got, b"[01234]");
    let events = events.borrow();
    let source = events
        .iter()
        .position(|e| e == "source 5")
        .expect("the source wrote the five pieces as one chunk");
    assert!(
        source > 0 && events[source - 1] == "hook",
        "the before_writes hook runs before the source: {events:?}"
    );
}

#[test]
fn a_close_runs_the_source_first() {
    let (reactor, port, events) = serve(true);
    let addr = port.local_addr();
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        std::io::Write::write_all(&mut stream, b"a").unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    let got = client.wait(&reactor, "the chunk, then EOF");
    assert_eq!(got, b"[01234]");
    assert!(events.borrow().iter().any(|e| e == "source 5"));
}
