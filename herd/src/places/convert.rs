//! Answers in the shape of Google's legacy Nearby Search response, from
//! whatever a back-end said: sans-IO, so every case is a unit test.
//!
//! The legacy shape is
//! `{"html_attributions": [], "results": [...], "status": "OK"}`, plus
//! `error_message` when something went wrong. Its keys come out sorted,
//! which is also the order Google writes them in.

use serde_json::{json, Map, Value};

use super::query::shorten;

/// Results were found.
pub(crate) const OK: &str = "OK";
/// The search worked and found nothing.
pub(crate) const ZERO_RESULTS: &str = "ZERO_RESULTS";
/// The request was malformed (bad or missing parameters).
pub(crate) const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// The key is missing, invalid, or not allowed to use the API.
pub(crate) const REQUEST_DENIED: &str = "REQUEST_DENIED";
/// The quota is used up or the request rate is too high.
pub(crate) const OVER_QUERY_LIMIT: &str = "OVER_QUERY_LIMIT";
/// Anything else: network, TLS, time-out, server error, bad JSON.
pub(crate) const UNKNOWN_ERROR: &str = "UNKNOWN_ERROR";

/// The field mask asked of Places API (New): everything [`from_google_new`]
/// converts.
pub(crate) const GOOGLE_FIELD_MASK: &str = "places.id,places.displayName,\
places.formattedAddress,places.shortFormattedAddress,places.location,places.rating,\
places.userRatingCount,places.types,places.businessStatus,places.priceLevel,\
places.photos,places.iconMaskBaseUri,places.iconBackgroundColor,\
places.currentOpeningHours.openNow,places.plusCode";

/// A legacy-shaped answer for a failure: no results, `status`, and
/// `error_message`.
pub(crate) fn error_answer(status: &str, message: &str) -> Value {
    json!({
        "error_message": message,
        "html_attributions": [],
        "results": [],
        "status": status,
    })
}

/// The legacy answer for `results` (already cut to size): `OK`, or
/// `ZERO_RESULTS` when there are none.
pub(crate) fn results_answer(results: Vec<Value>) -> Value {
    let status = if results.is_empty() { ZERO_RESULTS } else { OK };
    json!({
        "html_attributions": [],
        "results": results,
        "status": status,
    })
}

/// Converts a Places API (New) `searchNearby` answer (`{"places": [...]}`,
/// or `{}` when nothing was found) to the legacy shape, keeping the first
/// `max` places. An error message if it is not that shape.
pub(crate) fn from_google_new(body: &Value, max: usize) -> Result<Value, String> {
    let Some(object) = body.as_object() else {
        return Err(format!(
            "expected a JSON object from Places API (New), got {}",
            kind(body)
        ));
    };
    let places = match object.get("places") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(places)) => places.as_slice(),
        Some(other) => {
            return Err(format!(
                "expected \"places\" to be an array, got {}",
                kind(other)
            ))
        }
    };
    let results = places
        .iter()
        .filter_map(Value::as_object)
        .take(max)
        .map(legacy_place)
        .collect();
    Ok(results_answer(results))
}

