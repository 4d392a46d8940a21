//! LineDecoder and LineReceiver, ported from Twisted's
//! `twisted/protocols/test/test_basic.py` (test names in the comments).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::clock::{Clock, ManualClock};
use gyre_reactor::testing::{connect_in_memory, StringTransport};
use gyre_reactor::{ConnectionLost, Protocol, Transport};

use crate::line::{LineContext, LineDecoder, LineFrame, LineHandler, LineReceiver, LineTooLong};

fn connected<P: Protocol>(mut proto: P) -> (P, StringTransport) {
    let st = StringTransport::new();
    proto.connection_made(st.transport());
    (proto, st)
}

fn feed_in_chunks<P: Protocol>(proto: &mut P, data: &[u8], size: usize) {
    for chunk in data.chunks(size) {
        proto.data_received(chunk);
    }
}

/// Twisted's `LineTester`: acts on `pause`, `rawpause`, `stop`, `len N`,
/// `produce`, `unproduce`, and an empty line (raw mode for `len` bytes).
struct LineTester {
    clock: Option<Clock>,
    received: Vec<Vec<u8>>,
    length: usize,
}

const TESTER_MAX: usize = 64;

impl LineTester {
    fn new(clock: Option<Clock>) -> LineReceiver<LineTester> {
        let tester = LineTester {
            clock,
            received: Vec::new(),
            length: 0,
        };
        LineReceiver::new(tester)
            .with_delimiter(b"\n")
            .with_max_length(TESTER_MAX)
    }

    fn resume_soon(&self, ctx: &LineContext<'_>) {
        let control = ctx.control();
        if let Some(clock) = &self.clock {
            clock.call_later(Duration::ZERO, move || control.resume_producing());
        }
    }
}

impl LineHandler for LineTester {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.received.push(line.to_vec());
        if line.is_empty() {
            ctx.set_raw_mode();
        } else if line == b"pause" {
            ctx.pause_producing();
            self.resume_soon(ctx);
        } else if line == b"rawpause" {
            ctx.pause_producing();
            ctx.set_raw_mode();
            self.received.push(Vec::new());
            self.resume_soon(ctx);
        } else if line == b"stop" {
            ctx.stop_producing();
        } else if let Some(n) = line.strip_prefix(b"len ") {
            self.length = std::str::from_utf8(n)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if line.starts_with(b"produce") {
            ctx.transport().register_producer(Rc::new(ctx.control()));
        } else if line.starts_with(b"unproduce") {
            ctx.transport().unregister_producer();
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let n = self.length.min(data.len());
        let (data, rest) = data.split_at(n);
        self.length -= n;
        if let Some(last) = self.received.last_mut() {
            last.extend_from_slice(data);
        }
        if self.length == 0 {
            ctx.set_line_mode(rest);
        }
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        if line.len() > TESTER_MAX + 1 {
            ctx.set_line_mode(&line[TESTER_MAX + 1..]);
        }
    }
}

fn received(proto: &LineReceiver<LineTester>) -> Vec<Vec<u8>> {
    proto.with_handler(|h| h.received.clone())
}

fn bytes_list(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|b| b.to_vec()).collect()
}

const BUFFER: &[u8] = b"len 10\n\n0123456789len 5\n\n1234\nlen 20\nfoo 123\n\n0123456789\n012345678len 0\nfoo 5\n\n1234567890123456789012345678901234567890123456789012345678901234567890\nlen 1\n\na";

fn buffer_output() -> Vec<Vec<u8>> {
    bytes_list(&[
        b"len 10",
        b"0123456789",
        b"len 5",
        b"1234\n",
        b"len 20",
        b"foo 123",
        b"0123456789\n012345678",
        b"len 0",
        b"foo 5",
        b"",
        b"67890",
        b"len 1",
        b"a",
    ])
}

/// (1) `test_buffer`: lines, raw mode for N bytes, back to lines, and a long
/// line, fed in chunks of every size (Twisted: 1 to 9) give the same output.
#[test]
fn chunking_invariance_of_lines_and_raw_mode() {
    for size in 1..=BUFFER.len() {
        let (mut proto, st) = connected(LineTester::new(None));
        feed_in_chunks(&mut proto, BUFFER, size);
        assert_eq!(received(&proto), buffer_output(), "chunk size {size}");
        assert!(!st.disconnecting());
    }
}

