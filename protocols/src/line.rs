//! Lines: [`LineDecoder`] (sans-IO) and [`LineReceiver`] (its protocol
//! adapter, Twisted's `LineReceiver`), with raw mode and pausing.
//!
//! # Semantics (as Twisted's `twisted.protocols.basic.LineReceiver`)
//!
//! - A line is the bytes before a delimiter (default `\r\n`); the delimiter
//!   is removed. A delimiter split across two reads is found.
//! - A line longer than `max_length` (default 16,384) is an error, and so is
//!   an unterminated buffer of `max_length + delimiter.len()` bytes or more
//!   (so `max_length` bytes followed by the first byte of a two-byte
//!   delimiter still wait for the rest). The error carries *everything*
//!   buffered, the long line included, and empties the buffer; the
//!   receiver's [`LineHandler::line_length_exceeded`] loses the connection
//!   by default.
//! - In raw mode everything buffered is handed over as one chunk, and
//!   further reads are handed over as they come. Switching back to line mode
//!   with `extra` bytes appends them to the buffer (normally empty then), so
//!   a handler that read what it wanted from a raw chunk gives the rest back.
//! - Scanning is linear in the input: each search starts where the previous
//!   one stopped (less `delimiter.len() - 1` bytes, for a split delimiter),
//!   consumed bytes are skipped with an offset, and the buffer is compacted
//!   only when the consumed part is at least as large as the rest, so every
//!   byte is copied O(1) times. [`LineDecoder::bytes_scanned`] counts the
//!   bytes searched.
//! - [`LineReceiver`] copies only a line that spans reads. While nothing is
//!   buffered, complete lines are handed to the handler straight out of the
//!   transport's read; a line split across reads is completed in the
//!   decoder and the rest of that read is again handed out uncopied. A
//!   handler call that changes the mode or the buffer
//!   ([`LineContext::set_raw_mode`], [`LineContext::set_line_mode`],
//!   [`LineContext::clear_line_buffer`]) first moves the rest of the read
//!   into the buffer, so it sees exactly what Twisted's buffer would hold.
//!   A one-byte delimiter is searched with plain `memchr`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};

use gyre_reactor::{ConnectionLost, Producer, Protocol, Transport};
use memchr::memmem::Finder;

use crate::flow::Flow;

/// The default line delimiter, `\r\n`.
pub const DEFAULT_DELIMITER: &[u8] = b"\r\n";
/// The default maximum line length, 16,384 bytes (Twisted's `MAX_LENGTH`).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 16_384;

/// Above this capacity, an emptied buffer gives its memory back.
const SHRINK_ABOVE: usize = 64 * 1024;

/// One frame from a [`LineDecoder`], borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFrame<'a> {
    /// A complete line, without its delimiter.
    Line(&'a [u8]),
    /// Bytes received in raw mode (everything buffered).
    Raw(&'a [u8]),
}

/// A line exceeded the maximum length. `data` is everything that was
/// buffered (the long line, and what followed it); the decoder is empty
/// afterwards and parsing resumes with the next bytes fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong {
    /// All the bytes that were buffered.
    pub data: Vec<u8>,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line too long ({} bytes buffered)", self.data.len())
    }
}

impl std::error::Error for LineTooLong {}

/// A sans-IO line splitter with a raw mode: feed bytes, take frames.
///
/// ```
/// use gyre_protocols::line::{LineDecoder, LineFrame};
///
/// let mut dec = LineDecoder::with_delimiter(b"\n", 1024);
/// dec.feed(b"hello\nwor");
/// assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Line(b"hello"))));
/// assert_eq!(dec.next_frame(), Ok(None));
/// dec.feed(b"ld\nraw bytes");
/// assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Line(b"world"))));
/// dec.set_raw_mode();
/// assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Raw(b"raw bytes"))));
/// assert_eq!(dec.buffered_len(), 0);
/// ```
pub struct LineDecoder {
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    max_length: usize,
    buf: Vec<u8>,
    /// Bytes before `start` are consumed.
    start: usize,
    /// No delimiter starts in `start..scan_from`.
    scan_from: usize,
    raw: bool,
    bytes_scanned: u64,
}

impl LineDecoder {
    /// A decoder for `\r\n`-terminated lines of at most 16,384 bytes.
    pub fn new() -> LineDecoder {
        LineDecoder::with_delimiter(DEFAULT_DELIMITER, DEFAULT_MAX_LINE_LENGTH)
    }

