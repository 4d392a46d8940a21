//! The HTTP server tests' helpers: a raw-bytes client on the reactor
//! (writes what it is told, records what it gets and when the connection
//! closes), a manual-clock reactor, and a parser of the answers a
//! connection received.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use gyre_protocols::http::{Event, ResponseParser};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};

use crate::run::wait;

/// What a raw client saw.
#[derive(Default)]
pub struct Seen {
    pub data: RefCell<Vec<u8>>,
    pub eof: Cell<bool>,
    pub closed: Cell<bool>,
}

/// A raw-bytes client connection.
pub struct Raw {
    pub transport: Transport,
    pub seen: Rc<Seen>,
}

struct Recorder(Rc<Seen>);

impl Protocol for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }

    fn eof_received(&mut self) -> bool {
        self.0.eof.set(true);
        false
    }

    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.closed.set(true);
    }
}

impl Raw {
    /// Connects to `addr`.
    pub fn connect(reactor: &Reactor, addr: SocketAddr) -> Raw {
        let seen = Rc::new(Seen::default());
        let d = reactor.connect_protocol(addr, Recorder(Rc::clone(&seen)));
        wait(reactor, "the connection", || d.called());
        let transport = d.take_result().expect("fired").expect("connected");
        Raw { transport, seen }
    }

    /// Writes `bytes`.
    pub fn send(&self, bytes: impl AsRef<[u8]>) {
        self.transport.write(bytes.as_ref());
    }

    /// What arrived, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.data.borrow()).into_owned()
    }

    /// Waits until `n` answers (to requests, `HEAD` ones flagged in
    /// `heads`) have arrived whole, and returns them.
    pub fn wait_answers(&self, reactor: &Reactor, heads: &[bool]) -> Vec<Answer> {
        wait(reactor, "the answers", || {
            parse_answers(&self.seen.data.borrow(), heads).len() == heads.len()
        });
        parse_answers(&self.seen.data.borrow(), heads)
    }

    /// Waits until the server has closed the connection.
    pub fn wait_closed(&self, reactor: &Reactor) {
        let seen = Rc::clone(&self.seen);
        wait(reactor, "the server to close", move || seen.closed.get());
    }
}

/// One answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    pub interim: Vec<u16>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// The complete answers at the start of `bytes` (at most `heads.len()`;
/// `heads[i]`: the i-th request was `HEAD`).
pub fn parse_answers(bytes: &[u8], heads: &[bool]) -> Vec<Answer> {
    let mut input = bytes;
    let mut answers = Vec::new();
    for &head in heads {
        let mut parser = ResponseParser::new();
        parser.set_head_request(head);
        let mut answer = Answer {
            status: 0,
            headers: vec![],
            body: vec![],
            trailers: vec![],
            interim: vec![],
        };
        loop {
            match parser.parse(&mut input) {
                Ok(Some(Event::Informational(h))) => answer.interim.push(h.status),
                Ok(Some(Event::Head(h))) => {
                    answer.status = h.status;
                    answer.headers = h.headers;
                }
                Ok(Some(Event::Data(d))) => answer.body.extend_from_slice(d),
                Ok(Some(Event::Trailers(t))) => answer.trailers = t,
                Ok(Some(Event::End)) => break,
                Ok(None) | Err(_) => return answers,
            }
        }
        answers.push(answer);
    }
    answers
}

/// A reactor on a manual clock.
pub fn manual_reactor() -> (Reactor, ManualClock) {
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(manual.clock())
        .build()
        .expect("reactor");
    (reactor, manual)
}
