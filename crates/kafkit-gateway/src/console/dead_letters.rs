//! Dead-letter pages: every dead-letter topic with its count and what is still to replay, one
//! topic's records with their failure headers (filtered on the server by key, header, value,
//! JSON field, error kind and original topic), and replay through the same safe replay as
//! `POST /dlt/{topic}/replay`, with its report: the next record, all, one chosen record, the
//! records ticked in the table, or all not yet replayed that the filter keeps.
//!
//! Records replayed out of order are remembered by the replay itself (see
//! [`kafkit::redrive::progress`]), so "Replay all" afterwards passes over them.

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use futures::StreamExt as _;
use kafkit::redrive::PartitionProgress;
use kafkit::view::FailureView;
use kafkit::{Redrive, filter::RecordFilter};
use maud::{Markup, html};
use serde::Deserialize;

use super::BASE;
use super::frame::{Failure, PageResult};
use super::messages::{Format, SHOWN_AS_STORED, shown};
use super::page::{Nav, csrf_field, page, utc};
use super::render_budget::RenderBudget;
use super::session::Viewer;
use crate::AppState;
use crate::api::dead_letters::{Choice, MAX_LIST, MAX_REDRIVE, list, redrive};
use crate::http::limits::ReadPlace;

/// Records a dead-letter page shows.
const SHOWN: usize = 100;

/// Dead-letter topics whose replay progress the list page reads at once.
const PROGRESS_READS: usize = 16;

/// Per partition, the replay's position and what it replayed ahead of it; none when the
/// broker cannot say (the page then shows nothing as replayed rather than failing).
async fn redrive_progress(state: &AppState, topic: &str) -> Vec<PartitionProgress> {
    let progress = match state.kafka().redrive() {
        Ok(redrive) => redrive.progress(topic).await,
        Err(error) => Err(error),
    };
    progress.unwrap_or_else(|error| {
        tracing::warn!(%topic, %error, "replay progress unavailable");
        Vec::new()
    })
}

/// `GET /console/dead-letters`.
pub async fn dead_letters_list(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let readable = viewer.caller.clone();
    let topics = state
        .admin()
        .list_topics_where(move |name| {
            Redrive::source_of(name).is_some() && readable.may_read(name)
        })
        .await?;
    // Each topic's progress is a committed-offsets and a watermarks round trip of its own
    // group: read one after the other, a cluster with a thousand dead-letter topics took over
    // a minute to show this page.
    let names: Vec<String> = topics.iter().map(|topic| topic.name.clone()).collect();
    let pending: Vec<i64> = futures::stream::iter(names)
        .map(|name| {
            let state = state.clone();
            async move {
                redrive_progress(&state, &name)
                    .await
                    .iter()
                    .map(PartitionProgress::pending)
                    .sum::<i64>()
            }
        })
        .buffered(PROGRESS_READS)
        .collect()
        .await;
    let rows: Vec<_> = topics.iter().zip(pending).collect();
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

/// The filter of a dead-letter page and of its "Replay all matching" form.
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    key: Option<String>,
    header: Option<String>,
    value: Option<String>,
    json: Option<String>,
    error_kind: Option<String>,
    original_topic: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> Result<RecordFilter, Failure> {
        let filter = RecordFilter {
            key: self.key.clone(),
            header: self.header.clone(),
            value: self.value.clone(),
            json: self.json.clone(),
            error_kind: self.error_kind.clone(),
            original_topic: self.original_topic.clone(),
        };
        Ok(filter)
    }

    /// The filter's fields: name, label, placeholder, value.
    fn fields(&self) -> [(&'static str, &'static str, &'static str, String); 6] {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        [
            ("key", "Key contains", "", text(&self.key)),
            ("header", "Header", "name or name=value", text(&self.header)),
            ("value", "Value contains", "", text(&self.value)),
            (
                "json",
                "JSON field",
                "path.to.field=value",
                text(&self.json),
            ),
            (
                "error_kind",
                "Error kind",
                "permanent, invalid…",
                text(&self.error_kind),
            ),
            (
                "original_topic",
                "Original topic",
                "",
                text(&self.original_topic),
            ),
        ]
    }
}

