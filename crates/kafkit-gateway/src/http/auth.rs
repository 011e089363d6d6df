//! API keys: who may write and read which topics.
//!
//! `KAFKIT_API_KEYS` lists the keys, `;`-separated. Each is `KEY:GRANTS`, where `GRANTS` is a
//! `,`-separated list of `write=PATTERNS`, `read=PATTERNS` and `create=PATTERNS` (topics the key
//! may create from the console: a grant of its own, since writing a topic is no reason to
//! create others), and `PATTERNS` a `|`-separated list of topic globs (`*` any run of
//! characters, `?` one character):
//!
//! ```text
//! KAFKIT_API_KEYS='s3cr3t-producer:write=orders.*|audit,read=orders.*;s3cr3t-viewer:read=*'
//! ```
//!
//! Clients send `Authorization: Bearer KEY` (the scheme in any case). A missing or unknown key
//! is 401, a topic outside the key's list 403. With no key configured the gateway is open, and
//! `serve` then refuses a non-loopback listener unless told `--allow-unauthenticated`. Keys are
//! [`Secret`]s: only their position (`key#2`) ever reaches a log line.
//!
//! The cluster's own topics (`__consumer_offsets`, `__transaction_state`, any `__` topic,
//! Schema Registry's `_schemas`, Kafka Connect's `connect-*`) are out of reach of broad
//! patterns such as `*`: a key reaches them only through a pattern that spells their prefix
//! out (`__consumer_offsets`, `__*`, `_schemas`, `connect-*`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use kafkit::secret::Secret;

use crate::AppState;
use crate::http::error::ApiError;
use throttle::MAX_AUTH_FAILURES;

pub(crate) mod throttle;
mod topic_pattern;

use topic_pattern::TopicPattern;

/// One API key and what it may do.
#[derive(Debug)]
pub struct ApiKey {
    /// `key#N`, its position in the list: what logs and idempotency scopes use.
    pub name: String,
    secret: Secret,
    write: Vec<TopicPattern>,
    read: Vec<TopicPattern>,
    create: Vec<TopicPattern>,
}

impl ApiKey {
    fn allows(patterns: &[TopicPattern], topic: &str) -> bool {
        patterns.iter().any(|p| p.matches(topic))
    }
}

/// Fewest characters an API key may have.
pub const MIN_KEY_LEN: usize = 16;
/// Fewest different characters an API key may have.
pub const MIN_KEY_DISTINCT: usize = 8;
/// The rule for API keys, as `kafkit serve` states it when it refuses one.
pub const WEAK_KEY_RULE: &str = "an API key has at least 16 characters, at least 8 of them \
    different (e.g. `openssl rand -hex 16`)";

/// Every configured key.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<Arc<ApiKey>>,
}

impl ApiKeys {
    /// Parses the `KAFKIT_API_KEYS` format. Errors name the entry by position, never by key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<Arc<ApiKey>> = Vec::new();
        for (index, entry) in raw.split(';').map(str::trim).enumerate() {
            let name = format!("key#{}", index + 1);
            if entry.is_empty() {
                continue;
            }
            let (secret, grants) = entry
                .split_once(':')
                .ok_or_else(|| format!("{name}: expected KEY:GRANTS"))?;
            if secret.is_empty() || secret.chars().any(char::is_whitespace) {
                return Err(format!("{name}: the key is empty or contains whitespace"));
            }
            if keys.iter().any(|k| k.secret.expose() == secret) {
                return Err(format!("{name}: the same key is listed twice"));
            }
            let (mut write, mut read, mut create) = (None, None, None);
            for grant in grants.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                let (kind, patterns) = grant
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: expected write=… or read=…, got {grant:?}"))?;
                let slot = match kind.trim() {
                    "write" => &mut write,
                    "read" => &mut read,
                    "create" => &mut create,
                    other => return Err(format!("{name}: unknown grant {other:?}")),
                };
                if slot.is_some() {
                    return Err(format!("{name}: {kind} given twice"));
                }
                let parsed = patterns
                    .split('|')
                    .map(|p| TopicPattern::parse(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{name}: {e}"))?;
                *slot = Some(parsed);
            }
            keys.push(Arc::new(ApiKey {
                name,
                secret: Secret::new(secret),
                write: write.unwrap_or_default(),
                read: read.unwrap_or_default(),
                create: create.unwrap_or_default(),
            }));
        }
        if keys.is_empty() {
            return Err("no key in the list".to_owned());
        }
        Ok(ApiKeys { keys })
    }

