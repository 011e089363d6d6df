//! The topic read API: `GET /topics`, `GET /topics/{topic}` (partitions, watermarks, configs)
//! and `GET /topics/{topic}/messages` (browse records of one partition). A caller sees only the
//! topics its key may read.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use kafkit::admin::PartitionInfo;
use kafkit::reader::Start;
use kafkit::view::MessageView;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::topic_name::TopicName;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiQuery, ErrorBody, ReadFailures};
use crate::reads::browse::{Browse, DEFAULT_BROWSE_LIMIT, MAX_BROWSE_LIMIT, browse};
use crate::reads::known_topics::lookup_error;
use crate::reads::topic_configs::{TopicConfigs, topic_configs};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(topics_list))
        .routes(routes!(topics_describe))
        .routes(routes!(messages_browse))
}

/// A topic in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicSummary {
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: usize,
    /// Records currently kept (high minus low watermarks).
    pub records: i64,
}

/// One partition with its watermarks.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionView {
    /// Partition id.
    pub id: i32,
    /// Node id of the leader (-1 when none).
    pub leader: i32,
    /// Oldest offset kept.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
}

impl From<&PartitionInfo> for PartitionView {
    fn from(p: &PartitionInfo) -> Self {
        PartitionView {
            id: p.id,
            leader: p.leader,
            low_watermark: p.low_watermark,
            high_watermark: p.high_watermark,
        }
    }
}

/// A topic in detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicDetail {
    /// Name.
    pub name: String,
    /// Records currently kept.
    pub records: i64,
    /// Partitions by id.
    pub partitions: Vec<PartitionView>,
    /// Topic configs (sensitive ones left out); `null` when the broker would not tell.
    pub configs: Option<BTreeMap<String, String>>,
    /// Why `configs` is `null`.
    pub configs_error: Option<String>,
}

/// Where to start browsing and how much to return.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BrowseQuery {
    /// Partition to read (default 0).
    #[param(minimum = 0)]
    pub partition: Option<i32>,
    /// First offset (default: the oldest kept).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Most records to return (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// A slice of one partition.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowseResponse {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Oldest offset kept.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Offset to ask for to continue after this slice.
    pub next_offset: i64,
    /// The records, in offset order.
    pub messages: Vec<MessageView>,
}