/// Collects lines; raw mode unused.
#[derive(Default)]
struct Collect {
    lines: Vec<Vec<u8>>,
    too_long: Vec<Vec<u8>>,
    lost: Vec<String>,
}

impl LineHandler for Collect {
    fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
        self.lines.push(line.to_vec());
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.lost.push(reason.to_string());
    }
}

/// (2) `test_maximumLineLengthPartialDelimiter`: a `\r\n` split across two
/// reads, `max_length` 3: `xyz` is accepted, no disconnect.
#[test]
fn partial_delimiter_at_max_length_is_accepted() {
    let (mut proto, st) = connected(LineReceiver::new(Collect::default()).with_max_length(3));
    proto.data_received(b"xyz");
    proto.data_received(b"\r");
    proto.data_received(b"\nxyz");
    assert!(!st.disconnecting());
    assert_eq!(
        proto.with_handler(|h| h.lines.clone()),
        bytes_list(&[b"xyz"])
    );
}

/// (3) `test_notQuiteMaximumLineLengthUnfinished`, `test_maximumLineLength`,
/// `test_maximumLineLengthRemaining` (default receiver, max 16,384).
#[test]
fn max_length_boundaries() {
    let max = crate::line::DEFAULT_MAX_LINE_LENGTH;

    // max bytes plus the first byte of the delimiter, unterminated: waits.
    let (mut proto, st) = connected(LineReceiver::new(Collect::default()));
    let mut data = vec![b'x'; max];
    data.push(b'\r');
    proto.data_received(&data);
    assert!(!st.disconnecting());

    // max + 1 bytes, terminated: too long.
    let (mut proto, st) = connected(LineReceiver::new(Collect::default()));
    let mut data = vec![b'x'; max + 1];
    data.extend_from_slice(b"\r\nr");
    proto.data_received(&data);
    assert!(st.disconnecting());
    assert!(proto.with_handler(|h| h.lines.is_empty()));

    // max + 2 bytes (max + delimiter length), unterminated: too long.
    let (mut proto, st) = connected(LineReceiver::new(Collect::default()));
    proto.data_received(&vec![b'x'; max + 2]);
    assert!(st.disconnecting());
}

/// Twisted's `ExcessivelyLargeLineCatcher`: records what
/// `line_length_exceeded` gets, does not disconnect.
impl Collect {
    fn catcher() -> LineReceiver<CatchLong> {
        LineReceiver::new(CatchLong(Collect::default())).with_max_length(6)
    }
}

struct CatchLong(Collect);

impl LineHandler for CatchLong {
    fn line_received(&mut self, _: &mut LineContext<'_>, _: &[u8]) {}

    fn line_length_exceeded(&mut self, _: &mut LineContext<'_>, data: &[u8]) {
        self.0.too_long.push(data.to_vec());
    }
}

/// (4) `LineReceiverLineLengthExceededTests` (max 6): what
/// `line_length_exceeded` receives.
#[test]
fn line_length_exceeded_receives_the_buffered_data() {
    let excessive = vec![b'x'; 6 * 2 + 2]; // 14 bytes
    let long_lines = |proto: &LineReceiver<CatchLong>| proto.with_handler(|h| h.0.too_long.clone());

    // test_longUnendedLine: all 14 bytes.
    let (mut proto, st) = connected(Collect::catcher());
    proto.data_received(&excessive);
    assert_eq!(long_lines(&proto), std::slice::from_ref(&excessive));
    assert!(!st.disconnecting());

    // test_longLineAfterShortLine: only what follows the short line.
    let (mut proto, _) = connected(Collect::catcher());
    let mut data = b"x\r\n".to_vec();
    data.extend_from_slice(&excessive);
    proto.data_received(&data);
    assert_eq!(long_lines(&proto), std::slice::from_ref(&excessive));

    // test_longLineWithDelimiter: the whole input.
    let (mut proto, _) = connected(Collect::catcher());
    let data = [&excessive[..], b"\r\n", &excessive[..]].concat();
    proto.data_received(&data);
    assert_eq!(long_lines(&proto), [data]);

    // test_multipleLongLines: the whole input.
    let (mut proto, _) = connected(Collect::catcher());
    let data = [&excessive[..], b"\r\n", &excessive[..], b"\r\n"].concat();
    proto.data_received(&data);
    assert_eq!(long_lines(&proto), [data]);
    assert_eq!(proto.buffered_len(), 0);
}

/// Twisted's `ClearingReceiver`.
#[derive(Default)]
struct Clearing {
    line: Vec<u8>,
    rest: Vec<u8>,
}

impl LineHandler for Clearing {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.line = line.to_vec();
        self.rest = ctx.clear_line_buffer();
    }
}

