//! [`PlacesClient`]: one Nearby Search request per call, always answered.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gyre_protocols::http::{HttpClient, HttpClientConfig, HttpError, Request, Response, Url};
use gyre_protocols::tls::{client_config, parse_certs_pem};
use gyre_reactor::defer::{succeed, Cancelled, Deferred, Failure, Outcome};
use gyre_reactor::Reactor;
use serde_json::{json, Value};

use super::convert::{
    error_answer, error_from_response, from_google_new, from_legacy, result_count, status_of,
    to_google_json, GOOGLE_FIELD_MASK, INVALID_REQUEST, UNKNOWN_ERROR,
};
use super::query::{plain_number, redact, shorten, with_query};
use super::{PlacesApi, PlacesConfig, PlacesError, MAX_RADIUS_M, MAX_RESULTS};

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
        let http = HttpClient::with_config(
            reactor,
            HttpClientConfig {
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
            }),
        })
    }

    /// The back-end.
    pub fn api(&self) -> &PlacesApi {
        &self.inner.api
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
    /// (plus a loop turn). Cancelling it gives an `UNKNOWN_ERROR` answer.
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
        let inner = Rc::clone(&self.inner);
        let shown = planned.shown;
        self.inner
            .http
            .request(planned.request)
            .add_both(move |outcome| Ok(inner.finish(&shown, outcome, max, started)))
    }
}

impl Inner {
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
