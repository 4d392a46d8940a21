//! The TLS machine without sockets: a client and a server machine pumped
//! against each other in memory.

use std::io::{self, Write};

use rustls::{CertificateError, Error as RustlsError};

use super::*;
use crate::tls::config::{client_config_with_roots, parse_server_name, server_config};

use crate::tls::tests::certs::{TestCa, TestCert};

/// One machine and what the application saw of it.
struct Side {
    m: TlsMachine,
    data: Vec<u8>,
    eofs: usize,
    handshakes: usize,
    failure: Option<Failure>,
}

impl Side {
    fn new(m: TlsMachine) -> Side {
        Side {
            m,
            data: Vec::new(),
            eofs: 0,
            handshakes: 0,
            failure: None,
        }
    }

    /// Feeds ciphertext and reads everything it yields.
    fn feed(&mut self, bytes: &[u8]) {
        let r = self.m.receive(bytes);
        if r.handshake_done {
            self.handshakes += 1;
        }
        if let Some(f) = r.failed {
            assert!(self.failure.is_none(), "a failure is reported once");
            self.failure = Some(f);
        }
        self.read_all();
    }

    fn read_all(&mut self) {
        while let Some(event) = self.m.poll_read() {
            match event {
                ReadEvent::Data(d) => {
                    assert!(!d.is_empty());
                    assert_eq!(self.eofs, 0, "no data after the end of stream");
                    self.data.extend_from_slice(&d);
                    self.m.restore_plaintext(d);
                }
                ReadEvent::Eof => self.eofs += 1,
            }
        }
    }

    fn read_state(&self) -> ReadState {
        match self.m.phase() {
            Phase::Established { read, .. } => *read,
            other => panic!("not established: {other:?}"),
        }
    }

    fn write_state(&self) -> WriteState {
        match self.m.phase() {
            Phase::Established { write, .. } => *write,
            other => panic!("not established: {other:?}"),
        }
    }
}

/// Moves `from`'s ciphertext to `to`, in pieces of `chunk` bytes; returns
/// how many bytes moved.
fn transfer(from: &mut Side, to: &mut Side, chunk: usize) -> usize {
    let out = from.m.take_outgoing();
    let n = out.len();
    for piece in out.chunks(chunk) {
        to.feed(piece);
    }
    from.m.restore_outgoing(out);
    n
}

/// Pumps both ways until neither side has anything to send.
fn pump_chunked(a: &mut Side, b: &mut Side, chunk: usize) {
    for _ in 0..10_000 {
        if transfer(a, b, chunk) + transfer(b, a, chunk) == 0 {
            return;
        }
    }
    panic!("the machines never went quiet");
}

fn pump(a: &mut Side, b: &mut Side) {
    pump_chunked(a, b, usize::MAX);
}

struct Setup {
    ca: TestCa,
}

impl Setup {
    fn new() -> Setup {
        Setup { ca: TestCa::new() }
    }

    fn client_for(&self, name: &str, alpn: &[&[u8]]) -> Side {
        let config = client_config_with_roots(&[self.ca.cert_der()], alpn).unwrap();
        let server_name = parse_server_name(name).unwrap();
        Side::new(TlsMachine::client(config, server_name, name).unwrap())
    }

    fn server_with(&self, cert: &TestCert, alpn: &[&[u8]]) -> Side {
        let config =
            server_config(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), alpn).unwrap();
        Side::new(TlsMachine::server(config).unwrap())
    }

    /// A client of "localhost" and a server with a certificate for it.
    fn pair(&self, client_alpn: &[&[u8]], server_alpn: &[&[u8]]) -> (Side, Side) {
        let leaf = self.ca.leaf(&["localhost"]);
        (
            self.client_for("localhost", client_alpn),
            self.server_with(&leaf, server_alpn),
        )
    }

    /// A pair with the handshake done.
    fn connected(&self) -> (Side, Side) {
        let (mut c, mut s) = self.pair(&[], &[]);
        pump(&mut c, &mut s);
        assert_eq!((c.handshakes, s.handshakes), (1, 1));
        (c, s)
    }
}

