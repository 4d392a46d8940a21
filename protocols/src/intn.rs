//! Length-prefixed strings: a big-endian 8-, 16- or 32-bit length, then that
//! many bytes. [`IntNDecoder`] (sans-IO) and [`IntNStringReceiver`]
//! (Twisted's `Int32StringReceiver`, `Int16StringReceiver` and
//! `Int8StringReceiver`), one generic implementation over the prefix type.
//!
//! The length is checked against the maximum as soon as the prefix is
//! complete, before any of the body is buffered.

use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use gyre_reactor::{ConnectionLost, Protocol, Transport};

use crate::string::{Engine, Framing, Hooks, StringContext, StringControl};

/// The default maximum string length, 99,999 bytes (Twisted's).
pub const DEFAULT_MAX_STRING_LENGTH: usize = 99_999;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
}

/// A length-prefix type: `u8`, `u16` or `u32` (sealed).
pub trait PrefixInt: sealed::Sealed + 'static {
    /// Bytes in the prefix.
    const SIZE: usize;
    /// The largest length the prefix can carry.
    const MAX: u64;
}

impl PrefixInt for u8 {
    const SIZE: usize = 1;
    const MAX: u64 = u8::MAX as u64;
}

impl PrefixInt for u16 {
    const SIZE: usize = 2;
    const MAX: u64 = u16::MAX as u64;
}

impl PrefixInt for u32 {
    const SIZE: usize = 4;
    const MAX: u64 = u32::MAX as u64;
}

/// A string is too long for its length prefix (Twisted's
/// `StringTooLongError`); nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringTooLong {
    /// The string's length.
    pub length: usize,
    /// The largest length the prefix can carry.
    pub max: u64,
}

impl fmt::Display for StringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "string of {} bytes is too long for its length prefix (at most {})",
            self.length, self.max
        )
    }
}

impl std::error::Error for StringTooLong {}

/// A length prefix exceeded the decoder's maximum; the stream is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimitExceeded {
    /// The length the prefix announced.
    pub length: u64,
    /// The decoder's maximum.
    pub max: usize,
}

impl fmt::Display for LengthLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "length prefix {} exceeds the maximum of {}",
            self.length, self.max
        )
    }
}

impl std::error::Error for LengthLimitExceeded {}

/// The big-endian prefix for `len`, right-aligned in 8 bytes.
fn prefix_bytes<N: PrefixInt>(len: usize) -> Result<[u8; 8], StringTooLong> {
    let too_long = StringTooLong {
        length: len,
        max: N::MAX,
    };
    match u64::try_from(len) {
        Ok(n) if n <= N::MAX => Ok(n.to_be_bytes()),
        _ => Err(too_long),
    }
}

/// A sans-IO decoder of strings with an `N`-typed big-endian length prefix:
/// feed bytes, take strings. Use the aliases [`Int32Decoder`],
/// [`Int16Decoder`] and [`Int8Decoder`].
///
/// After a [`LengthLimitExceeded`] the decoder is finished: it drops what it
/// is fed and keeps returning that error. Memory is bounded by the maximum
/// length plus the prefix (plus the bytes of one read).
///
/// ```
/// use gyre_protocols::intn::{Int16Decoder, LengthLimitExceeded};
///
/// let mut wire = Vec::new();
/// Int16Decoder::encode(b"hi", &mut wire).unwrap();
/// assert_eq!(wire, b"\x00\x02hi");
///
/// let mut dec = Int16Decoder::with_max_length(10);
/// dec.feed(b"\x00\x02h");
/// assert_eq!(dec.next_frame(), Ok(None));
/// dec.feed(b"i\x00\x0b");
/// assert_eq!(dec.next_frame(), Ok(Some(&b"hi"[..])));
/// assert_eq!(dec.next_frame(), Err(LengthLimitExceeded { length: 11, max: 10 }));
/// ```
pub struct IntNDecoder<N: PrefixInt> {
    max_length: usize,
    buf: Vec<u8>,
    start: usize,
    failed: Option<LengthLimitExceeded>,
    _prefix: PhantomData<fn() -> N>,
}

/// Strings with a 32-bit length prefix.
pub type Int32Decoder = IntNDecoder<u32>;
/// Strings with a 16-bit length prefix.
pub type Int16Decoder = IntNDecoder<u16>;
/// Strings with an 8-bit length prefix.
pub type Int8Decoder = IntNDecoder<u8>;

impl<N: PrefixInt> IntNDecoder<N> {
    /// A decoder for strings of at most 99,999 bytes.
    pub fn new() -> IntNDecoder<N> {
        IntNDecoder::with_max_length(DEFAULT_MAX_STRING_LENGTH)
    }

    /// A decoder for strings of at most `max_length` bytes.
    pub fn with_max_length(max_length: usize) -> IntNDecoder<N> {
        IntNDecoder {
            max_length,
            buf: Vec::new(),
            start: 0,
            failed: None,
            _prefix: PhantomData,
        }
    }

    /// Appends the prefix and `payload` to `out`, or fails (appending
    /// nothing) if `payload` is too long for the prefix.
    pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> Result<(), StringTooLong> {
        let prefix = prefix_bytes::<N>(payload.len())?;
        out.extend_from_slice(&prefix[8 - N::SIZE..]);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The maximum length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Changes the maximum length.
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

    /// The next string, `Ok(None)` if more bytes are needed, or the error
    /// that ended the stream.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, LengthLimitExceeded> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..N::SIZE) else {
            return Ok(None);
        };
        let length = prefix
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let len = match usize::try_from(length) {
            Ok(len) if len <= self.max_length => len,
            _ => {
                let error = LengthLimitExceeded {
                    length,
                    max: self.max_length,
                };
                self.failed = Some(error);
                self.buf = Vec::new();
                self.start = 0;
                return Err(error);
            }
        };
        if avail.len() - N::SIZE < len {
            return Ok(None);
        }
        let s = self.start + N::SIZE;
        self.start = s + len;
        Ok(Some(&self.buf[s..s + len]))
    }

    /// How many bytes are buffered.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<LengthLimitExceeded> {
        self.failed
    }
}

