//! An echo server and client over a Unix-domain socket (after Twisted's
//! echo server howto, with `listenUNIX` and `connectUNIX` in place of TCP):
//!
//! ```text
//! cargo run --example unix_echo -- server /tmp/echo.sock [MODE]
//! cargo run --example unix_echo -- client /tmp/echo.sock hello there
//! ```
//!
//! The server echoes every byte back and logs who connected (the peer's
//! pid, uid and gid, which the kernel vouches for). `MODE` (octal, say
//! `600`) sets the socket file's permissions; a stale socket file left by
//! a server that died is replaced, a live server's path is refused. Ctrl-C
//! stops it cleanly and removes the socket file.
//!
//! The client sends its arguments as one line, half-closes, prints what
//! comes back (`echoed: ...`) and exits when the server closes; it exits 1
//! if it cannot connect. A path starting with `@` names a socket in Linux's
//! abstract namespace (no file): `server @echo`, `client @echo hi`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use gyre::reactor::{
    factory_fn, ClientFactory, ConnectionLost, Connector, Factory, Protocol, Reactor, Transport,
    UnixListenOptions,
};

/// Writes back every byte it receives.
#[derive(Default)]
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        // A Unix client seldom binds an address: who it is comes from its
        // credentials.
        match transport.peer_credentials() {
            Ok(peer) => log::info!(
                "connection from pid {} (uid {}, gid {})",
                peer.pid,
                peer.uid,
                peer.gid
            ),
            Err(e) => log::info!("connection (no peer credentials: {e})"),
        }
        self.0 = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

/// Sends one message, half-closes, and keeps the answer.
struct Client {
    message: Vec<u8>,
    answer: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.message);
        // Our EOF tells the server we are done; it closes after echoing.
        transport.half_close();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.answer.borrow_mut().extend_from_slice(data);
    }
}

/// Builds the one [`Client`], and stops the reactor when the connection
/// ends or cannot be made.
struct ClientStarter {
    client: Option<Client>,
    failure: Rc<RefCell<Option<io::Error>>>,
}

impl Factory for ClientStarter {
    type Protocol = Client;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Client> {
        self.client.take()
    }
}

impl ClientFactory for ClientStarter {
    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        *self.failure.borrow_mut() = Some(io::Error::new(reason.kind(), reason.to_string()));
        if let Some(reactor) = connector.reactor() {
            let _ = reactor.stop();
        }
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        if !reason.is_clean() {
            log::warn!("the connection ended badly: {reason}");
        }
        if let Some(reactor) = connector.reactor() {
            let _ = reactor.stop();
        }
    }
}

/// `@name` is an abstract name (`\0name`); anything else a path.
fn socket_path(arg: &str) -> PathBuf {
    match arg.strip_prefix('@') {
        Some(name) => PathBuf::from(format!("\0{name}")),
        None => PathBuf::from(arg),
    }
}

fn server(path: PathBuf, mode: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut options = UnixListenOptions::new();
    if let Some(mode) = mode {
        let mode = u32::from_str_radix(mode, 8).map_err(|e| format!("MODE {mode:?}: {e}"))?;
        options = options.mode(mode);
    }
    let reactor = Reactor::new()?;
    let port = reactor.listen_unix_with(&path, factory_fn(|_| Some(Echo::default())), options)?;
    // Scripts read this line to know the server is up.
    let bound = port.local_address();
    reactor.call_when_running(move |_| println!("unix echo listening on {bound}"));
    reactor.run()?;
    println!("unix echo stopped");
    Ok(())
}

fn client(path: PathBuf, words: &[String]) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut message = words.join(" ").into_bytes();
    message.push(b'\n');
    let answer = Rc::new(RefCell::new(Vec::new()));
    let failure = Rc::new(RefCell::new(None));
    let reactor = Reactor::new()?;
    let starter = ClientStarter {
        client: Some(Client {
            message,
            answer: answer.clone(),
        }),
        failure: failure.clone(),
    };
    reactor.connect_unix(&path, starter, Duration::from_secs(10));
    reactor.run()?;
    if let Some(e) = failure.borrow_mut().take() {
        eprintln!("unix echo client: {e}");
        return Ok(ExitCode::FAILURE);
    }
    print!("echoed: {}", String::from_utf8_lossy(&answer.borrow()));
    Ok(ExitCode::SUCCESS)
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: unix_echo server PATH [MODE] | unix_echo client PATH WORDS...";
    match args.as_slice() {
        [role, path] if role == "server" => {
            server(socket_path(path), None).map(|()| ExitCode::SUCCESS)
        }
        [role, path, mode] if role == "server" => {
            server(socket_path(path), Some(mode)).map(|()| ExitCode::SUCCESS)
        }
        [role, path, words @ ..] if role == "client" && !words.is_empty() => {
            client(socket_path(path), words)
        }
        _ => Err(usage.into()),
    }
}