/// (5) `test_clearLineBuffer`.
#[test]
fn clear_line_buffer_from_line_received() {
    let (mut proto, _) = connected(LineReceiver::new(Clearing::default()));
    proto.data_received(b"foo\r\nbar\r\nbaz");
    assert_eq!(
        proto.with_handler(|h| (h.line.clone(), h.rest.clone())),
        (b"foo".to_vec(), b"bar\r\nbaz".to_vec())
    );
    proto.data_received(b"quux\r\n");
    assert_eq!(
        proto.with_handler(|h| (h.line.clone(), h.rest.clone())),
        (b"quux".to_vec(), Vec::new())
    );
}

/// (6) `test_pausing`: a pause from `line_received`, resumed by a zero-delay
/// call on a manual clock; the lines after it arrive only after the resume.
#[test]
fn pause_in_line_received_resumed_by_zero_delay_call() {
    let data = b"twiddle1\ntwiddle2\npause\ntwiddle3\n";
    let before = bytes_list(&[b"twiddle1", b"twiddle2", b"pause"]);
    let after = bytes_list(&[b"twiddle1", b"twiddle2", b"pause", b"twiddle3"]);
    for size in 1..=data.len() {
        let manual = ManualClock::new();
        let (mut proto, st) = connected(LineTester::new(Some(manual.clock())));
        feed_in_chunks(&mut proto, data, size);
        assert_eq!(received(&proto), before, "chunk size {size}");
        assert!(st.reading_paused());
        manual.advance(Duration::ZERO);
        assert_eq!(received(&proto), after, "chunk size {size}");
        assert!(!st.reading_paused());
    }
}

/// (7) `test_rawPausing`: raw mode entered while paused; `12345` (raw) then
/// `twiddle3` (a line) arrive in order after the resume.
#[test]
fn raw_mode_while_paused() {
    let data = b"twiddle1\ntwiddle2\nlen 5\nrawpause\n12345twiddle3\n";
    let before = bytes_list(&[b"twiddle1", b"twiddle2", b"len 5", b"rawpause", b""]);
    let after = bytes_list(&[
        b"twiddle1",
        b"twiddle2",
        b"len 5",
        b"rawpause",
        b"12345",
        b"twiddle3",
    ]);
    for size in 1..=data.len() {
        let manual = ManualClock::new();
        let (mut proto, _) = connected(LineTester::new(Some(manual.clock())));
        feed_in_chunks(&mut proto, data, size);
        assert_eq!(received(&proto), before, "chunk size {size}");
        manual.advance(Duration::ZERO);
        assert_eq!(received(&proto), after, "chunk size {size}");
    }
}

/// `test_stopProducing`: nothing is delivered after `stop_producing`, which
/// also loses the connection.
#[test]
fn stop_producing_stops_delivery() {
    let data = b"twiddle1\ntwiddle2\nstop\nmore\nstuff\n";
    for size in 1..=data.len() {
        let (mut proto, st) = connected(LineTester::new(None));
        feed_in_chunks(&mut proto, data, size);
        assert_eq!(
            received(&proto),
            bytes_list(&[b"twiddle1", b"twiddle2", b"stop"])
        );
        assert!(st.disconnecting());
    }
}

/// `test_lineReceiverAsProducer`: the control handle registers as the
/// transport's producer and back.
#[test]
fn line_receiver_as_producer() {
    let (mut proto, st) = connected(LineTester::new(None));
    proto.data_received(b"produce\nhello world\n");
    let producer = st.producer().expect("registered");
    producer.pause_producing();
    assert!(st.reading_paused());
    proto.data_received(b"unproduce\ngoodbye\n");
    assert_eq!(received(&proto), bytes_list(&[b"produce", b"hello world"]));
    producer.resume_producing(); // delivers both lines at once
    assert_eq!(
        received(&proto),
        bytes_list(&[b"produce", b"hello world", b"unproduce", b"goodbye"])
    );
    assert!(st.producer().is_none());
    assert!(!st.reading_paused());
}

