//! [`ServerLog`]: one server's log, every entry on disk before anything
//! sent in the same loop iteration reaches a peer.
//!
//! Each entry is one line: a UTC timestamp with microseconds, then the
//! message. Bytes that came from the network (client IDs may be any bytes)
//! go through [`escape`], so an entry is always one printable line.
//!
//! # When entries reach the file
//!
//! A file log that a server runs on a reactor
//! ([`flush_before_writes`](ServerLog::flush_before_writes), which
//! [`HerdServer::bind`](crate::HerdServer::bind) calls) formats its entries
//! into one buffer and writes the buffer with one `write` (no `fsync`) from
//! the reactor's [`before_writes`](gyre_reactor::Reactor::before_writes)
//! hook: before the loop writes any connection's output to its socket, and
//! at the end of every iteration. So:
//!
//! - **nothing a server sent is missing from its log**: an answer a client
//!   received was logged, and on disk, before it was sent;
//! - a SIGKILLed server's log is complete up to its last flush and ends on
//!   a complete line (entries are whole lines, written whole);
//! - the timestamp is formatted once per batch (entries in one batch share
//!   it, to the microsecond of the batch's first entry);
//! - a busy server pays one `write` per iteration, not one per line.
//!
//! A batch is also written at once when it reaches [`LOG_BATCH_MAX`] bytes
//! (so a burst cannot grow it without bound), and when the log is dropped.
//! A log not attached to a reactor writes each entry as it comes.
//! The write happens on the loop: one buffered `write` into the page cache
//! (microseconds). Handing it to a thread would need a queue that a kill
//! loses. A write error is reported once through the `log` crate and the
//! server carries on (a full disk must not stop the herd).
//!
//! # Bounded on disk
//!
//! Nothing a peer sends can fill the disk:
//!
//! - [`escape`] shows at most [`LOG_FIELD_MAX`] bytes of a peer's bytes,
//!   then `...(N bytes)` with the full length, so a 10 MB line costs a few
//!   hundred bytes of log.
//! - A file log rotates by size, as Twisted's `LogFile` does: when the next
//!   entry would take `NAME.log` past [`LogLimits::max_bytes`] (default
//!   [`DEFAULT_LOG_MAX_BYTES`], `--log-max-bytes`), it is renamed
//!   `NAME.log.1` (`.1` becomes `.2`, and so on), and the oldest beyond
//!   [`LogLimits::keep`] rotated files (default [`DEFAULT_LOG_KEEP`],
//!   `--log-keep`) is deleted. A server's logs therefore take at most
//!   `max_bytes * (keep + 1)` bytes. Rotation happens between entries, so
//!   no entry is split or lost; each rotation is logged at info level.
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

use gyre_reactor::Reactor;

/// At most this many bytes of a peer's bytes are shown by [`escape`];
/// the rest is summarised by its length.
pub const LOG_FIELD_MAX: usize = 256;

/// Default size at which a log file rotates (`--log-max-bytes`): 64 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default number of rotated files kept (`--log-keep`).
pub const DEFAULT_LOG_KEEP: usize = 4;

/// A batch of entries is written at once when it reaches this many bytes,
/// even before the loop's next write: it bounds the memory a burst of
/// entries can take.
pub const LOG_BATCH_MAX: usize = 256 * 1024;

/// How large a file log may grow, and how many rotated files are kept.
///
/// ```
/// use gyre_herd::log::{LogLimits, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES};
///
/// let limits = LogLimits::default();
/// assert_eq!(limits.max_bytes, DEFAULT_LOG_MAX_BYTES);
/// assert_eq!(limits.keep, DEFAULT_LOG_KEEP);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate before an entry would take the file past this many bytes
    /// (at least one entry is always written to a fresh file).
    pub max_bytes: u64,
    /// Rotated files kept (`NAME.log.1` ..= `NAME.log.KEEP`); 0 keeps none.
    pub keep: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: DEFAULT_LOG_MAX_BYTES,
            keep: DEFAULT_LOG_KEEP,
        }
    }
}

/// A server's log: a file `NAME.log` (rotated by size), lines kept in
/// memory (for tests), or nothing. A cheap `Clone` handle; clones write to
/// the same place.
#[derive(Clone)]
pub struct ServerLog {
    inner: Rc<Inner>,
}

