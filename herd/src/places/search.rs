//! The local Places service's answer to a legacy Nearby Search query
//! string, sans-IO: parameters in, legacy JSON out.
//!
//! Parameters: `location=LAT,LNG` and `radius=METRES` (required; the radius
//! is greater than 0 and at most 50,000), and optionally `keyword` (a
//! case-insensitive substring of the name or vicinity) and `type` (one of
//! the place's types). `key` and anything else are ignored. Results are the
//! places within `radius` by great-circle distance, nearest first (ties by
//! name), at most 20. Bad parameters give `INVALID_REQUEST` with an
//! `error_message`, as Google does (with HTTP 200).

use serde_json::{json, Value};

use super::convert::{error_answer, results_answer, INVALID_REQUEST};
use super::dataset::{Place, PLACES};
use super::geo::haversine_m;
use super::query::parse_query;
use super::{MAX_RADIUS_M, MAX_RESULTS};

/// A checked Nearby Search request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Search {
    pub lat: f64,
    pub lng: f64,
    pub radius_m: f64,
    pub keyword: Option<String>,
    pub place_type: Option<String>,
}

/// The legacy answer to `query` (the part of the target after `?`).
pub(crate) fn answer_query(query: &str) -> Value {
    match parse_search(query) {
        Ok(search) => {
            let results = find(&search)
                .into_iter()
                .map(|(place, _)| legacy_result(place))
                .collect();
            results_answer(results)
        }
        Err(message) => error_answer(INVALID_REQUEST, &message),
    }
}

/// Checks the parameters of `query`.
pub(crate) fn parse_search(query: &str) -> Result<Search, String> {
    let params = parse_query(query);
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let location = get("location")
        .ok_or_else(|| "Invalid request. Missing the 'location' parameter.".to_string())?;
    let (lat, lng) = parse_location(location)?;
    let radius = get("radius")
        .ok_or_else(|| "Invalid request. Missing the 'radius' parameter.".to_string())?;
    let radius_m = parse_number(radius)
        .filter(|r| *r > 0.0 && *r <= MAX_RADIUS_M)
        .ok_or_else(|| {
            format!(
                "Invalid request. Invalid 'radius' parameter {radius:?}: \
                 expected a number of metres greater than 0 and at most 50000."
            )
        })?;
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Search {
        lat,
        lng,
        radius_m,
        keyword: non_empty(get("keyword")),
        place_type: non_empty(get("type")),
    })
}

/// `LAT,LNG` in decimal degrees, in range.
fn parse_location(text: &str) -> Result<(f64, f64), String> {
    let bad = || {
        format!(
            "Invalid request. Invalid 'location' parameter {text:?}: expected \
             'LAT,LNG' in decimal degrees (a '+' in a query string is a space: \
             send plain numbers)."
        )
    };
    let (lat, lng) = text.split_once(',').ok_or_else(bad)?;
    let lat = parse_number(lat).ok_or_else(bad)?;
    let lng = parse_number(lng).ok_or_else(bad)?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
        return Err(format!(
            "Invalid request. Invalid 'location' parameter {text:?}: latitude \
             must be in [-90, 90] and longitude in [-180, 180]."
        ));
    }
    Ok((lat, lng))
}

