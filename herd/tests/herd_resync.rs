//! Issue 10: the catch-up on a large store is paced by the link's flow
//! control. A server holding 200,000 clients catches a restarted neighbour
//! up over a real (TLS) link in one process: its link never buffers more
//! than the high-water mark plus one line, another client is answered
//! while the catch-up runs, and at the end the neighbour knows every
//! client.
//!
//! Every wait is for an event, bounded ([`WAIT`]); nothing asserts on
//! timing: "answered before the catch-up ended" is read from the order of
//! events, at the moment the answer arrives.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::defer::{fail, Deferred, Failure};
use gyre_reactor::{Protocol, Reactor, Transport};

/// Generous: a debug build parses and stores 200,000 lines on each side.
const WAIT: Duration = Duration::from_secs(300);
const CLIENTS: usize = 200_000;
/// What a TLS record's framing adds to the plaintext the catch-up writes
/// (a header, a tag and a content type per record, a chunk being at most
/// two records), with room to spare: the bound on the link's buffer is the
/// high-water mark plus one line plus this.
const TLS_FRAMING: usize = 256;

/// WHATSAT is answered with Places' failure: enough to see it answered.
struct NoPlaces;

impl PlacesLookup for NoPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        fail(Failure::msg("no Places in this test"))
    }
}

/// Called with everything a [`Recorder`] received so far.
type OnData = Rc<dyn Fn(&[u8])>;

/// A client that records what it receives, and calls `on_data` after each
/// read (to note the order of events).
struct Recorder {
    data: Rc<RefCell<Vec<u8>>>,
    on_data: OnData,
}

impl Protocol for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.data.borrow_mut().extend_from_slice(data);
        let all = self.data.borrow().clone();
        (self.on_data)(&all);
    }
}

fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    assert!(
        reactor.run_until(done, WAIT).unwrap(),
        "timed out waiting for {what}"
    );
}

fn at_line(i: usize) -> String {
    format!("AT Alford +0.000000001 client-{i:06} +34.068930-118.445127 1621464827.{i:09}")
}

/// Whether some line of `log` contains every one of `parts`.
fn logged(log: &ServerLog, parts: &[&str]) -> bool {
    log.lines()
        .iter()
        .any(|l| parts.iter().all(|p| l.contains(p)))
}

/// Whether Alford logged the end of a catch-up with Ball that sent at
/// least the whole filled store (the first link's, before the store
/// filled, sent nothing).
fn whole_catch_up_done(log: &ServerLog) -> bool {
    const DONE: &str = "done (link up): ";
    log.lines().iter().any(|l| {
        l.contains("catch-up with Ball")
            && l.split(DONE)
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= CLIENTS)
    })
}