struct Inner {
    sink: Sink,
    /// A write failed (reported once).
    failed: Cell<bool>,
    /// How entries reach a file sink.
    batching: Cell<Batching>,
    /// Entries formatted and not written yet (only while batching).
    batch: RefCell<Batch>,
}

/// How a file log writes its entries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Batching {
    /// Each entry is written as it comes.
    EachEntry,
    /// Entries are collected and written from the reactor's
    /// `before_writes` hook.
    BeforeWrites,
}

/// Entries waiting for the next flush.
#[derive(Default)]
struct Batch {
    /// Whole entries, each ending with `\n`.
    bytes: Vec<u8>,
    /// The batch's timestamp, formatted at its first entry.
    stamp: String,
}

enum Sink {
    File(RefCell<FileLog>),
    Memory(RefCell<Vec<String>>),
    Discard,
}

/// An open log file, its size, and where its rotations go.
struct FileLog {
    file: File,
    path: PathBuf,
    /// Bytes in `file` now.
    size: u64,
    limits: LogLimits,
}

impl FileLog {
    fn open(path: PathBuf, limits: LogLimits) -> io::Result<FileLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileLog {
            file,
            path,
            size,
            limits,
        })
    }

    /// `NAME.log.N`.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends whole entries (each ending with `\n`) with as few writes as
    /// the size limit allows: one, unless a rotation falls inside them.
    fn append_entries(&mut self, mut entries: &[u8]) -> io::Result<()> {
        while !entries.is_empty() {
            let room = self.limits.max_bytes.saturating_sub(self.size);
            let fits = whole_entries_within(entries, room);
            let take = match fits {
                // A fresh file takes at least one entry, however long.
                0 if self.size == 0 => first_entry_len(entries),
                0 => {
                    self.rotate()?;
                    continue;
                }
                n => n,
            };
            self.file.write_all(&entries[..take])?;
            self.size += take as u64;
            entries = &entries[take..];
        }
        Ok(())
    }

    /// Shifts `NAME.log.K` to `.K+1` (dropping the oldest beyond `keep`),
    /// `NAME.log` to `.1`, and starts a new `NAME.log`.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            match std::fs::remove_file(self.rotated(keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..keep).rev() {
                match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let fresh = FileLog::open(self.path.clone(), self.limits)?;
        log::info!(
            "{} reached {} bytes: rotated (keeping {keep} old file(s))",
            self.path.display(),
            self.size
        );
        *self = fresh;
        Ok(())
    }
}

/// The length of the longest run of whole entries at the start of
/// `entries` that is at most `room` bytes.
fn whole_entries_within(entries: &[u8], room: u64) -> usize {
    let limit = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(entries.len());
    entries[..limit]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1)
}

/// The length of the first entry (up to and including its `\n`).
fn first_entry_len(entries: &[u8]) -> usize {
    entries
        .iter()
        .position(|&b| b == b'\n')
        .map_or(entries.len(), |end| end + 1)
}

impl ServerLog {
    /// Opens (creating them if needed) `dir` and `dir/NAME.log`, appending,
    /// with the default [`LogLimits`].
    pub fn open(dir: impl AsRef<Path>, server: &str) -> io::Result<ServerLog> {
        ServerLog::open_with_limits(dir, server, LogLimits::default())
    }