/// `GET /console/dead-letters/{topic}`.
pub async fn dead_letters_show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(topic): Path<String>,
    Query(query): Query<FilterQuery>,
) -> PageResult {
    let filter = query.filter()?;
    // With a filter, read further to find matches; the page says how many it read.
    let read = if filter.is_empty() { SHOWN } else { MAX_LIST };
    let scanned = list(&state, &viewer.caller, &topic, read).await?;
    let scanned_count = scanned.len();
    let messages: Vec<_> = scanned
        .into_iter()
        .filter(|m| filter.keeps(m))
        .take(SHOWN)
        .collect();
    let progress = redrive_progress(&state, &topic).await;
    let replayed = |partition: i32, offset: i64| {
        progress
            .iter()
            .any(|p| p.partition == partition && p.progress.replayed(offset))
    };
    let pending: i64 = progress.iter().map(PartitionProgress::pending).sum();
    let source = Redrive::source_of(&topic);
    let may_replay = source
        .as_deref()
        .is_some_and(|s| viewer.caller.may_write(s));
    let action = format!("{BASE}/dead-letters/{topic}/replay");
    let body = html! {
        h1 { "Dead letters of " span.name { (topic) } }
        p {
            @if let Some(source) = &source { "Replay re-publishes to " a href={(BASE) "/topics/" (source)} { (source) } ". " }
            strong #pending { (pending) } " records not yet replayed. Replay continues where the last one stopped, passes over records replayed already, and is safe to repeat."
        }
        @if may_replay && pending > 0 { (replay_actions(&viewer, &action, pending)) }
        form.toolbar #dead-letter-filter method="get" action={(BASE) "/dead-letters/" (topic)} {
            @for (name, label, placeholder, value) in query.fields() {
                label { (label) " " input type="text" name=(name) placeholder=(placeholder) value=(value); }
            }
            button type="submit" { "Show matching" }
        }
        @if !filter.is_empty() {
            p.note #filter-summary { (messages.len()) " matching records shown of " (scanned_count) " read." }
            @if may_replay {
                form.inline #replay-matching method="post" action=(action) {
                    (csrf_field(&viewer))
                    input type="hidden" name="choice" value="matching";
                    @for (name, _, _, value) in query.fields() {
                        input type="hidden" name=(name) value=(value);
                    }
                    button #replay-matching-button type="submit" { "Replay all matching" }
                }
            }
        }
        (records(&messages, may_replay, replayed))
    };
    Ok(page(&viewer, Nav::DeadLetters, &topic, body))
}

/// The replay buttons of a dead-letter page whose viewer may replay.
fn replay_actions(viewer: &Viewer, action: &str, pending: i64) -> Markup {
    html! {
        div.actions {
            form.inline method="post" action=(action) {
                (csrf_field(viewer))
                input type="hidden" name="limit" value="1";
                button #replay-next type="submit" { "Replay the next record" }
            }
            form.inline method="post" action=(action) {
                (csrf_field(viewer))
                input type="hidden" name="limit" value=(MAX_REDRIVE);
                button #replay-all type="submit" { "Replay all " (pending) }
            }
            // The ticked rows and the row buttons submit these two forms (HTML's form
            // attribute), so the table needs no form around it.
            form.inline #replay-selected method="post" action=(action) {
                (csrf_field(viewer))
                input type="hidden" name="choice" value="selected";
                button #replay-selected-button type="submit" { "Replay selected" }
            }
            form #replay-one method="post" action=(action) hidden {
                (csrf_field(viewer))
                input type="hidden" name="choice" value="selected";
            }
        }
    }
}

fn records(
    messages: &[kafkit::Message],
    may_replay: bool,
    replayed: impl Fn(i32, i64) -> bool,
) -> Markup {
    let mut budget = RenderBudget::default();
    html! {
        table.records #dead-letter-records {
            thead { tr {
                @if may_replay { th { "Select" } }
                th.num { "Partition" } th.num { "Offset" } th { "Failed at" } th { "From" } th { "Error" } th.num { "Attempts" } th { "Key" } th { "Value" } th { "Replayed" }
                @if may_replay { th {} }
            } }
            tbody {
                @for message in messages {
                    @let failure = FailureView::of(message);
                    @let at = format!("{}/{}", message.partition, message.offset);
                    @let done = replayed(message.partition, message.offset);
                    tr data-offset=(message.offset) {
                        @if may_replay {
                            td { @if !done { input.select type="checkbox" name="at" value=(at) form="replay-selected" aria-label={"Select " (at)}; } }
                        }
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
                        td.key { @if let Some(key) = &message.key { code { (shown(&mut budget, Format::Auto, key).0) } } }
                        td.value {
                            @if let Some(bytes) = message.payload() {
                                @let (value, encoding) = shown(&mut budget, Format::Auto, bytes);
                                @if encoding == SHOWN_AS_STORED { span.encoding { (encoding) } }
                                pre { (value) }
                            }
                        }
                        td.replayed { @if done { "yes" } @else { "no" } }
                        @if may_replay {
                            td { @if !done { button.replay-one type="submit" form="replay-one" name="at" value=(at) { "Replay this record" } } }
                        }
                    }
                }
            }
        }
    }
}