#[test]
fn a_large_store_catches_a_restarted_neighbour_up_paced_and_serving_meanwhile() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let mut config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0},
                        {"name": "Ball", "host": "127.0.0.1", "port": 0}],
            "links": [["Alford", "Ball"]]}"#,
    )
    .unwrap();
    let options = ServerOptions::default();
    let high = options.link_high_water;
    let alford_log = ServerLog::memory();
    let alford = HerdServer::bind(
        &reactor,
        "Alford",
        &config,
        NoPlaces,
        alford_log.clone(),
        options.clone(),
    )
    .unwrap();
    config
        .set_port("Alford", alford.local_addr().port())
        .unwrap();
    let ball = HerdServer::bind(
        &reactor,
        "Ball",
        &config,
        NoPlaces,
        ServerLog::discard(),
        options.clone(),
    )
    .unwrap();
    config.set_port("Ball", ball.local_addr().port()).unwrap();
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(&reactor, "the link up", || {
        alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
    });

    // Ball goes away; Alford's store fills meanwhile (the fast path: no
    // link is up, so nothing is flooded).
    ball.stop();
    wait(&reactor, "Alford to see the link drop", || {
        alford.links_up().is_empty()
    });
    let lines: Vec<String> = (0..CLIENTS).map(at_line).collect();
    assert_eq!(alford.load_locations(&lines), CLIENTS);
    assert_eq!(alford.known_clients(), CLIENTS);
    let longest_line = lines.iter().map(|l| l.len() + 1).max().unwrap();
    drop(lines);

    // A client of Alford's, connected before Ball comes back. When its
    // answers are complete, it notes how far the catch-up has got.
    let answers = Rc::new(RefCell::new(Vec::new()));
    let answered_at: Rc<Cell<Option<(usize, bool)>>> = Rc::new(Cell::new(None));
    let ball_slot: Rc<RefCell<Option<HerdServer>>> = Rc::new(RefCell::new(None));
    let on_data: OnData = {
        let answered_at = Rc::clone(&answered_at);
        let ball_slot = Rc::clone(&ball_slot);
        let log = alford_log.clone();
        Rc::new(move |all: &[u8]| {
            // The IAMAT's AT line, then the WHATSAT's (AT line, JSON, "\n\n").
            let complete = all.starts_with(b"AT Alford ") && all.ends_with(b"\n\n");
            if complete && answered_at.get().is_none() {
                let ball_knows = ball_slot.borrow().as_ref().map_or(0, |b| b.known_clients());
                let catch_up_done = whole_catch_up_done(&log);
                answered_at.set(Some((ball_knows, catch_up_done)));
            }
        })
    };
    let connected = reactor.connect_protocol(
        alford.local_addr(),
        Recorder {
            data: Rc::clone(&answers),
            on_data,
        },
    );
    wait(&reactor, "the client to connect", || connected.called());
    let client: Transport = connected.take_result().unwrap().unwrap();

    // Ball restarts with an empty store, on its port, and dials Alford.
    let ball = HerdServer::bind(
        &reactor,
        "Ball",
        &config,
        NoPlaces,
        ServerLog::discard(),
        options.clone(),
    )
    .unwrap();
    *ball_slot.borrow_mut() = Some(ball.clone());
    assert_eq!(ball.known_clients(), 0);
    ball.connect_neighbours(&config).unwrap();
    // (The first link, before the store filled, had a catch-up of its own,
    // on an empty store.)
    let whole_store = format!("started (link up): {CLIENTS} stored location(s) to send");
    wait(&reactor, "Alford's catch-up with Ball to start", || {
        logged(&alford_log, &["catch-up with Ball", &whole_store])
    });

    // Alford's link buffer, sampled on every loop turn by a call_soon that
    // queues itself again. Started once the catch-up's first step is
    // queued, it is queued after it, so on every turn it runs right after
    // the step wrote its batch and before the loop flushes the buffer into
    // the kernel: it sees the most a step leaves buffered.
    let most_buffered = Rc::new(Cell::new(0usize));
    let samples = Rc::new(Cell::new(0usize));
    let sampling = Rc::new(Cell::new(true));
    fn sample(
        reactor: Reactor,
        alford: HerdServer,
        most: Rc<Cell<usize>>,
        samples: Rc<Cell<usize>>,
        on: Rc<Cell<bool>>,
    ) {
        if !on.get() {
            return;
        }
        if let Some(now) = alford.link_buffered_len("Ball") {
            most.set(most.get().max(now));
            samples.set(samples.get() + 1);
        }
        let r = reactor.clone();
        reactor.call_soon(move || sample(r, alford, most, samples, on));
    }
    assert!(!whole_catch_up_done(&alford_log));
    sample(
        reactor.clone(),
        alford.clone(),
        Rc::clone(&most_buffered),
        Rc::clone(&samples),
        Rc::clone(&sampling),
    );

    // The client asks while the catch-up runs.
    client.write(b"IAMAT meanwhile +10+10 1621464900\nWHATSAT meanwhile 10 1\n");
    wait(&reactor, "the client's answers", || {
        answered_at.get().is_some()
    });
    wait(&reactor, "Ball to know every client", || {
        alford.link_buffered_len("Ball").inspect(|n| {
            most_buffered.set(most_buffered.get().max(*n));
        });
        ball.known_clients() == alford.known_clients() && whole_catch_up_done(&alford_log)
    });
    sampling.set(false);

    // Answered before the catch-up ended, in the order of events.
    let (ball_knew, done_then) = answered_at.get().unwrap();
    assert!(
        !done_then && ball_knew < CLIENTS,
        "the client was answered only after the catch-up (Ball knew {ball_knew})"
    );
    let text = String::from_utf8_lossy(&answers.borrow()).into_owned();
    assert!(text.starts_with("AT Alford "), "{text}");
    assert!(text.contains(" meanwhile +10+10 1621464900\n"), "{text}");

    // The buffer stayed within the high-water mark plus one line.
    assert!(samples.get() > 100, "sampled {} times", samples.get());
    assert!(
        most_buffered.get() > high / 2,
        "the samples never saw a batch ({} bytes at most)",
        most_buffered.get()
    );
    assert!(
        most_buffered.get() <= high + longest_line + TLS_FRAMING,
        "the link buffered {} bytes, over {high} + {longest_line} + {TLS_FRAMING}",
        most_buffered.get()
    );

    // Ball knows every client (and the one reported meanwhile), with the
    // same lines.
    assert_eq!(ball.known_clients(), CLIENTS + 1);
    for i in [0, 1, CLIENTS / 2, CLIENTS - 1] {
        let client = format!("client-{i:06}");
        assert_eq!(
            ball.location(client.as_bytes()).as_deref(),
            Some(at_line(i).as_bytes()),
            "{client}"
        );
    }
    assert_eq!(ball.location(b"meanwhile"), alford.location(b"meanwhile"));
    // The catch-up was logged as a summary, not line by line.
    let log = alford_log.lines();
    assert!(
        log.len() < 1000,
        "Alford's log has {} lines: the catch-up is logged line by line",
        log.len()
    );
    assert!(logged(
        &alford_log,
        &["catch-up with Ball", "done (link up)", "location(s)"]
    ));
}