    /// A decoder with this delimiter and maximum line length.
    ///
    /// # Panics
    /// If `delimiter` is empty (a programming error, not a peer's).
    pub fn with_delimiter(delimiter: &[u8], max_length: usize) -> LineDecoder {
        assert!(!delimiter.is_empty(), "line delimiter must not be empty");
        LineDecoder {
            delimiter: delimiter.to_vec(),
            finder: Finder::new(delimiter).into_owned(),
            max_length,
            buf: Vec::new(),
            start: 0,
            scan_from: 0,
            raw: false,
            bytes_scanned: 0,
        }
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// Changes the delimiter; buffered bytes are searched again.
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn set_delimiter(&mut self, delimiter: &[u8]) {
        assert!(!delimiter.is_empty(), "line delimiter must not be empty");
        self.delimiter = delimiter.to_vec();
        self.finder = Finder::new(delimiter).into_owned();
        self.scan_from = self.start;
    }

    /// The maximum line length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Changes the maximum line length (checked from the next
    /// [`next_frame`](Self::next_frame) on).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Whether the decoder is in raw mode.
    pub fn is_raw_mode(&self) -> bool {
        self.raw
    }

    /// From now on, [`next_frame`](Self::next_frame) returns everything
    /// buffered as [`LineFrame::Raw`].
    pub fn set_raw_mode(&mut self) {
        self.raw = true;
    }

    /// Back to lines. Bytes still buffered are split into lines again.
    pub fn set_line_mode(&mut self) {
        self.raw = false;
    }

    /// Appends bytes to the buffer.
    pub fn feed(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Drops the consumed prefix when it is at least as long as the rest, so
    /// each byte is moved at most a constant number of times.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(SHRINK_ABOVE);
            }
        } else if self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
        } else {
            return;
        }
        self.scan_from -= self.start;
        self.start = 0;
    }

    /// Everything buffered, emptying the decoder.
    fn take_all(&mut self) -> Vec<u8> {
        let data = self.buf[self.start..].to_vec();
        self.buf.clear();
        self.start = 0;
        self.scan_from = 0;
        data
    }

    /// The next frame, `Ok(None)` if more bytes are needed, or
    /// [`LineTooLong`] (see the module docs for the exact rule).
    pub fn next_frame(&mut self) -> Result<Option<LineFrame<'_>>, LineTooLong> {
        if self.start >= self.buf.len() {
            return Ok(None);
        }
        if self.raw {
            let s = self.start;
            self.start = self.buf.len();
            self.scan_from = self.start;
            return Ok(Some(LineFrame::Raw(&self.buf[s..])));
        }
        let dlen = self.delimiter.len();
        let from = self.scan_from.max(self.start);
        let found = self.find_delimiter(&self.buf[from..]);
        match found {
            Some(i) => {
                self.bytes_scanned += (i + dlen) as u64;
                let end = from + i;
                if end - self.start > self.max_length {
                    return Err(LineTooLong {
                        data: self.take_all(),
                    });
                }
                let s = self.start;
                self.start = end + dlen;
                self.scan_from = self.start;
                Ok(Some(LineFrame::Line(&self.buf[s..end])))
            }
            None => {
                self.bytes_scanned += (self.buf.len() - from) as u64;
                // A delimiter may start in the last `dlen - 1` bytes.
                self.scan_from = self.buf.len().saturating_sub(dlen - 1).max(self.start);
                if self.buf.len() - self.start >= self.max_length.saturating_add(dlen) {
                    Err(LineTooLong {
                        data: self.take_all(),
                    })
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The offset of the first delimiter in `haystack`: plain `memchr` for
    /// a one-byte delimiter (`\n`, the herd's), a precompiled substring
    /// search otherwise.
    fn find_delimiter(&self, haystack: &[u8]) -> Option<usize> {
        match self.delimiter[..] {
            [byte] => memchr::memchr(byte, haystack),
            _ => self.finder.find(haystack),
        }
    }

    /// Where the first complete line of `input` ends, for a decoder with
    /// nothing buffered, in line mode: `Some(len)` for a line of `len`
    /// bytes (the delimiter follows it) within the maximum length, `None`
    /// when `input` holds no complete line or its first line is too long
    /// (then feed `input` and let [`next_frame`](Self::next_frame) decide).
    /// Counts the bytes searched like `next_frame`. This is what lets a
    /// receiver hand lines out of the read buffer without copying them.
    fn complete_line_in(&mut self, input: &[u8]) -> Option<usize> {
        if self.raw || self.start < self.buf.len() {
            return None;
        }
        let found = self.find_delimiter(input);
        let len = found?;
        self.bytes_scanned += (len + self.delimiter.len()) as u64;
        (len <= self.max_length).then_some(len)
    }

    /// For a decoder in line mode holding a partial line: how many bytes of
    /// `input` complete it (up to and including the first delimiter in
    /// `input`), or `None` when `input` has no delimiter or none is
    /// buffered. A receiver feeds just those bytes, so that only a line
    /// that spans reads is copied. (The decoder searches them again when
    /// they are fed; a delimiter split across the two is found then.)
    fn bytes_completing_line(&self, input: &[u8]) -> Option<usize> {
        if self.raw || self.start >= self.buf.len() {
            return None;
        }
        self.find_delimiter(input).map(|i| i + self.delimiter.len())
    }

    /// Empties the buffer and returns what it held (Twisted's
    /// `clearLineBuffer`).
    pub fn clear(&mut self) -> Vec<u8> {
        self.take_all()
    }

    /// The bytes buffered and not yet returned.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// How many bytes are buffered.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Total bytes searched for delimiters so far: at most the bytes fed
    /// plus `delimiter.len() - 1` per feed (a split delimiter is searched
    /// again), so decoding is linear in the input.
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }

    /// Appends `line` and the delimiter to `out`.
    pub fn encode(&self, line: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(line);
        out.extend_from_slice(&self.delimiter);
    }
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new()
    }
}

