//! The Places clients and the local Places service over real loopback
//! sockets: the local service itself, and the client against fake Google
//! servers (gyre TLS servers with a CA made here) that check the requests
//! and answer canned responses, failures included.
//!
//! Every wait is `run_until` with a generous bound on the event that
//! matters; nothing sleeps and nothing asserts on timing.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use gyre_herd::places::{
    haversine_m, LocalPlacesService, PlacesAnswer, PlacesApi, PlacesClient, PlacesConfig,
    PlacesError,
};
use gyre_protocols::http::{HttpClient, HttpClientConfig, Request, Response};
use gyre_protocols::tls::{client_config_with_roots, listen_tls, parse_certs_pem, server_config};
use gyre_reactor::defer::Deferred;
use gyre_reactor::{factory_fn, Protocol, Reactor, Transport};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(30);
const KEY: &str = "sekrit-KEY-0123456789";
const ROYCE: (f64, f64) = (34.0729, -118.4422);

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("reactor")
}

/// Runs the loop until `d` fires (bounded) and returns its value.
fn wait<T: 'static>(reactor: &Reactor, d: Deferred<T>) -> T {
    assert!(
        reactor.run_until(|| d.called(), BOUND).expect("run"),
        "no answer within {BOUND:?}"
    );
    match d.take_result() {
        Some(Ok(value)) => value,
        Some(Err(failure)) => panic!("failed: {failure}"),
        None => panic!("fired without a result"),
    }
}

fn parse(answer: &PlacesAnswer) -> Value {
    serde_json::from_str(&answer.json).expect("the answer is JSON")
}

fn results(value: &Value) -> &Vec<Value> {
    value["results"].as_array().expect("results is an array")
}

fn names(value: &Value) -> Vec<&str> {
    results(value)
        .iter()
        .map(|r| r["name"].as_str().unwrap_or(""))
        .collect()
}

/// The key appears nowhere a log or a client could see it.
fn assert_no_key(answer: &PlacesAnswer, key: &str) {
    assert!(!answer.summary.contains(key), "{}", answer.summary);
    assert!(!answer.json.contains(key), "{}", answer.json);
    assert!(!answer.summary.contains('\n'), "{}", answer.summary);
}

/// An error answer: no results, `status`, and an error message.
fn assert_error(answer: &PlacesAnswer, status: &str) -> String {
    let value = parse(answer);
    assert_eq!(answer.status, status, "{}", answer.json);
    assert_eq!(value["status"], status);
    assert_eq!(value["results"], json!([]));
    assert_eq!(value["html_attributions"], json!([]));
    let message = value["error_message"]
        .as_str()
        .expect("an error_message")
        .to_string();
    assert!(!message.is_empty());
    assert!(answer.summary.contains(status), "{}", answer.summary);
    message
}

// ----- the local service ------------------------------------------------------

fn local(reactor: &Reactor) -> (LocalPlacesService, PlacesClient) {
    let service =
        LocalPlacesService::start(reactor, "127.0.0.1:0".parse().unwrap()).expect("start");
    let client = PlacesClient::new(reactor, service.client_config()).expect("client");
    (service, client)
}

