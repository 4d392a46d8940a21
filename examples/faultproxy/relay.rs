//! One relayed connection: the client's connection, the upstream one, and
//! a [`Flow`] each way between them.
//!
//! Backpressure: each flow's source stops reading while its sink's write
//! buffer is above its high-water mark (the sink tells us through a
//! [`Producer`], [`SinkGate`]) or while the flow's own queue of delayed
//! bytes is above [`QUEUE_HIGH`], and reads again below the low marks. So
//! a slow reader on one side pauses reading on the other, and a
//! connection holds at most about two write buffers, two queues and two
//! read chunks.
//!
//! Closing: an EOF travels through the flow like data and half-closes the
//! sink when it is released, so half-closed TCP conversations work. A side
//! lost in error (or aborted) aborts the other side; a side closed cleanly
//! lets the other flow finish.
//!
//! Why not `gyre::reactor::splice`: a splice writes each read to the other
//! side as it comes, while here the toxics sit between the read and the
//! write (delaying, slicing, dropping, resetting, with a queue of their own
//! that also pauses the source). The transport-as-producer half of it
//! would fit ([`SinkGate`] could be the source transport itself), but the
//! flow control also has to count the toxic queue, so the gate stays.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use gyre::reactor::clock::DelayedCall;
use gyre::reactor::{
    ClientFactory, ConnectionLost, Connector, Factory, Producer, Protocol, Transport,
};

use crate::proxy::{Link, Proxy, Stats};
use crate::toxic::{Action, Direction, Pipe};

/// Write-buffer high-water mark set on both connections.
pub const WRITE_HIGH: usize = 64 * 1024;
/// Write-buffer low-water mark.
pub const WRITE_LOW: usize = 16 * 1024;
/// Above this queue cost (delayed bytes plus a per-item overhead, see
/// [`Pipe::queued_cost`]), a flow's source is paused.
pub const QUEUE_HIGH: usize = 256 * 1024;
/// At or below this cost, a source paused for its queue reads again.
pub const QUEUE_LOW: usize = 64 * 1024;

/// One end of a relay.
enum End {
    /// Connecting upstream; the connector once `connect_tcp` returned.
    Connecting(Option<Connector>),
    /// Connected.
    Open(Transport),
    /// Closed (or never connected).
    Closed,
}

impl End {
    fn transport(&self) -> Option<&Transport> {
        match self {
            End::Open(t) => Some(t),
            _ => None,
        }
    }
}

/// Whether we told a flow's source to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    On,
    Paused,
}

/// What the sink's write buffer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Available,
    Full,
}

/// One direction: the toxic pipe, its release timer, and its flow control.
struct Flow {
    pipe: Pipe,
    timer: Option<DelayedCall>,
    reading: Reading,
    room: Room,
}

impl Flow {
    fn new(reading: Reading) -> Flow {
        Flow {
            pipe: Pipe::default(),
            timer: None,
            reading,
            room: Room::Available,
        }
    }

    fn cancel_timer(&mut self) {
        if let Some(timer) = self.timer.take() {
            let _ = timer.cancel();
        }
    }
}

/// A relayed connection. Shared as `Rc<RefCell<Relay>>` by the two
/// protocols; timers and producers hold it weakly.
pub struct Relay {
    id: u64,
    proxy: Rc<Proxy>,
    me: Weak<RefCell<Relay>>,
    peer: SocketAddr,
    client: End,
    server: End,
    up: Flow,
    down: Flow,
    timeout: Option<DelayedCall>,
}

impl Relay {
    fn flow(&mut self, dir: Direction) -> &mut Flow {
        match dir {
            Direction::Upstream => &mut self.up,
            Direction::Downstream => &mut self.down,
        }
    }

    /// The end a flow reads from.
    fn source(&self, dir: Direction) -> &End {
        match dir {
            Direction::Upstream => &self.client,
            Direction::Downstream => &self.server,
        }
    }

    /// The end a flow writes to.
    fn sink(&self, dir: Direction) -> &End {
        match dir {
            Direction::Upstream => &self.server,
            Direction::Downstream => &self.client,
        }
    }