impl fmt::Debug for LineDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineDecoder")
            .field("delimiter", &self.delimiter)
            .field("max_length", &self.max_length)
            .field("raw", &self.raw)
            .field("buffered", &self.buffered_len())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The protocol adapter
// ---------------------------------------------------------------------------

/// What a line protocol does with its lines: implement this and wrap it in a
/// [`LineReceiver`].
///
/// Every hook gets a [`LineContext`] to write lines, switch modes, pause, or
/// reach the transport. Hooks may call any transport method, closing
/// included: after a close, no further line is delivered.
///
/// ```
/// use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// /// Answers every line with its length; `quit` closes.
/// struct Lengths;
///
/// impl LineHandler for Lengths {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         if line == b"quit" {
///             ctx.lose_connection();
///         } else {
///             ctx.send_line(line.len().to_string().as_bytes());
///         }
///     }
/// }
///
/// let st = StringTransport::new();
/// let mut proto = LineReceiver::new(Lengths);
/// proto.connection_made(st.transport());
/// proto.data_received(b"hello\r\nhi\r\nquit\r\nignored\r\n");
/// assert_eq!(st.value(), b"5\r\n2\r\n");
/// assert!(st.disconnecting());
/// ```
pub trait LineHandler: 'static {
    /// The connection is up (the context's transport is usable).
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let _ = ctx;
    }

    /// A line arrived, without its delimiter.
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]);

    /// Bytes arrived in raw mode. Switch back with
    /// [`LineContext::set_line_mode`], giving back what was not consumed.
    /// The default drops the data with a warning: a handler that uses raw
    /// mode must implement this.
    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = ctx;
        log::warn!(
            "LineHandler::raw_data_received not implemented; {} bytes dropped",
            data.len()
        );
    }

    /// A line was too long. `data` is everything that was buffered, starting
    /// with the long line (see the [module docs](crate::line)); the buffer is
    /// now empty. The default loses the connection.
    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = data;
        ctx.lose_connection();
    }

    /// The peer closed its write side; return `true` to keep ours open (see
    /// [`Protocol::eof_received`]). A partial line still buffered is not
    /// delivered.
    fn eof_received(&mut self, ctx: &mut LineContext<'_>) -> bool {
        let _ = ctx;
        false
    }

    /// The connection is closed. Called once.
    fn connection_lost(&mut self, reason: ConnectionLost) {
        let _ = reason;
    }
}

/// The receiver state every context and control handle reaches.
struct LineShared {
    flow: Flow,
    decoder: RefCell<LineDecoder>,
    me: Weak<dyn LineTarget>,
}

impl LineShared {
    fn send_line(&self, transport: &Transport, line: &[u8]) {
        let dec = self.decoder.borrow();
        transport.write_sequence(&[line, dec.delimiter()]);
    }
}