/// What a replay form chose, from its name/value pairs (ticked rows repeat `at`).
fn choice_of(pairs: &[(String, String)]) -> Result<Choice, Failure> {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let choice = match field("choice").as_deref() {
        Some("selected") => {
            let mut offsets = Vec::new();
            for (_, at) in pairs.iter().filter(|(n, _)| n == "at") {
                let parsed = at.split_once('/').and_then(|(p, o)| {
                    Some((p.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
                });
                match parsed {
                    Some(record) => offsets.push(record),
                    None => {
                        return Err(Failure::bad_request(format!(
                            "{at:?} is not a record (partition/offset)."
                        )));
                    }
                }
            }
            if offsets.is_empty() {
                return Err(Failure::bad_request(
                    "Select at least one record to replay.",
                ));
            }
            if offsets.len() > MAX_REDRIVE {
                return Err(Failure::bad_request(format!(
                    "Select at most {MAX_REDRIVE} records."
                )));
            }
            Choice::Offsets(offsets)
        }
        Some("matching") => {
            let query = FilterQuery {
                key: field("key"),
                header: field("header"),
                value: field("value"),
                json: field("json"),
                error_kind: field("error_kind"),
                original_topic: field("original_topic"),
            };
            Choice::Matching(query.filter()?, MAX_REDRIVE)
        }
        _ => match field("limit").map(|l| l.trim().parse::<usize>()) {
            Some(Ok(limit)) if (1..=MAX_REDRIVE).contains(&limit) => Choice::Next(limit),
            _ => {
                return Err(Failure::bad_request(format!(
                    "Replay 1 to {MAX_REDRIVE} records."
                )));
            }
        },
    };
    Ok(choice)
}

/// `POST /console/dead-letters/{topic}/replay`.
pub async fn dead_letters_redrive(
    State(state): State<AppState>,
    viewer: Viewer,
    place: Option<Extension<ReadPlace>>,
    Path(topic): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    // The CSRF token is checked before the rest of the form is looked at.
    let csrf = pairs
        .iter()
        .find(|(name, _)| name == "_csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    viewer.check_csrf(csrf)?;
    // A key without any write grant is refused before the dead-letter topic is read.
    if !viewer.caller.writes_any() {
        viewer.require_write(Redrive::source_of(&topic).as_deref().unwrap_or(&topic))?;
    }
    let choice = choice_of(&pairs)?;
    let place = place.map(|Extension(place)| place);
    let report = redrive(&state, &viewer.caller, &topic, choice, place).await?;
    tracing::info!(caller = viewer.caller.name(), %topic, replayed = report.replayed, "dead letters replayed from the console");
    let body = html! {
        h1 { "Replay of " span.name { (topic) } }
        p.banner.ok role="status" #replay-report {
            "Replayed " strong #replayed { (report.replayed) } " records"
            ", skipped " strong #skipped-count { (report.skipped.len()) }
            ", failed " strong #failed-count { (report.failed.len()) }
            ", held back for the next replay " strong #held-back { (report.held_back) }
            " (" (report.scanned) " records read). Nothing was denied: a destination you may not write refuses the whole replay."
        }
        @if !report.by_topic.is_empty() {
            table { tbody { @for (destination, count) in &report.by_topic { tr { td { (destination) } td.num { (count) } } } } }
        }
        @if !report.skipped.is_empty() {
            h2 { "Passed over" }
            ul #skipped { @for why in &report.skipped { li { (why) } } }
        }
        @if !report.failed.is_empty() {
            h2 { "Failed for now" }
            ul #failed { @for why in &report.failed { li { (why) } } }
        }
        p { a href={(BASE) "/dead-letters/" (topic)} { "Back to " (topic) } }
    };
    Ok(page(&viewer, Nav::DeadLetters, "Replay", body))
}