/// A finite decimal number: an optional `-`, digits, an optional fraction
/// (no `+`, no spaces, no exponent, no `inf` or `NaN`).
fn parse_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    text.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The places matching `search`, nearest first, with their distances in
/// metres; at most [`MAX_RESULTS`].
pub(crate) fn find(search: &Search) -> Vec<(&'static Place, f64)> {
    let keyword = search.keyword.as_deref().map(str::to_lowercase);
    let mut found: Vec<(&'static Place, f64)> = PLACES
        .iter()
        .filter(|p| {
            keyword.as_deref().is_none_or(|k| {
                p.name.to_lowercase().contains(k) || p.vicinity.to_lowercase().contains(k)
            })
        })
        .filter(|p| {
            search
                .place_type
                .as_deref()
                .is_none_or(|t| p.types.contains(&t))
        })
        .map(|p| (p, haversine_m(search.lat, search.lng, p.lat, p.lng)))
        .filter(|(_, d)| *d <= search.radius_m)
        .collect();
    found.sort_by(|(a, da), (b, db)| da.total_cmp(db).then_with(|| a.name.cmp(b.name)));
    found.truncate(MAX_RESULTS as usize);
    found
}

/// `place` as a legacy Nearby Search result.
fn legacy_result(place: &Place) -> Value {
    let id = place.place_id();
    json!({
        "business_status": "OPERATIONAL",
        "geometry": {"location": {"lat": place.lat, "lng": place.lng}},
        "name": place.name,
        "place_id": id,
        "rating": place.rating,
        "reference": id,
        "types": place.types,
        "vicinity": place.vicinity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::convert::{OK, ZERO_RESULTS};

    fn names(answer: &Value) -> Vec<String> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn near_royce_hall() {
        let answer = answer_query("location=34.0729,-118.4422&radius=1000&key=whatever");
        assert_eq!(answer["status"], OK);
        let names = names(&answer);
        assert_eq!(names[0], "Royce Hall");
        assert!(names.contains(&"Pauley Pavilion".to_string()));
        assert!(!names.contains(&"Getty Center".to_string()));
        let first = &answer["results"][0];
        assert_eq!(first["place_id"], "gyre-local-royce-hall");
        assert_eq!(first["geometry"]["location"]["lat"], 34.0729);
        assert_eq!(first["vicinity"], "340 Royce Dr, Los Angeles");
        assert_eq!(first["business_status"], "OPERATIONAL");
    }

    #[test]
    fn sorted_by_distance_and_capped() {
        let search = parse_search("location=34.0729,-118.4422&radius=50000").unwrap();
        let found = find(&search);
        assert_eq!(found.len(), MAX_RESULTS as usize);
        assert!(found.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(found.iter().all(|(_, d)| *d <= 50_000.0));
    }

    #[test]
    fn radius_is_inclusive_and_exact() {
        // Pauley Pavilion is some 500 m from Royce Hall.
        let d = haversine_m(34.0729, -118.4422, 34.0703, -118.4468);
        let inside = format!("location=34.0729,-118.4422&radius={}", d + 0.01);
        let outside = format!("location=34.0729,-118.4422&radius={}", d - 0.01);
        assert!(names(&answer_query(&inside)).contains(&"Pauley Pavilion".to_string()));
        assert!(!names(&answer_query(&outside)).contains(&"Pauley Pavilion".to_string()));
    }

    #[test]
    fn keyword_and_type_filters() {
        let answer = answer_query("location=34.0729,-118.4422&radius=50000&type=museum");
        let results = answer["results"].as_array().unwrap();
        assert!(!results.is_empty());
        assert!(results
            .iter()
            .all(|r| r["types"].as_array().unwrap().contains(&json!("museum"))));
        let answer = answer_query("location=34.0729,-118.4422&radius=50000&keyword=GETTY");
        assert_eq!(names(&answer), ["Getty Center", "Getty Villa"]);
    }

    #[test]
    fn far_from_everything() {
        let answer = answer_query("location=0,-150&radius=50000");
        assert_eq!(
            answer,
            json!({"html_attributions": [], "results": [], "status": ZERO_RESULTS})
        );
    }

    #[test]
    fn elsewhere_finds_something() {
        for (lat, lng) in [(37.8719, -122.2585), (40.7505, -73.9934), (-33.86, 151.21)] {
            let answer = answer_query(&format!("location={lat},{lng}&radius=5000"));
            assert_eq!(answer["status"], OK, "{lat},{lng}");
        }
    }

    #[test]
    fn invalid_requests() {
        for query in [
            "",
            "radius=1000",
            "location=34.07,-118.44",
            "location=34.07&radius=1000",
            "location=+34.07,-118.44&radius=1000",
            "location=%2B34.07,-118.44&radius=1000",
            "location=34.07,-118.44&radius=0",
            "location=34.07,-118.44&radius=-5",
            "location=34.07,-118.44&radius=50001",
            "location=34.07,-118.44&radius=1e3",
            "location=34.07,-118.44&radius=abc",
            "location=91,0&radius=1000",
            "location=0,180.5&radius=1000",
            "location=NaN,0&radius=1000",
            "location=inf,0&radius=1000",
            "location=.,0&radius=1000",
        ] {
            let answer = answer_query(query);
            assert_eq!(answer["status"], INVALID_REQUEST, "{query}");
            assert!(answer["error_message"].is_string(), "{query}");
            assert_eq!(answer["results"], json!([]), "{query}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("34.0729"), Some(34.0729));
        assert_eq!(parse_number("-118"), Some(-118.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("5."), Some(5.0));
        for bad in ["", "-", ".", "+1", " 1", "1 ", "1e3", "0x10", "inf", "--1"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }
}