/// Deterministic bytes (xorshift), so that failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn handshake_negotiates_alpn_and_reports_done_once() {
    let s = Setup::new();
    let (mut c, mut srv) = s.pair(&[b"h2", b"echo/1"], &[b"echo/1"]);
    assert_eq!((c.m.role(), srv.m.role()), (Role::Client, Role::Server));
    assert!(c.m.has_outgoing(), "the ClientHello is ready at once");
    assert!(!srv.m.has_outgoing());
    assert!(matches!(c.m.phase(), Phase::Handshaking));
    pump(&mut c, &mut srv);
    for side in [&c, &srv] {
        assert_eq!(side.handshakes, 1);
        assert!(side.m.is_handshake_complete());
        assert_eq!(side.read_state(), ReadState::Open);
        assert_eq!(side.write_state(), WriteState::Open);
        assert_eq!(side.m.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(
            side.m.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert!(side.m.cipher_suite().is_some());
    }
    assert_eq!(c.m.peer_certificates().map(|p| p.len()), Some(2));
    assert_eq!(srv.m.peer_certificates(), None);
    assert_eq!(c.m.server_name(), Some("localhost"));
    assert_eq!(srv.m.server_name(), None);
}

#[test]
fn no_common_alpn_protocol_fails_with_rustls_reason() {
    let s = Setup::new();
    let (mut c, mut srv) = s.pair(&[b"h2"], &[b"echo/1"]);
    pump(&mut c, &mut srv);
    let f = srv.failure.expect("the server refuses");
    assert_eq!(f.tls_error, Some(RustlsError::NoApplicationProtocol));
    assert!(f.during_handshake);
    let f = c.failure.expect("the client hears the alert");
    assert!(f.reason.contains("alert"), "{}", f.reason);
}

#[test]
fn data_both_ways_in_tiny_and_large_writes() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    let mut expected = Vec::new();
    for i in 0..200u8 {
        c.m.write(&[&[i]]);
        expected.push(i);
    }
    c.m.write(&[b"", b"a", b"", b"bc"]);
    expected.extend_from_slice(b"abc");
    let big = noise(7, 1 << 20);
    c.m.write(&[&big]);
    expected.extend_from_slice(&big);
    srv.m.write(&[&big[..300_000], b"!"]);
    pump(&mut c, &mut srv);
    assert_eq!(srv.data, expected);
    assert_eq!(c.data.len(), 300_001);
    assert_eq!(&c.data[..300_000], &big[..300_000]);
    assert_eq!(c.data.last(), Some(&b'!'));
}

/// The TLS records in `ciphertext`: (content type, length) from each
/// 5-byte record header.
fn records(mut ciphertext: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    while ciphertext.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([ciphertext[3], ciphertext[4]]));
        out.push((ciphertext[0], len));
        ciphertext = &ciphertext[(5 + len).min(ciphertext.len())..];
    }
    out
}

#[test]
fn a_write_of_several_parts_is_one_record() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    drop(c.m.take_outgoing());
    c.m.write(&[b"AT Alford +0.1 kiwi +1+1 1", b"\n"]);
    let two = c.m.take_outgoing();
    c.m.write(&[b"a", b"b", b"c"]);
    let three = c.m.take_outgoing();
    // One application-data record (type 23) each, not one per part.
    assert_eq!(records(&two).len(), 1, "{:?}", records(&two));
    assert_eq!(records(&two)[0].0, 23);
    assert_eq!(records(&three).len(), 1, "{:?}", records(&three));
    srv.feed(&two);
    srv.feed(&three);
    assert_eq!(srv.data, b"AT Alford +0.1 kiwi +1+1 1\nabc");
}

#[test]
fn ciphertext_delivered_one_byte_at_a_time() {
    let s = Setup::new();
    let (mut c, mut srv) = s.pair(&[b"x"], &[b"x"]);
    pump_chunked(&mut c, &mut srv, 1);
    assert_eq!((c.handshakes, srv.handshakes), (1, 1));
    let msg = noise(3, 40_000);
    c.m.write(&[&msg]);
    srv.m.write(&[b"pong"]);
    pump_chunked(&mut c, &mut srv, 1);
    assert_eq!(srv.data, msg);
    assert_eq!(c.data, b"pong");
    assert_eq!(
        c.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: false }
    );
    pump_chunked(&mut c, &mut srv, 1);
    assert_eq!(srv.eofs, 1);
}

