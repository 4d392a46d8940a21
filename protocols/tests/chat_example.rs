//! The chat example (`examples/chat.rs`, compiled in as a module) over real
//! loopback sockets: three users each see the others' lines and not their
//! own. The room runs on a reactor in its own thread; the users are
//! blocking std sockets with generous read time-outs.

#[allow(dead_code)]
#[path = "../../examples/chat.rs"]
mod chat;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use gyre_reactor::Reactor;

/// Upper bound on any single wait; the test normally takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

struct User {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl User {
    fn connect(addr: SocketAddr) -> User {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        User { reader, writer }
    }

    fn say(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
    }

    fn hear(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read a line in time");
        assert!(n > 0, "server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }
}

/// Runs the chat room until `stop` is set (or the patience runs out).
fn serve(stop: Arc<AtomicBool>, tx: mpsc::Sender<SocketAddr>) {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("reactor");
    let addr = "127.0.0.1:0".parse().expect("address");
    let port = chat::listen(&reactor, addr).expect("listen");
    tx.send(port.local_addr()).expect("report the port");
    let deadline = Instant::now() + 3 * PATIENCE;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        reactor
            .iterate(Some(Duration::from_millis(50)))
            .expect("iterate");
    }
}

#[test]
fn three_users_see_each_other_and_not_themselves() {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = {
        let stop = stop.clone();
        thread::spawn(move || serve(stop, tx))
    };
    let addr = rx.recv_timeout(PATIENCE).expect("server started");

    // Join one at a time: each welcome proves the room registered the user.
    let mut users: Vec<User> = Vec::new();
    for i in 1..=3 {
        let mut user = User::connect(addr);
        assert_eq!(
            user.hear(),
            format!("* welcome, guest{i}; {} others here", i - 1)
        );
        for (j, earlier) in users.iter_mut().enumerate() {
            assert_eq!(
                earlier.hear(),
                format!("* guest{i} joined"),
                "guest{}",
                j + 1
            );
        }
        users.push(user);
    }

    // Each speaks in turn; the others hear it before the next one speaks,
    // so an echo of a user's own line would show up before the next line.
    for speaker in 0..3 {
        users[speaker].say(&format!("hello from {}", speaker + 1));
        for (listener, user) in users.iter_mut().enumerate() {
            if listener != speaker {
                assert_eq!(
                    user.hear(),
                    format!("guest{}: hello from {}", speaker + 1, speaker + 1)
                );
            }
        }
    }
    // guest3 spoke last: one more line from guest1 is the next thing guest3
    // hears (not an echo of its own), and guest1's next line is guest3's
    // departure (not an echo of this one).
    users[0].say("last word");
    assert_eq!(users[1].hear(), "guest1: last word");
    assert_eq!(users[2].hear(), "guest1: last word");
    let third = users.pop().expect("three users");
    drop(third);
    assert_eq!(users[0].hear(), "* guest3 left");
    assert_eq!(users[1].hear(), "* guest3 left");

    stop.store(true, Ordering::SeqCst);
    server.join().expect("server thread");
}