    /// Bytes arrived from `dir`'s source.
    fn data(&mut self, dir: Direction, data: &[u8]) {
        let now = self.proxy.reactor.clock().now();
        let proxy = Rc::clone(&self.proxy);
        let flow = self.flow(dir);
        let discarded =
            proxy.with_stream_toxics(dir, |toxics, rng| flow.pipe.push(now, data, toxics, rng));
        Stats::add(&proxy.stats.discarded, discarded as u64);
        self.pump(dir);
    }

    /// `dir`'s source sent EOF.
    fn eof(&mut self, dir: Direction) {
        let now = self.proxy.reactor.clock().now();
        self.flow(dir).pipe.push_eof(now);
        self.pump(dir);
    }

    /// Releases what is due, arms the timer for the rest, and sets the
    /// source's reading state.
    fn pump(&mut self, dir: Direction) {
        let now = self.proxy.reactor.clock().now();
        while let Some(item) = self.flow(dir).pipe.pop_due(now) {
            match item.action {
                Action::Data(bytes) => {
                    if let Some(sink) = self.sink(dir).transport() {
                        sink.write(&bytes);
                        let counter = match dir {
                            Direction::Upstream => &self.proxy.stats.bytes_up,
                            Direction::Downstream => &self.proxy.stats.bytes_down,
                        };
                        Stats::add(counter, bytes.len() as u64);
                    }
                }
                Action::HalfClose => {
                    if let Some(sink) = self.sink(dir).transport() {
                        sink.half_close();
                    }
                }
                Action::Reset => {
                    log::info!("relay {} ({}): reset toxic fired {dir}", self.id, self.peer);
                    Stats::add(&self.proxy.stats.reset, 1);
                    self.abort_all();
                    return;
                }
            }
        }
        self.arm_timer(dir, now);
        self.sync_reading(dir);
    }

    /// Schedules a pump for when the next item comes due.
    fn arm_timer(&mut self, dir: Direction, now: Instant) {
        let reactor = self.proxy.reactor.clone();
        let me = self.me.clone();
        let flow = self.flow(dir);
        if flow.timer.as_ref().is_some_and(DelayedCall::active) {
            // Due no later than the head: the head only moves later.
            return;
        }
        let Some(due) = flow.pipe.next_due() else {
            return;
        };
        flow.timer = Some(
            reactor.call_later(due.saturating_duration_since(now), move || {
                let Some(relay) = me.upgrade() else { return };
                let Ok(mut relay) = relay.try_borrow_mut() else {
                    log::warn!("relay busy when its timer fired");
                    return;
                };
                relay.flow(dir).timer = None;
                relay.pump(dir);
            }),
        );
    }

    /// Pauses or resumes `dir`'s source to match the sink's room and the
    /// queue's size.
    fn sync_reading(&mut self, dir: Direction) {
        let sink_open = self.sink(dir).transport().is_some();
        let flow = self.flow(dir);
        let limit = match flow.reading {
            Reading::On => QUEUE_HIGH,
            Reading::Paused => QUEUE_LOW,
        };
        let want = if sink_open && flow.room == Room::Available && flow.pipe.queued_cost() <= limit
        {
            Reading::On
        } else {
            Reading::Paused
        };
        if want == flow.reading {
            return;
        }
        flow.reading = want;
        if let Some(source) = self.source(dir).transport() {
            match want {
                Reading::On => source.resume_reading(),
                Reading::Paused => source.pause_reading(),
            }
        }
    }

    /// The sink of `dir` crossed a water mark.
    fn set_room(&mut self, dir: Direction, room: Room) {
        self.flow(dir).room = room;
        self.sync_reading(dir);
    }

    /// Aborts both sides now (a reset toxic, a cut).
    pub fn abort_all(&mut self) {
        for end in [&mut self.client, &mut self.server] {
            match end {
                End::Open(t) => t.abort_connection(),
                End::Connecting(connector) => {
                    if let Some(c) = connector.take() {
                        c.stop_connecting();
                    }
                    *end = End::Closed;
                }
                End::Closed => {}
            }
        }
        self.up.pipe.clear();
        self.down.pipe.clear();
        self.up.cancel_timer();
        self.down.cancel_timer();
        self.forget_if_done();
    }

