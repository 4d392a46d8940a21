//! Peer links over mutual TLS (issue 10, Done when 1 and 2), in one process
//! over real loopback sockets with certificates from `gyre_herd::pki`:
//! impostors are refused (a plain `PEER` claim, certificates for another
//! name, from another CA, or expired, and a dialled server presenting the
//! wrong certificate), and the right certificates link in both dialling
//! orders and again after either side restarts. Every wait is on an event
//! with a generous bound; nothing sleeps.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::pki::{HerdCa, ServerKeys};
use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PeerTls, PlacesLookup, ServerLog, ServerOptions};
use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
use gyre_protocols::tls::{
    mutual_tls_client_config, mutual_tls_server_config, parse_certs_pem, parse_key_pem,
    start_tls_client, start_tls_server, ClientConfig, ServerConfig, StartTls, TlsTransport,
};
use gyre_reactor::defer::Deferred;
use gyre_reactor::{factory_fn, ConnectionLost, Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(20);

struct NoPlaces;
impl PlacesLookup for NoPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        Deferred::new().1
    }
}

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap()
}

#[track_caller]
fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    assert!(
        reactor.run_until(done, WAIT).unwrap(),
        "timed out waiting for {what}"
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pair_config() -> HerdConfig {
    HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0},
                        {"name": "Ball", "host": "127.0.0.1", "port": 0}],
            "links": [["Alford", "Ball"]]}"#,
    )
    .unwrap()
}

/// Binds `name` with credentials from `ca` (a memory log), records its port.
fn bind(reactor: &Reactor, ca: &HerdCa, config: &mut HerdConfig, name: &str) -> HerdServer {
    let options = ServerOptions {
        peer_tls: PeerTls::Verified(ca.credentials(name).unwrap()),
        ..ServerOptions::default()
    };
    let server = HerdServer::bind(
        reactor,
        name,
        config,
        NoPlaces,
        ServerLog::memory(),
        options,
    )
    .unwrap();
    config.set_port(name, server.local_addr().port()).unwrap();
    server
}

/// Alford and Ball, linked.
fn linked_pair(reactor: &Reactor, ca: &HerdCa) -> (HerdConfig, HerdServer, HerdServer) {
    let mut config = pair_config();
    let alford = bind(reactor, ca, &mut config, "Alford");
    let ball = bind(reactor, ca, &mut config, "Ball");
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(reactor, "the link", || {
        alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
    });
    (config, alford, ball)
}

/// What a test client received.
#[derive(Clone, Default)]
struct Seen {
    data: Rc<RefCell<Vec<u8>>>,
    closed: Rc<Cell<bool>>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.borrow()).into_owned()
    }
}

struct Plain(Seen);
impl Protocol for Plain {
    fn data_received(&mut self, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.closed.set(true);
    }
}

fn plain_client(reactor: &Reactor, addr: SocketAddr) -> (Transport, Seen) {
    let seen = Seen::default();
    let d = reactor.connect_protocol(addr, Plain(seen.clone()));
    wait(reactor, "connected", || d.called());
    (d.take_result().unwrap().unwrap(), seen)
}

/// Reports `client` at `server` and waits for `witness` to store it.
fn report(reactor: &Reactor, server: &HerdServer, client: &str, witness: &HerdServer) {
    let (t, _seen) = plain_client(reactor, server.local_addr());
    t.write(format!("IAMAT {client} +34.068930-118.445127 {}.5\n", now_secs()).as_bytes());
    wait(
        reactor,
        &format!("{client} to reach {}", witness.name()),
        || witness.location(client.as_bytes()).is_some(),
    );
    t.lose_connection();
}

