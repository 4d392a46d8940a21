//! The Places service: "what is near this point?" for the herd's `WHATSAT`.
//!
//! - [`PlacesClient`]: asks one back-end ([`PlacesApi`]) and always answers
//!   with a [`PlacesAnswer`] in the shape of Google's legacy Nearby Search
//!   response, even when the back-end fails (then `status` says what
//!   happened and `error_message` says why).
//! - [`LocalPlacesService`]: a small HTTPS server on loopback speaking the
//!   legacy Nearby Search protocol over a built-in set of real places, for
//!   running without an API key and for tests.
//!
//! Inside: `convert` turns back-end answers into the legacy shape (sans-IO),
//! `search` answers the local service's queries (sans-IO), `dataset` holds
//! the local places, `geo` the great-circle distance, `query` the query
//! string and redaction helpers, and `server` the local HTTPS service: its
//! routes and limits on gyre's
//! [`HttpServer`](gyre_protocols::http::server::HttpServer).
//!
//! The API key is secret: it never appears in an answer's `summary` or
//! `error_message`, nor in a log line written here, nor in the `Debug` form
//! of a [`PlacesConfig`].
//!
//! ```no_run
//! use gyre_herd::places::{LocalPlacesService, PlacesClient};
//! use gyre_reactor::Reactor;
//! use std::time::Duration;
//!
//! let reactor = Reactor::new()?;
//! let local = LocalPlacesService::start(&reactor, "127.0.0.1:0".parse()?)?;
//! let client = PlacesClient::new(&reactor, local.client_config())?;
//! let answer = client.nearby(34.0729, -118.4422, 1000.0, 5);
//! reactor.run_until(|| answer.called(), Duration::from_secs(30))?;
//! if let Some(Ok(answer)) = answer.take_result() {
//!     println!("{}\n{}", answer.summary, answer.json);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod convert;
mod dataset;
mod geo;
mod query;
mod search;
mod server;

use std::error::Error;
use std::fmt;
use std::time::Duration;

pub use client::{PlacesAnswer, PlacesClient, PlacesStats};
pub use geo::{haversine_m, EARTH_RADIUS_M};
pub use server::{
    LocalPlacesOptions, LocalPlacesService, DEFAULT_PLACES_HANDSHAKE_TIMEOUT,
    DEFAULT_PLACES_HEAD_TIMEOUT, DEFAULT_PLACES_IDLE_TIMEOUT, DEFAULT_PLACES_MAX_CONNECTIONS,
};

/// The endpoint of Google Places API (New) Nearby Search.
pub const GOOGLE_NEARBY_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";

/// The endpoint of Google's legacy Nearby Search.
pub const GOOGLE_LEGACY_NEARBY_URL: &str =
    "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

/// The path of the legacy Nearby Search endpoint (also served by
/// [`LocalPlacesService`]).
pub const NEARBY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// Most results a Nearby Search returns (and most a `WHATSAT` may ask for).
pub const MAX_RESULTS: u32 = 20;

/// Largest search radius Google accepts, in metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// Which Places back-end a [`PlacesClient`] asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacesApi {
    /// A [`LocalPlacesService`] (or anything speaking the legacy protocol):
    /// `GET` with `location` and `radius`; the key is optional.
    Local,
    /// Google Places API (New): `POST` to [`GOOGLE_NEARBY_URL`]; needs a key.
    Google,
    /// Google's legacy Nearby Search: `GET` [`GOOGLE_LEGACY_NEARBY_URL`];
    /// needs a key.
    GoogleLegacy,
}

impl PlacesApi {
    /// The name used in logs and on the command line: `local`, `google`,
    /// `google-legacy`.
    pub fn name(&self) -> &'static str {
        match self {
            PlacesApi::Local => "local",
            PlacesApi::Google => "google",
            PlacesApi::GoogleLegacy => "google-legacy",
        }
    }

    /// Parses [`name`](Self::name)'s forms (case-insensitive).
    pub fn from_name(name: &str) -> Option<PlacesApi> {
        [PlacesApi::Local, PlacesApi::Google, PlacesApi::GoogleLegacy]
            .into_iter()
            .find(|api| api.name().eq_ignore_ascii_case(name))
    }

    /// The back-end's public endpoint (none for [`PlacesApi::Local`]).
    pub fn default_url(&self) -> Option<&'static str> {
        match self {
            PlacesApi::Local => None,
            PlacesApi::Google => Some(GOOGLE_NEARBY_URL),
            PlacesApi::GoogleLegacy => Some(GOOGLE_LEGACY_NEARBY_URL),
        }
    }
}