/// One Places API (New) place as a legacy result.
fn legacy_place(place: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    if let Some(location) = place.get("location") {
        let lat = location.get("latitude").and_then(Value::as_f64);
        let lng = location.get("longitude").and_then(Value::as_f64);
        if let (Some(lat), Some(lng)) = (lat, lng) {
            out.insert(
                "geometry".into(),
                json!({"location": {"lat": lat, "lng": lng}}),
            );
        }
    }
    if let Some(name) = place
        .get("displayName")
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
    {
        out.insert("name".into(), name.into());
    }
    if let Some(id) = place.get("id").and_then(Value::as_str) {
        out.insert("place_id".into(), id.into());
        out.insert("reference".into(), id.into());
    }
    for (from, to) in [
        ("rating", "rating"),
        ("userRatingCount", "user_ratings_total"),
    ] {
        if let Some(n) = place.get(from).filter(|v| v.is_number()) {
            out.insert(to.into(), n.clone());
        }
    }
    if let Some(types) = place.get("types").and_then(Value::as_array) {
        let types: Vec<Value> = types.iter().filter(|t| t.is_string()).cloned().collect();
        out.insert("types".into(), Value::Array(types));
    }
    let address = ["shortFormattedAddress", "formattedAddress"]
        .iter()
        .find_map(|field| place.get(*field).and_then(Value::as_str));
    if let Some(address) = address {
        out.insert("vicinity".into(), address.into());
    }
    for (from, to) in [
        ("businessStatus", "business_status"),
        ("iconMaskBaseUri", "icon_mask_base_uri"),
        ("iconBackgroundColor", "icon_background_color"),
    ] {
        if let Some(text) = place.get(from).and_then(Value::as_str) {
            out.insert(to.into(), text.into());
        }
    }
    if let Some(level) = place
        .get("priceLevel")
        .and_then(Value::as_str)
        .and_then(price_level)
    {
        out.insert("price_level".into(), level.into());
    }
    if let Some(open_now) = place
        .get("currentOpeningHours")
        .and_then(|h| h.get("openNow"))
        .and_then(Value::as_bool)
    {
        out.insert("opening_hours".into(), json!({"open_now": open_now}));
    }
    if let Some(photos) = place.get("photos").and_then(Value::as_array) {
        let photos: Vec<Value> = photos
            .iter()
            .filter_map(Value::as_object)
            .map(legacy_photo)
            .collect();
        out.insert("photos".into(), Value::Array(photos));
    }
    if let Some(plus) = place.get("plusCode").and_then(Value::as_object) {
        let mut code = Map::new();
        for (from, to) in [
            ("globalCode", "global_code"),
            ("compoundCode", "compound_code"),
        ] {
            if let Some(text) = plus.get(from).and_then(Value::as_str) {
                code.insert(to.into(), text.into());
            }
        }
        out.insert("plus_code".into(), Value::Object(code));
    }
    Value::Object(out)
}

/// A Places API (New) photo as a legacy photo: `name` stands in for the
/// legacy `photo_reference` (it is what the new Photo API takes).
fn legacy_photo(photo: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (from, to) in [("heightPx", "height"), ("widthPx", "width")] {
        if let Some(n) = photo.get(from).filter(|v| v.is_number()) {
            out.insert(to.into(), n.clone());
        }
    }
    if let Some(name) = photo.get("name").and_then(Value::as_str) {
        out.insert("photo_reference".into(), name.into());
    }
    let attributions: Vec<Value> = photo
        .get("authorAttributions")
        .and_then(Value::as_array)
        .map(|authors| {
            authors
                .iter()
                .filter_map(|a| {
                    let name = a.get("displayName").and_then(Value::as_str)?;
                    Some(match a.get("uri").and_then(Value::as_str) {
                        Some(uri) => format!("<a href=\"{uri}\">{name}</a>"),
                        None => name.to_string(),
                    })
                })
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    out.insert("html_attributions".into(), Value::Array(attributions));
    Value::Object(out)
}

/// The legacy `price_level` (0 to 4) of a Places API (New) `priceLevel`.
fn price_level(level: &str) -> Option<u8> {
    match level {
        "PRICE_LEVEL_FREE" => Some(0),
        "PRICE_LEVEL_INEXPENSIVE" => Some(1),
        "PRICE_LEVEL_MODERATE" => Some(2),
        "PRICE_LEVEL_EXPENSIVE" => Some(3),
        "PRICE_LEVEL_VERY_EXPENSIVE" => Some(4),
        _ => None,
    }
}

/// Checks a legacy Nearby Search answer and keeps its first `max` results;
/// its status and every other field pass through. An error message if it
/// is not that shape.
pub(crate) fn from_legacy(body: Value, max: usize) -> Result<Value, String> {
    let kind_of_body = kind(&body);
    let Value::Object(mut object) = body else {
        return Err(format!(
            "expected a JSON object from the Places service, got {kind_of_body}"
        ));
    };
    match object.get("status") {
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(format!(
                "expected \"status\" to be a string, got {}",
                kind(other)
            ))
        }
        None => return Err("the answer has no \"status\"".to_string()),
    }
    match object.get_mut("results") {
        None | Some(Value::Null) => {
            object.insert("results".into(), Value::Array(Vec::new()));
        }
        Some(Value::Array(results)) => results.truncate(max),
        Some(other) => {
            return Err(format!(
                "expected \"results\" to be an array, got {}",
                kind(other)
            ))
        }
    }
    object
        .entry("html_attributions")
        .or_insert_with(|| Value::Array(Vec::new()));
    Ok(Value::Object(object))
}

/// The legacy status for an HTTP error status code.
pub(crate) fn status_for_http(code: u16) -> &'static str {
    match code {
        400 => INVALID_REQUEST,
        401 | 403 => REQUEST_DENIED,
        429 => OVER_QUERY_LIMIT,
        _ => UNKNOWN_ERROR,
    }
}

