//! TLS records as the peer sees them: writes made in one callback are
//! gathered until the loop flushes the connection and go out as one record
//! (as few as their size needs), not one record per write. The peer here
//! is a plain blocking rustls client on a thread, reading through a tap
//! that parses every record header it passes.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/run.rs"]
mod run;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use certs::TestCa;
use gyre_protocols::tls::{client_config_with_roots, listen_tls, server_config};
use gyre_reactor::{factory_fn, Protocol, Transport};
use run::{any_port, reactor, wait};

const LINES: usize = 100;

/// Answers any input with [`LINES`] short lines, one `write` each, all in
/// the same callback.
struct Burst {
    transport: Option<Transport>,
}

impl Protocol for Burst {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, _data: &[u8]) {
        if let Some(t) = &self.transport {
            for i in 0..LINES {
                t.write(format!("line {i}\n").as_bytes());
            }
        }
    }
}

/// A socket that notes the (content type, length) of every TLS record
/// read through it.
struct Tap {
    socket: TcpStream,
    header: Vec<u8>,
    body_left: usize,
    records: Vec<(u8, usize)>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        for &byte in &buf[..n] {
            if self.body_left > 0 {
                self.body_left -= 1;
                continue;
            }
            self.header.push(byte);
            if self.header.len() == 5 {
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.records.push((self.header[0], len));
                self.body_left = len;
                self.header.clear();
            }
        }
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// What the client saw: the plaintext after its request, and how many
/// records carried it.
struct Seen {
    text: String,
    records_after_request: usize,
}

/// Connects, sends one line, reads the [`LINES`] lines back.
fn client(addr: SocketAddr, ca_der: Vec<u8>) -> Result<Seen, String> {
    let config = client_config_with_roots(&[ca_der.into()], &[]).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut tap = Tap {
        socket,
        header: Vec::new(),
        body_left: 0,
        records: Vec::new(),
    };
    let mut stream = rustls::Stream::new(&mut tls, &mut tap);
    // Completes the handshake, then sends the request.
    stream.write_all(b"go\n").map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let before = stream.sock.records.len();
    let expected: usize = (0..LINES).map(|i| format!("line {i}\n").len()).sum();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while text.len() < expected {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF before every line".into());
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(Seen {
        text: String::from_utf8_lossy(&text).into_owned(),
        records_after_request: tap.records.len() - before,
    })
}

#[test]
fn lines_written_in_one_callback_go_out_in_one_record() {
    let reactor = reactor();
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let port = listen_tls(
        &reactor,
        any_port(),
        server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[]).expect("config"),
        factory_fn(|_| Some(Burst { transport: None })),
    )
    .expect("listen");
    let addr = port.local_addr();
    let ca_der = ca.cert_der().to_vec();
    let seen: Arc<Mutex<Option<Result<Seen, String>>>> = Arc::default();
    let slot = Arc::clone(&seen);
    let peer = thread::spawn(move || {
        let outcome = client(addr, ca_der);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    });
    wait(&reactor, "the client to read every line", || {
        seen.lock().map(|s| s.is_some()).unwrap_or(true)
    });
    peer.join().expect("client thread");
    let outcome = seen.lock().expect("lock").take().expect("an outcome");
    let seen = outcome.expect("the client read every line");
    let expected: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(seen.text, expected);
    // One record for the lines; the server's session tickets (two by
    // default) may also arrive after the request. One record per write
    // would be 100.
    assert!(
        seen.records_after_request <= 3,
        "{} records after the request",
        seen.records_after_request
    );
}
