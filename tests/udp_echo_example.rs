//! The UDP echo example as a process: it prints its address, echoes each
//! datagram whole, and on SIGINT shuts down cleanly, prints
//! `udp echo stopped` and exits 0.

mod common;

use common::{wait_exit, Reaper};

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(20);

#[test]
fn udp_echo_example_echoes_and_stops_on_sigint() {
    let mut child = Reaper(
        Command::new(common::example_binary("udp_echo"))
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the udp_echo example"),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("read stdout")).is_err() {
                break;
            }
        }
    });

    let first = lines.recv_timeout(BOUND).expect("the listening line");
    let addr: SocketAddr = first
        .strip_prefix("udp echo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("an address");
    assert_ne!(addr.port(), 0);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    let mut buf = vec![0u8; 70_000];
    for message in [&b"hello"[..], &[7u8; 60_000][..]] {
        client.send_to(message, addr).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr);
        assert_eq!(&buf[..n], message, "echoed whole");
    }

    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());

    let mut after = Vec::new();
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => after.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("stdout still open {BOUND:?} after SIGINT; got {after:?}")
            }
        }
    }
    reader.join().unwrap();
    assert_eq!(after, ["udp echo stopped"]);
    let status = wait_exit(&mut child.0, BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
