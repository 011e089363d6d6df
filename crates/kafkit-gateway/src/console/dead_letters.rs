//! Dead-letter pages: every dead-letter topic with its count and what is still to replay, one
//! topic's records with their failure headers, and replay (the next record, or all) through
//! the same safe replay as `POST /dlt/{topic}/replay`, with its report.

use axum::Form;
use axum::extract::{Path, State};
use kafkit::Redrive;
use kafkit::view::FailureView;
use maud::html;
use serde::Deserialize;

use super::super::AppState;
use super::super::dlt::{MAX_REPLAY, list, replay};
use super::BASE;
use super::messages::Format;
use super::page::{Failure, Nav, PageResult, csrf_field, page, utc};
use super::session::Viewer;

/// Records a dead-letter page shows.
const SHOWN: usize = 100;

/// Per partition, the next offset the replay will take (its group's committed offset).
async fn replay_positions(state: &AppState, topic: &str) -> Vec<(i32, Option<i64>, i64)> {
    state
        .admin
        .group_lag(&Redrive::group_of(topic), &[topic])
        .await
        .map(|lags| {
            lags.into_iter()
                .map(|l| (l.partition, l.committed, l.lag))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /console/dead-letters`.
pub async fn dead_letters_list(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let readable = viewer.caller.clone();
    let topics = state
        .admin
        .list_topics_where(move |name| {
            Redrive::source_of(name).is_some() && readable.may_read(name)
        })
        .await?;
    let mut rows = Vec::new();
    for topic in &topics {
        let pending: i64 = replay_positions(&state, &topic.name)
            .await
            .iter()
            .map(|(_, _, lag)| lag)
            .sum();
        rows.push((topic, pending));
    }
    let body = html! {
        h1 { "Dead letters" }
        @if rows.is_empty() {
            p.note { "No dead-letter topic (named " code { "{topic}.dlq" } ", " code { "{topic}_dlt" } ", " code { "{topic}-dlt" } " or " code { "{topic}.DLT" } ") that you may read." }
        } @else {
            table #dead-letters {
                thead { tr { th { "Dead-letter topic" } th { "Serves" } th.num { "Records" } th.num { "Not yet replayed" } } }
                tbody {
                    @for (topic, pending) in &rows {
                        tr {
                            td { a href={(BASE) "/dead-letters/" (topic.name)} { (topic.name) } }
                            td { @if let Some(source) = Redrive::source_of(&topic.name) { a href={(BASE) "/topics/" (source)} { (source) } } }
                            td.num { (topic.record_count()) }
                            td.num { (pending) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::DeadLetters, "Dead letters", body))
}

/// `GET /console/dead-letters/{topic}`.
pub async fn dead_letters_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(topic): Path<String>,
) -> PageResult {
    let messages = list(&state, &viewer.caller, &topic, SHOWN).await?;
    let positions = replay_positions(&state, &topic).await;
    let replayed = |partition: i32, offset: i64| {
        positions
            .iter()
            .any(|(p, committed, _)| *p == partition && committed.is_some_and(|c| offset < c))
    };
    let pending: i64 = positions.iter().map(|(_, _, lag)| lag).sum();
    let source = Redrive::source_of(&topic);
    let may_replay = source
        .as_deref()
        .is_some_and(|s| viewer.caller.may_write(s));
    let body = html! {
        h1 { "Dead letters of " span.name { (topic) } }
        p {
            @if let Some(source) = &source { "Replay re-publishes to " a href={(BASE) "/topics/" (source)} { (source) } ". " }
            strong #pending { (pending) } " records not yet replayed. Replay continues where the last one stopped, and is safe to repeat."
        }
        @if may_replay && pending > 0 {
            div.actions {
                form.inline method="post" action={(BASE) "/dead-letters/" (topic) "/replay"} {
                    (csrf_field(&viewer))
                    input type="hidden" name="limit" value="1";
                    button #replay-next type="submit" { "Replay the next record" }
                }
                form.inline method="post" action={(BASE) "/dead-letters/" (topic) "/replay"} {
                    (csrf_field(&viewer))
                    input type="hidden" name="limit" value=(MAX_REPLAY);
                    button #replay-all type="submit" { "Replay all " (pending) }
                }
            }
        }
        table.records #dead-letter-records {
            thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Failed at" } th { "From" } th { "Error" } th.num { "Attempts" } th { "Key" } th { "Value" } th { "Replayed" } } }
            tbody {
                @for message in &messages {
                    @let failure = FailureView::of(message);
                    tr data-offset=(message.offset) {
                        td.num { (message.partition) }
                        td.num { (message.offset) }
                        td.time { (failure.failed_at.clone().or_else(|| message.timestamp.map(utc)).unwrap_or_default()) }
                        td {
                            (failure.original_topic.clone().unwrap_or_default())
                            @if let (Some(p), Some(o)) = (&failure.original_partition, &failure.original_offset) { " " (p) "/" (o) }
                            @if let Some(g) = &failure.consumer_group { div.note { "group " (g) } }
                        }
                        td { @if let Some(kind) = &failure.error_kind { span.badge { (kind) } " " } (failure.error_message.clone().unwrap_or_default()) }
                        td.num { (failure.attempts.clone().unwrap_or_default()) }
                        td.key { @if let Some(key) = &message.key { code { (Format::Auto.show(key).0) } } }
                        td.value { @if let Some(bytes) = message.payload() { pre { (Format::Auto.show(bytes).0) } } }
                        td { @if replayed(message.partition, message.offset) { "yes" } @else { "no" } }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::DeadLetters, &topic, body))
}

/// What the replay forms post.
#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    limit: usize,
}

/// `POST /console/dead-letters/{topic}/replay`.
pub async fn dead_letters_replay(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(topic): Path<String>,
    Form(form): Form<ReplayForm>,
) -> PageResult {
    viewer.check_csrf(&form.csrf)?;
    if !(1..=MAX_REPLAY).contains(&form.limit) {
        return Err(Failure::bad_request(format!(
            "Replay 1 to {MAX_REPLAY} records."
        )));
    }
    // A key without any write grant is refused before the dead-letter topic is read.
    if !viewer.caller.writes_any() {
        viewer.require_write(Redrive::source_of(&topic).as_deref().unwrap_or(&topic))?;
    }
    let report = replay(&state, &viewer.caller, &topic, form.limit).await?;
    tracing::info!(caller = viewer.caller.name(), %topic, replayed = report.replayed, "dead letters replayed from the console");
    let body = html! {
        h1 { "Replay of " span.name { (topic) } }
        p.banner.ok role="status" #replay-report { "Replayed " strong #replayed { (report.replayed) } " records." }
        @if !report.by_topic.is_empty() {
            table { tbody { @for (destination, count) in &report.by_topic { tr { td { (destination) } td.num { (count) } } } } }
        }
        @if !report.skipped.is_empty() {
            h2 { "Passed over" }
            ul { @for why in &report.skipped { li { (why) } } }
        }
        @if !report.failed.is_empty() {
            h2 { "Failed for now" }
            ul { @for why in &report.failed { li { (why) } } }
        }
        p { a href={(BASE) "/dead-letters/" (topic)} { "Back to " (topic) } }
    };
    Ok(page(&viewer, Nav::DeadLetters, "Replay", body))
}
