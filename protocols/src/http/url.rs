//! [`Url`]: a small, strict parser for `http://` and `https://` URLs.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::error::HttpError;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP, default port 80.
    Http,
    /// HTTP over TLS, default port 443.
    Https,
}

impl Scheme {
    /// The scheme's default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An absolute `http` or `https` URL, split into what a request needs.
///
/// The parser is strict: scheme `http` or `https` (any case), `//`, a host
/// (a DNS name, an IPv4 address, or an IPv6 address in brackets), an
/// optional port (1 to 65535), then an optional path and query. User
/// information (`user@`) is refused; the fragment (`#...`) is dropped, as
/// it is never sent. Spaces, control characters and non-ASCII characters
/// must be percent-encoded. The host is lower-cased.
///
/// ```
/// use gyre_protocols::http::{Scheme, Url};
///
/// let url = Url::parse("https://Example.com:8443/a/b?q=1#top")?;
/// assert_eq!(url.scheme(), Scheme::Https);
/// assert_eq!(url.host(), "example.com");
/// assert_eq!(url.port(), 8443);
/// assert_eq!(url.path_and_query(), "/a/b?q=1");
/// assert_eq!(url.host_header(), "example.com:8443");
///
/// let v6 = Url::parse("http://[::1]/")?;
/// assert_eq!(v6.host(), "::1");
/// assert_eq!(v6.host_header(), "[::1]");
/// assert!(Url::parse("ftp://example.com/").is_err());
/// # Ok::<(), gyre_protocols::http::HttpError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    scheme: Scheme,
    host: String,
    port: u16,
    explicit_port: bool,
    path: String,
}

impl Url {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |reason| HttpError::invalid_url(text, reason);
        if let Some(b) = text.bytes().find(|b| !(0x21..0x7f).contains(b)) {
            return Err(bad(if b == b' ' {
                "spaces must be percent-encoded"
            } else if b < 0x20 || b == 0x7f {
                "control characters are not allowed"
            } else {
                "non-ASCII characters must be percent-encoded"
            }));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("expected scheme://host"));
        };
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            return Err(bad("only http and https URLs are supported"));
        };
        // Drop the fragment, then split authority from path and query.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user information in URLs is not supported"));
        }
        let (host, port_text) = if let Some(after) = authority.strip_prefix('[') {
            let Some((literal, after)) = after.split_once(']') else {
                return Err(bad("unclosed [ in the host"));
            };
            let ip: Ipv6Addr = literal.parse().map_err(|_| bad("invalid IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err(bad("invalid character in the host"));
            }
            if host.len() > 253 {
                return Err(bad("host name too long"));
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port_text {
            None => None,
            Some(p) => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("invalid port"));
                }
                match p.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(bad("port out of range")),
                    Ok(n) => Some(n),
                }
            }
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
            explicit_port: port.is_some_and(|p| p != scheme.default_port()),
            path,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: a lower-cased name, or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The port (the scheme's default if none was given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query, as sent in the request line (at least `/`).
    pub fn path_and_query(&self) -> &str {
        &self.path
    }

    /// The `Host` header's value: the host (IPv6 in brackets), and the port
    /// unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }
}

impl Url {
    /// The URL without its query string, for logs: a query may carry
    /// secrets (API keys), so log lines never show it.
    ///
    /// ```
    /// use gyre_protocols::http::Url;
    ///
    /// let url = Url::parse("https://example.com/search?q=1&key=SECRET")?;
    /// assert_eq!(url.without_query(), "https://example.com/search?…");
    /// # Ok::<(), gyre_protocols::http::HttpError>(())
    /// ```
    pub fn without_query(&self) -> String {
        match self.path.split_once('?') {
            Some((path, _)) => format!(
                "{}://{}{}?…",
                self.scheme.as_str(),
                self.host_header(),
                path
            ),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let cases = [
            (
                "http://example.com",
                Scheme::Http,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "HTTPS://EXAMPLE.com/",
                Scheme::Https,
                "example.com",
                443,
                "/",
                "example.com",
            ),
            (
                "http://a.b:8080/x/y?z=1&w",
                Scheme::Http,
                "a.b",
                8080,
                "/x/y?z=1&w",
                "a.b:8080",
            ),
            ("http://h?q", Scheme::Http, "h", 80, "/?q", "h"),
            ("http://h:80/p#frag", Scheme::Http, "h", 80, "/p", "h"),
            ("https://h:443/", Scheme::Https, "h", 443, "/", "h"),
            (
                "http://127.0.0.1:9/",
                Scheme::Http,
                "127.0.0.1",
                9,
                "/",
                "127.0.0.1:9",
            ),
            (
                "http://[::1]:8080/a",
                Scheme::Http,
                "::1",
                8080,
                "/a",
                "[::1]:8080",
            ),
            (
                "https://[2001:DB8::1]/",
                Scheme::Https,
                "2001:db8::1",
                443,
                "/",
                "[2001:db8::1]",
            ),
            ("http://h/%20a%2F", Scheme::Http, "h", 80, "/%20a%2F", "h"),
        ];
        for (text, scheme, host, port, path, host_header) in cases {
            let url = Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(url.scheme(), scheme, "{text}");
            assert_eq!(url.host(), host, "{text}");
            assert_eq!(url.port(), port, "{text}");
            assert_eq!(url.path_and_query(), path, "{text}");
            assert_eq!(url.host_header(), host_header, "{text}");
        }
        assert!(Url::parse("http://[::1]/").unwrap().ip().is_some());
        assert!(Url::parse("http://10.1.2.3/").unwrap().ip().is_some());
        assert!(Url::parse("http://localhost/").unwrap().ip().is_none());
    }

    #[test]
    fn refuses() {
        for text in [
            "",
            "example.com",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http:/example.com",
            "http://",
            "http:///path",
            "http://:80/",
            "http://user:pw@host/",
            "http://host:/",
            "http://host:0/",
            "http://host:65536/",
            "http://host:12a/",
            "http://host:-1/",
            "http://[::1/",
            "http://[nope]/",
            "http://[::1]x/",
            "http://::1/",
            "http://ho st/",
            "http://host/a b",
            "http://host/\u{e9}",
            "http://host/\r\nX: y",
            "http://h%41st/",
        ] {
            let e = Url::parse(text).expect_err(text);
            assert!(matches!(e, HttpError::InvalidUrl { .. }), "{text}: {e}");
        }
        let e = Url::parse("gopher://x/").unwrap_err().to_string();
        assert!(e.contains("only http and https"), "{e}");
    }
}