    /// Closes both sides cleanly (the timeout toxic): what is written is
    /// flushed, what is still delayed is dropped.
    fn close_both(&mut self) {
        log::info!("relay {} ({}): timeout toxic closes it", self.id, self.peer);
        self.up.cancel_timer();
        self.down.cancel_timer();
        self.up.pipe.clear();
        self.down.pipe.clear();
        for end in [&mut self.client, &mut self.server] {
            match end {
                End::Open(t) => t.lose_connection(),
                End::Connecting(connector) => {
                    if let Some(c) = connector.take() {
                        c.stop_connecting();
                    }
                    *end = End::Closed;
                }
                End::Closed => {}
            }
        }
        self.forget_if_done();
    }

    /// The upstream connection is up.
    fn server_connected(&mut self, transport: Transport) {
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW);
        transport.register_producer(Rc::new(SinkGate {
            relay: self.me.clone(),
            dir: Direction::Upstream,
        }));
        self.server = End::Open(transport);
        self.pump(Direction::Upstream);
        self.pump(Direction::Downstream);
    }

    /// Connecting upstream failed.
    fn connect_failed(&mut self, reason: &io::Error) {
        log::warn!(
            "relay {} ({}): cannot connect to {}: {reason}",
            self.id,
            self.peer,
            self.proxy.settings.upstream
        );
        self.server = End::Closed;
        if let Some(client) = self.client.transport() {
            client.abort_connection();
        }
        self.forget_if_done();
    }

    /// One side's connection closed.
    fn lost(&mut self, side: Direction, reason: &ConnectionLost) {
        // `side` names the flow this end is the source of.
        let into_lost = match side {
            Direction::Upstream => Direction::Downstream,
            Direction::Downstream => Direction::Upstream,
        };
        match side {
            Direction::Upstream => self.client = End::Closed,
            Direction::Downstream => self.server = End::Closed,
        }
        let flow = self.flow(into_lost);
        flow.cancel_timer();
        flow.pipe.clear();
        if reason.is_clean() {
            // What the lost end sent still goes through, then an EOF.
            self.eof(side);
        } else {
            log::debug!(
                "relay {} ({}): {side} source lost: {reason}",
                self.id,
                self.peer
            );
            let other = match side {
                Direction::Upstream => &mut self.server,
                Direction::Downstream => &mut self.client,
            };
            match other {
                End::Open(t) => t.abort_connection(),
                End::Connecting(connector) => {
                    if let Some(c) = connector.take() {
                        c.stop_connecting();
                    }
                    *other = End::Closed;
                }
                End::Closed => {}
            }
        }
        self.forget_if_done();
    }

    /// When both ends are closed, the proxy forgets this relay.
    fn forget_if_done(&mut self) {
        if matches!((&self.client, &self.server), (End::Closed, End::Closed)) {
            if let Some(t) = self.timeout.take() {
                let _ = t.cancel();
            }
            self.up.cancel_timer();
            self.down.cancel_timer();
            self.proxy.forget(self.id);
        }
    }
}

/// Runs `f` on the relay unless it is gone or busy (it never is when the
/// reactor calls us: no borrow is held across a return to the loop).
fn with_relay(relay: &Weak<RefCell<Relay>>, f: impl FnOnce(&mut Relay)) {
    if let Some(relay) = relay.upgrade() {
        match relay.try_borrow_mut() {
            Ok(mut relay) => f(&mut relay),
            Err(_) => log::error!("relay re-entered; event dropped"),
        }
    }
}

/// Registered on a flow's sink: its write buffer's water marks pause and
/// resume the flow's source.
struct SinkGate {
    relay: Weak<RefCell<Relay>>,
    dir: Direction,
}

impl Producer for SinkGate {
    fn pause_producing(&self) {
        with_relay(&self.relay, |r| r.set_room(self.dir, Room::Full));
    }
    fn resume_producing(&self) {
        with_relay(&self.relay, |r| r.set_room(self.dir, Room::Available));
    }
}

/// The client's side of a relay: accepted on the listening port.
pub struct ClientSide {
    proxy: Rc<Proxy>,
    peer: SocketAddr,
    relay: Weak<RefCell<Relay>>,
    /// Keeps the relay alive while the client connection is open.
    hold: Option<Rc<RefCell<Relay>>>,
}