/// What a [`LineControl`] reaches through its weak pointer.
trait LineTarget {
    fn shared(&self) -> &LineShared;
    fn deliver(&self);
}

struct LineInner<H> {
    shared: LineShared,
    handler: RefCell<H>,
    scratch: RefCell<Vec<u8>>,
}

/// What the delivery loop hands to the handler next.
enum Event {
    Line,
    Raw,
    TooLong(Vec<u8>),
}

impl<H: LineHandler> LineTarget for LineInner<H> {
    fn shared(&self) -> &LineShared {
        &self.shared
    }

    /// Hands buffered frames to the handler until it pauses, closes, or the
    /// buffer runs dry. Does nothing when called from inside a handler call
    /// (that call's loop goes on instead).
    fn deliver(&self) {
        let flow = &self.shared.flow;
        let Some(_busy) = flow.enter() else {
            return;
        };
        let Some(transport) = flow.transport() else {
            return;
        };
        let mut scratch = std::mem::take(&mut *self.scratch.borrow_mut());
        loop {
            if !flow.may_deliver(&transport) {
                break;
            }
            let event = {
                let mut dec = self.shared.decoder.borrow_mut();
                match dec.next_frame() {
                    Ok(None) => break,
                    Ok(Some(LineFrame::Line(line))) => {
                        scratch.clear();
                        scratch.extend_from_slice(line);
                        Event::Line
                    }
                    Ok(Some(LineFrame::Raw(data))) => {
                        scratch.clear();
                        scratch.extend_from_slice(data);
                        Event::Raw
                    }
                    Err(LineTooLong { data }) => Event::TooLong(data),
                }
            };
            let mut ctx = LineContext::new(&self.shared, &transport);
            let mut handler = self.handler.borrow_mut();
            match event {
                Event::Line => handler.line_received(&mut ctx, &scratch),
                Event::Raw => handler.raw_data_received(&mut ctx, &scratch),
                Event::TooLong(data) => handler.line_length_exceeded(&mut ctx, &data),
            }
        }
        *self.scratch.borrow_mut() = scratch;
    }
}

impl<H: LineHandler> LineInner<H> {
    /// Hands the complete lines at the start of `data` (a read) to the
    /// handler straight out of the read buffer, while nothing is buffered
    /// and the receiver is in line mode and delivering: the common case of
    /// whole lines per read costs no copy. Returns the bytes it did not
    /// hand out (a partial line, a too-long line, or everything after a
    /// pause, a close or a mode change), which the caller feeds to the
    /// decoder; a handler that changed the buffer or the mode already had
    /// them moved there (then nothing is returned).
    fn lines_from_read<'d>(&self, transport: &Transport, data: &'d [u8]) -> &'d [u8] {
        let flow = &self.shared.flow;
        let Some(_busy) = flow.enter() else {
            return data;
        };
        let mut rest = data;
        while !rest.is_empty() && flow.may_deliver(transport) {
            let (found, delimiter_len) = {
                let mut dec = self.shared.decoder.borrow_mut();
                (dec.complete_line_in(rest), dec.delimiter().len())
            };
            let Some(len) = found else {
                break;
            };
            let (line, after) = rest.split_at(len);
            let after = &after[delimiter_len..];
            let mut ctx = LineContext::new(&self.shared, transport);
            ctx.unread.set(after);
            self.handler.borrow_mut().line_received(&mut ctx, line);
            // The handler moved the rest into the decoder (a mode or buffer
            // change): it is delivered from there.
            let spilled = ctx.unread.get().is_empty();
            rest = if spilled { &[] } else { after };
        }
        rest
    }
}

/// What a [`LineHandler`]'s hooks can do: write lines, switch between line
/// and raw mode, clear the buffer, pause and resume, reach the transport.
///
/// Mode switches and pauses take effect before the next frame: the receiver
/// delivers one frame at a time and looks at its state between frames.
pub struct LineContext<'a> {
    shared: &'a LineShared,
    transport: &'a Transport,
    /// While lines are handed out of a read without copying: the bytes of
    /// that read after the current line, not yet in the decoder. A call
    /// that needs the buffer moves them into it first (see
    /// [`spill`](Self::spill)).
    unread: Cell<&'a [u8]>,
}

