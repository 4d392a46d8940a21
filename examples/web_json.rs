//! A small web server with a JSON endpoint, after Twisted's "Twisted Web in
//! 60 seconds" (static content, a dynamic page, handling POSTs, an
//! asynchronous response, errors):
//! `cargo run --example web_json -- [ADDR]` (default `127.0.0.1:8080`).
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | a page saying what is here |
//! | `GET /clock` | the time now, as JSON (a page made per request) |
//! | `GET /notes` | the notes, as JSON |
//! | `POST /notes` with `{"text": "..."}` | 201 and the new note (at most 100 notes of 1,000 characters) |
//! | `GET /later?seconds=N` | the same as `/clock`, N seconds later (at most 10): a Deferred fired by a timer, the loop serving others meanwhile |
//! | anything else | a JSON error: 404, 405, 400 |
//!
//! ```text
//! curl -i localhost:8080/clock
//! curl -i -X POST -d '{"text": "buy milk"}' localhost:8080/notes
//! curl -i localhost:8080/notes
//! curl -i 'localhost:8080/later?seconds=2' & curl -i localhost:8080/clock
//! ```
//!
//! The server's limits are `HttpServerConfig`'s defaults but for the body
//! (16 KiB); `RUST_LOG=debug` shows each request. Ctrl-C stops it.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_protocols::http::server::{HttpServer, HttpServerConfig, RequestLimits, ServerRequest};
use gyre_protocols::http::Response;
use gyre_reactor::defer::{succeed, Deferred};
use gyre_reactor::Reactor;
use serde_json::{json, Value};

/// Most notes kept.
pub const MAX_NOTES: usize = 100;
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Longest wait `/later` accepts, in seconds.
pub const MAX_LATER_SECONDS: u64 = 10;

const INDEX: &str = "gyre web_json example\n\n\
GET  /clock             the time, as JSON\n\
GET  /notes             the notes\n\
POST /notes             {\"text\": \"...\"} adds one\n\
GET  /later?seconds=N   the time, N seconds later\n";

/// The site's state: the notes.
#[derive(Default)]
pub struct Notes {
    next_id: u64,
    notes: Vec<Value>,
}

/// Serves the site on `addr`.
pub fn serve(reactor: &Reactor, addr: SocketAddr) -> io::Result<HttpServer> {
    let config = HttpServerConfig {
        limits: RequestLimits {
            max_body: 16 * 1024,
            ..RequestLimits::default()
        },
        name: "web_json".to_string(),
        ..HttpServerConfig::default()
    };
    let notes = Rc::new(RefCell::new(Notes::default()));
    let for_timers = reactor.clone();
    HttpServer::listen(reactor, addr, config, move |request: ServerRequest| {
        route(&for_timers, &notes, &request)
    })
}

fn route(reactor: &Reactor, notes: &RefCell<Notes>, request: &ServerRequest) -> Deferred<Response> {
    let method = request.method.as_str();
    match request.path() {
        "/" if is_get(method) => succeed(
            Response::new(200)
                .with_header("Content-Type", "text/plain; charset=utf-8")
                .with_body(INDEX),
        ),
        "/clock" if is_get(method) => succeed(Response::new(200).with_json(&clock())),
        "/notes" if is_get(method) => {
            let all = Value::Array(notes.borrow().notes.clone());
            succeed(Response::new(200).with_json(&json!({ "notes": all })))
        }
        "/notes" if method == "POST" => succeed(add_note(notes, request)),
        "/later" if is_get(method) => later(reactor, request.query().unwrap_or("")),
        "/" | "/clock" | "/notes" | "/later" => succeed(
            error(405, &format!("{method} is not allowed here")).with_header("Allow", "GET, HEAD"),
        ),
        path => {
            let shown: String = path.chars().take(100).collect();
            succeed(error(404, &format!("nothing at {shown:?}")))
        }
    }
}

fn is_get(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

fn error(status: u16, message: &str) -> Response {
    Response::new(status).with_json(&json!({ "error": message }))
}

fn clock() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({ "unix_time": now.as_secs(), "millis": now.subsec_millis() })
}

/// `POST /notes`: the body must be a JSON object with a `text` string.
fn add_note(notes: &RefCell<Notes>, request: &ServerRequest) -> Response {
    let body = match request.json() {
        Ok(body) => body,
        Err(e) => return error(400, &format!("the body is not JSON: {e}")),
    };
    let Some(text) = body.get("text").and_then(Value::as_str) else {
        return error(400, "expected {\"text\": \"...\"}");
    };
    if text.chars().count() > MAX_NOTE_CHARS {
        return error(
            413,
            &format!("a note has at most {MAX_NOTE_CHARS} characters"),
        );
    }
    let mut notes = notes.borrow_mut();
    if notes.notes.len() >= MAX_NOTES {
        return error(507, &format!("the board is full ({MAX_NOTES} notes)"));
    }
    notes.next_id += 1;
    let note = json!({ "id": notes.next_id, "text": text });
    notes.notes.push(note.clone());
    Response::new(201)
        .with_header("Location", format!("/notes#{}", notes.next_id))
        .with_json(&note)
}

/// `GET /later?seconds=N`: an answer that comes later, from a timer,
/// while the loop serves everyone else (Twisted's `NOT_DONE_YET` with
/// `callLater`). If the client leaves first, the server cancels the
/// Deferred, and the canceller stops the timer.
fn later(reactor: &Reactor, query: &str) -> Deferred<Response> {
    let seconds = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds="))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(seconds) = seconds.filter(|s| *s <= MAX_LATER_SECONDS) else {
        return succeed(error(
            400,
            &format!("expected ?seconds=N with N at most {MAX_LATER_SECONDS}"),
        ));
    };
    let timer: Rc<RefCell<Option<gyre_reactor::clock::DelayedCall>>> = Rc::default();
    let for_cancel = Rc::clone(&timer);
    let (resolver, answer) = Deferred::with_canceller(move |_| {
        if let Some(call) = for_cancel.borrow_mut().take() {
            let _ = call.cancel();
        }
    });
    let call = reactor.call_later(Duration::from_secs(seconds), move || {
        let mut value = clock();
        value["waited_seconds"] = json!(seconds);
        let _ = resolver.callback(Response::new(200).with_json(&value));
    });
    *timer.borrow_mut() = Some(call);
    answer
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("web_json: {addr:?} is not an address: {e}\nusage: web_json [ADDR]");
            return ExitCode::FAILURE;
        }
    };
    let result = Reactor::new().and_then(|reactor| {
        let server = serve(&reactor, addr)?;
        println!("web_json: serving on http://{}/", server.local_addr());
        reactor.run().map_err(io::Error::other)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web_json: {e}");
            ExitCode::FAILURE
        }
    }
}
