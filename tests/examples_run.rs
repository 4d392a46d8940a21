//! The examples that no other test runs, each run as a process: the line
//! echo server echoes and stops on SIGINT, `process_output` reports the
//! command's output and exit code, `https_get` fetches from a local HTTPS
//! server trusted with `--ca`, and `idle_memory` completes a small run.
//! (The others have their own tests: `echo_example.rs`, `udp_echo_example.rs`,
//! `unix_echo_example.rs`, `faultproxy.rs`, `herd_processes.rs`,
//! protocols' `chat_example.rs` and `web_json_example.rs`, and loadgen's
//! own `cargo test --example loadgen`.)

mod common;

use common::{wait_exit, Reaper};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gyre::herd::places::LocalPlacesService;
use gyre::reactor::Reactor;

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(30);

/// Runs an example to completion with a bound.
fn run(name: &str, args: &[&str]) -> Output {
    let mut child = Reaper(
        Command::new(common::example_binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}")),
    );
    // Read both pipes on threads so a chatty child never blocks on them.
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let status = wait_exit(&mut child.0, BOUND);
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

#[test]
fn line_echo_echoes_lines_and_stops_on_sigint() {
    let mut child = Reaper(
        Command::new(common::example_binary("line_echo"))
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start line_echo"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("line_echo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.write_all(b"hello\nworld\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for want in ["hello\n", "world\n"] {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, want);
    }
    drop(stream);
    // SAFETY: kill(2) on our own child's pid (not yet reaped).
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut child.0, BOUND);
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stdout.read_line(&mut rest).unwrap();
    assert_eq!(rest.trim(), "line_echo stopped");
}

#[test]
fn process_output_reports_output_and_exit_code() {
    let out = run(
        "process_output",
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("to-stdout"), "{stdout}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
}

#[test]
fn https_get_fetches_from_a_local_https_server_trusted_with_ca() {
    let dir = std::env::temp_dir().join(format!("gyre-https-get-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    // The local Places service is an HTTPS server on loopback with its own
    // CA: serve it from a thread while the example fetches from it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let service = LocalPlacesService::start(&reactor, "127.0.0.1:0".parse().unwrap()).unwrap();
        tx.send((service.local_addr(), service.ca_pem().to_vec()))
            .unwrap();
        while stop_rx.try_recv().is_err() {
            reactor.iterate(Some(Duration::from_millis(20))).unwrap();
        }
    });
    let (addr, pem) = rx.recv_timeout(BOUND).unwrap();
    std::fs::write(&ca, pem).unwrap();
    let url = format!(
        "https://localhost:{}/maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=1000",
        addr.port()
    );
    let out = run("https_get", &[&url, "--ca", ca.to_str().unwrap()]);
    stop_tx.send(()).unwrap();
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"results\""), "{text}");
}

#[test]
fn idle_memory_completes_a_small_run() {
    let out = run("idle_memory", &["4", "1"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4 idle proxied connections, 1 MiB carried by each"),
        "{text}"
    );
    assert!(text.contains("idle RSS"), "{text}");
}