impl<'a> LineContext<'a> {
    /// A context with nothing unread outside the decoder.
    fn new(shared: &'a LineShared, transport: &'a Transport) -> LineContext<'a> {
        LineContext {
            shared,
            transport,
            unread: Cell::new(&[]),
        }
    }

    /// Moves the unread rest of the current read into the decoder, so that
    /// what is buffered is what Twisted's buffer would hold (the bytes after
    /// this line). Called before any change to the buffer or the mode.
    fn spill(&self) {
        let unread = self.unread.replace(&[]);
        if !unread.is_empty() {
            self.shared.decoder.borrow_mut().feed(unread);
        }
    }

    /// The connection's transport.
    pub fn transport(&self) -> &Transport {
        self.transport
    }

    /// Writes `line` and the delimiter.
    pub fn send_line(&self, line: &[u8]) {
        self.shared.send_line(self.transport, line);
    }

    /// Sends what is buffered, then closes; no further line is delivered.
    pub fn lose_connection(&self) {
        self.transport.lose_connection();
    }

    /// Further bytes (those buffered included) go to
    /// [`LineHandler::raw_data_received`].
    pub fn set_raw_mode(&self) {
        self.spill();
        self.shared.decoder.borrow_mut().set_raw_mode();
    }

    /// Back to lines; `extra` (bytes a raw handler did not consume) is
    /// appended to the buffer and split into lines. Called from
    /// `line_received`, pass no `extra`: it would go after what is buffered.
    pub fn set_line_mode(&self, extra: &[u8]) {
        self.spill();
        let mut dec = self.shared.decoder.borrow_mut();
        dec.set_line_mode();
        if !extra.is_empty() {
            dec.feed(extra);
        }
    }

    /// Whether the receiver is in raw mode.
    pub fn is_raw_mode(&self) -> bool {
        self.shared.decoder.borrow().is_raw_mode()
    }

    /// Empties the buffer and returns what it held (Twisted's
    /// `clearLineBuffer`): from `line_received`, the bytes after this line.
    pub fn clear_line_buffer(&self) -> Vec<u8> {
        self.spill();
        self.shared.decoder.borrow_mut().clear()
    }

    /// Stops delivering lines and pauses reading until resumed.
    pub fn pause_producing(&self) {
        self.shared.flow.pause();
    }

    /// Undoes [`pause_producing`](Self::pause_producing); buffered lines are
    /// delivered once this hook returns.
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

    /// A handle to pause, resume or write from outside a hook (a timer, a
    /// Deferred callback, another connection).
    pub fn control(&self) -> LineControl {
        LineControl {
            target: self.shared.me.clone(),
        }
    }

    /// The maximum line length.
    pub fn max_length(&self) -> usize {
        self.shared.decoder.borrow().max_length()
    }

    /// Changes the maximum line length.
    pub fn set_max_length(&self, max_length: usize) {
        self.shared.decoder.borrow_mut().set_max_length(max_length);
    }
}

impl fmt::Debug for LineContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineContext")
            .field("decoder", &*self.shared.decoder.borrow())
            .field("paused", &self.is_paused())
            .finish()
    }
}

/// A cheap, clonable handle on a [`LineReceiver`], for use outside its hooks:
/// pause and resume it (resuming delivers buffered lines at once), or write
/// lines to its connection. It holds a weak reference: once the receiver is
/// dropped, every method does nothing.
///
/// It is also a [`Producer`]: register it with the transport
/// (`transport.register_producer(Rc::new(control))`) and reading pauses
/// while the write buffer is full, as Twisted's `LineReceiver` does.
///
/// ```
/// use std::{cell::RefCell, rc::Rc, time::Duration};
/// use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
/// use gyre_reactor::clock::{Clock, ManualClock};
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// /// Takes a one-tick break after every line.
/// struct Slow {
///     clock: Clock,
///     seen: Rc<RefCell<Vec<Vec<u8>>>>,
/// }
///
/// impl LineHandler for Slow {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         self.seen.borrow_mut().push(line.to_vec());
///         ctx.pause_producing();
///         let control = ctx.control();
///         self.clock.call_later(Duration::ZERO, move || control.resume_producing());
///     }
/// }
///
/// let manual = ManualClock::new();
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let st = StringTransport::new();
/// let mut proto = LineReceiver::new(Slow { clock: manual.clock(), seen: seen.clone() });
/// proto.connection_made(st.transport());
/// proto.data_received(b"a\r\nb\r\n");
/// assert_eq!(seen.borrow().len(), 1);
/// assert!(st.reading_paused());
/// manual.advance(Duration::ZERO); // resumes: delivers "b", pauses again
/// assert_eq!(seen.borrow().len(), 2);
/// manual.advance(Duration::ZERO); // resumes: nothing buffered
/// assert!(!st.reading_paused());
/// ```
#[derive(Clone)]
pub struct LineControl {
    target: Weak<dyn LineTarget>,
}

