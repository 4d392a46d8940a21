//! The herd's command parser on arbitrary lines: no panic, and whatever
//! parses obeys the contract:
//! - the fields of a parsed command are fields of the line, whitespace-free;
//! - numbers are in range;
//! - an IAMAT's AT line parses back as an AT line with the same fields,
//!   for any time difference;
//! - an AT line's canonical form parses to the same AT line;
//! - the invalid answer is `? `, the line, `\n`.
#![no_main]

use gyre_herd::command::{fields, invalid_answer, is_space, parse, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let mut answer = Vec::new();
    invalid_answer(line, &mut answer);
    assert_eq!(answer.len(), line.len() + 3);
    assert!(answer.starts_with(b"? ") && answer.ends_with(b"\n"));
    for field in fields(line) {
        assert!(!field.is_empty() && !field.iter().any(|&b| is_space(b)));
    }
    let Ok(command) = parse(line) else {
        return;
    };
    match command {
        Command::IAmAt(i) => {
            assert!((-90.0..=90.0).contains(&i.coordinates.lat));
            assert!((-180.0..=180.0).contains(&i.coordinates.lon));
            assert!(i.time_ns >= 0);
            // Any difference, from the length of the line (deterministic).
            let diff = (line.len() as i128 - 40) * 1_234_567_891;
            let mut at = Vec::new();
            i.write_at_line(b"Alford", diff, &mut at);
            match parse(&at) {
                Ok(Command::At(a)) => {
                    assert_eq!(a.server, b"Alford");
                    assert_eq!(a.client, i.client);
                    assert_eq!(a.location, i.location);
                    assert_eq!(a.time, i.time);
                    assert_eq!(a.time_ns, i.time_ns);
                    assert_eq!(a.coordinates, i.coordinates);
                }
                other => panic!("the AT line of a valid IAMAT does not parse: {other:?}"),
            }
        }
        Command::WhatsAt(w) => {
            assert!(w.radius_km > 0.0 && w.radius_km <= 50.0);
            assert!((1..=20).contains(&w.max_results));
            assert!(!w.client.is_empty());
        }
        Command::At(a) => {
            let mut canonical = Vec::new();
            a.write_canonical(&mut canonical);
            assert_eq!(parse(&canonical), Ok(Command::At(a)));
        }
        Command::Peer(name) => assert!(!name.is_empty()),
    }
});
