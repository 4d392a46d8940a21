//! One server connection: reads requests with a [`RequestParser`], hands
//! each complete one to the handler, and writes the answers in request
//! order.
//!
//! # Contract
//!
//! - **Answers go out in request order.** Requests may be pipelined: each
//!   gets an [`Answer`] in a queue when its head arrives, and the queue is
//!   written from the front as answers become ready, however their
//!   Deferreds fire. At most
//!   [`max_pipelined`](super::HttpServerConfig::max_pipelined) requests are
//!   read ahead of their answers; past that, and while the transport's
//!   write buffer is above its high-water mark (the peer does not read),
//!   the connection stops reading at the next request boundary, keeping at
//!   most one read of input, and resumes when an answer goes out (or the
//!   buffer drains).
//! - **A refusal comes after the answers before it.** A malformed or
//!   oversized request, or a time-out, queues its error answer (with
//!   `Connection: close`) behind the answers still owed, stops reading, and
//!   once the queue is written closes with the transport's lingering close,
//!   so the earlier answers are never reset away.
//! - **One timer per connection, for what the server waits on:** the head
//!   time-out while a head is arriving (not reset by its bytes), the idle
//!   time-out while the server waits for the peer (between requests, or in
//!   a body; reset by every byte), none while a handler works, and a
//!   closing time-out that aborts a close whose answers the peer does not
//!   read.
//! - **`100 Continue` is written when the request that asked for it is at
//!   the front of the queue** and its body has not arrived yet; a request
//!   refused at its head (413 for a too-large `Content-Length`, 417) gets
//!   its refusal instead.
//! - **The handler's Deferred may fire at any time**, even before
//!   `handle` returns: its callback only stores the response and, if the
//!   connection is not busy, writes what is ready; a busy connection writes
//!   it when the current event is done. On `connection_lost` every Deferred
//!   still pending is cancelled, after the connection's state is released.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use gyre_reactor::clock::DelayedCall;
use gyre_reactor::defer::{succeed, Cancelled, Deferred};
use gyre_reactor::{
    ConnectionLost, Factory, Producer, Protocol, Reactor, Transport, DEFAULT_HIGH_WATER,
};

use super::budget::{Admission, Budget, Slot};
use super::config::HttpServerConfig;
use super::parser::{RequestError, RequestEvent, RequestHead, RequestParser};
use super::request::{Handler, ServerRequest};
use super::response::{plain_error, serialize, AnswerContext, CONTINUE};
use crate::http::message::Response;
use crate::http::parser::Header;

/// Input kept while reading is paused is normally at most one read; a
/// transport that delivers more after `pause_reading` is not trusted past
/// this (the connection is aborted).
const MAX_HELD: usize = 1024 * 1024;

/// What a server's connections share.
pub(crate) struct Shared {
    pub reactor: Reactor,
    pub config: HttpServerConfig,
    pub handler: Box<dyn Handler>,
    pub budget: Rc<Budget>,
    pub counters: Counters,
}

/// The server's counters (see [`ServerStats`](super::ServerStats)).
#[derive(Default)]
pub(crate) struct Counters {
    pub connections: Cell<u64>,
    pub refused: Cell<u64>,
    pub requests: Cell<u64>,
    pub refusals: Cell<u64>,
    pub timeouts: Cell<u64>,
    pub bytes_received: Cell<u64>,
}

fn bump(counter: &Cell<u64>) -> u64 {
    let n = counter.get() + 1;
    counter.set(n);
    n
}

impl Shared {
    /// The response to a request the server refuses itself.
    fn error_response(&self, status: u16, message: &str) -> Response {
        match &self.config.error_response {
            Some(make) => make(status, message),
            None => plain_error(status, message),
        }
    }
}

/// The factory behind [`HttpServer`](super::HttpServer): a served
/// connection or a refused one, as the [`Budget`] says.
pub(crate) struct HttpFactory {
    pub shared: Rc<Shared>,
}

impl Factory for HttpFactory {
    type Protocol = ServerProtocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<ServerProtocol> {
        bump(&self.shared.counters.connections);
        Some(match self.shared.budget.admit() {
            Admission::Serve(slot) => {
                ServerProtocol::Serve(HttpConnection::new(&self.shared, peer, slot))
            }
            Admission::Refuse(slot) => ServerProtocol::Refuse(Refused {
                shared: Rc::clone(&self.shared),
                _slot: slot,
            }),
        })
    }
}