impl fmt::Display for PlacesApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a [`PlacesClient`] reaches its back-end.
///
/// `Debug` shows whether a key is set, never the key.
#[derive(Clone)]
pub struct PlacesConfig {
    /// The back-end.
    pub api: PlacesApi,
    /// The full endpoint URL, overriding the back-end's public one (a proxy,
    /// a test server). Required for [`PlacesApi::Local`]. The query
    /// parameters of a `GET` are appended to it.
    pub url: Option<String>,
    /// Extra CA certificate(s), PEM, trusted besides the public roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The API key. Required for the Google back-ends.
    pub api_key: Option<String>,
    /// The whole request's time-out (connect, TLS, request, response).
    /// Default 10 s.
    pub timeout: Duration,
    /// Most Places requests in flight at once for this client (a value of 0
    /// is taken as 1); it is also the HTTP client's connection limit for
    /// the endpoint's host, so at most this many Places connections are
    /// open. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Most distinct requests waiting for one of the `max_in_flight` slots.
    /// Past it a lookup is answered at once, without a request, with status
    /// `OVER_QUERY_LIMIT`; this is logged (a warning) once when the queue
    /// fills and once when it drains, with the count refused meanwhile.
    /// Lookups that share a request in flight or queued (same cache key)
    /// do not count. Default [`DEFAULT_MAX_QUEUED`].
    pub max_queued: usize,
    /// How long an `OK` or `ZERO_RESULTS` answer is kept and served again
    /// for the same cache key, on the reactor's clock; zero disables the
    /// cache (requests in flight are still shared). Default
    /// [`DEFAULT_CACHE_TTL`].
    ///
    /// The cache key is the location rounded to [`CACHE_GRID_DEG`] degrees
    /// (about 11 m of latitude), the radius rounded to whole metres, and
    /// the result bound; never the API key. The request sent is the first
    /// asker's exact one, and its answer serves every lookup with the same
    /// key.
    pub cache_ttl: Duration,
    /// Most answers cached; past it the oldest is evicted. Zero disables
    /// the cache. Default [`DEFAULT_CACHE_ENTRIES`].
    pub cache_entries: usize,
}

/// The default [`PlacesConfig::max_in_flight`]: 16.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// The default [`PlacesConfig::max_queued`]: 256.
pub const DEFAULT_MAX_QUEUED: usize = 256;
/// The default [`PlacesConfig::cache_ttl`]: 60 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// The default [`PlacesConfig::cache_entries`]: 4096.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
/// The grid, in degrees, that locations are rounded to for the answer
/// cache and for sharing requests in flight: 1e-4 degrees, about 11 m of
/// latitude (less of longitude away from the equator).
pub const CACHE_GRID_DEG: f64 = 1e-4;

impl Default for PlacesConfig {
    /// The local back-end without a URL, no CA, no key, a 10 s time-out,
    /// and the default limits and cache.
    fn default() -> Self {
        PlacesConfig {
            api: PlacesApi::Local,
            url: None,
            extra_ca_pem: None,
            api_key: None,
            timeout: Duration::from_secs(10),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

impl fmt::Debug for PlacesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlacesConfig")
            .field("api", &self.api)
            .field("url", &self.url)
            .field(
                "extra_ca_pem",
                &self.extra_ca_pem.as_ref().map(|pem| pem.len()),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_queued", &self.max_queued)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_entries", &self.cache_entries)
            .finish()
    }
}

/// Why a [`PlacesClient`] could not be made. (Requests never fail: see
/// [`PlacesClient::nearby`].)
#[derive(Debug)]
#[non_exhaustive]
pub enum PlacesError {
    /// A Google back-end without an API key (or with an empty one).
    MissingKey(PlacesApi),
    /// [`PlacesApi::Local`] without a URL.
    MissingUrl,
    /// The endpoint URL is not a valid `http`/`https` URL (the message never
    /// holds the key).
    InvalidUrl(String),
    /// The extra CA PEM is unusable, or the TLS configuration failed.
    Tls(gyre_protocols::tls::TlsError),
}

impl fmt::Display for PlacesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacesError::MissingKey(api) => {
                write!(f, "the {api} Places back-end needs an API key")
            }
            PlacesError::MissingUrl => {
                f.write_str("the local Places back-end needs a URL (--places-url)")
            }
            PlacesError::InvalidUrl(why) => write!(f, "invalid Places URL: {why}"),
            PlacesError::Tls(e) => write!(f, "Places TLS configuration: {e}"),
        }
    }
}

impl Error for PlacesError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PlacesError::Tls(e) => Some(e),
            _ => None,
        }
    }
}