/// The legacy status for a Google API error status (`PERMISSION_DENIED`,
/// ...), if one fits.
pub(crate) fn status_for_google_error(status: &str) -> Option<&'static str> {
    match status {
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => Some(REQUEST_DENIED),
        "RESOURCE_EXHAUSTED" => Some(OVER_QUERY_LIMIT),
        "INVALID_ARGUMENT" => Some(INVALID_REQUEST),
        _ => None,
    }
}

/// The legacy status and a message for a non-200 response: from a Google
/// error body (`{"error": {"code", "message", "status"}}`), a legacy body
/// (`{"status", "error_message"}`), or else the HTTP status code and an
/// excerpt of the body.
pub(crate) fn error_from_response(code: u16, reason: &str, body: &[u8]) -> (&'static str, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let mut status = None;
    let mut detail = None;
    if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
        // Places API (New) (and Google APIs in general).
        status = error
            .get("status")
            .and_then(Value::as_str)
            .and_then(status_for_google_error);
        detail = error.get("message").and_then(Value::as_str).map(|message| {
            match error.get("status").and_then(Value::as_str) {
                Some(google) => format!("{google}: {message}"),
                None => message.to_string(),
            }
        });
    } else if let Some(legacy) = parsed.as_ref().and_then(Value::as_object) {
        status = legacy
            .get("status")
            .and_then(Value::as_str)
            .and_then(known_legacy_error);
        detail = legacy
            .get("error_message")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let detail = detail.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "empty body".to_string()
        } else {
            text.to_string()
        }
    });
    let status = status.unwrap_or_else(|| status_for_http(code));
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    };
    let message = format!(
        "the Places service answered HTTP {code}{reason}: {}",
        shorten(&detail, 300)
    );
    (status, message)
}

/// A legacy error status worth passing on from a non-200 legacy body.
fn known_legacy_error(status: &str) -> Option<&'static str> {
    [
        INVALID_REQUEST,
        REQUEST_DENIED,
        OVER_QUERY_LIMIT,
        UNKNOWN_ERROR,
    ]
    .into_iter()
    .find(|known| *known == status)
}

/// The `status` of a legacy answer (`UNKNOWN_ERROR` if it has none).
pub(crate) fn status_of(answer: &Value) -> String {
    answer
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or(UNKNOWN_ERROR)
        .to_string()
}

/// How many results a legacy answer holds.
pub(crate) fn result_count(answer: &Value) -> usize {
    answer
        .get("results")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// What kind of JSON value `value` is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` as Google writes JSON: three-space indents and `"key" : value`,
/// keys in the map's (sorted) order, no trailing newline.
pub(crate) fn to_google_json(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    write_json(&mut out, value, 0);
    out
}

fn write_json(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                new_line(out, depth + 1);
                write_json(out, item, depth + 1);
            }
            new_line(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                new_line(out, depth + 1);
                // serde_json's escaping, through a string value.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(" : ");
                write_json(out, item, depth + 1);
            }
            new_line(out, depth);
            out.push('}');
        }
        // Scalars and empty containers: serde_json's compact form.
        other => out.push_str(&other.to_string()),
    }
}

