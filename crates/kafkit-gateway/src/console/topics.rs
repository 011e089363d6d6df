//! Topic pages: the list (search, sort, create), and one topic with its partitions, configs,
//! the groups that read it, the message browser (see [`super::messages`]) and the produce form.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kafkit::admin::{PartitionInfo, TopicInfo};
use kafkit::filter::RecordFilter;
use kafkit::{Message, Record, Redrive, TopicSpec, reader::Start};
use maud::{Markup, html};
use serde::Deserialize;

use super::frame::{Failure, PageResult};
use super::lag_history::{PAGE_WAIT, SAMPLE_EVERY};
use super::messages::{
    BrowseQuery, DEFAULT_LIMIT, Format, From, browse_form, export_csv, export_json, format_name,
    records_table,
};
use super::page::{Nav, csrf_field, page, parse_utc, segment, unsupported_banner};
use super::session::Viewer;
use super::{BASE, Console};
use crate::AppState;
use crate::reads::browse::{Browse, BrowsePage, MAX_BROWSE_LIMIT, MAX_FILTER_SCAN, browse};
use crate::reads::topic_configs::{TopicConfigs, topic_configs};

/// The list's query: search and sort.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    sort: Option<String>,
    desc: Option<String>,
}

/// `GET /console/topics`.
pub async fn topics_list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let readable = viewer.caller.clone();
    let mut topics = state
        .admin()
        .list_topics_where(move |name| readable.may_read(name))
        .await?;
    let names: std::collections::HashSet<String> = topics.iter().map(|t| t.name.clone()).collect();
    let search = query.q.as_deref().unwrap_or("").trim().to_lowercase();
    if !search.is_empty() {
        topics.retain(|t| t.name.to_lowercase().contains(&search));
    }
    let sort = query.sort.as_deref().unwrap_or("name");
    match sort {
        "partitions" => topics.sort_by_key(|t| t.partitions.len()),
        "records" => topics.sort_by_key(|t| t.record_count()),
        _ => {}
    }
    let desc = query.desc.as_deref() == Some("1");
    if desc {
        topics.reverse();
    }
    let sort_link = |column: &str| {
        let flip = column == sort && !desc;
        format!(
            "{BASE}/topics?q={}&sort={column}{}",
            segment(&search),
            if flip { "&desc=1" } else { "" }
        )
    };
    let body = html! {
        h1 { "Topics" }
        form.toolbar method="get" action={(BASE) "/topics"} {
            input type="search" name="q" value=(search) placeholder="Search topics" aria-label="Search topics";
            input type="hidden" name="sort" value=(sort);
            button type="submit" { "Search" }
            span.note { (topics.len()) " topics" }
        }
        table #topics {
            thead { tr {
                th { a href=(sort_link("name")) { "Name" } }
                th.num { a href=(sort_link("partitions")) { "Partitions" } }
                th.num { a href=(sort_link("records")) { "Records" } }
                th { "Dead letters" }
            } }
            tbody {
                @for topic in &topics {
                    tr {
                        td { a href={(BASE) "/topics/" (topic.name)} { (topic.name) } }
                        td.num { (topic.partitions.len()) }
                        td.num { (topic.record_count()) }
                        td {
                            @if let Some(source) = Redrive::source_of(&topic.name) {
                                a.badge.dlt href={(BASE) "/dead-letters/" (topic.name)} { "DLT of " (source) }
                            } @else if let Some(dlt) = dead_letter_topic_of(&topic.name, &names) {
                                a href={(BASE) "/dead-letters/" (dlt)} { (dlt) }
                            }
                        }
                    }
                }
            }
        }
        @if viewer.caller.creates_any() {
            section #create-topic {
                h2 { "Create a topic" }
                form.stack method="post" action={(BASE) "/topics"} {
                    (csrf_field(&viewer))
                    label { "Name " input type="text" name="name" required pattern="[a-zA-Z0-9._-]+" maxlength="249"; }
                    label { "Partitions " input type="number" name="partitions" value="1" min="1" max=(MAX_CREATED_PARTITIONS) required; }
                    button type="submit" { "Create" }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::Topics, "Topics", body))
}

/// The dead-letter topic of `topic` among `names`, by the known templates.
fn dead_letter_topic_of(topic: &str, names: &std::collections::HashSet<String>) -> Option<String> {
    kafkit::redrive::KNOWN_TEMPLATES
        .iter()
        .map(|template| template.replace("{topic}", topic))
        .find(|name| names.contains(name))
}

/// Most topics one caller creates from the console in a minute.
pub const MAX_CREATIONS: usize = 10;

