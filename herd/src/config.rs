//! The herd's shape: its servers (name, host, port) and the links between
//! them. [`HerdConfig::default`] is HERD.md's built-in herd;
//! [`HerdConfig::from_json`] reads the configuration file form:
//!
//! ```json
//! {
//!   "servers": [
//!     {"name": "Alford", "host": "127.0.0.1", "port": 12000},
//!     {"name": "Ball",   "host": "127.0.0.1", "port": 12001}
//!   ],
//!   "links": [["Alford", "Ball"]]
//! }
//! ```
//!
//! A server may also name its status address, `"status": "127.0.0.1:13000"`
//! (optional): the status page polls it (see the `status` module).
//!
//! A configuration is validated when it is made: server names are 1 to
//! [`MAX_NAME_LEN`] printable ASCII bytes without spaces (they go on the
//! wire as a field) and unique; hosts are IP addresses (or `localhost`);
//! two servers never share a host and a non-zero port; links name known
//! servers, never link a server to itself, and appear once (in either
//! order). Port 0 is allowed: the server listens on a free port, and a test
//! that starts such a herd records the real ports with
//! [`HerdConfig::set_port`] before the servers dial each other.
//!
//! ```
//! use gyre_herd::config::HerdConfig;
//!
//! let herd = HerdConfig::default();
//! assert_eq!(herd.neighbours("Alford"), ["Hamilton", "Welsh"]);
//! assert_eq!(herd.addr("Ball").unwrap().to_string(), "127.0.0.1:12001");
//!
//! let err = HerdConfig::from_json(r#"{"servers": [{"name": "A", "host": "127.0.0.1", "port": 1}],
//!                                     "links": [["A", "B"]]}"#).unwrap_err();
//! assert_eq!(err.to_string(), "link [\"A\", \"B\"]: no server is named \"B\"");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde_json::{Map, Value};

/// The longest server name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Its name, as it appears in AT lines and log file names.
    pub name: String,
    /// Where it listens, and where its neighbours reach it.
    pub host: IpAddr,
    /// Its port (0: any free port, for tests).
    pub port: u16,
    /// Where its status page listens (`"status": "127.0.0.1:13000"`,
    /// optional): what the status page of any server polls to show this
    /// one, and an origin the status listeners allow (CORS). Informational:
    /// the `--status ADDR` option is what makes a server listen.
    pub status: Option<SocketAddr>,
}

impl ServerSpec {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// A configuration that is not valid, with a message that says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A validated herd: servers and the (two-way) links between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HerdConfig {
    servers: Vec<ServerSpec>,
    links: Vec<(String, String)>,
}