#[test]
fn local_service_near_royce_hall() {
    let reactor = reactor();
    let (service, client) = local(&reactor);
    assert!(service.url().starts_with("https://127.0.0.1:"));
    assert!(service.url().ends_with("/maps/api/place/nearbysearch/json"));
    assert_eq!(service.local_addr().port(), client_port(&service.url()));
    assert!(String::from_utf8_lossy(service.ca_pem()).contains("BEGIN CERTIFICATE"));

    let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 20));
    assert_eq!(answer.status, "OK");
    let value = parse(&answer);
    assert_eq!(value["html_attributions"], json!([]));
    let all = names(&value);
    assert_eq!(all[0], "Royce Hall", "{all:?}");
    assert!(all.contains(&"Pauley Pavilion"), "{all:?}");
    assert!(all.len() >= 5 && all.len() <= 20, "{all:?}");
    let first = &results(&value)[0];
    assert_eq!(first["place_id"], "gyre-local-royce-hall");
    assert!(first["vicinity"].is_string() && first["types"].is_array());

    // Nearest first, all within the radius.
    let distances: Vec<f64> = results(&value)
        .iter()
        .map(|r| {
            let location = &r["geometry"]["location"];
            haversine_m(
                ROYCE.0,
                ROYCE.1,
                location["lat"].as_f64().unwrap(),
                location["lng"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    assert!(distances.iter().all(|d| *d <= 1000.0), "{distances:?}");

    // max_results is respected: the first three of the same list.
    let three = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 3));
    assert_eq!(names(&parse(&three)), all[..3].to_vec());
    assert!(three.summary.contains("3 results"), "{}", three.summary);
    assert!(three
        .summary
        .starts_with("places local GET https://127.0.0.1:"));
    // Pretty-printed like Google's, without a trailing newline.
    assert!(three.json.starts_with("{\n   \"html_attributions\" : []"));
    assert!(!three.json.ends_with('\n'));
}

fn client_port(url: &str) -> u16 {
    let after = url.trim_start_matches("https://127.0.0.1:");
    after[..after.find('/').unwrap()].parse().unwrap()
}

#[test]
fn local_service_zero_results_far_from_everything() {
    let reactor = reactor();
    let (_service, client) = local(&reactor);
    let answer = wait(&reactor, client.nearby(0.0, -150.0, 50_000.0, 5));
    assert_eq!(answer.status, "ZERO_RESULTS");
    assert_eq!(
        parse(&answer),
        json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );
    assert!(
        answer.summary.contains("ZERO_RESULTS, 0 results"),
        "{}",
        answer.summary
    );
}

#[test]
fn local_service_invalid_requests() {
    let reactor = reactor();
    let (service, client) = local(&reactor);
    let http = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            tls: client_config_with_roots(&parse_certs_pem(service.ca_pem()).unwrap(), &[])
                .unwrap(),
            ..HttpClientConfig::default()
        },
    );
    let get = |query: &str| -> Response {
        wait(
            &reactor,
            http.request(Request::get(format!("{}{query}", service.url()))),
        )
    };
    for query in [
        "?radius=1000",
        "?location=34.07,-118.44",
        "?location=abc&radius=1000",
        // A raw `+` is a space: the classic mistake is refused.
        "?location=+34.0729-118.4422&radius=1000",
        "?location=+34.0729,-118.4422&radius=1000",
        "?location=34.07,-118.44&radius=0",
        "?location=34.07,-118.44&radius=60000",
        "?location=95,0&radius=10",
    ] {
        let response = get(query);
        assert_eq!(response.status, 200, "{query}");
        let value = response.json().unwrap();
        assert_eq!(value["status"], "INVALID_REQUEST", "{query}");
        assert!(value["error_message"].is_string(), "{query}");
        assert_eq!(value["results"], json!([]), "{query}");
    }
    // Unknown paths and methods: an HTTP error with a JSON body.
    let url = service.url();
    let base = url.trim_end_matches("/maps/api/place/nearbysearch/json");
    let missing = wait(&reactor, http.request(Request::get(format!("{base}/nope"))));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json().unwrap()["status"], "NOT_FOUND");
    let post = wait(
        &reactor,
        http.request(Request::post(service.url()).body("x")),
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.json().unwrap()["status"], "INVALID_REQUEST");

    // The client refuses out-of-range arguments itself.
    let answer = wait(&reactor, client.nearby(95.0, 0.0, 1000.0, 5));
    assert_error(&answer, "INVALID_REQUEST");
    let answer = wait(&reactor, client.nearby(0.0, 0.0, f64::NAN, 5));
    assert_error(&answer, "INVALID_REQUEST");
}

