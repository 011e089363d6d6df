//! Property test of the whole router: arbitrary JSON bodies and arbitrary paths never get a
//! 5xx and never panic, open and behind API keys, on every route (send, batch, topics,
//! browse, groups, dead-letter listing and replay), with record keys, idempotency keys and
//! oversize bodies. The state is on the test broker with topic auto-creation off, so random
//! topic names are answered 404 instead of littering the broker with topics.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::testing::{call, config, state_with};
use crate::{MAX_BODY_BYTES, router};

/// One runtime and one app for every case: building a producer per case would dominate.
fn fixture() -> &'static (tokio::runtime::Runtime, Router, String) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Router, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let topic = runtime.block_on(testkit::topic("fuzz", 2));
        let mut config = config();
        config.allow_auto_topic_creation = false;
        let app = runtime.block_on(async { router(state_with(&config)) });
        (runtime, app, topic)
    })
}

/// One runtime and one app behind API keys, with a topic and its dead-letter topic holding a
/// record: `writer` may write and read the fuzz topics, `reader` may only read them.
fn keyed_fixture() -> &'static (tokio::runtime::Runtime, Router, String) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Router, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let topic = runtime.block_on(async {
            let topic = testkit::topic("fuzz-keyed", 2).await;
            let dlt = format!("{topic}.dlq");
            testkit::kafka()
                .admin()
                .expect("admin")
                .ensure_topics(&[kafkit::TopicSpec::new(&dlt, 1)])
                .await
                .expect("dead-letter topic");
            testkit::send(vec![
                kafkit::Record::to(&dlt)
                    .key("k")
                    .header(kafkit::dead_letter::ORIGINAL_TOPIC, topic.as_str())
                    .json(&json!({"id": 1}))
                    .expect("encodable"),
            ])
            .await;
            topic
        });
        let mut config = config();
        config.allow_auto_topic_creation = false;
        let keys = crate::ApiKeys::parse("writer:write=fuzz-*,read=fuzz-*;reader:read=fuzz-*")
            .expect("valid keys");
        let app = runtime.block_on(async { router(state_with(&config).with_api_keys(keys)) });
        (runtime, app, topic)
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A message that is often nearly valid: real field names with arbitrary values.
fn message(topic: String) -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(Value::String(topic)),
            "[a-z.]{1,8}".prop_map(Value::String),
            any_json()
        ],
        any_json(),
        prop_oneof![
            Just(json!("json")),
            Just(json!("string")),
            Just(json!("base64")),
            any_json()
        ],
        prop::option::of(-2i64..4),
        any_json(),
    )
        .prop_map(|(topic, value, encoding, partition, headers)| {
            let mut message = json!({"topic": topic, "value": value, "encoding": encoding});
            if let Some(p) = partition {
                message["partition"] = json!(p);
            }
            if headers.is_object() {
                message["headers"] = headers;
            }
            message
        })
}

