//! The places the local Places service knows: real places with their real
//! coordinates (to about 4 decimal places, i.e. within ~50 m), most of them
//! around UCLA, Westwood and Los Angeles, a few elsewhere so that other
//! locations find something too.
//!
//! Place IDs are made up but stable (`gyre-local-` and the slug); ratings
//! are made up. Types use the legacy Nearby Search vocabulary.

/// One place of the local dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Place {
    /// Lower-case, dash-separated, unique: the place ID's tail.
    pub slug: &'static str,
    /// The name, as Google shows it.
    pub name: &'static str,
    /// Latitude, decimal degrees.
    pub lat: f64,
    /// Longitude, decimal degrees.
    pub lng: f64,
    /// The legacy `vicinity`: street address and city.
    pub vicinity: &'static str,
    /// Legacy place types, most specific first.
    pub types: &'static [&'static str],
    /// A made-up rating, 1.0 to 5.0 (never a whole number, so that it
    /// always prints as a decimal).
    pub rating: f64,
}

impl Place {
    /// The stable, made-up place ID: `gyre-local-<slug>`.
    pub fn place_id(&self) -> String {
        format!("gyre-local-{}", self.slug)
    }
}

const POI: &[&str] = &["point_of_interest", "establishment"];
const UNIVERSITY: &[&str] = &["university", "point_of_interest", "establishment"];
const LIBRARY: &[&str] = &["library", "point_of_interest", "establishment"];
const MUSEUM: &[&str] = &[
    "museum",
    "tourist_attraction",
    "point_of_interest",
    "establishment",
];
const ATTRACTION: &[&str] = &["tourist_attraction", "point_of_interest", "establishment"];
const STADIUM: &[&str] = &["stadium", "point_of_interest", "establishment"];
const PARK: &[&str] = &[
    "park",
    "tourist_attraction",
    "point_of_interest",
    "establishment",
];
const THEATER: &[&str] = &["movie_theater", "point_of_interest", "establishment"];
const MALL: &[&str] = &["shopping_mall", "point_of_interest", "establishment"];
const FOOD: &[&str] = &[
    "bakery",
    "store",
    "food",
    "point_of_interest",
    "establishment",
];
const MARKET: &[&str] = &[
    "food",
    "tourist_attraction",
    "point_of_interest",
    "establishment",
];
const HOSPITAL: &[&str] = &["hospital", "health", "point_of_interest", "establishment"];
const CEMETERY: &[&str] = &["cemetery", "point_of_interest", "establishment"];
const CHURCH: &[&str] = &[
    "church",
    "place_of_worship",
    "point_of_interest",
    "establishment",
];
const STATION: &[&str] = &[
    "train_station",
    "transit_station",
    "point_of_interest",
    "establishment",
];
const AIRPORT: &[&str] = &["airport", "point_of_interest", "establishment"];
const CITY_HALL: &[&str] = &[
    "city_hall",
    "local_government_office",
    "point_of_interest",
    "establishment",
];
const ZOO: &[&str] = &[
    "zoo",
    "tourist_attraction",
    "point_of_interest",
    "establishment",
];
const LODGING: &[&str] = &["lodging", "point_of_interest", "establishment"];
const AMUSEMENT: &[&str] = &[
    "amusement_park",
    "tourist_attraction",
    "point_of_interest",
    "establishment",
];

const fn place(
    slug: &'static str,
    name: &'static str,
    lat: f64,
    lng: f64,
    vicinity: &'static str,
    types: &'static [&'static str],
    rating: f64,
) -> Place {
    Place {
        slug,
        name,
        lat,
        lng,
        vicinity,
        types,
        rating,
    }
}

