//! Who may open a connection: the checks made before a WebSocket upgrade or an
//! event stream is accepted.
//!
//! * Origin: browsers send `Origin` on every WebSocket handshake, and a page on
//!   any site can open a socket to any server (cross-site WebSocket hijacking).
//!   By default only same-origin pages and non-browser clients (no `Origin`) are
//!   let in; `--allowed-origin` lists others, `*` allows all.
//! * Connection caps: a total and a per-client-IP limit. Each admitted
//!   connection holds a [`ConnectionSlot`]; dropping it frees the place.
//! * The client's IP is the socket's peer address, unless that address is a
//!   trusted proxy: then the rightmost untrusted `X-Forwarded-For` entry.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use crate::settings::TrustedProxy;

/// Why a connection was refused before it was accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The `Origin` is not allowed.
    #[error("origin not allowed")]
    Origin,
    /// The server is at `max-connections`.
    #[error("server at connection limit")]
    ServerFull,
    /// This client IP is at `max-connections-per-ip`.
    #[error("too many connections from this address")]
    TooManyFromIp,
    /// The token is missing (when required) or invalid.
    #[error("unauthorized")]
    Unauthorized,
    /// The token does not allow this resource.
    #[error("forbidden")]
    Forbidden,
}

impl Refusal {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Origin => StatusCode::FORBIDDEN,
            Refusal::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooManyFromIp => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Origin => "origin",
            Refusal::ServerFull => "max-connections",
            Refusal::TooManyFromIp => "max-connections-per-ip",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
        }
    }

    /// The HTTP answer: a status and a short reason, nothing more.
    pub fn response(&self) -> Response {
        let mut response = (self.status(), self.to_string()).into_response();
        if *self == Refusal::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The bearer token of an `Authorization` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The `Origin` policy.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// `allowed` as configured: empty means same-origin only, `*` means any.
    pub fn new(allowed: &[String]) -> OriginPolicy {
        OriginPolicy { allowed: allowed.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect() }
    }

    /// Checks a handshake's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // Not a browser: there is no user whose cookies or network a page could borrow.
            return Ok(());
        };
        let origin = origin.to_str().map_err(|_| Refusal::Origin)?.to_ascii_lowercase();
        if self.allowed.iter().any(|allowed| allowed == "*" || *allowed == origin) {
            return Ok(());
        }
        if self.allowed.is_empty() && is_same_origin(&origin, headers) {
            return Ok(());
        }
        Err(Refusal::Origin)
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn is_same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let host = host.to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    authority == host
        || authority.strip_suffix(default_port) == Some(host.as_str())
        || host.strip_suffix(default_port) == Some(authority)
}

/// Counts open connections, in total and per client IP.
pub struct ConnectionLimits {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_ip: usize,
}

/// One admitted connection's place; freed on drop.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits { total: AtomicUsize::new(0), per_ip: DashMap::new(), max_total, max_per_ip })
    }

    /// Takes a place for a connection from `ip`, or refuses.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        if total >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyFromIp);
        }
        *count += 1;
        Ok(ConnectionSlot { limits: self.clone(), ip })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        let emptied = match self.limits.per_ip.get_mut(&self.ip) {
            Some(mut count) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if emptied {
            self.limits.per_ip.remove_if(&self.ip, |_, count| *count == 0);
        }
    }
}

/// The client's address: the peer, or what a trusted proxy says the client was.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted_proxies: &[TrustedProxy]) -> IpAddr {
    let mut ip = peer.ip().to_canonical();
    if !trusted_proxies.iter().any(|net| net.0.contains(&ip)) {
        return ip;
    }
    // Walk X-Forwarded-For from the right: the last hop not run by us is the client.
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    for hop in forwarded.iter().flat_map(|v| v.split(',')).rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(hop) => {
                ip = hop.to_canonical();
                if !trusted_proxies.iter().any(|net| net.0.contains(&ip)) {
                    return ip;
                }
            }
            Err(_) => return ip,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn same_origin_by_default() {
        let policy = OriginPolicy::new(&[]);
        assert_eq!(policy.check(&headers(&[("host", "chat.example:8080")])), Ok(()), "no Origin: not a browser");
        let same = headers(&[("host", "chat.example:8080"), ("origin", "http://chat.example:8080")]);
        assert_eq!(policy.check(&same), Ok(()));
        let default_port = headers(&[("host", "chat.example"), ("origin", "https://chat.example:443")]);
        assert_eq!(policy.check(&default_port), Ok(()));
        let evil = headers(&[("host", "chat.example:8080"), ("origin", "http://evil.example")]);
        assert_eq!(policy.check(&evil), Err(Refusal::Origin));
        let null = headers(&[("host", "chat.example:8080"), ("origin", "null")]);
        assert_eq!(policy.check(&null), Err(Refusal::Origin));
    }

    #[test]
    fn an_allowlist_replaces_same_origin() {
        let policy = OriginPolicy::new(&["https://app.example/".into()]);
        let app = headers(&[("host", "sig.example"), ("origin", "https://APP.example")]);
        assert_eq!(policy.check(&app), Ok(()));
        let same = headers(&[("host", "sig.example"), ("origin", "https://sig.example")]);
        assert_eq!(policy.check(&same), Err(Refusal::Origin));
        let any = OriginPolicy::new(&["*".into()]);
        assert_eq!(any.check(&headers(&[("host", "a"), ("origin", "http://b")])), Ok(()));
    }

    #[test]
    fn slots_count_in_total_and_per_ip_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).err(), Some(Refusal::TooManyFromIp));
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).err(), Some(Refusal::ServerFull));
        drop(a1);
        assert_eq!(limits.open(), 2);
        limits.acquire(b).unwrap();
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<TrustedProxy> = vec!["127.0.0.1".parse().unwrap(), "10.1.0.0/16".parse().unwrap()];
        assert!("not-an-ip".parse::<TrustedProxy>().is_err());
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.2.3")]);
        let via_proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(client_ip(via_proxy, &forwarded, &proxies), "198.51.100.7".parse::<IpAddr>().unwrap());
        let direct: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_ip(direct, &forwarded, &proxies), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(via_proxy, &HeaderMap::new(), &proxies), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