/// A connection's protocol: served, or answered 503.
pub(crate) enum ServerProtocol {
    Serve(HttpConnection),
    Refuse(Refused),
}

impl Protocol for ServerProtocol {
    fn connection_made(&mut self, transport: Transport) {
        match self {
            ServerProtocol::Serve(c) => c.connection_made(transport),
            ServerProtocol::Refuse(r) => r.connection_made(transport),
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        match self {
            ServerProtocol::Serve(c) => c.data_received(data),
            ServerProtocol::Refuse(r) => r.data_received(data),
        }
    }

    fn eof_received(&mut self) -> bool {
        match self {
            ServerProtocol::Serve(c) => c.eof_received(),
            ServerProtocol::Refuse(_) => false,
        }
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        match self {
            ServerProtocol::Serve(c) => c.connection_lost(reason),
            ServerProtocol::Refuse(_) => {}
        }
    }
}

/// A connection past the cap: answered 503 and closed.
pub(crate) struct Refused {
    shared: Rc<Shared>,
    /// Its share of the cap, given back when dropped.
    _slot: Slot,
}

impl Protocol for Refused {
    fn connection_made(&mut self, transport: Transport) {
        let n = bump(&self.shared.counters.refused);
        if n.is_power_of_two() || n % 1000 == 0 {
            log::warn!(
                "{}: at its connection limit ({}): {} answered 503 ({n} so far)",
                self.shared.config.name,
                self.shared.config.max_connections,
                transport
                    .peer_addr()
                    .map_or_else(|| "a client".to_string(), |a| a.to_string()),
            );
        }
        let response = self
            .shared
            .error_response(503, "too many connections; try again later")
            .with_header("Retry-After", "1");
        let ctx = AnswerContext {
            head_only: false,
            version: 1,
            close: true,
        };
        transport.write(&serialize(&response, ctx));
        transport.lose_connection();
    }

    fn data_received(&mut self, _data: &[u8]) {}
}

/// A served connection: the protocol, a thin shell around its state.
pub(crate) struct HttpConnection {
    conn: Rc<RefCell<Conn>>,
}

impl HttpConnection {
    fn new(shared: &Rc<Shared>, peer: SocketAddr, slot: Slot) -> HttpConnection {
        let conn = Rc::new_cyclic(|me| {
            RefCell::new(Conn {
                shared: Rc::clone(shared),
                me: me.clone(),
                peer,
                transport: None,
                parser: RequestParser::with_limits(shared.config.limits),
                receiving: None,
                answers: VecDeque::new(),
                phase: Phase::Reading,
                flow: Flow::Open,
                held: Vec::new(),
                recheck: None,
                deadline: None,
                _slot: slot,
            })
        });
        HttpConnection { conn }
    }
}

impl Protocol for HttpConnection {
    fn connection_made(&mut self, transport: Transport) {
        let mut conn = self.conn.borrow_mut();
        transport.register_producer(Rc::new(FlowControl {
            conn: Rc::downgrade(&self.conn),
            reactor: conn.shared.reactor.clone(),
        }));
        conn.transport = Some(transport);
        conn.settle(false);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.conn.borrow_mut().received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.conn.borrow_mut().eof()
    }

