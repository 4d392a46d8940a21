//! The echo example as a process: it prints its address, echoes, and on
//! SIGINT shuts down cleanly, prints `echo stopped` and exits 0.

mod common;

use common::{wait_exit, Reaper};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(20);

/// Builds the example (a no-op when it is up to date) and returns its path.
fn echo_binary() -> PathBuf {
    common::example_binary("echo")
}

#[test]
fn echo_example_echoes_and_stops_on_sigint() {
    let mut child = Reaper(
        Command::new(echo_binary())
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the echo example"),
    );

    // Its stdout, line by line, through a thread so every read is bounded.
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
        .strip_prefix("echo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("an address");
    assert_ne!(addr.port(), 0);

    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    let message = b"hello through the echo example\n";
    client.write_all(message).unwrap();
    let mut echoed = vec![0u8; message.len()];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, message);

    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());

    // Shutdown closes the open connection.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);

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
    assert_eq!(after, ["echo stopped"]);
    let status = wait_exit(&mut child.0, BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
