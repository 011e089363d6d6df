//! Batching: several records per request, each with its own result.
//!
//! **How it sits on the runtime.** The consumer runtime still hands the subscription's handler
//! one record at a time, in the subscription's order: in key order a key's next record is
//! handed over only once the one before it settled. [`Batcher`] gathers the records whose
//! handler calls are waiting (of all the subscription's partitions) into one request, and
//! answers each call with its record's own verdict. So everything the runtime guarantees per
//! record holds unchanged: a key never has two records in flight (a batch holds at most one
//! record of a key, and no two requests carry one key at once), each record is retried,
//! delayed by a `Retry-After`, sent to a retry topic or dead-lettered alone, offsets move only
//! for records done or dead-lettered, and rebalances fence what a revoked member finishes.
//! The price: the records of one key go one per request (a hot key is not batched).
//!
//! **The request**: `POST`, `content-type: application/json`, a JSON array of records (see
//! [`item`]), `kafkit-batch-size`, the bearer token and the Standard Webhooks signature of the
//! whole body. **The response**: a non-2xx applies the response contract ([`verdict`]) to every
//! record; a 2xx means every record is done, unless its JSON body gives results
//! ([`results`]): `{"results": [{"id": "orders/0/7", "outcome": "retry", "retry_after": 5},
//! {"id": "orders/1/3", "outcome": "dead_letter", "reason": "bad sku"}]}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use kafkit::Message;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::delivery_id::delivery_id;
use super::subscription::BatchConfig;
use super::verdict::{EXCERPT_CHARS, OUTCOME_HEADER, Verdict, describe, retry_after, verdict};

/// Records in a batch request.
pub const BATCH_SIZE_HEADER: &str = "kafkit-batch-size";

/// One record's answer: its verdict and the status class it counts under in metrics.
pub(crate) type Answer = (Verdict, &'static str);

/// A record waiting in a batch: its JSON object and who waits for its answer.
pub(crate) struct Item {
    pub id: String,
    pub json: Vec<u8>,
    pub reply: oneshot::Sender<Answer>,
}

/// What pushing a record into the batch being gathered asks of the caller.
pub(crate) struct Pushed {
    /// Batches complete now: send each.
    pub send: Vec<Vec<Item>>,
    /// The record opened a batch: send what it holds after `max_wait` unless it was sent
    /// before (this generation).
    pub timer: Option<u64>,
}

/// Gathers one subscription's records into batches of at most `max_records` records and
/// `max_bytes` of body, or what gathered within `max_wait` of a batch's first record.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    items: Vec<Item>,
    bytes: usize,
    generation: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} records)", self.items.len())
    }
}

impl Pending {
    fn take(&mut self) -> Vec<Item> {
        self.generation += 1;
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

impl Batcher {
    /// A batcher with `config`'s bounds.
    pub fn new(config: BatchConfig) -> Self {
        Batcher {
            config,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// How long a batch's first record waits for others.
    pub fn max_wait(&self) -> Duration {
        self.config.max_wait
    }

    /// Adds `item` to the batch being gathered. A record that would take the body past
    /// `max_bytes` sends what is gathered first and opens the next batch (one larger record
    /// goes alone).
    pub(crate) fn push(&self, item: Item) -> Pushed {
        let mut pending = self.pending.lock().expect("not poisoned");
        let mut send = Vec::new();
        // A comma per record, and the array's brackets.
        let size = item.json.len() + 1;
        if !pending.items.is_empty() && pending.bytes + size + 1 > self.config.max_bytes {
            send.push(pending.take());
        }
        pending.items.push(item);
        pending.bytes += size;
        if pending.items.len() >= self.config.max_records {
            send.push(pending.take());
            return Pushed { send, timer: None };
        }
        let timer = (pending.items.len() == 1).then_some(pending.generation);
        Pushed { send, timer }
    }

    /// The batch of `generation`, if it was not sent yet.
    pub(crate) fn take(&self, generation: u64) -> Option<Vec<Item>> {
        let mut pending = self.pending.lock().expect("not poisoned");
        (pending.generation == generation && !pending.items.is_empty()).then(|| pending.take())
    }
}

/// The request body: the records' JSON objects as one array.
pub(crate) fn body(items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.json);
    }
    body.push(b']');
    body
}

/// Whether `content_type` is JSON (`application/json`, `…+json`, parameters ignored).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A record in a batch request:
/// `{"id", "topic", "partition", "offset", "timestamp", "key" | "key_base64", "headers",
/// "attempt", "retry_topic"?, "content_type", "value" | "value_base64"}`. The value is JSON
/// when its content type is JSON and it parses, else base64; a record without a value has
/// `"value": null`. Headers are an object of UTF-8 values (a repeated name's values joined by
/// `, `, as HTTP combines fields; a value that is no UTF-8 is left out, as in a single request).
pub fn item(message: &Message, retry_topic: Option<&str>, default_content_type: &str) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut object = Map::new();
    object.insert("id".into(), delivery_id(message).into());
    object.insert("topic".into(), message.topic.clone().into());
    object.insert("partition".into(), message.partition.into());
    object.insert("offset".into(), message.offset.into());
    object.insert("timestamp".into(), message.timestamp.into());
    match message.key.as_deref().map(|k| (k, std::str::from_utf8(k))) {
        Some((_, Ok(key))) => object.insert("key".into(), key.into()),
        Some((key, Err(_))) => object.insert("key_base64".into(), b64(key).into()),
        None => object.insert("key".into(), Value::Null),
    };
    let mut headers = Map::new();
    for (name, value) in &message.headers {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), value.into());
            }
        }
    }
    object.insert("headers".into(), headers.into());
    object.insert("attempt".into(), message.attempt.max(1).into());
    if let Some(topic) = retry_topic {
        object.insert("retry_topic".into(), topic.into());
    }
    let content_type = message
        .header_value("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or(default_content_type);
    object.insert("content_type".into(), content_type.into());
    match &message.value {
        None => {
            object.insert("value".into(), Value::Null);
        }
        Some(value) => match is_json(content_type)
            .then(|| serde_json::from_slice::<Value>(value).ok())
            .flatten()
        {
            Some(json) => {
                object.insert("value".into(), json);
            }
            None => {
                object.insert("value_base64".into(), b64(value).into());
            }
        },
    }
    Value::Object(object)
}

