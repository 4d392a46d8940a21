//! The engine shared by [`NetstringReceiver`](crate::netstring::NetstringReceiver)
//! and [`IntNStringReceiver`](crate::intn::IntNStringReceiver), and what their
//! handlers see: [`StringContext`] and [`StringControl`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};

use gyre_reactor::{ConnectionLost, Producer, Transport};

use crate::flow::Flow;
use crate::intn::StringTooLong;

/// A decoder of length-delimited strings, as the engine drives it.
pub(crate) trait Framing: 'static {
    type Error;
    fn feed(&mut self, data: &[u8]);
    fn next_frame(&mut self) -> Result<Option<&[u8]>, Self::Error>;
    fn buffered_len(&self) -> usize;
}

/// A handler, adapted to the engine (one adapter per framing).
pub(crate) trait Hooks: 'static {
    type Decoder: Framing;
    fn connection_made(&mut self, ctx: &mut StringContext<'_>);
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]);
    fn decode_error(
        &mut self,
        ctx: &mut StringContext<'_>,
        error: <Self::Decoder as Framing>::Error,
    );
    fn eof_received(&mut self, ctx: &mut StringContext<'_>) -> bool;
    fn connection_lost(&mut self, reason: ConnectionLost);
}

/// Frames a string and writes it.
pub(crate) type Encode = fn(&Transport, &[u8]) -> Result<(), StringTooLong>;

pub(crate) struct StringShared {
    flow: Flow,
    encode: Encode,
    /// The decoder failed; nothing more is delivered.
    failed: Cell<bool>,
    me: Weak<dyn StringTarget>,
}

trait StringTarget {
    fn shared(&self) -> &StringShared;
    fn deliver(&self);
}

pub(crate) struct Engine<K: Hooks> {
    shared: StringShared,
    decoder: RefCell<K::Decoder>,
    hooks: RefCell<K>,
}

impl<K: Hooks> StringTarget for Engine<K> {
    fn shared(&self) -> &StringShared {
        &self.shared
    }

    fn deliver(&self) {
        let flow = &self.shared.flow;
        let Some(_busy) = flow.enter() else {
            return;
        };
        let Some(transport) = flow.transport() else {
            return;
        };
        loop {
            if self.shared.failed.get() || !flow.may_deliver(&transport) {
                break;
            }
            let mut ctx = StringContext {
                shared: &self.shared,
                transport: &transport,
            };
            // The decoder stays borrowed during `string_received` (the string
            // is a slice of its buffer); nothing a hook can reach touches it.
            let mut dec = self.decoder.borrow_mut();
            match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(string)) => self.hooks.borrow_mut().string_received(&mut ctx, string),
                Err(error) => {
                    drop(dec);
                    self.shared.failed.set(true);
                    self.hooks.borrow_mut().decode_error(&mut ctx, error);
                    break;
                }
            }
        }
    }
}

impl<K: Hooks> Engine<K> {
    pub(crate) fn new(hooks: K, decoder: K::Decoder, encode: Encode) -> Rc<Engine<K>> {
        Rc::new_cyclic(|me: &Weak<Engine<K>>| {
            let me: Weak<dyn StringTarget> = me.clone();
            Engine {
                shared: StringShared {
                    flow: Flow::default(),
                    encode,
                    failed: Cell::new(false),
                    me,
                },
                decoder: RefCell::new(decoder),
                hooks: RefCell::new(hooks),
            }
        })
    }

    pub(crate) fn decoder(&self) -> &RefCell<K::Decoder> {
        &self.decoder
    }

    pub(crate) fn with_hooks<R>(&self, f: impl FnOnce(&mut K) -> R) -> R {
        f(&mut self.hooks.borrow_mut())
    }

    pub(crate) fn control(&self) -> StringControl {
        StringControl {
            target: self.shared.me.clone(),
        }
    }