impl ClientSide {
    /// A protocol for a client from `peer`, or `None` when the proxy
    /// refuses it (cut, a reset drawn, too many connections).
    pub fn accept(proxy: &Rc<Proxy>, peer: SocketAddr) -> Option<ClientSide> {
        let refuse = if proxy.link() == Link::Cut {
            Some("the link is cut")
        } else if proxy.open_relays() >= proxy.settings.max_connections {
            Some("too many connections")
        } else if proxy.draw_reset() {
            Some("reset_chance drew a reset")
        } else {
            None
        };
        if let Some(why) = refuse {
            log::info!("refusing {peer}: {why}");
            Stats::add(&proxy.stats.refused, 1);
            return None;
        }
        Some(ClientSide {
            proxy: Rc::clone(proxy),
            peer,
            relay: Weak::new(),
            hold: None,
        })
    }
}

impl Protocol for ClientSide {
    fn connection_made(&mut self, transport: Transport) {
        // Nothing is read until upstream is connected.
        transport.pause_reading();
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW);
        let relay = Rc::new_cyclic(|me| {
            RefCell::new(Relay {
                id: 0,
                proxy: Rc::clone(&self.proxy),
                me: me.clone(),
                peer: self.peer,
                client: End::Open(transport.clone()),
                server: End::Connecting(None),
                up: Flow::new(Reading::Paused),
                down: Flow::new(Reading::On),
                timeout: None,
            })
        });
        let id = self.proxy.register(&relay);
        Stats::add(&self.proxy.stats.accepted, 1);
        transport.register_producer(Rc::new(SinkGate {
            relay: Rc::downgrade(&relay),
            dir: Direction::Downstream,
        }));
        let timeout = self.proxy.timeout().map(|after| {
            let weak = Rc::downgrade(&relay);
            self.proxy
                .reactor
                .call_later(after, move || with_relay(&weak, Relay::close_both))
        });
        {
            let mut r = relay.borrow_mut();
            r.id = id;
            r.timeout = timeout;
        }
        log::info!(
            "relay {id}: {} -> {}",
            self.peer,
            self.proxy.settings.upstream
        );
        let connector = self.proxy.reactor.connect_tcp(
            self.proxy.settings.upstream,
            UpstreamFactory {
                relay: Rc::downgrade(&relay),
            },
            self.proxy.settings.connect_timeout,
        );
        if let Ok(mut r) = relay.try_borrow_mut() {
            if let End::Connecting(slot @ None) = &mut r.server {
                *slot = Some(connector);
            }
        }
        self.relay = Rc::downgrade(&relay);
        self.hold = Some(relay);
    }

    fn data_received(&mut self, data: &[u8]) {
        with_relay(&self.relay, |r| r.data(Direction::Upstream, data));
    }

    fn eof_received(&mut self) -> bool {
        with_relay(&self.relay, |r| r.eof(Direction::Upstream));
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        with_relay(&self.relay, |r| r.lost(Direction::Upstream, &reason));
        self.hold = None;
    }
}

/// Builds the upstream side once connected; hears a failed connect.
struct UpstreamFactory {
    relay: Weak<RefCell<Relay>>,
}

impl Factory for UpstreamFactory {
    type Protocol = ServerSide;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<ServerSide> {
        Some(ServerSide {
            relay: self.relay.upgrade()?,
        })
    }
}

impl ClientFactory for UpstreamFactory {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        with_relay(&self.relay, |r| r.connect_failed(reason));
    }
}

/// The upstream side of a relay.
struct ServerSide {
    relay: Rc<RefCell<Relay>>,
}

impl ServerSide {
    fn with(&self, f: impl FnOnce(&mut Relay)) {
        with_relay(&Rc::downgrade(&self.relay), f)
    }
}

impl Protocol for ServerSide {
    fn connection_made(&mut self, transport: Transport) {
        let mut gone = false;
        self.with(|r| match r.server {
            End::Connecting(_) => r.server_connected(transport.clone()),
            _ => gone = true,
        });
        if gone {
            // The client left (or a cut came) while we were connecting.
            transport.abort_connection();
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.with(|r| r.data(Direction::Downstream, data));
    }

    fn eof_received(&mut self) -> bool {
        self.with(|r| r.eof(Direction::Downstream));
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.with(|r| {
            if matches!(r.server, End::Open(_)) {
                r.lost(Direction::Downstream, &reason)
            }
        });
    }
}
