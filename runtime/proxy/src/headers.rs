//! Header handling for a forwarding proxy: hop-by-hop fields (RFC 9110, section 7.6.1) and the
//! `Host`/`Origin` checks that stand in for the upstream's DNS-rebinding protection.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: &[&str] =
    &["connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade", "trailer"];

/// Removes the hop-by-hop fields, including every field that `Connection` names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// True if the `Content-Type` is `text/event-stream` (parameters allowed).
pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// True if the request accepts an event stream.
pub(super) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Names and values of headers, lower-case names, for an interceptor's stream context.
/// Credentials (`authorization`, `proxy-authorization`, `cookie`, `set-cookie`, and the API
/// keys `x-api-key` (Anthropic) and `api-key` (Azure OpenAI)) are given as
/// their SHA-256 digest, `sha256:` and 64 hex digits: an interceptor is not trusted with a
/// secret, but may tell tenants apart by it (a budget per API key).
pub(super) fn context_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str();
            let value = match name {
                "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key" | "api-key" => {
                    digest(value.as_bytes())
                }
                _ => value.to_str().ok()?.to_string(),
            };
            Some((name.to_string(), value))
        })
        .collect()
}

fn digest(secret: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let mut text = String::from("sha256:");
    for byte in sha2::Sha256::digest(secret) {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// An allow-list of hosts or origins with optional port wildcards.
#[derive(Debug, Clone, Default)]
pub(super) struct AllowList {
    /// Empty means everything is allowed.
    patterns: Vec<String>,
}

impl AllowList {
    pub(super) fn new(patterns: Vec<String>) -> Self {
        AllowList { patterns: patterns.into_iter().map(|p| p.to_ascii_lowercase()).collect() }
    }

    /// The loopback hosts (`localhost`, `127.0.0.1`, `[::1]`, any port).
    pub(super) fn loopback_hosts() -> Self {
        Self::new(vec!["localhost:*".into(), "127.0.0.1:*".into(), "[::1]:*".into()])
    }

    /// The loopback origins, over http or https, any port.
    pub(super) fn loopback_origins() -> Self {
        let mut patterns = Vec::new();
        for scheme in ["http", "https"] {
            for host in ["localhost", "127.0.0.1", "[::1]"] {
                patterns.push(format!("{scheme}://{host}:*"));
            }
        }
        Self::new(patterns)
    }

    pub(super) fn allows_everything(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True if `value` matches a pattern: exactly, or, for a pattern ending in `:*`, with any
    /// port or none.
    pub(super) fn allows(&self, value: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let value = value.to_ascii_lowercase();
        self.patterns.iter().any(|p| match p.strip_suffix(":*") {
            Some(base) => {
                value == base
                    || value
                        .strip_prefix(base)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            }
            None => value == *p,
        })
    }
}

/// Why a request was refused before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 421 Misdirected Request, as the MCP SDKs answer.
    InvalidHost,
    /// 403 Forbidden, as the MCP SDKs answer.
    InvalidOrigin,
}

/// Checks `Host` (or, for HTTP/2, the request's `:authority`) and `Origin` against the allow-lists.
pub(super) fn check_host_and_origin(
    headers: &HeaderMap,
    authority: Option<&str>,
    hosts: &AllowList,
    origins: &AllowList,
) -> Result<(), Refusal> {
    if !hosts.allows_everything() {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or(authority);
        if !host.is_some_and(|h| hosts.allows(h)) {
            return Err(Refusal::InvalidHost);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origins.allows(origin.to_str().unwrap_or(""))
    {
        return Err(Refusal::InvalidOrigin);
    }
    Ok(())
}

/// Headers a route or an upstream sets on every request (replacing the client's; values marked
/// sensitive, so HTTP/2 never indexes them) and removes from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct HeaderChanges {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderChanges {
    /// The changes of a configuration: `set` values with `${NAME}` expanded from the environment
    /// now. An error names the header, never a value (it may hold a credential).
    pub(super) fn new(set: &std::collections::BTreeMap<String, String>, remove: &[String]) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let set = set
            .iter()
            .map(|(name, template)| {
                let at = || format!("set_request_headers.{name}");
                let name = HeaderName::from_bytes(name.as_bytes()).with_context(at)?;
                let value = crate::config::expand_env(template).with_context(at)?;
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| anyhow::anyhow!("{}: the value is not a valid header value", at()))?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<anyhow::Result<_>>()?;
        let remove = remove
            .iter()
            .map(|name| HeaderName::from_bytes(name.as_bytes()).context("remove_request_headers"))
            .collect::<anyhow::Result<_>>()?;
        Ok(HeaderChanges { set, remove })
    }

    /// True if it sets any header (a credential, typically).
    pub(super) fn sets_any(&self) -> bool {
        !self.set.is_empty()
    }

    /// Applies the changes, after the hop-by-hop headers are gone.
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// `identity`: what the proxy asks the upstream for when an event stream may come back, since it
/// must read the events.
pub(super) fn identity() -> HeaderValue {
    HeaderValue::from_static("identity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_fields_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-session-id"));
    }

    #[test]
    fn allow_lists_match_ports_as_written() {
        let hosts = AllowList::loopback_hosts();
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:443", "LOCALHOST:3"] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in ["evil.com", "localhost.evil.com", "127.0.0.1.nip.io:80", "localhost:", "localhost:8x"] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let exact = AllowList::new(vec!["api.example.com:8443".into()]);
        assert!(exact.allows("api.example.com:8443") && !exact.allows("api.example.com"));
        assert!(AllowList::loopback_origins().allows("http://localhost:5173"));
        assert!(!AllowList::loopback_origins().allows("http://evil.example"));
    }

    #[test]
    fn event_stream_content_type_with_parameters() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("Text/Event-Stream; charset=utf-8"));
        assert!(is_event_stream(&h));
        h.insert("content-type", HeaderValue::from_static("text/event-streamx"));
        assert!(!is_event_stream(&h));
    }
}
