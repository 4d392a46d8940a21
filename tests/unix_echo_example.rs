//! The Unix echo example as processes: the server prints its address; the
//! client sends a line and prints the echo; a second server on the live
//! path is refused; a client to a missing path exits 1; on SIGINT the
//! server shuts down cleanly, removes its socket file, prints
//! `unix echo stopped` and exits 0.

mod common;

use common::{wait_exit, Reaper};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(20);

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("gyre-unix-echo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create the test directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the example to completion (bounded: killed and failed after
/// [`BOUND`]) and returns its output.
fn run_to_end(args: &[&str], path: &Path) -> Output {
    let child = Command::new(common::example_binary("unix_echo"))
        .args(&args[..1])
        .arg(path)
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the unix_echo example");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(output) => output.expect("the example's output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("unix_echo {args:?} did not exit within {BOUND:?}")
        }
    }
}

#[test]
fn unix_echo_example_serves_refuses_and_cleans_up() {
    let dir = TempDir::new();
    let path = dir.0.join("echo.sock");
    let mut server = Reaper(
        Command::new(common::example_binary("unix_echo"))
            .arg("server")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the unix_echo server"),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = server.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("read stdout")).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(BOUND).expect("the listening line");
    assert_eq!(
        first,
        format!("unix echo listening on unix:{}", path.display())
    );

    let echoed = run_to_end(&["client", "hello", "unix"], &path);
    assert!(echoed.status.success(), "client: {echoed:?}");
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout),
        "echoed: hello unix\n"
    );

    let second = run_to_end(&["server"], &path);
    assert!(
        !second.status.success(),
        "a second server on a live path: {second:?}"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another listener"), "{stderr}");

    let missing = run_to_end(&["client", "anyone?"], &dir.0.join("missing.sock"));
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGINT) };
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
    assert_eq!(after, ["unix echo stopped"]);
    let status = wait_exit(&mut server.0, BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(!path.exists(), "the socket file is removed at shutdown");
}