/// Topic creations from the console per caller (an API key's name, or `open`: few) over the
/// last minute.
#[derive(Debug, Default)]
pub struct Creations(Mutex<HashMap<String, VecDeque<Instant>>>);

impl Creations {
    /// Counts a creation by `caller` at `now`, unless it made [`MAX_CREATIONS`] in the minute
    /// before.
    pub fn allow(&self, caller: &str, now: Instant) -> bool {
        let mut all = self.0.lock().expect("not poisoned");
        let recent = all.entry(caller.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        if recent.len() >= MAX_CREATIONS {
            return false;
        }
        recent.push_back(now);
        true
    }
}

/// What the create form posts.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    name: String,
    partitions: i32,
}

/// Most partitions a topic created from the console has: partitions cost every broker memory
/// and file handles, whoever asks.
pub const MAX_CREATED_PARTITIONS: i32 = 100;

/// `POST /console/topics`: creates a topic the viewer may create (a `create=` grant), of at
/// most [`MAX_CREATED_PARTITIONS`] partitions, at most [`MAX_CREATIONS`] a minute per caller.
pub async fn topics_create(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    Form(form): Form<CreateForm>,
) -> Result<Response, Failure> {
    viewer.check_csrf(&form.csrf)?;
    let name = form.name.trim().to_owned();
    kafkit::record::validate_topic(&name)?;
    if !viewer.caller.may_create(&name) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            format!("{} may not create topic {name:?}.", viewer.caller.name()),
        ));
    }
    if !(1..=MAX_CREATED_PARTITIONS).contains(&form.partitions) {
        return Err(Failure::bad_request(format!(
            "A topic created here has 1 to {MAX_CREATED_PARTITIONS} partitions."
        )));
    }
    if !console
        .creations
        .allow(viewer.caller.name(), Instant::now())
    {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("At most {MAX_CREATIONS} topics a minute: try again in a minute."),
        ));
    }
    state
        .admin()
        .ensure_topics(&[TopicSpec::new(&name, form.partitions)])
        .await?;
    Ok(Redirect::to(&format!("{BASE}/topics/{name}")).into_response())
}

/// What the topic page was asked to show, parsed from its query.
struct Show {
    partition: i32,
    limit: usize,
    from: From,
    filters: RecordFilter,
    format: Format,
    /// `partition:offset` of a record just produced from the form.
    produced: Option<(i32, i64)>,
}

/// The query of the topic page, checked: a malformed value is a 400 naming it.
fn parse_show(query: &BrowseQuery) -> Result<Show, Failure> {
    let partition: i32 = match query.partition.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(Failure::bad_request("The partition is a number.")),
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_BROWSE_LIMIT).contains(&n) => n,
        _ => {
            return Err(Failure::bad_request(format!(
                "Show 1 to {MAX_BROWSE_LIMIT} records."
            )));
        }
    };
    let from = match query.from.as_deref() {
        Some("oldest") => From::Oldest,
        Some("offset") => match query.offset.as_deref().map(|o| o.trim().parse::<i64>()) {
            Some(Ok(offset)) if offset >= 0 => From::Offset(offset),
            _ => return Err(Failure::bad_request("The offset is a number, 0 or more.")),
        },
        Some("timestamp") => match query.at.as_deref().and_then(parse_utc) {
            Some(at) => From::Timestamp(at),
            None => {
                return Err(Failure::bad_request(
                    "The time reads YYYY-MM-DDTHH:MM[:SS], in UTC.",
                ));
            }
        },
        _ => From::Newest,
    };
    let produced = query
        .produced
        .as_deref()
        .and_then(|p| p.split_once(':'))
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
    Ok(Show {
        partition,
        limit,
        from,
        filters: query.filter()?,
        format: Format::parse(query.format.as_deref()),
        produced,
    })
}

/// What the topic page shows, read from the broker.
struct TopicPage {
    info: TopicInfo,
    /// The records shown, in the order shown (newest first when browsing from the newest).
    messages: Vec<Message>,
    /// The browse they come from (its records moved to `messages`).
    browsed: BrowsePage,
    /// Groups reading the topic and their lag; `None` on the embedded broker.
    readers: Option<Vec<(String, i64)>>,
    configs: TopicConfigs,
}

