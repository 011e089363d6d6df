//! [`AllowedHosts`]: the names the gateway answers to, against DNS rebinding.
//!
//! A web page whose own name is made to resolve to 127.0.0.1 reaches a loopback gateway from
//! the victim's browser, and the browser, seeing one origin, lets the page read the answers:
//! an open console, its form token, the topics. Such a request carries the page's name in
//! `Host`, so the gateway answers only the names it is known by ([`check`]: 403
//! `host_not_allowed`). A state-changing request (any method but GET, HEAD, OPTIONS) that a
//! browser sends from a page carries `Origin`: it must name an allowed host, or the request's
//! own host when every host is allowed (403 `origin_not_allowed`; `Origin: null`, from sandboxed
//! frames and redirects, is refused too). Requests without `Host` or `Origin` (tests calling
//! the router, services, `curl`) are not affected: browsers always send them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::http::error::ApiError;

/// The names a browser on this machine uses for the loopback interface.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The host names (without port) requests may carry in `Host`. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Option<Arc<Vec<String>>>);

impl AllowedHosts {
    /// Every host: what a gateway mounted in another app does unless told otherwise.
    pub fn any() -> Self {
        AllowedHosts(None)
    }

    /// Only `names`: exact host names or addresses (IPv6 with or without brackets), or
    /// `*.domain` for every name below `domain`.
    pub fn only<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let names = names
            .into_iter()
            .map(|name| normalize(name.as_ref()))
            .filter(|name| !name.is_empty())
            .collect();
        AllowedHosts(Some(Arc::new(names)))
    }

    /// The loopback names and `address` (the address the gateway listens on).
    pub fn loopback_and(address: IpAddr) -> Self {
        let address = address.to_string();
        AllowedHosts::only(LOOPBACK_NAMES.iter().copied().chain([address.as_str()]))
    }

    /// A comma-separated list (`--allowed-hosts`); `*` alone allows every host.
    pub fn parse(list: &str) -> Result<Self, String> {
        if list.trim() == "*" {
            return Ok(AllowedHosts::any());
        }
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err("name at least one host, or * for any".to_owned());
        }
        if let Some(bad) = names
            .iter()
            .find(|n| n.contains(['/', ' ', '@']) || n[1..].contains('*'))
        {
            return Err(format!(
                "{bad:?} is not a host name (write names without scheme or path; *.domain for its subdomains)"
            ));
        }
        Ok(AllowedHosts::only(names))
    }

    /// Whether every host is allowed.
    pub fn is_any(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `host` (a name or address, without port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let Some(names) = &self.0 else {
            return true;
        };
        let host = normalize(host);
        names.iter().any(|name| match name.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *name == host,
        })
    }
}

impl std::fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("*"),
            Some(names) => f.write_str(&names.join(",")),
        }
    }
}

/// Lower case, without IPv6 brackets or a trailing dot.
fn normalize(name: &str) -> String {
    let name = name.trim().trim_end_matches('.');
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The host of an authority (`host[:port]`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        // One colon: a port. More: an unbracketed IPv6 address, no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// The host of an `Origin` (`scheme://host[:port]`); `None` for `null` or anything else.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, authority) = origin.split_once("://")?;
    (!authority.is_empty() && !authority.contains('/')).then(|| host_of(authority))
}

/// Refuses a request whose `Host` is not allowed, and a state-changing one whose `Origin` is
/// another site's.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allowed = state.allowed_hosts();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_of)
        .or_else(|| request.uri().host());
    if let Some(host) = host
        && !allowed.allows(host)
    {
        return refuse(
            "host_not_allowed",
            "this gateway does not answer to that host name; allow it with --allowed-hosts \
             (KAFKIT_ALLOWED_HOSTS)",
        );
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().ok().and_then(origin_host).map(normalize);
        let same_site = match (&origin, host) {
            (Some(origin), _) if !allowed.is_any() => allowed.allows(origin),
            (Some(origin), Some(host)) => *origin == normalize(host),
            _ => false,
        };
        if !same_site {
            return refuse(
                "origin_not_allowed",
                "a page of another site may not send this request (Origin)",
            );
        }
    }
    next.run(request).await
}

fn refuse(code: &'static str, message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, code, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_or_below_a_wildcard_domain() {
        let allowed = AllowedHosts::parse("gw.example, *.internal.example,[::1]").unwrap();
        assert!(allowed.allows("GW.example"));
        assert!(allowed.allows("a.internal.example"));
        assert!(allowed.allows("b.a.internal.example"));
        assert!(allowed.allows("::1"));
        assert!(!allowed.allows("internal.example"));
        assert!(!allowed.allows("xinternal.example"));
        assert!(!allowed.allows("gw.example.evil"));
        assert!(AllowedHosts::parse("*").unwrap().allows("anything"));
        assert!(AllowedHosts::parse("http://gw.example").is_err());
        assert!(AllowedHosts::parse(" , ").is_err());
        let local = AllowedHosts::loopback_and("10.0.0.5".parse().unwrap());
        assert_eq!(local.to_string(), "localhost,127.0.0.1,::1,10.0.0.5");
    }

    #[test]
    fn authorities_lose_their_port_and_origins_their_scheme() {
        assert_eq!(host_of("gw.example:8080"), "gw.example");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("gw.example"), "gw.example");
        assert_eq!(origin_host("https://gw.example:8443"), Some("gw.example"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(origin_host("http://a/b"), None);
    }
}