/// Twisted's `FlippingLineTester`: a line switches to raw mode; raw data
/// switches back, giving back all but its first byte.
#[derive(Default)]
struct Flipping {
    lines: Vec<u8>,
}

impl LineHandler for Flipping {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.extend_from_slice(line);
        ctx.set_raw_mode();
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        ctx.set_line_mode(data.get(1..).unwrap_or_default());
    }
}

/// (8) `test_stackRecursion`: 1,000 switches between line and raw mode in one
/// buffer, without recursion.
#[test]
fn thousand_mode_switches_in_one_buffer() {
    let limit = 1000;
    let (mut proto, _) = connected(LineReceiver::new(Flipping::default()).with_delimiter(b"\n"));
    proto.data_received(&b"x\nx".repeat(limit));
    assert_eq!(proto.with_handler(|h| h.lines.clone()), vec![b'x'; limit]);
}

/// Twisted's `ConsumingProtocol`: writes each line and pauses.
struct Consuming;

impl LineHandler for Consuming {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.transport().write(line);
        ctx.pause_producing();
    }
}

/// (9) `ProducerTests.test_pauseResume`: each resume delivers exactly one
/// buffered line when the handler pauses after each line.
#[test]
fn pause_resume_ledger() {
    let (mut proto, st) = connected(LineReceiver::new(Consuming));
    let control = proto.control();
    let state = |st: &StringTransport| (st.value(), st.reading_paused(), control.is_paused());

    proto.data_received(b"hello, ");
    assert_eq!(state(&st), (b"".to_vec(), false, false));

    proto.data_received(b"world\r\n");
    assert_eq!(state(&st), (b"hello, world".to_vec(), true, true));

    control.resume_producing(); // nothing buffered: just unpaused
    assert_eq!(state(&st), (b"hello, world".to_vec(), false, false));

    proto.data_received(b"hello\r\nworld\r\n");
    assert_eq!(state(&st), (b"hello, worldhello".to_vec(), true, true));

    control.resume_producing(); // delivers one line, paused again
    assert_eq!(state(&st), (b"hello, worldhelloworld".to_vec(), true, true));

    proto.data_received(b"goodbye\r\n"); // paused: no visible effect
    assert_eq!(state(&st), (b"hello, worldhelloworld".to_vec(), true, true));

    control.resume_producing();
    assert_eq!(
        state(&st),
        (b"hello, worldhelloworldgoodbye".to_vec(), true, true)
    );

    control.resume_producing();
    assert_eq!(
        state(&st),
        (b"hello, worldhelloworldgoodbye".to_vec(), false, false)
    );
}

/// (12) Linear time: 10 MB of 10-byte lines fed in 1 KB chunks are scanned
/// about once (counted, not timed).
#[test]
fn ten_megabytes_of_lines_scanned_linearly() {
    for delimiter in [&b"\n"[..], b"\r\n"] {
        let mut line = b"x".repeat(10 - delimiter.len());
        line.extend_from_slice(delimiter);
        let input = line.repeat(1024 * 1024); // 10 MiB
        let mut dec = LineDecoder::with_delimiter(delimiter, 16_384);
        let mut lines = 0usize;
        let mut feeds = 0u64;
        for chunk in input.chunks(1024) {
            dec.feed(chunk);
            feeds += 1;
            while let Ok(Some(frame)) = dec.next_frame() {
                assert_eq!(frame, LineFrame::Line(&line[..10 - delimiter.len()]));
                lines += 1;
            }
        }
        assert_eq!(lines, 1024 * 1024);
        let scanned = dec.bytes_scanned();
        let bound = input.len() as u64 + feeds * (delimiter.len() as u64 - 1);
        assert!(scanned <= bound, "scanned {scanned} > {bound}");
        assert!(scanned as f64 <= input.len() as f64 * 1.001);
    }
}

/// A long line trickling in byte by byte is not rescanned on every read
/// (Twisted's `split` per read is quadratic here).
#[test]
fn long_line_fed_bytewise_is_scanned_once() {
    let (mut proto, st) = connected(LineReceiver::new(Collect::default()));
    let line = vec![b'y'; 16_000];
    for b in line.iter().chain(b"\r\n") {
        proto.data_received(std::slice::from_ref(b));
    }
    assert_eq!(proto.with_handler(|h| h.lines.clone()), [line]);
    let bound = 16_002 + 16_002; // each byte once, plus one overlap per read
    assert!(proto.bytes_scanned() <= bound, "{}", proto.bytes_scanned());
    assert!(!st.disconnecting());
}