#[test]
fn local_service_refuses_oversized_requests_with_json() {
    let reactor = reactor();
    let (service, _) = local(&reactor);
    let http = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            tls: client_config_with_roots(&parse_certs_pem(service.ca_pem()).unwrap(), &[])
                .unwrap(),
            ..HttpClientConfig::default()
        },
    );
    let url = service.url();
    let mut many_fields = Request::get(format!("{url}?location=1,1&radius=1"));
    for i in 0..40 {
        many_fields = many_fields.header(format!("X-{i}"), "y");
    }
    for (request, status) in [
        (many_fields, 431),
        (Request::get(format!("{url}?pad={}", "a".repeat(9000))), 414),
        (Request::post(url.clone()).body(vec![b'x'; 9000]), 413),
    ] {
        let response = wait(&reactor, http.request(request));
        assert_eq!(response.status, status);
        assert_eq!(response.header_str("connection"), Some("close"));
        assert_eq!(response.json().unwrap()["status"], "INVALID_REQUEST");
    }
    let stats = service.http_server().stats();
    assert_eq!((stats.requests, stats.refusals), (0, 3));
}

// ----- fake Google servers ----------------------------------------------------

/// A request a fake server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a fake server answers: status and body, or `None` to never answer.
type Answer = Rc<dyn Fn(&Seen) -> Option<(u16, String)>>;

/// One connection of a fake server.
struct Fake {
    transport: Option<Transport>,
    buf: Vec<u8>,
    seen: Rc<RefCell<Vec<Seen>>>,
    answer: Answer,
}