/// List the topics the caller may read.
#[utoipa::path(
    get,
    path = "/topics",
    tag = "topics",
    responses(
        (status = 200, description = "Topics, by name", body = Vec<TopicSummary>),
        (status = 403, description = "The broker refused the gateway", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn topics_list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TopicSummary>>, ApiError> {
    // Only the caller's topics cost watermark requests.
    let readable = caller.clone();
    let topics = state
        .admin()
        .list_topics_where(move |name| readable.may_read(name))
        .await?;
    Ok(Json(
        topics
            .into_iter()
            .map(|t| TopicSummary {
                records: t.record_count(),
                partitions: t.partitions.len(),
                name: t.name,
            })
            .collect(),
    ))
}

/// A topic's partitions, watermarks and configs.
#[utoipa::path(
    get,
    path = "/topics/{topic}",
    tag = "topics",
    params(("topic" = TopicName, Path, description = "Topic name")),
    responses(
        (status = 200, description = "The topic", body = TopicDetail),
        (status = 400, description = "Invalid topic name", body = ErrorBody),
        (status = 403, description = "The key may not read this topic, or the broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn topics_describe(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Json<TopicDetail>, ApiError> {
    caller.require_read(&topic)?;
    let info = state
        .admin()
        .describe_topic(&topic)
        .await
        .map_err(|e| lookup_error(&topic, e))?;
    let (configs, configs_error) = match topic_configs(&state, &topic).await {
        TopicConfigs::Known(configs) => (Some(configs), None),
        TopicConfigs::Unknown(reason) => (None, Some(reason)),
    };
    Ok(Json(TopicDetail {
        records: info.record_count(),
        partitions: info.partitions.iter().map(PartitionView::from).collect(),
        name: info.name,
        configs,
        configs_error,
    }))
}

/// Browse records of one partition.
#[utoipa::path(
    get,
    path = "/topics/{topic}/messages",
    tag = "topics",
    params(("topic" = TopicName, Path, description = "Topic name"), BrowseQuery),
    responses(
        (status = 200, description = "Records from the offset on", body = BrowseResponse),
        (status = 400, description = "Invalid topic name or query", body = ErrorBody),
        (status = 403, description = "The key may not read this topic, or the broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown topic or partition", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn messages_browse(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    ApiQuery(query): ApiQuery<BrowseQuery>,
) -> Result<Json<BrowseResponse>, ApiError> {
    caller.require_read(&topic)?;
    let limit = query.limit.unwrap_or(DEFAULT_BROWSE_LIMIT);
    if !(1..=MAX_BROWSE_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_BROWSE_LIMIT}, got {limit}"),
        ));
    }
    if let Some(offset) = query.offset
        && offset < 0
    {
        return Err(ApiError::bad_request(
            "invalid_offset",
            format!("offset must be >= 0, got {offset}"),
        ));
    }
    let start = Start::Offset(query.offset.unwrap_or(0));
    let slice = browse(
        &state,
        Browse::new(&topic, partition_of(&query), start, limit),
    )
    .await?;
    let (low, high, partition) = (slice.low_watermark, slice.high_watermark, slice.partition);
    // Records below the low watermark are gone: reading starts at the oldest one kept.
    let start = query.offset.unwrap_or(low).max(low);
    let messages: Vec<MessageView> = slice.messages.iter().map(MessageView::of).collect();
    let next_offset = messages.last().map_or(start.min(high), |m| m.offset + 1);
    Ok(Json(BrowseResponse {
        topic,
        partition,
        low_watermark: low,
        high_watermark: high,
        next_offset,
        messages,
    }))
}

fn partition_of(query: &BrowseQuery) -> i32 {
    query.partition.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::router;
    use crate::testing::{bearer, call, get, post, state, state_with_keys};

    #[tokio::test]
    async fn topics_are_listed_and_described_with_watermarks() {
        let topic = testkit::topic("rt-topics", 2).await;
        testkit::populate(&topic, 4, 4).await;
        let app = router(state());
        // The list has the topic with its partition and record counts.
        let answer = call(&app, get("/topics")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let listed = answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == topic.as_str())
            .cloned();
        assert_eq!(
            listed,
            Some(json!({"name": topic, "partitions": 2, "records": 4}))
        );
        // The detail has both partitions, whose watermarks add up to the four records.
        let answer = call(&app, get(&format!("/topics/{topic}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["records"], 4);
        let partitions = answer.body["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 2);
        let kept: i64 = partitions
            .iter()
            .map(|p| p["high_watermark"].as_i64().unwrap() - p["low_watermark"].as_i64().unwrap())
            .sum();
        assert_eq!(kept, 4);
        // Configs come back, or the reason they could not.
        assert!(
            answer.body["configs"].is_object() || answer.body["configs_error"].is_string(),
            "{}",
            answer.text
        );
        // Unknown and invalid names.
        let answer = call(&app, get(&format!("/topics/{}", testkit::unique("nope")))).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"]["code"], "unknown_topic");
        let answer = call(&app, get("/topics/bad%20name")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.body["error"]["code"], "invalid_record");
    }

    #[tokio::test]
    async fn messages_are_browsed_decoded_from_an_offset() {
        let topic = testkit::topic("rt-browse", 1).await;
        let app = router(state());
        // Three records: JSON, text and bytes.
        let batch = json!({"messages": [
            {"topic": topic, "key": "k1", "value": {"id": 1}, "headers": {"h": "v"}},
            {"topic": topic, "value": "plain text", "encoding": "string"},
            {"topic": topic, "value": "AJ+Slg==", "encoding": "base64"},
        ]});
        assert_eq!(
            call(&app, post("/kafka/send-batch", &batch)).await.status,
            StatusCode::OK
        );
        // From the beginning, everything, decoded.
        let answer = call(&app, get(&format!("/topics/{topic}/messages"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["high_watermark"], 3);
        assert_eq!(answer.body["next_offset"], 3);
        let messages = answer.body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0]["key"], "k1");
        assert_eq!(messages[0]["key_encoding"], "string");
        assert_eq!(messages[0]["value"], json!({"id": 1}));
        assert_eq!(messages[0]["encoding"], "json");
        assert!(
            messages[0]["headers"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "h", "value": "v", "encoding": "string"}))
        );
        assert_eq!(messages[1]["value"], "plain text");
        assert_eq!(messages[1]["encoding"], "string");
        assert_eq!(messages[2]["value"], "AJ+Slg==");
        assert_eq!(messages[2]["encoding"], "base64");
        // From offset 1, one record.
        let answer = call(
            &app,
            get(&format!(
                "/topics/{topic}/messages?partition=0&offset=1&limit=1"
            )),
        )
        .await;
        assert_eq!(answer.body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(answer.body["messages"][0]["offset"], 1);
        assert_eq!(answer.body["next_offset"], 2);
        // Past the end: nothing, and where to continue.
        let answer = call(&app, get(&format!("/topics/{topic}/messages?offset=9"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["messages"], json!([]));
        assert_eq!(answer.body["next_offset"], 3);
        // Bad queries.
        for (query, status, code) in [
            ("limit=0", StatusCode::BAD_REQUEST, "invalid_limit"),
            ("limit=501", StatusCode::BAD_REQUEST, "invalid_limit"),
            ("offset=-1", StatusCode::BAD_REQUEST, "invalid_offset"),
            ("partition=x", StatusCode::BAD_REQUEST, "invalid_query"),
            ("colour=red", StatusCode::BAD_REQUEST, "invalid_query"),
            ("partition=7", StatusCode::NOT_FOUND, "unknown_partition"),
        ] {
            let answer = call(&app, get(&format!("/topics/{topic}/messages?{query}"))).await;
            assert_eq!(answer.status, status, "{query}: {}", answer.text);
            assert_eq!(answer.body["error"]["code"], code, "{query}");
        }
        let answer = call(
            &app,
            get(&format!("/topics/{}/messages", testkit::unique("nope"))),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"]["code"], "unknown_topic");
    }

    #[tokio::test]
    async fn a_key_reads_only_the_topics_it_is_granted() {
        let visible = testkit::topic("rt-read-ok", 1).await;
        let hidden = testkit::topic("rt-read-no", 1).await;
        let app = router(state_with_keys(&format!("viewer:read={visible}")));
        // Without a key: 401.
        let answer = call(&app, get("/topics")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        // The list shows the granted topic only.
        let answer = call(&app, bearer(get("/topics"), "viewer")).await;
        assert_eq!(answer.status, StatusCode::OK);
        let names: Vec<&str> = answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![visible.as_str()]);
        // Describing or browsing another topic: 403.
        for path in [
            format!("/topics/{hidden}"),
            format!("/topics/{hidden}/messages"),
        ] {
            let answer = call(&app, bearer(get(&path), "viewer")).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(answer.body["error"]["code"], "forbidden");
        }
        let answer = call(
            &app,
            bearer(get(&format!("/topics/{visible}/messages")), "viewer"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_embedded_broker_describes_a_topic_at_once_without_configs() {
        let (_cluster, state) = crate::testing::embedded_state();
        state
            .admin()
            .ensure_topics(&[kafkit::TopicSpec::new("embedded-detail", 2)])
            .await
            .unwrap();
        let app = router(state);
        let began = std::time::Instant::now();
        let answer = call(&app, get("/topics/embedded-detail")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["partitions"].as_array().unwrap().len(), 2);
        let why = answer.body["configs_error"].as_str().unwrap();
        assert!(why.contains("embedded development broker"), "{why}");
        assert!(
            began.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            began.elapsed()
        );
    }
}