/// Sends a line, then closes (or aborts) on `quit` (`abort`).
#[derive(Default)]
struct Closer {
    lines: Vec<Vec<u8>>,
}

impl LineHandler for Closer {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.push(line.to_vec());
        match line {
            b"quit" => {
                ctx.send_line(b"bye");
                ctx.lose_connection();
            }
            b"abort" => ctx.transport().abort_connection(),
            _ => {}
        }
    }
}

#[test]
fn no_delivery_after_close_from_a_hook() {
    for (word, aborted) in [(&b"quit"[..], false), (b"abort", true)] {
        let (mut proto, st) = connected(LineReceiver::new(Closer::default()));
        let data = [b"a\r\n", word, b"\r\nb\r\n"].concat();
        proto.data_received(&data);
        proto.data_received(b"c\r\n");
        assert_eq!(
            proto.with_handler(|h| h.lines.clone()),
            bytes_list(&[b"a", word])
        );
        assert!(st.disconnecting());
        assert_eq!(st.aborted(), aborted);
        if !aborted {
            assert_eq!(st.value(), b"bye\r\n");
        }
    }
}

/// Pauses, then resumes through its control handle, inside the same call:
/// delivery goes on in the running loop, without nesting.
struct PauseResumeInside {
    depth: Rc<Cell<u32>>,
    max_depth: u32,
    lines: usize,
}

impl LineHandler for PauseResumeInside {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, _: &[u8]) {
        self.depth.set(self.depth.get() + 1);
        self.max_depth = self.max_depth.max(self.depth.get());
        self.lines += 1;
        ctx.pause_producing();
        ctx.control().resume_producing();
        self.depth.set(self.depth.get() - 1);
    }
}

#[test]
fn resume_inside_a_hook_does_not_recurse() {
    let handler = PauseResumeInside {
        depth: Rc::new(Cell::new(0)),
        max_depth: 0,
        lines: 0,
    };
    let (mut proto, st) = connected(LineReceiver::new(handler).with_delimiter(b"\n"));
    proto.data_received(&b"l\n".repeat(500));
    assert_eq!(proto.with_handler(|h| (h.lines, h.max_depth)), (500, 1));
    assert!(!st.reading_paused());
}

#[test]
fn decoder_basics_and_errors() {
    let mut dec = LineDecoder::new();
    assert_eq!(dec.delimiter(), b"\r\n");
    assert_eq!(dec.max_length(), 16_384);
    dec.feed(b"a\r\nb");
    assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Line(b"a"))));
    assert_eq!(dec.next_frame(), Ok(None));
    assert_eq!(dec.buffered(), b"b");
    dec.set_max_length(2);
    dec.feed(b"c\r"); // 3 bytes: could still be "bc\r\n"
    assert_eq!(dec.next_frame(), Ok(None));
    dec.feed(b"d"); // max + delimiter length, unterminated
    let err = dec.next_frame().unwrap_err();
    assert_eq!(
        err,
        LineTooLong {
            data: b"bc\rd".to_vec()
        }
    );
    assert!(err.to_string().contains("4 bytes"));
    assert_eq!(dec.buffered_len(), 0);
    dec.feed(b"ok\r\n");
    assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Line(b"ok"))));
    let mut out = Vec::new();
    dec.encode(b"x", &mut out);
    assert_eq!(out, b"x\r\n");
    dec.feed(b"z;y;");
    dec.set_delimiter(b";");
    assert_eq!(dec.next_frame(), Ok(Some(LineFrame::Line(b"z"))));
    assert_eq!(dec.clear(), b"y;");
    assert!(format!("{dec:?}").contains("LineDecoder"));
    assert!(!dec.is_raw_mode());
}

#[test]
#[should_panic(expected = "must not be empty")]
fn empty_delimiter_is_a_programming_error() {
    let _ = LineDecoder::with_delimiter(b"", 10);
}

/// Echoes lines; half-close and eof are passed through.
#[derive(Default)]
struct EchoLines {
    lost: Rc<RefCell<Vec<String>>>,
    eof_keep_open: bool,
}

