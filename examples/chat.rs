//! A chat room: `cargo run --example chat -- 127.0.0.1:7002`.
//!
//! Connect with `nc 127.0.0.1 7002`. Every user is named `guestN` in the
//! order they arrive; every line a user sends goes to every *other* user as
//! `guestN: line`, and arrivals and departures are announced with `* `.
//! Lines end with `\n` (a trailing `\r` is dropped) and are at most 1,024
//! bytes; a longer line closes that user's connection. A user who stops
//! reading is dropped once 1 MiB waits for them, so one slow reader cannot
//! make the server buffer without bound.
//!
//! The room lives in this file's [`listen`] so that the chat test
//! (`protocols/tests/chat_example.rs`) runs this very code in-process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use gyre_protocols::{LineContext, LineControl, LineHandler, LineReceiver};
use gyre_reactor::{factory_fn, ConnectionLost, ListeningPort, Reactor};

/// Longest line accepted.
pub const MAX_LINE: usize = 1024;
/// A user with more than this waiting to be sent is dropped.
pub const MAX_BACKLOG: usize = 1024 * 1024;

/// Who is in the room.
#[derive(Default)]
struct Room {
    next_id: u64,
    members: BTreeMap<u64, (String, LineControl)>,
}

impl Room {
    /// Sends `line` to everyone but `from`; drops readers that fell behind.
    fn broadcast(&self, from: u64, line: &[u8]) {
        for (&id, (name, control)) in &self.members {
            if id == from {
                continue;
            }
            control.send_line(line);
            if let Some(t) = control.transport() {
                if t.buffered_len() > MAX_BACKLOG {
                    log::warn!("{name} is not reading; dropping them");
                    t.abort_connection();
                }
            }
        }
    }
}

/// One user's connection.
struct ChatUser {
    room: Rc<RefCell<Room>>,
    id: u64,
    name: String,
}

impl LineHandler for ChatUser {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let mut room = self.room.borrow_mut();
        room.next_id += 1;
        self.id = room.next_id;
        self.name = format!("guest{}", self.id);
        let others = room.members.len();
        room.members
            .insert(self.id, (self.name.clone(), ctx.control()));
        ctx.send_line(format!("* welcome, {}; {others} others here", self.name).as_bytes());
        room.broadcast(self.id, format!("* {} joined", self.name).as_bytes());
    }

    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        let mut message = Vec::with_capacity(self.name.len() + 2 + line.len());
        message.extend_from_slice(self.name.as_bytes());
        message.extend_from_slice(b": ");
        message.extend_from_slice(line);
        self.room.borrow().broadcast(self.id, &message);
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, _data: &[u8]) {
        ctx.send_line(format!("* lines are limited to {MAX_LINE} bytes; bye").as_bytes());
        ctx.lose_connection();
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        let mut room = self.room.borrow_mut();
        if room.members.remove(&self.id).is_some() {
            log::info!("{} left: {reason}", self.name);
            room.broadcast(self.id, format!("* {} left", self.name).as_bytes());
        }
    }
}

/// Starts a chat room on `addr` (port 0 picks one).
pub fn listen(reactor: &Reactor, addr: SocketAddr) -> io::Result<ListeningPort> {
    let room = Rc::new(RefCell::new(Room::default()));
    reactor.listen_tcp(
        addr,
        factory_fn(move |_peer| {
            let user = ChatUser {
                room: room.clone(),
                id: 0,
                name: String::new(),
            };
            Some(
                LineReceiver::new(user)
                    .with_delimiter(b"\n")
                    .with_max_length(MAX_LINE),
            )
        }),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".to_string())
        .parse()
        .map_err(|e| format!("usage: chat [ADDRESS:PORT] ({e})"))?;
    let reactor = Reactor::new()?;
    let port = listen(&reactor, addr)?;
    println!("chat listening on {}", port.local_addr());
    reactor.run()?;
    println!("chat stopped");
    Ok(())
}
