//! gyre's TLS transport next to tokio-rustls: an echo round trip and bulk
//! throughput over TLS on loopback, with the same certificates.
//!
//! - Servers, each on its own thread: gyre (`listen_tls` on its own
//!   Reactor, a byte-echo Protocol inside) and tokio-rustls (a
//!   current-thread runtime, `TlsAcceptor`, a read/write_all echo loop per
//!   connection). Both use a rustls `ServerConfig` on the ring provider with
//!   rustls's safe default versions, and the same CA-signed leaf (rcgen,
//!   `protocols/tests/common/certs.rs`), so they negotiate the same TLS 1.3
//!   cipher suite.
//! - Client, identical for both, in the bench thread: a blocking
//!   `rustls::StreamOwned<ClientConnection, TcpStream>` with TCP_NODELAY,
//!   trusting only the test CA. The handshake is done before timing.
//! - `tls_pingpong_64B/{gyre,tokio_rustls}`: write 64 bytes, read the 64
//!   echoed back, on one connection.
//! - `tls_bulk_1MiB/{gyre,tokio_rustls}`: send 1 MiB in 16 KiB writes while
//!   reading the echo, with at most `WINDOW` bytes unanswered (a blocking
//!   client that wrote all 1 MiB before reading could deadlock against a
//!   server whose writes back are blocked), until all 1 MiB is back.
//!
//! Client and server threads are pinned to the same core (the last one), as
//! in benches/dispatch.rs, so the rows compare the servers' code paths
//! rather than cross-core wake-ups; `PINGPONG_CORES=split` puts the servers
//! on core 0 instead.
//!
//! Run: `cargo bench --bench tls` (quick: `-- --warm-up-time 1
//! --measurement-time 3`). On a shared machine compare the rows of one
//! group from one run, not absolute numbers across runs.

mod common;
use common::{cores, pin_to_core, server_thread};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gyre::protocols::tls::{self, listen_tls, parse_certs_pem, parse_key_pem};
use gyre::reactor::{factory_fn, Protocol, Reactor, Transport};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../protocols/tests/common/certs.rs"]
mod certs;

const WAIT: Duration = Duration::from_secs(10);
const PING: usize = 64;
const BULK: usize = 1 << 20;
const CHUNK: usize = 16 * 1024;
/// Most plaintext bytes sent and not yet echoed back in the bulk test.
const WINDOW: usize = 128 * 1024;

type Client = StreamOwned<ClientConnection, TcpStream>;

/// The certificates both servers present, and the CA the client trusts.
struct Certs {
    chain_pem: String,
    key_pem: String,
    ca: rustls::pki_types::CertificateDer<'static>,
}

fn make_certs() -> Certs {
    let ca = certs::TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    Certs {
        chain_pem: leaf.chain_pem,
        key_pem: leaf.key_pem,
        ca: ca.cert_der(),
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes back every byte it receives.
#[derive(Default)]
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

fn gyre_server(certs: &Certs) -> SocketAddr {
    let config = tls::server_config(certs.chain_pem.as_bytes(), certs.key_pem.as_bytes(), &[])
        .expect("gyre server config");
    server_thread(move |tx| {
        let r = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .expect("reactor");
        let port = listen_tls(
            &r,
            "127.0.0.1:0".parse().expect("addr"),
            config,
            factory_fn(|_| Some(Echo::default())),
        )
        .expect("listen_tls");
        tx.send(port.local_addr()).expect("send");
        r.run().expect("run");
    })
}

fn tokio_rustls_server(certs: &Certs) -> SocketAddr {
    let chain = parse_certs_pem(certs.chain_pem.as_bytes()).expect("chain");
    let key = parse_key_pem(certs.key_pem.as_bytes()).expect("key");
    let config = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("tokio-rustls server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    server_thread(move |tx| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
    })
}

/// Connects the blocking client and completes the handshake.
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Client {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    tcp.set_write_timeout(Some(WAIT)).expect("timeout");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("client connection");
    let mut client = StreamOwned::new(conn, tcp);
    while client.conn.is_handshaking() {
        client
            .conn
            .complete_io(&mut client.sock)
            .expect("handshake");
    }
    client
}

fn client_config(certs: &Certs) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca.clone()).expect("CA");
    let config = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Sends `data` and reads its echo into `echo`, keeping at most `WINDOW`
/// bytes unanswered.
fn bulk_round(client: &mut Client, data: &[u8], echo: &mut [u8]) {
    let (mut sent, mut got) = (0, 0);
    while got < data.len() {
        if sent < data.len() && sent - got < WINDOW {
            let end = (sent + CHUNK).min(data.len());
            client.write_all(&data[sent..end]).expect("write");
            sent = end;
        } else {
            let n = client.read(&mut echo[got..sent]).expect("read");
            assert!(n > 0, "server closed mid-echo");
            got += n;
        }
    }
}

type StartServer = fn(&Certs) -> SocketAddr;
const SERVERS: [(&str, StartServer); 2] =
    [("gyre", gyre_server), ("tokio_rustls", tokio_rustls_server)];

fn tls(c: &mut Criterion) {
    let certs = make_certs();
    let client_config = client_config(&certs);
    pin_to_core(cores().0);
    let servers: Vec<(&str, SocketAddr)> = SERVERS
        .iter()
        .map(|(name, start)| (*name, start(&certs)))
        .collect();

    let mut group = c.benchmark_group("tls_pingpong_64B");
    group.throughput(Throughput::Elements(1));
    let ping: Vec<u8> = (0..PING).map(|i| i as u8).collect();
    let mut pong = vec![0u8; PING];
    for &(name, addr) in &servers {
        let mut client = connect(addr, &client_config);
        client.write_all(&ping).expect("write");
        client.read_exact(&mut pong).expect("read");
        assert_eq!(pong, ping, "{name} echoed wrong");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    client.write_all(&ping).expect("write");
                    client.read_exact(&mut pong).expect("read");
                }
                start.elapsed()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tls_bulk_1MiB");
    group.throughput(Throughput::Bytes(BULK as u64));
    group.sample_size(30);
    let data: Vec<u8> = (0..BULK).map(|i| (i * 7 % 251) as u8).collect();
    let mut echo = vec![0u8; BULK];
    for &(name, addr) in &servers {
        let mut client = connect(addr, &client_config);
        bulk_round(&mut client, &data, &mut echo);
        assert!(echo == data, "{name} echoed wrong");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    bulk_round(&mut client, &data, &mut echo);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