/// Path segments: topic-like names, URL-encoded oddities and plain noise.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,12}",
        "(%[0-9A-F]{2}){1,3}",
        "[a-z]{0,3}[~!$&'()*+,;=:@]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn produce_endpoints_never_answer_5xx(
        body in prop_oneof![
            any_json(),
            message(fixture().2.clone()),
            prop::collection::vec(message(fixture().2.clone()), 0..4)
                .prop_map(|messages| json!({"messages": messages})),
        ],
        batch in any::<bool>(),
    ) {
        let (runtime, app, _) = fixture();
        let path = if batch { "/kafka/send-batch" } else { "/kafka/send" };
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let answer = runtime.block_on(call(app, request));
        prop_assert!(answer.status.as_u16() < 500, "{path} {body} -> {} {}", answer.status, answer.text);
        // Every failure carries the error body, a batch whose records all failed included.
        prop_assert!(answer.status.is_success() || answer.body["error"]["code"].is_string(),
            "{}", answer.text);
    }

    #[test]
    fn read_endpoints_never_answer_5xx(
        root in prop_oneof![Just("topics".to_owned()), Just("groups".to_owned()), "[a-z]{1,6}"],
        segments in prop::collection::vec(segment(), 0..3),
        known in any::<bool>(),
        query in prop::option::of("[a-z]{1,9}=[-0-9a-z]{0,6}(&[a-z]{1,9}=[-0-9]{0,4}){0,2}"),
    ) {
        let (runtime, app, topic) = fixture();
        let mut path = format!("/{root}");
        for (i, segment) in segments.iter().enumerate() {
            path.push('/');
            path.push_str(if known && i == 0 { topic } else { segment });
        }
        if let Some(query) = &query {
            path.push('?');
            path.push_str(query);
        }
        let Ok(request) = Request::get(path.as_str()).body(Body::empty()) else {
            return Ok(());
        };
        let answer = runtime.block_on(call(app, request));
        prop_assert!(answer.status.as_u16() < 500, "{path} -> {} {}", answer.status, answer.text);
    }

    #[test]
    fn every_route_behind_api_keys_never_answers_5xx(
        route in 0usize..8,
        auth in prop_oneof![
            Just(None),
            Just(Some("Bearer writer")),
            Just(Some("bearer reader")),
            Just(Some("Bearer nobody")),
            Just(Some("Basic d3JpdGVyOg==")),
        ],
        idempotency in prop::option::of(prop_oneof!["[ -~]{0,20}", "[a-z0-9-]{1,300}"]),
        key in prop::option::of(any_json()),
        oversize in prop::bool::weighted(0.05),
        query in prop::option::of("(limit|offset|partition)=[-0-9]{0,20}"),
        body in any_json(),
    ) {
        let (runtime, app, topic) = keyed_fixture();
        let dlt = format!("{topic}.dlq");
        let (method, path) = match route {
            0 => ("POST", "/kafka/send".to_owned()),
            1 => ("POST", "/kafka/send-batch".to_owned()),
            2 => ("GET", "/topics".to_owned()),
            3 => ("GET", format!("/topics/{topic}")),
            4 => ("GET", format!("/topics/{topic}/messages")),
            5 => ("GET", "/groups".to_owned()),
            6 => ("GET", format!("/dlt/{dlt}")),
            _ => ("POST", format!("/dlt/{dlt}/replay")),
        };
        let path = match &query {
            Some(query) if method == "GET" || route == 7 => format!("{path}?{query}"),
            _ => path,
        };
        let mut message = json!({"topic": topic, "value": body});
        if let Some(key) = key {
            message["key"] = key;
        }
        let payload = if oversize {
            format!("{{\"topic\": \"{topic}\", \"value\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES))
        } else if route == 1 {
            json!({"messages": [message]}).to_string()
        } else {
            message.to_string()
        };
        let mut request = Request::builder().method(method).uri(path.as_str());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(idempotency) = &idempotency
            && let Ok(value) = axum::http::HeaderValue::from_str(idempotency)
        {
            request = request.header("idempotency-key", value);
        }
        let request = if method == "POST" {
            request.header("content-type", "application/json").body(Body::from(payload))
        } else {
            request.body(Body::empty())
        };
        let Ok(mut request) = request else {
            return Ok(());
        };
        // Each case from an address of its own: failed authentications are throttled per
        // client, and the oracle below is about keys, not about the throttle.
        static CLIENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let client = std::net::Ipv4Addr::from(
            0x0a00_0000 | CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((client, 1))));
        let answer = runtime.block_on(call(app, request));
        prop_assert!(answer.status.as_u16() < 500, "{method} {path} -> {} {}", answer.status, answer.text);
        prop_assert!(answer.status.is_success() || answer.body["error"]["code"].is_string(),
            "{method} {path} -> {}", answer.text);
        // Without a known key nothing but health answers.
        if !matches!(auth, Some("Bearer writer") | Some("bearer reader")) {
            prop_assert_eq!(answer.status.as_u16(), 401, "{} {}", method, path);
        }
    }
}
