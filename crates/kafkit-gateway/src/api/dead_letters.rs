//! Dead-letter topics over HTTP: `GET /dlt/{topic}` lists dead-lettered records with their
//! failure details, `POST /dlt/{topic}/replay` re-publishes them to their original topics
//! (safe to repeat: it continues where the last replay stopped), or, with a body, only chosen
//! records or those a filter keeps (each remembered, so no later replay publishes it again).
//! Listing needs read access to the dead-letter topic; replay also needs write access to every
//! destination, checked before anything is re-published.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use kafkit::view::DeadLetterView;
use kafkit::{Redrive, filter::RecordFilter, reader::Limits, redrive::ReplayReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::topic_name::{DeadLetterTopicName, TopicName};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson, ApiQuery, ErrorBody, ReadFailures};
use crate::http::limits::ReadPlace;
use crate::reads::known_topics::lookup_error;

/// Most records one listing returns.
pub const MAX_LIST: usize = 500;
/// About the most bytes of keys, values and headers one listing reads.
const MAX_LIST_BYTES: usize = 8 << 20;
/// Most records one replay re-publishes.
pub const MAX_REDRIVE: usize = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dead_letters_list))
        .routes(routes!(dead_letters_redrive))
}

/// How many records; the operations document their own bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// At most this many records (list: 1–500, default 100; replay: 1–10000, default 1000).
    pub limit: Option<usize>,
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplayView)]
pub struct RedriveView {
    /// Records re-published.
    pub replayed: usize,
    /// Re-published records by destination topic.
    pub by_topic: std::collections::BTreeMap<String, usize>,
    /// Records passed over and why: for good (no or forged `original-topic`, unknown topic),
    /// or because they were replayed already, or a chosen offset holds no record.
    pub skipped: Vec<String>,
    /// Records not re-published for now (broker busy or down) and why; the next replay
    /// tries them again (and none of the records published after them).
    pub failed: Vec<String>,
    /// Records chosen but not published this time, left for the next replay (chosen
    /// offsets: choose them again): a replay stops after records fail for now, and before its
    /// commit could grow past what Kafka keeps of the metadata remembering what was replayed.
    pub held_back: usize,
    /// Records of the dead-letter topic read to find what to replay.
    pub scanned: usize,
}

/// What to replay instead of the next records: exactly one of `offsets`, `again` and `filter`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplayRequest, max_properties = 1)]
pub struct RedriveRequest {
    /// These records, wherever they are; records replayed already are skipped. `limit` does
    /// not apply.
    #[schema(min_items = 1, max_items = 10000)]
    pub offsets: Option<Vec<RecordAt>>,
    /// These records, even those replayed or passed over for good before (say, when their
    /// topic was missing): each is published again. `limit` does not apply.
    #[schema(min_items = 1, max_items = 10000)]
    pub again: Option<Vec<RecordAt>>,
    /// Up to `limit` not-yet-replayed records this filter keeps, from the replay position on
    /// (at most 100000 records read).
    pub filter: Option<RecordFilter>,
}

/// Where a record is.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordAt {
    /// Partition.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "crate::api::produce::body::whole")]
    pub partition: i32,
    /// Offset.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "crate::api::produce::body::whole")]
    pub offset: i64,
}

/// What a replay takes.
#[derive(Debug, Clone)]
pub enum Choice {
    /// The next records from the replay position, at most this many.
    Next(usize),
    /// These records (partition, offset).
    Offsets(Vec<(i32, i64)>),
    /// These records, even if replayed or passed over before.
    Again(Vec<(i32, i64)>),
    /// Records the filter keeps, at most this many.
    Matching(RecordFilter, usize),
}

