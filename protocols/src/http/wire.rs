//! Byte-level pieces of HTTP/1.x framing shared by the response parser
//! (client side) and the request parser (server side): finding the blank
//! line that ends a head, collecting a head within its limit, tokens,
//! decimal lengths, `Connection` options.
//!
//! Sans-IO and allocation-free except where a caller's buffer grows, and
//! then never past the limit the caller gives.

/// Takes up to `max` bytes off the front of `input`.
pub(crate) fn take<'a>(input: &mut &'a [u8], max: u64) -> &'a [u8] {
    let n = usize::try_from(max).unwrap_or(usize::MAX).min(input.len());
    let (data, rest) = input.split_at(n);
    *input = rest;
    data
}

/// The end (exclusive) of the first blank line in `buf` searching from
/// `from`: an LF followed by CRLF or LF. With `at_line_start`, the buffer
/// itself starts at a line start, so a leading CRLF or LF is a blank line.
pub(crate) fn find_blank_line(buf: &[u8], from: usize, at_line_start: bool) -> Option<usize> {
    if at_line_start {
        if buf.starts_with(b"\r\n") {
            return Some(2);
        }
        if buf.starts_with(b"\n") {
            return Some(1);
        }
    }
    for i in memchr::memchr_iter(b'\n', &buf[from.min(buf.len())..]).map(|i| i + from) {
        match &buf[i + 1..] {
            [b'\n', ..] => return Some(i + 2),
            [b'\r', b'\n', ..] => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// The limit of a section ([`collect_section`]) was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SectionTooLarge;

/// Moves bytes from `input` into `buf` until a blank line ends the section
/// (a head, or a trailer section: `at_line_start` when the section may be
/// empty, starting right at a line start). Returns the section's length in
/// `buf` once complete; the bytes after it stay in `input`. `buf` never
/// holds more than `limit + 1` bytes: one byte past the limit is enough to
/// know it was exceeded.
pub(crate) fn collect_section(
    buf: &mut Vec<u8>,
    input: &mut &[u8],
    limit: usize,
    at_line_start: bool,
) -> Result<Option<usize>, SectionTooLarge> {
    let old = buf.len();
    let room = limit.saturating_sub(old);
    let take_n = input.len().min(room.saturating_add(1));
    buf.extend_from_slice(&input[..take_n]);
    match find_blank_line(buf, old.saturating_sub(3), at_line_start) {
        Some(end) if end > limit => Err(SectionTooLarge),
        Some(end) => {
            let used = end.saturating_sub(old);
            *input = &input[used..];
            buf.truncate(end);
            Ok(Some(end))
        }
        None => {
            *input = &input[take_n..];
            if buf.len() > limit {
                Err(SectionTooLarge)
            } else {
                Ok(None)
            }
        }
    }
}

/// The first line of `head`, without its LF.
pub(crate) fn first_line(head: &[u8]) -> &[u8] {
    match memchr::memchr(b'\n', head) {
        Some(i) => &head[..i],
        None => head,
    }
}

/// `bytes` without leading and trailing spaces and tabs.
pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A decimal number of at most 19 digits (no sign, no spaces).
pub(crate) fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2): a method or a field name.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The options of `Connection` fields: whether any says `close`, and
/// whether any says `keep-alive`.
pub(crate) fn connection_options<'h>(values: impl Iterator<Item = &'h [u8]>) -> (bool, bool) {
    let mut close = false;
    let mut keep_alive = false;
    for value in values {
        for token in value.split(|&b| b == b',').map(trim) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    (close, keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines() {
        assert_eq!(find_blank_line(b"a\r\n\r\nb", 0, false), Some(5));
        assert_eq!(find_blank_line(b"a\n\nb", 0, false), Some(3));
        assert_eq!(find_blank_line(b"\r\nx", 0, true), Some(2));
        assert_eq!(find_blank_line(b"\r\nx", 0, false), None);
        assert_eq!(find_blank_line(b"a\r\nb\r\n", 0, false), None);
    }

    #[test]
    fn sections_stay_within_their_limit() {
        let mut buf = Vec::new();
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n\r\nrest";
        assert_eq!(
            collect_section(&mut buf, &mut input, 64, false),
            Ok(Some(18))
        );
        assert_eq!(input, b"rest");
        let mut buf = Vec::new();
        let big = [b'a'; 100];
        let mut input: &[u8] = &big;
        assert_eq!(
            collect_section(&mut buf, &mut input, 10, false),
            Err(SectionTooLarge)
        );
        assert_eq!(buf.len(), 11);
    }

    #[test]
    fn decimals_tokens_options() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1234"), Some(1234));
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
        assert!(is_token(b"GET") && !is_token(b"G T") && !is_token(b""));
        assert_eq!(
            connection_options([&b"foo, Close"[..], b"keep-alive"].into_iter()),
            (true, true)
        );
        assert_eq!(trim(b" \tx y\t "), b"x y");
    }
}