/// Every place the local service knows.
#[rustfmt::skip]
pub(crate) const PLACES: &[Place] = &[
    // UCLA campus.
    place("royce-hall", "Royce Hall", 34.0729, -118.4422, "340 Royce Dr, Los Angeles", ATTRACTION, 4.8),
    place("powell-library", "Powell Library", 34.0716, -118.4422, "10740 Dickson Plaza, Los Angeles", LIBRARY, 4.7),
    place("janss-steps", "Janss Steps", 34.0721, -118.4436, "Dickson Ct, Los Angeles", ATTRACTION, 4.6),
    place("fowler-museum", "Fowler Museum at UCLA", 34.0732, -118.4433, "308 Charles E Young Dr N, Los Angeles", MUSEUM, 4.6),
    place("pauley-pavilion", "Pauley Pavilion", 34.0703, -118.4468, "301 Westwood Plaza, Los Angeles", STADIUM, 4.7),
    place("ackerman-union", "Ackerman Union", 34.0705, -118.4443, "308 Westwood Plaza, Los Angeles", POI, 4.4),
    place("kerckhoff-hall", "Kerckhoff Hall", 34.0706, -118.4428, "308 Westwood Plaza, Los Angeles", UNIVERSITY, 4.5),
    place("bruin-bear", "Bruin Bear Statue", 34.0709, -118.4450, "Bruin Plaza, Los Angeles", ATTRACTION, 4.6),
    place("wooden-center", "John Wooden Center", 34.0713, -118.4455, "221 Westwood Plaza, Los Angeles", POI, 4.5),
    place("drake-stadium", "Drake Stadium", 34.0716, -118.4486, "Westwood Plaza, Los Angeles", STADIUM, 4.6),
    place("anderson-school", "UCLA Anderson School of Management", 34.0742, -118.4437, "110 Westwood Plaza, Los Angeles", UNIVERSITY, 4.6),
    place("murphy-sculpture-garden", "Franklin D. Murphy Sculpture Garden", 34.0752, -118.4400, "245 Charles E Young Dr E, Los Angeles", PARK, 4.7),
    place("schoenberg-hall", "Schoenberg Hall", 34.0712, -118.4404, "445 Charles E Young Dr E, Los Angeles", UNIVERSITY, 4.5),
    place("boelter-hall", "Boelter Hall", 34.0692, -118.4431, "580 Portola Plaza, Los Angeles", UNIVERSITY, 4.2),
    place("mathias-botanical-garden", "Mildred E. Mathias Botanical Garden", 34.0664, -118.4413, "707 Tiverton Dr, Los Angeles", PARK, 4.6),
    place("ronald-reagan-medical-center", "Ronald Reagan UCLA Medical Center", 34.0664, -118.4467, "757 Westwood Plaza, Los Angeles", HOSPITAL, 4.1),
    // Westwood and the Westside.
    place("geffen-playhouse", "Geffen Playhouse", 34.0627, -118.4451, "10886 Le Conte Ave, Los Angeles", ATTRACTION, 4.7),
    place("regency-village-theatre", "Regency Village Theatre", 34.0629, -118.4472, "961 Broxton Ave, Los Angeles", THEATER, 4.6),
    place("diddy-riese", "Diddy Riese", 34.0631, -118.4474, "926 Broxton Ave, Los Angeles", FOOD, 4.7),
    place("hammer-museum", "Hammer Museum", 34.0594, -118.4437, "10899 Wilshire Blvd, Los Angeles", MUSEUM, 4.7),
    place("westwood-village-memorial-park", "Westwood Village Memorial Park Cemetery", 34.0584, -118.4410, "1218 Glendon Ave, Los Angeles", CEMETERY, 4.6),
    place("los-angeles-temple", "Los Angeles California Temple", 34.0541, -118.4329, "10777 Santa Monica Blvd, Los Angeles", CHURCH, 4.8),
    place("westfield-century-city", "Westfield Century City", 34.0583, -118.4188, "10250 Santa Monica Blvd, Los Angeles", MALL, 4.6),
    place("museum-of-tolerance", "Museum of Tolerance", 34.0522, -118.4016, "9786 W Pico Blvd, Los Angeles", MUSEUM, 4.7),
    place("rodeo-drive", "Rodeo Drive", 34.0676, -118.4005, "Rodeo Dr, Beverly Hills", ATTRACTION, 4.5),
    place("beverly-hills-hotel", "The Beverly Hills Hotel", 34.0815, -118.4133, "9641 Sunset Blvd, Beverly Hills", LODGING, 4.6),
    place("getty-center", "Getty Center", 34.0780, -118.4741, "1200 Getty Center Dr, Los Angeles", MUSEUM, 4.8),
    place("skirball-cultural-center", "Skirball Cultural Center", 34.1173, -118.4767, "2701 N Sepulveda Blvd, Los Angeles", MUSEUM, 4.7),
    place("getty-villa", "Getty Villa", 34.0459, -118.5646, "17985 Pacific Coast Hwy, Pacific Palisades", MUSEUM, 4.8),
    place("santa-monica-pier", "Santa Monica Pier", 34.0092, -118.4976, "200 Santa Monica Pier, Santa Monica", AMUSEMENT, 4.6),
    place("third-street-promenade", "Third Street Promenade", 34.0161, -118.4962, "3rd Street Promenade, Santa Monica", MALL, 4.6),
    place("venice-beach-boardwalk", "Venice Beach Boardwalk", 33.9850, -118.4727, "1800 Ocean Front Walk, Venice", ATTRACTION, 4.4),
    place("lax", "Los Angeles International Airport", 33.9416, -118.4085, "1 World Way, Los Angeles", AIRPORT, 3.9),
    // Miracle Mile and Fairfax.
    place("lacma", "Los Angeles County Museum of Art", 34.0639, -118.3592, "5905 Wilshire Blvd, Los Angeles", MUSEUM, 4.7),
    place("la-brea-tar-pits", "La Brea Tar Pits and Museum", 34.0638, -118.3554, "5801 Wilshire Blvd, Los Angeles", MUSEUM, 4.6),
    place("academy-museum", "Academy Museum of Motion Pictures", 34.0633, -118.3610, "6067 Wilshire Blvd, Los Angeles", MUSEUM, 4.5),
    place("petersen-automotive-museum", "Petersen Automotive Museum", 34.0623, -118.3611, "6060 Wilshire Blvd, Los Angeles", MUSEUM, 4.8),
    place("the-grove", "The Grove", 34.0721, -118.3575, "189 The Grove Dr, Los Angeles", MALL, 4.7),
    place("original-farmers-market", "The Original Farmers Market", 34.0719, -118.3602, "6333 W 3rd St, Los Angeles", MARKET, 4.6),
    // Hollywood and Griffith Park.
    place("tcl-chinese-theatre", "TCL Chinese Theatre", 34.1022, -118.3409, "6925 Hollywood Blvd, Los Angeles", THEATER, 4.6),
    place("hollywood-bowl", "Hollywood Bowl", 34.1122, -118.3391, "2301 N Highland Ave, Los Angeles", ATTRACTION, 4.8),
    place("hollywood-sign", "Hollywood Sign", 34.1341, -118.3215, "Los Angeles", ATTRACTION, 4.5),
    place("griffith-observatory", "Griffith Observatory", 34.1184, -118.3004, "2800 E Observatory Rd, Los Angeles", MUSEUM, 4.8),
    place("los-angeles-zoo", "Los Angeles Zoo", 34.1484, -118.2841, "5333 Zoo Dr, Los Angeles", ZOO, 4.5),
    place("universal-studios-hollywood", "Universal Studios Hollywood", 34.1381, -118.3534, "100 Universal City Plaza, Universal City", AMUSEMENT, 4.6),
    // Downtown and Exposition Park.
    place("the-broad", "The Broad", 34.0545, -118.2503, "221 S Grand Ave, Los Angeles", MUSEUM, 4.7),
    place("walt-disney-concert-hall", "Walt Disney Concert Hall", 34.0553, -118.2498, "111 S Grand Ave, Los Angeles", ATTRACTION, 4.8),
    place("grand-central-market", "Grand Central Market", 34.0508, -118.2489, "317 S Broadway, Los Angeles", MARKET, 4.6),
    place("los-angeles-city-hall", "Los Angeles City Hall", 34.0537, -118.2427, "200 N Spring St, Los Angeles", CITY_HALL, 4.6),
    place("union-station", "Union Station", 34.0562, -118.2365, "800 N Alameda St, Los Angeles", STATION, 4.5),
    place("crypto-com-arena", "Crypto.com Arena", 34.0430, -118.2673, "1111 S Figueroa St, Los Angeles", STADIUM, 4.7),
    place("dodger-stadium", "Dodger Stadium", 34.0739, -118.2400, "1000 Vin Scully Ave, Los Angeles", STADIUM, 4.6),
    place("natural-history-museum", "Natural History Museum of Los Angeles County", 34.0171, -118.2887, "900 Exposition Blvd, Los Angeles", MUSEUM, 4.7),
    place("la-memorial-coliseum", "Los Angeles Memorial Coliseum", 34.0141, -118.2879, "3911 S Figueroa St, Los Angeles", STADIUM, 4.5),
    place("california-science-center", "California Science Center", 34.0159, -118.2864, "700 Exposition Park Dr, Los Angeles", MUSEUM, 4.7),
    place("the-huntington", "The Huntington Library, Art Museum, and Botanical Gardens", 34.1291, -118.1145, "1151 Oxford Rd, San Marino", MUSEUM, 4.8),
    // The Bay Area.
    place("sather-tower", "Sather Tower", 37.8721, -122.2578, "Sather Rd, Berkeley", ATTRACTION, 4.7),
    place("doe-library", "Doe Memorial Library", 37.8722, -122.2594, "Doe Library, Berkeley", LIBRARY, 4.7),
    place("california-memorial-stadium", "California Memorial Stadium", 37.8710, -122.2508, "2227 Piedmont Ave, Berkeley", STADIUM, 4.6),
    place("hoover-tower", "Hoover Tower", 37.4275, -122.1666, "550 Serra Mall, Stanford", ATTRACTION, 4.6),
    place("golden-gate-bridge", "Golden Gate Bridge", 37.8199, -122.4783, "Golden Gate Bridge, San Francisco", ATTRACTION, 4.8),
    place("ferry-building", "Ferry Building Marketplace", 37.7955, -122.3937, "1 Ferry Building, San Francisco", MARKET, 4.7),
    // New York.
    place("empire-state-building", "Empire State Building", 40.7484, -73.9857, "20 W 34th St., New York", ATTRACTION, 4.7),
    place("times-square", "Times Square", 40.7580, -73.9855, "Manhattan, New York", ATTRACTION, 4.7),
    place("moma", "The Museum of Modern Art", 40.7614, -73.9776, "11 W 53rd St, New York", MUSEUM, 4.6),
    place("the-met", "The Metropolitan Museum of Art", 40.7794, -73.9632, "1000 5th Ave, New York", MUSEUM, 4.8),
    place("low-memorial-library", "Low Memorial Library", 40.8080, -73.9621, "535 W 116th St, New York", LIBRARY, 4.7),
    place("statue-of-liberty", "Statue of Liberty", 40.6892, -74.0445, "New York", ATTRACTION, 4.7),
    // Elsewhere.
    place("eiffel-tower", "Eiffel Tower", 48.8584, 2.2945, "Av. Gustave Eiffel, Paris", ATTRACTION, 4.7),
    place("big-ben", "Big Ben", 51.5007, -0.1246, "London SW1A 0AA, London", ATTRACTION, 4.6),
    place("tokyo-tower", "Tokyo Tower", 35.6586, 139.7454, "4-2-8 Shibakoen, Minato City", ATTRACTION, 4.5),
    place("sydney-opera-house", "Sydney Opera House", -33.8568, 151.2153, "Bennelong Point, Sydney", ATTRACTION, 4.7),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::geo::haversine_m;
    use std::collections::HashSet;

    #[test]
    fn slugs_are_unique_and_tidy() {
        let mut seen = HashSet::new();
        for p in PLACES {
            assert!(seen.insert(p.slug), "duplicate slug {}", p.slug);
            assert!(
                p.slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                p.slug
            );
            assert!(p.place_id().starts_with("gyre-local-"));
        }
    }

    #[test]
    fn coordinates_ratings_and_types_are_sane() {
        for p in PLACES {
            assert!((-90.0..=90.0).contains(&p.lat), "{}", p.slug);
            assert!((-180.0..=180.0).contains(&p.lng), "{}", p.slug);
            assert!((1.0..=5.0).contains(&p.rating), "{}", p.slug);
            assert_ne!(p.rating.fract(), 0.0, "{}", p.slug);
            assert!(!p.name.is_empty() && !p.vicinity.is_empty(), "{}", p.slug);
            assert!(p.types.ends_with(&["point_of_interest", "establishment"]));
        }
    }

    #[test]
    fn mostly_around_los_angeles() {
        let near_ucla = PLACES
            .iter()
            .filter(|p| haversine_m(34.0689, -118.4452, p.lat, p.lng) < 60_000.0)
            .count();
        assert!(near_ucla >= 40, "{near_ucla}");
        let elsewhere = PLACES.len() - near_ucla;
        assert!(elsewhere >= 5, "{elsewhere}");
    }
}