impl LineControl {
    /// Stops delivering lines and pauses reading.
    pub fn pause_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            t.shared().flow.pause();
        }
    }

    /// Resumes reading and, outside a hook, delivers buffered lines now
    /// (until the handler pauses again); inside a hook they follow when it
    /// returns.
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

    /// Writes `line` and the delimiter, if connected.
    pub fn send_line(&self, line: &[u8]) {
        if let Some(t) = self.target.upgrade() {
            if let Some(transport) = t.shared().flow.transport() {
                t.shared().send_line(&transport, line);
            }
        }
    }

    /// Closes the connection from outside a hook (a timer, a Deferred
    /// callback, another connection): answers already written are flushed
    /// first, then the connection closes ([`Transport::lose_connection`]);
    /// no further line is delivered. Does nothing before `connection_made`,
    /// after the receiver is dropped, or on a connection already closing.
    ///
    /// ```
    /// use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
    /// use gyre_reactor::testing::StringTransport;
    /// use gyre_reactor::Protocol;
    ///
    /// struct Answer;
    /// impl LineHandler for Answer {
    ///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
    ///         ctx.send_line(line);
    ///     }
    /// }
    ///
    /// let st = StringTransport::new();
    /// let mut proto = LineReceiver::new(Answer);
    /// let control = proto.control();
    /// proto.connection_made(st.transport());
    /// proto.data_received(b"last words\r\n");
    /// control.lose_connection(); // e.g. from a shutdown timer
    /// proto.data_received(b"too late\r\n");
    /// assert_eq!(st.value(), b"last words\r\n");
    /// assert!(st.disconnecting());
    /// ```
    pub fn lose_connection(&self) {
        if let Some(transport) = self.transport() {
            transport.lose_connection();
        }
    }

    /// The transport, once connected.
    pub fn transport(&self) -> Option<Transport> {
        self.target
            .upgrade()
            .and_then(|t| t.shared().flow.transport())
    }

    /// Whether the receiver exists, is connected, and is not closed.
    pub fn is_connected(&self) -> bool {
        self.target.upgrade().is_some_and(|t| {
            let flow = &t.shared().flow;
            !flow.is_lost() && flow.transport().is_some_and(|tr| !tr.is_closing())
        })
    }
}

impl Producer for LineControl {
    fn pause_producing(&self) {
        LineControl::pause_producing(self);
    }

    fn resume_producing(&self) {
        LineControl::resume_producing(self);
    }

    fn stop_producing(&self) {
        if let Some(t) = self.target.upgrade() {
            t.shared().flow.stop_quietly();
        }
    }
}

impl fmt::Debug for LineControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineControl")
            .field("alive", &(self.target.strong_count() > 0))
            .field("paused", &self.is_paused())
            .finish()
    }
}

/// A [`Protocol`] that splits its input into lines (or raw chunks) for a
/// [`LineHandler`] (Twisted's `LineReceiver`).
///
/// Defaults: delimiter `\r\n`, maximum line length 16,384; change them with
/// [`with_delimiter`](Self::with_delimiter) and
/// [`with_max_length`](Self::with_max_length).
///
/// ```
/// use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Protocol;
///
/// #[derive(Default)]
/// struct Collect(Vec<Vec<u8>>);
/// impl LineHandler for Collect {
///     fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
///         self.0.push(line.to_vec());
///     }
/// }
///
/// let st = StringTransport::new();
/// let mut proto = LineReceiver::new(Collect::default()).with_delimiter(b"\n");
/// proto.connection_made(st.transport());
/// proto.data_received(b"one\ntw");
/// proto.data_received(b"o\n");
/// assert_eq!(proto.with_handler(|h| h.0.clone()), [b"one".to_vec(), b"two".to_vec()]);
/// ```
pub struct LineReceiver<H: LineHandler> {
    inner: Rc<LineInner<H>>,
}