    fn connection_lost(&mut self, _reason: ConnectionLost) {
        let pending = self.conn.borrow_mut().lost();
        // Cancelled with the state released: a canceller may call out.
        for deferred in pending {
            deferred.cancel();
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests.
    Reading,
    /// No more requests are read (the last one asked to close, a refusal
    /// was queued, or the peer sent EOF): close once the answers are out.
    LastAnswer,
    /// `lose_connection` was called.
    Closing,
    /// `connection_lost` came.
    Closed,
}

/// Whether the transport takes more answers (its producer state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Below the high-water mark.
    Open,
    /// Above it: read no further request until it drains.
    Paused,
}

/// What the connection's one timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// A head is arriving: it must be whole by then.
    Head,
    /// The server waits for the peer.
    Idle,
    /// Closing, answers maybe unread.
    Closing,
}

/// The request being received: its head arrived, its body is arriving.
struct Receiving {
    head: RequestHead,
    body: Vec<u8>,
    trailers: Vec<Header>,
}

/// One request's place in the answer queue.
struct Answer {
    /// The request was `HEAD`.
    head_only: bool,
    /// The request's minor version.
    version: u8,
    /// The request allows the connection to carry another one.
    keep_alive: bool,
    /// Method and path, for the log (never the query: it may hold secrets).
    summary: String,
    state: AnswerState,
}

/// Where an answer is.
enum AnswerState {
    /// The request is arriving and asked for `100 Continue`, not sent yet.
    ContinueDue,
    /// The request is arriving.
    Receiving,
    /// The handler has it; the response lands in `slot`.
    Handling {
        slot: Rc<RefCell<Option<Response>>>,
        deferred: Deferred<()>,
    },
    /// The response is ready (a refusal made by the server).
    Ready(Response),
}

/// A served connection's state.
struct Conn {
    shared: Rc<Shared>,
    me: Weak<RefCell<Conn>>,
    peer: SocketAddr,
    transport: Option<Transport>,
    parser: RequestParser,
    receiving: Option<Receiving>,
    answers: VecDeque<Answer>,
    phase: Phase,
    flow: Flow,
    /// Input not parsed yet because reading is paused (at a request
    /// boundary); the transport is paused while it is not empty.
    held: Vec<u8>,
    /// Bytes unsent when a look after the loop's flush was last scheduled
    /// (see `recheck_after_flush`).
    recheck: Option<usize>,
    deadline: Option<(Deadline, DelayedCall)>,
    /// Its share of the connection cap, given back when dropped.
    _slot: Slot,
}

impl Conn {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Bytes arrived.
    fn received(&mut self, data: &[u8]) {
        let counters = &self.shared.counters;
        counters
            .bytes_received
            .set(counters.bytes_received.get() + data.len() as u64);
        if self.phase != Phase::Reading {
            return;
        }
        if !self.held.is_empty() {
            // Paused, yet more came: keep it, within reason.
            if self.held.len() + data.len() > MAX_HELD {
                log::warn!(
                    "{}: {} delivered input while paused past {MAX_HELD} bytes: aborting",
                    self.name(),
                    self.peer
                );
                self.abort();
                return;
            }
            self.held.extend_from_slice(data);
            return;
        }
        self.feed(data);
        self.settle(true);
    }

    /// Whether reading must wait at the next request boundary: too many
    /// answers owed, or too many bytes of answers unsent (the transport's
    /// producer is paused, or its buffer is above the default high-water
    /// mark now, before the loop has flushed it).
    fn must_wait(&self) -> bool {
        self.flow == Flow::Paused
            || self.answers.len() >= self.shared.config.max_pipelined.max(1)
            || self.unsent() > DEFAULT_HIGH_WATER
    }

    /// Bytes written to the transport and not yet sent.
    fn unsent(&self) -> usize {
        self.transport.as_ref().map_or(0, Transport::buffered_len)
    }

