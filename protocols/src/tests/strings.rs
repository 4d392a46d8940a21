//! Netstrings and length prefixes, ported from Twisted's
//! `NetstringReceiverTests` and `IntNTestCaseMixin` (test_basic.py).

use std::time::Duration;

use gyre_reactor::clock::{Clock, ManualClock};
use gyre_reactor::testing::StringTransport;
use gyre_reactor::{ConnectionLost, Protocol};

use crate::intn::{
    Int16Decoder, Int16StringReceiver, Int32Decoder, Int32StringReceiver, Int8Decoder,
    Int8StringReceiver, IntNDecoder, IntNHandler, IntNStringReceiver, LengthLimitExceeded,
    PrefixInt, StringTooLong,
};
use crate::netstring::{
    encode_netstring, NetstringDecoder, NetstringError, NetstringHandler, NetstringReceiver,
};
use crate::StringContext;

fn connected<P: Protocol>(mut proto: P) -> (P, StringTransport) {
    let st = StringTransport::new();
    proto.connection_made(st.transport());
    (proto, st)
}

/// Twisted's `TestNetstring`: records strings and echoes them raw.
#[derive(Default)]
struct NetTester {
    received: Vec<Vec<u8>>,
    errors: Vec<NetstringError>,
    lost: usize,
}

impl NetstringHandler for NetTester {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]) {
        self.received.push(string.to_vec());
        ctx.transport().write(string);
    }

    fn netstring_error(&mut self, _: &mut StringContext<'_>, error: NetstringError) {
        self.errors.push(error);
    }

    fn connection_lost(&mut self, _: ConnectionLost) {
        self.lost += 1;
    }
}

fn netstring_receiver() -> NetstringReceiver<NetTester> {
    NetstringReceiver::new(NetTester::default()).with_max_length(50)
}

fn net_received(p: &NetstringReceiver<NetTester>) -> Vec<Vec<u8>> {
    p.with_handler(|h| h.received.clone())
}

/// `test_buffer`: strings sent, then received in chunks of 1 to 9 bytes.
#[test]
fn netstring_chunked_round_trip() {
    let strings: Vec<Vec<u8>> = [
        &b"hello"[..],
        b"world",
        b"how",
        b"are",
        b"you123",
        b":today",
    ]
    .iter()
    .map(|s| s.to_vec())
    .chain(std::iter::once(vec![b'a'; 515]))
    .collect();
    for size in 1..10 {
        let (mut proto, st) =
            connected(NetstringReceiver::new(NetTester::default()).with_max_length(699));
        let control = proto.control();
        for s in &strings {
            control.send_string(s).unwrap();
        }
        let out = st.take_value();
        for chunk in out.chunks(size) {
            proto.data_received(chunk);
        }
        assert_eq!(net_received(&proto), strings);
        assert!(!st.disconnecting());
    }
}

/// (10) `test_receiveNestedNetstring`, `test_receiveEmptyNetstring`,
/// one and two characters.
#[test]
fn netstring_small_cases() {
    for (input, expected) in [
        (&b"4:1:a,,"[..], &b"1:a,"[..]),
        (b"0:,", b""),
        (b"1:a,", b"a"),
        (b"2:ab,", b"ab"),
    ] {
        let (mut proto, st) = connected(netstring_receiver());
        proto.data_received(input);
        assert_eq!(net_received(&proto), [expected.to_vec()]);
        assert!(!st.disconnecting());
    }
}