impl Default for HerdConfig {
    /// HERD.md's herd: Alford 12000, Ball 12001, Hamilton 12002, Holiday
    /// 12003, Welsh 12004 on 127.0.0.1; links Alford-Hamilton, Alford-Welsh,
    /// Ball-Holiday, Ball-Welsh, Hamilton-Holiday.
    fn default() -> Self {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let servers = [
            ("Alford", 12000),
            ("Ball", 12001),
            ("Hamilton", 12002),
            ("Holiday", 12003),
            ("Welsh", 12004),
        ]
        .map(|(name, port)| ServerSpec {
            name: name.to_string(),
            host: localhost,
            port,
            status: None,
        })
        .to_vec();
        let links = [
            ("Alford", "Hamilton"),
            ("Alford", "Welsh"),
            ("Ball", "Holiday"),
            ("Ball", "Welsh"),
            ("Hamilton", "Holiday"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .to_vec();
        HerdConfig { servers, links }
    }
}

impl HerdConfig {
    /// A herd from its parts, validated (see the [module docs](self)).
    pub fn new(
        servers: Vec<ServerSpec>,
        links: Vec<(String, String)>,
    ) -> Result<HerdConfig, ConfigError> {
        let config = HerdConfig { servers, links };
        config.validate()?;
        Ok(config)
    }

    /// Reads the JSON form. Unknown keys are errors (a typo should not
    /// silently leave a link out).
    pub fn from_json(text: &str) -> Result<HerdConfig, ConfigError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::new(format!("not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| ConfigError::new("the configuration must be a JSON object"))?;
        check_keys(root, &["servers", "links"], "the configuration")?;
        let servers = root
            .get("servers")
            .and_then(Value::as_array)
            .ok_or_else(|| ConfigError::new("\"servers\" must be an array of servers"))?
            .iter()
            .enumerate()
            .map(|(i, v)| server_from_json(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        let links = match root.get("links") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .ok_or_else(|| ConfigError::new("\"links\" must be an array of pairs of names"))?
                .iter()
                .enumerate()
                .map(|(i, v)| link_from_json(i, v))
                .collect::<Result<Vec<_>, _>>()?,
        };
        HerdConfig::new(servers, links)
    }

    /// Reads the JSON form from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<HerdConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("cannot read {}: {e}", path.display())))?;
        HerdConfig::from_json(&text)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))
    }

    /// The JSON form (what [`from_json`](Self::from_json) reads).
    pub fn to_json(&self) -> String {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                let mut v =
                    serde_json::json!({"name": s.name, "host": s.host.to_string(), "port": s.port});
                if let Some(status) = s.status {
                    v["status"] = Value::String(status.to_string());
                }
                v
            })
            .collect();
        let links: Vec<Value> = self
            .links
            .iter()
            .map(|(a, b)| serde_json::json!([a, b]))
            .collect();
        serde_json::json!({"servers": servers, "links": links}).to_string()
    }

    /// The servers, in configuration order.
    pub fn servers(&self) -> &[ServerSpec] {
        &self.servers
    }

    /// The links, in configuration order.
    pub fn links(&self) -> &[(String, String)] {
        &self.links
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Option<&ServerSpec> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The address of the server called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.server(name).map(ServerSpec::addr)
    }

    /// The names of `name`'s neighbours, sorted (empty for an unknown name).
    pub fn neighbours(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .links
            .iter()
            .filter_map(|(a, b)| {
                if a == name {
                    Some(b.as_str())
                } else if b == name {
                    Some(a.as_str())
                } else {
                    None
                }
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Records the port a server really listens on (after it bound port 0).
    pub fn set_port(&mut self, name: &str, port: u16) -> Result<(), ConfigError> {
        let spec = self
            .servers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| ConfigError::new(format!("no server is named {name:?}")))?;
        let old = std::mem::replace(&mut spec.port, port);
        if let Err(e) = self.validate() {
            if let Some(spec) = self.servers.iter_mut().find(|s| s.name == name) {
                spec.port = old;
            }
            return Err(e);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new("the herd has no servers"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            check_name(&s.name).map_err(|e| ConfigError::new(format!("server {i}: {e}")))?;
            if self.servers[..i].iter().any(|o| o.name == s.name) {
                return Err(ConfigError::new(format!(
                    "two servers are named {:?}",
                    s.name
                )));
            }
            if s.port != 0 {
                if let Some(other) = self.servers[..i]
                    .iter()
                    .find(|o| o.port == s.port && o.host == s.host)
                {
                    return Err(ConfigError::new(format!(
                        "{:?} and {:?} both listen on {}",
                        other.name,
                        s.name,
                        s.addr()
                    )));
                }
            }
        }
        for (i, (a, b)) in self.links.iter().enumerate() {
            let what = format!("link [{a:?}, {b:?}]");
            for end in [a, b] {
                if self.server(end).is_none() {
                    return Err(ConfigError::new(format!(
                        "{what}: no server is named {end:?}"
                    )));
                }
            }
            if a == b {
                return Err(ConfigError::new(format!(
                    "{what}: a server cannot link to itself"
                )));
            }
            if self.links[..i]
                .iter()
                .any(|(c, d)| (c == a && d == b) || (c == b && d == a))
            {
                return Err(ConfigError::new(format!("{what} appears twice")));
            }
        }
        Ok(())
    }
}

/// Checks a server name: the bytes a name may have on the wire.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} must have 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "name {name:?} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ConfigError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ConfigError::new(format!(
            "{what}: unknown key {k:?} (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn server_from_json(i: usize, v: &Value) -> Result<ServerSpec, ConfigError> {
    let what = format!("server {i}");
    let obj = v
        .as_object()
        .ok_or_else(|| ConfigError::new(format!("{what}: must be an object")))?;
    check_keys(obj, &["name", "host", "port", "status"], &what)?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ConfigError::new(format!("{what}: \"name\" must be a string")))?;
    let host = match obj.get("host") {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => {
            let h = h
                .as_str()
                .ok_or_else(|| ConfigError::new(format!("{what}: \"host\" must be a string")))?;
            parse_host(h).ok_or_else(|| {
                ConfigError::new(format!(
                    "{what} ({name}): host {h:?} is not an IP address or \"localhost\""
                ))
            })?
        }
    };
    let port = obj
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            ConfigError::new(format!(
                "{what} ({name}): \"port\" must be an integer from 0 to 65535"
            ))
        })?;
    let status = match obj.get("status") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    ConfigError::new(format!(
                "{what} ({name}): \"status\" must be an address such as \"127.0.0.1:13000\""
            ))
                })?,
        ),
    };
    Ok(ServerSpec {
        name: name.to_string(),
        host,
        port,
        status,
    })
}

