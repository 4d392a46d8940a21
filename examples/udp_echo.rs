//! A UDP echo server (Twisted's UDP echo howto):
//! `cargo run --example udp_echo -- 127.0.0.1:9999`, then
//! `echo hello | nc -u -w1 127.0.0.1 9999`.
//!
//! Every datagram is sent back, whole, to where it came from. Logs through
//! env_logger (`RUST_LOG=info` is the default here) and stops cleanly on
//! Ctrl-C (the port's `stop_protocol` runs during the shutdown).

use std::net::SocketAddr;

use gyre::reactor::{DatagramProtocol, Reactor, UdpPort};

/// Writes back every datagram it receives.
#[derive(Default)]
struct Echo {
    port: Option<UdpPort>,
    echoed: u64,
}

impl DatagramProtocol for Echo {
    fn start_protocol(&mut self, port: UdpPort) {
        self.port = Some(port);
    }

    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        log::info!("received {} bytes from {from}", data.len());
        if let Some(port) = &self.port {
            // Never blocks: a datagram the kernel cannot take now is queued
            // (bounded) or dropped and counted; errors concern this datagram.
            match port.write_to(data, from) {
                Ok(_) => self.echoed += 1,
                Err(e) => log::warn!("cannot echo to {from}: {e}"),
            }
        }
    }

    fn stop_protocol(&mut self) {
        log::info!("echoed {} datagram(s)", self.echoed);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".to_string())
        .parse()
        .map_err(|e| format!("usage: udp_echo [ADDRESS:PORT] ({e})"))?;
    let reactor = Reactor::new()?;
    let port = reactor.listen_udp(addr, Echo::default())?;
    // Scripts read this line to learn the port when 0 was asked.
    let bound = port.local_addr();
    reactor.call_when_running(move |_| println!("udp echo listening on {bound}"));
    reactor.run()?;
    println!("udp echo stopped");
    Ok(())
}
