//! A byte echo server: `cargo run --example echo -- 127.0.0.1:7000`.
//!
//! Logs through env_logger (`RUST_LOG=info` is the default here) and stops
//! cleanly on Ctrl-C: shutdown triggers run, connections are closed, and the
//! process exits 0. A second Ctrl-C exits at once.

use std::net::SocketAddr;

use gyre::reactor::{factory_fn, Phase, Protocol, Reactor, SystemEvent, Transport};

/// Writes back every byte it receives.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        log::info!("connection from {:?}", transport.peer_addr());
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
        }
    }

    fn connection_lost(&mut self, reason: gyre::reactor::ConnectionLost) {
        if let Some(t) = &self.transport {
            log::info!("connection from {:?} closed: {reason}", t.peer_addr());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string())
        .parse()
        .map_err(|e| format!("usage: echo [ADDRESS:PORT] ({e})"))?;
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp(addr, factory_fn(|_peer| Some(Echo::default())))?;
    // Scripts read this line to learn the port when 0 was asked, and may
    // send SIGINT at once: print it once `run` has installed the handlers.
    let bound = port.local_addr();
    reactor.call_when_running(move |_| println!("echo listening on {bound}"));
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, |_| {
        log::info!("shutting down");
        None
    });
    reactor.run()?;
    println!("echo stopped");
    Ok(())
}
