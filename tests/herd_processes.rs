//! The herd program (`examples/herd.rs`) as real processes: one process
//! running a whole herd, separate processes per server killed and
//! restarted, and the SIGINT paths. Ports are picked free at run time;
//! every wait is on an event (a stdout line, a log line, an answer) with a
//! generous deadline.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The upper bound of every wait: generous, never reached when things work.
const BOUND: Duration = Duration::from_secs(30);

/// Where HERD.md's example client is (there are real places around it in
/// the local Places service).
const UCLA: &str = "+34.068930-118.445127";

/// Builds the herd example once (a no-op when it is up to date) next to
/// this test's binary and returns its path.
fn herd_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| common::example_binary("herd"))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "gyre-herd-processes-{}-{tag}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` ports that were free a moment ago (all listeners are held until
/// every port is picked, so they are distinct).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Writes a herd configuration (HERD.md's JSON form) into `dir`.
fn write_config(dir: &Path, servers: &[(&str, u16)], links: &[(&str, &str)]) -> PathBuf {
    let servers: Vec<String> = servers
        .iter()
        .map(|(name, port)| format!(r#"{{"name": "{name}", "host": "127.0.0.1", "port": {port}}}"#))
        .collect();
    let links: Vec<String> = links
        .iter()
        .map(|(a, b)| format!(r#"["{a}", "{b}"]"#))
        .collect();
    let json = format!(
        "{{\"servers\": [{}], \"links\": [{}]}}\n",
        servers.join(", "),
        links.join(", ")
    );
    let path = dir.join("herd.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// A running herd process: its stdout lines come through a channel so every
/// wait is bounded; dropping it SIGKILLs and reaps the child.
struct Herd {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    label: String,
}

impl Herd {
    /// Starts `herd --config CONFIG --log-dir LOGS [--server NAME]`; its
    /// stderr goes to `stderr-LABEL.txt` in `dir`. A single server gets
    /// `--peer-tls DIR/pki`, made by `herd pki init` on first use.
    fn start(dir: &Path, config: &Path, server: Option<&str>) -> Herd {
        let mut extra = Vec::new();
        if server.is_some() {
            let pki = pki_init(dir, config);
            extra.push("--peer-tls".to_string());
            extra.push(pki.display().to_string());
        }
        Herd::start_with(dir, config, server, &extra)
    }

    /// [`start`](Self::start) with exactly these extra arguments.
    fn start_with(dir: &Path, config: &Path, server: Option<&str>, extra: &[String]) -> Herd {
        let label = server.unwrap_or("all").to_string();
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("stderr-{label}.txt")))
            .unwrap();
        let mut command = Command::new(herd_binary());
        command
            .arg("--config")
            .arg(config)
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .env("RUST_LOG", "info")
            .env_remove("GOOGLE_PLACES_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if let Some(name) = server {
            command.args(["--server", name]);
        }
        command.args(extra);
        let mut child = command.spawn().expect("start the herd example");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Herd {
            child,
            lines,
            seen: Vec::new(),
            label,
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns it.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "herd {}: no stdout line {prefix:?} ({e:?}); stdout so far: {:?}",
                    self.label, self.seen
                ),
            }
        }
    }

    /// Waits for the `herd: NAME listening on ADDR` line of each server.
    fn wait_listening(&mut self, names: &[&str]) -> Vec<SocketAddr> {
        names
            .iter()
            .map(|name| {
                let prefix = format!("herd: {name} listening on ");
                let line = self.wait_line(&prefix);
                line[prefix.len()..].parse().expect("an address")
            })
            .collect()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid (not yet reaped).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the child to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herd {} did not exit within {BOUND:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the process and reaps it.
    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `herd pki init DIR/pki --config CONFIG` unless `DIR/pki` has a CA;
/// returns `DIR/pki`.
fn pki_init(dir: &Path, config: &Path) -> PathBuf {
    let pki = dir.join("pki");
    if !pki.join("ca.pem").exists() {
        let out = Command::new(herd_binary())
            .arg("pki")
            .arg("init")
            .arg(&pki)
            .arg("--config")
            .arg(config)
            .output()
            .expect("run herd pki init");
        assert!(
            out.status.success(),
            "herd pki init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("pki: wrote"));
    }
    pki
}

/// Sends `request`, half-closes, and reads everything until EOF.
fn query(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.set_write_timeout(Some(BOUND)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("reading the answer to {request:?} from {addr}: {e}"));
    String::from_utf8(answer).expect("a UTF-8 answer")
}

/// Asks `WHATSAT id 10 5` at `addr` on fresh connections until the answer
/// is not `? ...` (the location has not arrived yet), and returns it.
fn whatsat_when_known(addr: SocketAddr, id: &str) -> String {
    let request = format!("WHATSAT {id} 10 5\n");
    let deadline = Instant::now() + BOUND;
    loop {
        let answer = query(addr, &request);
        if !answer.starts_with("? ") {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still answers {answer:?} to {request:?} after {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The current POSIX time as IAMAT's time field.
fn now_field() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Checks an AT line answering `IAMAT id UCLA time` at `server`.
fn assert_at_line(line: &str, server: &str, id: &str, time: &str) {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 6, "AT line {line:?}");
    assert_eq!(fields[..2], ["AT", server], "AT line {line:?}");
    let diff = fields[2];
    assert!(
        diff.starts_with(['+', '-']),
        "unsigned time difference in {line:?}"
    );
    let (whole, frac) = diff[1..].split_once('.').expect("a fraction");
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 9
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "bad time difference in {line:?}"
    );
    assert_eq!(fields[3..], [id, UCLA, time], "AT line {line:?}");
}

/// Splits a WHATSAT answer into its AT line and its JSON body, checking
/// the framing (the answer ends with an empty line) and the body.
fn split_whatsat(answer: &str) -> (&str, &str) {
    let (at, rest) = answer.split_once('\n').expect("an AT line");
    let body = rest
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("WHATSAT answer not ending in an empty line: {answer:?}"));
    assert!(!body.ends_with('\n'), "trailing newline in {answer:?}");
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.starts_with('{') && compact.ends_with('}'),
        "not a JSON object: {body:?}"
    );
    assert!(
        compact.contains(r#""status":"OK""#),
        "status not OK: {body}"
    );
    assert!(compact.contains(r#""results":["#), "no results: {body}");
    assert!(
        !compact.contains(r#""results":[]"#),
        "no places near UCLA: {body}"
    );
    (at, body)
}

/// Polls WHATSAT at `addr` until `id` is known, checks the answer, and
/// returns its AT line.
fn known_at_line(addr: SocketAddr, id: &str) -> String {
    let answer = whatsat_when_known(addr, id);
    split_whatsat(&answer).0.to_string()
}

/// The log file's text (empty while it does not exist).
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the log at `path` has a line, after its first `skip` lines,
/// containing `needle`; returns that line's index.
fn wait_log_line(path: &Path, needle: &str, skip: usize) -> usize {
    let deadline = Instant::now() + BOUND;
    loop {
        let text = read_log(path);
        if let Some(i) = text
            .lines()
            .enumerate()
            .skip(skip)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} (after line {skip}) in {} within {BOUND:?}; it has:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_process_herd_floods_answers_and_stops_on_sigint() {
    let dir = TempDir::new("one");
    let ports = free_ports(3);
    let config = write_config(
        dir.path(),
        &[("A", ports[0]), ("B", ports[1]), ("C", ports[2])],
        &[("A", "B"), ("B", "C")],
    );
    let mut herd = Herd::start(dir.path(), &config, None);
    herd.wait_line("places: local service at ");
    herd.wait_line("places: local back-end at ");
    let addrs = herd.wait_listening(&["A", "B", "C"]);

    // IAMAT, WHATSAT and a bad line on one connection, then half-close.
    let id = "kiwi.cs.ucla.edu";
    let time = now_field();
    let answer = query(
        addrs[0],
        &format!("IAMAT {id} {UCLA} {time}\nWHATSAT {id} 10 5\nLLL\n"),
    );
    let (at, rest) = answer.split_once('\n').expect("an AT line");
    assert_at_line(at, "A", id, &time);
    let (whatsat, invalid) = rest
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no WHATSAT answer in {answer:?}"));
    let whatsat = format!("{whatsat}\n\n");
    let (whatsat_at, _) = split_whatsat(&whatsat);
    assert_eq!(whatsat_at, at);
    assert_eq!(invalid, "? LLL\n", "answer {answer:?}");

    // C is two hops away: the location reaches it through B.
    let answer = whatsat_when_known(addrs[2], id);
    let (at_c, _) = split_whatsat(&answer);
    assert_eq!(at_c, at, "C's answer {answer:?}");

    herd.signal(libc::SIGINT);
    herd.wait_line("herd: stopped");
    let status = herd.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");

    let logs = dir.path().join("logs");
    let log_a = read_log(&logs.join("A.log"));
    let log_b = read_log(&logs.join("B.log"));
    let log_c = read_log(&logs.join("C.log"));
    assert!(
        log_a.contains(&format!("IAMAT {id} {UCLA} {time}")),
        "A.log:\n{log_a}"
    );
    assert!(log_a.contains("LLL"), "A.log:\n{log_a}");
    assert!(log_b.contains(at), "B.log:\n{log_b}");
    assert!(log_c.contains(at), "C.log:\n{log_c}");
    assert!(
        log_c.contains(&format!("WHATSAT {id} 10 5")),
        "C.log:\n{log_c}"
    );
}

#[test]
fn restarted_server_learns_what_was_flooded_while_it_was_down() {
    let dir = TempDir::new("restart");
    let ports = free_ports(3);
    let names = ["A", "B", "C"];
    let config = write_config(
        dir.path(),
        &[("A", ports[0]), ("B", ports[1]), ("C", ports[2])],
        &[("A", "B"), ("B", "C"), ("C", "A")],
    );
    let mut herds: Vec<Herd> = names
        .iter()
        .map(|name| Herd::start(dir.path(), &config, Some(name)))
        .collect();
    let addrs: Vec<SocketAddr> = herds
        .iter_mut()
        .zip(names)
        .map(|(herd, name)| herd.wait_listening(&[name])[0])
        .collect();
    let logs = dir.path().join("logs");
    let log_a = logs.join("A.log");

    // The herd works as a whole before anything is killed.
    let early = "early.client";
    let early_time = now_field();
    let at_early = query(addrs[0], &format!("IAMAT {early} {UCLA} {early_time}\n"));
    assert_at_line(at_early.trim_end(), "A", early, &early_time);
    let at = known_at_line(addrs[1], early);
    assert_eq!(at, at_early.trim_end());
    wait_log_line(&log_a, "link to C up", 0);

    // B dies; A notices.
    herds[1].kill();
    let down = wait_log_line(&log_a, "link to B down", 0);

    // A location reported while B is down still floods A -> C.
    let roamer = "roamer.client";
    let time = now_field();
    let answer = query(addrs[0], &format!("IAMAT {roamer} {UCLA} {time}\n"));
    let at_roamer = answer
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("answer {answer:?}"));
    assert_at_line(at_roamer, "A", roamer, &time);
    let at = known_at_line(addrs[2], roamer);
    assert_eq!(at, at_roamer);

    // B comes back on the same port and catches up from its neighbours.
    herds[1] = Herd::start(dir.path(), &config, Some("B"));
    let b = herds[1].wait_listening(&["B"])[0];
    assert_eq!(b, addrs[1]);
    let at = known_at_line(b, roamer);
    assert_eq!(at, at_roamer, "B's answer after its restart");
    let at = known_at_line(b, early);
    assert_eq!(at, at_early.trim_end(), "B's answer after its restart");

    // A logged the link to B coming back after it went down.
    wait_log_line(&log_a, "link to B up", down + 1);
}

#[test]
fn second_sigint_exits_at_once() {
    let dir = TempDir::new("sigint");
    let ports = free_ports(2);
    let config = write_config(
        dir.path(),
        &[("A", ports[0]), ("B", ports[1])],
        &[("A", "B")],
    );
    let mut herd = Herd::start(dir.path(), &config, None);
    let addrs = herd.wait_listening(&["A", "B"]);
    // An answer proves the loop runs (so its signal handlers are in).
    assert_eq!(query(addrs[0], "LLL\n"), "? LLL\n");

    herd.signal(libc::SIGINT);
    herd.signal(libc::SIGINT);
    let status = herd.wait_exit();
    assert!(
        matches!(status.code(), Some(0) | Some(130)),
        "exit status {status}"
    );
}

#[test]
fn sigint_right_after_the_listening_lines_stops_cleanly() {
    // Scripts signal the herd as soon as they read its listening lines: by
    // then its SIGINT handler must be in (no default "killed by SIGINT").
    let dir = TempDir::new("early-sigint");
    let ports = free_ports(1);
    let config = write_config(dir.path(), &[("A", ports[0])], &[]);
    let mut herd = Herd::start(dir.path(), &config, None);
    herd.wait_listening(&["A"]);
    herd.signal(libc::SIGINT);
    herd.wait_line("herd: stopped");
    let status = herd.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn pki_init_output_links_a_five_process_herd() {
    let dir = TempDir::new("pki5");
    let ports = free_ports(5);
    let names = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
    let servers: Vec<(&str, u16)> = names.iter().copied().zip(ports).collect();
    let config = write_config(
        dir.path(),
        &servers,
        &[
            ("Alford", "Hamilton"),
            ("Alford", "Welsh"),
            ("Ball", "Holiday"),
            ("Ball", "Welsh"),
            ("Hamilton", "Holiday"),
        ],
    );
    let mut herds: Vec<Herd> = names
        .iter()
        .map(|name| Herd::start(dir.path(), &config, Some(name)))
        .collect();
    let addrs: Vec<SocketAddr> = herds
        .iter_mut()
        .zip(names)
        .map(|(herd, name)| herd.wait_listening(&[name])[0])
        .collect();
    // Ball is three links away from Hamilton (Hamilton-Alford-Welsh-Ball).
    let id = "far.client";
    let time = now_field();
    let answer = query(addrs[2], &format!("IAMAT {id} {UCLA} {time}\n"));
    assert_at_line(answer.trim_end(), "Hamilton", id, &time);
    for addr in &addrs {
        assert_eq!(known_at_line(*addr, id), answer.trim_end());
    }
    let logs = dir.path().join("logs");
    wait_log_line(&logs.join("Ball.log"), "verified neighbour Welsh at", 0);
    wait_log_line(&logs.join("Ball.log"), "verified neighbour Holiday at", 0);
}

#[test]
fn a_single_server_needs_peer_tls_or_an_explicit_insecure_flag() {
    let dir = TempDir::new("insecure");
    let ports = free_ports(2);
    let config = write_config(
        dir.path(),
        &[("A", ports[0]), ("B", ports[1])],
        &[("A", "B")],
    );
    let out = Command::new(herd_binary())
        .arg("--config")
        .arg(&config)
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--server", "A"])
        .stdin(Stdio::null())
        .output()
        .expect("run the herd");
    assert!(!out.status.success(), "refused to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("herd pki init DIR --config FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("--peer-tls DIR"), "{stderr}");
    assert!(stderr.contains("--insecure-peer-links"), "{stderr}");

    let mut herd = Herd::start_with(
        dir.path(),
        &config,
        Some("A"),
        &["--insecure-peer-links".to_string()],
    );
    let addr = herd.wait_listening(&["A"])[0];
    wait_log_line(
        &dir.path().join("logs").join("A.log"),
        "WARNING: peer links are NOT authenticated",
        0,
    );
    let stderr = read_log(&dir.path().join("stderr-A.txt"));
    assert!(stderr.contains("--insecure-peer-links"), "{stderr}");
    // Today's plain PEER behaviour: the claim is believed. A link's lines
    // are never answered; it only gets the link-up keep-alive.
    let answer = query(addr, "PEER B\n");
    assert!(
        answer.lines().all(|line| line == "PING"),
        "a believed PEER gets nothing but keep-alives: {answer:?}"
    );
    herd.signal(libc::SIGINT);
    assert!(herd.wait_exit().success());
}

/// A local Places service on its own reactor in a thread of this test,
/// held: its loop does not run (so every request to it waits, its TCP
/// connection sitting in the kernel's backlog) until [`release`](Self::release).
struct HeldPlaces {
    url: String,
    ca_file: PathBuf,
    go: Option<mpsc::Sender<()>>,
    stop: gyre_reactor::ThreadHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldPlaces {
    fn start(dir: &Path) -> HeldPlaces {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let reactor = gyre_reactor::Reactor::builder()
                .install_signal_handlers(false)
                .build()
                .unwrap();
            let service = gyre_herd::places::LocalPlacesService::start(
                &reactor,
                "127.0.0.1:0".parse().unwrap(),
            )
            .unwrap();
            ready_tx
                .send((
                    service.url(),
                    service.ca_pem().to_vec(),
                    reactor.thread_handle(),
                ))
                .unwrap();
            // Held until released (or the test gave up).
            if go_rx.recv().is_ok() {
                reactor.run().unwrap();
            }
        });
        let (url, ca, stop) = ready_rx.recv_timeout(BOUND).expect("the Places service");
        let ca_file = dir.join("places-ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        HeldPlaces {
            url,
            ca_file,
            go: Some(go),
            stop,
            thread: Some(thread),
        }
    }

    /// The herd options that make it ask this service.
    fn args(&self) -> Vec<String> {
        vec![
            "--places-api".into(),
            "local".into(),
            "--places-url".into(),
            self.url.clone(),
            "--places-ca".into(),
            self.ca_file.display().to_string(),
        ]
    }

    /// Lets the service answer.
    fn release(&mut self) {
        if let Some(go) = self.go.take() {
            go.send(()).unwrap();
        }
    }
}

impl Drop for HeldPlaces {
    fn drop(&mut self) {
        // Never released: its thread ends at once; else stop its loop.
        self.go.take();
        let _ = self.stop.call_from_thread(|reactor| {
            let _ = reactor.stop();
        });
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the log at `path` has at least `n` lines containing `needle`.
fn wait_log_count(path: &Path, needle: &str, n: usize) {
    let deadline = Instant::now() + BOUND;
    loop {
        let text = read_log(path);
        let count = text.lines().filter(|l| l.contains(needle)).count();
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines with {needle:?} in {} after {BOUND:?}, not {n}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 10's graceful stop, as a real process: 200 WHATSATs on four
/// connections wait on a held Places service when SIGTERM comes; the
/// server stops accepting, answers every one of them in full once Places
/// answers, closes each connection, logs that it drained, and exits 0.
#[test]
fn sigterm_answers_every_whatsat_in_flight_then_exits_zero() {
    let dir = TempDir::new("drain");
    let ports = free_ports(1);
    let config = write_config(dir.path(), &[("A", ports[0])], &[]);
    let mut places = HeldPlaces::start(dir.path());
    let mut herd = Herd::start_with(dir.path(), &config, None, &places.args());
    let addr = herd.wait_listening(&["A"])[0];
    let log = dir.path().join("logs").join("A.log");

    let id = "drain.client";
    let time = now_field();
    let at = query(addr, &format!("IAMAT {id} {UCLA} {time}\n"));
    assert_at_line(at.trim_end(), "A", id, &time);

    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 50;
    let mut streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|c| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(BOUND)).unwrap();
            let request: String = (0..PER_CONNECTION)
                .map(|i| format!("WHATSAT {id} {} 5\n", (c * PER_CONNECTION + i) % 10 + 1))
                .collect();
            // The write side stays open: the drain, not an EOF, ends it.
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Every WHATSAT has reached the server (and waits on Places).
    wait_log_count(
        &log,
        "Places request for drain.client",
        CONNECTIONS * PER_CONNECTION,
    );

    herd.signal(libc::SIGTERM);
    let draining = wait_log_line(&log, "server A draining", 0);
    let line = read_log(&log).lines().nth(draining).unwrap().to_string();
    assert!(
        line.contains(&format!(
            "with {} answer(s) to finish",
            CONNECTIONS * PER_CONNECTION
        )),
        "{line}"
    );
    // No longer accepting.
    assert!(
        TcpStream::connect(addr).is_err(),
        "a new connection is refused while draining"
    );
    places.release();

    for (c, stream) in streams.iter_mut().enumerate() {
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("connection {c}: {e}"));
        let answer = String::from_utf8(answer).unwrap();
        let answers: Vec<&str> = answer.split_inclusive("\n\n").collect();
        assert_eq!(answers.len(), PER_CONNECTION, "connection {c}: {answer}");
        for whatsat in answers {
            let (at_line, body) = whatsat.split_once('\n').unwrap();
            assert_eq!(at_line, at.trim_end(), "connection {c}");
            let body = body.strip_suffix("\n\n").unwrap();
            assert!(
                body.starts_with('{') && body.ends_with('}') && body.contains("\"status\""),
                "connection {c}: not a full answer: {whatsat:?}"
            );
        }
    }
    herd.wait_line("herd: stopped");
    let status = herd.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let text = read_log(&log);
    assert!(text.contains("server A drained in"), "A.log:\n{text}");
    assert!(!text.contains("(drain_timeout) hit"), "A.log:\n{text}");
}

/// Issue 10's certificate reload, as real processes: SIGHUP after a
/// certificate is re-issued from the same CA keeps the link up and the
/// next link (after B restarts) presents the new certificate; SIGHUP with
/// a corrupt file keeps the credentials in use and the link, and says so.
#[test]
fn sighup_reloads_the_peer_certificates_and_keeps_the_link() {
    let dir = TempDir::new("sighup");
    let ports = free_ports(2);
    let config = write_config(
        dir.path(),
        &[("A", ports[0]), ("B", ports[1])],
        &[("A", "B")],
    );
    let mut a = Herd::start(dir.path(), &config, Some("A"));
    let mut b = Herd::start(dir.path(), &config, Some("B"));
    let addr_a = a.wait_listening(&["A"])[0];
    let addr_b = b.wait_listening(&["B"])[0];
    let logs = dir.path().join("logs");
    let (log_a, log_b) = (logs.join("A.log"), logs.join("B.log"));
    wait_log_line(&log_a, "link to B up", 0);

    // A new key and certificate for A from the same CA, then SIGHUP.
    let pki = dir.path().join("pki");
    std::fs::remove_file(pki.join("A.pem")).unwrap();
    std::fs::remove_file(pki.join("A-key.pem")).unwrap();
    let out = Command::new(herd_binary())
        .args(["pki", "add", "A", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.signal(libc::SIGHUP);
    let reloaded = wait_log_line(&log_a, "peer TLS credentials reloaded (from", 0);
    let line = read_log(&log_a).lines().nth(reloaded).unwrap().to_string();
    assert!(line.contains("kept up: B"), "{line}");
    let serial = line
        .split("now presenting certificate serial ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no serial in {line}"))
        .to_string();

    // The link is still up and carries locations.
    let id = "after.sighup";
    let time = now_field();
    let at = query(addr_a, &format!("IAMAT {id} {UCLA} {time}\n"));
    assert_eq!(known_at_line(addr_b, id), at.trim_end());
    assert!(!read_log(&log_a).contains("link to B down"));

    // B restarts: A's new certificate is what it verifies.
    let before = read_log(&log_b).lines().count();
    b.kill();
    b = Herd::start(dir.path(), &config, Some("B"));
    let addr_b = b.wait_listening(&["B"])[0];
    let i = wait_log_line(&log_b, "verified neighbour A at", before);
    let verified = read_log(&log_b).lines().nth(i).unwrap().to_string();
    assert!(
        verified.contains(&format!("(serial {serial})")),
        "{verified}"
    );

    // A corrupt certificate file: the reload fails, the credentials in use
    // stay (the in-process tests show a later handshake still uses them),
    // and the link stays up.
    std::fs::write(pki.join("A.pem"), "garbage\n").unwrap();
    a.signal(libc::SIGHUP);
    let failed = wait_log_line(&log_a, "reloading the peer TLS credentials (from", 0);
    let line = read_log(&log_a).lines().nth(failed).unwrap().to_string();
    assert!(
        line.contains(&format!(
            "keeping the old ones (certificate serial {serial})"
        )),
        "{line}"
    );
    let id = "after.failed.sighup";
    let time = now_field();
    let at = query(addr_a, &format!("IAMAT {id} {UCLA} {time}\n"));
    assert_eq!(known_at_line(addr_b, id), at.trim_end());

    a.signal(libc::SIGTERM);
    assert!(a.wait_exit().success());
}

/// Issue 11, Done-when 5: a server SIGKILLed under load leaves a log that
/// ends on a complete line and holds every answer the client received
/// before the kill (the log is written before the loop's socket writes, in
/// one batch per iteration).
#[test]
fn sigkilled_server_log_is_complete_up_to_what_was_sent() {
    let dir = TempDir::new("sigkill-log");
    let ports = free_ports(1);
    let config = write_config(dir.path(), &[("A", ports[0])], &[]);
    let mut herd = Herd::start(dir.path(), &config, Some("A"));
    let addr = herd.wait_listening(&["A"])[0];
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Pipelined lines until the server is gone. `? PING n` answers are not
    // rate-limited, so every line is received, logged and answered.
    let sender = std::thread::spawn(move || {
        let mut n = 0u64;
        loop {
            let mut batch = Vec::with_capacity(64 * 16);
            for _ in 0..64 {
                batch.extend_from_slice(format!("PING {n}\n").as_bytes());
                n += 1;
            }
            if writer.write_all(&batch).is_err() {
                return n;
            }
        }
    });
    let mut reader = BufReader::new(stream);
    let mut received = Vec::new();
    let mut line = String::new();
    while received.len() < 20_000 {
        line.clear();
        let n = reader.read_line(&mut line).expect("an answer");
        assert!(n > 0, "the server closed before the kill");
        received.push(line.trim_end().to_string());
    }
    herd.kill();
    // Answers already on their way still arrive; then the connection ends.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.ends_with('\n') => received.push(line.trim_end().to_string()),
            Ok(_) => break,
        }
    }
    let _ = sender.join();
    let log = read_log(&dir.path().join("logs").join("A.log"));
    assert!(log.ends_with('\n'), "the log ends inside a line");
    let sent: std::collections::HashSet<&str> = log
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, answer)| answer))
        .collect();
    let missing: Vec<&String> = received
        .iter()
        .filter(|answer| !sent.contains(answer.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answers received are not in the log, e.g. {:?}",
        missing.len(),
        received.len(),
        missing.first()
    );
    assert!(received.iter().all(|a| a.starts_with("? PING ")));
}
