//! How a WHATSAT answer is laid out on the wire.

/// A WHATSAT answer: the stored AT line, `\n`, the JSON with every run of
/// newlines collapsed to one and none at either end, then `\n\n`.
///
/// ```
/// use gyre_herd::server::whatsat_answer;
/// assert_eq!(
///     whatsat_answer(b"AT A +0.1 k +1+2 5", "\n{\n\n  \"results\": []\n}\n\n"),
///     b"AT A +0.1 k +1+2 5\n{\n  \"results\": []\n}\n\n"
/// );
/// ```
pub fn whatsat_answer(at_line: &[u8], json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(at_line.len() + json.len() + 3);
    out.extend_from_slice(at_line);
    out.push(b'\n');
    let mut newline = false;
    let mut started = false;
    for &b in json.trim_matches('\n').as_bytes() {
        if b == b'\n' {
            newline = true;
            continue;
        }
        if newline && started {
            out.push(b'\n');
        }
        newline = false;
        started = true;
        out.push(b);
    }
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> String {
        String::from_utf8(whatsat_answer(b"AT A +0.1 k +1+2 5", json)).unwrap()
    }

    #[test]
    fn whatsat_answer_collapses_newlines() {
        assert_eq!(answer("{}"), "AT A +0.1 k +1+2 5\n{}\n\n");
        assert_eq!(
            answer("{\n\"a\": 1\n}\n"),
            "AT A +0.1 k +1+2 5\n{\n\"a\": 1\n}\n\n"
        );
        assert_eq!(
            answer("\n\n{\n\n\n\"a\":\n\n1}\n\n\n"),
            "AT A +0.1 k +1+2 5\n{\n\"a\":\n1}\n\n"
        );
        // Spaces are kept, even on a line of their own.
        assert_eq!(answer("{\n  \n}"), "AT A +0.1 k +1+2 5\n{\n  \n}\n\n");
    }
}
