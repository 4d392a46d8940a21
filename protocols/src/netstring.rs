//! Netstrings (`LEN:DATA,`, <https://cr.yp.to/proto/netstrings.txt>):
//! [`NetstringDecoder`] (sans-IO) and [`NetstringReceiver`] (Twisted's
//! `NetstringReceiver`).
//!
//! The length is decimal ASCII without leading zeros (`0:,` is the empty
//! string, `007:` is refused), checked against the maximum as each digit
//! arrives, so a peer cannot make the decoder buffer a huge length prefix.
//! Any malformed input is an error that ends the stream: the receiver reports
//! it to its handler and loses the connection.

use std::fmt;
use std::rc::Rc;

use gyre_reactor::{ConnectionLost, Protocol, Transport};

use crate::intn::StringTooLong;
use crate::string::{Engine, Framing, Hooks, StringContext, StringControl};

/// The default maximum netstring length, 99,999 bytes (Twisted's).
pub const DEFAULT_MAX_NETSTRING_LENGTH: usize = 99_999;

/// Why a byte stream is not a valid sequence of netstrings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetstringError {
    /// A byte other than a digit where a length starts, or other than a
    /// digit or `:` inside it.
    BadLength(u8),
    /// A `:` with no digits before it.
    MissingLength,
    /// A length with a leading zero (only `0:` itself may start with `0`).
    LeadingZero,
    /// The length (as far as its digits have arrived) exceeds the maximum.
    TooLong {
        /// The decoder's maximum.
        max: usize,
    },
    /// The byte after the data is not `,`.
    MissingComma(u8),
}

impl fmt::Display for NetstringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetstringError::BadLength(b) => {
                write!(f, "netstring length expected, got byte {b:#04x}")
            }
            NetstringError::MissingLength => f.write_str("netstring has no length before ':'"),
            NetstringError::LeadingZero => f.write_str("netstring length has a leading zero"),
            NetstringError::TooLong { max } => {
                write!(f, "netstring longer than the maximum of {max} bytes")
            }
            NetstringError::MissingComma(b) => {
                write!(f, "netstring not terminated by ',' (got byte {b:#04x})")
            }
        }
    }
}

impl std::error::Error for NetstringError {}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading the length: its value and digit count so far.
    Length { value: usize, digits: usize },
    /// Waiting for `len` bytes of data and the comma.
    Payload { len: usize },
}

/// A sans-IO netstring decoder: feed bytes, take strings.
///
/// After an error the decoder is finished: it drops what it is fed and keeps
/// returning that error. Memory is bounded by the maximum length (plus the
/// bytes of one read).
///
/// ```
/// use gyre_protocols::netstring::{encode_netstring, NetstringDecoder, NetstringError};
///
/// let mut wire = Vec::new();
/// encode_netstring(b"hello", &mut wire);
/// assert_eq!(wire, b"5:hello,");
///
/// let mut dec = NetstringDecoder::new();
/// dec.feed(b"5:hel");
/// assert_eq!(dec.next_frame(), Ok(None));
/// dec.feed(b"lo,0:,");
/// assert_eq!(dec.next_frame(), Ok(Some(&b"hello"[..])));
/// assert_eq!(dec.next_frame(), Ok(Some(&b""[..])));
/// dec.feed(b"007:");
/// assert_eq!(dec.next_frame(), Err(NetstringError::LeadingZero));
/// ```
pub struct NetstringDecoder {
    max_length: usize,
    buf: Vec<u8>,
    start: usize,
    state: State,
    failed: Option<NetstringError>,
}

/// Appends `data` as a netstring to `out`.
pub fn encode_netstring(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

impl NetstringDecoder {
    /// A decoder for netstrings of at most 99,999 bytes.
    pub fn new() -> NetstringDecoder {
        NetstringDecoder::with_max_length(DEFAULT_MAX_NETSTRING_LENGTH)
    }

    /// A decoder for netstrings of at most `max_length` bytes.
    pub fn with_max_length(max_length: usize) -> NetstringDecoder {
        NetstringDecoder {
            max_length,
            buf: Vec::new(),
            start: 0,
            state: State::Length {
                value: 0,
                digits: 0,
            },
            failed: None,
        }
    }

    /// The maximum length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Changes the maximum length (a length already read is not checked
    /// again).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Appends bytes (dropped after an error).
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn fail(&mut self, error: NetstringError) -> NetstringError {
        self.failed = Some(error);
        self.buf = Vec::new();
        self.start = 0;
        error
    }

    /// The next string, `Ok(None)` if more bytes are needed, or the error
    /// that ended the stream.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, NetstringError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        loop {
            match self.state {
                State::Length { value, digits } => {
                    let Some(&byte) = self.buf.get(self.start) else {
                        return Ok(None);
                    };
                    match byte {
                        b'0'..=b'9' => {
                            if digits == 1 && value == 0 {
                                return Err(self.fail(NetstringError::LeadingZero));
                            }
                            let value = value
                                .checked_mul(10)
                                .and_then(|v| v.checked_add(usize::from(byte - b'0')))
                                .filter(|&v| v <= self.max_length);
                            let Some(value) = value else {
                                let max = self.max_length;
                                return Err(self.fail(NetstringError::TooLong { max }));
                            };
                            self.state = State::Length {
                                value,
                                digits: digits + 1,
                            };
                            self.start += 1;
                        }
                        b':' if digits > 0 => {
                            self.state = State::Payload { len: value };
                            self.start += 1;
                        }
                        b':' => return Err(self.fail(NetstringError::MissingLength)),
                        other => return Err(self.fail(NetstringError::BadLength(other))),
                    }
                }
                State::Payload { len } => {
                    let avail = self.buf.len() - self.start;
                    if avail <= len {
                        return Ok(None);
                    }
                    let comma = self.buf[self.start + len];
                    if comma != b',' {
                        return Err(self.fail(NetstringError::MissingComma(comma)));
                    }
                    let s = self.start;
                    self.start += len + 1;
                    self.state = State::Length {
                        value: 0,
                        digits: 0,
                    };
                    return Ok(Some(&self.buf[s..s + len]));
                }
            }
        }
    }

    /// How many bytes are buffered (digits already parsed are not counted).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<NetstringError> {
        self.failed
    }
}

