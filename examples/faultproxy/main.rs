//! faultproxy: a fault-injecting TCP relay built on gyre, in the manner of
//! Toxiproxy.
//!
//! ```text
//! cargo run --example faultproxy -- --listen 127.0.0.1:0 \
//!     --upstream 127.0.0.1:7000 --control 127.0.0.1:0 --seed 42 \
//!     --toxic 'lag downstream latency ms=50 jitter=10'
//! ```
//!
//! It prints `faultproxy: listening on ADDR` and, with `--control`,
//! `faultproxy: control on ADDR` (scripts read these to learn the ports),
//! then forwards every accepted connection to the upstream address, both
//! ways, with backpressure both ways: a slow reader on one side pauses
//! reading on the other, so a connection's memory stays bounded (see
//! `relay.rs`). Ctrl-C stops it; it prints `faultproxy stopped`.
//!
//! # Toxics
//!
//! Each toxic has a unique name and acts on one direction: `upstream`
//! (client to server) or `downstream` (server to client). Toxics on one
//! direction apply in the order they were added. Randomness comes from one
//! generator seeded with `--seed`.
//!
//! | kind | parameters | effect |
//! |------|------------|--------|
//! | `latency` | `ms=` `jitter=` (ms, default 0) | each chunk is delayed by ms ± jitter; order is kept |
//! | `bandwidth` | `rate=` (bytes/s) | at most `rate` bytes per second pass |
//! | `slicer` | `size=` `variation=` (bytes) `delay_us=` | chunks are cut into segments of size ± variation, delay_us apart |
//! | `reset_after` | `bytes=` | once that many bytes came this way, both sides are aborted |
//! | `reset_chance` | `p=` (0 to 1) | each new connection is aborted at once with probability p |
//! | `blackhole` | | data is accepted and discarded; the connection stays open |
//! | `timeout` | `ms=` | each connection is closed cleanly ms after it opens |
//!
//! Stream toxics (the first five but `reset_chance`) act on open
//! connections too, from the next chunk; `reset_chance` and `timeout` are
//! drawn when a connection opens.
//!
//! # The control protocol
//!
//! One command per line (`\n`, a `\r` before it is ignored), at most 1,024
//! bytes; each is answered with one line, `OK ...` or `ERR <reason>`. A bad
//! command changes nothing; a longer line is answered `ERR` and the
//! connection is closed. Commands:
//!
//! - `toxic add NAME DIRECTION KIND [key=value...]`
//! - `toxic remove NAME`, `toxic list`, `toxic clear`
//! - `cut`: a partition: open connections are aborted and new ones are
//!   closed as soon as they are accepted, until `heal`
//! - `heal`, `status`, `help`, `quit`
//!
//! A session (`nc 127.0.0.1 PORT`; `>` is what we typed):
//!
//! ```text
//! > toxic add lag downstream latency ms=100 jitter=10
//! OK added lag downstream latency ms=100 jitter=10
//! > toxic add choke upstream bandwidth rate=32768
//! OK added choke upstream bandwidth rate=32768
//! > toxic list
//! OK 2 toxics: lag downstream latency ms=100 jitter=10; choke upstream bandwidth rate=32768
//! > toxic add lag upstream blackhole
//! ERR a toxic named lag exists
//! > toxic add x sideways blackhole
//! ERR unknown direction "sideways" (upstream or downstream)
//! > cut
//! OK cut, aborted 3 connections
//! > status
//! OK link=cut upstream=127.0.0.1:7000 connections=0 accepted=3 refused=1 reset=3 bytes_up=120 bytes_down=96 discarded=0 toxics=2 seed=42
//! > heal
//! OK healed
//! > toxic remove choke
//! OK removed choke upstream bandwidth rate=32768
//! > frobnicate
//! ERR unknown command "frobnicate" (try help)
//! > quit
//! OK bye
//! ```
//!
//! # Layout
//!
//! - `config.rs`: the command line;
//! - `toxic.rs`: [`toxic::Toxic`], its parameters, and the per-direction
//!   pipeline [`toxic::Pipe`] (plain data, unit-tested without sockets);
//! - `relay.rs`: one relayed connection, its two protocols and its flow
//!   control;
//! - `proxy.rs`: what all connections share (toxics, link state, counters);
//! - `control.rs`: the control protocol on gyre's `LineReceiver`.

mod config;
mod control;
mod proxy;
mod relay;
mod toxic;

use std::rc::Rc;

use gyre::reactor::{factory_fn, Reactor};

use crate::config::Config;
use crate::control::Control;
use crate::proxy::{Proxy, Settings};
use crate::relay::ClientSide;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let config = Config::parse(std::env::args().skip(1))?;
    let reactor = Reactor::new()?;
    let proxy = Proxy::new(
        reactor.clone(),
        Settings {
            upstream: config.upstream,
            connect_timeout: config.connect_timeout,
            max_connections: config.max_connections,
            seed: config.seed,
        },
    );
    for toxic in config.toxics {
        proxy.add_toxic(toxic)?;
    }
    let relays = Rc::clone(&proxy);
    let port = reactor.listen_tcp(
        config.listen,
        factory_fn(move |peer| ClientSide::accept(&relays, peer)),
    )?;
    let control = match config.control {
        Some(addr) => {
            let controls = Rc::clone(&proxy);
            Some(reactor.listen_tcp(addr, factory_fn(move |_peer| Control::accept(&controls)))?)
        }
        None => None,
    };
    // Print once `run` has installed the signal handlers, so a script may
    // send SIGINT as soon as it has read the lines.
    let listening = port.local_addr();
    let control_addr = control.as_ref().map(|c| c.local_addr());
    let seed = config.seed;
    reactor.call_when_running(move |_| {
        println!("faultproxy: listening on {listening}");
        if let Some(addr) = control_addr {
            println!("faultproxy: control on {addr}");
        }
        log::info!("seed {seed}");
    });
    reactor.run()?;
    println!("faultproxy stopped");
    Ok(())
}