impl LineHandler for EchoLines {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"hello");
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }

    fn eof_received(&mut self, ctx: &mut LineContext<'_>) -> bool {
        ctx.send_line(b"eof");
        self.eof_keep_open
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.lost.borrow_mut().push(reason.to_string());
    }
}

/// A client that records raw bytes.
#[derive(Default)]
struct Raw {
    transport: Option<Transport>,
    got: Vec<u8>,
    lost: usize,
}

impl Protocol for Raw {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn connection_lost(&mut self, _: ConnectionLost) {
        self.lost += 1;
    }
}

#[test]
fn over_the_in_memory_pump() {
    let lost = Rc::new(RefCell::new(Vec::new()));
    let server = LineReceiver::new(EchoLines {
        lost: lost.clone(),
        eof_keep_open: true,
    });
    let pump = connect_in_memory(Raw::default(), server);
    pump.flush().unwrap();
    assert_eq!(pump.with_client(|c| c.got.clone()), b"hello\r\n");
    let ct = pump.client_transport();
    ct.write(b"one\r\ntw");
    pump.flush().unwrap();
    ct.write(b"o\r\n");
    ct.half_close();
    pump.flush().unwrap();
    assert_eq!(
        pump.with_client(|c| c.got.clone()),
        b"hello\r\none\r\ntwo\r\neof\r\n"
    );
    assert!(!pump.is_closed());
    // Pausing the receiver pauses the transport's reading: the pump holds
    // the bytes until the resume.
    let control = pump.with_server(|s| s.control());
    control.pause_producing();
    pump.server_transport().write(b"x"); // unrelated direction still flows
    pump.flush().unwrap();
    pump.with_server(|s| {
        s.control()
            .transport()
            .expect("connected")
            .lose_connection()
    });
    pump.flush().unwrap();
    assert!(pump.is_closed());
    assert_eq!(lost.borrow().len(), 1);
    assert_eq!(pump.with_client(|c| c.lost), 1);
    assert!(!control.is_connected());
}

#[test]
fn control_outlives_receiver_harmlessly() {
    let (proto, _) = connected(LineReceiver::new(Collect::default()));
    let control = proto.control();
    assert!(control.is_connected());
    drop(proto);
    control.pause_producing();
    control.resume_producing();
    control.send_line(b"nobody");
    assert!(!control.is_paused());
    assert!(control.transport().is_none());
    assert!(format!("{control:?}").contains("alive: false"));
}

#[test]
fn connection_lost_reaches_the_handler_once_and_stops_delivery() {
    let (mut proto, _) = connected(LineReceiver::new(Collect::default()));
    proto.data_received(b"a\r\nb");
    proto.connection_lost(ConnectionLost::Done);
    proto.data_received(b"\r\n");
    assert_eq!(
        proto.with_handler(|h| (h.lines.clone(), h.lost.clone())),
        (bytes_list(&[b"a"]), vec![ConnectionLost::Done.to_string()])
    );
}

/// Records where each line it gets lives in memory.
struct WhereLines(Vec<(usize, usize)>);

impl LineHandler for WhereLines {
    fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
        self.0.push((line.as_ptr() as usize, line.len()));
    }
}

/// Complete lines in one read are handed out of the read itself (no copy);
/// only a line that spans two reads is copied, and it still arrives whole.
#[test]
fn whole_lines_are_handed_out_of_the_read_without_a_copy() {
    let st = StringTransport::new();
    let mut proto = LineReceiver::new(WhereLines(Vec::new())).with_delimiter(b"\n");
    proto.connection_made(st.transport());
    let read = b"one\ntwo\nthr".to_vec();
    proto.data_received(&read);
    let inside = |(ptr, len): (usize, usize)| {
        let start = read.as_ptr() as usize;
        ptr >= start && ptr + len <= start + read.len()
    };
    let seen = proto.with_handler(|h| h.0.clone());
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|&l| inside(l)), "lines copied: {seen:?}");
    assert_eq!(proto.buffered_len(), 3, "the partial line is buffered");
    let second = b"ee\nfour\n".to_vec();
    proto.data_received(&second);
    let seen = proto.with_handler(|h| h.0.clone());
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].1, 5, "the spanning line arrives whole");
    let (ptr, len) = seen[3];
    let start = second.as_ptr() as usize;
    assert!(
        ptr >= start && ptr + len <= start + second.len(),
        "after the spanning line, lines come out of the read again"
    );
    assert_eq!(proto.buffered_len(), 0);
}