fn new_line(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("   ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google_place() -> Value {
        json!({
            "id": "ChIJ-royce",
            "displayName": {"text": "Royce Hall", "languageCode": "en"},
            "formattedAddress": "340 Royce Dr, Los Angeles, CA 90095, USA",
            "shortFormattedAddress": "340 Royce Dr, Los Angeles",
            "location": {"latitude": 34.0729, "longitude": -118.4422},
            "rating": 4.8,
            "userRatingCount": 312,
            "types": ["performing_arts_theater", "point_of_interest", "establishment"],
            "businessStatus": "OPERATIONAL",
            "priceLevel": "PRICE_LEVEL_MODERATE",
            "iconMaskBaseUri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/generic_pinlet",
            "iconBackgroundColor": "#7B9EB0",
            "currentOpeningHours": {"openNow": true},
            "plusCode": {"globalCode": "85632HX5+5W", "compoundCode": "2HX5+5W Los Angeles"},
            "photos": [{
                "name": "places/ChIJ-royce/photos/abc",
                "widthPx": 4032,
                "heightPx": 3024,
                "authorAttributions": [{"displayName": "Jo", "uri": "https://maps.google.com/jo"}]
            }]
        })
    }

    #[test]
    fn converts_a_google_new_place() {
        let body = json!({"places": [google_place()]});
        let answer = from_google_new(&body, 5).unwrap();
        assert_eq!(
            answer,
            json!({
                "html_attributions": [],
                "status": "OK",
                "results": [{
                    "geometry": {"location": {"lat": 34.0729, "lng": -118.4422}},
                    "name": "Royce Hall",
                    "place_id": "ChIJ-royce",
                    "reference": "ChIJ-royce",
                    "rating": 4.8,
                    "user_ratings_total": 312,
                    "types": ["performing_arts_theater", "point_of_interest", "establishment"],
                    "vicinity": "340 Royce Dr, Los Angeles",
                    "business_status": "OPERATIONAL",
                    "price_level": 2,
                    "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/generic_pinlet",
                    "icon_background_color": "#7B9EB0",
                    "opening_hours": {"open_now": true},
                    "plus_code": {"global_code": "85632HX5+5W", "compound_code": "2HX5+5W Los Angeles"},
                    "photos": [{
                        "height": 3024,
                        "width": 4032,
                        "photo_reference": "places/ChIJ-royce/photos/abc",
                        "html_attributions": ["<a href=\"https://maps.google.com/jo\">Jo</a>"]
                    }]
                }]
            })
        );
    }

    #[test]
    fn google_new_minimal_and_partial_places() {
        // Only what is there is converted; formattedAddress stands in for
        // the short one; non-objects are skipped.
        let body = json!({"places": [
            {"id": "a", "formattedAddress": "1 Long St"},
            42,
            {"location": {"latitude": "x", "longitude": 1}, "types": ["a", 7]}
        ]});
        let answer = from_google_new(&body, 20).unwrap();
        assert_eq!(
            answer["results"],
            json!([
                {"place_id": "a", "reference": "a", "vicinity": "1 Long St"},
                {"types": ["a"]}
            ])
        );
        assert_eq!(answer["status"], "OK");
    }

    #[test]
    fn google_new_empty_is_zero_results() {
        for body in [json!({}), json!({"places": []}), json!({"places": null})] {
            let answer = from_google_new(&body, 5).unwrap();
            assert_eq!(
                answer,
                json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
            );
        }
    }

    #[test]
    fn google_new_is_cut_to_max() {
        let places: Vec<Value> = (0..7).map(|i| json!({"id": format!("p{i}")})).collect();
        let answer = from_google_new(&json!({ "places": places }), 3).unwrap();
        let ids: Vec<&str> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["place_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["p0", "p1", "p2"]);
    }

    #[test]
    fn google_new_bad_shapes() {
        assert!(from_google_new(&json!([1]), 5).is_err());
        assert!(from_google_new(&json!({"places": "x"}), 5).is_err());
    }

    #[test]
    fn legacy_passes_through_and_cuts() {
        let body = json!({
            "html_attributions": [],
            "next_page_token": "tok",
            "results": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "status": "OK"
        });
        let answer = from_legacy(body, 2).unwrap();
        assert_eq!(
            answer,
            json!({
                "html_attributions": [],
                "next_page_token": "tok",
                "results": [{"name": "a"}, {"name": "b"}],
                "status": "OK"
            })
        );
        // A legacy error passes through, with results added when missing.
        let denied = json!({"error_message": "bad key", "status": "REQUEST_DENIED"});
        let answer = from_legacy(denied, 2).unwrap();
        assert_eq!(answer["status"], "REQUEST_DENIED");
        assert_eq!(answer["results"], json!([]));
        assert_eq!(answer["html_attributions"], json!([]));
    }

    #[test]
    fn legacy_bad_shapes() {
        assert!(from_legacy(json!("x"), 5).is_err());
        assert!(from_legacy(json!({"results": []}), 5).is_err());
        assert!(from_legacy(json!({"status": 1, "results": []}), 5).is_err());
        assert!(from_legacy(json!({"status": "OK", "results": {}}), 5).is_err());
    }

    #[test]
    fn maps_errors() {
        let body = br#"{"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}"#;
        let (status, message) = error_from_response(403, "Forbidden", body);
        assert_eq!(status, REQUEST_DENIED);
        assert!(message.contains("HTTP 403 Forbidden"), "{message}");
        assert!(
            message.contains("PERMISSION_DENIED: API key not valid."),
            "{message}"
        );

        let body =
            br#"{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(error_from_response(429, "", body).0, OVER_QUERY_LIMIT);
        let body =
            br#"{"error": {"code": 400, "message": "bad radius", "status": "INVALID_ARGUMENT"}}"#;
        assert_eq!(error_from_response(400, "", body).0, INVALID_REQUEST);
        let body = br#"{"error": {"code": 401, "message": "who?", "status": "UNAUTHENTICATED"}}"#;
        assert_eq!(error_from_response(401, "", body).0, REQUEST_DENIED);
        let body = br#"{"error": {"code": 500, "message": "oops", "status": "INTERNAL"}}"#;
        assert_eq!(error_from_response(500, "", body).0, UNKNOWN_ERROR);
        // An unmapped Google status falls back on the HTTP code.
        let body = br#"{"error": {"code": 403, "message": "no", "status": "FAILED_PRECONDITION"}}"#;
        assert_eq!(error_from_response(403, "", body).0, REQUEST_DENIED);

        // Not JSON: by HTTP code, with an excerpt of the body.
        let (status, message) = error_from_response(429, "Too Many Requests", b"slow down");
        assert_eq!(status, OVER_QUERY_LIMIT);
        assert!(
            message.ends_with("HTTP 429 Too Many Requests: slow down"),
            "{message}"
        );
        assert_eq!(error_from_response(401, "", b"").0, REQUEST_DENIED);
        assert!(error_from_response(502, "", b"").1.contains("empty body"));
        assert_eq!(error_from_response(404, "", b"<html>").0, UNKNOWN_ERROR);

        // A legacy-shaped error body.
        let body = br#"{"status": "OVER_QUERY_LIMIT", "error_message": "quota"}"#;
        let (status, message) = error_from_response(500, "", body);
        assert_eq!(status, OVER_QUERY_LIMIT);
        assert!(message.ends_with(": quota"), "{message}");
    }

    #[test]
    fn error_answers() {
        let answer = error_answer(UNKNOWN_ERROR, "it broke");
        assert_eq!(status_of(&answer), UNKNOWN_ERROR);
        assert_eq!(result_count(&answer), 0);
        assert_eq!(answer["error_message"], "it broke");
        assert_eq!(answer["html_attributions"], json!([]));
        assert_eq!(results_answer(vec![json!({})])["status"], OK);
        assert_eq!(results_answer(Vec::new())["status"], ZERO_RESULTS);
    }

    #[test]
    fn formats_like_google() {
        let value = json!({
            "html_attributions": [],
            "results": [{"geometry": {"location": {"lat": 34.5, "lng": -118.25}}, "name": "A"}],
            "status": "OK"
        });
        let text = to_google_json(&value);
        let expected = r#"{
   "html_attributions" : [],
   "results" : [
      {
         "geometry" : {
            "location" : {
               "lat" : 34.5,
               "lng" : -118.25
            }
         },
         "name" : "A"
      }
   ],
   "status" : "OK"
}"#;
        assert_eq!(text, expected);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert!(!text.contains("\n\n"));

        // Escapes in keys and strings; empty containers stay compact.
        let odd = json!({"a\"b\n": "c\\d\n", "e": {}, "f": [[]], "g": null, "h": 4});
        let text = to_google_json(&odd);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), odd);
        assert!(text.contains(r#""a\"b\n" : "c\\d\n""#), "{text}");
        assert!(text.contains("\"e\" : {},"), "{text}");
        assert!(text.contains("\"f\" : [\n      []\n   ],"), "{text}");
        assert!(!text.contains("\n\n"));
    }
}