/// Reads the topic, the page of records `show` asks for, its readers and configs.
async fn read_topic(
    state: &AppState,
    console: &Console,
    topic: &str,
    show: &Show,
) -> Result<TopicPage, Failure> {
    let info = state
        .admin()
        .describe_topic(topic)
        .await
        .map_err(|e| crate::reads::known_topics::lookup_error(topic, e))?;
    let Some(watermarks) = info.partitions.iter().find(|p| p.id == show.partition) else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("Topic {topic} has no partition {}.", show.partition),
        ));
    };
    // Filters apply on the server while reading: up to MAX_FILTER_SCAN records are read to
    // find `limit` matches (newest first: the last matches of the newest records read).
    let scan = if show.filters.is_empty() {
        show.limit
    } else {
        MAX_FILTER_SCAN
    };
    let start = match show.from {
        From::Oldest => Start::Beginning,
        From::Offset(offset) => Start::Offset(offset),
        From::Timestamp(at) => Start::Timestamp(at),
        From::Newest => {
            Start::Offset((watermarks.high_watermark - scan as i64).max(watermarks.low_watermark))
        }
    };
    let keeps = |m: &Message| show.filters.keeps(m);
    let mut request = Browse::new(topic, show.partition, start, show.limit).matching(scan, &keeps);
    if show.from == From::Newest {
        request = request.newest();
    }
    let mut browsed = browse(state, request).await?;
    let mut messages = std::mem::take(&mut browsed.messages);
    if show.from == From::Newest {
        messages.reverse();
    }
    // Groups reading the topic come from the lag sampler: refresh it when it is old.
    let readers = if state.on_embedded_broker() {
        None
    } else {
        console
            .lag
            .refresh_within(state, SAMPLE_EVERY * 3, PAGE_WAIT)
            .await;
        Some(console.lag.readers_of(topic))
    };
    Ok(TopicPage {
        info,
        messages,
        browsed,
        readers,
        configs: topic_configs(state, topic).await,
    })
}

/// `GET /console/topics/{topic}`: the topic and a page of its records.
pub async fn topics_show(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    Path(topic): Path<String>,
    Query(query): Query<BrowseQuery>,
) -> PageResult {
    kafkit::record::validate_topic(&topic)?;
    viewer.caller.require_read(&topic)?;
    let show = parse_show(&query)?;
    let shown = read_topic(&state, &console, &topic, &show).await?;
    match query.export.as_deref() {
        Some("json") => return Ok(export_json(&topic, &shown.messages)),
        Some("csv") => return Ok(export_csv(&topic, &shown.messages)),
        _ => {}
    }
    Ok(render_topic(&viewer, &topic, &show, &shown, &query))
}

/// The link to the page after `shown`: it starts after the last record read, not the last one
/// shown (records a filter passed over are not read again), and keeps the filters.
fn next_page(topic: &str, show: &Show, query: &BrowseQuery, next_offset: i64) -> String {
    let mut href = format!(
        "{BASE}/topics/{}?partition={}&from=offset&offset={next_offset}&limit={}&format={}",
        segment(topic),
        show.partition,
        show.limit,
        format_name(show.format)
    );
    for (name, value) in [
        ("key", &query.key),
        ("header", &query.header),
        ("value", &query.value),
        ("json", &query.json),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            href.push_str(&format!("&{name}={}", segment(value)));
        }
    }
    href
}

/// The topic page: partitions, readers, the message browser, the produce form, configs.
fn render_topic(
    viewer: &Viewer,
    topic: &str,
    show: &Show,
    shown: &TopicPage,
    query: &BrowseQuery,
) -> Response {
    let body = html! {
        h1 { "Topic " span.name { (topic) } }
        @if let Some((p, o)) = show.produced {
            p.banner.ok role="status" #produced { "Record produced to partition " (p) " at offset " (o) "." }
        }
        (partitions_section(topic, &shown.info.partitions))
        (readers_section(shown.readers.as_deref()))
        (messages_section(topic, show, shown, query))
        @if viewer.caller.may_write(topic) {
            section #produce {
                h2 { "Produce a record" }
                form.stack method="post" action={(BASE) "/topics/" (topic) "/produce"} {
                    (csrf_field(viewer))
                    label { "Key " input type="text" name="key" maxlength="10000"; }
                    label { "Value " textarea name="value" rows="4" {} }
                    label { "Headers, one " code { "name: value" } " a line " textarea name="headers" rows="2" {} }
                    label { "Partition (empty: by key) " input type="number" name="partition" min="0"; }
                    button type="submit" { "Produce" }
                }
            }
        }
        (configs_section(&shown.configs))
    };
    page(viewer, Nav::Topics, topic, body)
}

fn partitions_section(topic: &str, partitions: &[PartitionInfo]) -> Markup {
    html! {
        section {
            h2 { "Partitions" }
            table #partitions {
                thead { tr { th.num { "Partition" } th.num { "Leader" } th { "Replicas" } th { "In sync" } th.num { "Low watermark" } th.num { "High watermark" } th.num { "Records" } } }
                tbody {
                    @for p in partitions {
                        tr {
                            td.num { a href={(BASE) "/topics/" (topic) "?partition=" (p.id)} { (p.id) } }
                            td.num { (p.leader) }
                            td { (join(&p.replicas)) }
                            td { (join(&p.isr)) }
                            td.num { (p.low_watermark) }
                            td.num { (p.high_watermark) }
                            td.num { (p.high_watermark - p.low_watermark) }
                        }
                    }
                }
            }
        }
    }
}

