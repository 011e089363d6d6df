//! The consumer-group read API: `GET /groups` and `GET /groups/{group}` (committed offsets and
//! lag per partition). Group names are not topics: any valid key may list them, and a group's
//! lag shows only the partitions of topics the key may read.
//!
//! The embedded development broker has no consumer-group API (ListGroups, DescribeGroups):
//! on it these endpoints answer 501 `unsupported_by_broker` at once.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody, ReadFailures};

/// The group ids accepted, as the document states them (in `groups_describe`'s parameter,
/// which needs a literal; the openapi test checks they agree): no control character, no leading
/// space (see [`detail`]).
#[cfg(test)]
pub const GROUP_ID_PATTERN: &str = r"^[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";

/// Longest group id accepted (Kafka's own limit is the request size; this keeps logs sane).
pub const MAX_GROUP_LEN: usize = 255;

/// How a 501 names the embedded broker's limitation.
const EMBEDDED_BROKER: &str = "the embedded development broker (it has no consumer-group API; \
     run against an Apache Kafka broker, e.g. set KAFKA_BROKERS)";

/// 501 when the gateway runs on the embedded development broker, which cannot `operation`.
fn require_group_api(state: &AppState, operation: &str) -> Result<(), ApiError> {
    if state.on_embedded_broker() {
        return Err(kafkit::Error::Unsupported {
            operation: operation.to_owned(),
            broker: EMBEDDED_BROKER,
        }
        .into());
    }
    Ok(())
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(groups_list))
        .routes(routes!(groups_describe))
}

/// A consumer group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSummary {
    /// Group id.
    pub name: String,
    /// State as the broker reports it (`Stable`, `Empty`, …).
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// Members the broker reported.
    pub members: usize,
}

/// A group's position in one partition.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionLagView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the group will read; `null` when it never committed here.
    pub committed: Option<i64>,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Records the group has yet to process.
    pub lag: i64,
}

/// A group's committed offsets and lag.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupDetail {
    /// Group id.
    pub group: String,
    /// Sum of `lag` over the partitions shown.
    pub total_lag: i64,
    /// Partitions where the group committed, by topic and partition.
    pub partitions: Vec<PartitionLagView>,
}

/// List consumer groups.
#[utoipa::path(
    get,
    path = "/groups",
    tag = "groups",
    responses(
        (status = 200, description = "Groups, by name", body = Vec<GroupSummary>,
            links(("describe" = (operation_id = "groups_describe",
                parameters(("group" = "$response.body#/0/name")),
                description = "The first group's lag")))),
        (status = 403, description = "The broker refused the gateway", body = ErrorBody),
        (status = 501, description = "The broker has no consumer-group API (the embedded \
            development broker): code `unsupported_by_broker`", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn groups_list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<GroupSummary>>, ApiError> {
    let groups = list(&state).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| GroupSummary {
                name: g.name,
                state: g.state,
                protocol_type: g.protocol_type,
                members: g.members,
            })
            .collect(),
    ))
}