/// List dead-lettered records, oldest first.
#[utoipa::path(
    get,
    path = "/dlt/{topic}",
    operation_id = "dlt_list",
    tag = "dead letters",
    params(
        ("topic" = TopicName, Path, description = "Dead-letter topic, e.g. orders.dlq"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500,
            description = "At most this many records (default 100)"),
    ),
    responses(
        (status = 200, description = "Dead-lettered records", body = Vec<DeadLetterView>),
        (status = 400, description = "Invalid topic or limit", body = ErrorBody),
        (status = 403, description = "Topic not readable with this key, or the broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn dead_letters_list(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let limit = bounded(query.limit, 100, MAX_LIST)?;
    let messages = list(&state, &caller, &topic, limit).await?;
    Ok(Json(messages.iter().map(DeadLetterView::of).collect()))
}

/// Up to `limit` records of dead-letter topic `topic` (and about 8 MiB), oldest first, when
/// `caller` may read it.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    topic: &str,
    limit: usize,
) -> Result<Vec<kafkit::Message>, ApiError> {
    kafkit::record::validate_topic(topic)?;
    caller.require_read(topic)?;
    // The reader looks the topic up itself: an unknown one is its error, answered 404.
    state
        .kafka()
        .redrive()?
        .list_within(topic, Limits::to_end(limit).bytes(MAX_LIST_BYTES))
        .await
        .map_err(|e| lookup_error(topic, e))
}

/// Re-publish dead-lettered records to their original topics: the next ones, or with a body
/// the chosen ones or those a filter keeps.
#[utoipa::path(
    post,
    path = "/dlt/{topic}/replay",
    operation_id = "dlt_replay",
    tag = "dead letters",
    params(
        ("topic" = DeadLetterTopicName, Path, description = "Dead-letter topic, e.g. orders.dlq"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000,
            description = "At most this many records (default 1000); with `offsets`, which choose the records themselves, it is not used"),
    ),
    request_body(content = Option<RedriveRequest>, content_type = "application/json",
        description = "Optional: replay chosen records (`offsets`; `again` for records \
            replayed or passed over before) or those a `filter` keeps instead of the next ones"),
    responses(
        (status = 200, description = "What was replayed", body = RedriveView),
        (status = 400, description = "Invalid topic, limit, offsets or filter (the message names the field), or a dead-letter topic not named after the topic it serves", body = ErrorBody),
        (status = 403, description = "Dead-letter topic not readable, a destination not writable, or the broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 409, description = "`replay_refused`: refused before anything was replayed, remembering the chosen records would exceed the replay's metadata budget (replay the earlier records first), or the replay's committed state is unreadable. `replay_in_progress`: another process (a gateway replica, the CLI) is replaying this dead-letter topic, nothing was published, ask again once it is done; or, rarely, this replay lost its lock (cut off from Kafka for longer than the session timeout) and its progress was not committed", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn dead_letters_redrive(
    State(state): State<AppState>,
    caller: Caller,
    place: Option<Extension<ReadPlace>>,
    Path(topic): Path<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
    body: Option<ApiJson<Option<serde_json::Value>>>,
) -> Result<Json<RedriveView>, ApiError> {
    // No body, or `null` (the document allows it), is the sequential replay.
    let request = match body.and_then(|ApiJson(request)| request) {
        None => RedriveRequest::default(),
        Some(body) => redrive_request(body)?,
    };
    let choice = match (request.offsets, request.again, request.filter) {
        (Some(offsets), _, _) => Choice::Offsets(records_at("offsets", &offsets)?),
        (None, Some(again), _) => Choice::Again(records_at("again", &again)?),
        (None, None, Some(filter)) => {
            Choice::Matching(filter, bounded(query.limit, 1_000, MAX_REDRIVE)?)
        }
        (None, None, None) => Choice::Next(bounded(query.limit, 1_000, MAX_REDRIVE)?),
    };
    let place = place.map(|Extension(place)| place);
    redrive(&state, &caller, &topic, choice, place)
        .await
        .map(Json)
}

/// `(partition, offset)` of each record of `field`, at most [`MAX_REDRIVE`] of them.
fn records_at(field: &str, records: &[RecordAt]) -> Result<Vec<(i32, i64)>, ApiError> {
    if records.len() > MAX_REDRIVE {
        return Err(ApiError::bad_request(
            "invalid_selection",
            format!(
                "{field}: at most {MAX_REDRIVE} records, got {}",
                records.len()
            ),
        ));
    }
    Ok(records.iter().map(|r| (r.partition, r.offset)).collect())
}

/// Reads a replay request from a JSON object. serde's derive would also read a struct from an
/// array of its fields (`[null, null]`, `[0, 1]`), which the document does not allow.
fn redrive_request(body: serde_json::Value) -> Result<RedriveRequest, ApiError> {
    let shape =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message);
    let serde_json::Value::Object(fields) = &body else {
        return Err(shape(
            "body: an object with `offsets`, `again` or `filter`, or null".to_owned(),
        ));
    };
    if fields.len() > 1 {
        return Err(shape(
            "body: only one of `offsets`, `again` and `filter`".to_owned(),
        ));
    }
    if fields
        .get("filter")
        .is_some_and(|f| !f.is_object() && !f.is_null())
    {
        return Err(shape("filter: an object".to_owned()));
    }
    for field in ["offsets", "again"] {
        if let Some(serde_json::Value::Array(records)) = fields.get(field)
            && let Some(at) = records.iter().position(|o| !o.is_object())
        {
            return Err(shape(format!(
                "{field}[{at}]: an object with `partition` and `offset`"
            )));
        }
    }
    serde_json::from_value(body).map_err(|e| shape(format!("body: {e}")))
}