    /// The name (`key#N`) of the first key a guesser could find: shorter than
    /// [`MIN_KEY_LEN`] characters or with fewer than [`MIN_KEY_DISTINCT`] different ones
    /// ([`WEAK_KEY_RULE`]). `kafkit serve` refuses to start with one.
    pub fn weak_key(&self) -> Option<&str> {
        self.keys.iter().find_map(|key| {
            let secret = key.secret.expose();
            let distinct: std::collections::HashSet<char> = secret.chars().collect();
            (secret.chars().count() < MIN_KEY_LEN || distinct.len() < MIN_KEY_DISTINCT)
                .then_some(key.name.as_str())
        })
    }

    /// The key whose secret is `presented`. Every key is compared in full, in constant time,
    /// so timing does not tell how much of a guess was right.
    pub(crate) fn find(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(key.secret.expose().as_bytes(), presented.as_bytes()) {
                found = Some(Arc::clone(key));
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling: anyone (no key configured) or the holder of one key.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No key is configured: everything is allowed, internal topics included (an open gateway
    /// listens on loopback unless its operator said otherwise).
    Open,
    /// Authenticated with this key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// A name for scoping and logs: `open` or `key#N`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "open",
            Caller::Key(key) => &key.name,
        }
    }

    /// True when the caller may produce to `topic`.
    pub fn may_write(&self, topic: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => ApiKey::allows(&key.write, topic),
        }
    }

    /// True when the caller may write some topic (the console shows write controls then).
    pub fn writes_any(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => !key.write.is_empty(),
        }
    }

    /// True when the caller may create topic `topic` (a `create=` grant).
    pub fn may_create(&self, topic: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => ApiKey::allows(&key.create, topic),
        }
    }

    /// True when the caller may create some topic (the console shows the form then).
    pub fn creates_any(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => !key.create.is_empty(),
        }
    }

    /// True when the caller may read `topic` (its records, watermarks, configs, group lag).
    pub fn may_read(&self, topic: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => ApiKey::allows(&key.read, topic),
        }
    }

    /// 403 unless the caller may write `topic`.
    pub fn require_write(&self, topic: &str) -> Result<(), ApiError> {
        if self.may_write(topic) {
            Ok(())
        } else {
            Err(forbidden(self, "write", topic))
        }
    }

    /// 403 unless the caller may read `topic`.
    pub fn require_read(&self, topic: &str) -> Result<(), ApiError> {
        if self.may_read(topic) {
            Ok(())
        } else {
            Err(forbidden(self, "read", topic))
        }
    }
}

/// A caller that may write at least one topic. The produce routes take it before their body,
/// so a key without any write grant is refused (403) before its body is read; the topics a
/// body names are checked as soon as it is parsed, before anything else in it.
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await? {
            Caller::Key(key) if key.write.is_empty() => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} may not write any topic", key.name),
            )),
            caller => Ok(Writer(caller)),
        }
    }
}

fn forbidden(caller: &Caller, action: &str, topic: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{} may not {action} topic {topic:?}", caller.name()),
    )
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(keys) = &state.api_keys() else {
            return Ok(Caller::Open);
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <API key>"))?
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <API key>\""))?;
        // Checked before the key is looked at: a right guess after too many wrong ones is
        // refused too, so guessing gains nothing.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        let now = Instant::now();
        if let Some(wait) = state.auth_throttle().wait(client, now) {
            tracing::warn!(?client, "API key refused: too many failures");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!(
                    "too many failed authentications from your address ({MAX_AUTH_FAILURES} a \
                     minute); try again in {} seconds",
                    wait.as_secs().max(1)
                ),
            )
            .retry_after(wait.as_secs().max(1)));
        }
        let Some(key) = keys.find(presented.trim()) else {
            state.auth_throttle().failed(client, now);
            return Err(unauthorized("unknown API key"));
        };
        tracing::Span::current().record("caller", key.name.as_str());
        Ok(Caller::Key(key))
    }
}