#[test]
fn a_plain_client_claiming_to_be_a_neighbour_gets_question_marks_and_changes_nothing() {
    let reactor = reactor();
    let ca = HerdCa::generate().unwrap();
    let (_config, alford, ball) = linked_pair(&reactor, &ca);
    // A location to steal: the old code sent the whole store after PEER.
    report(&reactor, &ball, "kiwi", &alford);

    let (t, seen) = plain_client(&reactor, alford.local_addr());
    let at = format!("AT Ball +0.000000001 evil +10+10 {}.0", now_secs());
    t.write(format!("PEER Ball\n{at}\n").as_bytes());
    let expected = format!("? PEER Ball\n? {at}\n");
    wait(&reactor, "the answers", || {
        seen.data.borrow().len() >= expected.len() || seen.closed.get()
    });
    assert_eq!(seen.text(), expected, "no store dump, only '? ' answers");
    // Still a client connection: a marker reported on it reaches Ball after
    // anything flooded before it.
    t.write(format!("IAMAT marker +1+1 {}.0\n", now_secs()).as_bytes());
    wait(&reactor, "the marker at Ball", || {
        ball.location(b"marker").is_some()
    });
    assert!(alford.location(b"evil").is_none(), "not stored");
    assert!(ball.location(b"evil").is_none(), "not flooded");
    assert_eq!(alford.links_up(), ["Ball"], "the real link stays up");
    assert_eq!(ball.links_up(), ["Alford"]);
    assert!(alford
        .log()
        .contains("PEER not followed by a TLS handshake: not a verified link"));
    assert!(alford.log().contains("AT from a client"));

    // A claim and then nothing but EOF: answered, then closed.
    let (t, seen) = plain_client(&reactor, alford.local_addr());
    t.write(b"PEER Ball\n");
    t.half_close();
    wait(&reactor, "the close", || seen.closed.get());
    assert_eq!(seen.text(), "? PEER Ball\n");
    assert_eq!(alford.links_up(), ["Ball"]);
}

fn client_config_for(trusted: &HerdCa, keys: &ServerKeys) -> Arc<ClientConfig> {
    let chain = parse_certs_pem(keys.cert_pem.as_bytes()).unwrap();
    let key = parse_key_pem(keys.key_pem.as_bytes()).unwrap();
    mutual_tls_client_config(&[trusted.cert_der().unwrap()], chain, key, &[]).unwrap()
}

/// An impostor dialling in: `PEER Ball`, TLS with its own certificate, then
/// an AT line (if the handshake lets it get that far).
struct Impostor {
    config: Arc<ClientConfig>,
    seen: Seen,
    at: String,
}

impl LineHandler for Impostor {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"PEER Ball");
        start_tls_client(ctx.transport(), "Alford", self.config.clone()).unwrap();
        ctx.send_line(self.at.as_bytes()); // held until the handshake is done
    }
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, line: &[u8]) {
        let mut data = self.seen.data.borrow_mut();
        data.extend_from_slice(line);
        data.push(b'\n');
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.seen.closed.set(true);
    }
}

#[test]
fn certificates_for_another_name_from_another_ca_or_expired_cannot_link() {
    let reactor = reactor();
    let ca = HerdCa::generate().unwrap();
    let (_config, alford, ball) = linked_pair(&reactor, &ca);
    report(&reactor, &alford, "kiwi", &ball);
    let other_ca = HerdCa::generate().unwrap();
    let year = |y: u64| UNIX_EPOCH + Duration::from_secs((y - 1970) * 365 * 86_400);
    let cases = [
        ("another name", ca.issue("Hamilton").unwrap()),
        ("another CA", other_ca.issue("Ball").unwrap()),
        (
            "expired",
            ca.issue_valid("Ball", year(2019), year(2020)).unwrap(),
        ),
    ];
    for (what, keys) in cases {
        let seen = Seen::default();
        let at = format!("AT Ball +0.000000001 evil +10+10 {}.0", now_secs());
        let protocol = StartTls::new(LineReceiver::new(Impostor {
            config: client_config_for(&ca, &keys),
            seen: seen.clone(),
            at,
        }))
        .with_reactor(&reactor);
        let _d = reactor.connect_protocol(alford.local_addr(), protocol);
        wait(&reactor, &format!("the {what} impostor closed"), || {
            seen.closed.get()
        });
        // At most the refusal of its PEER line (sent over TLS once its
        // certificate chained to the herd CA), never a stored location.
        let got = seen.text();
        assert!(got.is_empty() || got == "? PEER Ball\n", "{what}: {got:?}");
        assert_eq!(alford.links_up(), ["Ball"], "{what}: the real link stays");
    }
    assert!(alford
        .log()
        .contains("its certificate names [\"Hamilton\"], not \"Ball\""));
    report(&reactor, &ball, "marker", &alford);
    assert!(alford.location(b"evil").is_none());
    assert!(ball.location(b"evil").is_none());
    assert_eq!(ball.links_up(), ["Alford"]);
}