impl Protocol for Fake {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = request.parse(&self.buf) else {
            return;
        };
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if self.buf.len() < head_len + length {
            return;
        }
        let seen = Seen {
            method: request.method.unwrap_or("").to_string(),
            target: request.path.unwrap_or("").to_string(),
            headers,
            body: self.buf[head_len..head_len + length].to_vec(),
        };
        self.buf.drain(..head_len + length);
        let reply = (self.answer)(&seen);
        self.seen.borrow_mut().push(seen);
        if let (Some((status, body)), Some(t)) = (reply, &self.transport) {
            t.write(
                format!(
                    "HTTP/1.1 {status} Canned\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    }
}

/// A fake HTTPS server with its own CA.
struct FakeServer {
    addr: SocketAddr,
    ca_pem: String,
    seen: Rc<RefCell<Vec<Seen>>>,
}

impl FakeServer {
    fn start(
        reactor: &Reactor,
        answer: impl Fn(&Seen) -> Option<(u16, String)> + 'static,
    ) -> FakeServer {
        let (ca_pem, chain_pem, key_pem) = test_certs();
        let config = server_config(chain_pem.as_bytes(), key_pem.as_bytes(), &[]).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let answer: Answer = Rc::new(answer);
        let for_factory = seen.clone();
        let port = listen_tls(
            reactor,
            "127.0.0.1:0".parse().unwrap(),
            config,
            factory_fn(move |_| {
                Some(Fake {
                    transport: None,
                    buf: Vec::new(),
                    seen: for_factory.clone(),
                    answer: answer.clone(),
                })
            }),
        )
        .unwrap();
        FakeServer {
            addr: port.local_addr(),
            ca_pem,
            seen,
        }
    }

    fn config(&self, api: PlacesApi, path: &str) -> PlacesConfig {
        PlacesConfig {
            api,
            url: Some(format!("https://127.0.0.1:{}{path}", self.addr.port())),
            extra_ca_pem: Some(self.ca_pem.clone().into_bytes()),
            api_key: Some(KEY.to_string()),
            timeout: Duration::from_secs(10),
            ..PlacesConfig::default()
        }
    }

    fn only_request(&self) -> Seen {
        let seen = self.seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen[0].clone()
    }
}

/// A CA, and a certificate for 127.0.0.1 and localhost signed by it: (CA,
/// chain, key), PEM.
fn test_certs() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fake Google CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (
        ca.pem(),
        format!("{}{}", cert.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

const NEW_PATH: &str = "/v1/places:searchNearby";
const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";

fn google_places() -> String {
    json!({"places": [
        {
            "id": "ChIJ-royce",
            "displayName": {"text": "Royce Hall", "languageCode": "en"},
            "formattedAddress": "340 Royce Dr, Los Angeles, CA 90095, USA",
            "shortFormattedAddress": "340 Royce Dr, Los Angeles",
            "location": {"latitude": 34.0729, "longitude": -118.4422},
            "rating": 4.8,
            "userRatingCount": 312,
            "types": ["performing_arts_theater", "point_of_interest", "establishment"],
            "businessStatus": "OPERATIONAL"
        },
        {
            "id": "ChIJ-powell",
            "displayName": {"text": "Powell Library"},
            "location": {"latitude": 34.0716, "longitude": -118.4422},
            "types": ["library"]
        },
        {
            "id": "ChIJ-pauley",
            "displayName": {"text": "Pauley Pavilion"},
            "location": {"latitude": 34.0703, "longitude": -118.4468}
        }
    ]})
    .to_string()
}

#[test]
fn google_new_request_and_conversion() {
    let reactor = reactor();
    let server = FakeServer::start(&reactor, |_| Some((200, google_places())));
    let client = PlacesClient::new(&reactor, server.config(PlacesApi::Google, NEW_PATH)).unwrap();
    let answer = wait(
        &reactor,
        client.nearby(ROYCE.0, ROYCE.1, 10.5871263 * 1000.0, 2),
    );

    let seen = server.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, NEW_PATH);
    assert_eq!(seen.header("X-Goog-Api-Key"), Some(KEY));
    let mask = seen.header("X-Goog-FieldMask").expect("a field mask");
    for field in [
        "places.id",
        "places.displayName",
        "places.location",
        "places.rating",
        "places.userRatingCount",
        "places.types",
        "places.businessStatus",
    ] {
        assert!(mask.split(',').any(|f| f == field), "{field} in {mask}");
    }
    assert_eq!(seen.header("Content-Type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({
            "maxResultCount": 2,
            "locationRestriction": {"circle": {
                "center": {"latitude": 34.0729, "longitude": -118.4422},
                "radius": 10587.126
            }}
        })
    );

    assert_eq!(answer.status, "OK");
    let value = parse(&answer);
    assert_eq!(names(&value), ["Royce Hall", "Powell Library"]);
    let royce = &results(&value)[0];
    assert_eq!(royce["place_id"], "ChIJ-royce");
    assert_eq!(royce["vicinity"], "340 Royce Dr, Los Angeles");
    assert_eq!(royce["user_ratings_total"], 312);
    assert_eq!(royce["rating"], 4.8);
    assert_eq!(royce["business_status"], "OPERATIONAL");
    assert_eq!(
        royce["geometry"]["location"],
        json!({"lat": 34.0729, "lng": -118.4422})
    );
    assert_eq!(value["html_attributions"], json!([]));
    assert!(answer.summary.contains(&format!(
        "places google POST https://127.0.0.1:{}{NEW_PATH} -> OK, 2 results",
        server.addr.port()
    )));
    assert_no_key(&answer, KEY);
}

#[test]
fn google_new_without_places_is_zero_results() {
    let reactor = reactor();
    let server = FakeServer::start(&reactor, |_| Some((200, "{}".to_string())));
    let client = PlacesClient::new(&reactor, server.config(PlacesApi::Google, NEW_PATH)).unwrap();
    let answer = wait(&reactor, client.nearby(0.0, -150.0, 50_000.0, 20));
    assert_eq!(answer.status, "ZERO_RESULTS");
    assert_eq!(
        parse(&answer),
        json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );
    let body: Value = serde_json::from_slice(&server.only_request().body).unwrap();
    assert_eq!(body["maxResultCount"], 20);
    assert_eq!(body["locationRestriction"]["circle"]["radius"], 50000.0);
}

#[test]
fn google_legacy_request_has_plain_numbers_and_the_key() {
    let reactor = reactor();
    let legacy = json!({
        "html_attributions": [],
        "results": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
        "status": "OK"
    })
    .to_string();
    let server = FakeServer::start(&reactor, move |_| Some((200, legacy.clone())));
    // A key with characters that must be encoded.
    let key = "sekrit+Key/42=";
    let config = PlacesConfig {
        api_key: Some(format!("{key}\n")),
        ..server.config(PlacesApi::GoogleLegacy, LEGACY_PATH)
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    let answer = wait(&reactor, client.nearby(34.06893, -118.445127, 10_000.0, 2));

    let seen = server.only_request();
    assert_eq!(seen.method, "GET");
    let (path, query) = seen.target.split_once('?').expect("a query");
    assert_eq!(path, LEGACY_PATH);
    assert!(!query.contains('+'), "{query}");
    let params: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('=').unwrap())
        .collect();
    assert_eq!(
        params,
        [
            ("location", "34.06893,-118.445127"),
            ("radius", "10000"),
            ("key", "sekrit%2BKey%2F42%3D"),
        ]
    );

    assert_eq!(answer.status, "OK");
    assert_eq!(names(&parse(&answer)), ["A", "B"]);
    assert!(answer.summary.contains(&format!(
        "places google-legacy GET https://127.0.0.1:{}{LEGACY_PATH}?location=34.06893,-118.445127&radius=10000 -> OK, 2 results",
        server.addr.port()
    )), "{}", answer.summary);
    assert!(!answer.summary.contains("key="), "{}", answer.summary);
    assert_no_key(&answer, key);
    assert_no_key(&answer, "sekrit%2BKey");
}

#[test]
fn google_legacy_status_passes_through() {
    let reactor = reactor();
    let denied = json!({
        "error_message": format!("The provided API key {KEY} is invalid."),
        "html_attributions": [],
        "results": [],
        "status": "REQUEST_DENIED"
    })
    .to_string();
    let server = FakeServer::start(&reactor, move |_| Some((200, denied.clone())));
    let client = PlacesClient::new(
        &reactor,
        server.config(PlacesApi::GoogleLegacy, LEGACY_PATH),
    )
    .unwrap();
    let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 100.0, 5));
    let message = assert_error(&answer, "REQUEST_DENIED");
    assert_eq!(message, "The provided API key REDACTED is invalid.");
    assert_no_key(&answer, KEY);
}

// ----- failures ---------------------------------------------------------------

/// Runs on a thread of its own: a test calls it several times, and its
/// reactor (kept alive by its open connections) is one per thread.
fn error_case(status: u16, body: &str, expected: &str) -> String {
    let (body, expected) = (body.to_string(), expected.to_string());
    std::thread::spawn(move || {
        let reactor = reactor();
        let server = FakeServer::start(&reactor, move |_| Some((status, body.clone())));
        let client =
            PlacesClient::new(&reactor, server.config(PlacesApi::Google, NEW_PATH)).unwrap();
        let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 5));
        assert_no_key(&answer, KEY);
        assert_error(&answer, &expected)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn forbidden_is_request_denied() {
    let body = json!({"error": {
        "code": 403,
        "message": format!("API key {KEY} not valid. Please pass a valid API key."),
        "status": "PERMISSION_DENIED"
    }})
    .to_string();
    let message = error_case(403, &body, "REQUEST_DENIED");
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(
        message.contains("PERMISSION_DENIED: API key REDACTED not valid"),
        "{message}"
    );
    // Without a Google error body, by the HTTP status alone.
    error_case(403, "Forbidden", "REQUEST_DENIED");
    error_case(401, "", "REQUEST_DENIED");
}

#[test]
fn too_many_requests_is_over_query_limit() {
    let message = error_case(429, "slow down", "OVER_QUERY_LIMIT");
    assert!(message.contains("HTTP 429"), "{message}");
    let body =
        r#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}"#;
    error_case(429, body, "OVER_QUERY_LIMIT");
}

#[test]
fn other_http_errors() {
    let body =
        r#"{"error": {"code": 400, "message": "Invalid radius", "status": "INVALID_ARGUMENT"}}"#;
    error_case(400, body, "INVALID_REQUEST");
    error_case(500, "oops", "UNKNOWN_ERROR");
    error_case(404, "<html>not here</html>", "UNKNOWN_ERROR");
}

#[test]
fn bad_json_is_unknown_error() {
    let message = error_case(200, "{\"places\": [", "UNKNOWN_ERROR");
    assert!(message.contains("invalid JSON"), "{message}");
    let message = error_case(200, "[1, 2]", "UNKNOWN_ERROR");
    assert!(message.contains("unexpected JSON"), "{message}");
}

#[test]
fn connection_refused_is_unknown_error() {
    let reactor = reactor();
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = PlacesConfig {
        api: PlacesApi::Google,
        url: Some(format!("https://127.0.0.1:{port}{NEW_PATH}")),
        api_key: Some(KEY.to_string()),
        ..PlacesConfig::default()
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 5));
    let message = assert_error(&answer, "UNKNOWN_ERROR");
    assert!(message.contains("connect"), "{message}");
    assert_no_key(&answer, KEY);
}

#[test]
fn untrusted_certificate_is_unknown_error() {
    let reactor = reactor();
    let server = FakeServer::start(&reactor, |_| Some((200, google_places())));
    let config = PlacesConfig {
        extra_ca_pem: None,
        ..server.config(PlacesApi::Google, NEW_PATH)
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 5));
    let message = assert_error(&answer, "UNKNOWN_ERROR");
    assert!(message.contains("TLS"), "{message}");
    assert!(server.seen.borrow().is_empty());
}