/// The verdict on each record of a batch (`ids`, in request order) after a response with
/// `status`, `headers` and (the start of) its body.
///
/// - Not 2xx, or a `kafkit-outcome` header: [`verdict`] for every record.
/// - 2xx: each record is done, unless the body gives its result: `{"results": [...]}` or a
///   bare array, each `{"id", "outcome": "done" | "retry" | "dead_letter", "retry_after"?
///   (seconds, or an HTTP date; else the response's `Retry-After`), "reason"?}`. A body that
///   is no JSON object or array (empty, `OK`) is a plain 2xx; an object without `results`
///   too. A body that starts as JSON but cannot be read (cut at `max_response_bytes`, say)
///   retries every record: done is never assumed for a record the endpoint may have failed.
pub fn results(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    ids: &[String],
    now: SystemTime,
    max_retry_after: Duration,
) -> Vec<Verdict> {
    let whole = verdict(status, headers, body, now, max_retry_after);
    if !status.is_success() || headers.contains_key(OUTCOME_HEADER) {
        return vec![whole; ids.len()];
    }
    let all_done = || vec![Verdict::Delivered; ids.len()];
    let trimmed = body.trim_ascii_start();
    if !matches!(trimmed.first(), Some(b'{' | b'[')) {
        return all_done();
    }
    let entries = match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::Array(entries)) => entries,
        Ok(Value::Object(mut object)) => match object.remove("results") {
            Some(Value::Array(entries)) => entries,
            None => return all_done(),
            Some(_) => return unreadable(status, ids, "\"results\" is not an array"),
        },
        Ok(_) => return all_done(),
        Err(error) => return unreadable(status, ids, &error.to_string()),
    };
    let header_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for entry in &entries {
        if let Some(id) = entry.get("id").and_then(Value::as_str) {
            by_id.insert(id, entry);
        }
    }
    ids.iter()
        .map(|id| match by_id.get(id.as_str()) {
            None => Verdict::Delivered,
            Some(entry) => entry_verdict(entry, status, now, header_after, max_retry_after),
        })
        .collect()
}

