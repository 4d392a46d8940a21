//! A line echo server: `cargo run --example line_echo -- 127.0.0.1:7001`.
//!
//! Every `\n`-terminated line is written back (a trailing `\r` from telnet
//! is kept, so it echoes as it came). A line longer than 4,096 bytes closes
//! the connection. Try it with `nc 127.0.0.1 7001`. Ctrl-C stops it cleanly.

use std::net::SocketAddr;

use gyre_protocols::{LineContext, LineHandler, LineReceiver};
use gyre_reactor::{factory_fn, ConnectionLost, Reactor};

/// Echoes each line.
struct EchoLines;

impl LineHandler for EchoLines {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        log::info!("connection from {:?}", ctx.transport().peer_addr());
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        log::warn!(
            "{:?} sent a line over 4096 bytes ({} buffered); closing",
            ctx.transport().peer_addr(),
            data.len()
        );
        ctx.lose_connection();
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        log::info!("connection closed: {reason}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string())
        .parse()
        .map_err(|e| format!("usage: line_echo [ADDRESS:PORT] ({e})"))?;
    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp(
        addr,
        factory_fn(|_peer| {
            Some(
                LineReceiver::new(EchoLines)
                    .with_delimiter(b"\n")
                    .with_max_length(4096),
            )
        }),
    )?;
    // Scripts read this line to learn the port when 0 was asked.
    println!("line_echo listening on {}", port.local_addr());
    reactor.run()?;
    println!("line_echo stopped");
    Ok(())
}
