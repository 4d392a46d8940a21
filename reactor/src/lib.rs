//! gyre-reactor: a single-threaded, Twisted-style reactor on mio.
//!
//! - [`Reactor`]: the event loop: TCP listen and connect, timers, threads,
//!   signals ([`Reactor::on_signal`]), life-cycle triggers.
//! - [`unix`]: Unix-domain stream sockets ([`Reactor::listen_unix`],
//!   [`Reactor::connect_unix`]): the same transports as TCP, plus socket
//!   files (stale ones replaced, mode, removal), abstract names and
//!   [`PeerCredentials`]; [`Address`] names either kind of end.
//! - [`udp`]: UDP ports ([`Reactor::listen_udp`], [`DatagramProtocol`],
//!   [`UdpPort`]): datagrams delivered whole, bounded send queues,
//!   connected UDP, multicast.
//! - [`fd`]: your own descriptors in the loop ([`Reactor::watch_fd`],
//!   [`FdHandler`], [`FdWatch`]; Twisted's `addReader`/`addWriter`).
//! - [`Protocol`], [`Factory`], [`ClientFactory`], [`Transport`]: the
//!   connection model.
//! - [`defer`]: Deferreds, typed callback chains that are also futures.
//! - [`clock`]: timers on a real or a manual clock.
//! - [`IdleTimeout`]: closes any protocol's connection after a period
//!   without data (Twisted's `TimeoutMixin`).
//! - [`splice`](mod@splice): two connections proxied both ways, with
//!   backpressure and half-close; a [`Transport`] is a [`Producer`].
//! - [`testing`]: in-memory transports for testing protocols without sockets.
//! - [`process`]: child processes on the loop ([`Reactor::spawn_process`],
//!   [`process::ProcessProtocol`], [`process::output`]).
//!
//! A reactor is passed explicitly; there is no global one. Several may live
//! on one thread, each with its own connections, timers and life cycle;
//! Deferreds and tasks belong to the thread ([`ReactorBuilder::build`]).
//!
//! Two rules, side by side (details in [`defer`]):
//!
//! - **Deferred callback chains run synchronously when fired**, as in
//!   Twisted: [`Resolver::callback`](defer::Resolver::callback) runs the
//!   chain before it returns (or right after the current callback).
//! - **Waking a task only enqueues it; the loop polls tasks, never
//!   `callback()`.** `async` code ([`Reactor::spawn`],
//!   [`defer::ensure_deferred`]) is polled by the reactor's loop, or by
//!   [`defer::run_pending`] where no reactor runs.
//!
//! # Contract
//!
//! The rules the reactor and its transports keep, each documented in full
//! where it lives (as mio's `poll.rs` documents draining readiness), and
//! each tested over real sockets in `reactor/tests/contract.rs`:
//!
//! - **Any readiness event may carry read data, EOF or an error, a connect
//!   completion included.** Every event for a connection reads until
//!   `WouldBlock` (or a short read, or the per-event budget), and the event
//!   that completes a connect reads at once, in the same dispatch. See
//!   [`Transport`] and the `tcp` and `connector` modules.
//! - **A read burst stops at the high-water mark.** Between two reads of one
//!   burst the connections written to are flushed, so a producer paused by
//!   that flush stops the burst: a buffer holds at most the high-water mark
//!   ([`DEFAULT_HIGH_WATER`]) plus one read (64 KiB). See [`Transport`].
//! - **A drained buffer gives back memory beyond a small floor**
//!   ([`WRITE_BUFFER_FLOOR`], 16 KiB); [`Transport::buffer_capacity`] shows
//!   it.
//! - **Neither a factory nor a connector callback is ever lost.** The
//!   reactor asks [`Factory::ready_for_calls`] before calling a factory; a
//!   call it cannot take now is queued and delivered from the loop, in
//!   order, never re-entrantly. See [`Factory::ready_for_calls`] and
//!   [`ClientFactory`].
//! - **A close with unread input lingers; it never resets answers away.**
//!   [`Transport::lose_connection`] flushes, shuts the write side, discards
//!   input until the peer's EOF or the linger time-out
//!   ([`ReactorBuilder::linger_timeout`], default
//!   [`DEFAULT_LINGER_TIMEOUT`], logged at debug level when hit), then
//!   closes; `connection_lost` comes when the socket really closes.
//! - **Reading stops at `lose_connection`.** Later input is discarded.
//! - **A `before_writes` hook runs before bytes written in the same
//!   iteration reach a socket**, and once at the end of every iteration
//!   ([`Reactor::before_writes`]): a log flushed there is never behind
//!   what was sent.
//! - **A transport's write source runs at every flush of it**, after the
//!   `before_writes` hooks and before the socket write, and before a
//!   `lose_connection` or `half_close` takes effect
//!   ([`Transport::set_write_source`], [`Transport::request_flush`]): a
//!   layer can gather a callback's writes into one unit (TLS: one record per
//!   flush) without delaying them past the flush. Tested in
//!   `reactor/tests/write_source.rs`.
//! - **A reset after EOF is noticed**: it closes the connection with the
//!   error.
//! - **A descriptor of your own is edge-triggered too**: a
//!   [`FdHandler`] reads or writes until `WouldBlock` (or calls
//!   [`FdWatch::rearm`]), and removal is safe from anywhere, its own
//!   callbacks included. See [`fd`]; tested in `reactor/tests/own_fd.rs`.
//! - **A datagram is delivered whole or not at all**: one larger than the
//!   port's limit is reported
//!   ([`DatagramProtocol::datagram_truncated`]), never cut; a UDP write
//!   never blocks (bounded send queue, drops counted and logged). See
//!   [`udp`]; tested in `reactor/tests/udp.rs`.
//! - **A Unix socket file is ours only while we listen on it**: a stale
//!   one (nothing listening) is replaced, a live listener's path is
//!   refused, and the file is removed when the port stops, only if it is
//!   still the one we bound. See [`unix`]; tested in
//!   `reactor/tests/unix.rs`.
//! - **A panic in user code costs only what it was handling**: one guard
//!   catches it at every dispatch boundary (protocol, factory, producer,
//!   timer, `call_soon`, trigger, thread callback) and logs it with what the
//!   loop was handling.