    /// Opens `dir/NAME.log` like [`open`](Self::open), rotating it by size
    /// as `limits` says.
    ///
    /// ```
    /// use gyre_herd::log::{LogLimits, ServerLog};
    ///
    /// let dir = std::env::temp_dir().join(format!("gyre-log-doc-{}", std::process::id()));
    /// let limits = LogLimits { max_bytes: 100, keep: 1 };
    /// let log = ServerLog::open_with_limits(&dir, "Ball", limits)?;
    /// for i in 0..10 {
    ///     log.entry(format_args!("entry {i}"));
    /// }
    /// assert!(dir.join("Ball.log.1").exists());
    /// assert!(!dir.join("Ball.log.2").exists());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open_with_limits(
        dir: impl AsRef<Path>,
        server: &str,
        limits: LogLimits,
    ) -> io::Result<ServerLog> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(format!("{server}.log"));
        let file = FileLog::open(path, limits)?;
        Ok(ServerLog::with_sink(Sink::File(RefCell::new(file))))
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
                batching: Cell::new(Batching::EachEntry),
                batch: RefCell::new(Batch::default()),
            }),
        }
    }

    /// The file written, for a file log.
    pub fn path(&self) -> Option<PathBuf> {
        match &self.inner.sink {
            Sink::File(file) => Some(file.borrow().path.clone()),
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

    /// Collects this file log's entries into one write per loop iteration
    /// of `reactor`, made from its
    /// [`before_writes`](gyre_reactor::Reactor::before_writes) hook: before
    /// anything written in the same iteration reaches a socket (see the
    /// module docs). Idempotent; a no-op for memory and discard logs.
    ///
    /// ```
    /// use gyre_herd::log::ServerLog;
    /// use gyre_reactor::Reactor;
    /// # use std::time::Duration;
    ///
    /// let dir = std::env::temp_dir().join(format!("gyre-log-batch-doc-{}", std::process::id()));
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let log = ServerLog::open(&dir, "Holiday")?;
    /// log.flush_before_writes(&reactor);
    /// log.entry(format_args!("one"));
    /// log.entry(format_args!("two"));
    /// // Both are written together, at the end of the loop's iteration.
    /// reactor.iterate(Some(Duration::ZERO))?;
    /// let text = std::fs::read_to_string(log.path().unwrap())?;
    /// assert_eq!(text.lines().count(), 2);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush_before_writes(&self, reactor: &Reactor) {
        if !matches!(self.inner.sink, Sink::File(_))
            || self.inner.batching.replace(Batching::BeforeWrites) == Batching::BeforeWrites
        {
            return;
        }
        let log = Rc::downgrade(&self.inner);
        reactor.before_writes(move || {
            if let Some(inner) = log.upgrade() {
                inner.flush();
            }
        });
    }

    /// Writes what is batched now (a no-op when nothing is).
    pub fn flush(&self) {
        self.inner.flush();
    }

    /// Writes one entry: the timestamp, a space, and `message` (which must
    /// not contain a newline: escape peer bytes with [`escape`]).
    pub fn entry(&self, message: fmt::Arguments<'_>) {
        let inner = &*self.inner;
        match &inner.sink {
            Sink::File(_) if inner.batching.get() == Batching::BeforeWrites => {
                let full = {
                    let mut batch = inner.batch.borrow_mut();
                    let Batch { bytes, stamp } = &mut *batch;
                    if bytes.is_empty() {
                        stamp.clear();
                        write_timestamp(SystemTime::now(), stamp);
                    }
                    let start = bytes.len();
                    bytes.extend_from_slice(stamp.as_bytes());
                    bytes.push(b' ');
                    let _ = FmtBytes(bytes).write_fmt(message);
                    if log::log_enabled!(target: "gyre_herd", log::Level::Debug) {
                        log::debug!(target: "gyre_herd", "{}", String::from_utf8_lossy(&bytes[start..]));
                    }
                    bytes.push(b'\n');
                    bytes.len() >= LOG_BATCH_MAX
                };
                if full {
                    inner.flush();
                }
            }
            Sink::File(file) => {
                let mut line = String::with_capacity(96);
                write_timestamp(SystemTime::now(), &mut line);
                line.push(' ');
                let _ = line.write_fmt(message);
                log::debug!(target: "gyre_herd", "{line}");
                line.push('\n');
                let written = file.borrow_mut().append_entries(line.as_bytes());
                inner.report(written);
            }
            Sink::Memory(lines) => {
                let mut line = String::with_capacity(96);
                write_timestamp(SystemTime::now(), &mut line);
                line.push(' ');
                let _ = line.write_fmt(message);
                log::debug!(target: "gyre_herd", "{line}");
                lines.borrow_mut().push(line);
            }
            Sink::Discard => {}
        }
    }
}

impl Inner {
    /// Writes the batch, if any, keeping its buffer for the next one.
    fn flush(&self) {
        let Sink::File(file) = &self.sink else {
            return;
        };
        let mut batch = self.batch.borrow_mut();
        if batch.bytes.is_empty() {
            return;
        }
        let written = file.borrow_mut().append_entries(&batch.bytes);
        batch.bytes.clear();
        if batch.bytes.capacity() > LOG_BATCH_MAX * 2 {
            batch.bytes.shrink_to(LOG_BATCH_MAX);
        }
        drop(batch);
        self.report(written);
    }

