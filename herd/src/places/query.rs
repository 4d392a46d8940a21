//! Query strings (building, parsing, percent-coding), plain number
//! formatting, and keeping the API key out of text.

/// Percent-encodes `text` for a query-string name or value: everything but
/// the unreserved characters (`A-Z a-z 0-9 - . _ ~`) and `,` becomes `%XX`
/// (so `34.1,-118.4` stays readable, and a `+` is sent as `%2B`).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query-string component: `+` is a space, `%XX` a byte. A `%`
/// not followed by two hex digits is kept as it is; invalid UTF-8 is
/// replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The decoded `(name, value)` pairs of a query string (without the `?`).
/// Empty pieces are skipped; a piece without `=` has an empty value.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// `url` with the encoded `params` appended as its query (after `&` if it
/// has one already).
pub(crate) fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    let mut sep = if url.contains('?') {
        if url.ends_with('?') || url.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    for (name, value) in params {
        out.push_str(sep);
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
        sep = "&";
    }
    out
}

/// A number as plain decimal digits: no sign for positives, no exponent,
/// at most `decimals` fractional digits, trailing zeros dropped
/// (`10587.1263`, `-118.4422`, `1000`).
pub(crate) fn plain_number(x: f64, decimals: usize) -> String {
    let mut text = format!("{x:.decimals$}");
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(trimmed);
    }
    if text == "-0" {
        text = "0".to_string();
    }
    text
}

/// `text` with every occurrence of `key` (as is, and percent-encoded)
/// replaced by `REDACTED`. Does nothing without a key.
pub(crate) fn redact(text: &str, key: Option<&str>) -> String {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return text.to_string();
    };
    let mut out = text.replace(key, "REDACTED");
    let encoded = percent_encode(key);
    if encoded != key {
        out = out.replace(&encoded, "REDACTED");
    }
    out
}

/// Shortens `text` to at most `max` characters (adding `...`).
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{short}...")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        assert_eq!(percent_encode("AIza-_.~09"), "AIza-_.~09");
        assert_eq!(percent_encode("a b+c&d=é,"), "a%20b%2Bc%26d%3D%C3%A9,");
        assert_eq!(percent_decode("a%20b%2Bc%26d%3D%C3%A9"), "a b+c&d=é");
        assert_eq!(percent_decode("+34.1"), " 34.1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn parses_queries() {
        assert_eq!(
            parse_query("location=34.1,-118.4&radius=10&&key&x=a%2Cb"),
            vec![
                ("location".to_string(), "34.1,-118.4".to_string()),
                ("radius".to_string(), "10".to_string()),
                ("key".to_string(), String::new()),
                ("x".to_string(), "a,b".to_string()),
            ]
        );
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn builds_urls() {
        let params = [("location", "34.1,-118.4"), ("radius", "10")];
        assert_eq!(
            with_query("https://h/p", &params),
            "https://h/p?location=34.1,-118.4&radius=10"
        );
        assert_eq!(
            with_query("https://h/p?a=1", &params[1..]),
            "https://h/p?a=1&radius=10"
        );
        assert_eq!(
            with_query("https://h/p?", &params[1..]),
            "https://h/p?radius=10"
        );
    }

    #[test]
    fn plain_numbers() {
        assert_eq!(plain_number(34.06893, 7), "34.06893");
        assert_eq!(plain_number(-118.445127, 7), "-118.445127");
        assert_eq!(plain_number(10.5871263 * 1000.0, 3), "10587.126");
        assert_eq!(plain_number(1000.0, 3), "1000");
        assert_eq!(plain_number(-0.00000001, 7), "0");
        assert_eq!(plain_number(1e-7, 7), "0.0000001");
        assert_eq!(plain_number(50000.0, 3), "50000");
    }

    #[test]
    fn redacts_keys() {
        let text = "GET https://h/?key=s3cret%2Bx and s3cret+x";
        assert_eq!(
            redact(text, Some("s3cret+x")),
            "GET https://h/?key=REDACTED and REDACTED"
        );
        assert_eq!(redact(text, None), text);
        assert_eq!(redact(text, Some("")), text);
    }

    #[test]
    fn shortens() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc...");
        assert_eq!(shorten("ééé", 2), "éé...");
    }
}
