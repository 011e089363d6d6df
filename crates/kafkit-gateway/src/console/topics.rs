//! Topic pages: the list (search, sort, create), and one topic with its partitions, configs,
//! the groups that read it, the message browser (partition, offset, time or newest first;
//! filters; text, JSON, base64 or hex; export as JSON or CSV) and the produce form.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use kafkit::view::MessageView;
use kafkit::{Message, Record, Redrive, Start, TopicSpec};
use maud::{Markup, html};
use serde::Deserialize;

use super::super::AppState;
use super::super::topics::{MAX_BROWSE_LIMIT, configs_of, read_slice};
use super::lag_history::{PAGE_WAIT, SAMPLE_EVERY};
use super::page::{
    Failure, Nav, PageResult, csrf_field, page, parse_utc, segment, unsupported_banner, utc,
};
use super::session::Viewer;
use super::{BASE, Console};

/// Records a browse shows unless told otherwise.
pub const DEFAULT_LIMIT: usize = 100;

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
        .admin
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
        @if viewer.caller.writes_any() {
            section #create-topic {
                h2 { "Create a topic" }
                form.stack method="post" action={(BASE) "/topics"} {
                    (csrf_field(&viewer))
                    label { "Name " input type="text" name="name" required pattern="[a-zA-Z0-9._-]+" maxlength="249"; }
                    label { "Partitions " input type="number" name="partitions" value="1" min="1" max="1000" required; }
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

/// What the create form posts.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    name: String,
    partitions: i32,
}

/// `POST /console/topics`: creates a topic the viewer may write.
pub async fn topics_create(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<CreateForm>,
) -> Result<Response, Failure> {
    viewer.check_csrf(&form.csrf)?;
    let name = form.name.trim().to_owned();
    kafkit::record::validate_topic(&name)?;
    viewer.require_write(&name)?;
    if !(1..=1000).contains(&form.partitions) {
        return Err(Failure::bad_request("A topic has 1 to 1000 partitions."));
    }
    state
        .admin
        .ensure_topics(&[TopicSpec::new(&name, form.partitions)])
        .await?;
    Ok(Redirect::to(&format!("{BASE}/topics/{name}")).into_response())
}

/// How record bytes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON pretty-printed when it parses, else text, else base64.
    Auto,
    Text,
    Json,
    Base64,
    Hex,
}

impl Format {
    const ALL: [(Format, &'static str); 5] = [
        (Format::Auto, "auto"),
        (Format::Text, "text"),
        (Format::Json, "json"),
        (Format::Base64, "base64"),
        (Format::Hex, "hex"),
    ];

    fn parse(text: Option<&str>) -> Format {
        Format::ALL
            .iter()
            .find(|(_, name)| Some(*name) == text)
            .map_or(Format::Auto, |(format, _)| *format)
    }

    /// `bytes` in this format, with the encoding actually used.
    pub fn show(self, bytes: &[u8]) -> (String, &'static str) {
        match self {
            Format::Auto => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => (pretty(&value), "json"),
                Err(_) => match std::str::from_utf8(bytes) {
                    Ok(text) => (text.to_owned(), "text"),
                    Err(_) => (Format::Base64.show(bytes).0, "base64"),
                },
            },
            Format::Json => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => (pretty(&value), "json"),
                Err(_) => (
                    String::from_utf8_lossy(bytes).into_owned(),
                    "text, not JSON",
                ),
            },
            Format::Text => (String::from_utf8_lossy(bytes).into_owned(), "text"),
            Format::Base64 => (
                base64::engine::general_purpose::STANDARD.encode(bytes),
                "base64",
            ),
            Format::Hex => (
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                "hex",
            ),
        }
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The topic page's query: where to browse, how to show it, what to keep.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    partition: Option<String>,
    /// `oldest`, `offset`, `timestamp` or `newest` (the default).
    from: Option<String>,
    offset: Option<String>,
    at: Option<String>,
    limit: Option<String>,
    format: Option<String>,
    key: Option<String>,
    header: Option<String>,
    value: Option<String>,
    json: Option<String>,
    export: Option<String>,
    /// `partition:offset` of a record just produced from the form.
    produced: Option<String>,
}

/// Where a browse starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Oldest,
    Offset(i64),
    Timestamp(i64),
    Newest,
}

/// Filters on the records of a page.
#[derive(Debug, Default)]
struct Filters {
    key: Option<String>,
    header: Option<(String, Option<String>)>,
    value: Option<String>,
    json: Option<(Vec<String>, String)>,
}