impl<N: PrefixInt> Default for IntNDecoder<N> {
    fn default() -> Self {
        IntNDecoder::new()
    }
}

impl<N: PrefixInt> fmt::Debug for IntNDecoder<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntNDecoder")
            .field("prefix_bytes", &N::SIZE)
            .field("max_length", &self.max_length)
            .field("buffered", &self.buffered_len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<N: PrefixInt> Framing for IntNDecoder<N> {
    type Error = LengthLimitExceeded;

    fn feed(&mut self, data: &[u8]) {
        IntNDecoder::feed(self, data);
    }

    fn next_frame(&mut self) -> Result<Option<&[u8]>, LengthLimitExceeded> {
        IntNDecoder::next_frame(self)
    }

    fn buffered_len(&self) -> usize {
        IntNDecoder::buffered_len(self)
    }
}

/// What a length-prefixed protocol does with its strings; wrap it in an
/// [`IntNStringReceiver`] ([`Int32StringReceiver`] and friends).
///
/// ```
/// use gyre_protocols::intn::{Int32StringReceiver, IntNHandler};
/// use gyre_protocols::StringContext;
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// #[derive(Default)]
/// struct Collect(Vec<Vec<u8>>);
/// impl IntNHandler for Collect {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
///         self.0.push(s.to_vec());
///         ctx.send_string(b"ok").unwrap();
///     }
/// }
///
/// let st = StringTransport::new();
/// let mut proto = Int32StringReceiver::new(Collect::default());
/// proto.connection_made(st.transport());
/// proto.data_received(b"\x00\x00\x00\x04ubar");
/// assert_eq!(proto.with_handler(|h| h.0.clone()), [b"ubar".to_vec()]);
/// assert_eq!(st.value(), b"\x00\x00\x00\x02ok");
/// ```
pub trait IntNHandler: 'static {
    /// The connection is up.
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        let _ = ctx;
    }

    /// A string arrived (without its prefix).
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]);

    /// A length prefix above the maximum arrived (before any of its body).
    /// Nothing more is delivered on this connection. The default loses the
    /// connection.
    fn length_limit_exceeded(&mut self, ctx: &mut StringContext<'_>, length: u64) {
        let _ = length;
        ctx.lose_connection();
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

/// Adapts an [`IntNHandler`] to the engine.
pub(crate) struct IntHooks<N, H> {
    handler: H,
    _prefix: PhantomData<fn() -> N>,
}

impl<N: PrefixInt, H: IntNHandler> Hooks for IntHooks<N, H> {
    type Decoder = IntNDecoder<N>;

    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        self.handler.connection_made(ctx);
    }

    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]) {
        self.handler.string_received(ctx, string);
    }

    fn decode_error(&mut self, ctx: &mut StringContext<'_>, error: LengthLimitExceeded) {
        self.handler.length_limit_exceeded(ctx, error.length);
    }

    fn eof_received(&mut self, ctx: &mut StringContext<'_>) -> bool {
        self.handler.eof_received(ctx)
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.handler.connection_lost(reason);
    }
}

fn write_prefixed<N: PrefixInt>(transport: &Transport, data: &[u8]) -> Result<(), StringTooLong> {
    let prefix = prefix_bytes::<N>(data.len())?;
    transport.write_sequence(&[&prefix[8 - N::SIZE..], data]);
    Ok(())
}

/// A [`Protocol`] that reads and writes `N`-prefixed strings for an
/// [`IntNHandler`] (Twisted's `IntNStringReceiver`). Use the aliases
/// [`Int32StringReceiver`], [`Int16StringReceiver`], [`Int8StringReceiver`].
pub struct IntNStringReceiver<N: PrefixInt, H: IntNHandler> {
    engine: Rc<Engine<IntHooks<N, H>>>,
}

/// Strings with a 32-bit big-endian length prefix.
pub type Int32StringReceiver<H> = IntNStringReceiver<u32, H>;
/// Strings with a 16-bit big-endian length prefix.
pub type Int16StringReceiver<H> = IntNStringReceiver<u16, H>;
/// Strings with an 8-bit length prefix.
pub type Int8StringReceiver<H> = IntNStringReceiver<u8, H>;

impl<N: PrefixInt, H: IntNHandler> IntNStringReceiver<N, H> {
    /// A receiver for strings of at most 99,999 bytes.
    pub fn new(handler: H) -> IntNStringReceiver<N, H> {
        let hooks = IntHooks {
            handler,
            _prefix: PhantomData,
        };
        IntNStringReceiver {
            engine: Engine::new(hooks, IntNDecoder::new(), write_prefixed::<N>),
        }
    }

    /// Sets the maximum length.
    pub fn with_max_length(self, max_length: usize) -> IntNStringReceiver<N, H> {
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
        self.engine.with_hooks(|h| f(&mut h.handler))
    }
}

impl<N: PrefixInt, H: IntNHandler> Protocol for IntNStringReceiver<N, H> {
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

impl<N: PrefixInt, H: IntNHandler> fmt::Debug for IntNStringReceiver<N, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.engine.debug("IntNStringReceiver", f)
    }
}