/// Re-publishes the chosen records of `topic` to the topic it serves, through [`kafkit::Redrive`]'s
/// safe replay: 403 and nothing replayed unless `caller` may read the dead-letter topic and
/// write every destination. The replay runs on if the request is cancelled (its published
/// records must be committed), holding the request's read `place` until it ends.
pub async fn redrive(
    state: &AppState,
    caller: &Caller,
    topic: &str,
    choice: Choice,
    place: Option<ReadPlace>,
) -> Result<RedriveView, ApiError> {
    kafkit::record::validate_topic(topic)?;
    caller.require_read(topic)?;
    ensure_exists(state, topic).await?;
    let redrive = state.kafka().redrive()?;
    let allowed = {
        let caller = caller.clone();
        move |destination: &str| caller.may_write(destination)
    };
    let dead_letter_topic = topic.to_owned();
    let report: ReplayReport = tokio::spawn(async move {
        let _place = place;
        replay(&redrive, &dead_letter_topic, choice, allowed).await
    })
    .await
    .map_err(kafkit::Error::Task)??;
    if !report.denied.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not write {}; nothing was replayed",
                caller.name(),
                report.denied.join(", ")
            ),
        ));
    }
    Ok(RedriveView {
        replayed: report.total(),
        by_topic: report.replayed,
        skipped: report.skipped,
        failed: report.failed,
        held_back: report.held_back,
        scanned: report.scanned,
    })
}

/// The replay `choice` asks for.
async fn replay(
    redrive: &Redrive,
    topic: &str,
    choice: Choice,
    allowed: impl Fn(&str) -> bool + Send + 'static,
) -> kafkit::Result<ReplayReport> {
    match choice {
        Choice::Next(limit) => redrive.replay_where(topic, limit, allowed).await,
        Choice::Offsets(offsets) => redrive.replay_offsets(topic, &offsets, allowed).await,
        Choice::Again(offsets) => redrive.replay_again(topic, &offsets, allowed).await,
        Choice::Matching(filter, limit) => {
            redrive
                .replay_matching(topic, &filter, limit, allowed)
                .await
        }
    }
}

fn bounded(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max}, got {n}"),
        )),
    }
}