    /// Reports the first write error through the `log` crate.
    fn report(&self, written: io::Result<()>) {
        if let Err(e) = written {
            if !self.failed.replace(true) {
                let path = match &self.sink {
                    Sink::File(file) => file.borrow().path.display().to_string(),
                    _ => String::new(),
                };
                log::error!("cannot write to {path}: {e}; further errors not reported");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `fmt::Write` into a byte buffer (formatting straight into the batch).
struct FmtBytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for FmtBytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl fmt::Debug for ServerLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.sink {
            Sink::File(file) => write!(f, "ServerLog({})", file.borrow().path.display()),
            Sink::Memory(lines) => write!(f, "ServerLog(memory, {} lines)", lines.borrow().len()),
            Sink::Discard => f.write_str("ServerLog(discard)"),
        }
    }
}

/// Bytes as one printable line: printable ASCII as is (a backslash
/// doubled), tab as `\t`, anything else as `\xNN`. At most
/// [`LOG_FIELD_MAX`] bytes are shown; a longer input is shown as that
/// prefix, then `...(N bytes)` with its whole length.
///
/// Allocates the result; a log entry formats [`Escaped`] instead, which
/// writes the same text straight into the entry.
///
/// ```
/// use gyre_herd::log::{escape, LOG_FIELD_MAX};
///
/// assert_eq!(escape(b"k\xffi\\wi\t\n"), "k\\xffi\\\\wi\\t\\x0a");
/// let long = vec![b'a'; 10_000_000];
/// let shown = escape(&long);
/// assert!(shown.ends_with("...(10000000 bytes)"));
/// assert!(shown.len() < LOG_FIELD_MAX + 32);
/// ```
pub fn escape(bytes: &[u8]) -> String {
    Escaped(bytes).to_string()
}

/// Peer bytes shown as [`escape`] shows them, formatted in place (no
/// allocation): `format_args!("received {}", Escaped(line))`.
///
/// A run of printable ASCII is written with one `write_str`, so a clean
/// line (the usual case) costs one copy.
///
/// ```
/// use gyre_herd::log::{escape, Escaped};
///
/// let line = b"IAMAT kiwi +34.06-118.44 1621464827.9\x00";
/// assert_eq!(Escaped(line).to_string(), escape(line));
/// assert!(Escaped(line).to_string().ends_with("\\x00"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        let mut rest = &bytes[..bytes.len().min(LOG_FIELD_MAX)];
        while !rest.is_empty() {
            let plain = rest
                .iter()
                .position(|&b| !is_shown_as_is(b))
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(plain);
            // Printable ASCII is UTF-8.
            f.write_str(std::str::from_utf8(run).map_err(|_| fmt::Error)?)?;
            let Some((&b, tail)) = tail.split_first() else {
                break;
            };
            match b {
                b'\\' => f.write_str("\\\\")?,
                b'\t' => f.write_str("\\t")?,
                _ => write!(f, "\\x{b:02x}")?,
            }
            rest = tail;
        }
        if bytes.len() > LOG_FIELD_MAX {
            write!(f, "...({} bytes)", bytes.len())?;
        }
        Ok(())
    }
}