#![forbid(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("gyre-reactor packs a slot index and a generation into a 64-bit mio token");

/// The crate README's example, compiled as a doc test so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod address;
mod block_on;
pub mod clock;
mod conn;
pub mod connect_host;
mod connector;
mod core;
pub mod defer;
mod factory;
pub mod fd;
mod hooks;
pub mod idle;
mod listener;
mod perturb;
pub mod process;
mod protocol;
mod reconnect;
mod signals;
pub mod splice;
mod stream;
pub mod testing;
mod threads;
mod transport;
pub mod udp;
pub mod unix;

pub use crate::core::{
    Phase, Reactor, ReactorBuilder, ReactorError, ReactorStats, SystemEvent, TriggerId,
    DEFAULT_LINGER_TIMEOUT,
};
pub use address::{Address, UnixAddr};
pub use connector::{ClientFactory, Connector, ConnectorState, DEFAULT_CONNECT_TIMEOUT};
pub use factory::{factory_fn, FactoryRef, FnFactory};
pub use fd::{FdHandler, FdInterest, FdWatch, WatchEnded, WatchError};
pub use hooks::BeforeWritesId;
pub use idle::{IdleHandle, IdleTimeout};
pub use listener::{
    ListenOptions, ListeningPort, PortEvent, DEFAULT_EXHAUSTION_BACKOFF,
    DEFAULT_EXHAUSTION_BACKOFF_MAX,
};
pub use protocol::{ConnectionLost, Factory, Producer, Protocol};
pub use reconnect::{Reconnect, ReconnectingClientFactory};
/// Signal numbers for [`Reactor::on_signal`] (`SIGHUP`, `SIGUSR1`, ...),
/// re-exported from signal-hook.
pub use signal_hook::consts::signal;
pub use signals::SignalHandler;
pub use splice::{splice, splice_with_limits, Splice, SpliceEnd, SpliceStats};
pub use threads::{ReactorGone, ThreadHandle};
pub use transport::{
    Transport, TransportBackend, WriteSource, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
    WRITE_BUFFER_FLOOR,
};
pub use udp::{
    DatagramProtocol, Sent, UdpOptions, UdpPort, UdpStats, DEFAULT_MAX_DATAGRAM,
    DEFAULT_SEND_QUEUE_BYTES, DEFAULT_SEND_QUEUE_DATAGRAMS,
};
pub use unix::{PeerCredentials, UnixListenOptions};
