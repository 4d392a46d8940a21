//! How a server asks the Places service, and the answer when asking fails.

use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::defer::Deferred;

use crate::places::{PlacesAnswer, PlacesClient};

/// What a server asks "what is near this point?". Implemented for
/// [`PlacesClient`]; tests implement it with a fake. A lookup never fails:
/// every error is an answer whose JSON says so (a failed Deferred is still
/// answered, with `UNKNOWN_ERROR`).
pub trait PlacesLookup: 'static {
    /// Places within `radius_m` metres of (`lat`, `lon`), at most
    /// `max_results` of them.
    fn nearby(&self, lat: f64, lon: f64, radius_m: f64, max_results: u32)
        -> Deferred<PlacesAnswer>;
}

impl PlacesLookup for PlacesClient {
    fn nearby(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        max_results: u32,
    ) -> Deferred<PlacesAnswer> {
        PlacesClient::nearby(self, lat, lon, radius_m, max_results)
    }
}

impl<T: PlacesLookup + ?Sized> PlacesLookup for Rc<T> {
    fn nearby(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        max_results: u32,
    ) -> Deferred<PlacesAnswer> {
        (**self).nearby(lat, lon, radius_m, max_results)
    }
}

/// The answer when the Places Deferred failed (the client still gets one).
pub(super) fn failed_answer(message: &str) -> PlacesAnswer {
    let json = serde_json::json!({
        "html_attributions": [],
        "results": [],
        "status": "UNKNOWN_ERROR",
        "error_message": message,
    });
    PlacesAnswer {
        json: serde_json::to_string_pretty(&json).unwrap_or_default(),
        status: "UNKNOWN_ERROR".to_string(),
        elapsed: Duration::ZERO,
        summary: format!("the Places lookup failed: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_lookup_has_a_google_status_and_a_message() {
        let a = failed_answer("boom \"quoted\"");
        assert_eq!(a.status, "UNKNOWN_ERROR");
        let v: serde_json::Value = serde_json::from_str(&a.json).unwrap();
        assert_eq!(v["status"], "UNKNOWN_ERROR");
        assert_eq!(v["error_message"], "boom \"quoted\"");
        assert_eq!(v["results"], serde_json::json!([]));
    }
}
