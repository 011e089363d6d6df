//! [`AuthThrottle`]: failed authentications counted per client network, so API keys cannot be
//! guessed at speed, whatever route they are tried on.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where failures are counted: an IPv4 address, or an IPv6 /64 (one host gets a whole /64, so
/// counting its addresses one by one would give it unlimited tries). Clients without a known
/// address (a router mounted without connect info) share one count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4(std::net::Ipv4Addr),
    V6Prefix64(u64),
    Unknown,
}

impl Network {
    fn of(client: Option<IpAddr>) -> Network {
        match client.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Network::V4(v4),
            Some(IpAddr::V6(v6)) => Network::V6Prefix64(prefix_64(v6)),
            None => Network::Unknown,
        }
    }
}

fn prefix_64(address: Ipv6Addr) -> u64 {
    (address.to_bits() >> 64) as u64
}

/// Failed authentications one client network may make within [`AUTH_WINDOW`]; the next
/// attempt is answered 429 until the oldest failure leaves the window.
pub const MAX_AUTH_FAILURES: usize = 5;
/// The window failed authentications are counted in.
pub const AUTH_WINDOW: Duration = Duration::from_secs(60);
/// Most client networks whose failures are remembered; past it the one with the oldest last
/// failure is forgotten (memory stays bounded under a spray of addresses).
pub const MAX_AUTH_CLIENTS: usize = 10_000;

/// Recent failed authentications per client network, so API keys cannot be guessed at speed:
/// a wrong `Bearer` key on any route and a failed console login count alike.
///
/// The address is the TCP peer's: behind a reverse proxy every client shares the proxy's, and
/// a gateway mounted without connect info counts all clients as one. Both still stop guessing.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<Network, VecDeque<Instant>>>,
}

impl AuthThrottle {
    /// How long `client` must wait before trying again; `None` when it may try now.
    pub fn wait(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let client = Network::of(client);
        let mut failures = self.failures.lock().expect("not poisoned");
        let recent = failures.get_mut(&client)?;
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= AUTH_WINDOW)
        {
            recent.pop_front();
        }
        if recent.is_empty() {
            failures.remove(&client);
            return None;
        }
        (recent.len() >= MAX_AUTH_FAILURES)
            .then(|| AUTH_WINDOW.saturating_sub(now.duration_since(recent[0])))
    }

    pub fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let client = Network::of(client);
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= MAX_AUTH_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, recent| {
                recent
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < AUTH_WINDOW)
            });
            if failures.len() >= MAX_AUTH_CLIENTS
                && let Some(stalest) = failures
                    .iter()
                    .min_by_key(|(_, recent)| recent.back().copied())
                    .map(|(address, _)| *address)
            {
                failures.remove(&stalest);
            }
        }
        let recent = failures.entry(client).or_default();
        recent.push_back(now);
        // Only the last MAX_AUTH_FAILURES matter.
        while recent.len() > MAX_AUTH_FAILURES {
            recent.pop_front();
        }
    }

    pub fn succeeded(&self, client: Option<IpAddr>) {
        self.failures
            .lock()
            .expect("not poisoned")
            .remove(&Network::of(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let throttle = AuthThrottle::default();
        let client = Some("192.0.2.9".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_AUTH_FAILURES {
            assert_eq!(throttle.wait(client, start), None);
            throttle.failed(client, start);
        }
        assert_eq!(throttle.wait(client, start), Some(AUTH_WINDOW));
        let later = start + AUTH_WINDOW / 2;
        assert_eq!(throttle.wait(client, later), Some(AUTH_WINDOW / 2));
        assert_eq!(throttle.wait(client, start + AUTH_WINDOW), None);
    }

    #[test]
    fn ipv6_clients_count_by_64_and_mapped_ipv4_as_ipv4() {
        let net = |text: &str| Network::of(Some(text.parse().unwrap()));
        assert_eq!(
            net("2001:db8:1:2::1"),
            net("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.1"));
        assert_ne!(net("192.0.2.1"), net("192.0.2.2"));
    }
}

/// Failed authentication is throttled on every route, per client network.
#[cfg(test)]
mod route_tests {
    use axum::extract::ConnectInfo;
    use axum::http::{StatusCode, header};

    use crate::router;
    use crate::testing::{bearer, call, get, state_with_keys};

    const FAILURES: usize = 5;

    fn from(address: &str, key: &str) -> axum::http::Request<axum::body::Body> {
        let mut request = bearer(get("/topics"), key);
        let peer: std::net::SocketAddr = address.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    #[tokio::test]
    async fn wrong_bearer_keys_are_throttled_per_address_and_per_ipv6_64() {
        let app = router(state_with_keys("right-key-0123456789:read=*"));
        // Wrong keys are 401 up to the limit...
        for i in 0..FAILURES {
            let answer = call(&app, from("[2001:db8:1:2::10]:5000", &format!("guess-{i}"))).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
        }
        // ...then every attempt from that /64 is refused, the right key included, so the
        // answer tells a guesser nothing; it says how long to wait.
        for address in ["[2001:db8:1:2::10]:5001", "[2001:db8:1:2:ffff::1]:80"] {
            let refused = call(&app, from(address, "right-key-0123456789")).await;
            assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{address}");
            assert_eq!(refused.body["error"]["code"], "too_many_failures");
            let wait: u64 = refused.headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        // Another /64, and an IPv4 client, are served.
        let other = call(
            &app,
            from("[2001:db8:1:3::10]:5000", "right-key-0123456789"),
        )
        .await;
        assert_eq!(other.status, StatusCode::OK, "{}", other.text);
        let v4 = call(&app, from("192.0.2.7:5000", "right-key-0123456789")).await;
        assert_eq!(v4.status, StatusCode::OK, "{}", v4.text);
        // The console login shares the count: that /64 cannot log in either.
        let mut login = axum::http::Request::post("/console/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from("key=right-key-0123456789"))
            .unwrap();
        let peer: std::net::SocketAddr = "[2001:db8:1:2::99]:1".parse().unwrap();
        login.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(
            call(&app, login).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