/// A listener pretending to be Ball with someone else's certificate.
struct FakeBall {
    config: Arc<ServerConfig>,
    seen: Seen,
}

impl LineHandler for FakeBall {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let t = ctx.transport().clone();
        let Some(tls) = t.backend::<TlsTransport>() else {
            return;
        };
        if tls.is_tls() {
            self.seen.data.borrow_mut().extend_from_slice(line);
            return;
        }
        start_tls_server(&t, self.config.clone()).unwrap();
        tls.push_back_received(&ctx.clear_line_buffer());
    }
}

#[test]
fn a_dialled_server_whose_certificate_names_someone_else_is_not_a_link() {
    let reactor = reactor();
    let ca = HerdCa::generate().unwrap();
    let hamilton = ca.issue("Hamilton").unwrap();
    let config = {
        let chain = parse_certs_pem(hamilton.cert_pem.as_bytes()).unwrap();
        let key = parse_key_pem(hamilton.key_pem.as_bytes()).unwrap();
        mutual_tls_server_config(chain, key, &[ca.cert_der().unwrap()], &[]).unwrap()
    };
    let seen = Seen::default();
    let s = seen.clone();
    let r = reactor.clone();
    let fake = reactor
        .listen_tcp(
            "127.0.0.1:0".parse().unwrap(),
            factory_fn(move |_| {
                Some(
                    StartTls::new(LineReceiver::new(FakeBall {
                        config: config.clone(),
                        seen: s.clone(),
                    }))
                    .with_reactor(&r),
                )
            }),
        )
        .unwrap();
    let mut config = pair_config();
    config.set_port("Ball", fake.local_addr().port()).unwrap();
    let alford = bind(&reactor, &ca, &mut config, "Alford");
    report(&reactor, &alford, "kiwi", &alford);
    alford.connect_neighbours(&config).unwrap();
    wait(&reactor, "the refusal in Alford's log", || {
        alford.log().contains("link with Ball? (") && alford.log().contains("not verified")
    });
    assert!(alford.links_up().is_empty());
    assert!(seen.data.borrow().is_empty(), "nothing of the store sent");
}

#[test]
fn the_right_certificates_link_in_both_dialling_orders_and_after_restarts() {
    let reactor = reactor();
    let ca = HerdCa::generate().unwrap();
    for ball_dials in [true, false] {
        let mut config = pair_config();
        let alford = bind(&reactor, &ca, &mut config, "Alford");
        let ball = bind(&reactor, &ca, &mut config, "Ball");
        // Only one side dials.
        if ball_dials {
            ball.connect_neighbours(&config).unwrap();
        } else {
            alford.connect_neighbours(&config).unwrap();
        }
        wait(&reactor, "the link", || {
            alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
        });
        report(&reactor, &alford, "from-alford", &ball);
        report(&reactor, &ball, "from-ball", &alford);
        assert!(alford.log().contains("verified neighbour Ball at"));
        alford.stop();
        ball.stop();
    }

    // Restarts: each side in turn stops and comes back on its port.
    let (mut config, mut alford, mut ball) = linked_pair(&reactor, &ca);
    for restart_ball in [true, false] {
        let (stopping, staying) = if restart_ball {
            (&mut ball, &alford)
        } else {
            (&mut alford, &ball)
        };
        let name = stopping.name().to_string();
        stopping.stop();
        wait(&reactor, "the link down", || staying.links_up().is_empty());
        let restarted = bind(&reactor, &ca, &mut config, &name);
        restarted.connect_neighbours(&config).unwrap();
        *stopping = restarted;
        wait(&reactor, "the link again", || {
            alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
        });
        let client = format!("after-{name}-restart");
        report(&reactor, &alford, &client, &ball);
        let client = format!("back-{name}-restart");
        report(&reactor, &ball, &client, &alford);
    }
}