fn readers_section(readers: Option<&[(String, i64)]>) -> Markup {
    html! {
        section {
            h2 { "Consumer groups reading it" }
            @match readers {
                None => { (unsupported_banner("The embedded development broker has no consumer-group API.")) }
                Some(readers) if readers.is_empty() => { p.note { "No group has committed offsets in this topic." } }
                Some(readers) => {
                    table #readers {
                        thead { tr { th { "Group" } th.num { "Lag" } } }
                        tbody {
                            @for (group, lag) in readers {
                                tr { td { a href={(BASE) "/groups/" (segment(group))} { (group) } } td.num { (lag) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn messages_section(topic: &str, show: &Show, shown: &TopicPage, query: &BrowseQuery) -> Markup {
    let browsed = &shown.browsed;
    let next_offset = browsed.read_to.unwrap_or(browsed.low_watermark);
    html! {
        section {
            h2 { "Messages" }
            (browse_form(topic, &shown.info.partitions, show.partition, show.from, show.limit, show.format, query))
            p.note #browse-summary {
                "Partition " (show.partition) ", " (shown.messages.len()) " records shown"
                @if !show.filters.is_empty() { span #scanned { " matching the filters, of " (browsed.scanned) " records read" } " (at most " (MAX_FILTER_SCAN) ")" }
                ", offsets " (browsed.low_watermark) "–" (browsed.high_watermark) " kept."
                @if show.from != From::Newest && next_offset < browsed.high_watermark {
                    " " a #next-page href=(next_page(topic, show, query, next_offset)) { "Next page" }
                }
            }
            (records_table(&shown.messages, show.format))
        }
    }
}

fn configs_section(configs: &TopicConfigs) -> Markup {
    html! {
        section {
            h2 { "Configs" }
            @match configs {
                TopicConfigs::Known(configs) => {
                    table #configs {
                        tbody { @for (name, value) in configs { tr { td { code { (name) } } td { (value) } } } }
                    }
                }
                TopicConfigs::Unknown(reason) => {
                    (unsupported_banner(&format!("Configs unavailable: {reason}")))
                }
            }
        }
    }
}

fn join(ids: &[i32]) -> String {
    ids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the produce form posts.
#[derive(Debug, Deserialize)]
pub struct ProduceForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    headers: String,
    #[serde(default)]
    partition: String,
}

/// `POST /console/topics/{topic}/produce`: sends one record, then shows it.
pub async fn topics_produce(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(topic): Path<String>,
    Form(form): Form<ProduceForm>,
) -> Result<Response, Failure> {
    viewer.check_csrf(&form.csrf)?;
    kafkit::record::validate_topic(&topic)?;
    viewer.require_write(&topic)?;
    let mut record = Record::to(&topic).text(form.value);
    if !form.key.is_empty() {
        record = record.key(form.key);
    }
    for line in form.headers.lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::bad_request(
                "Write each header as name: value, one a line.",
            ));
        };
        record = record.header(name.trim(), value.trim());
    }
    if !form.partition.trim().is_empty() {
        let partition = form
            .partition
            .trim()
            .parse::<i32>()
            .map_err(|_| Failure::bad_request("The partition is a number."))?;
        record = record.partition(partition);
    }
    let delivery = tokio::time::timeout(
        state.timeouts().broker_timeout,
        state.single_producer().send(record),
    )
    .await
    .map_err(|_| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The broker did not acknowledge the record in time; it may still be written.",
        )
    })??;
    Ok(Redirect::to(&format!(
        "{BASE}/topics/{topic}?partition={p}&from=newest&produced={p}:{o}",
        p = delivery.partition,
        o = delivery.offset
    ))
    .into_response())
}

#[cfg(test)]
mod creation_tests {
    use super::*;

    #[test]
    fn a_caller_creates_at_most_max_creations_topics_a_minute() {
        let creations = Creations::default();
        let start = Instant::now();
        for _ in 0..MAX_CREATIONS {
            assert!(creations.allow("key#1", start));
        }
        assert!(!creations.allow("key#1", start + Duration::from_secs(59)));
        assert!(
            creations.allow("key#2", start),
            "each caller has its own count"
        );
        assert!(creations.allow("key#1", start + Duration::from_secs(60)));
    }
}
