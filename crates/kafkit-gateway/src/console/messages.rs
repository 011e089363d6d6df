//! The message browser of a topic page: where to start (partition, offset, time, newest
//! first), the filters (key, header, value substring, JSON field), how bytes are shown (text,
//! JSON, base64, hex), the records table, and the page exported as JSON or CSV.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kafkit::view::MessageView;
use kafkit::{Message, filter::RecordFilter};
use maud::{Markup, html};
use serde::Deserialize;

use super::BASE;
use super::page::utc;
use super::render_budget::RenderBudget;
use crate::reads::browse::MAX_BROWSE_LIMIT;

/// Records a browse shows unless told otherwise.
pub const DEFAULT_LIMIT: usize = 100;

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

    pub(super) fn parse(text: Option<&str>) -> Format {
        Format::ALL
            .iter()
            .find(|(_, name)| Some(*name) == text)
            .map_or(Format::Auto, |(format, _)| *format)
    }

    /// `bytes` in this format, with the encoding actually used.
    pub fn show(self, bytes: &[u8]) -> (String, &'static str) {
        match self {
            Format::Auto => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => indented(&value, bytes),
                Err(_) => match std::str::from_utf8(bytes) {
                    Ok(text) => (text.to_owned(), "text"),
                    Err(_) => (Format::Base64.show(bytes).0, "base64"),
                },
            },
            Format::Json => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => indented(&value, bytes),
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

/// How many times its stored size a JSON value may grow when indented (plus
/// [`INDENT_SLACK`]) before it is shown as stored instead. Ordinary records grow two or three
/// times; 127 nested arrays around a list of numbers grow 130 times (a 1 MB record would
/// render 130 MB).
const MAX_INDENT_GROWTH: usize = 4;
/// What any value may grow by when indented, so small records are always indented.
const INDENT_SLACK: usize = 64 << 10;
/// The encoding shown for a JSON value too large once indented.
pub const SHOWN_AS_STORED: &str =
    "json, shown as stored: indented it would be over 4 times its size";

/// `value` (parsed from `stored`) indented, unless that would take more than
/// [`MAX_INDENT_GROWTH`] times `stored`: then `stored` itself, saying why. Indenting stops
/// at that bound, so a crafted value costs no more than an ordinary one.
fn indented(value: &serde_json::Value, stored: &[u8]) -> (String, &'static str) {
    let mut out = Capped {
        bytes: Vec::with_capacity(stored.len() * 2),
        cap: stored.len() * MAX_INDENT_GROWTH + INDENT_SLACK,
    };
    match serde_json::to_writer_pretty(&mut out, value) {
        Ok(()) => (String::from_utf8_lossy(&out.bytes).into_owned(), "json"),
        Err(_) => (
            String::from_utf8_lossy(stored).into_owned(),
            SHOWN_AS_STORED,
        ),
    }
}

/// A writer that refuses to hold more than `cap` bytes.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.cap {
            return Err(std::io::Error::other("over the indentation bound"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The topic page's query: where to browse, how to show it, what to keep.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    pub(super) partition: Option<String>,
    /// `oldest`, `offset`, `timestamp` or `newest` (the default).
    pub(super) from: Option<String>,
    pub(super) offset: Option<String>,
    pub(super) at: Option<String>,
    pub(super) limit: Option<String>,
    pub(super) format: Option<String>,
    pub(super) key: Option<String>,
    pub(super) header: Option<String>,
    pub(super) value: Option<String>,
    pub(super) json: Option<String>,
    pub(super) export: Option<String>,
    /// `partition:offset` of a record just produced from the form.
    pub(super) produced: Option<String>,
}

/// Where a browse starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum From {
    Oldest,
    Offset(i64),
    Timestamp(i64),
    Newest,
}

impl BrowseQuery {
    /// The query's filters (the library's, which replays of dead letters share; every text is
    /// a condition).
    pub(super) fn filter(&self) -> kafkit::Result<RecordFilter> {
        let filter = RecordFilter {
            key: self.key.clone(),
            header: self.header.clone(),
            value: self.value.clone(),
            json: self.json.clone(),
            ..RecordFilter::default()
        };
        Ok(filter)
    }
}

pub(super) fn format_name(format: Format) -> &'static str {
    Format::ALL
        .iter()
        .find(|(f, _)| *f == format)
        .map_or("auto", |(_, name)| name)
}

