//! The web_json example (`examples/web_json.rs`, compiled in as a module)
//! over a real loopback socket, asked by gyre's own HTTP client: the index,
//! the JSON clock, posting and listing notes, errors, and an answer that
//! comes later from a timer on the manual clock while others are served.

#[allow(dead_code)]
#[path = "common/run.rs"]
mod run;
#[allow(dead_code)]
#[path = "../../examples/web_json.rs"]
mod web_json;

use std::time::Duration;

use gyre_protocols::http::{HttpClient, Request, Response};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::Reactor;
use run::{any_port, wait};

fn ask(reactor: &Reactor, client: &HttpClient, request: Request) -> Response {
    let d = client.request(request);
    wait(reactor, "the response", || d.called());
    d.take_result().expect("fired").expect("a response")
}

#[test]
fn the_example_serves_json() {
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(manual.clock())
        .build()
        .expect("reactor");
    let server = web_json::serve(&reactor, any_port()).expect("serve");
    let base = format!("http://{}", server.local_addr());
    let client = HttpClient::new(&reactor);

    let index = ask(&reactor, &client, Request::get(format!("{base}/")));
    assert!(index.text().contains("/clock"), "{}", index.text());
    let clock = ask(&reactor, &client, Request::get(format!("{base}/clock")));
    assert_eq!(clock.header_str("content-type"), Some("application/json"));
    assert!(clock.json().expect("JSON")["unix_time"].as_u64().is_some());

    let note =
        Request::post(format!("{base}/notes")).json(&serde_json::json!({"text": "buy milk"}));
    let created = ask(&reactor, &client, note);
    assert_eq!(created.status, 201);
    assert_eq!(created.json().expect("JSON")["id"], 1);
    let bad = ask(
        &reactor,
        &client,
        Request::post(format!("{base}/notes")).body("{nope"),
    );
    assert_eq!(bad.status, 400);
    let notes = ask(&reactor, &client, Request::get(format!("{base}/notes")));
    assert_eq!(notes.json().expect("JSON")["notes"][0]["text"], "buy milk");
    assert_eq!(
        ask(&reactor, &client, Request::get(format!("{base}/nope"))).status,
        404
    );
    assert_eq!(
        ask(&reactor, &client, Request::delete(format!("{base}/clock"))).status,
        405
    );

    // A later answer: the loop serves the clock meanwhile; the answer
    // comes when the (manual) time has come.
    let later = client.request(Request::get(format!("{base}/later?seconds=5")));
    wait(&reactor, "the later request to arrive", || {
        server.stats().requests == 8
    });
    let meanwhile = ask(&reactor, &client, Request::get(format!("{base}/clock")));
    assert_eq!(meanwhile.status, 200);
    assert!(!later.called());
    manual.advance(Duration::from_secs(5));
    wait(&reactor, "the later answer", || later.called());
    let later = later.take_result().expect("fired").expect("a response");
    assert_eq!(later.json().expect("JSON")["waited_seconds"], 5);
}