fn parse_host(h: &str) -> Option<IpAddr> {
    if h == "localhost" {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        h.parse().ok()
    }
}

fn link_from_json(i: usize, v: &Value) -> Result<(String, String), ConfigError> {
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(a), Value::String(b)]) => Ok((a.clone(), b.clone())),
        _ => Err(ConfigError::new(format!(
            "link {i}: must be a pair of server names, like [\"Alford\", \"Ball\"]"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"{
      "servers": [
        {"name": "Alford", "host": "127.0.0.1", "port": 12000},
        {"name": "Ball",   "host": "127.0.0.1", "port": 12001}
      ],
      "links": [["Alford", "Ball"]]
    }"#;

    fn err(json: &str) -> String {
        HerdConfig::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn default_herd() {
        let herd = HerdConfig::default();
        let names: Vec<(&str, u16)> = herd
            .servers()
            .iter()
            .map(|s| (s.name.as_str(), s.port))
            .collect();
        assert_eq!(
            names,
            [
                ("Alford", 12000),
                ("Ball", 12001),
                ("Hamilton", 12002),
                ("Holiday", 12003),
                ("Welsh", 12004)
            ]
        );
        assert!(herd
            .servers()
            .iter()
            .all(|s| s.host.to_string() == "127.0.0.1"));
        assert_eq!(herd.neighbours("Alford"), ["Hamilton", "Welsh"]);
        assert_eq!(herd.neighbours("Ball"), ["Holiday", "Welsh"]);
        assert_eq!(herd.neighbours("Hamilton"), ["Alford", "Holiday"]);
        assert_eq!(herd.neighbours("Holiday"), ["Ball", "Hamilton"]);
        assert_eq!(herd.neighbours("Welsh"), ["Alford", "Ball"]);
        assert!(herd.neighbours("Nobody").is_empty());
        herd.validate().unwrap();
    }

    #[test]
    fn json_form() {
        let herd = HerdConfig::from_json(TWO).unwrap();
        assert_eq!(herd.servers().len(), 2);
        assert_eq!(herd.addr("Ball"), Some("127.0.0.1:12001".parse().unwrap()));
        assert_eq!(herd.neighbours("Ball"), ["Alford"]);
        assert_eq!(HerdConfig::from_json(&herd.to_json()).unwrap(), herd);
        let default = HerdConfig::default();
        assert_eq!(HerdConfig::from_json(&default.to_json()).unwrap(), default);
    }

    #[test]
    fn hosts() {
        let herd = HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "host": "localhost", "port": 1},
                            {"name": "B", "host": "::1", "port": 1},
                            {"name": "C", "port": 2}]}"#,
        )
        .unwrap();
        assert_eq!(herd.addr("A").unwrap().to_string(), "127.0.0.1:1");
        assert_eq!(herd.addr("B").unwrap().to_string(), "[::1]:1");
        assert_eq!(herd.addr("C").unwrap().to_string(), "127.0.0.1:2");
        assert!(herd.links().is_empty());
        assert!(
            err(r#"{"servers": [{"name": "A", "host": "example.com", "port": 1}]}"#)
                .contains("not an IP address")
        );
    }

    #[test]
    fn port_zero_and_set_port() {
        let mut herd = HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "host": "127.0.0.1", "port": 0},
                            {"name": "B", "host": "127.0.0.1", "port": 0}],
                "links": [["A", "B"]]}"#,
        )
        .unwrap();
        herd.set_port("A", 4000).unwrap();
        assert_eq!(herd.addr("A").unwrap().port(), 4000);
        let e = herd.set_port("B", 4000).unwrap_err().to_string();
        assert!(e.contains("both listen on 127.0.0.1:4000"), "{e}");
        assert_eq!(
            herd.addr("B").unwrap().port(),
            0,
            "a rejected port is not kept"
        );
        assert!(herd.set_port("C", 1).is_err());
    }

    #[test]
    fn invalid_configurations() {
        assert!(err("[").starts_with("not valid JSON"));
        assert!(err("[]").contains("must be a JSON object"));
        assert!(err(r#"{"links": []}"#).contains("\"servers\" must be an array"));
        assert_eq!(err(r#"{"servers": []}"#), "the herd has no servers");
        assert!(err(r#"{"servers": [], "extra": 1}"#).contains("unknown key \"extra\""));
        assert!(
            err(r#"{"servers": [{"name": "A", "port": 1, "hots": "x"}]}"#)
                .contains("unknown key \"hots\"")
        );
        assert!(err(r#"{"servers": [{"name": "A", "port": 65536}]}"#).contains("\"port\""));
        assert!(err(r#"{"servers": [{"name": "A", "port": -1}]}"#).contains("\"port\""));
        assert!(err(r#"{"servers": [{"name": 3, "port": 1}]}"#).contains("\"name\""));
        assert!(err(r#"{"servers": [{"name": "", "port": 1}]}"#).contains("1 to 64"));
        assert!(err(r#"{"servers": [{"name": "Al ford", "port": 1}]}"#).contains("without spaces"));
        assert!(err(r#"{"servers": [{"name": "Alfórd", "port": 1}]}"#).contains("printable ASCII"));
        assert_eq!(
            err(r#"{"servers": [{"name": "A", "port": 1}, {"name": "A", "port": 2}]}"#),
            "two servers are named \"A\""
        );
        assert!(
            err(r#"{"servers": [{"name": "A", "port": 1}, {"name": "B", "port": 1}]}"#)
                .contains("both listen on 127.0.0.1:1")
        );
        let two = r#"{"servers": [{"name": "A", "port": 1}, {"name": "B", "port": 2}], "links": "#;
        assert_eq!(
            err(&format!("{two}[[\"A\", \"C\"]]}}")),
            "link [\"A\", \"C\"]: no server is named \"C\""
        );
        assert_eq!(
            err(&format!("{two}[[\"A\", \"A\"]]}}")),
            "link [\"A\", \"A\"]: a server cannot link to itself"
        );
        assert_eq!(
            err(&format!("{two}[[\"A\", \"B\"], [\"B\", \"A\"]]}}")),
            "link [\"B\", \"A\"] appears twice"
        );
        assert!(err(&format!("{two}[[\"A\"]]}}")).contains("must be a pair"));
        assert!(err(&format!("{two}[[\"A\", \"B\", \"C\"]]}}")).contains("must be a pair"));
        assert!(err(&format!("{two}{{}}}}")).contains("\"links\" must be an array"));
    }

    #[test]
    fn from_file_names_the_file() {
        let e = HerdConfig::from_file("/nonexistent/herd.json").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/herd.json"), "{e}");
    }
}