pub(super) fn browse_form(
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

/// The records as `format` shows them, within one [`RenderBudget`] for the page.
pub(super) fn records_table(messages: &[Message], format: Format) -> Markup {
    let mut budget = RenderBudget::default();
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
                                code { (shown(&mut budget, format, key).0) }
                            } @else { span.null { "null" } }
                        }
                        td.headers {
                            @for (name, value) in &message.headers {
                                div.header { code.hname { (name) } ": " code.hvalue { (shown(&mut budget, format, value).0) } }
                            }
                        }
                        td.value {
                            @match message.payload() {
                                Some(bytes) => {
                                    @let (shown, encoding) = shown(&mut budget, format, bytes);
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

/// `bytes` in `format` as far as `budget` holds them, with the encoding used; nothing is
/// computed once the budget is spent.
pub(super) fn shown(
    budget: &mut RenderBudget,
    format: Format,
    bytes: &[u8],
) -> (Markup, &'static str) {
    if budget.spent() {
        return (budget.show(""), "not shown");
    }
    let (text, encoding) = format.show(bytes);
    (budget.show(&text), encoding)
}

/// The records of a page as a JSON array, one compact record a line (indenting could grow a
/// crafted value a hundred times), within [`super::render_budget::MAX_RENDERED_BYTES`]: records past it are left
/// out, and the `x-kafkit-left-out` header says how many.
pub(super) fn export_json(topic: &str, messages: &[Message]) -> Response {
    let mut budget = RenderBudget::default();
    let mut out = String::from("[");
    let mut left_out = 0;
    for message in messages {
        let line = serde_json::to_string(&MessageView::of(message)).unwrap_or_default();
        if left_out > 0 || !budget.take(line.len()) {
            left_out += 1;
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push('\n');
        out.push_str(&line);
    }
    out.push_str("\n]\n");
    export(topic, "json", "application/json", out, left_out)
}

/// An export's answer: a file download, saying how many records were left out.
fn export(
    topic: &str,
    extension: &str,
    content_type: &str,
    body: String,
    left_out: usize,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{topic}.{extension}\""),
            ),
        ],
        [(LEFT_OUT, left_out.to_string())],
        body,
    )
        .into_response()
}

/// Header of an export: records of the page left out to keep it within
/// [`super::render_budget::MAX_RENDERED_BYTES`].
pub const LEFT_OUT: &str = "x-kafkit-left-out";

/// One CSV cell, quoted; a cell a spreadsheet would run as a formula is prefixed with `'`.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The records of a page as CSV, within [`super::render_budget::MAX_RENDERED_BYTES`] as [`export_json`] is.
pub(super) fn export_csv(topic: &str, messages: &[Message]) -> Response {
    let mut budget = RenderBudget::default();
    let mut out = String::from("partition,offset,timestamp,key,headers,value\n");
    let mut left_out = 0;
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
        let row = row.join(",");
        if left_out > 0 || !budget.take(row.len()) {
            left_out += 1;
            continue;
        }
        out.push_str(&row);
        out.push('\n');
    }
    export(topic, "csv", "text/csv; charset=utf-8", out, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn deeply_nested_json_is_shown_as_stored_not_indented() {
        // 100 kB of numbers 127 arrays deep: indented, 13 MB.
        let nested = format!(
            "{}{}0{}",
            "[".repeat(127),
            "0,".repeat(50_000),
            "]".repeat(127)
        );
        for format in [Format::Auto, Format::Json] {
            let (shown, encoding) = format.show(nested.as_bytes());
            assert_eq!(
                (shown.as_str(), encoding),
                (nested.as_str(), SHOWN_AS_STORED)
            );
        }
        // Ordinary JSON, as deep, is still indented.
        let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        assert_eq!(Format::Auto.show(deep.as_bytes()).1, "json");
    }

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_cell("=1+1"), "\"'=1+1\"");
    }
}
