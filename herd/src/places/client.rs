//! [`PlacesClient`]: one Nearby Search request per call, always answered.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gyre_protocols::http::{
    HttpClient, HttpClientConfig, HttpError, PoolConfig, Request, Response, Url,
};
use gyre_protocols::tls::{client_config, parse_certs_pem};
use gyre_reactor::defer::{succeed, Cancelled, Deferred, Failure, Outcome, Resolver};
use gyre_reactor::Reactor;
use serde_json::{json, Value};

use super::convert::{
    error_answer, error_from_response, from_google_new, from_legacy, result_count, status_of,
    to_google_json, GOOGLE_FIELD_MASK, INVALID_REQUEST, OK, OVER_QUERY_LIMIT, UNKNOWN_ERROR,
    ZERO_RESULTS,
};
use super::query::{plain_number, redact, shorten, with_query};
use super::{PlacesApi, PlacesConfig, PlacesError, CACHE_GRID_DEG, MAX_RADIUS_M, MAX_RESULTS};

/// Largest response body accepted from a Places back-end.
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// Longest wait for a TCP connection (within the request's time-out).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to [`PlacesClient::nearby`]: always there, even when the
/// back-end failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacesAnswer {
    /// The answer in the shape of Google's legacy Nearby Search response
    /// (`html_attributions`, `results`, `status`, and `error_message` on
    /// failure), at most the asked number of results, pretty-printed as
    /// Google does (three-space indents), without a trailing newline.
    pub json: String,
    /// The answer's `status`: `OK`, `ZERO_RESULTS`, `INVALID_REQUEST`,
    /// `REQUEST_DENIED`, `OVER_QUERY_LIMIT`, `UNKNOWN_ERROR`, or what a
    /// legacy back-end said.
    pub status: String,
    /// From the call to the answer.
    pub elapsed: Duration,
    /// One line for the server log: back-end, method and URL (without the
    /// key), status, result count, duration, and the error if any. Never
    /// contains the API key.
    pub summary: String,
}

/// Asks a Places back-end what is near a point: a cheap `Clone`, `!Send`
/// handle (clones share one HTTP client and its keep-alive pool).
///
/// | [`PlacesApi`] | request |
/// |---|---|
/// | `Google` | `POST` JSON to the endpoint, headers `X-Goog-Api-Key` and `X-Goog-FieldMask` |
/// | `GoogleLegacy` | `GET endpoint?location=LAT,LNG&radius=METRES&key=KEY` |
/// | `Local` | as `GoogleLegacy`, with the key only if one is configured |
#[derive(Clone)]
pub struct PlacesClient {
    inner: Rc<Inner>,
}

struct Inner {
    reactor: Reactor,
    http: HttpClient,
    api: PlacesApi,
    endpoint: String,
    key: Option<String>,
    timeout: Duration,
    max_in_flight: usize,
    max_queued: usize,
    cache_ttl: Duration,
    cache_entries: usize,
    limiter: RefCell<Limiter>,
}

/// Counters of a [`PlacesClient`], for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacesStats {
    /// HTTP requests sent to the back-end.
    pub requests: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Lookups that joined a request already in flight or queued.
    pub shared: u64,
    /// Lookups answered `OVER_QUERY_LIMIT` because the queue was full.
    pub refused: u64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests queued now.
    pub queued: usize,
    /// Answers cached now (some may have expired).
    pub cached: usize,
}

/// What identifies a lookup for the cache and for sharing: the location
/// rounded to [`CACHE_GRID_DEG`], the radius to whole metres, the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    lat: i64,
    lon: i64,
    radius_m: i64,
    max: usize,
}

impl CacheKey {
    fn new(lat: f64, lon: f64, radius_m: f64, max: usize) -> CacheKey {
        // Finite and in range (checked by `plan`), so the casts cannot
        // overflow.
        CacheKey {
            lat: (lat / CACHE_GRID_DEG).round() as i64,
            lon: (lon / CACHE_GRID_DEG).round() as i64,
            radius_m: radius_m.round() as i64,
            max,
        }
    }
}

/// One lookup waiting for a shared request's answer.
struct Waiter {
    resolver: Resolver<PlacesAnswer>,
    started: Instant,
}

/// One request, queued or in flight, and every lookup waiting for it.
struct Flight {
    /// The request, until it is sent.
    planned: Option<Planned>,
    max: usize,
    waiters: Vec<Waiter>,
}

