//! Helpers shared by the benchmarks: core pinning and server threads.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

/// How long a server thread may take to start.
const SERVER_START: Duration = Duration::from_secs(10);

/// Pins the calling thread to `core` (best effort: an error leaves it as is).
pub fn pin_to_core(core: usize) {
    // SAFETY: `cpu_set_t` is plain data for which all-zero bytes are a valid
    // (empty) set; CPU_ZERO and CPU_SET write only inside the set we own
    // (CPU_SET ignores a core beyond the set's size); sched_setaffinity(0, ..)
    // reads the set, of the size we pass, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The cores of the client and of the servers: both the last core, or with
/// `PINGPONG_CORES=split` the client on the last and the servers on core 0.
/// Computed once, before any pinning narrows `available_parallelism`.
pub fn cores() -> (usize, usize) {
    static CORES: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        match std::env::var("PINGPONG_CORES").as_deref() {
            Ok("split") => (last, 0),
            _ => (last, last),
        }
    })
}

/// Starts a server on its own thread, pinned to the servers' core; `serve`
/// binds, sends its address, and serves until the process exits.
pub fn server_thread(serve: impl FnOnce(mpsc::Sender<SocketAddr>) + Send + 'static) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    let (_, server_core) = cores();
    // Detached: the servers run until the bench process exits.
    std::thread::spawn(move || {
        pin_to_core(server_core);
        serve(tx)
    });
    rx.recv_timeout(SERVER_START).expect("server did not start")
}