/// A caller with a valid key, or none: for open routes that tell key holders more
/// (`/health/ready`). A wrong key counts as a failed authentication all the same.
impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.get(header::AUTHORIZATION).is_none() {
            return Ok(None);
        }
        Ok(
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_with_separate_write_and_read_lists() {
        let keys =
            ApiKeys::parse("k1:write=orders.*|audit,read=*; k2:read=orders.*,create=orders.*")
                .unwrap();
        let k1 = Caller::Key(keys.find("k1").unwrap());
        let k2 = Caller::Key(keys.find("k2").unwrap());
        // Writing is no grant to create: only `create=` is.
        assert!(!k1.may_create("orders.eu") && !k1.creates_any());
        assert!(k2.may_create("orders.eu") && !k2.may_create("audit") && k2.creates_any());
        assert_eq!(k1.name(), "key#1");
        assert_eq!(k2.name(), "key#2");
        assert!(k1.may_write("orders.eu") && k1.may_write("audit") && !k1.may_write("payments"));
        assert!(k1.may_read("payments"));
        assert!(!k2.may_write("orders.eu") && k2.may_read("orders.eu") && !k2.may_read("audit"));
        assert!(keys.find("k3").is_none());
        assert!(keys.find("k").is_none());
    }

    #[test]
    fn malformed_lists_are_refused_without_echoing_keys() {
        for (raw, expected) in [
            ("", "no key in the list"),
            ("topsecret", "key#1: expected KEY:GRANTS"),
            (
                "a:read=*;topsecret:write",
                "key#2: expected write=… or read=…, got \"write\"",
            ),
            ("topsecret:delete=*", "key#1: unknown grant \"delete\""),
            (
                "topsecret:read=a/b",
                "key#1: topic pattern \"a/b\" contains '/'",
            ),
            ("topsecret:read=a,read=b", "key#1: read given twice"),
            (
                "topsecret:read=*;topsecret:read=*",
                "key#2: the same key is listed twice",
            ),
        ] {
            let error = ApiKeys::parse(raw).unwrap_err();
            assert_eq!(error, expected, "{raw}");
        }
        let keys = ApiKeys::parse("topsecret:read=*").unwrap();
        assert!(!format!("{keys:?}").contains("topsecret"));
    }

    #[test]
    fn a_star_key_may_not_touch_internal_topics() {
        // A key granted `*` may neither read nor write them; one that names them may.
        let keys =
            ApiKeys::parse("all:write=*,read=*;ops:write=__consumer_offsets,read=__*").unwrap();
        let all = Caller::Key(keys.find("all").unwrap());
        assert!(!all.may_write("__consumer_offsets") && !all.may_read("__consumer_offsets"));
        assert!(all.may_write("orders") && all.may_read("orders"));
        let ops = Caller::Key(keys.find("ops").unwrap());
        assert!(ops.may_write("__consumer_offsets") && ops.may_read("__transaction_state"));
        assert!(!ops.may_write("__transaction_state") && !ops.may_read("orders"));
    }

    #[tokio::test]
    async fn a_star_key_gets_403_on_internal_topics() {
        use axum::http::StatusCode;
        use serde_json::json;

        use crate::router;
        use crate::testing::{bearer, call, get, post, state_with_keys};

        let app = router(state_with_keys("all:write=*,read=*"));
        // Writing and reading `__consumer_offsets` with a `*` key: 403, nothing produced.
        let send = post(
            "/kafka/send",
            &json!({"topic": "__consumer_offsets", "value": 1}),
        );
        let answer = call(&app, bearer(send, "all")).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
        assert_eq!(answer.body["error"]["code"], "forbidden");
        for path in [
            "/topics/__consumer_offsets",
            "/topics/__consumer_offsets/messages",
            "/topics/_schemas",
            "/topics/connect-offsets",
        ] {
            let answer = call(&app, bearer(get(path), "all")).await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{path}: {}",
                answer.text
            );
            assert_eq!(answer.body["error"]["code"], "forbidden", "{path}");
        }
        // Nor does the topic list show them.
        let answer = call(&app, bearer(get("/topics"), "all")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert!(
            !answer.text.contains("__consumer_offsets"),
            "{}",
            answer.text
        );
    }

    #[tokio::test]
    async fn write_grants_are_checked_before_the_body_is_parsed() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use serde_json::json;

        use crate::router;
        use crate::testing::{bearer, call, post, records_in, state_with_keys};

        let allowed = testkit::topic("rt-first", 1).await;
        let other = testkit::unique("rt-first-no");
        let app = router(state_with_keys(&format!(
            "writer:write={allowed};reader:read=*"
        )));
        let raw = |path: &str, content_type: &str, body: &str| {
            Request::post(path)
                .header("content-type", content_type)
                .body(Body::from(body.to_owned()))
                .unwrap()
        };
        let bodies = [
            ("application/json", "{\"topic\": "),
            ("text/plain", "hello"),
            ("application/json", "{\"nope\": 1}"),
        ];
        for path in ["/kafka/send", "/kafka/send-batch"] {
            for (content_type, body) in bodies {
                // No key: 401, whatever the body.
                let answer = call(&app, raw(path, content_type, body)).await;
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} {body}");
                // A key that may write no topic at all: 403, whatever the body.
                let answer = call(&app, bearer(raw(path, content_type, body), "reader")).await;
                assert_eq!(
                    answer.status,
                    StatusCode::FORBIDDEN,
                    "{path} {body}: {}",
                    answer.text
                );
                assert_eq!(answer.body["error"]["code"], "forbidden");
            }
        }
        // A key that may write some topic: the body names the topic, so it is parsed first...
        let answer = call(
            &app,
            bearer(raw("/kafka/send", bodies[0].0, bodies[0].1), "writer"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        // ...then the topics are checked before anything else: the Idempotency-Key header,
        // the record, the batch's size.
        let with_bad_key = |mut request: Request<Body>| {
            request
                .headers_mut()
                .insert("idempotency-key", "has space".parse().unwrap());
            request
        };
        let forbidden = json!({"topic": other, "value": "%%", "encoding": "base64"});
        let oversize: Vec<_> = (0..1000)
            .map(|_| json!({"topic": allowed, "value": 1}))
            .chain([json!({"topic": other, "value": 1})])
            .collect();
        for request in [
            with_bad_key(post("/kafka/send", &forbidden)),
            with_bad_key(post("/kafka/send-batch", &json!({"messages": [forbidden]}))),
            post("/kafka/send-batch", &json!({"messages": oversize})),
        ] {
            let answer = call(&app, bearer(request, "writer")).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
            assert_eq!(answer.body["error"]["code"], "forbidden");
        }
        assert_eq!(records_in(&allowed).await, 0);
    }

    #[tokio::test]
    async fn a_refused_caller_is_answered_without_its_body_being_read() {
        use std::time::Duration;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::router;
        use crate::testing::state_with_keys;

        // A real server, so the body can be cut short: its headers announce 1000 bytes, the
        // client sends 10 and waits. Reading the body would wait too.
        let app = router(state_with_keys("writer:write=orders;reader:read=*"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, app).into_future());
        for (path, authorization, expected) in [
            ("/kafka/send", "", "HTTP/1.1 401"),
            (
                "/kafka/send",
                "authorization: Bearer nope\r\n",
                "HTTP/1.1 401",
            ),
            (
                "/kafka/send",
                "authorization: Bearer reader\r\n",
                "HTTP/1.1 403",
            ),
            (
                "/kafka/send-batch",
                "authorization: Bearer reader\r\n",
                "HTTP/1.1 403",
            ),
        ] {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
                 content-length: 1000\r\n{authorization}\r\n{{\"topic\":"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut status = [0u8; 12];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut status))
                .await
                .unwrap_or_else(|_| panic!("{path} {authorization:?}: no answer before the body"))
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&status),
                expected,
                "{path} {authorization:?}"
            );
        }
        server.abort();
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive() {
        use axum::http::StatusCode;
        use serde_json::json;

        use crate::router;
        use crate::testing::{call, post, state_with_keys};

        let app = router(state_with_keys("k1:write=allowed"));
        // Authenticated whatever the scheme's case: the topic check answers (403), not the key
        // check. Another scheme, or a scheme without a key, is still 401.
        let cases = [
            ("Bearer k1", StatusCode::FORBIDDEN),
            ("bearer k1", StatusCode::FORBIDDEN),
            ("BEARER k1", StatusCode::FORBIDDEN),
            ("bEaReR k1", StatusCode::FORBIDDEN),
            ("Basic k1", StatusCode::UNAUTHORIZED),
            ("Bearerk1", StatusCode::UNAUTHORIZED),
            ("bearer", StatusCode::UNAUTHORIZED),
            ("k1", StatusCode::UNAUTHORIZED),
        ];
        for (header, expected) in cases {
            let mut request = post("/kafka/send", &json!({"topic": "other", "value": 1}));
            request
                .headers_mut()
                .insert("authorization", header.parse().unwrap());
            let answer = call(&app, request).await;
            assert_eq!(answer.status, expected, "{header}: {}", answer.text);
        }
    }
}