struct Cached {
    answer: PlacesAnswer,
    expires: Instant,
    seq: u64,
}

/// The cap on requests in flight, the queue, and the cache.
#[derive(Default)]
struct Limiter {
    in_flight: usize,
    queue: VecDeque<CacheKey>,
    flights: HashMap<CacheKey, Flight>,
    cache: HashMap<CacheKey, Cached>,
    /// Cache insertion order (with each entry's `seq`; stale pairs are
    /// skipped), oldest first.
    order: VecDeque<(u64, CacheKey)>,
    seq: u64,
    /// Refusals since the queue last filled (`None`: not full now).
    episode: Option<u64>,
    stats: PlacesStats,
}

impl fmt::Debug for PlacesClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlacesClient")
            .field("api", &self.inner.api)
            .field("endpoint", &self.endpoint())
            .field("key", &self.inner.key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// A lookup waiting for a shared request, and its own Deferred: cancelling
/// that answers this lookup only, with `UNKNOWN_ERROR`.
fn new_waiter(started: Instant) -> (Waiter, Deferred<PlacesAnswer>) {
    let (resolver, deferred) = Deferred::new();
    let answer = deferred.add_both(|outcome| {
        Ok(outcome.unwrap_or_else(|failure| {
            let message = if failure.is::<Cancelled>() {
                "the Places request was cancelled".to_string()
            } else {
                format!("the Places request failed: {failure}")
            };
            PlacesAnswer {
                json: to_google_json(&error_answer(UNKNOWN_ERROR, &message)),
                status: UNKNOWN_ERROR.to_string(),
                elapsed: Duration::ZERO,
                summary: message,
            }
        }))
    });
    (Waiter { resolver, started }, answer)
}

/// A request ready to send, and how to show it in logs.
struct Planned {
    request: Request,
    /// `METHOD url`, without the key.
    shown: String,
}

impl PlacesClient {
    /// A client for `config`'s back-end.
    ///
    /// Errors: a Google back-end without a key ([`PlacesError::MissingKey`]);
    /// [`PlacesApi::Local`] without a URL ([`PlacesError::MissingUrl`]); a
    /// malformed URL; an unusable extra CA. The key is trimmed of
    /// surrounding whitespace (a key file's newline).
    pub fn new(reactor: &Reactor, config: PlacesConfig) -> Result<PlacesClient, PlacesError> {
        let key = config
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        if config.api != PlacesApi::Local && key.is_none() {
            return Err(PlacesError::MissingKey(config.api));
        }
        let endpoint = match (&config.url, config.api.default_url()) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.to_string(),
            (None, None) => return Err(PlacesError::MissingUrl),
        };
        Url::parse(&endpoint)
            .map_err(|e| PlacesError::InvalidUrl(redact(&e.to_string(), key.as_deref())))?;
        let roots = match &config.extra_ca_pem {
            Some(pem) => parse_certs_pem(pem).map_err(PlacesError::Tls)?,
            None => Vec::new(),
        };
        let tls = client_config(&roots, &[b"http/1.1"]).map_err(PlacesError::Tls)?;
        let max_in_flight = config.max_in_flight.max(1);
        let http = HttpClient::with_config(
            reactor,
            HttpClientConfig {
                pool: PoolConfig {
                    max_connections_per_host: max_in_flight,
                    max_waiting_per_host: config.max_queued.max(max_in_flight),
                    ..PoolConfig::default()
                },
                max_body: MAX_BODY,
                connect_timeout: config.timeout.min(MAX_CONNECT_TIMEOUT),
                request_timeout: config.timeout,
                tls,
                ..HttpClientConfig::default()
            },
        );
        Ok(PlacesClient {
            inner: Rc::new(Inner {
                reactor: reactor.clone(),
                http,
                api: config.api,
                endpoint,
                key,
                timeout: config.timeout,
                max_in_flight,
                max_queued: config.max_queued,
                cache_ttl: config.cache_ttl,
                cache_entries: config.cache_entries,
                limiter: RefCell::new(Limiter::default()),
            }),
        })
    }

    /// The back-end.
    pub fn api(&self) -> &PlacesApi {
        &self.inner.api
    }

    /// The counters, and the requests in flight and queued now.
    pub fn stats(&self) -> PlacesStats {
        let limiter = self.inner.limiter.borrow();
        PlacesStats {
            in_flight: limiter.in_flight,
            queued: limiter.queue.len(),
            cached: limiter.cache.len(),
            ..limiter.stats
        }
    }

    /// The HTTP client the requests go through (its counters show the
    /// connections made).
    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The endpoint URL (with the key, should it hold one, redacted).
    pub fn endpoint(&self) -> String {
        redact(&self.inner.endpoint, self.inner.key.as_deref())
    }

    /// The places within `radius_m` metres of (`lat`, `lon`), at most
    /// `max_results` of them (taken into 1..=20).
    ///
    /// Never fails: every error (network, TLS, the time-out, a non-200
    /// answer, bad JSON, out-of-range arguments) becomes an answer with no
    /// results, a Google status (`UNKNOWN_ERROR`, `REQUEST_DENIED` for 401
    /// and 403, `OVER_QUERY_LIMIT` for 429, `INVALID_REQUEST`, ...) and an
    /// `error_message`. The Deferred fires within the configured time-out
    /// (plus a loop turn) of the request being sent. Cancelling it gives an
    /// `UNKNOWN_ERROR` answer (a request shared with other lookups goes on).
    ///
    /// Bounded (see [`PlacesConfig`]): an answer cached for the same key
    /// within the TTL is returned at once; a lookup with the key of a
    /// request in flight or queued shares it; otherwise a request is sent
    /// if fewer than `max_in_flight` are, else queued if fewer than
    /// `max_queued` wait, else the lookup is answered at once with
    /// `OVER_QUERY_LIMIT`.
    ///
    /// Arguments out of range (a latitude outside [-90, 90], a longitude
    /// outside [-180, 180], a radius outside [0, 50000], anything not
    /// finite) give an `INVALID_REQUEST` answer at once, without a request.
    pub fn nearby(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        max_results: u32,
    ) -> Deferred<PlacesAnswer> {
        let started = self.inner.reactor.clock().now();
        let max = max_results.clamp(1, MAX_RESULTS) as usize;
        let planned = match self.inner.plan(lat, lon, radius_m, max) {
            Ok(planned) => planned,
            Err(message) => {
                let shown = format!("{} (not sent)", self.endpoint());
                let answer = error_answer(INVALID_REQUEST, &message);
                return succeed(self.inner.answer(&shown, answer, Some(&message), started));
            }
        };
        let key = CacheKey::new(lat, lon, radius_m, max);
        let inner = &self.inner;
        let mut limiter = inner.limiter.borrow_mut();
        // 1. A fresh cached answer.
        match limiter.cache.get(&key) {
            Some(cached) if started < cached.expires => {
                let mut answer = cached.answer.clone();
                limiter.stats.cache_hits += 1;
                drop(limiter);
                answer.elapsed = Duration::ZERO;
                answer.summary = format!("{} (cached)", answer.summary);
                log::debug!("{}", answer.summary);
                return succeed(answer);
            }
            Some(_) => {
                limiter.cache.remove(&key);
            }
            None => {}
        }
        // 2. A request in flight or queued for the same key.
        if let Some(flight) = limiter.flights.get_mut(&key) {
            let (waiter, answer) = new_waiter(started);
            flight.waiters.push(waiter);
            limiter.stats.shared += 1;
            return answer;
        }
        // 3. A new request, sent now or queued; 4. or refused.
        let send_now = limiter.in_flight < inner.max_in_flight;
        if !send_now && limiter.queue.len() >= inner.max_queued {
            limiter.stats.refused += 1;
            let first = match &mut limiter.episode {
                Some(n) => {
                    *n += 1;
                    false
                }
                episode @ None => {
                    *episode = Some(1);
                    true
                }
            };
            drop(limiter);
            if first {
                log::warn!(
                    "places: {} requests in flight and {} queued (the limits): \
                     answering OVER_QUERY_LIMIT until the queue drains",
                    inner.max_in_flight,
                    inner.max_queued
                );
            }
            let message = format!(
                "too many Places requests in flight ({}) and queued ({}); try again later",
                inner.max_in_flight, inner.max_queued
            );
            let shown = format!("{} (not sent)", self.endpoint());
            let refused = error_answer(OVER_QUERY_LIMIT, &message);
            return succeed(inner.answer(&shown, refused, Some(&message), started));
        }
        let (waiter, answer) = new_waiter(started);
        limiter.flights.insert(
            key,
            Flight {
                planned: Some(planned),
                max,
                waiters: vec![waiter],
            },
        );
        if send_now {
            drop(limiter);
            Inner::send(inner, key);
        } else {
            limiter.queue.push_back(key);
        }
        answer
    }
}