/// One record's verdict from its entry in a batch answer: its `outcome`, `reason` and
/// `retry_after` (else the response's `Retry-After`, `header_after`), capped at
/// `max_retry_after`.
fn entry_verdict(
    entry: &Value,
    status: StatusCode,
    now: SystemTime,
    header_after: Option<Duration>,
    max_retry_after: Duration,
) -> Verdict {
    let reason = entry
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let after = match entry.get("retry_after") {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        Some(Value::String(s)) => retry_after(s, now),
        _ => header_after,
    }
    .map(|d| d.min(max_retry_after));
    let outcome = entry.get("outcome").and_then(Value::as_str).unwrap_or("");
    let text = |word: &str| {
        let said = if reason.is_empty() {
            word.to_owned()
        } else {
            format!("{word}: {reason}")
        };
        describe(status, said.as_bytes())
    };
    match outcome.to_ascii_lowercase().replace('-', "_").as_str() {
        "done" => Verdict::Delivered,
        "retry" => Verdict::Retry {
            reason: text("retry"),
            after,
        },
        "dead_letter" => Verdict::DeadLetter {
            reason: text("dead-letter"),
        },
        _ => Verdict::Retry {
            reason: describe(
                status,
                format!("unknown batch outcome {outcome:?}").as_bytes(),
            ),
            after: None,
        },
    }
}

/// Every record retried: a 2xx whose results cannot be read.
fn unreadable(status: StatusCode, ids: &[String], why: &str) -> Vec<Verdict> {
    let why: String = why.chars().take(EXCERPT_CHARS).collect();
    let reason = describe(
        status,
        format!("unreadable batch results: {why}").as_bytes(),
    );
    vec![
        Verdict::Retry {
            reason,
            after: None,
        };
        ids.len()
    ]
}

