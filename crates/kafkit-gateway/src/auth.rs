//! API keys: who may write and read which topics.
//!
//! `KAFKIT_API_KEYS` lists the keys, `;`-separated. Each is `KEY:GRANTS`, where `GRANTS` is a
//! `,`-separated list of `write=PATTERNS` and `read=PATTERNS`, and `PATTERNS` a `|`-separated
//! list of topic globs (`*` any run of characters, `?` one character):
//!
//! ```text
//! KAFKIT_API_KEYS='s3cr3t-producer:write=orders.*|audit,read=orders.*;s3cr3t-viewer:read=*'
//! ```
//!
//! Clients send `Authorization: Bearer KEY`. A missing or unknown key is 401, a topic outside
//! the key's list 403. With no key configured the gateway is open, and `serve` then refuses a
//! non-loopback listener unless told `--allow-unauthenticated`. Keys are [`Secret`]s: only
//! their position (`key#2`) ever reaches a log line.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use kafkit::Secret;

use super::AppState;
use super::error::ApiError;

/// A topic glob: `*` matches any run of characters, `?` exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Parses a pattern: topic-name characters plus `*` and `?`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("empty topic pattern".to_owned());
        }
        match raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            Some(c) => Err(format!("topic pattern {raw:?} contains {c:?}")),
            None => Ok(TopicPattern(raw.to_owned())),
        }
    }

    /// True when `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        glob(self.0.as_bytes(), topic.as_bytes())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, never
/// exponential, whatever pattern an operator writes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One API key and what it may do.
#[derive(Debug)]
pub struct ApiKey {
    /// `key#N`, its position in the list: what logs and idempotency scopes use.
    pub name: String,
    secret: Secret,
    write: Vec<TopicPattern>,
    read: Vec<TopicPattern>,
}

impl ApiKey {
    fn allows(patterns: &[TopicPattern], topic: &str) -> bool {
        patterns.iter().any(|p| p.matches(topic))
    }
}

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
            let (mut write, mut read) = (None, None);
            for grant in grants.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                let (kind, patterns) = grant
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: expected write=… or read=…, got {grant:?}"))?;
                let slot = match kind.trim() {
                    "write" => &mut write,
                    "read" => &mut read,
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
            }));
        }
        if keys.is_empty() {
            return Err("no key in KAFKIT_API_KEYS".to_owned());
        }
        Ok(ApiKeys { keys })
    }

    /// The key whose secret is `presented`. Every key is compared in full, in constant time,
    /// so timing does not tell how much of a guess was right.
    fn find(&self, presented: &str) -> Option<Arc<ApiKey>> {
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
    /// No key is configured: everything is allowed.
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(keys) = &state.keys else {
            return Ok(Caller::Open);
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <API key>"))?
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <API key>\""))?;
        let key = keys
            .find(presented.trim())
            .ok_or_else(|| unauthorized("unknown API key"))?;
        tracing::Span::current().record("caller", key.name.as_str());
        Ok(Caller::Key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_topic_names() {
        let cases = [
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders.", true),
            ("orders.*", "orders", false),
            ("orders.*", "xorders.eu", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("audit", "audit", true),
            ("audit", "audits", false),
            ("t?", "t1", true),
            ("t?", "t12", false),
        ];
        for (pattern, topic, expected) in cases {
            let pattern = TopicPattern::parse(pattern).unwrap();
            assert_eq!(pattern.matches(topic), expected, "{pattern:?} vs {topic}");
        }
    }

    #[test]
    fn parses_keys_with_separate_write_and_read_lists() {
        let keys = ApiKeys::parse("k1:write=orders.*|audit,read=*; k2:read=orders.*").unwrap();
        let k1 = Caller::Key(keys.find("k1").unwrap());
        let k2 = Caller::Key(keys.find("k2").unwrap());
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
            ("", "no key in KAFKIT_API_KEYS"),
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
}
