//! Resident memory of idle proxied connections that once carried a burst.
//!
//! ```text
//! cargo run --release --example idle_memory [-- CONNECTIONS MIB_EACH]
//! ```
//!
//! One process, one reactor, three parties on loopback: C senders (default
//! 100) each push M MiB (default 4) through a gyre proxy to a sink that
//! discards. Senders write only while their own buffer is under the
//! high-water mark (as a producer), and the proxy's reading side is the
//! producer of its writing side, so every buffer is bounded during the
//! burst. Once every byte has reached the sink, the connections stay open
//! and idle, and the program prints the process's resident memory (VmRSS
//! from /proc/self/status) beside the baseline taken before the first
//! connection, with the write-buffer capacity the proxy still holds.
//!
//! The last line is a summary for scripts:
//! `RESULT connections=100 mib_each=4 baseline_rss_kb=... idle_rss_kb=... proxy_buffer_capacity_bytes=...`

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use gyre::reactor::{
    factory_fn, ClientFactory, Factory, Producer, Protocol, Reactor, Transport, DEFAULT_HIGH_WATER,
};

/// The chunk a sender writes at a time.
const CHUNK: usize = 64 * 1024;
/// How long the whole burst may take before the program gives up.
const BOUND: Duration = Duration::from_secs(300);

/// Bytes that reached the sink, over all connections.
type Counter = Rc<Cell<usize>>;

/// Discards what it reads, counting it.
struct Sink(Counter);

impl Protocol for Sink {
    fn data_received(&mut self, data: &[u8]) {
        self.0.set(self.0.get() + data.len());
    }
}

/// Writes `total` bytes, a chunk at a time, while its buffer is under the
/// high-water mark; goes on from the loop until its transport pauses it
/// (and again when it resumes it).
struct Sender {
    reactor: Reactor,
    me: Weak<Sender>,
    transport: RefCell<Option<Transport>>,
    sent: Cell<usize>,
    total: usize,
    paused: Cell<bool>,
}

impl Sender {
    fn pump(&self) {
        let Some(t) = self.transport.borrow().clone() else {
            return;
        };
        let chunk = [0x5a_u8; CHUNK];
        while !self.paused.get()
            && self.sent.get() < self.total
            && t.buffered_len() <= DEFAULT_HIGH_WATER
        {
            let n = CHUNK.min(self.total - self.sent.get());
            t.write(&chunk[..n]);
            self.sent.set(self.sent.get() + n);
        }
        if !self.paused.get() && self.sent.get() < self.total {
            // The flush after this callback may pause us; if the kernel
            // took everything instead, write more on the next iteration.
            let me = self.me.clone();
            self.reactor.call_soon(move || {
                if let Some(me) = me.upgrade() {
                    me.pump();
                }
            });
        }
    }
}

impl Producer for Sender {
    fn pause_producing(&self) {
        self.paused.set(true);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.pump();
    }
}

/// The sender's protocol: registers the sender as its producer.
struct SenderProtocol(Rc<Sender>);