impl<H: LineHandler> LineReceiver<H> {
    /// A receiver for `\r\n` lines of at most 16,384 bytes.
    pub fn new(handler: H) -> LineReceiver<H> {
        let inner = Rc::new_cyclic(|me: &Weak<LineInner<H>>| {
            let me: Weak<dyn LineTarget> = me.clone();
            LineInner {
                shared: LineShared {
                    flow: Flow::default(),
                    decoder: RefCell::new(LineDecoder::new()),
                    me,
                },
                handler: RefCell::new(handler),
                scratch: RefCell::new(Vec::new()),
            }
        });
        LineReceiver { inner }
    }

    /// Uses `delimiter` (for example `b"\n"`).
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn with_delimiter(self, delimiter: &[u8]) -> LineReceiver<H> {
        self.inner
            .shared
            .decoder
            .borrow_mut()
            .set_delimiter(delimiter);
        self
    }

    /// Sets the maximum line length.
    pub fn with_max_length(self, max_length: usize) -> LineReceiver<H> {
        self.inner
            .shared
            .decoder
            .borrow_mut()
            .set_max_length(max_length);
        self
    }

    /// A control handle (see [`LineControl`]).
    pub fn control(&self) -> LineControl {
        LineControl {
            target: self.inner.shared.me.clone(),
        }
    }

    /// Runs `f` on the handler (to inspect it in tests, say).
    ///
    /// # Panics
    /// If called from inside one of the handler's own hooks.
    pub fn with_handler<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        f(&mut self.inner.handler.borrow_mut())
    }

    /// Bytes buffered and not yet delivered.
    pub fn buffered_len(&self) -> usize {
        self.inner.shared.decoder.borrow().buffered_len()
    }

    /// Bytes searched for delimiters so far (see
    /// [`LineDecoder::bytes_scanned`]).
    pub fn bytes_scanned(&self) -> u64 {
        self.inner.shared.decoder.borrow().bytes_scanned()
    }

    /// Calls a handler hook with a context, as a handler call (so a resume
    /// inside it does not recurse), then delivers what became deliverable.
    fn call_hook<R>(
        &self,
        transport: &Transport,
        f: impl FnOnce(&mut H, &mut LineContext<'_>) -> R,
    ) -> R {
        let result = {
            let _busy = self.inner.shared.flow.enter();
            let mut ctx = LineContext::new(&self.inner.shared, transport);
            f(&mut self.inner.handler.borrow_mut(), &mut ctx)
        };
        self.inner.deliver();
        result
    }
}

impl<H: LineHandler> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.shared.flow.set_transport(transport.clone());
        self.call_hook(&transport, |h, ctx| h.connection_made(ctx));
    }

    fn data_received(&mut self, data: &[u8]) {
        let shared = &self.inner.shared;
        let Some(transport) = shared.flow.transport() else {
            return;
        };
        if shared.flow.is_lost() || transport.is_closing() {
            return; // nobody will read it
        }
        let raw_passthrough = {
            let dec = shared.decoder.borrow();
            dec.is_raw_mode() && dec.buffered_len() == 0 && shared.flow.may_deliver(&transport)
        };
        if raw_passthrough {
            // Raw mode with nothing buffered: hand the bytes over uncopied.
            self.call_hook(&transport, |h, ctx| h.raw_data_received(ctx, data));
            return;
        }
        let mut data = data;
        // A line spanning reads is completed in the decoder (the one copy),
        // and the rest of this read handed out without copying.
        let completing = shared.decoder.borrow().bytes_completing_line(data);
        if let Some(end) = completing {
            shared.decoder.borrow_mut().feed(&data[..end]);
            self.inner.deliver();
            data = &data[end..];
        }
        let unread = self.inner.lines_from_read(&transport, data);
        if !unread.is_empty() {
            shared.decoder.borrow_mut().feed(unread);
        }
        self.inner.deliver();
    }

    fn eof_received(&mut self) -> bool {
        match self.inner.shared.flow.transport() {
            Some(transport) => self.call_hook(&transport, |h, ctx| h.eof_received(ctx)),
            None => false,
        }
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        let flow = &self.inner.shared.flow;
        flow.set_lost();
        let _busy = flow.enter();
        self.inner.handler.borrow_mut().connection_lost(reason);
    }
}

impl<H: LineHandler> fmt::Debug for LineReceiver<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineReceiver")
            .field("decoder", &*self.inner.shared.decoder.borrow())
            .field("paused", &self.inner.shared.flow.is_paused())
            .finish()
    }
}