fn non_empty(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

impl Filters {
    fn of(query: &BrowseQuery) -> Self {
        Filters {
            key: non_empty(&query.key),
            header: non_empty(&query.header).map(|h| match h.split_once('=') {
                Some((name, value)) => (name.trim().to_owned(), Some(value.trim().to_owned())),
                None => (h, None),
            }),
            value: non_empty(&query.value),
            json: non_empty(&query.json).and_then(|j| {
                let (path, value) = j.split_once('=')?;
                Some((
                    path.trim().split('.').map(str::to_owned).collect(),
                    value.trim().to_owned(),
                ))
            }),
        }
    }

    fn keeps(&self, message: &Message) -> bool {
        let lossy =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        if let Some(key) = &self.key
            && !lossy(message.key.as_deref()).contains(key.as_str())
        {
            return false;
        }
        if let Some((name, value)) = &self.header
            && !message.headers.iter().any(|(n, v)| {
                n == name
                    && value
                        .as_ref()
                        .is_none_or(|value| lossy(Some(v)).contains(value.as_str()))
            })
        {
            return false;
        }
        if let Some(value) = &self.value
            && !lossy(message.payload()).contains(value.as_str())
        {
            return false;
        }
        if let Some((path, wanted)) = &self.json {
            let Some(json) = message
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            else {
                return false;
            };
            let found = path.iter().try_fold(&json, |node, step| match node {
                serde_json::Value::Array(items) => items.get(step.parse::<usize>().ok()?),
                _ => node.get(step),
            });
            let matches = match found {
                Some(serde_json::Value::String(text)) => text == wanted,
                Some(other) => serde_json::from_str::<serde_json::Value>(wanted)
                    .is_ok_and(|wanted| &wanted == other),
                None => false,
            };
            if !matches {
                return false;
            }
        }
        true
    }

    fn any(&self) -> bool {
        self.key.is_some() || self.header.is_some() || self.value.is_some() || self.json.is_some()
    }
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
    let info = state
        .admin
        .describe_topic(&topic)
        .await
        .map_err(|e| super::super::known_topics::lookup_error(&topic, e))?;
    let partition: i32 = match query.partition.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(Failure::bad_request("The partition is a number.")),
    };
    let Some(watermarks) = info.partitions.iter().find(|p| p.id == partition) else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("Topic {topic} has no partition {partition}."),
        ));
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
    let start = match from {
        From::Oldest => Start::Beginning,
        From::Offset(offset) => Start::Offset(offset),
        From::Timestamp(at) => Start::Timestamp(at),
        From::Newest => {
            Start::Offset((watermarks.high_watermark - limit as i64).max(watermarks.low_watermark))
        }
    };
    let slice = read_slice(&state, &topic, partition, start, limit).await?;
    let filters = Filters::of(&query);
    let mut messages: Vec<Message> = slice
        .messages
        .into_iter()
        .filter(|m| filters.keeps(m))
        .collect();
    if from == From::Newest {
        messages.reverse();
    }
    match query.export.as_deref() {
        Some("json") => return Ok(export_json(&topic, &messages)),
        Some("csv") => return Ok(export_csv(&topic, &messages)),
        _ => {}
    }
    let format = Format::parse(query.format.as_deref());
    // Groups reading the topic come from the lag sampler: refresh it when it is old.
    let readers = if state.embedded.is_some() {
        None
    } else {
        console
            .lag
            .refresh_within(&state, SAMPLE_EVERY * 3, PAGE_WAIT)
            .await;
        Some(console.lag.readers_of(&topic))
    };
    let (configs, configs_error) = configs_of(&state, &topic).await;
    let produced = query
        .produced
        .as_deref()
        .and_then(|p| p.split_once(':'))
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
    let next_offset = messages
        .iter()
        .map(|m| m.offset + 1)
        .max()
        .unwrap_or(slice.low_watermark);
    let body = html! {
        h1 { "Topic " span.name { (topic) } }
        @if let Some((p, o)) = produced {
            p.banner.ok role="status" #produced { "Record produced to partition " (p) " at offset " (o) "." }
        }
        section {
            h2 { "Partitions" }
            table #partitions {
                thead { tr { th.num { "Partition" } th.num { "Leader" } th { "Replicas" } th { "In sync" } th.num { "Low watermark" } th.num { "High watermark" } th.num { "Records" } } }
                tbody {
                    @for p in &info.partitions {
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
        section {
            h2 { "Consumer groups reading it" }
            @match &readers {
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
        section {
            h2 { "Messages" }
            (browse_form(&topic, &info.partitions, partition, from, limit, format, &query))
            p.note #browse-summary {
                "Partition " (partition) ", " (messages.len()) " records shown"
                @if filters.any() { " (filters apply to the records of this page)" }
                ", offsets " (slice.low_watermark) "–" (slice.high_watermark) " kept."
                @if from != From::Newest && next_offset < slice.high_watermark {
                    " " a href={(BASE) "/topics/" (topic) "?partition=" (partition) "&from=offset&offset=" (next_offset) "&limit=" (limit) "&format=" (format_name(format))} { "Next page" }
                }
            }
            (records_table(&messages, format))
        }
        @if viewer.caller.may_write(&topic) {
            section #produce {
                h2 { "Produce a record" }
                form.stack method="post" action={(BASE) "/topics/" (topic) "/produce"} {
                    (csrf_field(&viewer))
                    label { "Key " input type="text" name="key" maxlength="10000"; }
                    label { "Value " textarea name="value" rows="4" {} }
                    label { "Headers, one " code { "name: value" } " a line " textarea name="headers" rows="2" {} }
                    label { "Partition (empty: by key) " input type="number" name="partition" min="0"; }
                    button type="submit" { "Produce" }
                }
            }
        }
        section {
            h2 { "Configs" }
            @if let Some(configs) = &configs {
                table #configs {
                    tbody { @for (name, value) in configs { tr { td { code { (name) } } td { (value) } } } }
                }
            } @else {
                (unsupported_banner(&format!("Configs unavailable: {}", configs_error.unwrap_or_default())))
            }
        }
    };
    Ok(page(&viewer, Nav::Topics, &topic, body))
}

fn join(ids: &[i32]) -> String {
    ids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_name(format: Format) -> &'static str {
    Format::ALL
        .iter()
        .find(|(f, _)| *f == format)
        .map_or("auto", |(_, name)| name)
}

fn browse_form(
    topic: &str,
    partitions: &[kafkit::admin::PartitionInfo],
    partition: i32,
    from: From,
    limit: usize,
    format: Format,
    query: &BrowseQuery,
) -> Markup {
    let offset = match from {
        From::Offset(o) => o.to_string(),
        _ => String::new(),
    };
    let from_name = match from {
        From::Oldest => "oldest",
        From::Offset(_) => "offset",
        From::Timestamp(_) => "timestamp",
        From::Newest => "newest",
    };
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    html! {
        form.toolbar #browse method="get" action={(BASE) "/topics/" (topic)} {
            label { "Partition "
                select name="partition" {
                    @for p in partitions { option value=(p.id) selected[p.id == partition] { (p.id) } }
                }
            }
            label { "From "
                select name="from" {
                    @for (value, label) in [("newest", "newest first"), ("oldest", "oldest"), ("offset", "offset"), ("timestamp", "time (UTC)")] {
                        option value=(value) selected[value == from_name] { (label) }
                    }
                }
            }
            label { "Offset " input type="number" name="offset" min="0" value=(offset); }
            label { "Time " input type="datetime-local" name="at" step="1" value=(text(&query.at)); }
            label { "Limit " input type="number" name="limit" min="1" max=(MAX_BROWSE_LIMIT) value=(limit); }
            label { "Show as "
                select name="format" {
                    @for (f, name) in Format::ALL { option value=(name) selected[f == format] { (name) } }
                }
            }
            label { "Key " input type="text" name="key" value=(text(&query.key)); }
            label { "Header " input type="text" name="header" placeholder="name or name=value" value=(text(&query.header)); }
            label { "Value contains " input type="text" name="value" value=(text(&query.value)); }
            label { "JSON field " input type="text" name="json" placeholder="path.to.field=value" value=(text(&query.json)); }
            button type="submit" { "Browse" }
            button type="submit" name="export" value="json" { "Export JSON" }
            button type="submit" name="export" value="csv" { "Export CSV" }
        }
    }
}