/// (10) `test_receiveNetstringPortions_1/2/3`, `test_receiveTwoNetstrings`.
#[test]
fn netstring_split_parts() {
    type Parts<'a> = &'a [&'a [u8]];
    let cases: [(Parts, Parts); 4] = [
        (&[b"4:aa", b"aa,"], &[b"aaaa"]),
        (&[b"1", b"0:01234", b"56789", b","], &[b"0123456789"]),
        (&[b"2", b":", b"a", b"b", b","], &[b"ab"]),
        (&[b"1:a,1", b":b,"], &[b"a", b"b"]),
    ];
    for (parts, expected) in cases {
        let (mut proto, st) = connected(netstring_receiver());
        for part in parts {
            proto.data_received(part);
        }
        let expected: Vec<Vec<u8>> = expected.iter().map(|s| s.to_vec()).collect();
        assert_eq!(net_received(&proto), expected);
        assert!(!st.disconnecting());
    }
}

/// (10) Illegal netstrings close the connection and are reported:
/// `test_moreDataThanSpecified`, `..BorderCase`, `test_missingNumber`,
/// `test_missingColon`, `test_missingNumberAndColon`, `test_onlyData`,
/// `test_illegal` (a 22-digit length, byte by byte), `test_maxReceiveLimit`.
#[test]
fn netstring_illegal_input_closes() {
    let too_long = 51;
    let above_max = [
        too_long.to_string().as_bytes(),
        b":",
        &vec![b'a'; too_long],
        b",",
    ]
    .concat();
    let cases: Vec<(Vec<u8>, bool, NetstringError)> = vec![
        (
            b"2:aaa,".to_vec(),
            false,
            NetstringError::MissingComma(b'a'),
        ),
        (b"0:a,".to_vec(), false, NetstringError::MissingComma(b'a')),
        (b":aaa,".to_vec(), false, NetstringError::MissingLength),
        (b"3aaa,".to_vec(), false, NetstringError::BadLength(b'a')),
        (b"aaa,".to_vec(), false, NetstringError::BadLength(b'a')),
        (b"aaa".to_vec(), false, NetstringError::BadLength(b'a')),
        (
            b"9999999999999999999999".to_vec(),
            true,
            NetstringError::TooLong { max: 50 },
        ),
        (
            b"4:abcde".to_vec(),
            true,
            NetstringError::MissingComma(b'e'),
        ),
        (b"007:abcdefg,".to_vec(), false, NetstringError::LeadingZero),
        (above_max, false, NetstringError::TooLong { max: 50 }),
    ];
    for (input, bytewise, error) in cases {
        let (mut proto, st) = connected(netstring_receiver());
        if bytewise {
            for b in &input {
                proto.data_received(std::slice::from_ref(b));
            }
        } else {
            proto.data_received(&input);
        }
        assert!(st.disconnecting(), "{:?}", String::from_utf8_lossy(&input));
        assert_eq!(proto.with_handler(|h| h.errors.clone()), [error]);
        assert!(net_received(&proto).is_empty());
        // Later bytes are ignored.
        proto.data_received(b"1:a,");
        assert!(net_received(&proto).is_empty());
        proto.connection_lost(ConnectionLost::Done);
        assert_eq!(proto.with_handler(|h| h.lost), 1);
    }
}

/// The length is refused as soon as its digits exceed the maximum (no
/// buffering of a huge prefix): `test_consumeLengthBorderCase1/2/3`.
#[test]
fn netstring_length_checked_as_digits_arrive() {
    let mut dec = NetstringDecoder::with_max_length(12);
    dec.feed(b"12:");
    assert_eq!(dec.next_frame(), Ok(None));
    let mut dec = NetstringDecoder::with_max_length(11);
    dec.feed(b"12");
    assert_eq!(dec.next_frame(), Err(NetstringError::TooLong { max: 11 }));
    let mut dec = NetstringDecoder::with_max_length(11);
    dec.feed(b"100");
    assert_eq!(dec.next_frame(), Err(NetstringError::TooLong { max: 11 }));
    assert_eq!(dec.error(), Some(NetstringError::TooLong { max: 11 }));
    dec.feed(b"more");
    assert_eq!(dec.buffered_len(), 0);
    // usize overflow is just "too long".
    let mut dec = NetstringDecoder::with_max_length(usize::MAX);
    dec.feed(&[b'9'; 40]);
    assert!(matches!(
        dec.next_frame(),
        Err(NetstringError::TooLong { .. })
    ));
    for e in [
        NetstringError::BadLength(b'x'),
        NetstringError::MissingLength,
        NetstringError::LeadingZero,
        NetstringError::TooLong { max: 3 },
        NetstringError::MissingComma(b'x'),
    ] {
        assert!(!e.to_string().is_empty());
    }
}

/// Twisted's `TestInt32`/`TestInt16`/`TestInt8`: records strings and limits.
#[derive(Default)]
struct IntTester {
    received: Vec<Vec<u8>>,
    limits: Vec<u64>,
    close_on_limit: bool,
}

impl IntNHandler for IntTester {
    fn string_received(&mut self, _: &mut StringContext<'_>, string: &[u8]) {
        self.received.push(string.to_vec());
    }

    fn length_limit_exceeded(&mut self, ctx: &mut StringContext<'_>, length: u64) {
        self.limits.push(length);
        if self.close_on_limit {
            ctx.lose_connection();
        }
    }
}

fn prefixed<N: PrefixInt>(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    IntNDecoder::<N>::encode(s, &mut out).unwrap();
    out
}

fn intn_cases<N: PrefixInt>(illegal: &[u8], partials: &[&[u8]]) {
    let strings = [b"a".to_vec(), vec![b'b'; 16]];
    // test_receive: byte by byte.
    let (mut proto, _) = connected(IntNStringReceiver::<N, _>::new(IntTester::default()));
    for s in &strings {
        for b in prefixed::<N>(s) {
            proto.data_received(&[b]);
        }
    }
    assert_eq!(proto.with_handler(|h| h.received.clone()), strings);

    // test_partial: nothing is delivered until a frame is complete.
    for partial in partials {
        let (mut proto, _) = connected(IntNStringReceiver::<N, _>::new(IntTester::default()));
        for b in partial.iter() {
            proto.data_received(std::slice::from_ref(b));
        }
        assert!(proto.with_handler(|h| h.received.is_empty()));
    }

    // test_send.
    let (proto, st) = connected(IntNStringReceiver::<N, _>::new(IntTester::default()));
    proto.control().send_string(&[b'b'; 16]).unwrap();
    assert_eq!(st.value(), prefixed::<N>(&[b'b'; 16]));

    // test_illegal (max 50, closing on the limit), byte by byte.
    let handler = IntTester {
        close_on_limit: true,
        ..IntTester::default()
    };
    let (mut proto, st) = connected(IntNStringReceiver::<N, _>::new(handler).with_max_length(50));
    for b in illegal {
        proto.data_received(std::slice::from_ref(b));
    }
    assert!(st.disconnecting());

    // test_lengthLimitExceeded, test_longStringNotDelivered.
    let (mut proto, st) =
        connected(IntNStringReceiver::<N, _>::new(IntTester::default()).with_max_length(10));
    let mut data = prefixed::<N>(&[b'x'; 11]);
    proto.data_received(&data[..N::SIZE]);
    assert_eq!(proto.with_handler(|h| h.limits.clone()), [11]);
    data.drain(..N::SIZE);
    proto.data_received(&data);
    proto.data_received(&prefixed::<N>(b"ok"));
    assert!(proto.with_handler(|h| h.received.is_empty()));
    assert_eq!(proto.with_handler(|h| h.limits.clone()), [11]);
    assert!(!st.disconnecting(), "this handler does not close");
}

/// (11) `Int32Tests`, `Int16Tests`, `Int8Tests`.
#[test]
fn int32_receiver() {
    intn_cases::<u32>(
        b"\x10\x00\x00\x00aaaaaa",
        &[b"\x00\x00\x00", b"hello there", b""],
    );
    // test_data.
    let (mut proto, st) = connected(Int32StringReceiver::new(IntTester::default()));
    proto.control().send_string(b"foo").unwrap();
    assert_eq!(st.value(), b"\x00\x00\x00\x03foo");
    proto.data_received(b"\x00\x00\x00\x04ubar");
    assert_eq!(
        proto.with_handler(|h| h.received.clone()),
        [b"ubar".to_vec()]
    );
}

#[test]
fn int16_receiver() {
    intn_cases::<u16>(b"\x10\x00aaaaaa", &[b"\x00", b"hello there", b""]);
    let (mut proto, st) = connected(Int16StringReceiver::new(IntTester::default()));
    proto.control().send_string(b"foo").unwrap();
    assert_eq!(st.value(), b"\x00\x03foo");
    proto.data_received(b"\x00\x04ubar");
    assert_eq!(
        proto.with_handler(|h| h.received.clone()),
        [b"ubar".to_vec()]
    );
}

#[test]
fn int8_receiver() {
    intn_cases::<u8>(b"\x00\x00aaaaaa\x40", &[b"\x08", b"dzadz", b""]);
    let (mut proto, st) = connected(Int8StringReceiver::new(IntTester::default()));
    proto.control().send_string(b"foo").unwrap();
    assert_eq!(st.value(), b"\x03foo");
    proto.data_received(b"\x04ubar");
    assert_eq!(
        proto.with_handler(|h| h.received.clone()),
        [b"ubar".to_vec()]
    );
}

/// (11) A prefix above the maximum calls `length_limit_exceeded` before any
/// body byte; the default handler loses the connection.
#[test]
fn int32_limit_checked_before_the_body() {
    struct Default32(Vec<Vec<u8>>);
    impl IntNHandler for Default32 {
        fn string_received(&mut self, _: &mut StringContext<'_>, s: &[u8]) {
            self.0.push(s.to_vec());
        }
    }
    let (mut proto, st) =
        connected(Int32StringReceiver::new(Default32(Vec::new())).with_max_length(1000));
    proto.data_received(&1001u32.to_be_bytes());
    assert!(st.disconnecting(), "closed before any body arrived");
    let mut dec = Int32Decoder::new();
    dec.feed(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        dec.next_frame(),
        Err(LengthLimitExceeded {
            length: u32::MAX as u64,
            max: 99_999
        })
    );
    assert_eq!(dec.error().map(|e| e.length), Some(u32::MAX as u64));
    assert!(dec
        .next_frame()
        .unwrap_err()
        .to_string()
        .contains("exceeds"));
}

/// (11) `test_tooLongSend`: a string too long for its prefix is an error.
#[test]
fn send_string_too_long_for_prefix_is_an_error() {
    let (proto, st) = connected(Int16StringReceiver::new(IntTester::default()));
    let err = proto
        .control()
        .send_string(&vec![b'b'; 65_536])
        .unwrap_err();
    assert_eq!(
        err,
        StringTooLong {
            length: 65_536,
            max: 65_535
        }
    );
    assert!(err.to_string().contains("65536"));
    assert!(st.value().is_empty());
    proto.control().send_string(&vec![b'b'; 65_535]).unwrap();
    assert_eq!(st.value().len(), 65_537);

    let mut out = Vec::new();
    assert!(Int8Decoder::encode(&[0; 256], &mut out).is_err());
    assert!(out.is_empty());
    assert!(Int8Decoder::encode(&[0; 255], &mut out).is_ok());
    assert!(Int16Decoder::encode(&[0; 65_536], &mut out).is_err());
}

/// Pauses after each string and resumes on a zero-delay call.
struct SlowStrings {
    clock: Clock,
    received: Vec<Vec<u8>>,
}

impl NetstringHandler for SlowStrings {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
        self.received.push(s.to_vec());
        ctx.pause_producing();
        let control = ctx.control();
        self.clock
            .call_later(Duration::ZERO, move || control.resume_producing());
    }
}