/// A group's committed offsets and lag per partition.
#[utoipa::path(
    get,
    path = "/groups/{group}",
    tag = "groups",
    params(("group" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u0020\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        description = "Group id: no control character, no leading space")),
    responses(
        (status = 200, description = "The group's lag", body = GroupDetail),
        (status = 400, description = "Invalid group id", body = ErrorBody),
        (status = 403, description = "The broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown group", body = ErrorBody),
        (status = 501, description = "The broker has no consumer-group API (the embedded \
            development broker): code `unsupported_by_broker`", body = ErrorBody),
        ReadFailures,
    ),
    security(("api_key" = []))
)]
pub async fn groups_describe(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> Result<Json<GroupDetail>, ApiError> {
    detail(&state, &caller, group).await.map(Json)
}

/// Every consumer group, by name; 501 on the embedded development broker.
pub async fn list(state: &AppState) -> Result<Vec<kafkit::admin::GroupInfo>, ApiError> {
    require_group_api(state, "listing consumer groups")?;
    Ok(state.admin().list_groups().await?)
}

/// A group's committed offsets and lag in the partitions of the topics `caller` may read:
/// 400 for an invalid id, 404 for an unknown group, 501 on the embedded development broker.
pub async fn detail(
    state: &AppState,
    caller: &Caller,
    group: String,
) -> Result<GroupDetail, ApiError> {
    // Characters, not bytes: the document's `maxLength` counts characters. librdkafka strips
    // the leading whitespace of a group id (" g" would read group "g", "\n" no group at all),
    // and control characters name no real group: both are refused.
    if group.is_empty()
        || group.chars().count() > MAX_GROUP_LEN
        || group.chars().any(char::is_control)
        || group.starts_with(|c: char| c.is_ascii_whitespace())
    {
        return Err(ApiError::bad_request(
            "invalid_group",
            format!(
                "a group id has 1 to {MAX_GROUP_LEN} characters, no control character and no \
                 leading space"
            ),
        ));
    }
    require_group_api(state, &format!("describing consumer group {group:?}"))?;
    let lags = state.admin().group_lag(&group, &[]).await?;
    // No committed offset anywhere: tell an unknown group from an idle one.
    if lags.is_empty()
        && !state
            .admin()
            .list_groups()
            .await?
            .iter()
            .any(|g| g.name == group)
    {
        return Err(ApiError::not_found(
            "unknown_group",
            format!("consumer group {group:?} does not exist"),
        ));
    }
    let partitions: Vec<PartitionLagView> = lags
        .into_iter()
        .filter(|l| caller.may_read(&l.topic))
        .map(|l| PartitionLagView {
            topic: l.topic,
            partition: l.partition,
            committed: l.committed,
            high_watermark: l.high_watermark,
            lag: l.lag,
        })
        .collect();
    Ok(GroupDetail {
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        group,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use kafkit::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use kafkit::rdkafka::{Offset, TopicPartitionList};
    use serde_json::json;

    use super::MAX_GROUP_LEN;
    use crate::router;
    use crate::testing::{bearer, call, config, embedded_state, get, state, state_with_keys};

    /// Commits `offset` for `group` in partition 0 of `topic`, as a consumer would.
    async fn commit(group: &str, topic: &str, offset: i64) {
        let consumer: BaseConsumer = config().to_consumer_config(group).create().unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, 0, Offset::Offset(offset))
            .unwrap();
        tokio::task::spawn_blocking(move || {
            consumer.commit(&offsets, CommitMode::Sync).unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_group_shows_its_committed_offsets_and_lag() {
        let topic = testkit::topic("rt-lag", 1).await;
        testkit::populate(&topic, 5, 1).await;
        let group = testkit::unique("rt-group");
        commit(&group, &topic, 2).await;
        let app = router(state());
        let answer = call(&app, get(&format!("/groups/{group}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(
            answer.body,
            json!({"group": group, "total_lag": 3, "partitions": [
                {"topic": topic, "partition": 0, "committed": 2, "high_watermark": 5, "lag": 3}
            ]})
        );
        // The list answers with an array of groups.
        let answer = call(&app, get("/groups")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert!(answer.body.is_array());
        // A group that never committed anywhere and is not listed: 404.
        let answer = call(&app, get(&format!("/groups/{}", testkit::unique("nope")))).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"]["code"], "unknown_group");
        // A key sees the lag of the topics it may read only.
        let app = router(state_with_keys("viewer:read=other-*"));
        assert_eq!(
            call(&app, get("/groups")).await.status,
            StatusCode::UNAUTHORIZED
        );
        let answer = call(&app, bearer(get(&format!("/groups/{group}")), "viewer")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["partitions"], json!([]));
    }

    #[tokio::test]
    async fn a_group_id_is_measured_in_characters_as_the_document_says() {
        // On the embedded broker a valid id gets its 501 at once, an invalid one 400 before.
        let (_cluster, state) = embedded_state();
        let app = router(state);
        // `é`, two bytes in UTF-8, percent-encoded.
        let id = |n: usize| "%C3%A9".repeat(n);
        let answer = call(&app, get(&format!("/groups/{}", id(MAX_GROUP_LEN)))).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_IMPLEMENTED,
            "{}",
            answer.text
        );
        let answer = call(&app, get(&format!("/groups/{}", id(MAX_GROUP_LEN + 1)))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        assert_eq!(answer.body["error"]["code"], "invalid_group");
        // librdkafka would strip a leading space (another group) or find no group at all.
        for bad in ["%0A", "%20g", "%09g", "g%00"] {
            let answer = call(&app, get(&format!("/groups/{bad}"))).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{bad}: {}",
                answer.text
            );
            assert_eq!(answer.body["error"]["code"], "invalid_group", "{bad}");
        }
    }

    #[tokio::test]
    async fn the_embedded_broker_answers_501_at_once() {
        // A gateway on the in-process development broker, which has no consumer-group API.
        let (_cluster, state) = embedded_state();
        let app = router(state);
        for path in ["/groups", "/groups/some-group"] {
            let started = std::time::Instant::now();
            let answer = call(&app, get(path)).await;
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{path}"
            );
            assert_eq!(
                answer.status,
                StatusCode::NOT_IMPLEMENTED,
                "{path}: {}",
                answer.text
            );
            assert_eq!(answer.body["error"]["code"], "unsupported_by_broker");
            let message = answer.body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("embedded development broker") && message.contains("group"),
                "{message}"
            );
        }
    }
}