#[test]
fn close_notify_both_ways() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    c.m.write(&[b"last words"]);
    assert_eq!(
        c.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: false }
    );
    assert_eq!(
        c.write_state(),
        WriteState::CloseNotifySent(CloseKind::Full)
    );
    c.m.write(&[b"dropped after close_notify"]);
    assert_eq!(c.m.close(CloseKind::Full), CloseStep::Nothing);
    assert_eq!(c.m.close(CloseKind::Half), CloseStep::Nothing);
    pump(&mut c, &mut srv);
    assert_eq!(srv.data, b"last words", "plaintext first, then the end");
    assert_eq!(srv.eofs, 1);
    assert!(srv.m.received_close_notify());
    assert_eq!(srv.read_state(), ReadState::Closed);
    assert!(!srv.m.has_read_pending());

    assert_eq!(
        srv.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: true }
    );
    assert!(srv.m.sent_close_notify());
    pump(&mut c, &mut srv);
    assert_eq!(c.eofs, 1);
    assert_eq!(c.read_state(), ReadState::Closed);
    assert!(c.data.is_empty());
    // Each side's transport then ends: a clean end on both.
    assert!(matches!(
        c.m.receive_eof(),
        AtEof::AfterCloseNotify { reported: true }
    ));
    assert!(matches!(
        srv.m.receive_eof(),
        AtEof::AfterCloseNotify { reported: true }
    ));
}

#[test]
fn end_of_stream_waits_for_the_plaintext_before_it() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    srv.m.write(&[b"data"]);
    assert_eq!(
        srv.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: false }
    );
    let out = srv.m.take_outgoing();
    let r = c.m.receive(&out);
    assert!(!r.handshake_done && r.failed.is_none());
    // Not read yet: the transport's EOF is told the end is still held.
    assert!(c.m.has_read_pending());
    assert!(matches!(
        c.m.receive_eof(),
        AtEof::AfterCloseNotify { reported: false }
    ));
    assert_eq!(c.m.poll_read(), Some(ReadEvent::Data(b"data".to_vec())));
    assert_eq!(c.m.poll_read(), Some(ReadEvent::Eof));
    assert_eq!(c.m.poll_read(), None);
}

#[test]
fn half_close_lets_the_peer_answer() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    c.m.write(&[b"12345"]);
    assert_eq!(
        c.m.close(CloseKind::Half),
        CloseStep::Sent { peer_closed: false }
    );
    assert_eq!(
        c.write_state(),
        WriteState::CloseNotifySent(CloseKind::Half)
    );
    pump(&mut c, &mut srv);
    assert_eq!((srv.data.as_slice(), srv.eofs), (&b"12345"[..], 1));
    assert_eq!(srv.read_state(), ReadState::Closed);
    assert_eq!(srv.write_state(), WriteState::Open);
    // The server's direction is still open.
    srv.m.write(&[b"got 5 bytes"]);
    pump(&mut c, &mut srv);
    assert_eq!(c.data, b"got 5 bytes");
    assert_eq!(c.read_state(), ReadState::Open);
    // A full close after the half-close sends nothing more.
    assert_eq!(
        c.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: false }
    );
    assert!(!c.m.has_outgoing());
    assert_eq!(
        c.write_state(),
        WriteState::CloseNotifySent(CloseKind::Full)
    );
    assert_eq!(
        srv.m.close(CloseKind::Half),
        CloseStep::Sent { peer_closed: true }
    );
    pump(&mut c, &mut srv);
    assert_eq!(c.eofs, 1);
}

#[test]
fn eof_without_close_notify_is_a_truncation() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    srv.m.write(&[b"partial"]);
    pump(&mut c, &mut srv);
    assert!(matches!(c.m.receive_eof(), AtEof::Truncated));
    assert!(c.m.is_truncated());
    assert_eq!(c.read_state(), ReadState::Truncated);
    assert_eq!((c.data.as_slice(), c.eofs), (&b"partial"[..], 0));
    assert!(matches!(c.m.receive_eof(), AtEof::Truncated), "stays so");
    // After our own half-close a missing close_notify is still a truncation.
    let (mut c, _srv) = s.connected();
    assert!(matches!(c.m.close(CloseKind::Half), CloseStep::Sent { .. }));
    assert!(matches!(c.m.receive_eof(), AtEof::Truncated));
}

#[test]
fn eof_after_our_full_close_is_expected() {
    let s = Setup::new();
    let (mut c, _srv) = s.connected();
    assert!(matches!(c.m.close(CloseKind::Full), CloseStep::Sent { .. }));
    assert!(matches!(c.m.receive_eof(), AtEof::Expected));
    assert_eq!(c.read_state(), ReadState::EndedAfterClose);
    assert!(!c.m.is_truncated());
}