#[test]
fn a_server_that_never_answers_times_out() {
    let reactor = reactor();
    let server = FakeServer::start(&reactor, |_| None);
    let config = PlacesConfig {
        timeout: Duration::from_millis(300),
        ..server.config(PlacesApi::Google, NEW_PATH)
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    let answer = wait(&reactor, client.nearby(ROYCE.0, ROYCE.1, 1000.0, 5));
    let message = assert_error(&answer, "UNKNOWN_ERROR");
    assert!(message.contains("timed out after 300 ms"), "{message}");
    assert_eq!(server.seen.borrow().len(), 1);
    assert_no_key(&answer, KEY);
}

#[test]
fn configuration_errors() {
    let reactor = reactor();
    let no_key = PlacesConfig {
        api: PlacesApi::Google,
        ..PlacesConfig::default()
    };
    assert!(matches!(
        PlacesClient::new(&reactor, no_key),
        Err(PlacesError::MissingKey(PlacesApi::Google))
    ));
    let blank_key = PlacesConfig {
        api: PlacesApi::GoogleLegacy,
        api_key: Some(" \n".to_string()),
        ..PlacesConfig::default()
    };
    assert!(matches!(
        PlacesClient::new(&reactor, blank_key),
        Err(PlacesError::MissingKey(PlacesApi::GoogleLegacy))
    ));
    assert!(matches!(
        PlacesClient::new(&reactor, PlacesConfig::default()),
        Err(PlacesError::MissingUrl)
    ));
    let bad_url = PlacesConfig {
        url: Some("ftp://example.com/".to_string()),
        ..PlacesConfig::default()
    };
    assert!(matches!(
        PlacesClient::new(&reactor, bad_url),
        Err(PlacesError::InvalidUrl(_))
    ));
    let bad_ca = PlacesConfig {
        url: Some("https://127.0.0.1:1/".to_string()),
        extra_ca_pem: Some(b"not a certificate".to_vec()),
        ..PlacesConfig::default()
    };
    assert!(matches!(
        PlacesClient::new(&reactor, bad_ca),
        Err(PlacesError::Tls(_))
    ));
    // The key never shows in a config's Debug form.
    let with_key = PlacesConfig {
        api_key: Some(KEY.to_string()),
        ..PlacesConfig::default()
    };
    assert!(!format!("{with_key:?}").contains(KEY));
    assert_eq!(
        PlacesApi::from_name("Google-Legacy"),
        Some(PlacesApi::GoogleLegacy)
    );
    assert_eq!(PlacesApi::from_name("bing"), None);
}