/// Whether [`Escaped`] shows `b` as itself.
fn is_shown_as_is(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'\\'
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

    /// Done-when 8 of issue 10: a log at its size limit rotates, keeps
    /// `keep` old files, and loses no line: every entry is in exactly one
    /// of the kept files, in order, and no file passes the limit.
    #[test]
    fn rotation_keeps_n_files_and_loses_no_line() {
        let dir = std::env::temp_dir().join(format!("gyre-herd-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = LogLimits {
            max_bytes: 4096,
            keep: 3,
        };
        let log = ServerLog::open_with_limits(&dir, "Welsh", limits).unwrap();
        // About 50 bytes an entry: 4096 bytes hold about 80; the last 4
        // files together hold the newest ~320 entries.
        let total = 1000;
        for i in 0..total {
            log.entry(format_args!("entry {i:05} {}", "x".repeat(i % 7)));
        }
        let mut files: Vec<PathBuf> = (1..=3)
            .rev()
            .map(|n| dir.join(format!("Welsh.log.{n}")))
            .collect();
        files.push(dir.join("Welsh.log"));
        assert!(
            !dir.join("Welsh.log.4").exists(),
            "only 3 rotated files kept"
        );
        let mut seen = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                text.len() as u64 <= limits.max_bytes,
                "{} too big",
                file.display()
            );
            assert!(text.ends_with('\n'), "no entry is split");
            for line in text.lines() {
                let n: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
                seen.push(n);
            }
        }
        // The kept files hold a contiguous run of the newest entries.
        assert_eq!(*seen.last().unwrap(), total - 1);
        let first = seen[0];
        assert_eq!(seen, (first..total).collect::<Vec<_>>());
        assert!(first > 0, "old entries were rotated away");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Batched entries (one write per loop iteration) rotate exactly as
    /// single ones do: no entry split or lost, no file past the limit, and
    /// they reach the file at the loop's hook, not before.
    #[test]
    fn batched_entries_rotate_without_losing_a_line() {
        let dir = std::env::temp_dir().join(format!("gyre-herd-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let limits = LogLimits {
            max_bytes: 4096,
            keep: 100,
        };
        let log = ServerLog::open_with_limits(&dir, "Alford", limits).unwrap();
        log.flush_before_writes(&reactor);
        log.flush_before_writes(&reactor);
        let mut next = 0;
        for batch in [1, 7, 80, 300, 2] {
            for _ in 0..batch {
                log.entry(format_args!("entry {next:05} {}", "y".repeat(next % 11)));
                next += 1;
            }
            let on_disk = std::fs::read_to_string(dir.join("Alford.log")).unwrap_or_default();
            assert!(
                !on_disk.contains(&format!("entry {:05} ", next - 1)),
                "written before the loop's hook"
            );
            reactor.iterate(Some(Duration::ZERO)).unwrap();
        }
        let mut seen = Vec::new();
        let rotated = (1..=100)
            .rev()
            .map(|n| dir.join(format!("Alford.log.{n}")))
            .filter(|p| p.exists());
        for file in rotated.chain([dir.join("Alford.log")]) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.len() as u64 <= limits.max_bytes,
                "{} too big",
                file.display()
            );
            assert!(text.ends_with('\n'), "no entry is split");
            for line in text.lines() {
                seen.push(line.split(' ').nth(2).unwrap().parse::<usize>().unwrap());
            }
        }
        assert_eq!(seen, (0..next).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A burst of entries within one iteration is written once it reaches
    /// `LOG_BATCH_MAX`, so the batch's memory stays bounded; dropping the
    /// log writes the rest.
    #[test]
    fn a_batch_is_bounded_and_dropping_the_log_writes_it() {
        let dir = std::env::temp_dir().join(format!("gyre-herd-burst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let log = ServerLog::open(&dir, "Ball").unwrap();
        log.flush_before_writes(&reactor);
        let entry = "z".repeat(1000);
        let count = 3 * LOG_BATCH_MAX / 1000;
        for _ in 0..count {
            log.entry(format_args!("{entry}"));
            assert!(log.inner.batch.borrow().bytes.len() < LOG_BATCH_MAX + 1100);
        }
        let written = std::fs::read_to_string(dir.join("Ball.log")).unwrap();
        assert!(
            written.lines().count() >= 2 * LOG_BATCH_MAX / 1100,
            "flushed when full"
        );
        drop(log);
        let written = std::fs::read_to_string(dir.join("Ball.log")).unwrap();
        assert_eq!(written.lines().count(), count);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopened_log_counts_its_existing_size() {
        let dir = std::env::temp_dir().join(format!("gyre-herd-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = LogLimits {
            max_bytes: 200,
            keep: 1,
        };
        let log = ServerLog::open_with_limits(&dir, "Ball", limits).unwrap();
        log.entry(format_args!("{}", "a".repeat(100)));
        drop(log);
        let log = ServerLog::open_with_limits(&dir, "Ball", limits).unwrap();
        log.entry(format_args!("{}", "b".repeat(100)));
        // The second entry did not fit next to the first: it went to a new file.
        let old = std::fs::read_to_string(dir.join("Ball.log.1")).unwrap();
        let new = std::fs::read_to_string(dir.join("Ball.log")).unwrap();
        assert!(old.contains("aaaa") && !old.contains("bbbb"));
        assert!(new.contains("bbbb") && !new.contains("aaaa"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
