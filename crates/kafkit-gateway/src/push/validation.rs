//! What a subscriptions file must hold to run, checked once at start ([`parse`],
//! [`validate`]) into [`Validated`] subscriptions, with errors that name the field
//! (`subscription "billing": endpoint: ...`).

use std::collections::BTreeSet;
use std::fmt;

use kafkit::retry_topic::RetryTopics;
use kafkit::secret::Secret;
use reqwest::Url;

use super::cloud_event::CloudEvent;
use super::signature::Signer;
use super::subscription::{
    DEFAULT_GROUP_PREFIX, Format, MAX_BATCH_RECORDS, Order, RESULT_BYTES_PER_RECORD, Subscription,
    SubscriptionsFile,
};

/// A subscriptions file that cannot run: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `subscription "billing": retry.max_attempts`, or the file.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A subscription checked and ready to run: the parsed endpoint, the secrets read.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The subscription as written (its `${NAME}` secrets resolved).
    pub subscription: Subscription,
    /// The consumer group.
    pub group: String,
    /// The endpoint.
    pub endpoint: Url,
    /// The signer, when webhook secrets are set.
    pub signer: Option<Signer>,
    /// The CloudEvents mapping, with `format = "cloudevents"`.
    pub cloud_event: Option<CloudEvent>,
    /// The retry tiers, when `retry.topics` names any.
    pub retry_topics: Option<RetryTopics>,
}

impl Validated {
    /// The endpoint without credentials or query, for logs and `GET /subscriptions`.
    pub fn endpoint_display(&self) -> String {
        let mut shown = self.endpoint.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        shown.to_string()
    }
}

/// Parses and validates a subscriptions file's text. `env` looks environment variables up
/// (`std::env::var` in the binary; a map in tests).
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Validated>, ConfigError> {
    let file: SubscriptionsFile = toml::from_str(text).map_err(|e| ConfigError {
        field: "subscriptions file".into(),
        reason: e.to_string().trim_end().to_owned(),
    })?;
    validate(file.subscriptions, env)
}