#[test]
fn string_receivers_pause_and_resume() {
    let manual = ManualClock::new();
    let handler = SlowStrings {
        clock: manual.clock(),
        received: Vec::new(),
    };
    let (mut proto, st) = connected(NetstringReceiver::new(handler));
    proto.data_received(b"1:a,1:b,1:c,");
    assert_eq!(proto.with_handler(|h| h.received.len()), 1);
    assert!(st.reading_paused() && proto.control().is_paused());
    manual.advance(Duration::ZERO);
    assert_eq!(proto.with_handler(|h| h.received.len()), 2);
    manual.advance(Duration::ZERO);
    manual.advance(Duration::ZERO);
    assert_eq!(
        proto.with_handler(|h| h.received.clone()),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert!(!st.reading_paused());
    proto.control().stop_producing();
    assert!(st.disconnecting());
    assert!(format!("{proto:?}").contains("NetstringReceiver"));
}

#[test]
fn netstring_encoding() {
    let mut out = Vec::new();
    encode_netstring(b"", &mut out);
    encode_netstring(b"hello", &mut out);
    assert_eq!(out, b"0:,5:hello,");
}

// ---------------------------------------------------------------------------
// Property tests: decode(encode(x)) == x for any chunking.
// ---------------------------------------------------------------------------

use proptest::collection::vec;
use proptest::prelude::*;

/// Splits `data` at the given cut points (taken modulo the length).
fn chunked<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    if data.is_empty() {
        return vec![data];
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c % data.len()).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn decode_all<F>(chunks: &[&[u8]], mut feed: F) -> Vec<Vec<u8>>
where
    F: FnMut(&[u8], &mut Vec<Vec<u8>>),
{
    let mut out = Vec::new();
    for chunk in chunks {
        feed(chunk, &mut out);
    }
    out
}

fn intn_roundtrip<N: PrefixInt>(strings: &[Vec<u8>], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    for s in strings {
        IntNDecoder::<N>::encode(s, &mut wire).unwrap();
    }
    let mut dec = IntNDecoder::<N>::with_max_length(300);
    decode_all(&chunked(&wire, cuts), |chunk, out| {
        dec.feed(chunk);
        while let Ok(Some(s)) = dec.next_frame() {
            out.push(s.to_vec());
        }
        assert!(dec.buffered_len() <= 300 + N::SIZE);
    })
}

proptest! {
    #[test]
    fn netstring_roundtrip_any_chunking(
        strings in vec(vec(any::<u8>(), 0..200), 0..20),
        cuts in vec(any::<usize>(), 0..40),
    ) {
        let mut wire = Vec::new();
        for s in &strings {
            encode_netstring(s, &mut wire);
        }
        let mut dec = NetstringDecoder::with_max_length(200);
        let got = decode_all(&chunked(&wire, &cuts), |chunk, out| {
            dec.feed(chunk);
            while let Ok(Some(s)) = dec.next_frame() {
                out.push(s.to_vec());
            }
            assert!(dec.buffered_len() <= 200);
        });
        prop_assert_eq!(got, strings);
        prop_assert_eq!(dec.error(), None);
    }

    #[test]
    fn intn_roundtrip_any_chunking(
        strings in vec(vec(any::<u8>(), 0..255), 0..20),
        cuts in vec(any::<usize>(), 0..40),
    ) {
        prop_assert_eq!(&intn_roundtrip::<u8>(&strings, &cuts), &strings);
        prop_assert_eq!(&intn_roundtrip::<u16>(&strings, &cuts), &strings);
        prop_assert_eq!(&intn_roundtrip::<u32>(&strings, &cuts), &strings);
    }

    #[test]
    fn line_roundtrip_any_chunking(
        lines in vec(vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..100), 0..20),
        cuts in vec(any::<usize>(), 0..40),
    ) {
        let mut dec = crate::line::LineDecoder::with_delimiter(b"\n", 100);
        let mut wire = Vec::new();
        for l in &lines {
            dec.encode(l, &mut wire);
        }
        let got = decode_all(&chunked(&wire, &cuts), |chunk, out| {
            dec.feed(chunk);
            while let Ok(Some(crate::line::LineFrame::Line(l))) = dec.next_frame() {
                out.push(l.to_vec());
            }
        });
        prop_assert_eq!(got, lines);
    }

    /// Arbitrary bytes never panic, and buffers stay bounded.
    #[test]
    fn decoders_survive_garbage(
        data in vec(any::<u8>(), 0..600),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let mut net = NetstringDecoder::with_max_length(64);
        let mut i32d = Int32Decoder::with_max_length(64);
        let mut lines = crate::line::LineDecoder::with_delimiter(b"\r\n", 64);
        for chunk in chunked(&data, &cuts) {
            net.feed(chunk);
            while let Ok(Some(_)) = net.next_frame() {}
            prop_assert!(net.buffered_len() <= 64);
            i32d.feed(chunk);
            while let Ok(Some(_)) = i32d.next_frame() {}
            prop_assert!(i32d.buffered_len() <= 64 + 4);
            lines.feed(chunk);
            while let Ok(Some(_)) | Err(_) = lines.next_frame() {}
            prop_assert!(lines.buffered_len() < 64 + 2);
        }
    }
}

/// Exhaustive two-way splits of a fixed stream, for each decoder.
#[test]
fn every_two_way_split_decodes_the_same() {
    let strings = [
        b"".to_vec(),
        b"x".to_vec(),
        b"hello, world".to_vec(),
        vec![7u8; 40],
    ];
    let mut net = Vec::new();
    let mut i16w = Vec::new();
    for s in &strings {
        encode_netstring(s, &mut net);
        Int16Decoder::encode(s, &mut i16w).unwrap();
    }
    for cut in 0..=net.len() {
        let mut dec = NetstringDecoder::new();
        let mut got = Vec::new();
        for part in [&net[..cut], &net[cut..]] {
            dec.feed(part);
            while let Ok(Some(s)) = dec.next_frame() {
                got.push(s.to_vec());
            }
        }
        assert_eq!(got, strings, "netstring split at {cut}");
    }
    for cut in 0..=i16w.len() {
        let mut dec = Int16Decoder::new();
        let mut got = Vec::new();
        for part in [&i16w[..cut], &i16w[cut..]] {
            dec.feed(part);
            while let Ok(Some(s)) = dec.next_frame() {
                got.push(s.to_vec());
            }
        }
        assert_eq!(got, strings, "int16 split at {cut}");
    }
}