impl Inner {
    /// Sends the request of `key`'s flight (a slot is free).
    fn send(self: &Rc<Self>, key: CacheKey) {
        let (planned, max) = {
            let mut limiter = self.limiter.borrow_mut();
            let Some(flight) = limiter.flights.get_mut(&key) else {
                return;
            };
            let Some(planned) = flight.planned.take() else {
                return;
            };
            let max = flight.max;
            limiter.in_flight += 1;
            limiter.stats.requests += 1;
            (planned, max)
        };
        let started = self.reactor.clock().now();
        let inner = Rc::clone(self);
        let shown = planned.shown;
        drop(self.http.request(planned.request).add_both(move |outcome| {
            let answer = inner.finish(&shown, outcome, max, started);
            inner.landed(key, answer);
            Ok(())
        }));
    }

    /// A request's answer arrived: cache it, send the next queued requests,
    /// answer its waiters.
    fn landed(self: &Rc<Self>, key: CacheKey, answer: PlacesAnswer) {
        let now = self.reactor.clock().now();
        let waiters = {
            let mut limiter = self.limiter.borrow_mut();
            limiter.in_flight = limiter.in_flight.saturating_sub(1);
            let waiters = limiter
                .flights
                .remove(&key)
                .map(|f| f.waiters)
                .unwrap_or_default();
            let cacheable = answer.status == OK || answer.status == ZERO_RESULTS;
            if cacheable && !self.cache_ttl.is_zero() && self.cache_entries > 0 {
                self.cache_put(&mut limiter, key, answer.clone(), now);
            }
            waiters
        };
        // The freed slot goes to the next queued request.
        loop {
            let next = {
                let mut limiter = self.limiter.borrow_mut();
                if limiter.in_flight >= self.max_in_flight {
                    None
                } else {
                    limiter.queue.pop_front()
                }
            };
            match next {
                Some(next) => Inner::send(self, next),
                None => break,
            }
        }
        let drained = {
            let mut limiter = self.limiter.borrow_mut();
            if limiter.queue.len() < self.max_queued {
                limiter.episode.take()
            } else {
                None
            }
        };
        if let Some(refused) = drained {
            log::warn!(
                "places: the request queue has room again; {refused} lookup(s) were \
                 answered OVER_QUERY_LIMIT while it was full"
            );
        }
        for waiter in waiters {
            let mut answer = answer.clone();
            answer.elapsed = now.saturating_duration_since(waiter.started);
            let _ = waiter.resolver.resolve(Ok(answer));
        }
    }

