//! `LineControl::lose_connection` over a real loopback connection: the
//! answers a handler wrote are flushed before the close, and the peer then
//! reads the end of stream.

#[allow(dead_code)]
#[path = "common/run.rs"]
mod run;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;

use gyre_protocols::line::{LineContext, LineControl, LineHandler, LineReceiver};
use gyre_reactor::factory_fn;
use run::{any_port, reactor, wait, BOUND};

/// Answers every line with `ok <line>`; counts them.
struct Answer {
    answered: Rc<RefCell<usize>>,
}

impl LineHandler for Answer {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(&[b"ok ".as_slice(), line].concat());
        *self.answered.borrow_mut() += 1;
    }
}

#[test]
fn lose_connection_from_outside_flushes_the_answers_first() {
    let reactor = reactor();
    let answered = Rc::new(RefCell::new(0));
    let control: Rc<RefCell<Option<LineControl>>> = Rc::default();
    let (a, c) = (Rc::clone(&answered), Rc::clone(&control));
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                let receiver = LineReceiver::new(Answer {
                    answered: Rc::clone(&a),
                });
                *c.borrow_mut() = Some(receiver.control());
                Some(receiver)
            }),
        )
        .expect("listen");

    let mut client = TcpStream::connect(port.local_addr()).expect("connect");
    client.set_read_timeout(Some(BOUND)).expect("timeout");
    client.write_all(b"one\r\ntwo\r\n").expect("write");
    wait(&reactor, "both lines answered", || *answered.borrow() == 2);

    // From outside any hook (here, the test; a timer or another connection
    // in a program).
    control
        .borrow()
        .as_ref()
        .expect("a connection")
        .lose_connection();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        client.read_to_end(&mut all).map(|_| all)
    });
    wait(&reactor, "the connection to close", || {
        control.borrow().as_ref().is_some_and(|c| !c.is_connected())
    });
    // Run the loop until the reader has its end of stream and hangs up.
    wait(&reactor, "the reader", || reader.is_finished());
    let all = reader.join().expect("reader").expect("read to EOF");
    assert_eq!(all, b"ok one\r\nok two\r\n");
}
