//! [`ServerLog`]: one server's log, written line by line as things happen.
//!
//! Each entry is one line: a UTC timestamp with microseconds, then the
//! message. Bytes that came from the network (client IDs may be any bytes)
//! go through [`escape`], so an entry is always one printable line.
//!
//! # Why writes are synchronous
//!
//! A file log appends each entry with one `write` on a file opened in
//! append mode, from the loop, and waits for it. That blocks the loop for
//! the time of one small buffered write into the page cache (microseconds;
//! no `fsync`), and buys what HERD.md asks for: a killed server's log is
//! complete up to its end, and entries are in the order things happened.
//! Handing writes to the reactor's thread pool would not block, but would
//! need a queue that a kill loses and that reorders entries across threads.
//! A write error is reported once through the `log` crate and the server
//! carries on (a full disk must not stop the herd).
//!
//! ```
//! use gyre_herd::log::ServerLog;
//!
//! let log = ServerLog::memory();
//! log.entry(format_args!("link to {} up", "Ball"));
//! assert!(log.lines()[0].ends_with(" link to Ball up"));
//! ```

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A server's log: a file `NAME.log`, lines kept in memory (for tests), or
/// nothing. A cheap `Clone` handle; clones write to the same place.
#[derive(Clone)]
pub struct ServerLog {
    inner: Rc<Inner>,
}

struct Inner {
    sink: Sink,
    /// A write failed (reported once).
    failed: Cell<bool>,
}

enum Sink {
    File { file: RefCell<File>, path: PathBuf },
    Memory(RefCell<Vec<String>>),
    Discard,
}

impl ServerLog {
    /// Opens (creating them if needed) `dir` and `dir/NAME.log`, appending.
    pub fn open(dir: impl AsRef<Path>, server: &str) -> io::Result<ServerLog> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(format!("{server}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        Ok(ServerLog::with_sink(Sink::File {
            file: RefCell::new(file),
            path,
        }))
    }

    /// A log that keeps its lines in memory (see [`lines`](Self::lines)).
    pub fn memory() -> ServerLog {
        ServerLog::with_sink(Sink::Memory(RefCell::new(Vec::new())))
    }

    /// A log that drops everything.
    pub fn discard() -> ServerLog {
        ServerLog::with_sink(Sink::Discard)
    }

    fn with_sink(sink: Sink) -> ServerLog {
        ServerLog {
            inner: Rc::new(Inner {
                sink,
                failed: Cell::new(false),
            }),
        }
    }

    /// The file written, for a file log.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.sink {
            Sink::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The lines written so far, for a memory log (empty otherwise).
    pub fn lines(&self) -> Vec<String> {
        match &self.inner.sink {
            Sink::Memory(lines) => lines.borrow().clone(),
            _ => Vec::new(),
        }
    }

    /// Whether some line of a memory log contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        match &self.inner.sink {
            Sink::Memory(lines) => lines.borrow().iter().any(|l| l.contains(needle)),
            _ => false,
        }
    }

    /// Writes one entry: the timestamp, a space, and `message` (which must
    /// not contain a newline: escape peer bytes with [`escape`]).
    pub fn entry(&self, message: fmt::Arguments<'_>) {
        let mut line = String::with_capacity(96);
        write_timestamp(SystemTime::now(), &mut line);
        line.push(' ');
        let _ = line.write_fmt(message);
        log::debug!(target: "gyre_herd", "{line}");
        match &self.inner.sink {
            Sink::File { file, path } => {
                line.push('\n');
                let written = file.borrow_mut().write_all(line.as_bytes());
                if let Err(e) = written {
                    if !self.inner.failed.replace(true) {
                        log::error!(
                            "cannot write to {}: {e}; further errors not reported",
                            path.display()
                        );
                    }
                }
            }
            Sink::Memory(lines) => lines.borrow_mut().push(line),
            Sink::Discard => {}
        }
    }
}

impl fmt::Debug for ServerLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.sink {
            Sink::File { path, .. } => write!(f, "ServerLog({})", path.display()),
            Sink::Memory(lines) => write!(f, "ServerLog(memory, {} lines)", lines.borrow().len()),
            Sink::Discard => f.write_str("ServerLog(discard)"),
        }
    }
}

/// Bytes as one printable line: printable ASCII as is (a backslash
/// doubled), tab as `\t`, anything else as `\xNN`.
///
/// ```
/// assert_eq!(gyre_herd::log::escape(b"k\xffi\\wi\t\n"), "k\\xffi\\\\wi\\t\\x0a");
/// ```
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
fn write_timestamp(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let mut s = String::new();
        write_timestamp(UNIX_EPOCH, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        write_timestamp(
            UNIX_EPOCH + Duration::new(1_621_464_827, 959_498_503),
            &mut s,
        );
        assert_eq!(s, "2021-05-19T22:53:47.959498Z");
        s.clear();
        write_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut s);
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn memory_log() {
        let log = ServerLog::memory();
        log.entry(format_args!("hello {}", escape(b"\xff")));
        let lines = log.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("Z hello \\xff"), "{}", lines[0]);
        assert!(log.contains("hello"));
        assert!(log.path().is_none());
        ServerLog::discard().entry(format_args!("nothing"));
    }

    #[test]
    fn file_log_appends_line_by_line() {
        let dir = std::env::temp_dir().join(format!("gyre-herd-log-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = ServerLog::open(dir.join("nested"), "Alford").unwrap();
        log.entry(format_args!("one"));
        // Written at once, not buffered.
        let text = std::fs::read_to_string(dir.join("nested/Alford.log")).unwrap();
        assert!(text.ends_with(" one\n"));
        drop(log);
        let again = ServerLog::open(dir.join("nested"), "Alford").unwrap();
        again.entry(format_args!("two"));
        let text = std::fs::read_to_string(again.path().unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with(" two"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