#[test]
fn eof_or_close_notify_during_the_handshake_fails_it() {
    let s = Setup::new();
    let (mut c, mut srv) = s.pair(&[], &[]);
    transfer(&mut c, &mut srv, usize::MAX);
    match srv.m.receive_eof() {
        AtEof::Failed(f) => {
            assert_eq!(f.kind, io::ErrorKind::UnexpectedEof);
            assert!(f.during_handshake);
            assert!(f.reason.contains("during the handshake"), "{}", f.reason);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(srv.m.receive_eof(), AtEof::Ignored));
    assert!(srv.m.handshake_failed_for_tests());

    // A plaintext close_notify in place of the ServerHello is not
    // authenticated: rustls ignores it (a warning), the handshake goes on.
    let (mut c, _) = s.pair(&[], &[]);
    let r = c.m.receive(&[21, 3, 3, 0, 2, 1, 0]);
    assert!(r.failed.is_none());
    assert!(matches!(c.m.phase(), Phase::Handshaking));
    assert!(!c.m.received_close_notify());
    // A fatal alert fails it with rustls's reason.
    let r = c.m.receive(&[21, 3, 3, 0, 2, 2, 40]);
    let f = r.failed.expect("a failure");
    assert_eq!(f.kind, io::ErrorKind::InvalidData);
    assert!(f.during_handshake);
    assert_eq!(
        f.tls_error,
        Some(RustlsError::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
        ))
    );
    assert!(f.reason.contains("HandshakeFailure"), "{}", f.reason);
}

#[test]
fn a_certificate_for_another_name_is_rejected_with_rustls_reason() {
    let s = Setup::new();
    let leaf = s.ca.leaf(&["example.com"]);
    let mut c = s.client_for("localhost", &[]);
    let mut srv = s.server_with(&leaf, &[]);
    pump(&mut c, &mut srv);
    assert_eq!((c.handshakes, srv.handshakes), (0, 0));
    let f = c.failure.clone().expect("the client refuses");
    assert_eq!(f.kind, io::ErrorKind::InvalidData);
    assert!(f.during_handshake);
    assert!(matches!(
        f.tls_error,
        Some(RustlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ))
    ));
    assert!(f.reason.contains("not valid for name"), "{}", f.reason);
    let f = srv.failure.clone().expect("the server hears the alert");
    assert!(f.reason.contains("alert"), "{}", f.reason);
    assert!(matches!(c.m.phase(), Phase::Failed(_)));
    assert!(!c.m.is_handshake_complete());
    // Nothing more goes in or out.
    c.m.write(&[b"x"]);
    assert!(!c.m.has_outgoing());
    assert_eq!(c.m.close(CloseKind::Full), CloseStep::Nothing);
    let r = c.m.receive(b"more");
    assert!(r.failed.is_none() && !r.handshake_done);
}