    fn call_hook<R>(
        &self,
        transport: &Transport,
        f: impl FnOnce(&mut K, &mut StringContext<'_>) -> R,
    ) -> R {
        let result = {
            let _busy = self.shared.flow.enter();
            let mut ctx = StringContext {
                shared: &self.shared,
                transport,
            };
            f(&mut self.hooks.borrow_mut(), &mut ctx)
        };
        self.deliver();
        result
    }

    pub(crate) fn connection_made(&self, transport: Transport) {
        self.shared.flow.set_transport(transport.clone());
        self.call_hook(&transport, |h, ctx| h.connection_made(ctx));
    }

    pub(crate) fn data_received(&self, data: &[u8]) {
        let Some(transport) = self.shared.flow.transport() else {
            return;
        };
        if self.shared.failed.get() || self.shared.flow.is_lost() || transport.is_closing() {
            return; // nobody will read it
        }
        self.decoder.borrow_mut().feed(data);
        self.deliver();
    }

    pub(crate) fn eof_received(&self) -> bool {
        match self.shared.flow.transport() {
            Some(transport) => self.call_hook(&transport, |h, ctx| h.eof_received(ctx)),
            None => false,
        }
    }

    pub(crate) fn connection_lost(&self, reason: ConnectionLost) {
        self.shared.flow.set_lost();
        let _busy = self.shared.flow.enter();
        self.hooks.borrow_mut().connection_lost(reason);
    }

    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("buffered", &self.decoder.borrow().buffered_len())
            .field("paused", &self.shared.flow.is_paused())
            .field("failed", &self.shared.failed.get())
            .finish()
    }
}

/// What a string handler's hooks can do: send strings, pause and resume,
/// reach the transport. Shared by netstring and length-prefix handlers.
pub struct StringContext<'a> {
    shared: &'a StringShared,
    transport: &'a Transport,
}

impl StringContext<'_> {
    /// The connection's transport.
    pub fn transport(&self) -> &Transport {
        self.transport
    }

    /// Frames `string` and writes it. Fails, writing nothing, only if the
    /// string is too long for a length prefix (a netstring never fails).
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        (self.shared.encode)(self.transport, string)
    }

    /// Sends what is buffered, then closes; no further string is delivered.
    pub fn lose_connection(&self) {
        self.transport.lose_connection();
    }

    /// Stops delivering strings and pauses reading until resumed.
    pub fn pause_producing(&self) {
        self.shared.flow.pause();
    }

    /// Undoes [`pause_producing`](Self::pause_producing); buffered strings
    /// are delivered once this hook returns.
    pub fn resume_producing(&self) {
        self.shared.flow.resume();
    }

    /// Stops delivering for good and loses the connection.
    pub fn stop_producing(&self) {
        self.shared.flow.stop();
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.flow.is_paused()
    }

    /// A handle to pause, resume or send from outside a hook.
    pub fn control(&self) -> StringControl {
        StringControl {
            target: self.shared.me.clone(),
        }
    }
}

impl fmt::Debug for StringContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringContext")
            .field("paused", &self.is_paused())
            .finish()
    }
}

/// A cheap, clonable handle on a string receiver (netstring or length
/// prefix), for use outside its hooks; the counterpart of
/// [`LineControl`](crate::line::LineControl), and a [`Producer`] too. Once
/// the receiver is dropped, every method does nothing.
#[derive(Clone)]
pub struct StringControl {
    target: Weak<dyn StringTarget>,
}

impl StringControl {
    /// Stops delivering strings and pauses reading.
    pub fn pause_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            t.shared().flow.pause();
        }
    }

    /// Resumes reading and, outside a hook, delivers buffered strings now.
    pub fn resume_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            if t.shared().flow.resume() {
                t.deliver();
            }
        }
    }

    /// Stops for good and loses the connection.
    pub fn stop_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            t.shared().flow.stop();
        }
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.target
            .upgrade()
            .is_some_and(|t| t.shared().flow.is_paused())
    }

    /// Frames and writes `string`, if connected (see
    /// [`StringContext::send_string`]).
    pub fn send_string(&self, string: &[u8]) -> Result<(), StringTooLong> {
        match self.target.upgrade() {
            Some(t) => match t.shared().flow.transport() {
                Some(transport) => (t.shared().encode)(&transport, string),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// The transport, once connected.
    pub fn transport(&self) -> Option<Transport> {
        self.target
            .upgrade()
            .and_then(|t| t.shared().flow.transport())
    }
}

impl Producer for StringControl {
    fn pause_producing(&self) {
        StringControl::pause_producing(self);
    }

    fn resume_producing(&self) {
        StringControl::resume_producing(self);
    }

    fn stop_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            t.shared().flow.stop_quietly();
        }
    }
}

impl fmt::Debug for StringControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringControl")
            .field("alive", &(self.target.strong_count() > 0))
            .field("paused", &self.is_paused())
            .finish()
    }
}
