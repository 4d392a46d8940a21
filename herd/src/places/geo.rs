//! Great-circle distance.

/// The mean Earth radius (IUGG), in metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The great-circle (haversine) distance in metres between two points given
/// in decimal degrees, on a sphere of [`EARTH_RADIUS_M`].
///
/// ```
/// use gyre_herd::places::haversine_m;
///
/// // Royce Hall to Pauley Pavilion, about 490 m.
/// let d = haversine_m(34.0729, -118.4422, 34.0703, -118.4468);
/// assert!((450.0..550.0).contains(&d));
/// ```
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = (lat2 - lat1).to_radians();
    let d_lambda = (lon2 - lon1).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    // Clamp: rounding can push `a` a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_M * a.clamp(0.0, 1.0).sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn zero_for_the_same_point() {
        assert_eq!(haversine_m(34.0729, -118.4422, 34.0729, -118.4422), 0.0);
    }

    #[test]
    fn one_degree_of_latitude() {
        // 2 * pi * R / 360
        let expected = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!(close(haversine_m(0.0, 0.0, 1.0, 0.0), expected, 1e-6));
        assert!(close(haversine_m(10.0, 20.0, 11.0, 20.0), expected, 1e-6));
    }

    #[test]
    fn longitude_shrinks_with_latitude() {
        let at_equator = haversine_m(0.0, 0.0, 0.0, 1.0);
        let at_60 = haversine_m(60.0, 0.0, 60.0, 1.0);
        assert!(
            close(at_60, at_equator / 2.0, 5.0),
            "{at_60} vs {at_equator}"
        );
    }

    #[test]
    fn known_distances() {
        // Los Angeles (LAX) to New York (JFK): about 3,975 km.
        let d = haversine_m(33.9416, -118.4085, 40.6413, -73.7781);
        assert!(close(d, 3_975_000.0, 10_000.0), "{d}");
        // Across the antimeridian: 179.5 E to 179.5 W is 1 degree.
        let d = haversine_m(0.0, 179.5, 0.0, -179.5);
        assert!(close(d, haversine_m(0.0, 0.0, 0.0, 1.0), 1e-6), "{d}");
    }

    #[test]
    fn symmetric_and_bounded() {
        let d1 = haversine_m(34.0, -118.0, -33.9, 151.2);
        let d2 = haversine_m(-33.9, 151.2, 34.0, -118.0);
        assert!(close(d1, d2, 1e-6));
        // Antipodes: half the circumference, never NaN.
        let half = EARTH_RADIUS_M * std::f64::consts::PI;
        let d = haversine_m(90.0, 0.0, -90.0, 0.0);
        assert!(close(d, half, 1e-3), "{d}");
        assert!(!haversine_m(0.0, 0.0, 0.0, 180.0).is_nan());
    }
}