    /// Caches `answer` under `key`, evicting the oldest past the bound.
    fn cache_put(&self, limiter: &mut Limiter, key: CacheKey, answer: PlacesAnswer, now: Instant) {
        limiter.seq += 1;
        let seq = limiter.seq;
        limiter.cache.insert(
            key,
            Cached {
                answer,
                expires: now + self.cache_ttl,
                seq,
            },
        );
        limiter.order.push_back((seq, key));
        while limiter.cache.len() > self.cache_entries {
            let Some((seq, old)) = limiter.order.pop_front() else {
                break;
            };
            if limiter.cache.get(&old).is_some_and(|c| c.seq == seq) {
                limiter.cache.remove(&old);
            }
        }
        // Drop stale order pairs (of expired or replaced entries) now and
        // then, so the order stays within about twice the bound.
        if limiter.order.len() > 2 * self.cache_entries + 16 {
            let Limiter { order, cache, .. } = limiter;
            order.retain(|(seq, k)| cache.get(k).is_some_and(|c| c.seq == *seq));
        }
    }

    /// The request for a search, or why the arguments are unusable.
    fn plan(&self, lat: f64, lon: f64, radius_m: f64, max: usize) -> Result<Planned, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("invalid latitude {lat}: expected -90 to 90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("invalid longitude {lon}: expected -180 to 180"));
        }
        if !radius_m.is_finite() || !(0.0..=MAX_RADIUS_M).contains(&radius_m) {
            return Err(format!(
                "invalid radius {radius_m} m: expected 0 to {MAX_RADIUS_M}"
            ));
        }
        // Millimetres are plenty, and spare Google float noise such as
        // 10587.126299999999.
        let radius_m = (radius_m * 1000.0).round() / 1000.0;
        Ok(match self.api {
            PlacesApi::Google => {
                let body = json!({
                    "maxResultCount": max,
                    "locationRestriction": {
                        "circle": {
                            "center": {"latitude": lat, "longitude": lon},
                            "radius": radius_m,
                        }
                    }
                });
                let mut request = Request::post(self.endpoint.as_str())
                    .header("Accept", "application/json")
                    .header("X-Goog-FieldMask", GOOGLE_FIELD_MASK);
                if let Some(key) = &self.key {
                    request = request.header("X-Goog-Api-Key", key);
                }
                Planned {
                    request: request.json(&body),
                    shown: format!("POST {}", redact(&self.endpoint, self.key.as_deref())),
                }
            }
            PlacesApi::GoogleLegacy | PlacesApi::Local => {
                let location = format!("{},{}", plain_number(lat, 7), plain_number(lon, 7));
                let radius = plain_number(radius_m, 3);
                let mut params = vec![("location", location.as_str()), ("radius", radius.as_str())];
                let shown = with_query(&self.endpoint, &params);
                if let Some(key) = &self.key {
                    params.push(("key", key.as_str()));
                }
                let url = with_query(&self.endpoint, &params);
                Planned {
                    request: Request::get(url).header("Accept", "application/json"),
                    shown: format!("GET {}", redact(&shown, self.key.as_deref())),
                }
            }
        })
    }

    /// The answer for what the HTTP request came to.
    fn finish(
        &self,
        shown: &str,
        outcome: Outcome<Response>,
        max: usize,
        started: Instant,
    ) -> PlacesAnswer {
        let (answer, error) = match self.convert(outcome, max) {
            Ok(answer) => {
                let error = answer
                    .get("error_message")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                (answer, error)
            }
            Err((status, message)) => (error_answer(status, &message), Some(message)),
        };
        self.answer(shown, answer, error.as_deref(), started)
    }

    /// The legacy answer, or a status and message for an error answer.
    fn convert(
        &self,
        outcome: Outcome<Response>,
        max: usize,
    ) -> Result<Value, (&'static str, String)> {
        let response = outcome.map_err(|f| (UNKNOWN_ERROR, self.describe_failure(&f)))?;
        if response.status != 200 {
            return Err(error_from_response(
                response.status,
                &response.reason,
                &response.body,
            ));
        }
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            (
                UNKNOWN_ERROR,
                format!("the Places service answered with invalid JSON: {e}"),
            )
        })?;
        let converted = match self.api {
            PlacesApi::Google => from_google_new(&body, max),
            PlacesApi::GoogleLegacy | PlacesApi::Local => from_legacy(body, max),
        };
        converted.map_err(|why| {
            (
                UNKNOWN_ERROR,
                format!("the Places service answered with unexpected JSON: {why}"),
            )
        })
    }

    /// What went wrong, for an `error_message`.
    fn describe_failure(&self, failure: &Failure) -> String {
        if let Some(e) = failure.downcast_ref::<HttpError>() {
            return match e {
                HttpError::TimedOut(_) => format!(
                    "the Places request timed out after {} ms",
                    self.timeout.as_millis()
                ),
                other => format!("the Places request failed: {other}"),
            };
        }
        if failure.is::<Cancelled>() {
            return "the Places request was cancelled".to_string();
        }
        format!("the Places request failed: {failure}")
    }

    /// The final answer: the key redacted from its `error_message`, the
    /// JSON formatted, the summary written.
    fn answer(
        &self,
        shown: &str,
        mut answer: Value,
        error: Option<&str>,
        started: Instant,
    ) -> PlacesAnswer {
        let key = self.key.as_deref();
        if let Some(Value::String(message)) = answer.get_mut("error_message") {
            *message = redact(message, key);
        }
        let status = status_of(&answer);
        let elapsed = self
            .reactor
            .clock()
            .now()
            .saturating_duration_since(started);
        let count = result_count(&answer);
        let mut summary = format!(
            "places {} {shown} -> {status}, {count} result{} in {} ms",
            self.api,
            if count == 1 { "" } else { "s" },
            elapsed.as_millis()
        );
        if let Some(error) = error {
            summary.push_str(": ");
            summary.push_str(&shorten(error, 300));
        }
        // One line, and never the key.
        let summary = redact(&summary, key).replace(['\r', '\n'], " ");
        log::debug!("{summary}");
        PlacesAnswer {
            json: to_google_json(&answer),
            status,
            elapsed,
            summary,
        }
    }
}