#[test]
fn an_untrusted_certificate_is_rejected() {
    let s = Setup::new();
    let mut c = s.client_for("localhost", &[]);
    let mut srv = s.server_with(&TestCert::self_signed(&["localhost"]), &[]);
    pump(&mut c, &mut srv);
    let f = c.failure.expect("refused");
    assert_eq!(
        f.tls_error,
        Some(RustlsError::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );
    assert!(f.reason.contains("UnknownIssuer"), "{}", f.reason);
}

#[test]
fn garbage_ciphertext_is_an_error_not_a_panic() {
    let s = Setup::new();
    // During the handshake, for both roles, with many kinds of garbage.
    for seed in 1..40u64 {
        let (mut c, mut srv) = s.pair(&[], &[]);
        let junk = noise(seed, (seed as usize * 37) % 3000 + 1);
        srv.feed(&junk);
        c.feed(&junk);
        // Garbage may be an incomplete record: then nothing has failed yet,
        // and the transport's end fails the handshake.
        for side in [&mut c, &mut srv] {
            if side.failure.is_none() {
                assert!(matches!(side.m.receive_eof(), AtEof::Failed(_)));
            }
            assert!(!side.m.is_handshake_complete());
        }
    }
    // After the handshake: a record header with a body that does not decrypt.
    let (mut c, _srv) = s.connected();
    let mut record = vec![23, 3, 3, 0, 20];
    record.extend_from_slice(&noise(9, 20));
    c.feed(&record);
    let f = c.failure.expect("a failure");
    assert_eq!(f.kind, io::ErrorKind::InvalidData);
    assert!(!f.during_handshake);
    assert!(c.m.is_handshake_complete());
    // And a record longer than TLS allows.
    let (mut c, _srv) = s.connected();
    c.feed(&[23, 3, 3, 0xff, 0xff]);
    assert!(c.failure.is_some());
}

#[test]
fn writes_before_the_handshake_wait_in_the_machine_and_go_first() {
    let s = Setup::new();
    let (mut c, mut srv) = s.pair(&[], &[]);
    let early = noise(5, 200_000);
    c.m.write(&[&early[..100], &early[100..]]);
    assert_eq!(c.m.pending_len(), early.len());
    assert_eq!(
        c.m.close(CloseKind::Full),
        CloseStep::AfterHandshake,
        "a close waits for the handshake"
    );
    pump(&mut c, &mut srv);
    assert_eq!(c.m.pending_len(), 0);
    assert_eq!(c.m.pending.capacity(), 0, "released once encrypted");
    assert_eq!(srv.data, early);
    assert_eq!(
        c.m.close(CloseKind::Full),
        CloseStep::Sent { peer_closed: false }
    );
    pump(&mut c, &mut srv);
    assert_eq!(srv.eofs, 1);
}

#[test]
fn rustls_buffers_stay_within_the_limit() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    // The limit is set: rustls itself takes at most TLS_BUFFER_LIMIT of
    // plaintext in one step...
    let big = noise(11, 4 * TLS_BUFFER_LIMIT);
    let taken = c.m.conn.writer().write(&big).unwrap();
    assert!(taken <= TLS_BUFFER_LIMIT, "{taken}");
    c.m.drain_records();
    assert!(!c.m.conn.wants_write());
    // ...and the machine drains it after every step, so a write of any size
    // is taken whole and nothing stays queued in rustls.
    c.m.write(&[&big]);
    assert!(!c.m.conn.wants_write());
    // One receive of far more than the limit of plaintext: the machine
    // drains rustls's plaintext as it goes, so its limit never refuses data.
    let out = c.m.take_outgoing();
    assert!(out.len() > 4 * TLS_BUFFER_LIMIT);
    let r = srv.m.receive(&out);
    assert!(r.failed.is_none());
    srv.read_all();
    assert_eq!(srv.data.len(), taken + big.len());
    assert_eq!(&srv.data[taken..], &big[..]);
}

#[test]
fn buffers_return_to_the_floor_after_a_4_mib_transfer() {
    let s = Setup::new();
    let (mut c, mut srv) = s.connected();
    let chunk = noise(13, 256 * 1024);
    let mut peak_write = 0;
    let mut peak_read = 0;
    for _ in 0..16 {
        c.m.write(&[&chunk]);
        srv.m.write(&[&chunk]);
        peak_write = peak_write.max(c.m.write_capacity());
        let out = c.m.take_outgoing();
        let r = srv.m.receive(&out);
        assert!(r.failed.is_none());
        c.m.restore_outgoing(out);
        peak_read = peak_read.max(srv.m.read_capacity());
        srv.read_all();
        pump(&mut c, &mut srv);
    }
    assert_eq!(srv.data.len(), 4 << 20);
    assert_eq!(c.data.len(), 4 << 20);
    assert!(peak_write > TLS_BUFFER_FLOOR, "{peak_write}");
    assert!(peak_read > TLS_BUFFER_FLOOR, "{peak_read}");
    for side in [&c, &srv] {
        assert!(side.m.write_capacity() <= TLS_BUFFER_FLOOR);
        assert!(side.m.read_capacity() <= TLS_BUFFER_FLOOR);
    }
    // Small messages afterwards reuse the kept buffers.
    c.m.write(&[b"small"]);
    pump(&mut c, &mut srv);
    assert!(c.m.write_capacity() > 0 && c.m.write_capacity() <= TLS_BUFFER_FLOOR);
    c.m.discard_buffers();
    assert_eq!(c.m.write_capacity() + c.m.read_capacity(), 0);
}

#[test]
fn an_external_failure_stops_the_machine_once() {
    let s = Setup::new();
    let (mut c, _srv) = s.pair(&[], &[]);
    let f =
        c.m.fail(io::ErrorKind::TimedOut, "no handshake within 1s".into())
            .expect("failed now");
    assert!(f.during_handshake);
    assert_eq!(f.kind, io::ErrorKind::TimedOut);
    assert!(c.m.fail(io::ErrorKind::Other, "again".into()).is_none());
    assert_eq!(c.m.failure().map(|f| f.kind), Some(io::ErrorKind::TimedOut));
}

impl TlsMachine {
    fn handshake_failed_for_tests(&self) -> bool {
        matches!(&self.phase, Phase::Failed(f) if f.during_handshake)
    }
}