/// A record's [`item`] object, serialized.
pub(crate) fn item_bytes(
    message: &Message,
    retry_topic: Option<&str>,
    default_content_type: &str,
) -> Vec<u8> {
    serde_json::to_vec(&item(message, retry_topic, default_content_type))
        .unwrap_or_else(|_| json!({"id": delivery_id(message)}).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::fixtures::{self, header_map, retry};

    const CAP: Duration = Duration::from_secs(60);

    fn ids() -> Vec<String> {
        ["t/0/1", "t/0/2", "t/1/7", "t/1/8"]
            .map(String::from)
            .to_vec()
    }

    fn on(status: u16, headers: &[(&'static str, &str)], body: &str) -> Vec<Verdict> {
        results(
            StatusCode::from_u16(status).unwrap(),
            &header_map(headers),
            body.as_bytes(),
            &ids(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            CAP,
        )
    }

    #[test]
    fn a_plain_2xx_is_every_record_done() {
        for body in ["", "OK", r#"{"ok":true}"#, "  "] {
            assert_eq!(on(200, &[], body), vec![Verdict::Delivered; 4], "{body:?}");
        }
        assert_eq!(on(204, &[], ""), vec![Verdict::Delivered; 4]);
    }

    #[test]
    fn results_apply_per_record_and_unlisted_records_are_done() {
        let body = r#"{"results": [
            {"id": "t/0/2", "outcome": "retry", "retry_after": 5},
            {"id": "t/1/7", "outcome": "dead_letter", "reason": "bad sku"},
            {"id": "t/1/8", "outcome": "done"},
            {"id": "other/0/0", "outcome": "dead_letter"}
        ]}"#;
        assert_eq!(
            on(200, &[], body),
            vec![
                Verdict::Delivered,
                retry(Some(5), "HTTP 200 OK: retry"),
                Verdict::DeadLetter {
                    reason: "HTTP 200 OK: dead-letter: bad sku".into()
                },
                Verdict::Delivered,
            ]
        );
        // A bare array, `dead-letter` spelled with a dash, the response's Retry-After for a
        // retry without its own, a capped wait, an unknown outcome retried.
        let body = r#"[
            {"id": "t/0/1", "outcome": "retry", "reason": "busy"},
            {"id": "t/0/2", "outcome": "dead-letter"},
            {"id": "t/1/7", "outcome": "retry", "retry_after": 86400},
            {"id": "t/1/8", "outcome": "later"}
        ]"#;
        assert_eq!(
            on(207, &[("retry-after", "3")], body),
            vec![
                retry(Some(3), "HTTP 207 Multi-Status: retry: busy"),
                Verdict::DeadLetter {
                    reason: "HTTP 207 Multi-Status: dead-letter".into()
                },
                retry(Some(60), "HTTP 207 Multi-Status: retry"),
                retry(
                    None,
                    r#"HTTP 207 Multi-Status: unknown batch outcome "later""#
                ),
            ]
        );
    }

    #[test]
    fn a_non_2xx_applies_the_contract_to_the_whole_batch() {
        assert_eq!(
            on(503, &[("retry-after", "7")], ""),
            vec![retry(Some(7), "HTTP 503 Service Unavailable"); 4]
        );
        // Results in a failed response's body do not count.
        let body = r#"{"results": [{"id": "t/0/1", "outcome": "done"}]}"#;
        assert!(
            on(422, &[], body)
                .iter()
                .all(|v| matches!(v, Verdict::DeadLetter { .. }))
        );
        // kafkit-outcome on a 2xx applies to the whole batch too.
        assert!(
            on(200, &[("kafkit-outcome", "retry")], "")
                .iter()
                .all(|v| matches!(v, Verdict::Retry { .. }))
        );
    }

    #[test]
    fn unreadable_results_retry_every_record_never_assume_done() {
        // Cut at max_response_bytes: the endpoint may have failed some.
        let cut = r#"{"results": [{"id": "t/0/1", "outcome": "dead_le"#;
        let verdicts = on(200, &[], cut);
        assert_eq!(verdicts.len(), 4);
        assert!(verdicts.iter().all(|v| matches!(
            v,
            Verdict::Retry { reason, after: None } if reason.starts_with("HTTP 200 OK: unreadable batch results")
        )));
        assert!(
            on(200, &[], r#"{"results": 3}"#)
                .iter()
                .all(|v| matches!(v, Verdict::Retry { .. }))
        );
    }

    fn message() -> Message {
        fixtures::message(
            &[
                ("tenant-id", b"acme"),
                ("trace", b"a"),
                ("trace", b"b"),
                ("bin", b"\xff"),
            ],
            br#"{"sku":"x"}"#,
            2,
        )
    }

    #[test]
    fn an_item_carries_the_record_with_a_json_or_base64_value() {
        assert_eq!(
            item(&message(), None, "application/json"),
            json!({
                "id": "orders/2/41", "topic": "orders", "partition": 2, "offset": 41,
                "timestamp": 1_700_000_000_123_i64, "key": "order-7",
                "headers": {"tenant-id": "acme", "trace": "a, b"},
                "attempt": 2, "content_type": "application/json", "value": {"sku": "x"},
            })
        );
        // Not JSON by content type, or not parseable: base64. A binary key too. A retry
        // topic's copy names it.
        let mut m = message();
        m.headers = vec![("content-type".into(), b"text/plain".to_vec())];
        m.key = Some(vec![0xff]);
        let text = item(&m, Some("orders.retry.1"), "application/json");
        assert_eq!(text["value_base64"], "eyJza3UiOiJ4In0=");
        assert_eq!(text["key_base64"], "/w==");
        assert_eq!(text["retry_topic"], "orders.retry.1");
        assert_eq!(text["content_type"], "text/plain");
        m.headers.clear();
        m.value = Some(b"not json".to_vec());
        assert_eq!(
            item(&m, None, "application/json")["value_base64"],
            "bm90IGpzb24="
        );
        m.value = None;
        m.key = None;
        let tombstone = item(&m, None, "application/json");
        assert_eq!(tombstone["value"], Value::Null);
        assert_eq!(tombstone["key"], Value::Null);
    }

    fn pushed(batcher: &Batcher, id: &str, bytes: usize) -> Pushed {
        batcher.push(Item {
            id: id.into(),
            json: vec![b'x'; bytes],
            reply: oneshot::channel().0,
        })
    }

    fn sizes(pushed: &Pushed) -> Vec<usize> {
        pushed.send.iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_close_at_max_records_or_max_bytes_or_by_their_timer() {
        let batcher = Batcher::new(BatchConfig {
            max_records: 3,
            max_bytes: 100,
            max_wait: Duration::from_millis(20),
        });
        // The first record opens a batch and starts its timer; the third fills it.
        let first = pushed(&batcher, "a", 10);
        assert_eq!((sizes(&first), first.timer), (vec![], Some(0)));
        assert!(pushed(&batcher, "b", 10).timer.is_none());
        let third = pushed(&batcher, "c", 10);
        assert_eq!((sizes(&third), third.timer), (vec![3], None));
        // The first batch's timer finds it sent.
        assert!(batcher.take(0).is_none());
        // A record that would pass max_bytes sends what is gathered and opens the next.
        assert_eq!(pushed(&batcher, "d", 60).timer, Some(1));
        let big = pushed(&batcher, "e", 60);
        assert_eq!((sizes(&big), big.timer), (vec![1], Some(2)));
        // The timer sends what its batch gathered.
        let timed = batcher.take(2).unwrap();
        assert_eq!(
            timed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["e"]
        );
        assert_eq!(
            body(&timed),
            b"[xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx]"
        );
        // One record: a batch of one at once.
        let one = Batcher::new(BatchConfig {
            max_records: 1,
            ..BatchConfig::default()
        });
        assert_eq!(sizes(&pushed(&one, "a", 5)), vec![1]);
    }
}