fn records_table(messages: &[Message], format: Format) -> Markup {
    html! {
        table.records #messages {
            thead { tr { th.num { "Offset" } th { "Time (UTC)" } th { "Key" } th { "Headers" } th { "Value" } } }
            tbody {
                @for message in messages {
                    tr data-offset=(message.offset) {
                        td.num { (message.offset) }
                        td.time { (message.timestamp.map(utc).unwrap_or_default()) }
                        td.key {
                            @if let Some(key) = &message.key {
                                @let (shown, _) = format.show(key);
                                code { (shown) }
                            } @else { span.null { "null" } }
                        }
                        td.headers {
                            @for (name, value) in &message.headers {
                                @let (shown, _) = format.show(value);
                                div.header { code.hname { (name) } ": " code.hvalue { (shown) } }
                            }
                        }
                        td.value {
                            @match message.payload() {
                                Some(bytes) => {
                                    @let (shown, encoding) = format.show(bytes);
                                    span.encoding { (encoding) }
                                    pre { (shown) }
                                }
                                None => { span.null { "null (tombstone)" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn export_json(topic: &str, messages: &[Message]) -> Response {
    let views: Vec<MessageView> = messages.iter().map(MessageView::of).collect();
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{topic}.json\""),
            ),
        ],
        serde_json::to_string_pretty(&views).unwrap_or_default(),
    )
        .into_response()
}

/// One CSV cell, quoted; a cell a spreadsheet would run as a formula is prefixed with `'`.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn export_csv(topic: &str, messages: &[Message]) -> Response {
    let mut out = String::from("partition,offset,timestamp,key,headers,value\n");
    for message in messages {
        let view = MessageView::of(message);
        let headers = serde_json::to_string(&view.headers).unwrap_or_default();
        let value = match &view.value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let cells = [
            message.partition.to_string(),
            message.offset.to_string(),
            message.timestamp.map(|t| t.to_string()).unwrap_or_default(),
            view.key.clone().unwrap_or_default(),
            headers,
            value,
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{topic}.csv\""),
            ),
        ],
        out,
    )
        .into_response()
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
    let delivery = tokio::time::timeout(state.limits.broker_timeout, state.producer.send(record))
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
mod tests {
    use super::*;

    fn message(key: &[u8], headers: &[(&str, &[u8])], value: &[u8]) -> Message {
        Message {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(key.to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
            value: Some(value.to_vec()),
        }
    }

    #[test]
    fn formats_show_the_same_bytes_five_ways() {
        let json = br#"{"id":1}"#;
        assert_eq!(
            Format::Auto.show(json),
            ("{\n  \"id\": 1\n}".to_owned(), "json")
        );
        assert_eq!(Format::Auto.show(b"hi"), ("hi".to_owned(), "text"));
        assert_eq!(Format::Auto.show(&[0xff]), ("/w==".to_owned(), "base64"));
        assert_eq!(Format::Json.show(b"hi").1, "text, not JSON");
        assert_eq!(Format::Hex.show(b"hi"), ("68 69".to_owned(), "hex"));
        assert_eq!(Format::Base64.show(b"hi"), ("aGk=".to_owned(), "base64"));
        assert_eq!(Format::Text.show(&[0x68, 0xff]).0, "h\u{fffd}");
    }

    #[test]
    fn filters_match_key_header_value_and_json_field() {
        let m = message(
            b"order-7",
            &[("tenant", b"acme")],
            br#"{"a":{"b":[1,"x"]},"n":5}"#,
        );
        let keeps = |pairs: &[(&str, &str)]| {
            let mut query = BrowseQuery::default();
            for (name, value) in pairs {
                let value = Some((*value).to_owned());
                match *name {
                    "key" => query.key = value,
                    "header" => query.header = value,
                    "value" => query.value = value,
                    _ => query.json = value,
                }
            }
            Filters::of(&query).keeps(&m)
        };
        assert!(keeps(&[]));
        assert!(keeps(&[("key", "der-")]) && !keeps(&[("key", "nope")]));
        assert!(keeps(&[("header", "tenant")]) && keeps(&[("header", "tenant=ac")]));
        assert!(!keeps(&[("header", "tenant=zz")]) && !keeps(&[("header", "other")]));
        assert!(keeps(&[("value", "\"n\":5")]) && !keeps(&[("value", "zzz")]));
        assert!(keeps(&[("json", "n=5")]) && keeps(&[("json", "a.b.1=x")]));
        assert!(!keeps(&[("json", "n=6")]) && !keeps(&[("json", "a.c=1")]));
        assert!(keeps(&[("key", "order"), ("json", "a.b.0=1")]));
    }

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_cell("=1+1"), "\"'=1+1\"");
    }
}