/// Checks every subscription: names unique and non-empty, topics given, an http(s) endpoint,
/// bounds positive, secrets well-formed, no dead-letter topic that is a source topic.
pub fn validate(
    subscriptions: Vec<Subscription>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Validated>, ConfigError> {
    if subscriptions.is_empty() {
        return Err(ConfigError {
            field: "subscriptions file".into(),
            reason: "no [[subscription]] table".into(),
        });
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(subscriptions.len());
    for (index, subscription) in subscriptions.into_iter().enumerate() {
        let at = if subscription.name.trim().is_empty() {
            format!("subscription[{index}]")
        } else {
            format!("subscription {:?}", subscription.name)
        };
        let fail = |field: &str, reason: String| ConfigError {
            field: format!("{at}: {field}"),
            reason,
        };
        if subscription.name.trim().is_empty() {
            return Err(fail("name", "must not be empty".into()));
        }
        if !names.insert(subscription.name.clone()) {
            return Err(fail("name", "another subscription has this name".into()));
        }
        out.push(validate_one(subscription, &env, &fail)?);
    }
    Ok(out)
}

/// What a field check answers: `Err` names the field and says why.
type Check<T = ()> = Result<T, ConfigError>;

fn validate_one(
    mut s: Subscription,
    env: &impl Fn(&str) -> Option<String>,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Check<Validated> {
    let group = check_source(&s, fail)?;
    let endpoint = check_endpoint(&s, fail)?;
    check_bounds(&s, fail)?;
    check_dead_letter(&s, fail)?;
    let retry_topics = check_retry(&s, fail)?;
    check_batch(&s, fail)?;
    let signer = resolve_auth(&mut s, env, fail)?;
    check_tls(&s, fail)?;
    let cloud_event = (s.format == Format::Cloudevents).then(|| CloudEvent {
        source: s.cloudevents.source.clone(),
        event_type: s.cloudevents.event_type.clone(),
    });
    Ok(Validated {
        subscription: s,
        group,
        endpoint,
        signer,
        cloud_event,
        retry_topics,
    })
}

/// Topics named, none empty; the consumer group (`kafkit-push-{name}` unless given).
fn check_source(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check<String> {
    if s.topics.is_empty() {
        return Err(fail("topics", "name at least one topic".into()));
    }
    if let Some(topic) = s.topics.iter().find(|t| t.trim().is_empty()) {
        return Err(fail("topics", format!("empty topic name {topic:?}")));
    }
    match &s.group {
        Some(g) if g.trim().is_empty() => Err(fail("group", "must not be empty".into())),
        Some(g) => Ok(g.clone()),
        None => Ok(format!("{DEFAULT_GROUP_PREFIX}{}", s.name)),
    }
}

/// An http(s) URL.
fn check_endpoint(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check<Url> {
    let endpoint = Url::parse(&s.endpoint).map_err(|e| fail("endpoint", e.to_string()))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(fail(
            "endpoint",
            format!("scheme {:?}: use http or https", endpoint.scheme()),
        ));
    }
    Ok(endpoint)
}

/// Positive limits, a usable header prefix, CloudEvents attributes, a breaker that reopens.
fn check_bounds(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check {
    let at_least_one = [
        ("max_in_flight", s.max_in_flight),
        ("max_concurrency", s.max_concurrency),
        ("max_response_bytes", s.max_response_bytes),
    ];
    if let Some((field, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
        return Err(fail(field, "must be at least 1".into()));
    }
    let longer_than_zero = [
        ("timeout", s.timeout),
        ("commit_interval", s.commit_interval),
    ];
    if let Some((field, _)) = longer_than_zero.iter().find(|(_, value)| value.is_zero()) {
        return Err(fail(field, "must be longer than 0".into()));
    }
    if s.header_prefix.is_empty()
        || reqwest::header::HeaderName::from_bytes(format!("{}x", s.header_prefix).as_bytes())
            .is_err()
    {
        return Err(fail(
            "header_prefix",
            "must be a non-empty HTTP header name prefix (letters, digits, '-')".into(),
        ));
    }
    for (field, value) in [
        ("cloudevents.source", &s.cloudevents.source),
        ("cloudevents.type", &s.cloudevents.event_type),
    ] {
        if value.trim().is_empty() {
            return Err(fail(field, "must not be empty".into()));
        }
    }
    if s.circuit_breaker.failure_threshold > 0 && s.circuit_breaker.open_duration.is_zero() {
        return Err(fail(
            "circuit_breaker.open_duration",
            "must be longer than 0".into(),
        ));
    }
    Ok(())
}

/// A dead-letter template that never names a source topic (failures would loop).
fn check_dead_letter(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check {
    if s.dead_letter.trim().is_empty() {
        return Err(fail("dead_letter", "must name a topic template".into()));
    }
    for topic in &s.topics {
        let dlt = kafkit::DeadLetter::template(&s.dead_letter).topic_for(topic);
        if s.topics.contains(&dlt) {
            return Err(fail(
                "dead_letter",
                format!("{dlt:?} is also a source topic: failures would loop"),
            ));
        }
    }
    Ok(())
}

/// Retries in place that end, and the retry tiers of `retry.topics`.
fn check_retry(
    s: &Subscription,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Check<Option<RetryTopics>> {
    let retry = &s.retry;
    if retry.max_attempts == 0 {
        return Err(fail("retry.max_attempts", "must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        return Err(fail("retry.jitter", "must be between 0 and 1".into()));
    }
    if retry.max_delay < retry.initial_delay {
        return Err(fail(
            "retry.max_delay",
            "must not be shorter than retry.initial_delay".into(),
        ));
    }
    retry_topics(s, fail)
}

/// A batch that fits its bounds, its answer and its content mode.
fn check_batch(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check {
    let Some(batch) = &s.batch else {
        return Ok(());
    };
    if !(1..=MAX_BATCH_RECORDS).contains(&batch.max_records) {
        return Err(fail(
            "batch.max_records",
            format!("must be between 1 and {MAX_BATCH_RECORDS}"),
        ));
    }
    if batch.max_bytes == 0 {
        return Err(fail("batch.max_bytes", "must be at least 1".into()));
    }
    if batch.max_wait >= s.timeout {
        return Err(fail(
            "batch.max_wait",
            "must be shorter than timeout: a record would wait longer for its batch \
             than for its answer"
                .into(),
        ));
    }
    let room = batch.max_records.saturating_mul(RESULT_BYTES_PER_RECORD);
    if s.max_response_bytes < room {
        return Err(fail(
            "max_response_bytes",
            format!(
                "{} leaves no room for the results of a batch of {} records: at least \
                 {room} ({RESULT_BYTES_PER_RECORD} bytes a record)",
                s.max_response_bytes, batch.max_records
            ),
        ));
    }
    if s.format == Format::Cloudevents {
        return Err(fail(
            "batch",
            "not with format = \"cloudevents\" (the batched content mode is not \
             supported)"
                .into(),
        ));
    }
    Ok(())
}

/// Reads the bearer token and webhook secrets (`${NAME}` from `env`) into `s`, and makes
/// the signer when webhook secrets are set.
fn resolve_auth(
    s: &mut Subscription,
    env: &impl Fn(&str) -> Option<String>,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Check<Option<Signer>> {
    if let Some(bearer) = &s.auth.bearer {
        let token = resolve(bearer, env).map_err(|r| fail("auth.bearer", r))?;
        if token.is_empty()
            || reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return Err(fail(
                "auth.bearer",
                "must be a non-empty printable token".into(),
            ));
        }
        s.auth.bearer = Some(Secret::new(token));
    }
    let mut resolved = Vec::with_capacity(s.auth.webhook_secrets.len());
    for (i, secret) in s.auth.webhook_secrets.iter().enumerate() {
        let field = format!("auth.webhook_secrets[{i}]");
        resolved.push(Secret::new(
            resolve(secret, env).map_err(|r| fail(&field, r))?,
        ));
    }
    let signer = if resolved.is_empty() {
        None
    } else {
        Some(
            Signer::new(&resolved)
                .map_err(|(i, reason)| fail(&format!("auth.webhook_secrets[{i}]"), reason))?,
        )
    };
    s.auth.webhook_secrets = resolved;
    Ok(signer)
}

/// A client certificate with its key, and files that exist.
fn check_tls(s: &Subscription, fail: &impl Fn(&str, String) -> ConfigError) -> Check {
    let tls = &s.tls;
    if tls.cert.is_some() != tls.key.is_some() {
        let missing = if tls.cert.is_some() { "key" } else { "cert" };
        return Err(fail(
            &format!("tls.{missing}"),
            "a client certificate needs both tls.cert and tls.key".into(),
        ));
    }
    for (field, path) in [
        ("tls.ca", &tls.ca),
        ("tls.cert", &tls.cert),
        ("tls.key", &tls.key),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            return Err(fail(field, format!("no file {}", path.display())));
        }
    }
    Ok(())
}

/// The tiers of `retry.topics`: each a positive duration; not in partition order (a record
/// waiting on a retry topic would be overtaken by the later records of its partition, which
/// that order promises not to do); no tier topic that is a source or dead-letter topic.
fn retry_topics(
    s: &Subscription,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<RetryTopics>, ConfigError> {
    if s.retry.topics.is_empty() {
        return Ok(None);
    }
    let mut delays = Vec::with_capacity(s.retry.topics.len());
    for (i, text) in s.retry.topics.iter().enumerate() {
        let field = format!("retry.topics[{i}]");
        let delay = humantime_serde::re::humantime::parse_duration(text.trim())
            .map_err(|e| fail(&field, format!("{text:?}: {e}")))?;
        if delay.is_zero() {
            return Err(fail(&field, "must be longer than 0".into()));
        }
        delays.push(delay);
    }
    if s.order == Order::Partition {
        return Err(fail(
            "retry.topics",
            "not with order = \"partition\": a record waiting on a retry topic would be \
             overtaken by the later records of its partition; retry in place, or use order = \
             \"key\" or \"unordered\""
                .into(),
        ));
    }
    let tiers = RetryTopics::new(delays);
    let dead_letter = kafkit::DeadLetter::template(&s.dead_letter);
    for topic in &s.topics {
        for tier in tiers.topics_for(topic) {
            if s.topics.contains(&tier) || tier == dead_letter.topic_for(topic) {
                return Err(fail(
                    "retry.topics",
                    format!("retry topic {tier:?} is also a source or dead-letter topic"),
                ));
            }
        }
    }
    Ok(Some(tiers))
}

/// A secret's value: `${NAME}` is the environment variable `NAME`.
fn resolve(secret: &Secret, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let raw = secret.expose();
    match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(name) => env(name).ok_or_else(|| format!("environment variable {name} is not set")),
        None => Ok(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::push::subscription::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn error(text: &str) -> String {
        parse(text, no_env).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"
        [[subscription]]
        name = "billing"
        topics = ["orders"]
        endpoint = "http://127.0.0.1:3000/orders"
    "#;

    #[test]
    fn a_minimal_subscription_gets_the_documented_defaults() {
        let subs = parse(MINIMAL, no_env).unwrap();
        assert_eq!(subs.len(), 1);
        let v = &subs[0];
        assert_eq!(v.group, "kafkit-push-billing");
        assert_eq!(v.subscription.order, Order::Key);
        assert_eq!(v.subscription.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(v.subscription.timeout, DEFAULT_TIMEOUT);
        assert_eq!(v.subscription.dead_letter, "{topic}.dlq");
        assert_eq!(v.subscription.retry, RetryConfig::default());
        assert!(v.signer.is_none());
        assert!(v.retry_topics.is_none());
        assert_eq!(v.endpoint.as_str(), "http://127.0.0.1:3000/orders");
        assert_eq!(v.subscription.format, Format::Plain);
        assert_eq!(v.subscription.concurrency, Concurrency::Adaptive);
        assert_eq!(v.subscription.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert!(
            error(&format!("{MINIMAL}max_concurrency = 0"))
                .contains("max_concurrency: must be at least 1")
        );
        let fixed = parse(&format!("{MINIMAL}concurrency = \"fixed\""), no_env).unwrap();
        assert_eq!(fixed[0].subscription.concurrency, Concurrency::Fixed);
        assert!(v.cloud_event.is_none());
        assert!(v.subscription.batch.is_none());
    }

    #[test]
    fn batch_takes_its_bounds_with_defaults() {
        let v = parse(&format!("{MINIMAL}batch = {{}}"), no_env)
            .unwrap()
            .remove(0);
        assert_eq!(v.subscription.batch, Some(BatchConfig::default()));
        let text = format!(
            "{MINIMAL}batch = {{ max_records = 25, max_bytes = 65536, max_wait = \"50ms\" }}"
        );
        let batch = parse(&text, no_env).unwrap().remove(0).subscription.batch;
        assert_eq!(
            batch,
            Some(BatchConfig {
                max_records: 25,
                max_bytes: 65536,
                max_wait: Duration::from_millis(50),
            })
        );
    }

    #[test]
    fn cloudevents_format_takes_a_source_and_a_type() {
        let v = parse(&format!("{MINIMAL}format = \"cloudevents\""), no_env)
            .unwrap()
            .remove(0);
        assert_eq!(v.cloud_event, Some(CloudEvent::default()));
        let text = format!(
            "{MINIMAL}format = \"cloudevents\"\ncloudevents = {{ source = \"/shop/{{topic}}\", type = \"com.shop.order\" }}"
        );
        let event = parse(&text, no_env).unwrap().remove(0).cloud_event.unwrap();
        assert_eq!(event.source, "/shop/{topic}");
        assert_eq!(event.event_type, "com.shop.order");
        assert!(
            error(&format!("{MINIMAL}cloudevents = {{ type = \" \" }}"))
                .contains("cloudevents.type")
        );
        assert!(error(&format!("{MINIMAL}format = \"structured\"")).contains("unknown variant"));
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
            [[subscription]]
            name = "billing"
            topics = ["orders", "refunds"]
            group = "billing-v2"
            endpoint = "https://user:pw@billing.example/hooks?token=x"
            order = "unordered"
            max_in_flight = 8
            timeout = "1500ms"
            max_response_bytes = 1024
            header_prefix = "x-kafka-"
            dead_letter = "{topic}_dlt"
            retry = { max_attempts = 7, initial_delay = "1s", max_delay = "1m", jitter = 0.5, max_retry_after = "10s", topics = ["1s", "10s"] }
            circuit_breaker = { failure_threshold = 3, open_duration = "5s" }
            auth = { bearer = "${TOKEN}", webhook_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] }
        "#;
        let env = |name: &str| (name == "TOKEN").then(|| "t0k3n".to_owned());
        let v = parse(text, env).unwrap().remove(0);
        let s = &v.subscription;
        assert_eq!(v.group, "billing-v2");
        assert_eq!(s.order, Order::Unordered);
        assert_eq!(s.max_in_flight, 8);
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.max_response_bytes, 1024);
        assert_eq!(s.header_prefix, "x-kafka-");
        assert_eq!(s.retry.max_attempts, 7);
        assert_eq!(s.retry.max_delay, Duration::from_secs(60));
        assert_eq!(s.retry.max_retry_after, Duration::from_secs(10));
        let tiers = v.retry_topics.as_ref().unwrap();
        assert_eq!(
            tiers.topics_for("orders"),
            ["orders.retry.1", "orders.retry.2"]
        );
        assert_eq!(tiers.delay(2), Duration::from_secs(10));
        assert_eq!(s.circuit_breaker.failure_threshold, 3);
        assert_eq!(s.auth.bearer.as_ref().unwrap().expose(), "t0k3n");
        assert!(v.signer.is_some());
        // Shown without credentials or query.
        assert_eq!(v.endpoint_display(), "https://billing.example/hooks");
        // Secrets never print.
        assert!(!format!("{v:?}").contains("t0k3n"));
    }

    #[test]
    fn errors_name_the_subscription_and_the_field() {
        let cases = [
            (r#"name = "a""#, "subscriptions file"),
            (
                "[[subscription]]\nname = \"a\"\ntopics = [\"t\"]",
                "missing field `endpoint`",
            ),
            (
                "[[subscription]]\nname = \"a\"\ntopics = [\"t\"]\nendpoint = \"http://h\"\ntimeuot = \"1s\"",
                "unknown field `timeuot`",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{message}");
        }
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        let checks = [
            (with("order = \"random\""), "unknown variant `random`"),
            (
                with("max_in_flight = 0"),
                "subscription \"billing\": max_in_flight: must be at least 1",
            ),
            (
                with("timeout = \"0s\""),
                "subscription \"billing\": timeout:",
            ),
            (with("timeout = \"soon\""), "timeout"),
            (
                with("retry = { max_attempts = 0 }"),
                "subscription \"billing\": retry.max_attempts",
            ),
            (with("retry = { jitter = 2.0 }"), "retry.jitter"),
            (
                with("dead_letter = \"orders\""),
                "dead_letter: \"orders\" is also a source topic",
            ),
            (
                with("auth = { bearer = \"${NOPE}\" }"),
                "auth.bearer: environment variable NOPE is not set",
            ),
            (
                with("auth = { webhook_secrets = [\"whsec_abc\", \"plain\"] }"),
                "auth.webhook_secrets[0]",
            ),
            (with("tls = { cert = \"/etc/hostname\" }"), "tls.key"),
            (with("header_prefix = \"bad prefix\""), "header_prefix"),
            (
                with("retry = { topics = [\"1s\", \"soon\"] }"),
                "subscription \"billing\": retry.topics[1]: \"soon\"",
            ),
            (
                with("retry = { topics = [\"0s\"] }"),
                "retry.topics[0]: must be longer than 0",
            ),
            (
                with("order = \"partition\"\nretry = { topics = [\"1s\"] }"),
                "retry.topics: not with order = \"partition\"",
            ),
            (
                with("batch = { max_records = 0 }"),
                "subscription \"billing\": batch.max_records: must be between 1 and 10000",
            ),
            (
                with("batch = { max_bytes = 0 }"),
                "batch.max_bytes: must be at least 1",
            ),
            (
                with("timeout = \"1s\"\nbatch = { max_wait = \"2s\" }"),
                "batch.max_wait: must be shorter than timeout",
            ),
            (
                with("format = \"cloudevents\"\nbatch = {}"),
                "batch: not with format = \"cloudevents\"",
            ),
            (
                with("batch = { max_record = 5 }"),
                "unknown field `max_record`",
            ),
            (
                with("batch = { max_records = 1000 }"),
                "max_response_bytes: 65536 leaves no room for the results of a batch of 1000 \
                 records: at least 128000 (128 bytes a record)",
            ),
            (
                with("dead_letter = \"{topic}.retry.1\"\nretry = { topics = [\"1s\"] }"),
                "retry.topics: retry topic \"orders.retry.1\" is also a source or dead-letter topic",
            ),
        ];
        for (text, expected) in checks {
            let message = error(&text);
            assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            );
        }
        assert!(error(&MINIMAL.replace("http://", "ftp://")).contains("endpoint: scheme \"ftp\""));
        assert!(error(&MINIMAL.replace("topics = [\"orders\"]", "topics = []")).contains("topics"));
        let twice = format!("{MINIMAL}{MINIMAL}");
        assert!(error(&twice).contains("subscription \"billing\": name: another subscription"));
        assert!(error("").contains("no [[subscription]]"));
    }
}