    /// Parses `input`, acting on each event, until it is used up, reading
    /// must wait (the rest is held and the transport paused), or reading
    /// stops.
    fn feed(&mut self, data: &[u8]) {
        let mut input = data;
        loop {
            if self.phase != Phase::Reading {
                return;
            }
            if self.parser.is_idle() && self.must_wait() {
                if !input.is_empty() {
                    log::debug!(
                        "{}: {}: {} answers owed, {} bytes unsent: reading paused",
                        self.name(),
                        self.peer,
                        self.answers.len(),
                        self.unsent()
                    );
                    self.held.extend_from_slice(input);
                    if let Some(t) = &self.transport {
                        t.pause_reading();
                    }
                    self.recheck_after_flush();
                }
                return;
            }
            match self.parser.parse(&mut input) {
                Ok(None) => return,
                Ok(Some(event)) => self.on_event(event),
                Err(e) => {
                    self.refuse_request(&e);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: RequestEvent<'_>) {
        match event {
            RequestEvent::Head(head) => {
                let state = if head.expect_continue {
                    AnswerState::ContinueDue
                } else {
                    AnswerState::Receiving
                };
                let path = head.target.split('?').next().unwrap_or("");
                self.answers.push_back(Answer {
                    head_only: head.method == "HEAD",
                    version: head.version,
                    keep_alive: head.keep_alive,
                    summary: format!("{} {path:.100}", head.method),
                    state,
                });
                self.receiving = Some(Receiving {
                    head,
                    body: Vec::new(),
                    trailers: Vec::new(),
                });
            }
            RequestEvent::Data(data) => {
                if let Some(r) = &mut self.receiving {
                    r.body.extend_from_slice(data);
                }
            }
            RequestEvent::Trailers(trailers) => {
                if let Some(r) = &mut self.receiving {
                    r.trailers = trailers;
                }
            }
            RequestEvent::End => self.dispatch(),
        }
    }

    /// A request has arrived whole: the handler gets it.
    fn dispatch(&mut self) {
        let Some(Receiving {
            head,
            body,
            trailers,
        }) = self.receiving.take()
        else {
            return;
        };
        bump(&self.shared.counters.requests);
        if !head.keep_alive {
            self.stop_reading();
        }
        let request = ServerRequest {
            method: head.method,
            target: head.target,
            version: head.version,
            headers: head.headers,
            body,
            trailers,
            peer: self.peer,
        };
        let summary = format!("{} {:.100}", request.method, request.path());
        let deferred = match catch_unwind(AssertUnwindSafe(|| self.shared.handler.handle(request)))
        {
            Ok(d) => d,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                log::error!(
                    "{}: the handler panicked on {summary} from {}: {what}; answering 500",
                    self.name(),
                    self.peer
                );
                succeed(self.shared.error_response(500, "the handler failed"))
            }
        };
        let slot: Rc<RefCell<Option<Response>>> = Rc::default();
        let fill = Rc::clone(&slot);
        let me = self.me.clone();
        let shared = Rc::clone(&self.shared);
        let peer = self.peer;
        let deferred = deferred.add_both(move |outcome| {
            let response = match outcome {
                Ok(response) => response,
                Err(failure) if failure.is::<Cancelled>() => return Ok(()),
                Err(failure) => {
                    log::error!(
                        "{}: the handler failed on {summary} from {peer}: {failure}; answering 500",
                        shared.config.name
                    );
                    shared.error_response(500, "the handler failed")
                }
            };
            *fill.borrow_mut() = Some(response);
            poke(&me);
            Ok(())
        });
        if let Some(answer) = self.answers.back_mut() {
            answer.state = AnswerState::Handling { slot, deferred };
        }
    }

    /// The parser refused a request.
    fn refuse_request(&mut self, e: &RequestError) {
        bump(&self.shared.counters.refusals);
        log::info!(
            "{}: {} sent a request refused with {}: {e}",
            self.name(),
            self.peer,
            e.status()
        );
        self.refuse(e.status(), &e.to_string());
    }

    /// Queues the error answer `status` after those owed (in place of the
    /// request being received, if any) and stops reading.
    fn refuse(&mut self, status: u16, message: &str) {
        self.receiving = None;
        let answer = Answer {
            head_only: false,
            version: 1,
            keep_alive: false,
            summary: "(refused)".to_string(),
            state: AnswerState::Ready(self.shared.error_response(status, message)),
        };
        let receiving = matches!(
            self.answers.back().map(|a| &a.state),
            Some(AnswerState::Receiving | AnswerState::ContinueDue)
        );
        if receiving {
            self.answers.pop_back();
        }
        self.answers.push_back(answer);
        self.stop_reading();
    }

    /// No more requests are read.
    fn stop_reading(&mut self) {
        if self.phase == Phase::Reading {
            self.phase = Phase::LastAnswer;
            self.held = Vec::new();
            if let Some(t) = &self.transport {
                t.pause_reading();
            }
        }
    }

    /// After every event: write what is ready, read what was held if
    /// reading may go on, close when done, and set the timer.
    fn settle(&mut self, activity: bool) {
        loop {
            self.write_ready();
            if !self.resume_held() {
                break;
            }
        }
        if self.phase == Phase::LastAnswer && self.answers.is_empty() {
            self.close();
        }
        self.update_deadline(activity);
    }

    /// Writes the answers ready at the front of the queue.
    fn write_ready(&mut self) {
        if !matches!(self.phase, Phase::Reading | Phase::LastAnswer) {
            return;
        }
        let Some(transport) = self.transport.clone() else {
            return;
        };
        while let Some(front) = self.answers.front_mut() {
            let response = match &mut front.state {
                AnswerState::ContinueDue => {
                    if self.parser.body_received() == 0 {
                        transport.write(CONTINUE);
                    }
                    front.state = AnswerState::Receiving;
                    return;
                }
                AnswerState::Receiving => return,
                AnswerState::Handling { slot, .. } => match slot.borrow_mut().take() {
                    Some(response) => response,
                    None => return,
                },
                AnswerState::Ready(response) => std::mem::replace(response, Response::new(500)),
            };
            let Some(answer) = self.answers.pop_front() else {
                return;
            };
            let close =
                !answer.keep_alive || (self.phase == Phase::LastAnswer && self.answers.is_empty());
            log::debug!(
                "{}: {} {} -> {}",
                self.name(),
                self.peer,
                answer.summary,
                response.status
            );
            let ctx = AnswerContext {
                head_only: answer.head_only,
                version: answer.version,
                close,
            };
            transport.write(&serialize(&response, ctx));
            if close {
                self.close();
                return;
            }
        }
    }

    /// Reading waits for unsent answers that the loop has not tried to
    /// flush yet: it flushes when the current event is done, and then
    /// either pauses the producer (and resumes it later) or has drained the
    /// buffer with no event for it. Look again then.
    ///
    /// Never a busy loop: a recheck that finds no fewer bytes unsent than
    /// the last one schedules no other (the producer's resume, an answer,
    /// or the idle time-out wakes the connection then).
    fn recheck_after_flush(&mut self) {
        let unsent = self.unsent();
        if self.flow != Flow::Open || unsent <= DEFAULT_HIGH_WATER {
            return;
        }
        if self.recheck.is_some_and(|last| unsent >= last) {
            return;
        }
        self.recheck = Some(unsent);
        let me = self.me.clone();
        self.shared.reactor.call_soon(move || poke(&me));
    }

    /// Parses held input if reading may go on; whether it did.
    fn resume_held(&mut self) -> bool {
        if self.held.is_empty() || self.phase != Phase::Reading {
            return false;
        }
        if self.must_wait() {
            self.recheck_after_flush();
            return false;
        }
        self.recheck = None;
        let held = std::mem::take(&mut self.held);
        self.feed(&held);
        if self.held.is_empty() && self.phase == Phase::Reading {
            if let Some(t) = &self.transport {
                t.resume_reading();
            }
        }
        true
    }

    /// Flushes and closes (lingering).
    fn close(&mut self) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.phase = Phase::Closing;
        self.held = Vec::new();
        if let Some(t) = &self.transport {
            t.lose_connection();
        }
    }

    /// Drops what is buffered and closes now.
    fn abort(&mut self) {
        self.phase = Phase::Closing;
        self.held = Vec::new();
        if let Some(t) = &self.transport {
            t.abort_connection();
        }
    }

    /// The peer sent EOF: no request comes after. Whether to keep our
    /// write side open for the answers still owed.
    fn eof(&mut self) -> bool {
        if self.phase == Phase::Reading {
            if self.receiving.take().is_some() || self.parser.in_head() {
                log::debug!(
                    "{}: {} closed in the middle of a request",
                    self.name(),
                    self.peer
                );
                if matches!(
                    self.answers.back().map(|a| &a.state),
                    Some(AnswerState::Receiving | AnswerState::ContinueDue)
                ) {
                    self.answers.pop_back();
                }
            }
            self.phase = Phase::LastAnswer;
            self.held = Vec::new();
        }
        if self.answers.is_empty() {
            // The transport closes (nothing is owed).
            self.phase = Phase::Closing;
            self.update_deadline(false);
            return false;
        }
        self.settle(false);
        true
    }

    /// The connection closed: the Deferreds still pending, to cancel.
    fn lost(&mut self) -> Vec<Deferred<()>> {
        self.phase = Phase::Closed;
        if let Some((_, timer)) = self.deadline.take() {
            let _ = timer.cancel();
        }
        self.transport = None;
        self.receiving = None;
        self.held = Vec::new();
        self.answers
            .drain(..)
            .filter_map(|a| match a.state {
                AnswerState::Handling { deferred, .. } => Some(deferred),
                _ => None,
            })
            .collect()
    }

    /// The timer the connection needs now.
    fn wanted_deadline(&self) -> Option<Deadline> {
        match self.phase {
            Phase::Closing => Some(Deadline::Closing),
            Phase::Closed | Phase::LastAnswer => None,
            Phase::Reading if self.parser.in_head() => Some(Deadline::Head),
            Phase::Reading
                if self
                    .answers
                    .iter()
                    .any(|a| matches!(a.state, AnswerState::Handling { .. })) =>
            {
                None
            }
            Phase::Reading => Some(Deadline::Idle),
        }
    }

    /// Arms, keeps, resets or cancels the timer; `activity`: bytes arrived
    /// (they reset the idle time-out, not the head time-out).
    fn update_deadline(&mut self, activity: bool) {
        let wanted = self.wanted_deadline();
        if let (Some((kind, timer)), Some(want)) = (&self.deadline, wanted) {
            if *kind == want {
                if want == Deadline::Idle && activity {
                    let _ = timer.reset(self.shared.config.idle_timeout);
                }
                return;
            }
        }
        if let Some((_, timer)) = self.deadline.take() {
            let _ = timer.cancel();
        }
        let Some(want) = wanted else {
            return;
        };
        let delay = match want {
            Deadline::Head => self.shared.config.head_timeout,
            Deadline::Idle | Deadline::Closing => self.shared.config.idle_timeout,
        };
        let me = self.me.clone();
        let timer = self.shared.reactor.call_later(delay, move || {
            if let Some(conn) = me.upgrade() {
                if let Ok(mut conn) = conn.try_borrow_mut() {
                    conn.deadline_hit(want);
                }
            }
        });
        self.deadline = Some((want, timer));
    }

    /// The timer fired.
    fn deadline_hit(&mut self, kind: Deadline) {
        self.deadline = None;
        let unsent = self.unsent();
        match kind {
            Deadline::Head => {
                bump(&self.shared.counters.timeouts);
                log::info!(
                    "{}: {} did not send a whole request head within {:?} (head time-out): answering 408",
                    self.name(),
                    self.peer,
                    self.shared.config.head_timeout
                );
                self.refuse(408, "the request head did not arrive in time");
            }
            Deadline::Idle if self.parser.in_body() => {
                bump(&self.shared.counters.timeouts);
                log::info!(
                    "{}: {} sent nothing for {:?} in the middle of a body (idle time-out): answering 408",
                    self.name(),
                    self.peer,
                    self.shared.config.idle_timeout
                );
                self.refuse(408, "the request body stalled");
            }
            Deadline::Idle if unsent > 0 => {
                bump(&self.shared.counters.timeouts);
                log::info!(
                    "{}: {} read none of {unsent} bytes of answers for {:?} (idle time-out): aborting",
                    self.name(),
                    self.peer,
                    self.shared.config.idle_timeout
                );
                self.abort();
            }
            Deadline::Idle => {
                bump(&self.shared.counters.timeouts);
                log::debug!(
                    "{}: {} idle for {:?} (idle time-out): closing",
                    self.name(),
                    self.peer,
                    self.shared.config.idle_timeout
                );
                self.close();
            }
            Deadline::Closing if unsent > 0 => {
                log::info!(
                    "{}: {} read none of {unsent} bytes of answers while closing for {:?}: aborting",
                    self.name(),
                    self.peer,
                    self.shared.config.idle_timeout
                );
                self.abort();
            }
            // Flushed: the transport's lingering close finishes it.
            Deadline::Closing => return,
        }
        self.settle(false);
    }
}

/// A handler's Deferred fired: write what is ready, unless the connection
/// is busy (then it does so when the event it handles is done).
fn poke(me: &Weak<RefCell<Conn>>) {
    if let Some(conn) = me.upgrade() {
        if let Ok(mut conn) = conn.try_borrow_mut() {
            conn.settle(false);
        }
    }
}

/// The connection as its transport's producer: paused while the peer does
/// not read its answers.
struct FlowControl {
    conn: Weak<RefCell<Conn>>,
    reactor: Reactor,
}

impl FlowControl {
    fn set(&self, flow: Flow) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let busy = match conn.try_borrow_mut() {
            Ok(mut c) => {
                c.flow = flow;
                c.settle(false);
                false
            }
            Err(_) => true,
        };
        if busy {
            {
                // The transport calls producers from its loop, never from
                // inside the connection; were it to, try again from there.
                let again = FlowControl {
                    conn: self.conn.clone(),
                    reactor: self.reactor.clone(),
                };
                self.reactor.call_soon(move || again.set(flow));
            }
        }
    }
}

impl Producer for FlowControl {
    fn pause_producing(&self) {
        self.set(Flow::Paused);
    }

    fn resume_producing(&self) {
        self.set(Flow::Open);
    }
}