impl Protocol for SenderProtocol {
    fn connection_made(&mut self, transport: Transport) {
        *self.0.transport.borrow_mut() = Some(transport.clone());
        transport.register_producer(Rc::clone(&self.0) as Rc<dyn Producer>);
        self.0.pump();
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// Builds one sender per connection.
struct SenderFactory {
    reactor: Reactor,
    total: usize,
}

impl Factory for SenderFactory {
    type Protocol = SenderProtocol;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<SenderProtocol> {
        Some(SenderProtocol(Rc::new_cyclic(|me| Sender {
            reactor: self.reactor.clone(),
            me: me.clone(),
            transport: RefCell::new(None),
            sent: Cell::new(0),
            total: self.total,
            paused: Cell::new(false),
        })))
    }
}

impl ClientFactory for SenderFactory {}

/// Both sides of one proxied connection.
#[derive(Default)]
struct Pair {
    a: Option<Transport>,
    b: Option<Transport>,
}

/// The proxy's accepted side: relays to the sink side.
struct ProxyIn {
    pair: Rc<RefCell<Pair>>,
}

/// The proxy's connected side: pauses the accepted side while full.
struct ProxyOut {
    pair: Rc<RefCell<Pair>>,
}

/// Pauses the accepted side's reading while the sink side is full.
struct PauseIn(Rc<RefCell<Pair>>);

impl Producer for PauseIn {
    fn pause_producing(&self) {
        if let Some(a) = &self.0.borrow().a {
            a.pause_reading();
        }
    }
    fn resume_producing(&self) {
        if let Some(a) = &self.0.borrow().a {
            a.resume_reading();
        }
    }
}

impl Protocol for ProxyIn {
    fn connection_made(&mut self, transport: Transport) {
        // Nothing is read until the sink side is up.
        transport.pause_reading();
        self.pair.borrow_mut().a = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(b) = &self.pair.borrow().b {
            b.write(data);
        }
    }
}

impl Protocol for ProxyOut {
    fn connection_made(&mut self, transport: Transport) {
        transport.register_producer(Rc::new(PauseIn(Rc::clone(&self.pair))));
        let mut pair = self.pair.borrow_mut();
        pair.b = Some(transport);
        if let Some(a) = &pair.a {
            a.resume_reading();
        }
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// Connects one proxy pair's sink side.
struct OutFactory(Option<ProxyOut>);

impl Factory for OutFactory {
    type Protocol = ProxyOut;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<ProxyOut> {
        self.0.take()
    }
}

impl ClientFactory for OutFactory {}

/// VmRSS of this process, in KiB.
fn rss_kb() -> Result<u64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let mib_each: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let total = mib_each * 1024 * 1024;

    let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let received: Counter = Rc::new(Cell::new(0));
    let sink = {
        let received = Rc::clone(&received);
        reactor.listen_tcp(
            loopback,
            factory_fn(move |_| Some(Sink(Rc::clone(&received)))),
        )?
    };
    let sink_addr = sink.local_addr();
    let pairs: Rc<RefCell<Vec<Rc<RefCell<Pair>>>>> = Rc::new(RefCell::new(Vec::new()));
    let proxy = {
        let (pairs, r) = (Rc::clone(&pairs), reactor.clone());
        reactor.listen_tcp(
            loopback,
            factory_fn(move |_| {
                let pair = Rc::new(RefCell::new(Pair::default()));
                pairs.borrow_mut().push(Rc::clone(&pair));
                let out = ProxyOut {
                    pair: Rc::clone(&pair),
                };
                r.connect_tcp(sink_addr, OutFactory(Some(out)), Duration::from_secs(10));
                Some(ProxyIn { pair })
            }),
        )?
    };
    // Let the listeners settle into memory before the baseline.
    reactor.iterate(Some(Duration::ZERO))?;
    let baseline = rss_kb()?;

    for _ in 0..connections {
        reactor.connect_tcp(
            proxy.local_addr(),
            SenderFactory {
                reactor: reactor.clone(),
                total,
            },
            Duration::from_secs(10),
        );
    }
    let expected = connections * total;
    let done = reactor.run_until(|| received.get() >= expected, BOUND)?;
    if !done {
        return Err(format!("only {} of {expected} bytes arrived", received.get()).into());
    }
    let drained = reactor.run_until(
        || {
            pairs.borrow().iter().all(|p| {
                let p = p.borrow();
                p.b.as_ref().is_some_and(|b| b.buffered_len() == 0)
            })
        },
        BOUND,
    )?;
    if !drained {
        return Err("the proxy's buffers did not drain".into());
    }
    let capacity: usize = pairs
        .borrow()
        .iter()
        .map(|p| {
            let p = p.borrow();
            p.a.as_ref().map_or(0, Transport::buffer_capacity)
                + p.b.as_ref().map_or(0, Transport::buffer_capacity)
        })
        .sum();
    let idle = rss_kb()?;
    println!("{connections} idle proxied connections, {mib_each} MiB carried by each");
    println!("baseline RSS (before connecting): {baseline} KiB");
    println!("idle RSS (after the burst):       {idle} KiB");
    println!("proxy write-buffer capacity held: {capacity} bytes");
    println!(
        "RESULT connections={connections} mib_each={mib_each} baseline_rss_kb={baseline} \
         idle_rss_kb={idle} proxy_buffer_capacity_bytes={capacity}"
    );
    // Break the protocol -> pair -> transport cycles before exiting.
    for pair in pairs.borrow().iter() {
        let mut pair = pair.borrow_mut();
        pair.a = None;
        pair.b = None;
    }
    Ok(())
}