impl Default for NetstringDecoder {
    fn default() -> Self {
        NetstringDecoder::new()
    }
}

impl fmt::Debug for NetstringDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetstringDecoder")
            .field("max_length", &self.max_length)
            .field("buffered", &self.buffered_len())
            .field("state", &self.state)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Framing for NetstringDecoder {
    type Error = NetstringError;

    fn feed(&mut self, data: &[u8]) {
        NetstringDecoder::feed(self, data);
    }

    fn next_frame(&mut self) -> Result<Option<&[u8]>, NetstringError> {
        NetstringDecoder::next_frame(self)
    }

    fn buffered_len(&self) -> usize {
        NetstringDecoder::buffered_len(self)
    }
}

/// What a netstring protocol does with its strings; wrap it in a
/// [`NetstringReceiver`].
///
/// ```
/// use gyre_protocols::netstring::{NetstringHandler, NetstringReceiver};
/// use gyre_protocols::StringContext;
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// /// Sends every string back reversed.
/// struct Reverse;
/// impl NetstringHandler for Reverse {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
///         let r: Vec<u8> = s.iter().rev().copied().collect();
///         ctx.send_string(&r).expect("netstrings have no length limit");
///     }
/// }
///
/// let st = StringTransport::new();
/// let mut proto = NetstringReceiver::new(Reverse);
/// proto.connection_made(st.transport());
/// proto.data_received(b"3:abc,2:x");
/// proto.data_received(b"y,");
/// assert_eq!(st.value(), b"3:cba,2:yx,");
/// proto.data_received(b"oops");
/// assert!(st.disconnecting());
/// ```
pub trait NetstringHandler: 'static {
    /// The connection is up.
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        let _ = ctx;
    }

    /// A netstring arrived (its data only).
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]);

    /// The peer sent something that is not a netstring. The connection is
    /// lost right after this returns (a last message may still be written
    /// here) and nothing more is delivered.
    fn netstring_error(&mut self, ctx: &mut StringContext<'_>, error: NetstringError) {
        let _ = ctx;
        log::debug!("netstring error: {error}");
    }

    /// The peer closed its write side; return `true` to keep ours open.
    fn eof_received(&mut self, ctx: &mut StringContext<'_>) -> bool {
        let _ = ctx;
        false
    }

    /// The connection is closed. Called once.
    fn connection_lost(&mut self, reason: ConnectionLost) {
        let _ = reason;
    }
}

/// Adapts a [`NetstringHandler`] to the engine.
pub(crate) struct NetHooks<H>(H);

impl<H: NetstringHandler> Hooks for NetHooks<H> {
    type Decoder = NetstringDecoder;

    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        self.0.connection_made(ctx);
    }

    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]) {
        self.0.string_received(ctx, string);
    }

    fn decode_error(&mut self, ctx: &mut StringContext<'_>, error: NetstringError) {
        self.0.netstring_error(ctx, error);
        ctx.lose_connection();
    }

    fn eof_received(&mut self, ctx: &mut StringContext<'_>) -> bool {
        self.0.eof_received(ctx)
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.0.connection_lost(reason);
    }
}

fn write_netstring(transport: &Transport, data: &[u8]) -> Result<(), StringTooLong> {
    let len = data.len().to_string();
    transport.write_sequence(&[len.as_bytes(), b":", data, b","]);
    Ok(())
}

/// A [`Protocol`] that reads and writes netstrings for a
/// [`NetstringHandler`] (Twisted's `NetstringReceiver`); malformed input is
/// reported to the handler and loses the connection. It can be paused like
/// a [`LineReceiver`](crate::line::LineReceiver).
pub struct NetstringReceiver<H: NetstringHandler> {
    engine: Rc<Engine<NetHooks<H>>>,
}

impl<H: NetstringHandler> NetstringReceiver<H> {
    /// A receiver for netstrings of at most 99,999 bytes.
    pub fn new(handler: H) -> NetstringReceiver<H> {
        NetstringReceiver {
            engine: Engine::new(NetHooks(handler), NetstringDecoder::new(), write_netstring),
        }
    }

    /// Sets the maximum length.
    pub fn with_max_length(self, max_length: usize) -> NetstringReceiver<H> {
        self.engine
            .decoder()
            .borrow_mut()
            .set_max_length(max_length);
        self
    }

    /// A control handle (see [`StringControl`]).
    pub fn control(&self) -> StringControl {
        self.engine.control()
    }

    /// Runs `f` on the handler.
    ///
    /// # Panics
    /// If called from inside one of the handler's own hooks.
    pub fn with_handler<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        self.engine.with_hooks(|h| f(&mut h.0))
    }
}

impl<H: NetstringHandler> Protocol for NetstringReceiver<H> {
    fn connection_made(&mut self, transport: Transport) {
        self.engine.connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.engine.data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.engine.eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.engine.connection_lost(reason);
    }
}

impl<H: NetstringHandler> fmt::Debug for NetstringReceiver<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.engine.debug("NetstringReceiver", f)
    }
}