/// 404 for an unknown topic; a broker that cannot answer is 503/502, not 404.
async fn ensure_exists(state: &AppState, topic: &str) -> Result<(), ApiError> {
    state
        .admin()
        .describe_topic(topic)
        .await
        .map(drop)
        .map_err(|e| lookup_error(topic, e))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::router;
    use crate::testing::{bearer, call, get, post, state, state_with_keys};

    /// A dead-letter topic holding one record from `source`, as the consumer writes it.
    async fn dead_letter_topic(source: &str) -> String {
        testkit::dead_letter_topic(source, &[("k1", "permanent")]).await
    }

    #[tokio::test]
    async fn list_shows_failures_and_replay_republishes_once() {
        let source = testkit::topic("gw-dlt-source", 1).await;
        let dlt = dead_letter_topic(&source).await;
        let app = router(state());

        // Listing shows the record and why it failed.
        let listed = call(&app, get(&format!("/dlt/{dlt}"))).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
        assert_eq!(listed.body[0]["value"], json!({"id": 1}));
        assert_eq!(listed.body[0]["encoding"], "json");
        assert_eq!(listed.body[0]["key"], "k1");
        assert_eq!(listed.body[0]["failure"]["original_topic"], source.as_str());
        assert_eq!(listed.body[0]["failure"]["error_kind"], "permanent");
        assert_eq!(listed.body[0]["failure"]["error_message"], "rejected");

        // Replay re-publishes it to the source topic, once.
        let replayed = call(&app, post(&format!("/dlt/{dlt}/replay"), &json!({}))).await;
        assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text);
        assert_eq!(replayed.body["replayed"], 1);
        assert_eq!(replayed.body["by_topic"][&source], 1);
        let again = call(&app, post(&format!("/dlt/{dlt}/replay"), &json!({}))).await;
        assert_eq!(again.body["replayed"], 0);
        let copies = testkit::read(&source, 2, std::time::Duration::from_secs(5)).await;
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].key_str(), Some("k1"));
        assert!(
            copies[0]
                .header_value(kafkit::dead_letter::ERROR_KIND)
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_replay_keeps_its_read_place_until_it_ends_after_its_request_timed_out() {
        use crate::http::limits::DEFAULT_CONCURRENT_READS;
        // 10,000 dead letters of 1 kB: a replay that outlasts a 300 ms request.
        let source = testkit::topic("gw-dlt-place", 1).await;
        let dlt = testkit::dead_letter_topic(&source, &[]).await;
        let records = (0..10_000).map(|i| {
            kafkit::Record::to(&dlt)
                .key(format!("k{i}"))
                .header(kafkit::dead_letter::ORIGINAL_TOPIC, source.as_str())
                .text("x".repeat(1_000))
        });
        testkit::send(records.collect()).await;
        let timeouts = crate::Timeouts {
            broker_timeout: std::time::Duration::from_secs(5),
            request_timeout: std::time::Duration::from_millis(300),
        };
        let state = state().with_timeouts(timeouts);
        let app = router(state.clone());
        let replay = post(&format!("/dlt/{dlt}/replay?limit=10000"), &json!(null));
        let answer = call(&app, replay).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text
        );
        // The replay runs on, and holds the request's place while it does...
        let places = || state.read_limit().available();
        assert_eq!(places(), DEFAULT_CONCURRENT_READS - 1);
        // ...until it ends, having replayed every record.
        let freed = testkit::eventually(std::time::Duration::from_secs(60), || {
            places() == DEFAULT_CONCURRENT_READS
        })
        .await;
        assert!(freed, "the place was never freed");
        assert_eq!(crate::testing::records_in(&source).await, 10_000);
    }

    #[tokio::test]
    async fn bad_input_and_permissions() {
        let app = router(state());
        let bad = call(&app, get("/dlt/bad%20name")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let unknown = call(&app, get(&format!("/dlt/{}", testkit::unique("none")))).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.body["error"]["code"], "unknown_topic");
        let limit = call(&app, get("/dlt/x?limit=0")).await;
        assert_eq!(limit.status, StatusCode::BAD_REQUEST);
        assert_eq!(limit.body["error"]["code"], "invalid_limit");

        // A key that may read dead-letter topics but not write the source is refused, and
        // nothing is replayed.
        let source = testkit::topic("gw-dlt-locked", 1).await;
        let dlt = dead_letter_topic(&source).await;
        let app = router(state_with_keys("reader:read=*,write=other-*"));
        let refused = call(
            &app,
            bearer(post(&format!("/dlt/{dlt}/replay"), &json!({})), "reader"),
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&source)
        );
        assert!(
            testkit::read(&source, 1, std::time::Duration::from_secs(2))
                .await
                .is_empty()
        );
        let listed = call(&app, bearer(get(&format!("/dlt/{dlt}")), "reader")).await;
        assert_eq!(listed.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_replays_chosen_records_or_a_filter_and_bad_input_names_the_field() {
        let source = testkit::topic("gw-dlt-chosen", 1).await;
        let dlt = testkit::dead_letter_topic(
            &source,
            &[("k0", "permanent"), ("k1", "permanent"), ("k2", "invalid")],
        )
        .await;
        let app = router(state());
        let replay = format!("/dlt/{dlt}/replay");

        // Bad choices are 400s naming the field, and replay nothing.
        for (body, field) in [(json!({"offsets": []}), "offsets")] {
            let refused = call(&app, post(&replay, &body)).await;
            assert_eq!(
                refused.status,
                StatusCode::BAD_REQUEST,
                "{body}: {}",
                refused.text
            );
            assert_eq!(refused.body["error"]["code"], "invalid_selection");
            let message = refused.body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(field), "{body}: {message}");
        }
        // Bodies of the wrong shape are 422s naming what was wrong, arrays in place of
        // objects included (serde alone would read them as the objects' fields).
        for (body, names) in [
            (json!({"offset": 1}), "offset"),
            (
                json!({"offsets": [{"partition": 0, "offset": 9_223_372_036_854_775_808_u64}]}),
                "is not an integer of i64",
            ),
            (
                json!({"offsets": [{"partition": 0, "offset": 9.3e18}]}),
                "is not an integer of i64",
            ),
            (json!([null, null]), "body"),
            (json!({"offsets": [[0, 1]]}), "offsets[0]"),
            (json!({"filter": ["k", null]}), "filter"),
            (
                json!({"offsets": [{"partition": 0, "offset": 1}], "filter": null}),
                "only one of",
            ),
        ] {
            let shape = call(&app, post(&replay, &body)).await;
            assert_eq!(shape.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let message = shape.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(names), "{body}: {message}");
        }

        // Choices that name no record are reported, and replay nothing; integers may be
        // written as integral floats (JSON Schema's `integer` allows `3.0`).
        let nothing =
            json!({"offsets": [{"partition": 0, "offset": 3.0}, {"partition": 7, "offset": 0}]});
        let none = call(&app, post(&format!("{replay}?limit=1"), &nothing)).await;
        assert_eq!(none.status, StatusCode::OK, "{}", none.text);
        assert_eq!(none.body["replayed"], 0);
        let skipped = none.body["skipped"].to_string();
        assert!(
            skipped.contains("0/3: past the end") && skipped.contains("has no partition 7"),
            "{skipped}"
        );

        // A read-only key is refused, and nothing is replayed.
        let readers = router(state_with_keys("reader:read=*"));
        let chosen = json!({"offsets": [{"partition": 0, "offset": 1}]});
        let refused = call(&readers, bearer(post(&replay, &chosen), "reader")).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

        // Record 1, chosen: replayed once, and skipped when chosen again.
        let one = call(&app, post(&replay, &chosen)).await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        assert_eq!(one.body["replayed"], 1);
        let again = call(&app, post(&replay, &chosen)).await;
        assert_eq!(again.body["replayed"], 0);
        assert_eq!(again.body["skipped"], json!(["0/1: already replayed"]));
        // Asked for again, it is published again.
        let forced = json!({"again": [{"partition": 0, "offset": 1}]});
        let forced = call(&app, post(&replay, &forced)).await;
        assert_eq!(forced.status, StatusCode::OK, "{}", forced.text);
        assert_eq!(forced.body["replayed"], 1);
        // Record 2, by its key.
        let matching = call(&app, post(&replay, &json!({"filter": {"key": "k2"}}))).await;
        assert_eq!(matching.body["replayed"], 1, "{}", matching.text);
        assert_eq!(matching.body["scanned"], 3);
        // Replay all (a `null` body is none) takes record 0 only.
        let rest = call(&app, post(&replay, &serde_json::Value::Null)).await;
        assert_eq!(rest.body["replayed"], 1, "{}", rest.text);
        let copies = testkit::read(&source, 5, std::time::Duration::from_secs(5)).await;
        let mut keys: Vec<&str> = copies.iter().filter_map(|m| m.key_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["k0", "k1", "k1", "k2"], "k1 twice: asked for again");
    }
}
