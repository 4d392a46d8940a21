//! The faultproxy example as a process, in front of an echo server run by
//! the test: each toxic observed by a client, the control port, and a
//! clean pass-through (issue 12, Done-when 2).
//!
//! No test sleeps to let things settle: each waits for the event it is
//! about, with a generous bound. Timing assertions are made only where
//! timing is the behaviour under test (latency, bandwidth, time-out), with
//! wide tolerances.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(20);

/// Builds the example once per test binary.
fn binary() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| common::example_binary("faultproxy"))
}

/// A byte echo server on 127.0.0.1:0, one thread per connection; it
/// half-closes when its client does.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let addr = listener.local_addr().expect("echo address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// The proxy process, its addresses and a control connection; killed on drop.
struct Proxy {
    child: Child,
    listen: SocketAddr,
    control: BufReader<TcpStream>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts the proxy in front of a fresh echo server, with `extra` arguments.
    fn start(extra: &[&str]) -> Proxy {
        let upstream = echo_server().to_string();
        let mut child = Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .args(["--upstream", &upstream, "--seed", "12"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the faultproxy example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr_after = |prefix: &str| -> SocketAddr {
            let line = lines.recv_timeout(BOUND).expect("a line from the proxy");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .parse()
                .expect("an address")
        };
        let listen = addr_after("faultproxy: listening on ");
        let control_addr = addr_after("faultproxy: control on ");
        let control = TcpStream::connect(control_addr).expect("connect to the control port");
        control.set_read_timeout(Some(BOUND)).unwrap();
        Proxy {
            child,
            listen,
            control: BufReader::new(control),
        }
    }

    /// Sends one control line; returns the answer line.
    fn cmd(&mut self, line: &str) -> String {
        let stream = self.control.get_mut();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        let mut answer = String::new();
        self.control.read_line(&mut answer).expect("an answer");
        answer.trim_end().to_string()
    }

    /// Sends a command that must succeed.
    fn ok(&mut self, line: &str) -> String {
        let answer = self.cmd(line);
        assert!(answer.starts_with("OK"), "{line:?} answered {answer:?}");
        answer
    }

    /// A client connection through the proxy, reads bounded.
    fn client(&self) -> TcpStream {
        let s = TcpStream::connect(self.listen).expect("connect through the proxy");
        s.set_read_timeout(Some(BOUND)).unwrap();
        s
    }

    /// Waits (bounded, polling `status`) until `key=value` shows.
    fn wait_status(&mut self, key_value: &str) {
        let deadline = Instant::now() + BOUND;
        loop {
            let status = self.ok("status");
            if status.split_ascii_whitespace().any(|w| w == key_value) {
                return;
            }
            assert!(Instant::now() < deadline, "no {key_value} in {status:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How a read-to-the-end finished.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
}

/// Reads until EOF or a reset (any error but a time-out); panics on a time-out.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no EOF within {BOUND:?} (after {} bytes)", got.len())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (got, End::Reset),
        }
    }
}

/// Seeded pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// Sends `data` from a thread (then half-closes) while reading the echo;
/// returns the echo and how long it took.
fn round_trip(mut stream: TcpStream, data: Vec<u8>) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let (echoed, end) = read_to_end(&mut stream);
    let took = start.elapsed();
    sender.join().unwrap();
    assert_eq!(end, End::Eof);
    (echoed, took)
}

#[test]
fn passes_several_mib_both_ways_byte_exact() {
    let mut proxy = Proxy::start(&[]);
    let data = noise(4 << 20, 1);
    let (echoed, _) = round_trip(proxy.client(), data.clone());
    assert!(
        echoed == data,
        "echo differs ({} of {} bytes)",
        echoed.len(),
        data.len()
    );
    proxy.wait_status("connections=0");
    proxy.wait_status(&format!("bytes_down={}", data.len()));
}

#[test]
fn latency_delays_within_tolerance_and_keeps_order() {
    let mut proxy = Proxy::start(&[]);
    proxy.ok("toxic add lag upstream latency ms=300 jitter=50");
    let mut s = proxy.client();
    let start = Instant::now();
    s.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    s.read_exact(&mut pong).unwrap();
    let rtt = start.elapsed();
    assert_eq!(&pong, b"ping");
    assert!(
        rtt >= Duration::from_millis(250) && rtt <= Duration::from_millis(2350),
        "round trip {rtt:?} with latency 300 ms ± 50 ms"
    );
    // Many writes, each jittered: the order holds.
    let messages: Vec<u8> = (0..40u8).flat_map(|i| [b'<', i, b'>']).collect();
    for chunk in messages.chunks(3) {
        s.write_all(chunk).unwrap();
    }
    let mut back = vec![0u8; messages.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, messages);
}

#[test]
fn bandwidth_cap_is_respected() {
    let mut proxy = Proxy::start(&["--toxic", "slow downstream bandwidth rate=32768"]);
    assert!(proxy
        .ok("toxic list")
        .contains("slow downstream bandwidth rate=32768"));
    let data = noise(64 * 1024, 2);
    let (echoed, took) = round_trip(proxy.client(), data.clone());
    assert!(echoed == data, "echo differs");
    // 64 KiB at 32 KiB/s is 2 s; only the lower bound, with slack.
    assert!(
        took >= Duration::from_millis(1500),
        "64 KiB at 32 KiB/s took {took:?}"
    );
}

#[test]
fn slicer_delivers_every_byte_intact() {
    let mut proxy = Proxy::start(&[]);
    proxy.ok("toxic add up-slices upstream slicer size=7 variation=3 delay_us=20");
    proxy.ok("toxic add down-slices downstream slicer size=5 variation=4");
    let data = noise(48 * 1024, 3);
    let (echoed, _) = round_trip(proxy.client(), data.clone());
    assert!(echoed == data, "sliced echo differs");
}

#[test]
fn reset_after_n_bytes_cuts_the_client_off() {
    let mut proxy = Proxy::start(&[]);
    proxy.ok("toxic add cap downstream reset_after bytes=1000");
    let mut s = proxy.client();
    s.write_all(&noise(4000, 4)).unwrap();
    let (got, end) = read_to_end(&mut s);
    assert!(
        got.len() <= 1000,
        "{} bytes got through a 1000-byte reset",
        got.len()
    );
    assert!(matches!(end, End::Eof | End::Reset));
    proxy.wait_status("reset=1");
}

#[test]
fn reset_chance_one_refuses_every_connection() {
    let mut proxy = Proxy::start(&[]);
    proxy.ok("toxic add flaky upstream reset_chance p=1");
    let mut s = proxy.client();
    let (got, _) = read_to_end(&mut s);
    assert!(got.is_empty());
    proxy.wait_status("refused=1");
    proxy.ok("toxic remove flaky");
    let (echoed, _) = round_trip(proxy.client(), b"fine now".to_vec());
    assert_eq!(echoed, b"fine now");
}

#[test]
fn blackhole_discards_and_keeps_the_connection_open() {
    let mut proxy = Proxy::start(&[]);
    let mut s = proxy.client();
    s.write_all(b"a").unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    proxy.ok("toxic add hole upstream blackhole");
    s.write_all(b"lost").unwrap();
    // The proxy has swallowed the four bytes...
    proxy.wait_status("discarded=4");
    proxy.ok("toxic remove hole");
    // ...and the same connection still relays, without them.
    s.write_all(b"back").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");
    s.shutdown(Shutdown::Write).unwrap();
    let (rest, end) = read_to_end(&mut s);
    assert_eq!((rest, end), (Vec::new(), End::Eof));
}

#[test]
fn timeout_closes_the_connection_cleanly() {
    let mut proxy = Proxy::start(&[]);
    proxy.ok("toxic add deadline upstream timeout ms=300");
    let start = Instant::now();
    let mut s = proxy.client();
    let (got, end) = read_to_end(&mut s);
    let took = start.elapsed();
    assert_eq!((got, end), (Vec::new(), End::Eof));
    assert!(
        took >= Duration::from_millis(250),
        "closed after {took:?}, not ~300 ms"
    );
}

#[test]
fn cut_aborts_and_refuses_until_heal() {
    let mut proxy = Proxy::start(&[]);
    let mut before = proxy.client();
    before.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    before.read_exact(&mut one).unwrap();
    assert_eq!(proxy.ok("cut"), "OK cut, aborted 1 connections");
    let (got, _) = read_to_end(&mut before);
    assert!(got.is_empty());
    let mut during = proxy.client();
    let (got, _) = read_to_end(&mut during);
    assert!(got.is_empty());
    assert!(proxy.ok("status").contains("link=cut"));
    proxy.ok("heal");
    let (echoed, _) = round_trip(proxy.client(), b"healed".to_vec());
    assert_eq!(echoed, b"healed");
}

#[test]
fn control_port_answers_err_to_garbage() {
    let mut proxy = Proxy::start(&[]);
    for bad in [
        "frobnicate",
        "",
        "toxic",
        "toxic add",
        "toxic add x sideways latency ms=1",
        "toxic add x upstream latency ms=abc",
        "toxic add x upstream latency ms=1 extra=2",
        "toxic add x upstream teleport",
        "toxic add x/y upstream blackhole",
        "toxic remove nothing",
        "cut now",
    ] {
        let answer = proxy.cmd(bad);
        assert!(answer.starts_with("ERR "), "{bad:?} answered {answer:?}");
    }
    proxy.ok("toxic add x upstream blackhole");
    assert!(proxy
        .cmd("toxic add x downstream blackhole")
        .starts_with("ERR "));
    assert_eq!(proxy.ok("toxic list"), "OK 1 toxics: x upstream blackhole");
    // Not UTF-8.
    proxy.control.get_mut().write_all(b"\xff\xfe\n").unwrap();
    let mut answer = String::new();
    proxy.control.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("ERR "), "{answer:?}");
    // Too long: ERR, then the control connection closes.
    let long = "a".repeat(4000);
    let answer = proxy.cmd(&long);
    assert!(answer.starts_with("ERR "), "{answer:?}");
    let mut rest = String::new();
    assert_eq!(proxy.control.read_line(&mut rest).unwrap_or(0), 0);
}

/// A client that writes and never reads: the proxy pauses reading, the
/// client's writes block, and the proxy's memory stays bounded.
#[test]
fn backpressure_bounds_memory() {
    let proxy = Proxy::start(&[]);
    let mut s = proxy.client();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let cap = 128 << 20;
    // Byte i of the stream is i % 251, whatever the partial writes.
    let pattern: Vec<u8> = (0..64 * 1024 + 251).map(|i| (i % 251) as u8).collect();
    let mut written = 0usize;
    while written < cap {
        let at = written % 251;
        match s.write(&pattern[at..at + 64 * 1024]) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(written < cap, "the proxy took {written} bytes nobody read");
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.child.id())).unwrap();
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        assert!(
            rss_kib < 40 * 1024,
            "proxy RSS {rss_kib} KiB with {written} bytes in flight"
        );
    }
    // Everything written comes back, in order.
    let mut back = vec![0u8; written];
    s.read_exact(&mut back).unwrap();
    assert!(back.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}
